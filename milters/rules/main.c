/* main.c - tern-rules-milter: Postfix header_checks(5) / body_checks(5)
 * files, unchanged, applied by a milter (so ternd, Sendmail or a Postfix
 * in front of a content filter can use them).
 *
 * The same parameters as Postfix (header_checks, mime_header_checks,
 * nested_header_checks, body_checks, the size limits) name Tern tables
 * (pcre:, regexp:, with if/endif: table_rules.c). The message's own
 * headers are checked as they arrive; REJECT and DISCARD answer at once,
 * other actions are collected and carried out at end of message, where
 * libmilter allows edits: IGNORE/REPLACE/PREPEND of the message's headers
 * become header edits applied from the last header up (so indexes stay
 * right under Postfix's live renumbering, milter-policy-ecosystem.md
 * §1.10); edits inside the body (MIME part headers, attached messages,
 * body lines) become one smfi_replacebody(); HOLD is smfi_quarantine();
 * REDIRECT deletes every recipient and adds one; BCC adds one.
 */
#include "milter.h"
#include "rules_milter.h"

#include "log.h"
#include "table.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct cfg_param rules_params[] = {
    {"header_checks", CFG_TABLES, "", "tables for the message's own header lines", 0, 0, NULL, 0,
     NULL},
    {"mime_header_checks", CFG_TABLES, "$header_checks", "tables for MIME header lines", 0, 0, NULL,
     0, NULL},
    {"nested_header_checks", CFG_TABLES, "$header_checks",
     "tables for the header lines of attached messages", 0, 0, NULL, 0, NULL},
    {"body_checks", CFG_TABLES, "", "tables for body lines", 0, 0, NULL, 0, NULL},
    {"header_size_limit", CFG_SIZE, "102400", "a header line is inspected up to this size", 0, 0,
     NULL, 0, NULL},
    {"body_checks_size_limit", CFG_SIZE, "51200",
     "bytes of each body segment (MIME part) that body_checks inspect", 0, 0, NULL, 0, NULL},
    {"line_length_limit", CFG_INT, "2048", "longer body lines are inspected in pieces", 512,
     1000000, NULL, 0, NULL},
    {"disable_mime_input_processing", CFG_BOOL, "no",
     "no MIME: the body is lines only, no part or attached-message headers", 0, 0, NULL, 0, NULL},
    {NULL, 0, NULL, NULL, 0, 0, NULL, 0, NULL},
};

static const char *const rules_class_params[RULES_NCLASS] = {"header_checks", "mime_header_checks",
							     "nested_header_checks", "body_checks"};

struct rules_conf {
	struct table **maps[RULES_NCLASS];
	size_t nmaps[RULES_NCLASS];
	long long header_limit, body_limit, line_limit;
	int mime;
	int body_needed; /* some table looks inside the body */
};

/* A change to one of the message's own headers, made at end of message. */
enum rules_hop { RULES_HOP_DELETE, RULES_HOP_REPLACE, RULES_HOP_PREPEND };

struct rules_hedit {
	size_t pos;  /* 0-based among the headers the milter saw */
	char *name;  /* the header's name */
	int nameidx; /* 1-based among headers of that name */
	enum rules_hop op;
	char *text; /* REPLACE/PREPEND: "Name: value" */
};

struct rules_conn {
	void *conf_ref;
	struct rules_conf *conf;
	unsigned long actions, protocol;
	SMFICTX *ctx;
	char *client_addr, *client_name, *helo;
	/* the message */
	char *sender;
	char **rcpt;
	size_t nrcpt, rcpt_cap;
	char **hnames;
	size_t nhdr, hcap;
	char *content_type;
	struct rules_hedit *edits;
	size_t nedits;
	int hold;
	char *hold_reason;
	char *redirect;
	char **bcc;
	size_t nbcc;
	struct rules_mime mime;
	int in_body;
	int pass;      /* PASS: no more checks */
	sfsistat stop; /* SMFIS_CONTINUE, or the answer once a rule stopped it */
};

/* ---- configuration ---- */

