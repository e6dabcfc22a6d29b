/* smtpd_sasl.c - SMTP AUTH in the SMTP server (RFC 4954; smtpd_tls.h):
 * the AUTH keyword in EHLO, the AUTH command with PLAIN (RFC 4616) and
 * LOGIN, "MAIL FROM ... AUTH=", the login facts (sasl_method,
 * sasl_username, sasl_sender) and per-client limits
 * (smtpd_client_auth_rate_limit, smtpd_client_auth_failure_limit).
 *
 * Back end "passwd" (smtpd_sasl_type): smtpd_sasl_path is a file of
 * "user:crypt-hash" lines (yescrypt, sha512-crypt... whatever crypt(3)
 * knows; "tern passwd" writes them), read at every attempt, so edits take
 * effect without a reload. Hashing costs milliseconds by design, so it
 * runs on a thread of its own and the session waits in SMTPD_ST_CHECK:
 * the event loop never blocks. Back end "dovecot": the exchange is
 * Dovecot's (smtpd_sasl_dovecot.c, one connection per session): the
 * client's responses and Dovecot's challenges are relayed, the session
 * waits in SMTPD_ST_CHECK for each answer, and EHLO offers what Dovecot
 * announced (once known) among PLAIN and LOGIN.
 * Pitfalls: smtpd_tls_auth_only (default yes): no AUTH, and no password
 * on the wire, before STARTTLS. A failed attempt counts as an error
 * (error sleep, hard limit).
 */
#include "smtpd_int.h"

#include "base64.h"
#include "log.h"
#include "table_keys.h"

#include <event2/event.h>

#include <crypt.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define SASL_PLAIN SMTPD_SASL_PLAIN
#define SASL_LOGIN SMTPD_SASL_LOGIN

struct smtpd_sasl_conf {
	int enable, auth_only, broken_clients, header;
	int dovecot;		    /* smtpd_sasl_type: 0 passwd, 1 dovecot */
	int mechs_plain, mechs_tls; /* SASL_* allowed without, with TLS */
	char *path;		    /* the password file */
	char *local_domain;	    /* smtpd_sasl_local_domain */
	struct matchlist *exceptions;
	long long rate_limit, failure_limit, rate_unit_s;
	struct table **login_maps; /* smtpd_sender_login_maps */
	size_t nlogin_maps;
};

/* One AUTH exchange (RFC 4954 §4): the mechanism and what it collected. */
struct smtpd_sasl_xchg {
	int mech;
	char *user; /* LOGIN: the user name, once given */
};

/* ------------------------------------------------------------------ */
/* settings                                                            */

/* Security options: PLAIN and LOGIN are plaintext mechanisms, so only
 * "noplaintext" removes them; the other Cyrus options exclude nothing we
 * implement (noanonymous: we have no ANONYMOUS). */
static int sasl_options(const struct cfg *cfg, const char *l, const char *param, int *mechs,
			struct buf *err)
{
	static const char *const known[] = {"noanonymous", "noplaintext", "nodictionary",
					    "noactive",	   "mutual_auth", "forward_secrecy"};
	struct cfg_list items = {NULL, 0};
	int rc = 0;

	*mechs = SASL_PLAIN | SASL_LOGIN;
	if (cfg_get_list(cfg, l, param, &items, err) < 0)
		return -1;
	for (size_t i = 0; i < items.count && rc == 0; i++) {
		size_t k;
		for (k = 0; k < sizeof(known) / sizeof(*known); k++)
			if (strcasecmp(items.items[i], known[k]) == 0)
				break;
		if (k == sizeof(known) / sizeof(*known)) {
			buf_printf(err, "%s: unknown option \"%s\"", param, items.items[i]);
			rc = -1;
		} else if (k == 1) {
			*mechs = 0;
		}
	}
	cfg_list_free(&items);
	return rc;
}

static int sasl_login_maps(const struct cfg *cfg, const char *l, struct smtpd_sasl_conf *sc,
			   struct buf *err)
{
	struct cfg_list items = {NULL, 0};
	int rc = 0;

