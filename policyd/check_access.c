/* check_access.c - the "access" check: Postfix's check_{client,helo,
 * sender,recipient,sasl}_access as a policy service.
 *
 * Tables are libtern tables looked up with Postfix's key order
 * (table_keys.h); results are access(5) actions. A result naming one of
 * smtpd_restriction_classes runs that class, whose items are
 * check_*_access TABLE, permit, reject, defer, defer_if_permit,
 * defer_if_reject and dunno - enough for seed 002's
 * "restricted_recipient = check_sender_access hash:privileged_sender,
 * reject". Order: client, HELO, sender, recipient, SASL user; the first
 * definitive result wins; PREPEND/BCC-style results are queued for the
 * message and the lookups go on, as check_table_result() does.
 * Pitfall: a failed lookup (TABLE_ERROR) is never "not found": it gives
 * access_lookup_failure_action (451 4.3.0, as Postfix).
 */
#include "policyd.h"

#include "log.h"
#include "table.h"
#include "table_keys.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PD_ACCESS_DEPTH 100 /* Postfix's recursion cap */

enum pd_access_what { PD_A_CLIENT, PD_A_HELO, PD_A_SENDER, PD_A_RECIPIENT, PD_A_SASL, PD_A_FIXED };

static const char *pd_access_names[] = {"client", "helo", "sender", "recipient", "sasl", "class"};

struct pd_access_rule {
	enum pd_access_what what;
	struct table *t;
	char *action; /* PD_A_FIXED */
};

struct pd_access_class {
	char *name;
	struct pd_access_rule *rules;
	size_t n;
};

struct pd_access {
	struct pd_access_class top;
	struct pd_access_class *classes;
	size_t nclasses;
	char *fail_action;
	char *delims;
};

static void pd_access_class_free(struct pd_access_class *c)
{
	for (size_t i = 0; i < c->n; i++) {
		if (c->rules[i].t)
			table_close(c->rules[i].t);
		free(c->rules[i].action);
	}
	free(c->rules);
	free(c->name);
}

static void pd_access_rule_add(struct pd_access_class *c, enum pd_access_what w, struct table *t,
			       const char *action)
{
	c->rules = xrealloc(c->rules, (c->n + 1) * sizeof(*c->rules));
	c->rules[c->n].what = w;
	c->rules[c->n].t = t;
	c->rules[c->n].action = action ? xstrdup(action) : NULL;
	c->n++;
}

static int pd_access_param(struct pd_access_class *c, const struct cfg *cfg, const char *param,
			   enum pd_access_what w, struct buf *err)
{
	struct table **t;
	size_t n;

