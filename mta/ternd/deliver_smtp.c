/* deliver_smtp.c - the smtp, relay and lmtp transports: Postfix's smtp(8)
 * and lmtp(8) client for the recipients of one message that share a
 * destination (deliver.h).
 *
 * Destination -> servers: "[host]:port" and lmtp's "inet:"/"unix:" are
 * used as given; "domain" or "domain:port" looks up MX records (sorted by
 * preference, equal ones shuffled; none: the domain's own A/AAAA; null MX
 * bounces 5.1.10), trims the list where it reaches this host (mail loops
 * back to myself) and caps it at smtp_mx_address_limit addresses. A
 * nexthop may be a list ("a, b"): tried in order as one server list.
 *
 * Per server: connect (smtp_connect_timeout), greeting, EHLO (HELO when
 * EHLO is refused; LMTP: LHLO), then MAIL, every RCPT and DATA, pipelined
 * when the server offers PIPELINING, each reply under its Postfix
 * timeout. SMTP gets one reply after the content for all accepted
 * recipients, LMTP one per recipient. A connection failure, a 4xx/5xx
 * greeting or a broken session moves on to the next server; so do
 * recipients that got a 4xx (at most smtp_mx_session_limit sessions).
 * What remains is deferred with the last reason.
 *
 * Concurrency per destination is bounded process-wide by
 * <transport>_destination_concurrency_limit: a worker waits for a slot.
 * Recipients go in transactions of at most
 * <transport>_destination_recipient_limit.
 *
 * Blocking I/O with poll() deadlines on the worker thread (design.md
 * wants the client on the event loops; see docs/delivery.md for why it
 * is not yet). Pitfall: every recipient must get exactly one
 * deliver_report(), whatever breaks when.
 */
#include "deliver.h"
#include "listener.h"
#include "queue.h"
#include "resolver.h"

#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <ifaddrs.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define SMTP_LINE_MAX 4096   /* a reply line longer than this is cut */
#define SMTP_REPLY_LINES 100 /* a reply with more lines is broken */
#define SMTP_PORT 25
#define LMTP_PORT 24

/* --- settings ---------------------------------------------------------- */

struct smtp_proto_conf {
	long long connect, helo, mail, rcpt, data_init, data_xfer, data_done, quit; /* seconds */
	long long concurrency, rcpt_limit;
};

struct deliver_smtp_conf {
	struct smtp_proto_conf smtp, lmtp, relay;
	char *helo_name, *myhostname;
	long long mx_address_limit, mx_session_limit;
	int skip_5xx_greeting;
	int want_v4, want_v6;
	long long cache_time, reuse_time; /* smtp_connection_cache/reuse_time_limit */
	long long dead_time;		  /* a destination nobody answers at: skipped this long */
	struct resolver *resolver; /* only to check dns_servers; lookups use smtp_resolver() */
	unsigned long generation;  /* which settings a thread's resolver belongs to */
	struct listen_set self; /* our listeners, for loop detection */
	struct sockaddr_storage *ifaddrs; /* this host's interface addresses (wildcard listeners) */
	size_t nifaddrs;
	char *dns_servers;
};

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
	free(sc->ifaddrs);
	free(sc->helo_name);
	free(sc->myhostname);
	free(sc->dns_servers);
	free(sc);
}

/* --- per-destination concurrency ----------------------------------------
 * At most <transport>_destination_concurrency_limit deliveries per
 * destination; a worker waits for a slot, at most SMTP_SLOT_WAIT, then
 * the mail is deferred (4.4.5). Known limit: while a backlog for one slow
 * site waits, those workers do nothing else (Postfix's qmgr would not
 * hand such mail out at all); default_process_limit workers bound it.
 * Entries go when nobody uses or waits for them. */

#define SMTP_SLOT_WAIT 60 /* seconds */

struct smtp_dest {
	char *key; /* "transport:nexthop" */
	int active, waiting;
	struct smtp_dest *next;
};

static pthread_mutex_t smtp_dest_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t smtp_dest_cond = PTHREAD_COND_INITIALIZER;
static struct smtp_dest *smtp_dests;

static void smtp_dest_drop(struct smtp_dest *d) /* lock held */
{
	struct smtp_dest **pp;

	if (d->active > 0 || d->waiting > 0)
		return;
	for (pp = &smtp_dests; *pp && *pp != d; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = d->next;
	free(d->key);
	free(d);
}

/* A slot for key, or NULL (busy for too long: defer). */
static struct smtp_dest *smtp_dest_enter(const char *key, long long limit)
{
	struct smtp_dest *d;
	struct timespec dl;

	pthread_mutex_lock(&smtp_dest_lock);
	for (d = smtp_dests; d && strcmp(d->key, key) != 0; d = d->next)
		;
	if (d == NULL) {
		d = xcalloc(1, sizeof(*d));
		d->key = xstrdup(key);
		d->next = smtp_dests;
		smtp_dests = d;
	}
	if (limit > 0 && d->active >= limit) {
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += SMTP_SLOT_WAIT;
		d->waiting++;
		while (d->active >= limit)
			if (pthread_cond_timedwait(&smtp_dest_cond, &smtp_dest_lock, &dl) == ETIMEDOUT)
				break;
		d->waiting--;
		if (d->active >= limit) {
			pthread_mutex_unlock(&smtp_dest_lock);
			return NULL;
		}
	}
	d->active++;
	pthread_mutex_unlock(&smtp_dest_lock);
	return d;
}

static void smtp_dest_leave(struct smtp_dest *d)
{
	pthread_mutex_lock(&smtp_dest_lock);
	d->active--;
	pthread_cond_broadcast(&smtp_dest_cond);
	smtp_dest_drop(d);
	pthread_mutex_unlock(&smtp_dest_lock);
}

/* --- servers -------------------------------------------------------------- */

struct smtp_server {
	char *name; /* host name for logs ("mx1.example.com", "127.0.0.1"; unix: myhostname) */
	char addr[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* printable, or the socket path */
	struct sockaddr_storage ss;
	socklen_t sslen;
	int port;
	int from_mx; /* subject to loop detection */
};

struct smtp_servers {
	struct smtp_server *v;
	size_t n;
};

/* Why no server could be found: dsn and text, for every recipient. */
struct smtp_fail {
	char dsn[16];
	struct buf text;
};

static void smtp_fail_set(struct smtp_fail *f, const char *dsn, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void smtp_fail_set(struct smtp_fail *f, const char *dsn, const char *fmt, ...)
{
	va_list ap;

	snprintf(f->dsn, sizeof(f->dsn), "%s", dsn);
	buf_reset(&f->text);
	va_start(ap, fmt);
	buf_vprintf(&f->text, fmt, ap);
	va_end(ap);
}

static void smtp_servers_free(struct smtp_servers *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i].name);
	free(s->v);
	s->v = NULL, s->n = 0;
}

static void smtp_server_add(struct smtp_servers *s, const char *name, int family,
			    const unsigned char *addr, int port, int from_mx)
{
	struct smtp_server *sv;

	s->v = xrealloc(s->v, (s->n + 1) * sizeof(*s->v));
	sv = &s->v[s->n++];
	memset(sv, 0, sizeof(*sv));
	sv->name = xstrdup(name);
	sv->port = port;
	sv->from_mx = from_mx;
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&sv->ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		memcpy(&sin->sin_addr, addr, 4);
		sv->sslen = sizeof(*sin);
		inet_ntop(AF_INET, addr, sv->addr, sizeof(sv->addr));
	} else if (family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&sv->ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		memcpy(&sin6->sin6_addr, addr, 16);
		sv->sslen = sizeof(*sin6);
		inet_ntop(AF_INET6, addr, sv->addr, sizeof(sv->addr));
	} else { /* AF_UNIX: addr is the path */
		struct sockaddr_un *sun = (struct sockaddr_un *)&sv->ss;
		sun->sun_family = AF_UNIX;
		snprintf(sun->sun_path, sizeof(sun->sun_path), "%s", (const char *)addr);
		sv->sslen = sizeof(*sun);
		snprintf(sv->addr, sizeof(sv->addr), "%s", (const char *)addr);
	}
}

