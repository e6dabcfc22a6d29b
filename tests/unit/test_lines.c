/* test_lines.c - logical line reader (shared/lines.c) and inline list
 * splitting (shared/table.c): the file syntax every config and table
 * shares, so its corner cases are pinned here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lines.h"
#include "table.h"

/* Collect "lineno:text" for every logical line of text. */
static char *lines_dump(const char *text)
{
	struct lines lr;
	struct buf line = BUF_INIT, err = BUF_INIT, out = BUF_INIT;
	lines_open_string(&lr, "t", text);
	while (lines_next(&lr, &line, &err) > 0)
		buf_printf(&out, "%d:%s|", lr.lineno, buf_str(&line));
	lines_close(&lr);
	buf_free(&line);
	buf_free(&err);
	return buf_detach(&out);
}

static void test_lines_comments_blanks(void **state)
{
	char *s = lines_dump("# comment\n\na = 1\n   # indented comment\nb = 2\n");
	assert_string_equal(s, "3:a = 1|5:b = 2|");
	free(s);
}

static void test_lines_continuation(void **state)
{
	char *s = lines_dump("a = 1,\n  2,\n\n  # note\n\t3\nb = x\n");
	assert_string_equal(s, "1:a = 1,  2,\t3|6:b = x|");
	free(s);
}

static void test_lines_column0_comment_inside_continuation(void **state)
{
	/* Postfix (postmap -q) keeps joining across a column-0 comment. */
	char *s = lines_dump("a = 1\n# skipped\n  2\nb\n");
	assert_string_equal(s, "1:a = 1  2|4:b|");
	free(s);
}

static void test_lines_crlf_and_no_final_newline(void **state)
{
	char *s = lines_dump("a = 1\r\nb = 2");
	assert_string_equal(s, "1:a = 1|2:b = 2|");
	free(s);
}

static void test_lines_file_and_missing_file(void **state)
{
	char path[] = "/tmp/tern-lines-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "x y\n z\n", 7), 7);
	close(fd);
	struct lines lr;
	struct buf line = BUF_INIT, err = BUF_INIT;
	assert_int_equal(lines_open(&lr, path, &err), 0);
	assert_int_equal(lines_next(&lr, &line, &err), 1);
	assert_string_equal(buf_str(&line), "x y z");
	assert_int_equal(lines_next(&lr, &line, &err), 0);
	lines_close(&lr);
	unlink(path);
	assert_int_equal(lines_open(&lr, path, &err), -1);
	assert_non_null(strstr(buf_str(&err), path));
	buf_free(&line);
	buf_free(&err);
}

static void test_lines_overlong(void **state)
{
	struct buf text = BUF_INIT, line = BUF_INIT, err = BUF_INIT;
	struct lines lr;
	buf_puts(&text, "ok = 1\nbig = ");
	for (int i = 0; i < LINES_MAX_LEN / 2; i++)
		buf_puts(&text, "x");
	buf_puts(&text, "\n    ");
	for (int i = 0; i < LINES_MAX_LEN / 2; i++)
		buf_puts(&text, "y");
	buf_puts(&text, "\n");
	lines_open_string(&lr, "/etc/tern/tern.conf", buf_str(&text));
	assert_int_equal(lines_next(&lr, &line, &err), 1);
	assert_int_equal(lines_next(&lr, &line, &err), -1);
	assert_string_equal(buf_str(&err),
			    "/etc/tern/tern.conf, line 2: logical line longer than 1048576 bytes");
	lines_close(&lr);
	buf_free(&text);
	buf_free(&line);
	buf_free(&err);
}

static void test_inline_split(void **state)
{
	char **v;
	size_t n;
	struct buf err = BUF_INIT;
	assert_int_equal(table_inline_split("{ a=1, b=2 {c = x, y} }", 0, &v, &n, &err), 0);
	assert_int_equal(n, 3);
	assert_string_equal(v[0], "a=1");
	assert_string_equal(v[1], "b=2");
	assert_string_equal(v[2], "c = x, y");
	table_inline_free(v, n);
	assert_int_equal(table_inline_split("{ {/a/ x}, { /b{2}/ y } }", 0, &v, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(v[1], "/b{2}/ y");
	table_inline_free(v, n);
	assert_int_equal(table_inline_split("{}", 0, &v, &n, &err), 0);
	assert_int_equal(n, 0);
	table_inline_free(v, n);
}

static void test_inline_split_errors(void **state)
{
	char **v;
	size_t n;
	struct buf err = BUF_INIT;
	assert_int_equal(table_inline_split("a=1", 0, &v, &n, &err), -1);
	assert_non_null(strstr(buf_str(&err), "expected '{'"));
	buf_reset(&err);
	assert_int_equal(table_inline_split("{ a=1", 0, &v, &n, &err), -1);
	assert_non_null(strstr(buf_str(&err), "missing '}'"));
	buf_reset(&err);
	assert_int_equal(table_inline_split("{ {a=1 }", 0, &v, &n, &err), -1);
	assert_non_null(strstr(buf_str(&err), "unbalanced"));
	buf_reset(&err);
	/* Pattern tables: "cidr:{1.2.3.4 a}" is not two rules. */
	assert_int_equal(table_inline_split("{1.2.3.4 a}", TABLE_INLINE_BRACED, &v, &n, &err), -1);
	assert_non_null(strstr(buf_str(&err), "no '{' at start of rule \"1.2.3.4\""));
	assert_int_equal(
	    table_inline_split("{ {1.2.3.4 a}, {x y} }", TABLE_INLINE_BRACED, &v, &n, &err), 0);
	assert_int_equal(n, 2);
	table_inline_free(v, n);
	buf_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lines_comments_blanks),
	    cmocka_unit_test(test_lines_continuation),
	    cmocka_unit_test(test_lines_column0_comment_inside_continuation),
	    cmocka_unit_test(test_lines_crlf_and_no_final_newline),
	    cmocka_unit_test(test_lines_file_and_missing_file),
	    cmocka_unit_test(test_lines_overlong),
	    cmocka_unit_test(test_inline_split),
	    cmocka_unit_test(test_inline_split_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
