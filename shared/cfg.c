/* cfg.c - configuration store, parser, typed getters (see cfg.h).
 *
 * Settings are kept raw in file order (one entry per name: a later line
 * replaces the value and location, "last setting wins"), indexed by a
 * hash of their names; defaults come from the caller's registry.
 * Expansion (cfg_expand.c) happens on every get, so listener overrides
 * are seen by $references too. Validation runs over file settings first,
 * so errors point at the file's line. Dynamic defaults and the set of
 * restriction classes are recomputed once after a file is parsed (and
 * after each cfg_set()), not per line, so loading stays linear.
 */
#include "cfg.h"
#include "cfg_impl.h"
#include "hash.h"
#include "lines.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Pseudo registry entries for names that are not registered one by one. */
static const struct cfg_param cfg_listen_param = {
    "listen_*", CFG_LISTEN, "", "listener addresses", 0, 0, NULL, CFG_P_TERN, NULL};
static const struct cfg_param cfg_class_param = {
    "restriction class", CFG_LIST, "", "smtpd restriction class", 0, 0, NULL, 0, NULL};

/* Postfix's raw parameters (values that postconf and the daemons do not
 * $-expand when loading main.cf). Sorted: cfg_param_raw() bsearches. */
static const char *const cfg_raw_names[] = {
    "command_execution_directory",
    "default_rbl_reply",
    "forward_path",
    "luser_relay",
    "mailbox_command",
    "postscreen_expansion_filter",
    "postscreen_reject_footer",
    "smtpd_expansion_filter",
    "smtpd_reject_footer",
};

static int cfg_param_cmp(const void *a, const void *b)
{
	const struct cfg_param *const *pa = a, *const *pb = b;
	return strcmp((*pa)->name, (*pb)->name);
}

static int cfg_str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

struct cfg *cfg_new(const struct cfg_param *registry)
{
	struct cfg *c = xcalloc(1, sizeof(*c));

	c->reg = registry;
	while (registry[c->nreg].name)
		c->nreg++;
	c->sorted = xcalloc(c->nreg + 1, sizeof(*c->sorted));
	c->dyn = xcalloc(c->nreg + 1, sizeof(*c->dyn));
	for (size_t i = 0; i < c->nreg; i++)
		c->sorted[i] = &registry[i];
	qsort(c->sorted, c->nreg, sizeof(*c->sorted), cfg_param_cmp);
	c->dir = xstrdup(".");
	cfg_refresh(c);
	return c;
}

void cfg_free(struct cfg *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->nset; i++) {
		free(c->set[i].name);
		free(c->set[i].value);
		free(c->set[i].file);
	}
	for (size_t i = 0; i < c->nreg; i++)
		free(c->dyn[i]);
	for (size_t i = 0; i < c->nwarn; i++)
		free(c->warn[i]);
	free(c->set);
	free(c->index);
	cfg_list_free(&c->classes);
	free(c->dyn);
	free(c->sorted);
	free(c->warn);
	free(c->dir);
	free(c->file);
	free(c);
}

/* The words of smtpd_restriction_classes, sorted for bsearch (Postfix
 * lets each class be a parameter of its own). Empty when the registry
 * has no such parameter or its value does not expand; cfg_validate()
 * reports the latter. */
static void cfg_classes_update(struct cfg *c)
{
	struct buf v = BUF_INIT, err = BUF_INIT;

	cfg_list_free(&c->classes);
	if (cfg_param_find(c, "smtpd_restriction_classes") != NULL &&
	    cfg_get_str(c, NULL, "smtpd_restriction_classes", &v, &err) == 0 &&
	    cfg_list_split(buf_str(&v), &c->classes, &err) == 0)
		qsort(c->classes.items, c->classes.count, sizeof(*c->classes.items), cfg_str_cmp);
	buf_free(&v);
	buf_free(&err);
}

/* Recompute dynamic defaults in registry order, so a later one (mydomain)
 * can use an earlier one (myhostname), then the restriction classes. */
