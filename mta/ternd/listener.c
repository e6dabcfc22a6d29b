/* listener.c - resolve and bind the "listen_NAME" addresses (listener.h).
 *
 * "*:port" / "port" bind every inet_interfaces address for the families
 * of inet_protocols; IPv6 sockets get IPV6_V6ONLY so "0.0.0.0:25" and
 * "[::]:25" can coexist. Errors name the listener and the address.
 */
#include "listener.h"

#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LISTENER_BACKLOG 1024

/* Which families inet_protocols allows (bit 0 IPv4, bit 1 IPv6). */
#define FAM_V4 1
#define FAM_V6 2

static int listener_families(const struct cfg *cfg, const char *name, int *fams, struct buf *err)
{
	struct cfg_list l;
	int rc = 0;

	if (cfg_get_list(cfg, name, "inet_protocols", &l, err) < 0)
		return -1;
	*fams = 0;
	for (size_t i = 0; i < l.count && rc == 0; i++) {
		if (strcasecmp(l.items[i], "all") == 0)
			*fams |= FAM_V4 | FAM_V6;
		else if (strcasecmp(l.items[i], "ipv4") == 0)
			*fams |= FAM_V4;
		else if (strcasecmp(l.items[i], "ipv6") == 0)
			*fams |= FAM_V6;
		else {
			buf_printf(err,
				   "bad inet_protocols value \"%s\": expected all, ipv4 or ipv6",
				   l.items[i]);
			rc = -1;
		}
	}
	cfg_list_free(&l);
	if (rc == 0 && *fams == 0)
		*fams = FAM_V4 | FAM_V6; /* empty: Postfix treats as all */
	/* "all" on a host without IPv6 must not fail every start. */
	if (rc == 0 && (*fams & FAM_V6)) {
		int fd = socket(AF_INET6, SOCK_STREAM, 0);
		if (fd < 0 && (errno == EAFNOSUPPORT || errno == EPROTONOSUPPORT))
			*fams &= ~FAM_V6;
		if (fd >= 0)
			close(fd);
		if (*fams == 0) {
			buf_puts(err, "inet_protocols: IPv6 is not supported by this host");
			rc = -1;
		}
	}
	return rc;
}

static void listener_format(const struct sockaddr *sa, struct buf *out)
{
	char host[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		buf_printf(out, "[%s]:%u", host, ntohs(s6->sin6_port));
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		buf_printf(out, "%s:%u", host, ntohs(s4->sin_port));
	}
}

static int listener_same_addr(const struct listen_sock *a, const struct sockaddr *sa, socklen_t len)
{
	return a->sslen == len && memcmp(&a->ss, sa, len) == 0;
}

/* Append one resolved address; the same address twice is an error (the
 * second bind would fail with a less helpful "Address already in use"). */
static int listener_add(struct listen_set *set, const char *name, const struct sockaddr *sa,
			socklen_t len, struct buf *err)
{
	struct buf text = BUF_INIT;
	struct listen_sock *ls;

	buf_init(&text);
	listener_format(sa, &text);
	for (size_t i = 0; i < set->n; i++) {
		if (listener_same_addr(&set->v[i], sa, len)) {
			buf_printf(err, "listener %s: address %s is also used by listener %s", name,
				   buf_str(&text), set->v[i].name);
			buf_free(&text);
			return -1;
		}
	}
	set->v = xrealloc(set->v, (set->n + 1) * sizeof(*set->v));
	ls = &set->v[set->n++];
	memset(ls, 0, sizeof(*ls));
	ls->name = xstrdup(name);
	ls->text = buf_detach(&text);
	memcpy(&ls->ss, sa, len);
	ls->sslen = len;
	ls->fd = -1;
	return 0;
}