	if (cfg_get_list(cfg, l, "smtpd_sender_login_maps", &items, err) < 0)
		return -1;
	sc->login_maps = xcalloc(items.count + 1, sizeof(*sc->login_maps));
	for (size_t i = 0; i < items.count && rc == 0; i++) {
		struct buf why = BUF_INIT;
		if ((sc->login_maps[sc->nlogin_maps] = table_open_lenient(items.items[i], &why)) ==
		    NULL) {
			buf_printf(err, "smtpd_sender_login_maps: %s", buf_str(&why));
			rc = -1;
		} else {
			sc->nlogin_maps++;
		}
		buf_free(&why);
	}
	cfg_list_free(&items);
	return rc;
}

struct smtpd_sasl_conf *smtpd_sasl_conf_new(const struct cfg *cfg, const char *l, struct buf *err)
{
	struct smtpd_sasl_conf *sc = xcalloc(1, sizeof(*sc));
	struct buf type = BUF_INIT, path = BUF_INIT, dom = BUF_INIT;

	if (cfg_get_bool(cfg, l, "smtpd_sasl_auth_enable", &sc->enable, err) < 0 ||
	    cfg_get_bool(cfg, l, "smtpd_tls_auth_only", &sc->auth_only, err) < 0 ||
	    cfg_get_bool(cfg, l, "broken_sasl_auth_clients", &sc->broken_clients, err) < 0 ||
	    cfg_get_bool(cfg, l, "smtpd_sasl_authenticated_header", &sc->header, err) < 0 ||
	    cfg_get_str(cfg, l, "smtpd_sasl_type", &type, err) < 0 ||
	    cfg_get_path(cfg, l, "smtpd_sasl_path", &path, err) < 0 ||
	    cfg_get_str(cfg, l, "smtpd_sasl_local_domain", &dom, err) < 0 ||
	    sasl_options(cfg, l, "smtpd_sasl_security_options", &sc->mechs_plain, err) < 0 ||
	    sasl_options(cfg, l, "smtpd_sasl_tls_security_options", &sc->mechs_tls, err) < 0 ||
	    cfg_get_int(cfg, l, "smtpd_client_auth_rate_limit", &sc->rate_limit, err) < 0 ||
	    cfg_get_int(cfg, l, "smtpd_client_auth_failure_limit", &sc->failure_limit, err) < 0 ||
	    cfg_get_time(cfg, l, "anvil_rate_time_unit", &sc->rate_unit_s, err) < 0)
		goto fail;
	sc->exceptions =
	    matchlist_from_cfg(cfg, l, "smtpd_sasl_exceptions_networks", MATCHLIST_ADDR, err);
	if (sc->exceptions == NULL || sasl_login_maps(cfg, l, sc, err) < 0)
		goto fail;
	sc->dovecot = strcasecmp(buf_str(&type), "dovecot") == 0;
	if (sc->enable && !sc->dovecot && strcasecmp(buf_str(&type), "passwd") != 0) {
		buf_printf(err, "smtpd_sasl_type: \"%s\" is not supported (passwd, dovecot)",
			   buf_str(&type));
		goto fail;
	}
	if (sc->enable && path.len == 0) {
		buf_puts(err, sc->dovecot ? "smtpd_sasl_path: Dovecot's auth socket is not set"
					  : "smtpd_sasl_path: the password file is not set");
		goto fail;
	}
	if (sc->dovecot && strncmp(buf_str(&path), "inet:", 5) != 0 &&
	    strstr(buf_str(&path), "/inet:")) {
		/* cfg_get_path() made "inet:host:port" relative to the config directory */
		char *inet = xstrdup(strstr(buf_str(&path), "/inet:") + 1);
		buf_set(&path, inet);
		free(inet);
	}
	sc->path = buf_detach(&path);
	sc->local_domain = buf_detach(&dom);
	buf_free(&type);
	return sc;
fail:
	if (l)
		buf_printf(err, " (listener %s)", l);
	buf_free(&type);
	buf_free(&path);
	buf_free(&dom);
	smtpd_sasl_conf_free(sc);
	return NULL;
}

void smtpd_sasl_conf_free(struct smtpd_sasl_conf *sc)
{
	if (sc == NULL)
		return;
	free(sc->path);
	free(sc->local_domain);
	matchlist_free(sc->exceptions);
	for (size_t i = 0; i < sc->nlogin_maps; i++)
		table_close(sc->login_maps[i]);
	free(sc->login_maps);
	free(sc);
}

/* ------------------------------------------------------------------ */
/* per-client counters, shared by all loops                            */

