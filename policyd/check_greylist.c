/* check_greylist.c - the "greylist" check, with postgrey's semantics
 * (milter-policy-ecosystem.md §5.2).
 *
 * At RCPT, the triplet (client network /24 or /64, normalised sender,
 * recipient) is looked up in the state store. Unknown: remember it and
 * defer ("DEFER_IF_PERMIT 4.2.0 Greylisted, ..."). Known but younger than
 * greylist_delay: defer again. Older: pass, and the message gets
 * "X-Greylist: delayed N seconds by tern-policyd at HOST; DATE" once
 * (per instance). A retry after greylist_retry_window starts over;
 * triplets unseen for greylist_max_age expire. A client network whose
 * triplets passed on greylist_auto_whitelist_clients separate occasions
 * (at most one count per hour, as postgrey) is no longer greylisted.
 * Whitelist files use postgrey's syntax (whitelist_clients: host names
 * and parent domains, IP prefixes "192.0.2", CIDR, /regex/;
 * whitelist_recipients: domains, "user@", "user@domain", /regex/).
 * Sender normalisation: lower case, address extension removed, BATV
 * "prvs=TAG=user" reduced to "user", digit runs in the local part
 * replaced by "#" (VERP and per-message bounce addresses).
 */
#include "policyd.h"
#include "state.h"

#include "inet.h"
#include "log.h"
#include "maildate.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <errno.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PD_AWL_INTERVAL 3600 /* one auto-whitelist count per hour */

enum pd_wl_kind { PD_WL_NAME, PD_WL_PREFIX, PD_WL_CIDR, PD_WL_REGEX, PD_WL_LOCAL, PD_WL_ADDR };

struct pd_wl {
	enum pd_wl_kind kind;
	char *text;
	struct inet_addr net;
	int len;
	pcre2_code *re;
};

struct pd_wl_list {
	struct pd_wl *v;
	size_t n;
};

struct pd_greylist {
	struct pd_state *state;
	long long delay, retry_window, max_age, awl;
	int v4len, v6len, header;
	char *action, *text, *host;
	struct pd_wl_list clients, recipients;
};

/* ---- postgrey whitelist files ---- */

static void pd_wl_free(struct pd_wl_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].text);
		if (l->v[i].re)
			pcre2_code_free(l->v[i].re);
	}
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static int pd_wl_is_prefix(const char *s)
{
	int dots = 0;

	if (!isdigit((unsigned char)*s))
		return 0;
	for (; *s; s++) {
		if (*s == '.')
			dots++;
		else if (!isdigit((unsigned char)*s))
			return 0;
	}
	return dots <= 3;
}

static int pd_wl_line(struct pd_wl_list *l, const char *path, int lineno, char *s, int recipients,
		      struct buf *err)
{
	struct pd_wl w;
	size_t n = strlen(s);

	memset(&w, 0, sizeof(w));
	if (n >= 2 && s[0] == '/' && s[n - 1] == '/') {
		int ec;
		PCRE2_SIZE off;
		w.kind = PD_WL_REGEX;
		w.re = pcre2_compile((PCRE2_SPTR)s + 1, n - 2, PCRE2_CASELESS, &ec, &off, NULL);
		if (w.re == NULL) {
			buf_printf(err, "%s, line %d: bad regular expression %s", path, lineno, s);
			return -1;
		}
	} else if (!recipients && strchr(s, '/') != NULL) {
		struct buf why = BUF_INIT;
		buf_init(&why);
		w.kind = PD_WL_CIDR;
		if (inet_prefix_parse(s, &w.net, &w.len, &why) < 0) {
			buf_printf(err, "%s, line %d: %s", path, lineno, buf_str(&why));
			buf_free(&why);
			return -1;
		}
		buf_free(&why);
		inet_prefix_mask(&w.net, w.len);
	} else if (!recipients && (pd_wl_is_prefix(s) || strchr(s, ':') != NULL)) {
		w.kind = PD_WL_PREFIX;
	} else if (recipients && s[n - 1] == '@') {
		w.kind = PD_WL_LOCAL;
	} else if (recipients && strchr(s, '@') != NULL) {
		w.kind = PD_WL_ADDR;
	} else {
		w.kind = PD_WL_NAME;
	}
	for (char *p = s; *p && w.kind != PD_WL_REGEX; p++)
		*p = (char)tolower((unsigned char)*p);
	w.text = xstrdup(s);
	l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
	l->v[l->n++] = w;
	return 0;
}

