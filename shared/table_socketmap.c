/* table_socketmap.c - socketmap: lookup client (Postfix socketmap_table(5),
 * the Sendmail socketmap protocol): "socketmap:inet:host:port:name" or
 * "socketmap:unix:/path:name".
 *
 * One request netstring "name key", one reply netstring "OK data",
 * "NOTFOUND ", "TEMP/TIMEOUT/PERM reason". The connection is kept and
 * reused, dropped after 10s idle or 100s of age, and a lookup that finds
 * it dead reconnects once (Postfix's auto_clnt limits). Replies over
 * 100000 bytes and every I/O or protocol failure are TABLE_ERROR, never
 * "not found". Keys are sent unfolded and matched whole, as by Postfix.
 */
#include "log.h"
#include "netstring.h"
#include "table.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define SOCKETMAP_TIMEOUT 100	   /* seconds per request, as Postfix */
#define SOCKETMAP_MAX_REPLY 100000 /* payload bytes, as Postfix */
#define SOCKETMAP_MAX_IDLE 10	   /* seconds before a connection is dropped */
#define SOCKETMAP_MAX_TTL 100	   /* seconds a connection may be reused */

/* Internal status: the connection died before a reply; try a fresh one. */
#define SOCKETMAP_RETRY (-2)

struct socketmap {
	char *host; /* inet: host and port; NULL for unix: */
	char *port;
	char *path; /* unix: socket path */
	char *mapname;
	int fd;
	time_t connected, used;
	struct buf in; /* received bytes not yet consumed */
	pthread_mutex_t lock;
};

static void socketmap_disconnect(struct socketmap *sm)
{
	if (sm->fd >= 0)
		close(sm->fd);
	sm->fd = -1;
	buf_reset(&sm->in);
}

/* Split "inet:host:port:name" / "unix:path:name"; the map name is after
 * the last colon so unix paths and bracketed IPv6 hosts may hold colons. */
static int socketmap_parse(struct socketmap *sm, const char *spec, struct buf *err)
{
	const char *last = strrchr(spec, ':');
	char *endpoint;

	if (last == NULL || last[1] == 0 || strchr(spec, ':') == last)
		goto bad;
	sm->mapname = xstrdup(last + 1);
	endpoint = xstrndup(spec, (size_t)(last - spec));
	if (strncmp(endpoint, "unix:", 5) == 0 && endpoint[5]) {
		sm->path = xstrdup(endpoint + 5);
	} else if (strncmp(endpoint, "inet:", 5) == 0) {
		char *hp = endpoint + 5, *colon = strrchr(hp, ':');
		if (colon == NULL || colon == hp || colon[1] == 0) {
			free(endpoint);
			goto bad;
		}
		*colon = 0;
		if (hp[0] == '[' && colon[-1] == ']') { /* [ipv6]:port */
			hp++;
			colon[-1] = 0;
		}
		sm->host = xstrdup(hp);
		sm->port = xstrdup(colon + 1);
	} else {
		free(endpoint);
		goto bad;
	}
	free(endpoint);
	return 0;
bad:
	buf_printf(err, "socketmap:%s: expected inet:host:port:name or unix:pathname:name", spec);
	return -1;
}

static int socketmap_ms_left(time_t deadline)
{
	time_t now = time(NULL);
	return now >= deadline ? 0 : (int)(deadline - now) * 1000;
}

