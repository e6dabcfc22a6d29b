/* test_table_regexp.c - regexp: tables (shared/table_regexp.c, table_rules.c).
 * Expected results are what Postfix 3.7's "postmap -q KEY regexp:FILE"
 * prints for the same file, including its warnings for broken rules,
 * which skip the rule but keep the rest of the table. */
#include "table_test.h"

#define assert_query(text, key, want)                                                              \
	assert_answer(query_file("regexp", text, key), text, key, want)

static void test_regexp_substitution(void **state)
{
	assert_query("/(a)(b)?/ x$1-$2-${1}-$(1)-$$-end  \n", "aC", "xa--a-a-$-end");
	assert_query("/(.)(.)/ ${2}${1}$2\n", "ab", "bab");
	assert_query("/(a)|(b)/ [$2]\n", "a", "[]");
	assert_query("/(a)(a)(a)(a)(a)(a)(a)(a)(a)(a)(a)/ $11.$1\n", "aaaaaaaaaaa", "a.a");
	assert_query("/[[:alpha:]]+@(.*)/ dom=$1\n", "User@Example.COM", "dom=Example.COM");
	assert_query("!/(a)/ $$\n", "b", "$");
}

static void test_regexp_flags(void **state)
{
	assert_query("/A/ up\n", "a", "up");
	assert_query("/A/i up\n", "a", "NOTFOUND");
	/* Without m, '.' matches a newline and ^ $ only the ends. */
	assert_query("/^a.b$/ dot\n", "a\nb", "dot");
	assert_query("/^b$/ x\n", "a\nb", "NOTFOUND");
	assert_query("/^b$/m x\n", "a\nb", "x");
	assert_query("/^a.b$/m x\n", "a\nb", "NOTFOUND");
	/* x (on) is ERE; toggled off it is a basic RE, where + is literal. */
	assert_query("/a+/ x\n", "aaa", "x");
	assert_query("/^a+$/x x\n", "aaa", "NOTFOUND");
	assert_query("/^a+$/x x\n", "a+", "x");
	assert_query("/a b/x x\n", "a b", "x");
}

static void test_regexp_if_endif(void **state)
{
	const char *nested = "if /a/\nif /b/\n/c/ abc\nendif\nendif\n/c/ c-only\n";

	assert_query(nested, "abc", "abc");
	assert_query(nested, "ac", "c-only");
	assert_query("if !/a/\n/b/ notA\nendif\n/b/ other\n", "b", "notA");
	assert_query("if !/a/\n/b/ notA\nendif\n/b/ other\n", "ab", "other");
	assert_query("if /a/\nif /b/\n/b/ ok\n", "ab", "ok");
	assert_logged("regexp map ");
}

static void test_regexp_bad_rules(void **state)
{
	static const struct {
		const char *rule;
		const char *warning;
	} bad[] = {
	    {"/a(/ x", "line 1: Unmatched ( or \\("},
	    {"/a{1/ x", "line 1: "},
	    {"/(a)/ x$2", "out of range replacement index \"2\": skipping this rule"},
	    {"/(a)/ $0", "out-of-range replacement index \"0\""},
	    {"!/(a)/ x$1", "$number found in negative match replacement text"},
	    {"/a/s x", "unknown regexp option \"s\": skipping this rule"},
	    {"/a/U x", "unknown regexp option \"U\""},
	    {"/a x", "no closing regexp delimiter \"/\""},
	    {"a/ x", "ignoring unrecognized request"},
	    {"/(a)/ ${1?yes}", "non-numeric replacement index \"1?yes\""},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_bad_rule("regexp", bad[i].rule, bad[i].warning, 1);
}

static void test_regexp_inline(void **state)
{
	struct buf err = BUF_INIT, value = BUF_INIT;
	struct table *t = open_ok("regexp:{ {/^(.*)@example\\.com$/ local $1}, {/x/ y} }");

	assert_int_equal(table_lookup(t, "Joe@EXAMPLE.com", &value, &err), TABLE_FOUND);
	assert_string_equal(buf_str(&value), "local Joe");
	assert_int_equal(table_lookup(t, "nothing", &value, &err), TABLE_NOTFOUND);
	table_close(t);
	buf_free(&err);
	buf_free(&value);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_regexp_substitution), cmocka_unit_test(test_regexp_flags),
	    cmocka_unit_test(test_regexp_if_endif),	cmocka_unit_test(test_regexp_bad_rules),
	    cmocka_unit_test(test_regexp_inline),
	};
	return cmocka_run_group_tests(tests, table_test_setup, table_test_teardown);
}