	if (pd_cfg_tables(cfg, param, &t, &n, err) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		pd_access_rule_add(c, w, t[i], NULL);
	free(t);
	return 0;
}

/* One restriction class: "check_sender_access TABLE, ..., reject". */
static int pd_access_class_parse(struct pd_access_class *c, const struct cfg *cfg, struct buf *err)
{
	static const struct {
		const char *word;
		enum pd_access_what what;
	} checks[] = {{"check_client_access", PD_A_CLIENT},
		      {"check_helo_access", PD_A_HELO},
		      {"check_sender_access", PD_A_SENDER},
		      {"check_recipient_access", PD_A_RECIPIENT},
		      {"check_sasl_access", PD_A_SASL}};
	static const struct {
		const char *word, *action;
	} fixed[] = {{"permit", "OK"},
		     {"reject", "REJECT"},
		     {"defer", "DEFER"},
		     {"defer_if_permit", "DEFER_IF_PERMIT"},
		     {"defer_if_reject", "DEFER_IF_REJECT"},
		     {"dunno", "DUNNO"}};
	struct cfg_list l;
	int rc = 0;

	if (cfg_get_list(cfg, NULL, c->name, &l, err) < 0)
		return -1;
	for (size_t i = 0; i < l.count && rc == 0; i++) {
		const char *w = l.items[i];
		size_t k;
		int done = 0;

		for (k = 0; k < sizeof(checks) / sizeof(checks[0]) && !done; k++) {
			if (strcmp(w, checks[k].word) != 0)
				continue;
			struct table *t;
			if (i + 1 >= l.count) {
				buf_printf(err, "restriction class %s: %s needs a table", c->name,
					   w);
				rc = -1;
			} else if ((t = table_open(l.items[++i], err)) == NULL) {
				buf_printf(err, " (restriction class %s)", c->name);
				rc = -1;
			} else
				pd_access_rule_add(c, checks[k].what, t, NULL);
			done = 1;
		}
		for (k = 0; k < sizeof(fixed) / sizeof(fixed[0]) && !done; k++) {
			if (strcmp(w, fixed[k].word) == 0) {
				pd_access_rule_add(c, PD_A_FIXED, NULL, fixed[k].action);
				done = 1;
			}
		}
		if (!done && rc == 0) {
			buf_printf(err,
				   "restriction class %s: \"%s\" is not supported by "
				   "tern-policyd (use check_*_access, permit, reject, defer, "
				   "defer_if_permit, defer_if_reject, dunno)",
				   c->name, w);
			rc = -1;
		}
	}
	cfg_list_free(&l);
	return rc;
}

static void pd_access_free(struct pd_check *ck)
{
	struct pd_access *a = ck->priv;

	if (a == NULL)
		return;
	pd_access_class_free(&a->top);
	for (size_t i = 0; i < a->nclasses; i++)
		pd_access_class_free(&a->classes[i]);
	free(a->classes);
	free(a->fail_action);
	free(a->delims);
	free(a);
}

static int pd_access_init(struct pd_check *ck, struct pd_conf *pc, const struct cfg *cfg,
			  struct buf *err)
{
	struct pd_access *a = xcalloc(1, sizeof(*a));
	struct cfg_list names;

	ck->priv = a;
	a->delims = xstrdup(pc->delims);
	if (pd_cfg_str(cfg, "access_lookup_failure_action", &a->fail_action, err) < 0 ||
	    pd_access_param(&a->top, cfg, "client_access", PD_A_CLIENT, err) < 0 ||
	    pd_access_param(&a->top, cfg, "helo_access", PD_A_HELO, err) < 0 ||
	    pd_access_param(&a->top, cfg, "sender_access", PD_A_SENDER, err) < 0 ||
	    pd_access_param(&a->top, cfg, "recipient_access", PD_A_RECIPIENT, err) < 0 ||
	    pd_access_param(&a->top, cfg, "sasl_access", PD_A_SASL, err) < 0 ||
	    cfg_get_list(cfg, NULL, "smtpd_restriction_classes", &names, err) < 0)
		return -1;
	a->classes = xcalloc(names.count + 1, sizeof(*a->classes));
	for (size_t i = 0; i < names.count; i++) {
		a->classes[a->nclasses].name = xstrdup(names.items[i]);
		if (cfg_get_raw(cfg, NULL, names.items[i]) == NULL) {
			buf_printf(err,
				   "restriction class %s is listed in "
				   "smtpd_restriction_classes but not defined",
				   names.items[i]);
			a->nclasses++;
			cfg_list_free(&names);
			return -1;
		}
		if (pd_access_class_parse(&a->classes[a->nclasses++], cfg, err) < 0) {
			cfg_list_free(&names);
			return -1;
		}
	}
	cfg_list_free(&names);
	return 0;
}

static const struct pd_access_class *pd_access_class_find(const struct pd_access *a,
							  const char *value)
{
	size_t n = strcspn(value, " \t");

	for (size_t i = 0; i < a->nclasses; i++)
		if (strlen(a->classes[i].name) == n && strncmp(a->classes[i].name, value, n) == 0)
			return &a->classes[i];
	return NULL;
}

static void pd_access_keys(const struct pd_access *a, enum pd_access_what w,
			   const struct pd_req *rq, struct table_keys *k)
{
	table_keys_reset(k);
	switch (w) {
	case PD_A_CLIENT:
		table_keys_client(k, rq->client_name, rq->client_address, TABLE_KEYS_PARENT);
		break;
	case PD_A_HELO:
		table_keys_helo(k, rq->helo, TABLE_KEYS_PARENT);
		break;
	case PD_A_SENDER:
		table_keys_address(k, rq->sender, a->delims, TABLE_KEYS_PARENT);
		break;
	case PD_A_RECIPIENT:
		if (*rq->recipient)
			table_keys_address(k, rq->recipient, a->delims, TABLE_KEYS_PARENT);
		break;
	case PD_A_SASL:
		if (*rq->sasl_username)
			table_keys_add(k, rq->sasl_username, strlen(rq->sasl_username), 1);
		break;
	case PD_A_FIXED:
		break;
	}
}

/* 1 definitive (v->action set), 0 go on. */
static int pd_access_eval(const struct pd_access *a, const struct pd_access_class *c,
			  struct pd_req *rq, struct pd_verdict *v, int depth)
{
	struct table_keys k = TABLE_KEYS_INIT;
	struct buf value = BUF_INIT, err = BUF_INIT;
	int decided = 0;

