/* queue.c - the queue's public API (queue.h): open/close, queue IDs,
 * submission, journal calls, index queries and reading messages back.
 *
 * Locking (see queue_impl.h): q->lock guards the index and is held only
 * briefly here; writes go through the commit thread (queue_commit.c).
 * queue_foreach() calls its visitor with q->lock held: the visitor must
 * not call back into the queue. A read-only open (tern queue while ternd
 * runs) scans a snapshot, takes no lock file, and refuses every write
 * with QUEUE_EBUSY.
 */
#include "queue_impl.h"

#include "casefold.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define QUEUE_SEGMENT_SIZE_DEFAULT (64u << 20)

void queue_env_init(struct queue_env *env)
{
	memset(env, 0, sizeof(*env));
}

void queue_env_free(struct queue_env *env)
{
	for (size_t i = 0; i < env->nrcpt; i++) {
		free(env->rcpt[i].addr);
		free(env->rcpt[i].orcpt);
	}
	free(env->rcpt);
	free(env->sender), free(env->ret), free(env->envid);
	free(env->client_name), free(env->client_addr), free(env->helo), free(env->protocol);
	free(env->sasl_username);
	free(env->filter);
	queue_env_init(env);
}

void queue_env_add_rcpt(struct queue_env *env, const char *addr, const char *orcpt, int notify)
{
	struct queue_rcpt *r;

	env->rcpt = xrealloc(env->rcpt, (env->nrcpt + 1) * sizeof(*env->rcpt));
	r = &env->rcpt[env->nrcpt++];
	r->addr = xstrdup(addr);
	r->orcpt = orcpt ? xstrdup(orcpt) : NULL;
	r->notify = notify;
	r->state = QUEUE_RCPT_PENDING;
}

const char *queue_strerror(enum queue_status st)
{
	switch (st) {
	case QUEUE_OK:
		return "success";
	case QUEUE_EIO:
		return "queue file write error";
	case QUEUE_ENOSPC:
		return "insufficient system storage";
	case QUEUE_ENOENT:
		return "no such queue ID";
	case QUEUE_ECORRUPT:
		return "corrupt queue record";
	case QUEUE_EBUSY:
		return "queue is in use by another process";
	case QUEUE_ESTATE:
		return "not allowed in the message's current state";
	}
	return "unknown queue error";
}

static ssize_t queue_real_pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
	return pwritev(fd, iov, n, off);
}

static int queue_real_fdatasync(int fd)
{
	return fdatasync(fd);
}

void queue_test_set_io(struct queue *q, const struct queue_io *io)
{
	pthread_mutex_lock(&q->commit_lock); /* the commit thread reads it between batches */
	q->io.pwritev = io && io->pwritev ? io->pwritev : queue_real_pwritev;
	q->io.fdatasync = io && io->fdatasync ? io->fdatasync : queue_real_fdatasync;
	pthread_mutex_unlock(&q->commit_lock);
}

/* queue_open_dirs - queue_directory (0755: pickup's maildrop lives in
 * it) and seg/ (0700), plus the single-writer lock */
