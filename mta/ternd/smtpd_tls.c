/* smtpd_tls.c - TLS in the SMTP server (smtpd_tls.h): the per-listener
 * OpenSSL context (certificates and keys, protocols, ciphers, session
 * cache and tickets) built with each config snapshot, so "tern reload"
 * re-reads the certificates; the STARTTLS command (RFC 3207) and wrapper
 * mode (smtps, RFC 8314); Postfix's "Anonymous/Untrusted/Trusted TLS
 * connection established from ..." line, client certificates
 * (smtpd_tls_ask_ccert, CAfile/CApath, smtpd_tls_ccert_verifydepth,
 * relay_clientcerts), certificates chosen by the client's SNI
 * (tls_server_sni_maps), close_notify at the end of a session, and the
 * TLS facts of the session.
 *
 * Levels as Postfix's smtpd_tls_security_level: none (no STARTTLS), may
 * (offered), encrypt (required: "530 5.7.0 Must issue a STARTTLS command
 * first" for mail commands before it).
 * Pitfall (CVE-2011-0411): plaintext pipelined after STARTTLS is never
 * executed after the handshake; with smtpd_forbid_unauth_pipelining (the
 * default) the client is disconnected, else the bytes are discarded as
 * Postfix's starttls_cmd() does. All SMTP state is forgotten (§4.2).
 */
#include "smtpd_int.h"

#include "base64.h"
#include "log.h"
#include "tls_proto.h"

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <sys/stat.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* A tls_server_sni_maps value and its PEM objects, parsed once per
 * config snapshot (a reload re-reads the files). */
struct tls_sni_chain {
	char *value;
	STACK_OF(X509_INFO) * pem;
};

#define TLS_SNI_CACHE_MAX 256 /* more distinct values: parsed per handshake */

struct smtpd_tls_conf {
	int level;    /* SMTPD_TLS_* */
	int wrapper;  /* smtpd_tls_wrappermode */
	SSL_CTX *ctx; /* NULL at level none without wrapper mode */
	long long starttls_timeout_ms;
	int received_header;		 /* smtpd_tls_received_header */
	long long new_rate, rate_unit_s; /* smtpd_client_new_tls_session_rate_limit */
	int loglevel;			 /* smtpd_tls_loglevel */
	int ask_ccert, req_ccert;
	const EVP_MD *digest;	    /* smtpd_tls_fingerprint_digest */
	struct table **relay_certs; /* relay_clientcerts */
	size_t nrelay_certs;
	struct table **sni_maps; /* tls_server_sni_maps */
	size_t nsni_maps;
	char *cfg_dir;		  /* relative chain files in sni values */
	pthread_mutex_t sni_lock; /* the loops share the cache */
	struct tls_sni_chain *sni_chains;
	size_t nsni_chains;
};

/* ------------------------------------------------------------------ */
/* settings                                                            */

static int tls_level_parse(const char *v, int *level, struct buf *err)
{
	if (*v == 0 || strcasecmp(v, "none") == 0)
		*level = SMTPD_TLS_NONE;
	else if (strcasecmp(v, "may") == 0)
		*level = SMTPD_TLS_MAY;
	else if (strcasecmp(v, "encrypt") == 0)
		*level = SMTPD_TLS_ENCRYPT;
	else {
		buf_printf(err, "smtpd_tls_security_level: bad value \"%s\" (none, may, encrypt)",
			   v);
		return -1;
	}
	return 0;
}

/* smtpd_tls_protocols / smtpd_tls_mandatory_protocols (tls_proto.h);
 * unset: TLS 1.2 and up (Tern's default). */
static int tls_min_version(const struct cfg *cfg, const char *l, const char *param, int *min,
			   struct buf *err)
{
	struct cfg_list items = {NULL, 0};
	int rc;

	if (cfg_get_list(cfg, l, param, &items, err) < 0)
		return -1;
	*min = items.count ? TLS1_VERSION : TLS1_2_VERSION;
	rc = tls_protocol_floor(&items, param, min, err);
	cfg_list_free(&items);
	return rc;
}

/* smtpd_tls_ciphers grade -> tls_<grade>_cipherlist (TLS 1.2 and below;
 * TLS 1.3 suites are OpenSSL's, all strong). */
static int tls_ciphers(SSL_CTX *ctx, const struct cfg *cfg, const char *l, const char *param,
		       struct buf *err)
{
	struct buf grade = BUF_INIT, list = BUF_INIT, name = BUF_INIT;
	int rc = -1;

	if (cfg_get_str(cfg, l, param, &grade, err) < 0)
		goto out;
	if (strcasecmp(buf_str(&grade), "high") && strcasecmp(buf_str(&grade), "medium")) {
		buf_printf(err, "%s: unsupported grade \"%s\" (high, medium)", param,
			   buf_str(&grade));
		goto out;
	}
	buf_printf(&name, "tls_%s_cipherlist",
		   strcasecmp(buf_str(&grade), "high") ? "medium" : "high");
	if (cfg_get_str(cfg, l, buf_str(&name), &list, err) < 0)
		goto out;
	if (SSL_CTX_set_cipher_list(ctx, buf_str(&list)) != 1) {
		buf_printf(err, "%s: OpenSSL accepts none of \"%s\"", buf_str(&name),
			   buf_str(&list));
		goto out;
	}
	rc = 0;
out:
	buf_free(&grade);
	buf_free(&list);
	buf_free(&name);
	return rc;
}