/* Wait for fd to become ready; 0 ok, -1 on timeout or error (err set). */
static int socketmap_wait(int fd, short events, time_t deadline, struct buf *err)
{
	struct pollfd pfd = {.fd = fd, .events = events};
	int rc;

	do
		rc = poll(&pfd, 1, socketmap_ms_left(deadline));
	while (rc < 0 && errno == EINTR);
	if (rc == 0) {
		buf_puts(err, "timeout");
		return -1;
	}
	if (rc < 0) {
		buf_printf(err, "poll: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* Non-blocking connect bounded by the deadline. */
static int socketmap_connect_addr(const struct sockaddr *sa, socklen_t salen, int family,
				  time_t deadline, struct buf *err)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int soerr = 0;
	socklen_t len = sizeof(soerr);

	if (fd < 0) {
		buf_printf(err, "socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, sa, salen) == 0)
		return fd;
	if (errno != EINPROGRESS) {
		soerr = errno;
		goto fail;
	}
	if (socketmap_wait(fd, POLLOUT, deadline, err) < 0)
		goto fail_msg;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
		soerr = errno;
	if (soerr == 0)
		return fd;
fail:
	buf_puts(err, strerror(soerr));
fail_msg:
	close(fd);
	return -1;
}

static int socketmap_connect_inet(struct socketmap *sm, time_t deadline, struct buf *err)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
	int fd = -1, gai;

	if ((gai = getaddrinfo(sm->host, sm->port, &hints, &res)) != 0) {
		buf_printf(err, "connect to %s:%s: %s", sm->host, sm->port, gai_strerror(gai));
		return -1;
	}
	for (ai = res; ai && fd < 0; ai = ai->ai_next) {
		buf_reset(err);
		buf_printf(err, "connect to %s:%s: ", sm->host, sm->port);
		fd = socketmap_connect_addr(ai->ai_addr, ai->ai_addrlen, ai->ai_family, deadline,
					    err);
	}
	freeaddrinfo(res);
	return fd;
}

static int socketmap_connect_unix(struct socketmap *sm, time_t deadline, struct buf *err)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	if (strlen(sm->path) >= sizeof(sun.sun_path)) {
		buf_printf(err, "connect to %s: socket path too long", sm->path);
		return -1;
	}
	strcpy(sun.sun_path, sm->path);
	buf_printf(err, "connect to %s: ", sm->path);
	return socketmap_connect_addr((struct sockaddr *)&sun, sizeof(sun), AF_UNIX, deadline, err);
}

static int socketmap_connect(struct socketmap *sm, time_t deadline, struct buf *err)
{
	sm->fd = sm->path ? socketmap_connect_unix(sm, deadline, err)
			  : socketmap_connect_inet(sm, deadline, err);
	if (sm->fd < 0)
		return -1;
	buf_reset(err);
	sm->connected = time(NULL);
	return 0;
}

/* Send all of out. SOCKETMAP_RETRY if the peer has gone away. */
static int socketmap_send(struct socketmap *sm, const struct buf *out, time_t deadline,
			  struct buf *err)
{
	size_t off = 0;

	while (off < out->len) {
		ssize_t n = send(sm->fd, out->data + off, out->len - off, MSG_NOSIGNAL);
		if (n > 0) {
			off += (size_t)n;
		} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (socketmap_wait(sm->fd, POLLOUT, deadline, err) < 0)
				return TABLE_ERROR;
		} else {
			if (errno == EPIPE || errno == ECONNRESET)
				return SOCKETMAP_RETRY;
			buf_printf(err, "write: %s", strerror(errno));
			return TABLE_ERROR;
		}
	}
	return 0;
}

/* Read one reply netstring into reply. SOCKETMAP_RETRY if the peer closed
 * (or reset) before sending a byte: a connection that died while idle. */
static int socketmap_recv(struct socketmap *sm, struct buf *reply, time_t deadline, struct buf *err)
{
	const char *data;
	size_t len, used;
	char chunk[4096];

	for (;;) {
		int rc = netstring_decode(sm->in.data ? sm->in.data : "", sm->in.len,
					  SOCKETMAP_MAX_REPLY, &data, &len, &used, err);
		if (rc == NETSTRING_ERROR)
			return TABLE_ERROR;
		if (rc == NETSTRING_OK)
			break;
		if (socketmap_wait(sm->fd, POLLIN, deadline, err) < 0)
			return TABLE_ERROR;
		ssize_t n = recv(sm->fd, chunk, sizeof(chunk), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 && sm->in.len == 0 && (n == 0 || errno == ECONNRESET))
			return SOCKETMAP_RETRY;
		if (n <= 0) {
			buf_puts(err, n == 0 ? "unexpected end of reply" : strerror(errno));
			return TABLE_ERROR;
		}
		buf_append(&sm->in, chunk, (size_t)n);
	}
	buf_reset(reply);
	buf_append(reply, data, len);
	/* Keep anything the server sent beyond this reply. */
	memmove(sm->in.data, sm->in.data + used, sm->in.len - used);
	buf_truncate(&sm->in, sm->in.len - used);
	return 0;
}

/* Interpret "OK data", "NOTFOUND ", "TEMP|TIMEOUT|PERM reason". */
static int socketmap_reply(const struct buf *reply, struct buf *value, struct buf *err)
{
	static const struct {
		const char *word;
		const char *what;
	} fails[] = {
	    {"TEMP", "temporary error"},
	    {"TIMEOUT", "timeout"},
	    {"PERM", "permanent error"},
	};
	const char *r = buf_str(reply);

	if (memchr(r, 0, reply->len) != NULL) {
		buf_puts(err, "malformed reply: contains a null byte");
		return TABLE_ERROR;
	}
	if (strncmp(r, "OK ", 3) == 0 || strcmp(r, "OK") == 0) {
		buf_puts(value, r[2] ? r + 3 : "");
		return TABLE_FOUND;
	}
	if (strncmp(r, "NOTFOUND", 8) == 0 && (r[8] == ' ' || r[8] == 0))
		return TABLE_NOTFOUND;
	for (size_t i = 0; i < sizeof(fails) / sizeof(fails[0]); i++) {
		size_t n = strlen(fails[i].word);
		if (strncmp(r, fails[i].word, n) == 0 && (r[n] == ' ' || r[n] == 0)) {
			buf_printf(err, "socketmap server %s: %s", fails[i].what,
				   r[n] ? r + n + 1 : "");
			return TABLE_ERROR;
		}
	}
	buf_printf(err, "malformed reply: \"%.100s\"", r);
	return TABLE_ERROR;
}

/* One request/reply on the current connection; *replied is set once a
 * whole reply was read, so the connection is still in step. */
static int socketmap_query(struct socketmap *sm, const char *key, struct buf *value,
			   time_t deadline, int *replied, struct buf *err)
{
	struct buf req = BUF_INIT, payload = BUF_INIT, reply = BUF_INIT;
	int rc;

	buf_printf(&payload, "%s %s", sm->mapname, key);
	netstring_encode(&req, payload.data, payload.len);
	if ((rc = socketmap_send(sm, &req, deadline, err)) == 0 &&
	    (rc = socketmap_recv(sm, &reply, deadline, err)) == 0) {
		*replied = 1;
		rc = socketmap_reply(&reply, value, err);
	}
	buf_free(&req);
	buf_free(&payload);
	buf_free(&reply);
	return rc;
}

static int socketmap_lookup_locked(struct table *t, struct socketmap *sm, const char *key,
				   struct buf *value, struct buf *err)
{
	time_t now = time(NULL), deadline = now + SOCKETMAP_TIMEOUT;
	int rc = TABLE_ERROR, replied = 0;

	if (sm->fd >= 0 &&
	    (now - sm->used > SOCKETMAP_MAX_IDLE || now - sm->connected > SOCKETMAP_MAX_TTL))
		socketmap_disconnect(sm);
	for (int attempt = 0; attempt < 2; attempt++) {
		int fresh = sm->fd < 0;
		if (fresh && socketmap_connect(sm, deadline, err) < 0)
			break;
		rc = socketmap_query(sm, key, value, deadline, &replied, err);
		if (rc != SOCKETMAP_RETRY)
			break;
		socketmap_disconnect(sm);
		rc = TABLE_ERROR;
		if (fresh) { /* a new connection that dies is not worth a retry */
			buf_puts(err, "connection closed by server");
			break;
		}
	}
	sm->used = time(NULL);
	/* After an I/O or protocol error the stream position is unknown. */
	if (rc == TABLE_ERROR && !replied)
		socketmap_disconnect(sm);
	return rc;
}

static int table_socketmap_lookup(struct table *t, const char *key, struct buf *value,
				  struct buf *err)
{
	struct socketmap *sm = t->priv;
	int rc;

	pthread_mutex_lock(&sm->lock);
	rc = socketmap_lookup_locked(t, sm, key, value, err);
	pthread_mutex_unlock(&sm->lock);
	return rc;
}

static void table_socketmap_free(struct table *t)
{
	struct socketmap *sm = t->priv;

	socketmap_disconnect(sm);
	buf_free(&sm->in);
	pthread_mutex_destroy(&sm->lock);
	free(sm->host);
	free(sm->port);
	free(sm->path);
	free(sm->mapname);
	free(sm);
	t->priv = NULL;
}

/* Connect lazily, at the first lookup, as Postfix: a server that is down
 * when a daemon starts must not stop the daemon from starting. */
static int table_socketmap_load(struct table *t, struct lines *src, struct buf *err)
{
	struct socketmap *sm = xcalloc(1, sizeof(*sm));

	sm->fd = -1;
	buf_init(&sm->in);
	pthread_mutex_init(&sm->lock, NULL);
	t->priv = sm;
	if (socketmap_parse(sm, t->name, err) < 0) {
		table_socketmap_free(t);
		return -1;
	}
	return 0;
}

const struct table_ops table_socketmap_ops = {
    .type = "socketmap",
    .flags = TABLE_OPS_PATTERN | TABLE_OPS_NOFOLD,
    .load = table_socketmap_load,
    .lookup = table_socketmap_lookup,
    .free = table_socketmap_free,
};
