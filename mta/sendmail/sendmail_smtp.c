/* sendmail_smtp.c - "sendmail -bs": an RFC 5321 server on stdin/stdout,
 * as Postfix's smtpd in stand-alone mode. The client is a local program
 * (like plain sendmail's caller), so there are no access checks and MAIL
 * FROM may name any sender; each message accepted with DATA becomes one
 * maildrop file (sm_drop_message) and its 250 is sent only once that
 * file is durable.
 * Pitfalls: input is untrusted (command lines are bounded, the size limit
 * applies while DATA is read, smtpd_hard_error_limit ends a runaway
 * client); replies to pipelined commands go out together when the input
 * runs dry (RFC 2920 §3.2), so input is read through our own buffer, not
 * stdio, which cannot say whether the next read would block.
 */
#include "addr.h"
#include "maildate.h"
#include "sendmail.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define SMTP_IN_SIZE 8192

/* smtp_getline() results */
#define SMTP_LINE_EOF 0
#define SMTP_LINE_OK 1
#define SMTP_LINE_CUT 2 /* longer than asked for; the rest was discarded */

/* smtp_data_read() results */
#define SMTP_DATA_OK 0
#define SMTP_DATA_TOO_BIG 1 /* read to the end, content discarded */
#define SMTP_DATA_EOF (-1)  /* input ended before the lone "." */

struct smtp_session {
	const struct sm_env *e;
	const char *fullname;
	int fd; /* input */
	int eof;
	size_t pos, len; /* unread input is data[pos..len) */
	char data[SMTP_IN_SIZE];
	FILE *out;
	struct buf line;
	char *helo; /* made printable; NULL before HELO/EHLO */
	int esmtp;
	int in_mail;	   /* MAIL accepted: a transaction is open */
	struct buf sender; /* maildrop form; "" is the null sender */
	struct sm_list rcpt;
	long long errors; /* 4xx/5xx replies, against smtpd_hard_error_limit */
	int done;	  /* QUIT, end of input, or 421 */
	int status;	  /* exit status once done */
};

struct smtp_cmd {
	const char *name;
	/* 0 for a 2xx/3xx reply, -1 for 4xx/5xx (it counts as an error) */
	int (*fn)(struct smtp_session *s, const char *arg);
};

