/* cfg_expand.c - $name expansion and the typed getters (see cfg.h).
 *
 * Forms, as postconf(5): $name ${name} $(name), ${name?value},
 * ${name:value}, ${name?{v1}:{v2}}, and $$ for a literal '$'. Undefined
 * names expand to nothing. A '$' followed by anything else (or nothing)
 * is Postfix's "empty macro name" error. A name that (indirectly) refers
 * to itself is an error naming the chain; the relational and function
 * forms of Postfix 3.0 are refused as unsupported. Raw parameters
 * (cfg_is_raw()) expand to their text as written. The output size and
 * the number of expansions are bounded, so "a = $b$b, b = $c$c, ..."
 * cannot blow up.
 */
#include "cfg.h"
#include "cfg_impl.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define CFG_EXPAND_DEPTH 100
#define CFG_EXPAND_STEPS 100000
#define CFG_EXPAND_MAX (1024 * 1024)

struct cfg_exp {
	const struct cfg *c;
	const char *listener;
	const char *stack[CFG_EXPAND_DEPTH];
	int depth;
	long steps;
	const char *text; /* the value being expanded, for messages */
	size_t textlen;
};

static int cfg_exp_text(struct cfg_exp *x, const char *s, size_t n, struct buf *out,
			struct buf *err);

static int cfg_name_char(int ch)
{
	return isalnum((unsigned char)ch) || ch == '_';
}

static void cfg_exp_chain(const struct cfg_exp *x, const char *name, struct buf *err)
{
	buf_printf(err, "recursive expansion of \"$%s\" (", name);
	for (int i = 0; i < x->depth; i++)
		buf_printf(err, "%s -> ", x->stack[i]);
	buf_printf(err, "%s)", name);
}

static int cfg_exp_name(struct cfg_exp *x, const char *name, struct buf *out, struct buf *err)
{
	const char *raw;
	int rc;

	for (int i = 0; i < x->depth; i++) {
		if (strcmp(x->stack[i], name) == 0) {
			cfg_exp_chain(x, name, err);
			return -1;
		}
	}
	if (x->depth >= CFG_EXPAND_DEPTH || ++x->steps > CFG_EXPAND_STEPS) {
		buf_printf(err, "unreasonable expansion nesting at \"$%s\"", name);
		return -1;
	}
	if ((raw = cfg_get_raw(x->c, x->listener, name)) == NULL)
		return 0; /* undefined: empty, as Postfix */
	if (cfg_param_raw(cfg_param_find(x->c, name))) {
		buf_puts(out, raw);
		return 0;
	}
	const char *text = x->text;
	size_t textlen = x->textlen;
	x->stack[x->depth++] = name;
	x->text = raw;
	x->textlen = strlen(raw);
	rc = cfg_exp_text(x, raw, x->textlen, out, err);
	x->text = text;
	x->textlen = textlen;
	x->depth--;
	return rc;
}

/* Length of the group starting at s[0] == open, through its matching
 * close; 0 when unbalanced. */
static size_t cfg_exp_group(const char *s, size_t n, char open, char close)
{
	int depth = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == open)
			depth++;
		else if (s[i] == close && --depth == 0)
			return i + 1;
	}
	return 0;
}

static size_t cfg_exp_skipws(const char *s, size_t i, size_t n)
{
	while (i < n && isspace((unsigned char)s[i]))
		i++;
	return i;
}

/* Expand the inside of "{...}" (braces included in s), trimmed. */
static int cfg_exp_braced(struct cfg_exp *x, const char *s, size_t n, struct buf *out,
			  struct buf *err)
{
	size_t b = cfg_exp_skipws(s, 1, n - 1), e = n - 1;

	while (e > b && isspace((unsigned char)s[e - 1]))
		e--;
	return cfg_exp_text(x, s + b, e - b, out, err);
}

