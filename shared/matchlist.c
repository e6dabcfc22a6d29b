/* matchlist.c - Postfix's match lists (match_list.c, match_ops.c); interface in matchlist.h.
 * Name matching is match_hostname(): exact, then with MATCHLIST_PARENT "d" matches "*.d", else
 * ".d" matches "*.d"; tables get the domain and its parents (table_keys.h). "!/file" negates
 * each item read from the file. */
#include "matchlist.h"

#include "casefold.h"
#include "inet.h"
#include "lines.h"
#include "table.h"
#include "table_keys.h"

#include <stdlib.h>
#include <string.h>

#define MATCHLIST_MAX_DEPTH 5 /* nested /file/name items */

enum ml_kind { ML_NAME, ML_NET, ML_TABLE, ML_NOFILE };

struct ml_item {
	int neg; /* "!item" */
	enum ml_kind kind;
	char *text; /* NAME: casefolded name; NOFILE: why the file is unusable */
	struct inet_addr net;
	int len;
	struct table *t;
};

struct matchlist {
	struct ml_item *v;
	size_t n;
	int flags;
};

static int ml_parse(struct matchlist *l, const char *value, int neg, int depth, struct buf *why);

static void ml_push(struct matchlist *l, const struct ml_item *it)
{
	l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
	l->v[l->n++] = *it;
}

/* "/file/name": its logical lines are more list items. A file that cannot be opened becomes a
 * pseudo table whose lookups fail, as Postfix's dict_surrogate(). */
static int ml_file(struct matchlist *l, const char *path, int neg, int depth, struct buf *why)
{
	struct lines lr;
	struct buf line = BUF_INIT, e = BUF_INIT;
	int r;

	if (depth >= MATCHLIST_MAX_DEPTH) {
		buf_printf(why, "%s: /file/name items nested too deeply", path);
		return -1;
	}
	if (lines_open(&lr, path, &e) < 0) {
		struct ml_item it = {neg, ML_NOFILE, NULL, {0, {0}}, 0, NULL};
		it.text = buf_detach(&e); /* "open PATH: reason" */
		ml_push(l, &it);
		return 0;
	}
	while ((r = lines_next(&lr, &line, why)) == 1)
		if (ml_parse(l, buf_str(&line), neg, depth + 1, why) < 0) {
			r = -1;
			break;
		}
	lines_close(&lr);
	buf_free(&line);
	buf_free(&e);
	return r < 0 ? -1 : 0;
}

/* Postfix's MATCH_DICTIONARY(), except that for address lists "2001:db8::/32" (a bare IPv6
 * address, maybe with a length) is a network, not a table. */
static int ml_is_table(const char *item, int flags)
{
	if (item[0] == '[' || strchr(item, ':') == NULL)
		return 0;
	if (flags & MATCHLIST_ADDR) {
		struct inet_addr a;
		size_t n = strcspn(item, "/");
		char *head = strndup(item, n);
		int ip = head != NULL && inet_addr_parse(head, &a) == 0;
		free(head);
		return !ip;
	}
	return 1;
}

static int ml_item(struct matchlist *l, const char *item, int neg, int depth, struct buf *why)
{
	struct ml_item it = {neg, ML_NAME, NULL, {0, {0}}, 0, NULL};
	struct buf fold = BUF_INIT;

	while (*item == '!') {
		it.neg = !it.neg;
		item++;
	}
	if (*item == 0) {
		buf_puts(why, "no pattern after '!'");
		return -1;
	}
	if (*item == '/')
		return ml_file(l, item, it.neg, depth, why);
	if (ml_is_table(item, l->flags)) {
		it.kind = ML_TABLE;
		if ((it.t = table_open_lenient(item, why)) == NULL)
			return -1;
	} else if ((l->flags & MATCHLIST_ADDR) &&
		   (item[0] == '[' || strchr(item, '/') || inet_addr_parse(item, &it.net) == 0)) {
		struct buf e = BUF_INIT;
		it.kind = ML_NET;
		if (inet_prefix_parse(item, &it.net, &it.len, &e) < 0) {
			buf_printf(why, "bad net/mask pattern: \"%s\": %s", item, buf_str(&e));
			buf_free(&e);
			return -1;
		}
		buf_free(&e);
		inet_prefix_mask(&it.net, it.len);
	} else {
		casefold(&fold, item, strlen(item));
		it.text = buf_detach(&fold);
	}
	ml_push(l, &it);
	return 0;
}

static int ml_parse(struct matchlist *l, const char *value, int neg, int depth, struct buf *why)
{
	struct cfg_list items = {NULL, 0};
	struct buf item = BUF_INIT;
	int rc = 0;

	if (cfg_list_split(value, &items, why) < 0)
		rc = -1;
	for (size_t i = 0; rc == 0 && i < items.count; i++) {
		buf_reset(&item);
		cfg_list_unbrace(items.items[i], &item);
		if (item.len)
			rc = ml_item(l, buf_str(&item), neg, depth, why);
	}
	cfg_list_free(&items);
	buf_free(&item);
	return rc;
}

