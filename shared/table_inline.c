/* table_inline.c - inline:{ key=value, { key = value, with commas } }
 * (Postfix 3.0+): a small table written in main.cf itself.
 *
 * Top-level items are split at commas and white space, so "key = value"
 * needs braces; a later duplicate replaces an earlier one and keys are
 * folded, as in Postfix. Syntax errors fail table_open() with the text.
 */
#include "casefold.h"
#include "log.h"
#include "table.h"
#include "table_source.h"

#include <ctype.h>
#include <string.h>

/* One "key=value" item; whitespace around '=' only inside braces. */
static int table_inline_add(struct table *t, struct table_dict *d, const char *item,
			    struct buf *err)
{
	const char *eq = strchr(item, '=');
	struct buf key = BUF_INIT, value = BUF_INIT;

	if (eq == NULL) {
		buf_printf(err,
			   "table \"%s\": missing '=' after key \"%s\"; need "
			   "\"inline:{name=value...}\"",
			   t->spec, item);
		return -1;
	}
	buf_append(&key, item, (size_t)(eq - item));
	buf_trim(&key);
	casefold_buf(&key);
	buf_set(&value, eq + 1);
	buf_trim(&value);
	if (value.len == 0)
		msg_warn("table %s: key %s: empty string result is not allowed", t->spec, key.data);
	table_dict_put(d, key.data, value.data, 1);
	buf_free(&key);
	buf_free(&value);
	return 0;
}

static int table_inline_load(struct table *t, struct lines *src, struct buf *err)
{
	struct table_dict *d;
	char **items;
	size_t n;
	int rc = 0;

	if (t->name[0] != '{') {
		buf_printf(err, "table \"%s\": need \"inline:{name=value...}\"", t->spec);
		return -1;
	}
	if (table_inline_split(t->name, 0, &items, &n, err) < 0)
		return -1;
	if (n == 0) {
		buf_printf(err, "table \"%s\": empty list; need \"inline:{name=value...}\"",
			   t->spec);
		table_inline_free(items, n);
		return -1;
	}
	d = table_dict_new();
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = table_inline_add(t, d, items[i], err);
	table_inline_free(items, n);
	if (rc < 0) {
		table_dict_free(d);
		return -1;
	}
	t->priv = d;
	return 0;
}

const struct table_ops table_inline_ops = {
    .type = "inline",
    .flags = 0,
    .load = table_inline_load,
    .lookup = table_dict_lookup,
    .free = table_dict_table_free,
};
