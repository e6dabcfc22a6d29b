/* resolver.c - DNS lookups on libunbound (see resolver.h).
 *
 * libunbound does the protocol work (retries, CNAME chasing, caching) in a
 * background thread; results come back on ub_fd(), which we watch with a
 * libevent event while queries are pending, or poll() in the sync helper.
 * RDATA from the network is parsed here with explicit bounds: libunbound
 * hands us names uncompressed, so a compression pointer is malformed data.
 */
#include "resolver.h"
#include "inet.h"

#include "addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unbound.h>

#define RESOLVER_NAME_WIRE_MAX 255 /* RFC 1035 §2.3.4 */
#define RESOLVER_VERIFY_MAX 10	   /* PTR names tried for forward confirmation */

struct resolver_query;

struct resolver {
	struct ub_ctx *ctx;
	struct event_base *base;
	struct event *ev; /* read event on ub_fd(), added while queries pend */
	int timeout;
	struct resolver_query *pending;
};

struct resolver_query {
	struct resolver *r;
	int async_id;
	int qtype;
	char *name;
	struct event *timer;
	resolver_cb cb;
	void *arg;
	struct resolver_query *next, *prev;
};

static const struct {
	const char *name;
	int code;
} resolver_types[] = {
    {"A", RESOLVER_T_A},     {"NS", RESOLVER_T_NS},	{"PTR", RESOLVER_T_PTR},
    {"MX", RESOLVER_T_MX},
    {"TXT", RESOLVER_T_TXT}, {"AAAA", RESOLVER_T_AAAA},
};

static const char *resolver_status_names[] = {
    [RESOLVER_FOUND] = "found",	      [RESOLVER_NXDOMAIN] = "NXDOMAIN",
    [RESOLVER_NODATA] = "NODATA",     [RESOLVER_NULLMX] = "NULLMX",
    [RESOLVER_TEMPFAIL] = "TEMPFAIL", [RESOLVER_PERMFAIL] = "PERMFAIL",
};

const char *resolver_status_str(enum resolver_status st)
{
	if ((unsigned)st >= sizeof(resolver_status_names) / sizeof(resolver_status_names[0]))
		return "unknown";
	return resolver_status_names[st];
}

int resolver_type_code(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(resolver_types) / sizeof(resolver_types[0]); i++)
		if (strcasecmp(name, resolver_types[i].name) == 0)
			return resolver_types[i].code;
	return 0;
}

const char *resolver_type_name(int qtype)
{
	size_t i;

	for (i = 0; i < sizeof(resolver_types) / sizeof(resolver_types[0]); i++)
		if (resolver_types[i].code == qtype)
			return resolver_types[i].name;
	return "unknown";
}

void resolver_result_init(struct resolver_result *res)
{
	memset(res, 0, sizeof(*res));
	buf_init(&res->msg);
	res->status = RESOLVER_TEMPFAIL;
}

/* resolver_result_reset - empty res for reuse, keeping msg's storage */
static void resolver_result_reset(struct resolver_result *res)
{
	size_t i;

	for (i = 0; i < res->count; i++)
		free(res->rr[i].text);
	free(res->rr);
	free(res->qname);
	res->rr = NULL;
	res->qname = NULL;
	res->count = 0;
	res->qtype = res->ttl = 0;
	res->status = RESOLVER_TEMPFAIL;
	buf_reset(&res->msg);
}

void resolver_result_free(struct resolver_result *res)
{
	resolver_result_reset(res);
	buf_free(&res->msg);
}

static void resolver_result_fail(struct resolver_result *res, enum resolver_status st,
				 const char *msg)
{
	res->status = st;
	buf_set(&res->msg, msg);
}

int resolver_name_parse(const unsigned char *p, size_t len, size_t *used, struct buf *out,
			struct buf *err)
{
	size_t i = 0, j;
	unsigned l;