/* Is this one of this host's interface addresses? */
static int smtp_addr_is_local(const struct deliver_smtp_conf *sc, const struct sockaddr *sa)
{
	for (size_t i = 0; i < sc->nifaddrs; i++) {
		const struct sockaddr *la = (const struct sockaddr *)&sc->ifaddrs[i];
		if (la->sa_family != sa->sa_family)
			continue;
		if (sa->sa_family == AF_INET &&
		    ((const struct sockaddr_in *)la)->sin_addr.s_addr ==
			((const struct sockaddr_in *)sa)->sin_addr.s_addr)
			return 1;
		if (sa->sa_family == AF_INET6 &&
		    memcmp(&((const struct sockaddr_in6 *)la)->sin6_addr,
			   &((const struct sockaddr_in6 *)sa)->sin6_addr, 16) == 0)
			return 1;
	}
	return 0;
}

/* Is this server one of our own listeners (mail would loop)? Same port,
 * and the listener's address, or for a wildcard listener any address of
 * this host (never "any address at all"). */
static int smtp_server_is_self(const struct deliver_smtp_conf *sc, const struct smtp_server *sv)
{
	const struct sockaddr *sa = (const struct sockaddr *)&sv->ss;

	for (size_t i = 0; i < sc->self.n; i++) {
		const struct sockaddr *la = (const struct sockaddr *)&sc->self.v[i].ss;
		if (la->sa_family == AF_INET && sa->sa_family == AF_INET) {
			const struct sockaddr_in *a = (const void *)la, *b = (const void *)sa;
			if (a->sin_port != b->sin_port)
				continue;
			if (a->sin_addr.s_addr == b->sin_addr.s_addr ||
			    (a->sin_addr.s_addr == htonl(INADDR_ANY) && smtp_addr_is_local(sc, sa)))
				return 1;
		} else if (la->sa_family == AF_INET6 && sa->sa_family == AF_INET6) {
			const struct sockaddr_in6 *a = (const void *)la, *b = (const void *)sa;
			if (a->sin6_port != b->sin6_port)
				continue;
			if (memcmp(&a->sin6_addr, &b->sin6_addr, 16) == 0 ||
			    (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr) && smtp_addr_is_local(sc, sa)))
				return 1;
		}
	}
	return 0;
}

/* A lookup on this thread's own resolver: libunbound's pending-query
 * bookkeeping in resolver.c is per resolver and not thread-safe, and the
 * workers look up concurrently. Made on first use, replaced when the
 * settings change (reload). */
static __thread struct resolver *smtp_thread_resolver;
static __thread unsigned long smtp_thread_resolver_gen;

void deliver_smtp_thread_done(void)
{
	if (smtp_thread_resolver != NULL)
		resolver_free(smtp_thread_resolver);
	smtp_thread_resolver = NULL;
}

static void resolver_lookup_here(const struct deliver_smtp_conf *sc, const char *name, int qtype,
				 struct resolver_result *res)
{
	struct resolver *mine = smtp_thread_resolver;
	struct buf err = BUF_INIT;

	if (mine == NULL || smtp_thread_resolver_gen != sc->generation) {
		if (mine != NULL)
			resolver_free(mine);
		mine = smtp_thread_resolver = resolver_new(sc->dns_servers, 0, NULL, &err);
		smtp_thread_resolver_gen = sc->generation;
	}
	if (mine == NULL) {
		res->status = RESOLVER_TEMPFAIL;
		buf_printf(&res->msg, "resolver: %s", buf_str(&err));
	} else {
		resolver_lookup(mine, name, qtype, res);
	}
	buf_free(&err);
}

/* Addresses of one host name (or literal) into s. 0 found, 1 none (the
 * name does not exist or has no address), -1 temporary failure (f set). */
static int smtp_host_addrs(const struct deliver_smtp_conf *sc, const char *host, int port,
			   int from_mx, struct smtp_servers *s, struct smtp_fail *f)
{
	unsigned char a[16];
	int types[2], nt = 0, found = 0, temp = 0;

	if (inet_pton(AF_INET, host, a) == 1) {
		smtp_server_add(s, host, AF_INET, a, port, from_mx);
		return 0;
	}
	if (inet_pton(AF_INET6, host, a) == 1) {
		smtp_server_add(s, host, AF_INET6, a, port, from_mx);
		return 0;
	}
	if (sc->want_v4)
		types[nt++] = RESOLVER_T_A;
	if (sc->want_v6)
		types[nt++] = RESOLVER_T_AAAA;
	for (int t = 0; t < nt; t++) {
		struct resolver_result res;
		resolver_result_init(&res);
		resolver_lookup_here(sc, host, types[t], &res);
		if (res.status == RESOLVER_FOUND) {
			for (size_t i = 0; i < res.count; i++)
				smtp_server_add(s, host, res.rr[i].family, res.rr[i].addr, port,
						from_mx);
			found = 1;
		} else if (res.status == RESOLVER_TEMPFAIL) {
			temp = 1;
			smtp_fail_set(f, "4.4.3",
				      "Host or domain name not found. Name service error for "
				      "name=%s type=%s: Host not found, try again",
				      host, resolver_type_name(types[t]));
		}
		resolver_result_free(&res);
	}
	if (found)
		return 0;
	return temp ? -1 : 1;
}

static int smtp_mx_cmp(const void *a, const void *b)
{
	const struct resolver_rr *x = a, *y = b;
	return (x->pref > y->pref) - (x->pref < y->pref);
}

/* MX records of domain, in preference order, equal ones shuffled. */
static int smtp_mx_hosts(const struct deliver_smtp_conf *sc, const char *domain, int port,
			 struct smtp_servers *s, struct smtp_fail *f, int *bounce)
{
	struct resolver_result res;
	int rc = 0;

