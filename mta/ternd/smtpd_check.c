/* smtpd_check.c - the access checks of each SMTP stage (Postfix
 * smtpd_check_client/helo/mail/rcpt/etrn/data/eod): which restriction
 * lists run when (smtpd_delay_reject moves client, HELO and sender
 * checks to RCPT), defer_if_permit carried between stages, the implicit
 * recipient (and optional sender) validation with local_recipient_maps,
 * virtual_mailbox_maps and relay_recipient_maps, and the bridge between
 * an asynchronous evaluation (smtpd_restr.c) and the session: the session
 * waits in SMTPD_ST_CHECK, the callback gets the final reply.
 * Address classes: mydestination (local), virtual_mailbox_domains,
 * relay_domains (matchlist.h). Pitfall: a table error is a 4xx, never
 * "not found" (never an open relay).
 */
#include "smtpd_int.h"

#include "log.h"
#include "table_keys.h"

#include <string.h>

struct maps {
	struct table **v;
	size_t n;
};

struct smtpd_checks {
	struct restr_conf rc;
	struct matchlist *mydestination, *relay_domains, *virtual_domains;
	struct maps local_maps, virtual_maps, relay_maps;
	int relay_code, local_code, virtual_code, relay_rcpt_code, unlisted_rcpt, unlisted_sender;
	char *delim, *double_bounce;
};

/* One check in progress (s->check). */
struct smtpd_check_req {
	struct restr_eval ev;
	enum smtpd_stage stage;
	char *raw, *canon; /* recipient, HELO name, sender or ETRN domain of the stage */
	smtpd_check_cb cb;
	int async;
	enum smtpd_state saved_state;
};

/* ------------------------------------------------------------------ */
/* configuration                                                       */

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
	struct buf delim = BUF_INIT, dbl = BUF_INIT;
	int rc = -1;

	if (restr_conf_load(&c->rc, cfg, l, err) < 0)
		goto out;
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
	    checks_code(cfg, l, "unknown_relay_recipient_reject_code", &c->relay_rcpt_code, err) <
		0 ||
	    cfg_get_bool(cfg, l, "smtpd_reject_unlisted_recipient", &c->unlisted_rcpt, err) < 0 ||
	    cfg_get_bool(cfg, l, "smtpd_reject_unlisted_sender", &c->unlisted_sender, err) < 0 ||
	    cfg_get_str(cfg, l, "recipient_delimiter", &delim, err) < 0 ||
	    cfg_get_str(cfg, l, "double_bounce_sender", &dbl, err) < 0)
		goto out;
	c->delim = buf_detach(&delim);
	c->double_bounce = buf_detach(&dbl);
	rc = 0;
out:
	buf_free(&delim);
	buf_free(&dbl);
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
	restr_conf_free(&c->rc);
	matchlist_free(c->mydestination);
	matchlist_free(c->relay_domains);
	matchlist_free(c->virtual_domains);
	maps_close(&c->local_maps);
	maps_close(&c->virtual_maps);
	maps_close(&c->relay_maps);
	free(c->delim);
	free(c->double_bounce);
	free(c);
}

