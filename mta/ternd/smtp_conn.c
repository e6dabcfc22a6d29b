/* smtp_conn.c - one SMTP or LMTP client session on an engine loop, and
 * the connection cache (smtp_client.h).
 *
 * A session is a state machine driven by libevent: connect (under
 * smtp_connect_timeout), greeting, EHLO (HELO when EHLO is refused; LMTP:
 * LHLO), then MAIL, every RCPT and DATA — all in one write when the server
 * offers PIPELINING — the content, and one reply after it for all accepted
 * recipients (LMTP: one per recipient). Every expected reply has its
 * Postfix timeout (smtp_helo_timeout, _mail_, _rcpt_, _data_init_,
 * _data_done_); writing that makes no progress for smtp_data_xfer_timeout
 * fails the session. Replies go to the recipients (struct smtp_rcpt) of
 * the owner's request; done() tells the owner how the session ended.
 *
 * Connection cache: a session that ended a transaction cleanly is kept
 * for smtp_connection_cache_time_limit
 * under its destination, up to smtp_connection_reuse_time_limit after it
 * was made (Postfix's scache, in one process). A cached connection is a
 * bare file descriptor: whichever loop takes it next wraps it in its own
 * bufferevent, so reuse works across loops.
 *
 * Pitfalls: done() may run before smtp_conn_start() returns (an
 * immediate connect failure, a message too big for a cached server);
 * after done() a session never touches the owner's recipients again
 * (a QUIT may still be on its way, the session frees itself).
 */
#include "smtp_client.h"

#include "addr.h"
#include "log.h"
#include "queue.h"

#include "base64.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define SMTP_LINE_MAX 4096	 /* a reply line longer than this is cut */
#define SMTP_REPLY_LINES 100	 /* a reply with more lines is broken */
#define SMTP_IN_MAX (64 * 1024) /* unread input without a line end: broken */
#define SMTP_QUIT_WAIT 2 /* at most this for the QUIT reply: nothing waits on it */

enum conn_state {
	C_CONNECT,
	C_GREET,
	C_EHLO,
	C_HELO,
	C_STARTTLS,  /* the reply to STARTTLS */
	C_HANDSHAKE, /* TLS handshake (after STARTTLS, or at once: wrapper mode) */
	C_AUTH_USER, /* AUTH LOGIN: 334 for the user name */
	C_AUTH_PASS, /* AUTH LOGIN: 334 for the password */
	C_AUTH,	     /* the final AUTH reply */
	C_MAIL,
	C_DRAIN, /* MAIL refused while pipelining: the RCPT and DATA replies */
	C_RCPT,
	C_DATA,
	C_DOT,
	C_EMPTY_DOT, /* 354 to a DATA without recipients: an empty message */
	C_QUIT,
};

struct smtp_reply {
	int code;
	char dsn[16];
	struct buf text; /* every line, joined with spaces */
	int lines;
};

struct smtp_conn {
	struct smtp_conn_req req; /* req.done is NULL once the owner was told */
	struct smtp_server sv;	  /* owned copy */
	int fd;
	struct bufferevent *bev;
	struct event *timer;
	enum conn_state st;
	const char *doing; /* "receiving the RCPT TO reply", for timeouts and losses */
	struct smtp_reply rep;
	int pipelining, size_ok, eightbit, smtputf8, dsn;
	int starttls, auth_plain, auth_login; /* offered by the server (EHLO) */
	long long size_max;
	SSL *ssl;   /* TLS is on (the bufferevent is an OpenSSL one) */
	int authed; /* AUTH succeeded on this connection */
	int uses;    /* transactions on this connection so far */
	int reused;  /* taken from the cache: no greeting or EHLO now */
	int started; /* got as far as a transaction */
	int stale;   /* reused and found dead before anything happened */
	int dot_sent; /* C_DOT: the content is all written */
	double born;
	size_t *idx, nidx, k, naccepted, drain;
	struct buf why;
	struct smtp_conn *prev, *next; /* smtp_conns */
	int linked;
};

/* Every live session, so that shutdown can close them on their loops. */
static pthread_mutex_t smtp_conns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct smtp_conn *smtp_conns;
static int smtp_conns_closed; /* shutdown: start nothing new (atomic) */

static int conns_closed(void)
{
	return __atomic_load_n(&smtp_conns_closed, __ATOMIC_RELAXED);
}

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg);
static int conn_transaction(struct smtp_conn *c);
static int conn_cache_put(struct smtp_conn *c);
static int conn_tls_or_on(struct smtp_conn *c);
static void conn_attach(struct smtp_conn *c, int ssl_state);

/* --- life cycle -------------------------------------------------------- */

static struct smtp_conn *conn_new(const struct smtp_conn_req *req, const struct smtp_server *sv)
{
	struct smtp_conn *c = xcalloc(1, sizeof(*c));

	c->req = *req;
	smtp_server_copy(&c->sv, sv);
	c->fd = -1;
	buf_init(&c->rep.text);
	buf_init(&c->why);
	c->idx = xcalloc(req->n + 1, sizeof(*c->idx));
	for (size_t i = 0; i < req->n; i++)
		if (req->xs[i].st == RS_OPEN || req->xs[i].st == RS_SOFT)
			c->idx[c->nidx++] = i;
	c->timer = evtimer_new(req->base, conn_timer_cb, c);
	pthread_mutex_lock(&smtp_conns_lock);
	c->next = smtp_conns;
	if (smtp_conns)
		smtp_conns->prev = c;
	smtp_conns = c;
	c->linked = 1;
	pthread_mutex_unlock(&smtp_conns_lock);
	return c;
}

/* (smtp_conns_lock held) */
static void conn_unlink(struct smtp_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		smtp_conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	c->linked = 0;
}

static void conn_free(struct smtp_conn *c)
{
	pthread_mutex_lock(&smtp_conns_lock);
	if (c->linked)
		conn_unlink(c);
	pthread_mutex_unlock(&smtp_conns_lock);
	if (c->timer)
		event_free(c->timer);
	if (c->bev)
		bufferevent_free(c->bev);
	if (c->ssl && c->st == C_QUIT && c->rep.code != 0) /* the server answered QUIT */
		smtp_tls_close_notify(c->ssl);
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	smtp_server_free(&c->sv);
	buf_free(&c->rep.text);
	buf_free(&c->why);
	free(c->idx);
	free(c);
}