static void tls_ssl_error(struct buf *err, const char *what, const char *file)
{
	unsigned long e = ERR_peek_last_error();
	char text[256] = "no error detail";

	if (e)
		ERR_error_string_n(e, text, sizeof(text));
	buf_printf(err, "%s %s: %s", what, file, text);
	ERR_clear_error();
}

/* Read every PEM object of the files, in order (what: for errors). */
static STACK_OF(X509_INFO) *
    tls_pem_read(const struct cfg_list *files, const char *what, struct buf *err)
{
	STACK_OF(X509_INFO) *all = sk_X509_INFO_new_null();

	for (size_t i = 0; i < files->count; i++) {
		BIO *bio = BIO_new_file(files->items[i], "r");
		if (bio == NULL || PEM_X509_INFO_read_bio(bio, all, NULL, NULL) == NULL) {
			BIO_free(bio);
			buf_printf(err, "%s: cannot read", what);
			tls_ssl_error(err, "", files->items[i]);
			sk_X509_INFO_pop_free(all, X509_INFO_free);
			return NULL;
		}
		BIO_free(bio);
	}
	return all;
}

/* Where the pairs of a chain go: the context (smtpd_tls_chain_files) or
 * one connection (tls_server_sni_maps). Exactly one is set. */
struct tls_target {
	SSL_CTX *ctx;
	SSL *ssl;
};

static int tls_target_use(const struct tls_target *t, X509 *cert, EVP_PKEY *key,
			  STACK_OF(X509) * chain)
{
	return t->ctx ? SSL_CTX_use_cert_and_key(t->ctx, cert, key, chain, 1)
		      : SSL_use_cert_and_key(t->ssl, cert, key, chain, 1);
}

/* Postfix's chain-files layout: each private key is followed by its
 * certificate and then that certificate's chain, so "rsa.pem, ecdsa.pem"
 * (or key, cert, chain split over files) gives one pair per key type
 * (RSA+ECDSA). The objects stay all's (the target takes references). */
static int tls_pairs_use(STACK_OF(X509_INFO) * all, const struct tls_target *t, const char *what,
			 struct buf *err)
{
	STACK_OF(X509) *chain = NULL;
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	int rc = -1, pairs = 0, n = sk_X509_INFO_num(all);

	for (int k = 0; k <= n; k++) {
		X509_INFO *xi = k < n ? sk_X509_INFO_value(all, k) : NULL;
		if (xi == NULL ||
		    (xi->x_pkey && xi->x_pkey->dec_pkey)) { /* a new key, or the end */
			if (key && cert == NULL) {
				buf_printf(err, "%s: a private key without a certificate", what);
				goto out;
			}
			if (key && tls_target_use(t, cert, key, chain) != 1) {
				buf_printf(err, "%s:", what);
				tls_ssl_error(err, "", "key and certificate do not match");
				goto out;
			}
			pairs += key != NULL;
			key = xi ? xi->x_pkey->dec_pkey : NULL;
			cert = NULL;
			sk_X509_free(chain);
			chain = NULL;
		}
		if (xi && xi->x509) {
			if (key == NULL) {
				buf_printf(err, "%s: a certificate before its private key", what);
				goto out;
			}
			if (cert == NULL)
				cert = xi->x509;
			else {
				if (chain == NULL)
					chain = sk_X509_new_null();
				sk_X509_push(chain, xi->x509);
			}
		}
	}
	if (pairs == 0) {
		buf_printf(err, "%s: no private key with a certificate", what);
		goto out;
	}
	rc = 0;
out:
	sk_X509_free(chain); /* the objects belong to all */
	return rc;
}

/* smtpd_tls_chain_files (tls_pairs_use). */
static int tls_chain_files(SSL_CTX *ctx, const struct cfg_list *files, struct buf *err)
{
	STACK_OF(X509_INFO) *all = tls_pem_read(files, "smtpd_tls_chain_files", err);
	struct tls_target t = {ctx, NULL};
	int rc = all ? tls_pairs_use(all, &t, "smtpd_tls_chain_files", err) : -1;

	sk_X509_INFO_pop_free(all, X509_INFO_free);
	return rc;
}

/* One certificate (with its chain in the same file) and its key. */
static int tls_cert_pair(SSL_CTX *ctx, const char *cert, const char *key, const char *param,
			 struct buf *err)
{
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		tls_ssl_error(err, param, cert);
		return -1;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, *key ? key : cert, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		tls_ssl_error(err, "private key for", cert);
		return -1;
	}
	return 0;
}

