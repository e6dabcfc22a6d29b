/* table_keys.c - lookup-key order for addresses, domains, clients, HELO
 * names and transports (see table_keys.h for the orders).
 *
 * The orders follow Postfix's check_mail_access()/check_namadr_access()
 * and transport lookups, so existing access and transport tables match
 * the same entries under Tern.
 */
#include "table_keys.h"
#include "inet.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

void table_keys_init(struct table_keys *k)
{
	k->v = NULL;
	k->count = k->cap = 0;
}

void table_keys_reset(struct table_keys *k)
{
	for (size_t i = 0; i < k->count; i++)
		free(k->v[i].key);
	k->count = 0;
}

void table_keys_free(struct table_keys *k)
{
	table_keys_reset(k);
	free(k->v);
	table_keys_init(k);
}

void table_keys_add(struct table_keys *k, const char *key, size_t len, int whole)
{
	if (len == 0)
		return;
	for (size_t i = 0; i < k->count; i++)
		if (strlen(k->v[i].key) == len && memcmp(k->v[i].key, key, len) == 0) {
			k->v[i].whole |= whole;
			return;
		}
	if (k->count == k->cap) {
		k->cap = k->cap ? 2 * k->cap : 8;
		k->v = xrealloc(k->v, k->cap * sizeof(*k->v));
	}
	k->v[k->count].key = xstrndup(key, len);
	k->v[k->count].whole = whole;
	k->count++;
}

static void table_keys_add_str(struct table_keys *k, const char *key, int whole)
{
	table_keys_add(k, key, strlen(key), whole);
}

/* The domain, then its parents: "example.com", "com" with PARENT, else
 * ".example.com", ".com" (Postfix's check_domain_access()). A domain
 * literal "[1.2.3.4]" has no parents. */
static void table_keys_domain_walk(struct table_keys *k, const char *domain, int flags, int whole)
{
	const char *dot;

	table_keys_add_str(k, domain, whole);
	if (domain[0] == '[')
		return;
	for (dot = strchr(domain + 1, '.'); dot && dot[1]; dot = strchr(dot + 1, '.'))
		table_keys_add_str(k, (flags & TABLE_KEYS_PARENT) ? dot + 1 : dot, 0);
}

void table_keys_domain(struct table_keys *k, const char *domain, int flags)
{
	if (domain && *domain)
		table_keys_domain_walk(k, domain, flags, 1);
}

/* Length of the localpart without its extension, or len if it has none.
 * As Postfix's split_addr(): the first delimiter character splits, but
 * not at position 0, and "owner-x" / "x-request" keep a '-'. */
static size_t table_keys_ext_cut(const char *local, size_t len, const char *delims)
{
	size_t cut;

	if (delims == NULL || *delims == 0)
		return len;
	for (cut = 0; cut < len && strchr(delims, local[cut]) == NULL; cut++)
		;
	if (cut == 0 || cut == len)
		return len;
	if (local[cut] == '-' && ((len > 6 && strncasecmp(local, "owner-", 6) == 0) ||
				  (len > 8 && strncasecmp(local + len - 8, "-request", 8) == 0)))
		return len;
	return cut;
}

/* user@domain without the extension (only when there is one). */
static void table_keys_noext(struct table_keys *k, const char *addr, size_t local_len, size_t cut)
{
	struct buf b = BUF_INIT;

	if (cut == local_len)
		return;
	buf_append(&b, addr, cut);
	buf_puts(&b, addr + local_len);
	table_keys_add(k, b.data, b.len, 0);
	buf_free(&b);
}

/* Shared by address and transport orders: full, noext, domain walk. */
static void table_keys_addr_common(struct table_keys *k, const char *addr, const char *delims,
				   int flags, size_t *local_len, size_t *cut)
{
	const char *at = strrchr(addr, '@');

	*local_len = at ? (size_t)(at - addr) : strlen(addr);
	*cut = table_keys_ext_cut(addr, *local_len, delims);
	table_keys_add_str(k, addr, 1);
	table_keys_noext(k, addr, *local_len, *cut);
	if (at && at[1])
		table_keys_domain_walk(k, at + 1, flags, 0);
}

void table_keys_address(struct table_keys *k, const char *addr, const char *delims, int flags)
{
	size_t local_len, cut;

	if (addr == NULL || *addr == 0) {
		table_keys_add_str(k, TABLE_KEYS_NULL_SENDER, 1);
		return;
	}
	table_keys_addr_common(k, addr, delims, flags, &local_len, &cut);
	if (addr[local_len] != '@' || local_len == 0)
		return;
	/* "user+ext@" then "user@": the localpart in any domain. */
	table_keys_add(k, addr, local_len + 1, 0);
	if (cut != local_len) {
		struct buf b = BUF_INIT;
		buf_append(&b, addr, cut);
		buf_putc(&b, '@');
		table_keys_add(k, b.data, b.len, 0);
		buf_free(&b);
	}
}

void table_keys_transport(struct table_keys *k, const char *addr, const char *delims, int flags)
{
	size_t local_len, cut;

	if (addr && *addr)
		table_keys_addr_common(k, addr, delims, flags, &local_len, &cut);
	table_keys_add_str(k, "*", 0);
}

void table_keys_client(struct table_keys *k, const char *name, const char *addr, int flags)
{
	struct buf b = BUF_INIT;

	if (name && *name)
		table_keys_domain_walk(k, name, flags, 1);
	if (addr == NULL || *addr == 0)
		return;
	table_keys_add_str(k, addr, 1);
	buf_set(&b, addr);
	while (inet_addr_text_truncate(&b))
		table_keys_add(k, b.data, b.len, 0);
	buf_free(&b);
}

void table_keys_helo(struct table_keys *k, const char *helo, int flags)
{
	struct inet_addr a;

	if (helo == NULL || *helo == 0)
		return;
	/* Postfix: numeric HELO arguments get no parent-domain search. */
	if (helo[0] == '[' || inet_addr_parse(helo, &a) == 0)
		table_keys_add_str(k, helo, 1);
	else
		table_keys_domain_walk(k, helo, flags, 1);
}

int table_lookup_keys(struct table *t, const struct table_keys *k, struct buf *value,
		      struct buf *matched, struct buf *err)
{
	int pattern = table_is_pattern(t);

	for (size_t i = 0; i < k->count; i++) {
		if (pattern && !k->v[i].whole)
			continue;
		int rc = table_lookup(t, k->v[i].key, value, err);
		if (rc == TABLE_NOTFOUND)
			continue;
		if (rc == TABLE_FOUND && matched)
			buf_set(matched, k->v[i].key);
		return rc;
	}
	return TABLE_NOTFOUND;
}
