/* test_netstring.c - netstring codec (shared/netstring.c): round trips,
 * incremental input, and every malformed form a peer could send. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "netstring.h"

/* Decode s (NUL-terminated input) with limit max; returns the status. */
static int decode(const char *s, size_t max, struct buf *data, size_t *used, struct buf *err)
{
	const char *d = NULL;
	size_t len = 0;
	int rc;

	buf_reset(err);
	rc = netstring_decode(s, strlen(s), max, &d, &len, used, err);
	buf_reset(data);
	if (rc == NETSTRING_OK)
		buf_append(data, d, len);
	return rc;
}

static void test_netstring_encode(void **state)
{
	struct buf b = BUF_INIT;

	netstring_encode(&b, "hello world!", 12);
	assert_string_equal(buf_str(&b), "12:hello world!,");
	buf_reset(&b);
	netstring_encode(&b, "", 0);
	assert_string_equal(buf_str(&b), "0:,");
	buf_reset(&b);
	netstring_encode(&b, "a\0b", 3);
	assert_int_equal(b.len, 6);
	assert_memory_equal(b.data, "3:a\0b,", 6);
	buf_free(&b);
}

static void test_netstring_decode_ok(void **state)
{
	struct buf data = BUF_INIT, err = BUF_INIT;
	size_t used = 0;

	assert_int_equal(decode("5:hello,", 100, &data, &used, &err), NETSTRING_OK);
	assert_string_equal(buf_str(&data), "hello");
	assert_int_equal(used, 8);
	assert_int_equal(decode("0:,", 100, &data, &used, &err), NETSTRING_OK);
	assert_int_equal(data.len, 0);
	assert_int_equal(used, 3);
	/* Two back to back: used tells where the next begins. */
	assert_int_equal(decode("2:ab,3:cde,", 100, &data, &used, &err), NETSTRING_OK);
	assert_string_equal(buf_str(&data), "ab");
	assert_int_equal(used, 5);
	/* The payload may contain ':' and ','. */
	assert_int_equal(decode("3:,:,,", 100, &data, &used, &err), NETSTRING_OK);
	assert_string_equal(buf_str(&data), ",:,");
	/* Exactly at the limit is fine. */
	assert_int_equal(decode("3:abc,", 3, &data, &used, &err), NETSTRING_OK);
	buf_free(&data);
	buf_free(&err);
}

/* Every proper prefix of a valid netstring is "need more", never an error. */
static void test_netstring_decode_partial(void **state)
{
	const char *s = "12:hello world!,";
	const char *d;
	size_t len, used;
	struct buf err = BUF_INIT;

	for (size_t n = 0; n < strlen(s); n++)
		assert_int_equal(netstring_decode(s, n, 100, &d, &len, &used, &err),
				 NETSTRING_PARTIAL);
	assert_int_equal(netstring_decode(s, strlen(s), 100, &d, &len, &used, &err), NETSTRING_OK);
	assert_int_equal(err.len, 0);
	buf_free(&err);
}

static void test_netstring_decode_malformed(void **state)
{
	static const struct {
		const char *in;
		const char *why;
	} bad[] = {
	    {"a:x,", "expected a digit"},
	    {":x,", "missing length"},
	    {"-1:x,", "expected a digit"},
	    {" 1:x,", "expected a digit"},
	    {"1 :x,", "expected a digit or ':'"},
	    {"01:x,", "leading zero"},
	    {"00:,", "leading zero"},
	    {"5:hello;", "missing ','"},
	    {"3:hello,", "missing ','"},
	    {"101:", "exceeds limit 100"},
	    {"1000", "exceeds limit 100"}, /* refused before the ':' arrives */
	    {"99999999999999999999999999:", "exceeds limit"},
	};
	struct buf data = BUF_INIT, err = BUF_INIT;
	size_t used;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = decode(bad[i].in, 100, &data, &used, &err);
		if (rc != NETSTRING_ERROR || strstr(buf_str(&err), bad[i].why) == NULL)
			fail_msg("\"%s\": rc %d err \"%s\", want error with \"%s\"", bad[i].in, rc,
				 buf_str(&err), bad[i].why);
	}
	buf_free(&data);
	buf_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_netstring_encode),
	    cmocka_unit_test(test_netstring_decode_ok),
	    cmocka_unit_test(test_netstring_decode_partial),
	    cmocka_unit_test(test_netstring_decode_malformed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
