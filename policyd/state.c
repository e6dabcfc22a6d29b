/* state.c - state store dispatch and the record text format (state.h). */
#include "state.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pd_state_format(const struct pd_state_rec *rec, struct buf *out)
{
	long long v[4] = {rec->a, rec->b, rec->c, rec->expires};

	buf_reset(out);
	for (int i = 0; i < 4; i++) {
		if (i)
			buf_putc(out, ' ');
		buf_put_ll(out, v[i]);
	}
}

int pd_state_parse(const char *text, struct pd_state_rec *rec)
{
	return pd_state_parse_n(text, strlen(text), rec);
}

/* Four decimal integers separated by single spaces, as pd_state_format()
 * writes them; anything else (a damaged record) is refused. */
int pd_state_parse_n(const char *text, size_t len, struct pd_state_rec *rec)
{
	long long *out[4] = {&rec->a, &rec->b, &rec->c, &rec->expires};
	const char *p = text, *end = text + len;

	memset(rec, 0, sizeof(*rec));
	for (int i = 0; i < 4; i++) {
		int neg = 0, digits = 0;
		long long v = 0;

		if (i > 0 && (p == end || *p++ != ' '))
			return -1;
		if (p < end && *p == '-') {
			neg = 1;
			p++;
		}
		for (; p < end && *p >= '0' && *p <= '9' && digits < 18; p++, digits++)
			v = v * 10 + (*p - '0');
		if (digits == 0 || (p < end && *p >= '0' && *p <= '9'))
			return -1;
		*out[i] = neg ? -v : v;
	}
	return p == end ? 0 : -1;
}

static pthread_mutex_t pd_state_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pd_state *pd_state_list; /* open stores */

struct pd_state *pd_state_open(const char *spec, size_t map_size, int timeout, struct buf *err)
{
	struct pd_state *st;
	int rc;

	pthread_mutex_lock(&pd_state_lock);
	for (st = pd_state_list; st; st = st->next)
		if (strcmp(st->spec, spec) == 0)
			break;
	if (st)
		st->refs++;
	pthread_mutex_unlock(&pd_state_lock);
	if (st)
		return st;
	st = xcalloc(1, sizeof(*st));
	st->spec = xstrdup(spec);
	st->refs = 1;
	if (strncmp(spec, "lmdb:", 5) == 0) {
		st->ops = &pd_state_lmdb_ops;
		rc = pd_state_lmdb_open(st, spec + 5, map_size, err);
	} else if (strncmp(spec, "redis://", 8) == 0) {
		st->ops = &pd_state_redis_ops;
		rc = pd_state_redis_open(st, spec + 8, timeout, err);
	} else {
		buf_printf(err,
			   "parameter state: \"%s\" is neither lmdb:/path nor "
			   "redis://host:port/db",
			   spec);
		rc = -1;
	}
	if (rc < 0) {
		free(st->spec);
		free(st);
		return NULL;
	}
	pthread_mutex_lock(&pd_state_lock);
	st->next = pd_state_list;
	pd_state_list = st;
	pthread_mutex_unlock(&pd_state_lock);
	return st;
}

void pd_state_close(struct pd_state *st)
{
	struct pd_state **pp;
	int last;

	if (st == NULL)
		return;
	pthread_mutex_lock(&pd_state_lock);
	if ((last = --st->refs == 0))
		for (pp = &pd_state_list; *pp; pp = &(*pp)->next)
			if (*pp == st) {
				*pp = st->next;
				break;
			}
	pthread_mutex_unlock(&pd_state_lock);
	if (!last)
		return;
	st->ops->close(st);
	free(st->spec);
	free(st);
}

int pd_state_blocking(const struct pd_state *st)
{
	return st->ops->blocking;
}

int pd_state_get(struct pd_state *st, const char *key, long long now, struct pd_state_rec *rec,
		 struct buf *err)
{
	struct buf val = BUF_INIT;
	int rc;

	buf_init(&val);
	rc = st->ops->get(st, key, &val, err);
	if (rc == 1 && (pd_state_parse(buf_str(&val), rec) < 0 || rec->expires <= now))
		rc = 0; /* garbage or expired: as if absent */
	buf_free(&val);
	return rc;
}

int pd_state_put(struct pd_state *st, const char *key, long long now,
		 const struct pd_state_rec *rec, struct buf *err)
{
	struct buf val = BUF_INIT;
	long long ttl = rec->expires - now;
	int rc;

	buf_init(&val);
	pd_state_format(rec, &val);
	rc = st->ops->put(st, key, buf_str(&val), ttl < 1 ? 1 : ttl, err);
	buf_free(&val);
	return rc;
}

int pd_state_take(struct pd_state *st, const char *key, long long amount, long long limit,
		  long long now, long long expires, long long *total, struct buf *err)
{
	return st->ops->take(st, key, amount, limit, now, expires, total, err);
}

void pd_state_expire(struct pd_state *st, long long now)
{
	if (st && st->ops->expire)
		st->ops->expire(st, now);
}

void pd_state_sync(struct pd_state *st)
{
	if (st && st->ops->sync)
		st->ops->sync(st);
}