struct matchlist *matchlist_new(const char *param_name, const char *value, int flags,
				struct buf *err)
{
	struct matchlist *l = xcalloc(1, sizeof(*l));
	struct buf why = BUF_INIT;

	l->flags = flags | MATCHLIST_DOMAIN;
	if (ml_parse(l, value ? value : "", 0, 0, &why) < 0) {
		buf_printf(err, "%s: %s", param_name, buf_str(&why));
		matchlist_free(l);
		l = NULL;
	}
	buf_free(&why);
	return l;
}

struct matchlist *matchlist_from_cfg(const struct cfg *cfg, const char *listener,
				     const char *param_name, int flags, struct buf *err)
{
	struct cfg_list pl = {NULL, 0};
	struct buf v = BUF_INIT, e = BUF_INIT;
	struct matchlist *l = NULL;

	if (cfg_get_list(cfg, NULL, "parent_domain_matches_subdomains", &pl, &e) == 0)
		for (size_t i = 0; i < pl.count; i++)
			if (strcmp(pl.items[i], param_name) == 0)
				flags |= MATCHLIST_PARENT;
	if (cfg_get_str(cfg, listener, param_name, &v, err) == 0)
		l = matchlist_new(param_name, buf_str(&v), flags, err);
	cfg_list_free(&pl);
	buf_free(&v);
	buf_free(&e);
	return l;
}

void matchlist_free(struct matchlist *l)
{
	if (l == NULL)
		return;
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].text);
		if (l->v[i].t)
			table_close(l->v[i].t);
	}
	free(l->v);
	free(l);
}

/* match_hostname() for a name item; name is casefolded. */
static int ml_name(const char *name, const char *pattern, int parent)
{
	size_t nl = strlen(name), pl = strlen(pattern);
	const char *pd = name + nl - pl;

	if (strcmp(name, pattern) == 0)
		return 1;
	if (nl <= pl)
		return 0;
	if (parent)
		return pd[-1] == '.' && strcmp(pd, pattern) == 0;
	return pattern[0] == '.' && strcmp(pd, pattern) == 0;
}

static int ml_table(struct table *t, const struct table_keys *k, struct buf *err)
{
	struct buf val = BUF_INIT;
	int rc = table_lookup_keys(t, k, &val, NULL, err);

	buf_free(&val);
	return rc == TABLE_ERROR ? -1 : rc == TABLE_FOUND;
}

/* The one walk: first item that matches decides (negated: no match). */
static int ml_match(const struct matchlist *l, const char *name, const char *ip, int domain,
		    struct buf *err)
{
	struct buf fold = BUF_INIT;
	struct table_keys keys = TABLE_KEYS_INIT;
	struct inet_addr a;
	int parent = (l->flags & MATCHLIST_PARENT) != 0;
	int have_ip = ip != NULL && inet_addr_parse(ip, &a) == 0;
	int use_name = name != NULL && *name != 0 && (domain || strcmp(name, "unknown") != 0);
	int keyed = 0, rc = 0;

	if (have_ip)
		inet_addr_unmap(&a);
	if (use_name)
		casefold(&fold, name, strlen(name));
	for (size_t i = 0; i < l->n && rc == 0; i++) {
		const struct ml_item *it = &l->v[i];
		int hit = 0;
		switch (it->kind) {
		case ML_NAME:
			hit = use_name && ml_name(buf_str(&fold), it->text, parent);
			break;
		case ML_NET:
			hit = have_ip && inet_prefix_match(&it->net, it->len, &a);
			break;
		case ML_TABLE:
			if (!keyed) {
				if (domain)
					table_keys_domain(&keys, name,
							  parent ? TABLE_KEYS_PARENT : 0);
				else
					table_keys_client(&keys, name, ip,
							  parent ? TABLE_KEYS_PARENT : 0);
				keyed = 1;
			}
			hit = ml_table(it->t, &keys, err);
			break;
		case ML_NOFILE:
			buf_puts(err, it->text);
			hit = -1;
			break;
		}
		if (hit < 0)
			rc = -1;
		else if (hit)
			rc = it->neg ? 2 : 1; /* 2: matched a negation, stop with "no" */
	}
	table_keys_free(&keys);
	buf_free(&fold);
	return rc == 2 ? 0 : rc;
}

int matchlist_domain(const struct matchlist *l, const char *domain, struct buf *err)
{
	if (l == NULL || domain == NULL || *domain == 0)
		return 0;
	return ml_match(l, domain, NULL, 1, err);
}

int matchlist_host(const struct matchlist *l, const char *name, const char *ip, struct buf *err)
{
	if (l == NULL)
		return 0;
	return ml_match(l, name, ip, 0, err);
}

int matchlist_addr(const struct matchlist *l, const char *ip, struct buf *err)
{
	return matchlist_host(l, NULL, ip, err);
}
