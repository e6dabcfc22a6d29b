/* smtpd_milter.h - ternd as a Sendmail milter client (protocol v6, down
 * to v2), hosting milters exactly as Postfix's smtpd+cleanup do.
 *
 * Config (smtpd_milter_conf.c): smtpd_milters, milter_* parameters and
 * per-milter "{ socket, name=value ... }" settings, read once per
 * listener snapshot. Session side (smtpd_milter.c): one connection per
 * milter per SMTP session, opened at the greeting; every event runs the
 * milters in order on the session's event loop with a deadline, the
 * session waiting in SMTPD_ST_CHECK meanwhile (as for policy checks).
 * Content (smtpd_milter_msg.c): the message as a header list + body that
 * each milter sees with the earlier milters' edits applied; edits follow
 * Postfix's cleanup_milter.c semantics (docs/milter-client.md).
 *
 * Pitfall: the callbacks run synchronously when no milter needs to be
 * awaited (return 0) and later otherwise (return 1), like
 * smtpd_check_start(); a dead session is never called back.
 */
#ifndef TERN_SMTPD_MILTER_H
#define TERN_SMTPD_MILTER_H

#include "buf.h"
#include "cfg.h"

struct smtpd_session;
struct smtpd_milter_conf;

/* milter_default_action */
enum milter_action {
	MILTER_ACT_ACCEPT,
	MILTER_ACT_REJECT,
	MILTER_ACT_TEMPFAIL,
	MILTER_ACT_QUARANTINE,
	MILTER_ACT_SHUTDOWN,
};

struct smtpd_milter_conf *smtpd_milter_conf_new(struct cfg *cfg, const char *listener,
						const char *param, struct buf *err);
void smtpd_milter_conf_free(struct smtpd_milter_conf *mc);
/* Number of milters configured (0: milters off). */
size_t smtpd_milter_conf_count(const struct smtpd_milter_conf *mc);

/* rc 0: go on; -1: refuse with reply (a complete SMTP reply, maybe
 * multi-line with CRLF between lines, no final CRLF). */
typedef void (*smtpd_milter_cb)(struct smtpd_session *s, int rc, const char *reply);

/* Any milter attached to this session still listening? */
int smtpd_milter_on(struct smtpd_session *s);
/* Connect the milters and send CONNECT. A 5xx refusal has the greeting
 * text; a 421 means: say it and disconnect. */
int smtpd_milter_connect(struct smtpd_session *s, smtpd_milter_cb cb);
/* HELO/EHLO (after it was accepted): only a 421 refuses it; other
 * refusals stick and answer the next MAIL (Postfix). */
int smtpd_milter_helo(struct smtpd_session *s, smtpd_milter_cb cb);
/* MAIL / RCPT: args is the text after "FROM:" / "TO:" as the client sent it. */
void smtpd_milter_args(struct smtpd_session *s, const char *args);
int smtpd_milter_mail(struct smtpd_session *s, smtpd_milter_cb cb);
int smtpd_milter_rcpt(struct smtpd_session *s, smtpd_milter_cb cb);
/* A RCPT we refused (reply), for the milters that asked (SMFIP_RCPT_REJ);
 * cb gets our refusal back. */
int smtpd_milter_rcpt_rej(struct smtpd_session *s, const char *reply, smtpd_milter_cb cb);
int smtpd_milter_data(struct smtpd_session *s, smtpd_milter_cb cb);
int smtpd_milter_unknown(struct smtpd_session *s, const char *line, smtpd_milter_cb cb);
/* The complete message (our Received: is header number hidden, counting
 * from 0): headers, EOH, body, EOM, then the edits are applied to msg and
 * s->env; quarantine sets s->txn_hold, discard s->txn_discard. */
int smtpd_milter_content(struct smtpd_session *s, struct buf *msg, size_t hidden,
			 smtpd_milter_cb cb);
/* The transaction ended without EOM (RSET, refusal, new MAIL): ABORT. */
void smtpd_milter_abort(struct smtpd_session *s);
/* The session ends: QUIT to every milter, free everything. */
void smtpd_milter_end(struct smtpd_session *s);

/* non_smtpd_milters for a locally submitted message (pickup), on base:
 * env and content (our Received: first) get the milters' edits. 0: no
 * such milters, nothing happens; 1: cb(arg, verdict, reply) is called,
 * maybe before the return. reply: the refusal for BOUNCE and RETRY. */
struct event_base;
struct queue_env;
struct smtpd_conf;
enum milter_local_verdict {
	MILTER_LOCAL_ACCEPT,  /* queue it (env->hold set on QUARANTINE) */
	MILTER_LOCAL_DISCARD, /* drop it (logged) */
	MILTER_LOCAL_BOUNCE,  /* return it to the sender with reply */
	MILTER_LOCAL_RETRY,   /* keep the maildrop file, try again later */
};
typedef void (*smtpd_milter_local_cb)(void *arg, enum milter_local_verdict v, const char *reply);
int smtpd_milter_local(struct event_base *base, struct smtpd_conf *conf, const char *qid,
		       struct queue_env *env, struct buf *content, smtpd_milter_local_cb cb,
		       void *arg);

#endif
