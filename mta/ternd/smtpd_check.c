/* smtpd_check.c - the minimum relay control and recipient validation of
 * the core: smtpd_relay_restrictions (then smtpd_recipient_restrictions)
 * with permit_mynetworks, permit_sasl_authenticated, reject/defer_unauth_
 * destination, permit, reject; then local_recipient_maps, virtual_mailbox_
 * maps and relay_recipient_maps as smtpd_reject_unlisted_recipient does.
 * Seam: smtpd_check_rcpt() is the one entry the full restriction engine
 * replaces. Match lists (mynetworks, mydestination...) are matchlist.h.
 * Pitfall: a table error is a 4xx, never "not found" (never an open relay).
 */
#include "smtpd_int.h"

#include "log.h"
#include "table_keys.h"

#include <string.h>

/* ------------------------------------------------------------------ */
/* restrictions                                                        */

enum check_restr {
	R_PERMIT_MYNETWORKS,
	R_PERMIT_SASL,
	R_REJECT_UNAUTH,
	R_DEFER_UNAUTH,
	R_PERMIT,
	R_REJECT,
};

static const char *const restr_names[] = {
    "permit_mynetworks",
    "permit_sasl_authenticated",
    "reject_unauth_destination",
    "defer_unauth_destination",
    "permit",
    "reject",
};

struct restr_list {
	enum check_restr *v;
	size_t n;
};

struct maps {
	struct table **v;
	size_t n;
};

static int match_table(struct table *t, struct table_keys *keys, struct buf *err)
{
	struct buf val = BUF_INIT;
	int rc = table_lookup_keys(t, keys, &val, NULL, err);

	buf_free(&val);
	return rc == TABLE_ERROR ? -1 : rc == TABLE_FOUND;
}

struct smtpd_checks {
	struct restr_list relay, rcpt;
	struct matchlist *mydestination, *relay_domains, *virtual_domains;
	struct maps local_maps, virtual_maps, relay_maps;
	int relay_code, local_code, virtual_code, unlisted;
	int local_maps_set; /* empty local_recipient_maps: accept any local user */
	char *delim;
};

static int restr_parse(const struct cfg *cfg, const char *listener, const char *param,
		       struct restr_list *out, struct buf *err)
{
	struct cfg_list items = {NULL, 0};
	int rc = 0;

	if (cfg_get_list(cfg, listener, param, &items, err) < 0)
		return -1;
	out->v = xcalloc(items.count + 1, sizeof(*out->v));
	for (size_t i = 0; i < items.count && rc == 0; i++) {
		size_t k;
		for (k = 0; k < sizeof(restr_names) / sizeof(*restr_names); k++)
			if (strcasecmp(items.items[i], restr_names[k]) == 0)
				break;
		if (k == sizeof(restr_names) / sizeof(*restr_names)) {
			buf_printf(err, "%s: unknown or unsupported restriction \"%s\"", param,
				   items.items[i]);
			rc = -1;
		} else {
			out->v[out->n++] = (enum check_restr)k;
		}
	}
	cfg_list_free(&items);
	return rc;
}

/* The relay lists must end unauthorised relaying: a destination check or
 * "reject" must come before any unconditional "permit" (design.md:
 * no configuration makes Tern an open relay by accident). */
static int restr_closed(const struct restr_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		if (l->v[i] == R_REJECT_UNAUTH || l->v[i] == R_DEFER_UNAUTH || l->v[i] == R_REJECT)
			return 1;
		if (l->v[i] == R_PERMIT)
			return 0;
	}
	return 0;
}

static int maps_open(const struct cfg *cfg, const char *listener, const char *param, struct maps *m,
		     struct buf *err)
{
	struct cfg_list items = {NULL, 0};
	int rc = 0;

	if (cfg_get_list(cfg, listener, param, &items, err) < 0)
		return -1;
	m->v = xcalloc(items.count + 1, sizeof(*m->v));
	for (size_t i = 0; i < items.count && rc == 0; i++) {
		struct buf why = BUF_INIT;
		m->v[m->n] = table_open_lenient(items.items[i], &why);
		if (m->v[m->n] == NULL) {
			buf_printf(err, "%s: %s", param, buf_str(&why));
			rc = -1;
		} else {
			m->n++;
		}
		buf_free(&why);
	}
	cfg_list_free(&items);
	return rc;
}