static int pd_wl_load(struct pd_wl_list *l, const struct cfg *cfg, const char *param,
		      int recipients, struct buf *err)
{
	struct cfg_list files;
	int rc = 0;

	if (cfg_get_list(cfg, NULL, param, &files, err) < 0)
		return -1;
	for (size_t i = 0; i < files.count && rc == 0; i++) {
		FILE *fp = fopen(files.items[i], "r");
		char *line = NULL;
		size_t cap = 0;
		int lineno = 0;

		if (fp == NULL) {
			buf_printf(err, "parameter %s: open %s: %s", param, files.items[i],
				   strerror(errno));
			rc = -1;
			break;
		}
		while (rc == 0 && getline(&line, &cap, fp) > 0) {
			char *s = line, *e;
			lineno++;
			while (isspace((unsigned char)*s))
				s++;
			if ((e = strchr(s, '#')) != NULL && s[0] != '/')
				*e = 0;
			e = s + strlen(s);
			while (e > s && isspace((unsigned char)e[-1]))
				*--e = 0;
			if (*s)
				rc = pd_wl_line(l, files.items[i], lineno, s, recipients, err);
		}
		free(line);
		fclose(fp);
	}
	cfg_list_free(&files);
	return rc;
}

static int pd_wl_regex(const struct pd_wl *w, const char *s)
{
	pcre2_match_data *md = pcre2_match_data_create_from_pattern(w->re, NULL);
	int rc = pcre2_match(w->re, (PCRE2_SPTR)s, strlen(s), 0, 0, md, NULL);

	pcre2_match_data_free(md);
	return rc >= 0;
}

/* name equals domain or ends with ".domain" */
static int pd_wl_domain(const char *name, const char *domain)
{
	size_t n = strlen(name), d = strlen(domain);

	return strcasecmp(name, domain) == 0 ||
	       (n > d && name[n - d - 1] == '.' && strcasecmp(name + n - d, domain) == 0);
}

static int pd_wl_client(const struct pd_wl_list *l, const char *name, const char *addr)
{
	struct inet_addr a;
	int have_addr = inet_addr_parse(addr, &a) == 0;

	if (have_addr)
		inet_addr_unmap(&a);
	for (size_t i = 0; i < l->n; i++) {
		const struct pd_wl *w = &l->v[i];
		size_t n = strlen(w->text);
		switch (w->kind) {
		case PD_WL_REGEX:
			if (pd_wl_regex(w, name) || pd_wl_regex(w, addr))
				return 1;
			break;
		case PD_WL_CIDR:
			if (have_addr && inet_prefix_match(&w->net, w->len, &a))
				return 1;
			break;
		case PD_WL_PREFIX: /* "192.0.2" matches 192.0.2.x, not 192.0.20.x */
			if (strncasecmp(addr, w->text, n) == 0 &&
			    (addr[n] == 0 || addr[n] == '.' || addr[n] == ':'))
				return 1;
			break;
		default:
			if (strcmp(name, "unknown") != 0 && pd_wl_domain(name, w->text))
				return 1;
			break;
		}
	}
	return 0;
}

static int pd_wl_recipient(const struct pd_wl_list *l, const char *rcpt)
{
	const char *at = strrchr(rcpt, '@');
	const char *domain = at ? at + 1 : "";

	for (size_t i = 0; i < l->n; i++) {
		const struct pd_wl *w = &l->v[i];
		switch (w->kind) {
		case PD_WL_REGEX:
			if (pd_wl_regex(w, rcpt))
				return 1;
			break;
		case PD_WL_LOCAL:
			if (at && (size_t)(at - rcpt) + 1 == strlen(w->text) &&
			    strncasecmp(rcpt, w->text, strlen(w->text)) == 0)
				return 1;
			break;
		case PD_WL_ADDR:
			if (strcasecmp(rcpt, w->text) == 0)
				return 1;
			break;
		default:
			if (*domain && pd_wl_domain(domain, w->text))
				return 1;
			break;
		}
	}
	return 0;
}

/* ---- triplets ---- */