	buf_reset(out);
	for (;;) {
		if (i >= len)
			goto truncated;
		l = p[i];
		if (l == 0)
			break;
		if (l & 0xc0) {
			buf_set(err, "compressed or extended label in RDATA");
			return -1;
		}
		if (i + 1 + l > len)
			goto truncated;
		if (i + 1 + l + 1 > RESOLVER_NAME_WIRE_MAX) {
			buf_set(err, "domain name longer than 255 octets");
			return -1;
		}
		/* Names go on to further lookups and into logs: refuse bytes
		 * that would need escaping rather than invent an escape syntax. */
		for (j = i + 1; j <= i + l; j++) {
			if (p[j] <= ' ' || p[j] >= 0x7f || p[j] == '.' || p[j] == '\\') {
				buf_set(err, "unprintable character or '.' in DNS label");
				return -1;
			}
		}
		if (out->len > 0)
			buf_putc(out, '.');
		buf_append(out, p + i + 1, l);
		i += 1 + l;
	}
	if (out->len == 0)
		buf_putc(out, '.');
	*used = i + 1;
	return 0;
truncated:
	buf_set(err, "truncated domain name in RDATA");
	return -1;
}

static int resolver_rdata_name(const unsigned char *p, size_t len, struct resolver_rr *rr,
			       struct buf *err)
{
	struct buf name = BUF_INIT;
	size_t used;
	int ret = -1;

	if (resolver_name_parse(p, len, &used, &name, err) < 0)
		goto out;
	if (used != len) {
		buf_set(err, "junk after domain name in RDATA");
		goto out;
	}
	rr->text = buf_detach(&name);
	ret = 0;
out:
	buf_free(&name);
	return ret;
}

/* resolver_rdata_txt - RFC 1035 §3.3.14: one or more <character-string> */
static int resolver_rdata_txt(const unsigned char *p, size_t len, struct resolver_rr *rr,
			      struct buf *err)
{
	struct buf txt = BUF_INIT;
	size_t i = 0;
	int ret = -1;

	if (len == 0) {
		buf_set(err, "empty TXT RDATA");
		goto out;
	}
	while (i < len) {
		if (i + 1 + p[i] > len) {
			buf_set(err, "truncated TXT character-string");
			goto out;
		}
		if (memchr(p + i + 1, 0, p[i]) != NULL) {
			buf_set(err, "NUL in TXT record");
			goto out;
		}
		buf_append(&txt, p + i + 1, p[i]);
		i += 1 + p[i];
	}
	rr->text = buf_detach(&txt);
	ret = 0;
out:
	buf_free(&txt);
	return ret;
}

static int resolver_rdata_addr(int family, const unsigned char *p, size_t len,
			       struct resolver_rr *rr, struct buf *err)
{
	char text[INET6_ADDRSTRLEN];
	size_t want = family == AF_INET ? 4 : 16;

	if (len != want) {
		buf_printf(err, "%s RDATA of %zu octets, want %zu",
			   family == AF_INET ? "A" : "AAAA", len, want);
		return -1;
	}
	memcpy(rr->addr, p, want);
	rr->family = family;
	inet_ntop(family, p, text, sizeof(text));
	rr->text = xstrdup(text);
	return 0;
}

int resolver_rdata_parse(int qtype, const unsigned char *rdata, size_t len, struct resolver_rr *rr,
			 struct buf *err)
{
	memset(rr, 0, sizeof(*rr));
	buf_reset(err);
	switch (qtype) {
	case RESOLVER_T_A:
		return resolver_rdata_addr(AF_INET, rdata, len, rr, err);
	case RESOLVER_T_AAAA:
		return resolver_rdata_addr(AF_INET6, rdata, len, rr, err);
	case RESOLVER_T_PTR:
	case RESOLVER_T_NS:
		return resolver_rdata_name(rdata, len, rr, err);
	case RESOLVER_T_TXT:
		return resolver_rdata_txt(rdata, len, rr, err);
	case RESOLVER_T_MX:
		if (len < 3) {
			buf_set(err, "truncated MX RDATA");
			return -1;
		}
		rr->pref = (rdata[0] << 8) | rdata[1];
		return resolver_rdata_name(rdata + 2, len - 2, rr, err);
	default:
		buf_printf(err, "unsupported record type %d", qtype);
		return -1;
	}
}

/* resolver_mx_finish - sort by preference (stable: insertion sort over at
 * most RESOLVER_MAX_RR records) and detect the RFC 7505 null MX. */
static void resolver_mx_finish(struct resolver_result *res)
{
	size_t i, j;
	struct resolver_rr t;

	for (i = 1; i < res->count; i++) {
		t = res->rr[i];
		for (j = i; j > 0 && res->rr[j - 1].pref > t.pref; j--)
			res->rr[j] = res->rr[j - 1];
		res->rr[j] = t;
	}
	if (res->count == 1 && res->rr[0].pref == 0 && strcmp(res->rr[0].text, ".") == 0) {
		resolver_result_fail(res, RESOLVER_NULLMX, "domain does not accept mail (null MX)");
		return;
	}
	/* RFC 7505 §3: a "." mixed with real MX records is unusable; drop it. */
	for (i = j = 0; i < res->count; i++) {
		if (strcmp(res->rr[i].text, ".") == 0)
			free(res->rr[i].text);
		else
			res->rr[j++] = res->rr[i];
	}
	res->count = j;
}

