/* sched.c - the scheduler: N worker threads claim due messages
 * (queue_claim_due), deliver every pending recipient through its route's
 * transport, then journal each outcome (queue_rcpt_done) and one
 * queue_defer() with Postfix's backoff (postfix.md §4.4: message age
 * clamped to [minimal_backoff_time, maximal_backoff_time]; past
 * maximal_queue_lifetime, or bounce_queue_lifetime for <>, the rest
 * bounces as "expired"). Workers sleep until sched_wakeup(), the next
 * due time or queue_run_delay. sched_wakeup() wakes a sleeping worker
 * only when no awake one will get to the new message soon (one is between
 * messages, or has spent under SCHED_QUICK_NS on its current one): at
 * thousands of messages a second, a thread switch per message costs more
 * than a fast delivery (discard) itself, while a slow delivery still gets
 * company at once. Pause is a flag file (SCHED_PAUSE_FILE)
 * so it survives restarts. Interface in sched.h.
 *
 * SMTP and LMTP deliveries run on the engine loops: the worker hands them
 * over and takes the next message; when their last recipient is reported
 * the loop finishes the message itself if nothing can block (every
 * recipient done, no notice: only non-waiting journal records), else it
 * comes back (sched.finished) and a worker journals it. At most
 * qmgr_message_active_limit messages are out like that.
 * Pitfalls: a claim must always end (journal or queue_unclaim), except at
 * shutdown, when claims simply die with the process; bounce notices are
 * queued before recipients are marked bounced.
 */
#include "sched.h"
#include "fileio.h"

#include "deliver.h"
#include "log.h"
#include "queue.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define SCHED_DEFAULT_WORKERS 2
#define SCHED_QUICK_NS 1000000 /* a delivery this fast is no reason to wake another worker */

/* A settings snapshot shared by the workers; freed by its last user. */
struct sched_conf {
	struct deliver_conf *dc;
	int refs;
};

struct sched {
	struct queue *q;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct sched_conf *conf;
	char *queue_dir, *pause_path;
	int paused, stopping, kicked, flush;
	pthread_t *threads;
	int nthreads;
	int nasleep;	   /* workers in sched_sleep() */
	int waking;	   /* of those, signalled but not yet running */
	int64_t *busy_since; /* per worker: start of its current message, or 0 */
	struct sched_msg *finished, *finished_tail; /* SMTP done, to be journaled */
	long long inflight;     /* claimed messages whose SMTP deliveries run on the loops */
	long long active_limit; /* qmgr_message_active_limit: claim no more beyond it */
};

struct sched_worker_arg {
	struct sched *s;
	int index;
};

static int64_t sched_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* sched_need_worker - (s->lock held) would a new message wait without a
 * sleeping worker being woken? */
static int sched_need_worker(struct sched *s)
{
	int64_t now = 0;
	int awake = s->nthreads - s->nasleep;

	if (s->waking > 0 || s->nasleep == 0)
		return 0; /* one is on its way, or none could be woken */
	for (int i = 0; i < s->nthreads && awake > 0; i++) {
		if (s->busy_since[i] == 0)
			continue;
		awake--;
		if (now == 0)
			now = sched_mono_ns();
		if (now - s->busy_since[i] < SCHED_QUICK_NS)
			return 0;
	}
	return awake == 0; /* an awake worker not busy will claim it next */
}

/* --- settings snapshots -------------------------------------------- */

static void sched_conf_drop(struct sched *s, struct sched_conf *c)
{
	int last;

	pthread_mutex_lock(&s->lock);
	last = --c->refs == 0;
	pthread_mutex_unlock(&s->lock);
	if (last) {
		deliver_conf_free(c->dc);
		free(c);
	}
}

static struct sched_conf *sched_conf_new(struct cfg *cfg, struct buf *err)
{
	struct deliver_conf *dc = deliver_conf_new(cfg, err);
	struct sched_conf *c;

	if (dc == NULL)
		return NULL;
	c = xcalloc(1, sizeof(*c));
	c->dc = dc;
	c->refs = 1;
	return c;
}

