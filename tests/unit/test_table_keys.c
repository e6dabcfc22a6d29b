/* test_table_keys.c - lookup-key order (shared/table_keys.c) for
 * addresses, domains, clients, HELO and transports, pinned against the
 * orders in postfix.md §3.4/§6.3, and table_lookup_keys() on indexed and
 * pattern tables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "table_keys.h"

/* "key|key*|..." with '*' marking whole-string keys. */
static char *dump(struct table_keys *k)
{
	struct buf out = BUF_INIT;
	for (size_t i = 0; i < k->count; i++)
		buf_printf(&out, "%s%s|", k->v[i].key, k->v[i].whole ? "*" : "");
	table_keys_free(k);
	return buf_detach(&out);
}

#define ASSERT_KEYS(call, want)                                                                    \
	do {                                                                                       \
		struct table_keys k = TABLE_KEYS_INIT;                                             \
		call;                                                                              \
		char *got = dump(&k);                                                              \
		assert_string_equal(got, want);                                                    \
		free(got);                                                                         \
	} while (0)

static void test_address(void **state)
{
	ASSERT_KEYS(table_keys_address(&k, "user+ext@sub.example.com", "+", TABLE_KEYS_PARENT),
		    "user+ext@sub.example.com*|user@sub.example.com|sub.example.com|example.com|"
		    "com|user+ext@|user@|");
	ASSERT_KEYS(table_keys_address(&k, "user+ext@sub.example.com", "+", 0),
		    "user+ext@sub.example.com*|user@sub.example.com|sub.example.com|.example.com|"
		    ".com|user+ext@|user@|");
	/* No extension: no duplicate keys. */
	ASSERT_KEYS(table_keys_address(&k, "user@example.com", "+", TABLE_KEYS_PARENT),
		    "user@example.com*|example.com|com|user@|");
	/* Several delimiter characters: the first one present splits. */
	ASSERT_KEYS(table_keys_address(&k, "a-b+c@x.org", "+-", TABLE_KEYS_PARENT),
		    "a-b+c@x.org*|a@x.org|x.org|org|a-b+c@|a@|");
	/* Never split at position 0, nor owner-/-request with '-'. */
	ASSERT_KEYS(table_keys_address(&k, "+x@d.org", "+", TABLE_KEYS_PARENT),
		    "+x@d.org*|d.org|org|+x@|");
	ASSERT_KEYS(table_keys_address(&k, "owner-list@d.org", "-", TABLE_KEYS_PARENT),
		    "owner-list@d.org*|d.org|org|owner-list@|");
	ASSERT_KEYS(table_keys_address(&k, "list-request@d.org", "-", TABLE_KEYS_PARENT),
		    "list-request@d.org*|d.org|org|list-request@|");
	ASSERT_KEYS(table_keys_address(&k, "u+e@d.org", NULL, TABLE_KEYS_PARENT),
		    "u+e@d.org*|d.org|org|u+e@|");
	/* Null sender, no domain, domain literal, odd shapes. */
	ASSERT_KEYS(table_keys_address(&k, "", "+", 0), "<>*|");
	ASSERT_KEYS(table_keys_address(&k, NULL, "+", 0), "<>*|");
	ASSERT_KEYS(table_keys_address(&k, "user+x", "+", 0), "user+x*|user|");
	ASSERT_KEYS(table_keys_address(&k, "u@[1.2.3.4]", "+", TABLE_KEYS_PARENT),
		    "u@[1.2.3.4]*|[1.2.3.4]|u@|");
	ASSERT_KEYS(table_keys_address(&k, "u@", "+", 0), "u@*|");
	ASSERT_KEYS(table_keys_address(&k, "@d.org", "+", 0), "@d.org*|d.org|.org|");
	ASSERT_KEYS(table_keys_address(&k, "\"a@b\"@d.org", "+", 0),
		    "\"a@b\"@d.org*|d.org|.org|\"a@b\"@|");
	ASSERT_KEYS(table_keys_address(&k, "u@d.org.", "+", TABLE_KEYS_PARENT),
		    "u@d.org.*|d.org.|org.|u@|");
}

