/* main.c - tern-dkim-milter: DKIM signing and verifying (RFC 6376) with
 * libopendkim, for ternd, Postfix and Sendmail alike.
 *
 * Per message: headers are kept until end of header, because the signing
 * key depends on From: and the sign-or-verify decision on the session
 * (internal_hosts, SMTP AUTH, {daemon_name}, as opendkim decides). Then
 * the headers go to one libopendkim handle, the body follows chunk by
 * chunk, and at end of message the DKIM-Signature (signing) or the
 * Authentication-Results (verifying) is inserted at the top, above the
 * MTA's own Received: (smfi_insheader index 0; RFC 8601 §5).
 *
 * SMFIP_HDR_LEADSPC is negotiated so header values arrive byte-exact, as
 * "simple" header canonicalization needs (milter-policy-ecosystem.md
 * §1.8); folding arrives as bare LF and is turned back into CRLF.
 * Incoming A-R fields that claim our authserv-id are deleted, highest
 * index first (Postfix renumbers after each deletion: opendkim issue
 * #148), and before ours is inserted, which would shift the indexes.
 */
#include "dkim_milter.h"
#include "milter.h"

#include "log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Headers beyond this are not kept (Postfix's header_size_limit is 100k
 * per header, and no sane message has a megabyte of them). */
#define DKIM_HDR_BYTES_MAX (1024 * 1024)
#define DKIM_AR_DEL_MAX 64

struct dkim_hdr {
	char *text; /* "Name: value" with CRLF folding, as dkim_header() wants */
	size_t len;
};

struct dkim_conn {
	void *conf_ref;
	struct dkim_conf *conf;
	unsigned long actions, protocol;
	char *client_addr, *client_name, *daemon_name, *authserv;
	/* the message */
	int auth;
	struct dkim_hdr *hdrs;
	size_t nhdrs, hdr_cap, hdr_bytes;
	int hdr_overflow;
	size_t nar;			  /* Authentication-Results fields seen */
	unsigned ar_del[DKIM_AR_DEL_MAX]; /* ...of them claiming our authserv-id */
	size_t nar_del;
	DKIM *sign, *verify;
	struct dkim_signing signing;
	struct dkim_lookup_ctx lc;
	int no_sigs;
	int internal_error;
	/* body bytes as on the wire (dkim_body_feed) */
	struct buf body_fix;
	unsigned char body_last; /* the last byte fed, 0 before the first */
};

/* ---- session state ---- */

static struct dkim_conn *dkim_conn_get(SMFICTX *ctx)
{
	struct dkim_conn *c = smfi_getpriv(ctx);

	if (c == NULL) {
		c = xcalloc(1, sizeof(*c));
		buf_init(&c->body_fix);
		c->conf_ref = milter_conf_acquire();
		c->conf = milter_conf_state(c->conf_ref);
		smfi_setpriv(ctx, c);
	}
	return c;
}

static void dkim_msg_reset(struct dkim_conn *c)
{
	for (size_t i = 0; i < c->nhdrs; i++)
		free(c->hdrs[i].text);
	c->nhdrs = c->hdr_bytes = 0;
	c->hdr_overflow = 0;
	c->nar = c->nar_del = 0;
	if (c->sign)
		dkim_free(c->sign);
	if (c->verify)
		dkim_free(c->verify);
	c->sign = c->verify = NULL;
	dkim_signing_free(&c->signing);
	memset(&c->lc, 0, sizeof(c->lc));
	c->no_sigs = c->internal_error = 0;
	c->auth = 0;
	c->body_last = 0;
	buf_reset(&c->body_fix);
}

