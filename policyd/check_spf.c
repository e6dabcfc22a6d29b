/* check_spf.c - the "spf" check: RFC 7208 for the HELO and MAIL FROM
 * identities (shared/spf.c, libspf2 through libtern's resolver), with
 * pypolicyd-spf's defaults (milter-policy-ecosystem.md §4.2).
 *
 * Per result an action: spf_<result>_action = reject ("550 5.7.23
 * Message rejected due to: SPF fail - not authorized. Please see ..."),
 * defer ("DEFER_IF_PERMIT 4.7.24 ..."), prepend (the header only), dunno,
 * or any literal access(5) action. Defaults as pypolicyd-spf: fail
 * rejects, every other result only adds the header; a HELO fail rejects
 * too (HELO_reject = Fail). The header (Received-SPF with receiver= and
 * identity=, or Authentication-Results) is added once per message; the
 * verdict is kept for the message, so later recipients cost no DNS.
 * Skipped (note spf=skipped): spf_skip_addresses (loopback by default),
 * authenticated clients, and the client/HELO/sender-domain whitelists.
 * Runs on worker threads: DNS blocks. Results are kept in shared/spf.c's
 * result cache (spf_cache_size, spf_cache_max_ttl); when every identity
 * a message needs is there, the check answers on the event loop
 * (pd_spf_try_run, note "spf=pass(hit)") and the request never waits for
 * a worker.
 */
#include "policyd.h"

#include "log.h"
#include "matchlist.h"
#include "spf.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PD_SPF_NRESULTS 7

enum pd_spf_header { PD_SPF_HDR_RECEIVED, PD_SPF_HDR_AR, PD_SPF_HDR_NONE };

struct pd_spf {
	struct spf_ctx *ctx;
	char *actions[PD_SPF_NRESULTS]; /* by enum spf_result */
	char *helo_fail_action;
	int helo_check, skip_auth, hide_receiver;
	enum pd_spf_header header;
	char *authserv_id, *receiver;
	struct matchlist *skip, *wl_clients, *wl_helo, *wl_domains;
};

static void pd_spf_free(struct pd_check *ck)
{
	struct pd_spf *s = ck->priv;

	if (s == NULL)
		return;
	spf_ctx_free(s->ctx);
	for (int i = 0; i < PD_SPF_NRESULTS; i++)
		free(s->actions[i]);
	free(s->helo_fail_action);
	free(s->authserv_id);
	free(s->receiver);
	matchlist_free(s->skip);
	matchlist_free(s->wl_clients);
	matchlist_free(s->wl_helo);
	matchlist_free(s->wl_domains);
	free(s);
}

static int pd_spf_action_ok(const char *param, const char *v, struct buf *err)
{
	if (strcasecmp(v, "reject") == 0 || strcasecmp(v, "defer") == 0 ||
	    strcasecmp(v, "prepend") == 0 || strcasecmp(v, "dunno") == 0 ||
	    pd_action_classify(v) == PD_ACT_DEFINITIVE)
		return 0;
	buf_printf(err,
		   "parameter %s: \"%s\" is not reject, defer, prepend, dunno or a "
		   "definitive access(5) action",
		   param, v);
	return -1;
}

static struct matchlist *pd_spf_list(const struct cfg *cfg, const char *param, int flags,
				     struct buf *err, int *rc)
{
	struct buf v = BUF_INIT;
	struct matchlist *l = NULL;

	buf_init(&v);
	if (*rc == 0 && cfg_get_str(cfg, NULL, param, &v, err) == 0 && v.len &&
	    (l = matchlist_new(param, buf_str(&v), flags, err)) == NULL)
		*rc = -1;
	buf_free(&v);
	return l;
}

static int pd_spf_init(struct pd_check *ck, struct pd_conf *pc, const struct cfg *cfg,
		       struct buf *err)
{
	static const char *params[PD_SPF_NRESULTS] = {
	    "spf_none_action",	   "spf_neutral_action",   "spf_pass_action",	  "spf_fail_action",
	    "spf_softfail_action", "spf_temperror_action", "spf_permerror_action"};
	struct pd_spf *s = xcalloc(1, sizeof(*s));
	char *dns = NULL, *htype = NULL;
	long long timeout = 20, cache_size = 0, cache_ttl = 0;
	int rc = 0;

