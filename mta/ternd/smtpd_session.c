/* smtpd_session.c - one SMTP connection on an engine loop: bufferevent
 * input with bounded buffers, replies collected per callback and written
 * straight to the socket (the bufferevent takes only what the socket does
 * not), the read timeout (smtpd_timeout), client name
 * lookup, per-client connection count/rate limits (shared by all loops),
 * the error sleep and hard limit, and the Postfix connect/disconnect log
 * lines ("disconnect from h[a] ehlo=1 ... commands=N").
 * Pitfalls: input is processed only in SMTPD_ST_CMD/DATA/BDAT; while a
 * queue commit is in flight input is buffered but not processed, and the
 * session may outlive its peer (dead) until the callback arrives.
 */
#include "smtpd_int.h"
#include "smtpd_milter.h"

#include "log.h"
#include "resolver.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define SMTPD_IN_HIGH (256 * 1024) /* stop reading the socket above this */
#define SMTPD_OUT_MAX (256 * 1024) /* stop processing commands above this */

static pthread_mutex_t smtpd_lock = PTHREAD_MUTEX_INITIALIZER;
static struct smtpd_session *smtpd_list;
static int smtpd_count;

/* ------------------------------------------------------------------ */
/* per-client connection counters (Postfix anvil), shared by all loops  */

struct smtpd_anvil {
	struct inet_addr ip;
	int count; /* concurrent connections */
	int rate;  /* connections in the current time unit */
	time_t rate_start;
	struct smtpd_anvil *next;
};
static struct smtpd_anvil *anvil_list;

static struct smtpd_anvil *anvil_find(const struct inet_addr *ip)
{
	struct smtpd_anvil *a;

	for (a = anvil_list; a; a = a->next)
		if (a->ip.family == ip->family && memcmp(a->ip.bytes, ip->bytes, 16) == 0)
			return a;
	a = xcalloc(1, sizeof(*a));
	a->ip = *ip;
	a->next = anvil_list;
	anvil_list = a;
	return a;
}

static void anvil_drop_idle(void)
{
	struct smtpd_anvil **pp = &anvil_list;
	time_t now = time(NULL);

	while (*pp) {
		struct smtpd_anvil *a = *pp;
		if (a->count == 0 && now - a->rate_start > 3600) {
			*pp = a->next;
			free(a);
		} else {
			pp = &a->next;
		}
	}
}

/* Count the connection; 0 ok, 1 over the count limit, 2 over the rate. */
static int anvil_connect(struct smtpd_session *s, int exempt, int *count, int *rate)
{
	const struct smtpd_conf *c = s->conf;
	struct inet_addr key = s->client.ip;
	struct smtpd_anvil *a;
	time_t now = time(NULL);
	int rc = 0;

	/* Postfix smtpd_client_ipv6_prefix_length = 84: one IPv6 client is a net. */
	if (key.family == AF_INET6)
		inet_prefix_mask(&key, 84);
	pthread_mutex_lock(&smtpd_lock);
	anvil_drop_idle();
	a = anvil_find(&key);
	if (now - a->rate_start >= (c->rate_unit_s > 0 ? c->rate_unit_s : 60)) {
		a->rate_start = now;
		a->rate = 0;
	}
	*count = ++a->count;
	*rate = ++a->rate;
	s->counted_ip = key;
	s->counted = 1;
	if (!exempt && c->conn_count_limit > 0 && a->count > c->conn_count_limit)
		rc = 1;
	else if (!exempt && c->conn_rate_limit > 0 && a->rate > c->conn_rate_limit)
		rc = 2;
	pthread_mutex_unlock(&smtpd_lock);
	return rc;
}

static void anvil_disconnect(struct smtpd_session *s)
{
	if (!s->counted)
		return;
	pthread_mutex_lock(&smtpd_lock);
	anvil_find(&s->counted_ip)->count--;
	pthread_mutex_unlock(&smtpd_lock);
	s->counted = 0;
}

/* ------------------------------------------------------------------ */
/* one resolver per event loop (resolver_new() binds to a base)         */

struct smtpd_dns {
	struct event_base *base;
	struct resolver *r;
	struct smtpd_dns *next;
};
static struct smtpd_dns *dns_list;

struct resolver *smtpd_resolver(struct smtpd_session *s)
{
	struct smtpd_dns *d;
	struct buf err = BUF_INIT;

	pthread_mutex_lock(&smtpd_lock);
	for (d = dns_list; d && d->base != s->base; d = d->next)
		;
	if (d == NULL) {
		d = xcalloc(1, sizeof(*d));
		d->base = s->base;
		d->r = resolver_new(s->conf->dns_servers, 10, s->base, &err);
		if (d->r == NULL)
			msg_warn("DNS resolver: %s", buf_str(&err));
		d->next = dns_list;
		dns_list = d;
	}
	pthread_mutex_unlock(&smtpd_lock);
	buf_free(&err);
	return d->r;
}