	table_keys_init(&k);
	buf_init(&value);
	buf_init(&err);
	for (size_t i = 0; i < c->n && !decided; i++) {
		const struct pd_access_rule *r = &c->rules[i];
		const struct pd_access_class *sub;
		const char *res;
		int rc;

		if (r->what == PD_A_FIXED) {
			res = r->action;
		} else {
			pd_access_keys(a, r->what, rq, &k);
			rc = table_lookup_keys(r->t, &k, &value, NULL, &err);
			if (rc == TABLE_NOTFOUND)
				continue;
			if (rc == TABLE_ERROR) {
				msg_warn("%s lookup error for %s: %s", r->t->spec,
					 pd_access_names[r->what], buf_str(&err));
				buf_set(&v->action, a->fail_action);
				buf_printf(&v->note, "access=%s:lookup-error",
					   pd_access_names[r->what]);
				decided = 1;
				break;
			}
			res = buf_str(&value);
		}
		if ((sub = pd_access_class_find(a, res)) != NULL) {
			if (depth >= PD_ACCESS_DEPTH) {
				msg_warn("restriction class %s: nesting deeper than %d", sub->name,
					 PD_ACCESS_DEPTH);
				buf_set(&v->action, a->fail_action);
				decided = 1;
			} else
				decided = pd_access_eval(a, sub, rq, v, depth + 1);
			continue;
		}
		switch (pd_action_classify(res)) {
		case PD_ACT_DUNNO:
			break;
		case PD_ACT_INFO:
			pd_instance_push(rq->inst, res);
			buf_printf(&v->note, "%saccess=%s:%.20s", v->note.len ? "," : "",
				   pd_access_names[r->what], res);
			break;
		case PD_ACT_DEFINITIVE:
			buf_set(&v->action, res);
			if (v->note.len)
				buf_putc(&v->note, ',');
			buf_printf(&v->note, "access=%s", pd_access_names[r->what]);
			decided = 1;
			break;
		}
	}
	table_keys_free(&k);
	buf_free(&value);
	buf_free(&err);
	return decided;
}

static void pd_access_run(struct pd_check *ck, struct pd_req *rq, struct pd_verdict *v)
{
	const struct pd_access *a = ck->priv;

	if (!pd_access_eval(a, &a->top, rq, v, 0) && v->note.len == 0)
		buf_set(&v->note, "access=dunno");
}

const struct pd_check_ops pd_check_access_ops = {
    "access", 0, pd_access_init, pd_access_run, pd_access_free, NULL,
};