static sfsistat dkim_reply(const struct dkim_conn *c, unsigned long nr)
{
	return c->protocol & nr ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static sfsistat dkim_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
			       unsigned long f3, unsigned long *pf0, unsigned long *pf1,
			       unsigned long *pf2, unsigned long *pf3)
{
	struct dkim_conn *c = dkim_conn_get(ctx);
	unsigned long want = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_SETSYMLIST | SMFIF_QUARANTINE;
	unsigned long steps = SMFIP_HDR_LEADSPC | SMFIP_NOHELO | SMFIP_NORCPT | SMFIP_NOUNKNOWN |
			      SMFIP_NODATA | SMFIP_NR_CONN | SMFIP_NR_MAIL | SMFIP_NR_HDR |
			      SMFIP_NR_EOH | SMFIP_NR_BODY | SMFIP_SKIP;

	if ((f0 & SMFIF_ADDHDRS) == 0) {
		msg_warn("the MTA does not let milters add header fields: cannot sign or verify");
		return SMFIS_REJECT;
	}
	c->actions = *pf0 = f0 & want;
	/* No reply to body chunks: the MTA streams the body and waits only
	 * at end of message, one round trip less per message. That rules
	 * out SKIP (an answer to a chunk). libmilter offers every NR_* step
	 * here whatever the MTA offered, and answers "continue" for us where
	 * the MTA did not take one, so f1 cannot tell; SKIP is only used if
	 * a libmilter ever leaves NR_BODY out. */
	if (f1 & SMFIP_NR_BODY)
		steps &= ~(unsigned long)SMFIP_SKIP;
	c->protocol = *pf1 = f1 & steps;
	*pf2 = *pf3 = 0;
	if (msg_verbose)
		msg_debug("negotiate: MTA offers actions 0x%lx steps 0x%lx, we take 0x%lx 0x%lx",
			  f0, f1, *pf0, *pf1);
	if (c->actions & SMFIF_SETSYMLIST) {
		smfi_setsymlist(ctx, SMFIM_CONNECT, "j {daemon_name} {client_addr} {client_name}");
		smfi_setsymlist(ctx, SMFIM_ENVFROM, "{auth_type} {auth_authen}");
		smfi_setsymlist(ctx, SMFIM_EOH, "i");
		smfi_setsymlist(ctx, SMFIM_EOM, "i");
	}
	return SMFIS_CONTINUE;
}

static char *dkim_sockaddr_text(_SOCK_ADDR *sa)
{
	char text[INET6_ADDRSTRLEN] = "";

	if (sa == NULL)
		return NULL;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, text, sizeof(text));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, text, sizeof(text));
	return *text ? xstrdup(text) : NULL;
}

static sfsistat dkim_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *sa)
{
	struct dkim_conn *c = dkim_conn_get(ctx);
	c->client_addr = milter_macro_dup(ctx, "{client_addr}");
	if (c->client_addr == NULL)
		c->client_addr = dkim_sockaddr_text(sa);
	c->client_name = milter_macro_dup(ctx, "{client_name}");
	if (c->client_name == NULL && host && *host != '[')
		c->client_name = xstrdup(host);
	c->daemon_name = milter_macro_dup(ctx, "{daemon_name}");
	c->authserv = milter_authserv_id(ctx, c->conf->authserv_id);
	return dkim_reply(c, SMFIP_NR_CONN);
}

/* Changed key_table / signing_table files are re-read between messages
 * (key files themselves stay cached until a reload). */
static void dkim_tables_refresh(struct dkim_conf *dc)
{
	struct table *t[2] = {dc->key_table, dc->signing_table};

	for (int i = 0; i < 2; i++) {
		struct buf e = BUF_INIT;

		buf_init(&e);
		if (t[i] && table_reload(t[i], 0, &e) < 0)
			msg_warn("%s: %s", t[i]->spec, buf_str(&e));
		buf_free(&e);
	}
}

static sfsistat dkim_envfrom(SMFICTX *ctx, char **argv)
{
	struct dkim_conn *c = dkim_conn_get(ctx);
	const char *auth = smfi_getsymval(ctx, "{auth_type}");

	dkim_msg_reset(c);
	c->auth = auth && *auth;
	dkim_tables_refresh(c->conf);
	return dkim_reply(c, SMFIP_NR_MAIL);
}

/* "Name:value": value as the MTA sent it (with HDR_LEADSPC its leading
 * space included), bare-LF folding turned into CRLF. */