	resolver_result_init(&res);
	resolver_lookup_here(sc, domain, RESOLVER_T_MX, &res);
	switch (res.status) {
	case RESOLVER_FOUND: {
		size_t self = res.count;
		qsort(res.rr, res.count, sizeof(*res.rr), smtp_mx_cmp);
		for (size_t i = 0; i < res.count;) { /* shuffle runs of equal preference */
			size_t j = i;
			while (j < res.count && res.rr[j].pref == res.rr[i].pref)
				j++;
			for (size_t k = j - 1; k > i; k--) {
				uint32_t r = 0;
				struct resolver_rr tmp;
				if (getrandom(&r, sizeof(r), 0) != sizeof(r))
					r = (uint32_t)rand();
				size_t pick = i + r % (k - i + 1);
				tmp = res.rr[k], res.rr[k] = res.rr[pick], res.rr[pick] = tmp;
			}
			i = j;
		}
		for (size_t i = 0; i < res.count && i < self; i++) {
			size_t before = s->n;
			int hr = smtp_host_addrs(sc, res.rr[i].text, port, 1, s, f);
			if (hr < 0 && s->n == 0)
				rc = -1; /* remembered; a later host may still do */
			for (size_t k = before; k < s->n; k++) {
				if (smtp_server_is_self(sc, &s->v[k])) {
					/* we are this MX: only better ones may take it */
					for (size_t m = k; m < s->n; m++)
						free(s->v[m].name);
					s->n = k;
					self = i;
					break;
				}
			}
		}
		if (s->n == 0 && self < res.count) {
			smtp_fail_set(f, "5.4.6", "mail for %s loops back to myself", domain);
			*bounce = 1;
			rc = -1;
		} else if (s->n == 0 && rc == 0) {
			smtp_fail_set(f, "4.4.4", "Host or domain name not found. Name service error for "
						  "name=%s type=A: Host not found", res.rr[0].text);
			rc = -1;
		} else if (s->n > 0) {
			rc = 0;
		}
		break;
	}
	case RESOLVER_NULLMX:
		smtp_fail_set(f, "5.1.10", "Domain %s does not accept mail (nullMX)", domain);
		*bounce = 1;
		rc = -1;
		break;
	case RESOLVER_NXDOMAIN:
		smtp_fail_set(f, "5.4.4", "Host or domain name not found. Name service error for "
					  "name=%s type=MX: Host not found", domain);
		*bounce = 1;
		rc = -1;
		break;
	case RESOLVER_NODATA: { /* no MX: the domain's own addresses (RFC 5321 §5.1) */
		int hr = smtp_host_addrs(sc, domain, port, 1, s, f);
		if (hr > 0) {
			smtp_fail_set(f, "5.4.4", "Host or domain name not found. Name service error "
						  "for name=%s type=AAAA: Host found but no data record "
						  "of requested type", domain);
			*bounce = 1;
		}
		rc = hr == 0 ? 0 : -1;
		for (size_t k = 0; rc == 0 && k < s->n; k++)
			if (smtp_server_is_self(sc, &s->v[k])) {
				smtp_fail_set(f, "5.4.6", "mail for %s loops back to myself", domain);
				*bounce = 1;
				rc = -1;
			}
		break;
	}
	default:
		smtp_fail_set(f, "4.4.3", "Host or domain name not found. Name service error for "
					  "name=%s type=MX: Host not found, try again", domain);
		rc = -1;
		break;
	}
	resolver_result_free(&res);
	return rc;
}

static int smtp_port_of(const char *s, size_t len, int def)
{
	char tmp[32];
	long v;
	char *end;

	if (len == 0)
		return def;
	if (len >= sizeof(tmp))
		return -1;
	memcpy(tmp, s, len);
	tmp[len] = 0;
	if (strcmp(tmp, "smtp") == 0)
		return SMTP_PORT;
	if (strcmp(tmp, "lmtp") == 0)
		return LMTP_PORT;
	if (strcmp(tmp, "submission") == 0)
		return 587;
	v = strtol(tmp, &end, 10);
	return *end == 0 && v > 0 && v < 65536 ? (int)v : -1;
}

/* One nexthop item into servers: "[host]:port", "[host]", "host:port",
 * "host", lmtp "unix:/path", "inet:...". */
static int smtp_nexthop_one(const struct deliver_smtp_conf *sc, int lmtp, const char *item,
			    struct smtp_servers *s, struct smtp_fail *f, int *bounce)
{
	int defport = lmtp ? LMTP_PORT : SMTP_PORT, port, mx = !lmtp, rc;
	const char *host = item, *colon;
	char *h;

	if (lmtp && strncmp(item, "unix:", 5) == 0) {
		if (strlen(item + 5) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			smtp_fail_set(f, "4.3.5", "unix socket path too long: %s", item + 5);
			return -1;
		}
		smtp_server_add(s, sc->myhostname, AF_UNIX, (const unsigned char *)item + 5, 0, 0);
		return 0;
	}
	if (strncmp(item, "inet:", 5) == 0)
		host = item + 5;
	if (*host == '[') {
		const char *close = strchr(host, ']');
		if (close == NULL) {
			smtp_fail_set(f, "4.3.5", "bad nexthop syntax: %s", item);
			return -1;
		}
		port = close[1] == ':' ? smtp_port_of(close + 2, strlen(close + 2), defport)
		       : close[1] == 0 ? defport
				       : -1;
		h = xstrndup(host + 1, (size_t)(close - host - 1));
		mx = 0;
	} else {
		colon = strrchr(host, ':');
		if (colon != NULL && strchr(host, ':') != colon)
			colon = NULL; /* a bare IPv6 address: no port */
		port = colon ? smtp_port_of(colon + 1, strlen(colon + 1), defport) : defport;
		h = colon ? xstrndup(host, (size_t)(colon - host)) : xstrdup(host);
	}
	if (port < 0 || *h == 0) {
		smtp_fail_set(f, "4.3.5", "bad nexthop syntax: %s", item);
		free(h);
		return -1;
	}
	{
		unsigned char a[16];
		if (inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1)
			mx = 0;
	}
	if (mx) {
		rc = smtp_mx_hosts(sc, h, port, s, f, bounce);
	} else {
		rc = smtp_host_addrs(sc, h, port, 0, s, f);
		if (rc > 0) {
			smtp_fail_set(f, "5.4.4", "Host or domain name not found. Name service error "
						  "for name=%s type=A: Host not found", h);
			*bounce = 1;
			rc = -1;
		}
	}
	free(h);
	return rc;
}

/* The whole nexthop (maybe a list) into one server list, capped. */
static int smtp_servers_find(const struct deliver_smtp_conf *sc, int lmtp, const char *nexthop,
			     struct smtp_servers *s, struct smtp_fail *f, int *bounce)
{
	char *copy = xstrdup(nexthop), *save = NULL, *item;
	int any = 0, temp = 0, hard = 0;

	for (item = strtok_r(copy, ", \t", &save); item; item = strtok_r(NULL, ", \t", &save)) {
		int b = 0;
		if (smtp_nexthop_one(sc, lmtp, item, s, f, &b) == 0)
			any = 1;
		else if (b)
			hard = 1;
		else
			temp = 1; /* a temporary failure anywhere: defer, not bounce */
	}
	*bounce = hard && !temp && !any;
	free(copy);
	if (sc->mx_address_limit > 0 && s->n > (size_t)sc->mx_address_limit) {
		for (size_t i = (size_t)sc->mx_address_limit; i < s->n; i++)
			free(s->v[i].name);
		s->n = (size_t)sc->mx_address_limit;
	}
	if (s->n > 0) {
		*bounce = 0;
		return 0;
	}
	if (f->text.len == 0)
		smtp_fail_set(f, "4.4.3", "no server found for %s", nexthop);
	return -1;
}

/* --- the conversation ----------------------------------------------------- */

struct smtp_reply {
	int code;
	char dsn[16];
	struct buf text; /* every line, joined with spaces */
};

struct smtp_sess {
	const struct deliver_smtp_conf *sc;
	const struct smtp_proto_conf *pc;
	const struct smtp_server *sv;
	int lmtp;
	int fd;
	char rbuf[8192];
	size_t rlen, rpos;
	struct buf out;
	int pipelining, size_ok, eightbit, smtputf8, dsn;
	long long size_max;
	struct buf why; /* what broke the session: "lost connection with h[a] while ..." */
	/* connection reuse */
	const char *cache_key; /* where a finished session may wait for the next one */
	int uses;	       /* transactions on this connection so far */
	int reused;	       /* taken from the cache: no greeting or EHLO now */
	int stale;	       /* reused and found dead before anything happened */
	int completed;	       /* a transaction ended cleanly: reusable */
	double born;	       /* connected at (deliver_now) */
	struct smtp_server own; /* the server, owned, while cached */
};

