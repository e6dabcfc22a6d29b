/* deliver_discard.c - the transports that never touch a mailbox, as
 * Postfix's discard(8) and error(8) (postfix.md §6.3): "discard:text"
 * claims delivery and logs the nexthop text as the reason, "error:text"
 * bounces, "retry:text" defers. The text may start with an RFC 3463 code
 * ("5.1.1 gone"), else 2.0.0 / 5.0.0 / 4.0.0. relay=none in the log.
 */
#include "deliver.h"

#include <ctype.h>
#include <string.h>

/* deliver_code_split - "X.Y.Z text" -> code (class must be want), text;
 * otherwise the default code and the whole text. */
static void deliver_code_split(const char *s, char want, const char *def, struct buf *code,
			       const char **text)
{
	size_t n = 0;
	int dots = 0;

	while (isdigit((unsigned char)s[n]) || (s[n] == '.' && ++dots))
		n++;
	buf_set(code, def);
	*text = s;
	if (dots == 2 && n >= 5 && s[0] == want && s[1] == '.' && (s[n] == 0 || s[n] == ' ')) {
		buf_reset(code);
		buf_append(code, s, n);
		for (*text = s + n; **text == ' '; (*text)++)
			;
	}
}

static void deliver_fixed(struct deliver_rcpt *r, const char *nexthop, char want, const char *def,
			  const char *empty)
{
	struct buf code = BUF_INIT;
	const char *text;

	deliver_code_split(nexthop, want, def, &code, &text);
	deliver_report(r, "none", buf_str(&code), "%s", *text ? text : empty);
	buf_free(&code);
}

void deliver_discard(struct deliver_rcpt *r, const char *nexthop)
{
	deliver_fixed(r, nexthop, '2', "2.0.0", "discarded");
}

void deliver_error(struct deliver_rcpt *r, const char *nexthop)
{
	deliver_fixed(r, nexthop, '5', "5.0.0", "unknown reason");
}

void deliver_retry(struct deliver_rcpt *r, const char *nexthop)
{
	deliver_fixed(r, nexthop, '4', "4.0.0", "unknown reason");
}
