/* table.c - "type:name" dispatch, change detection and inline lists for
 * lookup tables (see table.h). Backends live in table_<type>.c.
 */
#include "table.h"
#include "casefold.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

extern const struct table_ops table_texthash_ops, table_cdb_ops, table_cidr_ops, table_pcre_ops,
    table_regexp_ops, table_inline_ops, table_static_ops, table_socketmap_ops, table_sqlite_ops,
    table_unix_ops;

static const struct {
	const char *type;
	const struct table_ops *ops;
} table_types[] = {
    {"texthash", &table_texthash_ops}, {"cdb", &table_cdb_ops},
    {"hash", &table_cdb_ops}, /* Postfix's hash: is built and read as cdb */
    {"cidr", &table_cidr_ops},	       {"pcre", &table_pcre_ops},
    {"regexp", &table_regexp_ops},     {"inline", &table_inline_ops},
    {"static", &table_static_ops},     {"socketmap", &table_socketmap_ops},
    {"sqlite", &table_sqlite_ops},     {"unix", &table_unix_ops},
};

const struct table_ops *table_ops_find(const char *type)
{
	for (size_t i = 0; i < sizeof(table_types) / sizeof(table_types[0]); i++)
		if (strcmp(type, table_types[i].type) == 0)
			return table_types[i].ops;
	return NULL;
}

static void table_stat(struct table *t)
{
	struct stat st;
	if (t->path && stat(t->path, &st) == 0) {
		t->mtime = st.st_mtim.tv_sec;
		t->mtime_ns = st.st_mtim.tv_nsec;
		t->ino = st.st_ino;
	}
}

/* Load t's contents: backends with TABLE_OPS_LINES get a lines reader on
 * the file or on the rules of an inline "{ {rule}, {rule} }" list. */
static int table_load(struct table *t, struct buf *err)
{
	struct lines src;
	int rc;

	if (!(t->ops->flags & TABLE_OPS_LINES))
		return t->ops->load(t, NULL, err);
	if (t->name[0] == '{') {
		char **items;
		size_t n;
		struct buf text = BUF_INIT;
		if (table_inline_split(t->name, TABLE_INLINE_BRACED, &items, &n, err) < 0)
			return -1;
		buf_init(&text);
		for (size_t i = 0; i < n; i++) {
			buf_puts(&text, items[i]);
			buf_putc(&text, '\n');
		}
		table_inline_free(items, n);
		lines_open_string(&src, t->spec, buf_str(&text));
		rc = t->ops->load(t, &src, err);
		lines_close(&src);
		buf_free(&text);
		return rc;
	}
	if (lines_open(&src, t->name, err) < 0)
		return -1;
	rc = t->ops->load(t, &src, err);
	lines_close(&src);
	return rc;
}

static struct table *table_open_flags(const char *spec, int lenient, struct buf *err);

struct table *table_open(const char *spec, struct buf *err)
{
	return table_open_flags(spec, 0, err);
}

struct table *table_open_lenient(const char *spec, struct buf *err)
{
	return table_open_flags(spec, 1, err);
}

static struct table *table_open_flags(const char *spec, int lenient, struct buf *err)
{
	const char *colon = strchr(spec, ':');
	const struct table_ops *ops;
	struct table *t;

