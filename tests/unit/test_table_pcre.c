/* test_table_pcre.c - pcre: tables (shared/table_pcre.c, table_rules.c).
 * Expected results are what Postfix 3.7's "postmap -q KEY pcre:FILE"
 * prints for the same file, including its warnings for broken rules,
 * which skip the rule but keep the rest of the table. */
#include "table_test.h"

#define assert_query(text, key, want) assert_answer(query_file("pcre", text, key), text, key, want)

static void test_pcre_substitution(void **state)
{
	/* $n ${n} $(n), $$, an unmatched group is empty, result trimmed. */
	assert_query("/(a)(b)?/ x$1-$2-${1}-$(1)-$$-end  \n", "aC", "xa--a-a-$-end");
	assert_query("/(.)(.)/ ${2}${1}$2\n", "ab", "bab");
	assert_query("/a/ $$1\n", "a", "$1");
	assert_query("!/(a)/ $$\n", "b", "$");
	assert_query("/(a)(a)(a)(a)(a)(a)(a)(a)(a)(a)(a)/ $11.$1\n", "aaaaaaaaaaa", "a.a");
	assert_query("/a/\ttab\tx\t\n", "a", "tab\tx");
	/* A continuation line keeps its indent, loses the newline. */
	assert_query("/a/ x\n  y\n", "a", "x  y");
	assert_query("/(?<n>a)/ $1\n", "a", "a");
	free(take_log());
}

static void test_pcre_flags(void **state)
{
	/* Keys are not folded; i (on by default) makes matching caseless. */
	assert_query("/A/ up\n", "a", "up");
	assert_query("/A/i up\n", "a", "NOTFOUND");
	assert_query("/A/i up\n", "A", "up");
	assert_query("/^a.b$/ dot\n", "a\nb", "dot"); /* s on by default */
	assert_query("/^a.b$/s dot\n", "a\nb", "NOTFOUND");
	assert_query("/^b$/m x\n", "a\nb", "x");
	assert_query("/^b$/ x\n", "a\nb", "NOTFOUND");
	assert_query("/a b/x x\n", "ab", "x");
	assert_query("/b/A x\n", "ab", "NOTFOUND");
	assert_query("/b/A x\n", "b", "x");
	assert_query("/a$/E x\n", "a\n", "NOTFOUND");
	assert_query("/a$/ x\n", "a\n", "x");
	assert_query("/(a+)/U x$1\n", "aaa", "xa");
	assert_query("/a/ix x\n", "A", "NOTFOUND");
	assert_query("/a/X x\n", "a", "x");
	assert_logged("ignoring obsolete regexp option \"X\"");
}

static void test_pcre_delimiters(void **state)
{
	assert_query("|a| pipe\n", "a", "pipe");
	assert_query("{a{ br\n", "a", "br");
	assert_query("/a\\/b/ x\n", "a/b", "x");
	assert_query("// empty\n", "anything", "empty");
	assert_query("! /a/ x\n", "b", "x");
	assert_query("!/a/ x\n", "a", "NOTFOUND");
}

static void test_pcre_if_endif(void **state)
{
	const char *nested = "if /a/\nif /b/\n/c/ abc\nendif\nendif\n/c/ c-only\n";

	assert_query(nested, "abc", "abc");
	assert_query(nested, "ac", "c-only");
	assert_query(nested, "bc", "c-only");
	assert_query("if !/a/\n/b/ notA\nendif\n/b/ other\n", "b", "notA");
	assert_query("if !/a/\n/b/ notA\nendif\n/b/ other\n", "ab", "other");
	assert_query("IF/a/\n/b/ ok\nENDIF\n", "ab", "ok");
	assert_query("if /a/\n/b/ ok\n", "b", "NOTFOUND");
	assert_logged("line 1: IF has no matching ENDIF");
	assert_query("endif\n/b/ ok\n", "b", "ok");
	assert_logged("line 1: ignoring ENDIF without matching IF");
	assert_query("if /a/ junk\n/b/ ok\nendif junk\n", "ab", "ok");
	assert_logged("ignoring extra text after IF statement: \"junk\"");
	/* An indented rule joins the IF line: the block is then empty. */
	assert_query("if /a/\n /b/ ok\nendif\n", "ab", "NOTFOUND");
	assert_logged("do not prepend whitespace to statements between IF and ENDIF");
	/* A broken IF is dropped, so its ENDIF has no IF. */
	assert_query("if /a/junk\n/b/ ok\nendif\n", "b", "ok");
	assert_logged("line 3: ignoring ENDIF without matching IF");
}

