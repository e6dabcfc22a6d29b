/* route.c - recipient routing: domain class ($mydestination, virtual,
 * relay, default) and transport_maps, giving a transport and a nexthop
 * (postfix.md §6.3). Also Postfix's domain_list matching, used for the
 * class tests. Interface in route.h.
 *
 * Pitfall: with TABLE_ERROR we must defer, so every matcher returns -1
 * for it and callers never read it as "no match".
 */
#include "route.h"

#include "lines.h"
#include "table.h"
#include "table_keys.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* One domain_list item: a name/pattern or a table, maybe negated. */
struct route_domain_item {
	int neg;
	char *name;	 /* lower-cased literal, or NULL for a table */
	struct table *t; /* type:name item */
};

struct route_domains {
	struct route_domain_item *v;
	size_t count;
	int parent; /* listed in parent_domain_matches_subdomains */
};

struct route_conf {
	struct route_domains *mydest, *vdomains, *relay;
	struct table **tmaps; /* transport_maps */
	size_t ntmaps;
	char *local_tr, *virtual_tr, *relay_tr, *default_tr;
	char *myhostname, *delims, *empty_rcpt;
};

static int route_domains_add(struct route_domains *d, const char *item, int depth, struct buf *err);

/* route_domains_add_file - "/file/name" items: the file's words (Postfix
 * reads it as more list items; nested files are bounded by depth). */
static int route_domains_add_file(struct route_domains *d, const char *path, int depth,
				  struct buf *err)
{
	struct lines lr;
	struct buf line = BUF_INIT;
	struct cfg_list l = {NULL, 0};
	int rc = -1, r;

	if (depth > 5) {
		buf_printf(err, "%s: /file items nested too deeply", path);
		return -1;
	}
	if (lines_open(&lr, path, err) < 0)
		return -1;
	while ((r = lines_next(&lr, &line, err)) == 1) {
		if (cfg_list_split(buf_str(&line), &l, err) < 0)
			goto out;
		for (size_t i = 0; i < l.count; i++)
			if (route_domains_add(d, l.items[i], depth + 1, err) < 0)
				goto out;
		cfg_list_free(&l);
	}
	rc = r < 0 ? -1 : 0;
out:
	cfg_list_free(&l);
	lines_close(&lr);
	buf_free(&line);
	return rc;
}

static int route_domains_add(struct route_domains *d, const char *item, int depth, struct buf *err)
{
	struct route_domain_item it = {0, NULL, NULL};

	while (*item == '!') {
		it.neg = !it.neg;
		item++;
	}
	if (*item == '/' && it.neg == 0)
		return route_domains_add_file(d, item, depth, err);
	if (strchr(item, ':') != NULL) {
		if ((it.t = table_open_lenient(item, err)) == NULL)
			return -1;
	} else {
		struct buf lc = BUF_INIT;
		buf_set(&lc, item);
		buf_lower(&lc);
		it.name = buf_detach(&lc);
	}
	d->v = xrealloc(d->v, (d->count + 1) * sizeof(*d->v));
	d->v[d->count++] = it;
	return 0;
}

struct route_domains *route_domains_new(const struct cfg_list *items, int parent, struct buf *err)
{
	struct route_domains *d = xcalloc(1, sizeof(*d));
	struct buf item = BUF_INIT;

	d->parent = parent;
	for (size_t i = 0; i < items->count; i++) {
		cfg_list_unbrace(items->items[i], &item);
		if (item.len && route_domains_add(d, buf_str(&item), 0, err) < 0) {
			route_domains_free(d);
			d = NULL;
			break;
		}
		buf_reset(&item);
	}
	buf_free(&item);
	return d;
}

void route_domains_free(struct route_domains *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->count; i++) {
		free(d->v[i].name);
		if (d->v[i].t)
			table_close(d->v[i].t);
	}
	free(d->v);
	free(d);
}

/* route_item_match - one item against the candidate keys (the domain and
 * its parents as "d" or ".d"), as Postfix's match_hostname(). */
static int route_item_match(const struct route_domain_item *it, const struct table_keys *k,
			    struct buf *err)
{
	struct buf val = BUF_INIT;
	int rc = 0;

	if (it->t != NULL) {
		rc = table_lookup_keys(it->t, k, &val, NULL, err);
		rc = rc == TABLE_ERROR ? -1 : rc == TABLE_FOUND;
	} else {
		for (size_t i = 0; i < k->count && !rc; i++)
			rc = strcasecmp(k->v[i].key, it->name) == 0;
	}
	buf_free(&val);
	return rc;
}

