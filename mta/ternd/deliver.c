/* deliver.c - what every transport shares: the settings snapshot
 * (struct deliver_conf), dispatch from a route to its transport, the
 * Return-Path:/Delivered-To: headers, and the one delivery log line
 * (Postfix's log_adhoc(): to=, orig_to=, relay=, delay=, delays=, dsn=,
 * status=). Interface in deliver.h.
 */
#include "deliver.h"
#include "pwent.h"

#include "log.h"
#include "queue.h"
#include "route.h"
#include "table.h"

#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

double deliver_now(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

/* --- Settings ------------------------------------------------------ */

/* deliver_maps_open - open each table leniently: a missing file is
 * logged and makes the mail it concerns deferred, not bounced; a bad
 * table spec is a configuration error. */
int deliver_maps_open(const struct cfg *cfg, const char *name, struct deliver_maps *m,
		      struct buf *err)
{
	struct cfg_list l = {NULL, 0};
	int rc = 0;

	if (cfg_get_list(cfg, NULL, name, &l, err) < 0)
		return -1;
	m->t = xcalloc(l.count + 1, sizeof(*m->t));
	for (size_t i = 0; i < l.count && rc == 0; i++) {
		if ((m->t[m->n] = table_open_lenient(l.items[i], err)) == NULL)
			rc = -1;
		else
			m->n++;
	}
	cfg_list_free(&l);
	return rc;
}

void deliver_maps_free(struct deliver_maps *m)
{
	for (size_t i = 0; i < m->n; i++) {
		table_close(m->t[i]);
	}
	free(m->t);
}

int deliver_maps_lookup(const struct deliver_maps *m, const char *key, struct buf *value,
			struct table **hit, struct buf *err)
{
	struct buf why = BUF_INIT;
	int rc = TABLE_NOTFOUND;

	for (size_t i = 0; i < m->n && rc == TABLE_NOTFOUND; i++) {
		/* Pick up a rebuilt table; on failure the old contents stay. */
		if (table_reload(m->t[i], 0, &why) < 0)
			msg_warn("%s: %s", m->t[i]->spec, buf_str(&why));
		if ((rc = table_lookup(m->t[i], key, value, err)) == TABLE_FOUND && hit != NULL)
			*hit = m->t[i];
	}
	buf_free(&why);
	return rc;
}

static char *deliver_conf_str(const struct cfg *cfg, const char *name, int path, int *ok,
			      struct buf *err)
{
	struct buf v = BUF_INIT;
	int rc =
	    path ? cfg_get_path(cfg, NULL, name, &v, err) : cfg_get_str(cfg, NULL, name, &v, err);

	if (rc < 0)
		*ok = 0;
	buf_trim(&v);
	return buf_detach(&v);
}

/* deliver_conf_user - uid/gid of a user name; mail_owner may be missing
 * in unprivileged runs (make run, tests), then we are that user. */
static int deliver_conf_user(const struct cfg *cfg, const char *name, uid_t *uid, gid_t *gid,
			     struct buf *err)
{
	struct buf v = BUF_INIT;
	struct pwent pe;
	int rc = 0;

	*uid = getuid();
	*gid = getgid();
	if (cfg_get_str(cfg, NULL, name, &v, err) < 0)
		rc = -1;
	else if (pwent_by_name(buf_str(&v), &pe) > 0) {
		*uid = pe.pw.pw_uid;
		*gid = pe.pw.pw_gid;
		pwent_free(&pe);
	}
	buf_free(&v);
	return rc;
}

static int deliver_conf_allow(const struct cfg *cfg, const char *name, int *out, struct buf *err)
{
	struct cfg_list l = {NULL, 0};

	*out = 0;
	if (cfg_get_list(cfg, NULL, name, &l, err) < 0)
		return -1;
	for (size_t i = 0; i < l.count; i++)
		*out |= strcmp(l.items[i], "alias") == 0;
	cfg_list_free(&l);
	return 0;
}

static int deliver_conf_times(struct deliver_conf *dc, const struct cfg *cfg, struct buf *err)
{
	if (cfg_get_time(cfg, NULL, "minimal_backoff_time", &dc->min_backoff, err) < 0 ||
	    cfg_get_time(cfg, NULL, "maximal_backoff_time", &dc->max_backoff, err) < 0 ||
	    cfg_get_time(cfg, NULL, "queue_run_delay", &dc->run_delay, err) < 0 ||
	    cfg_get_time(cfg, NULL, "maximal_queue_lifetime", &dc->lifetime, err) < 0 ||
	    cfg_get_time(cfg, NULL, "bounce_queue_lifetime", &dc->bounce_lifetime, err) < 0 ||
	    cfg_get_size(cfg, NULL, "mailbox_size_limit", &dc->mailbox_limit, err) < 0 ||
	    cfg_get_time(cfg, NULL, "delay_warning_time", &dc->delay_warning, err) < 0 ||
	    cfg_get_size(cfg, NULL, "bounce_size_limit", &dc->bounce_size_limit, err) < 0 ||
	    cfg_get_int(cfg, NULL, "duplicate_filter_limit", &dc->dup_filter_limit, err) < 0)
		return -1;
	/* postconf(5): a maximal_backoff_time below the minimum is raised. */
	if (dc->max_backoff < dc->min_backoff)
		dc->max_backoff = dc->min_backoff;
	return 0;
}

struct deliver_conf *deliver_conf_new(const struct cfg *cfg, struct buf *err)
{
	struct deliver_conf *dc = xcalloc(1, sizeof(*dc));
	int ok = 1;

	dc->myhostname = deliver_conf_str(cfg, "myhostname", 0, &ok, err);
	dc->myorigin = deliver_conf_str(cfg, "myorigin", 0, &ok, err);
	dc->bounce_2_rcpt = deliver_conf_str(cfg, "2bounce_notice_recipient", 0, &ok, err);
	dc->double_bounce_sender = deliver_conf_str(cfg, "double_bounce_sender", 0, &ok, err);
	if (ok && strchr(dc->double_bounce_sender, '@') == NULL) { /* qualified, as Postfix */
		struct buf q = BUF_INIT;
		buf_printf(&q, "%s@%s", dc->double_bounce_sender, dc->myorigin);
		free(dc->double_bounce_sender);
		dc->double_bounce_sender = buf_detach(&q);
	}
	if (ok && strchr(dc->bounce_2_rcpt, '@') == NULL) {
		struct buf q = BUF_INIT;
		buf_printf(&q, "%s@%s", dc->bounce_2_rcpt, dc->myorigin);
		free(dc->bounce_2_rcpt);
		dc->bounce_2_rcpt = buf_detach(&q);
	}
	dc->delims = deliver_conf_str(cfg, "recipient_delimiter", 0, &ok, err);
	dc->vbase = deliver_conf_str(cfg, "virtual_mailbox_base", 1, &ok, err);
	dc->home_mailbox = deliver_conf_str(cfg, "home_mailbox", 0, &ok, err);
	dc->spool_dir = deliver_conf_str(cfg, "mail_spool_directory", 1, &ok, err);
	if (!ok || deliver_conf_user(cfg, "mail_owner", &dc->owner_uid, &dc->owner_gid, err) < 0 ||
	    deliver_conf_user(cfg, "default_privs", &dc->privs_uid, &dc->privs_gid, err) < 0 ||
	    deliver_conf_allow(cfg, "allow_mail_to_commands", &dc->cmd_alias, err) < 0 ||
	    deliver_conf_allow(cfg, "allow_mail_to_files", &dc->file_alias, err) < 0 ||
	    deliver_conf_times(dc, cfg, err) < 0 ||
	    deliver_maps_open(cfg, "alias_maps", &dc->aliases, err) < 0 ||
	    deliver_maps_open(cfg, "virtual_mailbox_maps", &dc->vmaps, err) < 0 ||
	    (dc->route = route_conf_new(cfg, err)) == NULL ||
	    (dc->smtp = deliver_smtp_conf_new(cfg, err)) == NULL) {
		deliver_conf_free(dc);
		return NULL;
	}
	return dc;
}

void deliver_conf_free(struct deliver_conf *dc)
{
	if (dc == NULL)
		return;
	route_conf_free(dc->route);
	deliver_smtp_conf_free(dc->smtp);
	deliver_maps_free(&dc->aliases);
	deliver_maps_free(&dc->vmaps);
	free(dc->myhostname);
	free(dc->myorigin);
	free(dc->bounce_2_rcpt);
	free(dc->double_bounce_sender);
	free(dc->delims);
	free(dc->vbase);
	free(dc->home_mailbox);
	free(dc->spool_dir);
	free(dc);
}

/* --- Dispatch ------------------------------------------------------ */

struct deliver_transport {
	const char *name;
	void (*fn)(struct deliver_rcpt *r, const char *nexthop);
};

static const struct deliver_transport deliver_transports[] = {
    {"local", deliver_local}, {"virtual", deliver_virtual}, {"discard", deliver_discard},
    {"error", deliver_error}, {"retry", deliver_retry},	    {NULL, NULL},
};

/* The SMTP client family: recipients for one destination share sessions. */
static int deliver_is_smtp(const char *transport)
{
	return strcmp(transport, "smtp") == 0 || strcmp(transport, "lmtp") == 0 ||
	       strcmp(transport, "relay") == 0;
}

/* Run a non-SMTP transport; unknown names keep the mail (4.3.0). */
static void deliver_transport_run(struct deliver_rcpt *r, const struct route *rt)
{
	const struct deliver_transport *t;

	for (t = deliver_transports; t->name != NULL; t++)
		if (strcmp(t->name, buf_str(&rt->transport)) == 0)
			break;
	if (t->name != NULL)
		t->fn(r, buf_str(&rt->nexthop));
	else
		deliver_report(r, "none", "4.3.0", "mail transport unavailable");
}

/* Tell the scheduler, once, before a transport that may take long. */
static void deliver_will_block(struct deliver_msg *m, const char *transport, int *told)
{
	if (*told || m->on_slow == NULL || strcmp(transport, "discard") == 0 ||
	    strcmp(transport, "error") == 0 || strcmp(transport, "retry") == 0)
		return;
	*told = 1;
	m->on_slow(m->slow_arg);
}

/* A content filter (FILTER action, content_filter) takes every queue
 * recipient: "transport:destination"; an empty destination keeps the
 * recipient's own next hop. */
static void deliver_filter_route(const char *filter, struct route *rt)
{
	const char *colon = strchr(filter, ':');

	if (colon == NULL)
		return;
	buf_set(&rt->transport, "");
	buf_append(&rt->transport, filter, (size_t)(colon - filter));
	if (colon[1] != 0)
		buf_set(&rt->nexthop, colon + 1);
}

/* deliver_rcpts_route - route each recipient and run every transport
 * but the SMTP family now; prepare one SMTP job per destination into
 * jobs (*nj). */
static void deliver_rcpts_route(struct deliver_rcpt **rs, size_t n, struct deliver_smtp_job **jobs,
				size_t *nj)
{
	struct route *rt = xcalloc(n + 1, sizeof(*rt));
	struct deliver_rcpt **group = xcalloc(n + 1, sizeof(*group));
	char *done = xcalloc(n + 1, 1);
	struct buf err = BUF_INIT;
	int slow = 0;

	*nj = 0;
	for (size_t i = 0; i < n; i++) {
		route_init(&rt[i]);
		rs[i]->t_start = deliver_now();
		buf_reset(&err);
		if (route_resolve(rs[i]->msg->conf->route, rs[i]->addr, &rt[i], &err) < 0) {
			deliver_report(rs[i], "none", "4.3.0", "%s", buf_str(&err));
			done[i] = 1;
			continue;
		}
		if (rs[i]->depth == 0 && rs[i]->msg->env->filter != NULL)
			deliver_filter_route(rs[i]->msg->env->filter, &rt[i]);
		if (!deliver_is_smtp(buf_str(&rt[i].transport))) {
			deliver_will_block(rs[i]->msg, buf_str(&rt[i].transport), &slow);
			deliver_transport_run(rs[i], &rt[i]);
			done[i] = 1;
		}
	}
	/* What is left goes by SMTP/LMTP: one job per destination. */
	for (size_t i = 0; i < n; i++) {
		size_t g = 0;
		struct deliver_smtp_job *job;
		if (done[i])
			continue;
		for (size_t j = i; j < n; j++) {
			if (done[j] || strcmp(buf_str(&rt[j].transport), buf_str(&rt[i].transport)) != 0 ||
			    strcmp(buf_str(&rt[j].nexthop), buf_str(&rt[i].nexthop)) != 0)
				continue;
			group[g++] = rs[j];
			done[j] = 1;
		}
		job = deliver_smtp_prepare(group, g, buf_str(&rt[i].transport),
					   buf_str(&rt[i].nexthop));
		if (job != NULL)
			jobs[(*nj)++] = job;
	}
	for (size_t i = 0; i < n; i++)
		route_free(&rt[i]);
	free(rt);
	free(group);
	free(done);
	buf_free(&err);
}

void deliver_rcpt_run(struct deliver_rcpt *r)
{
	struct deliver_smtp_job *job;
	size_t nj;

	deliver_rcpts_route(&r, 1, &job, &nj);
	deliver_smtp_wait(&job, nj);
}

int deliver_rcpts_start(struct deliver_rcpt **rs, size_t n, void (*done)(void *arg), void *arg)
{
	struct deliver_smtp_job **jobs = xcalloc(n + 1, sizeof(*jobs));
	size_t nj;
	int pending;

	deliver_rcpts_route(rs, n, jobs, &nj);
	pending = deliver_smtp_launch(jobs, nj, done, arg);
	free(jobs);
	return pending;
}

const struct queue_rcpt *deliver_rcpt_queue_rcpt(const struct deliver_rcpt *r)
{
	while (r->parent != NULL && r->qr == NULL)
		r = r->parent;
	return r->qr;
}

/* --- Headers and the log line -------------------------------------- */

void deliver_headers(const struct deliver_rcpt *r, struct buf *out)
{
	buf_printf(out, "Return-Path: <%s>\n", r->msg->env->sender);
	buf_printf(out, "X-Original-To: %s\n", r->orig);
	buf_printf(out, "Delivered-To: %s\n", r->addr);
}

/* deliver_delay_fmt - Postfix's delay format: integers from 100s up,
 * otherwise two significant digits and at most two decimals
 * (delay_logging_resolution_limit = 2), trailing zeros dropped. */
static void deliver_delay_fmt(struct buf *out, double d)
{
	char tmp[64];
	int dec = d >= 10 ? 0 : d >= 1 ? 1 : 2;
	char *e;

	if (d < 0)
		d = 0;
	snprintf(tmp, sizeof(tmp), "%.*f", dec, d);
	if (strchr(tmp, '.') != NULL) {
		for (e = tmp + strlen(tmp) - 1; *e == '0'; e--)
			*e = 0;
		if (*e == '.')
			*e = 0;
	}
	buf_puts(out, tmp);
}

static const char *deliver_status_word(const char *dsn)
{
	return dsn[0] == '2' ? "sent" : dsn[0] == '5' ? "bounced" : "deferred";
}

void deliver_report(struct deliver_rcpt *r, const char *relay, const char *dsn, const char *fmt,
		    ...)
{
	struct deliver_msg *m = r->msg;
	struct buf line = BUF_INIT, text = BUF_INIT;
	double now = deliver_now(), arrival = (double)m->env->arrival + m->env->arrival_usec / 1e6;
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&text, fmt, ap);
	va_end(ap);
	buf_printf(&line, "to=<%s>, ", r->addr);
	if (strcmp(r->addr, r->orig) != 0)
		buf_printf(&line, "orig_to=<%s>, ", r->orig);
	buf_printf(&line, "relay=%s, delay=", relay);
	deliver_delay_fmt(&line, now - arrival);
	buf_puts(&line, ", delays=");
	deliver_delay_fmt(&line, m->t_active - arrival);
	buf_putc(&line, '/');
	deliver_delay_fmt(&line, r->t_start - m->t_active);
	buf_putc(&line, '/');
	/* c: connection set-up (DNS, connect, greeting, HELO); d: the rest */
	deliver_delay_fmt(&line, r->t_conn > r->t_start ? r->t_conn - r->t_start : 0);
	buf_putc(&line, '/');
	deliver_delay_fmt(&line, now - (r->t_conn > r->t_start ? r->t_conn : r->t_start));
	buf_printf(&line, ", dsn=%s, status=%s (%s)", dsn, deliver_status_word(dsn),
		   buf_str(&text));
	/* Logged under the delivery agent's name, as Postfix's local(8),
	 * virtual(8), discard(8) and error(8) do (pflogsumm counts by it). */
	const char *svc = r->agent			  ? r->agent
			  : strcmp(relay, "local") == 0	  ? "local"
			  : strcmp(relay, "virtual") == 0 ? "virtual"
			  : dsn[0] == '2'		  ? "discard"
							  : "error";
	const char *prev = log_swap_service(svc);
	msg_qid(m->qid, "%s", buf_str(&line));
	log_thread_service(prev);
	if (dsn[0] == '2') {
		r->nsent++;
		/* NOTIFY=SUCCESS: "relayed" when the next hop cannot carry the
		 * request on (no DSN), nothing when it can, else "delivered" */
		if (r->agent != NULL && strcmp(r->agent, "lmtp") != 0) {
			if (!r->remote_dsn)
				bounce_note(m, "relayed", r->addr, r->orig, deliver_rcpt_queue_rcpt(r),
					    dsn, relay, buf_str(&text));
		} else {
			bounce_note(m, "delivered", r->addr, r->orig, deliver_rcpt_queue_rcpt(r), dsn,
				    relay, buf_str(&text));
		}
	} else if (dsn[0] == '5') {
		r->nbounced++;
		bounce_note(m, "failed", r->addr, r->orig, deliver_rcpt_queue_rcpt(r), dsn, relay,
			    buf_str(&text));
	} else {
		r->ndeferred++;
		if (r->reason.len == 0) {
			buf_set(&r->reason, buf_str(&text));
			snprintf(r->reason_dsn, sizeof(r->reason_dsn), "%s", dsn);
		}
	}
	buf_free(&line);
	buf_free(&text);
}