static int tls_certs(SSL_CTX *ctx, const struct cfg *cfg, const char *l, struct buf *err)
{
	struct buf cert = BUF_INIT, key = BUF_INIT, eccert = BUF_INIT, eckey = BUF_INIT;
	struct cfg_list chain = {NULL, 0};
	int rc = -1;

	if (cfg_get_list(cfg, l, "smtpd_tls_chain_files", &chain, err) < 0 ||
	    cfg_get_path(cfg, l, "smtpd_tls_cert_file", &cert, err) < 0 ||
	    cfg_get_path(cfg, l, "smtpd_tls_key_file", &key, err) < 0 ||
	    cfg_get_path(cfg, l, "smtpd_tls_eccert_file", &eccert, err) < 0 ||
	    cfg_get_path(cfg, l, "smtpd_tls_eckey_file", &eckey, err) < 0)
		goto out;
	for (size_t i = 0; i < chain.count; i++) /* relative: the config directory */
		if (chain.items[i][0] != '/') {
			struct buf abs = BUF_INIT;
			buf_printf(&abs, "%s/%s", cfg_dir(cfg), chain.items[i]);
			free(chain.items[i]);
			chain.items[i] = buf_detach(&abs);
		}
	/* As Postfix: smtpd_tls_chain_files, when set, replaces the others. */
	if (chain.count) {
		rc = tls_chain_files(ctx, &chain, err);
		goto out;
	}
	if (cert.len == 0 && eccert.len == 0) {
		buf_puts(err, "TLS needs a certificate: set smtpd_tls_chain_files or "
			      "smtpd_tls_cert_file");
		goto out;
	}
	if ((cert.len &&
	     tls_cert_pair(ctx, buf_str(&cert), buf_str(&key), "smtpd_tls_cert_file", err) < 0) ||
	    (eccert.len && tls_cert_pair(ctx, buf_str(&eccert), buf_str(&eckey),
					 "smtpd_tls_eccert_file", err) < 0))
		goto out;
	rc = 0;
out:
	buf_free(&cert);
	buf_free(&key);
	buf_free(&eccert);
	buf_free(&eckey);
	cfg_list_free(&chain);
	return rc;
}

static int tls_verify_any(int ok, X509_STORE_CTX *store)
{
	return 1;
}

/* smtpd_tls_ccert_verifydepth counts as Postfix does: the certificates
 * above the client's, the trusted CA included ("1 is sufficient if the
 * issuing CA is listed in a local CA file"); OpenSSL's depth counts only
 * the CAs between them. Longer chains are Untrusted. */
static void tls_verify_depth(SSL_CTX *ctx, long long depth)
{
	SSL_CTX_set_verify_depth(ctx, (int)(depth > 1 ? depth - 1 : 0));
}

static SSL_CTX *tls_ctx_new(const struct cfg *cfg, const char *l, struct smtpd_tls_conf *tc,
			    struct buf *err)
{
	const char *pp = tc->level == SMTPD_TLS_ENCRYPT ? "smtpd_tls_mandatory_protocols"
							: "smtpd_tls_protocols";
	const char *cp =
	    tc->level == SMTPD_TLS_ENCRYPT ? "smtpd_tls_mandatory_ciphers" : "smtpd_tls_ciphers";
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	struct buf ca = BUF_INIT, capath = BUF_INIT;
	long long cache_s, depth;
	struct stat st;
	int min;

	if (ctx == NULL) {
		buf_puts(err, "TLS: cannot create a server context");
		return NULL;
	}
	if (tls_min_version(cfg, l, pp, &min, err) < 0 || tls_ciphers(ctx, cfg, l, cp, err) < 0 ||
	    tls_certs(ctx, cfg, l, err) < 0 ||
	    cfg_get_path(cfg, l, "smtpd_tls_CAfile", &ca, err) < 0 ||
	    cfg_get_path(cfg, l, "smtpd_tls_CApath", &capath, err) < 0 ||
	    cfg_get_int(cfg, l, "smtpd_tls_ccert_verifydepth", &depth, err) < 0 ||
	    cfg_get_time(cfg, l, "smtpd_tls_session_cache_timeout", &cache_s, err) < 0)
		goto fail;
	SSL_CTX_set_min_proto_version(ctx, min);
	/* Renegotiation is an attack surface with nothing to gain in SMTP. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
				     SSL_OP_NO_COMPRESSION);
	/* Idle sessions keep no read/write buffers (memory per idle session). */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (ca.len && SSL_CTX_load_verify_locations(ctx, buf_str(&ca), NULL) != 1) {
		tls_ssl_error(err, "smtpd_tls_CAfile", buf_str(&ca));
		goto fail;
	}
	/* CApath: looked up by subject hash (openssl rehash) when a chain is
	 * checked; as Postfix, its CAs are not named in the certificate
	 * request (only CAfile's are). */
	if (capath.len && (stat(buf_str(&capath), &st) < 0 || !S_ISDIR(st.st_mode))) {
		buf_printf(err, "smtpd_tls_CApath %s: not a directory", buf_str(&capath));
		goto fail;
	}
	if (capath.len && SSL_CTX_load_verify_locations(ctx, NULL, buf_str(&capath)) != 1) {
		tls_ssl_error(err, "smtpd_tls_CApath", buf_str(&capath));
		goto fail;
	}
	tls_verify_depth(ctx, depth);
	if (tc->ask_ccert) {
		/* Ask, never fail the handshake: the result is judged after it
		 * (Trusted / Untrusted, smtpd_tls_req_ccert, the restrictions). */
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, tls_verify_any);
		if (ca.len)
			SSL_CTX_set_client_CA_list(ctx, SSL_load_client_CA_file(buf_str(&ca)));
	}
	/* Resumption: the internal cache and (stateless) tickets, keys made
	 * per context, so a reload also rotates them; 0 turns both off. */
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)(l ? l : "smtp"),
				       (unsigned)strlen(l ? l : "smtp"));
	if (cache_s > 0) {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
		SSL_CTX_set_timeout(ctx, (long)cache_s);
	} else {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(ctx, 0);
	}
	buf_free(&ca);
	buf_free(&capath);
	return ctx;
