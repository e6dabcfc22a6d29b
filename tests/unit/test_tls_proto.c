/* test_tls_proto.c - Postfix TLS protocol lists as an OpenSSL version
 * floor, and which names may go in SNI (RFC 6066 §3: DNS host names in
 * A-label form, never addresses). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <openssl/ssl.h>
#include <string.h>

#include "tls_proto.h"

static void test_sni_names(void **state)
{
	static const char *const good[] = {"mx.example.com", "EXAMPLE.org",	      "a",
					   "x-1.y2.z",	     "xn--bcher-kva.example", "1.example"};
	static const char *const bad[] = {"",
					  "192.0.2.1",
					  "10.0.0",
					  ".example.com",
					  "example..com",
					  "example.com.",
					  "a b",
					  "bücher.example",
					  "under_score.example",
					  "[192.0.2.1]",
					  "host:25"};
	char label[70], name[300];

	for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++)
		assert_int_equal(tls_sni_name_valid(good[i]), 1);
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
		assert_int_equal(tls_sni_name_valid(bad[i]), 0);
	memset(label, 'a', 63);
	label[63] = 0;
	assert_int_equal(tls_sni_name_valid(label), 1); /* 63: the longest label */
	strcpy(label + 63, "a");
	assert_int_equal(tls_sni_name_valid(label), 0);
	memset(name, 'a', sizeof(name));
	for (size_t i = 1; i < 254; i += 2)
		name[i] = '.';
	name[253] = 0;
	assert_int_equal(tls_sni_name_valid(name), 1); /* 253 octets */
	name[253] = 'a';
	name[254] = 0;
	assert_int_equal(tls_sni_name_valid(name), 0);
}

static void test_protocol_floor(void **state)
{
	char *gt[] = {">=TLSv1.2"}, *neg[] = {"!SSLv3", "!TLSv1", "!TLSv1.1"}, *bad[] = {"TLSv9"};
	struct cfg_list l = {gt, 1};
	struct buf err = BUF_INIT;
	int min = TLS1_VERSION;

	assert_int_equal(tls_protocol_floor(&l, "p", &min, &err), 0);
	assert_int_equal(min, TLS1_2_VERSION);
	l = (struct cfg_list){neg, 3};
	min = TLS1_VERSION;
	assert_int_equal(tls_protocol_floor(&l, "p", &min, &err), 0);
	assert_int_equal(min, TLS1_2_VERSION);
	l = (struct cfg_list){bad, 1};
	assert_int_equal(tls_protocol_floor(&l, "smtp_tls_protocols", &min, &err), -1);
	assert_non_null(strstr(buf_str(&err), "smtp_tls_protocols"));
	buf_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sni_names),
	    cmocka_unit_test(test_protocol_floor),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
