/* queue.h - ternd's durable message queue: the contract between the SMTP
 * server (producer), the scheduler/delivery agents (consumers) and the
 * "tern queue" admin commands. The design is in docs/queue.md.
 *
 * A message is durable when queue_submit()'s callback reports QUEUE_OK:
 * its record and commit marker were written and fdatasync() returned
 * success; only then may the SMTP server answer 250. Commits are grouped:
 * everything submitted while a flush is in progress goes out in the next
 * single write + fdatasync (group commit). A failed fsync fails every
 * message of that batch (QUEUE_EIO -> "451 4.3.0") and the segment is
 * abandoned: the same data is never fsynced again. Too little free space
 * gives QUEUE_ENOSPC ("452 4.3.1") before anything is written.
 *
 * Storage: append-only segment files of typed, length-prefixed, CRC32C
 * checked records; message records carry envelope + content, journal
 * records carry state changes (recipient done, deferred until T, held,
 * released, deleted). An in-memory index (rebuilt by scanning at open)
 * maps queue IDs to records; torn tails are detected and dropped;
 * segments whose messages are all done are removed, and compaction
 * copies live messages forward.
 *
 * Threads: queue_submit() and the journal calls may be called from any
 * thread; callbacks run on the caller's event_base (thread-safe libevent).
 * Exclusive access: one process opens a queue read-write (a lock file);
 * "tern queue" uses queue_open() with QUEUE_OPEN_RDONLY while ternd runs
 * or read-write when it does not.
 */
#ifndef TERN_QUEUE_H
#define TERN_QUEUE_H

#include "buf.h"

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct event_base;
struct queue;

/* Queue IDs are shaped like Postfix's short IDs: 10-16 upper-case hex
 * characters (e.g. "B27928276DA1"), unique for the queue's lifetime. */
#define QUEUE_ID_SIZE 24

enum queue_status {
	QUEUE_OK = 0,
	QUEUE_EIO = -1,	   /* write/fsync failed: 451 4.3.0 */
	QUEUE_ENOSPC = -2, /* below queue_minfree: 452 4.3.1 */
	QUEUE_ENOENT = -3, /* no such queue ID */
	QUEUE_ECORRUPT = -4,
	QUEUE_EBUSY = -5,  /* locked by another process */
	QUEUE_ESTATE = -6, /* not allowed in this state (e.g. release of a non-held msg) */
};

/* DSN NOTIFY bits (RFC 3461) */
#define QUEUE_NOTIFY_NEVER 0x1
#define QUEUE_NOTIFY_SUCCESS 0x2
#define QUEUE_NOTIFY_FAILURE 0x4
#define QUEUE_NOTIFY_DELAY 0x8

enum queue_rcpt_state {
	QUEUE_RCPT_PENDING = 0,
	QUEUE_RCPT_SENT,    /* delivered: done */
	QUEUE_RCPT_BOUNCED, /* permanent failure: done (bounce generated) */
};

struct queue_rcpt {
	char *addr;  /* canonical "local@domain" (unquoted), as addr_format_plain */
	char *orcpt; /* ORCPT=, raw xtext, or NULL */
	int notify;  /* QUEUE_NOTIFY_* bits, 0 = not given */
	enum queue_rcpt_state state;
};

/* The envelope: everything but the content. Strings are owned by it. */
struct queue_env {
	char *sender; /* "" for the null sender */
	struct queue_rcpt *rcpt;
	size_t nrcpt;
	char *ret;   /* DSN RET= (FULL|HDRS) or NULL */
	char *envid; /* DSN ENVID= or NULL */
	int body_8bit;
	int smtputf8;
	time_t arrival;
	long arrival_usec; /* for delay=/delays= with Postfix's precision */
	char *client_name, *client_addr, *helo, *protocol; /* for logs, Received:, bounces */
	char *sasl_username;				   /* NULL unless authenticated */
	size_t size;					   /* content bytes */
	int delay_warned; /* queue_load(): a delay warning was sent already */
	int hold;	  /* queue_submit(): commit it straight into the hold queue */
	char *filter;	  /* content filter "transport:destination" (FILTER), or NULL */
};

void queue_env_init(struct queue_env *env);
void queue_env_free(struct queue_env *env);
/* Append a recipient (strings copied). */
void queue_env_add_rcpt(struct queue_env *env, const char *addr, const char *orcpt, int notify);

/* What the index knows of one message (for schedulers and "tern queue"). */
enum queue_msg_state { QUEUE_STATE_ACTIVE, QUEUE_STATE_DEFERRED, QUEUE_STATE_HOLD };

struct queue_info {
	const char *qid;
	enum queue_msg_state state;
	time_t arrival;
	time_t next_attempt; /* 0 = due now */
	size_t size;
	const char *sender;
	size_t nrcpt, npending;
	const char *reason; /* last defer reason, or NULL */
};

struct queue_opts {
	int rdonly;		/* QUEUE_OPEN_RDONLY: never write, no lock */
	int commit_delay_ms;	/* queue_commit_delay: max wait to batch */
	uint64_t minfree_bytes; /* queue_minfree: refuse below this */
	size_t segment_size;	/* roll to a new segment above this */
};
#define QUEUE_OPEN_RDONLY 1

