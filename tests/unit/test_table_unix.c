/* test_table_unix.c - unix:passwd.byname / unix:group.byname (dict_unix). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "table.h"

static void test_unix_passwd(void **state)
{
	struct buf err = BUF_INIT, value = BUF_INIT;
	struct table *t = table_open("unix:passwd.byname", &err);
	assert_non_null(t);
	assert_int_equal(table_lookup(t, "ROOT", &value, &err), TABLE_FOUND); /* folded */
	assert_memory_equal(buf_str(&value), "root:", 5);
	assert_non_null(strstr(buf_str(&value), ":0:0:"));
	assert_int_equal(table_lookup(t, "no-such-user-tern", &value, &err), TABLE_NOTFOUND);
	table_close(t);
	buf_free(&err);
	buf_free(&value);
}

static void test_unix_group(void **state)
{
	struct buf err = BUF_INIT, value = BUF_INIT;
	struct table *t = table_open("unix:group.byname", &err);
	assert_non_null(t);
	assert_int_equal(table_lookup(t, "root", &value, &err), TABLE_FOUND);
	assert_string_equal(buf_str(&value), "root:x:0:");
	table_close(t);
	buf_free(&err);
	buf_free(&value);
}

static void test_unix_unknown_map(void **state)
{
	struct buf err = BUF_INIT;
	assert_null(table_open("unix:hosts.byname", &err));
	assert_non_null(strstr(buf_str(&err), "unknown table: unix:hosts.byname"));
	buf_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_unix_passwd),
	    cmocka_unit_test(test_unix_group),
	    cmocka_unit_test(test_unix_unknown_map),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
