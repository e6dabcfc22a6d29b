/* table_sqlite.c - sqlite: lookup tables (Postfix sqlite_table(5)):
 * "sqlite:/etc/tern/file.cf", a main.cf-style file naming dbpath, query,
 * result_format, domain and expansion_limit (or the legacy select_field,
 * table, where_field, additional_conditions).
 *
 * Keys arrive folded (table.c). Every key part put into the query is
 * quoted with sqlite3's %q, so a key cannot add SQL. A lookup whose key
 * lacks a part that the query or result_format needs (%d of an
 * unqualified key, %u of "@domain", %3 of a two-label domain) is
 * suppressed and returns "not found", as in Postfix. The database is
 * opened read-only: a table lookup never creates or changes a file.
 */
#include "log.h"
#include "table.h"

#include <ctype.h>
#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SQLITE_BUSY_MS 5000 /* wait for a writer's lock rather than fail at once */

struct sqlite_map {
	sqlite3 *db;
	char *query;	     /* template */
	char *result_format; /* template */
	long expansion_limit;
	char **domains; /* names matched exactly, case-insensitively */
	size_t ndomains;
	struct table **domain_tables;
	size_t ndomain_tables;
	int have_domain; /* "domain" was set: only user@listed-domain keys */
};

/* The parts of a lookup key that %s %u %d %1..%9 expand to. */
struct sqlite_key {
	const char *full;
	char *local;  /* NULL if the key has no '@' */
	char *domain; /* NULL if the key has no '@' */
};

static void sqlite_key_init(struct sqlite_key *k, const char *key)
{
	const char *at = strrchr(key, '@');

	k->full = key;
	k->local = at ? xstrndup(key, (size_t)(at - key)) : NULL;
	k->domain = at ? xstrdup(at + 1) : NULL;
}

static void sqlite_key_free(struct sqlite_key *k)
{
	free(k->local);
	free(k->domain);
}

/* Label n (1 = rightmost) of the domain into out; 0 if there is none.
 * Empty labels ("a..b", ".a.") are not counted, as Postfix splits. */
static int sqlite_domain_label(const char *domain, int n, struct buf *out)
{
	const char *end = domain + strlen(domain), *start;

	while (end > domain) {
		start = end;
		while (start > domain && start[-1] != '.')
			start--;
		if (start < end && --n == 0) {
			buf_append(out, start, (size_t)(end - start));
			return 1;
		}
		end = start > domain ? start - 1 : domain;
	}
	return 0;
}

/* The key part for %c (s u d S U D 1-9); 0 if the key lacks it, which
 * suppresses the whole lookup. */
static int sqlite_key_part(const struct sqlite_key *k, int c, struct buf *out)
{
	switch (tolower(c)) {
	case 's':
		buf_puts(out, k->full);
		return 1;
	case 'u':
		/* An unqualified key is all local part; "@dom" has an empty one. */
		if (k->local == NULL)
			buf_puts(out, k->full);
		else if (k->local[0])
			buf_puts(out, k->local);
		else
			return 0;
		return 1;
	case 'd':
		if (k->domain == NULL || k->domain[0] == 0)
			return 0;
		buf_puts(out, k->domain);
		return 1;
	default:
		if (k->domain == NULL || k->domain[0] == 0)
			return 0;
		return sqlite_domain_label(k->domain, c - '0', out);
	}
}

/* Check a %-template at load time. */
static int sqlite_template_check(const char *file, const char *what, const char *tmpl,
				 struct buf *err)
{
	for (const char *cp = tmpl; (cp = strchr(cp, '%')) != NULL; cp += 2) {
		if (cp[1] && strchr("%sudSUD123456789", cp[1]))
			continue;
		buf_printf(err, "%s: invalid %s template: %s", file, what, tmpl);
		return -1;
	}
	return 0;
}

