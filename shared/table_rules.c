/* table_rules.c - pcre:/regexp: rule files, engine-independent part (see
 * table_rules.h).
 *
 * Rules are kept in file order; an "if" rule records the index just past
 * its "endif" so a failed condition skips the block in one step. Warnings
 * and the choice between "skip this rule" and "use it anyway" follow
 * Postfix 3.7's dict_pcre/dict_regexp, checked against postmap -q.
 */
#include "table_rules.h"

#include "log.h"
#include "table.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* Replacement indexes above this are out of range for any real pattern;
 * the cap only keeps the decimal conversion from overflowing. */
#define RULES_MAX_INDEX 65535

enum rule_op {
	RULE_MATCH, /* /re/ result */
	RULE_IF,    /* if /re/ ... endif */
};

struct rule {
	enum rule_op op;
	int negate;
	void *re;
	size_t maxref; /* highest $n in result; 0 if none */
	char *result;  /* RULE_MATCH only */
	size_t skip;   /* RULE_IF: index of the first rule after its endif */
	int lineno;
};

struct rules {
	const struct rules_engine *engine;
	char *file; /* for lookup-time warnings */
	struct rule *v;
	size_t n, cap;
};

/* Load-time state: where we are, for messages, and the open IFs. */
struct rules_parse {
	const struct rules_engine *engine;
	const char *file;
	int lineno;
	size_t *ifs; /* indexes of open RULE_IF rules */
	size_t nifs, capifs;
};

struct rules_pattern {
	int negate;
	int flags;
	char *re;
};

static void rules_warn(const struct rules_parse *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void rules_warn(const struct rules_parse *p, const char *fmt, ...)
{
	struct buf text = BUF_INIT;
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&text, fmt, ap);
	va_end(ap);
	msg_warn("%s map %s, line %d: %s", p->engine->name, p->file, p->lineno, buf_str(&text));
	buf_free(&text);
}

static const char *rules_skip_space(const char *cp)
{
	while (isspace((unsigned char)*cp))
		cp++;
	return cp;
}

/* Apply one flag letter; -1 (warned) for an unknown one. */
static int rules_flag_apply(const struct rules_parse *p, int c, int *flags)
{
	for (const struct rules_flag *f = p->engine->flags; f->letter; f++) {
		if (f->letter != c)
			continue;
		if (f->obsolete)
			rules_warn(p, "ignoring obsolete regexp option \"%c\"", c);
		else
			*flags ^= f->bit;
		return 0;
	}
	rules_warn(p, "unknown regexp option \"%c\": skipping this rule", c);
	return -1;
}

/* Parse "[!]<d>re<d>flags" at *cpp; on success *cpp points past the
 * flags. The backslash escapes the delimiter but stays in the regex, as
 * Postfix passes it through to the engine. */
static int rules_parse_pattern(const struct rules_parse *p, const char **cpp,
			       struct rules_pattern *pat)
{
	const char *cp = *cpp, *start;
	int delim;

	memset(pat, 0, sizeof(*pat));
	pat->flags = p->engine->default_flags;
	if (*cp == '!') {
		pat->negate = 1;
		cp = rules_skip_space(cp + 1);
	}
	if (*cp == 0) {
		rules_warn(p, "no regexp: skipping this rule");
		return -1;
	}
	if (isalnum((unsigned char)*cp)) {
		rules_warn(p, "ignoring unrecognized request");
		return -1;
	}
	delim = *cp++;
	for (start = cp; *cp && *cp != delim; cp++)
		if (*cp == '\\' && cp[1])
			cp++;
	if (*cp == 0) {
		rules_warn(p, "no closing regexp delimiter \"%c\": skipping this rule", delim);
		return -1;
	}
	pat->re = xstrndup(start, (size_t)(cp - start));
	for (cp++; *cp && !isspace((unsigned char)*cp); cp++) {
		if (rules_flag_apply(p, *cp, &pat->flags) < 0) {
			free(pat->re);
			pat->re = NULL;
			return -1;
		}
	}
	*cpp = cp;
	return 0;
}

/* Parse a "$n" reference name at cp (just past '$'); sets *name, *len and
 * returns the position after the reference, or NULL if the reference is
 * not terminated. Postfix's mac_parse syntax: $name, ${name}, $(name). */
static const char *rules_ref_scan(const char *cp, const char **name, size_t *len)
{
	if (*cp == '{' || *cp == '(') {
		const char *end = strchr(cp + 1, *cp == '{' ? '}' : ')');
		if (end == NULL)
			return NULL;
		*name = cp + 1;
		*len = (size_t)(end - *name);
		return end + 1;
	}
	*name = cp;
	while (isalnum((unsigned char)*cp) || *cp == '_')
		cp++;
	*len = (size_t)(cp - *name);
	return cp;
}

/* Decimal group index of a reference name; 0 if it is not all digits or
 * is 0, -1 with a warning. */
