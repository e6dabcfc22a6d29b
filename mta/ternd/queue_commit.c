/* queue_commit.c - the group-commit thread: every write to the queue's
 * segment files happens here, so records reach the disk in one order.
 *
 * Producers append requests to q->pending; the thread takes all of them
 * (after waiting up to commit_delay_ms for more), writes them with one
 * pwritev at the active segment's end and one fdatasync, then updates the
 * index and completes each request: async ones through event_base_once()
 * on the submitter's loop, sync ones (journal calls) via done_cond. A
 * failed write or fdatasync fails the whole batch and abandons the
 * segment. When idle the thread reclaims and compacts old segments.
 */
#include "queue_impl.h"

#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define QCOMPACT_STEP 64 /* messages copied per idle step */
#define QREQ_COMPACT 0	 /* internal request: run compaction now (tests) */
#define QIOV_MAX 1024	 /* POSIX IOV_MAX on Linux */
#define QCOMMIT_GROUPS 64 /* loops told apart per batch; more go one by one */

void qreq_free(struct qreq *r)
{
	buf_free(&r->rec);
	free(r->reason);
	if (r->msg != NULL) {
		free(r->msg->sender);
		free(r->msg->reason);
		free(r->msg->rcpt_state);
		free(r->msg);
	}
	free(r);
}

void qcommit_enqueue(struct queue *q, struct qreq *r)
{
	pthread_mutex_lock(&q->commit_lock);
	r->next = NULL;
	*q->pending_tail = r;
	q->pending_tail = &r->next;
	pthread_cond_signal(&q->commit_cond);
	pthread_mutex_unlock(&q->commit_lock);
}

enum queue_status qcommit_wait(struct queue *q, struct qreq *r)
{
	enum queue_status st;

	r->sync = 1;
	qcommit_enqueue(q, r);
	pthread_mutex_lock(&q->commit_lock);
	while (!r->done)
		pthread_cond_wait(&q->done_cond, &q->commit_lock);
	pthread_mutex_unlock(&q->commit_lock);
	st = r->status;
	qreq_free(r);
	return st;
}

/* qcommit_room - queue_minfree: refuse before writing, not half way */
static int qcommit_room(struct queue *q, size_t need)
{
	struct statvfs sv;

	if (q->opts.minfree_bytes == 0)
		return 1;
	if (fstatvfs(q->segdir_fd, &sv) < 0)
		return 1; /* cannot tell: let the write itself fail */
	return (uint64_t)sv.f_bavail * sv.f_frsize >= q->opts.minfree_bytes + need;
}

/* qcommit_retire_empty - below queue_minfree nothing is written, so the
 * active segment would never roll over and be reclaimed, and the space
 * held by mail long since delivered would keep the queue refusing. When
 * the active segment holds no live message, retire it so qseg_reclaim()
 * may unlink it (oldest-first order keeps journal records of older live
 * messages safe: it is only removed once everything before it is gone). */
static void qcommit_retire_empty(struct queue *q)
{
	pthread_mutex_lock(&q->lock);
	if (q->active != NULL && q->active->live_msgs == 0 && q->active->size > QSEG_HDR_SIZE) {
		q->active = NULL;
		qseg_reclaim(q);
	}
	pthread_mutex_unlock(&q->lock);
}

/* qcommit_segment - the segment to append to, rolling to a new one */
static struct qseg *qcommit_segment(struct queue *q)
{
	struct buf err = BUF_INIT;
	struct qseg *s = q->active;

	if (s != NULL && (size_t)s->size >= q->opts.segment_size) {
		pthread_mutex_lock(&q->lock);
		q->active = NULL; /* stays open read-only for queue_load */
		pthread_mutex_unlock(&q->lock);
		s = NULL;
	}
	if (s == NULL && qseg_create(q, &err) < 0) {
		int saved = errno;
		msg_warn("queue: %s", err.data);
		errno = saved;
	}
	buf_free(&err);
	return q->active;
}