void cfg_refresh(struct cfg *c)
{
	struct buf out = BUF_INIT;

	/* Start from the static defaults each time, so that a default that
	 * refers to another dynamic one cannot feed on its own last value. */
	for (size_t i = 0; i < c->nreg; i++) {
		free(c->dyn[i]);
		c->dyn[i] = NULL;
	}
	for (size_t i = 0; i < c->nreg; i++) {
		if (c->reg[i].dyn == NULL)
			continue;
		buf_set(&out, "");
		c->reg[i].dyn(c, &c->reg[i], &out);
		free(c->dyn[i]);
		c->dyn[i] = xstrdup(buf_str(&out));
	}
	buf_free(&out);
	cfg_classes_update(c);
}

const struct cfg_param *cfg_param_find(const struct cfg *c, const char *name)
{
	struct cfg_param key = {.name = name};
	const struct cfg_param *kp = &key, *const * hit;

	hit = bsearch(&kp, c->sorted, c->nreg, sizeof(*c->sorted), cfg_param_cmp);
	return hit ? *hit : NULL;
}

size_t cfg_param_count(const struct cfg *c)
{
	return c->nreg;
}

const char *cfg_param_default(const struct cfg *c, const struct cfg_param *p)
{
	if (p >= c->reg && p < c->reg + c->nreg && p->dyn && c->dyn[p - c->reg])
		return c->dyn[p - c->reg];
	return p->def ? p->def : "";
}

/* The index slot holding name, or the free slot where it belongs. */
static size_t *cfg_index_slot(const struct cfg *c, const char *name)
{
	size_t mask = c->capindex - 1, i = (size_t)hash_fnv1a_str(name) & mask;

	while (c->index[i] && strcmp(c->set[c->index[i] - 1].name, name) != 0)
		i = (i + 1) & mask;
	return &c->index[i];
}

static void cfg_index_grow(struct cfg *c)
{
	free(c->index);
	c->capindex = c->capindex ? 2 * c->capindex : 64;
	c->index = xcalloc(c->capindex, sizeof(*c->index));
	for (size_t i = 0; i < c->nset; i++)
		*cfg_index_slot(c, c->set[i].name) = i + 1;
}

struct cfg_setting *cfg_setting_find(const struct cfg *c, const char *name)
{
	size_t slot;

	if (c->capindex == 0)
		return NULL;
	slot = *cfg_index_slot(c, name);
	return slot ? &c->set[slot - 1] : NULL;
}

/* Store one setting; the caller runs cfg_refresh() when done. */
static void cfg_store(struct cfg *c, const char *name, const char *value, const char *file,
		      int line)
{
	struct cfg_setting *s = cfg_setting_find(c, name);

	if (s == NULL) {
		if (c->nset == c->capset) {
			c->capset = c->capset ? 2 * c->capset : 32;
			c->set = xrealloc(c->set, c->capset * sizeof(*c->set));
		}
		if (2 * (c->nset + 1) > c->capindex)
			cfg_index_grow(c);
		s = &c->set[c->nset++];
		s->name = xstrdup(name);
		*cfg_index_slot(c, name) = c->nset;
	} else {
		free(s->value);
		free(s->file);
	}
	s->value = xstrdup(value);
	s->file = file ? xstrdup(file) : NULL;
	s->line = line;
}

void cfg_set(struct cfg *c, const char *name, const char *value, const char *file, int line)
{
	cfg_store(c, name, value, file, line);
	cfg_refresh(c);
}

void cfg_warn(struct cfg *c, const char *fmt, ...)
{
	struct buf b = BUF_INIT;
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	if (c->nwarn == c->capwarn) {
		c->capwarn = c->capwarn ? 2 * c->capwarn : 16;
		c->warn = xrealloc(c->warn, c->capwarn * sizeof(*c->warn));
	}
	c->warn[c->nwarn++] = buf_detach(&b);
}

size_t cfg_warning_count(const struct cfg *c)
{
	return c->nwarn;
}

const char *cfg_warning(const struct cfg *c, size_t i)
{
	return i < c->nwarn ? c->warn[i] : NULL;
}

const char *cfg_dir(const struct cfg *c)
{
	return c->dir;
}

const char *cfg_file(const struct cfg *c)
{
	return c->file;
}

/* "FILE, line N: " for a setting, "default: " for a default, "" for a
 * value given on the command line. */
