/* deliver_virtual.c - the virtual transport, as Postfix's virtual(8):
 * virtual_mailbox_maps gives a path under virtual_mailbox_base for
 * "user@domain", then "user@domain" without the extension, then
 * "@domain"; a value ending in "/" is a maildir, else an mbox file.
 * Files are owned by mail_owner (the user ternd runs as). No entry:
 * bounce 5.1.1 "unknown user". A table error defers.
 */
#include "deliver.h"

#include "addr.h"
#include "queue.h"
#include "table.h"
#include "table_keys.h"

#include <string.h>

/* deliver_virtual_keys - Postfix virtual(8)'s lookup order. */
static void deliver_virtual_keys(const struct deliver_rcpt *r, struct table_keys *k)
{
	const char *at = strrchr(r->addr, '@');
	struct buf user = BUF_INIT, ext = BUF_INIT, key = BUF_INIT;

	table_keys_add(k, r->addr, strlen(r->addr), 1);
	if (at != NULL) {
		buf_append(&key, r->addr, (size_t)(at - r->addr));
		if (addr_split_ext(buf_str(&key), r->msg->conf->delims, &user, &ext)) {
			buf_reset(&key);
			buf_printf(&key, "%s%s", buf_str(&user), at);
			table_keys_add(k, key.data, key.len, 0);
		}
		table_keys_add(k, at, strlen(at), 0);
	}
	buf_free(&user);
	buf_free(&ext);
	buf_free(&key);
}

/* deliver_virtual_lookup - TABLE_FOUND with the mailbox path in out;
 * keys in order across all tables, as Postfix's mail_addr_find(). */
static int deliver_virtual_lookup(struct deliver_rcpt *r, struct buf *out, struct buf *err)
{
	struct table_keys k = TABLE_KEYS_INIT;
	int rc = TABLE_NOTFOUND;

	deliver_virtual_keys(r, &k);
	for (size_t i = 0; i < k.count && rc == TABLE_NOTFOUND; i++)
		rc = deliver_maps_lookup(&r->msg->conf->vmaps, k.v[i].key, out, NULL, err);
	table_keys_free(&k);
	return rc;
}

/* deliver_virtual_store - write to a maildir (path ends in "/") or mbox and
 * report; shared shape with local delivery. */
static void deliver_virtual_store(struct deliver_rcpt *r, const char *path)
{
	const struct deliver_msg *m = r->msg;
	struct buf hdr = BUF_INIT, err = BUF_INIT;
	size_t n = strlen(path);
	int temp = 1, rc;

	deliver_headers(r, &hdr);
	if (n > 0 && path[n - 1] == '/')
		rc = deliver_maildir_write(path, buf_str(&hdr), m->content, m->len, &err, &temp);
	else
		rc = deliver_mbox_write(path, m->env->sender, buf_str(&hdr), m->content, m->len,
					&err, &temp);
	if (rc == 0)
		deliver_report(r, "virtual", "2.0.0", "delivered to %s",
			       n > 0 && path[n - 1] == '/' ? "maildir" : "mailbox");
	else
		deliver_report(r, "virtual", temp ? "4.2.0" : "5.2.2", "%s delivery failed: %s",
			       n > 0 && path[n - 1] == '/' ? "maildir" : "mailbox", buf_str(&err));
	buf_free(&hdr);
	buf_free(&err);
}

void deliver_virtual(struct deliver_rcpt *r, const char *nexthop)
{
	const struct deliver_conf *dc = r->msg->conf;
	struct buf val = BUF_INIT, err = BUF_INIT, path = BUF_INIT;
	int rc = deliver_virtual_lookup(r, &val, &err);

	if (rc == TABLE_ERROR) {
		deliver_report(r, "virtual", "4.3.0", "virtual_mailbox_maps lookup error: %s",
			       buf_str(&err));
	} else if (rc == TABLE_NOTFOUND) {
		deliver_report(r, "virtual", "5.1.1", "unknown user: \"%s\"", r->addr);
	} else if (*dc->vbase == 0) {
		/* A relative path needs a base; Postfix refuses this too. */
		deliver_report(r, "virtual", "4.3.5", "virtual_mailbox_base is not set");
	} else {
		buf_trim(&val);
		buf_printf(&path, "%s/%s", dc->vbase, buf_str(&val));
		deliver_virtual_store(r, buf_str(&path));
	}
	buf_free(&val);
	buf_free(&err);
	buf_free(&path);
}