/* qcommit_pwritev_all - pwritev until everything is written or an error */
static int qcommit_pwritev_all(struct queue *q, int fd, struct iovec *iov, int n, off_t off)
{
	ssize_t w;
	int chunk;

	while (n > 0) {
		chunk = n > QIOV_MAX ? QIOV_MAX : n;
		if ((w = q->io.pwritev(fd, iov, chunk, off)) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (w == 0)
			return errno = EIO, -1;
		off += w;
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++, n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* qcommit_write - append bufs to the active segment durably; on success
 * offs[i] is where bufs[i] landed and *segp the segment. */
static enum queue_status qcommit_write(struct queue *q, struct buf **bufs, size_t n, off_t *offs,
				       struct qseg **segp)
{
	struct iovec *iov = xcalloc(n, sizeof(*iov));
	struct qseg *s;
	size_t total = 0;
	enum queue_status st = QUEUE_EIO;
	off_t end;

	for (size_t i = 0; i < n; i++) {
		iov[i].iov_base = bufs[i]->data;
		iov[i].iov_len = bufs[i]->len;
		total += bufs[i]->len;
	}
	if (!qcommit_room(q, total)) {
		qcommit_retire_empty(q);
		if (!qcommit_room(q, total)) {
			st = QUEUE_ENOSPC;
			goto out;
		}
	}
	if ((s = qcommit_segment(q)) == NULL) {
		st = errno == ENOSPC || errno == EDQUOT ? QUEUE_ENOSPC : QUEUE_EIO;
		goto out;
	}
	for (size_t i = 0, o = (size_t)s->size; i < n; o += bufs[i]->len, i++)
		offs[i] = (off_t)o;
	end = s->size;
	errno = 0;
	if (qcommit_pwritev_all(q, s->fd, iov, (int)n, end) < 0) {
		st = errno == ENOSPC || errno == EDQUOT ? QUEUE_ENOSPC : QUEUE_EIO;
		msg_warn("queue: write to segment %016llX: %s", (unsigned long long)s->seq,
			 strerror(errno));
		qseg_abandon(q, s, end);
		goto out;
	}
	pthread_mutex_lock(&q->lock);
	q->stats.fsyncs++;
	pthread_mutex_unlock(&q->lock);
	if (q->io.fdatasync(s->fd) < 0) {
		msg_warn("queue: fdatasync segment %016llX: %s", (unsigned long long)s->seq,
			 strerror(errno));
		qseg_abandon(q, s, end);
		goto out;
	}
	pthread_mutex_lock(&q->lock);
	s->size = end + (off_t)total;
	q->stats.records += n;
	q->stats.bytes += total;
	pthread_mutex_unlock(&q->lock);
	*segp = s;
	st = QUEUE_OK;
out:
	free(iov);
	return st;
}

/* qcommit_apply - the index follows a durable write (q->lock held) */
static void qcommit_apply(struct queue *q, struct qreq *r)
{
	struct qmsg *m;

	if (r->type == QREC_MESSAGE) {
		r->msg->seg = r->seg, r->msg->off = r->off, r->msg->reclen = (uint32_t)r->rec.len;
		qidx_insert(q, r->msg);
		r->msg = NULL;
		return;
	}
	if ((m = qidx_find(q, r->qid)) == NULL)
		return; /* finished meanwhile by another journal call */
	if (qidx_apply(q, m, r->type, r->rcpt_index, r->rcpt_state, r->until, r->reason)) {
		msg_qid(r->qid, "removed");
		qidx_remove(q, m);
	}
}

static void qcommit_fire(evutil_socket_t fd, short what, void *arg)
{
	struct qreq *r = arg;

	r->cb(r->arg, r->status, r->qid);
	qreq_free(r);
}

/* Every async request of a batch for one loop, in one hand-over: one
 * lock of that loop's base and one wake-up instead of one per message. */
static void qcommit_fire_list(evutil_socket_t fd, short what, void *arg)
{
	struct qreq *r = arg, *next;

	for (; r != NULL; r = next) {
		next = r->next;
		r->cb(r->arg, r->status, r->qid);
		qreq_free(r);
	}
}

/* qcommit_complete - hand each result to its waiter */
void qcommit_complete(struct queue *q, struct qreq *r)
{
	static const struct timeval now = {0, 0};

	if (r->detached) {
		if (r->status != QUEUE_OK) {
			msg_warn("%s: cannot update queue: %s", r->qid, queue_strerror(r->status));
			queue_unclaim_until(q, r->qid, r->until);
		}
		qreq_free(r);
	} else if (r->sync) {
		pthread_mutex_lock(&q->commit_lock);
		r->done = 1;
		pthread_cond_broadcast(&q->done_cond);
		pthread_mutex_unlock(&q->commit_lock);
	} else if (r->base == NULL) {
		qcommit_fire(-1, 0, r);
	} else if (event_base_once(r->base, -1, EV_TIMEOUT, qcommit_fire, r, &now) < 0) {
		msg_error("queue: %s: cannot schedule the commit callback", r->qid);
		qreq_free(r);
	}
}

static int qcommit_compact_all(struct queue *q);

/* qcommit_batch - write, sync, apply and complete one batch */
static void qcommit_batch(struct queue *q, struct qreq *batch)
{
	struct qreq *r, *next;
	struct buf **bufs;
	off_t *offs;
	size_t n = 0, i = 0;
	struct qseg *seg = NULL;
	enum queue_status st = QUEUE_OK;

	for (r = batch; r != NULL; r = r->next)
		n += r->type != QREQ_COMPACT;
	bufs = xcalloc(n + 1, sizeof(*bufs));
	offs = xcalloc(n + 1, sizeof(*offs));
	for (r = batch; r != NULL; r = r->next)
		if (r->type != QREQ_COMPACT)
			bufs[i++] = &r->rec;
	if (n > 0)
		st = qcommit_write(q, bufs, n, offs, &seg);
	pthread_mutex_lock(&q->lock);
	q->stats.batches += n > 0;
	q->stats.failures += st != QUEUE_OK;
	for (r = batch, i = 0; r != NULL; r = r->next) {
		if (r->type == QREQ_COMPACT)
			continue;
		r->status = st, r->seg = seg, r->off = offs[i++];
		if (st == QUEUE_OK)
			qcommit_apply(q, r);
	}
	qseg_reclaim(q);
	pthread_mutex_unlock(&q->lock);
	/* Async requests go back to their loops grouped by loop, in order. */
	struct qreq *groups[QCOMMIT_GROUPS], **tails[QCOMMIT_GROUPS];
	size_t ngroups = 0;
	for (r = batch; r != NULL; r = next) {
		size_t g;
		next = r->next;
		if (r->type == QREQ_COMPACT)
			r->rcpt_index = (uint32_t)qcommit_compact_all(q), r->status = QUEUE_OK;
		if (r->detached || r->sync || r->base == NULL) {
			qcommit_complete(q, r);
			continue;
		}
		for (g = 0; g < ngroups && groups[g]->base != r->base; g++)
			;
		if (g == ngroups) {
			if (ngroups == QCOMMIT_GROUPS) { /* more loops than slots: one by one */
				qcommit_complete(q, r);
				continue;
			}
			groups[ngroups] = NULL;
			tails[ngroups] = &groups[ngroups];
			ngroups++;
		}
		r->next = NULL;
		*tails[g] = r;
		tails[g] = &r->next;
	}
	for (size_t g = 0; g < ngroups; g++) {
		static const struct timeval now = {0, 0};
		if (event_base_once(groups[g]->base, -1, EV_TIMEOUT, qcommit_fire_list, groups[g],
				    &now) < 0) {
			msg_error("queue: %s: cannot schedule the commit callback", groups[g]->qid);
			for (struct qreq *x = groups[g], *nx; x; x = nx) {
				nx = x->next;
				qreq_free(x);
			}
		}
	}
	free(bufs);
	free(offs);
}

/* qcommit_compact_pick - the oldest closed segment, if copying its live
 * messages forward frees at least twice as many bytes as it copies (all
 * dead bytes behind it become removable); never churns a live queue. */
static struct qseg *qcommit_compact_pick(struct queue *q)
{
	struct qseg *s, *old = q->segs;
	uint64_t dead = 0;

	if (old == NULL || old == q->active || old->live_msgs == 0)
		return NULL;
	for (s = old; s != NULL && s != q->active; s = s->next)
		dead += (uint64_t)s->size - QSEG_HDR_SIZE - s->live_bytes;
	return old->live_bytes * 2 <= dead ? old : NULL;
}

/* qcommit_copy_one - re-encode m with its current state (q->lock held) */
static int qcommit_copy_one(struct queue *q, struct qmsg *m, struct buf *out)
{
	struct buf rec = BUF_INIT, reason = BUF_INIT, err = BUF_INIT;
	struct queue_env env;
	struct qrec r;
	struct qrec_state st;
	const unsigned char *content;
	size_t clen, reclen;
	int rc = -1;

	queue_env_init(&env);
	buf_reserve(&rec, m->reclen);
	if (pread(m->seg->fd, rec.data, m->reclen, m->off) != (ssize_t)m->reclen ||
	    qrec_decode((unsigned char *)rec.data, m->reclen, &r, &reclen, &err) != 1 ||
	    qrec_decode_message(&r, &env, &st, &reason, &content, &clen, &err) < 0 ||
	    env.nrcpt != m->nrcpt) {
		msg_warn("queue: %s: cannot copy for compaction: %s", m->qid,
			 err.len ? err.data : "read error");
		goto out;
	}
	for (size_t i = 0; i < env.nrcpt; i++)
		env.rcpt[i].state = (enum queue_rcpt_state)m->rcpt_state[i];
	st.state = m->state, st.next_attempt = m->next_attempt, st.reason = m->reason;
	st.warned = m->warned;
	qrec_encode_message(out, m->qid, &env, &st, (const char *)content, clen);
	rc = 0;
out:
	queue_env_free(&env);
	buf_free(&rec), buf_free(&reason), buf_free(&err);
	return rc;
}

/* qcommit_compact_step - copy up to QCOMPACT_STEP live messages of the
 * oldest segment forward; 1 if it did something. Runs on the commit
 * thread between batches, so the copies see every committed journal
 * record and later records land after them (replay order stays right).
 * A crash before the old segment is unlinked leaves two copies; the
 * index keeps the later one (same queue ID). */
static int qcommit_compact_step(struct queue *q)
{
	struct qmsg *msgs[QCOMPACT_STEP], *m;
	struct buf *bufs[QCOMPACT_STEP], store[QCOMPACT_STEP];
	off_t offs[QCOMPACT_STEP];
	struct qseg *s, *dst = NULL;
	size_t n = 0;
	int did = 0;

	pthread_mutex_lock(&q->lock);
	if ((s = qcommit_compact_pick(q)) == NULL)
		goto out;
	for (size_t b = 0; b < q->nbuckets && n < QCOMPACT_STEP; b++)
		for (m = q->hash[b]; m != NULL && n < QCOMPACT_STEP; m = m->hnext)
			if (m->seg == s) {
				buf_init(&store[n]);
				if (qcommit_copy_one(q, m, &store[n]) < 0) {
					buf_free(&store[n]);
					continue;
				}
				bufs[n] = &store[n], msgs[n++] = m;
			}
	pthread_mutex_unlock(&q->lock);
	/* Only this thread removes messages, so msgs[] stay valid unlocked. */
	if (n == 0 || qcommit_write(q, bufs, n, offs, &dst) != QUEUE_OK)
		goto done;
	pthread_mutex_lock(&q->lock);
	for (size_t i = 0; i < n; i++) {
		m = msgs[i];
		m->seg->live_msgs--, m->seg->live_bytes -= m->reclen;
		m->seg = dst, m->off = offs[i], m->reclen = (uint32_t)store[i].len;
		dst->live_msgs++, dst->live_bytes += m->reclen;
	}
	q->stats.compacted += n;
	qseg_reclaim(q);
	did = 1;
out:
	pthread_mutex_unlock(&q->lock);
done:
	for (size_t i = 0; i < n; i++)
		buf_free(&store[i]);
	return did;
}

static int qcommit_compact_all(struct queue *q)
{
	uint64_t before, after;

	pthread_mutex_lock(&q->lock);
	qseg_reclaim(q);
	before = q->stats.segments;
	pthread_mutex_unlock(&q->lock);
	while (qcommit_compact_step(q))
		;
	pthread_mutex_lock(&q->lock);
	after = q->stats.segments;
	pthread_mutex_unlock(&q->lock);
	return (int)(before - after);
}

/* qcommit_gather - wait up to commit_delay_ms for more requests
 * (commit_lock held); 0 means no wait: whatever arrived during the last
 * flush is the batch. */
static void qcommit_gather(struct queue *q)
{
	struct timespec dl;

	if (q->opts.commit_delay_ms <= 0)
		return;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_nsec += (long)(q->opts.commit_delay_ms % 1000) * 1000000L;
	dl.tv_sec += q->opts.commit_delay_ms / 1000 + dl.tv_nsec / 1000000000L;
	dl.tv_nsec %= 1000000000L;
	while (!q->stopping && pthread_cond_timedwait(&q->commit_cond, &q->commit_lock, &dl) == 0)
		;
}

static void *qcommit_main(void *arg)
{
	struct queue *q = arg;
	struct qreq *batch;
	int idle_work = 0;

	log_thread_service("qmgr"); /* "ID: removed", as qmgr(8) logs it */
	pthread_mutex_lock(&q->commit_lock);
	for (;;) {
		if (q->pending == NULL && idle_work && !q->stopping && !q->no_idle_compact) {
			pthread_mutex_unlock(&q->commit_lock);
			idle_work = qcommit_compact_step(q);
			/* Short of space (queue_minfree): give back what
			 * delivered mail held in the active segment now, not
			 * only when the next message is refused. */
			if (!idle_work && q->opts.minfree_bytes > 0 && q->active != NULL &&
			    !qcommit_room(q, (size_t)q->active->size))
				qcommit_retire_empty(q);
			pthread_mutex_lock(&q->commit_lock);
			continue;
		}
		while (q->pending == NULL && !q->stopping)
			pthread_cond_wait(&q->commit_cond, &q->commit_lock);
		if (q->pending == NULL)
			break;
		qcommit_gather(q);
		batch = q->pending;
		q->pending = NULL, q->pending_tail = &q->pending;
		pthread_mutex_unlock(&q->commit_lock);
		qcommit_batch(q, batch);
		idle_work = 1;
		pthread_mutex_lock(&q->commit_lock);
	}
	pthread_mutex_unlock(&q->commit_lock);
	return NULL;
}

int qcommit_start(struct queue *q, struct buf *err)
{
	int rc;

	q->pending = NULL, q->pending_tail = &q->pending;
	if ((rc = pthread_create(&q->thread, NULL, qcommit_main, q)) != 0) {
		buf_printf(err, "queue commit thread: %s", strerror(rc));
		return -1;
	}
	q->thread_started = 1;
	return 0;
}

/* qcommit_stop - finish every pending request, then end the thread */
void qcommit_stop(struct queue *q)
{
	if (!q->thread_started)
		return;
	pthread_mutex_lock(&q->commit_lock);
	q->stopping = 1;
	pthread_cond_signal(&q->commit_cond);
	pthread_mutex_unlock(&q->commit_lock);
	pthread_join(q->thread, NULL);
	q->thread_started = 0;
}