static void dkim_hdr_add(struct dkim_conn *c, const char *name, const char *value)
{
	struct buf h = BUF_INIT;

	buf_init(&h);
	buf_puts(&h, name);
	buf_puts(&h, c->protocol & SMFIP_HDR_LEADSPC ? ":" : ": ");
	for (const char *p = value, *lf; *p; p = lf + 1) {
		if ((lf = strchr(p, '\n')) == NULL) {
			buf_puts(&h, p);
			break;
		}
		buf_append(&h, p, (size_t)(lf - p));
		buf_puts(&h, lf == value || lf[-1] != '\r' ? "\r\n" : "\n");
	}
	if (c->hdr_bytes + h.len > DKIM_HDR_BYTES_MAX) {
		c->hdr_overflow = 1;
		buf_free(&h);
		return;
	}
	if (c->nhdrs == c->hdr_cap) {
		c->hdr_cap = c->hdr_cap ? 2 * c->hdr_cap : 32;
		c->hdrs = xrealloc(c->hdrs, c->hdr_cap * sizeof(*c->hdrs));
	}
	if (msg_verbose)
		msg_debug("header for DKIM: \"%s\"", buf_str(&h));
	c->hdr_bytes += h.len;
	c->hdrs[c->nhdrs].len = h.len;
	c->hdrs[c->nhdrs++].text = buf_detach(&h);
}

static sfsistat dkim_header_cb(SMFICTX *ctx, char *name, char *value)
{
	struct dkim_conn *c = dkim_conn_get(ctx);

	if (strcasecmp(name, "Authentication-Results") == 0) {
		c->nar++;
		if (c->conf->remove_foreign_ar && milter_ar_is_ours(value, c->authserv) &&
		    c->nar_del < DKIM_AR_DEL_MAX)
			c->ar_del[c->nar_del++] = (unsigned)c->nar;
	}
	dkim_hdr_add(c, name, value);
	return dkim_reply(c, SMFIP_NR_HDR);
}

/* The address in a From: value: inside the last <...>, else the value
 * without comments; only the first of several authors. */
static char *dkim_from_address(const char *v)
{
	const char *lt = strrchr(v, '<'), *gt = lt ? strchr(lt, '>') : NULL;
	struct buf a = BUF_INIT;
	int depth = 0;

	buf_init(&a);
	if (lt && gt)
		buf_append(&a, lt + 1, (size_t)(gt - lt - 1));
	else
		for (; *v && *v != ','; v++) {
			if (*v == '(')
				depth++;
			else if (*v == ')' && depth)
				depth--;
			else if (!depth && *v != ' ' && *v != '\t' && *v != '\r' && *v != '\n')
				buf_putc(&a, *v);
		}
	buf_trim(&a);
	return buf_detach(&a);
}

static const char *dkim_hdr_find(const struct dkim_conn *c, const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; i < c->nhdrs; i++)
		if (strncasecmp(c->hdrs[i].text, name, n) == 0 && c->hdrs[i].text[n] == ':')
			return c->hdrs[i].text + n + 1;
	return NULL;
}

/* Does this session's mail get signed (opendkim's rules)? */
static int dkim_sign_eligible(const struct dkim_conn *c, const char *qid)
{
	struct buf err = BUF_INIT;
	int m;

	if (!c->conf->sign)
		return 0;
	if (c->auth && c->conf->sign_authenticated)
		return 1;
	for (size_t i = 0; c->daemon_name && i < c->conf->nmta_names; i++)
		if (strcmp(c->daemon_name, c->conf->mta_names[i]) == 0)
			return 1;
	buf_init(&err);
	m = matchlist_host(c->conf->internal_hosts, c->client_name, c->client_addr, &err);
	if (m < 0)
		msg_qid(qid, "warning: internal_hosts: %s", buf_str(&err));
	buf_free(&err);
	return m > 0;
}

static int dkim_feed_headers(struct dkim_conn *c, DKIM *d, const char *qid)
{
	DKIM_STAT st;

	for (size_t i = 0; i < c->nhdrs; i++)
		if ((st = dkim_header(d, (u_char *)c->hdrs[i].text, c->hdrs[i].len)) !=
		    DKIM_STAT_OK) {
			msg_qid(qid, "warning: dkim_header: %s", dkim_getresultstr(st));
			return -1;
		}
	return 0;
}