fail:
	buf_free(&ca);
	buf_free(&capath);
	SSL_CTX_free(ctx);
	return NULL;
}

static int tls_digest(const struct cfg *cfg, const char *l, struct smtpd_tls_conf *tc,
		      struct buf *err)
{
	struct buf v = BUF_INIT;
	int rc = 0;

	if (cfg_get_str(cfg, l, "smtpd_tls_fingerprint_digest", &v, err) < 0)
		rc = -1;
	else if ((tc->digest = EVP_get_digestbyname(buf_str(&v))) == NULL) {
		buf_printf(err, "smtpd_tls_fingerprint_digest: unknown digest \"%s\"", buf_str(&v));
		rc = -1;
	}
	buf_free(&v);
	return rc;
}

/* ------------------------------------------------------------------ */
/* SNI: tls_server_sni_maps                                            */

static int tls_tables_open(const struct cfg *cfg, const char *l, const char *param,
			   struct table ***tables, size_t *n, struct buf *err)
{
	struct cfg_list items = {NULL, 0};
	int rc = 0;

	if (cfg_get_list(cfg, l, param, &items, err) < 0)
		return -1;
	*tables = xcalloc(items.count + 1, sizeof(**tables));
	for (size_t i = 0; i < items.count && rc == 0; i++) {
		struct buf why = BUF_INIT;
		struct table *t = table_open_lenient(items.items[i], &why);
		if (t == NULL) {
			buf_printf(err, "%s: %s", param, buf_str(&why));
			rc = -1;
		} else {
			(*tables)[(*n)++] = t;
		}
		buf_free(&why);
	}
	cfg_list_free(&items);
	return rc;
}

/* Postfix's keys: the name as sent, then each ancestor as ".parent". */
static int tls_sni_lookup(const struct smtpd_tls_conf *tc, const char *name, struct buf *value,
			  struct buf *err)
{
	int rc = TABLE_NOTFOUND;

	for (const char *key = name; key && rc == TABLE_NOTFOUND; key = strchr(key + 1, '.'))
		for (size_t i = 0; i < tc->nsni_maps && rc == TABLE_NOTFOUND; i++)
			rc = table_lookup(tc->sni_maps[i], key, value, err);
	return rc;
}

/* The value: chain files as in smtpd_tls_chain_files (relative: the
 * config directory), or -- for tables filled outside Tern, like Postfix's
 * "postmap -F" ones -- the PEM text itself, base64-encoded, one token. */
static STACK_OF(X509_INFO) *
    tls_sni_pem(const struct smtpd_tls_conf *tc, const char *value, struct buf *err)
{
	struct cfg_list files = {NULL, 0};
	struct buf pem = BUF_INIT;
	STACK_OF(X509_INFO) *all = NULL;
	char *copy = xstrdup(value), *save = NULL, *w;

	/* base64 has '/' too: a value is PEM when it decodes to PEM (a path
	 * with a '.' or a list never decodes) */
	if (strpbrk(value, ", \t") == NULL && base64_decode(value, strlen(value), &pem) == 0 &&
	    strstr(buf_str(&pem), "-----BEGIN")) {
		BIO *bio = BIO_new_mem_buf(pem.data, (int)pem.len);
		all = sk_X509_INFO_new_null();
		if (bio == NULL || PEM_X509_INFO_read_bio(bio, all, NULL, NULL) == NULL) {
			tls_ssl_error(err, "tls_server_sni_maps:", "bad PEM value");
			sk_X509_INFO_pop_free(all, X509_INFO_free);
			all = NULL;
		}
		BIO_free(bio);
		goto out;
	}
	for (w = strtok_r(copy, ", \t", &save); w; w = strtok_r(NULL, ", \t", &save)) {
		struct buf path = BUF_INIT;
		if (*w != '/')
			buf_printf(&path, "%s/", tc->cfg_dir);
		buf_puts(&path, w);
		files.items = xrealloc(files.items, (files.count + 1) * sizeof(*files.items));
		files.items[files.count++] = buf_detach(&path);
	}
	if (files.count == 0)
		buf_puts(err, "tls_server_sni_maps: an empty value");
	else
		all = tls_pem_read(&files, "tls_server_sni_maps", err);
out:
	cfg_list_free(&files);
	buf_free(&pem);
	free(copy);
	return all;
}

/* The parsed chain of value, from the cache or read now (*fresh: the
 * caller frees it). */
