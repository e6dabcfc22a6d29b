/* check_ratelimit.c - the "ratelimit" check: messages, recipients or
 * bytes per time window for any key.
 *
 * ratelimit_rules = KEY:METRIC:LIMIT/WINDOW ..., e.g.
 *   sasl_username:messages:100/1h  client_net:recipients:1000/1d
 *   sender:bytes:50m/1d  recipient_domain:recipients:500/1h
 * KEY: sender, sender_domain, sasl_username, client_address, client_net
 * (greylist_ipv4_prefix/greylist_ipv6_prefix), recipient_domain. A rule
 * whose key is empty in a request (no SASL login) does not apply.
 * A message counts once, at ratelimit_count_state (END-OF-MESSAGE, where
 * size is the real size, or DATA), with recipient_count recipients, so
 * the per-RCPT over-counting admins report with policyd-rate-limit does
 * not happen. recipient_domain rules are counted at RCPT (one recipient
 * per request; bytes = the MAIL FROM SIZE). At RCPT a key already at its
 * limit is refused early. Counting is an atomic check-and-add in the
 * state store (pd_state_take): a message that would go over the limit is
 * refused with ratelimit_action and not counted.
 * Windows are fixed (epoch / WINDOW): a burst may reach twice the limit
 * across a window boundary.
 */
#include "policyd.h"
#include "state.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum pd_rl_key {
	PD_RL_SENDER,
	PD_RL_SENDER_DOMAIN,
	PD_RL_SASL,
	PD_RL_CLIENT,
	PD_RL_CLIENT_NET,
	PD_RL_RCPT_DOMAIN
};
enum pd_rl_metric { PD_RL_MESSAGES, PD_RL_RECIPIENTS, PD_RL_BYTES };

static const char *pd_rl_keys[] = {"sender",	     "sender_domain", "sasl_username",
				   "client_address", "client_net",    "recipient_domain"};
static const char *pd_rl_metrics[] = {"messages", "recipients", "bytes"};

struct pd_rl_rule {
	char *text;
	enum pd_rl_key key;
	enum pd_rl_metric metric;
	long long limit, window;
};

struct pd_ratelimit {
	struct pd_state *state;
	struct pd_rl_rule *rules;
	size_t n;
	char *action;
	char *count_state;
	int v4len, v6len;
};

static int pd_rl_find(const char **names, size_t n, const char *s, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(names[i]) == len && strncmp(names[i], s, len) == 0)
			return (int)i;
	return -1;
}

