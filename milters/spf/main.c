/* main.c - tern-spf-milter: SPF (RFC 7208) for ternd, Postfix and
 * Sendmail, on the SPF evaluation tern-policyd uses (shared/spf.h).
 *
 * Stages: the HELO identity and the MAIL FROM identity are both checked
 * when MAIL arrives, because only then is it known whether the client
 * authenticated ({auth_type}, a MAIL-stage macro), and authenticated or
 * trusted clients (skip_addresses) are not checked at all. A result the
 * config rejects refuses MAIL FROM (550 5.7.23, RFC 7372), a temperror
 * defers it (451 4.7.24) unless told otherwise. The result is recorded at
 * end of message, at the top of the header (Received-SPF, RFC 7208 §9.1,
 * and/or Authentication-Results, RFC 8601), after deleting incoming A-R
 * fields that claim our authserv-id.
 */
#include "milter.h"

#include "log.h"
#include "matchlist.h"
#include "spf.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define P(n, t, d, h)                                                                              \
	{                                                                                          \
		n, t, d, h, 0, 0, NULL, CFG_P_TERN, NULL                                           \
	}

static const struct cfg_param spf_params[] = {
    P("dns_servers", CFG_STR, "", "DNS servers \"addr[@port] ...\" (empty: resolv.conf)"),
    {"dns_timeout", CFG_TIME, "10s", "per DNS query", 1, 0, "s", CFG_P_TERN, NULL},
    P("receiver", CFG_STR, "", "this host's name in SPF texts (empty: host name)"),
    P("spf_header", CFG_LIST, "received-spf",
      "what to add: received-spf, authentication-results (either, both, or none)"),
    P("authserv_id", CFG_STR, "", "Authentication-Results authserv-id (empty: the MTA's $j)"),
    P("mail_from_reject", CFG_STR, "fail",
      "reject MAIL FROM on: fail, softfail (fail or softfail), not_pass, or no"),
    P("helo_reject", CFG_STR, "fail",
      "reject on the HELO identity: fail, softfail, not_pass, or no"),
    P("temperror_action", CFG_STR, "defer", "a DNS error: defer (451 4.7.24) or accept"),
    P("permerror_action", CFG_STR, "accept", "a broken SPF record: reject (550 5.7.24) or accept"),
    P("skip_addresses", CFG_STR, "127.0.0.0/8, [::1]/128",
      "clients not checked (networks, names, /file, type:table)"),
    P("skip_authenticated", CFG_BOOL, "yes", "do not check SMTP-authenticated clients"),
    {NULL, 0, NULL, NULL, 0, 0, NULL, 0, NULL},
};

/* When a result is refused. */
enum spf_policy { SPF_POL_NO, SPF_POL_FAIL, SPF_POL_SOFTFAIL, SPF_POL_NOT_PASS };

struct spf_mconf {
	struct spf_ctx *spf;
	char *receiver;
	char *authserv_id;
	int received_spf, auth_results;
	enum spf_policy mail_from, helo;
	int temperror_defer, permerror_reject;
	struct matchlist *skip;
	int skip_auth;
};

struct spf_conn {
	void *conf_ref;
	struct spf_mconf *conf;
	unsigned long actions, protocol;
	char *client_addr, *client_name, *helo, *authserv;
	int skip; /* trusted client */
	/* the message */
	int checked;
	struct spf_outcome mf;
	char *sender;
	size_t nar;
	unsigned ar_del[64];
	size_t nar_del;
};

/* ---- configuration ---- */

static int spf_policy_parse(const struct cfg *cfg, const char *param, enum spf_policy *out,
			    struct buf *err)
{
	static const char *const names[] = {"no", "fail", "softfail", "not_pass"};
	struct buf v = BUF_INIT;
	int rc = -1;

	buf_init(&v);
	if (cfg_get_str(cfg, NULL, param, &v, err) == 0) {
		for (int i = 0; i < 4; i++)
			if (strcasecmp(buf_str(&v), names[i]) == 0) {
				*out = (enum spf_policy)i;
				rc = 0;
			}
		if (rc < 0)
			buf_printf(err, "%s: bad value \"%s\" (no, fail, softfail, not_pass)",
				   param, buf_str(&v));
	}
	buf_free(&v);
	return rc;
}

static int spf_choice(const struct cfg *cfg, const char *param, const char *yes, const char *no,
		      int *out, struct buf *err)
{
	struct buf v = BUF_INIT;
	int rc = 0;

	buf_init(&v);
	if (cfg_get_str(cfg, NULL, param, &v, err) < 0)
		rc = -1;
	else if (strcasecmp(buf_str(&v), yes) == 0)
		*out = 1;
	else if (strcasecmp(buf_str(&v), no) == 0)
		*out = 0;
	else {
		buf_printf(err, "%s: bad value \"%s\" (%s or %s)", param, buf_str(&v), yes, no);
		rc = -1;
	}
	buf_free(&v);
	return rc;
}

