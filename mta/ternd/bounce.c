/* bounce.c - non-delivery reports. Transports record each permanent
 * failure (bounce_add, via deliver_report); after the message's attempt
 * the scheduler calls bounce_flush(), which queues one RFC 3464
 * multipart/report to the sender with the null sender (postfix.md §4.5:
 * Postfix's layout, headers of the original only) and logs "ID: sender
 * non-delivery notification: NEWID". Mail from <> never gets a bounce
 * (RFC 5321 §4.5.5), which is what stops bounce loops.
 */
#include "deliver.h"
#include "maildate.h"

#include "log.h"
#include "queue.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void bounce_add(struct deliver_msg *m, const char *addr, const char *orig, const char *dsn,
		const char *text)
{
	/* One record per failed address: "addr\torig\tdsn\ttext\n" (tabs and
	 * newlines cannot occur in canonical addresses or our log texts). */
	buf_printf(&m->failed, "%s\t%s\t%s\t%s\n", addr, orig, dsn, text);
	m->nfailed++;
}

/* bounce_headers_only - the original's header section (up to the first
 * empty line): enough for the sender to identify the message. */
static size_t bounce_headers_len(const char *content, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++)
		if (content[i] == '\n' && content[i + 1] == '\n')
			return i + 1;
	return len;
}

/* bounce_each - call fn for each recorded failure (fields split). */
static void bounce_text(const struct deliver_msg *m, struct buf *human, struct buf *report)
{
	char *copy = xstrdup(buf_str(&m->failed)), *save = NULL;

	for (char *ln = strtok_r(copy, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
		char *f[4] = {ln, NULL, NULL, NULL};
		for (int i = 1; i < 4 && f[i - 1]; i++)
			if ((f[i] = strchr(f[i - 1], '\t')) != NULL)
				*f[i]++ = 0;
		if (f[3] == NULL)
			continue;
		buf_printf(human, "<%s>: %s\n\n", f[0], f[3]);
		buf_printf(report, "\nFinal-Recipient: rfc822; %s\n", f[0]);
		buf_printf(report, "Original-Recipient: rfc822; %s\n", f[1]);
		buf_printf(report, "Action: failed\nStatus: %s\n", f[2]);
		buf_printf(report, "Diagnostic-Code: X-Postfix; %s\n", f[3]);
	}
	free(copy);
}

static void bounce_compose(const struct deliver_msg *m, struct buf *out)
{
	const char *host = m->conf->myhostname;
	struct buf boundary = BUF_INIT, human = BUF_INIT, report = BUF_INIT;
	time_t now = time(NULL);

	buf_printf(&boundary, "%s.%lld/%s", m->qid, (long long)now, host);
	bounce_text(m, &human, &report);
	buf_puts(out, "Date: ");
	mail_date(now, out);
	buf_printf(out, "\nFrom: Mail Delivery System <MAILER-DAEMON@%s>\n", host);
	buf_printf(out, "Subject: Undelivered Mail Returned to Sender\nTo: %s\n", m->env->sender);
	buf_puts(out, "Auto-Submitted: auto-replied\nMIME-Version: 1.0\n");
	buf_printf(out,
		   "Content-Type: multipart/report; report-type=delivery-status;\n"
		   "\tboundary=\"%s\"\nContent-Transfer-Encoding: 7bit\n\n",
		   buf_str(&boundary));
	buf_printf(out, "This is a MIME-encapsulated message.\n\n--%s\n", buf_str(&boundary));
	buf_puts(
	    out,
	    "Content-Description: Notification\nContent-Type: text/plain; charset=us-ascii\n\n");
	buf_printf(out,
		   "This is the mail system at host %s.\n\n"
		   "I'm sorry to have to inform you that your message could not\n"
		   "be delivered to one or more recipients. It's attached below.\n\n"
		   "For further assistance, please send mail to postmaster.\n\n"
		   "If you do so, please include this problem report. You can\n"
		   "delete your own text from the attached returned message.\n\n"
		   "                   The mail system\n\n%s",
		   host, buf_str(&human));
	buf_printf(out,
		   "--%s\nContent-Description: Delivery report\n"
		   "Content-Type: message/delivery-status\n\n",
		   buf_str(&boundary));
	buf_printf(out,
		   "Reporting-MTA: dns; %s\nX-Postfix-Queue-ID: %s\nX-Postfix-Sender: rfc822; %s\n",
		   host, m->qid, m->env->sender);
	buf_puts(out, "Arrival-Date: ");
	mail_date(m->env->arrival, out);
	buf_printf(out,
		   "\n%s\n--%s\nContent-Description: Undelivered Message Headers\n"
		   "Content-Type: text/rfc822-headers\n\n",
		   buf_str(&report), buf_str(&boundary));
	buf_append(out, m->content, bounce_headers_len(m->content, m->len));
	buf_printf(out, "\n--%s--\n", buf_str(&boundary));
	buf_free(&boundary);
	buf_free(&human);
	buf_free(&report);
}

struct bounce_wait {
	struct event_base *base;
	enum queue_status status;
	int done;
};

static void bounce_committed(void *arg, enum queue_status status, const char *qid)
{
	struct bounce_wait *w = arg;

	w->status = status;
	w->done = 1;
	event_base_loopbreak(w->base);
}

/* bounce_submit - queue_submit() from a worker thread: its callback runs
 * on an event_base, so we bring a private one and run it until done. */
static enum queue_status bounce_submit(struct queue *q, const char *qid,
				       const struct queue_env *env, const struct buf *msg)
{
	struct bounce_wait w = {event_base_new(), QUEUE_EIO, 0};

	if (w.base == NULL)
		return QUEUE_EIO;
	queue_submit(q, qid, env, msg->data, msg->len, w.base, bounce_committed, &w);
	while (!w.done)
		if (event_base_loop(w.base, EVLOOP_ONCE) < 0)
			break;
	event_base_free(w.base);
	return w.done ? w.status : QUEUE_EIO;
}

int bounce_flush(struct deliver_msg *m)
{
	struct queue_env env;
	struct buf msg = BUF_INIT;
	char qid[QUEUE_ID_SIZE];
	enum queue_status st = QUEUE_OK;

	if (m->nfailed == 0 || *m->env->sender == 0)
		goto out;
	queue_env_init(&env);
	env.sender = xstrdup("");
	env.arrival = time(NULL);
	env.protocol = xstrdup("local");
	queue_env_add_rcpt(&env, m->env->sender, NULL, QUEUE_NOTIFY_NEVER);
	bounce_compose(m, &msg);
	env.size = msg.len;
	queue_id_new(m->q, qid);
	st = bounce_submit(m->q, qid, &env, &msg);
	if (st == QUEUE_OK) {
		const char *prev = log_swap_service("bounce");
		msg_qid(m->qid, "sender non-delivery notification: %s", qid);
		log_thread_service(prev);
	} else {
		msg_warn("%s: cannot queue non-delivery notification: %s", m->qid,
			 queue_strerror(st));
	}
	queue_env_free(&env);
out:
	buf_free(&msg);
	buf_reset(&m->failed);
	m->nfailed = 0;
	return st == QUEUE_OK ? 0 : -1;
}
