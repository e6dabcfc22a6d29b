/* smtp_servers.c - a destination of the smtp, relay and lmtp transports
 * as a list of servers to try (smtp_client.h).
 *
 * "[host]:port" and lmtp's "inet:"/"unix:" are used as given; "domain" or
 * "domain:port" looks up MX records (sorted by preference, equal ones
 * shuffled; none: the domain's own A/AAAA; null MX bounces 5.1.10), trims
 * the list where it reaches this host (mail loops back to myself) and
 * caps it at smtp_mx_address_limit addresses. A nexthop may be a list
 * ("a, b"): tried in order as one server list.
 *
 * Lookups are asynchronous, on the resolver of the job's event loop
 * (libunbound's bookkeeping in resolver.c is per resolver and not
 * thread-safe, so each loop has its own).
 * Pitfall: a temporary DNS failure anywhere defers, never bounces.
 */
#include "smtp_client.h"

#include "log.h"
#include "resolver.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <strings.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

void smtp_fail_set(struct smtp_fail *f, const char *dsn, const char *fmt, ...)
{
	va_list ap;

	snprintf(f->dsn, sizeof(f->dsn), "%s", dsn);
	buf_reset(&f->text);
	va_start(ap, fmt);
	buf_vprintf(&f->text, fmt, ap);
	va_end(ap);
}

void smtp_servers_free(struct smtp_servers *s)
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

/* --- lookups ---------------------------------------------------------------
 * The server list is computed by plain sequential code (below) that reads
 * DNS answers from a per-job table. A question not in the table yet is
 * noted and answered "temporary failure" for now; after the run, the
 * noted questions go out at once on the loop's resolver, and when the
 * last answer is in, the list is computed again. MX answers bring
 * questions for the exchangers' addresses, so a domain takes two or
 * three rounds; literals none. */

struct smtp_answer {
	char *name;
	int qtype;
	int asked; /* query sent */
	int known; /* res holds the answer */
	struct resolver_result res;
	struct smtp_answer *next;
};

struct smtp_lookup {
	const struct deliver_smtp_conf *sc;
	struct event_base *base;
	struct resolver *r;
	struct smtp_answer *answers;
	int incomplete; /* this run needed an answer not in the table */
	int pending;	/* queries in flight */
	int launching;	/* still sending queries: answers must not restart the run */
	int rounds;
	int lmtp;
	char *nexthop;
	void (*done)(void *arg, int rc, struct smtp_servers *s, struct smtp_fail *f, int bounce);
	void *arg;
};

static void smtp_result_copy(struct resolver_result *dst, const struct resolver_result *src)
{
	dst->status = src->status;
	dst->qtype = src->qtype;
	dst->qname = src->qname ? xstrdup(src->qname) : NULL;
	dst->ttl = src->ttl;
	dst->count = src->count;
	dst->rr = src->count ? xcalloc(src->count, sizeof(*dst->rr)) : NULL;
	for (size_t i = 0; i < src->count; i++) {
		dst->rr[i] = src->rr[i];
		dst->rr[i].text = src->rr[i].text ? xstrdup(src->rr[i].text) : NULL;
	}
	buf_set(&dst->msg, buf_str(&src->msg));
}

static void smtp_lookup_get(struct smtp_lookup *lk, const char *name, int qtype,
			    struct resolver_result *res)
{
	struct smtp_answer *a;

	for (a = lk->answers; a; a = a->next)
		if (a->qtype == qtype && strcasecmp(a->name, name) == 0)
			break;
	if (a != NULL && a->known) {
		smtp_result_copy(res, &a->res);
		return;
	}
	if (a == NULL) {
		a = xcalloc(1, sizeof(*a));
		a->name = xstrdup(name);
		a->qtype = qtype;
		resolver_result_init(&a->res);
		a->next = lk->answers;
		lk->answers = a;
	}
	lk->incomplete = 1;
	res->status = RESOLVER_TEMPFAIL;
	buf_set(&res->msg, "lookup in progress");
}

/* Addresses of one host name (or literal) into s. 0 found, 1 none (the
 * name does not exist or has no address), -1 temporary failure (f set). */