static STACK_OF(X509_INFO) *
    tls_sni_chain(struct smtpd_tls_conf *tc, const char *value, int *fresh, struct buf *err)
{
	STACK_OF(X509_INFO) *pem = NULL;

	*fresh = 0;
	pthread_mutex_lock(&tc->sni_lock);
	for (size_t i = 0; i < tc->nsni_chains && pem == NULL; i++)
		if (strcmp(tc->sni_chains[i].value, value) == 0)
			pem = tc->sni_chains[i].pem;
	pthread_mutex_unlock(&tc->sni_lock);
	if (pem != NULL || (pem = tls_sni_pem(tc, value, err)) == NULL)
		return pem;
	pthread_mutex_lock(&tc->sni_lock);
	if (tc->nsni_chains < TLS_SNI_CACHE_MAX) { /* a second reader may add it too: harmless */
		tc->sni_chains =
		    xrealloc(tc->sni_chains, (tc->nsni_chains + 1) * sizeof(*tc->sni_chains));
		tc->sni_chains[tc->nsni_chains].value = xstrdup(value);
		tc->sni_chains[tc->nsni_chains++].pem = pem;
	} else {
		*fresh = 1;
	}
	pthread_mutex_unlock(&tc->sni_lock);
	return pem;
}

/* OpenSSL's servername callback, inside the ClientHello and before the
 * certificate is chosen: a name with an entry gets that entry's chains
 * instead of the listener's; any other keeps the default ones (logged,
 * as Postfix does). A broken entry fails the handshake rather than
 * presenting a certificate the admin did not mean for that name. */
static int tls_sni_cb(SSL *ssl, int *alert, void *arg)
{
	struct smtpd_tls_conf *tc = arg;
	const struct smtpd_session *s = SSL_get_app_data(ssl);
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	const char *who = s ? s->client.namaddr : "unknown";
	struct buf value = BUF_INIT, err = BUF_INIT;
	struct tls_target t = {NULL, ssl};
	STACK_OF(X509_INFO) *pem = NULL;
	int rc = SSL_TLSEXT_ERR_NOACK, fresh = 0, st;

	if (name == NULL || tc->nsni_maps == 0)
		goto out;
	if (!tls_sni_name_valid(name)) {
		msg_info("TLS SNI from %s: invalid name, using the default certificate", who);
		goto out;
	}
	st = tls_sni_lookup(tc, name, &value, &err);
	if (st == TABLE_NOTFOUND) {
		msg_info("TLS SNI %s from %s not matched, using the default certificate", name,
			 who);
		goto out;
	}
	if (st == TABLE_ERROR || (pem = tls_sni_chain(tc, buf_str(&value), &fresh, &err)) == NULL)
		goto fail;
	SSL_certs_clear(ssl);
	if (tls_pairs_use(pem, &t, "tls_server_sni_maps", &err) < 0)
		goto fail;
	rc = SSL_TLSEXT_ERR_OK;
	goto out;
fail:
	msg_warn("TLS SNI %s from %s: %s", name, who, buf_str(&err));
	*alert = SSL_AD_INTERNAL_ERROR;
	rc = SSL_TLSEXT_ERR_ALERT_FATAL;
out:
	if (fresh)
		sk_X509_INFO_pop_free(pem, X509_INFO_free);
	buf_free(&value);
	buf_free(&err);
	ERR_clear_error();
	return rc;
}

static int tls_sni_init(const struct cfg *cfg, const char *l, struct smtpd_tls_conf *tc,
			struct buf *err)
{
	if (tls_tables_open(cfg, l, "tls_server_sni_maps", &tc->sni_maps, &tc->nsni_maps, err) < 0)
		return -1;
	tc->cfg_dir = xstrdup(cfg_dir(cfg));
	if (tc->ctx && tc->nsni_maps) {
		SSL_CTX_set_tlsext_servername_callback(tc->ctx, tls_sni_cb);
		SSL_CTX_set_tlsext_servername_arg(tc->ctx, tc);
	}
	return 0;
}

struct smtpd_tls_conf *smtpd_tls_conf_new(const struct cfg *cfg, const char *l, struct buf *err)
{
	struct smtpd_tls_conf *tc = xcalloc(1, sizeof(*tc));
	struct buf level = BUF_INIT;

	pthread_mutex_init(&tc->sni_lock, NULL);
	long long loglevel;
	int ask = 0, req = 0;

	if (cfg_get_str(cfg, l, "smtpd_tls_security_level", &level, err) < 0 ||
	    tls_level_parse(buf_str(&level), &tc->level, err) < 0 ||
	    cfg_get_bool(cfg, l, "smtpd_tls_wrappermode", &tc->wrapper, err) < 0 ||
	    cfg_get_bool(cfg, l, "smtpd_tls_received_header", &tc->received_header, err) < 0 ||
	    cfg_get_int(cfg, l, "smtpd_tls_loglevel", &loglevel, err) < 0 ||
	    cfg_get_time_ms(cfg, l, "smtpd_starttls_timeout", &tc->starttls_timeout_ms, err) < 0 ||
	    cfg_get_bool(cfg, l, "smtpd_tls_ask_ccert", &ask, err) < 0 ||
	    cfg_get_bool(cfg, l, "smtpd_tls_req_ccert", &req, err) < 0 ||
	    cfg_get_int(cfg, l, "smtpd_client_new_tls_session_rate_limit", &tc->new_rate, err) <
		0 ||
	    cfg_get_time(cfg, l, "anvil_rate_time_unit", &tc->rate_unit_s, err) < 0)
		goto fail;
	tc->loglevel = (int)loglevel;
	/* As Postfix: req_ccert implies ask_ccert, and only means something
	 * where TLS is required. */
	tc->req_ccert = req && tc->level == SMTPD_TLS_ENCRYPT;
	if (req && !tc->req_ccert)
		msg_warn("smtpd_tls_req_ccert = yes without smtpd_tls_security_level = encrypt: "
			 "ignored%s%s",
			 l ? " for listener " : "", l ? l : "");
	tc->ask_ccert = ask || tc->req_ccert;
	if (tls_digest(cfg, l, tc, err) < 0 ||
	    tls_tables_open(cfg, l, "relay_clientcerts", &tc->relay_certs, &tc->nrelay_certs, err) <
		0)
		goto fail;
	if ((tc->level != SMTPD_TLS_NONE || tc->wrapper) &&
	    (tc->ctx = tls_ctx_new(cfg, l, tc, err)) == NULL)
		goto fail;
	if (tls_sni_init(cfg, l, tc, err) < 0)
		goto fail;
	buf_free(&level);
	return tc;
fail:
	if (l)
		buf_printf(err, " (listener %s)", l);
	buf_free(&level);
	smtpd_tls_conf_free(tc);
	return NULL;
}

