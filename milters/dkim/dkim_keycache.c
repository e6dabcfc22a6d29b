/* dkim_keycache.c - private keys decoded once per configuration, not once
 * per signed message.
 *
 * libopendkim 2.11 has no API that takes a parsed key: dkim_sign() copies
 * the PEM text and, at end of message, decodes it with
 * PEM_read_bio_PrivateKey() over a memory BIO. With OpenSSL 3 that decode
 * (OSSL_DECODER) costs about as much as the RSA-2048 signature itself, and
 * the fresh key object redoes its Montgomery and blinding set-up. So this
 * program defines PEM_read_bio_PrivateKey() itself. The dynamic linker
 * binds libopendkim's call to the executable's definition (ordinary ELF
 * interposition, as with malloc); this one answers from the keys the
 * configuration registered, and hands every other call to libcrypto's.
 *
 * It answers from the cache only when the result is certain to be what
 * libcrypto would return: a memory BIO whose unread bytes are exactly the
 * bytes of a registered key, no passphrase callback or argument, no
 * object to reuse. The cached EVP_PKEY was made by libcrypto's function
 * from those same bytes; the caller gets its own reference (EVP_PKEY is
 * reference-counted and safe to share between threads; OpenSSL keeps the
 * RSA form libopendkim asks for with the key, under the key's lock).
 */
#define _GNU_SOURCE /* RTLD_NEXT */
#include "dkim_milter.h"

#include "log.h"

#include <dlfcn.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef EVP_PKEY *dkim_pem_read_fn(BIO *bp, EVP_PKEY **x, pem_password_cb *cb, void *u);

struct dkim_keycache_entry {
	char *pem; /* the exact bytes libopendkim will be given */
	size_t len;
	EVP_PKEY *pkey;
	struct dkim_keycache_entry *prev, *next;
};

static pthread_rwlock_t dkim_keycache_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct dkim_keycache_entry *dkim_keycache_head;
static pthread_once_t dkim_keycache_once = PTHREAD_ONCE_INIT;
static dkim_pem_read_fn *dkim_keycache_real; /* libcrypto's function */
static atomic_ulong dkim_keycache_nhits;

static void dkim_keycache_init(void)
{
	dkim_keycache_real = (dkim_pem_read_fn *)dlsym(RTLD_NEXT, "PEM_read_bio_PrivateKey");
}

/* A registered key whose bytes are exactly the unread part of bp, with a
 * reference of its own, or NULL. */
static EVP_PKEY *dkim_keycache_find(BIO *bp)
{
	struct dkim_keycache_entry *e;
	EVP_PKEY *pk = NULL;
	char *data, drain[1024];
	long n = BIO_get_mem_data(bp, &data);

	if (n <= 0)
		return NULL;
	pthread_rwlock_rdlock(&dkim_keycache_lock);
	for (e = dkim_keycache_head; e; e = e->next)
		if (e->len == (size_t)n && memcmp(e->pem, data, e->len) == 0 &&
		    EVP_PKEY_up_ref(e->pkey)) {
			pk = e->pkey;
			break;
		}
	pthread_rwlock_unlock(&dkim_keycache_lock);
	if (pk == NULL)
		return NULL;
	/* The BIO ends read, as after libcrypto read the key from it. */
	while (BIO_read(bp, drain, sizeof(drain)) > 0)
		;
	atomic_fetch_add(&dkim_keycache_nhits, 1);
	return pk;
}

EVP_PKEY *PEM_read_bio_PrivateKey(BIO *bp, EVP_PKEY **x, pem_password_cb *cb, void *u)
{
	EVP_PKEY *pk;

	pthread_once(&dkim_keycache_once, dkim_keycache_init);
	if (bp && x == NULL && cb == NULL && u == NULL && BIO_method_type(bp) == BIO_TYPE_MEM &&
	    (pk = dkim_keycache_find(bp)) != NULL)
		return pk;
	return dkim_keycache_real ? dkim_keycache_real(bp, x, cb, u) : NULL;
}

struct dkim_keycache_entry *dkim_keycache_add(const char *pem, size_t len, struct buf *err)
{
	struct dkim_keycache_entry *e;
	EVP_PKEY *pk;
	BIO *bio;

	pthread_once(&dkim_keycache_once, dkim_keycache_init);
	if (dkim_keycache_real == NULL) {
		buf_puts(err, "libcrypto's PEM_read_bio_PrivateKey not found (static build?)");
		return NULL;
	}
	if (len > INT_MAX || (bio = BIO_new_mem_buf(pem, (int)len)) == NULL) {
		buf_puts(err, "cannot make a memory BIO");
		return NULL;
	}
	pk = dkim_keycache_real(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (pk == NULL) {
		buf_puts(err, "not a PEM private key");
		return NULL;
	}
	e = xcalloc(1, sizeof(*e));
	e->pem = xmalloc(len);
	memcpy(e->pem, pem, len);
	e->len = len;
	e->pkey = pk;
	pthread_rwlock_wrlock(&dkim_keycache_lock);
	e->next = dkim_keycache_head;
	if (e->next)
		e->next->prev = e;
	dkim_keycache_head = e;
	pthread_rwlock_unlock(&dkim_keycache_lock);
	return e;
}

int dkim_keycache_type(const struct dkim_keycache_entry *e)
{
	return EVP_PKEY_get_base_id(e->pkey);
}

void dkim_keycache_remove(struct dkim_keycache_entry *e)
{
	if (e == NULL)
		return;
	pthread_rwlock_wrlock(&dkim_keycache_lock);
	if (e->prev)
		e->prev->next = e->next;
	else
		dkim_keycache_head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	pthread_rwlock_unlock(&dkim_keycache_lock);
	/* Handles still signing hold their own references. */
	EVP_PKEY_free(e->pkey);
	free(e->pem);
	free(e);
}

unsigned long dkim_keycache_hits(void)
{
	return atomic_load(&dkim_keycache_nhits);
}

/* Whether libopendkim's decode of k really comes from the cache (it will
 * not if the program was linked so that the executable's definition is
 * not exported): signing still works then, only slower, so a warning. */
void dkim_keycache_check(DKIM_LIB *lib, const struct dkim_key *k)
{
	static atomic_int warned;
	unsigned long before = dkim_keycache_hits();
	DKIM_STAT st;
	DKIM *d;

	d = dkim_sign(lib, (const u_char *)"keycheck", NULL, (dkim_sigkey_t)k->pem,
		      (const u_char *)k->selector, (const u_char *)"check.invalid",
		      DKIM_CANON_RELAXED, DKIM_CANON_SIMPLE, k->alg, -1, &st);
	if (d == NULL) {
		msg_warn("key %s: dkim_sign: %s", k->name, dkim_getresultstr(st));
		return;
	}
	if ((st = dkim_privkey_load(d)) != DKIM_STAT_OK)
		msg_warn("key %s: libopendkim cannot load %s: %s", k->name, k->path,
			 dkim_getresultstr(st));
	else if (dkim_keycache_hits() == before && atomic_exchange(&warned, 1) == 0)
		msg_warn("the private key cache is not in use: libopendkim decodes the key "
			 "for every message (slower signing)");
	else if (msg_verbose)
		msg_debug("key %s: libopendkim's decode answered from the key cache", k->name);
	dkim_free(d);
}