/* --- one message ----------------------------------------------------- */

/* Per queue recipient: what to journal after the attempt. */
struct sched_outcome {
	int pending; /* 1: still to do (deferred) */
	enum queue_rcpt_state state;
	char dsn[16];	 /* why it is pending: status and text, for an expiry */
	struct buf text;
};

/* sched_backoff - postfix.md §4.4: the message's age, clamped (so the
 * wait about doubles from one attempt to the next), plus up to 10% jitter
 * within the clamp, so that mail deferred together does not come back as
 * one burst. */
static time_t sched_backoff(const struct deliver_conf *dc, const struct queue_env *env, time_t now)
{
	long long delay = (long long)(now - env->arrival), spread;

	if (delay < dc->min_backoff)
		delay = dc->min_backoff;
	if (delay > dc->max_backoff)
		delay = dc->max_backoff;
	spread = delay / 10;
	if (delay + spread > dc->max_backoff)
		spread = dc->max_backoff - delay;
	if (spread > 0) {
		uint32_t r = 0;
		if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
			r = (uint32_t)now;
		delay += (long long)(r % (uint32_t)(spread + 1));
	}
	return now + (time_t)delay;
}

/* A message between its claim and its journal. On the heap: its SMTP
 * deliveries finish on an event loop, and a worker journals it then. */
struct sched_msg {
	struct sched *s;
	struct sched_conf *c;
	struct deliver_msg m;
	struct queue_env env;
	struct buf content;
	struct sched_slow_arg *slow;
	char qid[QUEUE_ID_SIZE];
	struct deliver_rcpt *rs; /* one per pending queue recipient */
	struct deliver_rcpt **ps;
	size_t *idx; /* rs[j] is queue recipient idx[j] */
	size_t k;
	struct sched_msg *next; /* sched.finished */
};

/* Each queue recipient's outcome, from its deliveries' reports. */
static int sched_outcomes(struct sched_msg *sm, struct sched_outcome *o, struct buf *reason)
{
	int any_pending = 0;

	for (size_t j = 0; j < sm->k; j++) {
		struct deliver_rcpt *r = &sm->rs[j];
		struct sched_outcome *oi = &o[sm->idx[j]];
		oi->pending = r->ndeferred > 0;
		oi->state = r->nsent == 0 && r->nbounced > 0 ? QUEUE_RCPT_BOUNCED : QUEUE_RCPT_SENT;
		if (r->nsent + r->nbounced + r->ndeferred == 0) { /* never without an outcome */
			oi->pending = 1;
			snprintf(oi->dsn, sizeof(oi->dsn), "4.3.0");
			buf_set(&oi->text, "delivery status unknown");
		}
		if (oi->pending && reason->len == 0)
			buf_set(reason, r->reason.len ? buf_str(&r->reason) : buf_str(&oi->text));
		if (r->ndeferred > 0) {
			snprintf(oi->dsn, sizeof(oi->dsn), "%s", r->reason_dsn);
			buf_set(&oi->text, buf_str(&r->reason));
		}
		any_pending |= oi->pending;
	}
	return any_pending;
}

/* sched_expire - past its lifetime: every pending recipient bounces with
 * the last deferral reason (Postfix logs one "status=expired" line). */
static int sched_expire(struct deliver_msg *m, struct sched_outcome *o, const char *reason)
{
	msg_qid(m->qid, "from=<%s>, status=expired, returned to sender", m->env->sender);
	for (size_t i = 0; i < m->env->nrcpt; i++) {
		if (!o[i].pending)
			continue;
		/* Postfix reports each recipient's last deferral (status and
		 * text) as the failure; 4.4.7 when there is none */
		bounce_note(m, "failed", m->env->rcpt[i].addr, m->env->rcpt[i].addr, &m->env->rcpt[i],
			    o[i].dsn[0] == '4' ? o[i].dsn : "4.4.7", "none",
			    o[i].text.len ? buf_str(&o[i].text) : reason);
		o[i].pending = 0;
		o[i].state = QUEUE_RCPT_BOUNCED;
	}
	return bounce_flush(m);
}

