/* smtpd_sasl_dovecot.c - the "dovecot" back end of SMTP AUTH
 * (smtpd_sasl_type = dovecot): Dovecot's auth client protocol (version
 * 1.x, the one Postfix's xsasl_dovecot speaks), on the session's loop.
 *
 * One connection per SMTP session, opened at the first need and kept
 * until the session ends (or STARTTLS/XCLIENT forget the login): VERSION
 * and CPID out; VERSION, MECH..., DONE in; then per AUTH command "AUTH
 * <id> <MECH> service=smtp nologin lip= rip= [secured] [resp=]" and CONT
 * lines both ways until OK or FAIL. The mechanism is passed through as
 * the client chose it (PLAIN, LOGIN with its Username:/Password:
 * challenges), as Postfix does; the mechanisms Dovecot announces are
 * remembered per socket so that EHLO offers only those.
 * smtpd_sasl_path: a unix socket (relative to the config directory) or
 * inet:host:port.
 * Pitfalls: Dovecot drops a client that asks for a mechanism it did not
 * announce, so none is ever asked for; it refuses plaintext mechanisms
 * on connections it does not believe secured (disable_plaintext_auth):
 * "secured" is said only when the SMTP session has TLS. A callback may
 * close the connection it is called from (the session ended): the read
 * loop checks for that.
 */
#include "smtpd_int.h"

#include "base64.h"
#include "log.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DOVE_TIMEOUT_S 30 /* for each answer of the auth server */
#define DOVE_LINE_MAX 16384

struct smtpd_dovecot {
	struct bufferevent *bev;
	char *path;
	int handshake_done;
	int mechs;	    /* SMTPD_SASL_*: what this server announced */
	unsigned id;	    /* of the request in progress (0: none) */
	unsigned seq;	    /* the last id used on this connection */
	int mech;	    /* its mechanism */
	struct buf pending; /* a request written before DONE */
	smtpd_dovecot_cb cb;
	void *arg;
	int broken; /* closed or failed: a new AUTH opens another connection */
	int in_cb;  /* a callback is running */
	int closed; /* smtpd_dovecot_close() during a callback */
};

/* ------------------------------------------------------------------ */
/* what each socket announced (for EHLO)                               */

struct dove_mechs {
	char *path;
	int mechs;
};
static pthread_mutex_t dove_mechs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dove_mechs *dove_known;
static size_t dove_nknown;

int smtpd_dovecot_mechs(const char *path)
{
	int m = -1;

	pthread_mutex_lock(&dove_mechs_lock);
	for (size_t i = 0; i < dove_nknown && m < 0; i++)
		if (strcmp(dove_known[i].path, path) == 0)
			m = dove_known[i].mechs;
	pthread_mutex_unlock(&dove_mechs_lock);
	return m;
}

static void dove_mechs_learn(const char *path, int mechs)
{
	size_t i;

	pthread_mutex_lock(&dove_mechs_lock);
	for (i = 0; i < dove_nknown && strcmp(dove_known[i].path, path) != 0; i++)
		;
	if (i == dove_nknown) { /* one entry per configured socket: a handful */
		dove_known = xrealloc(dove_known, (dove_nknown + 1) * sizeof(*dove_known));
		dove_known[dove_nknown++].path = xstrdup(path);
	}
	dove_known[i].mechs = mechs;
	pthread_mutex_unlock(&dove_mechs_lock);
}

static const char *dove_mech_name(int mech)
{
	return mech == SMTPD_SASL_PLAIN ? "PLAIN" : "LOGIN";
}

/* ------------------------------------------------------------------ */
/* the connection                                                      */

static void dove_free(struct smtpd_dovecot *d)
{
	if (d->bev)
		bufferevent_free(d->bev);
	if (d->pending.data)
		explicit_bzero(d->pending.data, d->pending.len);
	buf_free(&d->pending);
	free(d->path);
	free(d);
}

void smtpd_dovecot_close(struct smtpd_dovecot *d)
{
	if (d == NULL)
		return;
	if (d->in_cb)
		d->closed = 1; /* freed when the callback returns */
	else
		dove_free(d);
}

int smtpd_dovecot_usable(const struct smtpd_dovecot *d)
{
	return d != NULL && !d->broken;
}