/* ------------------------------------------------------------------ */
/* client identity                                                     */

void smtpd_client_set(struct smtpd_client *c, const char *name, const char *addr, const char *port,
		      int port_logging)
{
	struct buf b = BUF_INIT;

	smtpd_client_free(c);
	c->name = xstrdup(name);
	c->rev_name = xstrdup(name);
	c->name_status = c->rev_status = strcmp(name, "unknown") == 0 ? 5 : 0;
	c->forged = 0;
	c->addr = xstrdup(addr);
	c->port = xstrdup(port);
	if (inet_addr_parse(addr, &c->ip) < 0)
		memset(&c->ip, 0, sizeof(c->ip));
	buf_printf(&b, "%s%s", c->ip.family == AF_INET6 ? "IPv6:" : "", addr);
	c->rfc_addr = buf_detach(&b);
	buf_printf(&b, "%s[%s]", name, addr);
	if (port_logging)
		buf_printf(&b, ":%s", port);
	c->namaddr = buf_detach(&b);
}

void smtpd_client_free(struct smtpd_client *c)
{
	free(c->name);
	free(c->addr);
	free(c->port);
	free(c->rfc_addr);
	free(c->namaddr);
	free(c->rev_name);
	c->name = c->addr = c->port = c->rfc_addr = c->namaddr = c->rev_name = NULL;
}

static void client_from_sockaddr(struct smtpd_session *s, const struct sockaddr *sa)
{
	char host[INET6_ADDRSTRLEN] = "0.0.0.0", port[16] = "0";
	struct inet_addr ip;
	struct buf text = BUF_INIT;

	if (sa && sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(port, sizeof(port), "%u", ntohs(in->sin_port));
	} else if (sa && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(port, sizeof(port), "%u", ntohs(in6->sin6_port));
	}
	/* Postfix logs a v4-mapped IPv6 client as plain IPv4. */
	if (inet_addr_parse(host, &ip) == 0 && inet_addr_unmap(&ip)) {
		inet_addr_format(&ip, &text);
		snprintf(host, sizeof(host), "%s", buf_str(&text));
	}
	buf_free(&text);
	smtpd_client_set(&s->client, "unknown", host, port, s->conf->port_logging);
}

/* Our end of the connection, for policy requests (server_address/port). */
static void session_server_addr(struct smtpd_session *s, const struct sockaddr *sa)
{
	char host[INET6_ADDRSTRLEN] = "", port[16] = "";
	struct inet_addr ip;
	struct buf text = BUF_INIT;

	if (sa && sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(port, sizeof(port), "%u", ntohs(in->sin_port));
	} else if (sa && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(port, sizeof(port), "%u", ntohs(in6->sin6_port));
	}
	if (inet_addr_parse(host, &ip) == 0 && inet_addr_unmap(&ip)) {
		inet_addr_format(&ip, &text);
		snprintf(host, sizeof(host), "%s", buf_str(&text));
	}
	buf_free(&text);
	s->server_addr = xstrdup(host);
	s->server_port = xstrdup(port);
}

int smtpd_client_trusted(struct smtpd_session *s, const struct matchlist *l)
{
	struct buf err = BUF_INIT;
	int rc = matchlist_host(l, s->client.name, s->client.addr, &err);

	if (rc < 0)
		msg_warn("%s: client list lookup error: %s", s->client.namaddr, buf_str(&err));
	buf_free(&err);
	return rc > 0;
}

/* ------------------------------------------------------------------ */
/* output                                                              */

static void session_sleep_done(evutil_socket_t fd, short what, void *arg);

/* Replies wait in s->out until the callback that made them returns, so
 * the answers to pipelined commands leave in one write; the write goes
 * straight to the socket, and only what it does not take goes to the
 * bufferevent (whose write event then finishes the job). Saves arming and
 * disarming the write event for every reply. */
static void session_write(struct smtpd_session *s, const char *text, size_t len)
{
	if (s->bev == NULL || s->dead)
		return;
	if (s->out.len == 0)
		event_active(s->flush_ev, EV_TIMEOUT, 1);
	buf_append(&s->out, text, len);
}

static size_t session_output_len(struct smtpd_session *s)
{
	return s->out.len + evbuffer_get_length(bufferevent_get_output(s->bev));
}

static void session_free(struct smtpd_session *s);

