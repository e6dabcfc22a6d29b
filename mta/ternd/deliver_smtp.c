/* deliver_smtp.c - the smtp, relay and lmtp transports: Postfix's smtp(8)
 * and lmtp(8) client, for the recipients of one message that share a
 * destination (deliver.h; the parts: smtp_client.h).
 *
 * A delivery worker prepares a job (is the destination known dead?) and
 * hands every job of a message to one engine loop; there the job waits
 * for a slot of its destination (<transport>_destination_concurrency_limit,
 * shared by all loops: when one ends, the slot passes to the next waiting
 * job, in order), looks its servers up (smtp_servers.c, DNS on the loop's
 * resolver), then sends the recipients in transactions of at most
 * <transport>_destination_recipient_limit: a cached connection first,
 * then server after server (smtp_conn.c). A connection failure, a
 * 4xx/5xx greeting or a broken session moves on to the next server; so
 * do recipients that got a 4xx (at most smtp_mx_session_limit sessions).
 * What remains is deferred with the last reason. When every job is
 * reported, the message goes back to the scheduler (done callback).
 *
 * Pitfalls: every recipient gets exactly one deliver_report(), whatever
 * breaks when; the reports of one message are made on one thread at a
 * time (bounce_note() is not locked): first the worker's, then the loop's.
 */
#include "smtp_client.h"

#include "engine.h"
#include "log.h"
#include "queue.h"
#include "resolver.h"

#include <event2/event.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* --- settings ---------------------------------------------------------- */

static int smtp_conf_proto(const struct cfg *cfg, const char *p, struct smtp_proto_conf *pc,
			   struct buf *err)
{
	static const char *const smtp_names[] = {"connect_timeout", "helo_timeout", "mail_timeout",
						 "rcpt_timeout", "data_init_timeout",
						 "data_xfer_timeout", "data_done_timeout",
						 "quit_timeout"};
	long long *vals[] = {&pc->connect,   &pc->helo,	     &pc->mail,	     &pc->rcpt,
			     &pc->data_init, &pc->data_xfer, &pc->data_done, &pc->quit};
	struct buf name = BUF_INIT;
	const char *tp = strcmp(p, "lmtp") == 0 ? "lmtp" : "smtp"; /* relay uses smtp_* */
	int rc = 0;

	for (size_t i = 0; i < 8 && rc == 0; i++) {
		buf_set(&name, tp);
		buf_printf(&name, "_%s", strcmp(tp, "lmtp") == 0 && i == 1 ? "lhlo_timeout"
									    : smtp_names[i]);
		rc = cfg_get_time(cfg, NULL, buf_str(&name), vals[i], err);
	}
	if (rc == 0 && strcmp(tp, "lmtp") == 0 && pc->connect == 0)
		pc->connect = 30; /* "system default": bounded all the same */
	/* <transport>_destination_*_limit, else the default_ ones */
	buf_set(&name, p);
	buf_puts(&name, "_destination_concurrency_limit");
	if (rc == 0 && cfg_get_int(cfg, NULL, cfg_param_find(cfg, buf_str(&name)) != NULL
					     ? buf_str(&name)
					     : "default_destination_concurrency_limit",
				   &pc->concurrency, err) < 0)
		rc = -1;
	buf_set(&name, p);
	buf_puts(&name, "_destination_recipient_limit");
	if (rc == 0 && cfg_get_int(cfg, NULL, cfg_param_find(cfg, buf_str(&name)) != NULL
					     ? buf_str(&name)
					     : "default_destination_recipient_limit",
				   &pc->rcpt_limit, err) < 0)
		rc = -1;
	buf_free(&name);
	return rc;
}

/* smtp_bind_address(6): "" or a literal address of that family. */
static int smtp_conf_bind(const struct cfg *cfg, const char *param, int family,
			  struct sockaddr_storage *ss, struct buf *err)
{
	struct buf v = BUF_INIT;
	int rc = 0;

	memset(ss, 0, sizeof(*ss));
	if (cfg_get_str(cfg, NULL, param, &v, err) < 0)
		return -1;
	buf_trim(&v);
	if (v.len > 0) {
		void *dst = family == AF_INET ? (void *)&((struct sockaddr_in *)ss)->sin_addr
					      : (void *)&((struct sockaddr_in6 *)ss)->sin6_addr;
		if (inet_pton(family, buf_str(&v), dst) != 1) {
			buf_printf(err, "%s: \"%s\" is not an IPv%d address", param, buf_str(&v),
				   family == AF_INET ? 4 : 6);
			rc = -1;
		} else {
			ss->ss_family = (sa_family_t)family;
		}
	}
	buf_free(&v);
	return rc;
}