void smtpd_tls_conf_free(struct smtpd_tls_conf *tc)
{
	if (tc == NULL)
		return;
	for (size_t i = 0; i < tc->nrelay_certs; i++)
		table_close(tc->relay_certs[i]);
	free(tc->relay_certs);
	for (size_t i = 0; i < tc->nsni_maps; i++)
		table_close(tc->sni_maps[i]);
	free(tc->sni_maps);
	for (size_t i = 0; i < tc->nsni_chains; i++) {
		free(tc->sni_chains[i].value);
		sk_X509_INFO_pop_free(tc->sni_chains[i].pem, X509_INFO_free);
	}
	free(tc->sni_chains);
	free(tc->cfg_dir);
	pthread_mutex_destroy(&tc->sni_lock);
	SSL_CTX_free(tc->ctx);
	free(tc);
}

int smtpd_tls_wrapper(const struct smtpd_conf *conf)
{
	return conf->tls && conf->tls->wrapper && conf->tls->ctx;
}

/* ------------------------------------------------------------------ */
/* STARTTLS                                                            */

int smtpd_tls_offer(const struct smtpd_session *s)
{
	const struct smtpd_tls_conf *tc = s->conf->tls;

	return tc && tc->ctx && tc->level != SMTPD_TLS_NONE && s->tls == NULL &&
	       !(s->conf->ehlo_discard & SMTPD_EHLO_STARTTLS);
}

/* Postfix's SMTPD_CMD_FLAG_PRE_TLS commands are allowed before TLS. */
int smtpd_tls_required(struct smtpd_session *s, const char *verb)
{
	static const char *const pre_tls[] = {"HELO", "EHLO", "XCLIENT", "STARTTLS",
					      "RSET", "NOOP", "QUIT"};
	const struct smtpd_tls_conf *tc = s->conf->tls;

	if (tc == NULL || tc->level != SMTPD_TLS_ENCRYPT || s->tls)
		return 0;
	for (size_t i = 0; i < sizeof(pre_tls) / sizeof(*pre_tls); i++)
		if (strcasecmp(verb, pre_tls[i]) == 0)
			return 0;
	smtpd_reply(s, "530 5.7.0 Must issue a STARTTLS command first");
	return 1;
}

/* RFC 3207 §4.2: the client's HELO, MAIL, RCPT and AUTH are forgotten. */
static void tls_forget(struct smtpd_session *s)
{
	smtpd_txn_reset(s);
	free(s->helo);
	s->helo = NULL;
	s->esmtp = 0;
	smtpd_sasl_reset(s);
}

/* smtpd_client_new_tls_session_rate_limit (Postfix anvil): handshakes
 * that resumed a session cost little and are not counted. */
static int tls_rate_exceeded(struct smtpd_session *s)
{
	const struct smtpd_tls_conf *tc = s->conf->tls;

	if (tc->new_rate <= 0 || smtpd_client_trusted(s, s->conf->event_exceptions) ||
	    smtpd_client_event(&s->client.ip, tc->rate_unit_s, SMTPD_EV_TLS, 0) < tc->new_rate)
		return 0;
	msg_warn("New TLS session rate limit exceeded: from %s for service %s", s->client.namaddr,
		 s->conf->listener);
	return 1;
}

/* The connection's SSL; the session is its app data (tls_sni_cb logs). */
static SSL *tls_ssl_new(struct smtpd_session *s)
{
	SSL *ssl = SSL_new(s->conf->tls->ctx);

	if (ssl)
		SSL_set_app_data(ssl, s);
	return ssl;
}