void cfg_where(const struct cfg *c, const char *listener, const char *name, struct buf *err)
{
	const struct cfg_setting *s = NULL;
	struct buf key = BUF_INIT;

	if (listener) {
		buf_printf(&key, "%s.%s", listener, name);
		s = cfg_setting_find(c, buf_str(&key));
	}
	if (s == NULL)
		s = cfg_setting_find(c, name);
	if (s == NULL)
		buf_puts(err, "default: ");
	else if (s->file)
		buf_printf(err, "%s, line %d: ", s->file, s->line);
	buf_free(&key);
}

/* Is the name part of "listen_NAME" acceptable? */
static int cfg_listener_name_ok(const char *n)
{
	if (*n == 0)
		return 0;
	for (; *n; n++)
		if (!isalnum((unsigned char)*n) && *n != '_' && *n != '-')
			return 0;
	return 1;
}

/* Is "listen_<l>" registered or set? l is len bytes long. */
static int cfg_listener_declared(const struct cfg *c, const char *l, size_t len)
{
	struct buf key = BUF_INIT;
	int ok;

	buf_puts(&key, "listen_");
	buf_append(&key, l, len);
	ok = cfg_listener_name_ok(buf_str(&key) + 7) &&
	     (cfg_param_find(c, buf_str(&key)) || cfg_setting_find(c, buf_str(&key)));
	buf_free(&key);
	return ok;
}

/* Is name one of the words in smtpd_restriction_classes? */
static int cfg_is_class(const struct cfg *c, const char *name)
{
	return c->classes.count && bsearch(&name, c->classes.items, c->classes.count,
					   sizeof(*c->classes.items), cfg_str_cmp) != NULL;
}

/* The registry entry that types name, or NULL for an unknown name. */
const struct cfg_param *cfg_param_for(const struct cfg *c, const char *name)
{
	const struct cfg_param *p;
	const char *dot;

	if ((p = cfg_param_find(c, name)) != NULL)
		return p;
	if (strncmp(name, "listen_", 7) == 0)
		return cfg_listener_name_ok(name + 7) ? &cfg_listen_param : NULL;
	if ((dot = strchr(name, '.')) != NULL) {
		if (!cfg_listener_declared(c, name, (size_t)(dot - name)))
			return NULL;
		return cfg_param_find(c, dot + 1);
	}
	if (cfg_is_class(c, name))
		return &cfg_class_param;
	return NULL;
}

int cfg_name_known(const struct cfg *c, const char *name)
{
	return cfg_param_for(c, name) != NULL;
}

int cfg_is_set(const struct cfg *c, const char *name)
{
	return cfg_setting_find(c, name) != NULL;
}

int cfg_param_raw(const struct cfg_param *p)
{
	const char *name = p ? p->name : NULL;

	return name && bsearch(&name, cfg_raw_names, sizeof(cfg_raw_names) / sizeof(*cfg_raw_names),
			       sizeof(*cfg_raw_names), cfg_str_cmp) != NULL;
}

int cfg_is_raw(const struct cfg *c, const char *name)
{
	return cfg_param_raw(cfg_param_for(c, name));
}

const char *cfg_get_raw(const struct cfg *c, const char *listener, const char *name)
{
	const struct cfg_setting *s;
	const struct cfg_param *p;

	if (listener) {
		struct buf key = BUF_INIT;
		buf_printf(&key, "%s.%s", listener, name);
		s = cfg_setting_find(c, buf_str(&key));
		buf_free(&key);
		if (s)
			return s->value;
	}
	if ((s = cfg_setting_find(c, name)) != NULL)
		return s->value;
	if ((p = cfg_param_find(c, name)) != NULL)
		return cfg_param_default(c, p);
	return NULL;
}

/* Split "name = value" (Postfix's split_nameval) and store it. */
static int cfg_parse_line(struct cfg *c, const char *file, int line, char *text, struct buf *err)
{
	char *name, *cp, *end;

	for (cp = text; isspace((unsigned char)*cp); cp++)
		;
	name = cp;
	while (*cp && !isspace((unsigned char)*cp) && *cp != '=')
		cp++;
	if (cp == name) {
		buf_printf(err, "%s, line %d: missing attribute name: \"%s\"", file, line, text);
		return -1;
	}
	end = cp;
	while (isspace((unsigned char)*cp))
		cp++;
	if (*cp != '=') {
		buf_printf(err, "%s, line %d: missing '=' after attribute name: \"%s\"", file, line,
			   name);
		return -1;
	}
	*end = 0;
	for (cp++; isspace((unsigned char)*cp); cp++)
		;
	end = cp + strlen(cp);
	while (end > cp && isspace((unsigned char)end[-1]))
		*--end = 0;
	cfg_store(c, name, cp, file, line);
	return 0;
}