static void session_flush(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_session *s = arg;
	ssize_t n = 0;

	if (s->out.len == 0 || s->dead)
		return;
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0 &&
	    bufferevent_openssl_get_ssl(s->bev) == NULL) { /* TLS: the bufferevent encrypts */
		n = send(bufferevent_getfd(s->bev), s->out.data, s->out.len,
			 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0)
			n = 0; /* the bufferevent's own write reports real errors */
	}
	if ((size_t)n < s->out.len)
		bufferevent_write(s->bev, s->out.data + n, s->out.len - (size_t)n);
	buf_reset(&s->out);
	if (s->state == SMTPD_ST_CLOSE && s->delayed.len == 0 && session_output_len(s) == 0)
		session_free(s);
}

/* Send one reply line (or lines joined with "\r\n"). Past the soft error
 * limit every reply waits smtpd_error_sleep_time (Postfix smtpd_chat_reply),
 * without blocking the loop: the reply is held and input processing stops. */
void smtpd_reply(struct smtpd_session *s, const char *fmt, ...)
{
	struct buf b = BUF_INIT;
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	buf_puts(&b, "\r\n");
	if (s->delayed.len || (s->error_count >= s->conf->soft_limit && s->conf->err_sleep_ms > 0 &&
			       s->state != SMTPD_ST_CLOSE)) {
		buf_append(&s->delayed, b.data, b.len);
		if (!evtimer_pending(s->sleep_ev, NULL)) {
			struct timeval tv = {s->conf->err_sleep_ms / 1000,
					     (s->conf->err_sleep_ms % 1000) * 1000};
			s->paused |= 1;
			evtimer_add(s->sleep_ev, &tv);
		}
	} else {
		session_write(s, b.data, b.len);
	}
	buf_free(&b);
}

static void session_input(struct smtpd_session *s);
static const char *session_after(struct smtpd_session *s, struct buf *b);

static void session_sleep_done(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_session *s = arg;

	session_write(s, s->delayed.data, s->delayed.len);
	buf_reset(&s->delayed);
	s->paused &= ~1;
	if (s->state == SMTPD_ST_CLOSE)
		smtpd_session_close(s);
	else
		session_input(s);
}

/* ------------------------------------------------------------------ */
/* lifetime                                                            */

static void session_format_stats(struct smtpd_session *s, struct buf *out)
{
	static const char *const names[SMTPD_C_COUNT] = {
	    "helo", "ehlo", "xclient", "starttls", "auth", "mail", "rcpt",    "data",
	    "bdat", "rset", "noop",    "vrfy",	   "etrn", "quit", "unknown",
	};
	int ok = 0, total = 0;

	for (int i = 0; i < SMTPD_C_COUNT; i++) {
		if (s->total[i] == 0)
			continue;
		if (s->ok[i] == s->total[i])
			buf_printf(out, " %s=%d", names[i], s->total[i]);
		else
			buf_printf(out, " %s=%d/%d", names[i], s->ok[i], s->total[i]);
		ok += s->ok[i];
		total += s->total[i];
	}
	if (ok == total && total != 0)
		buf_printf(out, " commands=%d", total);
	else
		buf_printf(out, " commands=%d/%d", ok, total);
	if (s->bare_lf_noted && s->conf->bare_nl == SMTPD_BARE_NOTE)
		buf_puts(out, " notes=bare_lf");
}

static void session_free(struct smtpd_session *s)
{
	struct buf stats = BUF_INIT;

	if (s->connect_logged) {
		session_format_stats(s, &stats);
		msg_info("disconnect from %s%s", s->client.namaddr, buf_str(&stats));
	}
	pthread_mutex_lock(&smtpd_lock);
	if (s->in_list) {
		if (s->prev)
			s->prev->next = s->next;
		else
			smtpd_list = s->next;
		if (s->next)
			s->next->prev = s->prev;
		smtpd_count--;
	}
	pthread_mutex_unlock(&smtpd_lock);
	anvil_disconnect(s);
	if (s->bev && s->state == SMTPD_ST_CLOSE && !s->dead && session_output_len(s) == 0)
		smtpd_tls_close_notify(s); /* a clean end, not a lost client */
	if (s->bev)
		bufferevent_free(s->bev);
	if (s->sleep_ev)
		event_free(s->sleep_ev);
	if (s->flush_ev)
		event_free(s->flush_ev);
	buf_free(&s->out);
	smtpd_milter_end(s); /* QUIT to the milters */
	smtpd_txn_reset(s);
	smtpd_data_free(s);
	queue_env_free(&s->env);
	smtpd_client_free(&s->client);
	smtpd_conf_unref(s->conf);
	buf_free(&s->line);
	buf_free(&s->delayed);
	buf_free(&stats);
	buf_free(&s->dip.reason);
	buf_free(&s->txn_bcc);
	buf_free(&s->txn_prepend);
	smtpd_sasl_reset(s);
	free(s->txn_redirect);
	free(s->txn_filter);
	free(s->access_denied);
	free(s->server_addr);
	free(s->server_port);
	free(s->helo);
	free(s);
}

