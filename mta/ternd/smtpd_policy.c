/* smtpd_policy.c - the client side of Postfix's SMTP access policy
 * delegation protocol (SMTPD_POLICY_README, postfix.md §1): a request is
 * "name=value\n" lines and an empty line, the reply "action=...\n\n".
 *
 * Connections are pooled per event loop and per service (endpoint plus
 * its settings), and reused across sessions: a request takes an idle
 * connection or opens a new one, so a slow server delays only the
 * requests it is answering. Each try has a deadline (timeout); a failed
 * try (connect error, timeout, hang-up, a reply without "action=")
 * closes the connection and is retried after retry_delay, up to
 * try_limit tries; then the caller gets NULL and applies default_action.
 * Idle connections are watched: input or a hang-up closes them (a dead
 * connection is never used); max_idle closes them, max_ttl and
 * request_limit retire them after use.
 * Endpoints: inet:host:port ([v6]:port), unix:/path (local: too), and
 * spawn:/path/program args... for policy programs that talk on stdin and
 * stdout (as Postfix runs them under spawn(8)): one process per
 * connection, on a socketpair, as the ternd user; it ends when its
 * connection is closed (EOF on stdin) and is reaped then or later.
 * Pitfall: a pool belongs to one loop's thread; only the pool list is
 * shared (mutex), and it outlives config snapshots (the settings are
 * copied into the pool).
 */
#include "smtpd_int.h"

#include "inet.h"
#include "log.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define POLICY_REPLY_MAX 8192 /* Postfix: 4 * line_length_limit per attribute */
/* Connections per service and loop: beyond, requests wait for one (a
 * flood against a slow service must not eat the process's descriptors). */
#define POLICY_POOL_MAX 64

/* ------------------------------------------------------------------ */
/* settings                                                            */

static int policy_setting(struct policy_service *p, const char *item, struct buf *err)
{
	static const struct {
		const char *name;
		size_t off;
		int time;
	} nums[] = {
	    {"timeout", offsetof(struct policy_service, timeout_ms), 1},
	    {"max_idle", offsetof(struct policy_service, max_idle_ms), 1},
	    {"max_ttl", offsetof(struct policy_service, max_ttl_ms), 1},
	    {"retry_delay", offsetof(struct policy_service, retry_delay_ms), 1},
	    {"request_limit", offsetof(struct policy_service, request_limit), 0},
	    {"try_limit", offsetof(struct policy_service, try_limit), 0},
	};
	struct buf name = BUF_INIT, value = BUF_INIT, whole = BUF_INIT;
	const char *eq;
	int rc = -1;

	/* "name=value", or "{ name = value with spaces }" */
	cfg_list_unbrace(item, &whole);
	if ((eq = strchr(buf_str(&whole), '=')) == NULL) {
		buf_printf(err, "\"%s\": expected name=value", item);
		buf_free(&whole);
		return -1;
	}
	buf_append(&name, whole.data, (size_t)(eq - whole.data));
	buf_trim(&name);
	buf_set(&value, eq + 1);
	buf_trim(&value);
	buf_free(&whole);
	if (strcmp(buf_str(&name), "default_action") == 0) {
		free(p->default_action);
		p->default_action = buf_detach(&value);
		rc = 0;
	} else if (strcmp(buf_str(&name), "policy_context") == 0) {
		free(p->policy_context);
		p->policy_context = buf_detach(&value);
		rc = 0;
	}
	for (size_t i = 0; rc < 0 && i < sizeof(nums) / sizeof(*nums); i++) {
		long long *out = (long long *)((char *)p + nums[i].off), v;
		if (strcmp(buf_str(&name), nums[i].name) != 0)
			continue;
		if (nums[i].time ? cfg_parse_time_ms(buf_str(&value), "s", &v) < 0
				 : cfg_parse_int(buf_str(&value), &v) < 0 || v < 0) {
			buf_printf(err, "bad %s value \"%s\"", nums[i].name, buf_str(&value));
			goto out;
		}
		*out = v;
		rc = 0;
	}
	if (rc < 0 && err->len == 0)
		buf_printf(err,
			   "unknown attribute \"%s\" (timeout, max_idle, max_ttl, "
			   "request_limit, try_limit, retry_delay, default_action, "
			   "policy_context)",
			   buf_str(&name));
out:
	buf_free(&name);
	buf_free(&value);
	return rc;
}

