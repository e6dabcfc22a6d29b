/* test_matchlist.c - Postfix match lists (shared/matchlist.c): names with
 * and without parent-domain matching, ".domain", negation order, /file
 * lists, type:table items, lookup errors, IPv4/IPv6 networks and errors
 * naming the parameter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "matchlist.h"

static char tmpdir[] = "/tmp/test_matchlist.XXXXXX";

static void write_file(const char *name, const char *text, struct buf *path)
{
	FILE *fp;

	buf_reset(path);
	buf_printf(path, "%s/%s", tmpdir, name);
	fp = fopen(buf_str(path), "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static struct matchlist *mk(const char *value, int flags)
{
	struct buf err = BUF_INIT;
	struct matchlist *l = matchlist_new("test_param", value, flags, &err);

	if (l == NULL)
		fail_msg("matchlist_new(%s): %s", value, buf_str(&err));
	buf_free(&err);
	return l;
}

static int dom(const struct matchlist *l, const char *d)
{
	struct buf err = BUF_INIT;
	int rc = matchlist_domain(l, d, &err);

	buf_free(&err);
	return rc;
}

static int ip(const struct matchlist *l, const char *a)
{
	struct buf err = BUF_INIT;
	int rc = matchlist_addr(l, a, &err);

	buf_free(&err);
	return rc;
}

static void test_names(void **state)
{
	struct matchlist *l = mk("example.com, .sub.example.org", 0);

	assert_int_equal(dom(l, "example.com"), 1);
	assert_int_equal(dom(l, "EXAMPLE.Com"), 1);
	assert_int_equal(dom(l, "a.example.com"), 0); /* no parent matching */
	assert_int_equal(dom(l, "xexample.com"), 0);
	assert_int_equal(dom(l, "a.sub.example.org"), 1); /* ".d": subdomains */
	assert_int_equal(dom(l, "a.b.sub.example.org"), 1);
	assert_int_equal(dom(l, "sub.example.org"), 0);
	assert_int_equal(dom(l, ""), 0);
	assert_int_equal(dom(NULL, "example.com"), 0);
	matchlist_free(l);

	l = mk("example.com .sub.example.org", MATCHLIST_PARENT);
	assert_int_equal(dom(l, "example.com"), 1);
	assert_int_equal(dom(l, "a.b.example.com"), 1);
	assert_int_equal(dom(l, "xexample.com"), 0);
	/* As Postfix's match_hostname(): with the parent feature ".d" is no
	 * subdomain wildcard. */
	assert_int_equal(dom(l, "a.sub.example.org"), 0);
	matchlist_free(l);
}

static void test_negation(void **state)
{
	struct matchlist *l = mk("!bad.example.com, example.com, !example.com", MATCHLIST_PARENT);

	/* First match wins. */
	assert_int_equal(dom(l, "bad.example.com"), 0);
	assert_int_equal(dom(l, "x.bad.example.com"), 0); /* parent: "!bad..." covers it */
	assert_int_equal(dom(l, "good.example.com"), 1);
	assert_int_equal(dom(l, "example.com"), 1);
	assert_int_equal(dom(l, "other.org"), 0);
	matchlist_free(l);

	l = mk("!!example.com", 0); /* double negation */
	assert_int_equal(dom(l, "example.com"), 1);
	matchlist_free(l);
}

static void test_file(void **state)
{
	struct buf path = BUF_INIT, value = BUF_INIT, err = BUF_INIT;
	struct matchlist *l;

	write_file("domains",
		   "# comment\none.example, two.example\n  three.example\n\n"
		   "192.0.2.0/24\n",
		   &path);
	buf_printf(&value, "first.example %s", buf_str(&path));
	l = mk(buf_str(&value), MATCHLIST_ADDR);
	assert_int_equal(dom(l, "first.example"), 1);
	assert_int_equal(dom(l, "one.example"), 1);
	assert_int_equal(dom(l, "two.example"), 1);
	assert_int_equal(dom(l, "three.example"), 1); /* continuation line */
	assert_int_equal(dom(l, "comment"), 0);
	assert_int_equal(ip(l, "192.0.2.9"), 1);
	matchlist_free(l);

	/* "!/file" negates every item of the file. */
	buf_reset(&value);
	buf_printf(&value, "!%s, .example", buf_str(&path));
	l = mk(buf_str(&value), 0);
	assert_int_equal(dom(l, "one.example"), 0);
	assert_int_equal(dom(l, "x.example"), 1);
	matchlist_free(l);

	/* A missing file, as Postfix: every lookup that reaches it fails. */
	buf_reset(&value);
	buf_printf(&value, "first.example %s/nosuchfile", tmpdir);
	l = mk(buf_str(&value), 0);
	assert_int_equal(dom(l, "first.example"), 1);
	assert_int_equal(matchlist_domain(l, "other.example", &err), -1);
	assert_non_null(strstr(buf_str(&err), "nosuchfile"));
	matchlist_free(l);

	buf_free(&path);
	buf_free(&value);
	buf_free(&err);
}

