/* test_dkim_keycache.c - unit tests for tern-dkim-milter's key caches.
 * The private key cache (milters/dkim/dkim_keycache.c): libopendkim's key
 * decode is answered from it only for the exact registered bytes, the
 * signatures it makes verify (libopendkim's own verifier, key from a key
 * file), other keys and near-misses go to libcrypto, and threads can
 * share it. The public key cache (dkim_pubcache.c): the same DER gives
 * the same shared key, other calls and near-misses are decoded by
 * libcrypto, libopendkim's verifier uses it, and it stays bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dkim_milter.h"

static char *test_pem_a, *test_pem_b; /* two RSA-1024 keys, PEM */
static char test_keyfile[] = "/tmp/test_dkim_keycache.XXXXXX";
static DKIM_LIB *test_lib;

static const char *test_hdrs[] = {"From: alice@example.com", "To: bob@example.org",
				  "Subject: cache"};
static const char test_body[] = "one line\r\nanother line\r\n";

/* A fresh key as PEM text; its public half as a key file line for
 * selector sel. */
static char *test_key(const char *sel, FILE *keys)
{
	EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	BIO *b = BIO_new(BIO_s_mem());
	unsigned char *der = NULL, *b64;
	char *data, *pem;
	int dlen;
	long n;

	assert_non_null(pk);
	assert_int_equal(PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL), 1);
	n = BIO_get_mem_data(b, &data);
	pem = xstrndup(data, (size_t)n);
	dlen = i2d_PUBKEY(pk, &der);
	b64 = xmalloc((size_t)dlen * 2 + 4);
	EVP_EncodeBlock(b64, der, dlen);
	fprintf(keys, "%s._domainkey.example.com v=DKIM1; k=rsa; p=%s\n", sel, b64);
	free(b64);
	OPENSSL_free(der);
	BIO_free(b);
	EVP_PKEY_free(pk);
	return pem;
}

static int test_setup(void **state)
{
	int fd = mkstemp(test_keyfile);
	FILE *keys = fdopen(fd, "w");
	int method = DKIM_QUERY_FILE;

	test_pem_a = test_key("a", keys);
	test_pem_b = test_key("b", keys);
	fclose(keys);
	test_lib = dkim_init(NULL, NULL);
	(void)dkim_options(test_lib, DKIM_OP_SETOPT, DKIM_OPTS_QUERYMETHOD, &method,
			   sizeof(method));
	(void)dkim_options(test_lib, DKIM_OP_SETOPT, DKIM_OPTS_QUERYINFO, test_keyfile,
			   strlen(test_keyfile));
	return 0;
}

static int test_teardown(void **state)
{
	dkim_close(test_lib);
	unlink(test_keyfile);
	free(test_pem_a);
	free(test_pem_b);
	return 0;
}

/* Sign the test message with key (PEM text) as s=sel, then verify it:
 * 1 if the signature passes. */
static int test_sign_verify(const char *key, const char *sel)
{
	DKIM_STAT st;
	DKIM *d = dkim_sign(test_lib, (const u_char *)"T", NULL, (dkim_sigkey_t)key,
			    (const u_char *)sel, (const u_char *)"example.com", DKIM_CANON_RELAXED,
			    DKIM_CANON_SIMPLE, DKIM_SIGN_RSASHA256, -1, &st);
	struct buf sig = BUF_INIT;
	DKIM_SIGINFO *si;
	u_char *h;
	size_t len;
	int ok;

	if (d == NULL)
		return 0;
	for (size_t i = 0; i < 3; i++)
		(void)dkim_header(d, (u_char *)test_hdrs[i], strlen(test_hdrs[i]));
	(void)dkim_eoh(d);
	(void)dkim_body(d, (u_char *)test_body, strlen(test_body));
	if (dkim_eom(d, NULL) != DKIM_STAT_OK ||
	    dkim_getsighdr_d(d, strlen(DKIM_SIGNHEADER) + 2, &h, &len) != DKIM_STAT_OK) {
		dkim_free(d);
		return 0;
	}
	buf_init(&sig);
	buf_printf(&sig, "%s: %.*s", DKIM_SIGNHEADER, (int)len, h);
	dkim_free(d);
	d = dkim_verify(test_lib, (const u_char *)"V", NULL, &st);
	(void)dkim_header(d, (u_char *)sig.data, sig.len);
	for (size_t i = 0; i < 3; i++)
		(void)dkim_header(d, (u_char *)test_hdrs[i], strlen(test_hdrs[i]));
	(void)dkim_eoh(d);
	(void)dkim_body(d, (u_char *)test_body, strlen(test_body));
	st = dkim_eom(d, NULL);
	si = dkim_getsignature(d);
	ok = st == DKIM_STAT_OK && si && DKIM_SIG_CHECK(si);
	dkim_free(d);
	buf_free(&sig);
	return ok;
}