struct sasl_client {
	struct inet_addr ip;
	long long n[SMTPD_EV_COUNT]; /* in the current time unit */
	time_t start;
	struct sasl_client *next;
};
static pthread_mutex_t sasl_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sasl_client *sasl_clients;

long long smtpd_client_event(const struct inet_addr *ip, long long unit, int kind, int add)
{
	struct sasl_client *c, **pp;
	time_t now = time(NULL);
	long long n;

	if (unit <= 0)
		unit = 60;
	pthread_mutex_lock(&sasl_lock);
	for (pp = &sasl_clients; (c = *pp) != NULL;) { /* forget the stale ones */
		if (now - c->start >= unit) {
			*pp = c->next;
			free(c);
		} else {
			pp = &c->next;
		}
	}
	for (c = sasl_clients; c; c = c->next)
		if (c->ip.family == ip->family && memcmp(c->ip.bytes, ip->bytes, 16) == 0)
			break;
	if (c == NULL) {
		c = xcalloc(1, sizeof(*c));
		c->ip = *ip;
		c->start = now;
		c->next = sasl_clients;
		sasl_clients = c;
	}
	n = c->n[kind] += add;
	pthread_mutex_unlock(&sasl_lock);
	return n;
}

static long long sasl_client_count(const struct inet_addr *ip, long long unit, int what)
{
	return what == 0   ? smtpd_client_event(ip, unit, SMTPD_EV_AUTH, 1)
	       : what == 1 ? smtpd_client_event(ip, unit, SMTPD_EV_AUTH_FAIL, 1)
			   : smtpd_client_event(ip, unit, SMTPD_EV_AUTH_FAIL, 0);
}

/* ------------------------------------------------------------------ */
/* EHLO, facts                                                         */

static int sasl_mechs(const struct smtpd_session *s)
{
	const struct smtpd_sasl_conf *sc = s->conf->sasl;
	int m, dove;

	if (sc == NULL || !sc->enable || (sc->auth_only && s->tls == NULL))
		return 0;
	m = s->tls ? sc->mechs_tls : sc->mechs_plain;
	if (sc->dovecot && (dove = smtpd_dovecot_mechs(sc->path)) >= 0)
		m &= dove; /* what Dovecot offers (Postfix: its MECH lines) */
	return m;
}

const char *smtpd_sasl_offer(struct smtpd_session *s, int *broken_clients)
{
	const struct smtpd_sasl_conf *sc = s->conf->sasl;
	int m = sasl_mechs(s);

	if (m == 0 || (s->conf->ehlo_discard & SMTPD_EHLO_AUTH) ||
	    smtpd_client_trusted(s, sc->exceptions))
		return NULL;
	/* Dovecot not asked yet: offer ours, and connect now; the AUTH that
	 * follows uses this connection, and later EHLOs know the answer. */
	if (sc->dovecot && smtpd_dovecot_mechs(sc->path) < 0 && s->sasl_dovecot == NULL && s->base)
		s->sasl_dovecot = smtpd_dovecot_open(s->base, sc->path);
	*broken_clients = s->conf->sasl->broken_clients;
	return m == (SASL_PLAIN | SASL_LOGIN) ? "PLAIN LOGIN" : m == SASL_PLAIN ? "PLAIN" : "LOGIN";
}

const char *smtpd_proto_name(const struct smtpd_session *s)
{
	/* RFC 3848: ESMTPS (TLS), ESMTPA (AUTH), ESMTPSA (both). */
	static const char *const names[] = {"ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA"};

	if (!s->esmtp)
		return "SMTP";
	return names[(s->tls != NULL) | (s->sasl_username != NULL) << 1];
}

void smtpd_sasl_received(const struct smtpd_session *s, struct buf *out)
{
	if (s->sasl_username && s->conf->sasl->header)
		buf_printf(out, "\t(Authenticated sender: %s)\n", s->sasl_username);
}

void smtpd_sasl_reset(struct smtpd_session *s)
{
	free(s->sasl_method);
	free(s->sasl_username);
	free(s->sasl_sender);
	s->sasl_method = s->sasl_username = s->sasl_sender = NULL;
	if (s->sasl_xchg) {
		free(s->sasl_xchg->user);
		free(s->sasl_xchg);
		s->sasl_xchg = NULL;
	}
	smtpd_dovecot_close(s->sasl_dovecot);
	s->sasl_dovecot = NULL;
}

int smtpd_sasl_busy(const struct smtpd_session *s)
{
	return s->sasl_xchg != NULL;
}

