/* test_spf.c - unit tests for shared/spf.c's texts: the Received-SPF
 * field (RFC 7208 §9.1 keys, quoting), Authentication-Results (RFC 8601),
 * pypolicyd-spf's reply texts with RFC 7372 codes, result names, and a
 * refused client address. DNS-dependent results are covered by the
 * integration tests (tests/integration/test_policyd_spf.py).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "spf.h"

static void outcome(struct spf_outcome *o, enum spf_result r, enum spf_identity id,
		    const char *comment)
{
	spf_outcome_init(o);
	o->result = r;
	o->identity = id;
	buf_set(&o->comment, comment);
}

static void test_received_spf(void **state)
{
	struct spf_outcome o;
	struct buf out = BUF_INIT;

	outcome(&o, SPF_R_PASS, SPF_ID_MAILFROM,
		"mx.test: domain of a.example designates 192.0.2.1");
	spf_received_spf(&o, "192.0.2.1", "mail.a.example", "u@a.example", "mx.test", &out);
	assert_string_equal(buf_str(&out),
			    "pass (mx.test: domain of a.example designates 192.0.2.1) "
			    "client-ip=192.0.2.1; envelope-from=u@a.example; helo=mail.a.example; "
			    "receiver=mx.test; identity=mailfrom");
	/* parentheses in the comment, a space in the sender, no receiver */
	buf_reset(&out);
	buf_set(&o.comment, "odd (comment)");
	o.identity = SPF_ID_HELO;
	o.result = SPF_R_SOFTFAIL;
	spf_received_spf(&o, "2001:db8::1", "h.example", "a b@x.example", NULL, &out);
	assert_string_equal(buf_str(&out), "softfail (odd comment) client-ip=2001:db8::1; "
					   "envelope-from=\"a b@x.example\"; helo=h.example; "
					   "receiver=<UNKNOWN>; identity=helo");
	buf_reset(&out);
	spf_received_spf(&o, "192.0.2.1", "h.example", "", "mx.test", &out);
	assert_non_null(strstr(buf_str(&out), "envelope-from=\"\"; "));
	spf_outcome_free(&o);
	buf_free(&out);
}

static void test_auth_results(void **state)
{
	struct spf_outcome o;
	struct buf out = BUF_INIT;

	outcome(&o, SPF_R_FAIL, SPF_ID_MAILFROM, "c");
	spf_auth_results(&o, "mx.test", "h.example", "u@a.example", &out);
	assert_string_equal(buf_str(&out), "mx.test; spf=fail (c) smtp.mailfrom=u@a.example");
	buf_reset(&out);
	spf_auth_results(&o, "mx.test", "h.example", "", &out);
	assert_string_equal(buf_str(&out), "mx.test; spf=fail (c) smtp.helo=h.example");
	spf_outcome_free(&o);
	buf_free(&out);
}

static void test_reply_text(void **state)
{
	struct spf_outcome o;
	struct buf out = BUF_INIT;

	outcome(&o, SPF_R_FAIL, SPF_ID_MAILFROM, "");
	spf_reply_text(&o, 0, "203.0.113.5", "h.example", "u@a.example", "mx.test", &out);
	assert_string_equal(buf_str(&out),
			    "550 5.7.23 Message rejected due to: SPF fail - not authorized. "
			    "Please see http://www.openspf.net/Why?s=mfrom;id=u@a.example;"
			    "ip=203.0.113.5;r=mx.test");
	buf_reset(&out);
	o.result = SPF_R_TEMPERROR;
	o.identity = SPF_ID_HELO;
	spf_reply_text(&o, 1, "203.0.113.5", "h.example", "u@a.example", NULL, &out);
	assert_string_equal(buf_str(&out),
			    "DEFER_IF_PERMIT 4.7.24 Message deferred due to: SPF temperror - "
			    "temporary DNS failure. Please see http://www.openspf.net/Why?s=helo;"
			    "id=h.example;ip=203.0.113.5;r=<UNKNOWN>");
	/* no ';' or space from the sender may break the URL */
	buf_reset(&out);
	o.identity = SPF_ID_MAILFROM;
	o.result = SPF_R_PERMERROR;
	spf_reply_text(&o, 0, "192.0.2.1", "h", "a;b c@x", "r", &out);
	assert_non_null(strstr(buf_str(&out), "550 5.7.24 "));
	assert_non_null(strstr(buf_str(&out), "id=abc@x;ip=192.0.2.1;r=r"));
	/* non-ASCII (an SMTPUTF8 sender) is %-encoded in the URL */
	buf_reset(&out);
	spf_reply_text(&o, 0, "192.0.2.1", "h", "j\xc3\xbcrg@x", "r", &out);
	assert_non_null(strstr(buf_str(&out), "id=j%C3%BCrg@x;"));
	spf_outcome_free(&o);
	buf_free(&out);
}

static void test_result_names(void **state)
{
	enum spf_result r;

	for (int i = SPF_R_NONE; i <= SPF_R_PERMERROR; i++) {
		assert_int_equal(spf_result_parse(spf_result_name((enum spf_result)i), &r), 0);
		assert_int_equal(r, i);
	}
	assert_int_equal(spf_result_parse("TempError", &r), 0);
	assert_int_equal(r, SPF_R_TEMPERROR);
	assert_int_equal(spf_result_parse("bogus", &r), -1);
}

static void test_bad_client_and_no_domain(void **state)
{
	struct buf err = BUF_INIT;
	struct spf_outcome o;
	/* 127.0.0.1@9 (discard port): never asked, nothing here needs DNS */
	struct spf_ctx *ctx = spf_ctx_new("127.0.0.1@9", 1, "mx.test", &err);

	assert_non_null(ctx);
	spf_outcome_init(&o);
	assert_int_equal(
	    spf_check(ctx, SPF_ID_MAILFROM, "not-an-ip", "h.example", "u@a.example", &o, &err), -1);
	assert_non_null(strstr(buf_str(&err), "not a client IP address"));
	/* a HELO that is an address literal or not a domain: none, no lookup */
	assert_int_equal(spf_check(ctx, SPF_ID_HELO, "192.0.2.1", "[192.0.2.1]", "", &o, &err), 0);
	assert_int_equal(o.result, SPF_R_NONE);
	assert_int_equal(spf_check(ctx, SPF_ID_HELO, "192.0.2.1", "localhost", "", &o, &err), 0);
	assert_int_equal(o.result, SPF_R_NONE);
	spf_outcome_free(&o);
	spf_ctx_free(ctx);
	buf_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_received_spf),
	    cmocka_unit_test(test_auth_results),
	    cmocka_unit_test(test_reply_text),
	    cmocka_unit_test(test_result_names),
	    cmocka_unit_test(test_bad_client_and_no_domain),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
