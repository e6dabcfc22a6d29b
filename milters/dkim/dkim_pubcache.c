/* dkim_pubcache.c - signers' public keys decoded once while they are in
 * use, not once per verified signature.
 *
 * libopendkim 2.11 decodes the p= of a DKIM key record for every
 * signature it checks: d2i_PUBKEY_bio() over a memory BIO holding the
 * base64-decoded DER. With OpenSSL 3 (OSSL_DECODER) that decode costs
 * ~210 µs here, while the RSA-2048 verification that follows costs
 * ~20-35 µs. As for private keys (dkim_keycache.c), this program defines
 * d2i_PUBKEY_bio() itself; the dynamic linker binds libopendkim's call to
 * it, and every call it does not answer goes to libcrypto's function.
 *
 * The cache is keyed by the DER bytes themselves, compared in full: a key
 * record that changes in DNS is different bytes and so a different entry,
 * and nothing needs to expire. Senders choose those bytes, so the cache
 * is bounded: DKIM_PUBCACHE_SLOTS direct-mapped slots (a hash of the
 * bytes picks the slot; a new key replaces the one in its slot), keys of
 * at most DKIM_PUBCACHE_DER_MAX bytes.
 *
 * It answers only for libopendkim's kind of call (a memory BIO, no object
 * to reuse), and caches a key only when libcrypto's decode consumed the
 * whole BIO, so a hit consumes it too, as the decode would. The caller
 * gets its own reference to a shared EVP_PKEY (reference-counted and safe
 * to share between threads; libopendkim only verifies with it).
 */
#define _GNU_SOURCE /* RTLD_NEXT */
#include "dkim_milter.h"
#include "hash.h"

#include <dlfcn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DKIM_PUBCACHE_SLOTS 256
#define DKIM_PUBCACHE_DER_MAX 4096 /* an RSA-16384 key is ~2.1 KB of DER */

typedef EVP_PKEY *dkim_d2i_pubkey_fn(BIO *bp, EVP_PKEY **a);

struct dkim_pubcache_slot {
	unsigned char *der;
	size_t len;
	uint64_t hash;
	EVP_PKEY *pkey;
};

static struct dkim_pubcache_slot dkim_pubcache[DKIM_PUBCACHE_SLOTS];
static pthread_rwlock_t dkim_pubcache_lock = PTHREAD_RWLOCK_INITIALIZER;
static pthread_once_t dkim_pubcache_once = PTHREAD_ONCE_INIT;
static dkim_d2i_pubkey_fn *dkim_pubcache_real; /* libcrypto's function */
static atomic_ulong dkim_pubcache_nhits, dkim_pubcache_nstored;

static void dkim_pubcache_init(void)
{
	dkim_pubcache_real = (dkim_d2i_pubkey_fn *)dlsym(RTLD_NEXT, "d2i_PUBKEY_bio");
}

static EVP_PKEY *dkim_pubcache_find(struct dkim_pubcache_slot *s, uint64_t h,
				    const unsigned char *der, size_t len)
{
	EVP_PKEY *pk = NULL;

	pthread_rwlock_rdlock(&dkim_pubcache_lock);
	if (s->pkey && s->hash == h && s->len == len && memcmp(s->der, der, len) == 0 &&
	    EVP_PKEY_up_ref(s->pkey))
		pk = s->pkey;
	pthread_rwlock_unlock(&dkim_pubcache_lock);
	return pk;
}

/* The slot takes der (malloc'ed) and a reference of its own to pk. */
static void dkim_pubcache_store(struct dkim_pubcache_slot *s, uint64_t h, unsigned char *der,
				size_t len, EVP_PKEY *pk)
{
	unsigned char *old_der;
	EVP_PKEY *old;

	if (!EVP_PKEY_up_ref(pk)) {
		free(der);
		return;
	}
	pthread_rwlock_wrlock(&dkim_pubcache_lock);
	old = s->pkey;
	old_der = s->der;
	s->der = der;
	s->len = len;
	s->hash = h;
	s->pkey = pk;
	pthread_rwlock_unlock(&dkim_pubcache_lock);
	/* Verifiers still using the old key hold their own references. */
	EVP_PKEY_free(old);
	free(old_der);
	atomic_fetch_add(&dkim_pubcache_nstored, 1);
}

EVP_PKEY *d2i_PUBKEY_bio(BIO *bp, EVP_PKEY **a)
{
	struct dkim_pubcache_slot *s;
	unsigned char *data, *copy, drain[1024];
	EVP_PKEY *pk;
	uint64_t h;
	long n;

	pthread_once(&dkim_pubcache_once, dkim_pubcache_init);
	if (dkim_pubcache_real == NULL)
		return NULL;
	if (bp == NULL || a != NULL || BIO_method_type(bp) != BIO_TYPE_MEM ||
	    (n = BIO_get_mem_data(bp, (char **)&data)) <= 0 || n > DKIM_PUBCACHE_DER_MAX)
		return dkim_pubcache_real(bp, a);
	h = hash_fnv1a(data, (size_t)n);
	s = &dkim_pubcache[h % DKIM_PUBCACHE_SLOTS];
	if ((pk = dkim_pubcache_find(s, h, data, (size_t)n)) != NULL) {
		/* The BIO ends read, as after libcrypto's decode. */
		while (BIO_read(bp, drain, sizeof(drain)) > 0)
			;
		atomic_fetch_add(&dkim_pubcache_nhits, 1);
		return pk;
	}
	/* Reading the BIO may move its data: the bytes are kept first. */
	copy = xmalloc((size_t)n);
	memcpy(copy, data, (size_t)n);
	pk = dkim_pubcache_real(bp, NULL);
	if (pk && BIO_ctrl_pending(bp) == 0)
		dkim_pubcache_store(s, h, copy, (size_t)n, pk);
	else
		free(copy);
	return pk;
}

unsigned long dkim_pubcache_hits(void)
{
	return atomic_load(&dkim_pubcache_nhits);
}

unsigned long dkim_pubcache_stored(void)
{
	return atomic_load(&dkim_pubcache_nstored);
}

size_t dkim_pubcache_entries(void)
{
	size_t n = 0;

	pthread_rwlock_rdlock(&dkim_pubcache_lock);
	for (size_t i = 0; i < DKIM_PUBCACHE_SLOTS; i++)
		n += dkim_pubcache[i].pkey != NULL;
	pthread_rwlock_unlock(&dkim_pubcache_lock);
	return n;
}