/* resolver_rcode_map - DNS rcode to status, as glibc's res_query maps
 * them to h_errno: SERVFAIL is TRY_AGAIN, FORMERR/NOTIMP/REFUSED are
 * NO_RECOVERY. */
static void resolver_rcode_map(struct resolver_result *res, int rcode)
{
	switch (rcode) {
	case 2:
		resolver_result_fail(res, RESOLVER_TEMPFAIL, "server failure (SERVFAIL)");
		break;
	case 3:
		resolver_result_fail(res, RESOLVER_NXDOMAIN, "no such domain (NXDOMAIN)");
		break;
	default:
		res->status = RESOLVER_PERMFAIL;
		buf_reset(&res->msg);
		buf_printf(&res->msg, "DNS error rcode %d", rcode);
		break;
	}
}

static void resolver_records_parse(struct resolver_result *res, const struct ub_result *ub)
{
	struct buf err = BUF_INIT;
	size_t n;

	for (n = 0; ub->data[n] != NULL; n++)
		;
	n = n > RESOLVER_MAX_RR ? RESOLVER_MAX_RR : n;
	res->rr = xcalloc(n, sizeof(*res->rr));
	for (size_t i = 0; i < n; i++) {
		/* One bad record is skipped (as Postfix's dns_get_answer). */
		if (ub->len[i] < 0 ||
		    resolver_rdata_parse(res->qtype, (const unsigned char *)ub->data[i],
					 (size_t)ub->len[i], &res->rr[res->count], &err) < 0)
			continue;
		res->count++;
	}
	if (res->count == 0) {
		resolver_result_fail(res, RESOLVER_TEMPFAIL, "malformed DNS reply: ");
		buf_puts(&res->msg, buf_str(&err));
	} else {
		res->status = RESOLVER_FOUND;
		if (res->qtype == RESOLVER_T_MX)
			resolver_mx_finish(res);
	}
	buf_free(&err);
}

void resolver_result_from_ub(struct resolver_result *res, int err, const struct ub_result *ub)
{
	resolver_result_reset(res);
	if (ub != NULL) {
		res->qtype = ub->qtype;
		res->qname = xstrdup(ub->qname != NULL ? ub->qname : "");
		res->ttl = ub->ttl;
	}
	if (err != 0 || ub == NULL) {
		resolver_result_fail(res, err == UB_SYNTAX ? RESOLVER_PERMFAIL : RESOLVER_TEMPFAIL,
				     err != 0 ? ub_strerror(err) : "no result");
	} else if (ub->bogus) {
		resolver_result_fail(res, RESOLVER_TEMPFAIL, "DNSSEC validation failed");
	} else if (ub->rcode != 0) {
		resolver_rcode_map(res, ub->rcode);
	} else if (!ub->havedata || ub->data == NULL || ub->data[0] == NULL) {
		resolver_result_fail(res, RESOLVER_NODATA, "no records of the requested type");
	} else {
		resolver_records_parse(res, ub);
	}
}

void resolver_rr_format(int qtype, const struct resolver_rr *rr, struct buf *out)
{
	if (qtype == RESOLVER_T_MX)
		buf_printf(out, "%d %s", rr->pref, rr->text);
	else
		buf_puts(out, rr->text);
}

int resolver_reverse_name(const char *ipaddr, struct buf *out)
{
	struct inet_addr ip;
	const unsigned char *b = ip.bytes;
	int i;

	buf_reset(out);
	if (inet_addr_parse(ipaddr, &ip) < 0)
		return -1;
	if (ip.family == AF_INET) {
		buf_printf(out, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1], b[0]);
		return 0;
	}
	for (i = 15; i >= 0; i--)
		buf_printf(out, "%x.%x.", b[i] & 0xf, b[i] >> 4);
	buf_puts(out, "ip6.arpa");
	return 0;
}

