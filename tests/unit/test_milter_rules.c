/* test_milter_rules.c - unit tests for tern-rules-milter's pure parts:
 * header_checks action parsing (milters/rules/rules_action.c) and the
 * MIME body walk (milters/rules/rules_mime.c): which class each line is
 * checked as, chunk boundaries, size limits, and the rebuilt body. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_milter.h"

static void test_action_parse(void **state)
{
	struct rules_action a;
	struct buf err = BUF_INIT;

	assert_int_equal(rules_action_parse("reject", &a, &err), 0);
	assert_int_equal(a.kind, RULES_ACT_REJECT);
	assert_string_equal(a.code, "550");
	assert_string_equal(a.dsn, "5.7.1");
	assert_string_equal(a.text, "Message content rejected");
	rules_action_free(&a);
	assert_int_equal(rules_action_parse("REJECT 5.7.2 go away", &a, &err), 0);
	assert_string_equal(a.dsn, "5.7.2");
	assert_string_equal(a.text, "go away");
	rules_action_free(&a);
	/* a 4.x.x code cannot go with a 550 */
	assert_int_equal(rules_action_parse("REJECT 4.7.2 x", &a, &err), 0);
	assert_string_equal(a.dsn, "5.7.1");
	assert_string_equal(a.text, "4.7.2 x");
	rules_action_free(&a);
	assert_int_equal(rules_action_parse("  Prepend X-A: b c", &a, &err), 0);
	assert_int_equal(a.kind, RULES_ACT_PREPEND);
	assert_string_equal(a.text, "X-A: b c");
	rules_action_free(&a);
	assert_int_equal(rules_action_parse("ok", &a, &err), 0);
	assert_int_equal(a.kind, RULES_ACT_NONE);
	rules_action_free(&a);
	/* as Postfix's header_checks: no access(5) codes, no DEFER */
	assert_int_equal(rules_action_parse("554 no", &a, &err), -1);
	assert_int_equal(rules_action_parse("DEFER later", &a, &err), -1);
	assert_int_equal(rules_action_parse("REPLACE", &a, &err), -1);
	buf_free(&err);
}

/* The checker records "CLASS:line" and edits lines that say so. */
struct seen {
	struct buf log;
};

static enum rules_edit check(void *arg, enum rules_class cls, const char *line, size_t len,
			     struct buf *text)
{
	static const char *const names[] = {"H", "M", "N", "B"};
	struct seen *s = arg;

	buf_printf(&s->log, "%s:%.*s|", names[cls], (int)len, line);
	if (len >= 4 && memcmp(line, "drop", 4) == 0)
		return RULES_DROP;
	if (len >= 6 && memcmp(line, "change", 6) == 0) {
		buf_set(text, "changed");
		return RULES_REPLACE;
	}
	return RULES_KEEP;
}

static const char *walk(struct rules_mime *m, struct seen *s, const char *ctype, const char *body,
			size_t chunk)
{
	rules_mime_init(m);
	m->check = check;
	m->arg = s;
	m->mime = 1;
	m->keep_body = 1;
	m->line_limit = 2048;
	m->body_limit = 51200;
	m->header_limit = 102400;
	buf_init(&s->log);
	rules_mime_start(m, ctype);
	for (size_t i = 0; i < strlen(body); i += chunk)
		rules_mime_body(m, (const unsigned char *)body + i,
				strlen(body) - i < chunk ? strlen(body) - i : chunk);
	rules_mime_end(m);
	return buf_str(&s->log);
}

static void test_mime_classes_any_chunking(void **state)
{
	const char *body =
	    "pre\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n"
	    "Subject: inner\r\n folded\r\n\r\ninner body\r\n"
	    "--b\r\nContent-Type: text/plain\r\nX-Part: 1\r\n\r\ntext\r\n--b--\r\nepi";
	/* The empty line ending each header block is a body line (Postfix's
	 * cleanup checks it too); the one after the message's own headers
	 * is checked at the start. */
	const char *want = "B:|B:pre|B:--b|M:Content-Type: message/rfc822|B:|"
			   "N:Subject: inner\n folded|B:|B:inner body|B:--b|"
			   "M:Content-Type: text/plain|M:X-Part: 1|B:|B:text|B:--b--|B:epi|";

	for (size_t chunk = 1; chunk <= strlen(body); chunk += 7) {
		struct rules_mime m;
		struct seen s;

		assert_string_equal(walk(&m, &s, " multipart/mixed; boundary=\"b\"", body, chunk),
				    want);
		assert_int_equal(m.edited, 0);
		buf_free(&s.log);
		rules_mime_free(&m);
	}
}

static void test_mime_edits_rebuild_body(void **state)
{
	struct rules_mime m;
	struct seen s;

	walk(&m, &s, NULL, "keep\r\ndrop me\r\nchange me\r\nlast", 5);
	assert_int_equal(m.edited, 1);
	assert_string_equal(buf_str(&m.out), "keep\r\nchanged\r\nlast");
	buf_free(&s.log);
	rules_mime_free(&m);
	/* no MIME: boundaries and part headers are plain body lines */
	rules_mime_init(&m);
	m.check = check, m.arg = &s, m.mime = 0, m.keep_body = 0;
	m.line_limit = 4, m.body_limit = 10, m.header_limit = 100;
	buf_init(&s.log);
	rules_mime_start(&m, "multipart/mixed; boundary=b");
	rules_mime_body(&m, (const unsigned char *)"--b\r\nabcdefghij\r\nover\r\n", 23);
	rules_mime_end(&m);
	/* Offsets as Postfix counts them: the header/body separator is 0,
	 * "--b" 1, the pieces of 4 at 5, 10, 15: only those starting below
	 * 10 (body_checks_size_limit) are inspected. */
	assert_string_equal(buf_str(&s.log), "B:|B:--b|B:abcd|");
	buf_free(&s.log);
	rules_mime_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_action_parse),
	    cmocka_unit_test(test_mime_classes_any_chunking),
	    cmocka_unit_test(test_mime_edits_rebuild_body),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