static void smtp_relay_name(const struct smtp_server *sv, struct buf *out)
{
	if (sv->ss.ss_family == AF_UNIX) /* Postfix: "myhostname[/path]" */
		buf_printf(out, "%s[%s]", sv->name, sv->addr);
	else
		buf_printf(out, "%s[%s]:%d", sv->name, sv->addr, sv->port);
}

static void smtp_hostaddr(const struct smtp_server *sv, struct buf *out)
{
	buf_printf(out, "%s[%s]", sv->name, sv->addr);
}

static long long smtp_ms_left(const struct timespec *deadline)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long long)(deadline->tv_sec - now.tv_sec) * 1000 +
	       (deadline->tv_nsec - now.tv_nsec) / 1000000;
}

static void smtp_deadline(struct timespec *d, long long secs)
{
	clock_gettime(CLOCK_MONOTONIC, d);
	d->tv_sec += secs > 0 ? secs : 1;
}

/* Wait for fd to be ready; 0 ok, -1 timeout or error (why set). */
static int smtp_wait(struct smtp_sess *ss, short ev, const struct timespec *deadline,
		     const char *doing)
{
	struct buf ha = BUF_INIT;
	int rc;

	for (;;) {
		long long ms = smtp_ms_left(deadline);
		struct pollfd p = {ss->fd, ev, 0};
		if (ms <= 0) {
			smtp_hostaddr(ss->sv, &ha);
			buf_set(&ss->why, "");
			buf_printf(&ss->why, "conversation with %s timed out while %s", buf_str(&ha),
				   doing);
			buf_free(&ha);
			return -1;
		}
		rc = poll(&p, 1, ms > 60000 ? 60000 : (int)ms);
		if (rc > 0)
			return 0;
		if (rc < 0 && errno != EINTR) {
			smtp_hostaddr(ss->sv, &ha);
			buf_set(&ss->why, "");
			buf_printf(&ss->why, "lost connection with %s while %s", buf_str(&ha), doing);
			buf_free(&ha);
			return -1;
		}
	}
}

static void smtp_lost(struct smtp_sess *ss, const char *doing)
{
	struct buf ha = BUF_INIT;

	smtp_hostaddr(ss->sv, &ha);
	buf_set(&ss->why, "");
	buf_printf(&ss->why, "lost connection with %s while %s", buf_str(&ha), doing);
	buf_free(&ha);
}

/* Write everything queued in ss->out. */
static int smtp_flush(struct smtp_sess *ss, long long secs, const char *doing)
{
	struct timespec dl;
	size_t off = 0;

	smtp_deadline(&dl, secs);
	while (off < ss->out.len) {
		ssize_t n = send(ss->fd, ss->out.data + off, ss->out.len - off, MSG_NOSIGNAL);
		if (n > 0) { /* as Postfix: the limit is on no progress, not on the whole */
			off += (size_t)n;
			smtp_deadline(&dl, secs);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
			if (smtp_wait(ss, POLLOUT, &dl, doing) < 0)
				return -1;
			continue;
		}
		smtp_lost(ss, doing);
		return -1;
	}
	buf_reset(&ss->out);
	return 0;
}

/* One line (without CRLF) into line; 0, or -1 (why set). */
static int smtp_getline(struct smtp_sess *ss, struct buf *line, const struct timespec *dl,
			const char *doing)
{
	buf_reset(line);
	for (;;) {
		while (ss->rpos < ss->rlen) {
			char c = ss->rbuf[ss->rpos++];
			if (c == '\n') {
				if (line->len && line->data[line->len - 1] == '\r')
					buf_truncate(line, line->len - 1);
				return 0;
			}
			if (line->len < SMTP_LINE_MAX)
				buf_putc(line, c);
		}
		ssize_t n = recv(ss->fd, ss->rbuf, sizeof(ss->rbuf), MSG_DONTWAIT);
		if (n > 0) {
			ss->rlen = (size_t)n, ss->rpos = 0;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
			if (smtp_wait(ss, POLLIN, dl, doing) < 0)
				return -1;
			continue;
		}
		smtp_lost(ss, doing);
		return -1;
	}
}

/* One reply (all its lines). 0, or -1 (why set; also for garbage). */
static int smtp_get_reply(struct smtp_sess *ss, struct smtp_reply *rep, long long secs,
			  const char *doing)
{
	struct buf line = BUF_INIT;
	struct timespec dl;
	int rc = -1;

	smtp_deadline(&dl, secs);
	buf_reset(&rep->text);
	rep->code = 0;
	for (int n = 0; n < SMTP_REPLY_LINES; n++) {
		const char *l;
		if (smtp_getline(ss, &line, &dl, doing) < 0)
			goto out;
		l = buf_str(&line);
		if (line.len < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' ||
		    l[2] < '0' || l[2] > '9' || (l[3] != 0 && l[3] != ' ' && l[3] != '-')) {
			struct buf ha = BUF_INIT;
			smtp_hostaddr(ss->sv, &ha);
			buf_set(&ss->why, "");
			buf_printf(&ss->why, "malformed reply from %s while %s: %.100s", buf_str(&ha),
				   doing, l);
			buf_free(&ha);
			goto out;
		}
		if (rep->text.len)
			buf_putc(&rep->text, ' ');
		for (const char *p = l; *p; p++) /* printable for logs and DSNs */
			buf_putc(&rep->text, (*p >= 32 && *p < 127) ? *p : '?');
		rep->code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
		if (l[3] != '-') {
			rc = 0;
			break;
		}
	}
	if (rc == 0) {
		/* enhanced status code "x.y.z" after the first "NNN " */
		const char *t = buf_str(&rep->text) + 4;
		int a, b, c, used = 0;
		if (rep->text.len > 4 && sscanf(t, "%1d.%3d.%3d%n", &a, &b, &c, &used) == 3 &&
		    a == rep->code / 100 && (t[used] == ' ' || t[used] == 0))
			snprintf(rep->dsn, sizeof(rep->dsn), "%d.%d.%d", a, b, c);
		else
			snprintf(rep->dsn, sizeof(rep->dsn), "%d.0.0", rep->code / 100);
	} else if (rep->code != 0 || ss->why.len == 0) {
		smtp_lost(ss, doing);
	}
out:
	buf_free(&line);
	return rc;
}

