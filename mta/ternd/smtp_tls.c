/* smtp_tls.c - TLS and SASL settings of the smtp, relay and lmtp clients
 * (smtp_client.h): security levels, smtp_tls_policy_maps, the OpenSSL
 * context (CAfile/CApath, smtp_tls_scert_verifydepth), the SNI to send
 * (smtp_tls_servername, servername=), certificate checks, close_notify,
 * the "TLS connection established" log line, and smtp_sasl_password_maps.
 *
 * Levels as Postfix's smtp_tls_security_level: none; may (STARTTLS when
 * offered, any certificate, plaintext when the server has none or refuses
 * it); encrypt (TLS required, any certificate); verify (TLS, a chain to
 * smtp_tls_CAfile/CApath and a name from smtp_tls_verify_cert_match,
 * default the server's host name); secure (the same, names from
 * smtp_tls_secure_cert_match, default the next-hop domain and its
 * subdomains). dane has no DNSSEC here and works as may, as Postfix's
 * does without usable TLSA records.
 *
 * Pitfall: a policy table that cannot be read defers the mail; never
 * fall back to a weaker level than configured.
 */
#include "smtp_client.h"

#include "log.h"
#include "table.h"
#include "tls_proto.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const smtp_tls_level_names[] = {"none", "may", "encrypt", "verify", "secure"};

/* "may" -> SMTP_TLS_MAY; dane -> may (no DNSSEC); -1 unknown. */
static int smtp_tls_level_parse(const char *s)
{
	if (*s == 0)
		return SMTP_TLS_NONE;
	if (strcasecmp(s, "dane") == 0 || strcasecmp(s, "dane-only") == 0)
		return SMTP_TLS_MAY;
	for (int i = 0; i <= SMTP_TLS_SECURE; i++)
		if (strcasecmp(s, smtp_tls_level_names[i]) == 0)
			return i;
	return -1;
}

const char *smtp_tls_level_name(int level)
{
	return level >= 0 && level <= SMTP_TLS_SECURE ? smtp_tls_level_names[level] : "none";
}

/* smtp_tls_protocols and smtp_tls_mandatory_protocols (tls_proto.h). */
static int smtp_tls_min_version(const struct cfg *cfg, const char *param, int *min,
				struct buf *err)
{
	struct cfg_list l = {NULL, 0};
	int rc;

	*min = TLS1_VERSION;
	if (cfg_get_list(cfg, NULL, param, &l, err) < 0)
		return -1;
	rc = tls_protocol_floor(&l, param, min, err);
	cfg_list_free(&l);
	return rc;
}

/* smtp_tls_ciphers: Postfix's grades as OpenSSL cipher lists (TLS 1.2
 * and older; TLS 1.3 suites are all strong). */
static int smtp_tls_cipher_grade(const struct cfg *cfg, SSL_CTX *ctx, struct buf *err)
{
	static const struct {
		const char *grade, *list;
	} grades[] = {
	    {"high", "aNULL:-aNULL:HIGH:@STRENGTH"},
	    {"medium", "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH"},
	    {"low", "aNULL:-aNULL:HIGH:MEDIUM:+RC4:LOW:@STRENGTH"},
	    {"export", "aNULL:-aNULL:HIGH:MEDIUM:+RC4:LOW:EXP:@STRENGTH"},
	    {"null", "eNULL:!aNULL"},
	};
	struct buf v = BUF_INIT;
	int rc = -1;

	if (cfg_get_str(cfg, NULL, "smtp_tls_ciphers", &v, err) < 0)
		return -1;
	buf_trim(&v);
	for (size_t i = 0; i < sizeof(grades) / sizeof(grades[0]); i++)
		if (strcasecmp(buf_str(&v), grades[i].grade) == 0) {
			/* OpenSSL 3 may lack the weaker names: keep what it has */
			(void)SSL_CTX_set_cipher_list(ctx, grades[i].list);
			ERR_clear_error();
			rc = 0;
		}
	if (rc < 0)
		buf_printf(err, "smtp_tls_ciphers: unknown grade \"%s\" (high, medium, low, export, "
				"null)", buf_str(&v));
	buf_free(&v);
	return rc;
}

/* smtp_tls_servername and servername=: the special names, or a DNS name. */
static int smtp_tls_servername_ok(const char *v)
{
	return *v == 0 || strcasecmp(v, "hostname") == 0 || strcasecmp(v, "nexthop") == 0 ||
	       tls_sni_name_valid(v);
}