/* The settings beyond timeouts and limits: binding, address preference,
 * caching policy, line length; and the ones only some values of which
 * Tern implements (refused with the reason, never silently ignored). */
static int smtp_conf_more(struct deliver_smtp_conf *sc, const struct cfg *cfg, struct buf *err)
{
	struct buf v = BUF_INIT;
	struct cfg_list l = {NULL, 0};
	int rc = -1, dns = 0;

	if (smtp_conf_bind(cfg, "smtp_bind_address", AF_INET, &sc->bind4, err) < 0 ||
	    smtp_conf_bind(cfg, "smtp_bind_address6", AF_INET6, &sc->bind6, err) < 0 ||
	    cfg_get_bool(cfg, NULL, "smtp_connection_cache_on_demand", &sc->cache_on_demand,
			 err) < 0 ||
	    cfg_get_int(cfg, NULL, "smtp_line_length_limit", &sc->line_limit, err) < 0 ||
	    cfg_get_str(cfg, NULL, "smtp_address_preference", &v, err) < 0)
		goto out;
	buf_trim(&v);
	if (strcasecmp(buf_str(&v), "ipv4") == 0)
		sc->addr_pref = 4;
	else if (strcasecmp(buf_str(&v), "ipv6") == 0)
		sc->addr_pref = 6;
	else if (strcasecmp(buf_str(&v), "any") != 0) {
		buf_printf(err, "smtp_address_preference: \"%s\" is not ipv4, ipv6 or any",
			   buf_str(&v));
		goto out;
	}
	if (cfg_get_list(cfg, NULL, "smtp_connection_cache_destinations", &l, err) < 0)
		goto out;
	sc->cache_dests = xcalloc(l.count + 1, sizeof(*sc->cache_dests));
	for (size_t i = 0; i < l.count; i++)
		sc->cache_dests[sc->ncache_dests++] = xstrdup(l.items[i]);
	cfg_list_free(&l);
	if (cfg_get_list(cfg, NULL, "smtp_host_lookup", &l, err) < 0)
		goto out;
	for (size_t i = 0; i < l.count; i++)
		dns |= strcasecmp(l.items[i], "dns") == 0;
	if (!dns) {
		buf_puts(err, "smtp_host_lookup: Tern looks hosts up in the DNS only (\"dns\")");
		goto out;
	}
	if (cfg_get_str(cfg, NULL, "smtp_dns_support_level", &v, err) < 0)
		goto out;
	buf_trim(&v);
	if (v.len && strcasecmp(buf_str(&v), "enabled") != 0) {
		buf_printf(err, "smtp_dns_support_level: \"%s\" is not supported (only \"enabled\": "
				"no DNSSEC validation in Tern yet)", buf_str(&v));
		goto out;
	}
	rc = 0;
out:
	cfg_list_free(&l);
	buf_free(&v);
	return rc;
}

/* Is this destination's connection kept for the next delivery? Tern keeps
 * every clean session briefly (on demand: a backlog is usually there);
 * smtp_connection_cache_on_demand = no keeps only those listed. */
static int smtp_cache_wanted(const struct deliver_smtp_conf *sc, const char *nexthop)
{
	if (sc->cache_on_demand)
		return 1;
	for (size_t i = 0; i < sc->ncache_dests; i++)
		if (strcasecmp(sc->cache_dests[i], nexthop) == 0)
			return 1;
	return 0;
}

struct deliver_smtp_conf *deliver_smtp_conf_new(const struct cfg *cfg, struct buf *err)
{
	struct deliver_smtp_conf *sc = xcalloc(1, sizeof(*sc));
	struct buf v = BUF_INIT;
	struct cfg_list l = {NULL, 0};
	int ok = 1;

