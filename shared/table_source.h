/* table_source.h - "key whitespace value" table source files, as postmap
 * reads them, and the in-memory dictionary texthash: and inline: use.
 *
 * table_source_read() feeds each entry to a callback with the key folded
 * to lower case and the value verbatim (trailing white space trimmed; a
 * continuation line's leading white space kept, its newline dropped).
 * Bad lines are not fatal, as with postmap: they are logged as
 * "FILE, line N: expected format: key whitespace value -- ignoring this
 * line" and skipped. "key: value" lines are kept, with postmap's "is this
 * an alias file?" warning (that syntax belongs to postalias).
 * Pitfall: keys longer than TABLE_SOURCE_KEY_MAX are skipped with a warning.
 */
#ifndef TERN_TABLE_SOURCE_H
#define TERN_TABLE_SOURCE_H

#include "buf.h"
#include "lines.h"

#include <stddef.h>

/* Far above any mail address or domain (RFC 5321 §4.5.3.1: 256-octet paths). */
#define TABLE_SOURCE_KEY_MAX 4096

/* Split one logical line; 0 ok, -1 with why set (no line prefix). */
int table_source_parse(const char *line, struct buf *key, struct buf *value, struct buf *why);

/* Join a lines.h logical line as Postfix does: drop each '\n', keep the
 * continuation line's leading white space ("a\n\tb" -> "a\tb"). */

/* Called per entry; return <0 to stop reading (err set). */
typedef int (*table_source_fn)(void *ctx, const char *key, const char *value, const char *file,
			       int lineno, struct buf *err);
/* Read every entry of src; 0 at end, -1 on a read or callback error. */
int table_source_read(struct lines *src, table_source_fn fn, void *ctx, struct buf *err);

/* Build PATH.cdb from the source file PATH (cdb: and hash: tables):
 * written to a temporary file in the same directory, fsync()ed and
 * renamed, so readers see the old or the new table, never half of one.
 * Duplicate keys keep the first value (with a warning). 0 ok, -1 err. */
int table_cdb_build(const char *path, struct buf *err);

/* postalias / newaliases: aliases(5) "name: value" lines (name may be
 * "quoted"); the key is the name without the colon, folded; the value is
 * kept verbatim. Lines without a colon are warned about and skipped. */
int table_source_parse_alias(const char *line, struct buf *key, struct buf *value, struct buf *why);
int table_source_read_aliases(struct lines *src, table_source_fn fn, void *ctx, struct buf *err);
int table_cdb_build_aliases(const char *path, struct buf *err);

/* In-memory string dictionary (chained hash) for texthash: and inline:. */
struct table_dict;
struct table_dict *table_dict_new(void);
/* Returns 1 if added, 0 if key existed (replaced only when replace). */
int table_dict_put(struct table_dict *d, const char *key, const char *value, int replace);
const char *table_dict_get(const struct table_dict *d, const char *key);
size_t table_dict_count(const struct table_dict *d);
void table_dict_free(struct table_dict *d);
/* table_ops lookup/free for tables whose priv is a struct table_dict
 * (texthash, inline). */
struct table;
int table_dict_lookup(struct table *t, const char *key, struct buf *value, struct buf *err);
void table_dict_table_free(struct table *t);

#endif
