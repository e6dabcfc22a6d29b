/* test_addr.c - unit tests for shared/addr.c: RFC 5321 paths, canonical
 * forms, domain checks and extension splitting, including malformed input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>
#include <sys/socket.h>

#include "addr.h"

/* parse_ok - parse arg, expect success and the plain/SMTP forms */
static void parse_ok(const char *arg, int flags, const char *plain, const char *smtp,
		     const char *rest_want)
{
	struct addr a;
	struct buf err = BUF_INIT, out = BUF_INIT;
	const char *rest = NULL;
	enum addr_status st;

	addr_init(&a);
	st = addr_parse_path(&a, arg, flags, &rest, &err);
	if (st != ADDR_OK)
		fail_msg("%s: unexpected error %s", arg, buf_str(&err));
	addr_format_plain(&a, &out);
	assert_string_equal(buf_str(&out), plain);
	buf_reset(&out);
	addr_format_smtp(&a, &out);
	assert_string_equal(buf_str(&out), smtp);
	if (rest_want != NULL)
		assert_string_equal(rest, rest_want);
	addr_free(&a);
	buf_free(&err);
	buf_free(&out);
}

/* parse_bad - expect a specific error code and a non-empty message */
static void parse_bad(const char *arg, int flags, enum addr_status want)
{
	struct addr a;
	struct buf err = BUF_INIT;
	enum addr_status st;

	addr_init(&a);
	st = addr_parse_path(&a, arg, flags, NULL, &err);
	if (st != want)
		fail_msg("%s: got %d (%s), want %d", arg, st, buf_str(&err), want);
	assert_true(err.len > 0);
	assert_int_equal(a.local.len + a.domain.len, 0);
	addr_free(&a);
	buf_free(&err);
}

static void test_simple_paths(void **state)
{
	parse_ok("<User@Example.COM>", 0, "User@example.com", "<User@example.com>", "");
	parse_ok("<a@b.example> SIZE=100 BODY=8BITMIME", 0, "a@b.example", "<a@b.example>",
		 "SIZE=100 BODY=8BITMIME");
	parse_ok(" <a@b.example>", 0, "a@b.example", "<a@b.example>", "");
	parse_ok("<postmaster>", 0, "postmaster", "<postmaster>", "");
	parse_ok("<a.b-c+d_e@x_y.example>", 0, "a.b-c+d_e@x_y.example", "<a.b-c+d_e@x_y.example>",
		 "");
}

static void test_null_and_route(void **state)
{
	struct addr a;
	const char *rest;

	addr_init(&a);
	assert_int_equal(addr_parse_path(&a, "<> SIZE=5", 0, &rest, NULL), ADDR_OK);
	assert_true(a.flags & ADDR_F_NULL);
	assert_string_equal(rest, "SIZE=5");
	assert_int_equal(
	    addr_parse_path(&a, "<@relay.example,@r2.example:u@d.example>", 0, NULL, NULL),
	    ADDR_OK);
	assert_true(a.flags & ADDR_F_ROUTE);
	assert_string_equal(buf_str(&a.local), "u");
	assert_string_equal(buf_str(&a.domain), "d.example");
	addr_free(&a);
	parse_ok("<>", 0, "", "<>", "");
	parse_bad("<@relay.example u@d.example>", 0, ADDR_ERR_SYNTAX);
	parse_bad("<@relay.example,x:u@d.example>", 0, ADDR_ERR_SYNTAX);
	parse_bad("<@:u@d.example>", 0, ADDR_ERR_DOMAIN);
	parse_bad("<@bad..example:u@d.example>", 0, ADDR_ERR_DOMAIN);
}

static void test_quoted(void **state)
{
	struct addr a;

	parse_ok("<\"john doe\"@Example.com>", 0, "john doe@example.com",
		 "<\"john doe\"@example.com>", "");
	parse_ok("<\"a\\\"b\\\\c\"@x.example>", 0, "a\"b\\c@x.example",
		 "<\"a\\\"b\\\\c\"@x.example>", "");
	/* A quoted dot-atom loses its quotes in the canonical form. */
	parse_ok("<\"plain\"@x.example>", 0, "plain@x.example", "<plain@x.example>", "");
	parse_ok("<\"a>b\"@x.example> X=1", 0, "a>b@x.example", "<\"a>b\"@x.example>", "X=1");
	/* Postfix accepts a..b without strict envelopes and re-quotes it. */
	parse_ok("<a..b@x.example>", 0, "a..b@x.example", "<\"a..b\"@x.example>", "");
	parse_bad("<a..b@x.example>", ADDR_PARSE_STRICT, ADDR_ERR_SYNTAX);
	parse_bad("<.a@x.example>", ADDR_PARSE_STRICT, ADDR_ERR_SYNTAX);
	parse_bad("<\"unterminated@x.example>", 0, ADDR_ERR_SYNTAX);
	parse_bad("<\"a\"b@x.example>", 0, ADDR_ERR_SYNTAX);
	parse_bad("<\"a\tb\"@x.example>", 0, ADDR_ERR_SYNTAX);
	parse_bad("<\"a\\\x01\"@x.example>", 0, ADDR_ERR_SYNTAX);
	addr_init(&a);
	assert_int_equal(addr_parse_path(&a, "<\"\"@x.example>", 0, NULL, NULL), ADDR_OK);
	assert_int_equal(a.local.len, 0);
	addr_free(&a);
}

