/* lines.c - logical line reader for config and table files (see lines.h).
 *
 * Reads physical lines ahead by one so a continuation (leading white
 * space) can be recognised before the logical line is returned.
 */
#include "lines.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int lines_open(struct lines *lr, const char *path, struct buf *err)
{
	memset(lr, 0, sizeof(*lr));
	lr->fp = fopen(path, "r");
	if (lr->fp == NULL) {
		buf_printf(err, "open %s: %s", path, strerror(errno));
		return -1;
	}
	lr->path = xstrdup(path);
	lr->next_lineno = 1;
	buf_init(&lr->phys);
	return 0;
}

void lines_open_string(struct lines *lr, const char *name, const char *text)
{
	memset(lr, 0, sizeof(*lr));
	lr->src = text;
	lr->path = xstrdup(name);
	lr->next_lineno = 1;
	buf_init(&lr->phys);
}

void lines_close(struct lines *lr)
{
	if (lr->fp)
		fclose(lr->fp);
	lr->fp = NULL;
	free(lr->path);
	lr->path = NULL;
	buf_free(&lr->phys);
}

/* Read one physical line without its newline (and without a CR before it). */
static int lines_read_phys(struct lines *lr, struct buf *err)
{
	buf_reset(&lr->phys);
	if (lr->fp) {
		int c, got = 0;
		while ((c = getc(lr->fp)) != EOF) {
			got = 1;
			if (c == '\n')
				break;
			/* Keep reading to the newline, but never store more
			 * than the limit: lines_next() reports the overflow. */
			if (lr->phys.len <= LINES_MAX_LEN)
				buf_putc(&lr->phys, c);
		}
		if (ferror(lr->fp)) {
			buf_printf(err, "read %s: %s", lr->path, strerror(errno));
			return -1;
		}
		if (!got)
			return 0;
	} else {
		if (lr->src[lr->src_pos] == 0)
			return 0;
		const char *start = lr->src + lr->src_pos;
		const char *nl = strchr(start, '\n');
		size_t n = nl ? (size_t)(nl - start) : strlen(start);
		buf_append(&lr->phys, start, n);
		lr->src_pos += n + (nl ? 1 : 0);
	}
	if (lr->phys.len && lr->phys.data[lr->phys.len - 1] == '\r')
		buf_truncate(&lr->phys, lr->phys.len - 1);
	lr->next_lineno++;
	return 1;
}

static int lines_is_skippable(const struct buf *b)
{
	const char *cp = buf_str(b);
	while (isspace((unsigned char)*cp))
		cp++;
	return *cp == 0 || *cp == '#';
}

static int lines_too_long(const struct lines *lr, size_t len, struct buf *err)
{
	if (len <= LINES_MAX_LEN)
		return 0;
	buf_printf(err, "%s, line %d: logical line longer than %d bytes", lr->path, lr->lineno,
		   LINES_MAX_LEN);
	return 1;
}

int lines_next(struct lines *lr, struct buf *out, struct buf *err)
{
	int rc;

	buf_reset(out);
	/* Find the first non-skippable physical line. */
	for (;;) {
		if (!lr->have_phys) {
			if ((rc = lines_read_phys(lr, err)) <= 0)
				return rc;
		}
		lr->have_phys = 0;
		if (!lines_is_skippable(&lr->phys))
			break;
	}
	lr->lineno = lr->next_lineno - 1;
	if (lines_too_long(lr, lr->phys.len, err))
		return -1;
	buf_append(out, lr->phys.data, lr->phys.len);
	/* Append continuation lines; skip comments and blanks in between. */
	for (;;) {
		if ((rc = lines_read_phys(lr, err)) < 0)
			return -1;
		if (rc == 0)
			break;
		/* As Postfix's readllines(): comment and blank lines, even a
		 * '#' at column 0, are skipped without ending the logical
		 * line; only text starting at column 0 does. */
		if (lines_is_skippable(&lr->phys))
			continue;
		if (!isspace((unsigned char)lr->phys.data[0])) {
			lr->have_phys = 1;
			break;
		}
		if (lines_too_long(lr, out->len + lr->phys.len, err))
			return -1;
		buf_append(out, lr->phys.data, lr->phys.len);
	}
	return 1;
}