int route_domains_match(const struct route_domains *d, const char *domain, struct buf *err)
{
	struct table_keys k = TABLE_KEYS_INIT;
	int rc = 0;

	if (d == NULL || *domain == 0)
		return 0;
	table_keys_domain(&k, domain, d->parent ? TABLE_KEYS_PARENT : 0);
	for (size_t i = 0; i < d->count; i++) {
		/* Without parent-style matching only the name itself and the
		 * ".parent" keys count: "example.com" must not match a
		 * sub-domain, table_keys_domain() already gives that shape. */
		int m = route_item_match(&d->v[i], &k, err);
		if (m != 0) {
			rc = m < 0 ? -1 : !d->v[i].neg;
			break;
		}
	}
	table_keys_free(&k);
	return rc;
}

/* route_parent_style - is name in parent_domain_matches_subdomains? */
static int route_parent_style(const struct cfg *cfg, const char *name)
{
	struct cfg_list l = {NULL, 0};
	struct buf err = BUF_INIT;
	int found = 0;

	if (cfg_get_list(cfg, NULL, "parent_domain_matches_subdomains", &l, &err) == 0)
		for (size_t i = 0; i < l.count && !found; i++)
			found = strcmp(l.items[i], name) == 0;
	cfg_list_free(&l);
	buf_free(&err);
	return found;
}

static struct route_domains *route_conf_domains(const struct cfg *cfg, const char *name,
						struct buf *err)
{
	struct cfg_list l = {NULL, 0};
	struct route_domains *d = NULL;

	if (cfg_get_list(cfg, NULL, name, &l, err) == 0) {
		d = route_domains_new(&l, route_parent_style(cfg, name), err);
		if (d == NULL)
			buf_printf(err, " (in %s)", name);
	}
	cfg_list_free(&l);
	return d;
}

static char *route_conf_str(const struct cfg *cfg, const char *name, int *ok, struct buf *err)
{
	struct buf v = BUF_INIT;

	if (cfg_get_str(cfg, NULL, name, &v, err) < 0)
		*ok = 0;
	buf_trim(&v);
	return buf_detach(&v);
}

static int route_conf_tables(struct route_conf *rc, const struct cfg *cfg, struct buf *err)
{
	struct cfg_list l = {NULL, 0};
	int ret = 0;

	if (cfg_get_list(cfg, NULL, "transport_maps", &l, err) < 0)
		return -1;
	rc->tmaps = xcalloc(l.count + 1, sizeof(*rc->tmaps));
	for (size_t i = 0; i < l.count && ret == 0; i++) {
		if ((rc->tmaps[rc->ntmaps] = table_open_lenient(l.items[i], err)) == NULL)
			ret = -1;
		else
			rc->ntmaps++;
	}
	cfg_list_free(&l);
	return ret;
}

struct route_conf *route_conf_new(const struct cfg *cfg, struct buf *err)
{
	struct route_conf *rc = xcalloc(1, sizeof(*rc));
	int ok = 1;

	rc->local_tr = route_conf_str(cfg, "local_transport", &ok, err);
	rc->virtual_tr = route_conf_str(cfg, "virtual_transport", &ok, err);
	rc->relay_tr = route_conf_str(cfg, "relay_transport", &ok, err);
	rc->default_tr = route_conf_str(cfg, "default_transport", &ok, err);
	rc->myhostname = route_conf_str(cfg, "myhostname", &ok, err);
	rc->delims = route_conf_str(cfg, "recipient_delimiter", &ok, err);
	rc->empty_rcpt = route_conf_str(cfg, "empty_address_recipient", &ok, err);
	if (!ok || (rc->mydest = route_conf_domains(cfg, "mydestination", err)) == NULL ||
	    (rc->vdomains = route_conf_domains(cfg, "virtual_mailbox_domains", err)) == NULL ||
	    (rc->relay = route_conf_domains(cfg, "relay_domains", err)) == NULL ||
	    route_conf_tables(rc, cfg, err) < 0) {
		route_conf_free(rc);
		return NULL;
	}
	return rc;
}