/* Expand the query: every key part is SQL-quoted ('' for '). */
static int sqlite_query_expand(const char *tmpl, const struct sqlite_key *k, struct buf *out)
{
	struct buf part = BUF_INIT;
	int ok = 1;

	for (const char *cp = tmpl; *cp && ok; cp++) {
		if (*cp != '%') {
			buf_putc(out, *cp);
		} else if (*++cp == '%') {
			buf_putc(out, '%');
		} else {
			buf_reset(&part);
			if ((ok = sqlite_key_part(k, *cp, &part)) != 0) {
				char *q = sqlite3_mprintf("%q", buf_str(&part));
				buf_puts(out, q);
				sqlite3_free(q);
			}
		}
	}
	buf_free(&part);
	return ok;
}

/* Do the upper-case and digit expansions of result_format have what they
 * need from the key? Checked before the query runs. */
static int sqlite_result_key_ok(const char *tmpl, const struct sqlite_key *k)
{
	struct buf part = BUF_INIT;
	int ok = 1;

	for (const char *cp = tmpl; ok && (cp = strchr(cp, '%')) != NULL; cp += 2) {
		buf_reset(&part);
		if (strchr("SUD123456789", cp[1]))
			ok = sqlite_key_part(k, cp[1], &part);
	}
	buf_free(&part);
	return ok;
}

/* Format one result value; 0 if the value lacks a part the template
 * needs (%u of "@dom", %d of an unqualified value) and is skipped. */
static int sqlite_result_expand(const char *tmpl, const char *value, const struct sqlite_key *k,
				struct buf *out)
{
	struct sqlite_key v;
	int ok = 1;

	sqlite_key_init(&v, value);
	for (const char *cp = tmpl; *cp && ok; cp++) {
		if (*cp != '%')
			buf_putc(out, *cp);
		else if (*++cp == '%')
			buf_putc(out, '%');
		else if (strchr("sud", *cp))
			ok = sqlite_key_part(&v, *cp, out);
		else
			ok = sqlite_key_part(k, *cp, out);
	}
	sqlite_key_free(&v);
	return ok;
}

/* domain: only "user@domain" keys whose domain is listed are looked up. */
static int sqlite_domain_ok(const struct sqlite_map *m, const struct sqlite_key *k, struct buf *err)
{
	struct buf value = BUF_INIT;
	int rc = 0;

	if (!m->have_domain)
		return 1;
	if (k->local == NULL || k->local[0] == 0 || k->domain[0] == 0)
		return 0;
	for (size_t i = 0; i < m->ndomains && rc == 0; i++) {
		/* Exact names only: postmap shows ".example.com" matching no
		 * subdomain here, unlike in mynetworks-style lists. */
		rc = strcasecmp(k->domain, m->domains[i]) == 0;
	}
	for (size_t i = 0; i < m->ndomain_tables && rc == 0; i++) {
		rc = table_lookup(m->domain_tables[i], k->domain, &value, err);
		if (rc == TABLE_ERROR)
			rc = -1;
	}
	buf_free(&value);
	return rc;
}

/* Append one formatted row; -1 when expansion_limit is exceeded. */
static int sqlite_result_add(const struct sqlite_map *m, const char *val,
			     const struct sqlite_key *k, struct buf *value, long *count,
			     struct buf *err)
{
	struct buf one = BUF_INIT;
	int rc = 0;

	/* As Postfix: NULL and empty values are skipped, not "found". */
	if (val == NULL || val[0] == 0)
		return 0;
	if (sqlite_result_expand(m->result_format, val, k, &one)) {
		if (m->expansion_limit > 0 && *count >= m->expansion_limit) {
			buf_printf(err, "expansion limit exceeded for key '%s'", k->full);
			rc = -1;
		} else {
			if ((*count)++ > 0)
				buf_putc(value, ',');
			buf_append(value, one.data, one.len);
		}
	}
	buf_free(&one);
	return rc;
}

static int sqlite_run(const struct sqlite_map *m, const char *sql, const struct sqlite_key *k,
		      struct buf *value, struct buf *err)
{
	sqlite3_stmt *st = NULL;
	long count = 0;
	int rc, status = TABLE_ERROR;