/* host NULL = the wildcard address of each allowed family. */
static int listener_lookup(struct listen_set *set, const char *name, const char *host,
			   const char *port, int fams, int filter, struct buf *err)
{
	struct addrinfo hints, *res = NULL, *ai;
	int rc = 0, gai, found = 0;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	hints.ai_family = fams == FAM_V4 ? AF_INET : fams == FAM_V6 ? AF_INET6 : AF_UNSPEC;
	if (!filter)
		hints.ai_family = AF_UNSPEC;
	if ((gai = getaddrinfo(host, port, &hints, &res)) != 0) {
		buf_printf(err, "listener %s: cannot resolve \"%s%s%s\": %s", name,
			   host ? host : "", host ? ":" : "", port, gai_strerror(gai));
		return -1;
	}
	for (ai = res; ai && rc == 0; ai = ai->ai_next) {
		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		if (filter && !(fams & (ai->ai_family == AF_INET ? FAM_V4 : FAM_V6)))
			continue;
		rc = listener_add(set, name, ai->ai_addr, ai->ai_addrlen, err);
		found = 1;
	}
	freeaddrinfo(res);
	if (rc == 0 && !found) {
		buf_printf(err, "listener %s: \"%s\" has no address for inet_protocols", name,
			   host ? host : "*");
		rc = -1;
	}
	return rc;
}

/* "[::1]" -> "::1"; anything else as it is. */
static void listener_unbracket(const char *s, size_t len, struct buf *out)
{
	buf_reset(out);
	if (len >= 2 && s[0] == '[' && s[len - 1] == ']')
		buf_append(out, s + 1, len - 2);
	else
		buf_append(out, s, len);
}

/* "*:port" or "port": inet_interfaces (all, loopback-only, or a list). */
static int listener_wildcard(const struct cfg *cfg, struct listen_set *set, const char *name,
			     const char *port, int fams, struct buf *err)
{
	struct cfg_list l;
	struct buf host = BUF_INIT;
	int rc = 0;

	if (cfg_get_list(cfg, name, "inet_interfaces", &l, err) < 0)
		return -1;
	buf_init(&host);
	for (size_t i = 0; i < l.count && rc == 0; i++) {
		const char *it = l.items[i];
		if (strcasecmp(it, "all") == 0) {
			if (fams & FAM_V4)
				rc = listener_lookup(set, name, "0.0.0.0", port, FAM_V4, 1, err);
			if (rc == 0 && (fams & FAM_V6))
				rc = listener_lookup(set, name, "::", port, FAM_V6, 1, err);
		} else if (strcasecmp(it, "loopback-only") == 0) {
			if (fams & FAM_V4)
				rc = listener_lookup(set, name, "127.0.0.1", port, FAM_V4, 1, err);
			if (rc == 0 && (fams & FAM_V6))
				rc = listener_lookup(set, name, "::1", port, FAM_V6, 1, err);
		} else {
			/* "[::1]" or a bare address or host name */
			listener_unbracket(it, strlen(it), &host);
			rc = listener_lookup(set, name, buf_str(&host), port, fams, 1, err);
		}
	}
	if (rc == 0 && l.count == 0) {
		buf_printf(err, "listener %s: inet_interfaces is empty", name);
		rc = -1;
	}
	buf_free(&host);
	cfg_list_free(&l);
	return rc;
}

/* One item of listen_NAME: "port", "*:port", "host:port", "[v6]:port".
 * The syntax was checked at config load; be defensive anyway. */
static int listener_item(const struct cfg *cfg, struct listen_set *set, const char *name,
			 const char *item, int fams, struct buf *err)
{
	struct buf host = BUF_INIT;
	const char *colon = strrchr(item, ':');
	int rc;

	if (colon == NULL)
		return listener_wildcard(cfg, set, name, item, fams, err);
	buf_init(&host);
	listener_unbracket(item, (size_t)(colon - item), &host);
	if (strcmp(buf_str(&host), "*") == 0 || host.len == 0)
		rc = listener_wildcard(cfg, set, name, colon + 1, fams, err);
	else /* an explicit address is bound as written */
		rc = listener_lookup(set, name, buf_str(&host), colon + 1, fams, 0, err);
	buf_free(&host);
	return rc;
}