static int smtp_connect(struct smtp_sess *ss, struct buf *why)
{
	const struct smtp_server *sv = ss->sv;
	struct timespec dl;
	int fd = socket(sv->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
	int soerr = 0;
	socklen_t len = sizeof(soerr);

	if (fd < 0) {
		buf_printf(why, "socket: %s", strerror(errno));
		return -1;
	}
	if (sv->ss.ss_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ss->fd = fd;
	if (connect(fd, (const struct sockaddr *)&sv->ss, sv->sslen) < 0) {
		if (errno != EINPROGRESS) {
			soerr = errno;
		} else {
			smtp_deadline(&dl, ss->pc->connect);
			if (smtp_wait(ss, POLLOUT, &dl, "connecting") < 0)
				soerr = ETIMEDOUT;
			else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
				soerr = errno;
		}
	}
	if (soerr != 0) {
		if (sv->ss.ss_family == AF_UNIX)
			buf_printf(why, "connect to %s[%s]: %s", sv->name, sv->addr, strerror(soerr));
		else
			buf_printf(why, "connect to %s[%s]:%d: %s", sv->name, sv->addr, sv->port,
				   soerr == ETIMEDOUT ? "Connection timed out" : strerror(soerr));
		close(fd);
		ss->fd = -1;
		return -1;
	}
	return 0;
}

static void smtp_ehlo_parse(struct smtp_sess *ss, const char *text)
{
	/* text: "250-name greeting 250-PIPELINING 250 SIZE 1000": the lines
	 * were joined with spaces; walk the "250[- ]KEYWORD" items */
	const char *p = text;

	ss->pipelining = ss->size_ok = ss->eightbit = ss->smtputf8 = ss->dsn = 0;
	ss->size_max = 0;
	while ((p = strstr(p, "250")) != NULL) {
		if ((p != text && p[-1] != ' ') || (p[3] != '-' && p[3] != ' ')) {
			p += 3;
			continue;
		}
		p += 4;
		size_t klen = strcspn(p, " ");
		if (klen == 10 && strncasecmp(p, "PIPELINING", 10) == 0)
			ss->pipelining = 1;
		else if (klen == 8 && strncasecmp(p, "8BITMIME", 8) == 0)
			ss->eightbit = 1;
		else if (klen == 8 && strncasecmp(p, "SMTPUTF8", 8) == 0)
			ss->smtputf8 = 1;
		else if (klen == 3 && strncasecmp(p, "DSN", 3) == 0)
			ss->dsn = 1;
		else if (klen == 4 && strncasecmp(p, "SIZE", 4) == 0) {
			ss->size_ok = 1;
			if (p[4] == ' ' && p[5] >= '0' && p[5] <= '9')
				ss->size_max = strtoll(p + 5, NULL, 10);
		}
	}
}

/* --- one delivery attempt: recipients rs[0..n) on one server ------------- */

enum smtp_rstate { RS_OPEN, RS_SENT, RS_SOFT, RS_HARD };

struct smtp_rcpt {
	struct deliver_rcpt *r;
	enum smtp_rstate st;
	char dsn[16];
	struct buf text;      /* reply or reason */
	const char *relay;    /* for the log */
	int accepted;	      /* RCPT got 2xx in the current transaction */
	int remote_dsn;	      /* the server took NOTIFY= (no "relayed" notice) */
};

static void smtp_rcpt_set(struct smtp_rcpt *x, enum smtp_rstate st, const char *dsn,
			  const char *text)
{
	x->st = st;
	snprintf(x->dsn, sizeof(x->dsn), "%s", dsn);
	buf_set(&x->text, text);
}

/* RFC 3461 xtext as stored (ORCPT is kept raw): pass it on unchanged. */
static void smtp_rcpt_params(const struct smtp_sess *ss, const struct queue_rcpt *qr,
			     struct buf *out)
{
	if (!ss->dsn || qr == NULL)
		return;
	if (qr->notify) {
		const char *sep = "";
		buf_puts(out, " NOTIFY=");
		if (qr->notify & QUEUE_NOTIFY_NEVER)
			buf_puts(out, "NEVER");
		if (qr->notify & QUEUE_NOTIFY_SUCCESS)
			buf_printf(out, "%sSUCCESS", sep), sep = ",";
		if (qr->notify & QUEUE_NOTIFY_FAILURE)
			buf_printf(out, "%sFAILURE", sep), sep = ",";
		if (qr->notify & QUEUE_NOTIFY_DELAY)
			buf_printf(out, "%sDELAY", sep);
	}
	if (qr->orcpt)
		buf_printf(out, " ORCPT=%s", qr->orcpt);
}

/* The message content as SMTP DATA: CRLF line ends, dot-stuffed, the
 * final dot line. */
static void smtp_content(const char *c, size_t len, struct buf *out)
{
	size_t i = 0;

	buf_reserve(out, len + len / 32 + 8);
	while (i < len) {
		const char *nl = memchr(c + i, '\n', len - i);
		size_t l = nl ? (size_t)(nl - (c + i)) : len - i;
		if (l > 0 && c[i] == '.')
			buf_putc(out, '.');
		buf_append(out, c + i, l);
		buf_puts(out, "\r\n");
		i += l + (nl ? 1 : 0);
	}
	buf_puts(out, ".\r\n");
}

/* Apply a reply to every recipient still to do: after a failure that
 * ends the attempt with this server. */
static void smtp_rest(struct smtp_rcpt *xs, size_t n, enum smtp_rstate st, const char *dsn,
		      const char *text, const char *relay)
{
	for (size_t i = 0; i < n; i++)
		if (xs[i].st == RS_OPEN || (xs[i].st == RS_SOFT && st == RS_SOFT)) {
			smtp_rcpt_set(&xs[i], st, dsn, text);
			xs[i].relay = relay;
		}
}

/* "host h[a] said: 550 5.1.1 ... (in reply to RCPT TO command)" */
static void smtp_said(const struct smtp_sess *ss, const struct smtp_reply *rep, const char *cmd,
		      struct buf *out)
{
	struct buf ha = BUF_INIT;

	smtp_hostaddr(ss->sv, &ha);
	buf_reset(out);
	buf_printf(out, "host %s said: %s (in reply to %s)", buf_str(&ha), buf_str(&rep->text), cmd);
	buf_free(&ha);
}

/* --- connection cache ------------------------------------------------------
 * A session that ended a transaction cleanly is kept (after RSET) for
 * smtp_connection_cache_time_limit, for the next delivery to the same
 * destination, up to smtp_connection_reuse_time_limit after it was made;
 * a reaper thread closes what nobody took. Postfix's scache in one
 * process. */

struct smtp_cached {
	struct smtp_sess *ss; /* its sc/pc may be stale (reload): not used here */
	char *key;
	double expires;
	struct smtp_cached *next;
};

static pthread_mutex_t smtp_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct smtp_cached *smtp_cache;
static pthread_once_t smtp_reaper_once = PTHREAD_ONCE_INIT;

static void smtp_sess_close(struct smtp_sess *ss, int polite)
{
	if (ss->fd >= 0) {
		if (polite) /* best effort, never blocks */
			(void)send(ss->fd, "QUIT\r\n", 6, MSG_NOSIGNAL | MSG_DONTWAIT);
		close(ss->fd);
	}
	buf_free(&ss->out);
	buf_free(&ss->why);
	free(ss->own.name);
	free(ss);
}

static void smtp_cache_reap(int all)
{
	struct smtp_cached **pp, *c, *dead = NULL;
	double now = deliver_now();

	pthread_mutex_lock(&smtp_cache_lock);
	for (pp = &smtp_cache; (c = *pp) != NULL;) {
		if (all || now > c->expires) {
			*pp = c->next;
			c->next = dead;
			dead = c;
		} else {
			pp = &c->next;
		}
	}
	pthread_mutex_unlock(&smtp_cache_lock);
	while ((c = dead) != NULL) {
		dead = c->next;
		smtp_sess_close(c->ss, 1);
		free(c->key);
		free(c);
	}
}

static void *smtp_reaper(void *arg)
{
	(void)arg;
	for (;;) {
		sleep(1);
		smtp_cache_reap(0);
	}
	return NULL;
}

static void smtp_reaper_start(void)
{
	pthread_t t;
	pthread_attr_t a;

	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &a, smtp_reaper, NULL) != 0)
		msg_warn("smtp: cannot start the connection cache reaper: reuse is off");
	pthread_attr_destroy(&a);
}