/* postgrey-like sender normalisation (see the header comment). */
static void pd_grey_sender(const char *sender, const char *delims, struct buf *out)
{
	const char *at = strrchr(sender, '@');
	size_t llen = at ? (size_t)(at - sender) : strlen(sender);
	char *local = xstrndup(sender, llen), *p = local, *cut;

	buf_reset(out);
	/* BATV: prvs=TAG=user (RFC draft-levine-smtp-batv) */
	if (strncasecmp(p, "prvs=", 5) == 0 && (cut = strchr(p + 5, '=')) != NULL)
		p = cut + 1;
	if (*delims && (cut = strpbrk(p, delims)) != NULL && cut != p)
		*cut = 0;
	for (; *p; p++) {
		if (isdigit((unsigned char)*p)) {
			buf_putc(out, '#');
			while (isdigit((unsigned char)p[1]))
				p++;
		} else
			buf_putc(out, tolower((unsigned char)*p));
	}
	if (at)
		buf_puts(out, at);
	buf_lower(out);
	free(local);
}

static void pd_greylist_free(struct pd_check *ck)
{
	struct pd_greylist *g = ck->priv;

	if (g == NULL)
		return;
	pd_wl_free(&g->clients);
	pd_wl_free(&g->recipients);
	free(g->action);
	free(g->text);
	free(g->host);
	free(g);
}

static int pd_greylist_init(struct pd_check *ck, struct pd_conf *pc, const struct cfg *cfg,
			    struct buf *err)
{
	struct pd_greylist *g = xcalloc(1, sizeof(*g));
	long long v4 = 24, v6 = 64;

	ck->priv = g;
	g->host = xstrdup(pc->myhostname);
	if (pd_cfg_secs(cfg, "greylist_delay", &g->delay, err) < 0 ||
	    pd_cfg_secs(cfg, "greylist_retry_window", &g->retry_window, err) < 0 ||
	    pd_cfg_secs(cfg, "greylist_max_age", &g->max_age, err) < 0 ||
	    pd_cfg_ll(cfg, "greylist_auto_whitelist_clients", &g->awl, err) < 0 ||
	    pd_cfg_ll(cfg, "greylist_ipv4_prefix", &v4, err) < 0 ||
	    pd_cfg_ll(cfg, "greylist_ipv6_prefix", &v6, err) < 0 ||
	    pd_cfg_bool(cfg, "greylist_header", &g->header, err) < 0 ||
	    pd_cfg_str(cfg, "greylist_action", &g->action, err) < 0 ||
	    pd_cfg_str(cfg, "greylist_text", &g->text, err) < 0 ||
	    pd_wl_load(&g->clients, cfg, "greylist_whitelist_clients", 0, err) < 0 ||
	    pd_wl_load(&g->recipients, cfg, "greylist_whitelist_recipients", 1, err) < 0 ||
	    (g->state = pd_conf_state(pc, err)) == NULL)
		return -1;
	ck->blocking = pd_state_blocking(g->state); /* Redis: on a worker */
	g->v4len = (int)v4;
	g->v6len = (int)v6;
	return 0;
}

/* "DEFER_IF_PERMIT 4.2.0 Greylisted, see .../%r.html" with %s and %r. */
static void pd_greylist_defer(const struct pd_greylist *g, const struct pd_req *rq, long long left,
			      struct buf *out)
{
	const char *at = strrchr(rq->recipient, '@');

	buf_printf(out, "%s 4.2.0 ", g->action);
	for (const char *p = g->text; *p; p++) {
		if (p[0] == '%' && p[1] == 's') {
			buf_printf(out, "%lld", left);
			p++;
		} else if (p[0] == '%' && p[1] == 'r') {
			buf_puts(out, at ? at + 1 : "");
			p++;
		} else
			buf_putc(out, *p);
	}
}

static void pd_greylist_state_error(const struct pd_check *ck, struct pd_verdict *v,
				    const struct buf *err)
{
	msg_warn("greylist: state %s: %s; using state_error_action", ck->pc->state->spec,
		 buf_str(err));
	buf_set(&v->action, ck->pc->state_error_action);
	buf_set(&v->note, "greylist=state-error");
}

/* postgrey's auto-whitelist record of a client network: a = deliveries
 * counted, b = when last counted. 1 read, 0 none (rec zeroed), -1 error. */
static int pd_greylist_awl_get(struct pd_greylist *g, const char *key, long long now,
			       struct pd_state_rec *r, struct buf *err)
{
	int rc;

	memset(r, 0, sizeof(*r));
	if (g->awl <= 0)
		return 0;
	if ((rc = pd_state_get(g->state, key, now, r, err)) == 0)
		memset(r, 0, sizeof(*r));
	return rc;
}

/* Count one successful delivery, at most one per hour (postgrey). */
static int pd_greylist_awl_count(struct pd_greylist *g, const char *key, long long now,
				 struct pd_state_rec *r, struct buf *err)
{
	if (g->awl <= 0 || (r->b != 0 && now - r->b < PD_AWL_INTERVAL))
		return 0;
	r->a++;
	r->b = now;
	r->expires = now + g->max_age;
	return pd_state_put(g->state, key, now, r, err);
}