	if (smtp_conf_proto(cfg, "smtp", &sc->smtp, err) < 0 ||
	    smtp_conf_proto(cfg, "lmtp", &sc->lmtp, err) < 0 ||
	    smtp_conf_proto(cfg, "relay", &sc->relay, err) < 0 ||
	    cfg_get_str(cfg, NULL, "smtp_helo_name", &v, err) < 0 ||
	    cfg_get_int(cfg, NULL, "smtp_mx_address_limit", &sc->mx_address_limit, err) < 0 ||
	    cfg_get_int(cfg, NULL, "smtp_mx_session_limit", &sc->mx_session_limit, err) < 0 ||
	    cfg_get_bool(cfg, NULL, "smtp_skip_5xx_greeting", &sc->skip_5xx_greeting, err) < 0 ||
	    cfg_get_time(cfg, NULL, "smtp_connection_cache_time_limit", &sc->cache_time, err) < 0 ||
	    cfg_get_time(cfg, NULL, "smtp_connection_reuse_time_limit", &sc->reuse_time, err) < 0 ||
	    cfg_get_time(cfg, NULL, "minimal_backoff_time", &sc->dead_time, err) < 0 ||
	    cfg_get_list(cfg, NULL, "inet_protocols", &l, err) < 0)
		ok = 0;
	if (ok) {
		buf_trim(&v);
		sc->helo_name = buf_detach(&v);
		for (size_t i = 0; i < l.count; i++) {
			if (strcasecmp(l.items[i], "all") == 0)
				sc->want_v4 = sc->want_v6 = 1;
			else if (strcasecmp(l.items[i], "ipv4") == 0)
				sc->want_v4 = 1;
			else if (strcasecmp(l.items[i], "ipv6") == 0)
				sc->want_v6 = 1;
		}
		if (!sc->want_v4 && !sc->want_v6)
			sc->want_v4 = 1;
		if (cfg_get_str(cfg, NULL, "dns_servers", &v, err) < 0)
			ok = 0;
		else
			sc->dns_servers = buf_detach(&v);
	}
	if (ok && cfg_get_str(cfg, NULL, "myhostname", &v, err) < 0)
		ok = 0;
	else if (ok)
		sc->myhostname = buf_detach(&v);
	if (ok && (sc->resolver = resolver_new(sc->dns_servers, 0, NULL, err)) == NULL)
		ok = 0;
	if (ok) {
		static unsigned long generations;
		sc->generation = __atomic_add_fetch(&generations, 1, __ATOMIC_RELAXED);
	}
	if (ok && listener_set_resolve(cfg, &sc->self, err) < 0)
		ok = 0;
	if (ok && smtp_tls_conf_init(sc, cfg, err) < 0)
		ok = 0;
	if (ok && smtp_conf_more(sc, cfg, err) < 0)
		ok = 0;
	if (ok) { /* what a wildcard listener (*:25) answers on: inet_addr_local() */
		struct ifaddrs *ifa = NULL;
		if (getifaddrs(&ifa) == 0) {
			for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
				if (i->ifa_addr == NULL || (i->ifa_addr->sa_family != AF_INET &&
							    i->ifa_addr->sa_family != AF_INET6))
					continue;
				sc->ifaddrs = xrealloc(sc->ifaddrs,
						       (sc->nifaddrs + 1) * sizeof(*sc->ifaddrs));
				memset(&sc->ifaddrs[sc->nifaddrs], 0, sizeof(*sc->ifaddrs));
				memcpy(&sc->ifaddrs[sc->nifaddrs++], i->ifa_addr,
				       i->ifa_addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
									 : sizeof(struct sockaddr_in6));
			}
			freeifaddrs(ifa);
		}
	}
	cfg_list_free(&l);
	buf_free(&v);
	if (!ok) {
		deliver_smtp_conf_free(sc);
		return NULL;
	}
	return sc;
}

void deliver_smtp_conf_free(struct deliver_smtp_conf *sc)
{
	if (sc == NULL)
		return;
	if (sc->resolver)
		resolver_free(sc->resolver);
	listener_set_close(&sc->self);
	smtp_tls_conf_free(sc);
	for (size_t i = 0; i < sc->ncache_dests; i++)
		free(sc->cache_dests[i]);
	free(sc->cache_dests);
	free(sc->ifaddrs);
	free(sc->helo_name);
	free(sc->myhostname);
	free(sc->dns_servers);
	free(sc);
}

/* --- per-destination concurrency -------------------------------------------
 * At most <transport>_destination_concurrency_limit jobs per destination
 * at once, process-wide; the others wait in order, on no thread at all
 * (Postfix's qmgr does not hand such mail to a delivery agent either).
 * Entries go when nobody uses or waits for them. */

struct smtp_dest {
	char *key; /* "transport:nexthop" */
	int active;
	struct deliver_smtp_job *head, *tail; /* waiting */
	struct smtp_dest *next;
};

static pthread_mutex_t smtp_dest_lock = PTHREAD_MUTEX_INITIALIZER;
static struct smtp_dest *smtp_dests;

