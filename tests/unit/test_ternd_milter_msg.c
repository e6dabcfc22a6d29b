/* test_ternd_milter_msg.c - the message model of the milter client
 * (mta/ternd/smtpd_milter_msg.c): parsing with our Received: hidden,
 * Postfix's header index rules for INSHEADER (every header counts, 0 =
 * top) and CHGHEADER (visible headers of that name, live list, 0 = 1,
 * empty = delete, past the end = add), and body CRLF conversion.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "../../mta/ternd/smtpd_milter_int.h"

#define MSG                                                                                        \
	"X-Prepended: yes\n"                                                                       \
	"Received: from x by y\n"                                                                  \
	"\tfor <a@b>\n"                                                                            \
	"From: a@b\n"                                                                              \
	"X-Twice: one\n"                                                                           \
	"X-Twice: two\n"                                                                           \
	"\n"                                                                                       \
	"body line\n"

static const char *formatted(struct milter_msg *m, struct buf *out)
{
	buf_reset(out);
	milter_msg_format(m, out);
	return buf_str(out);
}

static void test_parse_roundtrip(void **state)
{
	struct milter_msg m;
	struct buf out = BUF_INIT;

	milter_msg_parse(&m, MSG, strlen(MSG), 1);
	assert_int_equal(m.nh, 5);
	assert_true(m.h[1].hidden);
	assert_string_equal(m.h[1].value, " from x by y\n\tfor <a@b>");
	assert_string_equal(formatted(&m, &out), MSG);
	milter_msg_free(&m);
	buf_free(&out);
}

static void test_insert_counts_our_received(void **state)
{
	struct milter_msg m;
	struct buf out = BUF_INIT;

	milter_msg_parse(&m, MSG, strlen(MSG), 1);
	milter_msg_insert(&m, 0, "X-Top", " 0");
	milter_msg_insert(&m, 3, "X-Three", " 3"); /* after X-Prepended, Received */
	milter_msg_insert(&m, 99, "X-End", " 99");
	assert_string_equal(formatted(&m, &out), "X-Top: 0\n"
						 "X-Prepended: yes\n"
						 "Received: from x by y\n"
						 "\tfor <a@b>\n"
						 "X-Three: 3\n"
						 "From: a@b\n"
						 "X-Twice: one\n"
						 "X-Twice: two\n"
						 "X-End: 99\n"
						 "\n"
						 "body line\n");
	milter_msg_free(&m);
	buf_free(&out);
}

static void test_change_live_list(void **state)
{
	struct milter_msg m;
	struct buf out = BUF_INIT;

	milter_msg_parse(&m, MSG, strlen(MSG), 1);
	milter_msg_change(&m, 1, "received", "");	  /* hidden: not counted */
	milter_msg_change(&m, 0, "x-twice", "");	  /* 0 = 1: deletes "one" */
	milter_msg_change(&m, 1, "X-Twice", " 2\r\n\tb"); /* the old #2 is #1 now */
	milter_msg_change(&m, 5, "X-New", " added");	  /* past the end: added */
	milter_msg_change(&m, 5, "X-None", "");		  /* nothing to delete */
	assert_string_equal(formatted(&m, &out), "X-Prepended: yes\n"
						 "Received: from x by y\n"
						 "\tfor <a@b>\n"
						 "From: a@b\n"
						 "X-Twice: 2\n"
						 "\tb\n"
						 "X-New: added\n"
						 "\n"
						 "body line\n");
	milter_msg_free(&m);
	buf_free(&out);
}

static void test_body_crlf(void **state)
{
	struct milter_msg m;
	struct buf out = BUF_INIT;

	milter_msg_parse(&m, MSG, strlen(MSG), 1);
	milter_msg_body_crlf(&m, &out);
	assert_string_equal(buf_str(&out), "body line\r\n");
	milter_msg_set_body(&m, "a\r\nb\rc\r\nlast", strlen("a\r\nb\rc\r\nlast"));
	assert_string_equal(buf_str(&m.body), "a\nb\rc\nlast\n");
	milter_msg_free(&m);
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_roundtrip),
	    cmocka_unit_test(test_insert_counts_our_received),
	    cmocka_unit_test(test_change_live_list),
	    cmocka_unit_test(test_body_crlf),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