/* Tell the owner; 1 when the connection is gone (closed meanwhile). */
static int dove_report(struct smtpd_dovecot *d, int result, const char *text, const char *why)
{
	smtpd_dovecot_cb cb = d->cb;

	if (result != SMTPD_DOVECOT_CONT) {
		d->id = 0;
		d->cb = NULL;
		bufferevent_set_timeouts(d->bev, NULL, NULL); /* idle: the client types */
	}
	if (cb == NULL)
		return 0;
	d->in_cb = 1;
	cb(d->arg, result, text, why);
	d->in_cb = 0;
	if (d->closed) {
		dove_free(d);
		return 1;
	}
	return 0;
}

/* A broken connection: the request in progress (if any) fails
 * temporarily; 1 when the connection is gone. */
static int dove_broken(struct smtpd_dovecot *d, const char *why)
{
	d->broken = 1;
	bufferevent_disable(d->bev, EV_READ | EV_WRITE);
	return d->id ? dove_report(d, SMTPD_DOVECOT_TEMP, NULL, why) : 0;
}

/* The value of "name=" among the tab-separated fields, or NULL. */
static char *dove_param(char *fields, const char *name)
{
	size_t n = strlen(name);

	for (char *save = NULL, *f = strtok_r(fields, "\t", &save); f;
	     f = strtok_r(NULL, "\t", &save))
		if (strncmp(f, name, n) == 0 && f[n] == '=')
			return f + n + 1;
	return NULL;
}

/* Before DONE: VERSION, MECH (what we may ask for), SPID, CUID, COOKIE. */
static int dove_handshake_line(struct smtpd_dovecot *d, char *line)
{
	if (strncmp(line, "VERSION\t", 8) == 0 && strncmp(line + 8, "1\t", 2) != 0)
		return dove_broken(d, "dovecot auth server: unsupported protocol version");
	if (strncmp(line, "MECH\t", 5) == 0) {
		size_t n = strcspn(line + 5, "\t");
		if (n == 5 && strncasecmp(line + 5, "PLAIN", 5) == 0)
			d->mechs |= SMTPD_SASL_PLAIN;
		else if (n == 5 && strncasecmp(line + 5, "LOGIN", 5) == 0)
			d->mechs |= SMTPD_SASL_LOGIN;
		return 0;
	}
	if (strcmp(line, "DONE") != 0)
		return 0;
	d->handshake_done = 1;
	dove_mechs_learn(d->path, d->mechs);
	if (d->id && (d->mech & d->mechs) == 0) { /* never ask: Dovecot would hang up */
		explicit_bzero(d->pending.data ? d->pending.data : "", d->pending.len);
		buf_reset(&d->pending);
		return dove_report(d, SMTPD_DOVECOT_NOMECH, NULL, NULL);
	}
	if (d->pending.len) {
		bufferevent_write(d->bev, d->pending.data, d->pending.len);
		explicit_bzero(d->pending.data, d->pending.len);
		buf_reset(&d->pending);
	}
	return 0;
}

/* "OK <id> user=..", "FAIL <id> [temp] [reason=..] [user=..]", "CONT <id>
 * <base64>"; 1 when the connection is gone. */
static int dove_reply_line(struct smtpd_dovecot *d, char *line)
{
	char *tab = strchr(line, '\t'), *fields;
	unsigned long id;
	char reason[200] = "authentication failure";
	int temp = 0;

	if (tab == NULL || (id = strtoul(tab + 1, &fields, 10)) != d->id || d->id == 0 ||
	    (*fields != 0 && *fields != '\t')) {
		smtpd_printable(line);
		msg_warn("dovecot auth server: unexpected reply: %.100s", line);
		return 0;
	}
	*tab = 0;
	fields = *fields ? fields + 1 : fields;
	if (strcmp(line, "CONT") == 0)
		return dove_report(d, SMTPD_DOVECOT_CONT, fields, NULL);
	if (strcmp(line, "OK") == 0) {
		char *user = dove_param(fields, "user");
		if (user == NULL || *user == 0)
			return dove_report(d, SMTPD_DOVECOT_TEMP, NULL,
					   "dovecot auth server: no user name in its OK");
		return dove_report(d, SMTPD_DOVECOT_OK, user, NULL);
	}
	if (strcmp(line, "FAIL") != 0) {
		smtpd_printable(line);
		msg_warn("dovecot auth server: unexpected reply: %.100s", line);
		return 0;
	}
	{
		char *user = NULL;
		for (char *save = NULL, *f = strtok_r(fields, "\t", &save); f;
		     f = strtok_r(NULL, "\t", &save)) {
			if (strcmp(f, "temp") == 0) /* the back end failed, not the password */
				temp = 1;
			else if (strncmp(f, "reason=", 7) == 0)
				snprintf(reason, sizeof(reason), "%s", f + 7);
			else if (strncmp(f, "user=", 5) == 0)
				user = f + 5;
		}
		smtpd_printable(reason);
		return dove_report(d, temp ? SMTPD_DOVECOT_TEMP : SMTPD_DOVECOT_FAIL, user, reason);
	}
}