static int policy_endpoint_ok(const char *ep, struct buf *err)
{
	if (strncmp(ep, "spawn:/", 7) == 0)
		return 0;
	if (strncmp(ep, "inet:", 5) == 0 && strrchr(ep + 5, ':') != NULL)
		return 0;
	if ((strncmp(ep, "unix:", 5) == 0 || strncmp(ep, "local:", 6) == 0) &&
	    strchr(ep, '/') != NULL)
		return 0;
	buf_printf(err, "bad endpoint \"%s\" (inet:host:port or unix:/path)", ep);
	return -1;
}

struct policy_service *policy_service_parse(const struct cfg *cfg, const char *listener,
					    const char *spec, struct buf *err)
{
	struct policy_service *p = xcalloc(1, sizeof(*p));
	struct cfg_list items = {NULL, 0};
	struct buf inner = BUF_INIT, v = BUF_INIT, ctx = BUF_INIT;

	p->spec = xstrdup(spec);
	if (cfg_get_time_ms(cfg, listener, "smtpd_policy_service_timeout", &p->timeout_ms, err) <
		0 ||
	    cfg_get_time_ms(cfg, listener, "smtpd_policy_service_max_idle", &p->max_idle_ms, err) <
		0 ||
	    cfg_get_time_ms(cfg, listener, "smtpd_policy_service_max_ttl", &p->max_ttl_ms, err) <
		0 ||
	    cfg_get_time_ms(cfg, listener, "smtpd_policy_service_retry_delay", &p->retry_delay_ms,
			    err) < 0 ||
	    cfg_get_int(cfg, listener, "smtpd_policy_service_request_limit", &p->request_limit,
			err) < 0 ||
	    cfg_get_int(cfg, listener, "smtpd_policy_service_try_limit", &p->try_limit, err) < 0 ||
	    cfg_get_str(cfg, listener, "smtpd_policy_service_default_action", &v, err) < 0 ||
	    cfg_get_str(cfg, listener, "smtpd_policy_service_policy_context", &ctx, err) < 0)
		goto fail;
	p->default_action = buf_detach(&v);
	p->policy_context = buf_detach(&ctx);
	/* "{ inet:host:port, timeout=10s, default_action=DUNNO }" */
	cfg_list_unbrace(spec, &inner);
	if (cfg_list_split(buf_str(&inner), &items, err) < 0)
		goto fail;
	if (items.count == 0) {
		buf_set(err, "empty policy service");
		goto fail;
	}
	cfg_list_unbrace(items.items[0], &v); /* "{ spawn:/prog arg }" */
	p->endpoint = buf_detach(&v);
	if (policy_endpoint_ok(p->endpoint, err) < 0)
		goto fail;
	for (size_t i = 1; i < items.count; i++)
		if (policy_setting(p, items.items[i], err) < 0)
			goto fail;
	if (p->try_limit < 1)
		p->try_limit = 1;
	if (p->timeout_ms < 1)
		p->timeout_ms = 1;
	cfg_list_free(&items);
	buf_free(&inner);
	return p;
fail:
	cfg_list_free(&items);
	buf_free(&inner);
	buf_free(&v);
	buf_free(&ctx);
	policy_service_free(p);
	return NULL;
}

void policy_service_free(struct policy_service *p)
{
	if (p == NULL)
		return;
	free(p->spec);
	free(p->endpoint);
	free(p->default_action);
	free(p->policy_context);
	free(p);
}

/* ------------------------------------------------------------------ */
/* pools and connections                                               */

struct policy_req;