static int sched_expired(const struct deliver_conf *dc, const struct queue_env *env, time_t now)
{
	long long life = *env->sender ? dc->lifetime : dc->bounce_lifetime;

	return (long long)(now - env->arrival) >= life;
}

/* sched_journal - record outcomes; returns -1 if a record failed (the
 * claim is then released so the message is retried: at-least-once). */
static int sched_journal(struct deliver_msg *m, struct sched_outcome *o, const char *reason,
			 int any_pending)
{
	enum queue_status st = QUEUE_OK;
	int journaled = 0;

	for (size_t i = 0; i < m->env->nrcpt && st == QUEUE_OK; i++) {
		if (m->env->rcpt[i].state != QUEUE_RCPT_PENDING || o[i].pending)
			continue;
		st = queue_rcpt_done_nowait(m->q, m->qid, i, o[i].state,
					    sched_backoff(m->conf, m->env, time(NULL)));
		journaled = 1;
	}
	if (st == QUEUE_OK && any_pending) {
		st = queue_defer(m->q, m->qid, sched_backoff(m->conf, m->env, time(NULL)),
				 *reason ? reason : "delivery temporarily suspended");
		journaled = 1;
	}
	if (st != QUEUE_OK) {
		/* Postfix defers after "cannot update queue file": at least
		 * once, but with backoff; the retry time lives in memory since
		 * the journal cannot take it. */
		msg_warn("%s: cannot update queue: %s", m->qid, queue_strerror(st));
		queue_unclaim_until(m->q, m->qid, sched_backoff(m->conf, m->env, time(NULL)));
	} else if (!journaled) {
		queue_unclaim(m->q, m->qid);
	}
	return st == QUEUE_OK ? 0 : -1;
}

/* Delay warnings (delay_warning_time): once per message; the mark is a
 * journal record (queue_mark_warned), so a restart does not repeat it. */
static void sched_delay_warn(struct deliver_msg *m, const struct sched_outcome *o,
			     const char *reason)
{
	time_t now = time(NULL);

	if (m->conf->delay_warning <= 0 || now - m->env->arrival < m->conf->delay_warning ||
	    m->env->delay_warned)
		return;
	for (size_t i = 0; i < m->env->nrcpt; i++)
		if (o[i].pending)
			bounce_note(m, "delayed", m->env->rcpt[i].addr, m->env->rcpt[i].addr,
				    &m->env->rcpt[i], o[i].dsn[0] == '4' ? o[i].dsn : "4.0.0", "none",
				    o[i].text.len ? buf_str(&o[i].text) : reason);
	if (bounce_flush(m) == 0 && queue_mark_warned(m->q, m->qid) != QUEUE_OK)
		msg_warn("%s: cannot record the delay warning: it may be sent again", m->qid);
	/* a lost warning is not worth holding mail for */
}

static void sched_msg_free(struct sched_msg *sm)
{
	for (size_t j = 0; j < sm->k; j++)
		buf_free(&sm->rs[j].reason);
	free(sm->rs);
	free(sm->ps);
	free(sm->idx);
	free(sm->slow);
	queue_env_free(&sm->env);
	buf_free(&sm->content);
	buf_free(&sm->m.failed);
	free(sm);
}

static void sched_conf_drop(struct sched *s, struct sched_conf *c);