/* RFC 4954 §5: AUTH=<> or AUTH=xtext. Postfix keeps the value only for an
 * authenticated client (sasl_sender); others' claims are ignored. */
int smtpd_sasl_mail_param(struct smtpd_session *s, const char *value)
{
	struct buf dec = BUF_INIT;

	if (*value == 0) {
		smtpd_reply(s, "501 5.5.4 Bad AUTH parameter syntax");
		return -1;
	}
	for (const char *p = value; *p; p++) {
		if (*p == '+' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
			char hex[3] = {p[1], p[2], 0};
			buf_putc(&dec, (int)strtol(hex, NULL, 16));
			p += 2;
		} else if (*p < '!' || *p > '~' || *p == '+' || *p == '=') {
			buf_free(&dec);
			smtpd_reply(s, "501 5.5.4 Bad AUTH parameter syntax");
			return -1;
		} else {
			buf_putc(&dec, *p);
		}
	}
	free(s->sasl_sender);
	s->sasl_sender = NULL;
	if (s->sasl_username && strcmp(buf_str(&dec), "<>") != 0) {
		s->sasl_sender = buf_detach(&dec);
		smtpd_printable(s->sasl_sender);
	}
	buf_free(&dec);
	return 0;
}

/* ------------------------------------------------------------------ */
/* the password check, on a thread of its own                          */

struct sasl_job {
	struct smtpd_session *s;
	struct event_base *base;
	char *path, *user, *pass;
	int mech;
	int result; /* 0 ok, 1 bad credentials, -1 back end failure */
	char why[160];
};

/* Constant time over the length of a (the hash we computed). */
static int sasl_same(const char *a, const char *b)
{
	size_t n = strlen(a);
	unsigned char d = n != strlen(b);

	for (size_t i = 0; i < n; i++)
		d |= (unsigned char)(a[i] ^ b[i < strlen(b) ? i : 0]);
	return d == 0;
}

/* The stored hash of user, or NULL (*err set on a read error). */
static char *sasl_passwd_find(const char *path, const char *user, int *err, char *why,
			      size_t whylen)
{
	FILE *f = fopen(path, "r");
	char *line = NULL, *hash = NULL;
	size_t cap = 0, ul = strlen(user);
	ssize_t n;

	*err = 0;
	if (f == NULL) {
		snprintf(why, whylen, "%s: %s", path, strerror(errno));
		*err = 1;
		return NULL;
	}
	while (hash == NULL && (n = getline(&line, &cap, f)) >= 0) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = 0;
		if (line[0] == '#' || strncmp(line, user, ul) != 0 || line[ul] != ':')
			continue;
		hash = xstrdup(line + ul + 1);
		hash[strcspn(hash, ":")] = 0; /* passwd(5)-like files may have more fields */
	}
	if (ferror(f)) {
		snprintf(why, whylen, "%s: read error", path);
		*err = 1;
	}
	free(line);
	fclose(f);
	return hash;
}

static void sasl_job_done(evutil_socket_t fd, short what, void *arg);

/* A real hash of a random-salted nothing: an unknown user costs as much
 * time as a known one, so timing does not tell which logins exist. */
static char sasl_dummy[CRYPT_OUTPUT_SIZE];
static pthread_once_t sasl_dummy_once = PTHREAD_ONCE_INIT;

static void sasl_dummy_make(void)
{
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data *cd = xcalloc(1, sizeof(*cd));
	const char *h = NULL;

	if (crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof(salt)))
		h = crypt_r("tern-no-such-user", salt, cd);
	snprintf(sasl_dummy, sizeof(sasl_dummy), "%s", h && *h != '*' ? h : "*");
	free(cd);
}

static void *sasl_job_run(void *arg)
{
	struct sasl_job *j = arg;
	struct crypt_data *cd = xcalloc(1, sizeof(*cd));
	int err = 0;
	char *hash = sasl_passwd_find(j->path, j->user, &err, j->why, sizeof(j->why));
	const char *got;

	pthread_once(&sasl_dummy_once, sasl_dummy_make);
	got = crypt_r(j->pass, hash && *hash ? hash : sasl_dummy, cd);

	if (err)
		j->result = -1;
	else if (hash && *hash && got && *got != '*' && sasl_same(got, hash))
		j->result = 0;
	else
		j->result = 1;
	explicit_bzero(j->pass, strlen(j->pass));
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	free(hash);
	if (event_base_once(j->base, -1, EV_TIMEOUT, sasl_job_done, j, NULL) < 0)
		msg_warn("SASL: cannot report back to the session loop");
	return NULL;
}