static void test_domain_client_helo(void **state)
{
	ASSERT_KEYS(table_keys_domain(&k, "a.b.example.com", TABLE_KEYS_PARENT),
		    "a.b.example.com*|b.example.com|example.com|com|");
	ASSERT_KEYS(table_keys_domain(&k, "localhost", 0), "localhost*|");
	ASSERT_KEYS(table_keys_domain(&k, "", 0), "");
	ASSERT_KEYS(table_keys_client(&k, "mail.example.com", "192.0.2.7", TABLE_KEYS_PARENT),
		    "mail.example.com*|example.com|com|192.0.2.7*|192.0.2|192.0|192|");
	ASSERT_KEYS(table_keys_client(&k, NULL, "2001:db8::1", 0),
		    "2001:db8::1*|2001:db8:|2001:db8|2001|");
	ASSERT_KEYS(table_keys_client(&k, "unknown", "::1", 0), "unknown*|::1*|:|");
	ASSERT_KEYS(table_keys_client(&k, "", "", 0), "");
	ASSERT_KEYS(table_keys_helo(&k, "mx.example.com", 0), "mx.example.com*|.example.com|.com|");
	ASSERT_KEYS(table_keys_helo(&k, "192.0.2.1", TABLE_KEYS_PARENT), "192.0.2.1*|");
	ASSERT_KEYS(table_keys_helo(&k, "[192.0.2.1]", TABLE_KEYS_PARENT), "[192.0.2.1]*|");
	ASSERT_KEYS(table_keys_helo(&k, NULL, 0), "");
}

static void test_transport(void **state)
{
	ASSERT_KEYS(table_keys_transport(&k, "u+e@sub.example.com", "+", 0),
		    "u+e@sub.example.com*|u@sub.example.com|sub.example.com|.example.com|.com|*|");
	ASSERT_KEYS(table_keys_transport(&k, "u@example.com", "+", TABLE_KEYS_PARENT),
		    "u@example.com*|example.com|com|*|");
	ASSERT_KEYS(table_keys_transport(&k, "", "+", 0), "*|");
}

static void test_lookup_keys(void **state)
{
	struct buf err = BUF_INIT, value = BUF_INIT, matched = BUF_INIT;
	struct table_keys k = TABLE_KEYS_INIT;
	struct table *t = table_open("inline:{ com=TLD, {user@=any domain}, "
				     "User@Example.COM=exact }",
				     &err);
	assert_non_null(t);

	table_keys_address(&k, "USER+x@Example.com", "+", TABLE_KEYS_PARENT);
	/* Keys are folded by table_lookup: "user@example.com" wins. */
	assert_int_equal(table_lookup_keys(t, &k, &value, &matched, &err), TABLE_FOUND);
	assert_string_equal(value.data, "exact");
	assert_string_equal(matched.data, "USER@Example.com");
	table_keys_reset(&k);
	table_keys_address(&k, "other@sub.example.com", "+", TABLE_KEYS_PARENT);
	assert_int_equal(table_lookup_keys(t, &k, &value, &matched, &err), TABLE_FOUND);
	assert_string_equal(value.data, "TLD");
	assert_string_equal(matched.data, "com");
	table_keys_reset(&k);
	table_keys_address(&k, "user@x.org", "+", 0);
	assert_int_equal(table_lookup_keys(t, &k, &value, NULL, &err), TABLE_FOUND);
	assert_string_equal(value.data, "any domain");
	table_keys_reset(&k);
	table_keys_address(&k, "nobody@x.org", "+", 0);
	assert_int_equal(table_lookup_keys(t, &k, &value, &matched, &err), TABLE_NOTFOUND);
	table_close(t);

	/* A pattern table sees only whole strings: not "192.0.2", not parents. */
	t = table_open("cidr:{ {192.0.2.7 exact}, {10.0.0.0/8 net} }", &err);
	assert_non_null(t);
	table_keys_reset(&k);
	table_keys_client(&k, "10.0.0.1", "192.0.2.7", 0);
	assert_int_equal(table_lookup_keys(t, &k, &value, &matched, &err), TABLE_FOUND);
	assert_string_equal(value.data, "net");
	assert_string_equal(matched.data, "10.0.0.1");
	table_keys_reset(&k);
	table_keys_client(&k, "host.example", "192.0.2.8", 0);
	assert_int_equal(table_lookup_keys(t, &k, &value, &matched, &err), TABLE_NOTFOUND);
	table_close(t);
	table_keys_free(&k);
	buf_free(&err);
	buf_free(&value);
	buf_free(&matched);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_address),
	    cmocka_unit_test(test_domain_client_helo),
	    cmocka_unit_test(test_transport),
	    cmocka_unit_test(test_lookup_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