/* Every recipient has its outcome: notices, expiry, warnings, journal. */
static void sched_message_finish(struct sched_msg *sm)
{
	struct deliver_msg *m = &sm->m;
	struct sched_outcome *o = xcalloc(m->env->nrcpt + 1, sizeof(*o));
	struct buf reason = BUF_INIT;
	int any_pending = sched_outcomes(sm, o, &reason);

	if (bounce_flush(m) < 0) {
		/* No notice queued: keep the bounced recipients for later. */
		for (size_t i = 0; i < m->env->nrcpt; i++)
			if (m->env->rcpt[i].state == QUEUE_RCPT_PENDING &&
			    o[i].state == QUEUE_RCPT_BOUNCED && !o[i].pending)
				o[i].pending = any_pending = 1;
		if (reason.len == 0)
			buf_set(&reason, "cannot queue non-delivery notification");
	} else if (any_pending && sched_expired(m->conf, m->env, time(NULL))) {
		any_pending = sched_expire(m, o, buf_str(&reason)) < 0;
		if (any_pending) /* keep them all pending, try again */
			for (size_t i = 0; i < m->env->nrcpt; i++)
				o[i].pending = m->env->rcpt[i].state == QUEUE_RCPT_PENDING &&
					       o[i].state == QUEUE_RCPT_BOUNCED;
	}
	if (any_pending && !sched_expired(m->conf, m->env, time(NULL)))
		sched_delay_warn(m, o, buf_str(&reason));
	sched_journal(m, o, buf_str(&reason), any_pending);
	for (size_t i = 0; i < m->env->nrcpt; i++)
		buf_free(&o[i].text);
	buf_free(&reason);
	free(o);
	sched_conf_drop(sm->s, sm->c);
	queue_flow_put(sm->s->q, 1); /* in_flow_delay: one more may come in */
	sched_msg_free(sm);
}

static void sched_signal(struct sched *s);

struct sched_slow_arg {
	struct sched *s;
	int me;
};

/* deliver_msg.on_slow: this worker is about to block (maildir, command,
 * SMTP...): it no longer counts as "about to take the next message", and
 * mail already due gets another worker now, not after this delivery. */
static void sched_slow(void *arg)
{
	struct sched_slow_arg *a = arg;
	struct sched *s = a->s;
	time_t due = queue_next_wakeup(s->q);

	pthread_mutex_lock(&s->lock);
	s->busy_since[a->me] = 1; /* long ago: sched_need_worker() sees it busy */
	if (due != 0 && due <= time(NULL) && sched_need_worker(s))
		sched_signal(s);
	pthread_mutex_unlock(&s->lock);
}

/* Can the loop that reported the last recipient finish the message
 * itself? Yes when nothing can block: no notice to queue (a commit wait)
 * and no deferral to journal (queue_defer waits for the disk) — then
 * only non-waiting "recipient done" records remain, and the hop back to
 * a worker (two thread switches per message) is saved. */
static int sched_msg_quick(const struct sched_msg *sm)
{
	if (sm->m.nfailed > 0)
		return 0;
	for (size_t j = 0; j < sm->k; j++)
		if (sm->rs[j].ndeferred > 0 || sm->rs[j].nsent + sm->rs[j].nbounced == 0)
			return 0;
	return 1;
}

/* deliver_rcpts_start()'s done: on an event loop; a worker journals it
 * unless it can be finished here (sched_msg_quick). */
static void sched_msg_done(void *arg)
{
	struct sched_msg *sm = arg;
	struct sched *s = sm->s;

	if (sched_msg_quick(sm)) {
		sched_message_finish(sm);
		pthread_mutex_lock(&s->lock);
		if (s->inflight-- == s->active_limit) { /* workers stopped claiming: go on */
			s->kicked = 1;
			if (sched_need_worker(s))
				sched_signal(s);
		}
		pthread_mutex_unlock(&s->lock);
		return;
	}
	pthread_mutex_lock(&s->lock);
	sm->next = NULL;
	if (s->finished_tail)
		s->finished_tail->next = sm;
	else
		s->finished = sm;
	s->finished_tail = sm;
	s->kicked = 1;
	if (sched_need_worker(s))
		sched_signal(s);
	pthread_mutex_unlock(&s->lock);
}

/* Load, deliver what can be delivered now, hand SMTP to the loops; the
 * conf reference c is the message's until it is finished. */