static void test_literals(void **state)
{
	struct inet_addr ip;

	parse_ok("<u@[192.0.2.1]>", 0, "u@[192.0.2.1]", "<u@[192.0.2.1]>", "");
	parse_ok("<u@[ipv6:2001:DB8::1]>", 0, "u@[IPv6:2001:db8::1]", "<u@[IPv6:2001:db8::1]>", "");
	parse_bad("<u@[192.0.2.256]>", 0, ADDR_ERR_LITERAL);
	parse_bad("<u@[192.0.2]>", 0, ADDR_ERR_LITERAL);
	parse_bad("<u@[2001:db8::1]>", 0, ADDR_ERR_LITERAL);
	parse_bad("<u@[IPv6:2001:db8::g]>", 0, ADDR_ERR_LITERAL);
	parse_bad("<u@[192.0.2.1>", 0, ADDR_ERR_LITERAL);
	parse_bad("<u@[192.0.2.1]x>", 0, ADDR_ERR_LITERAL);
	parse_bad("<u@x[1]>", 0, ADDR_ERR_LITERAL);
	parse_bad("<u@[IPv6:1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb:ccc]>", 0,
		  ADDR_ERR_LITERAL);
	assert_true(addr_literal_parse("[IPv6:::1]", &ip));
	assert_int_equal(ip.family, AF_INET6);
	assert_int_equal(ip.bytes[15], 1);
	assert_false(addr_literal_parse("[IPv6:192.0.2.1]", NULL));
	assert_false(addr_literal_parse("[::1]", NULL));
	assert_false(addr_literal_parse("[]", NULL));
	assert_false(addr_literal_parse("1.2.3.4", NULL));
}

static void test_malformed(void **state)
{
	parse_bad("<a@b.example", 0, ADDR_ERR_SYNTAX);
	parse_bad("a@b.example>", 0, ADDR_ERR_SYNTAX);
	parse_bad("<a@b.example>junk", 0, ADDR_ERR_SYNTAX);
	parse_bad("<a@b.example>>", 0, ADDR_ERR_SYNTAX);
	parse_bad("<a<b@c.example>", 0, ADDR_ERR_SYNTAX);
	parse_bad("<a b@c.example>", 0, ADDR_ERR_SYNTAX);
	parse_bad("<a@>", 0, ADDR_ERR_SYNTAX);
	parse_bad("<@c.example>", 0, ADDR_ERR_SYNTAX);
	parse_bad("<a\x01@c.example>", 0, ADDR_ERR_SYNTAX);
	parse_bad("<a\x7f@c.example>", 0, ADDR_ERR_SYNTAX);
	parse_bad("<a@c\x01.example>", 0, ADDR_ERR_DOMAIN);
	parse_bad("<a@-c.example>", 0, ADDR_ERR_DOMAIN);
	parse_bad("<a@c-.example>", 0, ADDR_ERR_DOMAIN);
	parse_bad("<a@c..example>", 0, ADDR_ERR_DOMAIN);
	parse_bad("<a@c.example.>", 0, ADDR_ERR_DOMAIN);
	parse_bad("<a@1.2.3.4>", 0, ADDR_ERR_DOMAIN);
	parse_bad("<a@b@c.example>", 0, ADDR_ERR_DOMAIN);
	parse_bad("<user>", ADDR_PARSE_NEED_DOMAIN, ADDR_ERR_SYNTAX);
	parse_bad("", ADDR_PARSE_ALLOW_BARE, ADDR_ERR_SYNTAX);
	parse_bad(" <a@b.example>", ADDR_PARSE_STRICT, ADDR_ERR_SYNTAX);
}

