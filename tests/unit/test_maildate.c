/* test_maildate.c - Postfix's mail_date() form (shared/maildate.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>

#include "maildate.h"

static void check(time_t t, const char *tz, const char *want)
{
	struct buf out = BUF_INIT;
	setenv("TZ", tz, 1);
	tzset();
	buf_puts(&out, "Date: ");
	mail_date(t, &out);
	assert_string_equal(buf_str(&out), want);
	buf_free(&out);
}

static void test_mail_date(void **state)
{
	/* The day of month is space-padded, as Postfix's "%e"; POSIX TZ
	 * strings need no tzdata. */
	check(1793491200, "UTC", "Date: Sun,  1 Nov 2026 00:00:00 +0000 (UTC)");
	check(1795219200, "UTC", "Date: Sat, 21 Nov 2026 00:00:00 +0000 (UTC)");
	check(1795219200, "EST5", "Date: Fri, 20 Nov 2026 19:00:00 -0500 (EST)");
	check(1795219200, "IST-5:30", "Date: Sat, 21 Nov 2026 05:30:00 +0530 (IST)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mail_date),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