static void sched_message(struct sched *s, struct sched_conf *c, const char *qid, int me)
{
	const struct deliver_conf *dc = c->dc;
	struct sched_msg *sm = xcalloc(1, sizeof(*sm));
	struct buf err = BUF_INIT;
	enum queue_status st;
	int pending;

	sm->s = s;
	sm->c = c;
	snprintf(sm->qid, sizeof(sm->qid), "%s", qid);
	sm->slow = xcalloc(1, sizeof(*sm->slow));
	*sm->slow = (struct sched_slow_arg){s, me};
	sm->m = (struct deliver_msg){.q = s->q,
				     .conf = dc,
				     .qid = sm->qid,
				     .env = &sm->env,
				     .on_slow = sched_slow,
				     .slow_arg = sm->slow};
	queue_env_init(&sm->env);
	buf_init(&sm->content);
	buf_init(&sm->m.failed);
	sm->m.t_active = deliver_now();
	if ((st = queue_load(s->q, qid, &sm->env, &sm->content, &err)) != QUEUE_OK) {
		msg_warn("%s: cannot load message: %s%s%s", qid, queue_strerror(st),
			 err.len ? ": " : "", buf_str(&err));
		/* Do not spin on it: try again after the minimal backoff. */
		if (st == QUEUE_ENOENT || queue_defer(s->q, qid, time(NULL) + dc->min_backoff,
						      "cannot load message") != QUEUE_OK)
			queue_unclaim(s->q, qid);
		buf_free(&err);
		sched_conf_drop(s, c);
		queue_flow_put(s->q, 1);
		sched_msg_free(sm);
		return;
	}
	buf_free(&err);
	sm->m.content = sm->content.data ? sm->content.data : "";
	sm->m.len = sm->content.len;
	msg_qid(qid, "from=<%s>, size=%zu, nrcpt=%zu (queue active)", sm->env.sender,
		sm->env.size, sm->env.nrcpt);
	sm->rs = xcalloc(sm->env.nrcpt + 1, sizeof(*sm->rs));
	sm->ps = xcalloc(sm->env.nrcpt + 1, sizeof(*sm->ps));
	sm->idx = xcalloc(sm->env.nrcpt + 1, sizeof(*sm->idx));
	for (size_t i = 0; i < sm->env.nrcpt; i++) {
		const struct queue_rcpt *qr = &sm->env.rcpt[i];
		if (qr->state != QUEUE_RCPT_PENDING)
			continue;
		sm->rs[sm->k] = (struct deliver_rcpt){.msg = &sm->m, .addr = qr->addr,
						      .orig = qr->addr, .qr = qr};
		buf_init(&sm->rs[sm->k].reason);
		sm->ps[sm->k] = &sm->rs[sm->k];
		sm->idx[sm->k++] = i;
	}
	pthread_mutex_lock(&s->lock);
	s->inflight++;
	pthread_mutex_unlock(&s->lock);
	pending = deliver_rcpts_start(sm->ps, sm->k, sched_msg_done, sm);
	if (!pending) {
		pthread_mutex_lock(&s->lock);
		s->inflight--;
		pthread_mutex_unlock(&s->lock);
		sched_message_finish(sm);
	}
}

/* --- flush ------------------------------------------------------------ */

struct sched_ids {
	char **v;
	size_t n;
};

static int sched_collect_deferred(void *arg, const struct queue_info *info)
{
	struct sched_ids *ids = arg;

	if (info->state == QUEUE_STATE_DEFERRED) {
		ids->v = xrealloc(ids->v, (ids->n + 1) * sizeof(*ids->v));
		ids->v[ids->n++] = xstrdup(info->qid);
	}
	return 0;
}

/* sched_flush_run - on a worker: journal calls fsync, never on a loop. */
static void sched_flush_run(struct sched *s)
{
	struct sched_ids ids = {NULL, 0};

	queue_foreach(s->q, sched_collect_deferred, &ids);
	for (size_t i = 0; i < ids.n; i++) {
		enum queue_status st = queue_requeue(s->q, ids.v[i]);
		if (st != QUEUE_OK && st != QUEUE_ENOENT && st != QUEUE_ESTATE)
			msg_warn("%s: flush: %s", ids.v[i], queue_strerror(st));
		free(ids.v[i]);
	}
	free(ids.v);
}