static void rules_conf_free(void *p)
{
	struct rules_conf *rc = p;

	if (rc == NULL)
		return;
	for (int c = 0; c < RULES_NCLASS; c++) {
		for (size_t i = 0; i < rc->nmaps[c]; i++)
			table_close(rc->maps[c][i]);
		free(rc->maps[c]);
	}
	free(rc);
}

static void *rules_conf_load(const struct cfg *cfg, struct buf *err)
{
	struct rules_conf *rc = xcalloc(1, sizeof(*rc));
	int nomime = 0;

	for (int c = 0; c < RULES_NCLASS; c++) {
		struct cfg_list l = {NULL, 0};

		if (cfg_get_list(cfg, NULL, rules_class_params[c], &l, err) < 0)
			goto fail;
		rc->maps[c] = xcalloc(l.count + 1, sizeof(struct table *));
		for (size_t i = 0; i < l.count; i++) {
			struct buf e = BUF_INIT;

			buf_init(&e);
			rc->maps[c][i] = table_open_lenient(l.items[i], &e);
			if (rc->maps[c][i] == NULL) {
				buf_printf(err, "%s: %s", rules_class_params[c], buf_str(&e));
				buf_free(&e);
				cfg_list_free(&l);
				goto fail;
			}
			rc->nmaps[c]++;
			buf_free(&e);
		}
		cfg_list_free(&l);
	}
	if (cfg_get_size(cfg, NULL, "header_size_limit", &rc->header_limit, err) < 0 ||
	    cfg_get_size(cfg, NULL, "body_checks_size_limit", &rc->body_limit, err) < 0 ||
	    cfg_get_int(cfg, NULL, "line_length_limit", &rc->line_limit, err) < 0 ||
	    cfg_get_bool(cfg, NULL, "disable_mime_input_processing", &nomime, err) < 0)
		goto fail;
	rc->mime = !nomime;
	rc->body_needed = rc->nmaps[RULES_BODY] > 0 ||
			  (rc->mime && (rc->nmaps[RULES_MIME] > 0 || rc->nmaps[RULES_NESTED] > 0));
	return rc;
fail:
	rules_conf_free(rc);
	return NULL;
}

/* ---- session state ---- */

static struct rules_conn *rules_conn_get(SMFICTX *ctx)
{
	struct rules_conn *c = smfi_getpriv(ctx);

	if (c == NULL) {
		c = xcalloc(1, sizeof(*c));
		c->conf_ref = milter_conf_acquire();
		c->conf = milter_conf_state(c->conf_ref);
		rules_mime_init(&c->mime);
		smfi_setpriv(ctx, c);
	}
	c->ctx = ctx;
	return c;
}

static void rules_msg_reset(struct rules_conn *c)
{
	free(c->sender);
	c->sender = NULL;
	for (size_t i = 0; i < c->nrcpt; i++)
		free(c->rcpt[i]);
	c->nrcpt = 0;
	for (size_t i = 0; i < c->nhdr; i++)
		free(c->hnames[i]);
	c->nhdr = 0;
	for (size_t i = 0; i < c->nedits; i++) {
		free(c->edits[i].name);
		free(c->edits[i].text);
	}
	free(c->edits);
	c->edits = NULL;
	c->nedits = 0;
	free(c->content_type);
	free(c->hold_reason);
	free(c->redirect);
	c->content_type = c->hold_reason = c->redirect = NULL;
	c->hold = 0;
	for (size_t i = 0; i < c->nbcc; i++)
		free(c->bcc[i]);
	free(c->bcc);
	c->bcc = NULL;
	c->nbcc = 0;
	rules_mime_free(&c->mime);
	rules_mime_init(&c->mime);
	c->in_body = 0;
	c->pass = 0;
	c->stop = SMFIS_CONTINUE;
}

