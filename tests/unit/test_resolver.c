/* test_resolver.c - unit tests for the network-free parts of
 * shared/resolver.c: wire-format names, RDATA parsing (well-formed and
 * malformed bytes), result classification from a fake libunbound result,
 * MX ordering and null MX, reverse names. Live DNS is in
 * tests/integration/test_resolver.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unbound.h>

#include "resolver.h"

#define RD(s) (const unsigned char *)(s), sizeof(s) - 1

static void test_name_parse(void **state)
{
	struct buf out = BUF_INIT, err = BUF_INIT;
	size_t used;

	assert_int_equal(resolver_name_parse(RD("\4mail\7example\3com\0"), &used, &out, &err), 0);
	assert_string_equal(buf_str(&out), "mail.example.com");
	assert_int_equal(used, 18);
	assert_int_equal(resolver_name_parse(RD("\0"), &used, &out, &err), 0);
	assert_string_equal(buf_str(&out), ".");
	/* Malformed: truncated label, no terminator, compression pointer,
	 * label type 0x40, a dot or control byte inside a label, empty input. */
	assert_int_equal(resolver_name_parse(RD("\4ma"), &used, &out, &err), -1);
	assert_int_equal(resolver_name_parse(RD("\4mail"), &used, &out, &err), -1);
	assert_int_equal(resolver_name_parse(RD("\4mail\xc0\x0c"), &used, &out, &err), -1);
	assert_non_null(strstr(buf_str(&err), "compressed"));
	assert_int_equal(resolver_name_parse(RD("\x41"
						"a\0"),
					     &used, &out, &err),
			 -1);
	assert_int_equal(resolver_name_parse(RD("\3a.b\0"), &used, &out, &err), -1);
	assert_int_equal(resolver_name_parse(RD("\3a\nb\0"), &used, &out, &err), -1);
	assert_int_equal(resolver_name_parse((const unsigned char *)"", 0, &used, &out, &err), -1);
	buf_free(&out);
	buf_free(&err);
}

static void test_name_too_long(void **state)
{
	unsigned char wire[300];
	struct buf out = BUF_INIT, err = BUF_INIT;
	size_t used, i, n = 0;

	/* 4 labels of 63: 4*64 + 1 = 257 octets > 255. */
	for (i = 0; i < 4; i++) {
		wire[n++] = 63;
		memset(wire + n, 'a', 63);
		n += 63;
	}
	wire[n++] = 0;
	assert_int_equal(resolver_name_parse(wire, n, &used, &out, &err), -1);
	assert_non_null(strstr(buf_str(&err), "255"));
	/* 3 labels of 63 + one of 61: exactly 255 octets. */
	wire[3 * 64] = 61;
	wire[3 * 64 + 62] = 0;
	assert_int_equal(resolver_name_parse(wire, 3 * 64 + 63, &used, &out, &err), 0);
	assert_int_equal(used, 255);
	assert_int_equal(out.len, 253);
	buf_free(&out);
	buf_free(&err);
}

static void test_rdata(void **state)
{
	struct resolver_rr rr;
	struct buf err = BUF_INIT;

	assert_int_equal(resolver_rdata_parse(RESOLVER_T_A, RD("\xc0\x00\x02\x01"), &rr, &err), 0);
	assert_string_equal(rr.text, "192.0.2.1");
	assert_int_equal(rr.family, AF_INET);
	assert_int_equal(rr.addr[3], 1);
	free(rr.text);
	assert_int_equal(resolver_rdata_parse(RESOLVER_T_AAAA,
					      RD("\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01"), &rr,
					      &err),
			 0);
	assert_string_equal(rr.text, "2001:db8::1");
	free(rr.text);
	assert_int_equal(
	    resolver_rdata_parse(RESOLVER_T_MX, RD("\0\x0a\2mx\7example\0"), &rr, &err), 0);
	assert_int_equal(rr.pref, 10);
	assert_string_equal(rr.text, "mx.example");
	free(rr.text);
	assert_int_equal(resolver_rdata_parse(RESOLVER_T_TXT, RD("\7v=spf1 \4-all"), &rr, &err), 0);
	assert_string_equal(rr.text, "v=spf1 -all");
	free(rr.text);
	assert_int_equal(resolver_rdata_parse(RESOLVER_T_TXT, RD("\0"), &rr, &err), 0);
	assert_string_equal(rr.text, "");
	free(rr.text);
	assert_int_equal(resolver_rdata_parse(RESOLVER_T_PTR, RD("\4host\0"), &rr, &err), 0);
	assert_string_equal(rr.text, "host");
	free(rr.text);
	assert_int_equal(resolver_rdata_parse(RESOLVER_T_NS, RD("\3ns1\7example\0"), &rr, &err), 0);
	assert_string_equal(rr.text, "ns1.example");
	free(rr.text);
	buf_free(&err);
}