static int pd_rl_parse(const char *text, struct pd_rl_rule *r, struct buf *err)
{
	const char *c1 = strchr(text, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
	const char *slash = c2 ? strchr(c2 + 1, '/') : NULL;
	char *lim, *win;
	long long ms;
	int k, m, rc = 0;

	if (slash == NULL)
		goto bad;
	k = pd_rl_find(pd_rl_keys, 6, text, (size_t)(c1 - text));
	m = pd_rl_find(pd_rl_metrics, 3, c1 + 1, (size_t)(c2 - c1 - 1));
	if (k < 0 || m < 0)
		goto bad;
	lim = xstrndup(c2 + 1, (size_t)(slash - c2 - 1));
	win = xstrdup(slash + 1);
	if (cfg_parse_size(lim, &r->limit) < 0 || r->limit < 0 ||
	    cfg_parse_time_ms(win, "s", &ms) < 0 || ms < 1000)
		rc = -1;
	free(lim);
	free(win);
	if (rc < 0)
		goto bad;
	r->key = (enum pd_rl_key)k;
	r->metric = (enum pd_rl_metric)m;
	r->window = ms / 1000;
	r->text = xstrdup(text);
	return 0;
bad:
	buf_printf(err,
		   "parameter ratelimit_rules: bad rule \"%s\" (KEY:METRIC:LIMIT/WINDOW, "
		   "KEY sender, sender_domain, sasl_username, client_address, client_net "
		   "or recipient_domain; METRIC messages, recipients or bytes; WINDOW >= 1s)",
		   text);
	return -1;
}

static void pd_ratelimit_free(struct pd_check *ck)
{
	struct pd_ratelimit *rl = ck->priv;

	if (rl == NULL)
		return;
	for (size_t i = 0; i < rl->n; i++)
		free(rl->rules[i].text);
	free(rl->rules);
	free(rl->action);
	free(rl->count_state);
	free(rl);
}

static int pd_ratelimit_init(struct pd_check *ck, struct pd_conf *pc, const struct cfg *cfg,
			     struct buf *err)
{
	struct pd_ratelimit *rl = xcalloc(1, sizeof(*rl));
	struct cfg_list l;
	long long v4 = 24, v6 = 64;

	ck->priv = rl;
	if (pd_cfg_str(cfg, "ratelimit_action", &rl->action, err) < 0 ||
	    pd_cfg_str(cfg, "ratelimit_count_state", &rl->count_state, err) < 0 ||
	    pd_cfg_ll(cfg, "greylist_ipv4_prefix", &v4, err) < 0 ||
	    pd_cfg_ll(cfg, "greylist_ipv6_prefix", &v6, err) < 0)
		return -1;
	rl->v4len = (int)v4;
	rl->v6len = (int)v6;
	if (strcasecmp(rl->count_state, "END-OF-MESSAGE") != 0 &&
	    strcasecmp(rl->count_state, "DATA") != 0) {
		buf_printf(err,
			   "parameter ratelimit_count_state: \"%s\" is neither "
			   "END-OF-MESSAGE nor DATA",
			   rl->count_state);
		return -1;
	}
	if (pd_action_classify(rl->action) != PD_ACT_DEFINITIVE) {
		buf_puts(err, "parameter ratelimit_action: must be a definitive action");
		return -1;
	}
	if (cfg_get_list(cfg, NULL, "ratelimit_rules", &l, err) < 0)
		return -1;
	rl->rules = xcalloc(l.count + 1, sizeof(*rl->rules));
	for (size_t i = 0; i < l.count; i++) {
		if (pd_rl_parse(l.items[i], &rl->rules[rl->n], err) < 0) {
			cfg_list_free(&l);
			return -1;
		}
		rl->n++;
	}
	cfg_list_free(&l);
	if ((rl->state = pd_conf_state(pc, err)) == NULL)
		return -1;
	ck->blocking = pd_state_blocking(rl->state); /* Redis: on a worker */
	return 0;
}

static const char *pd_rl_domain(const char *addr)
{
	const char *at = strrchr(addr, '@');
	return at ? at + 1 : "";
}

/* The key value of rule r in this request ("" when the rule does not apply). */
static void pd_rl_keyval(const struct pd_ratelimit *rl, const struct pd_rl_rule *r,
			 const struct pd_req *rq, struct buf *out)
{
	buf_reset(out);
	switch (r->key) {
	case PD_RL_SENDER:
		buf_puts(out, rq->sender);
		break;
	case PD_RL_SENDER_DOMAIN:
		buf_puts(out, pd_rl_domain(rq->sender));
		break;
	case PD_RL_SASL:
		buf_puts(out, rq->sasl_username);
		break;
	case PD_RL_CLIENT:
		buf_puts(out, rq->client_address);
		break;
	case PD_RL_CLIENT_NET:
		if (pd_client_net(rq->client_address, rl->v4len, rl->v6len, out) < 0)
			buf_reset(out);
		break;
	case PD_RL_RCPT_DOMAIN:
		buf_puts(out, pd_rl_domain(rq->recipient));
		break;
	}
	buf_lower(out);
}

static long long pd_rl_amount(const struct pd_rl_rule *r, const struct pd_req *rq, int at_rcpt)
{
	switch (r->metric) {
	case PD_RL_MESSAGES:
		return 1;
	case PD_RL_RECIPIENTS:
		return at_rcpt ? 1 : rq->recipient_count > 0 ? rq->recipient_count : 1;
	default:
		return rq->size;
	}
}

static void pd_ratelimit_run(struct pd_check *ck, struct pd_req *rq, struct pd_verdict *v)
{
	struct pd_ratelimit *rl = ck->priv;
	struct buf key = BUF_INIT, val = BUF_INIT, err = BUF_INIT;
	long long now = (long long)rq->now;
	int rcpt = strcasecmp(rq->state, "RCPT") == 0;
	int count = strcasecmp(rq->state, rl->count_state) == 0;

	if (!rcpt && !count)
		return;
	buf_init(&key);
	buf_init(&val);
	buf_init(&err);
	for (size_t i = 0; i < rl->n && v->action.len == 0; i++) {
		const struct pd_rl_rule *r = &rl->rules[i];
		int per_rcpt = r->key == PD_RL_RCPT_DOMAIN;
		long long idx = now / r->window, total = 0;
		int rc;

		pd_rl_keyval(rl, r, rq, &val);
		if (val.len == 0)
			continue;
		buf_reset(&key);
		buf_printf(&key, "rate:%s:%s:%lld", r->text, buf_str(&val), idx);
		if (per_rcpt ? rcpt : (count && !pd_check_done(rq, ck))) {
			rc = pd_state_take(rl->state, buf_str(&key), pd_rl_amount(r, rq, per_rcpt),
					   r->limit, now, (idx + 1) * r->window, &total, &err);
		} else if (rcpt) {
			/* early refusal: the key is already at its limit */
			struct pd_state_rec rec;
			rc = pd_state_get(rl->state, buf_str(&key), now, &rec, &err);
			if (rc == 1)
				rc = rec.a < r->limit ? 1 : 0;
			else if (rc == 0)
				rc = r->limit > 0 ? 1 : 0;
			total = rc == 1 ? 0 : r->limit;
		} else
			continue;
		if (rc < 0) {
			msg_warn("ratelimit: state %s: %s; using state_error_action",
				 ck->pc->state->spec, buf_str(&err));
			buf_set(&v->action, ck->pc->state_error_action);
			buf_set(&v->note, "ratelimit=state-error");
			if (pd_action_classify(buf_str(&v->action)) == PD_ACT_DUNNO)
				buf_reset(&v->action);
			break;
		}
		if (rc == 0) {
			buf_set(&v->action, rl->action);
			buf_printf(&v->note, "ratelimit=over:%s:%s(%lld/%lld)", r->text,
				   buf_str(&val), total, r->limit);
			msg_info("rate limit %s exceeded for %s (%lld of %lld)", r->text,
				 buf_str(&val), total, r->limit);
		}
	}
	if (count && !v->action.len)
		pd_check_set_done(rq, ck);
	if (v->note.len == 0 && rl->n > 0)
		buf_set(&v->note, count ? "ratelimit=counted" : "ratelimit=ok");
	buf_free(&key);
	buf_free(&val);
	buf_free(&err);
}

const struct pd_check_ops pd_check_ratelimit_ops = {
    "ratelimit", 0, pd_ratelimit_init, pd_ratelimit_run, pd_ratelimit_free, NULL,
};
