/* queue_impl.h - internals shared by the queue modules (queue.c public
 * API, queue_record.c codec, queue_index.c index, queue_segment.c files,
 * queue_commit.c group commit). Not for other ternd modules.
 *
 * Locking: q->lock guards the index (messages, lists, segments table,
 * counters); q->commit_lock guards the pending request list and the
 * completion of synchronous requests. Order: commit_lock is never held
 * while taking lock. Only the commit thread writes to segment files and
 * changes the index after a write, so index changes follow disk order.
 */
#ifndef TERN_QUEUE_IMPL_H
#define TERN_QUEUE_IMPL_H

#include "queue.h"

#include <pthread.h>
#include <sys/types.h>
#include <sys/uio.h>

/* On-disk format (docs/queue.md has the tables). Little-endian. */
#define QREC_MAGIC "TRCD"
#define QREC_END "TEND"
#define QREC_HDR_SIZE 32
#define QREC_TRAILER_SIZE 4
#define QREC_QID_MAX 16
#define QREC_PAYLOAD_MAX (1u << 30) /* sanity bound for lengths read from disk */
#define QSEG_MAGIC "TERNQSEG"
#define QSEG_VERSION 1
#define QSEG_HDR_SIZE 32

enum qrec_type {
	QREC_MESSAGE = 'M',   /* envelope (with state) + content */
	QREC_RCPT_DONE = 'D', /* u32 rcpt index, u8 state */
	QREC_DEFER = 'F',     /* i64 until, reason text */
	QREC_HOLD = 'H',
	QREC_RELEASE = 'R',
	QREC_REQUEUE = 'Q',
	QREC_DELETE = 'X',
	QREC_WARNED = 'w', /* a delay warning was sent (delay_warning_time) */
};

/* A record read back from disk. */
struct qrec {
	int type;
	char qid[QREC_QID_MAX + 1];
	const unsigned char *payload;
	uint32_t len;
};

/* State carried in a message record (initial state, or a compaction copy). */
struct qrec_state {
	enum queue_msg_state state;
	time_t next_attempt;
	const char *reason; /* NULL if none */
	int warned;	    /* a delay warning was sent */
};

/* queue_record.c */
int qrec_qid_ok(const char *qid);
void qrec_encode(struct buf *out, int type, const char *qid, const void *payload, size_t len);
/* Message record: appends a complete record (header, payload, trailer). */
void qrec_encode_message(struct buf *out, const char *qid, const struct queue_env *env,
			 const struct qrec_state *st, const char *content, size_t len);
/* 1 = a valid record of total size *reclen at p; 0 = clean end (zeros, or
 * not enough bytes); -1 = corrupt, with err. */
int qrec_decode(const unsigned char *p, size_t avail, struct qrec *rec, size_t *reclen,
		struct buf *err);
/* Envelope of a message payload; content and clen point into the payload. */
int qrec_decode_message(const struct qrec *rec, struct queue_env *env, struct qrec_state *st,
			struct buf *reason, const unsigned char **content, size_t *clen,
			struct buf *err);
void qrec_put_u32(unsigned char *p, uint32_t v);
uint32_t qrec_get_u32(const unsigned char *p);
void qrec_put_u64(unsigned char *p, uint64_t v);
uint64_t qrec_get_u64(const unsigned char *p);

/* One segment file. Closed segments stay open read-only for queue_load;
 * refs keeps the fd alive while a reader uses it after the segment was
 * removed. */
struct qseg {
	uint64_t seq;
	int fd;
	off_t size;	     /* bytes of valid records (end of the last good one) */
	uint64_t live_bytes; /* record bytes of live messages whose M record is here */
	size_t live_msgs;
	int refs;
	int removed;
	struct qseg *next; /* ordered by seq, oldest first */
};

/* One live message in the index. */
struct qmsg {
	char qid[QREC_QID_MAX + 1];
	struct qseg *seg;
	off_t off;	 /* record start in seg */
	uint32_t reclen; /* whole record */
	enum queue_msg_state state;
	time_t arrival, next_attempt;
	size_t size;
	char *sender, *reason;
	unsigned char *rcpt_state; /* enum queue_rcpt_state per recipient */
	size_t nrcpt, npending;
	int claimed;
	int warned; /* QREC_WARNED seen */
	int list;		    /* QLIST_* */
	struct qmsg *hnext;	    /* hash chain */
	struct qmsg *lprev, *lnext; /* due or wait list */
};

enum { QLIST_NONE, QLIST_DUE, QLIST_WAIT };

struct qlist {
	struct qmsg *head, *tail;
	size_t n;
};