/* Free now, or when the in-flight queue commit reports back. */
static void session_end(struct smtpd_session *s)
{
	if (s->state == SMTPD_ST_QUEUE || s->state == SMTPD_ST_CHECK) {
		s->dead = 1;
		if (s->bev)
			bufferevent_disable(s->bev, EV_READ | EV_WRITE);
		return;
	}
	session_free(s);
}

/* Close once the output is flushed (the write callback finishes it). */
void smtpd_session_close(struct smtpd_session *s)
{
	s->state = SMTPD_ST_CLOSE;
	if (s->bev == NULL || s->delayed.len) /* the error sleep flushes first */
		return;
	bufferevent_disable(s->bev, EV_READ);
	if (session_output_len(s) == 0)
		session_free(s); /* else session_flush() or the write callback does */
}

/* ------------------------------------------------------------------ */
/* input                                                               */

int smtpd_session_pending_input(struct smtpd_session *s)
{
	char c;

	if (s->bev == NULL) /* "tern explain": no client */
		return 0;
	if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0)
		return 1;
	if (bufferevent_openssl_get_ssl(s->bev)) /* decrypted, not yet read */
		return SSL_pending(bufferevent_openssl_get_ssl(s->bev)) > 0;
	return recv(bufferevent_getfd(s->bev), &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

/* Up to max bytes of the input not yet read as commands (for logs). */
void smtpd_session_peek_input(struct smtpd_session *s, struct buf *out, size_t max)
{
	struct evbuffer *in;
	size_t n;
	char *raw;

	if (s->bev == NULL)
		return;
	in = bufferevent_get_input(s->bev);
	n = evbuffer_get_length(in) < max ? evbuffer_get_length(in) : max;
	raw = xcalloc(n + 1, 1);
	n = (size_t)evbuffer_copyout(in, raw, n);
	/* As Postfix logs it: CR and LF escaped, other controls '?'. */
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)raw[i];
		if (c == '\r' || c == '\n')
			buf_puts(out, c == '\r' ? "\\r" : "\\n");
		else
			buf_putc(out, c < 0x20 || c == 0x7f ? '?' : c);
	}
	free(raw);
}

/* One command line into s->line: 1 when complete, 0 when more is needed.
 * At most line_length_limit bytes are kept; the rest of an over-long
 * line is skipped, as Postfix smtpd_chat_query_limit(). */
static int session_getline(struct smtpd_session *s, int *bare_lf)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
	size_t take = p.pos >= 0 ? (size_t)p.pos : evbuffer_get_length(in);
	size_t limit = (size_t)s->conf->line_limit;
	size_t room = limit > s->line.len ? limit - s->line.len : 0;
	size_t keep = take < room ? take : room;

	if (take > 0) {
		unsigned char last;
		struct evbuffer_ptr lp;
		buf_reserve(&s->line, keep);
		evbuffer_copyout(in, s->line.data + s->line.len, keep);
		s->line.len += keep;
		s->line.data[s->line.len] = 0;
		evbuffer_ptr_set(in, &lp, take - 1, EVBUFFER_PTR_SET);
		evbuffer_copyout_from(in, &lp, &last, 1);
		s->line_lastc = last;
		s->line_long |= take > keep;
		evbuffer_drain(in, take);
	}
	if (p.pos < 0)
		return 0;
	evbuffer_drain(in, 1); /* the LF */
	*bare_lf = s->line_lastc != '\r';
	if (!*bare_lf && s->line.len && s->line.data[s->line.len - 1] == '\r')
		buf_truncate(&s->line, s->line.len - 1);
	s->line_lastc = 0;
	return 1;
}

static void session_command(struct smtpd_session *s)
{
	int bare_lf = 0;
	char *line;

	if (!session_getline(s, &bare_lf))
		return;
	if (s->line_long)
		msg_warn("%s: request longer than %lld: %.30s...", s->client.namaddr,
			 s->conf->line_limit, buf_str(&s->line));
	line = xstrndup(s->line.data, s->line.len);
	buf_reset(&s->line);
	s->line_long = 0;
	smtpd_cmd_run(s, line, bare_lf);
	free(line);
}

static int session_runnable(struct smtpd_session *s)
{
	if (s->paused || s->dead)
		return 0;
	if (session_output_len(s) > SMTPD_OUT_MAX) {
		s->paused |= 2; /* the client does not read its replies: wait */
		return 0;
	}
	return s->state == SMTPD_ST_CMD || s->state == SMTPD_ST_DATA || s->state == SMTPD_ST_BDAT;
}

