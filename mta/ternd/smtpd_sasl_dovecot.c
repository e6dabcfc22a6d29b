/* smtpd_sasl_dovecot.c - the "dovecot" back end of SMTP AUTH
 * (smtpd_sasl_type = dovecot): one check of a login and password against
 * Dovecot's auth server, in its client protocol (version 1.x, the one
 * Postfix's xsasl_dovecot speaks), on the session's event loop.
 *
 * One connection per check: VERSION and CPID out; VERSION, MECH...,
 * DONE in; then "AUTH <id> PLAIN service=smtp nologin lip= rip=
 * [secured] resp=<base64>" and one OK, FAIL or CONT back. The client's
 * LOGIN exchange is done by smtpd_sasl.c and handed over as PLAIN, so
 * Dovecot needs only "plain" in auth_mechanisms.
 * smtpd_sasl_path: a unix socket (relative to the config directory) or
 * inet:host:port. Pitfall: Dovecot refuses plaintext mechanisms on
 * connections it does not believe secured (disable_plaintext_auth): we
 * say "secured" only when the SMTP session has TLS.
 */
#include "smtpd_int.h"

#include "base64.h"
#include "log.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DOVE_TIMEOUT_S 30
#define DOVE_LINE_MAX 16384

struct dove_req {
	struct bufferevent *bev;
	struct buf request; /* the AUTH line, sent after DONE */
	smtpd_sasl_dovecot_cb cb;
	void *arg;
	int handshake_done;
};

static void dove_finish(struct dove_req *r, int result, const char *user, const char *why)
{
	smtpd_sasl_dovecot_cb cb = r->cb;
	void *arg = r->arg;

	bufferevent_free(r->bev);
	explicit_bzero(r->request.data ? r->request.data : "", r->request.len);
	buf_free(&r->request);
	free(r);
	cb(arg, result, user, why);
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

/* One line from the server; 1 when the request is finished. */
static int dove_line(struct dove_req *r, char *line)
{
	if (!r->handshake_done) {
		if (strncmp(line, "VERSION\t", 8) == 0 && strncmp(line + 8, "1\t", 2) != 0) {
			dove_finish(r, -1, NULL,
				    "dovecot auth server: unsupported protocol version");
			return 1;
		}
		if (strcmp(line, "DONE") == 0) {
			r->handshake_done = 1;
			bufferevent_write(r->bev, r->request.data, r->request.len);
		}
		return 0; /* MECH, SPID, CUID, COOKIE: nothing we need */
	}
	if (strncmp(line, "OK\t1", 4) == 0 && (line[4] == 0 || line[4] == '\t')) {
		char *user = line[4] ? dove_param(line + 5, "user") : NULL;
		dove_finish(r, 0, user, NULL);
	} else if (strncmp(line, "FAIL\t1", 6) == 0 && (line[6] == 0 || line[6] == '\t')) {
		/* "temp": the back end (a database...) failed, not the password */
		int temp = 0;
		char reason[200] = "authentication failure";
		for (char *save = NULL, *f = line[6] ? strtok_r(line + 7, "\t", &save) : NULL; f;
		     f = strtok_r(NULL, "\t", &save)) {
			if (strcmp(f, "temp") == 0)
				temp = 1;
			else if (strncmp(f, "reason=", 7) == 0)
				snprintf(reason, sizeof(reason), "%s", f + 7);
		}
		smtpd_printable(reason);
		dove_finish(r, temp ? -1 : 1, NULL, reason);
	} else if (strncmp(line, "CONT\t1", 6) == 0) {
		/* PLAIN with its initial response needs no second round */
		dove_finish(r, -1, NULL, "dovecot auth server: unexpected challenge");
	} else {
		smtpd_printable(line);
		msg_warn("dovecot auth server: unexpected reply: %.100s", line);
		return 0;
	}
	return 1;
}

static void dove_read_cb(struct bufferevent *bev, void *arg)
{
	struct dove_req *r = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n;
	char *line;

	while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF)) != NULL) {
		int done = dove_line(r, line);
		free(line);
		if (done)
			return;
	}
	if (evbuffer_get_length(in) > DOVE_LINE_MAX)
		dove_finish(r, -1, NULL, "dovecot auth server: reply line too long");
}

static void dove_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct dove_req *r = arg;

	if (what & BEV_EVENT_CONNECTED)
		return;
	dove_finish(r, -1, NULL,
		    what & BEV_EVENT_TIMEOUT ? "dovecot auth server: timeout"
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

int smtpd_sasl_dovecot_auth(struct event_base *base, const char *path, const char *user,
			    const char *pass, int secured, const char *lip, const char *rip,
			    smtpd_sasl_dovecot_cb cb, void *arg)
{
	struct dove_req *r = xcalloc(1, sizeof(*r));
	struct timeval tv = {DOVE_TIMEOUT_S, 0};
	struct sockaddr_storage ss;
	struct buf plain = BUF_INIT;
	socklen_t sslen;

	if (dove_addr(path, &ss, &sslen) < 0 ||
	    (r->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
		free(r);
		return -1;
	}
	/* RFC 4616 message: authzid (empty) NUL authcid NUL password */
	buf_putc(&plain, 0);
	buf_puts(&plain, user);
	buf_putc(&plain, 0);
	buf_puts(&plain, pass);
	buf_printf(&r->request, "VERSION\t1\t2\nCPID\t%ld\n", (long)getpid());
	bufferevent_write(r->bev, r->request.data, r->request.len);
	buf_reset(&r->request);
	buf_printf(&r->request,
		   "AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=%s\trip=%s%s\tresp=", lip ? lip : "",
		   rip ? rip : "", secured ? "\tsecured" : "");
	base64_encode(plain.data, plain.len, &r->request);
	buf_putc(&r->request, '\n');
	explicit_bzero(plain.data, plain.len);
	buf_free(&plain);
	r->cb = cb;
	r->arg = arg;
	bufferevent_setcb(r->bev, dove_read_cb, NULL, dove_event_cb, r);
	bufferevent_set_timeouts(r->bev, &tv, &tv);
	bufferevent_enable(r->bev, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect(r->bev, (struct sockaddr *)&ss, (int)sslen) < 0) {
		bufferevent_free(r->bev);
		buf_free(&r->request);
		free(r);
		return -1;
	}
	return 0;
}