struct policy_conn {
	struct policy_pool *pool;
	struct bufferevent *bev;
	pid_t pid; /* spawn: the program */
	struct event *idle_ev;
	struct policy_req *req; /* in flight, or NULL when idle */
	long long born_ms;
	long long requests;
	struct policy_conn *next;
};

struct policy_pool {
	struct event_base *base;
	char *key; /* endpoint and settings */
	char *endpoint;
	long long timeout_ms, max_idle_ms, max_ttl_ms, request_limit;
	struct policy_conn *conns;
	size_t nconns;
	struct policy_req *wait_head, *wait_tail; /* all connections busy */
	struct policy_pool *next;
};

struct policy_req {
	struct policy_pool *pool;
	struct policy_conn *conn;
	char *request;
	long long tries, try_limit, retry_delay_ms;
	struct event *timer;
	struct buf why;
	policy_cb cb;
	void *arg;
	int waiting; /* in the pool's wait list */
	struct policy_req *wait_next;
};

static pthread_mutex_t policy_lock = PTHREAD_MUTEX_INITIALIZER;
static struct policy_pool *policy_pools;

static long long policy_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct policy_pool *policy_pool_get(struct event_base *base, const struct policy_service *p)
{
	struct policy_pool *pool;
	struct buf key = BUF_INIT;

	buf_printf(&key, "%s %lld %lld %lld %lld", p->endpoint, p->timeout_ms, p->max_idle_ms,
		   p->max_ttl_ms, p->request_limit);
	pthread_mutex_lock(&policy_lock);
	for (pool = policy_pools; pool; pool = pool->next)
		if (pool->base == base && strcmp(pool->key, buf_str(&key)) == 0)
			break;
	if (pool == NULL) {
		pool = xcalloc(1, sizeof(*pool));
		pool->base = base;
		pool->key = xstrdup(buf_str(&key));
		pool->endpoint = xstrdup(p->endpoint);
		pool->timeout_ms = p->timeout_ms;
		pool->max_idle_ms = p->max_idle_ms;
		pool->max_ttl_ms = p->max_ttl_ms;
		pool->request_limit = p->request_limit;
		pool->next = policy_pools;
		policy_pools = pool;
	}
	pthread_mutex_unlock(&policy_lock);
	buf_free(&key);
	return pool;
}

/* Spawned programs whose connection is closed but that have not exited
 * yet: reaped later (never a blocking waitpid on the loop). */
static pid_t policy_zombies[64];
static size_t policy_nzombies;

static void policy_reap(pid_t pid)
{
	pthread_mutex_lock(&policy_lock);
	for (size_t i = 0; i < policy_nzombies;) {
		if (waitpid(policy_zombies[i], NULL, WNOHANG) != 0)
			policy_zombies[i] = policy_zombies[--policy_nzombies];
		else
			i++;
	}
	if (pid > 0 && waitpid(pid, NULL, WNOHANG) == 0) {
		if (policy_nzombies < sizeof(policy_zombies) / sizeof(*policy_zombies))
			policy_zombies[policy_nzombies++] = pid;
		else
			kill(pid, SIGKILL);
	}
	pthread_mutex_unlock(&policy_lock);
}

static void policy_conn_close(struct policy_conn *c)
{
	struct policy_conn **pp;

	for (pp = &c->pool->conns; *pp && *pp != c; pp = &(*pp)->next)
		;
	if (*pp) {
		*pp = c->next;
		c->pool->nconns--;
	}
	if (c->bev)
		bufferevent_free(c->bev);
	if (c->idle_ev)
		event_free(c->idle_ev);
	if (c->pid > 0)
		policy_reap(c->pid);
	free(c);
}