static int queue_open_dirs(struct queue *q, struct buf *err)
{
	struct buf lock = BUF_INIT;
	int rc = QUEUE_EIO;

	if ((mkdir(q->dir, 0755) < 0 && errno != EEXIST) ||
	    (mkdir(q->segdir, 0700) < 0 && errno != EEXIST)) {
		buf_printf(err, "create %s: %s", q->segdir, strerror(errno));
		goto out;
	}
	buf_printf(&lock, "%s/lock", q->dir);
	if ((q->lock_fd = open(lock.data, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		buf_printf(err, "open %s: %s", lock.data, strerror(errno));
		goto out;
	}
	if (flock(q->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		buf_printf(err, "%s: %s", lock.data,
			   errno == EWOULDBLOCK ? "queue is locked by another process"
						: strerror(errno));
		rc = errno == EWOULDBLOCK ? QUEUE_EBUSY : QUEUE_EIO;
		goto out;
	}
	if ((q->segdir_fd = open(q->segdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		buf_printf(err, "open %s: %s", q->segdir, strerror(errno));
		goto out;
	}
	rc = QUEUE_OK;
out:
	buf_free(&lock);
	return rc;
}

static void queue_free(struct queue *q)
{
	qseg_close_all(q);
	if (q->hash != NULL)
		qidx_free(q);
	if (q->lock_fd >= 0)
		close(q->lock_fd);
	if (q->segdir_fd >= 0)
		close(q->segdir_fd);
	pthread_mutex_destroy(&q->lock);
	pthread_mutex_destroy(&q->commit_lock);
	pthread_mutex_destroy(&q->flow_lock);
	pthread_cond_destroy(&q->commit_cond);
	pthread_cond_destroy(&q->done_cond);
	free(q->dir);
	free(q->segdir);
	free(q);
}

static struct queue *queue_alloc(const char *dir, const struct queue_opts *opts)
{
	struct queue *q = xcalloc(1, sizeof(*q));
	struct buf b = BUF_INIT;

	q->dir = xstrdup(dir);
	buf_printf(&b, "%s/seg", dir);
	q->segdir = buf_detach(&b);
	if (opts != NULL)
		q->opts = *opts;
	if (q->opts.segment_size == 0)
		q->opts.segment_size = QUEUE_SEGMENT_SIZE_DEFAULT;
	q->lock_fd = q->segdir_fd = -1;
	q->io.pwritev = queue_real_pwritev;
	q->io.fdatasync = queue_real_fdatasync;
	pthread_mutex_init(&q->lock, NULL);
	pthread_mutex_init(&q->commit_lock, NULL);
	pthread_mutex_init(&q->flow_lock, NULL);
	q->flow_tokens = QUEUE_FLOW_TOKENS;
	pthread_cond_init(&q->commit_cond, NULL);
	pthread_cond_init(&q->done_cond, NULL);
	q->pending_tail = &q->pending;
	if (getrandom(&q->id_counter, sizeof(q->id_counter), GRND_NONBLOCK) < 0)
		q->id_counter = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 16;
	qidx_init(q);
	return q;
}

int queue_open(const char *dir, const struct queue_opts *opts, struct queue **qp, struct buf *err)
{
	struct queue *q = queue_alloc(dir, opts);
	int rc = QUEUE_EIO;

	if (!q->opts.rdonly && (rc = queue_open_dirs(q, err)) != QUEUE_OK)
		goto fail;
	rc = QUEUE_EIO;
	if (qseg_scan_all(q, err) < 0)
		goto fail;
	if (!q->opts.rdonly) {
		/* Always a fresh segment: no write ever follows a torn tail. */
		if (qseg_create(q, err) < 0 || qcommit_start(q, err) < 0)
			goto fail;
		pthread_mutex_lock(&q->lock);
		qseg_reclaim(q);
		pthread_mutex_unlock(&q->lock);
	}
	*qp = q;
	return QUEUE_OK;
fail:
	queue_free(q);
	*qp = NULL;
	return rc;
}

void queue_close(struct queue *q)
{
	if (q == NULL)
		return;
	qcommit_stop(q);
	queue_free(q);
}

/* queue_id_new - Postfix's short-ID shape: 5 hex digits of the
 * microseconds, then 7 of a per-process counter started at a random
 * value; never an ID the index holds (IDs from before a restart). */
void queue_id_new(struct queue *q, char qid[QUEUE_ID_SIZE])
{
	struct timeval tv;

	pthread_mutex_lock(&q->lock);
	do {
		gettimeofday(&tv, NULL);
		q->id_counter++;
		snprintf(qid, QUEUE_ID_SIZE, "%05X%07X", (unsigned)(tv.tv_usec & 0xfffff),
			 (unsigned)(q->id_counter & 0xfffffff));
	} while (qidx_find(q, qid) != NULL);
	pthread_mutex_unlock(&q->lock);
}

static struct qreq *qreq_new(int type, const char *qid)
{
	struct qreq *r = xcalloc(1, sizeof(*r));

	r->type = type;
	strncpy(r->qid, qid, QREC_QID_MAX);
	return r;
}

/* --- Repeated recipients ---------------------------------------------
 * Postfix's cleanup writes each recipient once per message
 * (cleanup_out_recipient.c: a duplicate filter keyed by DSN ORCPT,
 * NOTIFY and the address, case-folded whole): "RCPT TO:<a>" twice, or
 * "sendmail a a", queues a once, and the first one's DSN settings stay.
 * That happens here, when the message is committed, and not in
 * queue_env_add_rcpt(): that one also reads queue records back, whose
 * recipients the journal addresses by position; and smtpd must still
 * answer 250 to each RCPT and count it (smtpd_recipient_limit, the
 * Received: "for" clause) as Postfix's smtpd does. */

struct queue_rcpt_key {
	char *key; /* folded "orcpt\nnotify\naddr" */
	size_t i;  /* position in the envelope */
};

static int queue_rcpt_key_cmp(const void *a, const void *b)
{
	const struct queue_rcpt_key *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	return c ? c : (x->i > y->i) - (x->i < y->i);
}

/* queue_env_unique - *out is env without repeated recipients, the first
 * of each kept in order: a shallow copy (the strings stay env's) whose
 * rcpt array the caller frees. Sorted, not compared pairwise, so that
 * a large smtpd_recipient_limit cannot stall the event loop. */
static void queue_env_unique(const struct queue_env *env, struct queue_env *out)
{
	struct queue_rcpt_key *k = xcalloc(env->nrcpt + 1, sizeof(*k));
	char *drop = xcalloc(env->nrcpt + 1, 1);
	struct buf raw = BUF_INIT, folded = BUF_INIT;

	for (size_t i = 0; i < env->nrcpt; i++) {
		const struct queue_rcpt *r = &env->rcpt[i];
		buf_reset(&raw);
		buf_printf(&raw, "%s\n%d\n%s", r->orcpt ? r->orcpt : "", r->notify, r->addr);
		casefold(&folded, raw.data, raw.len);
		k[i] = (struct queue_rcpt_key){xstrdup(buf_str(&folded)), i};
	}
	qsort(k, env->nrcpt, sizeof(*k), queue_rcpt_key_cmp);
	for (size_t j = 1; j < env->nrcpt; j++)
		drop[k[j].i] = strcmp(k[j].key, k[j - 1].key) == 0;
	*out = *env;
	out->rcpt = xcalloc(env->nrcpt + 1, sizeof(*out->rcpt));
	out->nrcpt = 0;
	for (size_t i = 0; i < env->nrcpt; i++) {
		if (!drop[i])
			out->rcpt[out->nrcpt++] = env->rcpt[i];
		free(k[i].key);
	}
	free(k);
	free(drop);
	buf_free(&raw);
	buf_free(&folded);
}

static void queue_submit_mode(struct queue *q, const char *qid, const struct queue_env *env,
			      const char *content, size_t len, struct event_base *base,
			      queue_commit_cb cb, void *arg, int paced);

void queue_submit(struct queue *q, const char *qid, const struct queue_env *env,
		  const char *content, size_t len, struct event_base *base, queue_commit_cb cb,
		  void *arg)
{
	queue_submit_mode(q, qid, env, content, len, base, cb, arg, 1);
}

void queue_submit_unpaced(struct queue *q, const char *qid, const struct queue_env *env,
			  const char *content, size_t len, struct event_base *base,
			  queue_commit_cb cb, void *arg)
{
	queue_submit_mode(q, qid, env, content, len, base, cb, arg, 0);
}

static void queue_submit_mode(struct queue *q, const char *qid, const struct queue_env *env,
			      const char *content, size_t len, struct event_base *base,
			      queue_commit_cb cb, void *arg, int paced)
{
	/* A message held by an access rule (HOLD) is held from its first
	 * byte on disk: no worker may claim it between commit and hold. */
	struct qrec_state st = {env->hold ? QUEUE_STATE_HOLD : QUEUE_STATE_ACTIVE, 0, NULL, 0};
	struct qreq *r = qreq_new(QREC_MESSAGE, qrec_qid_ok(qid) ? qid : "INVALID");
	struct queue_env uniq;

	r->base = base, r->cb = cb, r->arg = arg;
	if (q->opts.rdonly || !qrec_qid_ok(qid) || env->nrcpt == 0 || len > QREC_PAYLOAD_MAX / 2) {
		msg_warn("queue: %s: message refused: %s", r->qid,
			 q->opts.rdonly ? "queue opened read-only"
					: "bad ID, no recipients or too big");
		r->status = q->opts.rdonly ? QUEUE_EBUSY : QUEUE_EIO;
		qcommit_complete(q, r); /* still through base: never re-entrant */
		return;
	}
	queue_env_unique(env, &uniq);
	qrec_encode_message(&r->rec, qid, &uniq, &st, content, len);
	r->msg = qmsg_from_env(qid, &uniq, &st);
	r->msg->size = len;
	free(uniq.rcpt);
	if (paced && qflow_take_or_wait(q, r))
		return; /* queue_flow.c commits it when a token comes or in_flow_delay passes */
	qcommit_enqueue(q, r);
}

/* queue_journal_check - may this change be written? (q->lock held) */
static enum queue_status queue_journal_check(struct queue *q, struct qreq *r, int *noop)
{
	struct qmsg *m = qidx_find(q, r->qid);

	*noop = 0;
	if (m == NULL)
		return QUEUE_ENOENT;
	switch (r->type) {
	case QREC_RCPT_DONE:
		if (r->rcpt_index >= m->nrcpt || r->rcpt_state == QUEUE_RCPT_PENDING)
			return QUEUE_ESTATE;
		*noop = m->rcpt_state[r->rcpt_index] != QUEUE_RCPT_PENDING;
		break;
	case QREC_HOLD:
		*noop = m->state == QUEUE_STATE_HOLD;
		break;
	case QREC_RELEASE:
		if (m->state != QUEUE_STATE_HOLD)
			return QUEUE_ESTATE;
		break;
	default:
		break;
	}
	return QUEUE_OK;
}

/* queue_journal - write one journal record and wait until it is durable */
static enum queue_status queue_journal_mode(struct queue *q, struct qreq *r, int wait);

static enum queue_status queue_journal(struct queue *q, struct qreq *r)
{
	return queue_journal_mode(q, r, 1);
}

static enum queue_status queue_journal_mode(struct queue *q, struct qreq *r, int wait)
{
	unsigned char p[8];
	enum queue_status st;
	int noop;

	if (q->opts.rdonly || !qrec_qid_ok(r->qid)) {
		st = q->opts.rdonly ? QUEUE_EBUSY : QUEUE_ENOENT;
		goto done;
	}
	pthread_mutex_lock(&q->lock);
	st = queue_journal_check(q, r, &noop);
	pthread_mutex_unlock(&q->lock);
	if (st != QUEUE_OK || noop)
		goto done;
	if (r->type == QREC_RCPT_DONE) {
		qrec_put_u32(p, r->rcpt_index);
		p[4] = (unsigned char)r->rcpt_state;
		qrec_encode(&r->rec, r->type, r->qid, p, 5);
	} else if (r->type == QREC_DEFER) {
		struct buf pl = BUF_INIT;
		qrec_put_u64(p, (uint64_t)r->until);
		buf_append(&pl, p, 8);
		if (r->reason)
			buf_puts(&pl, r->reason);
		qrec_encode(&r->rec, r->type, r->qid, pl.data, pl.len);
		buf_free(&pl);
	} else {
		qrec_encode(&r->rec, r->type, r->qid, "", 0);
	}
	if (!wait) {
		r->detached = 1;
		qcommit_enqueue(q, r);
		return QUEUE_OK;
	}
	return qcommit_wait(q, r);
done:
	qreq_free(r);
	return st;
}

enum queue_status queue_rcpt_done(struct queue *q, const char *qid, size_t rcpt_index,
				  enum queue_rcpt_state state)
{
	struct qreq *r = qreq_new(QREC_RCPT_DONE, qid);

	r->rcpt_index = rcpt_index > UINT32_MAX ? UINT32_MAX : (uint32_t)rcpt_index;
	r->rcpt_state = (int)state;
	return queue_journal(q, r);
}

enum queue_status queue_rcpt_done_nowait(struct queue *q, const char *qid, size_t rcpt_index,
					 enum queue_rcpt_state state, time_t retry)
{
	struct qreq *r = qreq_new(QREC_RCPT_DONE, qid);

	r->rcpt_index = rcpt_index > UINT32_MAX ? UINT32_MAX : (uint32_t)rcpt_index;
	r->rcpt_state = (int)state;
	r->until = retry;
	return queue_journal_mode(q, r, 0);
}

enum queue_status queue_defer(struct queue *q, const char *qid, time_t until, const char *reason)
{
	struct qreq *r = qreq_new(QREC_DEFER, qid);

	r->until = until;
	/* reasons come from remote servers: one line, bounded */
	r->reason = reason ? xstrndup(reason, strcspn(reason, "\r\n")) : NULL;
	if (r->reason && strlen(r->reason) > 4096)
		r->reason[4096] = '\0';
	return queue_journal(q, r);
}

enum queue_status queue_mark_warned(struct queue *q, const char *qid)
{
	return queue_journal(q, qreq_new(QREC_WARNED, qid));
}

enum queue_status queue_hold(struct queue *q, const char *qid)
{
	return queue_journal(q, qreq_new(QREC_HOLD, qid));
}

enum queue_status queue_release(struct queue *q, const char *qid)
{
	return queue_journal(q, qreq_new(QREC_RELEASE, qid));
}

enum queue_status queue_requeue(struct queue *q, const char *qid)
{
	return queue_journal(q, qreq_new(QREC_REQUEUE, qid));
}

enum queue_status queue_delete(struct queue *q, const char *qid)
{
	return queue_journal(q, qreq_new(QREC_DELETE, qid));
}

int queue_foreach(struct queue *q, queue_visit_fn fn, void *arg)
{
	struct queue_info info;
	struct qmsg *m;
	int rc = 0;

	pthread_mutex_lock(&q->lock);
	for (size_t b = 0; b < q->nbuckets && rc == 0; b++)
		for (m = q->hash[b]; m != NULL && rc == 0; m = m->hnext) {
			info.qid = m->qid;
			info.state = m->state;
			info.arrival = m->arrival;
			info.next_attempt = m->next_attempt;
			info.size = m->size;
			info.sender = m->sender;
			info.nrcpt = m->nrcpt;
			info.npending = m->npending;
			info.reason = m->reason;
			rc = fn(arg, &info);
		}
	pthread_mutex_unlock(&q->lock);
	return rc;
}

/* queue_wait_scan - move waiting messages that became due (q->lock held) */
static void queue_wait_scan(struct queue *q, time_t now)
{
	struct qmsg *m, *next;

	if (q->wait.n == 0 || now < q->wait_min)
		return;
	q->wait_min = 0;
	for (m = q->wait.head; m != NULL; m = next) {
		next = m->lnext;
		if (m->next_attempt <= now) {
			m->next_attempt = 0; /* due: keeps its place in FIFO order */
			qidx_requeue(q, m);
		} else if (q->wait_min == 0 || m->next_attempt < q->wait_min) {
			q->wait_min = m->next_attempt;
		}
	}
}

int queue_claim_due(struct queue *q, time_t now, char qid[QUEUE_ID_SIZE])
{
	struct qmsg *m;

	pthread_mutex_lock(&q->lock);
	queue_wait_scan(q, now);
	if ((m = q->due.head) != NULL) {
		m->claimed = 1;
		qidx_requeue(q, m); /* off the lists while claimed */
		snprintf(qid, QUEUE_ID_SIZE, "%s", m->qid);
	}
	pthread_mutex_unlock(&q->lock);
	return m != NULL;
}

void queue_unclaim(struct queue *q, const char *qid)
{
	struct qmsg *m;

	pthread_mutex_lock(&q->lock);
	if ((m = qidx_find(q, qid)) != NULL && m->claimed) {
		m->claimed = 0;
		qidx_requeue(q, m);
	}
	pthread_mutex_unlock(&q->lock);
}

void queue_unclaim_until(struct queue *q, const char *qid, time_t until)
{
	struct qmsg *m;

	pthread_mutex_lock(&q->lock);
	if ((m = qidx_find(q, qid)) != NULL && m->claimed) {
		m->claimed = 0;
		if (until > m->next_attempt)
			m->next_attempt = until;
		qidx_requeue(q, m);
	}
	pthread_mutex_unlock(&q->lock);
}

time_t queue_next_wakeup(struct queue *q)
{
	time_t t = 0;

	pthread_mutex_lock(&q->lock);
	if (q->due.n > 0)
		t = time(NULL);
	else if (q->wait.n > 0)
		t = q->wait_min; /* a lower bound: claim_due recomputes it */
	pthread_mutex_unlock(&q->lock);
	return t;
}

/* queue_load_record - read and verify m's record into rec */
static enum queue_status queue_load_record(struct queue *q, const char *qid, struct buf *rec,
					   struct qmsg *copy, unsigned char **states,
					   struct buf *err)
{
	struct qmsg *m;
	struct qseg *s;
	ssize_t got;

	pthread_mutex_lock(&q->lock);
	if ((m = qidx_find(q, qid)) == NULL) {
		pthread_mutex_unlock(&q->lock);
		buf_printf(err, "%s: %s", qid, queue_strerror(QUEUE_ENOENT));
		return QUEUE_ENOENT;
	}
	*copy = *m;
	*states = xmalloc(m->nrcpt);
	memcpy(*states, m->rcpt_state, m->nrcpt);
	s = m->seg;
	s->refs++; /* keeps the fd open if compaction removes s meanwhile */
	pthread_mutex_unlock(&q->lock);
	buf_reset(rec);
	buf_reserve(rec, copy->reclen);
	got = pread(s->fd, rec->data, copy->reclen, copy->off);
	pthread_mutex_lock(&q->lock);
	qseg_unref(q, s);
	pthread_mutex_unlock(&q->lock);
	if (got != (ssize_t)copy->reclen) {
		buf_printf(err, "%s: read segment at offset %lld: %s", qid, (long long)copy->off,
			   got < 0 ? strerror(errno) : "short read");
		return QUEUE_EIO;
	}
	rec->len = copy->reclen;
	return QUEUE_OK;
}

enum queue_status queue_load(struct queue *q, const char *qid, struct queue_env *env,
			     struct buf *content, struct buf *err)
{
	struct buf rec = BUF_INIT, reason = BUF_INIT;
	struct qmsg copy;
	struct qrec r;
	struct qrec_state st;
	unsigned char *states = NULL;
	const unsigned char *body;
	size_t clen, reclen;
	enum queue_status rc;

	if ((rc = queue_load_record(q, qid, &rec, &copy, &states, err)) != QUEUE_OK)
		goto out;
	rc = QUEUE_ECORRUPT;
	if (qrec_decode((unsigned char *)rec.data, rec.len, &r, &reclen, err) != 1 ||
	    strcmp(r.qid, qid) != 0 ||
	    qrec_decode_message(&r, env, &st, &reason, &body, &clen, err) < 0 ||
	    env->nrcpt != copy.nrcpt) {
		msg_warn("queue: %s: corrupt message record: %s", qid,
			 err->len ? err->data : "queue ID or recipients differ");
		goto out;
	}
	for (size_t i = 0; i < env->nrcpt; i++) /* the current states, not the record's */
		env->rcpt[i].state = (enum queue_rcpt_state)states[i];
	env->delay_warned = copy.warned;
	buf_reset(content);
	buf_append(content, body, clen);
	rc = QUEUE_OK;
out:
	free(states);
	buf_free(&rec);
	buf_free(&reason);
	return rc;
}

size_t queue_count(struct queue *q)
{
	size_t n;

	pthread_mutex_lock(&q->lock);
	n = q->nmsgs;
	pthread_mutex_unlock(&q->lock);
	return n;
}

void queue_stats(struct queue *q, struct queue_stats *st)
{
	pthread_mutex_lock(&q->lock);
	*st = q->stats;
	pthread_mutex_unlock(&q->lock);
}

int queue_test_compact(struct queue *q)
{
	struct qreq *r;
	int n;

	if (q->opts.rdonly)
		return 0;
	r = qreq_new(0, "COMPACT"); /* QREQ_COMPACT: runs on the commit thread */
	r->sync = 1;
	qcommit_enqueue(q, r);
	pthread_mutex_lock(&q->commit_lock);
	while (!r->done)
		pthread_cond_wait(&q->done_cond, &q->commit_lock);
	pthread_mutex_unlock(&q->commit_lock);
	n = (int)r->rcpt_index;
	qreq_free(r);
	return n;
}
