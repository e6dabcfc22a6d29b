/* table_texthash.c - texthash:/file, a "key value" source file read into
 * memory at open (Postfix's texthash: — no postmap step needed).
 *
 * Keys are folded when loaded, the first of duplicate keys wins (with
 * postmap's "duplicate entry" warning), and table_reload() rereads the
 * file when its mtime or inode changes.
 */
#include "log.h"
#include "table.h"
#include "table_source.h"

static int table_texthash_add(void *ctx, const char *key, const char *value, const char *file,
			      int lineno, struct buf *err)
{
	if (table_dict_put(ctx, key, value, 0) == 0)
		msg_warn("%s, line %d: duplicate entry: \"%s\"", file, lineno, key);
	return 0;
}

static int table_texthash_load(struct table *t, struct lines *src, struct buf *err)
{
	struct table_dict *d = table_dict_new();

	if (table_source_read(src, table_texthash_add, d, err) < 0) {
		table_dict_free(d);
		return -1;
	}
	t->priv = d;
	return 0;
}

const struct table_ops table_texthash_ops = {
    .type = "texthash",
    .flags = TABLE_OPS_FILE | TABLE_OPS_LINES,
    .load = table_texthash_load,
    .lookup = table_dict_lookup,
    .free = table_dict_table_free,
};
