/* state_lmdb.c - LMDB state back end: one environment directory, one
 * unnamed database, keys and "a b c expires" values as text (state.h).
 *
 * MDB_NOTLS lets read transactions run on any worker thread; LMDB
 * serialises write transactions itself, which is what makes
 * pd_state_take() atomic, also between processes sharing the directory.
 * Expired records are removed at open and by pd_state_expire() (called
 * periodically by the server), so the map does not fill with old
 * triplets.
 * Durability: commits are not fsynced one by one (MDB_NOSYNC): one fsync
 * per request would cap the server at the disk's sync rate (about 2,000
 * requests/s here). The server calls pd_state_sync() every few seconds
 * and at stop, so a system crash loses at most those seconds of greylist
 * and rate-limit state (never mail); a crash of the process itself loses
 * nothing, the pages are in the kernel's cache.
 * Speed (issue 8 benchmark): MDB_WRITEMAP commits by writing into the
 * shared mapping instead of a pwrite(2) per dirty page (data.mdb is then
 * a sparse file of state_map_size bytes); each thread keeps its read
 * transaction between lookups (mdb_txn_reset/renew) so a lookup does not
 * take LMDB's reader-table lock, which several event loops would
 * contend for.
 */
#include "state.h"

#include "log.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

struct pd_lmdb {
	MDB_env *env;
	MDB_dbi dbi;
	unsigned long serial; /* tells a thread's cached txn which env it is for */
	pthread_mutex_t lock;
	struct pd_lmdb_reader *readers; /* every thread's cached read txn */
};

static int pd_lmdb_fail(struct buf *err, const char *what, int rc)
{
	buf_printf(err, "lmdb %s: %s", what, mdb_strerror(rc));
	return -1;
}

/* One thread's read transaction, kept reset between lookups; the store
 * owns them all (l->readers) and frees them when it closes. */
struct pd_lmdb_reader {
	pthread_t owner;
	MDB_txn *txn;
	struct pd_lmdb_reader *next;
};

static unsigned long pd_lmdb_serial; /* atomic */
/* The reader this thread used last, and the store it belongs to: the
 * serial is compared before the pointer is touched, so a closed store's
 * freed readers are never used. */
static __thread unsigned long pd_lmdb_mine_serial;
static __thread struct pd_lmdb_reader *pd_lmdb_mine;

/* This thread's reader for l (made on first use; NULL with err set). */
static struct pd_lmdb_reader *pd_lmdb_reader_find(struct pd_lmdb *l, struct buf *err)
{
	pthread_t self = pthread_self();
	struct pd_lmdb_reader *r;
	int rc;

	pthread_mutex_lock(&l->lock);
	for (r = l->readers; r && !pthread_equal(r->owner, self); r = r->next)
		;
	pthread_mutex_unlock(&l->lock);
	if (r == NULL) {
		r = xcalloc(1, sizeof(*r));
		r->owner = self;
		if ((rc = mdb_txn_begin(l->env, NULL, MDB_RDONLY, &r->txn)) != 0) {
			free(r);
			pd_lmdb_fail(err, "read", rc);
			return NULL;
		}
		mdb_txn_reset(r->txn);
		pthread_mutex_lock(&l->lock);
		r->next = l->readers;
		l->readers = r;
		pthread_mutex_unlock(&l->lock);
	}
	pd_lmdb_mine_serial = l->serial;
	pd_lmdb_mine = r;
	return r;
}

/* This thread's read transaction for l, renewed (NULL with err set). */
static MDB_txn *pd_lmdb_read_begin(struct pd_lmdb *l, struct buf *err)
{
	struct pd_lmdb_reader *r = pd_lmdb_mine_serial == l->serial ? pd_lmdb_mine : NULL;
	int rc;

	if (r == NULL && (r = pd_lmdb_reader_find(l, err)) == NULL)
		return NULL;
	if ((rc = mdb_txn_renew(r->txn)) != 0) {
		pd_lmdb_fail(err, "read", rc);
		return NULL;
	}
	return r->txn;
}

static int pd_lmdb_get(struct pd_state *st, const char *key, struct buf *val, struct buf *err)
{
	struct pd_lmdb *l = st->priv;
	MDB_txn *txn;
	MDB_val k = {strlen(key), (void *)key}, v;
	int rc;

	if ((txn = pd_lmdb_read_begin(l, err)) == NULL)
		return -1;
	rc = mdb_get(txn, l->dbi, &k, &v);
	if (rc == 0)
		buf_append(val, v.mv_data, v.mv_size);
	mdb_txn_reset(txn);
	if (rc == MDB_NOTFOUND)
		return 0;
	return rc == 0 ? 1 : pd_lmdb_fail(err, "get", rc);
}

static int pd_lmdb_put(struct pd_state *st, const char *key, const char *val, long long ttl,
		       struct buf *err)
{
	struct pd_lmdb *l = st->priv;
	MDB_txn *txn;
	MDB_val k = {strlen(key), (void *)key}, v = {strlen(val), (void *)val};
	int rc;

	if ((rc = mdb_txn_begin(l->env, NULL, 0, &txn)) != 0)
		return pd_lmdb_fail(err, "write", rc);
	if ((rc = mdb_put(txn, l->dbi, &k, &v, 0)) != 0) {
		mdb_txn_abort(txn);
		return pd_lmdb_fail(err, "put", rc);
	}
	if ((rc = mdb_txn_commit(txn)) != 0)
		return pd_lmdb_fail(err, "commit", rc);
	return 0;
}

