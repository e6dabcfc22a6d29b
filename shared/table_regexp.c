/* table_regexp.c - regexp: lookup tables (Postfix regexp_table(5)) with
 * POSIX regcomp()/regexec().
 *
 * Only the engine lives here; syntax and substitution are table_rules.c.
 * Flags: i (REG_ICASE, on), x (REG_EXTENDED, on; off gives basic REs),
 * m (REG_NEWLINE, off: without it '.' and [^a] match a newline and ^ $
 * only match at the ends of the key).
 */
#include "table.h"
#include "table_rules.h"

#include <regex.h>
#include <stdlib.h>

static const struct rules_flag table_regexp_flags[] = {
    {'i', REG_ICASE, 0},
    {'x', REG_EXTENDED, 0},
    {'m', REG_NEWLINE, 0},
    {0, 0, 0},
};

static void *table_regexp_compile(const char *pattern, int flags, size_t *ngroups, struct buf *err)
{
	regex_t *re = xmalloc(sizeof(*re));
	int code = regcomp(re, pattern, flags);

	if (code != 0) {
		size_t n = regerror(code, re, NULL, 0);
		char *msg = xmalloc(n);
		regerror(code, re, msg, n);
		buf_puts(err, msg); /* Postfix logs regerror() text as is */
		free(msg);
		free(re);
		return NULL;
	}
	*ngroups = re->re_nsub;
	return re;
}

static int table_regexp_match(void *re, const char *subject, struct rules_span *spans,
			      size_t nspans, struct buf *err)
{
	regmatch_t *pm = nspans ? xcalloc(nspans, sizeof(*pm)) : NULL;
	int rc = regexec(re, subject, nspans, pm, 0);

	if (rc == 0) {
		for (size_t i = 0; i < nspans; i++) {
			spans[i].start = pm[i].rm_so;
			spans[i].end = pm[i].rm_eo;
		}
		rc = 1;
	} else if (rc == REG_NOMATCH) {
		rc = 0;
	} else {
		char msg[256]; /* regerror() truncates safely to the size given */
		regerror(rc, re, msg, sizeof(msg));
		buf_printf(err, "regexec: %s", msg);
		rc = -1;
	}
	free(pm);
	return rc;
}

static void table_regexp_free_re(void *re)
{
	regfree(re);
	free(re);
}

static const struct rules_engine table_regexp_engine = {
    .name = "regexp",
    .default_flags = REG_ICASE | REG_EXTENDED,
    .flags = table_regexp_flags,
    .compile = table_regexp_compile,
    .match = table_regexp_match,
    .free = table_regexp_free_re,
};

static int table_regexp_load(struct table *t, struct lines *src, struct buf *err)
{
	t->priv = rules_load(&table_regexp_engine, src, err);
	return t->priv ? 0 : -1;
}

static int table_regexp_lookup(struct table *t, const char *key, struct buf *value, struct buf *err)
{
	return rules_lookup(t->priv, key, value, err);
}

static void table_regexp_free(struct table *t)
{
	rules_free(t->priv);
	t->priv = NULL;
}

const struct table_ops table_regexp_ops = {
    .type = "regexp",
    .flags = TABLE_OPS_PATTERN | TABLE_OPS_NOFOLD | TABLE_OPS_FILE | TABLE_OPS_LINES,
    .load = table_regexp_load,
    .lookup = table_regexp_lookup,
    .free = table_regexp_free,
};
