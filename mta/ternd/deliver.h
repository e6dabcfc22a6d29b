/* deliver.h - delivery transports (local, virtual, discard, error,
 * retry; smtp/lmtp later) as called by the scheduler's workers.
 *
 * Delivery into system users' mailboxes needs their uid: ternd forks a
 * small privileged helper before dropping root (deliver_helper_spawn());
 * it performs only "deliver this file into user U's Maildir/mbox" as
 * that user, requested over a socketpair. Without root (make run, tests)
 * no helper is spawned and local users are delivered as mail_owner.
 */
#ifndef TERN_DELIVER_H
#define TERN_DELIVER_H

#include "buf.h"
#include "cfg.h"

/* Call as root before dropping privileges; returns 0 (and does nothing)
 * when not root. */
int deliver_helper_spawn(struct cfg *cfg, struct buf *err);

#endif
