/* test_base64.c - RFC 4648 §10 test vectors both ways, the AUTH PLAIN
 * blob with its NULs, and the malformed inputs a client could send. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "base64.h"

static const char *const vectors[][2] = {
    {"", ""},		{"f", "Zg=="},		{"fo", "Zm8="},		{"foo", "Zm9v"},
    {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
};

static void test_base64_vectors(void **state)
{
	struct buf b = BUF_INIT;

	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		buf_reset(&b);
		base64_encode(vectors[i][0], strlen(vectors[i][0]), &b);
		assert_string_equal(buf_str(&b), vectors[i][1]);
		buf_reset(&b);
		assert_int_equal(base64_decode(vectors[i][1], strlen(vectors[i][1]), &b), 0);
		assert_int_equal(b.len, strlen(vectors[i][0]));
		assert_memory_equal(b.data, vectors[i][0], b.len);
	}
	buf_free(&b);
}

static void test_base64_auth_plain(void **state)
{
	struct buf b = BUF_INIT;
	static const char blob[] = "\0joe\0secret";

	base64_encode(blob, sizeof(blob) - 1, &b);
	assert_string_equal(buf_str(&b), "AGpvZQBzZWNyZXQ=");
	buf_reset(&b);
	assert_int_equal(base64_decode("AGpvZQBzZWNyZXQ=", 16, &b), 0);
	assert_int_equal(b.len, sizeof(blob) - 1);
	assert_memory_equal(b.data, blob, b.len);
	buf_free(&b);
}

static void test_base64_malformed(void **state)
{
	static const char *const bad[] = {"Zg=", "Zg", "Z===", "=Zg=", "Zg=a", "Zm9v!A==",
					  "Zm 9", "Zg==Zg==", "Zm9v\n"};
	struct buf b = BUF_INIT;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(base64_decode(bad[i], strlen(bad[i]), &b), -1);
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_base64_vectors),
	    cmocka_unit_test(test_base64_auth_plain),
	    cmocka_unit_test(test_base64_malformed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