/* resolver_servers_set - dns_servers: "addr[@port]" separated by space/comma */
static int resolver_servers_set(struct ub_ctx *ctx, const char *servers, struct buf *err)
{
	struct buf tok = BUF_INIT;
	const char *p = servers;
	size_t n;
	int ret = 0, rc;

	while (ret == 0 && *(p += strspn(p, " \t,")) != 0) {
		n = strcspn(p, " \t,");
		buf_reset(&tok);
		buf_append(&tok, p, n);
		p += n;
		if ((rc = ub_ctx_set_fwd(ctx, buf_str(&tok))) != 0) {
			buf_printf(err, "dns_servers: bad server \"%.100s\": %s", buf_str(&tok),
				   ub_strerror(rc));
			ret = -1;
		}
	}
	buf_free(&tok);
	return ret;
}

/* unbound answers these RFC 6761/6303 zones itself (NXDOMAIN) unless told
 * otherwise. A stub must ask its servers, as libc does: test networks,
 * "test." and LAN reverse zones are exactly what test and private DNS
 * serve. localhost and loopback reverse zones keep unbound's answers. */
static const char *const resolver_nodefault_zones[] = {
    "test.",
    "invalid.",
    "onion.",
    "home.arpa.",
    "0.in-addr.arpa.",
    "254.169.in-addr.arpa.",
    "2.0.192.in-addr.arpa.",
    "100.51.198.in-addr.arpa.",
    "113.0.203.in-addr.arpa.",
    "255.255.255.255.in-addr.arpa.",
    "d.f.ip6.arpa.",
    "8.e.f.ip6.arpa.",
    "9.e.f.ip6.arpa.",
    "a.e.f.ip6.arpa.",
    "b.e.f.ip6.arpa.",
    "8.b.d.0.1.0.0.2.ip6.arpa.",
};

/* resolver_ctx_zones - must run last: ub_ctx_zone_remove() finalizes the
 * context, after which options and forwarders can no longer change. */
static int resolver_ctx_zones(struct ub_ctx *ctx)
{
	size_t i;
	int rc;

	for (i = 0; i < sizeof(resolver_nodefault_zones) / sizeof(char *); i++) {
		rc = ub_ctx_zone_remove(ctx, resolver_nodefault_zones[i]);
		if (rc != UB_NOERROR)
			return rc;
	}
	return 0;
}

static int resolver_ctx_setup(struct ub_ctx *ctx, const char *servers, struct buf *err)
{
	int rc;

	/* Background thread, not a forked process: cheaper, and the pipe fd
	 * works the same with libevent. */
	if ((rc = ub_ctx_async(ctx, 1)) != 0)
		goto ub_fail;
	/* Test DNS and local caches (127.0.0.53, dnsmasq) live on loopback;
	 * unbound refuses to query loopback by default. */
	if ((rc = ub_ctx_set_option(ctx, "do-not-query-localhost:", "no")) != 0)
		goto ub_fail;
	/* RFC 1918 / RFC 6598 reverse zones. */
	if ((rc = ub_ctx_set_option(ctx, "unblock-lan-zones:", "yes")) != 0)
		goto ub_fail;
	if (servers != NULL && *servers != 0) {
		if (resolver_servers_set(ctx, servers, err) < 0)
			return -1;
	} else {
		if ((rc = ub_ctx_resolvconf(ctx, NULL)) != 0) {
			buf_printf(err, "cannot read /etc/resolv.conf: %s", ub_strerror(rc));
			return -1;
		}
		/* /etc/hosts as getaddrinfo() would; a missing file is not an error. */
		(void)ub_ctx_hosts(ctx, NULL);
	}
	if ((rc = resolver_ctx_zones(ctx)) != 0)
		goto ub_fail;
	return 0;
ub_fail:
	buf_printf(err, "resolver setup: %s", ub_strerror(rc));
	return -1;
}

static void resolver_fd_ready(evutil_socket_t fd, short what, void *arg)
{
	struct resolver *r = arg;

	(void)ub_process(r->ctx);
}

struct resolver *resolver_new(const char *dns_servers, int timeout, struct event_base *base,
			      struct buf *err)
{
	struct resolver *r = xcalloc(1, sizeof(*r));

	r->base = base;
	r->timeout = timeout > 0 ? timeout : RESOLVER_TIMEOUT_DEFAULT;
	if ((r->ctx = ub_ctx_create()) == NULL) {
		buf_set(err, "cannot create libunbound context");
		goto fail;
	}
	if (resolver_ctx_setup(r->ctx, dns_servers, err) < 0)
		goto fail;
	if (base != NULL && (r->ev = event_new(base, ub_fd(r->ctx), EV_READ | EV_PERSIST,
					       resolver_fd_ready, r)) == NULL) {
		buf_set(err, "cannot create resolver event");
		goto fail;
	}
	return r;
fail:
	resolver_free(r);
	return NULL;
}