/* Tell the owner, once, how the session ended. */
static void conn_finish(struct smtp_conn *c)
{
	void (*done)(void *, const struct smtp_conn_end *) = c->req.done;
	struct smtp_conn_end end = {c->started, c->stale, c->reused, &c->sv};

	if (done == NULL)
		return;
	c->req.done = NULL;
	for (size_t k = 0; k < c->nidx; k++)
		c->req.xs[c->idx[k]].accepted = 0;
	done(c->req.arg, &end);
}

/* The session is over: tell the owner, drop the connection. Returns 1
 * (the session is gone) for the callers' convenience. */
static int conn_close(struct smtp_conn *c)
{
	conn_finish(c);
	conn_free(c);
	return 1;
}

static void conn_expect(struct smtp_conn *c, enum conn_state st, long long secs, const char *doing)
{
	struct timeval tv = {secs > 0 ? (time_t)secs : 1, 0};

	c->st = st;
	c->doing = doing;
	c->rep.code = 0;
	c->rep.lines = 0;
	buf_reset(&c->rep.text);
	evtimer_add(c->timer, &tv);
}

static void conn_send(struct smtp_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conn_send(struct smtp_conn *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	evbuffer_add_vprintf(bufferevent_get_output(c->bev), fmt, ap);
	va_end(ap);
}

/* Say goodbye without waiting: the owner hears now, the QUIT reply (or
 * SMTP_QUIT_WAIT) ends the connection later. */
static int conn_quit(struct smtp_conn *c)
{
	/* smtp_quit_timeout, but never long: nothing waits for the reply */
	long long secs = c->req.pc->quit > 0 && c->req.pc->quit < SMTP_QUIT_WAIT ? c->req.pc->quit
										 : SMTP_QUIT_WAIT;
	struct timeval tv = {(time_t)secs, 0};

	conn_finish(c);
	c->st = C_QUIT;
	c->rep.code = 0;
	c->doing = "receiving the QUIT reply";
	conn_send(c, "QUIT\r\n");
	evtimer_add(c->timer, &tv);
	return 0;
}

/* --- what replies do to recipients --------------------------------------- */

void smtp_rcpt_set(struct smtp_rcpt *x, enum smtp_rstate st, const char *dsn, const char *text)
{
	x->st = st;
	snprintf(x->dsn, sizeof(x->dsn), "%s", dsn);
	buf_set(&x->text, text);
}

/* Every recipient still to do gets this outcome: a failure that ends the
 * attempt with this server. */
static void conn_rest(struct smtp_conn *c, enum smtp_rstate st, const char *dsn, const char *text)
{
	for (size_t i = 0; i < c->req.n; i++) {
		struct smtp_rcpt *x = &c->req.xs[i];
		if (x->st == RS_OPEN || (x->st == RS_SOFT && st == RS_SOFT)) {
			smtp_rcpt_set(x, st, dsn, text);
			x->relay = buf_str(c->req.relay);
		}
	}
}

/* "host h[a] said: 550 5.1.1 ... (in reply to RCPT TO command)" */
static void conn_said(const struct smtp_conn *c, const char *cmd, struct buf *out)
{
	struct buf ha = BUF_INIT;

	smtp_hostaddr(&c->sv, &ha);
	buf_reset(out);
	buf_printf(out, "host %s said: %s (in reply to %s)", buf_str(&ha), buf_str(&c->rep.text),
		   cmd);
	buf_free(&ha);
}

/* A refusal of the whole attempt: every recipient left gets it, then QUIT. */
static int conn_refused(struct smtp_conn *c, const char *cmd)
{
	conn_said(c, cmd, c->req.why);
	conn_rest(c, c->rep.code / 100 == 5 ? RS_HARD : RS_SOFT, c->rep.dsn, buf_str(c->req.why));
	return conn_quit(c);
}

static void conn_why(struct smtp_conn *c, const char *what)
{
	struct buf ha = BUF_INIT;

	smtp_hostaddr(&c->sv, &ha);
	buf_reset(&c->why);
	buf_printf(&c->why, "%s %s while %s", what, buf_str(&ha), c->doing);
	buf_free(&ha);
}

/* The connection broke or timed out (c->why says how): what was not
 * decided is deferred with the reason — recipients accepted but not
 * confirmed too (at-least-once: the server may have the mail, we cannot
 * know). Before a transaction, the next server may do better. */
static int conn_broken(struct smtp_conn *c)
{
	if (c->req.done == NULL) /* QUIT on its way: nobody waits */
		return conn_close(c);
	switch (c->st) {
	case C_CONNECT:
	case C_GREET:
	case C_EHLO:
	case C_HELO:
	case C_STARTTLS:
	case C_HANDSHAKE:
	case C_AUTH_USER:
	case C_AUTH_PASS:
	case C_AUTH:
		buf_set(c->req.why, buf_str(&c->why));
		/* Postfix: 4.4.1 when no connection was made, 4.4.2 when it broke */
		snprintf(c->req.why_dsn, 16, "%s", c->st == C_CONNECT ? "4.4.1"
						   : c->st == C_HANDSHAKE ? "4.7.5"
									  : "4.4.2");
		c->started = 0;
		break;
	case C_MAIL:
		if (c->reused) { /* the server dropped the idle connection: not an error */
			c->stale = 1;
			c->started = 0;
			break;
		}
		/* fall through */
	case C_RCPT:
	case C_DATA:
	case C_DOT:
		buf_set(c->req.why, buf_str(&c->why));
		for (size_t k = 0; k < c->nidx; k++) {
			struct smtp_rcpt *x = &c->req.xs[c->idx[k]];
			if (x->st == RS_OPEN || x->st == RS_SOFT || x->accepted) {
				smtp_rcpt_set(x, RS_SOFT, "4.4.2", buf_str(&c->why));
				x->relay = buf_str(c->req.relay);
				x->accepted = 0;
			}
		}
		break;
	default: /* draining, an empty message: nothing left to decide */
		break;
	}
	return conn_close(c);
}

/* --- the conversation ------------------------------------------------------ */

/* One EHLO reply line after the first ("PIPELINING", "SIZE 1000",
 * "AUTH PLAIN LOGIN", "AUTH=LOGIN"): what the server offers. */
static void conn_ehlo_line(struct smtp_conn *c, const char *kw)
{
	size_t klen = strcspn(kw, " =");

	if (klen == 10 && strncasecmp(kw, "PIPELINING", 10) == 0)
		c->pipelining = 1;
	else if (klen == 8 && strncasecmp(kw, "8BITMIME", 8) == 0)
		c->eightbit = 1;
	else if (klen == 8 && strncasecmp(kw, "SMTPUTF8", 8) == 0)
		c->smtputf8 = 1;
	else if (klen == 3 && strncasecmp(kw, "DSN", 3) == 0)
		c->dsn = 1;
	else if (klen == 8 && strncasecmp(kw, "STARTTLS", 8) == 0)
		c->starttls = 1;
	else if (klen == 4 && strncasecmp(kw, "SIZE", 4) == 0) {
		c->size_ok = 1;
		if (kw[4] == ' ' && kw[5] >= '0' && kw[5] <= '9')
			c->size_max = strtoll(kw + 5, NULL, 10);
	} else if (klen == 4 && strncasecmp(kw, "AUTH", 4) == 0) {
		for (const char *p = kw + 4; *p;) {
			size_t n;
			p += strspn(p, " =");
			n = strcspn(p, " ");
			if (n == 5 && strncasecmp(p, "PLAIN", 5) == 0)
				c->auth_plain = 1;
			else if (n == 5 && strncasecmp(p, "LOGIN", 5) == 0)
				c->auth_login = 1;
			p += n;
		}
	}
}

/* EHLO (LHLO): what the server offered before is forgotten (after TLS
 * above all: RFC 3207 §4.2). */
static void conn_send_ehlo(struct smtp_conn *c)
{
	c->pipelining = c->size_ok = c->eightbit = c->smtputf8 = c->dsn = 0;
	c->starttls = c->auth_plain = c->auth_login = 0;
	c->size_max = 0;
	conn_send(c, "%s %s\r\n", c->req.lmtp ? "LHLO" : "EHLO", c->req.sc->helo_name);
	conn_expect(c, C_EHLO, c->req.pc->helo, "receiving the EHLO reply");
}

/* " ORCPT=rfc822;" and the address as xtext, its local part quoted when
 * not a dot-atom: what Postfix's smtp client sends without a client ORCPT. */
static void conn_orcpt_made_up(struct buf *cmd, const char *addr)
{
	const char *at = strrchr(addr, '@');
	struct buf local = BUF_INIT, plain = BUF_INIT;

	buf_append(&local, addr, at ? (size_t)(at - addr) : strlen(addr));
	addr_local_quote(buf_str(&local), &plain);
	if (at)
		buf_puts(&plain, at);
	buf_puts(cmd, " ORCPT=rfc822;");
	for (const unsigned char *p = (const unsigned char *)buf_str(&plain); *p; p++) {
		if (*p < '!' || *p > '~' || *p == '+' || *p == '=') /* RFC 3461 §4 */
			buf_printf(cmd, "+%02X", *p);
		else
			buf_putc(cmd, (char)*p);
	}
	buf_free(&local);
	buf_free(&plain);
}

/* RCPT TO with the DSN parameters (ORCPT is stored as received xtext;
 * without one, Postfix's rfc822;<original recipient>: the address as
 * received, before aliasing, as smtp_proto.c does). */
static void conn_send_rcpt(struct smtp_conn *c, const struct smtp_rcpt *x)
{
	const struct queue_rcpt *qr = x->r->qr;
	const char *orig = x->r->orig ? x->r->orig : x->r->addr;
	struct buf cmd = BUF_INIT;

	buf_printf(&cmd, "RCPT TO:<%s>", x->r->addr);
	if (c->dsn && qr != NULL && qr->notify) {
		const char *sep = "";
		buf_puts(&cmd, " NOTIFY=");
		if (qr->notify & QUEUE_NOTIFY_NEVER)
			buf_puts(&cmd, "NEVER");
		if (qr->notify & QUEUE_NOTIFY_SUCCESS)
			buf_printf(&cmd, "%sSUCCESS", sep), sep = ",";
		if (qr->notify & QUEUE_NOTIFY_FAILURE)
			buf_printf(&cmd, "%sFAILURE", sep), sep = ",";
		if (qr->notify & QUEUE_NOTIFY_DELAY)
			buf_printf(&cmd, "%sDELAY", sep);
	}
	if (c->dsn && qr != NULL && qr->orcpt)
		buf_printf(&cmd, " ORCPT=%s", qr->orcpt);
	else if (c->dsn && orig[0] != 0)
		conn_orcpt_made_up(&cmd, orig);
	conn_send(c, "%s\r\n", buf_str(&cmd));
	buf_free(&cmd);
}

/* The message as SMTP DATA: CRLF line ends, dot-stuffed, the final dot. */
static void conn_send_content(struct smtp_conn *c)
{
	const struct deliver_msg *m = c->req.m;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	const char *p = m->content;
	size_t i = 0, len = m->len;

	size_t limit = c->req.sc->line_limit > 1 ? (size_t)c->req.sc->line_limit : 0;

	while (i < len) {
		const char *nl = memchr(p + i, '\n', len - i);
		size_t l = nl ? (size_t)(nl - (p + i)) : len - i, off = 0;
		if (l > 0 && p[i] == '.')
			evbuffer_add(out, ".", 1);
		/* smtp_line_length_limit: a longer line is broken with CR LF
		 * SPACE (Postfix's way, the least harm to MIME) */
		while (limit && l - off > (off ? limit - 1 : limit)) {
			size_t n = off ? limit - 1 : limit;
			evbuffer_add(out, p + i + off, n);
			evbuffer_add(out, "\r\n ", 3);
			off += n;
		}
		evbuffer_add(out, p + i + off, l - off);
		evbuffer_add(out, "\r\n", 2);
		i += l + (nl ? 1 : 0);
	}
	evbuffer_add(out, ".\r\n", 3);
}

static int conn_on_greeting(struct smtp_conn *c)
{
	if (c->rep.code / 100 != 2) { /* 4xx/5xx greeting: the next server */
		conn_said(c, "initial greeting", c->req.why);
		if (c->rep.code / 100 == 5 && !c->req.sc->skip_5xx_greeting) {
			conn_rest(c, RS_HARD, c->rep.dsn, buf_str(c->req.why));
			c->started = 1;
		}
		return conn_quit(c);
	}
	*c->req.t_conn = deliver_now();
	c->started = 1;
	conn_send_ehlo(c);
	return 0;
}

static int conn_on_ehlo(struct smtp_conn *c)
{
	if (c->rep.code / 100 == 2)
		return conn_tls_or_on(c);
	if (c->req.lmtp)
		return conn_refused(c, "LHLO command");
	conn_send(c, "HELO %s\r\n", c->req.sc->helo_name);
	conn_expect(c, C_HELO, c->req.pc->helo, "receiving the HELO reply");
	return 0;
}

static int conn_on_helo(struct smtp_conn *c)
{
	if (c->rep.code / 100 != 2)
		return conn_refused(c, "HELO command");
	c->pipelining = c->size_ok = c->eightbit = c->smtputf8 = c->dsn = 0;
	c->starttls = c->auth_plain = c->auth_login = 0;
	return conn_tls_or_on(c);
}

/* --- STARTTLS and AUTH ---------------------------------------------------- */

/* The attempt with this server ends for every recipient left: soft (the
 * mail waits) with dsn and the reason in why. */
static int conn_give_up(struct smtp_conn *c, const char *dsn, int quit)
{
	conn_rest(c, RS_SOFT, dsn, buf_str(c->req.why));
	snprintf(c->req.why_dsn, 16, "%s", dsn);
	if (quit)
		return conn_quit(c);
	return conn_close(c);
}

static int conn_auth_or_transaction(struct smtp_conn *c);

/* After EHLO: STARTTLS when the level asks for it and the server offers
 * it; "TLS is required" when it must and cannot be had. */
static int conn_tls_or_on(struct smtp_conn *c)
{
	const struct smtp_tls_policy *p = c->req.tls;
	struct buf ha = BUF_INIT;

	if (c->ssl == NULL && c->starttls && c->req.sc->tls_note_offer &&
	    (p == NULL || p->level == SMTP_TLS_NONE)) { /* smtp_tls_note_starttls_offer */
		const char *prev = log_swap_service(c->req.agent);
		msg_info("Host offered STARTTLS: [%s]", c->sv.name);
		log_thread_service(prev);
	}
	if (c->ssl != NULL || p == NULL || p->level == SMTP_TLS_NONE || c->req.sc->tls_ctx == NULL)
		return conn_auth_or_transaction(c);
	if (c->starttls) {
		conn_send(c, "STARTTLS\r\n");
		conn_expect(c, C_STARTTLS, c->req.pc->helo, "receiving the STARTTLS reply");
		return 0;
	}
	if (p->level < SMTP_TLS_ENCRYPT)
		return conn_auth_or_transaction(c);
	smtp_hostaddr(&c->sv, &ha);
	buf_reset(c->req.why);
	buf_printf(c->req.why, "TLS is required, but was not offered by host %s", buf_str(&ha));
	buf_free(&ha);
	return conn_give_up(c, "4.7.4", 1);
}

/* Free the plaintext bufferevent (the descriptor stays) and shake hands. */
static int conn_handshake_start(struct smtp_conn *c)
{
	struct timeval tv = {c->req.sc->starttls_timeout > 0 ? (time_t)c->req.sc->starttls_timeout
							     : 1,
			     0};

	if ((c->ssl = smtp_tls_ssl_new(c->req.sc, c->req.tls, c->sv.name, c->req.nexthop)) == NULL) {
		buf_set(c->req.why, "Cannot start TLS: out of memory");
		return conn_give_up(c, "4.7.5", 0);
	}
	evtimer_del(c->timer);
	bufferevent_free(c->bev); /* made without BEV_OPT_CLOSE_ON_FREE: fd stays */
	c->bev = NULL;
	conn_attach(c, BUFFEREVENT_SSL_CONNECTING);
	c->st = C_HANDSHAKE;
	c->doing = "performing the TLS handshake";
	evtimer_add(c->timer, &tv);
	return 0;
}

static int conn_on_starttls(struct smtp_conn *c)
{
	struct buf ha = BUF_INIT, said = BUF_INIT;

	smtp_hostaddr(&c->sv, &ha);
	if (c->rep.code == 220) {
		/* Anything after the 220 came before the handshake: a man in
		 * the middle answering in advance (STARTTLS response injection,
		 * CVE-2011-0411's client side). Never read it as TLS-protected. */
		if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
			buf_reset(c->req.why);
			buf_printf(c->req.why, "host %s sent data after its reply to STARTTLS "
					       "(STARTTLS response injection?)", buf_str(&ha));
			msg_warn("%s", buf_str(c->req.why));
			buf_free(&ha);
			return conn_give_up(c, "4.7.5", 0);
		}
		buf_free(&ha);
		return conn_handshake_start(c);
	}
	if (c->req.tls->level < SMTP_TLS_ENCRYPT) { /* opportunistic: go on in plaintext */
		buf_free(&ha);
		return conn_auth_or_transaction(c);
	}
	conn_said(c, "STARTTLS command", &said);
	buf_reset(c->req.why);
	buf_printf(c->req.why, "TLS is required, but host %s refused to start TLS: %s",
		   buf_str(&ha), buf_str(&c->rep.text));
	buf_free(&ha), buf_free(&said);
	return conn_give_up(c, "4.7.5", 1);
}