static void test_exact_bytes_from_cache(void **state)
{
	struct buf err = BUF_INIT;
	struct dkim_keycache_entry *e = dkim_keycache_add(test_pem_a, strlen(test_pem_a), &err);
	unsigned long h0 = dkim_keycache_hits();
	char *longer;

	assert_non_null(e);
	assert_int_equal(dkim_keycache_type(e), EVP_PKEY_RSA);
	/* the registered key: answered from the cache, and right */
	assert_true(test_sign_verify(test_pem_a, "a"));
	assert_int_equal(dkim_keycache_hits(), h0 + 1);
	/* another key: decoded by libcrypto, and right (not key a) */
	assert_true(test_sign_verify(test_pem_b, "b"));
	assert_int_equal(dkim_keycache_hits(), h0 + 1);
	/* key a's text with one byte more is not an exact match */
	longer = xmalloc(strlen(test_pem_a) + 2);
	sprintf(longer, "%s\n", test_pem_a);
	assert_true(test_sign_verify(longer, "a"));
	assert_int_equal(dkim_keycache_hits(), h0 + 1);
	free(longer);
	/* removed: no longer answered from the cache, still signs */
	dkim_keycache_remove(e);
	assert_true(test_sign_verify(test_pem_a, "a"));
	assert_int_equal(dkim_keycache_hits(), h0 + 1);
	buf_free(&err);
}

static void test_not_a_key(void **state)
{
	const char *junk = "-----BEGIN PRIVATE KEY-----\nAAAA\n";
	struct buf err = BUF_INIT;

	buf_init(&err);
	assert_null(dkim_keycache_add(junk, strlen(junk), &err));
	assert_string_equal(buf_str(&err), "not a PEM private key");
	buf_free(&err);
}

#define TEST_THREADS 4
#define TEST_SIGNS 15

static void *test_signer(void *arg)
{
	long ok = 0;

	for (int i = 0; i < TEST_SIGNS; i++)
		ok += test_sign_verify(i % 3 ? test_pem_a : test_pem_b, i % 3 ? "a" : "b");
	return (void *)ok;
}

static void test_threads_share_keys(void **state)
{
	struct buf err = BUF_INIT;
	struct dkim_keycache_entry *a = dkim_keycache_add(test_pem_a, strlen(test_pem_a), &err);
	struct dkim_keycache_entry *b = dkim_keycache_add(test_pem_b, strlen(test_pem_b), &err);
	unsigned long h0 = dkim_keycache_hits();
	pthread_t t[TEST_THREADS];
	long total = 0;

	for (int i = 0; i < TEST_THREADS; i++)
		pthread_create(&t[i], NULL, test_signer, NULL);
	for (int i = 0; i < TEST_THREADS; i++) {
		void *ok;
		pthread_join(t[i], &ok);
		total += (long)ok;
	}
	assert_int_equal(total, TEST_THREADS * TEST_SIGNS);
	assert_int_equal(dkim_keycache_hits(), h0 + TEST_THREADS * TEST_SIGNS);
	dkim_keycache_remove(a);
	dkim_keycache_remove(b);
	buf_free(&err);
}

/* The DER of a fresh key: RSA-1024, or P-256 (faster to make). */
static unsigned char *test_pub_der(int rsa, int *len)
{
	EVP_PKEY *pk = rsa ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024)
			   : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	unsigned char *der = NULL, *copy;

	assert_non_null(pk);
	*len = i2d_PUBKEY(pk, &der);
	assert_true(*len > 0);
	copy = xmalloc((size_t)*len);
	memcpy(copy, der, (size_t)*len);
	OPENSSL_free(der);
	EVP_PKEY_free(pk);
	return copy;
}

/* d2i_PUBKEY_bio() over a memory BIO of der, as libopendkim calls it;
 * *left: the bytes the call left unread. */
