/* smtpd_milter.c - the milter client in an SMTP session: one connection
 * per milter per session (opened at the greeting, QUIT at the end; never
 * reused, libmilter cannot restart a session), OPTNEG with version 6
 * offered and 2..6 accepted, SETSYMLIST, and the event engine: each
 * event goes to the milters in order, each waited for with its deadline
 * on the session's event loop, so a slow milter holds up only its own
 * session. A failed milter (connect error, timeout, hang-up, garbage)
 * gets its default_action, which then sticks for the session (Postfix
 * milter8_comm_error()).
 * Replies and their SMTP meaning follow Postfix's smtpd/cleanup; see
 * docs/milter-client.md. Edits: smtpd_milter_edit.c, smtpd_milter_msg.c.
 */
#include "smtpd_milter_int.h"

#include "inet.h"
#include "log.h"
#include "route.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>

#define MILTER_REPLY_REJECT "550 5.7.1 Command rejected"
#define MILTER_REPLY_TEMPFAIL "451 4.7.1 Service unavailable - try again later"
#define MILTER_REPLY_SHUTDOWN "421 4.7.0 Server closing connection"
#define MILTER_REPLY_CONF "451 4.3.5 Server configuration problem - try again later"

enum mconn_state {
	MC_IDLE,       /* not connected (yet) */
	MC_CONNECTING, /* connect() and OPTNEG in progress */
	MC_READY,
	MC_DONE,  /* accepted the connection: no more events */
	MC_ERROR, /* failed: its default action answers every event */
};

struct milter_conn {
	struct smtpd_milters *ms;
	const struct milter_spec *spec;
	struct bufferevent *bev;
	struct event *timer;
	enum mconn_state st;
	uint32_t version, actions, pflags;
	uint32_t np_mask;	       /* events its version lacks: never sent */
	char *symlist[MILTER_NSTAGES]; /* its SETSYMLIST lists, else NULL */
	const char *err_reply;	       /* MC_ERROR: the default action's reply */
	int err_hold;		       /* MC_ERROR with default_action=quarantine */
	int waiting;		       /* a reply is due */
	int in_msg;		       /* between MAIL and EOM/ABORT */
	int msg_done;		       /* accepted this message: no more events */
	struct buf held;	       /* packets not yet written (conn_send) */
};

/* The ops: an SMTP event, or the content (headers...EOM). */
#define OP_CONTENT 'E'

struct smtpd_milters {
	struct smtpd_session *s;
	const struct smtpd_milter_conf *conf;
	struct milter_conn *m;
	size_t n;
	/* the operation in progress */
	int busy, async;
	enum smtpd_state saved_state;
	int event;  /* SMFIC_* of the op */
	size_t cur; /* milter being talked to */
	size_t step;
	smtpd_milter_cb cb;
	int rc;
	struct buf reply;
	struct buf pkt; /* the event's payload (envelope events) */
	char *mail_args, *rcpt_args;
	char *sticky;	/* a HELO/CONNECT refusal that answers MAIL */
	char *rcpt_rej; /* RCPT we refused: only for SMFIP_RCPT_REJ milters */
	int discard;	/* DISCARD: the rest of the transaction is not filtered */
	int data_sent;	/* DATA event sent in this transaction */
	/* content */
	struct milter_msg msg;
	struct buf *out;
	struct buf crlf;     /* the body as the current milter gets it */
	size_t nchunks;	     /* of crlf */
	size_t nsteps;	     /* content packets for the current milter */
	int skip_body;	     /* SKIP: the rest of the body is not sent */
	int edited;	     /* msg must be formatted again */
	int replacing;	     /* REPLBODY packets are arriving */
	struct buf new_body; /* ... into here */
	char *hold_reason;   /* QUARANTINE */
	struct milter_spec *own; /* this client's list from smtpd_milter_maps */
	size_t nown;
};

static void op_run(struct smtpd_milters *ms);
static void conn_fail(struct milter_conn *mc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void conn_read_cb(struct bufferevent *bev, void *arg);

/* ------------------------------------------------------------------ */
/* packets                                                             */

/* Packets nobody answers (macros, events under SMFIP_NR_*, ABORT) are
 * held back and leave with the next packet that is answered (or QUIT):
 * one write per round trip instead of one per SMTP command. The milter
 * sees the same packets in the same order, only later; nothing it could
 * say is lost, since it says nothing to these. */
#define MILTER_HOLD_MAX 65536 /* more than this (body chunks) goes out at once */

static void conn_flush(struct milter_conn *mc)
{
	size_t off = 0;

	if (mc->held.len == 0 || mc->bev == NULL) {
		buf_reset(&mc->held);
		return;
	}
	/* Connected and nothing queued: straight to the socket, saving the
	 * bufferevent's write-event round (two epoll_ctl per packet). */
	if (mc->st != MC_CONNECTING &&
	    evbuffer_get_length(bufferevent_get_output(mc->bev)) == 0) {
		ssize_t n = send(bufferevent_getfd(mc->bev), mc->held.data, mc->held.len,
				 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0)
			off = (size_t)n; /* errors: the bufferevent finds them */
	}
	if (off < mc->held.len)
		bufferevent_write(mc->bev, mc->held.data + off, mc->held.len - off);
	buf_reset(&mc->held);
}

static void conn_send(struct milter_conn *mc, int cmd, const void *data, size_t len)
{
	unsigned char hdr[5];
	uint32_t n = htonl((uint32_t)len + 1);

	memcpy(hdr, &n, 4);
	hdr[4] = (unsigned char)cmd;
	buf_append(&mc->held, hdr, 5);
	if (len)
		buf_append(&mc->held, data, len);
	if (mc->held.len > MILTER_HOLD_MAX)
		conn_flush(mc);
}

static void pkt_str(struct buf *b, const char *text)
{
	buf_append(b, text, strlen(text) + 1);
}

/* ------------------------------------------------------------------ */
/* macros (Postfix smtpd_milter.c names and values)                    */

static const char *macro_default(const struct smtpd_milters *ms, const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; i < ms->conf->ndefaults; i++) {
		const char *d = ms->conf->defaults[i];
		if (strncmp(d, name, n) == 0 && d[n] == '=')
			return d + n + 1;
	}
	return NULL;
}

/* {x_mailer} / {x_host} (what 'm' / 'h'): the transport and nexthop the
 * address is delivered by, as Postfix's resolve gives them. */
static const char *macro_route(struct smtpd_milters *ms, const char *addr, int what,
			       struct buf *tmp)
{
	struct route r;
	struct buf err = BUF_INIT;
	const char *v = NULL;

	if (addr == NULL || *addr == 0 || ms->conf->route == NULL)
		return NULL;
	route_init(&r);
	if (route_resolve(ms->conf->route, addr, &r, &err) == 0) {
		buf_set(tmp, buf_str(what == 'm' ? &r.transport : &r.nexthop));
		v = tmp->len ? buf_str(tmp) : NULL;
	}
	route_free(&r);
	buf_free(&err);
	return v;
}