/* Process everything buffered: pipelined commands are answered in order. */
/* The client half-closed (shutdown(SHUT_WR) after pipelining): once all
 * it sent has been answered — a last transaction must still learn its
 * queue ID, or the client would send it again — close after the flush.
 * Called last by every caller of session_input(): it may free s. */
static void session_eof_finish(struct smtpd_session *s)
{
	struct buf after = BUF_INIT;

	if (!s->peer_eof || s->paused || s->state == SMTPD_ST_QUEUE || s->state == SMTPD_ST_CHECK)
		return; /* more to answer: the sleep, write or commit brings us back */
	if (s->state != SMTPD_ST_CLOSE)
		msg_qid(s->have_qid ? s->qid : NULL, "lost connection after %s from %s",
			session_after(s, &after), s->client.namaddr);
	buf_free(&after);
	smtpd_session_close(s);
}

static void session_input(struct smtpd_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);

	while (session_runnable(s) && evbuffer_get_length(in) > 0) {
		size_t before = evbuffer_get_length(in);
		enum smtpd_state st = s->state;
		if (st == SMTPD_ST_CMD)
			session_command(s);
		else if (st == SMTPD_ST_DATA)
			smtpd_data_input(s);
		else
			smtpd_bdat_input(s);
		if (s->state == st && evbuffer_get_length(in) == before)
			break; /* needs more input */
	}
	session_eof_finish(s);
}

void smtpd_session_resume(struct smtpd_session *s)
{
	if (s->dead) {
		session_free(s);
		return;
	}
	if (s->state == SMTPD_ST_CLOSE) {
		smtpd_session_close(s);
		return;
	}
	if (!s->peer_eof)
		bufferevent_enable(s->bev, EV_READ);
	session_input(s);
}

static void session_read_cb(struct bufferevent *bev, void *arg)
{
	session_input(arg);
}

static void session_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtpd_session *s = arg;

	if (s->state == SMTPD_ST_CLOSE && s->delayed.len == 0 && s->out.len == 0) {
		session_free(s);
		return;
	}
	if (s->paused & 2) {
		s->paused &= ~2;
		session_input(s);
	}
}

static const char *session_after(struct smtpd_session *s, struct buf *b)
{
	buf_puts(b, s->last_cmd);
	if (s->state == SMTPD_ST_DATA || s->state == SMTPD_ST_BDAT)
		buf_printf(b, " (%zu bytes)", s->data_bytes);
	return buf_str(b);
}

static void session_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtpd_session *s = arg;
	struct buf after = BUF_INIT;

	if (s->state == SMTPD_ST_TLS) { /* the handshake ended, one way or the other */
		if (what & BEV_EVENT_CONNECTED) {
			smtpd_tls_established(s);
		} else {
			smtpd_tls_failed(s, what);
			session_end(s);
		}
		return;
	}
	if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) &&
	    (s->state == SMTPD_ST_QUEUE || s->state == SMTPD_ST_CHECK)) {
		/* waiting for the disk or a check (each has its own deadline),
		 * not for the client: keep reading */
		bufferevent_enable(s->bev, EV_READ);
	} else if (what & BEV_EVENT_TIMEOUT) {
		msg_qid(s->have_qid ? s->qid : NULL, "timeout after %s from %s",
			session_after(s, &after), s->client.namaddr);
		if (s->state == SMTPD_ST_CLOSE) { /* the peer does not read */
			session_end(s);
		} else {
			buf_reset(&s->delayed);
			s->state = SMTPD_ST_CLOSE;
			smtpd_reply(s, "421 4.4.2 %s Error: timeout exceeded", s->conf->myhostname);
			bufferevent_enable(s->bev, EV_WRITE);
			smtpd_session_close(s);
		}
	} else if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && !s->dead &&
		   s->state != SMTPD_ST_CLOSE) {
		s->peer_eof = 1;
		bufferevent_disable(s->bev, EV_READ);
		session_input(s); /* answers what is buffered, then closes */
	} else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		if (s->state != SMTPD_ST_CLOSE)
			msg_qid(s->have_qid ? s->qid : NULL, "lost connection after %s from %s",
				session_after(s, &after), s->client.namaddr);
		session_end(s);
	}
	buf_free(&after);
}

/* ------------------------------------------------------------------ */
/* start                                                               */

/* Input before the greeting is a client that does not wait for the
 * server (RFC 5321 §4.3.1, smtpd_forbid_unauth_pipelining). */
/* smtpd_delay_reject = no: the client restrictions answer instead of the
 * greeting; every later command but QUIT then gets "503 5.7.0" (Postfix
 * smtpd_proto(), access_denied). */
