/* test_casefold.c - lookup-key folding as Postfix's casefold() with
 * smtputf8_enable=yes: ASCII fast path, full Unicode folding, and
 * invalid UTF-8 folded as ASCII only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "casefold.h"

static void check(const char *in, size_t len, const char *want)
{
	struct buf out = BUF_INIT;
	casefold(&out, in, len);
	assert_int_equal(out.len, strlen(want));
	assert_memory_equal(out.data, want, out.len);
	buf_free(&out);
}

static void test_casefold_ascii(void **state)
{
	check("User+Ext@Example.COM", 20, "user+ext@example.com");
	check("", 0, "");
}

static void test_casefold_unicode(void **state)
{
	check("JÖRG@example.com", strlen("JÖRG@example.com"), "jörg@example.com");
	check("GRÜSSE.example", strlen("GRÜSSE.example"), "grüsse.example");
	check("grüße.example", strlen("grüße.example"), "grüsse.example"); /* ß -> ss */
	check("ПРИМЕР.РФ", strlen("ПРИМЕР.РФ"), "пример.рф");
}

static void test_casefold_invalid_utf8_is_ascii_only(void **state)
{
	check("AB\xff\xfe"
	      "CD",
	      6,
	      "ab\xff\xfe"
	      "cd");
	check("X\xc3", 2, "x\xc3"); /* truncated sequence */
}

static void test_casefold_buf_in_place_grows(void **state)
{
	struct buf b = BUF_INIT;
	buf_puts(&b, "ßßßß");
	casefold_buf(&b);
	assert_string_equal(buf_str(&b), "ssssssss");
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_casefold_ascii),
	    cmocka_unit_test(test_casefold_unicode),
	    cmocka_unit_test(test_casefold_invalid_utf8_is_ascii_only),
	    cmocka_unit_test(test_casefold_buf_in_place_grows),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
