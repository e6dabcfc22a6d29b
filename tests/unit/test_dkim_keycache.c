/* test_dkim_keycache.c - unit tests for tern-dkim-milter's private key
 * cache (milters/dkim/dkim_keycache.c): libopendkim's key decode is
 * answered from it only for the exact registered bytes, the signatures it
 * makes verify (libopendkim's own verifier, key from a key file), other
 * keys and near-misses go to libcrypto, and threads can share it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_exact_bytes_from_cache),
	    cmocka_unit_test(test_not_a_key),
	    cmocka_unit_test(test_threads_share_keys),
	};
	return cmocka_run_group_tests(tests, test_setup, test_teardown);
}