static int pd_lmdb_take(struct pd_state *st, const char *key, long long amount, long long limit,
			long long now, long long expires, long long *total, struct buf *err)
{
	struct pd_lmdb *l = st->priv;
	struct pd_state_rec rec = {0, 0, 0, expires};
	struct buf text = BUF_INIT;
	MDB_txn *txn;
	MDB_val k = {strlen(key), (void *)key}, v;
	int rc, taken = 0;

	if ((rc = mdb_txn_begin(l->env, NULL, 0, &txn)) != 0)
		return pd_lmdb_fail(err, "write", rc);
	rc = mdb_get(txn, l->dbi, &k, &v);
	if (rc == 0) {
		if (pd_state_parse_n(v.mv_data, v.mv_size, &rec) < 0 || rec.expires <= now) {
			rec.a = 0;
			rec.expires = expires;
		}
	} else if (rc != MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return pd_lmdb_fail(err, "get", rc);
	}
	if (rec.a + amount <= limit) {
		rec.a += amount;
		taken = 1;
		buf_init(&text);
		pd_state_format(&rec, &text);
		v.mv_size = text.len;
		v.mv_data = text.data;
		rc = mdb_put(txn, l->dbi, &k, &v, 0);
		if (rc == 0)
			rc = mdb_txn_commit(txn);
		else
			mdb_txn_abort(txn);
		buf_free(&text);
		if (rc != 0)
			return pd_lmdb_fail(err, "put", rc);
	} else
		mdb_txn_abort(txn);
	*total = rec.a;
	return taken;
}

static void pd_lmdb_expire(struct pd_state *st, long long now)
{
	struct pd_lmdb *l = st->priv;
	struct pd_state_rec rec;
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	size_t removed = 0;
	int rc;

	if (mdb_txn_begin(l->env, NULL, 0, &txn) != 0)
		return;
	if (mdb_cursor_open(txn, l->dbi, &cur) != 0) {
		mdb_txn_abort(txn);
		return;
	}
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if ((pd_state_parse_n(v.mv_data, v.mv_size, &rec) < 0 || rec.expires <= now) &&
		    mdb_cursor_del(cur, 0) == 0)
			removed++;
	}
	mdb_cursor_close(cur);
	if (mdb_txn_commit(txn) == 0 && removed)
		msg_info("state %s: removed %zu expired record(s)", st->spec, removed);
}

static void pd_lmdb_sync(struct pd_state *st)
{
	struct pd_lmdb *l = st->priv;
	int rc = mdb_env_sync(l->env, 1);

	if (rc != 0)
		msg_warn("state %s: sync: %s", st->spec, mdb_strerror(rc));
}

static void pd_lmdb_close(struct pd_state *st)
{
	struct pd_lmdb *l = st->priv;

	pd_lmdb_sync(st);
	/* Every thread's reader: no thread uses them any more (the store
	 * closes when its last configuration goes), and the serial keeps
	 * any thread from touching them again. */
	while (l->readers) {
		struct pd_lmdb_reader *r = l->readers;
		l->readers = r->next;
		mdb_txn_abort(r->txn);
		free(r);
	}
	mdb_env_close(l->env);
	pthread_mutex_destroy(&l->lock);
	free(l);
}

const struct pd_state_ops pd_state_lmdb_ops = {
    "lmdb", 0, pd_lmdb_get, pd_lmdb_put, pd_lmdb_take, pd_lmdb_expire, pd_lmdb_sync, pd_lmdb_close,
};

int pd_state_lmdb_open(struct pd_state *st, const char *path, size_t map_size, struct buf *err)
{
	struct pd_lmdb *l = xcalloc(1, sizeof(*l));
	MDB_txn *txn;
	int rc;

	if (*path != '/') {
		buf_printf(err, "parameter state: lmdb:%s is not an absolute path", path);
		goto fail_free;
	}
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		buf_printf(err, "state: create directory %s: %s", path, strerror(errno));
		goto fail_free;
	}
	if ((rc = mdb_env_create(&l->env)) != 0) {
		pd_lmdb_fail(err, "env", rc);
		goto fail_free;
	}
	mdb_env_set_mapsize(l->env, map_size);
	mdb_env_set_maxreaders(l->env, 512);
	l->serial = __atomic_add_fetch(&pd_lmdb_serial, 1, __ATOMIC_RELAXED);
	pthread_mutex_init(&l->lock, NULL);
	if ((rc = mdb_env_open(l->env, path, MDB_NOTLS | MDB_NOSYNC | MDB_WRITEMAP, 0600)) != 0 ||
	    (rc = mdb_txn_begin(l->env, NULL, 0, &txn)) != 0) {
		buf_printf(err, "state: lmdb open %s: %s", path, mdb_strerror(rc));
		goto fail_env;
	}
	if ((rc = mdb_dbi_open(txn, NULL, 0, &l->dbi)) != 0) {
		mdb_txn_abort(txn);
		buf_printf(err, "state: lmdb open %s: %s", path, mdb_strerror(rc));
		goto fail_env;
	}
	if ((rc = mdb_txn_commit(txn)) != 0) {
		buf_printf(err, "state: lmdb open %s: %s", path, mdb_strerror(rc));
		goto fail_env;
	}
	st->priv = l;
	pd_lmdb_expire(st, (long long)time(NULL));
	return 0;
fail_env:
	mdb_env_close(l->env);
	pthread_mutex_destroy(&l->lock);
fail_free:
	free(l);
	return -1;
}
