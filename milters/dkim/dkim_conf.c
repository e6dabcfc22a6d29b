/* dkim_conf.c - tern-dkim-milter's configuration: the parameters, the
 * libopendkim handle built from them, and which key signs which mail.
 *
 * Keys as OpenDKIM admins know them (milter-policy-ecosystem.md §3.4):
 * either the single-key shorthand (domain, selector, key_file), or
 * key_table (key name -> "domain:selector:/path/to/key", "%" = the From:
 * domain) with signing_table (From: address -> "keyname [signer]"), a Tern
 * table looked up like Postfix's address tables, or "refile:/path" whose
 * lines are "glob keyname [signer]" tried in order (OpenDKIM's refile:).
 * Key files are read when first used and kept until the next reload, so
 * they must be readable by the milter's user (as opendkim's).
 */
#define _GNU_SOURCE /* FNM_CASEFOLD */
#include "dkim_milter.h"

#include "lines.h"
#include "log.h"
#include "table_keys.h"

#include <errno.h>
#include <fnmatch.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define P(n, t, d, h)                                                                              \
	{                                                                                          \
		n, t, d, h, 0, 0, NULL, CFG_P_TERN, NULL                                           \
	}

const struct cfg_param dkim_params[] = {
    P("mode", CFG_STR, "sv", "s: sign, v: verify, sv: both (OpenDKIM Mode)"),
    P("domain", CFG_LIST, "", "single key: sign mail From: these domains (\"*\": any)"),
    P("selector", CFG_STR, "", "single key: its selector"),
    P("key_file", CFG_STR, "", "single key: the private key (PEM, RSA or Ed25519)"),
    P("key_table", CFG_STR, "", "table: key name -> domain:selector:/path/to/key"),
    P("signing_table", CFG_STR, "",
      "table (or refile:/path with globs): From: address -> key name [signer]"),
    P("internal_hosts", CFG_STR, "127.0.0.0/8, [::1]/128",
      "clients whose mail is signed (networks, names, /file, type:table)"),
    P("sign_authenticated", CFG_BOOL, "yes", "sign mail of SMTP-authenticated clients"),
    P("mta_names", CFG_LIST, "", "sign mail received by these {daemon_name}s (OpenDKIM MTA)"),
    P("canonicalization", CFG_STR, "relaxed/simple", "header/body: simple or relaxed"),
    P("sign_headers", CFG_LIST, "", "header fields to sign (empty: libopendkim's list)"),
    P("oversign_headers", CFG_LIST, "From",
      "fields signed once more than present, so none can be added"),
    {"minimum_key_bits", CFG_INT, "1024", "smaller keys verify as dkim=policy", 512, 16384, NULL,
     CFG_P_TERN, NULL},
    P("authserv_id", CFG_STR, "", "Authentication-Results authserv-id (empty: the MTA's $j)"),
    P("always_add_ar", CFG_BOOL, "yes", "add dkim=none when a message has no signature"),
    P("remove_foreign_ar", CFG_BOOL, "yes",
      "delete incoming Authentication-Results fields that claim our authserv-id"),
    P("on_bad_signature", CFG_STR, "accept",
      "no signature passed, one failed: accept, reject, tempfail, discard, quarantine"),
    P("on_dns_error", CFG_STR, "tempfail", "a key lookup failed temporarily (same actions)"),
    P("on_no_key", CFG_STR, "accept", "a signature's key does not exist (same actions)"),
    P("on_internal_error", CFG_STR, "tempfail", "signing failed (same actions)"),
    P("dns_servers", CFG_STR, "", "DNS servers \"addr[@port] ...\" (empty: resolv.conf)"),
    {"dns_timeout", CFG_TIME, "10s", "per key lookup", 1, 0, "s", CFG_P_TERN, NULL},
    P("test_public_keys", CFG_STR, "",
      "TESTS ONLY: read public keys from this file instead of DNS"),
    {NULL, 0, NULL, NULL, 0, 0, NULL, 0, NULL},
};

static const char *const dkim_action_names[] = {"accept", "reject", "tempfail", "discard",
						"quarantine"};