static void smtp_dest_drop(struct smtp_dest *d) /* lock held */
{
	struct smtp_dest **pp;

	if (d->active > 0 || d->head != NULL)
		return;
	for (pp = &smtp_dests; *pp && *pp != d; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = d->next;
	free(d->key);
	free(d);
}

/* --- dead destinations ------------------------------------------------------
 * When no server of a destination could be talked to at all, further
 * deliveries there are deferred without trying ("delivery temporarily
 * suspended: ...", as Postfix's qmgr) for minimal_backoff_time, so a
 * down site is not hammered by every queued message. tern flush
 * forgets it (deliver_smtp_reset). */

struct smtp_dead {
	char *key, *reason;
	double until;
	struct smtp_dead *next;
};

static pthread_mutex_t smtp_dead_lock = PTHREAD_MUTEX_INITIALIZER;
static struct smtp_dead *smtp_deads;

static void smtp_dead_set(const char *key, const char *reason, long long secs)
{
	struct smtp_dead *d;

	if (secs <= 0)
		return;
	pthread_mutex_lock(&smtp_dead_lock);
	for (d = smtp_deads; d && strcmp(d->key, key) != 0; d = d->next)
		;
	if (d == NULL) {
		d = xcalloc(1, sizeof(*d));
		d->key = xstrdup(key);
		d->next = smtp_deads;
		smtp_deads = d;
	}
	free(d->reason);
	d->reason = xstrdup(reason);
	d->until = deliver_now() + (double)secs;
	pthread_mutex_unlock(&smtp_dead_lock);
}

/* Is key dead? Then its reason into why. */
static int smtp_dead_get(const char *key, struct buf *why)
{
	struct smtp_dead **pp, *d;
	int dead = 0;
	double now = deliver_now();

	pthread_mutex_lock(&smtp_dead_lock);
	for (pp = &smtp_deads; (d = *pp) != NULL;) {
		if (d->until <= now) { /* time to try again */
			*pp = d->next;
			free(d->key);
			free(d->reason);
			free(d);
			continue;
		}
		if (strcmp(d->key, key) == 0) {
			buf_printf(why, "delivery temporarily suspended: %s", d->reason);
			dead = 1;
		}
		pp = &d->next;
	}
	pthread_mutex_unlock(&smtp_dead_lock);
	return dead;
}

static void smtp_dead_clear(const char *key)
{
	struct smtp_dead **pp, *d;

	pthread_mutex_lock(&smtp_dead_lock);
	for (pp = &smtp_deads; (d = *pp) != NULL;) {
		if (key == NULL || strcmp(d->key, key) == 0) {
			*pp = d->next;
			free(d->key);
			free(d->reason);
			free(d);
		} else {
			pp = &d->next;
		}
	}
	pthread_mutex_unlock(&smtp_dead_lock);
}

void deliver_smtp_reset(void)
{
	smtp_dead_clear(NULL);
	smtp_conn_cache_reap(1);
}

/* --- jobs ----------------------------------------------------------------- */

/* The jobs of one message: done(arg) when the last one is reported. */
struct smtp_batch {
	int pending; /* touched on the batch's loop only */
	void (*done)(void *arg);
	void *arg;
};

struct deliver_smtp_job {
	struct deliver_rcpt **rs;
	size_t n;
	char *transport, *nexthop, *key;
	char *cache_key; /* key, plus the SASL user: an authenticated connection is that user's */
	struct smtp_tls_policy tls;
	char *sasl_user, *sasl_pass;
	const struct deliver_smtp_conf *sc;
	const struct smtp_proto_conf *pc;
	int lmtp;
	struct smtp_servers servers;
	struct smtp_batch *batch;
	struct event_base *base;
	struct smtp_dest *dest;		  /* the slot held, or waited for */
	struct deliver_smtp_job *wait_next; /* in dest's queue */
	/* the transaction being sent: rs[pos..pos+cn) */
	size_t pos, cn;
	struct smtp_rcpt *xs;
	struct buf *relays; /* per server, as logged */
	struct buf cached_relay;
	struct buf why;
	char why_dsn[16]; /* for recipients a session never got to */
	int sessions, left;
	double t_conn;
	size_t h; /* the next server to try */
	struct sockaddr_storage tried; /* the server a cached session already answered for */
	socklen_t tried_len;
};

static struct engine *smtp_engine;
static struct event *smtp_reaper;
static int smtp_closed; /* shutdown: jobs start nothing (atomic) */

static int smtp_is_closed(void)
{
	return __atomic_load_n(&smtp_closed, __ATOMIC_RELAXED);
}

static const struct smtp_proto_conf *smtp_proto(const struct deliver_smtp_conf *sc,
						const char *transport)
{
	if (strcmp(transport, "lmtp") == 0)
		return &sc->lmtp;
	if (strcmp(transport, "relay") == 0)
		return &sc->relay;
	return &sc->smtp;
}

static const char *smtp_agent(const char *transport)
{
	return strcmp(transport, "relay") == 0 ? "relay"
	       : strcmp(transport, "lmtp") == 0 ? "lmtp"
						: "smtp";
}

static void job_free(struct deliver_smtp_job *job)
{
	smtp_servers_free(&job->servers);
	buf_free(&job->cached_relay);
	buf_free(&job->why);
	free(job->cache_key);
	free(job->tls.match);
	free(job->sasl_user);
	if (job->sasl_pass) { /* a password does not linger in freed memory */
		explicit_bzero(job->sasl_pass, strlen(job->sasl_pass));
		free(job->sasl_pass);
	}
	free(job->rs);
	free(job->transport);
	free(job->nexthop);
	free(job->key);
	free(job);
}

/* The same outcome for every recipient of the job (no session at all). */
static void job_report_all(struct deliver_smtp_job *job, const char *dsn, const char *text)
{
	for (size_t i = 0; i < job->n; i++) {
		job->rs[i]->agent = smtp_agent(job->transport);
		deliver_report(job->rs[i], "none", dsn, "%s", text);
	}
}

static void job_go(struct deliver_smtp_job *job);
static void chunk_begin(struct deliver_smtp_job *job);

/* The slot for the job's destination: 1 held now, 0 queued for it. */
static int job_slot(struct deliver_smtp_job *job)
{
	struct smtp_dest *d;
	int got;

	pthread_mutex_lock(&smtp_dest_lock);
	for (d = smtp_dests; d && strcmp(d->key, job->key) != 0; d = d->next)
		;
	if (d == NULL) {
		d = xcalloc(1, sizeof(*d));
		d->key = xstrdup(job->key);
		d->next = smtp_dests;
		smtp_dests = d;
	}
	job->dest = d;
	got = job->pc->concurrency <= 0 || d->active < job->pc->concurrency;
	if (got) {
		d->active++;
	} else {
		job->wait_next = NULL;
		if (d->tail)
			d->tail->wait_next = job;
		else
			d->head = job;
		d->tail = job;
	}
	pthread_mutex_unlock(&smtp_dest_lock);
	return got;
}

static void job_resume(void *arg)
{
	struct deliver_smtp_job *job = arg;

	if (!smtp_is_closed())
		job_go(job);
}

/* Give the slot up; the next job waiting for it (on whatever loop)
 * takes it over. */
static void job_slot_leave(struct deliver_smtp_job *job)
{
	struct smtp_dest *d = job->dest;
	struct deliver_smtp_job *next;

	pthread_mutex_lock(&smtp_dest_lock);
	next = d->head;
	if (next != NULL) { /* the slot passes on: active stays */
		d->head = next->wait_next;
		if (d->head == NULL)
			d->tail = NULL;
	} else {
		d->active--;
		smtp_dest_drop(d);
	}
	pthread_mutex_unlock(&smtp_dest_lock);
	if (next != NULL && engine_run_on(next->base, job_resume, next) < 0)
		msg_warn("smtp: cannot resume delivery to %s", next->nexthop);
}

static void job_end(struct deliver_smtp_job *job)
{
	struct smtp_batch *b = job->batch;

	job_slot_leave(job);
	job_free(job);
	if (--b->pending == 0) {
		b->done(b->arg);
		free(b);
	}
}

static void job_start(void *arg)
{
	struct deliver_smtp_job *job = arg;

	if (!smtp_is_closed() && job_slot(job))
		job_go(job);
}

/* The destination's servers are known (or not: every recipient hears why). */
static void job_servers(void *arg, int rc, struct smtp_servers *s, struct smtp_fail *f, int bounce)
{
	struct deliver_smtp_job *job = arg;

	if (smtp_is_closed())
		return; /* shutting down: the message stays queued */
	if (rc < 0) {
		job_report_all(job, bounce ? f->dsn : (f->dsn[0] == '4' ? f->dsn : "4.4.3"),
			       buf_str(&f->text));
		job_end(job);
		return;
	}
	job->servers = *s; /* ours now */
	s->v = NULL, s->n = 0;
	job->pos = 0;
	chunk_begin(job);
}

static void job_go(struct deliver_smtp_job *job)
{
	struct buf why = BUF_INIT;
	double now = deliver_now();

	for (size_t i = 0; i < job->n; i++)
		job->rs[i]->t_start = now; /* delays=c counts from here */
	if (smtp_dead_get(job->key, &why)) { /* died while this one waited */
		job_report_all(job, "4.4.1", buf_str(&why));
		buf_free(&why);
		job_end(job);
		return;
	}
	buf_free(&why);
	smtp_servers_find_async(job->base, job->sc, job->lmtp, job->nexthop, job_servers, job);
}

/* --- one transaction's worth of recipients ------------------------------- */

static void chunk_next(struct deliver_smtp_job *job);

static void chunk_req(struct deliver_smtp_job *job, struct smtp_conn_req *req, struct buf *relay,
		      void (*done)(void *, const struct smtp_conn_end *))
{
	*req = (struct smtp_conn_req){.base = job->base,
				      .sc = job->sc,
				      .pc = job->pc,
				      .lmtp = job->lmtp,
				      .m = job->rs[0]->msg,
				      .xs = job->xs,
				      .n = job->cn,
				      .relay = relay,
				      .cache_key = smtp_cache_wanted(job->sc, job->nexthop)
						       ? job->cache_key
						       : NULL,
				      .nexthop = job->nexthop,
				      .agent = smtp_agent(job->transport),
				      .tls = &job->tls,
				      .sasl_user = job->sasl_user,
				      .sasl_pass = job->sasl_pass,
				      .why = &job->why,
				      .why_dsn = job->why_dsn,
				      .t_conn = &job->t_conn,
				      .done = done,
				      .arg = job};
}

/* A cached connection's session ended. */
static void chunk_cached_done(void *arg, const struct smtp_conn_end *end)
{
	struct deliver_smtp_job *job = arg;

	job->sessions += end->started;
	if (!end->stale) { /* it answered: do not ask the same server again now */
		memcpy(&job->tried, &end->sv->ss, end->sv->sslen);
		job->tried_len = end->sv->sslen;
	}
	job->left = 0;
	for (size_t i = 0; i < job->cn; i++) {
		struct smtp_rcpt *x = &job->xs[i];
		/* stale: what it never got to is tried on a fresh connection */
		if (x->st == RS_OPEN && !end->stale) {
			smtp_rcpt_set(x, RS_SOFT, job->why_dsn,
				      job->why.len ? buf_str(&job->why) : "delivery failed");
			x->relay = NULL;
		}
		job->left |= x->st == RS_SOFT || x->st == RS_OPEN;
	}
	chunk_next(job);
}

static void chunk_session_done(void *arg, const struct smtp_conn_end *end)
{
	struct deliver_smtp_job *job = arg;

	job->sessions += end->started;
	job->left = 0;
	for (size_t i = 0; i < job->cn; i++) {
		struct smtp_rcpt *x = &job->xs[i];
		if (x->st == RS_OPEN) { /* never got to it here */
			smtp_rcpt_set(x, RS_SOFT, job->why_dsn,
				      job->why.len ? buf_str(&job->why) : "delivery failed");
			x->relay = NULL;
		}
		job->left |= x->st == RS_SOFT;
	}
	chunk_next(job);
}

static void chunk_begin(struct deliver_smtp_job *job)
{
	struct smtp_conn_req req;

	job->cn = job->n - job->pos;
	if (job->pc->rcpt_limit > 0 && job->cn > (size_t)job->pc->rcpt_limit)
		job->cn = (size_t)job->pc->rcpt_limit;
	job->xs = xcalloc(job->cn, sizeof(*job->xs));
	for (size_t i = 0; i < job->cn; i++) {
		job->xs[i].r = job->rs[job->pos + i];
		buf_init(&job->xs[i].text);
	}
	job->relays = xcalloc(job->servers.n + 1, sizeof(*job->relays));
	for (size_t h = 0; h < job->servers.n; h++) {
		buf_init(&job->relays[h]);
		smtp_relay_name(&job->servers.v[h], &job->relays[h]);
	}
	buf_reset(&job->why);
	snprintf(job->why_dsn, sizeof(job->why_dsn), "4.4.1");
	job->sessions = 0;
	job->left = 1;
	job->t_conn = 0;
	job->h = 0;
	job->tried_len = 0;
	/* A connection kept from an earlier delivery to this destination. */
	chunk_req(job, &req, &job->cached_relay, chunk_cached_done);
	if (!smtp_conn_start_cached(&req))
		chunk_next(job);
}

static void chunk_end(struct deliver_smtp_job *job);

/* The next server, or the end of the attempt. */
static void chunk_next(struct deliver_smtp_job *job)
{
	const struct deliver_smtp_conf *sc = job->sc;
	struct smtp_conn_req req;

	if (smtp_is_closed())
		return; /* shutting down: the message stays queued */
	while (job->h < job->servers.n && job->left) {
		const struct smtp_server *sv = &job->servers.v[job->h];
		if (sc->mx_session_limit > 0 && job->sessions >= sc->mx_session_limit)
			break;
		if (job->tried_len == sv->sslen && memcmp(&job->tried, &sv->ss, job->tried_len) == 0) {
			job->h++;
			continue;
		}
		buf_reset(&job->why);
		snprintf(job->why_dsn, sizeof(job->why_dsn), "4.4.1");
		for (size_t i = 0; i < job->cn; i++)
			if (job->xs[i].st == RS_SOFT)
				job->xs[i].st = RS_OPEN; /* try it here */
		chunk_req(job, &req, &job->relays[job->h], chunk_session_done);
		job->h++;
		smtp_conn_start(&req, sv); /* its end may come before it returns */
		return;
	}
	chunk_end(job);
}

/* Every recipient of the transaction gets its report. */
static void chunk_end(struct deliver_smtp_job *job)
{
	for (size_t i = 0; i < job->cn; i++) {
		struct smtp_rcpt *x = &job->xs[i];
		struct deliver_rcpt *r = x->r;
		if (x->st == RS_OPEN || x->dsn[0] == 0) /* never without a status */
			smtp_rcpt_set(x, RS_SOFT, "4.4.1",
				      job->why.len ? buf_str(&job->why)
						   : "delivery failed: no server tried");
		r->agent = smtp_agent(job->transport);
		r->t_conn = job->t_conn;
		r->remote_dsn = x->remote_dsn;
		if (x->st == RS_SOFT && x->dsn[0] != '4')
			x->dsn[0] = '4'; /* a 5xx we retry elsewhere stays a deferral */
		deliver_report(r, x->relay ? x->relay : "none",
			       x->st == RS_SENT ? (x->dsn[0] == '2' ? x->dsn : "2.0.0") : x->dsn, "%s",
			       buf_str(&x->text));
	}
	/* Nobody answered at all: spare the destination for a while. */
	if (job->sessions == 0 && job->left && job->servers.n > 0 && job->why.len > 0)
		smtp_dead_set(job->key, buf_str(&job->why), job->sc->dead_time);
	else if (job->sessions > 0)
		smtp_dead_clear(job->key);
	for (size_t i = 0; i < job->cn; i++)
		buf_free(&job->xs[i].text);
	free(job->xs);
	job->xs = NULL;
	for (size_t h = 0; h < job->servers.n; h++)
		buf_free(&job->relays[h]);
	free(job->relays);
	job->relays = NULL;
	job->pos += job->cn;
	if (job->pos < job->n)
		chunk_begin(job);
	else
		job_end(job);
}

/* --- API --------------------------------------------------------------------- */

/* Credentials for this destination (and sender), and the cache key that
 * keeps authenticated connections apart. */
static int smtp_job_sasl(struct deliver_smtp_job *job, const char *sender, struct buf *err)
{
	struct buf user = BUF_INIT, pass = BUF_INIT, key = BUF_INIT;
	int rc = smtp_sasl_find(job->sc, sender, job->nexthop, &user, &pass, err);

	buf_set(&key, job->key);
	if (rc > 0) {
		job->sasl_user = buf_detach(&user);
		job->sasl_pass = buf_detach(&pass);
		buf_printf(&key, " %s", job->sasl_user);
	}
	job->cache_key = buf_detach(&key);
	if (pass.data)
		explicit_bzero(pass.data, pass.len);
	buf_free(&user), buf_free(&pass);
	return rc < 0 ? -1 : 0;
}

struct deliver_smtp_job *deliver_smtp_prepare(struct deliver_rcpt **rs, size_t n,
					      const char *transport, const char *nexthop)
{
	struct deliver_msg *m = rs[0]->msg;
	const struct deliver_smtp_conf *sc = m->conf->smtp;
	struct deliver_smtp_job *job = xcalloc(1, sizeof(*job));
	struct buf why = BUF_INIT;

	job->transport = xstrdup(transport);
	job->nexthop = xstrdup(nexthop);
	job->key = xstrdup(transport);
	job->key = xrealloc(job->key, strlen(transport) + strlen(nexthop) + 2);
	strcat(strcat(job->key, ":"), nexthop);
	job->rs = xcalloc(n, sizeof(*job->rs));
	memcpy(job->rs, rs, n * sizeof(*rs));
	job->n = n;
	job->sc = sc;
	job->pc = smtp_proto(sc, transport);
	job->lmtp = strcmp(transport, "lmtp") == 0;
	buf_init(&job->cached_relay);
	buf_init(&job->why);
	if (smtp_dead_get(job->key, &why)) {
		job_report_all(job, "4.4.1", buf_str(&why));
	} else if (smtp_tls_policy_find(sc, nexthop, &job->tls, &why) < 0 ||
		   smtp_job_sasl(job, m->env->sender, &why) < 0) {
		job_report_all(job, "4.3.0", buf_str(&why)); /* a table is down: wait */
	} else {
		buf_free(&why);
		return job;
	}
	buf_free(&why);
	job_free(job);
	return NULL;
}

int deliver_smtp_launch(struct deliver_smtp_job **jobs, size_t n, void (*done)(void *arg),
			void *arg)
{
	struct smtp_batch *b;
	struct event_base *base;

	if (n == 0)
		return 0;
	if (smtp_engine == NULL || smtp_is_closed()) {
		for (size_t i = 0; i < n; i++) {
			job_report_all(jobs[i], "4.3.0", "mail transport unavailable");
			job_free(jobs[i]);
		}
		return 0;
	}
	/* One loop for all of the message's jobs: their reports never race. */
	base = engine_next(smtp_engine);
	b = xcalloc(1, sizeof(*b));
	b->pending = (int)n;
	b->done = done;
	b->arg = arg;
	for (size_t i = 0; i < n; i++) {
		jobs[i]->base = base;
		jobs[i]->batch = b;
	}
	for (size_t i = 0; i < n; i++)
		if (engine_run_on(base, job_start, jobs[i]) < 0)
			msg_warn("smtp: cannot start delivery to %s", jobs[i]->nexthop);
	return 1;
}

/* --- a worker that must wait (local(8) forwarding to a remote address) ---
 * Waiters share one lock and condition: shutdown wakes them all. */

static pthread_mutex_t smtp_wait_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t smtp_wait_cond = PTHREAD_COND_INITIALIZER;
static int smtp_cancelled; /* every loop has closed its sessions (smtp_wait_lock) */

static void smtp_waiter_done(void *arg)
{
	pthread_mutex_lock(&smtp_wait_lock);
	*(int *)arg = 1;
	pthread_cond_broadcast(&smtp_wait_cond);
	pthread_mutex_unlock(&smtp_wait_lock);
}

void deliver_smtp_wait(struct deliver_smtp_job **jobs, size_t n)
{
	struct deliver_rcpt **rs = NULL;
	size_t nrs = 0;
	int done = 0, cancelled;

	/* remember the recipients: the jobs are gone once launched */
	for (size_t i = 0; i < n; i++) {
		rs = xrealloc(rs, (nrs + jobs[i]->n) * sizeof(*rs));
		memcpy(rs + nrs, jobs[i]->rs, jobs[i]->n * sizeof(*rs));
		nrs += jobs[i]->n;
	}
	if (deliver_smtp_launch(jobs, n, smtp_waiter_done, &done)) {
		pthread_mutex_lock(&smtp_wait_lock);
		while (!done && !smtp_cancelled)
			pthread_cond_wait(&smtp_wait_cond, &smtp_wait_lock);
		cancelled = !done;
		pthread_mutex_unlock(&smtp_wait_lock);
		/* Shut down mid-delivery (no loop runs a job any more): what got
		 * no outcome stays queued. */
		for (size_t i = 0; cancelled && i < nrs; i++)
			if (rs[i]->nsent + rs[i]->nbounced + rs[i]->ndeferred == 0)
				deliver_report(rs[i], "none", "4.3.0", "mail system is shutting down");
	}
	free(rs);
}

/* --- start and stop ------------------------------------------------------- */

static void smtp_reaper_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	smtp_conn_cache_reap(0);
}

