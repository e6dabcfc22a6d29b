/* table_static.c - static:value and static:{ text with spaces }: every
 * lookup finds the same value (Postfix's static: table).
 *
 * The braced form is trimmed; anything after the closing '}' is an error,
 * as in Postfix. An empty value is returned as found, with Postfix's
 * warning that empty results are not allowed.
 */
#include "log.h"
#include "table.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* "{ text }" -> "text"; 0 ok, -1 with err set. */
static int table_static_unbrace(const struct table *t, struct buf *value, struct buf *err)
{
	const char *close = NULL, *cp;
	int depth = 0;

	/* The brace matching the opening one; Postfix refuses anything after
	 * it, even white space ("static:{x} ", "static:{x}}"). */
	for (cp = t->name; *cp && close == NULL; cp++)
		if (*cp == '{')
			depth++;
		else if (*cp == '}' && --depth == 0)
			close = cp;
	if (close == NULL) {
		buf_printf(err, "table \"%s\": bad static:name syntax: missing '}' in \"%s\"",
			   t->spec, t->name);
		return -1;
	}
	if (close[1] != 0) {
		buf_printf(err,
			   "table \"%s\": bad static:name syntax: syntax error after '}' "
			   "in \"%s\"",
			   t->spec, t->name);
		return -1;
	}
	buf_append(value, t->name + 1, (size_t)(close - t->name - 1));
	buf_trim(value);
	return 0;
}

static int table_static_load(struct table *t, struct lines *src, struct buf *err)
{
	struct buf value = BUF_INIT;

	if (t->name[0] == 0) {
		buf_printf(err, "table \"%s\": expected \"static:value\"", t->spec);
		return -1;
	}
	if (t->name[0] != '{')
		buf_set(&value, t->name);
	else if (table_static_unbrace(t, &value, err) < 0) {
		buf_free(&value);
		return -1;
	}
	if (value.len == 0)
		msg_warn("table %s: empty string result is not allowed", t->spec);
	t->priv = buf_detach(&value);
	return 0;
}

static int table_static_lookup(struct table *t, const char *key, struct buf *value, struct buf *err)
{
	buf_set(value, t->priv);
	return TABLE_FOUND;
}

static void table_static_free(struct table *t)
{
	free(t->priv);
	t->priv = NULL;
}

const struct table_ops table_static_ops = {
    .type = "static",
    .flags = TABLE_OPS_NOFOLD,
    .load = table_static_load,
    .lookup = table_static_lookup,
    .free = table_static_free,
};
