/* pickup.h - locally submitted mail: the sendmail front end writes each
 * message as one file into the maildrop directory (under the queue
 * directory, so submission works while ternd is down); pickup moves them
 * into the queue (queue_submit) and removes the file only after the
 * commit succeeded, so a crash in between can duplicate, never lose.
 * The maildrop file format is documented in docs/queue.md.
 */
#ifndef TERN_PICKUP_H
#define TERN_PICKUP_H

#include "buf.h"
#include "cfg.h"

struct event_base;
struct queue;
struct pickup;

/* Scan maildrop now and whenever it changes (inotify) or every few
 * seconds; queued(arg, qid) is called after each message is durable. */
struct pickup *pickup_start(struct event_base *base, struct queue *q, struct cfg *cfg,
			    const char *maildrop_dir, void (*queued)(void *arg, const char *qid),
			    void *arg, struct buf *err);
void pickup_stop(struct pickup *p);
/* tern reload: the new automatic BCC settings for what is picked up next. */
int pickup_reload(struct pickup *p, struct cfg *cfg, struct buf *err);

#define PICKUP_MAILDROP_DIR "maildrop" /* under queue_directory */
/* First line of every maildrop file (docs/queue.md "Maildrop files"). */
#define PICKUP_MAGIC "TERN-MAILDROP 1"

#endif