	ck->priv = s;
	for (int i = 0; i < PD_SPF_NRESULTS && rc == 0; i++)
		if (pd_cfg_str(cfg, params[i], &s->actions[i], err) < 0 ||
		    pd_spf_action_ok(params[i], s->actions[i], err) < 0)
			rc = -1;
	if (rc < 0 || pd_cfg_str(cfg, "spf_helo_fail_action", &s->helo_fail_action, err) < 0 ||
	    pd_spf_action_ok("spf_helo_fail_action", s->helo_fail_action, err) < 0 ||
	    pd_cfg_bool(cfg, "spf_helo_check", &s->helo_check, err) < 0 ||
	    pd_cfg_bool(cfg, "spf_skip_authenticated", &s->skip_auth, err) < 0 ||
	    pd_cfg_bool(cfg, "spf_hide_receiver", &s->hide_receiver, err) < 0 ||
	    pd_cfg_str(cfg, "spf_authserv_id", &s->authserv_id, err) < 0 ||
	    pd_cfg_str(cfg, "spf_header_type", &htype, err) < 0 ||
	    pd_cfg_str(cfg, "dns_servers", &dns, err) < 0 ||
	    pd_cfg_secs(cfg, "dns_timeout", &timeout, err) < 0 ||
	    pd_cfg_ll(cfg, "spf_cache_size", &cache_size, err) < 0 ||
	    pd_cfg_secs(cfg, "spf_cache_max_ttl", &cache_ttl, err) < 0)
		rc = -1;
	if (rc == 0) {
		if (strcasecmp(htype, "received-spf") == 0)
			s->header = PD_SPF_HDR_RECEIVED;
		else if (strcasecmp(htype, "authentication-results") == 0)
			s->header = PD_SPF_HDR_AR;
		else if (strcasecmp(htype, "none") == 0)
			s->header = PD_SPF_HDR_NONE;
		else {
			buf_printf(err,
				   "parameter spf_header_type: \"%s\" is not received-spf, "
				   "authentication-results or none",
				   htype);
			rc = -1;
		}
	}
	s->receiver = xstrdup(pc->myhostname);
	s->skip = pd_spf_list(cfg, "spf_skip_addresses", MATCHLIST_ADDR, err, &rc);
	s->wl_clients = pd_spf_list(cfg, "spf_whitelist_clients", MATCHLIST_ADDR, err, &rc);
	s->wl_helo = pd_spf_list(cfg, "spf_whitelist_helo", MATCHLIST_PARENT, err, &rc);
	s->wl_domains = pd_spf_list(cfg, "spf_whitelist_domains", MATCHLIST_PARENT, err, &rc);
	if (rc == 0 && (s->ctx = spf_ctx_new(dns, (int)timeout, pc->myhostname, err)) == NULL)
		rc = -1;
	if (rc == 0)
		spf_ctx_set_cache(s->ctx, (size_t)cache_size, (long)cache_ttl);
	free(dns);
	free(htype);
	return rc;
}

/* The header for the message (once), as a PREPEND action. */
static void pd_spf_header(const struct pd_spf *s, const struct pd_req *rq,
			  const struct spf_outcome *o, struct buf *out)
{
	buf_reset(out);
	if (s->header == PD_SPF_HDR_RECEIVED) {
		buf_puts(out, "PREPEND Received-SPF: ");
		spf_received_spf(o, rq->client_address, rq->helo, rq->sender,
				 s->hide_receiver ? NULL : s->receiver, out);
	} else if (s->header == PD_SPF_HDR_AR) {
		buf_puts(out, "PREPEND Authentication-Results: ");
		spf_auth_results(o, s->authserv_id, rq->helo, rq->sender, out);
	}
}

/* Map a result to its action: 1 definitive (out set), 0 header only,
 * -1 nothing at all. */
static int pd_spf_map(const struct pd_spf *s, const char *action, const struct pd_req *rq,
		      const struct spf_outcome *o, struct buf *out)
{
	const char *rcv = s->hide_receiver ? NULL : s->receiver;

	buf_reset(out);
	if (strcasecmp(action, "prepend") == 0)
		return 0;
	if (strcasecmp(action, "dunno") == 0)
		return -1;
	if (strcasecmp(action, "reject") == 0 || strcasecmp(action, "defer") == 0)
		spf_reply_text(o, strcasecmp(action, "defer") == 0, rq->client_address, rq->helo,
			       rq->sender, rcv, out);
	else
		buf_set(out, action);
	return 1;
}

static int pd_spf_skip(const struct pd_spf *s, const struct pd_req *rq)
{
	struct buf err = BUF_INIT;
	const char *at = strrchr(rq->sender, '@');
	int skip = 0;

	buf_init(&err);
	if (s->skip_auth && *rq->sasl_username)
		skip = 1;
	else if (matchlist_addr(s->skip, rq->client_address, &err) == 1 ||
		 matchlist_addr(s->wl_clients, rq->client_address, &err) == 1 ||
		 (*rq->helo && matchlist_domain(s->wl_helo, rq->helo, &err) == 1) ||
		 (at && matchlist_domain(s->wl_domains, at + 1, &err) == 1))
		skip = 1;
	buf_free(&err);
	return skip;
}