/* spawn:/path args: the program on one end of a socketpair. */
static int policy_spawn(const char *ep, pid_t *pid, struct buf *why)
{
	extern char **environ;
	struct cfg_list argv = {NULL, 0};
	posix_spawn_file_actions_t fa;
	char **args;
	int sv[2], rc;

	if (cfg_list_split(ep + 6, &argv, why) < 0 || argv.count == 0) {
		buf_printf(why, "bad spawn command \"%s\"", ep);
		cfg_list_free(&argv);
		return -1;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		buf_printf(why, "socketpair: %s", strerror(errno));
		cfg_list_free(&argv);
		return -1;
	}
	args = xcalloc(argv.count + 1, sizeof(*args));
	for (size_t i = 0; i < argv.count; i++)
		args[i] = argv.items[i];
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, sv[1], 0);
	posix_spawn_file_actions_adddup2(&fa, sv[1], 1);
	rc = posix_spawn(pid, args[0], &fa, NULL, args, environ);
	posix_spawn_file_actions_destroy(&fa);
	free(args);
	cfg_list_free(&argv);
	close(sv[1]);
	if (rc != 0) {
		buf_printf(why, "spawn %s: %s", ep + 6, strerror(rc));
		close(sv[0]);
		return -1;
	}
	evutil_make_socket_nonblocking(sv[0]);
	return sv[0];
}


static void policy_read_cb(struct bufferevent *bev, void *arg);
static void policy_event_cb(struct bufferevent *bev, short what, void *arg);
static void policy_idle_cb(evutil_socket_t fd, short what, void *arg);

static struct policy_conn *policy_conn_open(struct policy_pool *pool, struct buf *why)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;
	struct policy_conn *c;
	pid_t pid = 0;
	int fd = -1;

	policy_reap(0);
	if (strncmp(pool->endpoint, "spawn:", 6) == 0) {
		if ((fd = policy_spawn(pool->endpoint, &pid, why)) < 0)
			return NULL;
	} else if (inet_endpoint_sockaddr(pool->endpoint, &ss, &len, why) < 0) {
		return NULL;
	}
	c = xcalloc(1, sizeof(*c));
	c->pid = pid;
	c->pool = pool;
	c->born_ms = policy_now_ms();
	c->bev = bufferevent_socket_new(pool->base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->idle_ev = evtimer_new(pool->base, policy_idle_cb, c);
	bufferevent_setcb(c->bev, policy_read_cb, NULL, policy_event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (fd < 0 && bufferevent_socket_connect(c->bev, (struct sockaddr *)&ss, (int)len) < 0) {
		buf_printf(why, "connect to %s: %s", pool->endpoint, strerror(errno));
		bufferevent_free(c->bev);
		event_free(c->idle_ev);
		free(c);
		return NULL;
	}
	c->next = pool->conns;
	pool->conns = c;
	pool->nconns++;
	return c;
}

/* An idle connection that is still usable, else a new one. */
static struct policy_conn *policy_conn_take(struct policy_pool *pool, struct buf *why)
{
	long long now = policy_now_ms();
	struct policy_conn *c, *next;

	for (c = pool->conns; c; c = next) {
		next = c->next;
		if (c->req)
			continue;
		/* Input before a request means the server is not in sync (or
		 * has hung up): never reuse such a connection. */
		if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0 ||
		    (pool->max_ttl_ms > 0 && now - c->born_ms >= pool->max_ttl_ms)) {
			policy_conn_close(c);
			continue;
		}
		evtimer_del(c->idle_ev);
		return c;
	}
	if (pool->nconns >= POLICY_POOL_MAX)
		return NULL; /* why stays empty: wait */
	return policy_conn_open(pool, why);
}

static void policy_wait_remove(struct policy_req *r)
{
	struct policy_pool *pool = r->pool;
	struct policy_req **pp;

	for (pp = &pool->wait_head; *pp && *pp != r; pp = &(*pp)->wait_next)
		;
	if (*pp == NULL)
		return;
	*pp = r->wait_next;
	if (pool->wait_tail == r) {
		pool->wait_tail = NULL;
		for (struct policy_req *q = pool->wait_head; q; q = q->wait_next)
			pool->wait_tail = q;
	}
	r->waiting = 0;
	r->wait_next = NULL;
}