static long rules_ref_index(const struct rules_parse *p, const char *name, size_t len,
			    const char *text)
{
	long n = 0;

	if (len == 0) {
		rules_warn(p, "empty macro name: \"%s\"", text);
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		if (!isdigit((unsigned char)name[i])) {
			rules_warn(p, "non-numeric replacement index \"%.*s\"", (int)len, name);
			return -1;
		}
		if (n <= RULES_MAX_INDEX)
			n = n * 10 + (name[i] - '0');
	}
	if (n == 0) {
		/* Postfix's two drivers word this one differently. */
		rules_warn(p, "%s replacement index \"%.*s\"",
			   strcmp(p->engine->name, "regexp") == 0 ? "out-of-range" : "out of range",
			   (int)len, name);
		return -1;
	}
	return n;
}

/* Check a result's $ syntax at load time; -1 if bad (warned), else 0
 * with the highest group index in *maxref. */
static int rules_result_check(const struct rules_parse *p, const char *text, size_t *maxref)
{
	const char *cp = text, *name;
	size_t len;
	long n;

	*maxref = 0;
	while ((cp = strchr(cp, '$')) != NULL) {
		if (*++cp == '$') {
			cp++;
			continue;
		}
		if ((cp = rules_ref_scan(cp, &name, &len)) == NULL) {
			rules_warn(p, "truncated macro reference: \"%s\"", text);
			return -1;
		}
		if ((n = rules_ref_index(p, name, len, text)) < 0)
			return -1;
		if ((size_t)n > *maxref)
			*maxref = (size_t)n;
	}
	return 0;
}

/* Expand a result that passed rules_result_check(). A group that did not
 * take part in the match expands to nothing, as in Postfix. */
static void rules_result_expand(const char *text, const char *subject,
				const struct rules_span *spans, size_t nspans, struct buf *out)
{
	const char *cp = text, *dollar, *name;
	size_t len, n;

	while ((dollar = strchr(cp, '$')) != NULL) {
		buf_append(out, cp, (size_t)(dollar - cp));
		if (dollar[1] == '$') {
			buf_putc(out, '$');
			cp = dollar + 2;
			continue;
		}
		cp = rules_ref_scan(dollar + 1, &name, &len);
		n = (size_t)strtoul(name, NULL, 10);
		if (n < nspans && spans[n].start >= 0 && spans[n].end >= spans[n].start)
			buf_append(out, subject + spans[n].start,
				   (size_t)(spans[n].end - spans[n].start));
	}
	buf_puts(out, cp);
}

static struct rule *rules_add(struct rules *r)
{
	if (r->n == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 16;
		r->v = xrealloc(r->v, r->cap * sizeof(*r->v));
	}
	memset(&r->v[r->n], 0, sizeof(r->v[0]));
	return &r->v[r->n++];
}

static void *rules_compile(const struct rules_parse *p, const struct rules_pattern *pat,
			   size_t *ngroups)
{
	struct buf why = BUF_INIT;
	void *re = p->engine->compile(pat->re, pat->flags, ngroups, &why);

	if (re == NULL)
		rules_warn(p, "%s", buf_str(&why));
	buf_free(&why);
	return re;
}

/* "/re/flags result" or "!/re/flags result". */
static void rules_parse_match(struct rules_parse *p, struct rules *r, const char *cp)
{
	struct rules_pattern pat;
	size_t maxref, ngroups = 0;
	void *re = NULL;
	struct buf result = BUF_INIT;

	if (rules_parse_pattern(p, &cp, &pat) < 0)
		return;
	cp = rules_skip_space(cp);
	if (*cp == 0)
		rules_warn(p, "no replacement text: using empty string");
	buf_set(&result, cp);
	buf_trim(&result);
	if (rules_result_check(p, buf_str(&result), &maxref) < 0) {
		rules_warn(p, "bad replacement syntax: skipping this rule");
		goto out;
	}
	/* The result of a negated match has no groups to refer to. */
	if (pat.negate && maxref > 0) {
		rules_warn(p, "$number found in negative match replacement text: "
			      "skipping this rule");
		goto out;
	}
	if ((re = rules_compile(p, &pat, &ngroups)) == NULL)
		goto out;
	if (maxref > ngroups) {
		rules_warn(p, "out of range replacement index \"%zu\": skipping this rule", maxref);
		p->engine->free(re);
		goto out;
	}
	struct rule *rule = rules_add(r);
	rule->op = RULE_MATCH;
	rule->negate = pat.negate;
	rule->re = re;
	rule->maxref = maxref;
	rule->result = buf_detach(&result);
	rule->lineno = p->lineno;
out:
	buf_free(&result);
	free(pat.re);
}

