/* resolver.h - every Tern DNS lookup, on libunbound.
 *
 * resolver_new() forwards to $dns_servers ("127.0.0.1@5353 ::1") or, when
 * empty, to the system's resolv.conf and hosts file; no DNSSEC validation.
 * Queries run asynchronously on a libevent loop (resolver_query) or
 * synchronously (resolver_lookup), both with a per-query timeout. Results
 * are parsed and bounds-checked RDATA, classified as found / NXDOMAIN /
 * no data / null MX (RFC 7505) / temporary / permanent failure.
 * Pitfall: a temporary failure must never be treated as "does not exist".
 */
#ifndef TERN_RESOLVER_H
#define TERN_RESOLVER_H

#include "buf.h"

#include <stddef.h>

struct event_base;
struct ub_result;

/* RR types we parse (RFC 1035, RFC 3596). */
#define RESOLVER_T_A 1
#define RESOLVER_T_NS 2
#define RESOLVER_T_PTR 12
#define RESOLVER_T_MX 15
#define RESOLVER_T_TXT 16
#define RESOLVER_T_AAAA 28

#define RESOLVER_TIMEOUT_DEFAULT 10 /* seconds per query */
#define RESOLVER_MAX_RR 100	    /* records kept per answer */

enum resolver_status {
	RESOLVER_FOUND = 0,
	RESOLVER_NXDOMAIN, /* no such name */
	RESOLVER_NODATA,   /* the name exists, no records of this type */
	RESOLVER_NULLMX,   /* MX: the domain accepts no mail (RFC 7505) */
	RESOLVER_TEMPFAIL, /* SERVFAIL, timeout, network, malformed reply */
	RESOLVER_PERMFAIL, /* REFUSED/NOTIMP/FORMERR, bad query name */
};

/* One record. MX: pref + text (exchange). A/AAAA: text, family (AF_INET/
 * AF_INET6) and addr (4 or 16 bytes). PTR: text (name). TXT: text, the
 * character-strings of one record concatenated (RFC 7208 §3.3). NS: text
 * (the name server's name). Names
 * are dotted text without the trailing dot; the root is ".". */
struct resolver_rr {
	int pref;
	int family;
	unsigned char addr[16];
	char *text;
};

struct resolver_result {
	enum resolver_status status;
	int qtype;
	char *qname;
	size_t count;
	struct resolver_rr *rr;
	int ttl;
	struct buf msg; /* why, for anything but FOUND */
};

struct resolver;

typedef void (*resolver_cb)(void *arg, const struct resolver_result *res);

/* dns_servers: NULL/"" for the system resolver, else "addr[@port] ...".
 * base: the libevent loop for resolver_query(), may be NULL for sync use.
 * timeout: seconds per query (0: RESOLVER_TIMEOUT_DEFAULT). */
struct resolver *resolver_new(const char *dns_servers, int timeout, struct event_base *base,
			      struct buf *err);
void resolver_free(struct resolver *r);

/* Start an async query; cb runs once from the event loop (also on
 * timeout). res is valid only during the call. Returns -1 with err if
 * the query could not be started. */
int resolver_query(struct resolver *r, const char *name, int qtype, resolver_cb cb, void *arg,
		   struct buf *err);
/* Blocking lookup into res (resolver_result_free() it afterwards). */
void resolver_lookup(struct resolver *r, const char *name, int qtype, struct resolver_result *res);

/* Forward-confirmed reverse DNS (Postfix's "verified" client name): PTR
 * of the address, then an A/AAAA of a PTR name must contain it. FOUND
 * puts that name in name; NXDOMAIN/NODATA mean "unknown"; TEMPFAIL
 * means retry (Postfix replies 450 for reject_unknown_client_hostname). */
enum resolver_status resolver_verify_client(struct resolver *r, const char *ipaddr,
					    struct buf *name, struct buf *err);

/* Pure helpers (tested without a network). */
void resolver_result_init(struct resolver_result *res);
void resolver_result_free(struct resolver_result *res);
const char *resolver_status_str(enum resolver_status st);
int resolver_type_code(const char *name); /* "MX" -> 15, 0 if unknown */
const char *resolver_type_name(int qtype);
/* Wire-format name at p[0..len) -> dotted text; *used octets consumed. */
int resolver_name_parse(const unsigned char *p, size_t len, size_t *used, struct buf *out,
			struct buf *err);
/* One RDATA into rr (rr->text allocated). -1 with err when malformed. */
int resolver_rdata_parse(int qtype, const unsigned char *rdata, size_t len, struct resolver_rr *rr,
			 struct buf *err);
/* Fill res from a libunbound result (also used by tests with a fake). */
void resolver_result_from_ub(struct resolver_result *res, int err, const struct ub_result *ub);
/* "192.0.2.1" -> "1.2.0.192.in-addr.arpa", IPv6 -> nibbles.ip6.arpa. */
int resolver_reverse_name(const char *ipaddr, struct buf *out);
/* One record as text: "10 mx.example.com", "192.0.2.1", the TXT text. */
void resolver_rr_format(int qtype, const struct resolver_rr *rr, struct buf *out);

#endif
