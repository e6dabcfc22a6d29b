/* route.h - address class routing, as Postfix's trivial-rewrite resolve:
 * a recipient goes to transport_maps' answer if any, else by the class
 * of its domain: $mydestination -> local_transport, virtual_mailbox_domains
 * -> virtual_transport, relay_domains -> relay_transport, otherwise
 * default_transport (postfix.md §6.3, §6.4). A route is a transport name
 * plus a nexthop ("local:$myhostname", "smtp:[mx]:25", "error:5.1.1 text").
 *
 * struct route_conf is an immutable snapshot with its tables open; lookups
 * are thread-safe. Pitfall: a table error is a temporary failure (defer),
 * never "not found".
 */
#ifndef TERN_ROUTE_H
#define TERN_ROUTE_H

#include "buf.h"
#include "cfg.h"

struct route_conf;

enum route_class {
	ROUTE_LOCAL,   /* mydestination */
	ROUTE_VIRTUAL, /* virtual_mailbox_domains */
	ROUTE_RELAY,   /* relay_domains */
	ROUTE_DEFAULT, /* everything else */
};

struct route {
	enum route_class cls;
	struct buf transport; /* "local", "virtual", "smtp", "discard", "error"... */
	struct buf nexthop;   /* host, or the text of error:/retry:/discard: */
};

struct route_conf *route_conf_new(const struct cfg *cfg, struct buf *err);
void route_conf_free(struct route_conf *rc);

void route_init(struct route *r);
void route_free(struct route *r);

/* Resolve addr ("local@domain", "" for the null address). 0, or -1 with
 * err set on a table lookup failure (a temporary error). */
int route_resolve(const struct route_conf *rc, const char *addr, struct route *r, struct buf *err);
/* The class of a domain alone (lower-cased). 0 or -1 (table error). */
int route_domain_class(const struct route_conf *rc, const char *domain, enum route_class *cls,
		       struct buf *err);
const char *route_class_name(enum route_class cls);

#endif