static void dkim_start_sign(struct dkim_conn *c, const char *from, const char *qid)
{
	struct buf err = BUF_INIT;
	DKIM_STAT st;
	int rc;

	buf_init(&err);
	rc = dkim_conf_key_for(c->conf, from, &c->signing, &err);
	if (rc < 0) {
		msg_qid(qid, "error: no signing key for <%s>: %s", from, buf_str(&err));
		c->internal_error = 1;
	} else if (rc == 0) {
		msg_qid(qid, "no signing key for <%s>: not signed", from);
	} else {
		c->sign = dkim_sign(
		    c->conf->lib, (const u_char *)qid, NULL, (dkim_sigkey_t)c->signing.key->pem,
		    (const u_char *)c->signing.key->selector, (const u_char *)c->signing.domain,
		    c->conf->hdr_canon, c->conf->body_canon, c->signing.key->alg, -1, &st);
		if (c->sign == NULL) {
			msg_qid(qid, "error: dkim_sign: %s", dkim_getresultstr(st));
			c->internal_error = 1;
		} else if (c->signing.key->alg == DKIM_SIGN_ED25519SHA256 &&
			   c->conf->hdr_canon == DKIM_CANON_SIMPLE) {
			/* libopendkim 2.11 folds the field it hashes and the
			 * field it returns separately; with a short Ed25519 b=
			 * the folds can differ, which "simple" header
			 * canonicalization does not forgive (dkimpy then fails
			 * the signature). Unfolded, both are the same text. */
			(void)dkim_set_margin(c->sign, 0);
		}
		if (c->sign && c->signing.signer &&
		    dkim_set_signer(c->sign, (const u_char *)c->signing.signer) != DKIM_STAT_OK) {
			msg_qid(qid, "warning: signer %s refused", c->signing.signer);
		}
		if (c->sign && (dkim_feed_headers(c, c->sign, qid) < 0 ||
				(st = dkim_eoh(c->sign)) != DKIM_STAT_OK)) {
			msg_qid(qid, "error: signing: %s",
				dkim_geterror(c->sign) ? dkim_geterror(c->sign)
						       : "headers refused");
			dkim_free(c->sign);
			c->sign = NULL;
			c->internal_error = 1;
		}
	}
	buf_free(&err);
}

static void dkim_start_verify(struct dkim_conn *c, const char *qid)
{
	DKIM_STAT st;

	c->verify = dkim_verify(c->conf->lib, (const u_char *)qid, NULL, &st);
	if (c->verify == NULL) {
		msg_qid(qid, "warning: dkim_verify: %s", dkim_getresultstr(st));
		return;
	}
	c->lc.dns = c->conf->dns;
	dkim_set_user_context(c->verify, &c->lc);
	if (dkim_feed_headers(c, c->verify, qid) < 0) {
		dkim_free(c->verify);
		c->verify = NULL;
		return;
	}
	st = dkim_eoh(c->verify);
	if (st == DKIM_STAT_NOSIG) {
		c->no_sigs = 1;
		dkim_free(c->verify);
		c->verify = NULL;
	}
}

static sfsistat dkim_eoh_cb(SMFICTX *ctx)
{
	struct dkim_conn *c = dkim_conn_get(ctx);
	struct buf qid = BUF_INIT;
	const char *fromv;
	char *from;

	buf_init(&qid);
	milter_qid(ctx, &qid);
	if (c->hdr_overflow) {
		msg_qid(buf_str(&qid), "warning: header section over %d bytes: not processed",
			DKIM_HDR_BYTES_MAX);
	} else if (dkim_sign_eligible(c, buf_str(&qid))) {
		if ((fromv = dkim_hdr_find(c, "From")) == NULL)
			msg_qid(buf_str(&qid), "no From: field: not signed");
		else {
			from = dkim_from_address(fromv);
			dkim_start_sign(c, from, buf_str(&qid));
			free(from);
		}
	} else if (c->conf->verify)
		dkim_start_verify(c, buf_str(&qid));
	buf_free(&qid);
	/* Nothing is decided here (that waits for the end of message), so
	 * the MTA need not wait for an answer: one round trip less. */
	return dkim_reply(c, SMFIP_NR_EOH);
}

