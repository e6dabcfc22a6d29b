/* smtpd_explain.h - "tern explain" (smtpd_explain.c): the access checks of
 * an imagined SMTP session, step by step, with ternd's own engine. The
 * CLI (mta/tern/cmd_explain.c) builds the listener's smtpd_conf and calls
 * smtpd_explain(); nothing is queued.
 */
#ifndef TERN_SMTPD_EXPLAIN_H
#define TERN_SMTPD_EXPLAIN_H

#include <stddef.h>
#include <stdio.h>

struct smtpd_conf;

struct smtpd_explain_req {
	const char *addr;     /* client IP address */
	const char *name;     /* verified client name, NULL: unknown */
	const char *rev_name; /* reverse name, NULL: as name */
	const char *helo;     /* NULL: no HELO/EHLO */
	const char *sender;   /* "" for the null sender */
	const char *const *rcpt;
	size_t nrcpt;
};

/* Print the evaluation to out; 0 when every command would be accepted. */
int smtpd_explain(struct smtpd_conf *conf, const struct smtpd_explain_req *req, FILE *out);

#endif