static int dkim_conf_action(const struct cfg *cfg, const char *param, enum dkim_action *out,
			    struct buf *err)
{
	struct buf v = BUF_INIT;
	int rc = -1;

	buf_init(&v);
	if (cfg_get_str(cfg, NULL, param, &v, err) == 0) {
		for (int i = 0; i <= DKIM_ACT_QUARANTINE; i++)
			if (strcasecmp(buf_str(&v), dkim_action_names[i]) == 0) {
				*out = (enum dkim_action)i;
				rc = 0;
			}
		if (rc < 0)
			buf_printf(err, "%s: unknown action \"%s\"", param, buf_str(&v));
	}
	buf_free(&v);
	return rc;
}

static int dkim_canon_parse(const char *s, size_t n)
{
	if (n == 6 && strncasecmp(s, "simple", 6) == 0)
		return DKIM_CANON_SIMPLE;
	if (n == 7 && strncasecmp(s, "relaxed", 7) == 0)
		return DKIM_CANON_RELAXED;
	return -1;
}

/* "relaxed/simple", "relaxed" (= relaxed/simple, as RFC 6376 §3.5 c=). */
static int dkim_conf_canon(struct dkim_conf *dc, const char *v, struct buf *err)
{
	const char *slash = strchr(v, '/');

	dc->hdr_canon = dkim_canon_parse(v, slash ? (size_t)(slash - v) : strlen(v));
	dc->body_canon = slash ? dkim_canon_parse(slash + 1, strlen(slash + 1)) : DKIM_CANON_SIMPLE;
	if (dc->hdr_canon < 0 || dc->body_canon < 0) {
		buf_printf(err,
			   "canonicalization: bad value \"%s\" (simple or relaxed, "
			   "header/body)",
			   v);
		return -1;
	}
	return 0;
}

/* ---- keys ---- */

static void dkim_key_free(struct dkim_key *k)
{
	if (k == NULL)
		return;
	dkim_keycache_remove(k->cached);
	free(k->name);
	free(k->domain);
	free(k->selector);
	free(k->path);
	free(k->pem);
	free(k);
}

/* Read a PEM private key, decode it once (dkim_keycache.c) and tell RSA
 * from Ed25519. */
static struct dkim_key *dkim_key_read(const char *name, const char *domain, const char *selector,
				      const char *path, struct buf *err)
{
	struct dkim_key *k = NULL;
	FILE *fp = fopen(path, "r");
	struct buf e = BUF_INIT;
	long size;

	buf_init(&e);
	if (fp == NULL) {
		buf_printf(err, "key %s: open %s: %s", name, path, strerror(errno));
		goto fail;
	}
	if (fseek(fp, 0, SEEK_END) < 0 || (size = ftell(fp)) < 0 || size > 65536 ||
	    fseek(fp, 0, SEEK_SET) < 0) {
		buf_printf(err, "key %s: cannot read %s", name, path);
		goto fail;
	}
	k = xcalloc(1, sizeof(*k));
	k->pem = xcalloc(1, (size_t)size + 1);
	if (fread(k->pem, 1, (size_t)size, fp) != (size_t)size) {
		buf_printf(err, "key %s: short read on %s", name, path);
		goto fail;
	}
	/* dkim_sign() takes the text up to its first NUL. */
	if ((k->cached = dkim_keycache_add(k->pem, strlen(k->pem), &e)) == NULL) {
		buf_printf(err, "key %s: %s: %s", name, path, buf_str(&e));
		goto fail;
	}
	if (dkim_keycache_type(k->cached) == EVP_PKEY_ED25519)
		k->alg = DKIM_SIGN_ED25519SHA256;
	else if (dkim_keycache_type(k->cached) == EVP_PKEY_RSA)
		k->alg = DKIM_SIGN_RSASHA256;
	else {
		buf_printf(err, "key %s: %s is neither RSA nor Ed25519", name, path);
		goto fail;
	}
	fclose(fp);
	buf_free(&e);
	k->name = xstrdup(name);
	k->domain = xstrdup(domain);
	k->selector = xstrdup(selector);
	k->path = xstrdup(path);
	return k;
fail:
	if (fp)
		fclose(fp);
	buf_free(&e);
	dkim_key_free(k);
	return NULL;
}