static void resolver_query_unlink(struct resolver_query *q)
{
	struct resolver *r = q->r;

	if (q->prev != NULL)
		q->prev->next = q->next;
	else
		r->pending = q->next;
	if (q->next != NULL)
		q->next->prev = q->prev;
	if (r->pending == NULL && r->ev != NULL)
		event_del(r->ev); /* let event_base_dispatch() return when idle */
	if (q->timer != NULL)
		event_free(q->timer);
	free(q->name);
	free(q);
}

/* resolver_query_finish - deliver res to the caller and forget the query */
static void resolver_query_finish(struct resolver_query *q, struct resolver_result *res)
{
	resolver_cb cb = q->cb;
	void *arg = q->arg;

	if (res->qname == NULL)
		res->qname = xstrdup(q->name);
	res->qtype = q->qtype;
	resolver_query_unlink(q);
	cb(arg, res);
}

static void resolver_ub_done(void *arg, int err, struct ub_result *ub)
{
	struct resolver_query *q = arg;
	struct resolver_result res;

	resolver_result_init(&res);
	resolver_result_from_ub(&res, err, ub);
	if (ub != NULL)
		ub_resolve_free(ub);
	resolver_query_finish(q, &res);
	resolver_result_free(&res);
}

static void resolver_query_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct resolver_query *q = arg;
	struct resolver_result res;

	(void)ub_cancel(q->r->ctx, q->async_id);
	resolver_result_init(&res);
	resolver_result_fail(&res, RESOLVER_TEMPFAIL, "DNS query timed out");
	resolver_query_finish(q, &res);
	resolver_result_free(&res);
}

/* resolver_query_start - register q with libunbound; timer is optional */
static int resolver_query_start(struct resolver *r, struct resolver_query *q, struct buf *err)
{
	int rc;

	q->r = r;
	rc = ub_resolve_async(r->ctx, q->name, q->qtype, 1 /* IN */, q, resolver_ub_done,
			      &q->async_id);
	if (rc != 0) {
		buf_printf(err, "cannot start DNS query for %.255s: %s", q->name, ub_strerror(rc));
		return -1;
	}
	q->next = r->pending;
	if (r->pending != NULL)
		r->pending->prev = q;
	r->pending = q;
	return 0;
}

int resolver_query(struct resolver *r, const char *name, int qtype, resolver_cb cb, void *arg,
		   struct buf *err)
{
	struct resolver_query *q = xcalloc(1, sizeof(*q));
	struct timeval tv = {r->timeout, 0};

	q->name = xstrdup(name), q->qtype = qtype, q->cb = cb, q->arg = arg;
	if (r->base == NULL) {
		buf_set(err, "resolver has no event loop");
		goto fail;
	}
	if ((q->timer = evtimer_new(r->base, resolver_query_timeout, q)) == NULL) {
		buf_set(err, "cannot create DNS timer");
		goto fail;
	}
	if (resolver_query_start(r, q, err) < 0)
		goto fail;
	evtimer_add(q->timer, &tv);
	event_add(r->ev, NULL);
	return 0;
fail:
	if (q->timer != NULL)
		event_free(q->timer);
	free(q->name);
	free(q);
	return -1;
}

struct resolver_sync {
	int done;
	struct resolver_result *res;
};

static void resolver_sync_done(void *arg, const struct resolver_result *res)
{
	struct resolver_sync *s = arg;
	struct resolver_result *out = s->res;
	struct buf msg = out->msg;

	/* Move the result: the callback's copy is freed after we return. */
	*out = *res;
	out->msg = msg;
	buf_set(&out->msg, buf_str(&res->msg));
	out->qname = xstrdup(res->qname);
	out->rr = xcalloc(res->count ? res->count : 1, sizeof(*out->rr));
	for (size_t i = 0; i < res->count; i++) {
		out->rr[i] = res->rr[i];
		out->rr[i].text = xstrdup(res->rr[i].text);
	}
	s->done = 1;
}

static long resolver_ms_left(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (deadline->tv_sec - now.tv_sec) * 1000L +
	       (deadline->tv_nsec - now.tv_nsec) / 1000000L;
}

