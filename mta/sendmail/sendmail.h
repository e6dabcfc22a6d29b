/* sendmail.h - the sendmail/mailq/newaliases front end's internal API.
 *
 * main.c parses options and dispatches on argv[0]; sendmail_msg.c reads
 * the message from stdin (dot and line-end rules, headers, -t recipients,
 * Bcc removal, missing Date/From/Message-Id); sendmail_drop.c writes the
 * maildrop file atomically (format: docs/queue.md "Maildrop files").
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
};

struct sm_read_opts {
	int dot_ends;	   /* no -i: a line with a lone "." ends input */
	size_t size_limit; /* 0: none */
	int extract_rcpt;  /* -t */
};

/* Read the message; 0 ok, SM_EX_* with err set. */
int sm_msg_read(struct sm_msg *m, FILE *in, const struct sm_read_opts *o, struct buf *err);
void sm_msg_free(struct sm_msg *m);
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

/* Write a maildrop file into dir: temp name, fsync, rename, fsync dir.
 * 0 ok; -1 with err (the caller exits EX_TEMPFAIL). */
int sm_drop_write(const char *dir, unsigned uid, const char *sender, const char *fullname,
		  const struct sm_list *rcpt, const struct buf *content, struct buf *err);
/* Create the maildrop directory if missing (mode 1733, owned by owner). */
int sm_drop_dir_ensure(const char *dir, const char *owner, struct buf *err);

#endif