/* Keep a finished session (RSET first, so the server agrees); 1 when kept. */
static int smtp_cache_put(struct smtp_sess *ss)
{
	struct smtp_reply rep = {0, "", BUF_INIT};
	struct smtp_cached *c;
	struct smtp_sess *copy;
	int ok;

	if (ss->cache_key == NULL || ss->sc->cache_time <= 0 || ss->rpos < ss->rlen ||
	    deliver_now() - ss->born > (double)ss->sc->reuse_time)
		return 0;
	buf_puts(&ss->out, "RSET\r\n");
	ok = smtp_flush(ss, 20, "sending RSET") == 0 &&
	     smtp_get_reply(ss, &rep, 20, "receiving the RSET reply") == 0 && rep.code == 250;
	buf_free(&rep.text);
	if (!ok)
		return 0;
	pthread_once(&smtp_reaper_once, smtp_reaper_start);
	copy = xcalloc(1, sizeof(*copy));
	*copy = *ss;
	buf_init(&copy->out);
	buf_init(&copy->why);
	copy->own = *ss->sv;
	copy->own.name = xstrdup(ss->sv->name);
	copy->sv = &copy->own;
	copy->cache_key = NULL;
	c = xcalloc(1, sizeof(*c));
	c->ss = copy;
	c->key = xstrdup(ss->cache_key);
	c->expires = deliver_now() + (double)ss->sc->cache_time;
	pthread_mutex_lock(&smtp_cache_lock);
	c->next = smtp_cache;
	smtp_cache = c;
	pthread_mutex_unlock(&smtp_cache_lock);
	return 1;
}

/* A cached session for key, or NULL. */
static struct smtp_sess *smtp_cache_get(const char *key)
{
	struct smtp_cached **pp, *c;
	struct smtp_sess *ss = NULL;

	smtp_cache_reap(0);
	pthread_mutex_lock(&smtp_cache_lock);
	for (pp = &smtp_cache; (c = *pp) != NULL; pp = &c->next)
		if (strcmp(c->key, key) == 0) {
			*pp = c->next;
			ss = c->ss;
			free(c->key);
			free(c);
			break;
		}
	pthread_mutex_unlock(&smtp_cache_lock);
	if (ss != NULL) {
		ss->reused = 1;
		ss->stale = ss->completed = 0;
	}
	return ss;
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
	smtp_cache_reap(1);
}

/* One session on one server for the recipients marked OPEN/SOFT in xs.
 * Returns 1 when the session happened (counts toward smtp_mx_session_limit),
 * 0 when it never got going (connection refused, bad greeting...). */