/* --- workers ---------------------------------------------------------- */

/* sched_sleep - until kicked, the next due message, or queue_run_delay. */
static void sched_sleep(struct sched *s)
{
	time_t now = time(NULL), next = queue_next_wakeup(s->q);
	time_t until = now + (time_t)s->conf->dc->run_delay;
	struct timespec ts = {0, 0};

	if (next > 0 && next < until)
		until = next;
	if (s->paused)
		until = now + 3600;
	ts.tv_sec = until > now ? until : now + 1;
	s->nasleep++;
	while (!s->kicked && !s->stopping) {
		int rc = pthread_cond_timedwait(&s->cond, &s->lock, &ts);
		/* Every return uses up a signal, also when another worker took
		 * the message meanwhile and this one waits on: a count left
		 * behind would stop sched_wakeup() from ever waking anyone. */
		if (s->waking > 0)
			s->waking--;
		if (rc == ETIMEDOUT)
			break;
	}
	s->nasleep--;
	if (s->waking > s->nasleep)
		s->waking = s->nasleep;
}

/* sched_signal - (s->lock held) wake one sleeping worker */
static void sched_signal(struct sched *s)
{
	if (s->nasleep > s->waking) {
		s->waking++;
		pthread_cond_signal(&s->cond);
	}
}

static void *sched_worker(void *arg)
{
	struct sched_worker_arg *wa = arg;
	struct sched *s = wa->s;
	int me = wa->index;
	char qid[QUEUE_ID_SIZE];

	log_thread_service("qmgr"); /* from=<...> (queue active), like qmgr(8) */
	pthread_mutex_lock(&s->lock);
	while (!s->stopping) {
		if (s->flush) {
			s->flush = 0;
			s->busy_since[me] = sched_mono_ns();
			pthread_mutex_unlock(&s->lock);
			sched_flush_run(s);
			pthread_mutex_lock(&s->lock);
			s->busy_since[me] = 0;
			continue;
		}
		if (s->finished != NULL) { /* SMTP is done with it: journal */
			struct sched_msg *sm = s->finished;
			if ((s->finished = sm->next) == NULL)
				s->finished_tail = NULL;
			s->busy_since[me] = sched_mono_ns();
			pthread_mutex_unlock(&s->lock);
			sched_message_finish(sm);
			pthread_mutex_lock(&s->lock);
			s->inflight--;
			s->busy_since[me] = 0;
			continue;
		}
		if (!s->paused && s->inflight < s->active_limit &&
		    queue_claim_due(s->q, time(NULL), qid) > 0) {
			struct sched_conf *c = s->conf;
			int64_t t0 = sched_mono_ns();
			c->refs++;
			s->busy_since[me] = t0;
			pthread_mutex_unlock(&s->lock);
			sched_message(s, c, qid, me);
			pthread_mutex_lock(&s->lock);
			s->busy_since[me] = 0;
			/* Slow deliveries and more waiting: bring in another worker. */
			if (sched_mono_ns() - t0 >= SCHED_QUICK_NS)
				sched_signal(s);
			continue;
		}
		/* Nothing to do: whatever came in has left (or waits for a
		 * retry), so arrivals need not be paced now. */
		if (s->inflight == 0 && !s->paused)
			queue_flow_fill(s->q);
		s->kicked = 0;
		sched_sleep(s);
	}
	pthread_mutex_unlock(&s->lock);
	free(wa);
	return NULL;
}

/* --- API --------------------------------------------------------------- */

struct sched *sched_start(struct queue *q, struct cfg *cfg, const char *queue_dir, int nworkers,
			  struct buf *err)
{
	struct sched *s = xcalloc(1, sizeof(*s));
	struct buf path = BUF_INIT;
	long long flow_ms = 0;