/* The handshake is done: is the certificate good enough? Then EHLO again
 * (or, in wrapper mode, the greeting). */
static int conn_handshake_done(struct smtp_conn *c)
{
	const char *trust = "Untrusted";

	evtimer_del(c->timer);
	buf_reset(c->req.why);
	if (smtp_tls_check(c->ssl, c->req.sc, c->req.tls, c->sv.name, c->req.nexthop, &trust,
			   c->req.why) < 0)
		return conn_give_up(c, "4.7.5", 1);
	if (c->req.sc->tls_loglevel >= 1) /* Postfix: smtp_tls_loglevel 1 and up */
		smtp_tls_log(c->ssl, c->req.agent, trust, &c->sv);
	if (c->rep.code == 0 && c->req.sc->tls_wrapper) { /* wrapper mode: now the greeting */
		conn_expect(c, C_GREET, c->req.pc->helo, "receiving the initial server greeting");
		return 0;
	}
	conn_send_ehlo(c);
	return 0;
}

static void conn_auth_send(struct smtp_conn *c, const char *cmd, const char *data, size_t len)
{
	struct buf b = BUF_INIT;

	buf_set(&b, cmd);
	if (data != NULL) {
		if (*cmd)
			buf_putc(&b, ' ');
		base64_encode(data, len, &b);
	}
	buf_puts(&b, "\r\n");
	evbuffer_add(bufferevent_get_output(c->bev), b.data, b.len);
	explicit_bzero(b.data, b.len); /* credentials */
	buf_free(&b);
}

