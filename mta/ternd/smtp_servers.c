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
 * Lookups are blocking, on the calling delivery worker's own resolver
 * (libunbound's bookkeeping in resolver.c is per resolver and not
 * thread-safe); a job does them before it goes to its event loop.
 * Pitfall: a temporary DNS failure anywhere defers, never bounces.
 */
#include "smtp_client.h"

#include "log.h"
#include "resolver.h"

#include <arpa/inet.h>
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
int smtp_servers_find(const struct deliver_smtp_conf *sc, int lmtp, const char *nexthop,
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
