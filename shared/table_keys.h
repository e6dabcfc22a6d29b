/* table_keys.h - the order in which Postfix tries lookup keys for an
 * address, domain, client, HELO name or transport (postfix.md §3.4, §6.3).
 *
 * A table_keys_*() call appends keys to a struct table_keys (duplicates
 * dropped); table_lookup_keys() tries them in order and stops at the
 * first match or error. Keys marked "whole" are complete input strings:
 * pattern tables (cidr, pcre, regexp, socketmap...) get only those, so a
 * regexp sees "user+ext@sub.example.com", never "example.com".
 *
 *   address  user+ext@sub.example.com, user@sub.example.com,
 *            sub.example.com, example.com, com   (.example.com, .com
 *            without TABLE_KEYS_PARENT), user+ext@, user@; "" -> "<>"
 *   domain   sub.example.com then parents as above
 *   client   name and parents, then 1.2.3.4, 1.2.3, 1.2, 1 (IPv6: cut at
 *            the last ':' of the compressed form: 2001:db8::1, 2001:db8:,
 *            2001:db8, 2001)
 *   helo     as domain; a numeric "1.2.3.4" or "[1.2.3.4]" only as given
 *   transport address, user@domain, domain, parents, "*"
 *
 * Pitfalls: keys are not folded here (table_lookup() folds for tables
 * that want it); the extension is cut at the first of any delimiter
 * character (recipient_delimiter may list several), never at position 0,
 * and not for "owner-..."/"...-request" when '-' is a delimiter.
 */
#ifndef TERN_TABLE_KEYS_H
#define TERN_TABLE_KEYS_H

#include "buf.h"
#include "table.h"

#include <stddef.h>

/* Flags: TABLE_KEYS_PARENT is parent_domain_matches_subdomains for this
 * table's parameter: "example.com" parent keys, not ".example.com". */
#define TABLE_KEYS_PARENT 0x1

#define TABLE_KEYS_NULL_SENDER "<>" /* smtpd_null_access_lookup_key default */

struct table_key {
	char *key;
	int whole; /* a whole input string: tried on pattern tables too */
};

struct table_keys {
	struct table_key *v;
	size_t count, cap;
};

#define TABLE_KEYS_INIT                                                                            \
	{                                                                                          \
		NULL, 0, 0                                                                         \
	}

void table_keys_init(struct table_keys *k);
void table_keys_reset(struct table_keys *k);
void table_keys_free(struct table_keys *k);
/* Append one key unless it is already there (or empty). */
void table_keys_add(struct table_keys *k, const char *key, size_t len, int whole);

void table_keys_address(struct table_keys *k, const char *addr, const char *delims, int flags);
void table_keys_domain(struct table_keys *k, const char *domain, int flags);
/* name may be NULL (or "unknown", which is looked up as Postfix does). */
void table_keys_client(struct table_keys *k, const char *name, const char *addr, int flags);
void table_keys_helo(struct table_keys *k, const char *helo, int flags);
void table_keys_transport(struct table_keys *k, const char *addr, const char *delims, int flags);

/* Try each key in order (only whole keys on a pattern table). Returns
 * TABLE_FOUND with value and, if matched is not NULL, the key that
 * matched; TABLE_NOTFOUND; or TABLE_ERROR (err set, stop: a temporary
 * failure, never "not found"). */
int table_lookup_keys(struct table *t, const struct table_keys *k, struct buf *value,
		      struct buf *matched, struct buf *err);

#endif