	if (sqlite3_prepare_v2(m->db, sql, -1, &st, NULL) != SQLITE_OK) {
		buf_printf(err, "SQL prepare failed: %s", sqlite3_errmsg(m->db));
		goto out;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *val = (const char *)sqlite3_column_text(st, 0);
		if (sqlite_result_add(m, val, k, value, &count, err) < 0)
			goto out;
	}
	if (rc != SQLITE_DONE) {
		buf_printf(err, "SQL step failed: %s", sqlite3_errmsg(m->db));
		goto out;
	}
	status = count > 0 ? TABLE_FOUND : TABLE_NOTFOUND;
out:
	sqlite3_finalize(st);
	if (status != TABLE_FOUND)
		buf_reset(value);
	return status;
}

static int table_sqlite_lookup(struct table *t, const char *key, struct buf *value, struct buf *err)
{
	struct sqlite_map *m = t->priv;
	struct sqlite_key k;
	struct buf sql = BUF_INIT;
	int rc = TABLE_NOTFOUND, dom;

	sqlite_key_init(&k, key);
	if ((dom = sqlite_domain_ok(m, &k, err)) <= 0) {
		rc = dom < 0 ? TABLE_ERROR : TABLE_NOTFOUND;
		goto out;
	}
	if (!sqlite_result_key_ok(m->result_format, &k) || !sqlite_query_expand(m->query, &k, &sql))
		goto out;
	rc = sqlite_run(m, buf_str(&sql), &k, value, err);
out:
	buf_free(&sql);
	sqlite_key_free(&k);
	return rc;
}

/* Configuration file parameters, before they are checked. */
struct sqlite_conf {
	char *dbpath, *query, *result_format, *domain, *expansion_limit;
	char *select_field, *table, *where_field, *additional_conditions;
};

static char **sqlite_conf_slot(struct sqlite_conf *c, const char *name)
{
	static const struct {
		const char *name;
		size_t off;
	} params[] = {
#define P(x) {#x, offsetof(struct sqlite_conf, x)}
	    P(dbpath), P(query),	   P(result_format),
	    P(domain), P(expansion_limit), P(select_field),
	    P(table),  P(where_field),	   P(additional_conditions),
#undef P
	};
	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
		if (strcmp(name, params[i].name) == 0)
			return (char **)((char *)c + params[i].off);
	return NULL;
}

static void sqlite_conf_free(struct sqlite_conf *c)
{
	char **v = (char **)c;
	for (size_t i = 0; i < sizeof(*c) / sizeof(char *); i++)
		free(v[i]);
}

/* Read "name = value" lines (main.cf syntax); unknown names are ignored,
 * as Postfix's cfg_parser does. */
static int sqlite_conf_read(struct sqlite_conf *c, struct lines *src, struct buf *err)
{
	struct buf line = BUF_INIT, name = BUF_INIT, value = BUF_INIT;
	int rc;

	while ((rc = lines_next(src, &line, err)) > 0) {
		const char *eq = strchr(buf_str(&line), '=');
		char **slot;
		if (eq == NULL || isspace((unsigned char)line.data[0])) {
			buf_printf(err, "%s, line %d: missing '=' after parameter name", src->path,
				   src->lineno);
			rc = -1;
			break;
		}
		buf_reset(&name);
		buf_append(&name, line.data, (size_t)(eq - line.data));
		buf_trim(&name);
		buf_set(&value, eq + 1);
		for (size_t i = 0; i < value.len; i++) /* joined continuation lines */
			if (value.data[i] == '\n')
				value.data[i] = ' ';
		buf_trim(&value);
		if ((slot = sqlite_conf_slot(c, buf_str(&name))) != NULL) {
			free(*slot);
			*slot = xstrdup(buf_str(&value));
		}
	}
	buf_free(&line);
	buf_free(&name);
	buf_free(&value);
	return rc < 0 ? -1 : 0;
}

/* Build the query from the pre-2.2 parameters when "query" is not set. */
static char *sqlite_conf_legacy_query(const struct sqlite_conf *c)
{
	struct buf q = BUF_INIT;

	if (!c->select_field || !*c->select_field || !c->table || !*c->table || !c->where_field ||
	    !*c->where_field)
		return NULL;
	buf_printf(&q, "SELECT %s FROM %s WHERE %s = '%%s' %s", c->select_field, c->table,
		   c->where_field, c->additional_conditions ? c->additional_conditions : "");
	buf_trim(&q);
	return buf_detach(&q);
}