void route_conf_free(struct route_conf *rc)
{
	if (rc == NULL)
		return;
	route_domains_free(rc->mydest);
	route_domains_free(rc->vdomains);
	route_domains_free(rc->relay);
	for (size_t i = 0; i < rc->ntmaps; i++)
		table_close(rc->tmaps[i]);
	free(rc->tmaps);
	free(rc->local_tr);
	free(rc->virtual_tr);
	free(rc->relay_tr);
	free(rc->default_tr);
	free(rc->myhostname);
	free(rc->delims);
	free(rc->empty_rcpt);
	free(rc);
}

void route_init(struct route *r)
{
	r->cls = ROUTE_DEFAULT;
	buf_init(&r->transport);
	buf_init(&r->nexthop);
}

void route_free(struct route *r)
{
	buf_free(&r->transport);
	buf_free(&r->nexthop);
}

const char *route_class_name(enum route_class cls)
{
	static const char *const names[] = {"local", "virtual", "relay", "default"};
	return names[cls];
}

int route_domain_class(const struct route_conf *rc, const char *domain, enum route_class *cls,
		       struct buf *err)
{
	const struct route_domains *lists[] = {rc->mydest, rc->vdomains, rc->relay};
	int m;

	/* An unqualified address can only be ours (Postfix appends
	 * $myorigin before it ever gets here). */
	*cls = ROUTE_LOCAL;
	if (*domain == 0)
		return 0;
	for (int i = ROUTE_LOCAL; i <= ROUTE_RELAY; i++) {
		if ((m = route_domains_match(lists[i], domain, err)) < 0)
			return -1;
		if (m) {
			*cls = (enum route_class)i;
			return 0;
		}
	}
	*cls = ROUTE_DEFAULT;
	return 0;
}

/* route_apply - "transport:nexthop" into r: an empty part keeps what r
 * has, except "transport:" which resets the nexthop to the domain
 * (transport(5)). */
static void route_apply(struct route *r, const char *spec, const char *domain)
{
	const char *colon = strchr(spec, ':');
	size_t tlen = colon ? (size_t)(colon - spec) : strlen(spec);

	if (tlen > 0) {
		buf_reset(&r->transport);
		buf_append(&r->transport, spec, tlen);
		buf_set(&r->nexthop, domain);
	}
	if (colon != NULL && colon[1] != 0)
		buf_set(&r->nexthop, colon + 1);
}

static const char *route_class_transport(const struct route_conf *rc, enum route_class cls)
{
	switch (cls) {
	case ROUTE_LOCAL:
		return rc->local_tr;
	case ROUTE_VIRTUAL:
		return rc->virtual_tr;
	case ROUTE_RELAY:
		return rc->relay_tr;
	default:
		return rc->default_tr;
	}
}

/* route_transport_maps - the first table with an answer wins. */
static int route_transport_maps(const struct route_conf *rc, const char *addr, struct route *r,
				const char *domain, struct buf *err)
{
	struct table_keys k = TABLE_KEYS_INIT;
	struct buf val = BUF_INIT;
	int rc2 = TABLE_NOTFOUND;

	if (rc->ntmaps == 0)
		return 0;
	table_keys_transport(&k, addr, rc->delims, 0);
	for (size_t i = 0; i < rc->ntmaps && rc2 == TABLE_NOTFOUND; i++)
		rc2 = table_lookup_keys(rc->tmaps[i], &k, &val, NULL, err);
	if (rc2 == TABLE_FOUND) {
		buf_trim(&val);
		route_apply(r, buf_str(&val), domain);
	}
	table_keys_free(&k);
	buf_free(&val);
	return rc2 == TABLE_ERROR ? -1 : 0;
}

int route_resolve(const struct route_conf *rc, const char *addr, struct route *r, struct buf *err)
{
	struct buf null_rcpt = BUF_INIT;
	const char *at, *domain;
	int ret = -1;

	/* The null recipient is $empty_address_recipient@$myhostname. */
	if (*addr == 0) {
		buf_printf(&null_rcpt, "%s@%s", rc->empty_rcpt, rc->myhostname);
		addr = buf_str(&null_rcpt);
	}
	at = strrchr(addr, '@');
	domain = at ? at + 1 : "";
	if (route_domain_class(rc, domain, &r->cls, err) < 0)
		goto out;
	buf_reset(&r->transport);
	buf_reset(&r->nexthop);
	route_apply(r, route_class_transport(rc, r->cls), domain);
	if (route_transport_maps(rc, addr, r, domain, err) < 0)
		goto out;
	ret = 0;
out:
	buf_free(&null_rcpt);
	return ret;
}