static int smtp_tls_ctx_new(struct deliver_smtp_conf *sc, const struct cfg *cfg, struct buf *err)
{
	struct buf ca = BUF_INIT, capath = BUF_INIT, cert = BUF_INIT, key = BUF_INIT;
	int min = TLS1_VERSION, rc = -1;
	long long depth = 9;
	struct stat st;
	unsigned long e;

	if (smtp_tls_min_version(cfg, "smtp_tls_protocols", &min, err) < 0 ||
	    cfg_get_str(cfg, NULL, "smtp_tls_CAfile", &ca, err) < 0 ||
	    cfg_get_str(cfg, NULL, "smtp_tls_CApath", &capath, err) < 0 ||
	    cfg_get_str(cfg, NULL, "smtp_tls_cert_file", &cert, err) < 0 ||
	    cfg_get_str(cfg, NULL, "smtp_tls_key_file", &key, err) < 0 ||
	    cfg_get_int(cfg, NULL, "smtp_tls_scert_verifydepth", &depth, err) < 0)
		goto out;
	if ((sc->tls_ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		buf_puts(err, "TLS: cannot create a client context");
		goto out;
	}
	SSL_CTX_set_min_proto_version(sc->tls_ctx, min);
	if (smtp_tls_cipher_grade(cfg, sc->tls_ctx, err) < 0)
		goto out;
	/* verification is judged after the handshake, per level */
	SSL_CTX_set_verify(sc->tls_ctx, SSL_VERIFY_NONE, NULL);
	/* Postfix's depth counts the CAs above the server's certificate, the
	 * trusted one included; OpenSSL's only those in between. */
	SSL_CTX_set_verify_depth(sc->tls_ctx, (int)(depth > 1 ? depth - 1 : 0));
	if (capath.len && (stat(buf_str(&capath), &st) < 0 || !S_ISDIR(st.st_mode))) {
		buf_printf(err, "smtp_tls_CApath %s: not a directory", buf_str(&capath));
		goto out;
	}
	if ((ca.len || capath.len) &&
	    SSL_CTX_load_verify_locations(sc->tls_ctx, ca.len ? buf_str(&ca) : NULL,
					  capath.len ? buf_str(&capath) : NULL) != 1) {
		e = ERR_get_error();
		buf_printf(err, "smtp_tls_CAfile/CApath: cannot load %s: %s",
			   ca.len ? buf_str(&ca) : buf_str(&capath), ERR_reason_error_string(e));
		goto out;
	}
	if (cert.len &&
	    (SSL_CTX_use_certificate_chain_file(sc->tls_ctx, buf_str(&cert)) != 1 ||
	     SSL_CTX_use_PrivateKey_file(sc->tls_ctx, key.len ? buf_str(&key) : buf_str(&cert),
					 SSL_FILETYPE_PEM) != 1 ||
	     SSL_CTX_check_private_key(sc->tls_ctx) != 1)) {
		e = ERR_get_error();
		buf_printf(err, "smtp_tls_cert_file %s: %s", buf_str(&cert),
			   ERR_reason_error_string(e));
		goto out;
	}
	rc = 0;
out:
	ERR_clear_error();
	buf_free(&ca), buf_free(&capath), buf_free(&cert), buf_free(&key);
	return rc;
}

int smtp_tls_conf_init(struct deliver_smtp_conf *sc, const struct cfg *cfg, struct buf *err)
{
	struct buf v = BUF_INIT;
	struct cfg_list l = {NULL, 0};
	long long loglevel = 0;
	int rc = -1;

	if (cfg_get_str(cfg, NULL, "smtp_tls_security_level", &v, err) < 0)
		goto out;
	buf_trim(&v);
	if ((sc->tls_level = smtp_tls_level_parse(buf_str(&v))) < 0) {
		buf_printf(err, "smtp_tls_security_level: unknown level \"%s\"", buf_str(&v));
		goto out;
	}
	if (cfg_get_str(cfg, NULL, "smtp_tls_verify_cert_match", &v, err) < 0)
		goto out;
	sc->tls_verify_match = buf_detach(&v);
	if (cfg_get_str(cfg, NULL, "smtp_tls_secure_cert_match", &v, err) < 0)
		goto out;
	sc->tls_secure_match = buf_detach(&v);
	if (cfg_get_str(cfg, NULL, "smtp_tls_servername", &v, err) < 0)
		goto out;
	buf_trim(&v);
	if (!smtp_tls_servername_ok(buf_str(&v))) {
		buf_printf(err,
			   "smtp_tls_servername: \"%s\" is not a DNS name (nor hostname, nexthop)",
			   buf_str(&v));
		goto out;
	}
	sc->tls_servername = buf_detach(&v);
	if (cfg_get_bool(cfg, NULL, "smtp_tls_wrappermode", &sc->tls_wrapper, err) < 0 ||
	    cfg_get_int(cfg, NULL, "smtp_tls_loglevel", &loglevel, err) < 0 ||
	    cfg_get_bool(cfg, NULL, "smtp_tls_note_starttls_offer", &sc->tls_note_offer, err) < 0 ||
	    smtp_tls_min_version(cfg, "smtp_tls_mandatory_protocols", &sc->tls_mandatory_min,
				 err) < 0 ||
	    cfg_get_time(cfg, NULL, "smtp_starttls_timeout", &sc->starttls_timeout, err) < 0 ||
	    deliver_maps_open(cfg, "smtp_tls_policy_maps", &sc->tls_policy, err) < 0 ||
	    smtp_tls_ctx_new(sc, cfg, err) < 0)
		goto out;
	sc->tls_loglevel = (int)loglevel;
	/* SASL */
	if (cfg_get_bool(cfg, NULL, "smtp_sasl_auth_enable", &sc->sasl_enable, err) < 0 ||
	    cfg_get_bool(cfg, NULL, "smtp_sender_dependent_authentication", &sc->sasl_by_sender,
			 err) < 0 ||
	    cfg_get_bool(cfg, NULL, "smtp_sasl_auth_soft_bounce", &sc->sasl_soft_bounce, err) < 0 ||
	    deliver_maps_open(cfg, "smtp_sasl_password_maps", &sc->sasl_maps, err) < 0)
		goto out;
	sc->sasl_plain = sc->sasl_plain_tls = 1;
	for (int pass = 0; pass < 2; pass++) {
		const char *p = pass ? "smtp_sasl_tls_security_options" : "smtp_sasl_security_options";
		if (cfg_get_list(cfg, NULL, p, &l, err) < 0)
			goto out;
		for (size_t i = 0; i < l.count; i++) {
			if (strcasecmp(l.items[i], "noplaintext") == 0)
				*(pass ? &sc->sasl_plain_tls : &sc->sasl_plain) = 0;
			else if (strcasecmp(l.items[i], "noanonymous") != 0 &&
				 strcasecmp(l.items[i], "noactive") != 0 &&
				 strcasecmp(l.items[i], "nodictionary") != 0 &&
				 strcasecmp(l.items[i], "mutual_auth") != 0) {
				buf_printf(err, "%s: unknown option \"%s\"", p, l.items[i]);
				goto out;
			}
		}
		cfg_list_free(&l);
	}
	rc = 0;
out:
	cfg_list_free(&l);
	buf_free(&v);
	return rc;
}

void smtp_tls_conf_free(struct deliver_smtp_conf *sc)
{
	if (sc->tls_ctx)
		SSL_CTX_free(sc->tls_ctx);
	deliver_maps_free(&sc->tls_policy);
	deliver_maps_free(&sc->sasl_maps);
	free(sc->tls_verify_match);
	free(sc->tls_secure_match);
	free(sc->tls_servername);
}

/* --- per destination ----------------------------------------------------- */

/* The lookup keys of a next hop: as written ("[host]:port", "domain"),
 * then, for a domain, its parents as ".parent" (Postfix's
 * parent_domain_matches_subdomains style for these tables). */
static int smtp_nexthop_lookup(const struct deliver_maps *m, const char *nexthop,
			       struct buf *value, struct buf *err)
{
	int rc = deliver_maps_lookup(m, nexthop, value, NULL, err);
	const char *d = nexthop;

	if (rc != TABLE_NOTFOUND || *nexthop == '[' || strchr(nexthop, ':') != NULL)
		return rc;
	while ((d = strchr(d + 1, '.')) != NULL && rc == TABLE_NOTFOUND)
		rc = deliver_maps_lookup(m, d, value, NULL, err);
	return rc;
}

/* One "name=value" of a policy entry: match=, servername= (others, such
 * as protocols= and ciphers=, are not used here). */
static int smtp_tls_policy_attr(struct smtp_tls_policy *p, const char *w, const char *nexthop,
				struct buf *err)
{
	if (strncasecmp(w, "match=", 6) == 0) {
		free(p->match);
		p->match = xstrdup(w + 6);
	} else if (strncasecmp(w, "servername=", 11) == 0) {
		if (!smtp_tls_servername_ok(w + 11)) { /* Postfix: the mail is deferred */
			buf_printf(err, "TLS policy for %s: invalid servername \"%s\"", nexthop,
				   w + 11);
			return -1;
		}
		snprintf(p->servername, sizeof(p->servername), "%s", w + 11);
	}
	return 0;
}

int smtp_tls_policy_find(const struct deliver_smtp_conf *sc, const char *nexthop,
			 struct smtp_tls_policy *p, struct buf *err)
{
	struct buf v = BUF_INIT, why = BUF_INIT;
	int rc;

	p->level = sc->tls_level;
	free(p->match);
	p->match = NULL;
	p->servername[0] = 0;
	if (sc->tls_policy.n == 0)
		return 0;
	rc = smtp_nexthop_lookup(&sc->tls_policy, nexthop, &v, &why);
	if (rc == TABLE_ERROR) {
		buf_printf(err, "TLS policy lookup for %s: %s", nexthop, buf_str(&why));
		rc = -1;
	} else if (rc == TABLE_FOUND) {
		/* "level [match=a:b] [protocols=...] [ciphers=...]" */
		char *copy = xstrdup(buf_str(&v)), *save = NULL;
		char *w = strtok_r(copy, " \t,", &save);
		rc = 0;
		if (w == NULL || (p->level = smtp_tls_level_parse(w)) < 0) {
			buf_printf(err, "TLS policy for %s: unknown level \"%s\"", nexthop,
				   w ? w : "");
			rc = -1;
		}
		while (rc == 0 && (w = strtok_r(NULL, " \t,", &save)) != NULL)
			rc = smtp_tls_policy_attr(p, w, nexthop, err);
		free(copy);
	} else {
		rc = 0;
	}
	buf_free(&v), buf_free(&why);
	return rc;
}

int smtp_sasl_find(const struct deliver_smtp_conf *sc, const char *sender, const char *nexthop,
		   struct buf *user, struct buf *pass, struct buf *err)
{
	struct buf v = BUF_INIT, why = BUF_INIT;
	int rc = TABLE_NOTFOUND;
	const char *at, *colon;

	if (!sc->sasl_enable || sc->sasl_maps.n == 0)
		return 0;
	if (sc->sasl_by_sender && *sender) {
		rc = deliver_maps_lookup(&sc->sasl_maps, sender, &v, NULL, &why);
		if (rc == TABLE_NOTFOUND && (at = strrchr(sender, '@')) != NULL)
			rc = deliver_maps_lookup(&sc->sasl_maps, at, &v, NULL, &why);
	}
	if (rc == TABLE_NOTFOUND)
		rc = smtp_nexthop_lookup(&sc->sasl_maps, nexthop, &v, &why);
	if (rc == TABLE_ERROR) {
		buf_printf(err, "SASL password lookup for %s: %s", nexthop, buf_str(&why));
		rc = -1;
	} else if (rc == TABLE_FOUND && (colon = strchr(buf_str(&v), ':')) != NULL) {
		buf_set(user, "");
		buf_append(user, buf_str(&v), (size_t)(colon - buf_str(&v)));
		buf_set(pass, colon + 1);
		rc = 1;
	} else {
		if (rc == TABLE_FOUND)
			msg_warn("smtp_sasl_password_maps: %s: no \"user:password\" value", nexthop);
		rc = 0;
	}
	buf_free(&v), buf_free(&why);
	return rc;
}

/* --- per connection ------------------------------------------------------ */

/* The SNI to send, in name (empty: none). Postfix: no SNI unless asked
 * (smtp_tls_servername, or servername= in the policy table); "hostname"
 * is the server's name, "nexthop" the next-hop domain ("[h]:port": h).
 * An address (a literal, or a server without a name) gets none. */
static void smtp_tls_sni(const struct deliver_smtp_conf *sc, const struct smtp_tls_policy *p,
			 const char *host, const char *nexthop, char *name, size_t size)
{
	const char *v = p && p->servername[0] ? p->servername : sc->tls_servername;

	name[0] = 0;
	if (v == NULL || *v == 0)
		return;
	if (strcasecmp(v, "hostname") == 0) {
		snprintf(name, size, "%s", host ? host : "");
	} else if (strcasecmp(v, "nexthop") == 0) {
		const char *d = nexthop ? nexthop : "";
		if (*d == '[')
			snprintf(name, size, "%.*s", (int)strcspn(d + 1, "]"), d + 1);
		else
			snprintf(name, size, "%.*s", (int)strcspn(d, ":"), d);
	} else {
		snprintf(name, size, "%s", v);
	}
	if (!tls_sni_name_valid(name))
		name[0] = 0;
}

SSL *smtp_tls_ssl_new(const struct deliver_smtp_conf *sc, const struct smtp_tls_policy *p,
		      const char *host, const char *nexthop)
{
	SSL *ssl = SSL_new(sc->tls_ctx);
	char sni[256];

	if (ssl == NULL)
		return NULL;
	/* smtp_tls_mandatory_protocols where TLS is required */
	if (p != NULL && p->level >= SMTP_TLS_ENCRYPT)
		SSL_set_min_proto_version(ssl, sc->tls_mandatory_min);
	smtp_tls_sni(sc, p, host, nexthop, sni, sizeof(sni));
	if (sni[0])
		SSL_set_tlsext_host_name(ssl, sni);
	return ssl;
}

void smtp_tls_close_notify(SSL *ssl)
{
	if (!SSL_is_init_finished(ssl))
		return;
	(void)SSL_shutdown(ssl); /* our alert only: the server's is not awaited */
	ERR_clear_error();
}

/* Does the certificate carry one of the names in match ("hostname",
 * "nexthop", "dot-nexthop", or literal names; ":" or "," separated)? */
static int smtp_tls_name_ok(X509 *cert, const char *match, const char *host, const char *nexthop)
{
	char *copy = xstrdup(match), *save = NULL, *w;
	int ok = 0;
	const char *dom = nexthop;

	if (*dom == '[') /* [host]:port: its host */
		dom = "";
	for (w = strtok_r(copy, ":, \t", &save); w && !ok; w = strtok_r(NULL, ":, \t", &save)) {
		char name[300];
		if (strcasecmp(w, "hostname") == 0)
			snprintf(name, sizeof(name), "%s", host);
		else if (strcasecmp(w, "nexthop") == 0)
			snprintf(name, sizeof(name), "%.*s", (int)strcspn(dom, ":"), dom);
		else if (strcasecmp(w, "dot-nexthop") == 0)
			snprintf(name, sizeof(name), ".%.*s", (int)strcspn(dom, ":"), dom);
		else
			snprintf(name, sizeof(name), "%s", w);
		if (name[0] && strcmp(name, ".") != 0)
			ok = X509_check_host(cert, name, 0, 0, NULL) == 1;
	}
	free(copy);
	return ok;
}

int smtp_tls_check(SSL *ssl, const struct deliver_smtp_conf *sc, const struct smtp_tls_policy *p,
		   const char *host, const char *nexthop, const char **trust, struct buf *why)
{
	X509 *cert = SSL_get1_peer_certificate(ssl);
	int chain_ok = cert != NULL && SSL_get_verify_result(ssl) == X509_V_OK;
	const char *match = p->match ? p->match
			    : p->level == SMTP_TLS_SECURE ? sc->tls_secure_match
							  : sc->tls_verify_match;
	int name_ok = chain_ok && smtp_tls_name_ok(cert, match, host, nexthop);
	int rc = 0;

	*trust = name_ok && p->level >= SMTP_TLS_VERIFY ? "Verified"
		 : chain_ok				 ? "Trusted"
							 : "Untrusted";
	if (p->level >= SMTP_TLS_VERIFY && !chain_ok) {
		buf_set(why, "Server certificate not trusted");
		rc = -1;
	} else if (p->level >= SMTP_TLS_VERIFY && !name_ok) {
		buf_set(why, "Server certificate not verified");
		rc = -1;
	}
	X509_free(cert);
	return rc;
}

void smtp_tls_log(SSL *ssl, const char *agent, const char *trust, const struct smtp_server *sv)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
	int alg = 0, bits = c ? SSL_CIPHER_get_bits(c, &alg) : 0;
	struct buf relay = BUF_INIT;
	const char *prev = log_swap_service(agent);

	smtp_relay_name(sv, &relay);
	msg_info("%s TLS connection established to %s: %s with cipher %s (%d/%d bits)", trust,
		 buf_str(&relay), SSL_get_version(ssl), c ? SSL_CIPHER_get_name(c) : "none", bits,
		 alg);
	log_thread_service(prev);
	buf_free(&relay);
}