static void policy_send(struct policy_req *r, struct policy_conn *c)
{
	c->req = r;
	r->conn = c;
	bufferevent_write(c->bev, r->request, strlen(r->request));
}

/* A connection became free (or a slot for a new one): the next waiter. */
static void policy_pool_next(struct policy_pool *pool)
{
	struct policy_req *r = pool->wait_head;
	struct policy_conn *c;
	struct buf why = BUF_INIT;

	if (r == NULL)
		return;
	if ((c = policy_conn_take(pool, &why)) != NULL) {
		policy_wait_remove(r);
		policy_send(r, c);
	}
	buf_free(&why); /* a failed open: the waiter's own deadline handles it */
}

static void policy_req_free(struct policy_req *r)
{
	if (r->timer)
		event_free(r->timer);
	buf_free(&r->why);
	free(r->request);
	free(r);
}

static void policy_req_done(struct policy_req *r, const char *action)
{
	policy_cb cb = r->cb;
	void *arg = r->arg;
	char *why = action ? NULL : xstrdup(buf_str(&r->why));

	policy_req_free(r);
	cb(arg, action, why);
	free(why);
}

static void policy_try(struct policy_req *r);

static void policy_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	policy_try(arg);
}

static void policy_timeout_cb(evutil_socket_t fd, short what, void *arg);

/* This try failed: close its connection, then retry or give up. */
static void policy_fail(struct policy_req *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void policy_fail(struct policy_req *r, const char *fmt, ...)
{
	va_list ap;
	struct timeval tv = {r->retry_delay_ms / 1000, (r->retry_delay_ms % 1000) * 1000};

	buf_reset(&r->why);
	va_start(ap, fmt);
	buf_vprintf(&r->why, fmt, ap);
	va_end(ap);
	if (r->waiting)
		policy_wait_remove(r);
	if (r->conn) {
		r->conn->req = NULL;
		policy_conn_close(r->conn);
		r->conn = NULL;
		policy_pool_next(r->pool);
	}
	if (r->tries >= r->try_limit) {
		msg_warn("problem talking to server %s: %s", r->pool->endpoint, buf_str(&r->why));
		policy_req_done(r, NULL);
		return;
	}
	event_free(r->timer);
	r->timer = evtimer_new(r->pool->base, policy_retry_cb, r);
	evtimer_add(r->timer, &tv);
}

static void policy_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct policy_req *r = arg;

	policy_fail(r, "timeout after %llds", (long long)(r->pool->timeout_ms / 1000));
}

static void policy_try(struct policy_req *r)
{
	struct timeval tv = {r->pool->timeout_ms / 1000, (r->pool->timeout_ms % 1000) * 1000};
	struct policy_conn *c;

	r->tries++;
	if (r->timer)
		event_free(r->timer);
	r->timer = evtimer_new(r->pool->base, policy_timeout_cb, r);
	buf_reset(&r->why);
	evtimer_add(r->timer, &tv); /* the deadline covers a wait for a connection */
	if ((c = policy_conn_take(r->pool, &r->why)) == NULL && r->why.len) {
		struct buf why = BUF_INIT;
		buf_set(&why, buf_str(&r->why));
		policy_fail(r, "%s", buf_str(&why));
		buf_free(&why);
		return;
	}
	if (c == NULL) { /* every connection busy */
		r->waiting = 1;
		if (r->pool->wait_tail)
			r->pool->wait_tail->wait_next = r;
		else
			r->pool->wait_head = r;
		r->pool->wait_tail = r;
		return;
	}
	policy_send(r, c);
}

