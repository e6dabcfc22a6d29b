/* state.h - tern-policyd's persistent state: greylist triplets, client
 * auto-whitelist counters and rate-limit windows.
 *
 * Back ends behind one table of function pointers: LMDB ("lmdb:/dir",
 * one host, survives restarts) and Redis ("redis://host:port/db", shared
 * by several MX hosts). A record is three integers plus the time it
 * expires; both back ends store it as the text "a b c expires" and treat
 * an expired record as absent, so tests that move time forward with
 * policy_test_time see the same expiry as a real clock. pd_state_take()
 * is the one atomic check-and-add (an LMDB write transaction, a Redis Lua
 * script), so two servers sharing Redis cannot both pass a limit.
 * Pitfall: every call may fail (-1, err set): callers apply
 * state_error_action and never stop mail because the store did.
 */
#ifndef TERN_POLICYD_STATE_H
#define TERN_POLICYD_STATE_H

#include "buf.h"

#include <stddef.h>
#include <time.h>

struct pd_state_rec {
	long long a, b, c;
	long long expires; /* epoch seconds */
};

struct pd_state;

struct pd_state_ops {
	const char *scheme;
	int blocking;
	int (*get)(struct pd_state *st, const char *key, struct buf *val, struct buf *err);
	int (*put)(struct pd_state *st, const char *key, const char *val, long long ttl,
		   struct buf *err);
	int (*take)(struct pd_state *st, const char *key, long long amount, long long limit,
		    long long now, long long expires, long long *total, struct buf *err);
	void (*expire)(struct pd_state *st, long long now);
	void (*sync)(struct pd_state *st);
	void (*close)(struct pd_state *st);
};

struct pd_state {
	const struct pd_state_ops *ops;
	char *spec;
	void *priv;
	int refs;
	struct pd_state *next;
};

/* Stores are shared: opening a spec that is already open (a reload with
 * the same "state") returns the same store with one more reference, and
 * pd_state_close() drops one. LMDB requires it: an environment must not
 * be opened twice in one process (closing either copy would release the
 * other's file locks). */
struct pd_state *pd_state_open(const char *spec, size_t map_size, int timeout, struct buf *err);
void pd_state_close(struct pd_state *st);
int pd_state_blocking(const struct pd_state *st);
/* 1 found (and not expired at now), 0 absent, -1 error. */
int pd_state_get(struct pd_state *st, const char *key, long long now, struct pd_state_rec *rec,
		 struct buf *err);
int pd_state_put(struct pd_state *st, const char *key, long long now,
		 const struct pd_state_rec *rec, struct buf *err);
/* Add amount to the counter key (rec.a) unless the result would exceed
 * limit: 1 added, 0 refused (nothing added), -1 error; *total is the
 * counter after the call. */
int pd_state_take(struct pd_state *st, const char *key, long long amount, long long limit,
		  long long now, long long expires, long long *total, struct buf *err);
/* Remove expired records (LMDB; Redis expires them itself). */
void pd_state_expire(struct pd_state *st, long long now);
/* Flush writes to stable storage (LMDB commits are not synced one by one). */
void pd_state_sync(struct pd_state *st);

/* Value text <-> record (shared by the back ends). */
void pd_state_format(const struct pd_state_rec *rec, struct buf *out);
int pd_state_parse(const char *text, struct pd_state_rec *rec);
int pd_state_parse_n(const char *text, size_t len, struct pd_state_rec *rec);

extern const struct pd_state_ops pd_state_lmdb_ops;
extern const struct pd_state_ops pd_state_redis_ops;

int pd_state_lmdb_open(struct pd_state *st, const char *path, size_t map_size, struct buf *err);
int pd_state_redis_open(struct pd_state *st, const char *url, int timeout, struct buf *err);

#endif
