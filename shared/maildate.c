/* maildate.c - RFC 5322 §3.3 dates in Postfix's form (see maildate.h). */
#include "maildate.h"

#include <stdlib.h>

void mail_date(time_t when, struct buf *out)
{
	struct tm tm;
	char text[64], zone[16];
	long off;

	localtime_r(&when, &tm);
	off = tm.tm_gmtoff / 60;
	strftime(text, sizeof(text), "%a, %e %b %Y %H:%M:%S", &tm);
	if (strftime(zone, sizeof(zone), "%Z", &tm) == 0)
		zone[0] = 0;
	buf_printf(out, "%s %c%02ld%02ld (%s)", text, off < 0 ? '-' : '+', labs(off) / 60,
		   labs(off) % 60, zone);
}