void resolver_lookup(struct resolver *r, const char *name, int qtype, struct resolver_result *res)
{
	struct resolver_query *q = xcalloc(1, sizeof(*q));
	struct resolver_sync s = {0, res};
	struct pollfd pfd = {ub_fd(r->ctx), POLLIN, 0};
	struct timespec deadline;
	long left;

	resolver_result_reset(res);
	q->name = xstrdup(name), q->qtype = qtype, q->cb = resolver_sync_done, q->arg = &s;
	if (resolver_query_start(r, q, &res->msg) < 0) {
		res->status = RESOLVER_TEMPFAIL;
		free(q->name);
		free(q);
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += r->timeout;
	/* ub_process() may also complete other pending async queries. */
	while (!s.done) {
		if ((left = resolver_ms_left(&deadline)) <= 0) {
			(void)ub_cancel(r->ctx, q->async_id);
			resolver_query_unlink(q);
			resolver_result_fail(res, RESOLVER_TEMPFAIL, "DNS query timed out");
			res->qname = xstrdup(name), res->qtype = qtype;
			break;
		}
		if (poll(&pfd, 1, (int)left) > 0)
			(void)ub_process(r->ctx);
	}
}

/* resolver_forward_match - does name have an A/AAAA record equal to bin? */
static enum resolver_status resolver_forward_match(struct resolver *r, const char *name,
						   const struct inet_addr *ip)
{
	struct resolver_result res;
	enum resolver_status st;
	size_t i;

	resolver_result_init(&res);
	resolver_lookup(r, name, ip->family == AF_INET ? RESOLVER_T_A : RESOLVER_T_AAAA, &res);
	st = res.status == RESOLVER_TEMPFAIL ? RESOLVER_TEMPFAIL : RESOLVER_NODATA;
	for (i = 0; res.status == RESOLVER_FOUND && i < res.count; i++)
		if (memcmp(res.rr[i].addr, ip->bytes, ip->family == AF_INET ? 4 : 16) == 0)
			st = RESOLVER_FOUND;
	resolver_result_free(&res);
	return st;
}

enum resolver_status resolver_verify_client(struct resolver *r, const char *ipaddr,
					    struct buf *name, struct buf *err)
{
	struct resolver_result ptr;
	struct buf rev = BUF_INIT;
	struct inet_addr ip;
	enum resolver_status st = RESOLVER_PERMFAIL, fwd;
	size_t i;

	resolver_result_init(&ptr);
	buf_reset(name);
	if (inet_addr_parse(ipaddr, &ip) < 0 || resolver_reverse_name(ipaddr, &rev) < 0) {
		buf_printf(err, "bad IP address \"%.64s\"", ipaddr);
		goto out;
	}
	resolver_lookup(r, buf_str(&rev), RESOLVER_T_PTR, &ptr);
	if ((st = ptr.status) != RESOLVER_FOUND) {
		buf_set(err, buf_str(&ptr.msg));
		goto out;
	}
	st = RESOLVER_NODATA;
	for (i = 0; i < ptr.count && i < RESOLVER_VERIFY_MAX; i++) {
		/* Postfix ignores malformed or numeric PTR names ("1.2.3.4"). */
		if (addr_domain_check(ptr.rr[i].text, 0, NULL) != ADDR_OK)
			continue;
		fwd = resolver_forward_match(r, ptr.rr[i].text, &ip);
		if (fwd == RESOLVER_FOUND) {
			buf_set(name, ptr.rr[i].text);
			st = RESOLVER_FOUND;
			goto out;
		}
		if (fwd == RESOLVER_TEMPFAIL)
			st = RESOLVER_TEMPFAIL;
	}
	buf_reset(err);
	buf_printf(err, "%s: %s",
		   st == RESOLVER_TEMPFAIL ? "temporary failure confirming"
					   : "hostname does not resolve to address",
		   ipaddr);
out:
	resolver_result_free(&ptr);
	buf_free(&rev);
	return st;
}

void resolver_free(struct resolver *r)
{
	if (r == NULL)
		return;
	while (r->pending != NULL) {
		(void)ub_cancel(r->ctx, r->pending->async_id);
		resolver_query_unlink(r->pending);
	}
	if (r->ev != NULL)
		event_free(r->ev);
	if (r->ctx != NULL)
		ub_ctx_delete(r->ctx);
	free(r);
}