	if (colon == NULL || colon == spec) {
		buf_printf(err, "table \"%s\": expected type:name", spec);
		return NULL;
	}
	char *type = xstrndup(spec, (size_t)(colon - spec));
	if ((ops = table_ops_find(type)) == NULL) {
		buf_printf(err, "table \"%s\": unsupported table type \"%s\"", spec, type);
		free(type);
		return NULL;
	}
	t = xcalloc(1, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
	t->ops = ops;
	t->spec = xstrdup(spec);
	t->type = type;
	t->name = xstrdup(colon + 1);
	if ((ops->flags & TABLE_OPS_FILE) && t->name[0] != '{') {
		if (t->name[0] == 0) {
			buf_printf(err, "table \"%s\": missing file name", spec);
			table_close(t);
			return NULL;
		}
		t->path = xstrdup(t->name);
	}
	if (table_load(t, err) < 0) {
		if (!lenient || t->priv != NULL) {
			table_close(t);
			return NULL;
		}
		t->unavailable = xstrdup(buf_str(err));
		msg_warn("%s is unavailable. %s", t->spec, t->unavailable);
		buf_reset(err);
		return t;
	}
	table_stat(t);
	return t;
}

int table_lookup(struct table *t, const char *key, struct buf *value, struct buf *err)
{
	struct buf folded = BUF_INIT;
	int rc;

	buf_reset(value);
	/* Postfix folds keys to lower case for all but regexp-style tables. */
	if (!(t->ops->flags & TABLE_OPS_NOFOLD)) {
		casefold(&folded, key, strlen(key));
		key = buf_str(&folded);
	}
	pthread_mutex_lock(&t->lock);
	if (t->unavailable) {
		buf_printf(err, "%s is unavailable. %s", t->spec, t->unavailable);
		rc = TABLE_ERROR;
	} else {
		rc = t->ops->lookup(t, key, value, err);
	}
	pthread_mutex_unlock(&t->lock);
	buf_free(&folded);
	return rc;
}

static int table_reload_locked(struct table *t, int force, struct buf *err);

int table_reload(struct table *t, int force, struct buf *err)
{
	pthread_mutex_lock(&t->lock);
	int rc = table_reload_locked(t, force, err);
	pthread_mutex_unlock(&t->lock);
	return rc;
}

static int table_reload_locked(struct table *t, int force, struct buf *err)
{
	struct stat st;
	if (!force && t->unavailable != NULL && (t->path == NULL || stat(t->path, &st) != 0))
		return 0; /* still missing: try again when it appears */
	if (!force && t->unavailable == NULL) {
		if (t->path == NULL || stat(t->path, &st) != 0)
			return 0;
		if (st.st_mtim.tv_sec == t->mtime && st.st_mtim.tv_nsec == t->mtime_ns &&
		    st.st_ino == t->ino)
			return 0;
	}
	/* Load into a scratch table so a broken file keeps the old contents.
	 * The scratch copy owns its own path: a backend may re-point it. */
	struct table scratch = *t;
	scratch.priv = NULL;
	scratch.path = t->path ? xstrdup(t->path) : NULL;
	if (table_load(&scratch, err) < 0) {
		if (scratch.priv)
			t->ops->free(&scratch);
		free(scratch.path);
		return -1;
	}
	if (t->ops->free && t->priv)
		t->ops->free(t);
	t->priv = scratch.priv;
	free(t->unavailable);
	t->unavailable = NULL;
	free(t->path);
	t->path = scratch.path;
	table_stat(t);
	return 1;
}

void table_close(struct table *t)
{
	if (t == NULL)
		return;
	if (t->ops->free && t->priv)
		t->ops->free(t);
	free(t->spec);
	free(t->type);
	free(t->name);
	free(t->path);
	free(t->unavailable);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

int table_is_pattern(const struct table *t)
{
	return (t->ops->flags & TABLE_OPS_PATTERN) != 0;
}

/* Split the top level of "{ a, { b, c }, d }" at commas and white space
 * that are outside inner braces; an inner "{ ... }" element is one item
 * with its braces removed (Postfix's mystrtok_cw + extpar). */
int table_inline_split(const char *text, int flags, char ***items, size_t *count, struct buf *err)
{
	const char *cp = text, *end;
	size_t n = 0, cap = 8;
	char **v;

	while (isspace((unsigned char)*cp))
		cp++;
	if (*cp != '{') {
		buf_printf(err, "\"%s\": expected '{' at start of inline list", text);
		return -1;
	}
	end = cp + strlen(cp);
	while (end > cp && isspace((unsigned char)end[-1]))
		end--;
	if (end == cp + 1 || end[-1] != '}') {
		buf_printf(err, "\"%s\": missing '}' at end of inline list", text);
		return -1;
	}
	cp++;
	end--;
	v = xcalloc(cap, sizeof(*v));
	while (cp < end) {
		while (cp < end && (isspace((unsigned char)*cp) || *cp == ','))
			cp++;
		if (cp >= end)
			break;
		const char *start = cp;
		size_t len;
		if (*cp == '{') {
			int depth = 0;
			for (; cp < end; cp++) {
				if (*cp == '{')
					depth++;
				else if (*cp == '}' && --depth == 0)
					break;
			}
			if (cp >= end) {
				buf_printf(err, "\"%s\": unbalanced '{' in inline list", text);
				table_inline_free(v, n);
				return -1;
			}
			start++;
			len = (size_t)(cp - start);
			cp++;
		} else {
			/* Postfix: "cidr:{1.2.3.4 a}" is a fatal error, not two
			 * rules: a typo must not become a silently empty table. */
			if (flags & TABLE_INLINE_BRACED) {
				buf_printf(err, "\"%s\": no '{' at start of rule \"%.*s\"", text,
					   (int)strcspn(cp, " \t,}"), cp);
				table_inline_free(v, n);
				return -1;
			}
			while (cp < end && !isspace((unsigned char)*cp) && *cp != ',') {
				if (*cp == '{' || *cp == '}') {
					buf_printf(err, "\"%s\": unexpected '%c' in inline list",
						   text, *cp);
					table_inline_free(v, n);
					return -1;
				}
				cp++;
			}
			len = (size_t)(cp - start);
		}
		while (len && isspace((unsigned char)*start))
			start++, len--;
		while (len && isspace((unsigned char)start[len - 1]))
			len--;
		if (n + 1 >= cap)
			v = xrealloc(v, (cap *= 2) * sizeof(*v));
		v[n++] = xstrndup(start, len);
	}
	*items = v;
	*count = n;
	return 0;
}

void table_inline_free(char **items, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(items[i]);
	free(items);
}
