/* smtpd.h - the SMTP server session: the contract between the engine
 * (which accepts connections on its event loops) and the SMTP protocol
 * code (smtpd_*.c), which drives one session per connection and hands
 * finished messages to the queue.
 *
 * Data path: listener (engine) -> smtpd_session_start() -> commands,
 * replies, limits (smtpd_cmd.c) -> access checks at each stage:
 * restriction lists, policy services, relay control, local recipients
 * (smtpd_check.c, smtpd_restr*.c, smtpd_policy.c) -> DATA/BDAT
 * (smtpd_data.c) -> BCC (smtpd_bcc.c), Received: (smtpd_received.c) ->
 * queue_submit() -> "250 2.0.0 Ok: queued as ID" only from the commit
 * callback.
 *
 * A struct smtpd_conf is an immutable, reference-counted snapshot of one
 * listener's effective settings (global value or "<listener>.<param>"
 * override), with its tables opened; ternd builds new ones on reload and
 * sessions keep the snapshot they started with.
 */
#ifndef TERN_SMTPD_H
#define TERN_SMTPD_H

#include "buf.h"
#include "cfg.h"

#include <sys/socket.h>

struct event_base;
struct queue;
struct smtpd_conf;

struct smtpd_conf *smtpd_conf_new(struct cfg *cfg, const char *listener, struct buf *err);
void smtpd_conf_ref(struct smtpd_conf *conf);
void smtpd_conf_unref(struct smtpd_conf *conf);
/* Automatic BCC (always_bcc, sender_bcc_maps, recipient_bcc_maps) for a
 * message about to be queued, as Postfix's cleanup does for all mail:
 * copies added with NOTIFY=NEVER. -1 when a map failed: do not queue now
 * (the copy must not be lost), try again later. */
struct queue_env;
int smtpd_bcc_auto(const struct smtpd_conf *c, struct queue_env *env, const char *qid);
/* The content filter of a message: the FILTER action's (filter, may be
 * NULL), else content_filter; recorded in the envelope (env->filter). */
void smtpd_filter_set(const struct smtpd_conf *c, const char *filter, struct queue_env *env);

/* Callbacks the engine gives the SMTP server (all optional). */
struct smtpd_hooks {
	/* A message became durable: wake the scheduler. */
	void (*queued)(void *arg, const char *qid);
	void *arg;
};

/* Start a session on fd (non-blocking, already accepted) on base's loop.
 * Takes ownership of fd and a reference to conf. */
void smtpd_session_start(struct event_base *base, int fd, const struct sockaddr *peer,
			 socklen_t peerlen, const struct sockaddr *local, socklen_t locallen,
			 struct smtpd_conf *conf, struct queue *q, const struct smtpd_hooks *hooks);

/* Number of live sessions (all loops), for draining on stop and status. */
int smtpd_sessions_active(void);
/* Ask every session to finish: idle ones get "421 4.3.2 Service shutting
 * down" and close; busy ones close after their current transaction. */
void smtpd_sessions_drain(void);

#endif
