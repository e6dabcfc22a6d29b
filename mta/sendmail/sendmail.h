/* sendmail.h - the sendmail/mailq/newaliases front end's internal API.
 *
 * main.c parses options and dispatches on argv[0]; sendmail_msg.c reads
 * the message from stdin (dot and line-end rules, headers, -t recipients,
 * Bcc removal, missing Date/From/Message-Id); sendmail_smtp.c speaks SMTP
 * on stdin/stdout instead (-bs); sendmail_drop.c completes the headers and
 * writes the maildrop file atomically (format: docs/queue.md "Maildrop
 * files"), one per message in both modes.
 */
#ifndef TERN_SENDMAIL_H
#define TERN_SENDMAIL_H

#include "buf.h"

#include <stddef.h>
#include <stdio.h>

/* sysexits.h values the sendmail interface promises callers. */
#define SM_EX_USAGE 64
#define SM_EX_DATAERR 65
#define SM_EX_NOUSER 67
#define SM_EX_SOFTWARE 70
#define SM_EX_OSERR 71
#define SM_EX_CANTCREAT 73
#define SM_EX_TEMPFAIL 75

/* A string list (recipients). */
struct sm_list {
	char **v;
	size_t n, cap;
};
void sm_list_add(struct sm_list *l, const char *s, size_t len);
void sm_list_free(struct sm_list *l);

/* One header field, with its continuation lines, each ending in '\n'. */
struct sm_header {
	char *text;
	size_t len;
};

struct sm_msg {
	struct sm_header *hdr;
	size_t nhdr, cap;
	struct buf body; /* everything after the header/body separator */
	size_t size;	 /* bytes read so far, for the size limit */
	int in_body;	 /* sm_msg_add_line() is past the headers */
};

/* The settings every submission needs (main.c loads them). */
struct sm_env {
	struct buf queue_dir; /* the maildrop directory itself */
	struct buf hostname, origin, owner;
	struct buf banner, mail_name; /* -bs: greeting, Received: header */
	long long size_limit;	      /* message_size_limit, 0: none */
	long long line_limit;	      /* -bs: line_length_limit, longest command */
	long long rcpt_limit;	      /* -bs: smtpd_recipient_limit */
	long long error_limit;	      /* -bs: smtpd_hard_error_limit */
};

struct sm_read_opts {
	int dot_ends;	   /* no -i: a line with a lone "." ends input */
	size_t size_limit; /* 0: none */
	int extract_rcpt;  /* -t */
};

/* Read the message; 0 ok, SM_EX_* with err set. */
int sm_msg_read(struct sm_msg *m, FILE *in, const struct sm_read_opts *o, struct buf *err);
void sm_msg_free(struct sm_msg *m);
/* Add one line (without its line end) to m: header fields and their
 * continuation lines until the first empty or non-header line, then body. */
void sm_msg_add_line(struct sm_msg *m, const char *line, size_t len);
/* Put a header field (with its continuation lines, '\n'-terminated)
 * before all others: the trace header of a message received by SMTP. */
void sm_msg_prepend_header(struct sm_msg *m, const char *text, size_t len);
/* -t: recipients from To/Cc/Bcc (Resent-* when present); Bcc removed. */
void sm_msg_extract_rcpt(struct sm_msg *m, struct sm_list *rcpt);
/* Addresses of an RFC 5322 address list ("Joe <a@b>, c@d, grp: e@f;"). */
void sm_addr_list_parse(const char *value, struct sm_list *out);
/* Add Message-Id:, Date:, From: when missing (Postfix cleanup for local
 * submission). from_addr is the qualified sender ("" = null sender). */
void sm_msg_add_missing(struct sm_msg *m, const char *myhostname, const char *from_addr,
			const char *fullname);
/* Headers + "\n" + body. */
void sm_msg_format(const struct sm_msg *m, struct buf *out);

/* The end of every submission: add the missing headers (sender
 * qualified with $myorigin for From:), create the maildrop directory if
 * needed and write m as one maildrop file. 0 once it is durable; -1 with
 * err (sendmail exits EX_TEMPFAIL, -bs answers 451). */
int sm_drop_message(const struct sm_env *e, const char *sender, const char *fullname,
		    const struct sm_list *rcpt, struct sm_msg *m, struct buf *err);
/* Can pickup parse s as a sender or recipient (a mailbox, qualified later
 * with $myorigin; no line breaks)? Every address is checked before it
 * is written: pickup moves a file it cannot parse to corrupt/. */
int sm_drop_addr_ok(const char *s);
/* Write a maildrop file into dir: temp name, fsync, rename, fsync dir.
 * 0 ok; -1 with err. */
int sm_drop_write(const char *dir, unsigned uid, const char *sender, const char *fullname,
		  const struct sm_list *rcpt, const struct buf *content, struct buf *err);
/* Create the maildrop directory if missing (mode 1733, owned by owner). */
int sm_drop_dir_ensure(const char *dir, const char *owner, struct buf *err);

/* sendmail -bs: SMTP on in_fd/out until QUIT or end of input; each
 * message goes through sm_drop_message(). Returns the exit status: 0
 * after QUIT or at end of input between transactions, else EX_TEMPFAIL. */
int sm_smtp_run(const struct sm_env *e, const char *fullname, int in_fd, FILE *out);

#endif