/* name without braces ("i", "daemon_name"); NULL when there is none. */
static const char *macro_value(struct smtpd_milters *ms, const char *name, struct buf *tmp)
{
	struct smtpd_session *s = ms->s;

	if (strcmp(name, "i") == 0)
		return s->have_qid ? s->qid : NULL;
	if (strcmp(name, "j") == 0)
		return s->conf->myhostname;
	if (strcmp(name, "v") == 0)
		return ms->conf->mail_v;
	if (strcmp(name, "_") == 0) {
		buf_printf(tmp, "%s [%s]", s->client.rev_name ? s->client.rev_name : "unknown",
			   s->client.addr);
		if (s->client.rev_name && strcasecmp(s->client.name, s->client.rev_name) != 0)
			buf_puts(tmp, " (may be forged)");
		return buf_str(tmp);
	}
	if (strcmp(name, "daemon_name") == 0)
		return ms->conf->daemon_name;
	if (strcmp(name, "daemon_addr") == 0)
		return s->server_addr;
	if (strcmp(name, "daemon_port") == 0)
		return s->server_port;
	if (strcmp(name, "client_addr") == 0)
		return s->client.addr;
	if (strcmp(name, "client_name") == 0)
		return s->client.name;
	if (strcmp(name, "client_ptr") == 0)
		return s->client.rev_name;
	if (strcmp(name, "client_port") == 0)
		return s->client.port;
	if (strcmp(name, "auth_type") == 0)
		return s->sasl_username ? s->sasl_method : NULL;
	if (strcmp(name, "auth_authen") == 0)
		return s->sasl_username;
	if (strcmp(name, "auth_author") == 0)
		return s->sasl_username ? s->sasl_sender : NULL;
	if (s->tls && strcmp(name, "tls_version") == 0)
		return SSL_get_version(s->tls);
	if (s->tls && strcmp(name, "cipher") == 0)
		return SSL_get_cipher_name(s->tls);
	if (strcmp(name, "client_resolve") == 0) /* Postfix: from the name lookup status */
		return s->client.name_status == 0   ? "OK"
		       : s->client.name_status == 4 ? "TEMP"
		       : s->client.forged	    ? "FORGED"
						    : "FAIL";
	if (strcmp(name, "client_connections") == 0) {
		buf_printf(tmp, "%d", s->conn_count);
		return buf_str(tmp);
	}
	if (s->tls && (strcmp(name, "cert_subject") == 0 || strcmp(name, "cert_issuer") == 0)) {
		struct buf other = BUF_INIT; /* a trusted client certificate's CNs, as Postfix */
		if (smtpd_tls_ccert_status(s) != SMTPD_CCERT_TRUSTED)
			return NULL;
		if (name[5] == 's')
			smtpd_tls_ccert_names(s, tmp, &other);
		else
			smtpd_tls_ccert_names(s, &other, tmp);
		buf_free(&other);
		return buf_str(tmp);
	}
	if (s->tls && strcmp(name, "tls_sni") == 0)
		return smtpd_tls_sni(s);
	if (s->tls && strcmp(name, "cipher_bits") == 0) {
		buf_printf(tmp, "%d", SSL_get_cipher_bits(s->tls, NULL));
		return buf_str(tmp);
	}
	if (strcmp(name, "mail_addr") == 0)
		return s->in_mail || ms->event == SMFIC_MAIL ? s->sender_raw : NULL;
	if (ms->event == SMFIC_RCPT && ms->rcpt_rej) { /* Postfix: the refusal */
		const char *r = ms->rcpt_rej, *sp = strchr(r, ' ');
		size_t n = sp ? strcspn(sp + 1, " ") : 0;
		if (strcmp(name, "rcpt_mailer") == 0)
			return "error";
		if (strcmp(name, "rcpt_host") == 0 && sp && isdigit((unsigned char)sp[1])) {
			buf_append(tmp, sp + 1, n);
			return buf_str(tmp);
		}
		if (strcmp(name, "rcpt_addr") == 0)
			return sp && isdigit((unsigned char)sp[1]) ? sp + 1 + n + (sp[1 + n] != 0)
								   : (sp ? sp + 1 : r);
		return NULL;
	}
	if (strcmp(name, "rcpt_addr") == 0)
		return ms->event == SMFIC_RCPT ? s->pend_raw : NULL;
	if (strcmp(name, "rcpt_mailer") == 0 || strcmp(name, "rcpt_host") == 0)
		return ms->event == SMFIC_RCPT ? macro_route(ms, s->pend_canon, name[5], tmp)
					       : NULL;
	if (strcmp(name, "mail_mailer") == 0 || strcmp(name, "mail_host") == 0)
		return s->in_mail || ms->event == SMFIC_MAIL
			   ? macro_route(ms, s->env.sender, name[5], tmp)
			   : NULL;
	return NULL;
}

/* D packet for stage (cmd = the event's letter), only defined macros. */
static void conn_send_macros(struct milter_conn *mc, enum milter_stage stage, int cmd)
{
	struct smtpd_milters *ms = mc->ms;
	const char *list = mc->symlist[stage] ? mc->symlist[stage] : ms->conf->macros[stage];
	struct buf pkt = BUF_INIT, name = BUF_INIT, tmp = BUF_INIT;
	int any = 0;

	buf_putc(&pkt, cmd);
	for (const char *p = list; p && *p;) {
		size_t n = strcspn(p, " \t,");
		const char *v;
		char *bare;
		if (n == 0) {
			p++;
			continue;
		}
		buf_reset(&name);
		buf_append(&name, p, n);
		p += n;
		/* "{x}" and "x" are the same macro; it goes out as configured */
		if (name.data[0] == '{' && name.data[name.len - 1] == '}' && name.len > 2)
			bare = xstrndup(name.data + 1, name.len - 2);
		else
			bare = xstrdup(buf_str(&name));
		buf_reset(&tmp);
		if ((v = macro_value(ms, bare, &tmp)) == NULL)
			v = macro_default(ms, buf_str(&name));
		if (v != NULL && pkt.len + name.len + strlen(v) + 2 < MILTER_CHUNK) {
			pkt_str(&pkt, buf_str(&name));
			pkt_str(&pkt, v);
			any = 1;
		}
		free(bare);
	}
	if (any)
		conn_send(mc, SMFIC_MACRO, pkt.data, pkt.len);
	buf_free(&pkt);
	buf_free(&name);
	buf_free(&tmp);
}

/* ------------------------------------------------------------------ */
/* events: what to send, and whether a reply comes                     */

struct milter_event {
	int cmd;
	int stage; /* -1: no macros */
	uint32_t no, nr;
	int content; /* content timeout */
};