/* ${name?...} and ${name:...}: s is the operand after '?' or ':'. */
static int cfg_exp_cond(struct cfg_exp *x, const char *name, char op, const char *s, size_t n,
			struct buf *out, struct buf *err)
{
	struct buf val = BUF_INIT;
	size_t i = cfg_exp_skipws(s, 0, n), g1 = 0, g2 = 0, g2at = 0;
	int rc = -1, set;

	if (i < n && s[i] == '{') {
		if ((g1 = cfg_exp_group(s + i, n - i, '{', '}')) == 0)
			goto syntax;
		size_t j = cfg_exp_skipws(s, i + g1, n);
		if (op == '?' && j < n && s[j] == ':') {
			g2at = cfg_exp_skipws(s, j + 1, n);
			if (g2at >= n || s[g2at] != '{' ||
			    (g2 = cfg_exp_group(s + g2at, n - g2at, '{', '}')) == 0)
				goto syntax;
			j = cfg_exp_skipws(s, g2at + g2, n);
		}
		if (j != n)
			goto syntax;
	}
	if (cfg_exp_name(x, name, &val, err) < 0)
		goto done;
	set = val.len > 0;
	if ((op == '?') == set) {
		rc = g1 ? cfg_exp_braced(x, s + i, g1, out, err) : cfg_exp_text(x, s, n, out, err);
	} else {
		rc = g2 ? cfg_exp_braced(x, s + g2at, g2, out, err) : 0;
	}
	goto done;
syntax:
	buf_printf(err, "bad conditional expression \"${%s%c%.*s}\"", name, op, (int)n, s);
done:
	buf_free(&val);
	return rc;
}

/* Postfix's words for a '$' without a name after it. */
static int cfg_exp_empty(const struct cfg_exp *x, struct buf *err)
{
	buf_printf(err, "empty macro name: \"%.*s\"", (int)x->textlen, x->text);
	return -1;
}

/* The inside of ${...} or $(...). */
static int cfg_exp_ref(struct cfg_exp *x, const char *s, size_t n, struct buf *out, struct buf *err)
{
	size_t b = cfg_exp_skipws(s, 0, n), len = b, op;
	char *name;
	int rc;

	while (len < n && cfg_name_char(s[len]))
		len++;
	op = cfg_exp_skipws(s, len, n);
	if (b == n)
		return cfg_exp_empty(x, err); /* ${} */
	if (len == b || (op < n && s[op] != '?' && s[op] != ':')) {
		buf_printf(err, "unsupported expression \"${%.*s}\"", (int)n, s);
		return -1;
	}
	name = xstrndup(s + b, len - b);
	if (op == n)
		rc = cfg_exp_name(x, name, out, err);
	else
		rc = cfg_exp_cond(x, name, s[op], s + op + 1, n - op - 1, out, err);
	free(name);
	return rc;
}

static int cfg_exp_text(struct cfg_exp *x, const char *s, size_t n, struct buf *out,
			struct buf *err)
{
	size_t i = 0;

	while (i < n) {
		if (out->len > CFG_EXPAND_MAX) {
			buf_printf(err, "expansion longer than %d bytes", CFG_EXPAND_MAX);
			return -1;
		}
		if (s[i] != '$') {
			buf_putc(out, s[i++]);
		} else if (i + 1 >= n) {
			return cfg_exp_empty(x, err);
		} else if (s[i + 1] == '$') {
			buf_putc(out, '$');
			i += 2;
		} else if (s[i + 1] == '{' || s[i + 1] == '(') {
			char open = s[i + 1], close = open == '{' ? '}' : ')';
			size_t g = cfg_exp_group(s + i + 1, n - i - 1, open, close);
			if (g == 0) {
				buf_printf(err, "missing '%c' in \"%.*s\"", close, (int)(n - i),
					   s + i);
				return -1;
			}
			if (cfg_exp_ref(x, s + i + 2, g - 2, out, err) < 0)
				return -1;
			i += 1 + g;
		} else if (cfg_name_char(s[i + 1])) {
			size_t b = ++i;
			while (i < n && cfg_name_char(s[i]))
				i++;
			char *name = xstrndup(s + b, i - b);
			int rc = cfg_exp_name(x, name, out, err);
			free(name);
			if (rc < 0)
				return -1;
		} else {
			return cfg_exp_empty(x, err); /* "a$ b", as Postfix */
		}
	}
	return 0;
}

