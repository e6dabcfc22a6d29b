/* maildate.h - the one RFC 5322 date every header Tern writes uses
 * (Received:, Date:, DSN Arrival-Date:), in Postfix's mail_date() form:
 * "Sat,  1 Nov 2026 05:00:00 +0000 (UTC)" — day space-padded, numeric
 * offset, zone name as a comment.
 */
#ifndef TERN_MAILDATE_H
#define TERN_MAILDATE_H

#include "buf.h"

#include <time.h>

/* Append the date of when (local time) to out. */
void mail_date(time_t when, struct buf *out);

#endif