static void sasl_job_free(struct sasl_job *j)
{
	free(j->path);
	free(j->user);
	free(j->pass);
	free(j);
}

static const char *sasl_mech_name(int mech)
{
	return mech == SASL_PLAIN ? "PLAIN" : "LOGIN";
}

static void sasl_job_done(evutil_socket_t fd, short what, void *arg)
{
	struct sasl_job *j = arg;
	struct smtpd_session *s = j->s;
	const struct smtpd_sasl_conf *sc = s->conf->sasl;

	s->state = SMTPD_ST_CMD;
	if (s->dead) {
		sasl_job_free(j);
		smtpd_session_resume(s);
		return;
	}
	if (j->result == 0) {
		s->sasl_method = xstrdup(sasl_mech_name(j->mech));
		s->sasl_username = xstrdup(j->user);
		smtpd_reply(s, "235 2.7.0 Authentication successful");
		smtpd_cmd_done(s, 0);
	} else if (j->result < 0) {
		msg_warn("%s: SASL %s authentication failed: %s", s->client.namaddr,
			 sasl_mech_name(j->mech), j->why);
		smtpd_reply(s, "454 4.7.0 Temporary authentication failure");
		smtpd_cmd_done(s, -1);
	} else {
		sasl_client_count(&s->client.ip, sc->rate_unit_s, 1);
		msg_warn("%s: SASL %s authentication failed: authentication failure, "
			 "sasl_username=%s",
			 s->client.namaddr, sasl_mech_name(j->mech), j->user);
		smtpd_reply(s, "535 5.7.8 Error: authentication failed: authentication failure");
		smtpd_cmd_done(s, -1);
	}
	sasl_job_free(j);
	smtpd_session_resume(s);
}

static void sasl_verify(struct smtpd_session *s, int mech, const char *user, const char *pass)
{
	const struct smtpd_sasl_conf *sc = s->conf->sasl;
	struct sasl_job *j = xcalloc(1, sizeof(*j));
	struct buf u = BUF_INIT;
	pthread_attr_t attr;
	pthread_t t;

	/* smtpd_sasl_local_domain: the realm of logins given without one */
	buf_puts(&u, user);
	if (*sc->local_domain && strchr(user, '@') == NULL)
		buf_printf(&u, "@%s", sc->local_domain);
	j->s = s;
	j->base = s->base;
	j->path = xstrdup(sc->path);
	j->user = buf_detach(&u);
	smtpd_printable(j->user); /* it is logged */
	j->pass = xstrdup(pass);
	j->mech = mech;
	s->state = SMTPD_ST_CHECK;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, sasl_job_run, j) != 0) {
		j->result = -1;
		snprintf(j->why, sizeof(j->why), "cannot start a thread");
		event_base_once(s->base, -1, EV_TIMEOUT, sasl_job_done, j, NULL);
	}
	pthread_attr_destroy(&attr);
}

/* ------------------------------------------------------------------ */
/* the AUTH command and its exchange                                   */

static void sasl_end(struct smtpd_session *s)
{
	if (s->sasl_xchg) {
		free(s->sasl_xchg->user);
		free(s->sasl_xchg);
		s->sasl_xchg = NULL;
	}
}

static void sasl_fail(struct smtpd_session *s, const char *reply)
{
	sasl_end(s);
	smtpd_reply(s, "%s", reply);
	smtpd_cmd_done(s, -1);
}