static sfsistat rules_reply(const struct rules_conn *c, unsigned long nr)
{
	return c->protocol & nr ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static sfsistat rules_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
				unsigned long f3, unsigned long *pf0, unsigned long *pf1,
				unsigned long *pf2, unsigned long *pf3)
{
	struct rules_conn *c = rules_conn_get(ctx);
	unsigned long want = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY | SMFIF_ADDRCPT |
			     SMFIF_ADDRCPT_PAR | SMFIF_DELRCPT | SMFIF_QUARANTINE |
			     SMFIF_SETSYMLIST;
	unsigned long steps = SMFIP_HDR_LEADSPC | SMFIP_NOUNKNOWN | SMFIP_NODATA | SMFIP_NR_CONN |
			      SMFIP_NR_HELO | SMFIP_NR_MAIL | SMFIP_NR_RCPT | SMFIP_NR_EOH |
			      SMFIP_SKIP;

	if (!c->conf->body_needed)
		steps |= SMFIP_NOBODY;
	c->actions = *pf0 = f0 & want;
	c->protocol = *pf1 = f1 & steps;
	*pf2 = *pf3 = 0;
	if (c->actions & SMFIF_SETSYMLIST) {
		smfi_setsymlist(ctx, SMFIM_CONNECT, "{client_addr} {client_name}");
		smfi_setsymlist(ctx, SMFIM_EOH, "i");
		smfi_setsymlist(ctx, SMFIM_EOM, "i");
	}
	return SMFIS_CONTINUE;
}

static sfsistat rules_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *sa)
{
	struct rules_conn *c = rules_conn_get(ctx);
	char text[INET6_ADDRSTRLEN] = "";

	c->client_addr = milter_macro_dup(ctx, "{client_addr}");
	c->client_name = milter_macro_dup(ctx, "{client_name}");
	if (c->client_name == NULL)
		c->client_name = xstrdup(host && *host != '[' ? host : "unknown");
	if (c->client_addr == NULL && sa != NULL) {
		if (sa->sa_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, text,
				  sizeof(text));
		else if (sa->sa_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, text,
				  sizeof(text));
		c->client_addr = xstrdup(text);
	}
	if (c->client_addr == NULL)
		c->client_addr = xstrdup("unknown");
	return rules_reply(c, SMFIP_NR_CONN);
}

static sfsistat rules_helo(SMFICTX *ctx, char *name)
{
	struct rules_conn *c = rules_conn_get(ctx);

	free(c->helo);
	c->helo = xstrdup(name ? name : "");
	return rules_reply(c, SMFIP_NR_HELO);
}

static void rules_tables_refresh(struct rules_conf *rc);

static sfsistat rules_envfrom(SMFICTX *ctx, char **argv)
{
	struct rules_conn *c = rules_conn_get(ctx);

	rules_msg_reset(c);
	rules_tables_refresh(c->conf);
	c->sender = milter_addr_strip(argv[0]);
	return rules_reply(c, SMFIP_NR_MAIL);
}

static sfsistat rules_envrcpt(SMFICTX *ctx, char **argv)
{
	struct rules_conn *c = rules_conn_get(ctx);

	if (c->nrcpt == c->rcpt_cap) {
		c->rcpt_cap = c->rcpt_cap ? 2 * c->rcpt_cap : 8;
		c->rcpt = xrealloc(c->rcpt, c->rcpt_cap * sizeof(char *));
	}
	c->rcpt[c->nrcpt++] = milter_addr_strip(argv[0]);
	return rules_reply(c, SMFIP_NR_RCPT);
}

/* ---- the checks ---- */

/* Postfix's cleanup log line: "QID: reject: header Subject: x from
 * host[addr]; from=<s> to=<r> helo=<h>: 5.7.1 text". */
static void rules_log(struct rules_conn *c, const char *what, enum rules_class cls,
		      const char *line, size_t len, const char *text)
{
	struct buf qid = BUF_INIT, shown = BUF_INIT;

	buf_init(&qid);
	buf_init(&shown);
	milter_qid(c->ctx, &qid);
	for (size_t i = 0; i < len && i < 200; i++)
		buf_putc(&shown, line[i] == '\n' || line[i] == '\r' ? ' ' : line[i]);
	msg_qid(buf_str(&qid), "%s: %s %s from %s[%s]; from=<%s> to=<%s> helo=<%s>%s%s", what,
		cls == RULES_BODY ? "body" : "header", buf_str(&shown), c->client_name,
		c->client_addr, c->sender ? c->sender : "", c->nrcpt ? c->rcpt[0] : "",
		c->helo ? c->helo : "", text && *text ? ": " : "", text ? text : "");
	buf_free(&qid);
	buf_free(&shown);
}

