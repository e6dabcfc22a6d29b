/* table_pcre.c - pcre: lookup tables (Postfix pcre_table(5)) with PCRE2.
 *
 * Only the engine lives here: compile with the rule's flags, match the
 * whole unfolded key, report capture groups. The file syntax, if/endif
 * and $n substitution are table_rules.c. Flags i and s are on by default;
 * X (PCRE1 "extra") is obsolete with PCRE2 and ignored with a warning.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "table.h"
#include "table_rules.h"

#include <pcre2.h>
#include <string.h>

static const struct rules_flag table_pcre_flags[] = {
    {'i', PCRE2_CASELESS, 0},
    {'m', PCRE2_MULTILINE, 0},
    {'s', PCRE2_DOTALL, 0},
    {'x', PCRE2_EXTENDED, 0},
    {'A', PCRE2_ANCHORED, 0},
    {'E', PCRE2_DOLLAR_ENDONLY, 0},
    {'U', PCRE2_UNGREEDY, 0},
    {'X', 0, 1},
    {0, 0, 0},
};

static void *table_pcre_compile(const char *pattern, int flags, size_t *ngroups, struct buf *err)
{
	PCRE2_UCHAR msg[256]; /* PCRE2's own messages are short, fixed text */
	PCRE2_SIZE offset;
	uint32_t count = 0;
	int code;
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, (uint32_t)flags,
				       &code, &offset, NULL);

	if (re == NULL) {
		pcre2_get_error_message(code, msg, sizeof(msg));
		buf_printf(err, "error in regex at offset %zu: %s", (size_t)offset, (char *)msg);
		return NULL;
	}
	pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &count);
	*ngroups = count;
	return re;
}

static int table_pcre_match(void *re, const char *subject, struct rules_span *spans, size_t nspans,
			    struct buf *err)
{
	PCRE2_UCHAR msg[256];
	pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
	int rc;

	if (md == NULL) {
		buf_puts(err, "pcre2_match_data_create: out of memory");
		return -1;
	}
	rc = pcre2_match(re, (PCRE2_SPTR)subject, strlen(subject), 0, 0, md, NULL);
	if (rc >= 0) {
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
		uint32_t npairs = pcre2_get_ovector_count(md);
		for (size_t i = 0; i < nspans; i++) {
			/* Groups past the last one that matched are unset. */
			int set =
			    i < npairs && (i < (size_t)rc || rc == 0) && ov[2 * i] != PCRE2_UNSET;
			spans[i].start = set ? (long)ov[2 * i] : -1;
			spans[i].end = set ? (long)ov[2 * i + 1] : -1;
		}
		rc = 1;
	} else if (rc == PCRE2_ERROR_NOMATCH) {
		rc = 0;
	} else {
		pcre2_get_error_message(rc, msg, sizeof(msg));
		buf_printf(err, "pcre2_match: %s", (char *)msg);
		rc = -1;
	}
	pcre2_match_data_free(md);
	return rc;
}

static void table_pcre_free_re(void *re)
{
	pcre2_code_free(re);
}

static const struct rules_engine table_pcre_engine = {
    .name = "pcre",
    .default_flags = PCRE2_CASELESS | PCRE2_DOTALL,
    .flags = table_pcre_flags,
    .compile = table_pcre_compile,
    .match = table_pcre_match,
    .free = table_pcre_free_re,
};

static int table_pcre_load(struct table *t, struct lines *src, struct buf *err)
{
	t->priv = rules_load(&table_pcre_engine, src, err);
	return t->priv ? 0 : -1;
}

static int table_pcre_lookup(struct table *t, const char *key, struct buf *value, struct buf *err)
{
	return rules_lookup(t->priv, key, value, err);
}

static void table_pcre_free(struct table *t)
{
	rules_free(t->priv);
	t->priv = NULL;
}

const struct table_ops table_pcre_ops = {
    .type = "pcre",
    .flags = TABLE_OPS_PATTERN | TABLE_OPS_NOFOLD | TABLE_OPS_FILE | TABLE_OPS_LINES,
    .load = table_pcre_load,
    .lookup = table_pcre_lookup,
    .free = table_pcre_free,
};