static int cfg_parse_lines(struct cfg *c, struct lines *lr, struct buf *err)
{
	struct buf line = BUF_INIT;
	int rc;

	/* lines_next() refuses over-long logical lines (LINES_MAX_LEN). */
	while ((rc = lines_next(lr, &line, err)) > 0) {
		/* Postfix's readllines() ignores text before the first
		 * logical line that starts with white space; so do we, with
		 * its warning (the line's first 30 bytes). */
		if (isspace((unsigned char)line.data[0])) {
			cfg_warn(c,
				 "%s, line %d: logical line must not start with whitespace: "
				 "\"%.30s%s\"",
				 lr->path, lr->lineno, line.data, line.len > 30 ? "..." : "");
			continue;
		}
		if ((rc = cfg_parse_line(c, lr->path, lr->lineno, line.data, err)) < 0)
			break;
	}
	buf_free(&line);
	cfg_refresh(c);
	return rc < 0 ? -1 : 0;
}

int cfg_parse_string(struct cfg *c, const char *name, const char *text, struct buf *err)
{
	struct lines lr;
	int rc;

	lines_open_string(&lr, name, text);
	rc = cfg_parse_lines(c, &lr, err);
	lines_close(&lr);
	return rc;
}

static int cfg_name_char(int ch)
{
	return isalnum((unsigned char)ch) || ch == '_';
}

/* Call fn for each name that value refers to: $name, ${name...} and
 * $(name...), also inside conditional operands; "$$" is no reference.
 * The name is NUL-terminated in a scratch buffer. */
static void cfg_refs(const char *value, void (*fn)(void *, const char *), void *arg)
{
	struct buf name = BUF_INIT;

	for (const char *cp = value; *cp;) {
		if (*cp++ != '$')
			continue;
		if (*cp == '$') {
			cp++;
			continue;
		}
		const char *r = cp;
		if (*r == '{' || *r == '(')
			for (r++; isspace((unsigned char)*r); r++)
				;
		const char *e = r;
		while (cfg_name_char(*e))
			e++;
		if (e > r) {
			buf_set(&name, "");
			buf_append(&name, r, (size_t)(e - r));
			fn(arg, buf_str(&name));
		}
		cp = e > r ? e : r; /* the rest of ${...} may hold more $refs */
	}
	buf_free(&name);
}

static void cfg_ref_collect(void *arg, const char *name)
{
	struct cfg_list *l = arg;

	l->items = xrealloc(l->items, (l->count + 2) * sizeof(*l->items));
	l->items[l->count++] = xstrdup(name);
	l->items[l->count] = NULL;
}

struct cfg_ref_ctx {
	struct cfg *c;
	const struct cfg_setting *s;
};

/* As postconf: a reference to a name neither registered nor set. */
static void cfg_ref_check(void *arg, const char *name)
{
	struct cfg_ref_ctx *x = arg;

	if (cfg_get_raw(x->c, NULL, name) == NULL)
		cfg_warn(x->c, "%s, line %d: undefined parameter: %s",
			 x->s->file ? x->s->file : "command line", x->s->line, name);
}

/* Warn, with file and line, about $references to undefined names, then
 * about names that nothing will read. Raw values are not scanned, as
 * postconf: their $names are not parameters. */
static void cfg_warn_names(struct cfg *c)
{
	struct cfg_list refs = {0};

	for (size_t i = 0; i < c->nset; i++) {
		struct cfg_ref_ctx x = {c, &c->set[i]};
		if (cfg_is_raw(c, c->set[i].name))
			continue;
		cfg_refs(c->set[i].value, cfg_ref_check, &x);
		cfg_refs(c->set[i].value, cfg_ref_collect, &refs);
	}
	if (refs.count)
		qsort(refs.items, refs.count, sizeof(*refs.items), cfg_str_cmp);
	for (size_t i = 0; i < c->nset; i++) {
		const struct cfg_setting *s = &c->set[i];
		const char *dot = strchr(s->name, '.'), *name = s->name;
		/* A user-defined name that a value refers to is in use. */
		if (cfg_name_known(c, s->name) ||
		    (!dot && refs.count &&
		     bsearch(&name, refs.items, refs.count, sizeof(*refs.items), cfg_str_cmp)))
			continue;
		if (dot && !cfg_listener_declared(c, s->name, (size_t)(dot - s->name)))
			cfg_warn(c,
				 "%s, line %d: override \"%s\" for undeclared listener "
				 "(no listen_%.*s)",
				 s->file ? s->file : "command line", s->line, s->name,
				 (int)(dot - s->name), s->name);
		else
			cfg_warn(c, "%s, line %d: unused parameter: %s=%s",
				 s->file ? s->file : "command line", s->line, s->name, s->value);
	}
	cfg_list_free(&refs);
}

