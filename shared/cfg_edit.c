/* cfg_edit.c - edit a main.cf-style file in place, as "postconf -e/-X".
 *
 * Works on physical lines so comments, blank lines and untouched settings
 * are kept byte for byte. A setting's logical line is its first line plus
 * the continuation lines (leading white space) up to its last non-blank
 * one, skipping comment and blank lines as lines.c does. As postconf -e
 * and -X, comment and blank lines between the continuation lines are
 * kept, written after the new "name = value" line (or alone when the
 * setting is removed); those after the last continuation line stay where
 * they are. Later duplicates of an edited name are dropped (their
 * comments kept), otherwise "last setting wins" would undo the edit. The
 * new file is written beside the old one, fsynced and renamed over it.
 */
#include "cfg.h"
#include "fileio.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CFG_EDIT_MAX (16 * 1024 * 1024)

struct cfg_edit {
	char *const *names;
	char *const *values;
	size_t n;
	char *done; /* done[i]: names[i] has been written or removed */
};

/* Blank, or white space then '#': never content. */
static int cfg_edit_skippable(const char *l, size_t n)
{
	size_t i = 0;
	while (i < n && isspace((unsigned char)l[i]))
		i++;
	return i == n || l[i] == '#';
}

/* The index of the edit for the setting in line l, or -1. */
static long cfg_edit_match(const struct cfg_edit *e, const char *l, size_t n)
{
	size_t len = 0;

	while (len < n && !isspace((unsigned char)l[len]) && l[len] != '=')
		len++;
	for (size_t i = e->n; i-- > 0;)
		if (strlen(e->names[i]) == len && memcmp(e->names[i], l, len) == 0)
			return (long)i;
	return -1;
}

static int cfg_edit_read(const char *path, struct buf *text, struct buf *err)
{
	FILE *fp = fopen(path, "r");
	char chunk[8192];
	size_t n;

	if (fp == NULL) {
		if (errno == ENOENT)
			return 0;
		buf_printf(err, "open %s: %s", path, strerror(errno));
		return -1;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0 && text->len <= CFG_EDIT_MAX)
		buf_append(text, chunk, n);
	if (ferror(fp) || text->len > CFG_EDIT_MAX) {
		buf_printf(err, "read %s: %s", path,
			   ferror(fp) ? strerror(errno) : "file too large");
		fclose(fp);
		return -1;
	}
	fclose(fp);
	return 0;
}

/* Physical line at pos: its length including the newline. */
static size_t cfg_edit_linelen(const struct buf *t, size_t pos)
{
	const char *nl = memchr(t->data + pos, '\n', t->len - pos);
	return nl ? (size_t)(nl - (t->data + pos)) + 1 : t->len - pos;
}

/* Copy in to out, applying the edits. */
static void cfg_edit_apply(struct cfg_edit *e, const struct buf *in, struct buf *out)
{
	size_t pos = 0;

	while (pos < in->len) {
		const char *l = in->data + pos;
		size_t len = cfg_edit_linelen(in, pos), end = pos + len, next;
		long m = -1;

		if (!isspace((unsigned char)l[0]) && l[0] != '#')
			m = cfg_edit_match(e, l, len);
		if (m < 0) {
			buf_append(out, l, len);
			pos = end;
			continue;
		}
		/* Extend over continuation lines up to the last content line;
		 * the comment and blank lines in between are kept. */
		size_t keep_from = end, keep_to = end;
		struct buf keep = BUF_INIT;
		for (next = end; next < in->len;) {
			size_t n = cfg_edit_linelen(in, next);
			const char *nl = in->data + next;
			if (!cfg_edit_skippable(nl, n) && !isspace((unsigned char)nl[0]))
				break;
			if (cfg_edit_skippable(nl, n)) {
				keep_to = next + n;
			} else {
				buf_append(&keep, in->data + keep_from, keep_to - keep_from);
				keep_from = keep_to = end = next + n;
			}
			next += n;
		}
		if (!e->done[m] && e->values[m])
			buf_printf(out, "%s = %s\n", e->names[m], e->values[m]);
		e->done[m] = 1;
		if (keep.len)
			buf_append(out, keep.data, keep.len);
		buf_free(&keep);
		pos = end;
	}
	for (size_t i = 0; i < e->n; i++) {
		if (e->done[i] || e->values[i] == NULL ||
		    cfg_edit_match(e, e->names[i], strlen(e->names[i])) != (long)i)
			continue;
		if (out->len && out->data[out->len - 1] != '\n')
			buf_putc(out, '\n');
		buf_printf(out, "%s = %s\n", e->names[i], e->values[i]);
		e->done[i] = 1;
	}
}

static int cfg_edit_write(const char *path, const struct buf *text, struct buf *err)
{
	struct buf tmp = BUF_INIT;
	struct stat st;
	mode_t mode = 0644;
	int fd, rc = -1;

	if (stat(path, &st) == 0)
		mode = st.st_mode & 07777;
	buf_printf(&tmp, "%s.tmpXXXXXX", path);
	if ((fd = mkstemp(tmp.data)) < 0) {
		buf_printf(err, "create %s: %s", buf_str(&tmp), strerror(errno));
		goto done;
	}
	if (fchmod(fd, mode) < 0 ||
	    write(fd, text->data ? text->data : "", text->len) != (ssize_t)text->len ||
	    fsync(fd) < 0) {
		buf_printf(err, "write %s: %s", buf_str(&tmp), strerror(errno));
		close(fd);
		unlink(buf_str(&tmp));
		goto done;
	}
	if (close(fd) < 0 || rename(buf_str(&tmp), path) < 0) {
		buf_printf(err, "rename %s to %s: %s", buf_str(&tmp), path, strerror(errno));
		unlink(buf_str(&tmp));
		goto done;
	}
	/* Make the rename itself durable. */
	if (fileio_sync_parent(path) < 0) {
		buf_printf(err, "fsync the directory of %s: %s", path, strerror(errno));
		goto done;
	}
	rc = 0;
done:
	buf_free(&tmp);
	return rc;
}

int cfg_file_edit(const char *path, char *const *names, char *const *values, size_t n,
		  struct buf *err)
{
	struct cfg_edit e = {names, values, n, xcalloc(n + 1, 1)};
	struct buf in = BUF_INIT, out = BUF_INIT;
	int rc = -1;

	for (size_t i = 0; i < n; i++) {
		if (names[i][0] == 0 || names[i][0] == '#' || strpbrk(names[i], " \t\v\f\r\n=") ||
		    (values[i] && strpbrk(values[i], "\r\n"))) {
			buf_printf(err,
				   "bad setting \"%s\": names have no white space or '=' and "
				   "do not start with '#', values are one line",
				   names[i]);
			goto done;
		}
	}
	buf_init(&in);
	buf_init(&out);
	if (cfg_edit_read(path, &in, err) < 0)
		goto done;
	cfg_edit_apply(&e, &in, &out);
	rc = cfg_edit_write(path, &out, err);
done:
	free(e.done);
	buf_free(&in);
	buf_free(&out);
	return rc;
}
