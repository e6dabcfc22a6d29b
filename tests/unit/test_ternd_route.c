/* test_ternd_route.c - routing decisions (mta/ternd/route.c): domain
 * classes in Postfix's order, domain_list matching (exact vs parent
 * style, ".domain", "!exclusion", /file, type:table), default transports
 * and nexthops, transport_maps overrides, and the null recipient.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../mta/ternd/route.h"
#include "cfg.h"
#include "params.h"

static char domfile[] = "/tmp/test_route_XXXXXX";

static struct route_conf *conf_make(const char *text)
{
	struct cfg *c = cfg_new(tern_params);
	struct buf err = BUF_INIT;
	struct route_conf *rc;

	if (cfg_parse_string(c, "test.conf", text, &err) < 0 || cfg_validate(c, &err) < 0)
		fail_msg("config: %s", buf_str(&err));
	rc = route_conf_new(c, &err);
	if (rc == NULL)
		fail_msg("route_conf_new: %s", buf_str(&err));
	cfg_free(c);
	buf_free(&err);
	return rc;
}

static const char *base_conf(void)
{
	static char text[2048];

	snprintf(text, sizeof(text),
		 "myhostname = mx.example.com\n"
		 "mydestination = $myhostname, localhost, .sub.local.example\n"
		 "virtual_mailbox_domains = example.test, %s\n"
		 "relay_domains = !bad.relay.example, relay.example, inline:{ tab.example=x }\n"
		 "transport_maps = inline:{ {special@example.org=discard:gone away},"
		 " example.net=error:5.1.2 , {.sub.example.net=retry:4.4.1 later},"
		 " {only@example.com=:[10.0.0.1]:2525} }\n",
		 domfile);
	return text;
}

static void expect(const struct route_conf *rc, const char *addr, enum route_class cls,
		   const char *transport, const char *nexthop)
{
	struct route r;
	struct buf err = BUF_INIT;

	route_init(&r);
	if (route_resolve(rc, addr, &r, &err) < 0)
		fail_msg("%s: %s", addr, buf_str(&err));
	if (r.cls != cls || strcmp(buf_str(&r.transport), transport) != 0 ||
	    strcmp(buf_str(&r.nexthop), nexthop) != 0)
		fail_msg("%s: got %s %s:%s, want %s %s:%s", addr, route_class_name(r.cls),
			 buf_str(&r.transport), buf_str(&r.nexthop), route_class_name(cls),
			 transport, nexthop);
	route_free(&r);
	buf_free(&err);
}

static void test_classes(void **state)
{
	struct route_conf *rc = conf_make(base_conf());

	expect(rc, "joe@localhost", ROUTE_LOCAL, "local", "mx.example.com");
	expect(rc, "Joe@mx.example.com", ROUTE_LOCAL, "local", "mx.example.com");
	expect(rc, "joe", ROUTE_LOCAL, "local", "mx.example.com");
	expect(rc, "joe@example.test", ROUTE_VIRTUAL, "virtual", "example.test");
	expect(rc, "joe@relay.example", ROUTE_RELAY, "relay", "relay.example");
	expect(rc, "joe@gmail.example", ROUTE_DEFAULT, "smtp", "gmail.example");
	/* The null recipient is MAILER-DAEMON@$myhostname: local. */
	expect(rc, "", ROUTE_LOCAL, "local", "mx.example.com");
	route_conf_free(rc);
}

static void test_subdomains(void **state)
{
	struct route_conf *rc = conf_make(base_conf());

	/* mydestination is not parent style: no sub-domains... */
	expect(rc, "a@x.localhost", ROUTE_DEFAULT, "smtp", "x.localhost");
	/* ...unless listed as ".domain", which matches only sub-domains. */
	expect(rc, "a@x.sub.local.example", ROUTE_LOCAL, "local", "mx.example.com");
	expect(rc, "a@sub.local.example", ROUTE_DEFAULT, "smtp", "sub.local.example");
	/* relay_domains is parent style (parent_domain_matches_subdomains). */
	expect(rc, "a@deep.relay.example", ROUTE_RELAY, "relay", "deep.relay.example");
	/* "!bad.relay.example" before the parent excludes it. */
	expect(rc, "a@bad.relay.example", ROUTE_DEFAULT, "smtp", "bad.relay.example");
	/* type:table items: the domain is the key, parents too. */
	expect(rc, "a@tab.example", ROUTE_RELAY, "relay", "tab.example");
	expect(rc, "a@x.tab.example", ROUTE_RELAY, "relay", "x.tab.example");
	/* /file items. */
	expect(rc, "a@file.example", ROUTE_VIRTUAL, "virtual", "file.example");
	expect(rc, "a@other.example", ROUTE_VIRTUAL, "virtual", "other.example");
	route_conf_free(rc);
}

static void test_transport_maps(void **state)
{
	struct route_conf *rc = conf_make(base_conf());

	expect(rc, "special@example.org", ROUTE_DEFAULT, "discard", "gone away");
	expect(rc, "other@example.org", ROUTE_DEFAULT, "smtp", "example.org");
	expect(rc, "x@example.net", ROUTE_DEFAULT, "error", "5.1.2");
	expect(rc, "x@a.sub.example.net", ROUTE_DEFAULT, "retry", "4.4.1 later");
	/* ":nexthop" keeps the transport, changes the nexthop. */
	expect(rc, "only@example.com", ROUTE_DEFAULT, "smtp", "[10.0.0.1]:2525");
	route_conf_free(rc);
}

static void test_case_and_defaults(void **state)
{
	struct route_conf *rc = conf_make("myhostname = h.example\n"
					  "mydestination = LocalHost\n"
					  "default_transport = discard\n"
					  "local_transport = local\n");

	expect(rc, "u@localhost", ROUTE_LOCAL, "local", "localhost");
	expect(rc, "u@elsewhere.example", ROUTE_DEFAULT, "discard", "elsewhere.example");
	route_conf_free(rc);
}

static void test_bad_table(void **state)
{
	struct cfg *c = cfg_new(tern_params);
	struct buf err = BUF_INIT;

	assert_int_equal(cfg_parse_string(c, "t", "mydestination = nosuchtype:/x\n", &err), 0);
	assert_null(route_conf_new(c, &err));
	assert_true(strstr(buf_str(&err), "mydestination") != NULL);
	cfg_free(c);
	buf_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_classes),	   cmocka_unit_test(test_subdomains),
	    cmocka_unit_test(test_transport_maps), cmocka_unit_test(test_case_and_defaults),
	    cmocka_unit_test(test_bad_table),
	};
	int fd = mkstemp(domfile), rc;

	if (fd < 0 || write(fd, "file.example\nother.example, # comment\n", 38) != 38)
		return 1;
	close(fd);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	unlink(domfile);
	return rc;
}