/* Bad rules are skipped with Postfix's warning; later rules still work. */
static void test_pcre_bad_rules(void **state)
{
	static const struct {
		const char *rule;
		const char *warning;
	} bad[] = {
	    {"/a(/ x", "line 1: error in regex at offset 2: missing closing parenthesis"},
	    {"/(a)/ x$9", "line 1: out of range replacement index \"9\": skipping this rule"},
	    {"!/(a)/ x$1", "$number found in negative match replacement text: skipping"},
	    {"/a/q x", "unknown regexp option \"q\": skipping this rule"},
	    {"/a x", "no closing regexp delimiter \"/\""},
	    {"/a\\/ x", "no closing regexp delimiter \"/\""},
	    {"a/ x", "ignoring unrecognized request"},
	    {"ifx /a/ x", "ignoring unrecognized request"},
	    {"if", "no regexp: skipping this rule"},
	    {"/(a)/ $0", "out of range replacement index \"0\""},
	    {"/(a)/ ${ab}", "non-numeric replacement index \"ab\""},
	    {"/(a)/ $1a", "non-numeric replacement index \"1a\""},
	    {"/(a)/ ${1", "truncated macro reference"},
	    {"/(a)/ $(1}", "truncated macro reference"},
	    {"/(a)/ x$", "empty macro name"},
	    {"/(a)/ x$ y", "empty macro name"},
	    {"/(a)/ $99999999999999999999", "out of range replacement index"},
	    {" /a/ lead", "line 1: logical line must not start with whitespace"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_bad_rule("pcre", bad[i].rule, bad[i].warning, bad[i].rule[0] != ' ');
	/* No result: Postfix uses the empty string (and says so). */
	assert_query("/a/\n", "a", "");
	assert_logged("no replacement text: using empty string");
}

static void test_pcre_inline(void **state)
{
	struct buf err = BUF_INIT, value = BUF_INIT;
	struct table *t = table_open("pcre:{ {/^a/ x}, {/(b)/ y$1}, {!/c/ notc} }", &err);

	assert_non_null(t);
	assert_true(table_is_pattern(t));
	assert_int_equal(table_lookup(t, "abc", &value, &err), TABLE_FOUND);
	assert_string_equal(buf_str(&value), "x");
	assert_int_equal(table_lookup(t, "Bc", &value, &err), TABLE_FOUND);
	assert_string_equal(buf_str(&value), "yB");
	assert_int_equal(table_lookup(t, "zz", &value, &err), TABLE_FOUND);
	assert_string_equal(buf_str(&value), "notc");
	assert_int_equal(table_lookup(t, "cc", &value, &err), TABLE_NOTFOUND);
	table_close(t);
	assert_null(table_open("pcre:{ {/a/ x}", &err));
	assert_null(table_open("pcre:/nonexistent/file", &err));
	assert_non_null(strstr(buf_str(&err), "/nonexistent/file"));
	buf_free(&err);
	buf_free(&value);
}

static void test_pcre_reload(void **state)
{
	struct buf err = BUF_INIT, value = BUF_INIT, spec = BUF_INIT;
	struct table *t;

	write_file(table_path, "/a/ one\n");
	buf_printf(&spec, "pcre:%s", table_path);
	t = table_open(buf_str(&spec), &err);
	assert_non_null(t);
	write_file(table_path, "/a/ two\n");
	assert_int_equal(table_reload(t, 1, &err), 1);
	assert_int_equal(table_lookup(t, "a", &value, &err), TABLE_FOUND);
	assert_string_equal(buf_str(&value), "two");
	table_close(t);
	buf_free(&err);
	buf_free(&value);
	buf_free(&spec);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pcre_substitution), cmocka_unit_test(test_pcre_flags),
	    cmocka_unit_test(test_pcre_delimiters),   cmocka_unit_test(test_pcre_if_endif),
	    cmocka_unit_test(test_pcre_bad_rules),    cmocka_unit_test(test_pcre_inline),
	    cmocka_unit_test(test_pcre_reload),
	};
	return cmocka_run_group_tests(tests, table_test_setup, table_test_teardown);
}