/* "if /re/flags" (text after the keyword at cp). */
static void rules_parse_if(struct rules_parse *p, struct rules *r, const char *cp)
{
	struct rules_pattern pat;
	size_t ngroups;
	void *re;

	cp = rules_skip_space(cp);
	if (rules_parse_pattern(p, &cp, &pat) < 0)
		return;
	cp = rules_skip_space(cp);
	if (*cp) {
		/* Usually an indented rule that became part of this line. */
		rules_warn(p, "ignoring extra text after IF statement: \"%s\"", cp);
		rules_warn(p, "do not prepend whitespace to statements between IF and ENDIF");
	}
	re = rules_compile(p, &pat, &ngroups);
	free(pat.re);
	if (re == NULL)
		return;
	struct rule *rule = rules_add(r);
	rule->op = RULE_IF;
	rule->negate = pat.negate;
	rule->re = re;
	rule->lineno = p->lineno;
	if (p->nifs == p->capifs) {
		p->capifs = p->capifs ? p->capifs * 2 : 8;
		p->ifs = xrealloc(p->ifs, p->capifs * sizeof(*p->ifs));
	}
	p->ifs[p->nifs++] = r->n - 1;
}

static void rules_parse_endif(struct rules_parse *p, struct rules *r, const char *cp)
{
	if (p->nifs == 0) {
		rules_warn(p, "ignoring ENDIF without matching IF");
		return;
	}
	r->v[p->ifs[--p->nifs]].skip = r->n;
	if (*rules_skip_space(cp))
		rules_warn(p, "ignoring extra text after ENDIF");
}

/* Is line the keyword kw followed by a non-alphanumeric (as Postfix)? */
static int rules_is_keyword(const char *line, const char *kw)
{
	size_t n = strlen(kw);
	return strncasecmp(line, kw, n) == 0 && !isalnum((unsigned char)line[n]);
}

static void rules_parse_line(struct rules_parse *p, struct rules *r, const char *line)
{
	if (isspace((unsigned char)line[0]))
		msg_warn("%s, line %d: logical line must not start with whitespace: \"%s\"",
			 p->file, p->lineno, line);
	else if (rules_is_keyword(line, "if"))
		rules_parse_if(p, r, line + 2);
	else if (rules_is_keyword(line, "endif"))
		rules_parse_endif(p, r, line + 5);
	else if (line[0] == '!' || !isalnum((unsigned char)line[0]))
		rules_parse_match(p, r, line);
	else
		rules_warn(p, "ignoring unrecognized request");
}

struct rules *rules_load(const struct rules_engine *engine, struct lines *src, struct buf *err)
{
	struct rules *r = xcalloc(1, sizeof(*r));
	struct rules_parse p = {.engine = engine, .file = src->path};
	struct buf line = BUF_INIT;
	int rc;

	r->engine = engine;
	r->file = xstrdup(src->path);
	while ((rc = lines_next(src, &line, err)) > 0) {
		p.lineno = src->lineno;
		rules_parse_line(&p, r, buf_str(&line));
	}
	/* An unclosed IF extends to the end of the file (Postfix warns, innermost first). */
	while (p.nifs > 0) {
		struct rule *rule = &r->v[p.ifs[--p.nifs]];
		p.lineno = rule->lineno;
		rules_warn(&p, "IF has no matching ENDIF");
		rule->skip = r->n;
	}
	free(p.ifs);
	buf_free(&line);
	if (rc < 0) {
		rules_free(r);
		return NULL;
	}
	return r;
}

/* 1 if the rule's condition holds for key, 0 if not, -1 on engine error. */
static int rules_rule_match(const struct rules *r, const struct rule *rule, const char *key,
			    struct rules_span *spans, size_t nspans, struct buf *err)
{
	int m = r->engine->match(rule->re, key, spans, nspans, err);

	if (m < 0)
		return -1;
	return rule->negate ? !m : m;
}

int rules_lookup(const struct rules *r, const char *key, struct buf *value, struct buf *err)
{
	struct rules_span *spans = NULL;
	size_t i = 0;
	int m, rc = TABLE_NOTFOUND;

	while (i < r->n) {
		const struct rule *rule = &r->v[i];
		size_t nspans = rule->op == RULE_MATCH && rule->maxref ? rule->maxref + 1 : 0;
		if (nspans)
			spans = xrealloc(spans, nspans * sizeof(*spans));
		if ((m = rules_rule_match(r, rule, key, nspans ? spans : NULL, nspans, err)) < 0) {
			/* As Postfix: a matcher failure (e.g. a PCRE resource
			 * limit) is logged and the rule treated as not matching. */
			msg_warn("%s map %s, line %d: %s", r->engine->name, r->file, rule->lineno,
				 buf_str(err));
			buf_reset(err);
			m = 0; /* not even a negated rule applies; an IF block is skipped */
		}
		if (rule->op == RULE_IF) {
			i = m ? i + 1 : rule->skip;
			continue;
		}
		if (m) {
			rules_result_expand(rule->result, key, spans, nspans, value);
			rc = TABLE_FOUND;
			break;
		}
		i++;
	}
	free(spans);
	return rc;
}

void rules_free(struct rules *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->n; i++) {
		r->engine->free(r->v[i].re);
		free(r->v[i].result);
	}
	free(r->v);
	free(r->file);
	free(r);
}