/* Body bytes to the open handles. */
static void dkim_body_put(struct dkim_conn *c, const unsigned char *data, size_t len)
{
	if (len == 0)
		return;
	if (c->sign && dkim_body(c->sign, (u_char *)data, len) != DKIM_STAT_OK) {
		dkim_free(c->sign);
		c->sign = NULL;
		c->internal_error = 1;
	}
	/* A verifier that has already decided (every signature's key is
	 * missing, say) answers DKIM_STAT_OK and ignores the rest. */
	if (c->verify)
		(void)dkim_body(c->verify, (u_char *)data, len);
}

/* The body is hashed as the MTA will write it: a line that ends in a
 * bare LF gets CRLF, as on the wire; everything else, lone CRs included,
 * goes as it is. MTAs send CRLF (Postfix, Sendmail, ternd), so a chunk
 * normally goes to libopendkim untouched, without the byte-by-byte copy
 * libopendkim's own DKIM_LIBFLAGS_FIXCRLF makes of every chunk. */
static void dkim_body_feed(struct dkim_conn *c, const unsigned char *data, size_t len)
{
	const unsigned char *end = data + len, *run = data, *lf;

	if (len == 0 || (c->sign == NULL && c->verify == NULL))
		return;
	buf_reset(&c->body_fix);
	for (const unsigned char *p = data; (lf = memchr(p, '\n', (size_t)(end - p))) != NULL;
	     p = lf + 1) {
		if ((lf > data ? lf[-1] : c->body_last) == '\r')
			continue;
		buf_append(&c->body_fix, (const char *)run, (size_t)(lf - run));
		buf_append(&c->body_fix, "\r\n", 2);
		run = lf + 1;
	}
	if (run == data) {
		dkim_body_put(c, data, len);
	} else {
		buf_append(&c->body_fix, (const char *)run, (size_t)(end - run));
		dkim_body_put(c, (const unsigned char *)c->body_fix.data, c->body_fix.len);
	}
	c->body_last = end[-1];
}

/* At end of message: a last line without its line end gets one, as the
 * MTA will write it (RFC 6376 §3.4.3/§3.4.4 hash it so, in both
 * canonicalizations). */
static void dkim_body_finish(struct dkim_conn *c)
{
	if (c->body_last != 0 && c->body_last != '\n')
		dkim_body_put(c, (const unsigned char *)"\r\n", 2);
	c->body_last = '\n';
}

static sfsistat dkim_body_cb(SMFICTX *ctx, unsigned char *data, size_t len)
{
	struct dkim_conn *c = dkim_conn_get(ctx);

	dkim_body_feed(c, data, len);
	if (c->protocol & SMFIP_NR_BODY)
		return SMFIS_NOREPLY;
	if (c->sign == NULL && c->verify == NULL && (c->protocol & SMFIP_SKIP))
		return SMFIS_SKIP;
	return SMFIS_CONTINUE;
}

/* ---- end of message ---- */

/* Apply an on_* action; code/xcode are used for tempfail only. */
static sfsistat dkim_act(SMFICTX *ctx, struct dkim_conn *c, enum dkim_action a, const char *code,
			 const char *xcode, const char *text, const char *qid)
{
	switch (a) {
	case DKIM_ACT_ACCEPT:
		return SMFIS_CONTINUE;
	case DKIM_ACT_REJECT:
		smfi_setreply(ctx, "550", "5.7.20", (char *)text);
		msg_qid(qid, "milter-reject: 550 5.7.20 %s", text);
		return SMFIS_REJECT;
	case DKIM_ACT_TEMPFAIL:
		smfi_setreply(ctx, (char *)code, (char *)xcode, (char *)text);
		msg_qid(qid, "milter-tempfail: %s %s %s", code, xcode, text);
		return SMFIS_TEMPFAIL;
	case DKIM_ACT_DISCARD:
		msg_qid(qid, "milter-discard: %s", text);
		return SMFIS_DISCARD;
	case DKIM_ACT_QUARANTINE:
		if (c->actions & SMFIF_QUARANTINE)
			smfi_quarantine(ctx, (char *)text);
		msg_qid(qid, "milter-hold: %s", text);
		return SMFIS_CONTINUE;
	}
	return SMFIS_CONTINUE;
}

