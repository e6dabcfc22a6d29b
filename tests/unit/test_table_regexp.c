/* test_table_regexp.c - pcre: tables (shared/table_pcre.c, table_rules.c).
 * Expected results are what Postfix 3.7's "postmap -q KEY pcre:FILE"
 * prints for the same file, including its warnings for broken rules,
 * which skip the rule but keep the rest of the table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "table.h"

static char table_path[] = "/tmp/test_table_regexp.XXXXXX";
static char log_path[] = "/tmp/test_table_regexp_log.XXXXXX";

static void write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

/* The warnings logged since the last call. */
static char *take_log(void)
{
	struct buf b = BUF_INIT;
	char chunk[512];
	size_t n;
	FILE *fp = fopen(log_path, "r");

	assert_non_null(fp);
	while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
		buf_append(&b, chunk, n);
	fclose(fp);
	assert_int_equal(truncate(log_path, 0), 0);
	buf_puts(&b, "");
	return buf_detach(&b);
}

/* Look key up in a table made of text: the value, "NOTFOUND" or "ERROR". */
static char *query(const char *text, const char *key)
{
	struct buf err = BUF_INIT, value = BUF_INIT, spec = BUF_INIT;
	struct table *t;
	char *out;

	write_file(table_path, text);
	buf_printf(&spec, "regexp:%s", table_path);
	t = table_open(buf_str(&spec), &err);
	if (t == NULL)
		fail_msg("open: %s", buf_str(&err));
	switch (table_lookup(t, key, &value, &err)) {
	case TABLE_FOUND:
		out = buf_detach(&value);
		break;
	case TABLE_NOTFOUND:
		out = xstrdup("NOTFOUND");
		break;
	default:
		out = xstrdup("ERROR");
	}
	table_close(t);
	buf_free(&err);
	buf_free(&value);
	buf_free(&spec);
	return out;
}

#define assert_query(text, key, want)                                                          \
	do {                                                                                   \
		char *got_ = query(text, key);                                                 \
		if (strcmp(got_, want) != 0)                                                   \
			fail_msg("%s with key \"%s\": got \"%s\", want \"%s\"", #text, key,    \
				 got_, want);                                                  \
		free(got_);                                                                    \
	} while (0)

#define assert_logged(needle)                                                                  \
	do {                                                                                   \
		char *log_ = take_log();                                                       \
		if (strstr(log_, needle) == NULL)                                              \
			fail_msg("log lacks \"%s\": %s", needle, log_);                        \
		free(log_);                                                                    \
	} while (0)

static int setup(void **state)
{
	int fd = mkstemp(table_path);
	close(fd);
	fd = mkstemp(log_path);
	close(fd);
	log_open("test");
	log_to_file(log_path);
	return 0;
}

static int teardown(void **state)
{
	log_to_stderr();
	unlink(table_path);
	unlink(log_path);
	return 0;
}

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
	struct buf text = BUF_INIT;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		buf_reset(&text);
		buf_printf(&text, "%s\n/a|b/ fallback\n", bad[i].rule);
		char *got = query(buf_str(&text), "a");
		char *log = take_log();
		if (strcmp(got, "fallback") != 0 || strstr(log, bad[i].warning) == NULL ||
		    strstr(log, "regexp map ") == NULL)
			fail_msg("rule \"%s\": got \"%s\", log \"%s\"", bad[i].rule, got, log);
		free(got);
		free(log);
	}
	buf_free(&text);
}

static void test_regexp_inline(void **state)
{
	struct buf err = BUF_INIT, value = BUF_INIT;
	struct table *t = table_open("regexp:{ {/^(.*)@example\\.com$/ local $1}, {/x/ y} }", &err);

	if (t == NULL)
		fail_msg("open: %s", buf_str(&err));
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
		cmocka_unit_test(test_regexp_if_endif),	    cmocka_unit_test(test_regexp_bad_rules),
		cmocka_unit_test(test_regexp_inline),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