static int listener_resolve_one(const struct cfg *cfg, struct listen_set *set, const char *name,
				struct buf *err)
{
	struct buf param = BUF_INIT;
	struct cfg_list l = {NULL, 0};
	int fams, rc;

	buf_init(&param);
	buf_printf(&param, "listen_%s", name);
	rc = listener_families(cfg, name, &fams, err);
	if (rc == 0)
		rc = cfg_get_list(cfg, NULL, buf_str(&param), &l, err);
	for (size_t i = 0; rc == 0 && i < l.count; i++)
		rc = listener_item(cfg, set, name, l.items[i], fams, err);
	if (l.items)
		cfg_list_free(&l);
	buf_free(&param);
	return rc;
}

int listener_set_resolve(const struct cfg *cfg, struct listen_set *out, struct buf *err)
{
	struct cfg_list names;
	int rc = 0;

	out->v = NULL;
	out->n = 0;
	if (cfg_listeners(cfg, &names) < 0) {
		buf_puts(err, "cannot list listeners");
		return -1;
	}
	for (size_t i = 0; i < names.count && rc == 0; i++)
		rc = listener_resolve_one(cfg, out, names.items[i], err);
	cfg_list_free(&names);
	if (rc < 0)
		listener_set_close(out);
	return rc;
}

static int listener_bind(struct listen_sock *ls, struct buf *err)
{
	int fd, on = 1;

	fd = socket(ls->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	/* Restart while old connections linger in TIME_WAIT. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) < 0)
		goto fail;
	/* "[::]:25" must not also claim IPv4, or "0.0.0.0:25" fails. */
	if (ls->ss.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) < 0)
		goto fail;
	if (bind(fd, (struct sockaddr *)&ls->ss, ls->sslen) < 0 || listen(fd, LISTENER_BACKLOG) < 0)
		goto fail;
	ls->fd = fd;
	return 0;
fail:
	buf_printf(err, "listener %s: bind %s: %s", ls->name, ls->text, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

static struct listen_sock *listener_find(struct listen_set *set, const struct listen_sock *ls)
{
	for (size_t i = 0; set && i < set->n; i++)
		if (set->v[i].fd >= 0 &&
		    listener_same_addr(&set->v[i], (const struct sockaddr *)&ls->ss, ls->sslen))
			return &set->v[i];
	return NULL;
}

int listener_set_open(const struct cfg *cfg, struct listen_set *old, struct listen_set *out,
		      struct buf *err)
{
	size_t i;

	if (listener_set_resolve(cfg, out, err) < 0)
		return -1;
	/* Bind what is new first: a failure must leave old serving. */
	for (i = 0; i < out->n; i++)
		if (listener_find(old, &out->v[i]) == NULL && listener_bind(&out->v[i], err) < 0)
			goto fail;
	for (i = 0; i < out->n; i++) {
		struct listen_sock *prev;
		if (out->v[i].fd < 0 && (prev = listener_find(old, &out->v[i])) != NULL) {
			out->v[i].fd = prev->fd;
			prev->fd = -1;
		}
	}
	return 0;
fail:
	listener_set_close(out);
	return -1;
}

void listener_set_restore(struct listen_set *set, struct listen_set *old)
{
	for (size_t i = 0; i < set->n; i++) {
		for (size_t j = 0; set->v[i].fd >= 0 && j < old->n; j++) {
			if (old->v[j].fd < 0 &&
			    listener_same_addr(&old->v[j], (const struct sockaddr *)&set->v[i].ss,
					       set->v[i].sslen)) {
				old->v[j].fd = set->v[i].fd;
				set->v[i].fd = -1;
			}
		}
	}
	listener_set_close(set);
}

void listener_set_close(struct listen_set *set)
{
	for (size_t i = 0; i < set->n; i++) {
		if (set->v[i].fd >= 0)
			close(set->v[i].fd);
		free(set->v[i].name);
		free(set->v[i].text);
	}
	free(set->v);
	set->v = NULL;
	set->n = 0;
}