static const struct milter_event milter_events[] = {
    {SMFIC_CONNECT, MILTER_ST_CONNECT, SMFIP_NOCONNECT, SMFIP_NR_CONN, 0},
    {SMFIC_HELO, MILTER_ST_HELO, SMFIP_NOHELO, SMFIP_NR_HELO, 0},
    {SMFIC_MAIL, MILTER_ST_MAIL, SMFIP_NOMAIL, SMFIP_NR_MAIL, 0},
    {SMFIC_RCPT, MILTER_ST_RCPT, SMFIP_NORCPT, SMFIP_NR_RCPT, 0},
    {SMFIC_DATA, MILTER_ST_DATA, SMFIP_NODATA, SMFIP_NR_DATA, 0},
    {SMFIC_UNKNOWN, MILTER_ST_UNKNOWN, SMFIP_NOUNKNOWN, SMFIP_NR_UNKN, 0},
    {SMFIC_HEADER, MILTER_ST_EOH, SMFIP_NOHDRS, SMFIP_NR_HDR, 1}, /* Postfix: eoh macros */
    {SMFIC_EOH, MILTER_ST_EOH, SMFIP_NOEOH, SMFIP_NR_EOH, 1},
    {SMFIC_BODY, MILTER_ST_EOM, SMFIP_NOBODY, SMFIP_NR_BODY, 1}, /* Postfix: eod macros */
    {SMFIC_BODYEOB, MILTER_ST_EOM, 0, 0, 1},
};

static const struct milter_event *event_find(int cmd)
{
	for (size_t i = 0; i < sizeof(milter_events) / sizeof(*milter_events); i++)
		if (milter_events[i].cmd == cmd)
			return &milter_events[i];
	return NULL;
}

static const char *event_name(int cmd)
{
	switch (cmd) {
	case SMFIC_CONNECT:
		return "CONNECT";
	case SMFIC_HELO:
		return "HELO";
	case SMFIC_MAIL:
		return "MAIL";
	case SMFIC_RCPT:
		return "RCPT";
	case SMFIC_DATA:
		return "DATA";
	case SMFIC_UNKNOWN:
		return "UNKNOWN";
	default:
		return "END-OF-MESSAGE";
	}
}

static void conn_timer_arm(struct milter_conn *mc, long long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	evtimer_add(mc->timer, &tv);
}

/* Send one event (macros first); 1 when its reply must be awaited. */
static int conn_event(struct milter_conn *mc, int cmd, const void *data, size_t len)
{
	const struct milter_event *ev = event_find(cmd);

	if (ev->no && (mc->np_mask & ev->no))
		return 0; /* its protocol version lacks the event: not even macros */
	if (ev->stage >= 0)
		conn_send_macros(mc, (enum milter_stage)ev->stage, cmd);
	if (ev->no && (mc->pflags & ev->no))
		return 0; /* not wanted (the macros still go: Postfix) */
	conn_send(mc, cmd, data, len);
	if ((ev->nr && (mc->pflags & ev->nr)) || (cmd == SMFIC_HEADER && mc->spec->nohdr_reply))
		return 0;
	conn_flush(mc);
	mc->waiting = 1;
	conn_timer_arm(mc, ev->content ? mc->spec->content_ms : mc->spec->command_ms);
	/* Packets already buffered (a milter that answered early). */
	if (evbuffer_get_length(bufferevent_get_input(mc->bev)) > 0)
		bufferevent_trigger(mc->bev, EV_READ, BEV_TRIG_DEFER_CALLBACKS);
	return 1;
}

/* ------------------------------------------------------------------ */
/* connecting                                                          */