static void session_connect_reply(struct smtpd_session *s, int rc, const char *reply)
{
	if (rc == 0) {
		smtpd_reply(s, "220 %s", s->conf->banner);
		return;
	}
	free(s->access_denied);
	s->access_denied = xstrdup(reply);
	smtpd_reply(s, "%s", reply);
}

/* The milters' CONNECT event decided (smtpd_milter.c maps the reply). */
static void session_connect_milter(struct smtpd_session *s, int rc, const char *reply)
{
	session_connect_reply(s, rc, reply);
	if (rc < 0)
		s->error_count++;
	if (rc < 0 && strncmp(reply, "421", 3) == 0)
		smtpd_session_close(s);
}

static void session_connect_checked(struct smtpd_session *s, int rc, const char *reply)
{
	if (rc == 0 && !s->check_disconnect && smtpd_milter_conf_count(s->conf->milters) > 0) {
		smtpd_milter_connect(s, session_connect_milter);
		return;
	}
	session_connect_reply(s, rc, reply);
	if (rc < 0)
		s->error_count++;
	if (s->check_disconnect)
		smtpd_session_close(s);
}

/* After XCLIENT: the milters' CONNECT for the new client. */
static void session_xclient_milter(struct smtpd_session *s, int rc, const char *reply)
{
	session_connect_reply(s, rc, reply);
	if (rc < 0 && strncmp(reply, "421", 3) == 0)
		s->check_disconnect = 1;
	smtpd_cmd_done(s, 0);
}

/* After XCLIENT: the same checks, then the command is done. */
static void session_xclient_checked(struct smtpd_session *s, int rc, const char *reply)
{
	if (rc == 0 && smtpd_milter_conf_count(s->conf->milters) > 0) {
		smtpd_milter_connect(s, session_xclient_milter);
		return;
	}
	session_connect_reply(s, rc, reply);
	smtpd_cmd_done(s, 0);
}

void smtpd_session_connect_check(struct smtpd_session *s, int check)
{
	/* Postfix: the milters see the XCLIENT client as a new connection. */
	smtpd_milter_end(s);
	if (smtpd_check_has(s->conf, SMTPD_STAGE_CONNECT))
		smtpd_check_start(s, SMTPD_STAGE_CONNECT, NULL, NULL, session_xclient_checked);
	else if (check) /* milters, and no client restrictions */
		session_xclient_checked(s, 0, "");
	else
		smtpd_reply(s, "220 %s", s->conf->banner);
}

void smtpd_greet(struct smtpd_session *s)
{
	s->state = SMTPD_ST_CMD;
	if (s->conf->forbid_unauth_pipelining && smtpd_session_pending_input(s)) {
		msg_info("improper command pipelining after CONNECT from %s", s->client.namaddr);
		smtpd_reply(s, "554 5.5.0 Error: SMTP protocol synchronization");
		smtpd_session_close(s);
		return;
	}
	if (smtpd_check_has(s->conf, SMTPD_STAGE_CONNECT))
		smtpd_check_start(s, SMTPD_STAGE_CONNECT, NULL, NULL, session_connect_checked);
	else if (smtpd_milter_conf_count(s->conf->milters) > 0)
		smtpd_milter_connect(s, session_connect_milter);
	else
		smtpd_reply(s, "220 %s", s->conf->banner);
}

/* The anvil limits (Postfix smtpd_state/anvil): refuse before the greeting. */
static int session_limits(struct smtpd_session *s)
{
	/* Postfix: XCLIENT hosts (a proxy in front) are never limited either */
	int exempt = smtpd_client_trusted(s, s->conf->event_exceptions) ||
		     smtpd_client_trusted(s, s->conf->xclient_hosts);
	int count, rate, rc = anvil_connect(s, exempt, &count, &rate);

	s->conn_count = exempt ? 0 : count; /* milter {client_connections}, as Postfix */
	if (rc == 0)
		return 0;
	if (rc == 1)
		msg_warn("Connection concurrency limit exceeded: %d from %s for service %s", count,
			 s->client.namaddr, s->conf->listener);
	else
		msg_warn("Connection rate limit exceeded: %d from %s for service %s", rate,
			 s->client.namaddr, s->conf->listener);
	smtpd_reply(s, "421 4.7.0 %s Error: too many connections from %s", s->conf->myhostname,
		    s->client.addr);
	smtpd_session_close(s);
	return -1;
}

static void session_ready(struct smtpd_session *s)
{
	msg_info("connect from %s", s->client.namaddr);
	s->connect_logged = 1;
	if (session_limits(s) < 0)
		return;
	if (smtpd_tls_wrapper(s->conf)) { /* smtps: the greeting follows the handshake */
		smtpd_tls_wrap(s);
		return;
	}
	bufferevent_enable(s->bev, EV_READ);
	smtpd_greet(s);
	session_input(s);
}