static void maps_close(struct maps *m)
{
	for (size_t i = 0; i < m->n; i++)
		table_close(m->v[i]);
	free(m->v);
}

static int checks_code(const struct cfg *cfg, const char *listener, const char *name, int *out,
		       struct buf *err)
{
	long long v;

	if (cfg_get_int(cfg, listener, name, &v, err) < 0)
		return -1;
	*out = (int)v;
	return 0;
}

static int checks_load(struct smtpd_checks *c, const struct cfg *cfg, const char *l,
		       struct buf *err)
{
	struct buf delim = BUF_INIT;
	int rc = -1;

	if (restr_parse(cfg, l, "smtpd_relay_restrictions", &c->relay, err) < 0 ||
	    restr_parse(cfg, l, "smtpd_recipient_restrictions", &c->rcpt, err) < 0)
		goto out;
	if (!restr_closed(&c->relay) && !restr_closed(&c->rcpt)) {
		buf_puts(err,
			 "smtpd_relay_restrictions and smtpd_recipient_restrictions would make "
			 "an open relay: add reject_unauth_destination (or "
			 "defer_unauth_destination) before any permit");
		goto out;
	}
	if ((c->mydestination =
		 matchlist_from_cfg(cfg, l, "mydestination", MATCHLIST_DOMAIN, err)) == NULL ||
	    (c->relay_domains =
		 matchlist_from_cfg(cfg, l, "relay_domains", MATCHLIST_DOMAIN, err)) == NULL ||
	    (c->virtual_domains = matchlist_from_cfg(cfg, l, "virtual_mailbox_domains",
						     MATCHLIST_DOMAIN, err)) == NULL)
		goto out;
	if (maps_open(cfg, l, "local_recipient_maps", &c->local_maps, err) < 0 ||
	    maps_open(cfg, l, "virtual_mailbox_maps", &c->virtual_maps, err) < 0 ||
	    maps_open(cfg, l, "relay_recipient_maps", &c->relay_maps, err) < 0)
		goto out;
	if (checks_code(cfg, l, "relay_domains_reject_code", &c->relay_code, err) < 0 ||
	    checks_code(cfg, l, "unknown_local_recipient_reject_code", &c->local_code, err) < 0 ||
	    checks_code(cfg, l, "unknown_virtual_mailbox_reject_code", &c->virtual_code, err) < 0 ||
	    cfg_get_bool(cfg, l, "smtpd_reject_unlisted_recipient", &c->unlisted, err) < 0 ||
	    cfg_get_str(cfg, l, "recipient_delimiter", &delim, err) < 0)
		goto out;
	c->delim = buf_detach(&delim);
	rc = 0;
out:
	buf_free(&delim);
	return rc;
}

struct smtpd_checks *smtpd_checks_new(const struct cfg *cfg, const char *listener, struct buf *err)
{
	struct smtpd_checks *c = xcalloc(1, sizeof(*c));

	if (checks_load(c, cfg, listener, err) < 0) {
		smtpd_checks_free(c);
		return NULL;
	}
	return c;
}

void smtpd_checks_free(struct smtpd_checks *c)
{
	if (c == NULL)
		return;
	free(c->relay.v);
	free(c->rcpt.v);
	matchlist_free(c->mydestination);
	matchlist_free(c->relay_domains);
	matchlist_free(c->virtual_domains);
	maps_close(&c->local_maps);
	maps_close(&c->virtual_maps);
	maps_close(&c->relay_maps);
	free(c->delim);
	free(c);
}

/* ------------------------------------------------------------------ */
/* address classes                                                     */

/* Postfix trivial-rewrite: "user" -> "user@$myorigin" (append_at_myorigin),
 * "user@host" -> "user@host.$mydomain" (append_dot_mydomain). */