static void conn_close(struct milter_conn *mc)
{
	buf_reset(&mc->held);
	if (mc->bev)
		bufferevent_free(mc->bev);
	mc->bev = NULL;
	evtimer_del(mc->timer);
	mc->waiting = 0;
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct milter_conn *mc = arg;

	if (what & BEV_EVENT_CONNECTED) { /* OPTNEG runs under the command timeout */
		if (mc->waiting)
			conn_timer_arm(mc, mc->spec->command_ms);
		return;
	}
	if (mc->st == MC_CONNECTING)
		conn_fail(mc, "connect to %s: %s", mc->spec->endpoint,
			  (what & BEV_EVENT_EOF)
			      ? "lost connection"
			      : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	else if (what & BEV_EVENT_EOF)
		conn_fail(mc, "lost connection");
	else
		conn_fail(mc, "read error: %s",
			  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct milter_conn *mc = arg;
	struct smtpd_milters *ms = mc->ms;

	conn_fail(mc, "timeout while waiting for the reply to %s",
		  mc->st == MC_CONNECTING ? "OPTNEG" : event_name(ms->event));
}

/* Start connect + OPTNEG; 1: wait, 0: failed already (mc in MC_ERROR). */
static int conn_open(struct milter_conn *mc)
{
	struct smtpd_milters *ms = mc->ms;
	struct sockaddr_storage ss;
	socklen_t len = 0;
	struct buf why = BUF_INIT;
	uint32_t opt[3];

	if (inet_endpoint_sockaddr(mc->spec->endpoint, &ss, &len, &why) < 0) {
		conn_fail(mc, "%s", buf_str(&why));
		buf_free(&why);
		return 0;
	}
	mc->bev = bufferevent_socket_new(ms->s->base, -1, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(mc->bev, conn_read_cb, NULL, conn_event_cb, mc);
	bufferevent_enable(mc->bev, EV_READ | EV_WRITE);
	mc->st = MC_CONNECTING;
	if (bufferevent_socket_connect(mc->bev, (struct sockaddr *)&ss, (int)len) < 0) {
		conn_fail(mc, "connect to %s: %s", mc->spec->endpoint, strerror(errno));
		return 0;
	}
	if (ss.ss_family != AF_UNIX) { /* many small packets, one reply: no Nagle
					* delay (40 ms delayed ACKs per message) */
		int one = 1;
		setsockopt(bufferevent_getfd(mc->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	opt[0] = htonl((uint32_t)mc->spec->version);
	opt[1] = htonl(SMFIF_ALL);
	opt[2] = htonl(mc->spec->version == 6	? SMFIP_V6
		       : mc->spec->version == 4 ? SMFIP_V4
		       : mc->spec->version == 3 ? SMFIP_V3
						: SMFIP_V2);
	conn_send(mc, SMFIC_OPTNEG, opt, sizeof(opt));
	conn_flush(mc);
	mc->waiting = 1;
	conn_timer_arm(mc, mc->spec->connect_ms);
	return 1;
}

/* The OPTNEG reply: version, actions, protocol, then SETSYMLIST lists. */
static int conn_optneg(struct milter_conn *mc, const unsigned char *p, size_t n)
{
	uint32_t v[3];

	if (n < 12) {
		conn_fail(mc, "malformed OPTNEG reply (%zu bytes)", n);
		return -1;
	}
	memcpy(v, p, 12);
	mc->version = ntohl(v[0]);
	mc->actions = ntohl(v[1]);
	mc->pflags = ntohl(v[2]);
	if (mc->version < 2 || mc->version > (uint32_t)mc->spec->version) {
		conn_fail(mc, "protocol version %u is not supported (offered %d)", mc->version,
			  mc->spec->version);
		return -1;
	}
	if (mc->actions & ~(uint32_t)SMFIF_ALL) {
		conn_fail(mc, "requested actions 0x%x exceed the offered 0x%x", mc->actions,
			  SMFIF_ALL);
		return -1;
	}
	/* Events a lower version lacks are never sent (go-milter #11). */
	mc->np_mask = mc->version < 3	? SMFIP_NOUNKNOWN | SMFIP_NODATA
		      : mc->version < 4 ? SMFIP_NODATA
					: 0;
	for (p += 12, n -= 12; n >= 5;) {
		uint32_t stage;
		const unsigned char *nul;
		memcpy(&stage, p, 4);
		stage = ntohl(stage);
		if ((nul = memchr(p + 4, 0, n - 4)) == NULL)
			break;
		if (stage < MILTER_ST_UNKNOWN && (mc->actions & SMFIF_SETSYMLIST)) {
			free(mc->symlist[stage]);
			mc->symlist[stage] = xstrdup((const char *)p + 4);
		} else {
			msg_warn("milter %s: ignoring macro list for unknown stage %u",
				 mc->spec->endpoint, stage);
		}
		n -= (size_t)(nul + 1 - p);
		p = nul + 1;
	}
	mc->st = MC_READY;
	return 0;
}

/* ------------------------------------------------------------------ */
/* failure                                                             */

static void conn_fail(struct milter_conn *mc, const char *fmt, ...)
{
	struct smtpd_milters *ms = mc->ms;
	struct buf why = BUF_INIT;
	int was_current = mc->waiting && ms->busy && &ms->m[ms->cur] == mc;
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&why, fmt, ap);
	va_end(ap);
	msg_warn("milter %s: %s", mc->spec->endpoint, buf_str(&why));
	buf_free(&why);
	conn_close(mc);
	mc->st = MC_ERROR;
	mc->in_msg = 0;
	switch (mc->spec->def_action) {
	case MILTER_ACT_ACCEPT:
		mc->err_reply = NULL;
		break;
	case MILTER_ACT_QUARANTINE:
		mc->err_hold = 1;
		break;
	case MILTER_ACT_REJECT:
		mc->err_reply = "550 5.5.0 Service unavailable";
		break;
	case MILTER_ACT_TEMPFAIL:
		mc->err_reply = MILTER_REPLY_TEMPFAIL;
		break;
	case MILTER_ACT_SHUTDOWN:
		mc->err_reply = "421 4.7.1 Service unavailable - try again later";
		break;
	}
	if (was_current) /* the op goes on with this milter's default */
		op_run(ms);
}

/* ------------------------------------------------------------------ */
/* the operation                                                        */

static void op_finish(struct smtpd_milters *ms);

/* Stop the op with a refusal. */
static void op_refuse(struct smtpd_milters *ms, const char *reply)
{
	ms->rc = -1;
	buf_set(&ms->reply, reply);
}

/* REPLYCODE text: Postfix's checks (each line "[45]dd[- ]", '-' but on
 * the last, the enhanced code's class the reply's), "%%" -> "%", a lone
 * "%" dropped (Sendmail used it as a printf format). */
static int reply_valid(const char *text, struct buf *out)
{
	const char *p = text;

	buf_reset(out);
	if (*p != '4' && *p != '5')
		return -1;
	for (;;) {
		const char *eol = strstr(p, "\r\n");
		size_t n = eol ? (size_t)(eol - p) : strlen(p);
		if (n < 4 || p[0] != text[0] || !isdigit((unsigned char)p[1]) ||
		    !isdigit((unsigned char)p[2]) || p[3] != (eol ? '-' : ' '))
			return n == 3 && !eol && p[0] == text[0] ? 0 : -1;
		if (isdigit((unsigned char)p[4]) && p[5] == '.' && p[4] != text[0])
			return -1;
		for (size_t i = 0; i < n; i++) {
			if (p[i] == '%') {
				if (i + 1 < n && p[i + 1] == '%')
					buf_putc(out, p[i++]);
				continue;
			}
			buf_putc(out, p[i]);
		}
		if (!eol)
			return 0;
		buf_puts(out, "\r\n");
		p = eol + 2;
	}
}

/* The number of content packets for the current milter (fixed when it
 * starts: its own edits come after the last one). */
static size_t content_steps(struct smtpd_milters *ms)
{
	return ms->nsteps;
}

/* Send the content packet of ms->step; 1 when a reply is due. */
static int content_packet(struct smtpd_milters *ms, struct milter_conn *mc)
{
	size_t st = ms->step, nh = ms->msg.nh;
	struct buf p = BUF_INIT;
	int rc = 0;

	if (st == 0) { /* BDAT: the DATA event was not sent at the command */
		if (ms->data_sent)
			return 0;
		return conn_event(mc, SMFIC_DATA, NULL, 0);
	}
	if (st <= nh) {
		const struct milter_hdr *h = &ms->msg.h[st - 1];
		const char *v = h->value;
		size_t vn;
		if (h->hidden)
			return 0;
		/* Without HDR_LEADSPC exactly one space goes (not a tab). */
		if (!(mc->pflags & SMFIP_HDR_LEADSPC) && *v == ' ')
			v++;
		vn = strlen(v);
		if (strlen(h->name) + vn + 2 > MILTER_CHUNK) /* libmilter drops longer */
			vn = MILTER_CHUNK - strlen(h->name) - 2;
		pkt_str(&p, h->name);
		buf_append(&p, v, vn);
		buf_putc(&p, 0);
		rc = conn_event(mc, SMFIC_HEADER, p.data, p.len);
		buf_free(&p);
		return rc;
	}
	if (st == nh + 1)
		return conn_event(mc, SMFIC_EOH, NULL, 0);
	if (st < nh + 2 + ms->nchunks) {
		size_t k = st - nh - 2, off = k * MILTER_CHUNK;
		size_t n = ms->crlf.len - off < MILTER_CHUNK ? ms->crlf.len - off : MILTER_CHUNK;
		if (ms->skip_body)
			return 0;
		return conn_event(mc, SMFIC_BODY, ms->crlf.data + off, n);
	}
	return conn_event(mc, SMFIC_BODYEOB, NULL, 0);
}

/* The current milter starts on the content: its view of the body. */
static void content_begin(struct smtpd_milters *ms)
{
	buf_reset(&ms->crlf);
	milter_msg_body_crlf(&ms->msg, &ms->crlf);
	ms->nchunks = (ms->crlf.len + MILTER_CHUNK - 1) / MILTER_CHUNK;
	ms->nsteps = 1 + ms->msg.nh + 1 + ms->nchunks + 1; /* DATA?, headers, EOH, body, EOM */
	ms->skip_body = 0;
	ms->replacing = 0;
	buf_reset(&ms->new_body);
}

/* Talk to milter cur about the op: 1 wait, 0 next milter, -1 op over. */
static int op_step(struct smtpd_milters *ms, struct milter_conn *mc)
{
	int msg_event =
	    ms->event != SMFIC_CONNECT && ms->event != SMFIC_HELO && ms->event != SMFIC_UNKNOWN;

	if (mc->st == MC_IDLE && ms->event == SMFIC_CONNECT)
		return conn_open(mc) ? 1 : 0 /* MC_ERROR: next round */;
	if (mc->st == MC_CONNECTING)
		return 1;
	if (mc->st == MC_ERROR) {
		if (mc->err_reply) {
			op_refuse(ms, mc->err_reply);
			return -1;
		}
		if (mc->err_hold && ms->event == OP_CONTENT && ms->hold_reason == NULL)
			ms->hold_reason = xstrdup("default_action");
		return 0;
	}
	if (mc->st != MC_READY || (msg_event && (mc->msg_done || ms->discard)))
		return 0;
	if (ms->rcpt_rej && !(mc->pflags & SMFIP_RCPT_REJ))
		return 0;
	if (ms->event != OP_CONTENT) {
		if (ms->step++ > 0)
			return 0; /* the reply came */
		if (ms->event == SMFIC_MAIL)
			mc->in_msg = 1;
		return conn_event(mc, ms->event, ms->pkt.data, ms->pkt.len);
	}
	if (ms->step == 0)
		content_begin(ms);
	for (size_t n = content_steps(ms); ms->step < n;) {
		int w = content_packet(ms, mc);
		ms->step++;
		if (w)
			return 1;
	}
	return 0;
}

static void op_wait(struct smtpd_milters *ms)
{
	struct smtpd_session *s = ms->s;

	if (ms->async)
		return;
	ms->async = 1;
	ms->saved_state = s->state;
	s->state = SMTPD_ST_CHECK;
}

static void op_run(struct smtpd_milters *ms)
{
	while (ms->cur < ms->n) {
		struct milter_conn *mc = &ms->m[ms->cur];
		int r = op_step(ms, mc);
		if (r > 0) {
			op_wait(ms);
			return;
		}
		if (r < 0)
			break;
		if (mc->st == MC_ERROR && ms->step == 0 && ms->event == SMFIC_CONNECT &&
		    mc->err_reply) /* failed at connect: its default answers now */
			continue;
		ms->cur++;
		ms->step = 0;
	}
	op_finish(ms);
}

static int op_start(struct smtpd_milters *ms, int event, smtpd_milter_cb cb)
{
	ms->busy = 1;
	ms->async = 0;
	ms->event = event;
	ms->cur = 0;
	ms->step = 0;
	ms->cb = cb;
	ms->rc = 0;
	buf_reset(&ms->reply);
	op_run(ms);
	return ms->async;
}

/* ------------------------------------------------------------------ */
/* replies                                                             */

static void reply_log(struct smtpd_milters *ms, const char *what, const char *text)
{
	struct smtpd_session *s = ms->s;
	struct buf b = BUF_INIT;
	const char *rcpt = ms->event == SMFIC_RCPT ? s->pend_raw : s->first_rcpt;

	buf_printf(&b, "%s: %s from %s: ", what, event_name(ms->event), s->client.namaddr);
	for (const char *p = text; *p; p++) /* one log line for a multi-line reply */
		if (*p == '\r' && p[1] == '\n')
			buf_putc(&b, ' '), p++;
		else
			buf_putc(&b, *p);
	buf_putc(&b, ';');
	if (s->sender_raw)
		buf_printf(&b, " from=<%s>", s->sender_raw);
	if (rcpt)
		buf_printf(&b, " to=<%s>", rcpt);
	buf_printf(&b, " proto=%s", s->esmtp ? "ESMTP" : "SMTP");
	if (s->helo)
		buf_printf(&b, " helo=<%s>", s->helo);
	msg_qid(s->have_qid ? s->qid : NULL, "%s", buf_str(&b));
	buf_free(&b);
}

/* A decision ends the milter's part in the op (and maybe the op). */
static void reply_final(struct smtpd_milters *ms, struct milter_conn *mc, int code,
			const char *text)
{
	int conn_level = ms->event == SMFIC_CONNECT || ms->event == SMFIC_HELO;
	struct buf r = BUF_INIT;

	mc->waiting = 0;
	evtimer_del(mc->timer);
	if (ms->rcpt_rej) /* we refused it already: the answer changes nothing */
		code = SMFIR_CONTINUE;
	switch (code) {
	case SMFIR_CONTINUE:
		if (ms->event == OP_CONTENT && ms->step >= content_steps(ms))
			mc->in_msg = 0; /* the EOM decision */
		break;
	case SMFIR_ACCEPT:
		if (conn_level) { /* no more events this session: Postfix closes */
			conn_close(mc);
			mc->st = MC_DONE;
		} else {
			mc->msg_done = 1;
			if (ms->event == OP_CONTENT)
				mc->in_msg = 0;
			ms->step = (size_t)-1 / 2; /* nothing more of this op */
		}
		break;
	case SMFIR_DISCARD:
		if (conn_level) {
			msg_warn("milter %s: DISCARD action is not allowed at %s",
				 mc->spec->endpoint, event_name(ms->event));
			break;
		}
		ms->discard = 1;
		ms->s->txn_discard = 1;
		mc->in_msg = 0;
		ms->step = (size_t)-1 / 2;
		if (ms->event != OP_CONTENT) /* at the end: content_done() logs it */
			reply_log(ms, "milter-discard", "milter triggers DISCARD action");
		break;
	case SMFIR_REJECT:
		op_refuse(ms, ms->event == OP_CONTENT ? "550 5.7.1 Command rejected"
						      : MILTER_REPLY_REJECT);
		break;
	case SMFIR_TEMPFAIL:
		op_refuse(ms, MILTER_REPLY_TEMPFAIL);
		break;
	case SMFIR_SHUTDOWN:
		op_refuse(ms, MILTER_REPLY_SHUTDOWN);
		break;
	case SMFIR_REPLYCODE:
		if (reply_valid(text, &r) < 0) {
			msg_warn("milter %s: malformed reply: %s", mc->spec->endpoint, text);
			op_refuse(ms, MILTER_REPLY_CONF);
		} else {
			op_refuse(ms, buf_str(&r));
		}
		break;
	}
	buf_free(&r);
	if (ms->rc < 0 && ms->event == OP_CONTENT)
		mc->in_msg = 0;
	if (ms->rc < 0) {
		op_finish(ms);
		return;
	}
	if (ms->event != OP_CONTENT || ms->step >= content_steps(ms) || code == SMFIR_ACCEPT ||
	    code == SMFIR_DISCARD) {
		ms->cur++;
		ms->step = 0;
	}
	op_run(ms);
}

/* Edits are only good after the end of the message. */
static int reply_edit(struct smtpd_milters *ms, struct milter_conn *mc, int code,
		      const unsigned char *p, size_t n);

/* One packet from the milter; 1 when the op went on (mc may be gone). */
static int conn_packet(struct milter_conn *mc, int code, const unsigned char *p, size_t n)
{
	struct smtpd_milters *ms = mc->ms;
	int at_eom = ms->event == OP_CONTENT && ms->step == content_steps(ms);
	char *text;

	if (mc->st == MC_CONNECTING) {
		if (code != SMFIC_OPTNEG) {
			conn_fail(mc, "unexpected reply '%c' to OPTNEG", code);
			return 1;
		}
		mc->waiting = 0;
		evtimer_del(mc->timer);
		if (conn_optneg(mc, p, n) < 0)
			return 1;
		op_run(ms); /* now the event itself */
		return 1;
	}
	if (!mc->waiting) {
		conn_fail(mc, "unexpected reply '%c' (no request pending)", code);
		return 1;
	}
	if (ms->replacing && code != SMFIR_REPLBODY) {
		milter_msg_set_body(&ms->msg, ms->new_body.data, ms->new_body.len);
		ms->replacing = 0;
		ms->edited = 1;
	}
	switch (code) {
	case SMFIR_PROGRESS: /* Postfix: after any event; the timer starts again */
		conn_timer_arm(mc, ms->event == OP_CONTENT ? mc->spec->content_ms
							   : mc->spec->command_ms);
		return 0;
	case SMFIR_QUARANTINE:
		text = xstrndup((const char *)p, n);
		if (ms->event == OP_CONTENT || ms->event == SMFIC_MAIL || ms->event == SMFIC_RCPT ||
		    ms->event == SMFIC_DATA) {
			free(ms->hold_reason);
			ms->hold_reason = xstrndup(text, 100); /* Postfix truncates */
		}
		free(text);
		return 0;
	case SMFIR_SKIP:
		if (ms->event == OP_CONTENT && mc->pflags & SMFIP_SKIP)
			ms->skip_body = 1;
		reply_final(ms, mc, SMFIR_CONTINUE, NULL);
		return 1;
	case SMFIR_CONTINUE:
	case SMFIR_ACCEPT:
	case SMFIR_REJECT:
	case SMFIR_TEMPFAIL:
	case SMFIR_DISCARD:
	case SMFIR_SHUTDOWN:
		reply_final(ms, mc, code, NULL);
		return 1;
	case SMFIR_REPLYCODE:
		if (n == 0 || p[n - 1] != 0 || memchr(p, 0, n) != p + n - 1) {
			conn_fail(mc, "malformed REPLYCODE");
			return 1;
		}
		reply_final(ms, mc, code, (const char *)p);
		return 1;
	}
	if (!at_eom) {
		conn_fail(mc, "unexpected filter response '%c' after event %s", code,
			  event_name(ms->event));
		return 1;
	}
	if (reply_edit(ms, mc, code, p, n) < 0)
		return 1;
	return 0;
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct milter_conn *mc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (evbuffer_get_length(in) >= 4) {
		uint32_t len;
		unsigned char *pkt;
		int went_on;
		evbuffer_copyout(in, &len, 4);
		len = ntohl(len);
		if (len < 1 || len > MILTER_MAX_REPLY) {
			conn_fail(mc, "bad packet length %u", len);
			return;
		}
		if (evbuffer_get_length(in) < 4 + (size_t)len)
			return;
		evbuffer_drain(in, 4);
		pkt = xmalloc(len);
		evbuffer_remove(in, pkt, len);
		went_on = conn_packet(mc, pkt[0], pkt + 1, len - 1);
		free(pkt);
		if (went_on)
			return; /* mc may be freed; later packets: the next wait */
	}
}

/* ------------------------------------------------------------------ */
/* edits                                                               */

static int edit_string(const unsigned char *p, size_t n, size_t *off, const char **out)
{
	const unsigned char *nul;

	if (*off >= n || (nul = memchr(p + *off, 0, n - *off)) == NULL)
		return -1;
	*out = (const char *)p + *off;
	*off = (size_t)(nul - p) + 1;
	return 0;
}

static const char *edit_value(struct milter_conn *mc, const char *v, struct buf *tmp)
{
	/* Without HDR_LEADSPC we put back the space we took (Postfix). */
	buf_set(tmp, (mc->pflags & SMFIP_HDR_LEADSPC) ? "" : " ");
	buf_puts(tmp, v);
	return buf_str(tmp);
}

static int reply_edit(struct smtpd_milters *ms, struct milter_conn *mc, int code,
		      const unsigned char *p, size_t n)
{
	static const struct {
		int code;
		uint32_t act;
	} need[] = {
	    {SMFIR_ADDHEADER, SMFIF_ADDHDRS},	    {SMFIR_INSHEADER, SMFIF_ADDHDRS},
	    {SMFIR_CHGHEADER, SMFIF_CHGHDRS},	    {SMFIR_ADDRCPT, SMFIF_ADDRCPT},
	    {SMFIR_ADDRCPT_PAR, SMFIF_ADDRCPT_PAR}, {SMFIR_DELRCPT, SMFIF_DELRCPT},
	    {SMFIR_CHGFROM, SMFIF_CHGFROM},	    {SMFIR_REPLBODY, SMFIF_CHGBODY},
	};
	const char *a = NULL, *b = NULL;
	struct buf tmp = BUF_INIT;
	uint32_t idx = 0;
	size_t off = 0, i;
	int rc = 0;

	for (i = 0; i < sizeof(need) / sizeof(*need) && need[i].code != code; i++)
		;
	if (i == sizeof(need) / sizeof(*need)) {
		conn_fail(mc, "unexpected filter response '%c' after event %s", code,
			  event_name(ms->event));
		return -1;
	}
	if (!(mc->actions & need[i].act)) {
		conn_fail(mc, "edit '%c' without the action negotiated", code);
		return -1;
	}
	if (code == SMFIR_REPLBODY) {
		if (!ms->replacing)
			buf_reset(&ms->new_body);
		ms->replacing = 1;
		buf_append(&ms->new_body, p, n);
		return 0;
	}
	if (code == SMFIR_INSHEADER || code == SMFIR_CHGHEADER) {
		if (n < 4)
			goto bad;
		memcpy(&idx, p, 4);
		idx = ntohl(idx);
		off = 4;
	}
	if (edit_string(p, n, &off, &a) < 0)
		goto bad;
	if (code == SMFIR_ADDHEADER || code == SMFIR_INSHEADER || code == SMFIR_CHGHEADER) {
		if (edit_string(p, n, &off, &b) < 0 || *a == 0)
			goto bad;
		ms->edited = 1;
		if (code == SMFIR_ADDHEADER)
			milter_msg_add(&ms->msg, a, edit_value(mc, b, &tmp));
		else if (code == SMFIR_INSHEADER)
			milter_msg_insert(&ms->msg, idx, a, edit_value(mc, b, &tmp));
		else
			milter_msg_change(&ms->msg, idx, a, *b ? edit_value(mc, b, &tmp) : "");
		goto out;
	}
	if (off < n && edit_string(p, n, &off, &b) < 0)
		goto bad;
	rc = milter_edit_envelope(ms->s, mc->spec->endpoint, code, a, b);
	goto out;
bad:
	conn_fail(mc, "malformed '%c' request", code);
	rc = -1;
out:
	buf_free(&tmp);
	return rc;
}

/* ------------------------------------------------------------------ */
/* the end of an op                                                    */

static void content_done(struct smtpd_milters *ms)
{
	struct smtpd_session *s = ms->s;

	if (ms->rc < 0) {
		const char *text = buf_str(&ms->reply);
		reply_log(ms, "milter-reject", text + (strlen(text) > 4 ? 4 : 0));
		return;
	}
	if (ms->edited) {
		buf_reset(ms->out);
		milter_msg_format(&ms->msg, ms->out);
	}
	if (s->txn_discard && ms->discard) {
		reply_log(ms, "milter-discard", "milter triggers DISCARD action");
	} else if (ms->hold_reason) {
		reply_log(ms, "milter-hold", ms->hold_reason);
		s->txn_hold = 1;
	}
	if (s->env.nrcpt == 0 && !s->txn_discard) {
		op_refuse(ms, "550 5.1.0 Error: no recipients specified");
		reply_log(ms, "milter-reject", "5.1.0 no recipients specified");
	}
}

/* CONNECT and HELO refusals (Postfix smtpd.c): 421 at once; at CONNECT
 * a 5xx replaces the greeting; the rest answers the next MAIL. */
static void conn_level_done(struct smtpd_milters *ms)
{
	struct smtpd_session *s = ms->s;
	const char *reply = buf_str(&ms->reply);

	if (ms->rc == 0)
		return;
	if (strncmp(reply, "421", 3) == 0) {
		if (ms->event == SMFIC_CONNECT) {
			buf_reset(&ms->reply);
			buf_printf(&ms->reply, "421 %s Service unavailable - try again later",
				   s->conf->myhostname);
		}
		return;
	}
	if (ms->event == SMFIC_CONNECT && reply[0] == '5') {
		reply_log(ms, "milter-reject", reply);
		buf_reset(&ms->reply);
		buf_printf(&ms->reply, "554 %s ESMTP not accepting connections",
			   s->conf->myhostname);
		return;
	}
	free(ms->sticky);
	ms->sticky = xstrdup(reply);
	ms->rc = 0;
}

static void op_finish(struct smtpd_milters *ms)
{
	struct smtpd_session *s = ms->s;
	smtpd_milter_cb cb = ms->cb;
	const char *reply;

	ms->busy = 0;
	if (ms->event == OP_CONTENT) {
		if (ms->replacing) /* REPLBODY was the last thing before EOF/timeout */
			ms->replacing = 0;
		content_done(ms);
		milter_msg_free(&ms->msg);
		buf_free(&ms->crlf);
		buf_free(&ms->new_body);
		free(ms->hold_reason);
		ms->hold_reason = NULL;
		ms->data_sent = 0;
		for (size_t i = 0; i < ms->n; i++) { /* not given EOM: ABORT */
			if (ms->m[i].st == MC_READY && ms->m[i].in_msg)
				conn_send(&ms->m[i], SMFIC_ABORT, NULL, 0);
			ms->m[i].in_msg = ms->m[i].msg_done = 0;
		}
		ms->discard = 0;
	} else if (ms->event == SMFIC_CONNECT || ms->event == SMFIC_HELO) {
		conn_level_done(ms);
	} else if (ms->rcpt_rej) {
		op_refuse(ms, ms->rcpt_rej); /* our refusal, logged already */
		free(ms->rcpt_rej);
		ms->rcpt_rej = NULL;
	} else if (ms->rc < 0) {
		reply_log(ms, "milter-reject", buf_str(&ms->reply));
	}
	if (ms->event == SMFIC_DATA && ms->rc == 0)
		ms->data_sent = 1;
	reply = buf_str(&ms->reply);
	if (!ms->async) {
		cb(s, ms->rc, reply);
		return;
	}
	s->state = ms->saved_state;
	if (s->local_submit) { /* pickup's: no SMTP session to resume */
		cb(s, ms->rc, reply);
		return;
	}
	if (!s->dead)
		cb(s, ms->rc, reply);
	smtpd_session_resume(s); /* frees a dead session */
}

/* ------------------------------------------------------------------ */
/* the interface                                                       */

static const struct smtpd_milter_conf *milter_conf_of(const struct smtpd_session *s)
{
	return s->local_submit ? s->conf->local_milters : s->conf->milters;
}

/* v/n: the milters of this session (own: from smtpd_milter_maps). */
static struct smtpd_milters *milters_new(struct smtpd_session *s, struct milter_spec *v, size_t n,
					 int own)
{
	const struct smtpd_milter_conf *mc = milter_conf_of(s);
	struct smtpd_milters *ms = xcalloc(1, sizeof(*ms));

	ms->s = s;
	ms->conf = mc;
	ms->n = n;
	if (own) {
		ms->own = v;
		ms->nown = n;
	}
	ms->m = xcalloc(n + 1, sizeof(*ms->m));
	for (size_t i = 0; i < n; i++) {
		ms->m[i].ms = ms;
		ms->m[i].spec = &v[i];
		ms->m[i].timer = evtimer_new(s->base, conn_timer_cb, &ms->m[i]);
	}
	return ms;
}

int smtpd_milter_on(struct smtpd_session *s)
{
	struct smtpd_milters *ms = s->milters;

	if (ms == NULL)
		return 0;
	for (size_t i = 0; i < ms->n; i++)
		if (ms->m[i].st == MC_READY || ms->m[i].err_reply || ms->m[i].err_hold)
			return 1;
	return ms->sticky != NULL;
}

static void pkt_reset(struct smtpd_milters *ms)
{
	buf_reset(&ms->pkt);
}

int smtpd_milter_connect(struct smtpd_session *s, smtpd_milter_cb cb)
{
	struct smtpd_milters *ms;
	uint16_t port = 0;
	char fam = 'U';
	struct buf name = BUF_INIT;

	if ((s->bev == NULL && !s->local_submit) || smtpd_milter_conf_count(milter_conf_of(s)) == 0) {
		cb(s, 0, "");
		return 0;
	}
	if (s->milters == NULL) {
		const struct smtpd_milter_conf *mc = milter_conf_of(s);
		struct milter_spec *v = mc->v;
		size_t n = mc->n;
		int own = 0;
		if (mc->nmaps > 0) {
			struct buf err = BUF_INIT;
			int r = milter_maps_lookup(mc, s->client.addr, &v, &n, &err);
			if (r < 0) { /* never run the mail unfiltered on a table error */
				msg_warn("smtpd_milter_maps: %s", buf_str(&err));
				buf_free(&err);
				cb(s, -1, "421 4.3.5 Server configuration problem - try again later");
				return 0;
			}
			own = r == 0;
			if (r == 1) {
				v = mc->v;
				n = mc->n;
			}
		}
		if (n == 0) { /* DISABLE, or only maps and none matched */
			if (own)
				milter_specs_free(v, n);
			cb(s, 0, "");
			return 0;
		}
		s->milters = milters_new(s, v, n, own);
	}
	ms = s->milters;
	pkt_reset(ms);
	/* Postfix sends "[addr]" for a client without a verified name. */
	if (strcmp(s->client.name, "unknown") == 0)
		buf_printf(&name, "[%s]", s->client.addr);
	else
		buf_set(&name, s->client.name);
	pkt_str(&ms->pkt, buf_str(&name));
	if (s->client.ip.family == AF_INET)
		fam = '4';
	else if (s->client.ip.family == AF_INET6)
		fam = '6';
	buf_putc(&ms->pkt, fam);
	if (fam != 'U') {
		port = htons((uint16_t)atoi(s->client.port ? s->client.port : "0"));
		buf_append(&ms->pkt, &port, 2);
		pkt_str(&ms->pkt, s->client.addr);
	}
	buf_free(&name);
	return op_start(ms, SMFIC_CONNECT, cb);
}

int smtpd_milter_helo(struct smtpd_session *s, smtpd_milter_cb cb)
{
	struct smtpd_milters *ms = s->milters;

	pkt_reset(ms);
	pkt_str(&ms->pkt, s->helo ? s->helo : "");
	return op_start(ms, SMFIC_HELO, cb);
}

void smtpd_milter_args(struct smtpd_session *s, const char *args)
{
	struct smtpd_milters *ms = s->milters;

	if (ms == NULL)
		return;
	free(ms->rcpt_args);
	ms->rcpt_args = xstrdup(args ? args : "");
}

/* "<addr> A=1 B=2" (as sent) -> argv "<addr>\0A=1\0B=2\0". */
static void pkt_argv(struct buf *pkt, const char *args)
{
	const char *p = args + strspn(args, " \t"), *gt;
	size_t n;

	if (*p == '<' && (gt = strchr(p, '>')) != NULL) {
		buf_append(pkt, p, (size_t)(gt - p + 1));
		p = gt + 1;
	} else {
		n = strcspn(p, " \t");
		buf_putc(pkt, '<');
		buf_append(pkt, p, n);
		buf_putc(pkt, '>');
		p += n;
	}
	buf_putc(pkt, 0);
	for (;;) {
		p += strspn(p, " \t");
		if (*p == 0)
			break;
		n = strcspn(p, " \t");
		buf_append(pkt, p, n);
		buf_putc(pkt, 0);
		p += n;
	}
}

int smtpd_milter_mail(struct smtpd_session *s, smtpd_milter_cb cb)
{
	struct smtpd_milters *ms = s->milters;

	if (ms->sticky) { /* refused at HELO/CONNECT */
		cb(s, -1, ms->sticky);
		return 0;
	}
	free(ms->mail_args);
	ms->mail_args = ms->rcpt_args; /* smtpd_milter_args() was for MAIL */
	ms->rcpt_args = NULL;
	ms->discard = 0;
	ms->data_sent = 0;
	free(ms->hold_reason);
	ms->hold_reason = NULL;
	for (size_t i = 0; i < ms->n; i++)
		ms->m[i].msg_done = 0;
	pkt_reset(ms);
	pkt_argv(&ms->pkt, ms->mail_args ? ms->mail_args : "<>");
	return op_start(ms, SMFIC_MAIL, cb);
}

int smtpd_milter_rcpt(struct smtpd_session *s, smtpd_milter_cb cb)
{
	struct smtpd_milters *ms = s->milters;

	pkt_reset(ms);
	pkt_argv(&ms->pkt, ms->rcpt_args ? ms->rcpt_args : "<>");
	return op_start(ms, SMFIC_RCPT, cb);
}

int smtpd_milter_rcpt_rej(struct smtpd_session *s, const char *reply, smtpd_milter_cb cb)
{
	struct smtpd_milters *ms = s->milters;

	pkt_reset(ms);
	pkt_argv(&ms->pkt, ms->rcpt_args ? ms->rcpt_args : "<>");
	ms->rcpt_rej = xstrdup(reply);
	return op_start(ms, SMFIC_RCPT, cb);
}

int smtpd_milter_data(struct smtpd_session *s, smtpd_milter_cb cb)
{
	struct smtpd_milters *ms = s->milters;

	pkt_reset(ms);
	return op_start(ms, SMFIC_DATA, cb);
}

int smtpd_milter_unknown(struct smtpd_session *s, const char *line, smtpd_milter_cb cb)
{
	struct smtpd_milters *ms = s->milters;

	pkt_reset(ms);
	pkt_str(&ms->pkt, line);
	return op_start(ms, SMFIC_UNKNOWN, cb);
}

int smtpd_milter_content(struct smtpd_session *s, struct buf *msg, size_t hidden,
			 smtpd_milter_cb cb)
{
	struct smtpd_milters *ms = s->milters;

	milter_msg_parse(&ms->msg, msg->data ? msg->data : "", msg->len, hidden);
	ms->out = msg;
	ms->edited = 0;
	ms->replacing = 0;
	return op_start(ms, OP_CONTENT, cb);
}

void smtpd_milter_abort(struct smtpd_session *s)
{
	struct smtpd_milters *ms = s->milters;

	if (ms == NULL || ms->busy)
		return;
	for (size_t i = 0; i < ms->n; i++) {
		struct milter_conn *mc = &ms->m[i];
		if (mc->st == MC_READY && mc->in_msg)
			conn_send(mc, SMFIC_ABORT, NULL, 0);
		mc->in_msg = mc->msg_done = 0;
	}
	ms->discard = 0;
	ms->data_sent = 0;
}

void smtpd_milter_end(struct smtpd_session *s)
{
	struct smtpd_milters *ms = s->milters;

	if (ms == NULL)
		return;
	for (size_t i = 0; i < ms->n; i++) {
		struct milter_conn *mc = &ms->m[i];
		/* What was held back, then QUIT, straight to the socket (the
		 * bufferevent's buffer goes with the free). */
		if (mc->st == MC_READY && mc->bev &&
		    evbuffer_get_length(bufferevent_get_output(mc->bev)) == 0) {
			static const unsigned char quit[5] = {0, 0, 0, 1, SMFIC_QUIT};
			buf_append(&mc->held, quit, 5);
			if (send(bufferevent_getfd(mc->bev), mc->held.data, mc->held.len,
				 MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
				(void)0; /* the milter sees the hang-up instead */
		}
		conn_close(mc);
		buf_free(&mc->held);
		event_free(mc->timer);
		for (int k = 0; k < MILTER_NSTAGES; k++)
			free(mc->symlist[k]);
	}
	free(ms->m);
	buf_free(&ms->reply);
	buf_free(&ms->pkt);
	free(ms->mail_args);
	free(ms->rcpt_args);
	free(ms->sticky);
	free(ms->rcpt_rej);
	milter_msg_free(&ms->msg);
	buf_free(&ms->crlf);
	buf_free(&ms->new_body);
	free(ms->hold_reason);
	milter_specs_free(ms->own, ms->nown);
	free(ms);
	s->milters = NULL;
}