/* One decoded client response. */
static void sasl_step(struct smtpd_session *s, const char *data, size_t len)
{
	struct smtpd_sasl_xchg *x = s->sasl_xchg;
	int mech = x->mech;

	if (mech == SASL_LOGIN && x->user == NULL) {
		if (len == 0 || memchr(data, 0, len)) {
			sasl_fail(s, "535 5.7.8 Error: authentication failed: bad user name");
			return;
		}
		x->user = xstrndup(data, len);
		smtpd_reply(s, "334 UGFzc3dvcmQ6"); /* "Password:" */
		return;
	}
	if (mech == SASL_LOGIN) {
		char *user = x->user, *pass = xstrndup(data, len);
		x->user = NULL;
		sasl_end(s);
		sasl_verify(s, mech, user, pass);
		explicit_bzero(pass, strlen(pass));
		free(pass);
		free(user);
		return;
	}
	/* PLAIN: [authzid] NUL authcid NUL passwd (RFC 4616 §2); acting for
	 * another identity is not supported. */
	{
		const char *nul1 = memchr(data, 0, len), *nul2;
		char *authz, *user, *pass;
		if (nul1 == NULL ||
		    (nul2 = memchr(nul1 + 1, 0, len - (size_t)(nul1 + 1 - data))) == NULL ||
		    memchr(nul2 + 1, 0, len - (size_t)(nul2 + 1 - data)) || nul2 == nul1 + 1) {
			sasl_fail(s, "535 5.7.8 Error: authentication failed: bad PLAIN response");
			return;
		}
		authz = xstrndup(data, (size_t)(nul1 - data));
		user = xstrndup(nul1 + 1, (size_t)(nul2 - nul1 - 1));
		pass = xstrndup(nul2 + 1, len - (size_t)(nul2 + 1 - data));
		sasl_end(s);
		if (*authz && strcmp(authz, user) != 0)
			sasl_fail(s,
				  "535 5.7.8 Error: authentication failed: authorization identity "
				  "not permitted");
		else
			sasl_verify(s, mech, user, pass);
		explicit_bzero(pass, strlen(pass));
		free(authz);
		free(user);
		free(pass);
	}
}

/* ------------------------------------------------------------------ */
/* the exchange with Dovecot                                           */

static int sasl_refuse(struct smtpd_session *s, const char *reply)
{
	smtpd_reply(s, "%s", reply);
	return -1;
}

/* A response line the client sent is base64 (or empty). */
static int sasl_is_base64(const char *line)
{
	struct buf dec = BUF_INIT;
	int ok = base64_decode(line, strlen(line), &dec) == 0;

	if (dec.data)
		explicit_bzero(dec.data, dec.len);
	buf_free(&dec);
	return ok;
}

/* The exchange at Dovecot cannot go on (the client aborted, a bad
 * line): its connection goes; the next AUTH opens another. */
static void sasl_dovecot_drop(struct smtpd_session *s, const char *reply)
{
	smtpd_dovecot_close(s->sasl_dovecot);
	s->sasl_dovecot = NULL;
	sasl_fail(s, reply);
}

static void sasl_dovecot_cb(void *arg, int result, const char *text, const char *why)
{
	struct smtpd_session *s = arg;
	const struct smtpd_sasl_conf *sc = s->conf->sasl;
	const char *mech = sasl_mech_name(s->sasl_xchg ? s->sasl_xchg->mech : SASL_PLAIN);
	struct buf t = BUF_INIT;

	s->state = SMTPD_ST_CMD;
	if (s->dead || s->sasl_xchg == NULL) {
		sasl_end(s);
		smtpd_session_resume(s);
		return;
	}
	buf_set(&t, text ? text : "");
	if (t.data) /* Dovecot's words reach the client and the log */
		smtpd_printable(t.data);
	if (result == SMTPD_DOVECOT_CONT) { /* Dovecot's challenge, already base64 */
		smtpd_reply(s, "334 %s", buf_str(&t));
		buf_free(&t);
		smtpd_session_resume(s);
		return;
	}
	sasl_end(s);
	if (result == SMTPD_DOVECOT_OK) {
		s->sasl_method = xstrdup(mech);
		s->sasl_username = buf_detach(&t);
		smtpd_reply(s, "235 2.7.0 Authentication successful");
		smtpd_cmd_done(s, 0);
	} else if (result == SMTPD_DOVECOT_FAIL) {
		sasl_client_count(&s->client.ip, sc->rate_unit_s, 1);
		msg_warn("%s: SASL %s authentication failed: %s%s%s", s->client.namaddr, mech, why,
			 t.len ? ", sasl_username=" : "", buf_str(&t));
		smtpd_reply(s, "535 5.7.8 Error: authentication failed: authentication failure");
		smtpd_cmd_done(s, -1);
	} else if (result == SMTPD_DOVECOT_NOMECH) {
		smtpd_reply(s, "504 5.5.4 Unrecognized authentication type");
		smtpd_cmd_done(s, -1);
	} else {
		msg_warn("%s: SASL %s authentication failed: %s", s->client.namaddr, mech,
			 why ? why : "dovecot auth server failure");
		smtpd_reply(s, "454 4.7.0 Temporary authentication failure");
		smtpd_cmd_done(s, -1);
	}
	buf_free(&t);
	smtpd_session_resume(s);
}