int deliver_smtp_init(struct engine *e, struct buf *err)
{
	struct timeval second = {1, 0};

	smtp_engine = e;
	smtp_reaper = event_new(engine_base(e, 0), -1, EV_PERSIST, smtp_reaper_cb, NULL);
	if (smtp_reaper == NULL || event_add(smtp_reaper, &second) < 0) {
		buf_puts(err, "smtp: cannot start the connection cache timer");
		return -1;
	}
	return 0;
}

struct smtp_cancel {
	struct event_base *base;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int done;
};

static void smtp_cancel_here(void *arg)
{
	struct smtp_cancel *c = arg;

	smtp_conn_cancel_all(c->base);
	pthread_mutex_lock(&c->lock);
	c->done = 1;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

void deliver_smtp_shutdown(void)
{
	if (smtp_engine == NULL)
		return;
	__atomic_store_n(&smtp_closed, 1, __ATOMIC_RELAXED);
	if (smtp_reaper != NULL) {
		event_free(smtp_reaper);
		smtp_reaper = NULL;
	}
	/* Each loop closes its own sessions (libevent objects are its own);
	 * their messages stay queued and are delivered after the restart. */
	for (int i = 0; i < engine_nloops(smtp_engine); i++) {
		struct smtp_cancel c = {engine_base(smtp_engine, i), PTHREAD_MUTEX_INITIALIZER,
					PTHREAD_COND_INITIALIZER, 0};
		if (engine_run_on(c.base, smtp_cancel_here, &c) < 0)
			continue;
		pthread_mutex_lock(&c.lock);
		while (!c.done)
			pthread_cond_wait(&c.cond, &c.lock);
		pthread_mutex_unlock(&c.lock);
	}
	smtp_conn_cache_reap(1);
	pthread_mutex_lock(&smtp_wait_lock);
	smtp_cancelled = 1;
	pthread_cond_broadcast(&smtp_wait_cond);
	pthread_mutex_unlock(&smtp_wait_lock);
}