int cfg_expand(const struct cfg *c, const char *listener, const char *text, struct buf *out,
	       struct buf *err)
{
	struct cfg_exp x = {.c = c, .listener = listener, .text = text, .textlen = strlen(text)};

	buf_set(out, "");
	return cfg_exp_text(&x, text, x.textlen, out, err);
}

/* Expand parameter name; on failure err = "WHERE: parameter "name": why". */
static int cfg_get_expanded(const struct cfg *c, const char *listener, const char *name,
			    struct buf *out, struct buf *err)
{
	struct cfg_exp x = {.c = c, .listener = listener};
	struct buf why = BUF_INIT;
	int rc = 0;

	buf_set(out, "");
	if (cfg_get_raw(c, listener, name) == NULL && cfg_param_for(c, name) == NULL) {
		buf_printf(err, "unknown parameter \"%s\"", name);
		return -1;
	}
	if (cfg_exp_name(&x, name, out, &why) < 0) {
		cfg_where(c, listener, name, err);
		buf_printf(err, "parameter \"%s\": %s", name, buf_str(&why));
		rc = -1;
	}
	buf_free(&why);
	return rc;
}

/* Expand and check name against its type. */
static int cfg_get_checked(const struct cfg *c, const char *listener, const char *name,
			   struct buf *out, struct buf *err)
{
	const struct cfg_param *p = cfg_param_for(c, name);
	struct buf why = BUF_INIT;
	int rc = 0;

	if (cfg_get_expanded(c, listener, name, out, err) < 0)
		return -1;
	if (p && cfg_value_check(p, name, buf_str(out), &why) < 0) {
		cfg_where(c, listener, name, err);
		buf_puts(err, buf_str(&why));
		rc = -1;
	}
	buf_free(&why);
	return rc;
}

int cfg_get_str(const struct cfg *c, const char *listener, const char *name, struct buf *out,
		struct buf *err)
{
	return cfg_get_expanded(c, listener, name, out, err);
}

/* Expand name, check it, then convert with conv; err as cfg_get_checked. */
static int cfg_get_num(const struct cfg *c, const char *listener, const char *name, long long *out,
		       int (*conv)(const char *, const char *, long long *), struct buf *err)
{
	const struct cfg_param *p = cfg_param_for(c, name);
	struct buf v = BUF_INIT;
	int rc = -1;

	if (cfg_get_checked(c, listener, name, &v, err) < 0)
		goto done;
	if (conv(buf_str(&v), p ? p->unit : NULL, out) < 0) {
		cfg_where(c, listener, name, err);
		buf_printf(err, "bad value \"%s\" for parameter \"%s\"", buf_str(&v), name);
		goto done;
	}
	rc = 0;
done:
	buf_free(&v);
	return rc;
}

static int cfg_conv_bool(const char *s, const char *unit, long long *out)
{
	int b;
	if (cfg_parse_bool(s, &b) < 0)
		return -1;
	*out = b;
	return 0;
}

static int cfg_conv_int(const char *s, const char *unit, long long *out)
{
	return cfg_parse_int(s, out);
}

static int cfg_conv_ms(const char *s, const char *unit, long long *out)
{
	return cfg_parse_time_ms(s, unit ? unit : "s", out);
}

static int cfg_conv_size(const char *s, const char *unit, long long *out)
{
	return cfg_parse_size(s, out);
}

int cfg_get_bool(const struct cfg *c, const char *listener, const char *name, int *out,
		 struct buf *err)
{
	long long v;
	if (cfg_get_num(c, listener, name, &v, cfg_conv_bool, err) < 0)
		return -1;
	*out = (int)v;
	return 0;
}

