/* table_cdb.c - cdb:/file and hash:/file tables: lookups in FILE.cdb
 * (tinycdb), and the builder behind "tern map build".
 *
 * Records are stored as Postfix's cdb tables store them: folded key and
 * value without a trailing NUL, so the same FILE.cdb serves both.
 * Pitfall: t->path is re-pointed at FILE.cdb so change detection follows
 * the built table, not its source (which may be edited before a build).
 */
#include "fileio.h"
#include "log.h"
#include "table.h"
#include "table_source.h"

#include <cdb.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct table_cdb {
	struct cdb cdb;
	int fd;
};

static int table_cdb_load(struct table *t, struct lines *src, struct buf *err)
{
	struct buf path = BUF_INIT;
	struct table_cdb *tc;
	int fd;

	if (t->path == NULL) {
		buf_printf(err, "table \"%s\": a %s table must be a file", t->spec, t->type);
		return -1;
	}
	buf_printf(&path, "%s.cdb", t->name);
	if ((fd = open(path.data, O_RDONLY | O_CLOEXEC)) < 0) {
		buf_printf(err, "open database %s: %s", path.data, strerror(errno));
		buf_free(&path);
		return -1;
	}
	tc = xcalloc(1, sizeof(*tc));
	tc->fd = fd;
	if (cdb_init(&tc->cdb, fd) < 0) {
		buf_printf(err, "open database %s: not a valid cdb file", path.data);
		close(fd);
		free(tc);
		buf_free(&path);
		return -1;
	}
	/* Only re-point when needed: table_reload() compares the pointer. */
	if (strcmp(t->path, path.data) != 0) {
		free(t->path);
		t->path = buf_detach(&path);
	}
	buf_free(&path);
	t->priv = tc;
	return 0;
}

static int table_cdb_lookup(struct table *t, const char *key, struct buf *value, struct buf *err)
{
	struct table_cdb *tc = t->priv;
	const void *data;
	unsigned len;
	int rc = cdb_find(&tc->cdb, key, (unsigned)strlen(key));

	if (rc == 0)
		return TABLE_NOTFOUND;
	if (rc < 0) {
		buf_printf(err, "%s: corrupt cdb file", t->path);
		return TABLE_ERROR;
	}
	len = cdb_datalen(&tc->cdb);
	if ((data = cdb_getdata(&tc->cdb)) == NULL) {
		buf_printf(err, "%s: corrupt cdb file", t->path);
		return TABLE_ERROR;
	}
	buf_reset(value);
	buf_append(value, data, len);
	return TABLE_FOUND;
}

static void table_cdb_free(struct table *t)
{
	struct table_cdb *tc = t->priv;

	cdb_free(&tc->cdb);
	close(tc->fd);
	free(tc);
	t->priv = NULL;
}

const struct table_ops table_cdb_ops = {
    .type = "cdb",
    .flags = TABLE_OPS_FILE,
    .load = table_cdb_load,
    .lookup = table_cdb_lookup,
    .free = table_cdb_free,
};

/* Building. */

static int table_cdb_build_add(void *ctx, const char *key, const char *value, const char *file,
			       int lineno, struct buf *err)
{
	struct cdb_make *cm = ctx;
	unsigned klen = (unsigned)strlen(key);
	int rc = cdb_make_exists(cm, key, klen);

	if (rc > 0) {
		msg_warn("%s, line %d: duplicate entry: \"%s\"", file, lineno, key);
		return 0;
	}
	if (rc < 0 || cdb_make_add(cm, key, klen, value, (unsigned)strlen(value)) < 0) {
		buf_printf(err, "write %s.cdb: %s", file, strerror(errno));
		return -1;
	}
	return 0;
}

typedef int (*table_cdb_reader)(struct lines *, table_source_fn, void *, struct buf *);

/* Read src into a new cdb on fd; the caller renames it into place. */
static int table_cdb_build_fd(struct lines *src, table_cdb_reader reader, int fd, struct buf *tmp,
			      struct buf *err)
{
	struct cdb_make cm;

	if (cdb_make_start(&cm, fd) < 0) {
		buf_printf(err, "write %s: %s", tmp->data, strerror(errno));
		return -1;
	}
	if (reader(src, table_cdb_build_add, &cm, err) < 0) {
		cdb_make_finish(&cm); /* frees its memory; the file is discarded */
		return -1;
	}
	if (cdb_make_finish(&cm) < 0 || fsync(fd) < 0) {
		buf_printf(err, "write %s: %s", tmp->data, strerror(errno));
		return -1;
	}
	return 0;
}

static int table_cdb_build_with(const char *path, table_cdb_reader reader, struct buf *err)
{
	struct buf tmp = BUF_INIT, dst = BUF_INIT;
	struct lines src;
	int fd = -1, rc = -1;

	if (lines_open(&src, path, err) < 0)
		return -1;
	buf_printf(&dst, "%s.cdb", path);
	buf_printf(&tmp, "%s.cdb.XXXXXX", path);
	if ((fd = mkstemp(tmp.data)) < 0) {
		buf_printf(err, "create %s: %s", tmp.data, strerror(errno));
		goto out;
	}
	/* Tables are read by unprivileged daemons: always 0644, whatever the
	 * umask (mkstemp's 0600 would hide them from ternd). */
	if (fchmod(fd, 0644) < 0) {
		buf_printf(err, "chmod %s: %s", tmp.data, strerror(errno));
		goto fail;
	}
	if (table_cdb_build_fd(&src, reader, fd, &tmp, err) < 0)
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		buf_printf(err, "write %s: %s", tmp.data, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(tmp.data, dst.data) < 0) {
		buf_printf(err, "rename %s to %s: %s", tmp.data, dst.data, strerror(errno));
		goto fail;
	}
	/* The new name must survive a crash too, not only the data. */
	if (fileio_sync_parent(dst.data) < 0) {
		buf_printf(err, "fsync the directory of %s: %s", dst.data, strerror(errno));
		goto out;
	}
	rc = 0;
	goto out;
fail:
	unlink(tmp.data);
out:
	if (fd >= 0)
		close(fd);
	lines_close(&src);
	buf_free(&tmp);
	buf_free(&dst);
	return rc;
}

int table_cdb_build(const char *path, struct buf *err)
{
	return table_cdb_build_with(path, table_source_read, err);
}

int table_cdb_build_aliases(const char *path, struct buf *err)
{
	return table_cdb_build_with(path, table_source_read_aliases, err);
}