/* The reply: "name=value" lines up to an empty line; only "action" counts. */
static int policy_parse(const char *text, size_t len, struct buf *action, struct buf *why)
{
	const char *p = text, *end = text + len;
	int have = 0;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *eq;
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (n == 0)
			break;
		eq = memchr(p, '=', n);
		if (eq == NULL || eq == p || memchr(p, 0, n)) {
			buf_printf(why, "malformed reply line \"%.*s\"", (int)(n > 60 ? 60 : n), p);
			return -1;
		}
		if ((size_t)(eq - p) == 6 && memcmp(p, "action", 6) == 0) {
			buf_reset(action);
			buf_append(action, eq + 1, n - (size_t)(eq - p) - 1);
			have = 1;
		}
		p += n + 1;
	}
	if (!have) {
		buf_set(why, "reply without action attribute");
		return -1;
	}
	/* Postfix with smtputf8_enable (the default): only valid UTF-8. */
	if (!addr_utf8_valid(action->data ? action->data : "", action->len)) {
		buf_set(why, "reply is not valid UTF-8");
		return -1;
	}
	return 0;
}

static void policy_read_cb(struct bufferevent *bev, void *arg)
{
	struct policy_conn *c = arg;
	struct policy_req *r = c->req;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr end;
	struct buf action = BUF_INIT, why = BUF_INIT;
	size_t len;
	char *text;

	if (r == NULL) { /* talk on an idle connection: not in sync, drop it */
		policy_conn_close(c);
		return;
	}
	end = evbuffer_search(in, "\n\n", 2, NULL);
	if (end.pos < 0) {
		/* An empty first line is an empty reply (no attributes). */
		if (evbuffer_get_length(in) >= 1 && *evbuffer_pullup(in, 1) == '\n')
			end.pos = -1, len = 1;
		else if (evbuffer_get_length(in) > POLICY_REPLY_MAX) {
			policy_fail(r, "reply too long");
			return;
		} else
			return; /* more to come */
	} else {
		len = (size_t)end.pos + 2;
	}
	text = xstrndup((const char *)evbuffer_pullup(in, (ssize_t)len), len);
	evbuffer_drain(in, len);
	if (policy_parse(text, len, &action, &why) < 0) {
		policy_fail(r, "%s", buf_str(&why));
	} else {
		struct timeval idle = {c->pool->max_idle_ms / 1000,
				       (c->pool->max_idle_ms % 1000) * 1000};
		c->req = NULL;
		r->conn = NULL;
		c->requests++;
		struct policy_pool *pool = c->pool;
		if ((pool->request_limit > 0 && c->requests >= pool->request_limit) ||
		    (pool->max_ttl_ms > 0 && policy_now_ms() - c->born_ms >= pool->max_ttl_ms))
			policy_conn_close(c);
		else
			evtimer_add(c->idle_ev, &idle);
		policy_pool_next(pool);
		policy_req_done(r, buf_str(&action));
	}
	free(text);
	buf_free(&action);
	buf_free(&why);
}

static void policy_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct policy_conn *c = arg;
	struct policy_req *r = c->req;

	if (what & BEV_EVENT_CONNECTED)
		return;
	if (r == NULL) { /* an idle connection was closed by the server */
		policy_conn_close(c);
		return;
	}
	if (what & BEV_EVENT_EOF)
		policy_fail(r, "lost connection");
	else
		policy_fail(r, "%s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static void policy_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct policy_conn *c = arg;

	if (c->req == NULL)
		policy_conn_close(c);
}

/* Deferred start: the caller's callback never runs inside policy_query(). */
static void policy_start_cb(evutil_socket_t fd, short what, void *arg)
{
	policy_try(arg);
}

void policy_query(struct event_base *base, const struct policy_service *p, const char *request,
		  policy_cb cb, void *arg)
{
	struct policy_req *r = xcalloc(1, sizeof(*r));
	struct timeval now = {0, 0};

	r->pool = policy_pool_get(base, p);
	r->request = xstrdup(request);
	r->try_limit = p->try_limit;
	r->retry_delay_ms = p->retry_delay_ms;
	r->cb = cb;
	r->arg = arg;
	buf_init(&r->why);
	r->timer = evtimer_new(base, policy_start_cb, r);
	evtimer_add(r->timer, &now);
}