static void test_bare(void **state)
{
	parse_ok("a@b.example SIZE=1", ADDR_PARSE_ALLOW_BARE, "a@b.example", "<a@b.example>",
		 "SIZE=1");
	parse_ok("\"x y\"@b.example", ADDR_PARSE_ALLOW_BARE, "x y@b.example", "<\"x y\"@b.example>",
		 "");
	parse_bad("a@b.example", 0, ADDR_ERR_SYNTAX);
	parse_bad("a@b.example>", ADDR_PARSE_ALLOW_BARE, ADDR_ERR_DOMAIN);
}

static void test_length_limits(void **state)
{
	struct addr a;
	struct buf p = BUF_INIT;
	int i;

	addr_init(&a);
	buf_puts(&p, "<");
	for (i = 0; i < 65; i++)
		buf_putc(&p, 'l');
	buf_puts(&p, "@x.example>");
	assert_int_equal(addr_parse_path(&a, buf_str(&p), 0, NULL, NULL), ADDR_OK);
	parse_bad(buf_str(&p), ADDR_PARSE_STRICT, ADDR_ERR_LOCAL_LENGTH);

	buf_set(&p, "<");
	for (i = 0; i < ADDR_LOCAL_LENIENT_MAX + 1; i++)
		buf_putc(&p, 'l');
	buf_puts(&p, "@x.example>");
	parse_bad(buf_str(&p), 0, ADDR_ERR_LOCAL_LENGTH);

	/* 4 labels of 63 + 3 dots = 255 is the maximum; one more octet fails. */
	buf_set(&p, "<u@");
	for (i = 0; i < 4; i++) {
		buf_printf(
		    &p, "%s%.*s", i ? "." : "", 63,
		    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	}
	buf_puts(&p, ">");
	assert_int_equal(addr_parse_path(&a, buf_str(&p), 0, NULL, NULL), ADDR_OK);
	parse_bad(buf_str(&p), ADDR_PARSE_STRICT, ADDR_ERR_PATH_LENGTH);
	buf_truncate(&p, p.len - 1);
	buf_puts(&p, "a>");
	parse_bad(buf_str(&p), 0, ADDR_ERR_DOMAIN_LENGTH);

	buf_set(&p, "<u@");
	for (i = 0; i < 64; i++)
		buf_putc(&p, 'a');
	buf_puts(&p, ".example>");
	parse_bad(buf_str(&p), 0, ADDR_ERR_DOMAIN);

	buf_set(&p, "<u@a.example>");
	for (i = 0; i < 3000; i++)
		buf_putc(&p, ' ');
	assert_int_equal(addr_parse_path(&a, buf_str(&p), 0, NULL, NULL), ADDR_OK);
	addr_free(&a);
	buf_free(&p);
}

static void test_utf8(void **state)
{
	struct addr a;

	addr_init(&a);
	parse_bad("<j\xc3\xb6rg@example.com>", 0, ADDR_ERR_NEED_SMTPUTF8);
	parse_bad("<j@\xc3\xa9xample.com>", 0, ADDR_ERR_NEED_SMTPUTF8);
	assert_int_equal(addr_parse_path(&a, "<J\xc3\xb6rg@\xc3\xa9xample.COM>",
					 ADDR_PARSE_SMTPUTF8, NULL, NULL),
			 ADDR_OK);
	assert_true(a.flags & ADDR_F_UTF8);
	assert_string_equal(buf_str(&a.domain), "\xc3\xa9xample.com");
	assert_string_equal(buf_str(&a.local), "J\xc3\xb6rg");
	assert_int_equal(
	    addr_parse_path(&a, "<ascii@example.com>", ADDR_PARSE_SMTPUTF8, NULL, NULL), ADDR_OK);
	assert_false(a.flags & ADDR_F_UTF8);
	addr_free(&a);
	parse_bad("<j\xc3@example.com>", ADDR_PARSE_SMTPUTF8, ADDR_ERR_UTF8);
	parse_bad("<j\xc0\xaf@example.com>", ADDR_PARSE_SMTPUTF8, ADDR_ERR_UTF8);
	parse_bad("<j\xed\xa0\x80@example.com>", ADDR_PARSE_SMTPUTF8, ADDR_ERR_UTF8);
	parse_bad("<j@ex\xff.com>", ADDR_PARSE_SMTPUTF8, ADDR_ERR_UTF8);
	parse_bad("<\"j\xf4\x90\x80\x80\"@example.com>", ADDR_PARSE_SMTPUTF8, ADDR_ERR_UTF8);
	assert_true(addr_utf8_valid("\xf0\x9f\x93\xa7", 4));
	assert_false(addr_utf8_valid("\xf0\x9f\x93", 3));
}

static void test_domain_checks(void **state)
{
	struct buf err = BUF_INIT;

	assert_int_equal(addr_domain_check("mail.example.com", 0, &err), ADDR_OK);
	assert_int_equal(addr_domain_check("_dmarc.example.com", 0, &err), ADDR_OK);
	assert_int_equal(addr_domain_check("localhost", 0, &err), ADDR_OK);
	assert_int_equal(addr_domain_check("", 0, &err), ADDR_ERR_DOMAIN);
	assert_int_equal(addr_domain_check("a b.example", 0, &err), ADDR_ERR_DOMAIN);
	assert_int_equal(addr_domain_check("123", 0, &err), ADDR_ERR_DOMAIN);
	assert_int_equal(addr_domain_check("host.123", 0, &err), ADDR_ERR_DOMAIN);
	assert_int_equal(addr_domain_check("123.example", 0, &err), ADDR_OK);
	assert_true(addr_domain_is_fqdn("mail.example.com"));
	assert_true(addr_domain_is_fqdn("[192.0.2.1]"));
	assert_false(addr_domain_is_fqdn("localhost"));
	assert_false(addr_domain_is_fqdn(".com"));
	assert_false(addr_domain_is_fqdn("example."));
	assert_false(addr_domain_is_fqdn(""));
	buf_free(&err);
}

static void test_qualify(void **state)
{
	struct addr a;
	struct buf out = BUF_INIT;

	addr_init(&a);
	assert_int_equal(addr_parse_path(&a, "<Postmaster>", 0, NULL, NULL), ADDR_OK);
	addr_qualify(&a, "Example.ORG");
	addr_format_plain(&a, &out);
	assert_string_equal(buf_str(&out), "Postmaster@example.org");
	addr_qualify(&a, "other.example");
	assert_string_equal(buf_str(&a.domain), "example.org");
	assert_int_equal(addr_parse_path(&a, "<>", 0, NULL, NULL), ADDR_OK);
	addr_qualify(&a, "example.org");
	assert_int_equal(a.domain.len, 0);
	assert_int_equal(addr_parse_mailbox(&a, "x@Y.example", 0, NULL), ADDR_OK);
	assert_string_equal(buf_str(&a.domain), "y.example");
	assert_int_equal(addr_parse_mailbox(&a, "<x@Y.example>", 0, NULL), ADDR_ERR_SYNTAX);
	addr_free(&a);
	buf_free(&out);
}

static void split(const char *local, const char *delims, int want, const char *user,
		  const char *ext)
{
	struct buf u = BUF_INIT, e = BUF_INIT;

	assert_int_equal(addr_split_ext(local, delims, &u, &e), want);
	assert_string_equal(buf_str(&u), user);
	assert_string_equal(buf_str(&e), ext);
	buf_free(&u);
	buf_free(&e);
}

static void test_split(void **state)
{
	split("user+ext", "+", '+', "user", "ext");
	split("user+a+b", "+", '+', "user", "a+b");
	split("user-ext", "+-", '-', "user", "ext");
	split("user+", "+", '+', "user", "");
	split("user", "+", 0, "user", "");
	split("+ext", "+", 0, "+ext", "");
	split("user+ext", "", 0, "user+ext", "");
	split("postmaster+x", "+", '+', "postmaster", "x");
	split("Postmaster", "+", 0, "Postmaster", "");
	split("owner-list", "-", 0, "owner-list", "");
	split("list-request", "-", 0, "list-request", "");
	split("owner-list", "+", 0, "owner-list", "");
}

static void test_strerror(void **state)
{
	assert_string_equal(addr_strerror(ADDR_ERR_SYNTAX), "bad address syntax");
	assert_string_equal(addr_strerror(ADDR_ERR_DOMAIN_LENGTH), "domain name too long");
	assert_string_equal(addr_strerror((enum addr_status)99), "unknown address error");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_simple_paths),  cmocka_unit_test(test_null_and_route),
	    cmocka_unit_test(test_quoted),	  cmocka_unit_test(test_literals),
	    cmocka_unit_test(test_malformed),	  cmocka_unit_test(test_bare),
	    cmocka_unit_test(test_length_limits), cmocka_unit_test(test_utf8),
	    cmocka_unit_test(test_domain_checks), cmocka_unit_test(test_qualify),
	    cmocka_unit_test(test_split),	  cmocka_unit_test(test_strerror),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