/* key_table entry "domain:selector:/path" (the path may contain ':'). */
static struct dkim_key *dkim_key_from_table(struct dkim_conf *dc, const char *name, struct buf *err)
{
	struct buf v = BUF_INIT;
	struct dkim_key *k = NULL;
	char *c1, *c2;
	int rc;

	pthread_mutex_lock(&dc->keys_lock);
	for (size_t i = 0; i < dc->nkeys; i++)
		if (strcmp(dc->keys[i]->name, name) == 0) {
			k = dc->keys[i];
			goto done;
		}
	buf_init(&v);
	if ((rc = table_lookup(dc->key_table, name, &v, err)) != TABLE_FOUND) {
		if (rc == TABLE_NOTFOUND)
			buf_printf(err, "key name \"%s\" is not in key_table %s", name,
				   dc->key_table->spec);
		goto done;
	}
	if ((c1 = strchr(v.data, ':')) == NULL || (c2 = strchr(c1 + 1, ':')) == NULL) {
		buf_printf(err, "key_table %s: \"%s\" is not domain:selector:keyfile",
			   dc->key_table->spec, buf_str(&v));
		goto done;
	}
	*c1 = *c2 = 0;
	if ((k = dkim_key_read(name, v.data, c1 + 1, c2 + 1, err)) != NULL) {
		dc->keys = xrealloc(dc->keys, (dc->nkeys + 1) * sizeof(*dc->keys));
		dc->keys[dc->nkeys++] = k;
	}
done:
	pthread_mutex_unlock(&dc->keys_lock);
	buf_free(&v);
	return k;
}

/* refile: lines "glob keyname [signer]", first match wins. */
static int dkim_pats_load(struct dkim_conf *dc, const char *path, struct buf *err)
{
	struct lines lr;
	struct buf line = BUF_INIT;
	int rc;

	if (lines_open(&lr, path, err) < 0)
		return -1;
	buf_init(&line);
	while ((rc = lines_next(&lr, &line, err)) > 0) {
		char *w[3] = {NULL, NULL, NULL}, *save = NULL, *copy = xstrdup(buf_str(&line));
		int n = 0;

		for (char *t = strtok_r(copy, " \t", &save); t && n < 3;
		     t = strtok_r(NULL, " \t", &save))
			w[n++] = t;
		if (n < 2) {
			buf_printf(err, "%s, line %d: expected \"pattern keyname [signer]\"", path,
				   lr.lineno);
			free(copy);
			rc = -1;
			break;
		}
		dc->pats = xrealloc(dc->pats, (dc->npats + 1) * sizeof(*dc->pats));
		dc->pats[dc->npats].pattern = xstrdup(w[0]);
		dc->pats[dc->npats].keyname = xstrdup(w[1]);
		dc->pats[dc->npats].signer = w[2] ? xstrdup(w[2]) : NULL;
		dc->npats++;
		free(copy);
	}
	lines_close(&lr);
	buf_free(&line);
	return rc < 0 ? -1 : 0;
}

/* "keyname [signer]" from the signing table for from: 1, 0, -1. */
static int dkim_signing_lookup(struct dkim_conf *dc, const char *from, struct buf *keyname,
			       struct buf *signer, struct buf *err)
{
	struct table_keys k = TABLE_KEYS_INIT;
	struct buf v = BUF_INIT;
	int rc;

	for (size_t i = 0; i < dc->npats; i++)
		if (fnmatch(dc->pats[i].pattern, from, FNM_CASEFOLD) == 0) {
			buf_set(keyname, dc->pats[i].keyname);
			buf_set(signer, dc->pats[i].signer ? dc->pats[i].signer : "");
			return 1;
		}
	if (dc->signing_table == NULL)
		return 0;
	buf_init(&v);
	table_keys_init(&k);
	table_keys_address(&k, from, "", 0);
	rc = table_lookup_keys(dc->signing_table, &k, &v, NULL, err);
	table_keys_free(&k);
	if (rc == TABLE_FOUND) {
		char *sp = strpbrk(v.data, " \t");

		buf_set(signer, "");
		if (sp) {
			*sp++ = 0;
			sp += strspn(sp, " \t");
			buf_set(signer, sp);
		}
		buf_set(keyname, v.data);
	}
	buf_free(&v);
	return rc == TABLE_ERROR ? -1 : rc == TABLE_FOUND;
}

