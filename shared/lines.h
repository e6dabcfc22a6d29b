/* lines.h - read Postfix-style logical lines from a config or table file.
 *
 * One reader for main.cf-style config and every table source file:
 * blank lines and lines whose first non-blank character is '#' are
 * skipped; a line that starts with white space continues the previous
 * logical line (a skipped comment or blank line in between does not end
 * it, as Postfix's readllines()). Physical lines are joined without the
 * newline, keeping the continuation's leading white space ("a,\n  b"
 * reads "a,  b"), exactly as postmap and postconf see them. lineno is the first physical line of
 * the logical line, for "file:line: message" errors. A logical line that starts with white space at
 * the top of the file is returned as is; callers decide.
 */
#ifndef TERN_LINES_H
#define TERN_LINES_H

#include "buf.h"

#include <stdio.h>

/* A logical line longer than this is refused: config and table files are
 * external input, and no legitimate setting or rule comes near it. */
#define LINES_MAX_LEN (1024 * 1024)

struct lines {
	FILE *fp;
	const char *src; /* in-memory source when fp == NULL */
	size_t src_pos;
	char *path;	 /* for messages */
	int lineno;	 /* first physical line of the last logical line */
	int next_lineno; /* physical line number of the next line to read */
	struct buf phys;
	int have_phys; /* phys holds a line read ahead */
};

int lines_open(struct lines *lr, const char *path, struct buf *err);
void lines_open_string(struct lines *lr, const char *name, const char *text);
/* 1: a logical line is in out; 0: end of input; -1: read error or a line
 * over LINES_MAX_LEN ("FILE, line N: ..." in err). */
int lines_next(struct lines *lr, struct buf *out, struct buf *err);
void lines_close(struct lines *lr);

#endif
