/* queue_flow.c - mail flow control: Postfix's in_flow_delay (queue.h).
 *
 * Every new message (queue_submit) takes a token; the scheduler gives one
 * back for each message it is done with (queue_flow_put) and fills up to
 * QUEUE_FLOW_TOKENS when it finds nothing to do (queue_flow_fill). A
 * submission that finds none waits — on its own event loop, holding no
 * thread — until a token comes back or in_flow_delay has passed, and is
 * committed then either way. So arrivals are paced to what leaves the
 * queue, plus at most one message per waiting session per in_flow_delay:
 * the queue does not grow without bound when mail comes in faster than
 * it can be delivered, and a stalled scheduler never stops mail from
 * being accepted. Internal notices (bounces) are never paced (a worker
 * waiting for a token it must itself return would deadlock).
 *
 * Pitfall: a grant (event_active from the scheduler's thread) and the
 * waiter's own timeout may race; both touch the waiter only under
 * flow_lock, and the callback frees it under that lock.
 */
#include "queue_impl.h"

#include <event2/event.h>

#include <stdlib.h>

struct qflow_wait {
	struct queue *q;
	struct qreq *r;
	struct event *ev;
	int granted; /* a token was handed over (flow_lock) */
	int listed;  /* in q->flow_head (flow_lock) */
	struct qflow_wait *next;
};

static void qflow_unlink(struct queue *q, struct qflow_wait *w) /* flow_lock held */
{
	struct qflow_wait **pp;

	for (pp = &q->flow_head; *pp && *pp != w; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = w->next;
	if (q->flow_tail == w) {
		q->flow_tail = NULL;
		for (struct qflow_wait *x = q->flow_head; x; x = x->next)
			q->flow_tail = x;
	}
	w->listed = 0;
}

/* A token arrived or in_flow_delay passed: commit now. */
static void qflow_go(evutil_socket_t fd, short what, void *arg)
{
	struct qflow_wait *w = arg;
	struct queue *q = w->q;
	struct qreq *r = w->r;

	(void)fd, (void)what;
	pthread_mutex_lock(&q->flow_lock);
	if (w->listed)
		qflow_unlink(q, w); /* timed out */
	event_free(w->ev);
	free(w);
	pthread_mutex_unlock(&q->flow_lock);
	qcommit_enqueue(q, r);
}

int qflow_take_or_wait(struct queue *q, struct qreq *r)
{
	struct qflow_wait *w;
	struct timeval tv;
	int ms;

	pthread_mutex_lock(&q->flow_lock);
	ms = q->flow_delay_ms;
	if (ms <= 0 || r->base == NULL || q->flow_tokens > 0) {
		if (q->flow_tokens > 0)
			q->flow_tokens--;
		pthread_mutex_unlock(&q->flow_lock);
		return 0;
	}
	w = xcalloc(1, sizeof(*w));
	w->q = q, w->r = r;
	w->ev = evtimer_new(r->base, qflow_go, w);
	if (w->ev == NULL) { /* cannot wait: do not hold mail for it */
		free(w);
		pthread_mutex_unlock(&q->flow_lock);
		return 0;
	}
	tv.tv_sec = ms / 1000, tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(w->ev, &tv);
	w->listed = 1;
	if (q->flow_tail)
		q->flow_tail->next = w;
	else
		q->flow_head = w;
	q->flow_tail = w;
	__atomic_add_fetch(&q->stats.flow_waits, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&q->flow_lock);
	return 1;
}

/* Hand n tokens to waiters first, keep the rest (up to the cap). */
static void qflow_give(struct queue *q, long n, int fill)
{
	pthread_mutex_lock(&q->flow_lock);
	while ((n > 0 || fill) && q->flow_head != NULL) {
		struct qflow_wait *w = q->flow_head;
		qflow_unlink(q, w);
		w->granted = 1;
		event_active(w->ev, EV_TIMEOUT, 0); /* its loop commits it */
		if (n > 0)
			n--;
	}
	q->flow_tokens = fill ? QUEUE_FLOW_TOKENS : q->flow_tokens + n;
	if (q->flow_tokens > QUEUE_FLOW_TOKENS)
		q->flow_tokens = QUEUE_FLOW_TOKENS;
	pthread_mutex_unlock(&q->flow_lock);
}

void queue_flow_put(struct queue *q, int n)
{
	qflow_give(q, n, 0);
}

void queue_flow_fill(struct queue *q)
{
	qflow_give(q, 0, 1);
}

void queue_flow_set(struct queue *q, int delay_ms)
{
	pthread_mutex_lock(&q->flow_lock);
	q->flow_delay_ms = delay_ms;
	pthread_mutex_unlock(&q->flow_lock);
	if (delay_ms <= 0)
		queue_flow_fill(q); /* nobody waits any more */
}
