/* test_attr.c - unit tests for shared/attr.c, the Postfix plain attribute
 * codec: encoding refusals, incremental decoding split at every byte
 * boundary, pipelined lists, limits and malformed streams.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "attr.h"

static const char request[] = "request=smtpd_access_policy\n"
			      "protocol_state=RCPT\n"
			      "client_address=192.0.2.1\n"
			      "sender=\n"
			      "recipient=u@example.com\n"
			      "\n";

/* feed_chunks - feed s in pieces of size step; count complete lists */
static int feed_chunks(struct attr_decoder *d, const char *s, size_t len, size_t step,
		       void (*check)(const struct attr_list *))
{
	size_t off = 0, used, n;
	int lists = 0;
	enum attr_decode_status st;

	while (off < len) {
		n = len - off < step ? len - off : step;
		while (n > 0) {
			st = attr_decoder_feed(d, s + off, n, &used);
			if (st == ATTR_DECODE_ERROR)
				return -1;
			off += used, n -= used;
			if (st == ATTR_DECODE_DONE) {
				lists++;
				if (check != NULL)
					check(&d->list);
			}
		}
	}
	return lists;
}

static void check_request(const struct attr_list *l)
{
	assert_int_equal(l->n, 5);
	assert_string_equal(attr_get(l, "request"), "smtpd_access_policy");
	assert_string_equal(attr_get(l, "recipient"), "u@example.com");
	assert_string_equal(attr_get(l, "sender"), "");
	assert_true(attr_has(l, "sender"));
	assert_string_equal(attr_get(l, "missing"), "");
	assert_false(attr_has(l, "missing"));
}

static void test_split_boundaries(void **state)
{
	struct attr_decoder d;
	struct buf two = BUF_INIT;
	size_t step;

	buf_puts(&two, request);
	buf_puts(&two, request);
	for (step = 1; step <= two.len; step++) {
		attr_decoder_init(&d, 0, 0);
		assert_int_equal(feed_chunks(&d, two.data, two.len, step, check_request), 2);
		assert_int_equal(attr_decoder_eof(&d), 0);
		attr_decoder_free(&d);
	}
	buf_free(&two);
}

static void test_roundtrip(void **state)
{
	struct attr_list l;
	struct attr_decoder d;
	struct buf out = BUF_INIT, err = BUF_INIT;

	attr_list_init(&l);
	attr_list_set(&l, "request", "smtpd_access_policy");
	attr_list_set(&l, "helo_name", "with spaces = and equals");
	attr_list_set(&l, "empty", "");
	assert_int_equal(attr_list_set(&l, "empty", "now set"), 1);
	assert_int_equal(attr_print_list(&out, &l, &err), 0);
	assert_string_equal(buf_str(&out), "request=smtpd_access_policy\n"
					   "helo_name=with spaces = and equals\n"
					   "empty=now set\n\n");
	attr_decoder_init(&d, 0, 0);
	assert_int_equal(feed_chunks(&d, out.data, out.len, out.len, NULL), 1);
	assert_string_equal(attr_get(&d.list, "helo_name"), "with spaces = and equals");
	assert_int_equal(d.warn.len, 0);
	attr_decoder_free(&d);
	attr_list_free(&l);
	buf_free(&out);
	buf_free(&err);
}

static void test_encode_refusals(void **state)
{
	struct attr_list l;
	struct buf out = BUF_INIT, err = BUF_INIT, big = BUF_INIT;

	assert_int_equal(attr_print(&out, "a=b", "x", &err), -1);
	assert_int_equal(attr_print(&out, "a\nb", "x", &err), -1);
	assert_int_equal(attr_print(&out, "", "x", &err), -1);
	assert_int_equal(attr_print(&out, "a", "x\ninjected=1", &err), -1);
	assert_true(err.len > 0);
	while (big.len <= ATTR_STRING_MAX)
		buf_puts(&big, "xxxxxxxxxxxxxxxx");
	assert_int_equal(attr_print(&out, "a", buf_str(&big), &err), -1);
	assert_int_equal(out.len, 0);
	/* A list with one bad value leaves no partial request behind. */
	buf_set(&out, "keep");
	attr_list_init(&l);
	attr_list_set(&l, "good", "1");
	attr_list_set(&l, "bad", "a\nb");
	assert_int_equal(attr_print_list(&out, &l, &err), -1);
	assert_string_equal(buf_str(&out), "keep");
	buf_reset(&out);
	assert_int_equal(attr_print_reply(&out, "DEFER_IF_PERMIT Service unavailable", &err), 0);
	assert_string_equal(buf_str(&out), "action=DEFER_IF_PERMIT Service unavailable\n\n");
	attr_list_free(&l);
	buf_free(&out);
	buf_free(&err);
	buf_free(&big);
}

