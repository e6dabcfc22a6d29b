/* rules_milter.h - the parts of tern-rules-milter and how they meet.
 *
 *   main.c         libmilter callbacks; primary header edits at end of
 *                  message; the whole action set (Postfix header_checks(5))
 *   rules_action.c parse one table result ("REJECT text", "PREPEND X: y")
 *   rules_mime.c   the body as Postfix's cleanup sees it: lines, MIME part
 *                  headers, attached messages' headers, boundaries; it
 *                  rebuilds the body when a rule edited part of it
 */
#ifndef TERN_RULES_MILTER_H
#define TERN_RULES_MILTER_H

#include "buf.h"

#include <stddef.h>

/* Which table set a line is checked against (Postfix's names). */
enum rules_class {
	RULES_HEADER, /* header_checks: the message's own headers */
	RULES_MIME,   /* mime_header_checks: MIME headers, anywhere */
	RULES_NESTED, /* nested_header_checks: headers of attached messages */
	RULES_BODY,   /* body_checks: body lines */
	RULES_NCLASS,
};

enum rules_kind {
	RULES_ACT_NONE, /* DUNNO, OK, or no match */
	RULES_ACT_REJECT,
	RULES_ACT_DISCARD,
	RULES_ACT_PASS,
	RULES_ACT_STRIP,
	RULES_ACT_HOLD,
	RULES_ACT_WARN,
	RULES_ACT_INFO,
	RULES_ACT_IGNORE,
	RULES_ACT_REPLACE,
	RULES_ACT_PREPEND,
	RULES_ACT_REDIRECT,
	RULES_ACT_BCC,
	RULES_ACT_FILTER,
};

struct rules_action {
	enum rules_kind kind;
	char code[4]; /* REJECT: "550" */
	char dsn[16]; /* "5.7.1" */
	char *text;   /* reply text, header/line text, address, reason */
};

/* 0 with a set, or -1 for an action Postfix does not know either (it
 * logs "unknown command in header_checks map" and ignores the rule). */
int rules_action_parse(const char *value, struct rules_action *a, struct buf *err);
void rules_action_free(struct rules_action *a);
const char *rules_kind_name(enum rules_kind k);

/* What the checker decided for one line or header of the body. */
enum rules_edit {
	RULES_KEEP,
	RULES_DROP,    /* IGNORE */
	RULES_REPLACE, /* with text */
	RULES_PREPEND, /* text before it */
	RULES_STOP,    /* REJECT / DISCARD: stop reading */
};

/* Check one logical line (a header with "\n" folding, or a body line);
 * may fill text for REPLACE/PREPEND. */
typedef enum rules_edit (*rules_check_fn)(void *arg, enum rules_class cls, const char *line,
					  size_t len, struct buf *text);

struct rules_mime_bound;

struct rules_mime {
	rules_check_fn check;
	void *arg;
	int mime;	     /* MIME processing on */
	int keep_body;	     /* rebuild the body into out */
	size_t line_limit;   /* line_length_limit */
	size_t body_limit;   /* body_checks_size_limit per segment */
	size_t header_limit; /* header_size_limit */
	int state;	     /* RULES_M_* in rules_mime.c */
	int hdr_class;	     /* class of the header block being read */
	char **bounds;	     /* boundary stack, innermost last */
	size_t nbounds;
	struct buf partial; /* an unterminated line from the last chunk */
	struct buf hdr;	    /* the logical header being read ("\n" folding) */
	struct buf hdr_raw; /* ...as it was in the body (CRLF) */
	char *ctype;	    /* Content-Type of the current header block */
	size_t seg_bytes;   /* body bytes inspected in this segment */
	struct buf out;	    /* the rebuilt body */
	int edited;	    /* out differs from the input */
	int stopped;
};

void rules_mime_init(struct rules_mime *m);
void rules_mime_free(struct rules_mime *m);
/* The message's own Content-Type (NULL if none), known at end of header. */
void rules_mime_start(struct rules_mime *m, const char *content_type);
/* Body bytes, as the MTA sends them (CRLF lines, chunks anywhere). */
void rules_mime_body(struct rules_mime *m, const unsigned char *data, size_t len);
void rules_mime_end(struct rules_mime *m);
/* The header name of "Name: value" is a MIME one (Content-*, MIME-Version). */
int rules_mime_header_name(const char *name, size_t len);

#endif