/* AUTH when credentials exist for this destination and the server offers
 * a mechanism we may use here (smtp_sasl_security_options without TLS,
 * smtp_sasl_tls_security_options with it): PLAIN, else LOGIN. A server
 * without AUTH gets the mail unauthenticated, as with Postfix. */
static int conn_auth_or_transaction(struct smtp_conn *c)
{
	const char *user = c->req.sasl_user, *pass = c->req.sasl_pass;
	int allowed = c->ssl ? c->req.sc->sasl_plain_tls : c->req.sc->sasl_plain;
	struct buf ha = BUF_INIT;

	if (user == NULL || c->authed || (!c->auth_plain && !c->auth_login))
		return conn_transaction(c);
	if (!allowed) {
		smtp_hostaddr(&c->sv, &ha);
		buf_reset(c->req.why);
		buf_printf(c->req.why, "SASL authentication failed: cannot authenticate to server "
				       "%s: no mechanism available", buf_str(&ha));
		buf_free(&ha);
		return conn_give_up(c, "4.7.0", 1);
	}
	if (c->auth_plain) {
		struct buf blob = BUF_INIT;
		buf_putc(&blob, 0);
		buf_puts(&blob, user);
		buf_putc(&blob, 0);
		buf_puts(&blob, pass);
		conn_auth_send(c, "AUTH PLAIN", blob.data, blob.len);
		explicit_bzero(blob.data, blob.len);
		buf_free(&blob);
		conn_expect(c, C_AUTH, c->req.pc->helo, "receiving the AUTH reply");
	} else {
		conn_send(c, "AUTH LOGIN\r\n");
		conn_expect(c, C_AUTH_USER, c->req.pc->helo, "receiving the AUTH reply");
	}
	return 0;
}