/* Forward-confirmed reverse lookup: PTR, then the name's A/AAAA must
 * contain the client address (Postfix's "verified" name). */
struct smtpd_lookup {
	struct smtpd_session *s;
	char *name;
};

/* rev: the PTR name (or NULL); status/rev_status as struct smtpd_client. */
static void lookup_done(struct smtpd_session *s, const char *name, const char *rev, int status,
			int rev_status)
{
	char *addr = xstrdup(s->client.addr), *port = xstrdup(s->client.port);

	smtpd_client_set(&s->client, name ? name : "unknown", addr, port, s->conf->port_logging);
	free(s->client.rev_name);
	s->client.rev_name = xstrdup(rev ? rev : "unknown");
	s->client.name_status = name ? 0 : status;
	s->client.rev_status = rev ? 0 : rev_status;
	s->client.forged = !name && rev && status == 5;
	free(addr);
	free(port);
	if (s->dead) {
		session_free(s);
		return;
	}
	session_ready(s);
}

static void lookup_fwd_cb(void *arg, const struct resolver_result *res)
{
	struct smtpd_lookup *l = arg;
	struct smtpd_session *s = l->s;
	const char *ok = NULL;

	for (size_t i = 0; res->status == RESOLVER_FOUND && i < res->count; i++)
		if (res->rr[i].family == s->client.ip.family &&
		    memcmp(res->rr[i].addr, s->client.ip.bytes,
			   s->client.ip.family == AF_INET ? 4 : 16) == 0)
			ok = l->name;
	lookup_done(s, ok, l->name, res->status == RESOLVER_TEMPFAIL ? 4 : 5, 0);
	free(l->name);
	free(l);
}

static void lookup_ptr_cb(void *arg, const struct resolver_result *res)
{
	struct smtpd_lookup *l = arg;
	struct smtpd_session *s = l->s;
	struct resolver *r = smtpd_resolver(s);
	struct buf err = BUF_INIT;
	int qtype = s->client.ip.family == AF_INET ? RESOLVER_T_A : RESOLVER_T_AAAA;

	int status = res->status == RESOLVER_TEMPFAIL ? 4 : 5;

	if (res->status != RESOLVER_FOUND || res->count == 0 || s->dead)
		goto unknown;
	l->name = xstrdup(res->rr[0].text);
	if (resolver_query(r, l->name, qtype, lookup_fwd_cb, l, &err) < 0) {
		lookup_done(s, NULL, l->name, 4, 0);
		free(l->name);
		free(l);
		buf_free(&err);
		return;
	}
	buf_free(&err);
	return;
unknown:
	free(l->name);
	free(l);
	buf_free(&err);
	lookup_done(s, NULL, NULL, status, status);
}

static void session_lookup(struct smtpd_session *s)
{
	struct resolver *r = smtpd_resolver(s);
	struct smtpd_lookup *l;
	struct buf rev = BUF_INIT, err = BUF_INIT;
	const unsigned char *b = s->client.ip.bytes;

	if (r == NULL || s->client.ip.family == 0)
		goto direct;
	if (s->client.ip.family == AF_INET) {
		buf_printf(&rev, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1], b[0]);
	} else {
		for (int i = 15; i >= 0; i--)
			buf_printf(&rev, "%x.%x.", b[i] & 15, b[i] >> 4);
		buf_puts(&rev, "ip6.arpa");
	}
	l = xcalloc(1, sizeof(*l));
	l->s = s;
	if (resolver_query(r, buf_str(&rev), RESOLVER_T_PTR, lookup_ptr_cb, l, &err) < 0) {
		msg_warn("%s: reverse lookup: %s", s->client.addr, buf_str(&err));
		free(l);
		goto direct;
	}
	buf_free(&rev);
	buf_free(&err);
	return;
direct:
	buf_free(&rev);
	buf_free(&err);
	session_ready(s);
}

void smtpd_session_start(struct event_base *base, int fd, const struct sockaddr *peer,
			 socklen_t peerlen, const struct sockaddr *local, socklen_t locallen,
			 struct smtpd_conf *conf, struct queue *q, const struct smtpd_hooks *hooks)
{
	struct smtpd_session *s = xcalloc(1, sizeof(*s));
	struct timeval tv = {conf->timeout_ms / 1000, (conf->timeout_ms % 1000) * 1000};