/* Tables whose file changed are re-read once per message (not per line:
 * that would be a stat() per body line), as Postfix's cleanup notices a
 * changed header_checks file between messages. */
static void rules_tables_refresh(struct rules_conf *rc)
{
	for (int cls = 0; cls < RULES_NCLASS; cls++)
		for (size_t i = 0; i < rc->nmaps[cls]; i++) {
			struct buf e = BUF_INIT;

			buf_init(&e);
			if (table_reload(rc->maps[cls][i], 0, &e) < 0)
				msg_warn("%s: %s", rc->maps[cls][i]->spec, buf_str(&e));
			buf_free(&e);
		}
}

/* First match over the class's tables. */
static int rules_lookup(struct rules_conn *c, enum rules_class cls, const char *line,
			struct buf *value, struct buf *err)
{
	for (size_t i = 0; i < c->conf->nmaps[cls]; i++) {
		int rc = table_lookup(c->conf->maps[cls][i], line, value, err);

		if (rc != TABLE_NOTFOUND)
			return rc;
	}
	return TABLE_NOTFOUND;
}

static void rules_stop(struct rules_conn *c, sfsistat how, const struct rules_action *a)
{
	struct buf t = BUF_INIT;

	c->stop = how;
	if (a && (how == SMFIS_REJECT || how == SMFIS_TEMPFAIL)) {
		buf_init(&t);
		milter_reply_text(a->text, &t);
		smfi_setreply(c->ctx, (char *)a->code, (char *)a->dsn, t.data);
		buf_free(&t);
	}
}

static enum rules_edit rules_act(struct rules_conn *c, enum rules_class cls, const char *line,
				 size_t len, struct rules_action *a, struct buf *text)
{
	struct buf r = BUF_INIT;
	enum rules_edit e = RULES_KEEP;

	buf_init(&r);
	switch (a->kind) {
	case RULES_ACT_NONE:
		break;
	case RULES_ACT_REJECT:
		buf_printf(&r, "%s %s", a->dsn, a->text);
		rules_log(c, "reject", cls, line, len, buf_str(&r));
		rules_stop(c, SMFIS_REJECT, a);
		e = RULES_STOP;
		break;
	case RULES_ACT_PASS:
		/* No more checks for this message; what earlier rules asked
		 * for is still done at end of message. */
		rules_log(c, "pass", cls, line, len, a->text);
		c->pass = 1;
		break;
	case RULES_ACT_STRIP:
		rules_log(c, "strip", cls, line, len, a->text);
		e = RULES_DROP;
		break;
	case RULES_ACT_DISCARD:
		rules_log(c, "discard", cls, line, len, a->text);
		rules_stop(c, SMFIS_DISCARD, NULL);
		e = RULES_STOP;
		break;
	case RULES_ACT_HOLD:
		rules_log(c, "hold", cls, line, len, a->text);
		c->hold = 1;
		if (c->hold_reason == NULL)
			c->hold_reason = xstrdup(*a->text ? a->text : "header_checks HOLD");
		break;
	case RULES_ACT_WARN:
		rules_log(c, "warning", cls, line, len, a->text);
		break;
	case RULES_ACT_INFO:
		rules_log(c, "info", cls, line, len, a->text);
		break;
	case RULES_ACT_IGNORE:
		e = RULES_DROP;
		break;
	case RULES_ACT_REPLACE:
		rules_log(c, "replace", cls, line, len, a->text);
		buf_set(text, a->text);
		e = RULES_REPLACE;
		break;
	case RULES_ACT_PREPEND:
		rules_log(c, "prepend", cls, line, len, a->text);
		buf_set(text, a->text);
		e = RULES_PREPEND;
		break;
	case RULES_ACT_REDIRECT:
		rules_log(c, "redirect", cls, line, len, a->text);
		free(c->redirect);
		c->redirect = milter_addr_strip(a->text);
		break;
	case RULES_ACT_BCC:
		rules_log(c, "bcc", cls, line, len, a->text);
		c->bcc = xrealloc(c->bcc, (c->nbcc + 1) * sizeof(char *));
		c->bcc[c->nbcc++] = milter_addr_strip(a->text);
		break;
	case RULES_ACT_FILTER:
		/* No content filter next hop exists between a milter and its
		 * MTA: say so rather than pretend. */
		rules_log(c, "warning: FILTER is not available in a milter, ignored", cls, line,
			  len, a->text);
		break;
	}
	buf_free(&r);
	return e;
}