/* Remove forged A-R fields (highest index first), then sign. */
static sfsistat dkim_eom_sign(SMFICTX *ctx, struct dkim_conn *c, const char *qid)
{
	struct buf v = BUF_INIT;
	u_char *hdr;
	size_t len;
	DKIM_STAT st;

	if ((st = dkim_eom(c->sign, NULL)) != DKIM_STAT_OK ||
	    (st = dkim_getsighdr_d(c->sign, strlen(DKIM_SIGNHEADER) + 2, &hdr, &len)) !=
		DKIM_STAT_OK) {
		msg_qid(qid, "error: signing failed: %s",
			dkim_geterror(c->sign) ? dkim_geterror(c->sign) : dkim_getresultstr(st));
		return dkim_act(ctx, c, c->conf->on_internal_error, "451", "4.7.0",
				"DKIM signing failed, try again later", qid);
	}
	buf_init(&v);
	buf_putc(&v, ' '); /* HDR_LEADSPC: the value goes in as given */
	/* libopendkim folds with CRLF; milters fold with a bare LF and the
	 * MTA writes CRLF (a CR left in would become part of the field and
	 * break "simple" header canonicalization). */
	for (size_t i = 0; i < len; i++)
		if (!(hdr[i] == '\r' && i + 1 < len && hdr[i + 1] == '\n'))
			buf_putc(&v, hdr[i]);
	if (smfi_insheader(ctx, 0, DKIM_SIGNHEADER, v.data) != MI_SUCCESS)
		msg_qid(qid, "warning: could not add the DKIM-Signature field");
	else
		msg_qid(qid, "DKIM-Signature field added (s=%s, d=%s)", c->signing.key->selector,
			c->signing.domain);
	buf_free(&v);
	return SMFIS_CONTINUE;
}

/* Which on_* action the verification results call for: a pass needs
 * none; otherwise a DNS failure, a missing key, a failed signature. */
static sfsistat dkim_eom_verdict(SMFICTX *ctx, struct dkim_conn *c, int pass, int temp, int nokey,
				 int bad, const char *qid)
{
	if (pass)
		return SMFIS_CONTINUE;
	if (temp)
		return dkim_act(ctx, c, c->conf->on_dns_error, "451", "4.7.5",
				"DKIM key lookup failed, try again later", qid);
	if (nokey)
		return dkim_act(ctx, c, c->conf->on_no_key, "451", "4.7.5", "DKIM key not found",
				qid);
	if (bad)
		return dkim_act(ctx, c, c->conf->on_bad_signature, "451", "4.7.5",
				"No valid DKIM signature found", qid);
	return SMFIS_CONTINUE;
}