int dkim_conf_key_for(struct dkim_conf *dc, const char *from, struct dkim_signing *out,
		      struct buf *err)
{
	const char *at = strrchr(from, '@');
	const char *dom = at ? at + 1 : "";
	struct buf keyname = BUF_INIT, signer = BUF_INIT;
	const struct dkim_key *k = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	buf_init(&keyname);
	buf_init(&signer);
	if ((rc = dkim_signing_lookup(dc, from, &keyname, &signer, err)) == 1) {
		if (dc->key_table == NULL && dc->single &&
		    strcmp(buf_str(&keyname), "default") == 0)
			k = dc->single;
		else if (dc->key_table == NULL) {
			buf_printf(err, "signing_table names key \"%s\" but key_table is not set",
				   buf_str(&keyname));
			rc = -1;
		} else if ((k = dkim_key_from_table(dc, buf_str(&keyname), err)) == NULL)
			rc = -1;
	} else if (rc == 0 && dc->single && *dom) {
		for (size_t i = 0; i < dc->ndomains && k == NULL; i++)
			if (strcmp(dc->domains[i], "*") == 0 ||
			    strcasecmp(dc->domains[i], dom) == 0)
				k = dc->single;
		rc = k != NULL;
	}
	if (rc == 1) {
		out->key = k;
		out->domain = xstrdup(strcmp(k->domain, "%") == 0 ? dom : k->domain);
		out->signer = signer.len ? xstrdup(buf_str(&signer)) : NULL;
		if (*out->domain == 0) {
			buf_puts(err, "no From: domain to sign for");
			dkim_signing_free(out);
			rc = -1;
		}
	}
	buf_free(&keyname);
	buf_free(&signer);
	return rc;
}

void dkim_signing_free(struct dkim_signing *s)
{
	free(s->domain);
	free(s->signer);
	s->domain = s->signer = NULL;
	s->key = NULL;
}

/* ---- the library handle ---- */

/* A NULL-terminated array of header names for DKIM_OPTS_*HDRS. */
static int dkim_lib_hdrlist(struct dkim_conf *dc, const struct cfg *cfg, const char *param, int opt,
			    struct buf *err)
{
	struct cfg_list l = {NULL, 0};
	const char **v;
	int rc = 0;

	if (cfg_get_list(cfg, NULL, param, &l, err) < 0)
		return -1;
	if (l.count) {
		v = xcalloc(l.count + 1, sizeof(*v));
		for (size_t i = 0; i < l.count; i++)
			v[i] = l.items[i];
		/* libopendkim copies the list (dkim_options -> lib's own array) */
		if (dkim_options(dc->lib, DKIM_OP_SETOPT, opt, v, sizeof(v)) != DKIM_STAT_OK) {
			buf_printf(err, "%s: libopendkim refused the list", param);
			rc = -1;
		}
		free(v);
	}
	cfg_list_free(&l);
	return rc;
}