static enum rules_edit rules_check(void *arg, enum rules_class cls, const char *line, size_t len,
				   struct buf *text)
{
	struct rules_conn *c = arg;
	struct buf v = BUF_INIT, err = BUF_INIT;
	struct rules_action a;
	enum rules_edit e = RULES_KEEP;
	int rc;

	if (c->conf->nmaps[cls] == 0 || c->stop != SMFIS_CONTINUE || c->pass)
		return c->stop != SMFIS_CONTINUE ? RULES_STOP : RULES_KEEP;
	buf_init(&v);
	buf_init(&err);
	rc = rules_lookup(c, cls, line, &v, &err);
	if (rc == TABLE_ERROR) {
		struct rules_action tf = {RULES_ACT_REJECT, "451", "4.3.0",
					  (char *)"Temporary lookup failure"};

		msg_warn("%s lookup error: %s", rules_class_params[cls], buf_str(&err));
		rules_stop(c, SMFIS_TEMPFAIL, &tf);
		e = RULES_STOP;
	} else if (rc == TABLE_FOUND) {
		if (rules_action_parse(buf_str(&v), &a, &err) < 0)
			msg_warn("%s command in %s map: %s", buf_str(&err), rules_class_params[cls],
				 buf_str(&v));
		else {
			e = rules_act(c, cls, line, len, &a, text);
			rules_action_free(&a);
		}
	}
	buf_free(&v);
	buf_free(&err);
	return e;
}

static void rules_hedit_add(struct rules_conn *c, size_t pos, const char *name, int idx,
			    enum rules_hop op, const char *text)
{
	struct rules_hedit *h;

	c->edits = xrealloc(c->edits, (c->nedits + 1) * sizeof(*c->edits));
	h = &c->edits[c->nedits++];
	h->pos = pos;
	h->name = xstrdup(name);
	h->nameidx = idx;
	h->op = op;
	h->text = text ? xstrdup(text) : NULL;
}

static sfsistat rules_header(SMFICTX *ctx, char *name, char *value)
{
	struct rules_conn *c = rules_conn_get(ctx);
	struct buf line = BUF_INIT, text = BUF_INIT;
	enum rules_class cls = RULES_HEADER;
	enum rules_edit e;
	int idx = 1;

	if (c->stop != SMFIS_CONTINUE)
		return c->stop;
	for (size_t i = 0; i < c->nhdr; i++)
		idx += strcasecmp(c->hnames[i], name) == 0;
	if (c->nhdr == c->hcap) {
		c->hcap = c->hcap ? 2 * c->hcap : 32;
		c->hnames = xrealloc(c->hnames, c->hcap * sizeof(char *));
	}
	c->hnames[c->nhdr++] = xstrdup(name);
	if (strcasecmp(name, "Content-Type") == 0 && c->content_type == NULL)
		c->content_type = xstrdup(value);
	buf_init(&line);
	buf_init(&text);
	buf_printf(&line, "%s:%s%s", name, c->protocol & SMFIP_HDR_LEADSPC ? "" : " ", value);
	if (line.len > (size_t)c->conf->header_limit)
		buf_truncate(&line, (size_t)c->conf->header_limit);
	if (c->conf->mime && rules_mime_header_name(name, strlen(name)))
		cls = RULES_MIME;
	e = rules_check(c, cls, line.data, line.len, &text);
	if (e == RULES_DROP)
		rules_hedit_add(c, c->nhdr - 1, name, idx, RULES_HOP_DELETE, NULL);
	else if (e == RULES_REPLACE)
		rules_hedit_add(c, c->nhdr - 1, name, idx, RULES_HOP_REPLACE, buf_str(&text));
	else if (e == RULES_PREPEND)
		rules_hedit_add(c, c->nhdr - 1, name, idx, RULES_HOP_PREPEND, buf_str(&text));
	buf_free(&line);
	buf_free(&text);
	return c->stop != SMFIS_CONTINUE ? c->stop : SMFIS_CONTINUE;
}

