/* dkim_milter.h - the parts of tern-dkim-milter and how they meet.
 *
 *   main.c      libmilter callbacks: sign-or-verify decision, feeding
 *               libopendkim, inserting DKIM-Signature / A-R, actions
 *   dkim_conf.c configuration: keys (single key, key_table,
 *               signing_table), networks, canonicalization, actions
 *   dkim_dns.c  public keys through libtern's resolver (a small pool of
 *               resolvers, one per concurrent lookup), or a key file in
 *               test mode
 *   dkim_ar.c   Authentication-Results (RFC 8601) text and the
 *               authserv-id check of existing A-R fields
 *   dkim_keycache.c  private keys decoded once, handed to libopendkim
 *               through an interposed PEM_read_bio_PrivateKey()
 *   dkim_pubcache.c  signers' public keys decoded once while in use,
 *               through an interposed d2i_PUBKEY_bio()
 *   genkey.c    "tern-dkim-milter genkey": key file and DNS TXT record
 */
#ifndef TERN_DKIM_MILTER_H
#define TERN_DKIM_MILTER_H

#include "buf.h"
#include "cfg.h"
#include "matchlist.h"
#include "table.h"

#include <opendkim/dkim.h>
#include <pthread.h>

/* What to do with a message whose signatures did not verify. */
enum dkim_action {
	DKIM_ACT_ACCEPT,
	DKIM_ACT_REJECT,
	DKIM_ACT_TEMPFAIL,
	DKIM_ACT_DISCARD,
	DKIM_ACT_QUARANTINE,
};

/* A private key ready for dkim_sign(). */
struct dkim_key {
	char *name;   /* key_table key, or "default" */
	char *domain; /* "%" = the From: domain */
	char *selector;
	char *path;
	char *pem; /* file contents */
	int alg;   /* DKIM_SIGN_RSASHA256 or DKIM_SIGN_ED25519SHA256 */
	/* pem, decoded once (dkim_keycache.c) */
	struct dkim_keycache_entry *cached;
};

/* One "pattern key-name [signer]" line of a refile: signing table. */
struct dkim_sigpat {
	char *pattern; /* fnmatch() glob on the From: address, case-insensitive */
	char *keyname;
	char *signer; /* i= value or NULL */
};

struct dkim_resolvers; /* dkim_dns.c */

struct dkim_conf {
	DKIM_LIB *lib;
	int sign, verify; /* mode */
	/* single-key shorthand: domain list + key */
	char **domains;
	size_t ndomains;
	struct dkim_key *single; /* the single key, or NULL */
	struct table *key_table;
	/* keys read from key_table's files so far (never freed before the
	 * config: sessions hold pointers into it) */
	pthread_mutex_t keys_lock;
	struct dkim_key **keys;
	size_t nkeys;
	struct table *signing_table; /* Tern table, or NULL */
	struct dkim_sigpat *pats;    /* refile: signing table, or NULL */
	size_t npats;
	struct matchlist *internal_hosts;
	int sign_authenticated;
	char **mta_names; /* {daemon_name} values that mean "sign" */
	size_t nmta_names;
	int hdr_canon, body_canon;
	char *authserv_id; /* empty: the MTA's j macro */
	int always_ar;
	int remove_foreign_ar;
	enum dkim_action on_bad_signature, on_dns_error, on_no_key, on_internal_error;
	struct dkim_resolvers *dns;
	char *test_keys; /* test_public_keys file, NULL in normal use */
};

void *dkim_conf_load(const struct cfg *cfg, struct buf *err);
void dkim_conf_free(void *conf);
extern const struct cfg_param dkim_params[];

/* How to sign one message: the key (owned by the config), d= with "%"
 * replaced, and the i= signer or NULL. */
struct dkim_signing {
	const struct dkim_key *key;
	char *domain;
	char *signer;
};

/* The key for mail from `from` (the From: address): 1 found (out set,
 * dkim_signing_free() it), 0 none, -1 a table or key file failed. */
int dkim_conf_key_for(struct dkim_conf *dc, const char *from, struct dkim_signing *out,
		      struct buf *err);
void dkim_signing_free(struct dkim_signing *s);

/* dkim_dns.c */
struct dkim_resolvers *dkim_dns_new(const char *servers, int timeout, struct buf *err);
void dkim_dns_free(struct dkim_resolvers *r);
/* libopendkim key-lookup callback; dkim_set_user_context() must hold a
 * struct dkim_lookup_ctx. */
DKIM_CBSTAT dkim_dns_key_lookup(DKIM *dkim, DKIM_SIGINFO *sig, u_char *buf, size_t buflen);

/* Per-message notes the key-lookup callback leaves for the A-R: which
 * signatures hit a DNS temporary failure. */
#define DKIM_LOOKUP_MAX 16
struct dkim_lookup_ctx {
	struct dkim_resolvers *dns;
	int ntempfail;
	char tempfail[DKIM_LOOKUP_MAX][300]; /* "selector._domainkey.domain" */
};

/* dkim_ar.c */
/* The result keyword for one verified signature (RFC 8601 §2.7.1). */
const char *dkim_ar_result(DKIM *dkim, DKIM_SIGINFO *sig, const struct dkim_lookup_ctx *lc);
/* Append "dkim=RESULT (...) header.d=... ..." for sig to out. */
void dkim_ar_sig(DKIM *dkim, DKIM_SIGINFO *sig, const struct dkim_lookup_ctx *lc, struct buf *out);
/* The A-R field value: " id;\n\tmethod-result;\n\tmethod-result". */
void dkim_ar_compose(const char *authserv_id, char **results, size_t n, struct buf *out);

/* dkim_keycache.c */
struct dkim_keycache_entry;
/* Decode pem (len bytes, exactly as dkim_sign() will get them) once and
 * serve libopendkim's decodes of the same bytes from it; NULL (err set)
 * if it is not a private key. */
struct dkim_keycache_entry *dkim_keycache_add(const char *pem, size_t len, struct buf *err);
int dkim_keycache_type(const struct dkim_keycache_entry *e); /* EVP_PKEY_RSA, ... */
void dkim_keycache_remove(struct dkim_keycache_entry *e);
/* Decodes answered from the cache so far (the self-check's evidence). */
unsigned long dkim_keycache_hits(void);
/* Warn if libopendkim's decode of k does not come from the cache. */
void dkim_keycache_check(DKIM_LIB *lib, const struct dkim_key *k);

/* dkim_pubcache.c: public key decodes answered from the cache, and keys
 * stored in it, so far. */
unsigned long dkim_pubcache_hits(void);
unsigned long dkim_pubcache_stored(void);
size_t dkim_pubcache_entries(void); /* keys held now */

/* genkey.c */
int dkim_genkey_main(int argc, char **argv);

#endif