static void pd_greylist_run(struct pd_check *ck, struct pd_req *rq, struct pd_verdict *v)
{
	struct pd_greylist *g = ck->priv;
	struct buf net = BUF_INIT, key = BUF_INIT, awl = BUF_INIT, snd = BUF_INIT, err = BUF_INIT,
		   date = BUF_INIT;
	struct pd_state_rec r, awlrec;
	long long now = (long long)rq->now;
	int rc;

	if (strcasecmp(rq->state, "RCPT") != 0 || *rq->recipient == 0)
		return;
	/* BUF_INIT buffers allocate on first use: err and date seldom */
	if (pd_client_net(rq->client_address, g->v4len, g->v6len, &net) < 0) {
		buf_set(&v->note, "greylist=no-client-address");
		goto done;
	}
	if (pd_wl_client(&g->clients, rq->client_name, rq->client_address) ||
	    pd_wl_recipient(&g->recipients, rq->recipient)) {
		buf_set(&v->note, "greylist=whitelisted");
		goto done;
	}
	buf_puts(&awl, "awl:");
	buf_append(&awl, net.data, net.len);
	if (pd_greylist_awl_get(g, buf_str(&awl), now, &awlrec, &err) < 0)
		goto state_error;
	if (g->awl > 0 && awlrec.a >= g->awl) {
		buf_set(&v->note, "greylist=auto-whitelisted");
		goto done;
	}
	pd_grey_sender(rq->sender, ck->pc->delims, &snd);
	buf_puts(&key, "grey:");
	buf_append(&key, net.data, net.len);
	buf_putc(&key, '/');
	buf_append(&key, snd.data, snd.len);
	buf_putc(&key, '/');
	buf_puts(&key, rq->recipient);
	buf_lower(&key);
	if ((rc = pd_state_get(g->state, buf_str(&key), now, &r, &err)) < 0)
		goto state_error;
	if (rc == 0 || (r.c == 0 && now - r.a > g->retry_window)) {
		/* new, or the retry came too late: start over */
		r.a = r.b = now;
		r.c = 0;
		r.expires = now + g->max_age;
		if (pd_state_put(g->state, buf_str(&key), now, &r, &err) < 0)
			goto state_error;
		if (g->delay > 0) {
			pd_greylist_defer(g, rq, g->delay, &v->action);
			buf_set(&v->note, "greylist=new");
			goto done;
		}
	}
	if (r.c == 0 && now - r.a < g->delay) {
		r.b = now;
		if (pd_state_put(g->state, buf_str(&key), now, &r, &err) < 0)
			goto state_error;
		pd_greylist_defer(g, rq, g->delay - (now - r.a), &v->action);
		buf_set(&v->note, "greylist=early");
		goto done;
	}
	if (r.c == 0 && g->header && !pd_check_done(rq, ck)) {
		mail_date((time_t)now, &date);
		buf_printf(&v->action,
			   "PREPEND X-Greylist: delayed %lld seconds by tern-policyd at %s; %s",
			   now - r.a, g->host, buf_str(&date));
		pd_check_set_done(rq, ck);
	}
	buf_set(&v->note, r.c == 0 ? "greylist=pass" : "greylist=known");
	/* A known triplet's "last seen" only sets its expiry (35 days):
	 * refreshing it once an hour is enough and spares a write per
	 * request. */
	rc = 0;
	if (r.c == 0 || now - r.b >= PD_AWL_INTERVAL) {
		r.c = 1;
		r.b = now;
		r.expires = now + g->max_age;
		rc = pd_state_put(g->state, buf_str(&key), now, &r, &err);
	}
	if (rc < 0 || pd_greylist_awl_count(g, buf_str(&awl), now, &awlrec, &err) < 0) {
		/* the message passes anyway; the record is retried next time */
		msg_warn("greylist: state %s: %s", ck->pc->state->spec, buf_str(&err));
	}
	goto done;
state_error:
	pd_greylist_state_error(ck, v, &err);
done:
	buf_free(&net);
	buf_free(&key);
	buf_free(&awl);
	buf_free(&snd);
	buf_free(&err);
	buf_free(&date);
}

const struct pd_check_ops pd_check_greylist_ops = {
    "greylist", 0, pd_greylist_init, pd_greylist_run, pd_greylist_free, NULL,
};