static sfsistat rules_eoh(SMFICTX *ctx)
{
	struct rules_conn *c = rules_conn_get(ctx);

	c->mime.check = rules_check;
	c->mime.arg = c;
	c->mime.mime = c->conf->mime;
	c->mime.keep_body = (c->actions & SMFIF_CHGBODY) != 0;
	c->mime.line_limit = (size_t)c->conf->line_limit;
	c->mime.body_limit = (size_t)c->conf->body_limit;
	c->mime.header_limit = (size_t)c->conf->header_limit;
	rules_mime_start(&c->mime, c->content_type);
	c->in_body = 1;
	return rules_reply(c, SMFIP_NR_EOH);
}

static sfsistat rules_body(SMFICTX *ctx, unsigned char *data, size_t len)
{
	struct rules_conn *c = rules_conn_get(ctx);

	if (!c->conf->body_needed)
		return c->protocol & SMFIP_SKIP ? SMFIS_SKIP : SMFIS_CONTINUE;
	rules_mime_body(&c->mime, data, len);
	return c->stop;
}

/* ---- end of message: the collected actions ---- */

/* "Name: value" -> name and value as smfi_*header() want them. */
static int rules_split_header(const char *text, struct buf *name, struct buf *value, int leadspc)
{
	const char *colon = strchr(text, ':');

	if (colon == NULL || colon == text || strcspn(text, " \t") < (size_t)(colon - text))
		return -1;
	buf_reset(name);
	buf_append(name, text, (size_t)(colon - text));
	buf_set(value, "");
	if (leadspc && colon[1] != ' ')
		buf_putc(value, ' ');
	buf_puts(value, leadspc ? colon + 1 : colon + 1 + (colon[1] == ' '));
	return 0;
}

static void rules_eom_headers(struct rules_conn *c, const char *qid)
{
	struct buf name = BUF_INIT, value = BUF_INIT;
	int leadspc = (c->protocol & SMFIP_HDR_LEADSPC) != 0;

	buf_init(&name);
	buf_init(&value);
	/* Last header first: Postfix renumbers after each edit. */
	for (size_t i = c->nedits; i > 0; i--) {
		struct rules_hedit *h = &c->edits[i - 1];
		int pos = (int)h->pos + 1; /* insheader index: 0 is above the MTA's Received: */

		if (h->op == RULES_HOP_DELETE) {
			smfi_chgheader(c->ctx, h->name, h->nameidx, NULL);
			continue;
		}
		if (rules_split_header(h->text, &name, &value, leadspc) < 0) {
			msg_qid(qid, "warning: %s text is not a header: \"%s\"",
				h->op == RULES_HOP_REPLACE ? "REPLACE" : "PREPEND", h->text);
			continue;
		}
		if (h->op == RULES_HOP_REPLACE && strcasecmp(buf_str(&name), h->name) == 0)
			smfi_chgheader(c->ctx, h->name, h->nameidx, value.data);
		else {
			smfi_insheader(c->ctx, pos, name.data, value.data);
			if (h->op == RULES_HOP_REPLACE)
				smfi_chgheader(c->ctx, h->name, h->nameidx, NULL);
		}
	}
	buf_free(&name);
	buf_free(&value);
}

