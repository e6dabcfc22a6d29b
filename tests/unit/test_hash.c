/* test_hash.c - unit tests for shared/hash.c: FNV-1a 64 reference values,
 * the string form equal to the buffer form, bytes after a NUL counted in
 * the buffer form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "hash.h"

static void test_reference_values(void **state)
{
	assert_true(hash_fnv1a("", 0) == 0xcbf29ce484222325ULL);
	assert_true(hash_fnv1a("a", 1) == 0xaf63dc4c8601ec8cULL);
	assert_true(hash_fnv1a("foobar", 6) == 0x85944171f73967e8ULL);
	assert_true(hash_fnv1a_str("") == 0xcbf29ce484222325ULL);
	assert_true(hash_fnv1a_str("foobar") == 0x85944171f73967e8ULL);
}

static void test_buffer_goes_past_nul(void **state)
{
	assert_true(hash_fnv1a("a\0b", 3) == 0xe5d29919042666b2ULL);
	assert_true(hash_fnv1a_str("a\0b") == hash_fnv1a("a", 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reference_values),
	    cmocka_unit_test(test_buffer_goes_past_nul),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
