/* smtpd_explain.c - "tern explain": the access checks of one imagined SMTP
 * session, run by the same engine as ternd's (smtpd_check.c and
 * smtpd_restr*.c: real tables, real policy services, real DNS) on a
 * session without a socket, printing every list, restriction, lookup,
 * DNS answer and policy exchange, and the replies a client would get.
 * Nothing is queued and nothing is logged (the would-be log lines are
 * shown). In the spirit of "exim -bh".
 * Pitfall: policy services really receive the requests (postgrey
 * records the triplet, rate limiters count it).
 */
#include "smtpd_explain.h"
#include "smtpd_int.h"

#include "log.h"

#include <event2/event.h>

#include <string.h>

struct explain_wait {
	int done, rc;
	struct buf reply;
};

static void explain_cb(struct smtpd_session *s, int rc, const char *reply)
{
	struct explain_wait *w = s->hooks.arg;

	w->done = 1;
	w->rc = rc;
	buf_set(&w->reply, reply);
}

/* Run one stage to its end (the loop turns while DNS or policy answers
 * are awaited); prints the trace and the reply. 0 accepted, -1 refused. */
static int explain_stage(struct smtpd_session *s, enum smtpd_stage stage, const char *title,
			 const char *raw, const char *canon, const char *ok_reply, FILE *out)
{
	struct explain_wait *w = s->hooks.arg;

	fprintf(out, "\n== %s\n", title);
	w->done = 0;
	buf_reset(s->check_trace);
	smtpd_check_start(s, stage, raw, canon, explain_cb);
	while (!w->done)
		event_base_loop(s->base, EVLOOP_ONCE);
	s->state = SMTPD_ST_CMD;
	fputs(s->check_trace->len ? buf_str(s->check_trace) : "(no restrictions apply)\n", out);
	fprintf(out, "reply: %s\n", w->rc < 0 ? buf_str(&w->reply) : ok_reply);
	return w->rc;
}

static void explain_address(struct smtpd_session *s, const char *text, struct buf *raw,
			    struct buf *canon)
{
	struct addr a;
	struct buf err = BUF_INIT, arg = BUF_INIT;

	addr_init(&a);
	buf_printf(&arg, "<%s>", text);
	buf_set(raw, text);
	buf_reset(canon);
	if (addr_parse_path(&a, buf_str(&arg), ADDR_PARSE_ALLOW_BARE, NULL, &err) == ADDR_OK)
		smtpd_check_canon(s->conf, &a, canon);
	else
		buf_set(canon, text);
	addr_free(&a);
	buf_free(&err);
	buf_free(&arg);
}