static void rules_eom_envelope(struct rules_conn *c, const char *qid)
{
	struct buf a = BUF_INIT;

	buf_init(&a);
	if (c->redirect && (c->actions & SMFIF_DELRCPT) && (c->actions & SMFIF_ADDRCPT)) {
		for (size_t i = 0; i < c->nrcpt; i++) {
			buf_reset(&a);
			buf_printf(&a, "<%s>", c->rcpt[i]);
			smfi_delrcpt(c->ctx, a.data);
		}
		buf_reset(&a);
		buf_printf(&a, "<%s>", c->redirect);
		smfi_addrcpt(c->ctx, a.data);
	}
	/* BCC as Postfix adds it: NOTIFY=NONE (header_checks(5)). */
	for (size_t i = 0; i < c->nbcc; i++) {
		buf_reset(&a);
		buf_printf(&a, "<%s>", c->bcc[i]);
		if (c->actions & SMFIF_ADDRCPT_PAR)
			smfi_addrcpt_par(c->ctx, a.data, "NOTIFY=NEVER");
		else if (c->actions & SMFIF_ADDRCPT)
			smfi_addrcpt(c->ctx, a.data);
	}
	if (c->hold) {
		if (c->actions & SMFIF_QUARANTINE)
			smfi_quarantine(c->ctx, c->hold_reason);
		else
			msg_qid(qid, "warning: the MTA does not offer QUARANTINE: HOLD not done");
	}
	buf_free(&a);
}

static sfsistat rules_eom(SMFICTX *ctx)
{
	struct rules_conn *c = rules_conn_get(ctx);
	struct buf qid = BUF_INIT;
	sfsistat rc;

	buf_init(&qid);
	milter_qid(ctx, &qid);
	if (c->in_body && c->conf->body_needed)
		rules_mime_end(&c->mime);
	if ((rc = c->stop) == SMFIS_CONTINUE) {
		rules_eom_headers(c, buf_str(&qid));
		if (c->mime.edited && c->mime.keep_body) {
			/* smfi_replacebody() may be called repeatedly; one
			 * milter packet carries at most 64 KiB. */
			for (size_t off = 0; off < c->mime.out.len; off += 65535)
				smfi_replacebody(ctx, (unsigned char *)c->mime.out.data + off,
						 c->mime.out.len - off > 65535
						     ? 65535
						     : (int)(c->mime.out.len - off));
			if (c->mime.out.len == 0)
				smfi_replacebody(ctx, (unsigned char *)"", 0);
		} else if (c->mime.edited)
			msg_qid(buf_str(&qid), "warning: the MTA does not let milters replace the "
					       "body: body edits not done");
		rules_eom_envelope(c, buf_str(&qid));
	}
	rules_msg_reset(c);
	buf_free(&qid);
	return rc;
}

static sfsistat rules_abort(SMFICTX *ctx)
{
	struct rules_conn *c = smfi_getpriv(ctx);

	if (c)
		rules_msg_reset(c);
	return SMFIS_CONTINUE;
}

static sfsistat rules_close(SMFICTX *ctx)
{
	struct rules_conn *c = smfi_getpriv(ctx);

	if (c == NULL)
		return SMFIS_CONTINUE;
	rules_msg_reset(c);
	rules_mime_free(&c->mime);
	free(c->rcpt);
	free(c->hnames);
	free(c->client_addr);
	free(c->client_name);
	free(c->helo);
	milter_conf_release(c->conf_ref);
	free(c);
	smfi_setpriv(ctx, NULL);
	return SMFIS_CONTINUE;
}

static struct smfiDesc rules_desc = {
    "tern-rules-milter",
    SMFI_VERSION,
    SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY | SMFIF_ADDRCPT | SMFIF_ADDRCPT_PAR |
	SMFIF_DELRCPT | SMFIF_QUARANTINE | SMFIF_SETSYMLIST,
    rules_connect,
    rules_helo,
    rules_envfrom,
    rules_envrcpt,
    rules_header,
    rules_eoh,
    rules_body,
    rules_eom,
    rules_abort,
    rules_close,
    NULL,
    NULL,
    rules_negotiate,
};

static const struct milter_prog rules_prog = {
    "rules",	     "inet:8894@127.0.0.1", rules_params, &rules_desc,
    rules_conf_load, rules_conf_free,	    NULL,
};

int main(int argc, char **argv)
{
	return milter_main(argc, argv, &rules_prog);
}
