/* inet.h - IPv4/IPv6 address and prefix helpers shared by cidr tables,
 * mynetworks-style lists and client lookup keys.
 *
 * Parsing is strict (inet_pton: no leading zeros, no "1.2.3", no scope
 * "%eth0", no brackets); prefixes accept Postfix's "[addr]/len" and
 * "[addr/len]" forms. Pitfall: an IPv4 address and its v4-mapped IPv6
 * form ("::ffff:1.2.3.4") are different families here, as in Postfix's
 * cidr tables; call inet_addr_unmap() where they should be the same host.
 */
#ifndef TERN_INET_H
#define TERN_INET_H

#include "buf.h"

struct inet_addr {
	int family;		 /* AF_INET or AF_INET6 */
	unsigned char bytes[16]; /* network order; 4 used for AF_INET */
};

/* Address length in bits (32 or 128). */
int inet_addr_bits(const struct inet_addr *a);
/* Parse a numeric address; 0 on success, -1 if text is not one. */
int inet_addr_parse(const char *text, struct inet_addr *a);
/* Append the canonical (RFC 5952 compressed, lower-case) form to out. */
void inet_addr_format(const struct inet_addr *a, struct buf *out);
/* "::ffff:a.b.c.d" -> a.b.c.d; returns 1 if converted, 0 if not mapped. */
int inet_addr_unmap(struct inet_addr *a);

/* Parse "addr", "addr/len", "[addr]", "[addr]/len" or "[addr/len]".
 * Without a length the prefix is the whole address. 0 on success; -1 with
 * a Postfix-worded reason in why ("bad mask length in ..."). Host bits
 * are not checked here: see inet_prefix_host_bits(). */
int inet_prefix_parse(const char *text, struct inet_addr *net, int *len, struct buf *why);
/* 1 if net has bits set beyond len (Postfix: "non-null host address bits"). */
int inet_prefix_host_bits(const struct inet_addr *net, int len);
/* Clear the bits beyond len. */
void inet_prefix_mask(struct inet_addr *net, int len);
/* 1 if a lies in net/len (same family only), else 0. */
int inet_prefix_match(const struct inet_addr *net, int len, const struct inet_addr *a);

/* Cut a textual address at its last '.' (IPv4) or ':' (IPv6), in place,
 * as Postfix's client-address lookups do ("1.2.3.4" -> "1.2.3",
 * "2001:db8::1" -> "2001:db8:"). Returns 1 if something was cut. */
int inet_addr_text_truncate(struct buf *addr);

/* "inet:host:port" (host may be [bracketed]) or "unix:/path" ("local:"
 * too) -> a socket address; -1 with why. The host should be an address
 * or a name in /etc/hosts: a DNS lookup here would block the caller. */
struct sockaddr_storage;
#include <sys/socket.h>
int inet_endpoint_sockaddr(const char *ep, struct sockaddr_storage *ss, socklen_t *len,
			   struct buf *why);

#endif