static sfsistat dkim_eom_verify(SMFICTX *ctx, struct dkim_conn *c, const char *qid)
{
	DKIM_SIGINFO **sigs = NULL;
	int nsigs = 0, pass = 0, temp = 0, nokey = 0, bad = 0;
	char **results = NULL;
	size_t n = 0;
	struct buf r = BUF_INIT, ar = BUF_INIT;
	sfsistat rc;

	buf_init(&r);
	buf_init(&ar);
	if (c->verify) {
		(void)dkim_eom(c->verify, NULL);
		if (dkim_getsiglist(c->verify, &sigs, &nsigs) != DKIM_STAT_OK)
			nsigs = 0;
	}
	results = xcalloc((size_t)nsigs + 1, sizeof(char *));
	for (int i = 0; i < nsigs; i++) {
		const char *res = dkim_ar_result(c->verify, sigs[i], &c->lc);

		buf_reset(&r);
		dkim_ar_sig(c->verify, sigs[i], &c->lc, &r);
		results[n++] = xstrdup(buf_str(&r));
		msg_qid(qid, "DKIM verification: %s", buf_str(&r));
		pass |= strcmp(res, "pass") == 0;
		temp |= strcmp(res, "temperror") == 0;
		nokey |= dkim_sig_geterror(sigs[i]) == DKIM_SIGERROR_NOKEY;
		bad |= strcmp(res, "fail") == 0 || strcmp(res, "policy") == 0 ||
		       strcmp(res, "permerror") == 0;
	}
	if (n > 0 || c->conf->always_ar) {
		dkim_ar_compose(c->authserv, results, n, &ar);
		if (smfi_insheader(ctx, 0, "Authentication-Results", ar.data) != MI_SUCCESS)
			msg_qid(qid, "warning: could not add the Authentication-Results field");
	}
	rc = dkim_eom_verdict(ctx, c, pass, temp, nokey, bad, qid);
	for (size_t i = 0; i < n; i++)
		free(results[i]);
	free(results);
	buf_free(&r);
	buf_free(&ar);
	return rc;
}

static sfsistat dkim_eom_cb(SMFICTX *ctx)
{
	struct dkim_conn *c = dkim_conn_get(ctx);
	struct buf qid = BUF_INIT;
	sfsistat rc = SMFIS_CONTINUE;

	buf_init(&qid);
	milter_qid(ctx, &qid);
	/* Deletions before any insertion: an inserted A-R would renumber. */
	for (size_t i = c->nar_del; i > 0 && (c->actions & SMFIF_CHGHDRS); i--) {
		smfi_chgheader(ctx, "Authentication-Results", (int)c->ar_del[i - 1], NULL);
		msg_qid(buf_str(&qid), "removed Authentication-Results field #%u claiming %s",
			c->ar_del[i - 1], c->authserv);
	}
	dkim_body_finish(c);
	if (c->internal_error)
		rc = dkim_act(ctx, c, c->conf->on_internal_error, "451", "4.7.0",
			      "DKIM signing failed, try again later", buf_str(&qid));
	else if (c->sign)
		rc = dkim_eom_sign(ctx, c, buf_str(&qid));
	else if (c->verify || c->no_sigs)
		rc = dkim_eom_verify(ctx, c, buf_str(&qid));
	dkim_msg_reset(c);
	buf_free(&qid);
	return rc;
}

static sfsistat dkim_abort_cb(SMFICTX *ctx)
{
	struct dkim_conn *c = smfi_getpriv(ctx);

	if (c)
		dkim_msg_reset(c);
	return SMFIS_CONTINUE;
}

static sfsistat dkim_close_cb(SMFICTX *ctx)
{
	struct dkim_conn *c = smfi_getpriv(ctx);

	if (c == NULL)
		return SMFIS_CONTINUE;
	dkim_msg_reset(c);
	free(c->hdrs);
	buf_free(&c->body_fix);
	free(c->client_addr);
	free(c->client_name);
	free(c->daemon_name);
	free(c->authserv);
	milter_conf_release(c->conf_ref);
	free(c);
	smfi_setpriv(ctx, NULL);
	return SMFIS_CONTINUE;
}

static struct smfiDesc dkim_desc = {
    "tern-dkim-milter",
    SMFI_VERSION,
    SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_QUARANTINE | SMFIF_SETSYMLIST,
    dkim_connect,
    NULL,
    dkim_envfrom,
    NULL,
    dkim_header_cb,
    dkim_eoh_cb,
    dkim_body_cb,
    dkim_eom_cb,
    dkim_abort_cb,
    dkim_close_cb,
    NULL,
    NULL,
    dkim_negotiate,
};

static const struct milter_prog dkim_prog = {
    "dkim",	    "inet:8891@127.0.0.1", dkim_params,	     &dkim_desc,
    dkim_conf_load, dkim_conf_free,	   dkim_genkey_main,
};

int main(int argc, char **argv)
{
	return milter_main(argc, argv, &dkim_prog);
}