static void spf_mconf_free(void *p)
{
	struct spf_mconf *sc = p;

	if (sc == NULL)
		return;
	if (sc->spf)
		spf_ctx_free(sc->spf);
	matchlist_free(sc->skip);
	free(sc->receiver);
	free(sc->authserv_id);
	free(sc);
}

static int spf_mconf_headers(struct spf_mconf *sc, const struct cfg *cfg, struct buf *err)
{
	struct cfg_list l = {NULL, 0};
	int rc = 0;

	if (cfg_get_list(cfg, NULL, "spf_header", &l, err) < 0)
		return -1;
	for (size_t i = 0; i < l.count; i++) {
		if (strcasecmp(l.items[i], "received-spf") == 0)
			sc->received_spf = 1;
		else if (strcasecmp(l.items[i], "authentication-results") == 0)
			sc->auth_results = 1;
		else if (strcasecmp(l.items[i], "none") != 0) {
			buf_printf(err, "spf_header: unknown \"%s\"", l.items[i]);
			rc = -1;
		}
	}
	cfg_list_free(&l);
	return rc;
}

static void *spf_mconf_load(const struct cfg *cfg, struct buf *err)
{
	struct spf_mconf *sc = xcalloc(1, sizeof(*sc));
	struct buf v = BUF_INIT, servers = BUF_INIT;
	long long tmo = 10;
	char host[256];

	buf_init(&v);
	buf_init(&servers);
	if (cfg_get_str(cfg, NULL, "receiver", &v, err) < 0)
		goto fail;
	if (v.len == 0) {
		if (gethostname(host, sizeof(host)) != 0)
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = 0;
		buf_set(&v, host);
	}
	sc->receiver = xstrdup(buf_str(&v));
	if (cfg_get_str(cfg, NULL, "authserv_id", &v, err) < 0)
		goto fail;
	sc->authserv_id = xstrdup(buf_str(&v));
	if (cfg_get_str(cfg, NULL, "dns_servers", &servers, err) < 0 ||
	    cfg_get_time(cfg, NULL, "dns_timeout", &tmo, err) < 0 ||
	    spf_mconf_headers(sc, cfg, err) < 0 ||
	    spf_policy_parse(cfg, "mail_from_reject", &sc->mail_from, err) < 0 ||
	    spf_policy_parse(cfg, "helo_reject", &sc->helo, err) < 0 ||
	    spf_choice(cfg, "temperror_action", "defer", "accept", &sc->temperror_defer, err) < 0 ||
	    spf_choice(cfg, "permerror_action", "reject", "accept", &sc->permerror_reject, err) <
		0 ||
	    cfg_get_bool(cfg, NULL, "skip_authenticated", &sc->skip_auth, err) < 0)
		goto fail;
	if ((sc->skip = matchlist_from_cfg(cfg, NULL, "skip_addresses", MATCHLIST_ADDR, err)) ==
	    NULL)
		goto fail;
	if ((sc->spf = spf_ctx_new(buf_str(&servers), (int)tmo, sc->receiver, err)) == NULL)
		goto fail;
	buf_free(&v);
	buf_free(&servers);
	return sc;
fail:
	buf_free(&v);
	buf_free(&servers);
	spf_mconf_free(sc);
	return NULL;
}

/* ---- session ---- */

static struct spf_conn *spf_conn_get(SMFICTX *ctx)
{
	struct spf_conn *c = smfi_getpriv(ctx);

	if (c == NULL) {
		c = xcalloc(1, sizeof(*c));
		c->conf_ref = milter_conf_acquire();
		c->conf = milter_conf_state(c->conf_ref);
		spf_outcome_init(&c->mf);
		smfi_setpriv(ctx, c);
	}
	return c;
}

static void spf_msg_reset(struct spf_conn *c)
{
	spf_outcome_free(&c->mf);
	spf_outcome_init(&c->mf);
	free(c->sender);
	c->sender = NULL;
	c->checked = 0;
	c->nar = c->nar_del = 0;
}

static sfsistat spf_reply(const struct spf_conn *c, unsigned long nr)
{
	return c->protocol & nr ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static sfsistat spf_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
			      unsigned long f3, unsigned long *pf0, unsigned long *pf1,
			      unsigned long *pf2, unsigned long *pf3)
{
	struct spf_conn *c = spf_conn_get(ctx);
	unsigned long want = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_SETSYMLIST;
	unsigned long steps = SMFIP_HDR_LEADSPC | SMFIP_NORCPT | SMFIP_NOBODY | SMFIP_NOEOH |
			      SMFIP_NOUNKNOWN | SMFIP_NODATA | SMFIP_NR_CONN | SMFIP_NR_HELO |
			      SMFIP_NR_HDR;

	c->actions = *pf0 = f0 & want;
	c->protocol = *pf1 = f1 & steps;
	*pf2 = *pf3 = 0;
	if (c->actions & SMFIF_SETSYMLIST) {
		smfi_setsymlist(ctx, SMFIM_CONNECT, "j {client_addr} {client_name}");
		smfi_setsymlist(ctx, SMFIM_ENVFROM, "{auth_type}");
		smfi_setsymlist(ctx, SMFIM_EOM, "i");
	}
	return SMFIS_CONTINUE;
}