int queue_open(const char *dir, const struct queue_opts *opts, struct queue **q, struct buf *err);
void queue_close(struct queue *q); /* waits for in-flight commits */

/* A fresh, unique queue ID (assigned at the first accepted RCPT, as Postfix). */
void queue_id_new(struct queue *q, char qid[QUEUE_ID_SIZE]);

/* Make a message durable. content is the message exactly as it will be
 * delivered (Received: first, LF line ends, dot-unstuffed). cb runs once,
 * on base's loop, with QUEUE_OK only after fdatasync succeeded. */
typedef void (*queue_commit_cb)(void *arg, enum queue_status status, const char *qid);
void queue_submit(struct queue *q, const char *qid, const struct queue_env *env,
		  const char *content, size_t len, struct event_base *base, queue_commit_cb cb,
		  void *arg);
/* The same, never paced by flow control: for notices the scheduler's own
 * workers make (bounces), which must not wait for tokens they return. */
void queue_submit_unpaced(struct queue *q, const char *qid, const struct queue_env *env,
			  const char *content, size_t len, struct event_base *base,
			  queue_commit_cb cb, void *arg);

/* Flow control (queue_flow.c, Postfix's in_flow_delay): queue_submit()
 * takes a token per message; without one it waits on base's loop until
 * one is given back or delay_ms passed, then commits anyway. The
 * scheduler gives a token back per message it is done with (put) and
 * fills up to QUEUE_FLOW_TOKENS when it is idle (fill). delay_ms 0: off. */
#define QUEUE_FLOW_TOKENS 500
void queue_flow_set(struct queue *q, int delay_ms);
void queue_flow_put(struct queue *q, int n);
void queue_flow_fill(struct queue *q);

/* Journal: each returns after its record is durable (synchronously; call
 * from worker threads or the CLI, not from an event loop callback). */
enum queue_status queue_rcpt_done(struct queue *q, const char *qid, size_t rcpt_index,
				  enum queue_rcpt_state state);
/* The same, without waiting for the disk: the record goes out with the
 * next group commit. For the delivery agents' "done" marks, where a lost
 * record only means a duplicate delivery after a crash (at-least-once,
 * as Postfix, which does not fsync a queue file's removal either), and
 * waiting would put an fdatasync on every delivery's critical path. If
 * the write fails, the message is unclaimed and retried at "retry". */
enum queue_status queue_rcpt_done_nowait(struct queue *q, const char *qid, size_t rcpt_index,
					 enum queue_rcpt_state state, time_t retry);
enum queue_status queue_defer(struct queue *q, const char *qid, time_t until, const char *reason);
enum queue_status queue_hold(struct queue *q, const char *qid);
/* Remember that a delay warning went out (survives restarts and compaction). */
enum queue_status queue_mark_warned(struct queue *q, const char *qid);
enum queue_status queue_release(struct queue *q, const char *qid);
enum queue_status queue_requeue(struct queue *q, const char *qid); /* due now */
enum queue_status queue_delete(struct queue *q, const char *qid);

/* Index queries. queue_foreach() visits every live message (any state);
 * stop by returning non-zero. Info pointers are valid during the call. */
typedef int (*queue_visit_fn)(void *arg, const struct queue_info *info);
int queue_foreach(struct queue *q, queue_visit_fn fn, void *arg);
/* The next message due at or before now and not held, not already
 * claimed; claims it (so two delivery workers never take the same one)
 * until queue_unclaim() or a journal call that finishes/defers it. */
int queue_claim_due(struct queue *q, time_t now, char qid[QUEUE_ID_SIZE]);
void queue_unclaim(struct queue *q, const char *qid);
/* Release the claim and keep the message back until "until", in memory
 * only: for when the journal itself cannot be written (a deferral that
 * cannot be recorded must not turn into an immediate retry loop). */
void queue_unclaim_until(struct queue *q, const char *qid, time_t until);
/* Earliest next_attempt of any non-held message, or 0 if none. */
time_t queue_next_wakeup(struct queue *q);
/* Read one message back (envelope with recipient states, and content). */
enum queue_status queue_load(struct queue *q, const char *qid, struct queue_env *env,
			     struct buf *content, struct buf *err);
/* Counts for logs and "tern status". */
size_t queue_count(struct queue *q);

/* Commit-path counters since queue_open (for tests, "tern status", bench). */
struct queue_stats {
	uint64_t batches;   /* group commits attempted */
	uint64_t fsyncs;    /* fdatasync calls on segment files */
	uint64_t records;   /* records written */
	uint64_t bytes;	    /* bytes written */
	uint64_t failures;  /* batches failed (EIO/ENOSPC) */
	uint64_t segments;  /* segment files currently present */
	uint64_t compacted; /* messages copied forward by compaction */
	uint64_t flow_waits; /* submissions that waited for a flow token */
};
void queue_stats(struct queue *q, struct queue_stats *st);

const char *queue_strerror(enum queue_status st);

#endif
