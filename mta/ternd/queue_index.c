/* queue_index.c - the queue's in-memory index: queue ID -> message
 * (segment, offset, state, recipient states), plus the scheduling lists.
 *
 * Every function here expects q->lock held. A message is on the due list
 * (FIFO, ready for queue_claim_due), the wait list (deferred to a future
 * time; scanned only when q->wait_min has passed), or neither (claimed or
 * on hold). Each message counts toward its segment's live data, which
 * drives reclamation and compaction (queue_segment.c).
 */
#include "queue_impl.h"
#include "hash.h"

#include <stdlib.h>
#include <string.h>

static size_t qidx_hash(const char *qid, size_t nbuckets)
{
	return (size_t)(hash_fnv1a_str(qid) & (nbuckets - 1));
}

void qidx_init(struct queue *q)
{
	q->nbuckets = 1024;
	q->hash = xcalloc(q->nbuckets, sizeof(*q->hash));
	q->nmsgs = 0;
	memset(&q->due, 0, sizeof(q->due));
	memset(&q->wait, 0, sizeof(q->wait));
	q->wait_min = 0;
}

static void qmsg_free(struct qmsg *m)
{
	free(m->sender);
	free(m->reason);
	free(m->rcpt_state);
	free(m);
}

void qidx_free(struct queue *q)
{
	struct qmsg *m, *next;

	for (size_t i = 0; i < q->nbuckets; i++)
		for (m = q->hash[i]; m != NULL; m = next) {
			next = m->hnext;
			qmsg_free(m);
		}
	free(q->hash);
	q->hash = NULL;
	q->nmsgs = 0;
}

struct qmsg *qidx_find(struct queue *q, const char *qid)
{
	struct qmsg *m = q->hash[qidx_hash(qid, q->nbuckets)];

	while (m != NULL && strcmp(m->qid, qid) != 0)
		m = m->hnext;
	return m;
}

static void qidx_grow(struct queue *q)
{
	size_t nb = q->nbuckets * 2;
	struct qmsg **h = xcalloc(nb, sizeof(*h)), *m, *next;

	for (size_t i = 0; i < q->nbuckets; i++)
		for (m = q->hash[i]; m != NULL; m = next) {
			next = m->hnext;
			m->hnext = h[qidx_hash(m->qid, nb)];
			h[qidx_hash(m->qid, nb)] = m;
		}
	free(q->hash);
	q->hash = h;
	q->nbuckets = nb;
}

static void qlist_unlink(struct queue *q, struct qmsg *m)
{
	struct qlist *l = m->list == QLIST_DUE ? &q->due : m->list == QLIST_WAIT ? &q->wait : NULL;

	if (l == NULL)
		return;
	if (m->lprev)
		m->lprev->lnext = m->lnext;
	else
		l->head = m->lnext;
	if (m->lnext)
		m->lnext->lprev = m->lprev;
	else
		l->tail = m->lprev;
	m->lprev = m->lnext = NULL;
	m->list = QLIST_NONE;
	l->n--;
}

static void qlist_append(struct queue *q, struct qmsg *m, int which)
{
	struct qlist *l = which == QLIST_DUE ? &q->due : &q->wait;

	m->lprev = l->tail, m->lnext = NULL;
	if (l->tail)
		l->tail->lnext = m;
	else
		l->head = m;
	l->tail = m;
	l->n++;
	m->list = which;
}

/* qidx_requeue - put m on the list its state and claim call for */
void qidx_requeue(struct queue *q, struct qmsg *m)
{
	qlist_unlink(q, m);
	if (m->claimed || m->state == QUEUE_STATE_HOLD)
		return;
	if (m->next_attempt == 0) {
		qlist_append(q, m, QLIST_DUE);
		return;
	}
	qlist_append(q, m, QLIST_WAIT);
	if (q->wait_min == 0 || m->next_attempt < q->wait_min)
		q->wait_min = m->next_attempt;
}

void qidx_insert(struct queue *q, struct qmsg *m)
{
	struct qmsg *old = qidx_find(q, m->qid);
	size_t b;

	if (old != NULL) /* a compaction copy, or a copy that survived a crash */
		qidx_remove(q, old);
	if (q->nmsgs >= q->nbuckets)
		qidx_grow(q);
	b = qidx_hash(m->qid, q->nbuckets);
	m->hnext = q->hash[b];
	q->hash[b] = m;
	q->nmsgs++;
	m->seg->live_msgs++;
	m->seg->live_bytes += m->reclen;
	qidx_requeue(q, m);
}