	smtpd_conf_ref(conf);
	s->base = base;
	s->conf = conf;
	s->q = q;
	if (hooks)
		s->hooks = *hooks;
	s->state = SMTPD_ST_LOOKUP;
	s->last_cmd = "CONNECT";
	queue_env_init(&s->env);
	buf_init(&s->dip.reason);
	buf_init(&s->txn_bcc);
	buf_init(&s->txn_prepend);
	client_from_sockaddr(s, peer);
	session_server_addr(s, local);
	s->sleep_ev = evtimer_new(base, session_sleep_done, s);
	s->flush_ev = event_new(base, -1, 0, session_flush, s);
	if (peer->sa_family == AF_INET || peer->sa_family == AF_INET6) {
		/* Replies are whole (one write per callback), but TLS adds its
		 * own records (session tickets after the handshake): without
		 * this, Nagle holds the next reply for the client's delayed
		 * ACK, 40 ms per session. */
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	s->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(s->bev, session_read_cb, session_write_cb, session_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, SMTPD_IN_HIGH);
	bufferevent_set_timeouts(s->bev, &tv, &tv);
	bufferevent_enable(s->bev, EV_WRITE);
	pthread_mutex_lock(&smtpd_lock);
	s->next = smtpd_list;
	if (smtpd_list)
		smtpd_list->prev = s;
	smtpd_list = s;
	s->in_list = 1;
	smtpd_count++;
	pthread_mutex_unlock(&smtpd_lock);
	if (conf->peername_lookup)
		session_lookup(s);
	else
		session_ready(s);
}

/* ------------------------------------------------------------------ */
/* TLS (smtpd_tls.c decides, this swaps the transport)                 */

int smtpd_session_tls_start(struct smtpd_session *s, SSL *ssl, long long timeout_ms,
			    const char *reply)
{
	struct bufferevent *old = s->bev, *bev;
	evutil_socket_t fd = bufferevent_getfd(old);
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};

	/* "220 2.0.0 Ready to start TLS" (and all before it) in plaintext,
	 * now (never held by the error sleep: TLS must follow it); a client
	 * that has not read its earlier replies is not one that waits for
	 * this one either. */
	if (reply) {
		session_write(s, reply, strlen(reply));
		session_write(s, "\r\n", 2);
	}
	session_flush(-1, 0, s);
	if (evbuffer_get_length(bufferevent_get_output(old)) > 0)
		goto fail;
	/* CVE-2011-0411: plaintext read but not executed must never be
	 * executed as if it came over TLS (smtpd_tls.c refused or logged it). */
	evbuffer_drain(bufferevent_get_input(old), evbuffer_get_length(bufferevent_get_input(old)));
	bev = bufferevent_openssl_socket_new(s->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
					     BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		goto fail;
	bufferevent_setfd(old, -1); /* the socket now belongs to bev */
	bufferevent_free(old);
	s->bev = bev;
	s->state = SMTPD_ST_TLS;
	bufferevent_setcb(bev, session_read_cb, session_write_cb, session_event_cb, s);
	bufferevent_setwatermark(bev, EV_READ, 0, SMTPD_IN_HIGH);
	bufferevent_set_timeouts(bev, &tv, &tv);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	return 0;
fail:
	SSL_free(ssl);
	return -1;
}

void smtpd_session_tls_ready(struct smtpd_session *s, int greet)
{
	struct timeval tv = {s->conf->timeout_ms / 1000, (s->conf->timeout_ms % 1000) * 1000};

	bufferevent_set_timeouts(s->bev, &tv, &tv);
	s->state = SMTPD_ST_CMD;
	if (greet)
		smtpd_greet(s);
	if (s->state == SMTPD_ST_CMD || s->state == SMTPD_ST_CHECK)
		session_input(s);
}

int smtpd_sessions_active(void)
{
	int n;

	pthread_mutex_lock(&smtpd_lock);
	n = smtpd_count;
	pthread_mutex_unlock(&smtpd_lock);
	return n;
}

/* Runs on the session's own loop: only that thread touches the session. */
static void session_drain_one(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_session *s = arg, *t;

	/* The session may have ended since the drain was posted: only this
	 * loop frees it, so finding it in the list under the lock is enough. */
	pthread_mutex_lock(&smtpd_lock);
	for (t = smtpd_list; t && t != s; t = t->next)
		;
	pthread_mutex_unlock(&smtpd_lock);
	if (t == NULL)
		return;
	s->draining = 1;
	if (s->state == SMTPD_ST_CMD && !s->in_mail && !s->paused) {
		s->state = SMTPD_ST_CLOSE;
		smtpd_reply(s, "421 4.3.2 Service shutting down");
		smtpd_session_close(s);
	}
}

void smtpd_sessions_drain(void)
{
	pthread_mutex_lock(&smtpd_lock);
	for (struct smtpd_session *s = smtpd_list; s; s = s->next)
		event_base_once(s->base, -1, EV_TIMEOUT, session_drain_one, s, NULL);
	pthread_mutex_unlock(&smtpd_lock);
}
