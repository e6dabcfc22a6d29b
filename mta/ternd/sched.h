/* sched.h - the scheduler and delivery workers: take due messages from
 * the queue, route each recipient to a transport, deliver, and journal
 * the outcome (sent, deferred with backoff, bounced).
 *
 * Data path: queue -> sched (queue_claim_due, backoff, pause) ->
 * transport (deliver_*.c: local, virtual, discard, error, retry, and
 * later smtp/lmtp) -> queue_rcpt_done()/queue_defer() -> "to=<...>,
 * relay=..., delay=..., delays=a/b/c/d, dsn=..., status=..." log lines.
 *
 * Delivery runs on worker threads (blocking file I/O and fsync belong
 * there, never on an event loop). "tern delivery pause" is persistent: a
 * flag file in the queue directory, so a paused queue stays paused across
 * restarts (seed 002's freeze).
 */
#ifndef TERN_SCHED_H
#define TERN_SCHED_H

#include "buf.h"
#include "cfg.h"

struct queue;
struct sched;

struct sched *sched_start(struct queue *q, struct cfg *cfg, const char *queue_dir, int nworkers,
			  struct buf *err);
/* A new message or a changed state: look for due work now (thread-safe). */
void sched_wakeup(struct sched *s);
/* Apply a reloaded configuration to future deliveries. */
int sched_reload(struct sched *s, struct cfg *cfg, struct buf *err);
/* Persistent pause/resume (writes/removes the flag file). */
int sched_pause(struct sched *s, int paused, struct buf *err);
int sched_paused(struct sched *s);
/* "tern flush": every deferred message due now. */
void sched_flush(struct sched *s);
/* Stop: finish deliveries in progress, then join the workers. */
void sched_stop(struct sched *s);

/* The flag file name under the queue directory; "tern delivery pause"
 * writes it directly when ternd is not running. */
#define SCHED_PAUSE_FILE "delivery.paused"

#endif