static void test_table(void **state)
{
	struct buf path = BUF_INIT, value = BUF_INIT, err = BUF_INIT;
	struct matchlist *l;

	write_file("table", "tab.example OK\nExcluded.Example OK\n", &path);
	buf_printf(&value, "!excluded.example texthash:%s", buf_str(&path));
	l = mk(buf_str(&value), 0);
	assert_int_equal(dom(l, "tab.example"), 1);
	assert_int_equal(dom(l, "TAB.example"), 1);
	assert_int_equal(dom(l, "excluded.example"), 0);
	assert_int_equal(dom(l, "x.tab.example"), 0); /* parent key would be ".tab.example" */
	assert_int_equal(dom(l, "nope.example"), 0);
	matchlist_free(l);

	l = mk(buf_str(&value) + strlen("!excluded.example "), MATCHLIST_PARENT);
	assert_int_equal(dom(l, "x.tab.example"), 1); /* parent key "tab.example" */
	matchlist_free(l);

	/* A missing table is a lookup error (temporary), not a start failure. */
	buf_reset(&value);
	buf_printf(&value, "texthash:%s/nosuchtable", tmpdir);
	l = mk(buf_str(&value), 0);
	assert_int_equal(matchlist_domain(l, "tab.example", &err), -1);
	assert_true(err.len > 0);
	matchlist_free(l);

	/* An unknown table type is refused, naming the parameter. */
	buf_reset(&err);
	assert_null(matchlist_new("relay_domains", "nosuchtype:/x", 0, &err));
	assert_non_null(strstr(buf_str(&err), "relay_domains"));

	buf_free(&path);
	buf_free(&value);
	buf_free(&err);
}

static void test_networks(void **state)
{
	struct matchlist *l = mk("127.0.0.0/8, 192.0.2.1, [::1]/128, [2001:db8::]/32, "
				 "2001:db8:1::/48 [fe80::1]",
				 MATCHLIST_ADDR);

	assert_int_equal(ip(l, "127.1.2.3"), 1);
	assert_int_equal(ip(l, "128.0.0.1"), 0);
	assert_int_equal(ip(l, "192.0.2.1"), 1);
	assert_int_equal(ip(l, "192.0.2.2"), 0);
	assert_int_equal(ip(l, "::ffff:127.0.0.1"), 1); /* v4-mapped client */
	assert_int_equal(ip(l, "::1"), 1);
	assert_int_equal(ip(l, "::2"), 0);
	assert_int_equal(ip(l, "2001:db8:ffff::1"), 1);
	assert_int_equal(ip(l, "2001:db9::1"), 0);
	assert_int_equal(ip(l, "fe80::1"), 1);
	assert_int_equal(ip(l, "not-an-ip"), 0);
	assert_int_equal(ip(l, NULL), 0);
	matchlist_free(l);

	l = mk("[::1/128] !10.1.0.0/16 10.0.0.0/8", MATCHLIST_ADDR);
	assert_int_equal(ip(l, "::1"), 1);
	assert_int_equal(ip(l, "10.1.2.3"), 0);
	assert_int_equal(ip(l, "10.2.2.3"), 1);
	matchlist_free(l);

	/* Host bits are cleared, as before. */
	l = mk("10.1.2.3/16", MATCHLIST_ADDR);
	assert_int_equal(ip(l, "10.1.200.1"), 1);
	matchlist_free(l);
}

static void test_hosts(void **state)
{
	struct buf err = BUF_INIT;
	struct matchlist *l =
	    mk("!bad.example.com example.com 192.0.2.0/24", MATCHLIST_ADDR | MATCHLIST_PARENT);

	assert_int_equal(matchlist_host(l, "mail.example.com", "198.51.100.1", &err), 1);
	assert_int_equal(matchlist_host(l, "bad.example.com", "192.0.2.1", &err), 0);
	assert_int_equal(matchlist_host(l, "unknown", "192.0.2.1", &err), 1);
	assert_int_equal(matchlist_host(l, "unknown", "198.51.100.1", &err), 0);
	matchlist_free(l);
	buf_free(&err);
}

static void test_bad_entries(void **state)
{
	static const char *const bad[] = {
	    "10.0.0.0/33", "[::1]/129", "[1.2.3.4", "1.2.3.4/x", "[example.com]", "!", "a b !",
	};
	struct buf err = BUF_INIT;

	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		buf_reset(&err);
		if (matchlist_new("mynetworks", bad[i], MATCHLIST_ADDR, &err) != NULL)
			fail_msg("accepted \"%s\"", bad[i]);
		if (strncmp(buf_str(&err), "mynetworks: ", 12) != 0)
			fail_msg("\"%s\": %s", bad[i], buf_str(&err));
	}
	buf_free(&err);
}

static void test_domain_list_literals(void **state)
{
	/* In a domain list (no MATCHLIST_ADDR) these are just names. */
	struct matchlist *l = mk("[1.2.3.4] 192.0.2.1", 0);

	assert_int_equal(dom(l, "[1.2.3.4]"), 1);
	assert_int_equal(dom(l, "192.0.2.1"), 1);
	assert_int_equal(ip(l, "192.0.2.1"), 0);
	matchlist_free(l);
}

static int setup(void **state)
{
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names),	cmocka_unit_test(test_negation),
	    cmocka_unit_test(test_file),	cmocka_unit_test(test_table),
	    cmocka_unit_test(test_networks),	cmocka_unit_test(test_hosts),
	    cmocka_unit_test(test_bad_entries), cmocka_unit_test(test_domain_list_literals),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