/* "SASL authentication failed; server h[a] said: 535 ..." */
static int conn_auth_failed(struct smtp_conn *c)
{
	struct buf ha = BUF_INIT;
	int hard = c->rep.code / 100 == 5 && !c->req.sc->sasl_soft_bounce;

	smtp_hostaddr(&c->sv, &ha);
	buf_reset(c->req.why);
	buf_printf(c->req.why, "SASL authentication failed; server %s said: %s", buf_str(&ha),
		   buf_str(&c->rep.text));
	buf_free(&ha);
	if (hard) {
		conn_rest(c, RS_HARD, c->rep.dsn, buf_str(c->req.why));
		return conn_quit(c);
	}
	return conn_give_up(c, c->rep.code / 100 == 5 ? "4.7.8" : c->rep.dsn, 1);
}

static int conn_on_auth_step(struct smtp_conn *c)
{
	const char *v = c->st == C_AUTH_USER ? c->req.sasl_user : c->req.sasl_pass;

	if (c->rep.code != 334)
		return conn_auth_failed(c);
	conn_auth_send(c, "", v, strlen(v));
	conn_expect(c, c->st == C_AUTH_USER ? C_AUTH_PASS : C_AUTH, c->req.pc->helo,
		    "receiving the AUTH reply");
	return 0;
}

static int conn_on_auth(struct smtp_conn *c)
{
	if (c->rep.code != 235)
		return conn_auth_failed(c);
	c->authed = 1;
	return conn_transaction(c);
}

/* What the server cannot take is refused before MAIL (size, SMTPUTF8). */
static int conn_unsuitable(struct smtp_conn *c)
{
	const struct deliver_msg *m = c->req.m;
	struct buf ha = BUF_INIT;
	const char *dsn = NULL;

	smtp_hostaddr(&c->sv, &ha);
	buf_reset(c->req.why);
	if (c->size_ok && c->size_max > 0 && (long long)m->len > c->size_max) {
		buf_printf(c->req.why, "message size %zu exceeds size limit %lld of server %s",
			   m->len, c->size_max, buf_str(&ha));
		dsn = "5.3.4";
	} else if (m->env->smtputf8 && !c->smtputf8) {
		buf_printf(c->req.why, "SMTPUTF8 is required, but was not offered by host %s",
			   buf_str(&ha));
		dsn = "5.6.7";
	}
	buf_free(&ha);
	if (dsn != NULL)
		conn_rest(c, RS_HARD, dsn, buf_str(c->req.why));
	return dsn != NULL;
}

/* MAIL, RCPT..., DATA: all at once when pipelining, else one by one. */
static int conn_transaction(struct smtp_conn *c)
{
	const struct queue_env *env = c->req.m->env;
	struct buf cmd = BUF_INIT;

	c->uses++;
	if (conn_unsuitable(c))
		return conn_quit(c);
	buf_printf(&cmd, "MAIL FROM:<%s>", env->sender);
	if (c->size_ok)
		buf_printf(&cmd, " SIZE=%zu", c->req.m->len);
	if (env->body_8bit && c->eightbit)
		buf_puts(&cmd, " BODY=8BITMIME");
	if (env->smtputf8 && c->smtputf8)
		buf_puts(&cmd, " SMTPUTF8");
	if (c->dsn && env->ret)
		buf_printf(&cmd, " RET=%s", env->ret);
	if (c->dsn && env->envid)
		buf_printf(&cmd, " ENVID=%s", env->envid);
	conn_send(c, "%s\r\n", buf_str(&cmd));
	buf_free(&cmd);
	if (c->pipelining) {
		for (size_t k = 0; k < c->nidx; k++)
			conn_send_rcpt(c, &c->req.xs[c->idx[k]]);
		conn_send(c, "DATA\r\n");
	}
	conn_expect(c, C_MAIL, c->req.pc->mail, "receiving the MAIL FROM reply");
	return 0;
}

static int conn_on_mail(struct smtp_conn *c)
{
	if (c->rep.code == 421 && c->reused) { /* it closed the idle connection */
		c->stale = 1;
		c->started = 0;
		return conn_close(c);
	}
	if (c->rep.code / 100 != 2) {
		conn_said(c, "MAIL FROM command", c->req.why);
		conn_rest(c, c->rep.code / 100 == 5 ? RS_HARD : RS_SOFT, c->rep.dsn,
			  buf_str(c->req.why));
		if (!c->pipelining)
			return conn_quit(c);
		c->drain = c->nidx + 1; /* the RCPT and DATA replies still to come */
		conn_expect(c, C_DRAIN, c->req.pc->rcpt, "receiving the RCPT TO reply");
		return 0;
	}
	c->k = 0;
	if (!c->pipelining)
		conn_send_rcpt(c, &c->req.xs[c->idx[0]]);
	conn_expect(c, C_RCPT, c->req.pc->rcpt, "receiving the RCPT TO reply");
	return 0;
}

static int conn_on_drain(struct smtp_conn *c)
{
	if (--c->drain == 0)
		return conn_quit(c);
	conn_expect(c, C_DRAIN, c->req.pc->rcpt, "receiving the RCPT TO reply");
	return 0;
}

