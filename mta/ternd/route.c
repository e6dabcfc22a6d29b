/* route.c - recipient routing: domain class ($mydestination, virtual,
 * relay, default) and transport_maps, giving a transport and a nexthop
 * (postfix.md §6.3); the class tests use matchlist.h. Interface in route.h.
 *
 * Pitfall: with TABLE_ERROR we must defer, so every matcher returns -1
 * for it and callers never read it as "no match".
 */
#include "route.h"

#include "matchlist.h"
#include "table.h"
#include "table_keys.h"

#include <stdlib.h>
#include <string.h>

struct route_conf {
	struct matchlist *mydest, *vdomains, *relay;
	struct table **tmaps; /* transport_maps */
	size_t ntmaps;
	char *local_tr, *virtual_tr, *relay_tr, *default_tr;
	char *myhostname, *delims, *empty_rcpt;
	char *relayhost; /* nexthop for the relay and default classes, "" = domain */
};

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
	rc->relayhost = route_conf_str(cfg, "relayhost", &ok, err);
	if (!ok ||
	    (rc->mydest = matchlist_from_cfg(cfg, NULL, "mydestination", MATCHLIST_DOMAIN, err)) ==
		NULL ||
	    (rc->vdomains = matchlist_from_cfg(cfg, NULL, "virtual_mailbox_domains",
					       MATCHLIST_DOMAIN, err)) == NULL ||
	    (rc->relay = matchlist_from_cfg(cfg, NULL, "relay_domains", MATCHLIST_DOMAIN, err)) ==
		NULL ||
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
	matchlist_free(rc->mydest);
	matchlist_free(rc->vdomains);
	matchlist_free(rc->relay);
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
	free(rc->relayhost);
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
	const struct matchlist *lists[] = {rc->mydest, rc->vdomains, rc->relay};
	int m;

	/* An unqualified address can only be ours (Postfix appends
	 * $myorigin before it ever gets here). */
	*cls = ROUTE_LOCAL;
	if (*domain == 0)
		return 0;
	for (int i = ROUTE_LOCAL; i <= ROUTE_RELAY; i++) {
		if ((m = matchlist_domain(lists[i], domain, err)) < 0)
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
	/* relayhost replaces the domain as nexthop for mail that leaves,
	 * unless the class transport names its own (trivial-rewrite). */
	if ((r->cls == ROUTE_RELAY || r->cls == ROUTE_DEFAULT) && *rc->relayhost &&
	    strcmp(buf_str(&r->nexthop), domain) == 0)
		buf_set(&r->nexthop, rc->relayhost);
	if (route_transport_maps(rc, addr, r, domain, err) < 0)
		goto out;
	ret = 0;
out:
	buf_free(&null_rcpt);
	return ret;
}
