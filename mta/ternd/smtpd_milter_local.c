/* smtpd_milter_local.c - non_smtpd_milters: locally submitted mail
 * (sendmail -> maildrop -> pickup) shown to the milters as Postfix's
 * cleanup shows it: an emulated SMTP session from localhost [127.0.0.1]
 * (HELO localhost, ESMTP), MAIL, one RCPT per recipient, DATA, the
 * message without our Received:, then the edits are applied.
 *
 * The milter engine (smtpd_milter.c) works on an SMTP session; here it
 * gets a session of its own with no socket (local_submit), driven step
 * by step on pickup's event loop. Each step runs synchronously when no
 * milter has to be awaited, so the driver loops instead of recursing
 * (ten thousand recipients must not mean ten thousand stack frames).
 *
 * Verdicts, as Postfix (postsuper -r mail is never filtered again, and a
 * non-SMTP milter must not refuse a recipient: that is a configuration
 * error and the mail stays queued):
 *   5xx at any stage but RCPT -> bounce to the sender with the reply;
 *   4xx, 421, a RCPT refusal  -> retry later (the maildrop file stays);
 *   DISCARD                   -> dropped, logged as milter-discard;
 *   QUARANTINE                -> queued on hold.
 */
#include "smtpd_milter_int.h"

#include "log.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum local_step { LS_CONNECT, LS_HELO, LS_MAIL, LS_RCPT, LS_DATA, LS_CONTENT, LS_DONE };

struct milter_local {
	struct smtpd_session s; /* the emulated session (no socket) */
	enum local_step step;
	size_t rcpt;
	int starting; /* inside an op's start: its callback runs synchronously */
	int result_ready;
	int rc;
	char *reply;
	struct queue_env *env; /* the caller's, moved into s.env meanwhile */
	struct buf *content;
	smtpd_milter_local_cb cb;
	void *arg;
};

static void local_run(struct milter_local *l);

static void local_resume(evutil_socket_t fd, short what, void *arg)
{
	local_run(arg);
}

static void local_op_done(struct smtpd_session *s, int rc, const char *reply)
{
	struct milter_local *l = (struct milter_local *)s; /* s is l's first member */

	l->rc = rc;
	free(l->reply);
	l->reply = xstrdup(reply ? reply : "");
	l->result_ready = 1;
	if (!l->starting) /* later, off the milter engine's stack */
		event_base_once(l->s.base, -1, EV_TIMEOUT, local_resume, l, &(struct timeval){0, 0});
}

/* Start the op of l->step; 1 when its result is already there. */
static int local_start(struct milter_local *l)
{
	struct smtpd_session *s = &l->s;
	struct buf args = BUF_INIT;

	l->result_ready = 0;
	l->starting = 1;
	switch (l->step) {
	case LS_CONNECT:
		smtpd_milter_connect(s, local_op_done);
		break;
	case LS_HELO:
		smtpd_milter_helo(s, local_op_done);
		break;
	case LS_MAIL:
		buf_printf(&args, "<%s>", s->env.sender ? s->env.sender : "");
		smtpd_milter_args(s, buf_str(&args));
		smtpd_milter_mail(s, local_op_done);
		break;
	case LS_RCPT:
		free(s->pend_raw);
		s->pend_raw = xstrdup(s->env.rcpt[l->rcpt].addr);
		free(s->pend_canon);
		s->pend_canon = xstrdup(s->env.rcpt[l->rcpt].addr);
		buf_printf(&args, "<%s>", s->pend_raw);
		smtpd_milter_args(s, buf_str(&args));
		smtpd_milter_rcpt(s, local_op_done);
		break;
	case LS_DATA:
		smtpd_milter_data(s, local_op_done);
		break;
	case LS_CONTENT:
		smtpd_milter_content(s, l->content, 0, local_op_done); /* header 0: our Received: */
		break;
	case LS_DONE:
		break;
	}
	l->starting = 0;
	buf_free(&args);
	return l->result_ready;
}