static int smtp_session(struct smtp_sess *ss, struct deliver_msg *m, struct smtp_rcpt *xs,
			size_t n, const char *relay, double *t_conn, struct buf *why)
{
	const struct queue_env *env = m->env;
	struct smtp_reply rep = {0, "", BUF_INIT};
	struct buf said = BUF_INIT, cmd = BUF_INIT;
	size_t *idx = xcalloc(n + 1, sizeof(*idx)), nidx = 0, naccepted = 0;
	int started = 0;
	const char *hello = ss->lmtp ? "LHLO" : "EHLO";

	for (size_t i = 0; i < n; i++)
		if (xs[i].st == RS_OPEN || xs[i].st == RS_SOFT)
			idx[nidx++] = i;
	if (nidx == 0)
		goto done;
	if (ss->reused) { /* greeted and EHLOed on an earlier delivery */
		*t_conn = deliver_now();
		started = 1;
		goto transaction;
	}
	if (smtp_connect(ss, why) < 0)
		goto done;
	ss->born = deliver_now();
	if (smtp_get_reply(ss, &rep, ss->pc->helo, "receiving the initial server greeting") < 0) {
		buf_set(why, buf_str(&ss->why));
		goto done;
	}
	if (rep.code / 100 != 2) { /* 4xx/5xx greeting: next server */
		smtp_said(ss, &rep, "initial greeting", why);
		if (rep.code / 100 == 5 && !ss->sc->skip_5xx_greeting) {
			smtp_rest(xs, n, RS_HARD, rep.dsn, buf_str(why), relay);
			started = 1;
		}
		goto quit;
	}
	*t_conn = deliver_now();
	started = 1;
	buf_printf(&ss->out, "%s %s\r\n", hello, ss->sc->helo_name);
	if (smtp_flush(ss, ss->pc->helo, "sending EHLO") < 0 ||
	    smtp_get_reply(ss, &rep, ss->pc->helo, "receiving the EHLO reply") < 0) {
		buf_set(why, buf_str(&ss->why));
		started = 0; /* broken before any transaction: the next server may do */
		goto done;
	}
	if (rep.code / 100 != 2 && !ss->lmtp) {
		buf_printf(&ss->out, "HELO %s\r\n", ss->sc->helo_name);
		if (smtp_flush(ss, ss->pc->helo, "sending HELO") < 0 ||
		    smtp_get_reply(ss, &rep, ss->pc->helo, "receiving the HELO reply") < 0) {
			buf_set(why, buf_str(&ss->why));
			started = 0;
			goto done;
		}
		if (rep.code / 100 != 2) {
			smtp_said(ss, &rep, "HELO command", why);
			smtp_rest(xs, n, rep.code / 100 == 5 ? RS_HARD : RS_SOFT, rep.dsn,
				  buf_str(why), relay);
			goto quit;
		}
		ss->pipelining = ss->size_ok = ss->eightbit = ss->smtputf8 = ss->dsn = 0;
	} else if (rep.code / 100 != 2) {
		smtp_said(ss, &rep, "LHLO command", why);
		smtp_rest(xs, n, rep.code / 100 == 5 ? RS_HARD : RS_SOFT, rep.dsn, buf_str(why),
			  relay);
		goto quit;
	} else {
		smtp_ehlo_parse(ss, buf_str(&rep.text));
	}
transaction:
	ss->uses++;
	/* What the server cannot take is refused before MAIL. */
	if (ss->size_ok && ss->size_max > 0 && (long long)m->len > ss->size_max) {
		struct buf ha = BUF_INIT;
		smtp_hostaddr(ss->sv, &ha);
		buf_reset(why);
		buf_printf(why, "message size %zu exceeds size limit %lld of server %s", m->len,
			   ss->size_max, buf_str(&ha));
		buf_free(&ha);
		smtp_rest(xs, n, RS_HARD, "5.3.4", buf_str(why), relay);
		goto quit;
	}
	if (env->smtputf8 && !ss->smtputf8) {
		struct buf ha = BUF_INIT;
		smtp_hostaddr(ss->sv, &ha);
		buf_reset(why);
		buf_printf(why, "SMTPUTF8 is required, but was not offered by host %s",
			   buf_str(&ha));
		buf_free(&ha);
		smtp_rest(xs, n, RS_HARD, "5.6.7", buf_str(why), relay);
		goto quit;
	}
	/* MAIL, RCPT..., DATA: together when pipelining, else one by one. */
	buf_printf(&cmd, "MAIL FROM:<%s>", env->sender);
	if (ss->size_ok)
		buf_printf(&cmd, " SIZE=%zu", m->len);
	if (env->body_8bit && ss->eightbit)
		buf_puts(&cmd, " BODY=8BITMIME");
	if (env->smtputf8 && ss->smtputf8)
		buf_puts(&cmd, " SMTPUTF8");
	if (ss->dsn && env->ret)
		buf_printf(&cmd, " RET=%s", env->ret);
	if (ss->dsn && env->envid)
		buf_printf(&cmd, " ENVID=%s", env->envid);
	buf_printf(&ss->out, "%s\r\n", buf_str(&cmd));
	if (!ss->pipelining && (smtp_flush(ss, ss->pc->mail, "sending MAIL FROM") < 0 ||
				smtp_get_reply(ss, &rep, ss->pc->mail, "receiving the MAIL FROM reply") <
				    0))
		goto mail_broken;
	if (ss->pipelining) {
		for (size_t k = 0; k < nidx; k++) {
			const struct smtp_rcpt *x = &xs[idx[k]];
			buf_printf(&ss->out, "RCPT TO:<%s>", x->r->addr);
			smtp_rcpt_params(ss, x->r->qr, &ss->out);
			buf_puts(&ss->out, "\r\n");
		}
		buf_puts(&ss->out, "DATA\r\n");
		if (smtp_flush(ss, ss->pc->mail, "sending MAIL FROM") < 0 ||
		    smtp_get_reply(ss, &rep, ss->pc->mail, "receiving the MAIL FROM reply") < 0)
			goto mail_broken;
	}
	if (rep.code == 421 && ss->reused) { /* it closed the idle connection */
		ss->stale = 1;
		started = 0;
		goto done;
	}
	if (rep.code / 100 != 2) {
		smtp_said(ss, &rep, "MAIL FROM command", why);
		smtp_rest(xs, n, rep.code / 100 == 5 ? RS_HARD : RS_SOFT, rep.dsn, buf_str(why),
			  relay);
		if (ss->pipelining) /* drain the RCPT and DATA replies */
			for (size_t k = 0; k <= nidx; k++)
				if (smtp_get_reply(ss, &rep, ss->pc->rcpt, "receiving the RCPT TO reply") <
				    0)
					goto done;
		goto quit;
	}
	for (size_t k = 0; k < nidx; k++) {
		struct smtp_rcpt *x = &xs[idx[k]];
		if (!ss->pipelining) {
			buf_printf(&ss->out, "RCPT TO:<%s>", x->r->addr);
			smtp_rcpt_params(ss, x->r->qr, &ss->out);
			buf_puts(&ss->out, "\r\n");
			if (smtp_flush(ss, ss->pc->rcpt, "sending RCPT TO") < 0)
				goto broken;
		}
		if (smtp_get_reply(ss, &rep, ss->pc->rcpt, "receiving the RCPT TO reply") < 0)
			goto broken;
		if (rep.code / 100 == 2) {
			x->accepted = 1;
			x->remote_dsn = ss->dsn;
			naccepted++;
		} else {
			smtp_said(ss, &rep, "RCPT TO command", &said);
			smtp_rcpt_set(x, rep.code / 100 == 5 ? RS_HARD : RS_SOFT, rep.dsn,
				      buf_str(&said));
			x->relay = relay;
		}
	}
	if (!ss->pipelining) {
		if (naccepted == 0)
			goto quit;
		buf_puts(&ss->out, "DATA\r\n");
		if (smtp_flush(ss, ss->pc->data_init, "sending DATA") < 0)
			goto broken;
	}
	if (smtp_get_reply(ss, &rep, ss->pc->data_init, "receiving the DATA reply") < 0)
		goto broken;
	if (naccepted == 0) {
		/* pipelined DATA without recipients: normally refused; a server
		 * that says 354 anyway gets an empty message it must reject */
		if (rep.code == 354) {
			buf_puts(&ss->out, ".\r\n");
			if (smtp_flush(ss, ss->pc->data_xfer, "sending end of data") < 0 ||
			    smtp_get_reply(ss, &rep, ss->pc->data_done,
					   "receiving the end of data reply") < 0)
				goto done;
		}
		goto quit;
	}
	if (rep.code != 354) {
		smtp_said(ss, &rep, "DATA command", why);
		for (size_t k = 0; k < nidx; k++)
			if (xs[idx[k]].accepted) {
				smtp_rcpt_set(&xs[idx[k]], rep.code / 100 == 5 ? RS_HARD : RS_SOFT,
					      rep.dsn, buf_str(why));
				xs[idx[k]].relay = relay;
			}
		goto quit;
	}
	smtp_content(m->content, m->len, &ss->out);
	if (smtp_flush(ss, ss->pc->data_xfer, "sending message body") < 0)
		goto broken;
	for (size_t k = 0; k < nidx; k++) {
		struct smtp_rcpt *x = &xs[idx[k]];
		if (!x->accepted)
			continue;
		if (smtp_get_reply(ss, &rep, ss->pc->data_done, "receiving the end of data reply") <
		    0)
			goto broken;
		for (size_t j = k; j < nidx; j++) {
			struct smtp_rcpt *y = &xs[idx[j]];
			if (!y->accepted || (ss->lmtp && j != k))
				continue;
			if (rep.code / 100 == 2) {
				smtp_rcpt_set(y, RS_SENT, rep.dsn, buf_str(&rep.text));
			} else {
				smtp_said(ss, &rep, "end of DATA command", &said);
				smtp_rcpt_set(y, rep.code / 100 == 5 ? RS_HARD : RS_SOFT, rep.dsn,
					      buf_str(&said));
			}
			y->relay = relay;
			y->accepted = 0;
		}
		if (!ss->lmtp)
			break; /* SMTP: one reply for all of them */
	}
	ss->completed = 1;
	if (smtp_cache_put(ss)) {
		ss->fd = -1; /* the cache has it now */
		goto done;
	}
quit:
	buf_puts(&ss->out, "QUIT\r\n");
	if (smtp_flush(ss, 2, "sending QUIT") == 0)
		(void)smtp_get_reply(ss, &rep, 2, "receiving the QUIT reply");
	goto done;
mail_broken:
	if (ss->reused) { /* the server dropped the idle connection: not an error */
		ss->stale = 1;
		started = 0;
		goto done;
	}
broken:
	/* Lost or timed out mid-transaction: whatever is not decided is
	 * deferred with the reason; accepted-but-unconfirmed ones too
	 * (at-least-once: the server may have it, we cannot know). */
	buf_set(why, buf_str(&ss->why));
	for (size_t k = 0; k < nidx; k++) {
		struct smtp_rcpt *x = &xs[idx[k]];
		if (x->st == RS_OPEN || x->st == RS_SOFT || x->accepted) {
			smtp_rcpt_set(x, RS_SOFT, "4.4.2", buf_str(why));
			x->relay = relay;
			x->accepted = 0;
		}
	}
done:
	if (ss->fd >= 0)
		close(ss->fd);
	ss->fd = -1;
	for (size_t k = 0; k < nidx; k++)
		xs[idx[k]].accepted = 0;
	free(idx);
	buf_free(&rep.text);
	buf_free(&said);
	buf_free(&cmd);
	return started;
}

/* --- the transport -------------------------------------------------------- */

static const struct smtp_proto_conf *smtp_proto(const struct deliver_smtp_conf *sc,
						const char *transport)
{
	if (strcmp(transport, "lmtp") == 0)
		return &sc->lmtp;
	if (strcmp(transport, "relay") == 0)
		return &sc->relay;
	return &sc->smtp;
}