void smtpd_check_canon(const struct smtpd_conf *conf, const struct addr *a, struct buf *out)
{
	struct addr q;

	addr_init(&q);
	buf_append(&q.local, a->local.data ? a->local.data : "", a->local.len);
	buf_append(&q.domain, a->domain.data ? a->domain.data : "", a->domain.len);
	q.flags = a->flags;
	if (!(q.flags & ADDR_F_NULL)) {
		if (q.domain.len == 0 && conf->append_at_myorigin)
			addr_qualify(&q, conf->myorigin);
		else if (q.domain.len && conf->append_dot_mydomain && !(q.flags & ADDR_F_LITERAL) &&
			 strchr(buf_str(&q.domain), '.') == NULL)
			buf_printf(&q.domain, ".%s", conf->mydomain);
		buf_lower(&q.domain);
	}
	addr_format_plain(&q, out);
	addr_free(&q);
}

enum rcpt_class { CLASS_LOCAL, CLASS_VIRTUAL, CLASS_RELAY, CLASS_OTHER };

static int rcpt_classify(const struct smtpd_checks *c, const char *domain, enum rcpt_class *cls,
			 struct buf *err)
{
	int rc;

	*cls = CLASS_LOCAL;
	if (*domain == 0) /* unqualified: local, as trivial-rewrite */
		return 0;
	if ((rc = matchlist_domain(c->mydestination, domain, err)) != 0)
		return rc < 0 ? -1 : 0;
	*cls = CLASS_VIRTUAL;
	if ((rc = matchlist_domain(c->virtual_domains, domain, err)) != 0)
		return rc < 0 ? -1 : 0;
	*cls = CLASS_RELAY;
	if ((rc = matchlist_domain(c->relay_domains, domain, err)) != 0)
		return rc < 0 ? -1 : 0;
	*cls = CLASS_OTHER;
	return 0;
}

/* Keys for the recipient maps, as Postfix's mail_addr_find(): the full
 * address, without its extension, then the local part alone (local
 * domains) or "@domain" (virtual and relay). */
static void rcpt_keys(struct table_keys *k, const char *local, const char *domain,
		      const char *delim, int local_class)
{
	struct buf user = BUF_INIT, ext = BUF_INIT, full = BUF_INIT;
	int split = delim && *delim && addr_split_ext(local, delim, &user, &ext);

	buf_printf(&full, "%s@%s", local, domain);
	table_keys_add(k, full.data, full.len, 1);
	if (split) {
		buf_reset(&full);
		buf_printf(&full, "%s@%s", buf_str(&user), domain);
		table_keys_add(k, full.data, full.len, 0);
	}
	if (local_class) {
		table_keys_add(k, local, strlen(local), 0);
		if (split)
			table_keys_add(k, user.data, user.len, 0);
	} else {
		buf_reset(&full);
		buf_printf(&full, "@%s", domain);
		table_keys_add(k, full.data, full.len, 0);
	}
	buf_free(&user);
	buf_free(&ext);
	buf_free(&full);
}

/* 1 found, 0 not, -1 error. No maps = any user is valid. */
static int rcpt_known(const struct maps *m, const char *local, const char *domain,
		      const char *delim, int local_class, struct buf *err)
{
	struct table_keys keys = TABLE_KEYS_INIT;
	int rc = 0;

	rcpt_keys(&keys, local, domain, delim, local_class);
	for (size_t i = 0; i < m->n && rc == 0; i++)
		rc = match_table(m->v[i], &keys, err);
	table_keys_free(&keys);
	return rc;
}

/* One restriction list: 1 permit, 0 dunno (end of list), -1 reply set. */
static int restr_eval(struct smtpd_session *s, const struct restr_list *l, const char *raw,
		      enum rcpt_class cls, struct buf *reply)
{
	const struct smtpd_checks *c = s->conf->checks;
	struct buf err = BUF_INIT;
	int rc = 0;