int smtpd_explain(struct smtpd_conf *conf, const struct smtpd_explain_req *req, FILE *out)
{
	struct smtpd_session *s = xcalloc(1, sizeof(*s));
	struct explain_wait w = {0, 0, BUF_INIT};
	struct buf trace = BUF_INIT, raw = BUF_INIT, canon = BUF_INIT, t = BUF_INIT;
	int refused = 0, delay = smtpd_check_delay_reject(conf);

	s->base = event_base_new();
	s->conf = conf;
	s->hooks.arg = &w;
	s->check_trace = &trace;
	s->state = SMTPD_ST_CMD;
	queue_env_init(&s->env);
	buf_init(&s->dip.reason);
	buf_init(&s->txn_bcc);
	buf_init(&s->txn_prepend);
	smtpd_client_set(&s->client, req->name ? req->name : "unknown", req->addr, "0",
			 conf->port_logging);
	free(s->client.rev_name);
	s->client.rev_name = xstrdup(req->rev_name ? req->rev_name
				     : req->name   ? req->name
						   : "unknown");
	s->client.rev_status = strcmp(s->client.rev_name, "unknown") == 0 ? 5 : 0;
	s->server_addr = xstrdup("");
	s->server_port = xstrdup("25");
	s->esmtp = 1;
	s->check_cmd = SMTPD_C_EHLO;

	fprintf(out, "client %s, reverse name %s, listener %s\n", s->client.namaddr,
		s->client.rev_name, conf->listener);
	if (delay)
		fprintf(out, "smtpd_delay_reject = yes: client, HELO and sender restrictions are "
			     "evaluated at RCPT TO\n");
	if (smtpd_check_has(conf, SMTPD_STAGE_CONNECT))
		refused |= explain_stage(s, SMTPD_STAGE_CONNECT, "CONNECT", NULL, NULL,
					 "220 (greeting)", out);
	if (req->helo) {
		buf_printf(&t, "250 %s", conf->myhostname);
		if (smtpd_check_has(conf, SMTPD_STAGE_HELO))
			refused |= explain_stage(s, SMTPD_STAGE_HELO, "EHLO", req->helo, NULL,
						 buf_str(&t), out);
		s->helo = xstrdup(req->helo);
	}
	explain_address(s, req->sender, &raw, &canon);
	if (smtpd_check_has(conf, SMTPD_STAGE_MAIL))
		refused |= explain_stage(s, SMTPD_STAGE_MAIL, "MAIL FROM", buf_str(&raw),
					 buf_str(&canon), "250 2.1.0 Ok", out);
	s->sender_raw = buf_detach(&raw);
	s->env.sender = buf_detach(&canon);
	s->in_mail = 1;
	s->txn_seq = 1;
	for (size_t i = 0; i < req->nrcpt; i++) {
		buf_reset(&t);
		buf_printf(&t, "RCPT TO:<%s>", req->rcpt[i]);
		explain_address(s, req->rcpt[i], &raw, &canon);
		s->check_cmd = SMTPD_C_RCPT;
		if (explain_stage(s, SMTPD_STAGE_RCPT, buf_str(&t), buf_str(&raw), buf_str(&canon),
				  "250 2.1.5 Ok", out) == 0) {
			if (s->first_rcpt == NULL)
				s->first_rcpt = xstrdup(buf_str(&raw));
			queue_env_add_rcpt(&s->env, buf_str(&canon), NULL, 0);
		} else {
			refused = -1;
		}
	}
	if (s->env.nrcpt > 0 && smtpd_check_has(conf, SMTPD_STAGE_DATA))
		refused |= explain_stage(s, SMTPD_STAGE_DATA, "DATA", NULL, NULL, "354 ...", out);
	if (s->txn_hold || s->txn_discard || s->txn_redirect || s->txn_bcc.len ||
	    s->txn_prepend.len) {
		fprintf(out, "\n== effects on the message\n");
		if (s->txn_hold)
			fprintf(out, "HOLD: it would be put in the hold queue\n");
		if (s->txn_discard)
			fprintf(out, "DISCARD: it would be accepted and dropped\n");
		if (s->txn_redirect)
			fprintf(out, "REDIRECT: all recipients replaced by %s\n", s->txn_redirect);
		if (s->txn_bcc.len)
			fprintf(out, "BCC (NOTIFY=NEVER):\n%s", buf_str(&s->txn_bcc));
		if (s->txn_prepend.len)
			fprintf(out, "PREPEND:\n%s", buf_str(&s->txn_prepend));
	}
	fprintf(out, "\nresult: %s\n",
		s->env.nrcpt == 0 ? "no recipient accepted"
		: refused	  ? "some commands refused"
				  : "accepted");
	buf_free(&w.reply);
	buf_free(&trace);
	buf_free(&t);
	buf_free(&raw);
	buf_free(&canon);
	smtpd_txn_reset(s);
	smtpd_data_free(s);
	queue_env_free(&s->env);
	smtpd_client_free(&s->client);
	buf_free(&s->dip.reason);
	buf_free(&s->txn_bcc);
	buf_free(&s->txn_prepend);
	free(s->helo);
	free(s->server_addr);
	free(s->server_port);
	event_base_free(s->base);
	free(s);
	return refused ? 1 : 0;
}