static int dkim_lib_setup(struct dkim_conf *dc, const struct cfg *cfg, struct buf *err)
{
	/* No DKIM_LIBFLAGS_FIXCRLF: main.c hands libopendkim header fields
	 * and body with CRLF line ends already (dkim_hdr_add, dkim_body_feed);
	 * the flag would copy every body chunk byte by byte once more. */
	unsigned int flags = DKIM_LIBFLAGS_BADSIGHANDLES;
	long long bits = 1024;
	unsigned int ubits;
	int method;

	if ((dc->lib = dkim_init(NULL, NULL)) == NULL) {
		buf_puts(err, "dkim_init failed");
		return -1;
	}
	if (cfg_get_int(cfg, NULL, "minimum_key_bits", &bits, err) < 0)
		return -1;
	ubits = (unsigned int)bits;
	(void)dkim_options(dc->lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof(flags));
	(void)dkim_options(dc->lib, DKIM_OP_SETOPT, DKIM_OPTS_MINKEYBITS, &ubits, sizeof(ubits));
	if (dc->test_keys) {
		method = DKIM_QUERY_FILE;
		(void)dkim_options(dc->lib, DKIM_OP_SETOPT, DKIM_OPTS_QUERYMETHOD, &method,
				   sizeof(method));
		(void)dkim_options(dc->lib, DKIM_OP_SETOPT, DKIM_OPTS_QUERYINFO, dc->test_keys,
				   strlen(dc->test_keys));
	} else
		(void)dkim_set_key_lookup(dc->lib, dkim_dns_key_lookup);
	return dkim_lib_hdrlist(dc, cfg, "sign_headers", DKIM_OPTS_SIGNHDRS, err) < 0 ||
		       dkim_lib_hdrlist(dc, cfg, "oversign_headers", DKIM_OPTS_OVERSIGNHDRS, err) <
			   0
		   ? -1
		   : 0;
}

/* ---- load ---- */

static int dkim_conf_list(const struct cfg *cfg, const char *param, char ***out, size_t *n,
			  struct buf *err)
{
	struct cfg_list l = {NULL, 0};

	if (cfg_get_list(cfg, NULL, param, &l, err) < 0)
		return -1;
	*out = l.items;
	*n = l.count;
	return 0;
}

static int dkim_conf_single(struct dkim_conf *dc, const struct cfg *cfg, struct buf *err)
{
	struct buf sel = BUF_INIT, path = BUF_INIT;
	int rc = -1;

	buf_init(&sel);
	buf_init(&path);
	if (dkim_conf_list(cfg, "domain", &dc->domains, &dc->ndomains, err) < 0 ||
	    cfg_get_str(cfg, NULL, "selector", &sel, err) < 0 ||
	    cfg_get_path(cfg, NULL, "key_file", &path, err) < 0)
		goto done;
	rc = 0;
	if (dc->ndomains == 0 && sel.len == 0 && path.len == 0)
		goto done;
	if (sel.len == 0 || path.len == 0) {
		buf_puts(err, "the single-key settings need selector and key_file");
		rc = -1;
	} else if ((dc->single =
			dkim_key_read("default", "%", buf_str(&sel), buf_str(&path), err)) == NULL)
		rc = -1;
done:
	buf_free(&sel);
	buf_free(&path);
	return rc;
}

static int dkim_conf_tables(struct dkim_conf *dc, const struct cfg *cfg, struct buf *err)
{
	struct buf v = BUF_INIT;
	int rc = -1;

	buf_init(&v);
	if (cfg_get_str(cfg, NULL, "key_table", &v, err) < 0)
		goto done;
	if (v.len && (dc->key_table = table_open(buf_str(&v), err)) == NULL)
		goto done;
	if (cfg_get_str(cfg, NULL, "signing_table", &v, err) < 0)
		goto done;
	if (strncmp(buf_str(&v), "refile:", 7) == 0) {
		if (dkim_pats_load(dc, buf_str(&v) + 7, err) < 0)
			goto done;
	} else if (v.len && (dc->signing_table = table_open(buf_str(&v), err)) == NULL)
		goto done;
	if ((dc->signing_table || dc->npats) && dc->key_table == NULL && dc->single == NULL) {
		buf_puts(err, "signing_table needs key_table");
		goto done;
	}
	rc = 0;
done:
	buf_free(&v);
	return rc;
}