	for (size_t i = 0; i < l->n && rc == 0; i++) {
		switch (l->v[i]) {
		case R_PERMIT_MYNETWORKS:
			rc = matchlist_host(s->conf->mynetworks, s->client.name, s->client.addr,
					    &err);
			if (rc < 0) {
				buf_printf(reply, "451 4.3.0 <%s>: Temporary lookup failure", raw);
				msg_warn("mynetworks lookup error: %s", buf_str(&err));
			}
			break;
		case R_PERMIT_SASL: /* no AUTH in this issue: never authenticated */
			break;
		case R_REJECT_UNAUTH:
		case R_DEFER_UNAUTH:
			if (cls == CLASS_OTHER) {
				int defer = l->v[i] == R_DEFER_UNAUTH;
				buf_printf(reply, "%d %s <%s>: Relay access denied",
					   defer ? 454 : c->relay_code, defer ? "4.7.1" : "5.7.1",
					   raw);
				rc = -1;
			}
			break;
		case R_PERMIT:
			rc = 1;
			break;
		case R_REJECT:
			buf_printf(reply,
				   "554 5.7.1 <%s>: Recipient address rejected: Access denied",
				   raw);
			rc = -1;
			break;
		}
	}
	buf_free(&err);
	return rc;
}

static int rcpt_unlisted(struct smtpd_session *s, const char *raw, const struct addr *rcpt,
			 enum rcpt_class cls, struct buf *reply)
{
	const struct smtpd_checks *c = s->conf->checks;
	const struct maps *m = NULL;
	const char *table = NULL;
	struct buf canon = BUF_INIT, err = BUF_INIT;
	int code = 550, rc = 0;
	const char *at, *dom;

	if (cls == CLASS_LOCAL && c->local_maps.n) {
		m = &c->local_maps, table = "local recipient", code = c->local_code;
	} else if (cls == CLASS_VIRTUAL) {
		m = &c->virtual_maps, table = "virtual mailbox", code = c->virtual_code;
	} else if (cls == CLASS_RELAY && c->relay_maps.n) {
		m = &c->relay_maps, table = "relay recipient";
	}
	if (m == NULL || !c->unlisted)
		goto out;
	smtpd_check_canon(s->conf, rcpt, &canon);
	at = strrchr(buf_str(&canon), '@');
	dom = at ? at + 1 : "";
	if (at)
		canon.data[at - canon.data] = 0;
	rc = rcpt_known(m, buf_str(&canon), dom, c->delim, cls == CLASS_LOCAL, &err);
	if (rc < 0) {
		msg_warn("%s table lookup error: %s", table, buf_str(&err));
		buf_printf(reply, "451 4.3.0 <%s>: Temporary lookup failure", raw);
	} else if (rc == 0) {
		buf_printf(reply,
			   "%d 5.1.1 <%s>: Recipient address rejected: User unknown in %s table",
			   code, raw, table);
		rc = -1;
	} else {
		rc = 0;
	}
out:
	buf_free(&canon);
	buf_free(&err);
	return rc < 0 ? -1 : 0;
}

int smtpd_check_rcpt(struct smtpd_session *s, const char *raw, const struct addr *rcpt,
		     struct buf *reply)
{
	const struct smtpd_checks *c = s->conf->checks;
	struct buf canon = BUF_INIT, err = BUF_INIT;
	enum rcpt_class cls;
	const char *at;
	int rc = -1;

	smtpd_check_canon(s->conf, rcpt, &canon);
	at = strrchr(buf_str(&canon), '@');
	if (rcpt_classify(c, at ? at + 1 : "", &cls, &err) < 0) {
		msg_warn("domain list lookup error: %s", buf_str(&err));
		buf_printf(reply, "451 4.3.0 <%s>: Temporary lookup failure", raw);
		goto out;
	}
	/* Postfix: relay restrictions first, then recipient restrictions;
	 * a "permit" ends only its own list (smtpd_check.c). */
	if (restr_eval(s, &c->relay, raw, cls, reply) < 0 ||
	    restr_eval(s, &c->rcpt, raw, cls, reply) < 0)
		goto out;
	rc = rcpt_unlisted(s, raw, rcpt, cls, reply);
out:
	buf_free(&canon);
	buf_free(&err);
	return rc;
}