void qidx_remove(struct queue *q, struct qmsg *m)
{
	struct qmsg **pp = &q->hash[qidx_hash(m->qid, q->nbuckets)];

	while (*pp != NULL && *pp != m)
		pp = &(*pp)->hnext;
	if (*pp == NULL)
		return;
	*pp = m->hnext;
	q->nmsgs--;
	qlist_unlink(q, m);
	m->seg->live_msgs--;
	m->seg->live_bytes -= m->reclen;
	qmsg_free(m);
}

struct qmsg *qmsg_from_env(const char *qid, const struct queue_env *env,
			   const struct qrec_state *st)
{
	struct qmsg *m = xcalloc(1, sizeof(*m));

	strncpy(m->qid, qid, QREC_QID_MAX);
	m->state = st->state;
	m->next_attempt = st->next_attempt;
	m->warned = st->warned;
	m->reason = st->reason ? xstrdup(st->reason) : NULL;
	m->arrival = env->arrival;
	m->size = env->size;
	m->sender = xstrdup(env->sender ? env->sender : "");
	m->nrcpt = env->nrcpt;
	m->rcpt_state = xcalloc(env->nrcpt, 1);
	for (size_t i = 0; i < env->nrcpt; i++) {
		m->rcpt_state[i] = (unsigned char)env->rcpt[i].state;
		if (env->rcpt[i].state == QUEUE_RCPT_PENDING)
			m->npending++;
	}
	return m;
}

static void qidx_set_reason(struct qmsg *m, const char *reason)
{
	free(m->reason);
	m->reason = reason ? xstrdup(reason) : NULL;
}

/* qidx_apply - a journal record's effect; 1 when m is finished (the
 * caller removes it). Unknown or out-of-range data is ignored: the record
 * passed its CRC, so it can only come from a newer or buggy writer. */
int qidx_apply(struct queue *q, struct qmsg *m, int type, uint32_t rcpt_index, int rcpt_state,
	       time_t until, const char *reason)
{
	switch (type) {
	case QREC_RCPT_DONE:
		if (rcpt_index < m->nrcpt && m->rcpt_state[rcpt_index] == QUEUE_RCPT_PENDING &&
		    rcpt_state != QUEUE_RCPT_PENDING) {
			m->rcpt_state[rcpt_index] = (unsigned char)rcpt_state;
			m->npending--;
		}
		return m->npending == 0;
	case QREC_DEFER:
		m->next_attempt = until;
		qidx_set_reason(m, reason);
		if (m->state != QUEUE_STATE_HOLD)
			m->state = QUEUE_STATE_DEFERRED;
		m->claimed = 0;
		break;
	case QREC_HOLD:
		m->state = QUEUE_STATE_HOLD;
		break;
	case QREC_RELEASE:
		/* postsuper -H: out of hold into the deferred queue, due now */
		if (m->state == QUEUE_STATE_HOLD)
			m->state = m->reason ? QUEUE_STATE_DEFERRED : QUEUE_STATE_ACTIVE;
		m->next_attempt = 0;
		break;
	case QREC_REQUEUE:
		/* postsuper -r: a fresh attempt now, also out of hold */
		m->state = QUEUE_STATE_ACTIVE;
		m->next_attempt = 0;
		qidx_set_reason(m, NULL);
		break;
	case QREC_DELETE:
		return 1;
	case QREC_WARNED:
		m->warned = 1;
		return 0;
	default:
		return 0;
	}
	qidx_requeue(q, m);
	return 0;
}

/* qidx_decode_journal - the fields of a journal record's payload */
int qidx_decode_journal(const struct qrec *rec, uint32_t *rcpt_index, int *rcpt_state,
			time_t *until, struct buf *reason)
{
	buf_reset(reason);
	switch (rec->type) {
	case QREC_RCPT_DONE:
		if (rec->len != 5)
			return -1;
		*rcpt_index = qrec_get_u32(rec->payload);
		*rcpt_state = rec->payload[4];
		return 0;
	case QREC_DEFER:
		if (rec->len < 8 || memchr(rec->payload + 8, '\0', rec->len - 8) != NULL)
			return -1;
		*until = (time_t)qrec_get_u64(rec->payload);
		buf_append(reason, rec->payload + 8, rec->len - 8);
		return 0;
	case QREC_HOLD:
	case QREC_RELEASE:
	case QREC_REQUEUE:
	case QREC_DELETE:
	case QREC_WARNED:
		return 0;
	default:
		return -1;
	}
}