static sfsistat spf_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *sa)
{
	struct spf_conn *c = spf_conn_get(ctx);
	struct buf err = BUF_INIT;
	char text[INET6_ADDRSTRLEN] = "";

	c->client_addr = milter_macro_dup(ctx, "{client_addr}");
	c->client_name = milter_macro_dup(ctx, "{client_name}");
	if (c->client_addr == NULL && sa != NULL) {
		if (sa->sa_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, text,
				  sizeof(text));
		else if (sa->sa_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, text,
				  sizeof(text));
		if (*text)
			c->client_addr = xstrdup(text);
	}
	c->authserv = milter_authserv_id(ctx, c->conf->authserv_id);
	buf_init(&err);
	/* A failed skip list lookup checks the client: never trust by error. */
	c->skip = c->client_addr == NULL ||
		  matchlist_host(c->conf->skip, c->client_name, c->client_addr, &err) > 0;
	buf_free(&err);
	return spf_reply(c, SMFIP_NR_CONN);
}

static sfsistat spf_helo(SMFICTX *ctx, char *name)
{
	struct spf_conn *c = spf_conn_get(ctx);

	free(c->helo);
	c->helo = xstrdup(name ? name : "");
	return spf_reply(c, SMFIP_NR_HELO);
}

static int spf_refused(enum spf_policy p, enum spf_result r)
{
	switch (p) {
	case SPF_POL_NO:
		return 0;
	case SPF_POL_FAIL:
		return r == SPF_R_FAIL;
	case SPF_POL_SOFTFAIL:
		return r == SPF_R_FAIL || r == SPF_R_SOFTFAIL;
	case SPF_POL_NOT_PASS:
		return r == SPF_R_FAIL || r == SPF_R_SOFTFAIL || r == SPF_R_NEUTRAL;
	}
	return 0;
}

/* Refuse MAIL for o, or return CONTINUE: reject per policy, temperror
 * and permerror per their actions. */
static sfsistat spf_verdict(SMFICTX *ctx, struct spf_conn *c, const struct spf_outcome *o,
			    enum spf_policy p)
{
	struct buf reply = BUF_INIT, text = BUF_INIT;
	int defer = o->result == SPF_R_TEMPERROR && c->conf->temperror_defer;
	int reject = spf_refused(p, o->result) ||
		     (o->result == SPF_R_PERMERROR && c->conf->permerror_reject);
	const char *t;
	sfsistat rc = SMFIS_CONTINUE;

	if (!defer && !reject)
		return rc;
	buf_init(&reply);
	buf_init(&text);
	spf_reply_text(o, 0, c->client_addr, c->helo ? c->helo : "", c->sender ? c->sender : "",
		       c->conf->receiver, &reply);
	/* "550 5.7.2x Message rejected due to: ..." -> the text after the codes */
	t = strchr(buf_str(&reply), ' ');
	t = t ? strchr(t + 1, ' ') : NULL;
	milter_reply_text(t ? t + 1 : buf_str(&reply), &text);
	if (defer) {
		smfi_setreply(ctx, "451", "4.7.24", text.data);
		rc = SMFIS_TEMPFAIL;
	} else {
		smfi_setreply(ctx, "550",
			      o->result == SPF_R_PERMERROR || o->result == SPF_R_TEMPERROR
				  ? "5.7.24"
				  : "5.7.23",
			      text.data);
		rc = SMFIS_REJECT;
	}
	msg_info("NOQUEUE: %s: MAIL from %s[%s]: SPF %s (%s identity %s): %s",
		 rc == SMFIS_REJECT ? "reject" : "defer",
		 c->client_name ? c->client_name : "unknown", c->client_addr,
		 spf_result_name(o->result), o->identity == SPF_ID_HELO ? "helo" : "mailfrom",
		 buf_str(&o->domain), buf_str(&text));
	buf_free(&reply);
	buf_free(&text);
	return rc;
}