int smtpd_tls_cmd(struct smtpd_session *s, int argc, char **argv)
{
	const struct smtpd_tls_conf *tc = s->conf->tls;
	struct buf next = BUF_INIT;

	if (argc != 1) {
		smtpd_reply(s, "501 5.5.4 Syntax: STARTTLS");
		return -1;
	}
	if (s->tls) {
		smtpd_reply(s, "554 5.5.1 Error: TLS already active");
		return -1;
	}
	if (tc == NULL || tc->ctx == NULL || tc->level == SMTPD_TLS_NONE) {
		smtpd_reply(s, "502 5.5.1 Error: command not implemented");
		return -1;
	}
	if (s->in_mail) {
		smtpd_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
		return -1;
	}
	if (tls_rate_exceeded(s)) {
		smtpd_reply(s, "454 4.7.0 Error: too many new TLS sessions from %s",
			    s->client.addr);
		return -1;
	}
	/* CVE-2011-0411: RFC 3207 makes STARTTLS the last command of a group;
	 * anything after it was not sent by a client waiting for our 220. */
	if (smtpd_session_pending_input(s)) {
		smtpd_session_peek_input(s, &next, 100);
		msg_info("improper command pipelining after STARTTLS from %s: %s",
			 s->client.namaddr, buf_str(&next));
		buf_free(&next);
		if (s->conf->forbid_unauth_pipelining) {
			s->state = SMTPD_ST_CLOSE;
			smtpd_reply(s, "554 5.5.0 Error: SMTP protocol synchronization");
			smtpd_session_close(s);
			return -1;
		}
		/* else discarded unread by smtpd_session_tls_start() */
	}
	tls_forget(s);
	if (smtpd_session_tls_start(s, tls_ssl_new(s), tc->starttls_timeout_ms,
				    "220 2.0.0 Ready to start TLS") < 0) {
		msg_warn("%s: cannot start TLS: output not flushed", s->client.namaddr);
		s->state = SMTPD_ST_CLOSE;
		smtpd_session_close(s);
		return -1;
	}
	return 0;
}

int smtpd_tls_wrap(struct smtpd_session *s)
{
	const struct smtpd_tls_conf *tc = s->conf->tls;

	if (tls_rate_exceeded(s)) { /* no SMTP yet: nothing to say, as Postfix */
		s->state = SMTPD_ST_CLOSE;
		smtpd_session_close(s);
		return -1;
	}
	if (smtpd_session_tls_start(s, tls_ssl_new(s), tc->starttls_timeout_ms, NULL) < 0) {
		msg_warn("%s: cannot start TLS", s->client.namaddr);
		s->state = SMTPD_ST_CLOSE;
		smtpd_session_close(s);
		return -1;
	}
	return 0;
}

void smtpd_tls_established(struct smtpd_session *s)
{
	SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
	int alg = 0, bits;
	/* wrapper mode: the handshake came before the greeting */
	int greet = strcmp(s->last_cmd, "CONNECT") == 0;

	static const char *const trust[] = {"Anonymous", "Untrusted", "Trusted"};
	int cert;

	s->tls = ssl;
	if (!SSL_session_reused(ssl))
		smtpd_client_event(&s->client.ip, s->conf->tls->rate_unit_s, SMTPD_EV_TLS, 1);
	bits = smtpd_tls_bits(s, &alg);
	cert = smtpd_tls_ccert_status(s);
	if (s->conf->tls->loglevel >= 1)
		msg_info("%s TLS connection established from %s: %s with cipher %s (%d/%d bits)",
			 trust[cert], s->client.namaddr, smtpd_tls_protocol(s), smtpd_tls_cipher(s),
			 bits, alg);
	if (s->conf->tls->req_ccert && cert != SMTPD_CCERT_TRUSTED) {
		/* Postfix: a trusted client certificate is required here */
		msg_info("NOQUEUE: abort: TLS from %s: No%s client certificate", s->client.namaddr,
			 cert ? " trusted" : "");
		s->state = SMTPD_ST_CLOSE; /* no command is read */
		smtpd_reply(s, "421 4.7.1 %s Error: %s client certificate", s->conf->myhostname,
			    cert ? "untrusted" : "no");
		smtpd_session_close(s);
		return;
	}
	smtpd_session_tls_ready(s, greet);
}

/* Postfix sends close_notify at the end of a session it ended itself
 * (tls_server_stop): the client can then tell a finished session from a
 * truncated one (RFC 8446 §6.1). One alert record on a non-blocking
 * socket: sent, or dropped when the peer does not read; the client's own
 * close_notify is never waited for. */
void smtpd_tls_close_notify(struct smtpd_session *s)
{
	if (s->tls == NULL || !SSL_is_init_finished(s->tls))
		return;
	(void)SSL_shutdown(s->tls);
	ERR_clear_error();
}

void smtpd_tls_failed(struct smtpd_session *s, short what)
{
	unsigned long e = bufferevent_get_openssl_error(s->bev);
	char text[256] = "lost connection";

	if (what & BEV_EVENT_TIMEOUT)
		snprintf(text, sizeof(text), "timed out");
	else if (e)
		ERR_error_string_n(e, text, sizeof(text));
	msg_info("SSL_accept error from %s: %s", s->client.namaddr, text);
	if (what & BEV_EVENT_TIMEOUT)
		msg_info("timeout after %s from %s", s->last_cmd, s->client.namaddr);
	else
		msg_info("lost connection after %s from %s", s->last_cmd, s->client.namaddr);
	ERR_clear_error();
}

/* ------------------------------------------------------------------ */
/* facts                                                               */

const char *smtpd_tls_protocol(const struct smtpd_session *s)
{
	return s->tls ? SSL_get_version(s->tls) : NULL;
}

const char *smtpd_tls_cipher(const struct smtpd_session *s)
{
	const SSL_CIPHER *c = s->tls ? SSL_get_current_cipher(s->tls) : NULL;

	return c ? SSL_CIPHER_get_name(c) : NULL;
}