static int conn_on_rcpt(struct smtp_conn *c)
{
	struct smtp_rcpt *x = &c->req.xs[c->idx[c->k]];

	if (c->rep.code / 100 == 2) {
		x->accepted = 1;
		x->remote_dsn = c->dsn;
		c->naccepted++;
	} else {
		struct buf said = BUF_INIT;
		conn_said(c, "RCPT TO command", &said);
		smtp_rcpt_set(x, c->rep.code / 100 == 5 ? RS_HARD : RS_SOFT, c->rep.dsn,
			      buf_str(&said));
		x->relay = buf_str(c->req.relay);
		buf_free(&said);
	}
	if (++c->k < c->nidx) {
		if (!c->pipelining)
			conn_send_rcpt(c, &c->req.xs[c->idx[c->k]]);
		conn_expect(c, C_RCPT, c->req.pc->rcpt, "receiving the RCPT TO reply");
		return 0;
	}
	if (!c->pipelining) {
		if (c->naccepted == 0)
			return conn_quit(c);
		conn_send(c, "DATA\r\n");
	}
	conn_expect(c, C_DATA, c->req.pc->data_init, "receiving the DATA reply");
	return 0;
}

static int conn_on_data(struct smtp_conn *c)
{
	if (c->naccepted == 0) {
		/* pipelined DATA without recipients: normally refused; a server
		 * that says 354 anyway gets an empty message it must reject */
		if (c->rep.code != 354)
			return conn_quit(c);
		conn_send(c, ".\r\n");
		conn_expect(c, C_EMPTY_DOT, c->req.pc->data_done, "receiving the end of data reply");
		return 0;
	}
	if (c->rep.code != 354) {
		conn_said(c, "DATA command", c->req.why);
		for (size_t k = 0; k < c->nidx; k++) {
			struct smtp_rcpt *x = &c->req.xs[c->idx[k]];
			if (!x->accepted)
				continue;
			smtp_rcpt_set(x, c->rep.code / 100 == 5 ? RS_HARD : RS_SOFT, c->rep.dsn,
				      buf_str(c->req.why));
			x->relay = buf_str(c->req.relay);
		}
		return conn_quit(c);
	}
	/* The reply timer starts once the content is written (conn_write_cb);
	 * until then only smtp_data_xfer_timeout (no progress) applies. */
	evtimer_del(c->timer);
	c->st = C_DOT;
	c->doing = "sending message body";
	c->dot_sent = 0;
	c->k = 0;
	buf_reset(&c->rep.text);
	c->rep.lines = 0;
	conn_send_content(c);
	return 0;
}

/* Can this connection wait for the next delivery to its destination? */
static int conn_cacheable(const struct smtp_conn *c)
{
	const struct deliver_smtp_conf *sc = c->req.sc;

	return c->req.cache_key != NULL && sc->cache_time > 0 && !conns_closed() &&
	       evbuffer_get_length(bufferevent_get_input(c->bev)) == 0 &&
	       deliver_now() - c->born <= (double)sc->reuse_time;
}

/* The reply after the content: SMTP one for all accepted recipients,
 * LMTP one per accepted recipient in RCPT order. */
static int conn_on_dot(struct smtp_conn *c)
{
	struct buf said = BUF_INIT;
	int more = 0;

	while (c->k < c->nidx && !c->req.xs[c->idx[c->k]].accepted)
		c->k++;
	for (size_t j = c->k; j < c->nidx; j++) {
		struct smtp_rcpt *y = &c->req.xs[c->idx[j]];
		if (!y->accepted)
			continue;
		if (c->req.lmtp && j != c->k) {
			more = 1;
			continue;
		}
		if (c->rep.code / 100 == 2) {
			smtp_rcpt_set(y, RS_SENT, c->rep.dsn, buf_str(&c->rep.text));
		} else {
			conn_said(c, "end of DATA command", &said);
			smtp_rcpt_set(y, c->rep.code / 100 == 5 ? RS_HARD : RS_SOFT, c->rep.dsn,
				      buf_str(&said));
		}
		y->relay = buf_str(c->req.relay);
		y->accepted = 0;
	}
	buf_free(&said);
	if (more) {
		c->k++;
		conn_expect(c, C_DOT, c->req.pc->data_done, "receiving the end of data reply");
		return 0;
	}
	return conn_cache_put(c);
}

/* --- connection cache ----------------------------------------------------- */

struct smtp_cached {
	int fd;
	SSL *ssl; /* the TLS session goes along, if there is one */
	int authed;
	struct smtp_server sv;
	int pipelining, size_ok, eightbit, smtputf8, dsn;
	long long size_max;
	int uses;
	double born, expires;
	char *key;
	struct smtp_cached *next;
};

static pthread_mutex_t smtp_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct smtp_cached *smtp_cache;

