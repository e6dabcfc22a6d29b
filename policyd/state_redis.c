/* state_redis.c - Redis state back end (hiredis, synchronous calls with a
 * timeout, on worker threads), for several MX hosts sharing one store.
 *
 * "redis://host:port/db". Connections are kept in a small mutex-protected
 * pool, one per thread in use; a connection that failed is dropped and
 * the next call reconnects, so a restarted Redis is picked up without a
 * reload. Records get a Redis TTL as well as the expiry in the value.
 * pd_state_take() is one Lua script (EVAL): Redis runs it atomically,
 * so two servers cannot both pass a limit (issue 8, "State").
 */
#include "state.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PD_REDIS_POOL 64

struct pd_redis {
	char *host;
	int port, db;
	struct timeval tv;
	pthread_mutex_t lock;
	redisContext *pool[PD_REDIS_POOL];
	size_t npool;
};

/* Check the counter and add only below the limit, atomically; the value
 * keeps state.h's "a b c expires" form. Returns {taken, total}. */
static const char pd_redis_take_lua[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "local n = 0\n"
    "local now = tonumber(ARGV[3])\n"
    "if v then\n"
    "  local a, e = string.match(v, '^(%-?%d+) %-?%d+ %-?%d+ (%-?%d+)$')\n"
    "  if a and tonumber(e) > now then n = tonumber(a) end\n"
    "end\n"
    "local amount, limit = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "if n + amount > limit then return {0, n} end\n"
    "n = n + amount\n"
    "redis.call('SET', KEYS[1], n .. ' 0 0 ' .. ARGV[4], 'EX', ARGV[5])\n"
    "return {1, n}\n";

static redisContext *pd_redis_get_ctx(struct pd_redis *r, struct buf *err)
{
	redisContext *c = NULL;
	redisReply *rep;

	pthread_mutex_lock(&r->lock);
	if (r->npool > 0)
		c = r->pool[--r->npool];
	pthread_mutex_unlock(&r->lock);
	if (c != NULL)
		return c;
	c = redisConnectWithTimeout(r->host, r->port, r->tv);
	if (c == NULL || c->err) {
		buf_printf(err, "redis %s:%d: %s", r->host, r->port,
			   c ? c->errstr : "cannot allocate a context");
		if (c)
			redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, r->tv);
	if (r->db != 0) {
		rep = redisCommand(c, "SELECT %d", r->db);
		if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
			buf_printf(err, "redis %s:%d: SELECT %d failed", r->host, r->port, r->db);
			if (rep)
				freeReplyObject(rep);
			redisFree(c);
			return NULL;
		}
		freeReplyObject(rep);
	}
	return c;
}