int smtpd_tls_bits(const struct smtpd_session *s, int *alg_bits)
{
	const SSL_CIPHER *c = s->tls ? SSL_get_current_cipher(s->tls) : NULL;
	int alg = 0, bits = c ? SSL_CIPHER_get_bits(c, &alg) : 0;

	if (alg_bits)
		*alg_bits = alg;
	return bits;
}

const char *smtpd_tls_sni(const struct smtpd_session *s)
{
	return s->tls ? SSL_get_servername(s->tls, TLSEXT_NAMETYPE_host_name) : NULL;
}

/* Postfix's layout (smtpd_tls_received_header = yes). */
void smtpd_tls_received(const struct smtpd_session *s, struct buf *out)
{
	int alg = 0, bits;

	if (s->tls == NULL || !s->conf->tls->received_header)
		return;
	bits = smtpd_tls_bits(s, &alg);
	buf_printf(out, "\t(using %s with cipher %s (%d/%d bits))\n", smtpd_tls_protocol(s),
		   smtpd_tls_cipher(s), bits, alg);
	if (!s->conf->tls->ask_ccert) {
		buf_puts(out, "\t(No client certificate requested)\n");
	} else if (smtpd_tls_ccert_status(s) == SMTPD_CCERT_NONE) {
		buf_puts(out, "\t(Client did not present a certificate)\n");
	} else {
		struct buf subj = BUF_INIT, iss = BUF_INIT;
		smtpd_tls_ccert_names(s, &subj, &iss);
		buf_printf(out, "\t(Client CN \"%s\", Issuer \"%s\" (%s))\n", buf_str(&subj),
			   buf_str(&iss),
			   smtpd_tls_ccert_status(s) == SMTPD_CCERT_TRUSTED ? "verified OK"
									    : "not verified");
		buf_free(&subj);
		buf_free(&iss);
	}
}

/* ------------------------------------------------------------------ */
/* client certificates                                                 */

int smtpd_tls_ccert_status(const struct smtpd_session *s)
{
	X509 *cert = s->tls ? SSL_get0_peer_certificate(s->tls) : NULL;

	if (cert == NULL)
		return SMTPD_CCERT_NONE;
	return SSL_get_verify_result(s->tls) == X509_V_OK ? SMTPD_CCERT_TRUSTED
							  : SMTPD_CCERT_UNTRUSTED;
}

/* The CN, made printable: it lands in headers and logs. */
static void tls_cn(const X509_NAME *name, struct buf *out)
{
	char cn[256] = "";

	if (name &&
	    X509_NAME_get_text_by_NID((X509_NAME *)name, NID_commonName, cn, sizeof(cn)) > 0) {
		smtpd_printable(cn);
		buf_puts(out, cn);
	}
}

void smtpd_tls_ccert_names(const struct smtpd_session *s, struct buf *subject, struct buf *issuer)
{
	X509 *cert = s->tls ? SSL_get0_peer_certificate(s->tls) : NULL;

	if (cert == NULL)
		return;
	tls_cn(X509_get_subject_name(cert), subject);
	tls_cn(X509_get_issuer_name(cert), issuer);
}

static void tls_hex(const unsigned char *md, unsigned n, struct buf *out)
{
	for (unsigned i = 0; i < n; i++)
		buf_printf(out, "%s%02X", i ? ":" : "", md[i]);
}

/* Postfix's format: the digest as upper-case hex pairs joined by ':'. */
void smtpd_tls_ccert_fingerprints(const struct smtpd_session *s, struct buf *cert_fp,
				  struct buf *pkey_fp)
{
	X509 *cert = s->tls ? SSL_get0_peer_certificate(s->tls) : NULL;
	unsigned char md[EVP_MAX_MD_SIZE], *der = NULL;
	unsigned n = 0;
	int len;

	if (cert == NULL)
		return;
	if (cert_fp && X509_digest(cert, s->conf->tls->digest, md, &n) == 1)
		tls_hex(md, n, cert_fp);
	if (pkey_fp && (len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der)) > 0 &&
	    EVP_Digest(der, (size_t)len, md, &n, s->conf->tls->digest, NULL) == 1)
		tls_hex(md, n, pkey_fp);
	OPENSSL_free(der);
}

int smtpd_tls_ccert_relay(const struct smtpd_session *s, struct buf *err)
{
	const struct smtpd_tls_conf *tc = s->conf->tls;
	struct buf fp = BUF_INIT, pk = BUF_INIT, val = BUF_INIT;
	int rc = 0;

	if (smtpd_tls_ccert_status(s) != SMTPD_CCERT_TRUSTED)
		return 0;
	smtpd_tls_ccert_fingerprints(s, &fp, &pk);
	for (size_t i = 0; i < tc->nrelay_certs && rc == 0; i++) {
		int st = table_lookup(tc->relay_certs[i], buf_str(&fp), &val, err);
		if (st == TABLE_NOTFOUND)
			st = table_lookup(tc->relay_certs[i], buf_str(&pk), &val, err);
		rc = st == TABLE_FOUND ? 1 : st == TABLE_ERROR ? -1 : 0;
	}
	buf_free(&fp);
	buf_free(&pk);
	buf_free(&val);
	return rc;
}