/* Split the domain list at white space and commas: names, type:table. */
static int sqlite_domain_parse(struct sqlite_map *m, const char *list, struct buf *err)
{
	char *copy = xstrdup(list), *save = NULL;
	int rc = 0;

	m->have_domain = 1;
	for (char *w = strtok_r(copy, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
		if (w[0] != '/' && strchr(w, ':')) {
			struct table *dt = table_open(w, err);
			if (dt == NULL) {
				rc = -1;
				break;
			}
			m->domain_tables =
			    xrealloc(m->domain_tables, (m->ndomain_tables + 1) * sizeof(dt));
			m->domain_tables[m->ndomain_tables++] = dt;
		} else {
			m->domains = xrealloc(m->domains, (m->ndomains + 1) * sizeof(char *));
			m->domains[m->ndomains++] = xstrdup(w);
		}
	}
	free(copy);
	return rc;
}

static int sqlite_conf_apply(struct sqlite_map *m, struct sqlite_conf *c, const char *file,
			     struct buf *err)
{
	char *end;

	if (c->dbpath == NULL || c->dbpath[0] == 0) {
		buf_printf(err, "%s: missing dbpath", file);
		return -1;
	}
	if (c->query && c->query[0])
		m->query = xstrdup(c->query);
	else if ((m->query = sqlite_conf_legacy_query(c)) == NULL) {
		buf_printf(err, "%s: missing query (or select_field, table and where_field)", file);
		return -1;
	}
	m->result_format = xstrdup(c->result_format && *c->result_format ? c->result_format : "%s");
	if (sqlite_template_check(file, "query", m->query, err) < 0 ||
	    sqlite_template_check(file, "result", m->result_format, err) < 0)
		return -1;
	if (c->expansion_limit && c->expansion_limit[0]) {
		errno = 0;
		m->expansion_limit = strtol(c->expansion_limit, &end, 10);
		if (errno || *end || m->expansion_limit < 0) {
			buf_printf(err, "%s: bad expansion_limit value: \"%s\"", file,
				   c->expansion_limit);
			return -1;
		}
	}
	if (c->domain && c->domain[0] && sqlite_domain_parse(m, c->domain, err) < 0)
		return -1;
	if (sqlite3_open_v2(c->dbpath, &m->db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
		buf_printf(err, "%s: open database %s: %s", file, c->dbpath,
			   m->db ? sqlite3_errmsg(m->db) : "out of memory");
		return -1;
	}
	sqlite3_busy_timeout(m->db, SQLITE_BUSY_MS);
	return 0;
}

static void table_sqlite_free(struct table *t)
{
	struct sqlite_map *m = t->priv;

	sqlite3_close(m->db);
	free(m->query);
	free(m->result_format);
	for (size_t i = 0; i < m->ndomains; i++)
		free(m->domains[i]);
	free(m->domains);
	for (size_t i = 0; i < m->ndomain_tables; i++)
		table_close(m->domain_tables[i]);
	free(m->domain_tables);
	free(m);
	t->priv = NULL;
}

static int table_sqlite_load(struct table *t, struct lines *src, struct buf *err)
{
	struct sqlite_conf c = {0};
	int rc;

	t->priv = xcalloc(1, sizeof(struct sqlite_map));
	rc = sqlite_conf_read(&c, src, err);
	if (rc == 0)
		rc = sqlite_conf_apply(t->priv, &c, src->path, err);
	sqlite_conf_free(&c);
	if (rc < 0)
		table_sqlite_free(t);
	return rc;
}

const struct table_ops table_sqlite_ops = {
    .type = "sqlite",
    .flags = TABLE_OPS_FILE | TABLE_OPS_LINES,
    .load = table_sqlite_load,
    .lookup = table_sqlite_lookup,
    .free = table_sqlite_free,
};