static void dove_read_cb(struct bufferevent *bev, void *arg)
{
	struct smtpd_dovecot *d = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n;
	char *line;

	while (!d->broken && (line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF)) != NULL) {
		int gone =
		    d->handshake_done ? dove_reply_line(d, line) : dove_handshake_line(d, line);
		free(line);
		if (gone)
			return;
	}
	if (!d->broken && evbuffer_get_length(in) > DOVE_LINE_MAX)
		dove_broken(d, "dovecot auth server: reply line too long");
}

static void dove_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtpd_dovecot *d = arg;

	if (what & BEV_EVENT_CONNECTED)
		return;
	dove_broken(d, what & BEV_EVENT_TIMEOUT
			   ? "dovecot auth server: timeout"
			   : "dovecot auth server: connection failed or closed");
}

/* Address of smtpd_sasl_path: unix socket path or inet:host:port. */
static int dove_addr(const char *path, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	if (strncmp(path, "inet:", 5) == 0) {
		int l = (int)sizeof(*ss);
		if (evutil_parse_sockaddr_port(path + 5, (struct sockaddr *)ss, &l) < 0)
			return -1;
		*len = (socklen_t)l;
		return 0;
	}
	{
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		if (strlen(path) >= sizeof(un->sun_path))
			return -1;
		un->sun_family = AF_UNIX;
		snprintf(un->sun_path, sizeof(un->sun_path), "%s", path);
		*len = (socklen_t)sizeof(*un);
	}
	return 0;
}

struct smtpd_dovecot *smtpd_dovecot_open(struct event_base *base, const char *path)
{
	struct smtpd_dovecot *d = xcalloc(1, sizeof(*d));
	struct sockaddr_storage ss;
	struct buf hello = BUF_INIT;
	socklen_t sslen;

	d->path = xstrdup(path);
	if (dove_addr(path, &ss, &sslen) < 0 ||
	    (d->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE)) == NULL)
		goto fail;
	/* CPID: Dovecot's name for the client process (Postfix: its pid). */
	buf_printf(&hello, "VERSION\t1\t2\nCPID\t%ld\n", (long)getpid());
	bufferevent_write(d->bev, hello.data, hello.len);
	buf_free(&hello);
	bufferevent_setcb(d->bev, dove_read_cb, NULL, dove_event_cb, d);
	bufferevent_enable(d->bev, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect(d->bev, (struct sockaddr *)&ss, (int)sslen) < 0)
		goto fail;
	return d;
fail:
	dove_free(d);
	return NULL;
}

static void dove_send(struct smtpd_dovecot *d, struct buf *line)
{
	struct timeval tv = {DOVE_TIMEOUT_S, 0};

	if (d->handshake_done)
		bufferevent_write(d->bev, line->data, line->len);
	else
		buf_append(&d->pending, line->data, line->len);
	bufferevent_set_timeouts(d->bev, &tv, &tv);
	explicit_bzero(line->data, line->len);
	buf_free(line);
}

int smtpd_dovecot_start(struct smtpd_dovecot *d, int mech, const char *resp, int secured,
			const char *lip, const char *rip, smtpd_dovecot_cb cb, void *arg)
{
	struct buf line = BUF_INIT;

	if (d == NULL || d->broken || d->id)
		return -1;
	if (d->handshake_done && (mech & d->mechs) == 0)
		return -1;
	d->id = ++d->seq ? d->seq : ++d->seq; /* ids are per connection, never 0 */
	d->mech = mech;
	d->cb = cb;
	d->arg = arg;
	buf_printf(&line, "AUTH\t%u\t%s\tservice=smtp\tnologin\tlip=%s\trip=%s%s", d->id,
		   dove_mech_name(mech), lip ? lip : "", rip ? rip : "",
		   secured ? "\tsecured" : "");
	if (resp) /* the initial response, base64 as the client sent it ("": empty) */
		buf_printf(&line, "\tresp=%s", resp);
	buf_putc(&line, '\n');
	dove_send(d, &line);
	return 0;
}

int smtpd_dovecot_continue(struct smtpd_dovecot *d, const char *resp)
{
	struct buf line = BUF_INIT;

	if (d == NULL || d->broken || d->id == 0)
		return -1;
	buf_printf(&line, "CONT\t%u\t%s\n", d->id, resp);
	dove_send(d, &line);
	return 0;
}