/* A write waiting for the commit thread. */
struct qreq {
	struct buf rec; /* the encoded record(s) */
	int type;	/* QREC_* of the first record */
	char qid[QREC_QID_MAX + 1];
	uint32_t rcpt_index; /* QREC_RCPT_DONE */
	int rcpt_state;
	time_t until;	  /* QREC_DEFER */
	char *reason;	  /* QREC_DEFER */
	struct qmsg *msg; /* QREC_MESSAGE: the index entry to insert */
	off_t off;	  /* where it was written */
	struct qseg *seg;
	/* completion: async (base/cb) or sync (done/status under commit_lock) */
	struct event_base *base;
	queue_commit_cb cb;
	void *arg;
	int sync, done;
	int detached; /* nobody waits: freed by the commit thread; on a
		       * failed write the message is unclaimed until "until" */
	enum queue_status status;
	struct qreq *next;
};

/* The commit path's system calls, replaceable by tests (fault injection). */
struct queue_io {
	ssize_t (*pwritev)(int fd, const struct iovec *iov, int iovcnt, off_t off);
	int (*fdatasync)(int fd);
};

struct queue {
	char *dir, *segdir;
	struct queue_opts opts;
	int lock_fd, segdir_fd;
	struct queue_io io;

	pthread_mutex_t lock; /* index */
	struct qmsg **hash;
	size_t nbuckets, nmsgs;
	struct qlist due, wait;
	time_t wait_min;	    /* no waiting message is due before this */
	struct qseg *segs, *active; /* active: the one appended to, or NULL */
	uint64_t next_seq;
	uint64_t id_counter;
	struct queue_stats stats;

	pthread_mutex_t commit_lock;
	pthread_cond_t commit_cond; /* work arrived / stop */
	pthread_cond_t done_cond;   /* sync requests completed */
	struct qreq *pending, **pending_tail;
	int stopping;
	pthread_t thread;
	int thread_started;
	int no_idle_compact; /* tests: compact only when asked */

	pthread_mutex_t flow_lock; /* queue_flow.c */
	long flow_tokens;
	int flow_delay_ms;
	struct qflow_wait *flow_head, *flow_tail;
};

/* queue_flow.c: take a token (0), or park r until one comes or the
 * delay passes, then qcommit_enqueue() it from its loop (1). */
int qflow_take_or_wait(struct queue *q, struct qreq *r);

/* queue_index.c (callers hold q->lock) */
void qidx_init(struct queue *q);
void qidx_free(struct queue *q);
struct qmsg *qidx_find(struct queue *q, const char *qid);
void qidx_insert(struct queue *q, struct qmsg *m);  /* replaces an entry with the same qid */
void qidx_remove(struct queue *q, struct qmsg *m);  /* unlinks and frees */
void qidx_requeue(struct queue *q, struct qmsg *m); /* put on the right list */
struct qmsg *qmsg_from_env(const char *qid, const struct queue_env *env,
			   const struct qrec_state *st);
/* Apply a journal record; returns 1 if the message is finished (removed). */
int qidx_apply(struct queue *q, struct qmsg *m, int type, uint32_t rcpt_index, int rcpt_state,
	       time_t until, const char *reason);
int qidx_decode_journal(const struct qrec *rec, uint32_t *rcpt_index, int *rcpt_state,
			time_t *until, struct buf *reason);

/* queue_segment.c */
int qseg_scan_all(struct queue *q, struct buf *err);
int qseg_create(struct queue *q, struct buf *err); /* new active segment */
void qseg_abandon(struct queue *q, struct qseg *s, off_t good_end);
void qseg_reclaim(struct queue *q); /* unlink leading dead segments */
void qseg_unref(struct queue *q, struct qseg *s);
void qseg_close_all(struct queue *q);

/* queue_commit.c */
int qcommit_start(struct queue *q, struct buf *err);
void qcommit_stop(struct queue *q);
void qcommit_enqueue(struct queue *q, struct qreq *r);
enum queue_status qcommit_wait(struct queue *q, struct qreq *r); /* sync request */
void qcommit_complete(struct queue *q, struct qreq *r);		 /* r->status to its waiter */
void qreq_free(struct qreq *r);

/* Test hook: replace the commit path's write/fsync (NULL fields restore
 * the real ones). Takes effect for the next batch. */
void queue_test_set_io(struct queue *q, const struct queue_io *io);
/* Test hook: run reclamation and compaction now (the commit thread does
 * it when idle); returns the number of segments removed. */
int queue_test_compact(struct queue *q);

#endif