static void cached_free(struct smtp_cached *k, int polite)
{
	if (k->ssl != NULL) { /* best effort on a non-blocking socket */
		if (polite)
			(void)SSL_write(k->ssl, "QUIT\r\n", 6);
		(void)SSL_shutdown(k->ssl);
		SSL_free(k->ssl);
		ERR_clear_error();
	} else if (polite) { /* best effort, never blocks */
		(void)send(k->fd, "QUIT\r\n", 6, MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	close(k->fd);
	smtp_server_free(&k->sv);
	free(k->key);
	free(k);
}

void smtp_conn_cache_reap(int all)
{
	struct smtp_cached **pp, *k, *dead = NULL;
	double now = deliver_now();

	pthread_mutex_lock(&smtp_cache_lock);
	for (pp = &smtp_cache; (k = *pp) != NULL;) {
		if (all || now > k->expires) {
			*pp = k->next;
			k->next = dead;
			dead = k;
		} else {
			pp = &k->next;
		}
	}
	pthread_mutex_unlock(&smtp_cache_lock);
	while ((k = dead) != NULL) {
		dead = k->next;
		cached_free(k, 1);
	}
}

/* The transaction is complete (RFC 5321 §4.1.1.4: the server is ready
 * for the next MAIL, no RSET needed): the bare descriptor goes to the
 * cache, if it may. */
static int conn_cache_put(struct smtp_conn *c)
{
	struct smtp_cached *k;

	if (!conn_cacheable(c))
		return conn_quit(c);
	k = xcalloc(1, sizeof(*k));
	k->fd = c->fd;
	k->ssl = c->ssl;
	k->authed = c->authed;
	smtp_server_copy(&k->sv, &c->sv);
	k->pipelining = c->pipelining, k->size_ok = c->size_ok, k->eightbit = c->eightbit;
	k->smtputf8 = c->smtputf8, k->dsn = c->dsn, k->size_max = c->size_max;
	k->uses = c->uses;
	k->born = c->born;
	k->expires = deliver_now() + (double)c->req.sc->cache_time;
	k->key = xstrdup(c->req.cache_key);
	bufferevent_free(c->bev); /* made without BEV_OPT_CLOSE_ON_FREE: fd stays open */
	c->bev = NULL;
	c->fd = -1;
	c->ssl = NULL;
	pthread_mutex_lock(&smtp_cache_lock);
	k->next = smtp_cache;
	smtp_cache = k;
	pthread_mutex_unlock(&smtp_cache_lock);
	return conn_close(c);
}

/* --- events --------------------------------------------------------------- */

/* One complete reply: what it means depends on what we asked. */
static int conn_reply(struct smtp_conn *c)
{
	evtimer_del(c->timer);
	switch (c->st) {
	case C_GREET:
		return conn_on_greeting(c);
	case C_EHLO:
		return conn_on_ehlo(c);
	case C_HELO:
		return conn_on_helo(c);
	case C_STARTTLS:
		return conn_on_starttls(c);
	case C_AUTH_USER:
	case C_AUTH_PASS:
		return conn_on_auth_step(c);
	case C_AUTH:
		return conn_on_auth(c);
	case C_MAIL:
		return conn_on_mail(c);
	case C_DRAIN:
		return conn_on_drain(c);
	case C_RCPT:
		return conn_on_rcpt(c);
	case C_DATA:
		return conn_on_data(c);
	case C_DOT:
		return conn_on_dot(c);
	case C_EMPTY_DOT:
		return conn_quit(c);
	case C_QUIT:
	case C_CONNECT:
	case C_HANDSHAKE: /* a reply inside the handshake cannot be */
		break;
	}
	return conn_close(c);
}

/* One reply line; 1 when the session is gone. */
static int conn_line(struct smtp_conn *c, const char *l, size_t len)
{
	struct smtp_reply *rep = &c->rep;

	if (len < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' ||
	    l[2] > '9' || (l[3] != 0 && l[3] != ' ' && l[3] != '-')) {
		struct buf ha = BUF_INIT;
		if (c->st == C_QUIT)
			return conn_close(c);
		smtp_hostaddr(&c->sv, &ha);
		buf_reset(&c->why);
		buf_printf(&c->why, "malformed reply from %s while %s: %.100s", buf_str(&ha),
			   c->doing, l);
		buf_free(&ha);
		return conn_broken(c);
	}
	if (c->st == C_EHLO && rep->lines > 0 && len > 4 && l[0] == '2')
		conn_ehlo_line(c, l + 4);
	if (rep->text.len)
		buf_putc(&rep->text, ' ');
	for (size_t i = 0; i < len && i < SMTP_LINE_MAX; i++) /* printable for logs and DSNs */
		buf_putc(&rep->text, (l[i] >= 32 && l[i] < 127) ? l[i] : '?');
	rep->code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
	if (l[3] == '-') {
		if (++rep->lines < SMTP_REPLY_LINES)
			return 0;
		conn_why(c, "lost connection with");
		return conn_broken(c);
	}
	if (c->st == C_QUIT)
		return conn_close(c);
	{
		/* enhanced status code "x.y.z" after the first "NNN " */
		const char *t = buf_str(&rep->text) + 4;
		int a, b, d, used = 0;
		if (rep->text.len > 4 && sscanf(t, "%1d.%3d.%3d%n", &a, &b, &d, &used) == 3 &&
		    a == rep->code / 100 && (t[used] == ' ' || t[used] == 0))
			snprintf(rep->dsn, sizeof(rep->dsn), "%d.%d.%d", a, b, d);
		else
			snprintf(rep->dsn, sizeof(rep->dsn), "%d.0.0", rep->code / 100);
	}
	return conn_reply(c);
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	for (;;) {
		size_t len;
		char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
		if (line == NULL) {
			if (evbuffer_get_length(in) > SMTP_IN_MAX) {
				conn_why(c, "lost connection with");
				conn_broken(c);
			}
			return;
		}
		int gone = conn_line(c, line, len);
		free(line);
		if (gone || c->bev == NULL)
			return;
	}
}

/* Everything written: after the content, the wait for its reply starts. */
static void conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_conn *c = arg;
	struct timeval tv = {c->req.pc->data_done > 0 ? (time_t)c->req.pc->data_done : 1, 0};

	(void)bev;
	if (c->st == C_DOT && !c->dot_sent) {
		c->dot_sent = 1;
		c->doing = "receiving the end of data reply";
		evtimer_add(c->timer, &tv);
	}
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_conn *c = arg;

	(void)bev;
	if ((what & BEV_EVENT_CONNECTED) && c->st == C_HANDSHAKE) {
		conn_handshake_done(c);
		return;
	}
	if (what & BEV_EVENT_CONNECTED) {
		c->born = deliver_now();
		if (c->req.sc->tls_wrapper && c->req.tls != NULL &&
		    c->req.tls->level > SMTP_TLS_NONE && c->req.sc->tls_ctx != NULL) {
			conn_handshake_start(c); /* smtp_tls_wrappermode: TLS from the first byte */
			return;
		}
		conn_expect(c, C_GREET, c->req.pc->helo, "receiving the initial server greeting");
		return;
	}
	if (c->st == C_QUIT) {
		conn_close(c);
		return;
	}
	if (c->st == C_HANDSHAKE) {
		unsigned long e = bufferevent_get_openssl_error(c->bev);
		struct buf relay = BUF_INIT;
		smtp_relay_name(&c->sv, &relay);
		msg_warn("TLS handshake with %s failed: %s", buf_str(&relay),
			 e ? ERR_reason_error_string(e) : "connection closed");
		buf_free(&relay);
		buf_set(&c->why, "Cannot start TLS: handshake failure");
		ERR_clear_error();
	} else if (c->st == C_CONNECT) {
		int e = EVUTIL_SOCKET_ERROR();
		buf_reset(&c->why);
		if (c->sv.ss.ss_family == AF_UNIX)
			buf_printf(&c->why, "connect to %s[%s]: %s", c->sv.name, c->sv.addr,
				   strerror(e ? e : ECONNREFUSED));
		else
			buf_printf(&c->why, "connect to %s[%s]:%d: %s", c->sv.name, c->sv.addr,
				   c->sv.port, strerror(e ? e : ECONNREFUSED));
	} else if (what & BEV_EVENT_TIMEOUT) { /* writing made no progress */
		struct buf ha = BUF_INIT;
		smtp_hostaddr(&c->sv, &ha);
		buf_reset(&c->why);
		buf_printf(&c->why, "conversation with %s timed out while %s", buf_str(&ha),
			   c->doing);
		buf_free(&ha);
	} else {
		conn_why(c, "lost connection with");
	}
	conn_broken(c);
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_conn *c = arg;
	struct buf ha = BUF_INIT;

	(void)fd;
	(void)what;
	if (c->st == C_QUIT) {
		conn_close(c);
		return;
	}
	buf_reset(&c->why);
	if (c->st == C_CONNECT) {
		buf_printf(&c->why, "connect to %s[%s]:%d: Connection timed out", c->sv.name,
			   c->sv.addr, c->sv.port);
	} else {
		smtp_hostaddr(&c->sv, &ha);
		buf_printf(&c->why, "conversation with %s timed out while %s", buf_str(&ha),
			   c->doing);
	}
	buf_free(&ha);
	conn_broken(c);
}

/* A bufferevent for fd on the request's loop: plain (ssl_state < 0) or
 * TLS over c->ssl. The descriptor and the SSL object stay ours (no
 * BEV_OPT_CLOSE_ON_FREE), so that a connection can move to the cache. */
static void conn_attach(struct smtp_conn *c, int ssl_state)
{
	struct timeval xfer = {c->req.pc->data_xfer > 0 ? (time_t)c->req.pc->data_xfer : 1, 0};

	if (ssl_state < 0) {
		c->bev = bufferevent_socket_new(c->req.base, c->fd, 0);
	} else {
		c->bev = bufferevent_openssl_socket_new(c->req.base, c->fd, c->ssl,
							(enum bufferevent_ssl_state)ssl_state, 0);
		bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	}
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_set_timeouts(c->bev, NULL, &xfer); /* writing without progress */
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* --- API ------------------------------------------------------------------ */

void smtp_conn_start(const struct smtp_conn_req *req, const struct smtp_server *sv)
{
	struct smtp_conn *c;
	struct timeval tv = {req->pc->connect > 0 ? (time_t)req->pc->connect : 1, 0};
	int one = 1;

	if (conns_closed())
		return; /* shutting down: nobody waits for the outcome */
	c = conn_new(req, sv);
	c->st = C_CONNECT;
	c->doing = "connecting";
	c->fd = socket(sv->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		buf_reset(&c->why);
		buf_printf(&c->why, "connect to %s[%s]: socket: %s", sv->name, sv->addr,
			   strerror(errno));
		conn_broken(c);
		return;
	}
	if (sv->ss.ss_family != AF_UNIX)
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	{ /* smtp_bind_address(6) */
		const struct sockaddr_storage *b = sv->ss.ss_family == AF_INET	  ? &req->sc->bind4
						   : sv->ss.ss_family == AF_INET6 ? &req->sc->bind6
										  : NULL;
		if (b != NULL && b->ss_family != 0 &&
		    bind(c->fd, (const struct sockaddr *)b,
			 b->ss_family == AF_INET ? sizeof(struct sockaddr_in)
						 : sizeof(struct sockaddr_in6)) < 0) {
			buf_reset(&c->why);
			buf_printf(&c->why, "connect to %s[%s]:%d: bind to smtp_bind_address%s: %s",
				   sv->name, sv->addr, sv->port, b->ss_family == AF_INET6 ? "6" : "",
				   strerror(errno));
			conn_broken(c);
			return;
		}
	}
	conn_attach(c, -1);
	evtimer_add(c->timer, &tv);
	if (bufferevent_socket_connect(c->bev, (const struct sockaddr *)&sv->ss, (int)sv->sslen) <
	    0) {
		int e = errno;
		buf_reset(&c->why);
		if (sv->ss.ss_family == AF_UNIX)
			buf_printf(&c->why, "connect to %s[%s]: %s", sv->name, sv->addr, strerror(e));
		else
			buf_printf(&c->why, "connect to %s[%s]:%d: %s", sv->name, sv->addr, sv->port,
				   strerror(e));
		conn_broken(c);
	}
}

int smtp_conn_start_cached(const struct smtp_conn_req *req)
{
	struct smtp_cached **pp, *k;
	struct smtp_conn *c;

	if (conns_closed())
		return 0;
	smtp_conn_cache_reap(0);
	pthread_mutex_lock(&smtp_cache_lock);
	for (pp = &smtp_cache; (k = *pp) != NULL; pp = &k->next)
		if (strcmp(k->key, req->cache_key) == 0) {
			*pp = k->next;
			break;
		}
	pthread_mutex_unlock(&smtp_cache_lock);
	if (k == NULL)
		return 0;
	c = conn_new(req, &k->sv);
	c->fd = k->fd;
	c->ssl = k->ssl;
	c->authed = k->authed;
	c->pipelining = k->pipelining, c->size_ok = k->size_ok, c->eightbit = k->eightbit;
	c->smtputf8 = k->smtputf8, c->dsn = k->dsn, c->size_max = k->size_max;
	c->uses = k->uses;
	c->born = k->born;
	c->reused = c->started = 1;
	k->fd = -1;
	smtp_server_free(&k->sv);
	free(k->key);
	free(k);
	buf_reset(req->relay);
	smtp_relay_name(&c->sv, req->relay);
	buf_printf(req->relay, ", conn_use=%d", c->uses + 1);
	*req->t_conn = deliver_now(); /* greeted and EHLOed on an earlier delivery */
	conn_attach(c, c->ssl ? BUFFEREVENT_SSL_OPEN : -1);
	conn_transaction(c);
	return 1;
}

void smtp_conn_cancel_all(struct event_base *base)
{
	struct smtp_conn *c, *next, *mine = NULL;

	pthread_mutex_lock(&smtp_conns_lock);
	__atomic_store_n(&smtp_conns_closed, 1, __ATOMIC_RELAXED);
	for (c = smtp_conns; c; c = next) { /* this loop's sessions, off the list */
		next = c->next;
		if (c->req.base != base)
			continue;
		conn_unlink(c);
		c->next = mine;
		mine = c;
	}
	pthread_mutex_unlock(&smtp_conns_lock);
	for (c = mine; c; c = next) {
		next = c->next;
		conn_free(c);
	}
}
