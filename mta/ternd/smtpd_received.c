/* smtpd_received.c - the Received: header smtpd puts first in every
 * message, in Postfix's layout (smtpd.c, mail_date.c):
 *   Received: from HELO (NAME [ADDR])
 *   	(using TLSv1.3 with cipher ... (256/256 bits))     with TLS
 *   	(No client certificate requested)
 *   	(Authenticated sender: USER)   smtpd_sasl_authenticated_header
 *   	by MYHOSTNAME (MAIL_NAME) with PROTO id QID
 *   	for <RCPT>; Sat, 21 Nov 2026 05:00:00 +0000 (UTC)
 * "for" only with exactly one recipient; otherwise the date follows "id QID;".
 * Pitfall: the day of month is space-padded ("%e"), as Postfix's mail_date().
 */
#include "maildate.h"
#include "smtpd_int.h"

#include <stdlib.h>
#include <time.h>

void smtpd_received_format(struct smtpd_session *s, time_t when, struct buf *out)
{
	const struct smtpd_conf *c = s->conf;
	const char *proto = smtpd_proto_name(s); /* ESMTPSA... RFC 3848 */

	buf_printf(out, "Received: from %s (%s [%s])\n", s->helo ? s->helo : s->client.name,
		   s->client.name, s->client.rfc_addr);
	smtpd_tls_received(s, out);  /* (using TLSv1.3 with cipher ...) */
	smtpd_sasl_received(s, out); /* (Authenticated sender: ...) */
	if (s->env.nrcpt == 1 && s->first_rcpt) {
		buf_printf(out, "\tby %s (%s) with %s id %s\n", c->myhostname, c->mail_name, proto,
			   s->qid);
		buf_puts(out, "\tfor <");
		buf_puts(out, s->first_rcpt);
		buf_puts(out, ">; ");
	} else {
		buf_printf(out, "\tby %s (%s) with %s id %s;\n\t", c->myhostname, c->mail_name,
			   proto, s->qid);
	}
	mail_date(when, out);
	buf_putc(out, '\n');
}