static void test_rdata_malformed(void **state)
{
	struct resolver_rr rr;
	struct buf err = BUF_INIT;

	assert_int_equal(resolver_rdata_parse(RESOLVER_T_A, RD("\xc0\x00\x02"), &rr, &err), -1);
	assert_int_equal(resolver_rdata_parse(RESOLVER_T_A, RD("\xc0\x00\x02\x01\x01"), &rr, &err),
			 -1);
	assert_int_equal(resolver_rdata_parse(RESOLVER_T_AAAA, RD("\xc0\x00\x02\x01"), &rr, &err),
			 -1);
	assert_int_equal(resolver_rdata_parse(RESOLVER_T_MX, RD("\0\x0a"), &rr, &err), -1);
	assert_int_equal(resolver_rdata_parse(RESOLVER_T_MX, RD("\0\x0a\2mx\0junk"), &rr, &err),
			 -1);
	assert_non_null(strstr(buf_str(&err), "junk"));
	assert_int_equal(resolver_rdata_parse(RESOLVER_T_MX, RD("\0\x0a\x09mx"), &rr, &err), -1);
	assert_int_equal(resolver_rdata_parse(RESOLVER_T_TXT, RD("\5abc"), &rr, &err), -1);
	assert_int_equal(resolver_rdata_parse(RESOLVER_T_TXT, RD("\3a\0c"), &rr, &err), -1);
	assert_int_equal(
	    resolver_rdata_parse(RESOLVER_T_TXT, (const unsigned char *)"", 0, &rr, &err), -1);
	assert_int_equal(resolver_rdata_parse(RESOLVER_T_PTR, RD("\4host"), &rr, &err), -1);
	assert_int_equal(resolver_rdata_parse(99, RD("\0"), &rr, &err), -1);
	assert_null(rr.text);
	buf_free(&err);
}

/* fake_ub - a libunbound result as ub_resolve() would fill it */
static void fake_ub(struct ub_result *ub, int qtype, int rcode, char **data, int *len)
{
	memset(ub, 0, sizeof(*ub));
	ub->qname = "example.test";
	ub->qtype = qtype;
	ub->qclass = 1;
	ub->rcode = rcode;
	ub->nxdomain = rcode == 3;
	ub->data = data;
	ub->len = len;
	ub->havedata = data != NULL && data[0] != NULL;
	ub->ttl = 300;
}

static void test_classify(void **state)
{
	struct ub_result ub;
	struct resolver_result res;
	char *none[] = {NULL};
	char *mx[] = {"\0\x14\3mx2\0", "\0\x0a\3mx1\0", "\0\x0a\3mx0\0", "\0\x05\4bad", NULL};
	int mxlen[] = {7, 7, 7, 7};
	char *bad[] = {"\0\x05\4bad", NULL};
	int badlen[] = {7};

	resolver_result_init(&res);
	fake_ub(&ub, RESOLVER_T_MX, 3, none, NULL);
	resolver_result_from_ub(&res, 0, &ub);
	assert_int_equal(res.status, RESOLVER_NXDOMAIN);
	fake_ub(&ub, RESOLVER_T_MX, 0, none, NULL);
	resolver_result_from_ub(&res, 0, &ub);
	assert_int_equal(res.status, RESOLVER_NODATA);
	fake_ub(&ub, RESOLVER_T_MX, 2, none, NULL);
	resolver_result_from_ub(&res, 0, &ub);
	assert_int_equal(res.status, RESOLVER_TEMPFAIL);
	fake_ub(&ub, RESOLVER_T_MX, 5, none, NULL);
	resolver_result_from_ub(&res, 0, &ub);
	assert_int_equal(res.status, RESOLVER_PERMFAIL);
	resolver_result_from_ub(&res, UB_SERVFAIL, NULL);
	assert_int_equal(res.status, RESOLVER_TEMPFAIL);
	assert_true(res.msg.len > 0);

	/* Sorted by preference, stable among equals, malformed record skipped. */
	fake_ub(&ub, RESOLVER_T_MX, 0, mx, mxlen);
	resolver_result_from_ub(&res, 0, &ub);
	assert_int_equal(res.status, RESOLVER_FOUND);
	assert_int_equal(res.count, 3);
	assert_string_equal(res.rr[0].text, "mx1");
	assert_string_equal(res.rr[1].text, "mx0");
	assert_string_equal(res.rr[2].text, "mx2");
	assert_string_equal(res.qname, "example.test");

	/* Only malformed records: a temporary failure, never "no data". */
	fake_ub(&ub, RESOLVER_T_MX, 0, bad, badlen);
	resolver_result_from_ub(&res, 0, &ub);
	assert_int_equal(res.status, RESOLVER_TEMPFAIL);
	assert_non_null(strstr(buf_str(&res.msg), "malformed"));
	resolver_result_free(&res);
}