/* AUTH with the dovecot back end; resp: the initial response or NULL. */
static int sasl_dovecot_begin(struct smtpd_session *s, int mech, const char *resp)
{
	const struct smtpd_sasl_conf *sc = s->conf->sasl;

	if (resp && strcmp(resp, "=") == 0) /* RFC 4954 §4: an empty initial response */
		resp = "";
	else if (resp && !sasl_is_base64(resp))
		return sasl_refuse(s, "501 5.5.2 Cannot decode response");
	if (!smtpd_dovecot_usable(s->sasl_dovecot)) { /* none yet, or it failed */
		smtpd_dovecot_close(s->sasl_dovecot);
		s->sasl_dovecot = s->base ? smtpd_dovecot_open(s->base, sc->path) : NULL;
	}
	if (smtpd_dovecot_start(s->sasl_dovecot, mech, resp, s->tls != NULL, s->server_addr,
				s->client.addr, sasl_dovecot_cb, s) < 0) {
		msg_warn("%s: SASL %s authentication failed: dovecot auth server %s: cannot "
			 "connect",
			 s->client.namaddr, sasl_mech_name(mech), sc->path);
		return sasl_refuse(s, "454 4.7.0 Temporary authentication failure");
	}
	s->sasl_xchg = xcalloc(1, sizeof(*s->sasl_xchg));
	s->sasl_xchg->mech = mech;
	s->check_cmd = SMTPD_C_AUTH;
	s->state = SMTPD_ST_CHECK;
	return SMTPD_CMD_PENDING;
}

/* The client's next response in a Dovecot exchange. */
static void sasl_dovecot_input(struct smtpd_session *s, const char *line)
{
	if (strcmp(line, "*") == 0) /* RFC 4954 §4: the client cancels */
		sasl_dovecot_drop(s, "501 5.7.0 Authentication aborted");
	else if (!sasl_is_base64(line))
		sasl_dovecot_drop(s, "501 5.5.2 Cannot decode response");
	else if (smtpd_dovecot_continue(s->sasl_dovecot, line) < 0)
		sasl_dovecot_drop(s, "454 4.7.0 Temporary authentication failure");
	else
		s->state = SMTPD_ST_CHECK;
}

void smtpd_sasl_input(struct smtpd_session *s, const char *line)
{
	struct buf dec = BUF_INIT;

	if (s->conf->sasl->dovecot) {
		sasl_dovecot_input(s, line);
		return;
	}
	if (strcmp(line, "*") == 0) { /* RFC 4954 §4: the client cancels */
		sasl_fail(s, "501 5.7.0 Authentication aborted");
		return;
	}
	if (base64_decode(line, strlen(line), &dec) < 0) {
		sasl_fail(s, "501 5.5.2 Cannot decode response");
		return;
	}
	sasl_step(s, dec.data ? dec.data : "", dec.len);
	if (dec.data)
		explicit_bzero(dec.data, dec.len);
	buf_free(&dec);
}