static void smtp_reply(struct smtp_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void smtp_reply(struct smtp_session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(s->out, fmt, ap);
	va_end(ap);
	fputs("\r\n", s->out);
}

/* Refill the empty input buffer. Replies still buffered are written
 * first: the client may be waiting for them before it sends more. */
static int smtp_fill(struct smtp_session *s)
{
	ssize_t n;

	if (fflush(s->out) == EOF) { /* the client went away (EPIPE) */
		s->eof = 1;
		return -1;
	}
	do
		n = read(s->fd, s->data, sizeof(s->data));
	while (n < 0 && errno == EINTR);
	if (n <= 0) {
		s->eof = 1;
		return -1;
	}
	s->pos = 0;
	s->len = (size_t)n;
	return 0;
}

/* One line into line, without LF or CRLF (both are accepted, as for
 * plain sendmail), keeping at most max bytes. A last line without LF
 * counts as a line. */
static int smtp_getline(struct smtp_session *s, struct buf *line, size_t max)
{
	int got = 0, cut = 0;

	buf_reset(line);
	while (s->pos < s->len || (!s->eof && smtp_fill(s) == 0)) {
		const char *start = s->data + s->pos;
		const char *nl = memchr(start, '\n', s->len - s->pos);
		size_t n = nl ? (size_t)(nl - start) : s->len - s->pos;

		got = 1;
		s->pos += n + (nl != NULL);
		if (line->len + n > max) {
			n = max - line->len;
			cut = 1;
		}
		buf_append(line, start, n);
		if (nl)
			break;
	}
	if (!got)
		return SMTP_LINE_EOF;
	if (!cut && line->len > 0 && line->data[line->len - 1] == '\r')
		buf_truncate(line, line->len - 1);
	return cut ? SMTP_LINE_CUT : SMTP_LINE_OK;
}

static void smtp_txn_reset(struct smtp_session *s)
{
	s->in_mail = 0;
	buf_reset(&s->sender);
	sm_list_free(&s->rcpt);
}

/* The address of MAIL FROM:/RCPT TO: in the form pickup reads (local
 * part quoted when it is not a dot-atom; unqualified stays so, pickup
 * appends @$myorigin as for plain sendmail's arguments). *params gets
 * the ESMTP parameters. -1 for the null path; -2 for a bad address. */
static int smtp_path(const char *arg, struct buf *out, const char **params, int *need_utf8)
{
	struct addr a;
	struct buf err = BUF_INIT;
	enum addr_status st;
	int rc = -2;

	addr_init(&a);
	buf_reset(out);
	/* No SMTPUTF8 offered: a UTF-8 address needs a declaration we
	 * cannot take (RFC 6531 §3.7.4.1). */
	st = addr_parse_path(&a, arg, ADDR_PARSE_ALLOW_BARE, params, &err);
	*need_utf8 = st == ADDR_ERR_NEED_SMTPUTF8;
	if (st == ADDR_OK && (a.flags & ADDR_F_NULL)) {
		rc = -1;
	} else if (st == ADDR_OK) {
		addr_local_quote(buf_str(&a.local), out);
		if (a.domain.len > 0)
			buf_printf(out, "@%s", a.domain.data);
		rc = sm_drop_addr_ok(out->data) ? 0 : -2;
	}
	addr_free(&a);
	buf_free(&err);
	return rc;
}

/* "FROM:" / "TO:" then the path; NULL when the keyword is missing. */
static const char *smtp_path_arg(const char *arg, const char *kw)
{
	size_t n = strlen(kw);

	if (strncasecmp(arg, kw, n) != 0)
		return NULL;
	arg += n;
	arg += strspn(arg, " \t");
	return *arg ? arg : NULL;
}

/* ------------------------------------------------------------------ */
/* HELO / EHLO                                                         */

static int smtp_helo_common(struct smtp_session *s, const char *arg, int esmtp)
{
	if (*arg == 0) {
		smtp_reply(s, esmtp ? "501 Syntax: EHLO hostname" : "501 Syntax: HELO hostname");
		return -1;
	}
	/* RFC 5321 §4.1.4: a new EHLO/HELO resets the transaction. */
	smtp_txn_reset(s);
	free(s->helo);
	s->helo = xstrdup(arg);
	/* It lands in Received:, made printable as Postfix does. */
	for (unsigned char *cp = (unsigned char *)s->helo; *cp; cp++)
		if (*cp < 0x20 || *cp == 0x7f)
			*cp = '?';
	s->esmtp = esmtp;
	return 0;
}

static int smtp_helo(struct smtp_session *s, const char *arg)
{
	if (smtp_helo_common(s, arg, 0) < 0)
		return -1;
	smtp_reply(s, "250 %s", s->e->hostname.data);
	return 0;
}

static int smtp_ehlo(struct smtp_session *s, const char *arg)
{
	if (smtp_helo_common(s, arg, 1) < 0)
		return -1;
	/* Postfix's order (smtpd.c ehlo_cmd()), less what -bs does not do. */
	smtp_reply(s, "250-%s", s->e->hostname.data);
	smtp_reply(s, "250-PIPELINING");
	if (s->e->size_limit > 0)
		smtp_reply(s, "250-SIZE %lld", s->e->size_limit);
	else
		smtp_reply(s, "250-SIZE");
	smtp_reply(s, "250-ENHANCEDSTATUSCODES");
	smtp_reply(s, "250 8BITMIME");
	return 0;
}

/* ------------------------------------------------------------------ */
/* MAIL / RCPT                                                         */

/* RFC 1870 SIZE=n and RFC 6152 BODY=7BIT|8BITMIME; nothing else is
 * offered. The body type needs no record: pickup looks at the bytes. */
static int smtp_mail_param(struct smtp_session *s, const char *p)
{
	const char *v = strchr(p, '=');
	char *end;
	long long size;

	if (v && v - p == 4 && strncasecmp(p, "SIZE", 4) == 0) {
		errno = 0;
		size = strtoll(v + 1, &end, 10);
		if (v[1] < '0' || v[1] > '9' || *end) {
			smtp_reply(s, "501 5.5.4 Bad message size syntax");
			return -1;
		}
		if (errno == ERANGE) {
			smtp_reply(s, "552 5.3.4 Message size exceeds file system imposed limit");
			return -1;
		}
		if (s->e->size_limit > 0 && size > s->e->size_limit) {
			smtp_reply(s, "552 5.3.4 Message size exceeds fixed limit");
			return -1;
		}
		return 0;
	}
	if (v && v - p == 4 && strncasecmp(p, "BODY", 4) == 0 &&
	    (strcasecmp(v + 1, "7BIT") == 0 || strcasecmp(v + 1, "8BITMIME") == 0))
		return 0;
	smtp_reply(s, "555 5.5.4 Unsupported option: %s", p);
	return -1;
}

/* Each parameter in turn to fn (MAIL) or none allowed (fn NULL: RCPT). */
static int smtp_params(struct smtp_session *s, const char *params,
		       int (*fn)(struct smtp_session *, const char *))
{
	char *copy = xstrdup(params ? params : ""), *save = NULL;
	int rc = 0;

	for (char *p = strtok_r(copy, " \t", &save); p && rc == 0;
	     p = strtok_r(NULL, " \t", &save)) {
		if (fn) {
			rc = fn(s, p);
		} else {
			smtp_reply(s, "555 5.5.4 Unsupported option: %s", p);
			rc = -1;
		}
	}
	free(copy);
	return rc;
}

static int smtp_mail(struct smtp_session *s, const char *arg)
{
	const char *path = smtp_path_arg(arg, "FROM:"), *params = NULL;
	int need_utf8, rc;

	if (s->in_mail) {
		smtp_reply(s, "503 5.5.1 Error: nested MAIL command");
		return -1;
	}
	if (path == NULL) {
		smtp_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return -1;
	}
	/* Any sender, the null one too: the user could say -f anyway. */
	if ((rc = smtp_path(path, &s->sender, &params, &need_utf8)) == -2) {
		smtp_reply(s, need_utf8 ? "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
					: "501 5.1.7 Bad sender address syntax");
		return -1;
	}
	if (smtp_params(s, params, smtp_mail_param) < 0) {
		smtp_txn_reset(s);
		return -1;
	}
	s->in_mail = 1;
	smtp_reply(s, "250 2.1.0 Ok");
	return 0;
}

static int smtp_rcpt(struct smtp_session *s, const char *arg)
{
	const char *path = smtp_path_arg(arg, "TO:"), *params = NULL;
	struct buf rcpt = BUF_INIT;
	int need_utf8, rc = -1;

	if (!s->in_mail) {
		smtp_reply(s, "503 5.5.1 Error: need MAIL command");
		return -1;
	}
	if (path == NULL) {
		smtp_reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		return -1;
	}
	if ((long long)s->rcpt.n >= s->e->rcpt_limit) {
		smtp_reply(s, "452 4.5.3 Error: too many recipients");
		return -1;
	}
	if (smtp_path(path, &rcpt, &params, &need_utf8) != 0) {
		smtp_reply(s, need_utf8 ? "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
					: "501 5.1.3 Bad recipient address syntax");
	} else if (smtp_params(s, params, NULL) == 0) {
		sm_list_add(&s->rcpt, rcpt.data, rcpt.len);
		smtp_reply(s, "250 2.1.5 Ok");
		rc = 0;
	}
	buf_free(&rcpt);
	return rc;
}

/* ------------------------------------------------------------------ */
/* DATA                                                                */

/* The content up to the lone "."; a leading dot is removed (RFC 5321
 * §4.5.2). Over message_size_limit, the rest is read and dropped so the
 * session stays in step. */
static int smtp_data_read(struct smtp_session *s, struct sm_msg *m)
{
	size_t limit = (size_t)s->e->size_limit;
	int rc;

	/* Keeping one byte over the limit is enough to know it is exceeded. */
	while ((rc = smtp_getline(s, &s->line, limit ? limit + 1 : (size_t)-1)) != SMTP_LINE_EOF) {
		const char *p = s->line.data;
		size_t n = s->line.len;

		if (rc == SMTP_LINE_OK && n == 1 && *p == '.')
			return limit && m->size > limit ? SMTP_DATA_TOO_BIG : SMTP_DATA_OK;
		if (n > 0 && *p == '.') {
			p++;
			n--;
		}
		m->size += n + 1;
		if (limit == 0 || m->size <= limit)
			sm_msg_add_line(m, p, n);
	}
	return SMTP_DATA_EOF;
}

/* RFC 5321 §4.4 trace header, in Postfix's stand-alone smtpd form: the
 * client of a pipe is "localhost [127.0.0.1]". No "id": the maildrop
 * file has no queue ID yet; pickup's Received: names the one it gets. */
static void smtp_received(struct smtp_session *s, struct sm_msg *m)
{
	struct buf h = BUF_INIT;

	buf_printf(&h, "Received: from %s (localhost [127.0.0.1])\n\tby %s (%s) with %s",
		   s->helo ? s->helo : "localhost", s->e->hostname.data, s->e->mail_name.data,
		   s->esmtp ? "ESMTP" : "SMTP");
	if (s->rcpt.n == 1)
		buf_printf(&h, "\n\tfor <%s>; ", s->rcpt.v[0]);
	else
		buf_puts(&h, ";\n\t");
	mail_date(time(NULL), &h);
	buf_putc(&h, '\n');
	sm_msg_prepend_header(m, h.data, h.len);
	buf_free(&h);
}

static int smtp_data(struct smtp_session *s, const char *arg)
{
	struct sm_msg m = {NULL, 0, 0, BUF_INIT, 0, 0};
	struct buf err = BUF_INIT;
	int rc = -1;

	if (*arg) {
		smtp_reply(s, "501 5.5.4 Syntax: DATA");
		return -1;
	}
	if (!s->in_mail) {
		smtp_reply(s, "503 5.5.1 Error: need RCPT command");
		return -1;
	}
	if (s->rcpt.n == 0) {
		smtp_reply(s, "554 5.5.1 Error: no valid recipients");
		return -1;
	}
	smtp_reply(s, "354 End data with <CR><LF>.<CR><LF>");
	switch (smtp_data_read(s, &m)) {
	case SMTP_DATA_EOF: /* the transaction stays open: exit status 75 */
		goto out;
	case SMTP_DATA_TOO_BIG:
		smtp_reply(s, "552 5.3.4 Message size exceeds fixed limit");
		break;
	default:
		smtp_received(s, &m);
		if (sm_drop_message(s->e, s->sender.data, s->fullname, &s->rcpt, &m, &err) < 0) {
			fprintf(stderr, "sendmail: warning: %s\n", err.data);
			smtp_reply(s, "451 4.3.0 Error: queue file write error");
			break;
		}
		smtp_reply(s, "250 2.0.0 Ok: queued");
		rc = 0;
	}
	smtp_txn_reset(s);
out:
	sm_msg_free(&m);
	buf_free(&err);
	return rc;
}

/* ------------------------------------------------------------------ */
/* the rest                                                            */

static int smtp_rset(struct smtp_session *s, const char *arg)
{
	if (*arg) {
		smtp_reply(s, "501 5.5.4 Syntax: RSET");
		return -1;
	}
	smtp_txn_reset(s);
	smtp_reply(s, "250 2.0.0 Ok");
	return 0;
}

static int smtp_noop(struct smtp_session *s, const char *arg)
{
	smtp_reply(s, "250 2.0.0 Ok");
	return 0;
}

/* Postfix's stand-alone smtpd would answer from its tables; here there
 * is nothing to check against, so VRFY is off (disable_vrfy_command). */
static int smtp_vrfy(struct smtp_session *s, const char *arg)
{
	smtp_reply(s, "502 5.5.1 VRFY command is disabled");
	return -1;
}

static int smtp_quit(struct smtp_session *s, const char *arg)
{
	smtp_reply(s, "221 2.0.0 Bye");
	s->done = 1;
	s->status = 0;
	return 0;
}

static const struct smtp_cmd smtp_cmds[] = {
    {"HELO", smtp_helo}, {"EHLO", smtp_ehlo}, {"MAIL", smtp_mail},
    {"RCPT", smtp_rcpt}, {"DATA", smtp_data}, {"RSET", smtp_rset},
    {"NOOP", smtp_noop}, {"VRFY", smtp_vrfy}, {"QUIT", smtp_quit},
};

/* One command line: the verb, then its argument with the white space
 * around it removed ("" when none). */
static int smtp_dispatch(struct smtp_session *s, char *line)
{
	char *verb = line + strspn(line, " \t"), *arg, *end;
	size_t vlen = strcspn(verb, " \t");

	if (vlen == 0) {
		smtp_reply(s, "500 5.5.2 Error: bad syntax");
		return -1;
	}
	arg = verb + vlen;
	arg += strspn(arg, " \t");
	for (end = arg + strlen(arg); end > arg && (end[-1] == ' ' || end[-1] == '\t');)
		*--end = 0;
	for (size_t i = 0; i < sizeof(smtp_cmds) / sizeof(*smtp_cmds); i++)
		if (strlen(smtp_cmds[i].name) == vlen &&
		    strncasecmp(verb, smtp_cmds[i].name, vlen) == 0)
			return smtp_cmds[i].fn(s, arg);
	smtp_reply(s, "502 5.5.2 Error: command not recognized");
	return -1;
}

static void smtp_command(struct smtp_session *s)
{
	int rc = smtp_getline(s, &s->line, (size_t)s->e->line_limit);

	if (rc == SMTP_LINE_EOF) {
		s->done = 1;
		/* Nothing accepted is lost, but the caller's message was not sent. */
		if (s->in_mail) {
			fprintf(stderr, "sendmail: fatal: input ended inside a mail transaction; "
					"that message was not queued\n");
			s->status = SM_EX_TEMPFAIL;
		}
		return;
	}
	if (rc == SMTP_LINE_CUT) {
		smtp_reply(s, "500 5.5.2 Error: line too long");
		s->errors++;
	} else if (memchr(s->line.data, 0, s->line.len) != NULL) {
		smtp_reply(s, "500 5.5.2 Error: bad syntax");
		s->errors++;
	} else if (smtp_dispatch(s, s->line.data) < 0) {
		s->errors++;
	}
	if (!s->done && s->errors >= s->e->error_limit) {
		smtp_reply(s, "421 4.7.0 %s Error: too many errors", s->e->hostname.data);
		s->done = 1;
		s->status = SM_EX_TEMPFAIL;
	}
}

int sm_smtp_run(const struct sm_env *e, const char *fullname, int in_fd, FILE *out)
{
	struct smtp_session *s = xcalloc(1, sizeof(*s));
	int status;

	/* A client that stops reading must not kill us between the drop
	 * and the reply: the write fails and the session ends instead. */
	signal(SIGPIPE, SIG_IGN);
	s->e = e;
	s->fullname = fullname;
	s->fd = in_fd;
	s->out = out;
	buf_init(&s->line);
	buf_init(&s->sender);
	smtp_reply(s, "220 %s", e->banner.data);
	while (!s->done)
		smtp_command(s);
	fflush(out);
	status = s->status;
	smtp_txn_reset(s);
	free(s->helo);
	buf_free(&s->line);
	buf_free(&s->sender);
	free(s);
	return status;
}