static void pd_redis_put_ctx(struct pd_redis *r, redisContext *c)
{
	pthread_mutex_lock(&r->lock);
	if (c->err == 0 && r->npool < PD_REDIS_POOL) {
		r->pool[r->npool++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&r->lock);
	if (c)
		redisFree(c);
}

static redisReply *pd_redis_cmd(struct pd_redis *r, struct buf *err, int argc, const char **argv)
{
	redisContext *c = pd_redis_get_ctx(r, err);
	redisReply *rep;

	if (c == NULL)
		return NULL;
	rep = redisCommandArgv(c, argc, argv, NULL);
	if (rep == NULL)
		buf_printf(err, "redis %s:%d: %s", r->host, r->port,
			   c->errstr[0] ? c->errstr : "no reply");
	else if (rep->type == REDIS_REPLY_ERROR) {
		buf_printf(err, "redis %s:%d: %s", r->host, r->port, rep->str);
		freeReplyObject(rep);
		rep = NULL;
	}
	pd_redis_put_ctx(r, c);
	return rep;
}

static int pd_redis_get(struct pd_state *st, const char *key, struct buf *val, struct buf *err)
{
	const char *argv[] = {"GET", key};
	redisReply *rep = pd_redis_cmd(st->priv, err, 2, argv);
	int rc = 0;

	if (rep == NULL)
		return -1;
	if (rep->type == REDIS_REPLY_STRING) {
		buf_append(val, rep->str, rep->len);
		rc = 1;
	}
	freeReplyObject(rep);
	return rc;
}

static int pd_redis_put(struct pd_state *st, const char *key, const char *val, long long ttl,
			struct buf *err)
{
	char ttls[32];
	const char *argv[] = {"SET", key, val, "EX", ttls};
	redisReply *rep;

	snprintf(ttls, sizeof(ttls), "%lld", ttl);
	if ((rep = pd_redis_cmd(st->priv, err, 5, argv)) == NULL)
		return -1;
	freeReplyObject(rep);
	return 0;
}

static int pd_redis_take(struct pd_state *st, const char *key, long long amount, long long limit,
			 long long now, long long expires, long long *total, struct buf *err)
{
	char a[32], l[32], n[32], e[32], t[32];
	const char *argv[] = {"EVAL", pd_redis_take_lua, "1", key, a, l, n, e, t};
	redisReply *rep;
	int rc = -1;

	snprintf(a, sizeof(a), "%lld", amount);
	snprintf(l, sizeof(l), "%lld", limit);
	snprintf(n, sizeof(n), "%lld", now);
	snprintf(e, sizeof(e), "%lld", expires);
	snprintf(t, sizeof(t), "%lld", expires - now > 0 ? expires - now : 1);
	if ((rep = pd_redis_cmd(st->priv, err, 9, argv)) == NULL)
		return -1;
	if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
	    rep->element[0]->type == REDIS_REPLY_INTEGER &&
	    rep->element[1]->type == REDIS_REPLY_INTEGER) {
		rc = rep->element[0]->integer ? 1 : 0;
		*total = rep->element[1]->integer;
	} else
		buf_puts(err, "redis: unexpected reply to the rate-limit script");
	freeReplyObject(rep);
	return rc;
}

static void pd_redis_close(struct pd_state *st)
{
	struct pd_redis *r = st->priv;

	for (size_t i = 0; i < r->npool; i++)
		redisFree(r->pool[i]);
	pthread_mutex_destroy(&r->lock);
	free(r->host);
	free(r);
}

const struct pd_state_ops pd_state_redis_ops = {
    "redis", 1, pd_redis_get, pd_redis_put, pd_redis_take, NULL, NULL, pd_redis_close,
};

/* "host:port/db", "host:port", "[v6]:port/db"; the store is not
 * contacted here: Redis being down at start must not stop the server. */
int pd_state_redis_open(struct pd_state *st, const char *url, int timeout, struct buf *err)
{
	struct pd_redis *r = xcalloc(1, sizeof(*r));
	char *s = xstrdup(url), *host = s, *colon, *slash, *end;
	long port = 6379, db = 0;

	if ((slash = strchr(s, '/')) != NULL) {
		*slash = 0;
		db = strtol(slash + 1, &end, 10);
		if (*end || db < 0 || db > 1000000)
			goto bad;
	}
	if (*host == '[' && (colon = strchr(host, ']')) != NULL) {
		*colon++ = 0;
		host++;
		colon = *colon == ':' ? colon : NULL;
	} else
		colon = strrchr(host, ':');
	if (colon) {
		*colon = 0;
		port = strtol(colon + 1, &end, 10);
		if (*end || port < 1 || port > 65535)
			goto bad;
	}
	if (*host == 0)
		goto bad;
	r->host = xstrdup(host);
	r->port = (int)port;
	r->db = (int)db;
	r->tv.tv_sec = timeout;
	pthread_mutex_init(&r->lock, NULL);
	st->priv = r;
	free(s);
	return 0;
bad:
	buf_printf(err, "parameter state: bad Redis address \"redis://%s\"", url);
	free(s);
	free(r);
	return -1;
}
