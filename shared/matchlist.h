/* matchlist.h - Postfix's match lists (match_list/domain_list/namadr_list/addr_match_list):
 * mydestination, relay_domains, virtual_*_domains, mynetworks... items are names (".d" or, with
 * MATCHLIST_PARENT = postconf(5) parent_domain_matches_subdomains, "d" also matching subdomains),
 * "!item" (first match wins), "/file/name" contents, type:table lookups, and for MATCHLIST_ADDR
 * IP addresses/networks ("1.2.3.0/24", "[::1]/128"). Pitfalls: match functions return -1 for a
 * table that failed (temporary: defer, never "no match"); a bad network is refused at _new. */
#ifndef TERN_MATCHLIST_H
#define TERN_MATCHLIST_H

#include "buf.h"
#include "cfg.h"

#define MATCHLIST_DOMAIN 0x1 /* host/domain name items (always on) */
#define MATCHLIST_ADDR 0x2   /* also address and network items (mynetworks-style lists) */
#define MATCHLIST_PARENT 0x4 /* "d" matches subdomains (parent_domain_matches_subdomains) */

struct matchlist;

/* value is the expanded list (cfg_list_split syntax). NULL with err = "PARAM: reason" for a bad
 * item (bad network, "!" alone, unknown table type, nesting too deep). Tables are opened with
 * table_open_lenient(); a missing /file/name, as Postfix, fails every lookup temporarily. */
struct matchlist *matchlist_new(const char *param_name, const char *value, int flags,
				struct buf *err);
/* matchlist_new() for a parameter of cfg in listener's view (NULL = global); MATCHLIST_PARENT is
 * added when parent_domain_matches_subdomains lists the parameter. */
struct matchlist *matchlist_from_cfg(const struct cfg *cfg, const char *listener,
				     const char *param_name, int flags, struct buf *err);
void matchlist_free(struct matchlist *l);

/* 1 match, 0 no match (also for a NULL list or an empty name), -1 lookup error (err set). */
int matchlist_domain(const struct matchlist *l, const char *domain, struct buf *err);
int matchlist_addr(const struct matchlist *l, const char *ip, struct buf *err);
/* A client by name and/or address (either may be NULL; name "unknown" matches no name item). */
int matchlist_host(const struct matchlist *l, const char *name, const char *ip, struct buf *err);

#endif