	if (cfg_get_int(cfg, NULL, "qmgr_message_active_limit", &s->active_limit, err) < 0 ||
	    cfg_get_time_ms(cfg, NULL, "in_flow_delay", &flow_ms, err) < 0 ||
	    (s->conf = sched_conf_new(cfg, err)) == NULL) {
		free(s);
		return NULL;
	}
	s->q = q;
	queue_flow_set(q, (int)flow_ms);
	s->queue_dir = xstrdup(queue_dir);
	buf_printf(&path, "%s/%s", queue_dir, SCHED_PAUSE_FILE);
	s->pause_path = buf_detach(&path);
	s->paused = access(s->pause_path, F_OK) == 0;

	if (s->paused)
		msg_info("delivery is paused (%s exists)", s->pause_path);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->nthreads = nworkers > 0 ? nworkers : SCHED_DEFAULT_WORKERS;
	s->threads = xcalloc((size_t)s->nthreads, sizeof(*s->threads));
	s->busy_since = xcalloc((size_t)s->nthreads, sizeof(*s->busy_since));
	for (int i = 0; i < s->nthreads; i++) {
		struct sched_worker_arg *wa = xcalloc(1, sizeof(*wa));
		int rc;
		wa->s = s, wa->index = i;
		if ((rc = pthread_create(&s->threads[i], NULL, sched_worker, wa)) != 0) {
			free(wa);
			buf_printf(err, "cannot start delivery worker: %s", strerror(rc));
			s->nthreads = i;
			sched_stop(s);
			return NULL;
		}
	}
	return s;
}

void sched_wakeup(struct sched *s)
{
	pthread_mutex_lock(&s->lock);
	s->kicked = 1;
	if (sched_need_worker(s))
		sched_signal(s);
	pthread_mutex_unlock(&s->lock);
}

int sched_reload(struct sched *s, struct cfg *cfg, struct buf *err)
{
	struct sched_conf *c = sched_conf_new(cfg, err), *old;
	long long limit, flow_ms;

	if (c == NULL)
		return -1;
	if (cfg_get_int(cfg, NULL, "qmgr_message_active_limit", &limit, err) < 0 ||
	    cfg_get_time_ms(cfg, NULL, "in_flow_delay", &flow_ms, err) < 0) {
		sched_conf_drop(s, c);
		return -1;
	}
	queue_flow_set(s->q, (int)flow_ms);
	pthread_mutex_lock(&s->lock);
	old = s->conf;
	s->conf = c;
	s->active_limit = limit;
	pthread_mutex_unlock(&s->lock);
	sched_conf_drop(s, old);
	sched_wakeup(s);
	return 0;
}

int sched_pause(struct sched *s, int paused, struct buf *err)
{
	if (fileio_flag_set(s->pause_path, paused, err) < 0)
		return -1;
	pthread_mutex_lock(&s->lock);
	s->paused = paused;
	s->kicked = 1;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	msg_info("delivery %s", paused ? "paused" : "resumed");
	return 0;
}

int sched_paused(struct sched *s)
{
	int p;

	pthread_mutex_lock(&s->lock);
	p = s->paused;
	pthread_mutex_unlock(&s->lock);
	return p;
}

void sched_flush(struct sched *s)
{
	deliver_smtp_reset(); /* as qmgr on a flush: dead destinations live again */
	pthread_mutex_lock(&s->lock);
	s->flush = 1;
	s->kicked = 1;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

void sched_stop(struct sched *s)
{
	if (s == NULL)
		return;
	pthread_mutex_lock(&s->lock);
	s->stopping = 1;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	/* SMTP sessions end first: a worker may wait for one, and no loop
	 * may hand a message back to a scheduler that is gone. Messages in
	 * flight stay queued (claims live in memory only). */
	deliver_smtp_shutdown();
	for (int i = 0; i < s->nthreads; i++)
		pthread_join(s->threads[i], NULL);
	while (s->finished != NULL) {
		struct sched_msg *sm = s->finished;
		s->finished = sm->next;
		sched_conf_drop(s, sm->c);
		sched_msg_free(sm);
	}
	sched_conf_drop(s, s->conf);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s->threads);
	free(s->busy_since);
	free(s->queue_dir);
	free(s->pause_path);
	free(s);
}
