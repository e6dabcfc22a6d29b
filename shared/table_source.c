/* table_source.c - postmap-style "key value" source lines and the
 * in-memory dictionary behind texthash: and inline: (see table_source.h).
 *
 * Warnings reproduce postmap's wording so admins' habits carry over.
 */
#include "table_source.h"
#include "casefold.h"
#include "hash.h"
#include "log.h"
#include "table.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The end both line formats share: bound the key, keep the value
 * verbatim but trimmed, fold the key as postmap/postalias do. */
static int table_source_entry_end(struct buf *key, struct buf *value, const char *cp,
				  struct buf *why)
{
	if (key->len > TABLE_SOURCE_KEY_MAX) {
		buf_printf(why, "key longer than %d bytes", TABLE_SOURCE_KEY_MAX);
		return -1;
	}
	buf_puts(value, cp);
	buf_trim(value);
	casefold_buf(key);
	return 0;
}

int table_source_parse(const char *line, struct buf *key, struct buf *value, struct buf *why)
{
	const char *cp = line, *start;

	buf_reset(key);
	buf_reset(value);
	start = cp;
	while (*cp && !isspace((unsigned char)*cp))
		cp++;
	buf_append(key, start, (size_t)(cp - start));
	while (isspace((unsigned char)*cp))
		cp++;
	if (key->len == 0 || *cp == 0) {
		buf_puts(why, "expected format: key whitespace value");
		return -1;
	}
	return table_source_entry_end(key, value, cp, why);
}

/* One reading loop for postmap ("key value") and postalias ("name:
 * value") sources; only the line parser and the warnings differ. */
static int table_source_read_with(struct lines *src, int aliases, table_source_fn fn, void *ctx,
				  struct buf *err)
{
	struct buf line = BUF_INIT, key = BUF_INIT, value = BUF_INIT, why = BUF_INIT;
	int rc;

	while ((rc = lines_next(src, &line, err)) > 0) {
		buf_reset(&why);
		if (isspace((unsigned char)line.data[0])) {
			if (aliases)
				msg_warn("%s, line %d: need name:value pair -- ignoring this line",
					 src->path, src->lineno);
			else
				msg_warn(
				    "%s, line %d: logical line must not start with whitespace: "
				    "\"%s\" -- ignoring this line",
				    src->path, src->lineno, line.data);
			continue;
		}
		if ((aliases ? table_source_parse_alias(line.data, &key, &value, &why)
			     : table_source_parse(line.data, &key, &value, &why)) < 0) {
			msg_warn("%s, line %d: %s -- ignoring this line", src->path, src->lineno,
				 why.len ? why.data : "need name:value pair");
			continue;
		}
		if (!aliases && key.data[key.len - 1] == ':')
			msg_warn(
			    "%s, line %d: record is in \"key: value\" format; is this an alias "
			    "file?",
			    src->path, src->lineno);
		if ((rc = fn(ctx, key.data, value.data, src->path, src->lineno, err)) < 0)
			break;
	}
	buf_free(&line);
	buf_free(&key);
	buf_free(&value);
	buf_free(&why);
	return rc < 0 ? -1 : 0;
}

int table_source_read(struct lines *src, table_source_fn fn, void *ctx, struct buf *err)
{
	return table_source_read_with(src, 0, fn, ctx, err);
}

/* aliases(5): "name: value"; a quoted name may hold spaces, '#', ':', '@'. */
int table_source_parse_alias(const char *line, struct buf *key, struct buf *value, struct buf *why)
{
	const char *cp = line;

	buf_reset(key);
	buf_reset(value);
	if (*cp == '"') {
		for (cp++; *cp && *cp != '"'; cp++)
			buf_putc(key, *cp == '\\' && cp[1] ? *++cp : *cp);
		if (*cp == '"')
			cp++;
	} else {
		for (; *cp && *cp != ':'; cp++)
			buf_putc(key, *cp);
		buf_trim(key);
	}
	while (isspace((unsigned char)*cp))
		cp++;
	if (*cp++ != ':' || key->len == 0) {
		buf_puts(why, "need name:value pair");
		return -1;
	}
	return table_source_entry_end(key, value, cp, why);
}

int table_source_read_aliases(struct lines *src, table_source_fn fn, void *ctx, struct buf *err)
{
	return table_source_read_with(src, 1, fn, ctx, err);
}

/* The dictionary: separate chaining, doubled when the load passes 1. */
struct table_dict_entry {
	struct table_dict_entry *next;
	char *key;
	char *value;
};

struct table_dict {
	struct table_dict_entry **slots;
	size_t nslots;
	size_t count;
};

/* Tables are admin-written, not attacker-chosen: an unkeyed hash. */
static size_t table_dict_hash(const char *key)
{
	return (size_t)hash_fnv1a_str(key);
}

struct table_dict *table_dict_new(void)
{
	struct table_dict *d = xcalloc(1, sizeof(*d));

	d->nslots = 64;
	d->slots = xcalloc(d->nslots, sizeof(*d->slots));
	return d;
}

static struct table_dict_entry *table_dict_find(const struct table_dict *d, const char *key)
{
	struct table_dict_entry *e = d->slots[table_dict_hash(key) % d->nslots];

	while (e && strcmp(e->key, key) != 0)
		e = e->next;
	return e;
}

static void table_dict_grow(struct table_dict *d)
{
	size_t n = d->nslots * 2;
	struct table_dict_entry **slots = xcalloc(n, sizeof(*slots));

	for (size_t i = 0; i < d->nslots; i++) {
		struct table_dict_entry *e, *next;
		for (e = d->slots[i]; e; e = next) {
			next = e->next;
			size_t h = table_dict_hash(e->key) % n;
			e->next = slots[h];
			slots[h] = e;
		}
	}
	free(d->slots);
	d->slots = slots;
	d->nslots = n;
}

int table_dict_put(struct table_dict *d, const char *key, const char *value, int replace)
{
	struct table_dict_entry *e = table_dict_find(d, key);

	if (e) {
		if (replace) {
			free(e->value);
			e->value = xstrdup(value);
		}
		return 0;
	}
	if (d->count >= d->nslots)
		table_dict_grow(d);
	size_t h = table_dict_hash(key) % d->nslots;
	e = xmalloc(sizeof(*e));
	e->key = xstrdup(key);
	e->value = xstrdup(value);
	e->next = d->slots[h];
	d->slots[h] = e;
	d->count++;
	return 1;
}

const char *table_dict_get(const struct table_dict *d, const char *key)
{
	const struct table_dict_entry *e = table_dict_find(d, key);

	return e ? e->value : NULL;
}

size_t table_dict_count(const struct table_dict *d)
{
	return d->count;
}

void table_dict_free(struct table_dict *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->nslots; i++) {
		struct table_dict_entry *e, *next;
		for (e = d->slots[i]; e; e = next) {
			next = e->next;
			free(e->key);
			free(e->value);
			free(e);
		}
	}
	free(d->slots);
	free(d);
}

int table_dict_lookup(struct table *t, const char *key, struct buf *value, struct buf *err)
{
	const char *v = table_dict_get(t->priv, key);

	if (v == NULL)
		return TABLE_NOTFOUND;
	buf_set(value, v);
	return TABLE_FOUND;
}

void table_dict_table_free(struct table *t)
{
	table_dict_free(t->priv);
	t->priv = NULL;
}