/* One transaction's worth of recipients (<= the recipient limit). */
static void smtp_deliver_chunk(struct deliver_rcpt **rs, size_t n, const char *transport,
			       const char *nexthop, const struct smtp_servers *servers)
{
	struct deliver_msg *m = rs[0]->msg;
	const struct deliver_smtp_conf *sc = m->conf->smtp;
	struct smtp_rcpt *xs = xcalloc(n, sizeof(*xs));
	struct buf why = BUF_INIT, *relays = xcalloc(servers->n + 1, sizeof(*relays));
	int lmtp = strcmp(transport, "lmtp") == 0, sessions = 0, left = 1;
	double t_conn = 0;
	struct buf key = BUF_INIT, cached_relay = BUF_INIT;
	struct smtp_sess *cached;
	struct sockaddr_storage tried; /* the server a cached session already answered for */
	socklen_t tried_len = 0;

	buf_printf(&key, "%s:%s", transport, nexthop);
	for (size_t i = 0; i < n; i++) {
		xs[i].r = rs[i];
		buf_init(&xs[i].text);
	}
	/* A connection kept from an earlier delivery to this destination. */
	if ((cached = smtp_cache_get(buf_str(&key))) != NULL) {
		cached->sc = sc; /* the settings of now, not of when it was cached */
		cached->pc = smtp_proto(sc, transport);
		smtp_relay_name(cached->sv, &cached_relay);
		buf_printf(&cached_relay, ", conn_use=%d", cached->uses + 1);
		cached->cache_key = buf_str(&key);
		sessions += smtp_session(cached, m, xs, n, buf_str(&cached_relay), &t_conn, &why);
		if (!cached->stale) { /* it answered: do not ask the same server again now */
			tried = cached->own.ss;
			tried_len = cached->own.sslen;
		}
		left = 0;
		for (size_t i = 0; i < n; i++) {
			/* stale: what it never got to is tried on a fresh connection */
			if (xs[i].st == RS_OPEN && !cached->stale) {
				smtp_rcpt_set(&xs[i], RS_SOFT, "4.4.1",
					      why.len ? buf_str(&why) : "delivery failed");
				xs[i].relay = NULL;
			}
			left |= xs[i].st == RS_SOFT || xs[i].st == RS_OPEN;
		}
		smtp_sess_close(cached, 0); /* a copy went back to the cache if reusable */
	}
	for (size_t h = 0; h < servers->n && left; h++) {
		if (tried_len == servers->v[h].sslen &&
		    memcmp(&tried, &servers->v[h].ss, tried_len) == 0)
			continue;
		struct smtp_sess ss = {.sc = sc,
				       .pc = smtp_proto(sc, transport),
				       .sv = &servers->v[h],
				       .lmtp = lmtp,
				       .fd = -1,
				       .cache_key = buf_str(&key)};
		buf_init(&ss.out);
		buf_init(&ss.why);
		buf_init(&relays[h]);
		smtp_relay_name(&servers->v[h], &relays[h]);
		buf_reset(&why);
		for (size_t i = 0; i < n; i++)
			if (xs[i].st == RS_SOFT)
				xs[i].st = RS_OPEN; /* try it here */
		sessions += smtp_session(&ss, m, xs, n, buf_str(&relays[h]), &t_conn, &why);
		buf_free(&ss.out);
		buf_free(&ss.why);
		left = 0;
		for (size_t i = 0; i < n; i++) {
			if (xs[i].st == RS_OPEN) { /* never got to it here */
				smtp_rcpt_set(&xs[i], RS_SOFT, "4.4.1",
					      why.len ? buf_str(&why) : "delivery failed");
				xs[i].relay = NULL;
			}
			left |= xs[i].st == RS_SOFT;
		}
		if (sc->mx_session_limit > 0 && sessions >= sc->mx_session_limit)
			break;
	}
	/* Nobody answered at all: spare the destination for a while. */
	if (sessions == 0 && left && servers->n > 0 && why.len > 0)
		smtp_dead_set(buf_str(&key), buf_str(&why), sc->dead_time);
	else if (sessions > 0)
		smtp_dead_clear(buf_str(&key));
	for (size_t i = 0; i < n; i++) {
		struct deliver_rcpt *r = rs[i];
		if (xs[i].st == RS_OPEN || xs[i].dsn[0] == 0) /* never without a status */
			smtp_rcpt_set(&xs[i], RS_SOFT, "4.4.1",
				      why.len ? buf_str(&why) : "delivery failed: no server tried");
		r->agent = strcmp(transport, "relay") == 0 ? "relay" : lmtp ? "lmtp" : "smtp";
		r->t_conn = t_conn;
		r->remote_dsn = xs[i].remote_dsn;
		if (xs[i].st == RS_SOFT && xs[i].dsn[0] != '4')
			snprintf(xs[i].dsn, sizeof(xs[i].dsn), "4.%s", xs[i].dsn + 2);
		deliver_report(r, xs[i].relay ? xs[i].relay : "none",
			       xs[i].st == RS_SENT ? (xs[i].dsn[0] == '2' ? xs[i].dsn : "2.0.0")
						   : xs[i].dsn,
			       "%s", buf_str(&xs[i].text));
		buf_free(&xs[i].text);
	}
	for (size_t h = 0; h < servers->n; h++)
		buf_free(&relays[h]);
	free(relays);
	free(xs);
	buf_free(&why);
	buf_free(&key);
	buf_free(&cached_relay);
}

void deliver_smtp(struct deliver_rcpt **rs, size_t n, const char *transport, const char *nexthop)
{
	struct deliver_msg *m = rs[0]->msg;
	const struct deliver_smtp_conf *sc = m->conf->smtp;
	const struct smtp_proto_conf *pc = smtp_proto(sc, transport);
	struct smtp_servers servers = {NULL, 0};
	struct smtp_fail f = {"", BUF_INIT};
	struct smtp_dest *d;
	struct buf key = BUF_INIT;
	int bounce = 0;
	size_t limit = pc->rcpt_limit > 0 ? (size_t)pc->rcpt_limit : n;

	buf_printf(&key, "%s:%s", transport, nexthop);
	d = smtp_dest_enter(buf_str(&key), pc->concurrency);
	if (d == NULL) {
		for (size_t i = 0; i < n; i++) {
			rs[i]->agent = strcmp(transport, "lmtp") == 0 ? "lmtp" : "smtp";
			deliver_report(rs[i], "none", "4.4.5",
				       "delivery temporarily suspended: %s busy (concurrency limit %lld)",
				       nexthop, pc->concurrency);
		}
	} else if (smtp_dead_get(buf_str(&key), &f.text)) {
		for (size_t i = 0; i < n; i++) {
			rs[i]->agent = strcmp(transport, "lmtp") == 0 ? "lmtp" : "smtp";
			deliver_report(rs[i], "none", "4.4.1", "%s", buf_str(&f.text));
		}
	} else if (smtp_servers_find(sc, strcmp(transport, "lmtp") == 0, nexthop, &servers, &f, &bounce) <
	    0) {
		for (size_t i = 0; i < n; i++) {
			rs[i]->agent = strcmp(transport, "lmtp") == 0 ? "lmtp" : "smtp";
			deliver_report(rs[i], "none",
				       bounce ? f.dsn : (f.dsn[0] == '4' ? f.dsn : "4.4.3"), "%s",
				       buf_str(&f.text));
		}
	} else {
		for (size_t i = 0; i < n; i += limit)
			smtp_deliver_chunk(rs + i, n - i < limit ? n - i : limit, transport, nexthop,
					   &servers);
	}
	if (d != NULL)
		smtp_dest_leave(d);
	smtp_servers_free(&servers);
	buf_free(&f.text);
	buf_free(&key);
}