static EVP_PKEY *test_d2i(const unsigned char *der, int len, size_t *left)
{
	BIO *b = BIO_new_mem_buf(der, len);
	EVP_PKEY *pk = d2i_PUBKEY_bio(b, NULL);

	*left = BIO_ctrl_pending(b);
	BIO_free(b);
	return pk;
}

/* The decoded key is the one in der. */
static void test_same_key(EVP_PKEY *pk, const unsigned char *der, int len)
{
	unsigned char *out = NULL;
	int n = i2d_PUBKEY(pk, &out);

	assert_int_equal(n, len);
	assert_memory_equal(out, der, (size_t)len);
	OPENSSL_free(out);
}

static void test_public_key_cache(void **state)
{
	int len;
	unsigned char *der = test_pub_der(1, &len), *longer = xmalloc((size_t)len + 1);
	unsigned long h0 = dkim_pubcache_hits(), s0 = dkim_pubcache_stored();
	EVP_PKEY *p1, *p2, *p3, *reuse = NULL;
	size_t left;
	BIO *b;

	/* first decode: libcrypto's, kept; the second: the same object */
	p1 = test_d2i(der, len, &left);
	assert_non_null(p1);
	assert_int_equal(left, 0);
	assert_int_equal(dkim_pubcache_stored(), s0 + 1);
	p2 = test_d2i(der, len, &left);
	assert_ptr_equal(p1, p2);
	assert_int_equal(left, 0); /* the BIO is read, as after a decode */
	assert_int_equal(dkim_pubcache_hits(), h0 + 1);
	test_same_key(p2, der, len);
	/* one byte more: libcrypto decodes the key and leaves the byte; not
	 * kept, and not answered from the entry for der */
	memcpy(longer, der, (size_t)len);
	longer[len] = 0;
	p3 = test_d2i(longer, len + 1, &left);
	assert_non_null(p3);
	assert_int_equal(left, 1);
	assert_ptr_not_equal(p3, p1);
	assert_int_equal(dkim_pubcache_stored(), s0 + 1);
	assert_int_equal(dkim_pubcache_hits(), h0 + 1);
	EVP_PKEY_free(p3);
	/* a caller's object to reuse: libcrypto's decode, nothing cached */
	b = BIO_new_mem_buf(der, len);
	assert_non_null(d2i_PUBKEY_bio(b, &reuse));
	BIO_free(b);
	assert_ptr_not_equal(reuse, p1);
	assert_int_equal(dkim_pubcache_hits(), h0 + 1);
	EVP_PKEY_free(reuse);
	/* not a key: NULL, nothing kept */
	p3 = test_d2i((const unsigned char *)"\x30\x03\x02\x01\x01", 5, &left);
	assert_null(p3);
	assert_int_equal(dkim_pubcache_stored(), s0 + 1);
	/* the caller's references are its own */
	EVP_PKEY_free(p1);
	test_same_key(p2, der, len);
	EVP_PKEY_free(p2);
	free(longer);
	free(der);
}

static void test_verify_uses_public_key_cache(void **state)
{
	unsigned long h0;

	assert_true(test_sign_verify(test_pem_b, "b"));
	h0 = dkim_pubcache_hits();
	assert_true(test_sign_verify(test_pem_b, "b"));
	assert_true(test_sign_verify(test_pem_a, "a"));
	assert_true(test_sign_verify(test_pem_a, "a"));
	assert_true(dkim_pubcache_hits() >= h0 + 2);
}

static void test_public_key_cache_bounded(void **state)
{
	for (int i = 0; i < 600; i++) {
		int len;
		unsigned char *der = test_pub_der(0, &len);
		size_t left;
		EVP_PKEY *pk = test_d2i(der, len, &left), *again;

		assert_non_null(pk);
		again = test_d2i(der, len, &left);
		test_same_key(again, der, len);
		EVP_PKEY_free(again);
		EVP_PKEY_free(pk);
		free(der);
	}
	assert_true(dkim_pubcache_entries() <= 256);
	assert_true(dkim_pubcache_entries() > 100);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_exact_bytes_from_cache),
	    cmocka_unit_test(test_not_a_key),
	    cmocka_unit_test(test_threads_share_keys),
	    cmocka_unit_test(test_public_key_cache),
	    cmocka_unit_test(test_verify_uses_public_key_cache),
	    cmocka_unit_test(test_public_key_cache_bounded),
	};
	return cmocka_run_group_tests(tests, test_setup, test_teardown);
}