/* One identity's outcome: 0 done, -1 an error (err set), -2 it needs
 * DNS and may_block is off. */
static int pd_spf_get(const struct pd_spf *s, enum spf_identity id, const struct pd_req *rq,
		      struct spf_outcome *o, struct buf *err, int may_block)
{
	const char *sender = id == SPF_ID_HELO ? "" : rq->sender;

	if (!may_block)
		return spf_check_cached(s->ctx, id, rq->client_address, rq->helo, sender, o) ? 0
											     : -2;
	return spf_check(s->ctx, id, rq->client_address, rq->helo, sender, o, err);
}

/* The check; -1 (nothing changed) when it would have to wait for DNS
 * and may_block is off. */
static int pd_spf_eval(struct pd_check *ck, struct pd_req *rq, struct pd_verdict *v, int may_block)
{
	struct pd_spf *s = ck->priv;
	struct buf *action = &rq->inst->cache[ck->index], *note = &rq->inst->cache_note[ck->index];
	struct spf_outcome helo, mf;
	struct buf err = BUF_INIT, hdr = BUF_INIT;
	const struct spf_outcome *used;
	int rc, got = -1, blocked = 0;

	if (strcasecmp(rq->state, "RCPT") != 0 && strcasecmp(rq->state, "MAIL") != 0 &&
	    strcasecmp(rq->state, "DATA") != 0)
		return 0;
	if (pd_check_done(rq, ck)) { /* this message was checked */
		buf_set(&v->action, buf_str(action));
		buf_printf(&v->note, "%s(cached)", buf_str(note));
		return 0;
	}
	if (pd_spf_skip(s, rq)) {
		buf_set(&v->note, "spf=skipped");
		return 0;
	}
	buf_init(&err);
	buf_init(&hdr);
	spf_outcome_init(&helo);
	spf_outcome_init(&mf);
	used = &mf;
	if (s->helo_check && *rq->helo) {
		got = pd_spf_get(s, SPF_ID_HELO, rq, &helo, &err, may_block);
		if (got == -2) {
			blocked = 1;
			goto done;
		}
	}
	if (got == 0 && helo.result == SPF_R_FAIL) {
		used = &helo;
		rc = pd_spf_map(s, s->helo_fail_action, rq, &helo, action);
	} else if (*rq->sender == 0 && helo.domain.len) {
		used = &helo; /* the null sender's identity is the HELO one */
		rc = pd_spf_map(s, s->actions[helo.result], rq, &helo, action);
	} else if ((got = pd_spf_get(s, SPF_ID_MAILFROM, rq, &mf, &err, may_block)) == 0) {
		rc = pd_spf_map(s, s->actions[mf.result], rq, &mf, action);
	} else if (got == -2) {
		blocked = 1;
		goto done;
	} else {
		msg_warn("spf: %s", buf_str(&err));
		buf_set(&v->note, "spf=error");
		goto done;
	}
	buf_reset(note);
	buf_printf(note, "spf=%s%s", used->identity == SPF_ID_HELO ? "helo:" : "",
		   spf_result_name(used->result));
	pd_check_set_done(rq, ck);
	buf_set(&v->note, buf_str(note));
	if (!may_block)
		buf_puts(&v->note, "(hit)");
	if (rc == 1) {
		buf_set(&v->action, buf_str(action));
	} else if (rc == 0 && s->header != PD_SPF_HDR_NONE) {
		pd_spf_header(s, rq, used, &hdr);
		buf_set(&v->action, buf_str(&hdr));
	}
done:
	spf_outcome_free(&helo);
	spf_outcome_free(&mf);
	buf_free(&err);
	buf_free(&hdr);
	return blocked ? -1 : 0;
}

static void pd_spf_run(struct pd_check *ck, struct pd_req *rq, struct pd_verdict *v)
{
	pd_spf_eval(ck, rq, v, 1);
}

static int pd_spf_try_run(struct pd_check *ck, struct pd_req *rq, struct pd_verdict *v)
{
	return pd_spf_eval(ck, rq, v, 0);
}

const struct pd_check_ops pd_check_spf_ops = {
    "spf", 1, pd_spf_init, pd_spf_run, pd_spf_free, pd_spf_try_run,
};