static sfsistat spf_envfrom(SMFICTX *ctx, char **argv)
{
	struct spf_conn *c = spf_conn_get(ctx);
	const char *auth = smfi_getsymval(ctx, "{auth_type}");
	struct spf_outcome helo;
	struct buf err = BUF_INIT;
	sfsistat rc = SMFIS_CONTINUE;

	spf_msg_reset(c);
	c->sender = milter_addr_strip(argv[0]);
	if (c->skip || (auth && *auth && c->conf->skip_auth))
		return SMFIS_CONTINUE;
	buf_init(&err);
	spf_outcome_init(&helo);
	/* HELO identity first (RFC 7208 §2.3); a HELO name that is an address
	 * literal or empty gives "none" in spf_check. */
	if (c->helo && *c->helo && c->conf->helo != SPF_POL_NO &&
	    spf_check(c->conf->spf, SPF_ID_HELO, c->client_addr, c->helo, "", &helo, &err) == 0)
		rc = spf_verdict(ctx, c, &helo, c->conf->helo);
	buf_reset(&err);
	if (rc == SMFIS_CONTINUE) {
		if (spf_check(c->conf->spf, SPF_ID_MAILFROM, c->client_addr, c->helo ? c->helo : "",
			      c->sender, &c->mf, &err) == 0) {
			c->checked = 1;
			rc = spf_verdict(ctx, c, &c->mf, c->conf->mail_from);
		} else
			msg_warn("SPF check of <%s> from %s: %s", c->sender, c->client_addr,
				 buf_str(&err));
	}
	spf_outcome_free(&helo);
	buf_free(&err);
	return rc;
}

static sfsistat spf_header(SMFICTX *ctx, char *name, char *value)
{
	struct spf_conn *c = spf_conn_get(ctx);

	if (strcasecmp(name, "Authentication-Results") == 0) {
		c->nar++;
		if (milter_ar_is_ours(value, c->authserv) && c->nar_del < 64)
			c->ar_del[c->nar_del++] = (unsigned)c->nar;
	}
	return spf_reply(c, SMFIP_NR_HDR);
}

static sfsistat spf_eom(SMFICTX *ctx)
{
	struct spf_conn *c = spf_conn_get(ctx);
	struct buf v = BUF_INIT, qid = BUF_INIT;

	buf_init(&v);
	buf_init(&qid);
	milter_qid(ctx, &qid);
	for (size_t i = c->nar_del; i > 0 && (c->actions & SMFIF_CHGHDRS); i--)
		smfi_chgheader(ctx, "Authentication-Results", (int)c->ar_del[i - 1], NULL);
	if (c->checked && (c->actions & SMFIF_ADDHDRS)) {
		/* Inserted at 0 in reverse order: Received-SPF ends up on top. */
		if (c->conf->auth_results) {
			buf_set(&v, " ");
			spf_auth_results(&c->mf, c->authserv, c->helo ? c->helo : "", c->sender,
					 &v);
			smfi_insheader(ctx, 0, "Authentication-Results", v.data);
		}
		if (c->conf->received_spf) {
			buf_set(&v, " ");
			spf_received_spf(&c->mf, c->client_addr, c->helo ? c->helo : "", c->sender,
					 c->conf->receiver, &v);
			smfi_insheader(ctx, 0, "Received-SPF", v.data);
		}
		msg_qid(buf_str(&qid), "SPF %s: identity=mailfrom client-ip=%s envelope-from=<%s>",
			spf_result_name(c->mf.result), c->client_addr, c->sender);
	}
	spf_msg_reset(c);
	buf_free(&v);
	buf_free(&qid);
	return SMFIS_CONTINUE;
}

static sfsistat spf_abort(SMFICTX *ctx)
{
	struct spf_conn *c = smfi_getpriv(ctx);

	if (c)
		spf_msg_reset(c);
	return SMFIS_CONTINUE;
}

static sfsistat spf_close(SMFICTX *ctx)
{
	struct spf_conn *c = smfi_getpriv(ctx);

	if (c == NULL)
		return SMFIS_CONTINUE;
	spf_msg_reset(c);
	spf_outcome_free(&c->mf);
	free(c->client_addr);
	free(c->client_name);
	free(c->helo);
	free(c->authserv);
	milter_conf_release(c->conf_ref);
	free(c);
	smfi_setpriv(ctx, NULL);
	return SMFIS_CONTINUE;
}

static struct smfiDesc spf_desc = {
    "tern-spf-milter",
    SMFI_VERSION,
    SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_SETSYMLIST,
    spf_connect,
    spf_helo,
    spf_envfrom,
    NULL,
    spf_header,
    NULL,
    NULL,
    spf_eom,
    spf_abort,
    spf_close,
    NULL,
    NULL,
    spf_negotiate,
};

static const struct milter_prog spf_prog = {
    "spf", "inet:8892@127.0.0.1", spf_params, &spf_desc, spf_mconf_load, spf_mconf_free, NULL,
};

int main(int argc, char **argv)
{
	return milter_main(argc, argv, &spf_prog);
}
