/* test_buf.c - unit tests for the growable buffer (shared/buf.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

static void test_buf_lazy_init_and_append(void **state)
{
	struct buf b = BUF_INIT;
	assert_string_equal(buf_str(&b), "");
	buf_puts(&b, "hello");
	buf_putc(&b, ' ');
	buf_append(&b, "world!!", 5);
	assert_int_equal(b.len, 11);
	assert_string_equal(buf_str(&b), "hello world");
	buf_free(&b);
	assert_null(b.data);
}

static void test_buf_growth_keeps_binary(void **state)
{
	struct buf b = BUF_INIT;
	for (int i = 0; i < 100000; i++)
		buf_putc(&b, i % 7 == 0 ? 0 : 'a' + i % 26);
	assert_int_equal(b.len, 100000);
	assert_int_equal(b.data[0], 0);
	assert_int_equal(b.data[1], 'b');
	assert_int_equal(b.data[b.len], 0); /* always terminated */
	buf_free(&b);
}

static void test_buf_printf_long(void **state)
{
	struct buf b = BUF_INIT;
	char big[5000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	buf_printf(&b, "%s=%d", "n", 42);
	buf_printf(&b, "[%s]", big);
	assert_int_equal(b.len, 4 + 2 + 4999);
	assert_memory_equal(b.data, "n=42[x", 6);
	assert_int_equal(b.data[b.len - 1], ']');
	buf_free(&b);
}

static void test_buf_trim_lower_truncate(void **state)
{
	struct buf b = BUF_INIT;
	buf_set(&b, " \t MiXeD Case \r\n");
	buf_trim(&b);
	assert_string_equal(buf_str(&b), "MiXeD Case");
	buf_lower(&b);
	assert_string_equal(buf_str(&b), "mixed case");
	buf_truncate(&b, 5);
	assert_string_equal(buf_str(&b), "mixed");
	buf_truncate(&b, 50); /* never grows */
	assert_string_equal(buf_str(&b), "mixed");
	buf_set(&b, "   ");
	buf_trim(&b);
	assert_int_equal(b.len, 0);
	char *s = buf_detach(&b);
	assert_string_equal(s, "");
	assert_null(b.data);
	free(s);
}

static void test_buf_put_ll(void **state)
{
	struct buf b = BUF_INIT;
	buf_put_ll(&b, 0);
	buf_putc(&b, ' ');
	buf_put_ll(&b, 1234567890123LL);
	buf_putc(&b, ' ');
	buf_put_ll(&b, -42);
	buf_putc(&b, ' ');
	buf_put_ll(&b, -9223372036854775807LL - 1);
	assert_string_equal(buf_str(&b), "0 1234567890123 -42 -9223372036854775808");
	buf_free(&b);
}

static void test_xstrndup_stops_at_nul(void **state)
{
	char *s = xstrndup("abc\0def", 7);
	assert_string_equal(s, "abc");
	free(s);
	s = xstrndup("abcdef", 2);
	assert_string_equal(s, "ab");
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_buf_lazy_init_and_append),
	    cmocka_unit_test(test_buf_growth_keeps_binary),
	    cmocka_unit_test(test_buf_printf_long),
	    cmocka_unit_test(test_buf_trim_lower_truncate),
	    cmocka_unit_test(test_buf_put_ll),
	    cmocka_unit_test(test_xstrndup_stops_at_nul),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
