/* table_rules.h - the rule-file language of pcre: and regexp: tables.
 *
 * "/re/flags result", "!/re/flags result", "if /re/flags ... endif"
 * (nesting), any non-alphanumeric delimiter, $1 ${1} $(1) and $$ in
 * results: parsed and evaluated here once; the regex engine sits behind
 * struct rules_engine. As Postfix, a bad rule is not fatal: it is logged
 * as "<type> map FILE, line N: ..." and skipped, and the rest of the table
 * is used. Keys are matched unfolded; matching is case-insensitive only
 * through the engine's default 'i' flag.
 */
#ifndef TERN_TABLE_RULES_H
#define TERN_TABLE_RULES_H

#include "buf.h"
#include "lines.h"

/* Offsets of one capture group in the subject; start < 0: did not match. */
struct rules_span {
	long start;
	long end;
};

/* One flag letter: it toggles bit; obsolete letters are accepted with a
 * warning and ignored (pcre's X with PCRE2). */
struct rules_flag {
	char letter;
	int bit;
	int obsolete;
};

struct rules_engine {
	const char *name; /* "pcre", "regexp": message prefix "<name> map" */
	int default_flags;
	const struct rules_flag *flags; /* terminated by letter 0 */
	/* Compile; NULL with a message in err (without file/line). */
	void *(*compile)(const char *pattern, int flags, size_t *ngroups, struct buf *err);
	/* 1 match, 0 no match, -1 engine error (err set). spans[0..nspans)
	 * receives group 0..nspans-1 when spans is not NULL. */
	int (*match)(void *re, const char *subject, struct rules_span *spans, size_t nspans,
		     struct buf *err);
	void (*free)(void *re);
};

struct rules;

/* Read all rules from src. NULL only when src cannot be read (err set);
 * bad rules are warned about and skipped. */
struct rules *rules_load(const struct rules_engine *engine, struct lines *src, struct buf *err);
/* TABLE_FOUND (value set), TABLE_NOTFOUND, or TABLE_ERROR. */
int rules_lookup(const struct rules *rules, const char *key, struct buf *value, struct buf *err);
void rules_free(struct rules *rules);

#endif