void *dkim_conf_load(const struct cfg *cfg, struct buf *err)
{
	struct dkim_conf *dc = xcalloc(1, sizeof(*dc));
	struct buf v = BUF_INIT;
	long long tmo = 10;

	buf_init(&v);
	pthread_mutex_init(&dc->keys_lock, NULL);
	if (cfg_get_str(cfg, NULL, "mode", &v, err) < 0)
		goto fail;
	dc->sign = strchr(buf_str(&v), 's') != NULL;
	dc->verify = strchr(buf_str(&v), 'v') != NULL;
	if (v.len == 0 || strspn(buf_str(&v), "sv") != v.len) {
		buf_printf(err, "mode: bad value \"%s\" (s, v or sv)", buf_str(&v));
		goto fail;
	}
	if (cfg_get_path(cfg, NULL, "test_public_keys", &v, err) < 0)
		goto fail;
	if (v.len)
		dc->test_keys = xstrdup(buf_str(&v));
	if (dkim_conf_single(dc, cfg, err) < 0 || dkim_conf_tables(dc, cfg, err) < 0 ||
	    dkim_lib_setup(dc, cfg, err) < 0)
		goto fail;
	if ((dc->internal_hosts =
		 matchlist_from_cfg(cfg, NULL, "internal_hosts", MATCHLIST_ADDR, err)) == NULL ||
	    cfg_get_bool(cfg, NULL, "sign_authenticated", &dc->sign_authenticated, err) < 0 ||
	    dkim_conf_list(cfg, "mta_names", &dc->mta_names, &dc->nmta_names, err) < 0 ||
	    cfg_get_str(cfg, NULL, "canonicalization", &v, err) < 0 ||
	    dkim_conf_canon(dc, buf_str(&v), err) < 0 ||
	    cfg_get_str(cfg, NULL, "authserv_id", &v, err) < 0)
		goto fail;
	dc->authserv_id = xstrdup(buf_str(&v));
	if (cfg_get_bool(cfg, NULL, "always_add_ar", &dc->always_ar, err) < 0 ||
	    cfg_get_bool(cfg, NULL, "remove_foreign_ar", &dc->remove_foreign_ar, err) < 0 ||
	    dkim_conf_action(cfg, "on_bad_signature", &dc->on_bad_signature, err) < 0 ||
	    dkim_conf_action(cfg, "on_dns_error", &dc->on_dns_error, err) < 0 ||
	    dkim_conf_action(cfg, "on_no_key", &dc->on_no_key, err) < 0 ||
	    dkim_conf_action(cfg, "on_internal_error", &dc->on_internal_error, err) < 0 ||
	    cfg_get_str(cfg, NULL, "dns_servers", &v, err) < 0 ||
	    cfg_get_time(cfg, NULL, "dns_timeout", &tmo, err) < 0)
		goto fail;
	if (dc->test_keys == NULL && (dc->dns = dkim_dns_new(buf_str(&v), (int)tmo, err)) == NULL)
		goto fail;
	if (dc->sign && dc->single)
		dkim_keycache_check(dc->lib, dc->single);
	if (dc->sign && dc->single == NULL && dc->key_table == NULL)
		msg_warn("mode includes s, but no key is configured: nothing will be signed");
	buf_free(&v);
	return dc;
fail:
	buf_free(&v);
	dkim_conf_free(dc);
	return NULL;
}

void dkim_conf_free(void *p)
{
	struct dkim_conf *dc = p;

	if (dc == NULL)
		return;
	if (dc->lib)
		dkim_close(dc->lib);
	for (size_t i = 0; i < dc->ndomains; i++)
		free(dc->domains[i]);
	free(dc->domains);
	for (size_t i = 0; i < dc->nmta_names; i++)
		free(dc->mta_names[i]);
	free(dc->mta_names);
	dkim_key_free(dc->single);
	for (size_t i = 0; i < dc->nkeys; i++)
		dkim_key_free(dc->keys[i]);
	free(dc->keys);
	for (size_t i = 0; i < dc->npats; i++) {
		free(dc->pats[i].pattern);
		free(dc->pats[i].keyname);
		free(dc->pats[i].signer);
	}
	free(dc->pats);
	if (dc->key_table)
		table_close(dc->key_table);
	if (dc->signing_table)
		table_close(dc->signing_table);
	matchlist_free(dc->internal_hosts);
	free(dc->authserv_id);
	free(dc->test_keys);
	dkim_dns_free(dc->dns);
	pthread_mutex_destroy(&dc->keys_lock);
	free(dc);
}
