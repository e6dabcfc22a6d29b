/* test_crc32c.c - unit tests for shared/crc32c.c: the RFC 3720 B.4 test
 * vectors, incremental use, and the hardware and table paths agreeing on
 * every length and alignment.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "crc32c.h"

static void test_vectors(void **state)
{
	unsigned char b[32];

	assert_int_equal(crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(crc32c_sw(0, "123456789", 9), 0xE3069283u);
	memset(b, 0, sizeof(b));
	assert_int_equal(crc32c(0, b, sizeof(b)), 0x8A9136AAu);
	memset(b, 0xff, sizeof(b));
	assert_int_equal(crc32c(0, b, sizeof(b)), 0x62A8AB43u);
	for (int i = 0; i < 32; i++)
		b[i] = (unsigned char)i;
	assert_int_equal(crc32c(0, b, sizeof(b)), 0x46DD794Eu);
	for (int i = 0; i < 32; i++)
		b[i] = (unsigned char)(31 - i);
	assert_int_equal(crc32c_sw(0, b, sizeof(b)), 0x113FDB5Cu);
	assert_int_equal(crc32c(0, "", 0), 0);
}

static void test_incremental_and_paths(void **state)
{
	unsigned char buf[1100];
	uint32_t whole, parts;

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)(i * 131 + 7);
	for (size_t off = 0; off < 9; off++) {
		for (size_t len = 0; len + off <= sizeof(buf); len += 37) {
			whole = crc32c(0, buf + off, len);
			assert_int_equal(whole, crc32c_sw(0, buf + off, len));
			parts = crc32c(crc32c(0, buf + off, len / 3), buf + off + len / 3,
				       len - len / 3);
			assert_int_equal(whole, parts);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_vectors),
	    cmocka_unit_test(test_incremental_and_paths),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