/* decode_err - the stream must fail, whatever the chunking */
static void decode_err(const char *s, size_t len, size_t max_string, size_t max_count)
{
	struct attr_decoder d;
	size_t step, used;

	for (step = 1; step <= len; step++) {
		attr_decoder_init(&d, max_string, max_count);
		if (feed_chunks(&d, s, len, step, NULL) != -1)
			fail_msg("stream %.*s: no error at step %zu", (int)len, s, step);
		assert_true(d.err.len > 0);
		/* Errors are sticky: the stream is out of sync. */
		assert_int_equal(attr_decoder_feed(&d, "a=b\n\n", 5, &used), ATTR_DECODE_ERROR);
		assert_int_equal(used, 0);
		attr_decoder_free(&d);
	}
}

static void test_malformed(void **state)
{
	static const char nul[] = "name=va\0lue\n\n";

	decode_err("no equals sign\n\n", 16, 0, 0);
	decode_err("=value\n\n", 8, 0, 0);
	decode_err(nul, sizeof(nul) - 1, 0, 0);
	decode_err("a=0123456789\n\n", 14, 8, 0);
	decode_err("abcdefghij=1\n\n", 14, 8, 0);
	decode_err("a=1\nb=2\nc=3\n\n", 13, 0, 2);
}

static void test_limits_unterminated(void **state)
{
	struct attr_decoder d;
	struct buf big = BUF_INIT;
	size_t used;

	/* A line that never ends is refused once it exceeds the bound,
	 * without buffering the whole stream. */
	attr_decoder_init(&d, 16, 0);
	buf_puts(&big, "a=");
	while (big.len < 100)
		buf_putc(&big, 'x');
	assert_int_equal(attr_decoder_feed(&d, big.data, big.len, &used), ATTR_DECODE_ERROR);
	assert_true(d.line.len <= 33);
	attr_decoder_free(&d);

	/* Exactly at the limit is fine. */
	attr_decoder_init(&d, 4, 2);
	assert_int_equal(feed_chunks(&d, "abcd=wxyz\nb=1\n\n", 15, 3, NULL), 1);
	assert_int_equal(feed_chunks(&d, "b=1\nb=2\nb=3\n\n", 13, 1, NULL), 1);
	attr_decoder_free(&d);
	buf_free(&big);
}

static void test_repeat_and_eof(void **state)
{
	struct attr_decoder d;
	size_t used;

	attr_decoder_init(&d, 0, 0);
	assert_int_equal(attr_decoder_feed(&d, "a=1\na=2\n\n", 9, &used), ATTR_DECODE_DONE);
	assert_int_equal(used, 9);
	assert_string_equal(attr_get(&d.list, "a"), "2");
	assert_non_null(strstr(buf_str(&d.warn), "repeated attribute \"a\""));
	/* The next list starts clean. */
	assert_int_equal(attr_decoder_feed(&d, "b=1\n", 4, &used), ATTR_DECODE_MORE);
	assert_int_equal(d.warn.len, 0);
	assert_false(attr_has(&d.list, "a"));
	assert_int_equal(attr_decoder_eof(&d), -1);
	attr_decoder_free(&d);

	attr_decoder_init(&d, 0, 0);
	assert_int_equal(attr_decoder_feed(&d, "partial", 7, &used), ATTR_DECODE_MORE);
	assert_int_equal(attr_decoder_eof(&d), -1);
	attr_decoder_free(&d);

	/* An empty line alone is an empty list; CR stays part of the value. */
	attr_decoder_init(&d, 0, 0);
	assert_int_equal(attr_decoder_feed(&d, "\n", 1, &used), ATTR_DECODE_DONE);
	assert_int_equal(d.list.n, 0);
	assert_int_equal(attr_decoder_feed(&d, "action=DUNNO\r\n\n", 15, &used), ATTR_DECODE_DONE);
	assert_string_equal(attr_get(&d.list, "action"), "DUNNO\r");
	assert_int_equal(attr_decoder_eof(&d), 0);
	attr_decoder_free(&d);
}

static void test_reply_action(void **state)
{
	struct attr_list l;
	struct buf err = BUF_INIT;
	const char *action;

	attr_list_init(&l);
	assert_int_equal(attr_reply_action(&l, 0, &action, &err), -1);
	assert_string_equal(action, "");
	attr_list_set(&l, "other", "ignored");
	attr_list_set(&l, "action", "");
	assert_int_equal(attr_reply_action(&l, 0, &action, &err), -1);
	attr_list_set(&l, "action", "REJECT no \xff thanks");
	assert_int_equal(attr_reply_action(&l, 0, &action, &err), 0);
	assert_int_equal(attr_reply_action(&l, 1, &action, &err), -1);
	attr_list_set(&l, "action", "550 5.7.1 Gr\xc3\xbc\xc3\x9f");
	assert_int_equal(attr_reply_action(&l, 1, &action, &err), 0);
	assert_string_equal(action, "550 5.7.1 Gr\xc3\xbc\xc3\x9f");
	attr_list_free(&l);
	buf_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_split_boundaries),	cmocka_unit_test(test_roundtrip),
	    cmocka_unit_test(test_encode_refusals),	cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_limits_unterminated), cmocka_unit_test(test_repeat_and_eof),
	    cmocka_unit_test(test_reply_action),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
