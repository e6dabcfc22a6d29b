/* test_inet.c - address and prefix helpers (shared/inet.c): strict
 * parsing, canonical formatting, prefix parsing with Postfix's error
 * wording, host bits, matching across families, v4-mapped, truncation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "inet.h"

/* Parse and format back; NULL if text is not an address. */
static char *fmt(const char *text)
{
	struct inet_addr a;
	struct buf out = BUF_INIT;
	if (inet_addr_parse(text, &a) < 0)
		return NULL;
	inet_addr_format(&a, &out);
	return buf_detach(&out);
}

static void assert_fmt(const char *in, const char *want)
{
	char *got = fmt(in);
	if (want == NULL) {
		assert_null(got);
		return;
	}
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static void test_parse_format(void **state)
{
	assert_fmt("1.2.3.4", "1.2.3.4");
	assert_fmt("0.0.0.0", "0.0.0.0");
	assert_fmt("255.255.10.200", "255.255.10.200");
	assert_fmt("2001:DB8:0:0:0:0:0:1", "2001:db8::1");
	assert_fmt("::1", "::1");
	assert_fmt("::ffff:1.2.3.4", "::ffff:1.2.3.4");
	/* Malformed: inet_pton strictness, as Postfix cidr tables. */
	assert_fmt("01.2.3.4", NULL);
	assert_fmt("1.2.3", NULL);
	assert_fmt("1.2.3.4.5", NULL);
	assert_fmt("1.2.3.256", NULL);
	assert_fmt("[1.2.3.4]", NULL);
	assert_fmt(" 1.2.3.4", NULL);
	assert_fmt("fe80::1%eth0", NULL);
	assert_fmt("1:2:3:4:5:6:7:8:9", NULL);
	assert_fmt("", NULL);
	assert_fmt("foo", NULL);
}

static void test_unmap(void **state)
{
	struct inet_addr a;
	struct buf out = BUF_INIT;
	assert_int_equal(inet_addr_parse("::ffff:10.1.2.3", &a), 0);
	assert_int_equal(a.family, AF_INET6);
	assert_int_equal(inet_addr_unmap(&a), 1);
	assert_int_equal(a.family, AF_INET);
	inet_addr_format(&a, &out);
	assert_string_equal(out.data, "10.1.2.3");
	assert_int_equal(inet_addr_parse("2001:db8::1", &a), 0);
	assert_int_equal(inet_addr_unmap(&a), 0);
	assert_int_equal(inet_addr_parse("1.2.3.4", &a), 0);
	assert_int_equal(inet_addr_unmap(&a), 0);
	buf_free(&out);
}

/* Parse a prefix; returns the error text ("" when it parsed). */
static char *prefix(const char *text, int *len)
{
	struct inet_addr net;
	struct buf why = BUF_INIT;
	int l = -1;
	if (inet_prefix_parse(text, &net, &l, &why) == 0 && why.len == 0)
		buf_set(&why, "");
	if (len)
		*len = l;
	return buf_detach(&why);
}

static void assert_prefix(const char *text, int want_len, const char *want_err)
{
	int len;
	char *err = prefix(text, &len);
	assert_string_equal(err, want_err);
	if (*want_err == 0)
		assert_int_equal(len, want_len);
	free(err);
}

static void test_prefix_parse(void **state)
{
	assert_prefix("1.2.3.0/24", 24, "");
	assert_prefix("1.2.3.4", 32, "");
	assert_prefix("[10.0.0.0]/8", 8, "");
	assert_prefix("[10.1.0.0/16]", 16, "");
	assert_prefix("[::1]", 128, "");
	assert_prefix("2001:db8::/032", 32, "");
	assert_prefix("0.0.0.0/0", 0, "");
	assert_prefix("1.2.3.0/33", 0, "bad mask length in \"1.2.3.0/33\"");
	assert_prefix("::/129", 0, "bad mask length in \"::/129\"");
	assert_prefix("1.2.3.0/99999999999999999999", 0,
		      "bad mask length in \"1.2.3.0/99999999999999999999\"");
	assert_prefix("1.2.3.0/", 0, "bad mask value in \"1.2.3.0/\"");
	assert_prefix("1.2.3.0/x", 0, "bad mask value in \"1.2.3.0/x\"");
	assert_prefix("1.2.3.0/-1", 0, "bad mask value in \"1.2.3.0/-1\"");
	assert_prefix("1.2.3.4/32/1", 0, "bad mask value in \"1.2.3.4/32/1\"");
	assert_prefix("[1.2.3.0", 0, "missing ']' character after \"[1.2.3.0\"");
	assert_prefix("[1.2.3.0]x", 0, "bad address pattern: \"[1.2.3.0]x\"");
	assert_prefix("1.2.3", 0, "bad address pattern: \"1.2.3\"");
	assert_prefix("", 0, "bad address pattern: \"\"");
}

static void test_prefix_match(void **state)
{
	struct inet_addr net, a;
	struct buf why = BUF_INIT;
	int len;

	assert_int_equal(inet_prefix_parse("1.2.3.4/24", &net, &len, &why), 0);
	assert_int_equal(inet_prefix_host_bits(&net, len), 1);
	inet_prefix_mask(&net, len);
	assert_int_equal(inet_prefix_host_bits(&net, len), 0);
	inet_addr_parse("1.2.3.200", &a);
	assert_int_equal(inet_prefix_match(&net, len, &a), 1);
	inet_addr_parse("1.2.4.1", &a);
	assert_int_equal(inet_prefix_match(&net, len, &a), 0);
	/* v4-mapped is another family: no match unless unmapped first. */
	inet_addr_parse("::ffff:1.2.3.9", &a);
	assert_int_equal(inet_prefix_match(&net, len, &a), 0);
	inet_addr_unmap(&a);
	assert_int_equal(inet_prefix_match(&net, len, &a), 1);

	assert_int_equal(inet_prefix_parse("2001:db8:8000::/33", &net, &len, &why), 0);
	assert_int_equal(inet_prefix_host_bits(&net, len), 0);
	inet_addr_parse("2001:db8:ffff::1", &a);
	assert_int_equal(inet_prefix_match(&net, len, &a), 1);
	inet_addr_parse("2001:db8:7fff::1", &a);
	assert_int_equal(inet_prefix_match(&net, len, &a), 0);
	assert_int_equal(inet_prefix_parse("::/0", &net, &len, &why), 0);
	assert_int_equal(inet_prefix_match(&net, len, &a), 1);
	inet_addr_parse("9.9.9.9", &a);
	assert_int_equal(inet_prefix_match(&net, len, &a), 0);
	assert_int_equal(inet_prefix_parse("2001:db8::1/127", &net, &len, &why), 0);
	assert_int_equal(inet_prefix_host_bits(&net, len), 1);
	buf_free(&why);
}

static void test_truncate(void **state)
{
	struct buf b = BUF_INIT;
	buf_set(&b, "1.2.3.4");
	assert_int_equal(inet_addr_text_truncate(&b), 1);
	assert_string_equal(b.data, "1.2.3");
	inet_addr_text_truncate(&b);
	inet_addr_text_truncate(&b);
	assert_string_equal(b.data, "1");
	assert_int_equal(inet_addr_text_truncate(&b), 0);
	buf_set(&b, "2001:db8::1");
	inet_addr_text_truncate(&b);
	assert_string_equal(b.data, "2001:db8:");
	inet_addr_text_truncate(&b);
	assert_string_equal(b.data, "2001:db8");
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_format), cmocka_unit_test(test_unmap),
	    cmocka_unit_test(test_prefix_parse), cmocka_unit_test(test_prefix_match),
	    cmocka_unit_test(test_truncate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