int cfg_load_file(struct cfg *c, const char *path, int missing_ok, struct buf *err)
{
	struct lines lr;
	const char *slash;
	int rc;

	free(c->file);
	c->file = xstrdup(path);
	if ((slash = strrchr(path, '/')) != NULL) {
		free(c->dir);
		c->dir = slash == path ? xstrdup("/") : xstrndup(path, (size_t)(slash - path));
	}
	if (missing_ok && access(path, F_OK) < 0 && errno == ENOENT)
		return cfg_validate(c, err);
	if (lines_open(&lr, path, err) < 0)
		return -1;
	rc = cfg_parse_lines(c, &lr, err);
	lines_close(&lr);
	if (rc < 0)
		return -1;
	cfg_warn_names(c);
	return cfg_validate(c, err);
}

int cfg_load_dir(struct cfg *c, const char *dir, const char *file, int missing_ok, struct buf *err)
{
	struct buf path = BUF_INIT;
	int rc;

	buf_printf(&path, "%s/%s", dir, file);
	rc = cfg_load_file(c, buf_str(&path), missing_ok, err);
	free(c->dir);
	c->dir = xstrdup(dir);
	buf_free(&path);
	return rc;
}

static int cfg_entry_cmp(const void *a, const void *b)
{
	const struct cfg_entry *ea = a, *eb = b;
	return strcmp(ea->name, eb->name);
}

size_t cfg_entries(const struct cfg *c, unsigned flags, struct cfg_entry **out)
{
	struct cfg_entry *v = xcalloc(c->nreg + c->nset + 1, sizeof(*v));
	size_t n = 0;

	if (!(flags & CFG_ENTRIES_SET)) {
		for (size_t i = 0; i < c->nreg; i++) {
			const struct cfg_param *p = &c->reg[i];
			const struct cfg_setting *s = cfg_setting_find(c, p->name);
			v[n].name = p->name;
			v[n].param = p;
			v[n].def = cfg_param_default(c, p);
			v[n].value = (s && !(flags & CFG_ENTRIES_DEFAULTS)) ? s->value : v[n].def;
			v[n].file = s ? s->file : NULL;
			v[n++].line = s ? s->line : 0;
		}
	}
	for (size_t i = 0; i < c->nset && !(flags & CFG_ENTRIES_DEFAULTS); i++) {
		const struct cfg_setting *s = &c->set[i];
		const struct cfg_param *p = cfg_param_find(c, s->name);
		if (p && !(flags & CFG_ENTRIES_SET))
			continue; /* already listed from the registry */
		v[n].name = s->name;
		v[n].param = p;
		v[n].def = p ? cfg_param_default(c, p) : NULL;
		v[n].value = s->value;
		v[n].file = s->file;
		v[n++].line = s->line;
	}
	qsort(v, n, sizeof(*v), cfg_entry_cmp);
	*out = v;
	return n;
}

int cfg_listeners(const struct cfg *c, struct cfg_list *out)
{
	struct cfg_entry *v;
	size_t n = cfg_entries(c, 0, &v);

	out->items = xcalloc(n + 1, sizeof(*out->items));
	out->count = 0;
	for (size_t i = 0; i < n; i++) {
		if (strncmp(v[i].name, "listen_", 7) != 0 || !cfg_listener_name_ok(v[i].name + 7))
			continue;
		const char *cp = v[i].value;
		while (isspace((unsigned char)*cp))
			cp++;
		if (*cp)
			out->items[out->count++] = xstrdup(v[i].name + 7);
	}
	free(v);
	return 0;
}
