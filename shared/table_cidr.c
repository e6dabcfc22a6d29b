/* table_cidr.c - cidr:/file tables (Postfix cidr_table(5)): "pattern
 * result" rules with a.b.c.d[/len] or IPv6[/len] patterns, optional [],
 * "!pattern", and "if [!]pattern ... endif" blocks; first match wins.
 *
 * Bad rules are skipped with Postfix's warnings ("cidr map FILE, line N:
 * ...: skipping this rule"), never fatal. A key that is not a numeric
 * address matches nothing; an IPv4 key never matches an IPv6 rule (not
 * even a negated one) and vice versa, v4-mapped included, as Postfix.
 */
#include "inet.h"
#include "log.h"
#include "table.h"
#include "table_source.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum table_cidr_op { CIDR_MATCH, CIDR_IF, CIDR_ENDIF };

struct table_cidr_rule {
	enum table_cidr_op op;
	int negate;
	int len;
	struct inet_addr net;
	char *result; /* CIDR_MATCH */
	size_t endif; /* CIDR_IF: index after its ENDIF (or the end) */
	int lineno;
};

struct table_cidr {
	struct table_cidr_rule *rules;
	size_t count, cap;
	size_t *open_ifs; /* load-time stack of unclosed IF rules */
	size_t depth, open_cap;
};

/* Parse "[!]pattern" into r; 0 ok, -1 with why set. */
static int table_cidr_parse_pattern(const char *text, struct table_cidr_rule *r, struct buf *why)
{
	if (*text == '!') {
		r->negate = 1;
		text++;
		while (isspace((unsigned char)*text))
			text++;
	}
	if (*text == 0) {
		buf_puts(why, "no address pattern");
		return -1;
	}
	if (inet_prefix_parse(text, &r->net, &r->len, why) < 0)
		return -1;
	if (inet_prefix_host_bits(&r->net, r->len)) {
		struct inet_addr fixed = r->net;
		inet_prefix_mask(&fixed, r->len);
		buf_printf(why, "non-null host address bits in \"%s\", perhaps you should use \"",
			   text);
		inet_addr_format(&fixed, why);
		buf_printf(why, "/%d\" instead", r->len);
		return -1;
	}
	return 0;
}

/* "pattern result": split at the first white space after the pattern. */
static int table_cidr_parse_match(char *line, struct table_cidr_rule *r, struct buf *why)
{
	char *cp = line;

	if (*cp == '!')
		for (cp++; isspace((unsigned char)*cp); cp++)
			;
	while (*cp && !isspace((unsigned char)*cp))
		cp++;
	if (*cp)
		*cp++ = 0;
	while (isspace((unsigned char)*cp))
		cp++;
	if (table_cidr_parse_pattern(line, r, why) < 0)
		return -1;
	if (*cp == 0) {
		buf_puts(why, "no lookup result");
		return -1;
	}
	r->op = CIDR_MATCH;
	r->result = xstrdup(cp);
	return 0;
}

/* Classify one trimmed line into r; if/endif nesting is checked here. */
static int table_cidr_parse_line(struct table_cidr *tc, char *line, struct table_cidr_rule *r,
				 struct buf *why)
{
	size_t wlen = strcspn(line, " \t\r\n\f\v");
	char *rest = line + wlen;

	while (isspace((unsigned char)*rest))
		rest++;
	if (wlen == 2 && strncasecmp(line, "if", 2) == 0) {
		r->op = CIDR_IF;
		return table_cidr_parse_pattern(rest, r, why);
	}
	if (wlen == 5 && strncasecmp(line, "endif", 5) == 0) {
		if (*rest) {
			buf_puts(why, "garbage after ENDIF");
			return -1;
		}
		if (tc->depth == 0) {
			buf_puts(why, "ENDIF without IF");
			return -1;
		}
		r->op = CIDR_ENDIF;
		return 0;
	}
	return table_cidr_parse_match(line, r, why);
}

static void table_cidr_add(struct table_cidr *tc, const struct table_cidr_rule *r)
{
	if (tc->count == tc->cap) {
		tc->cap = tc->cap ? 2 * tc->cap : 16;
		tc->rules = xrealloc(tc->rules, tc->cap * sizeof(*tc->rules));
	}
	tc->rules[tc->count] = *r;
	if (r->op == CIDR_IF) {
		if (tc->depth == tc->open_cap) {
			tc->open_cap = tc->open_cap ? 2 * tc->open_cap : 8;
			tc->open_ifs = xrealloc(tc->open_ifs, tc->open_cap * sizeof(size_t));
		}
		tc->open_ifs[tc->depth++] = tc->count;
	} else if (r->op == CIDR_ENDIF) {
		tc->rules[tc->open_ifs[--tc->depth]].endif = tc->count + 1;
	}
	tc->count++;
}

static void table_cidr_free_rules(struct table_cidr *tc)
{
	for (size_t i = 0; i < tc->count; i++)
		free(tc->rules[i].result);
	free(tc->rules);
	free(tc->open_ifs);
	free(tc);
}

static int table_cidr_load(struct table *t, struct lines *src, struct buf *err)
{
	struct table_cidr *tc = xcalloc(1, sizeof(*tc));
	struct buf line = BUF_INIT, why = BUF_INIT;
	int rc;

	while ((rc = lines_next(src, &line, err)) > 0) {
		struct table_cidr_rule r = {.lineno = src->lineno};
		buf_trim(&line);
		buf_reset(&why);
		if (table_cidr_parse_line(tc, line.data + strspn(line.data, " \t"), &r, &why) < 0) {
			msg_warn("cidr map %s, line %d: %s: skipping this rule", src->path,
				 src->lineno, why.data);
			continue;
		}
		table_cidr_add(tc, &r);
	}
	/* Postfix warns and keeps the block: its rules stay conditional. */
	while (tc->depth > 0) {
		size_t i = tc->open_ifs[--tc->depth];
		tc->rules[i].endif = tc->count;
		msg_warn("cidr map %s, line %d: IF has no matching ENDIF", src->path,
			 tc->rules[i].lineno);
	}
	buf_free(&line);
	buf_free(&why);
	if (rc < 0) {
		table_cidr_free_rules(tc);
		return -1;
	}
	t->priv = tc;
	return 0;
}

static int table_cidr_lookup(struct table *t, const char *key, struct buf *value, struct buf *err)
{
	struct table_cidr *tc = t->priv;
	struct inet_addr a;
	size_t i = 0;

	if (inet_addr_parse(key, &a) < 0)
		return TABLE_NOTFOUND;
	while (i < tc->count) {
		const struct table_cidr_rule *r = &tc->rules[i];
		int hit = r->op != CIDR_ENDIF && r->net.family == a.family &&
			  inet_prefix_match(&r->net, r->len, &a) != r->negate;
		if (r->op == CIDR_MATCH && hit) {
			buf_set(value, r->result);
			return TABLE_FOUND;
		}
		i = (r->op == CIDR_IF && !hit) ? r->endif : i + 1;
	}
	return TABLE_NOTFOUND;
}

static void table_cidr_free(struct table *t)
{
	table_cidr_free_rules(t->priv);
	t->priv = NULL;
}

const struct table_ops table_cidr_ops = {
    .type = "cidr",
    .flags = TABLE_OPS_PATTERN | TABLE_OPS_FILE | TABLE_OPS_LINES,
    .load = table_cidr_load,
    .lookup = table_cidr_lookup,
    .free = table_cidr_free,
};