static void local_finish(struct milter_local *l, enum milter_local_verdict v, const char *reply)
{
	struct smtpd_session *s = &l->s;
	smtpd_milter_local_cb cb = l->cb;
	void *arg = l->arg;
	char *text = xstrdup(reply ? reply : "");

	smtpd_milter_end(s); /* QUIT */
	if (v == MILTER_LOCAL_ACCEPT)
		s->env.hold |= s->txn_hold;
	*l->env = s->env; /* edits included; ownership goes back */
	free(s->helo);
	free(s->sender_raw);
	free(s->pend_raw);
	free(s->pend_canon);
	free(s->first_rcpt);
	smtpd_client_free(&s->client);
	smtpd_conf_unref(s->conf);
	free(l->reply);
	free(l);
	cb(arg, v, text);
	free(text);
}

/* A refusal: what it means for mail that has no SMTP client to answer. */
static void local_refused(struct milter_local *l)
{
	const char *r = l->reply;

	if (l->step == LS_RCPT) {
		msg_warn("%s: non_smtpd_milters: a milter refused recipient <%s> (%s): a milter "
			 "must not reject recipients of local mail; the message stays queued",
			 l->s.qid, l->s.pend_raw, r);
		local_finish(l, MILTER_LOCAL_RETRY, r);
	} else if (r[0] == '5') {
		local_finish(l, MILTER_LOCAL_BOUNCE, r);
	} else {
		local_finish(l, MILTER_LOCAL_RETRY, r);
	}
}

static void local_run(struct milter_local *l)
{
	for (;;) {
		if (l->result_ready) { /* the op of l->step ended */
			l->result_ready = 0;
			if (l->rc < 0) {
				local_refused(l);
				return;
			}
			if (l->step == LS_CONTENT) {
				local_finish(l, l->s.txn_discard ? MILTER_LOCAL_DISCARD
								 : MILTER_LOCAL_ACCEPT,
					     "");
				return;
			}
			if (l->step == LS_RCPT && ++l->rcpt < l->s.env.nrcpt)
				; /* the next recipient */
			else
				l->step++;
			if (l->step == LS_MAIL)
				l->s.in_mail = 0;
		}
		if (l->step == LS_RCPT)
			l->s.in_mail = 1;
		/* Every milter accepted the connection or the message: done. */
		if (l->step != LS_CONNECT && !smtpd_milter_on(&l->s)) {
			local_finish(l, MILTER_LOCAL_ACCEPT, "");
			return;
		}
		if (l->step == LS_RCPT && l->s.env.nrcpt == 0)
			l->step = LS_DATA;
		if (!local_start(l))
			return; /* local_op_done() runs us again */
	}
}

int smtpd_milter_local(struct event_base *base, struct smtpd_conf *conf, const char *qid,
		       struct queue_env *env, struct buf *content, smtpd_milter_local_cb cb,
		       void *arg)
{
	struct milter_local *l;

	if (smtpd_milter_conf_count(conf->local_milters) == 0)
		return 0;
	l = xcalloc(1, sizeof(*l));
	l->s.base = base;
	l->s.conf = conf;
	smtpd_conf_ref(conf);
	l->s.local_submit = 1;
	l->s.state = SMTPD_ST_CMD;
	/* Postfix's cleanup: client localhost[127.0.0.1], HELO localhost, ESMTP */
	smtpd_client_set(&l->s.client, "localhost", "127.0.0.1", "0", 0);
	l->s.helo = xstrdup("localhost");
	l->s.esmtp = 1;
	snprintf(l->s.qid, sizeof(l->s.qid), "%s", qid);
	l->s.have_qid = 1;
	l->s.env = *env; /* moved: given back by local_finish() */
	l->s.sender_raw = xstrdup(env->sender ? env->sender : "");
	if (env->nrcpt > 0)
		l->s.first_rcpt = xstrdup(env->rcpt[0].addr);
	l->env = env;
	l->content = content;
	l->cb = cb;
	l->arg = arg;
	l->step = LS_CONNECT;
	local_run(l);
	return 1;
}