const struct restr_conf *smtpd_checks_restr(const struct smtpd_checks *c)
{
	return &c->rc;
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

int smtpd_check_domain_final(struct smtpd_session *s, const char *domain, struct buf *err)
{
	enum rcpt_class cls;

	if (rcpt_classify(s->conf->checks, domain, &cls, err) < 0)
		return -1;
	return cls == CLASS_LOCAL || cls == CLASS_VIRTUAL;
}

int smtpd_conf_domain_local(const struct smtpd_conf *c, const char *domain, struct buf *err)
{
	if (strcasecmp(domain, c->myorigin) == 0)
		return 1;
	return matchlist_domain(c->checks->mydestination, domain, err);
}

int smtpd_check_domain_local(struct smtpd_session *s, const char *domain, struct buf *err)
{
	return smtpd_conf_domain_local(s->conf, domain, err);
}

int smtpd_check_rcpt_authorized(struct restr_eval *ev)
{
	const char *at = strrchr(ev->rcpt_canon, '@');
	struct buf err = BUF_INIT;
	enum rcpt_class cls;

	if (rcpt_classify(ev->s->conf->checks, at ? at + 1 : "", &cls, &err) < 0) {
		msg_warn("domain list lookup error: %s", buf_str(&err));
		buf_free(&err);
		restr_reject(ev, 1, 451, "4.3.0", "<%s>: Temporary lookup failure", ev->recipient);
		return -1;
	}
	buf_free(&err);
	/* Sender-routed addresses (user@a@b, user%a@b) have an uncertain
	 * destination: never authorized (allow_untrusted_routing = no). */
	if (!ev->rc->allow_untrusted_routing && at &&
	    (memchr(ev->rcpt_canon, '@', (size_t)(at - ev->rcpt_canon)) ||
	     memchr(ev->rcpt_canon, '%', (size_t)(at - ev->rcpt_canon)) ||
	     memchr(ev->rcpt_canon, '!', (size_t)(at - ev->rcpt_canon))) &&
	    cls != CLASS_OTHER)
		return 0;
	return cls != CLASS_OTHER;
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

/* 1 found, 0 not, -1 error. */
static int rcpt_known(const struct maps *m, const char *local, const char *domain,
		      const char *delim, int local_class, struct buf *err)
{
	struct table_keys keys = TABLE_KEYS_INIT;
	struct buf val = BUF_INIT;
	int rc = 0;

	rcpt_keys(&keys, local, domain, delim, local_class);
	for (size_t i = 0; i < m->n && rc == 0; i++) {
		int st = table_lookup_keys(m->v[i], &keys, &val, NULL, err);
		rc = st == TABLE_ERROR ? -1 : st == TABLE_FOUND;
	}
	buf_free(&val);
	table_keys_free(&keys);
	return rc;
}

/* Local parts that are always valid in local domains (Postfix: they are
 * absorbed by the queue manager or generated by the bounce service). */
static int rcpt_always_local(const struct smtpd_checks *c, const char *local)
{
	return strcasecmp(local, "postmaster") == 0 || strcasecmp(local, "mailer-daemon") == 0 ||
	       strcasecmp(local, c->double_bounce) == 0;
}

/* Postfix check_rcpt_maps(): raw is the address as given, canon its
 * qualified form; reply_class says sender or recipient. */
static int check_rcpt_maps(struct restr_eval *ev, const char *raw, const char *canon,
			   const char *reply_class)
{
	const struct smtpd_checks *c = ev->s->conf->checks;
	const struct maps *m = NULL;
	const char *table = NULL, *at = strrchr(canon, '@');
	struct buf local = BUF_INIT, err = BUF_INIT;
	enum rcpt_class cls;
	int code = 550, rc = RESTR_DUNNO, sender = strcmp(reply_class, RESTR_NAME_SENDER) == 0;

	buf_append(&local, canon, at ? (size_t)(at - canon) : strlen(canon));
	if (rcpt_classify(c, at ? at + 1 : "", &cls, &err) < 0) {
		msg_warn("domain list lookup error: %s", buf_str(&err));
		rc = restr_reject(ev, 1, 451, "4.3.0", "<%s>: Temporary lookup failure", raw);
		goto out;
	}
	if (cls == CLASS_LOCAL && c->local_maps.n && !rcpt_always_local(c, buf_str(&local))) {
		m = &c->local_maps, table = "local recipient", code = c->local_code;
	} else if (cls == CLASS_VIRTUAL && c->virtual_maps.n) {
		m = &c->virtual_maps, table = "virtual mailbox", code = c->virtual_code;
	} else if (cls == CLASS_RELAY && c->relay_maps.n) {
		m = &c->relay_maps, table = "relay recipient", code = c->relay_rcpt_code;
	}
	if (m == NULL)
		goto out;
	switch (
	    rcpt_known(m, buf_str(&local), at ? at + 1 : "", c->delim, cls == CLASS_LOCAL, &err)) {
	case -1:
		msg_warn("%s table lookup error: %s", table, buf_str(&err));
		rc = restr_reject(ev, 1, 451, "4.3.0", "<%s>: Temporary lookup failure", raw);
		break;
	case 0:
		rc = restr_reject(ev, 0, code, sender ? "5.1.0" : "5.1.1",
				  "<%s>: %s rejected: User unknown%s%s%s", raw, reply_class,
				  ev->rc->show_unk_table ? " in " : "",
				  ev->rc->show_unk_table ? table : "",
				  ev->rc->show_unk_table ? " table" : "");
		break;
	}
out:
	buf_free(&local);
	buf_free(&err);
	return rc;
}

int smtpd_check_rcpt_maps(struct restr_eval *ev)
{
	if (ev->rcptmap_checked)
		return RESTR_DUNNO;
	if (ev->warn_if_reject == 0)
		ev->rcptmap_checked = 1;
	return check_rcpt_maps(ev, ev->recipient, ev->rcpt_canon, RESTR_NAME_RECIPIENT);
}

int smtpd_check_sender_maps(struct restr_eval *ev)
{
	if (ev->sender_rcptmap_checked)
		return RESTR_DUNNO;
	if (ev->warn_if_reject == 0)
		ev->sender_rcptmap_checked = 1;
	return check_rcpt_maps(ev, ev->sender, ev->sender_canon, RESTR_NAME_SENDER);
}

/* ------------------------------------------------------------------ */
/* the stages (Postfix smtpd_check_*())                                */

static void check_reset(struct restr_eval *ev)
{
	ev->recursion = 0;
	ev->warn_if_reject = 0;
	ev->dir.active = 0;
}

static int check_list(struct restr_eval *ev, enum restr_stage_list which, const char *reply_name,
		      const char *reply_class, enum restr_op def_acl)
{
	const struct restr_list *l = &ev->rc->lists[which];

	if (l->n == 0)
		return RESTR_DUNNO;
	restr_tracef(ev, "%s:", l->param);
	return restr_list_eval(ev, l, reply_name, reply_class, def_acl);
}

/* Collapse a list result into a stage result: only a reject (or a wait)
 * stops; OK ends the list, not the stage. */
static int stage_stop(int st)
{
	return st == RESTR_REJECT || st == RESTR_PENDING;
}

static int check_client(struct restr_eval *ev)
{
	struct smtpd_session *s = ev->s;
	int st;

	ev->dip.active = 0;
	check_reset(ev);
	st = check_list(ev, RL_CLIENT, s->client.namaddr, RESTR_NAME_CLIENT, RO_CLIENT_ACCESS);
	s->dip_client = ev->dip.active;
	return stage_stop(st) ? st : RESTR_DUNNO;
}

static int check_helo(struct restr_eval *ev)
{
	struct smtpd_session *s = ev->s;
	int st;

	if (ev->helo == NULL)
		return RESTR_DUNNO;
	ev->dip.active = s->dip_client;
	check_reset(ev);
	st = check_list(ev, RL_HELO, ev->helo, RESTR_NAME_HELO, RO_HELO_ACCESS);
	s->dip_helo = ev->dip.active;
	return stage_stop(st) ? st : RESTR_DUNNO;
}

static int check_mail(struct restr_eval *ev)
{
	struct smtpd_session *s = ev->s;
	int st;

	if (ev->sender == NULL)
		return RESTR_DUNNO;
	ev->dip.active = s->dip_client | s->dip_helo;
	ev->sender_rcptmap_checked = 0;
	check_reset(ev);
	st = check_list(ev, RL_SENDER, ev->sender, RESTR_NAME_SENDER, RO_SENDER_ACCESS);
	s->dip_sender = ev->dip.active;
	if (stage_stop(st))
		return st;
	if (s->conf->checks->unlisted_sender && !ev->sender_rcptmap_checked && !ev->discard &&
	    *ev->sender)
		st = smtpd_check_sender_maps(ev);
	return stage_stop(st) ? st : RESTR_DUNNO;
}

static int check_rcpt(struct restr_eval *ev)
{
	struct smtpd_session *s = ev->s;
	int st = RESTR_DUNNO;

	/* RFC 5321 §4.5.1: "postmaster" needs no domain and is always accepted. */
	if (strcasecmp(ev->recipient, "postmaster") == 0)
		return RESTR_DUNNO;
	ev->rcptmap_checked = 0;
	if (ev->rc->delay_reject &&
	    (stage_stop(st = check_client(ev)) || stage_stop(st = check_helo(ev)) ||
	     stage_stop(st = check_mail(ev))))
		return st;
	ev->dip.active = s->dip_sender;
	check_reset(ev);
	/* smtpd_relay_before_recipient_restrictions = yes (level >= 3.6):
	 * one reset for both lists, OK ends only its own list. */
	st = check_list(ev, RL_RELAY, ev->recipient, RESTR_NAME_RECIPIENT, RO_RECIPIENT_ACCESS);
	if (!stage_stop(st))
		st = check_list(ev, RL_RECIPIENT, ev->recipient, RESTR_NAME_RECIPIENT,
				RO_RECIPIENT_ACCESS);
	if (st == RESTR_PENDING)
		return st;
	if (st != RESTR_REJECT && ev->dip.active)
		st = restr_apply_defer_if_permit(ev);
	if (st != RESTR_REJECT && s->conf->checks->unlisted_rcpt && !ev->rcptmap_checked &&
	    !ev->discard)
		st = smtpd_check_rcpt_maps(ev);
	return st == RESTR_REJECT ? st : RESTR_DUNNO;
}

static int check_etrn(struct restr_eval *ev)
{
	struct smtpd_session *s = ev->s;
	int st;

	if (ev->rc->delay_reject &&
	    (stage_stop(st = check_client(ev)) || stage_stop(st = check_helo(ev))))
		return st;
	ev->dip.active = s->dip_client | s->dip_helo;
	check_reset(ev);
	st = check_list(ev, RL_ETRN, ev->etrn, RESTR_NAME_ETRN, RO_ETRN_ACCESS);
	if (st == RESTR_PENDING)
		return st;
	if (st != RESTR_REJECT && ev->dip.active)
		st = restr_apply_defer_if_permit(ev);
	return st == RESTR_REJECT ? st : RESTR_DUNNO;
}

static int check_data(struct restr_eval *ev, int eod)
{
	int st;

	ev->dip.active = 0;
	check_reset(ev);
	st = eod ? check_list(ev, RL_EOD, "END-OF-MESSAGE", RESTR_NAME_EOD, RO_IMPLICIT)
		 : check_list(ev, RL_DATA, "DATA", RESTR_NAME_DATA, RO_IMPLICIT);
	if (st == RESTR_PENDING)
		return st;
	if (st != RESTR_REJECT && ev->dip.active)
		st = restr_apply_defer_if_permit(ev);
	return st == RESTR_REJECT ? st : RESTR_DUNNO;
}

static const char *check_where(struct smtpd_session *s, enum smtpd_stage stage)
{
	static const char *const where[] = {
	    [SMTPD_STAGE_CONNECT] = "CONNECT",	  [SMTPD_STAGE_HELO] = "HELO",
	    [SMTPD_STAGE_MAIL] = "MAIL",	  [SMTPD_STAGE_RCPT] = "RCPT",
	    [SMTPD_STAGE_VRFY] = "VRFY",	  [SMTPD_STAGE_DATA] = "DATA",
	    [SMTPD_STAGE_EOD] = "END-OF-MESSAGE", [SMTPD_STAGE_ETRN] = "ETRN",
	};

	if (stage == SMTPD_STAGE_HELO && s->check_cmd == SMTPD_C_EHLO)
		return "EHLO";
	return where[stage];
}

/* One pass over the stage (again after each asynchronous answer). */
static int check_pass(struct smtpd_check_req *r)
{
	struct restr_eval *ev = &r->ev;
	struct smtpd_session *s = ev->s;

	restr_eval_reset_pass(ev);
	/* The remembered defer_if_permit reason of earlier stages. */
	ev->dip.soft = s->dip.soft;
	ev->dip.code = s->dip.code;
	memcpy(ev->dip.dsn, s->dip.dsn, sizeof(ev->dip.dsn));
	buf_set(&ev->dip.reason, buf_str(&s->dip.reason));
	ev->where = check_where(s, r->stage);
	ev->helo = s->helo;
	ev->sender = s->in_mail ? s->sender_raw : NULL;
	ev->sender_canon = s->in_mail ? s->env.sender : NULL;
	ev->recipient = ev->rcpt_canon = ev->etrn = NULL;
	/* DISCARD and HOLD hold for the whole transaction (Postfix state). */
	ev->discard = s->txn_discard;
	ev->hold = s->txn_hold;
	switch (r->stage) {
	case SMTPD_STAGE_CONNECT:
		return check_client(ev);
	case SMTPD_STAGE_HELO:
		ev->helo = r->raw;
		return check_helo(ev);
	case SMTPD_STAGE_MAIL:
		ev->sender = r->raw;
		ev->sender_canon = r->canon;
		return check_mail(ev);
	case SMTPD_STAGE_RCPT:
	case SMTPD_STAGE_VRFY:
		ev->recipient = r->raw;
		ev->rcpt_canon = r->canon;
		return check_rcpt(ev);
	case SMTPD_STAGE_ETRN:
		ev->etrn = r->raw;
		return check_etrn(ev);
	case SMTPD_STAGE_DATA:
	case SMTPD_STAGE_EOD:
		/* One recipient is named in logs and policy requests; several are not. */
		if (s->env.nrcpt == 1 && s->first_rcpt) {
			ev->recipient = s->first_rcpt;
			ev->rcpt_canon = s->env.rcpt[0].addr;
		}
		return check_data(ev, r->stage == SMTPD_STAGE_EOD);
	}
	return RESTR_DUNNO;
}

static void check_add_line(struct buf *to, const char *line, int unique)
{
	size_t n = strlen(line);

	if (unique)
		for (const char *p = buf_str(to); (p = strstr(p, line)) != NULL; p++)
			if ((p == buf_str(to) || p[-1] == '\n') && p[n] == '\n')
				return;
	buf_printf(to, "%s\n", line);
}

/* The evaluation is complete: log, keep its effects, reply. */
static void check_finish(struct smtpd_check_req *r, int st)
{
	struct smtpd_session *s = r->ev.s;
	struct restr_eval *ev = &r->ev;
	char *line, *save = NULL;
	struct buf reply = BUF_INIT;
	smtpd_check_cb cb = r->cb;

	/* "tern explain" shows these lines in its trace instead. */
	for (line = ev->log.len && !s->check_trace ? strtok_r(ev->log.data, "\n", &save) : NULL;
	     line; line = strtok_r(NULL, "\n", &save))
		msg_qid(s->have_qid ? s->qid : NULL, "%s", line);
	/* Keep the defer_if_permit reason for later stages (delay_reject=no). */
	if (ev->dip.active) {
		s->dip.soft = ev->dip.soft;
		s->dip.code = ev->dip.code;
		memcpy(s->dip.dsn, ev->dip.dsn, sizeof(s->dip.dsn));
		buf_set(&s->dip.reason, buf_str(&ev->dip.reason));
	}
	s->txn_hold |= ev->hold;
	s->txn_discard |= ev->discard;
	if (ev->redirect) {
		free(s->txn_redirect);
		s->txn_redirect = xstrdup(ev->redirect);
	}
	if (ev->filter) {
		free(s->txn_filter);
		s->txn_filter = xstrdup(ev->filter);
	}
	for (line = ev->bcc.len ? strtok_r(ev->bcc.data, "\n", &save) : NULL; line;
	     line = strtok_r(NULL, "\n", &save))
		check_add_line(&s->txn_bcc, line, 1);
	for (line = ev->prepend.len ? strtok_r(ev->prepend.data, "\n", &save) : NULL; line;
	     line = strtok_r(NULL, "\n", &save))
		check_add_line(&s->txn_prepend, line, 0);
	if (ev->disconnect)
		s->check_disconnect = 1;
	if (s->check_trace)
		buf_puts(s->check_trace, buf_str(&ev->trace));
	buf_set(&reply, buf_str(&ev->reply));
	s->check = NULL;
	restr_eval_free(&r->ev);
	free(r->raw);
	free(r->canon);
	free(r);
	cb(s, st == RESTR_REJECT ? -1 : 0, buf_str(&reply));
	buf_free(&reply);
}

static void check_resume(struct restr_eval *ev)
{
	struct smtpd_session *s = ev->s;
	struct smtpd_check_req *r = s->check;
	int st = check_pass(r);

	if (st == RESTR_PENDING)
		return;
	s->state = r->saved_state;
	if (s->dead) { /* the client left while we waited: nothing to answer */
		s->check = NULL;
		restr_eval_free(&r->ev);
		free(r->raw);
		free(r->canon);
		free(r);
		if (s->bev)
			smtpd_session_resume(s);
		return;
	}
	check_finish(r, st);
	if (s->bev) /* not for "tern explain" */
		smtpd_session_resume(s);
}

int smtpd_check_start(struct smtpd_session *s, enum smtpd_stage stage, const char *raw,
		      const char *canon, smtpd_check_cb cb)
{
	struct smtpd_check_req *r = xcalloc(1, sizeof(*r));
	int st;

	restr_eval_init(&r->ev);
	r->ev.s = s;
	r->ev.c = s->conf->checks;
	r->ev.rc = &s->conf->checks->rc;
	r->ev.resume = check_resume;
	r->ev.tracing = s->check_trace != NULL;
	r->stage = r->ev.stage = stage;
	r->raw = raw ? xstrdup(raw) : NULL;
	r->canon = canon ? xstrdup(canon) : NULL;
	r->cb = cb;
	s->check = r;
	st = check_pass(r);
	if (st != RESTR_PENDING) {
		check_finish(r, st);
		return 0;
	}
	r->async = 1;
	r->saved_state = s->state;
	s->state = SMTPD_ST_CHECK;
	return 1;
}

int smtpd_check_has(const struct smtpd_conf *conf, enum smtpd_stage stage)
{
	const struct restr_conf *rc = &conf->checks->rc;

	switch (stage) {
	case SMTPD_STAGE_CONNECT:
		return !rc->delay_reject && rc->lists[RL_CLIENT].n > 0;
	case SMTPD_STAGE_HELO:
		return !rc->delay_reject && rc->lists[RL_HELO].n > 0;
	case SMTPD_STAGE_MAIL:
		return !rc->delay_reject &&
		       (rc->lists[RL_SENDER].n > 0 || conf->checks->unlisted_sender);
	case SMTPD_STAGE_DATA:
		return rc->lists[RL_DATA].n > 0;
	case SMTPD_STAGE_EOD:
		return rc->lists[RL_EOD].n > 0;
	default:
		return 1;
	}
}

int smtpd_check_delay_reject(const struct smtpd_conf *conf)
{
	return conf->checks->rc.delay_reject;
}