static int smtp_host_addrs(struct smtp_lookup *lk, const char *host, int port, int from_mx,
			   struct smtp_servers *s, struct smtp_fail *f)
{
	const struct deliver_smtp_conf *sc = lk->sc;
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
	if (nt == 2 && sc->addr_pref == 6) { /* smtp_address_preference: IPv6 first */
		types[0] = RESOLVER_T_AAAA;
		types[1] = RESOLVER_T_A;
	}
	for (int t = 0; t < nt; t++) {
		struct resolver_result res;
		resolver_result_init(&res);
		smtp_lookup_get(lk, host, types[t], &res);
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
static int smtp_mx_hosts(struct smtp_lookup *lk, const char *domain, int port,
			 struct smtp_servers *s, struct smtp_fail *f, int *bounce)
{
	const struct deliver_smtp_conf *sc = lk->sc;
	struct resolver_result res;
	int rc = 0;

	resolver_result_init(&res);
	smtp_lookup_get(lk, domain, RESOLVER_T_MX, &res);
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
			int hr = smtp_host_addrs(lk, res.rr[i].text, port, 1, s, f);
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
		int hr = smtp_host_addrs(lk, domain, port, 1, s, f);
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
static int smtp_nexthop_one(struct smtp_lookup *lk, int lmtp, const char *item,
			    struct smtp_servers *s, struct smtp_fail *f, int *bounce)
{
	const struct deliver_smtp_conf *sc = lk->sc;
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
		rc = smtp_mx_hosts(lk, h, port, s, f, bounce);
	} else {
		rc = smtp_host_addrs(lk, h, port, 0, s, f);
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
static int smtp_servers_find(struct smtp_lookup *lk, int lmtp, const char *nexthop,
			     struct smtp_servers *s, struct smtp_fail *f, int *bounce)
{
	const struct deliver_smtp_conf *sc = lk->sc;
	char *copy = xstrdup(nexthop), *save = NULL, *item;
	int any = 0, temp = 0, hard = 0;

	for (item = strtok_r(copy, ", \t", &save); item; item = strtok_r(NULL, ", \t", &save)) {
		int b = 0;
		if (smtp_nexthop_one(lk, lmtp, item, s, f, &b) == 0)
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

void smtp_server_copy(struct smtp_server *dst, const struct smtp_server *src)
{
	*dst = *src;
	dst->name = xstrdup(src->name);
}

void smtp_server_free(struct smtp_server *sv)
{
	free(sv->name);
	sv->name = NULL;
}

void smtp_relay_name(const struct smtp_server *sv, struct buf *out)
{
	if (sv->ss.ss_family == AF_UNIX) /* Postfix: "myhostname[/path]" */
		buf_printf(out, "%s[%s]", sv->name, sv->addr);
	else
		buf_printf(out, "%s[%s]:%d", sv->name, sv->addr, sv->port);
}

void smtp_hostaddr(const struct smtp_server *sv, struct buf *out)
{
	buf_printf(out, "%s[%s]", sv->name, sv->addr);
}

/* --- the asynchronous driver ---------------------------------------------- */

/* One resolver per loop (resolver_new() binds to a base), made on first
 * use; a reload with other dns_servers makes another one (the old one
 * stays: queries may still be in flight on it). */
struct smtp_loop_dns {
	struct event_base *base;
	char *servers;
	struct resolver *r;
	struct smtp_loop_dns *next;
};

static pthread_mutex_t smtp_loop_dns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct smtp_loop_dns *smtp_loop_dns;

static struct resolver *smtp_loop_resolver(const struct deliver_smtp_conf *sc,
					   struct event_base *base, struct buf *err)
{
	const char *servers = sc->dns_servers ? sc->dns_servers : "";
	struct smtp_loop_dns *d;

	pthread_mutex_lock(&smtp_loop_dns_lock);
	for (d = smtp_loop_dns; d; d = d->next)
		if (d->base == base && strcmp(d->servers, servers) == 0)
			break;
	if (d == NULL) {
		struct resolver *r = resolver_new(servers, 0, base, err);
		if (r != NULL) {
			d = xcalloc(1, sizeof(*d));
			d->base = base;
			d->servers = xstrdup(servers);
			d->r = r;
			d->next = smtp_loop_dns;
			smtp_loop_dns = d;
		}
	}
	pthread_mutex_unlock(&smtp_loop_dns_lock);
	return d ? d->r : NULL;
}

static void smtp_lookup_free(struct smtp_lookup *lk)
{
	struct smtp_answer *a;

	while ((a = lk->answers) != NULL) {
		lk->answers = a->next;
		free(a->name);
		resolver_result_free(&a->res);
		free(a);
	}
	free(lk->nexthop);
	free(lk);
}

static void smtp_lookup_round(struct smtp_lookup *lk);

struct smtp_ask {
	struct smtp_lookup *lk;
	struct smtp_answer *a;
};

static void smtp_lookup_answer(void *arg, const struct resolver_result *res)
{
	struct smtp_ask *q = arg;
	struct smtp_lookup *lk = q->lk;

	resolver_result_free(&q->a->res);
	resolver_result_init(&q->a->res);
	smtp_result_copy(&q->a->res, res);
	q->a->known = 1;
	free(q);
	if (--lk->pending == 0 && !lk->launching)
		smtp_lookup_round(lk);
}

/* Compute the list; when answers are missing, ask for them all and come
 * back when the last one is in. Four rounds at most: a lookup that keeps
 * asking new questions is a temporary failure, never a hang. */
static void smtp_lookup_round(struct smtp_lookup *lk)
{
	for (;;) {
		struct smtp_servers s = {NULL, 0};
		struct smtp_fail f = {"", BUF_INIT};
		int bounce = 0, rc;

		lk->incomplete = 0;
		rc = smtp_servers_find(lk, lk->lmtp, lk->nexthop, &s, &f, &bounce);
		if (!lk->incomplete || ++lk->rounds > 4) {
			if (lk->incomplete)
				bounce = 0; /* never bounce on answers we did not get */
			lk->done(lk->arg, rc, &s, &f, bounce);
			smtp_servers_free(&s);
			buf_free(&f.text);
			smtp_lookup_free(lk);
			return;
		}
		smtp_servers_free(&s);
		buf_free(&f.text);
		lk->launching = 1;
		for (struct smtp_answer *a = lk->answers; a; a = a->next) {
			struct buf err = BUF_INIT;
			struct smtp_ask *q;
			if (a->known || a->asked)
				continue;
			a->asked = 1;
			q = xcalloc(1, sizeof(*q));
			q->lk = lk, q->a = a;
			lk->pending++;
			if (lk->r == NULL ||
			    resolver_query(lk->r, a->name, a->qtype, smtp_lookup_answer, q, &err) < 0) {
				/* could not even ask: a temporary failure, as any */
				lk->pending--;
				free(q);
				a->known = 1;
				a->res.status = RESOLVER_TEMPFAIL;
				buf_set(&a->res.msg, err.len ? buf_str(&err) : "no resolver");
			}
			buf_free(&err);
		}
		lk->launching = 0;
		if (lk->pending > 0)
			return; /* smtp_lookup_answer() goes on */
	}
}

void smtp_servers_find_async(struct event_base *base, const struct deliver_smtp_conf *sc,
			     int lmtp, const char *nexthop,
			     void (*done)(void *arg, int rc, struct smtp_servers *s,
					  struct smtp_fail *f, int bounce),
			     void *arg)
{
	struct smtp_lookup *lk = xcalloc(1, sizeof(*lk));
	struct buf err = BUF_INIT;

	lk->sc = sc;
	lk->base = base;
	lk->lmtp = lmtp;
	lk->nexthop = xstrdup(nexthop);
	lk->done = done;
	lk->arg = arg;
	lk->r = smtp_loop_resolver(sc, base, &err);
	if (lk->r == NULL)
		msg_warn("smtp: DNS resolver: %s", buf_str(&err));
	buf_free(&err);
	smtp_lookup_round(lk);
}