static void test_null_mx(void **state)
{
	struct ub_result ub;
	struct resolver_result res;
	char *null[] = {"\0\0\0", NULL};
	char *mixed[] = {"\0\0\0", "\0\x0a\2mx\0", NULL};
	int len[] = {3, 6};

	resolver_result_init(&res);
	fake_ub(&ub, RESOLVER_T_MX, 0, null, len);
	resolver_result_from_ub(&res, 0, &ub);
	assert_int_equal(res.status, RESOLVER_NULLMX);
	/* RFC 7505 §3: "." among real MX hosts is ignored. */
	fake_ub(&ub, RESOLVER_T_MX, 0, mixed, len);
	resolver_result_from_ub(&res, 0, &ub);
	assert_int_equal(res.status, RESOLVER_FOUND);
	assert_int_equal(res.count, 1);
	assert_string_equal(res.rr[0].text, "mx");
	resolver_result_free(&res);
}

static void test_reverse_and_types(void **state)
{
	struct buf out = BUF_INIT;

	assert_int_equal(resolver_reverse_name("192.0.2.1", &out), 0);
	assert_string_equal(buf_str(&out), "1.2.0.192.in-addr.arpa");
	assert_int_equal(resolver_reverse_name("2001:db8::1", &out), 0);
	assert_string_equal(buf_str(&out),
			    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0."
			    "1.0.0.2.ip6.arpa");
	assert_int_equal(resolver_reverse_name("192.0.2", &out), -1);
	assert_int_equal(resolver_reverse_name("host.example", &out), -1);
	assert_int_equal(resolver_type_code("mx"), RESOLVER_T_MX);
	assert_int_equal(resolver_type_code("AAAA"), RESOLVER_T_AAAA);
	assert_int_equal(resolver_type_code("ns"), RESOLVER_T_NS);
	assert_int_equal(resolver_type_code("SOA"), 0);
	assert_string_equal(resolver_type_name(RESOLVER_T_TXT), "TXT");
	assert_string_equal(resolver_status_str(RESOLVER_NULLMX), "NULLMX");
	buf_free(&out);
}

static void test_bad_servers(void **state)
{
	struct buf err = BUF_INIT;
	struct resolver *r;

	r = resolver_new("127.0.0.1@5353 not-an-address", 1, NULL, &err);
	assert_null(r);
	assert_non_null(strstr(buf_str(&err), "not-an-address"));
	buf_reset(&err);
	r = resolver_new("127.0.0.1@5353, ::1@5353", 1, NULL, &err);
	assert_non_null(r);
	/* No event loop: async queries are refused, not crashed. */
	assert_int_equal(resolver_query(r, "x.test", RESOLVER_T_A, NULL, NULL, &err), -1);
	resolver_free(r);
	buf_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_name_parse),
	    cmocka_unit_test(test_name_too_long),
	    cmocka_unit_test(test_rdata),
	    cmocka_unit_test(test_rdata_malformed),
	    cmocka_unit_test(test_classify),
	    cmocka_unit_test(test_null_mx),
	    cmocka_unit_test(test_reverse_and_types),
	    cmocka_unit_test(test_bad_servers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