int smtpd_sasl_cmd(struct smtpd_session *s, int argc, char **argv)
{
	const struct smtpd_sasl_conf *sc = s->conf->sasl;
	int mech = 0;

	if (sc == NULL || !sc->enable || smtpd_client_trusted(s, sc->exceptions))
		return sasl_refuse(s, "503 5.5.1 Error: authentication not enabled");
	/* RFC 4954 §4, §6: no credentials in the clear. */
	if (sc->auth_only && s->tls == NULL)
		return sasl_refuse(s, "538 5.7.11 Encryption required for requested "
				      "authentication mechanism");
	if (s->helo == NULL)
		return sasl_refuse(s, "503 5.5.1 Error: send HELO/EHLO first");
	if (s->sasl_username)
		return sasl_refuse(s, "503 5.5.1 Error: already authenticated");
	if (s->in_mail)
		return sasl_refuse(s, "503 5.5.1 Error: MAIL transaction in progress");
	if (argc < 2 || argc > 3)
		return sasl_refuse(s, "501 5.5.4 Syntax: AUTH mechanism");
	if (sc->rate_limit > 0 && !smtpd_client_trusted(s, s->conf->event_exceptions) &&
	    sasl_client_count(&s->client.ip, sc->rate_unit_s, 0) > sc->rate_limit) {
		msg_warn("AUTH command rate limit exceeded: from %s for service %s",
			 s->client.namaddr, s->conf->listener);
		smtpd_reply(s, "450 4.7.1 Error: too many AUTH commands from %s", s->client.addr);
		return -1;
	}
	/* Password guessing: after smtpd_client_auth_failure_limit failures
	 * in a time unit the client may not try again for the rest of it. */
	if (sc->failure_limit > 0 && !smtpd_client_trusted(s, s->conf->event_exceptions) &&
	    sasl_client_count(&s->client.ip, sc->rate_unit_s, -1) >= sc->failure_limit) {
		msg_warn("AUTH failure limit exceeded: from %s for service %s", s->client.namaddr,
			 s->conf->listener);
		s->state = SMTPD_ST_CLOSE;
		smtpd_reply(s, "421 4.7.0 %s Error: too many failed authentications from %s",
			    s->conf->myhostname, s->client.addr);
		smtpd_session_close(s);
		return -1;
	}
	if (strcasecmp(argv[1], "PLAIN") == 0)
		mech = SASL_PLAIN;
	else if (strcasecmp(argv[1], "LOGIN") == 0)
		mech = SASL_LOGIN;
	if ((mech & sasl_mechs(s)) == 0)
		return sasl_refuse(s, "504 5.5.4 Unrecognized authentication type");
	if (sc->dovecot)
		return sasl_dovecot_begin(s, mech, argc == 3 ? argv[2] : NULL);
	s->sasl_xchg = xcalloc(1, sizeof(*s->sasl_xchg));
	s->sasl_xchg->mech = mech;
	s->check_cmd = SMTPD_C_AUTH;
	if (argc == 3) /* initial response; "=" is an empty one (§4) */
		smtpd_sasl_input(s, strcmp(argv[2], "=") == 0 ? "" : argv[2]);
	else
		smtpd_reply(s, mech == SASL_PLAIN ? "334 " : "334 VXNlcm5hbWU6"); /* "Username:" */
	return SMTPD_CMD_PENDING;
}

/* ------------------------------------------------------------------ */
/* smtpd_sender_login_maps                                             */

/* Postfix's mail_addr_find() order: user+ext@domain, user@domain,
 * @domain; the first table with an answer decides. */
int smtpd_sasl_sender_owners(struct smtpd_session *s, const char *sender, struct buf *owners,
			     struct buf *err)
{
	const struct smtpd_sasl_conf *sc = s->conf->sasl;
	struct table_keys k = TABLE_KEYS_INIT;
	struct buf low = BUF_INIT;
	const char *at, *delims = s->conf->rcpt_delim;
	int rc = 0;

	if (sc == NULL || sc->nlogin_maps == 0)
		return 0;
	buf_set(&low, sender);
	buf_lower(&low);
	at = strrchr(buf_str(&low), '@');
	table_keys_add(&k, buf_str(&low), low.len, 1);
	if (at && delims && *delims) {
		size_t ext = strcspn(buf_str(&low), delims);
		if (ext > 0 && buf_str(&low) + ext < at) {
			struct buf plain = BUF_INIT;
			buf_append(&plain, buf_str(&low), ext);
			buf_puts(&plain, at);
			table_keys_add(&k, buf_str(&plain), plain.len, 0);
			buf_free(&plain);
		}
	}
	if (at)
		table_keys_add(&k, at, strlen(at), 0);
	for (size_t i = 0; i < sc->nlogin_maps && rc == 0; i++) {
		int st = table_lookup_keys(sc->login_maps[i], &k, owners, NULL, err);
		rc = st == TABLE_FOUND ? 1 : st == TABLE_ERROR ? -1 : 0;
	}
	table_keys_free(&k);
	buf_free(&low);
	return rc;
}

/* Is login one of the owners ("a, b c")? Logins compare without case. */
int smtpd_sasl_owner_match(const char *owners, const char *login)
{
	size_t n = strlen(login);

	for (const char *p = owners; *p;) {
		size_t w;
		p += strspn(p, ", \t");
		w = strcspn(p, ", \t");
		if (w == n && strncasecmp(p, login, n) == 0)
			return 1;
		p += w;
	}
	return 0;
}