int cfg_get_int(const struct cfg *c, const char *listener, const char *name, long long *out,
		struct buf *err)
{
	return cfg_get_num(c, listener, name, out, cfg_conv_int, err);
}

int cfg_get_time_ms(const struct cfg *c, const char *listener, const char *name, long long *msecs,
		    struct buf *err)
{
	return cfg_get_num(c, listener, name, msecs, cfg_conv_ms, err);
}

/* Seconds, rounded up so "500ms" never becomes "no timeout". */
int cfg_get_time(const struct cfg *c, const char *listener, const char *name, long long *secs,
		 struct buf *err)
{
	long long ms;
	if (cfg_get_time_ms(c, listener, name, &ms, err) < 0)
		return -1;
	*secs = (ms + 999) / 1000;
	return 0;
}

int cfg_get_size(const struct cfg *c, const char *listener, const char *name, long long *bytes,
		 struct buf *err)
{
	return cfg_get_num(c, listener, name, bytes, cfg_conv_size, err);
}

int cfg_get_list(const struct cfg *c, const char *listener, const char *name, struct cfg_list *out,
		 struct buf *err)
{
	struct buf v = BUF_INIT;
	int rc = -1;

	out->items = NULL;
	out->count = 0;
	if (cfg_get_checked(c, listener, name, &v, err) < 0)
		goto done;
	if (cfg_list_split(buf_str(&v), out, err) < 0)
		goto done;
	rc = 0;
done:
	buf_free(&v);
	return rc;
}

int cfg_get_path(const struct cfg *c, const char *listener, const char *name, struct buf *out,
		 struct buf *err)
{
	struct buf v = BUF_INIT;

	if (cfg_get_checked(c, listener, name, &v, err) < 0) {
		buf_free(&v);
		return -1;
	}
	buf_set(out, "");
	if (v.len && v.data[0] != '/')
		buf_printf(out, "%s/", c->dir);
	buf_puts(out, buf_str(&v));
	buf_free(&v);
	return 0;
}

/* Validate one setting (an override "L.p" in listener L's view). */
static int cfg_validate_setting(const struct cfg *c, const char *name, struct buf *err)
{
	struct buf v = BUF_INIT;
	const char *dot = strchr(name, '.');
	int rc;

	if (dot && strncmp(name, "listen_", 7) != 0 && cfg_param_for(c, name)) {
		char *l = xstrndup(name, (size_t)(dot - name));
		rc = cfg_get_checked(c, l, dot + 1, &v, err);
		free(l);
	} else {
		rc = cfg_get_checked(c, NULL, name, &v, err);
	}
	buf_free(&v);
	return rc;
}

int cfg_validate(const struct cfg *c, struct buf *err)
{
	for (size_t i = 0; i < c->nset; i++)
		if (cfg_validate_setting(c, c->set[i].name, err) < 0)
			return -1;
	for (size_t i = 0; i < c->nreg; i++)
		if (!cfg_setting_find(c, c->reg[i].name) &&
		    cfg_validate_setting(c, c->reg[i].name, err) < 0)
			return -1;
	return 0;
}

int cfg_check(const struct cfg *c, const char *name, const char *value, struct buf *err)
{
	const struct cfg_param *p = cfg_param_for(c, name);
	const char *dot = strchr(name, '.');
	struct buf v = BUF_INIT, why = BUF_INIT;
	char *l = NULL;
	int rc = -1;

	if (dot && strncmp(name, "listen_", 7) != 0)
		l = xstrndup(name, (size_t)(dot - name));
	if (cfg_expand(c, l, value, &v, &why) < 0) {
		buf_printf(err, "parameter \"%s\": %s", name, buf_str(&why));
		goto done;
	}
	if (p && cfg_value_check(p, name, buf_str(&v), err) < 0)
		goto done;
	rc = 0;
done:
	free(l);
	buf_free(&v);
	buf_free(&why);
	return rc;
}
