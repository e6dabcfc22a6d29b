/* bounce.c - delivery status notifications (RFC 3464 reports, RFC 3461
 * NOTIFY/RET/ENVID/ORCPT). Transports record each recipient's outcome
 * through deliver_report() -> bounce_note(), which keeps only what the
 * recipient's NOTIFY asks for; after the message's attempt the scheduler
 * calls bounce_flush(), which queues one multipart/report per kind
 * (failed, delayed, delivered/relayed) and logs Postfix's lines ("ID:
 * sender non-delivery notification: NEWID", "... delay notification",
 * "... delivery status notification", "postmaster non-delivery
 * notification"). Layout as Postfix's bounce(8) (postfix.md §4.5).
 *
 * Loops: reports go out from <>; a failure of mail from <> is reported
 * to 2bounce_notice_recipient from double_bounce_sender, and a failure
 * of mail from double_bounce_sender is only logged.
 */
#include "deliver.h"
#include "maildate.h"

#include "log.h"
#include "queue.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

enum bounce_kind { BK_FAILED, BK_DELAYED, BK_SUCCESS, BK_COUNT };

static enum bounce_kind bounce_kind_of(const char *action)
{
	return strcmp(action, "failed") == 0	? BK_FAILED
	       : strcmp(action, "delayed") == 0 ? BK_DELAYED
						: BK_SUCCESS;
}

/* NOTIFY= decides (RFC 3461 §4.1): absent means FAILURE (and DELAY at
 * the MTA's discretion: Postfix sends delay warnings then). */
static int bounce_wanted(const struct queue_rcpt *qr, enum bounce_kind k)
{
	int n = qr ? qr->notify : 0;

	if (n & QUEUE_NOTIFY_NEVER)
		return 0;
	if (n == 0)
		return k != BK_SUCCESS;
	return k == BK_FAILED	 ? (n & QUEUE_NOTIFY_FAILURE) != 0
	       : k == BK_DELAYED ? (n & QUEUE_NOTIFY_DELAY) != 0
				 : (n & QUEUE_NOTIFY_SUCCESS) != 0;
}

/* Tabs and newlines cannot occur in canonical addresses; texts are made
 * safe here. */
static void bounce_field(struct buf *out, const char *s)
{
	for (; s && *s; s++)
		buf_putc(out, *s == '\t' || *s == '\n' || *s == '\r' ? ' ' : *s);
}

void bounce_note(struct deliver_msg *m, const char *action, const char *addr, const char *orig,
		 const struct queue_rcpt *qr, const char *dsn, const char *relay, const char *text)
{
	if (!bounce_wanted(qr, bounce_kind_of(action)))
		return;
	/* "action\taddr\torig\torcpt\tdsn\trelay\ttext\n" */
	bounce_field(&m->failed, action);
	buf_putc(&m->failed, '\t');
	bounce_field(&m->failed, addr);
	buf_putc(&m->failed, '\t');
	bounce_field(&m->failed, orig);
	buf_putc(&m->failed, '\t');
	bounce_field(&m->failed, qr && qr->orcpt ? qr->orcpt : "");
	buf_putc(&m->failed, '\t');
	bounce_field(&m->failed, dsn);
	buf_putc(&m->failed, '\t');
	bounce_field(&m->failed, relay ? relay : "none");
	buf_putc(&m->failed, '\t');
	bounce_field(&m->failed, text);
	buf_putc(&m->failed, '\n');
	m->nfailed++;
}

/* bounce_headers_len - the original's header section (up to the first
 * empty line). */
static size_t bounce_headers_len(const char *content, size_t len)
{
	if (len > 0 && content[0] == '\n')
		return 0;
	for (size_t i = 0; i + 1 < len; i++)
		if (content[i] == '\n' && content[i + 1] == '\n')
			return i + 1;
	return len;
}

/* RFC 3461 §4: ORCPT is "addr-type;xtext": decode the xtext (+XX). */
static void bounce_xtext_decode(const char *s, struct buf *out)
{
	for (; *s; s++) {
		unsigned int c;
		if (*s == '+' && sscanf(s + 1, "%2x", &c) == 1 && s[1] && s[2]) {
			/* never a line break or other control into the report */
			buf_putc(out, c < 32 || c >= 127 ? '?' : (char)c);
			s += 2;
		} else {
			buf_putc(out, *s);
		}
	}
}

/* "host[addr]:port" -> "host" for Remote-MTA; NULL when not remote. */
static int bounce_remote(const char *relay, struct buf *host)
{
	size_t n = strcspn(relay, "[");

	if (strcmp(relay, "none") == 0 || strcmp(relay, "local") == 0 ||
	    strcmp(relay, "virtual") == 0 || relay[n] != '[')
		return 0;
	buf_append(host, relay, n);
	return 1;
}

struct bounce_entry {
	char *f[7]; /* action, addr, orig, orcpt, dsn, relay, text */
};

static size_t bounce_entries(const struct deliver_msg *m, char *copy, enum bounce_kind kind,
			     struct bounce_entry *out, size_t max)
{
	char *save = NULL;
	size_t n = 0;

	for (char *ln = strtok_r(copy, "\n", &save); ln && n < max; ln = strtok_r(NULL, "\n", &save)) {
		struct bounce_entry e;
		e.f[0] = ln;
		int ok = 1;
		for (int i = 1; i < 7 && ok; i++)
			if ((e.f[i] = strchr(e.f[i - 1], '\t')) != NULL)
				*e.f[i]++ = 0;
			else
				ok = 0;
		if (ok && bounce_kind_of(e.f[0]) == kind)
			out[n++] = e;
	}
	(void)m;
	return n;
}

static const char *const bounce_subjects[BK_COUNT] = {
    "Undelivered Mail Returned to Sender",
    "Delayed Mail (still being retried)",
    "Successful Mail Delivery Report",
};

static void bounce_human(const struct deliver_msg *m, enum bounce_kind kind, const char *host,
			 const struct bounce_entry *e, size_t n, struct buf *out)
{
	buf_printf(out, "This is the mail system at host %s.\n\n", host);
	if (kind == BK_FAILED)
		buf_puts(out, "I'm sorry to have to inform you that your message could not\n"
			      "be delivered to one or more recipients. It's attached below.\n\n"
			      "For further assistance, please send mail to postmaster.\n\n"
			      "If you do so, please include this problem report. You can\n"
			      "delete your own text from the attached returned message.\n\n");
	else if (kind == BK_DELAYED)
		buf_printf(out,
			   "####################################################################\n"
			   "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
			   "####################################################################\n\n"
			   "Your message could not be delivered for more than %lld hour(s).\n"
			   "It will be retried until it is %lld day(s) old.\n\n"
			   "For further assistance, please send mail to postmaster.\n\n"
			   "If you do so, please include this problem report. You can\n"
			   "delete your own text from the attached returned message.\n\n",
			   m->conf->delay_warning / 3600, m->conf->lifetime / 86400);
	else
		buf_puts(out, "Your message was successfully delivered to the destination(s)\n"
			      "listed below. If the message was delivered to mailbox you will\n"
			      "receive no further notifications. Otherwise you may still receive\n"
			      "notifications of mail delivery errors from other systems.\n\n");
	buf_puts(out, "                   The mail system\n\n");
	for (size_t i = 0; i < n; i++)
		buf_printf(out, "<%s>: %s\n\n", e[i].f[1], e[i].f[6]);
}

static void bounce_report(const struct deliver_msg *m, const char *host,
			  const struct bounce_entry *e, size_t n, struct buf *out)
{
	buf_printf(out, "Reporting-MTA: dns; %s\nX-Postfix-Queue-ID: %s\nX-Postfix-Sender: rfc822; %s\n",
		   host, m->qid, m->env->sender);
	if (m->env->envid) {
		buf_puts(out, "Original-Envelope-Id: ");
		bounce_xtext_decode(m->env->envid, out);
		buf_putc(out, '\n');
	}
	buf_puts(out, "Arrival-Date: ");
	mail_date(m->env->arrival, out);
	buf_putc(out, '\n');
	for (size_t i = 0; i < n; i++) {
		struct buf rhost = BUF_INIT;
		buf_printf(out, "\nFinal-Recipient: rfc822; %s\n", e[i].f[1]);
		if (*e[i].f[3]) { /* ORCPT as the client gave it */
			buf_puts(out, "Original-Recipient: ");
			bounce_xtext_decode(e[i].f[3], out);
			buf_putc(out, '\n');
		} else {
			buf_printf(out, "Original-Recipient: rfc822; %s\n", e[i].f[2]);
		}
		buf_printf(out, "Action: %s\nStatus: %s\n", e[i].f[0], e[i].f[4]);
		if (bounce_remote(e[i].f[5], &rhost)) {
			const char *said = strstr(e[i].f[6], " said: ");
			buf_printf(out, "Remote-MTA: dns; %s\n", buf_str(&rhost));
			if (said != NULL) { /* the server's own words */
				const char *end = strstr(said, " (in reply to ");
				size_t len = end ? (size_t)(end - said - 7) : strlen(said + 7);
				buf_printf(out, "Diagnostic-Code: smtp; %.*s\n", (int)len, said + 7);
			} else if (e[i].f[0][0] == 'r' || e[i].f[0][0] == 'd') {
				buf_printf(out, "Diagnostic-Code: smtp; %s\n", e[i].f[6]);
			} else {
				buf_printf(out, "Diagnostic-Code: X-Postfix; %s\n", e[i].f[6]);
			}
		} else {
			buf_printf(out, "Diagnostic-Code: X-Postfix; %s\n", e[i].f[6]);
		}
		buf_free(&rhost);
	}
}

static void bounce_compose(const struct deliver_msg *m, enum bounce_kind kind, const char *to,
			   const struct bounce_entry *e, size_t n, struct buf *out)
{
	const char *host = m->conf->myhostname;
	struct buf boundary = BUF_INIT, human = BUF_INIT, report = BUF_INIT;
	time_t now = time(NULL);
	size_t hlen = bounce_headers_len(m->content, m->len);
	/* RET=HDRS, success and delay notices, or too big: headers only
	 * (bounce_size_limit); otherwise the whole message, as Postfix. */
	int full = kind == BK_FAILED && !(m->env->ret && strcasecmp(m->env->ret, "HDRS") == 0) &&
		   (m->conf->bounce_size_limit <= 0 ||
		    (long long)m->len <= m->conf->bounce_size_limit);

	buf_printf(&boundary, "%s.%lld/%s", m->qid, (long long)now, host);
	bounce_human(m, kind, host, e, n, &human);
	bounce_report(m, host, e, n, &report);
	buf_puts(out, "Date: ");
	mail_date(now, out);
	buf_printf(out, "\nFrom: Mail Delivery System <MAILER-DAEMON@%s>\n", host);
	buf_printf(out, "Subject: %s%s\nTo: %s\n", m->env->sender[0] ? "" : "Postmaster Copy: ",
		   bounce_subjects[kind], to);
	buf_puts(out, "Auto-Submitted: auto-replied\nMIME-Version: 1.0\n");
	buf_printf(out,
		   "Content-Type: multipart/report; report-type=delivery-status;\n"
		   "\tboundary=\"%s\"\nContent-Transfer-Encoding: 8bit\n\n",
		   buf_str(&boundary));
	buf_printf(out, "This is a MIME-encapsulated message.\n\n--%s\n", buf_str(&boundary));
	buf_puts(out, "Content-Description: Notification\n"
		      "Content-Type: text/plain; charset=us-ascii\n\n");
	buf_append(out, human.data, human.len);
	buf_printf(out,
		   "--%s\nContent-Description: Delivery report\n"
		   "Content-Type: message/delivery-status\n\n%s\n",
		   buf_str(&boundary), buf_str(&report));
	if (full) {
		buf_printf(out,
			   "--%s\nContent-Description: Undelivered Message\n"
			   "Content-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\n",
			   buf_str(&boundary));
		buf_append(out, m->content, m->len);
		if (m->len > 0 && m->content[m->len - 1] != '\n')
			buf_putc(out, '\n');
	} else {
		buf_printf(out,
			   "--%s\nContent-Description: %s\n"
			   "Content-Type: text/rfc822-headers\n\n",
			   buf_str(&boundary),
			   kind == BK_FAILED ? "Undelivered Message Headers" : "Message Headers");
		buf_append(out, m->content, hlen);
	}
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
	queue_submit_unpaced(q, qid, env, msg->data, msg->len, w.base, bounce_committed, &w);
	while (!w.done) /* wait for the commit callback, without spinning */
		if (event_base_loop(w.base, EVLOOP_ONCE | EVLOOP_NO_EXIT_ON_EMPTY) < 0)
			break;
	event_base_free(w.base);
	return w.done ? w.status : QUEUE_EIO;
}

/* Queue one report of kind; 0 ok (or nothing to send), -1 not queued. */
static int bounce_send(struct deliver_msg *m, enum bounce_kind kind, const struct bounce_entry *e,
		       size_t n)
{
	static const char *const what[BK_COUNT] = {"non-delivery", "delay", "delivery status"};
	const char *sender = m->env->sender, *to = sender, *from = "", *who = "sender";
	struct queue_env env;
	struct buf msg = BUF_INIT;
	char qid[QUEUE_ID_SIZE];
	enum queue_status st;
	struct timeval tv;

	if (n == 0)
		return 0;
	if (strcasecmp(sender, m->conf->double_bounce_sender) == 0) {
		/* a notice to the postmaster failed: the end of the line */
		if (kind == BK_FAILED)
			msg_qid(m->qid, "undeliverable postmaster notification discarded");
		return 0;
	}
	if (*sender == 0) {
		if (kind != BK_FAILED) /* no delay or success notices for bounces */
			return 0;
		to = m->conf->bounce_2_rcpt;
		from = m->conf->double_bounce_sender;
		who = "postmaster";
	}
	queue_env_init(&env);
	env.sender = xstrdup(from);
	gettimeofday(&tv, NULL); /* delay= of the notice counts from now, exactly */
	env.arrival = tv.tv_sec;
	env.arrival_usec = (long)tv.tv_usec;
	env.protocol = xstrdup("local");
	queue_env_add_rcpt(&env, to, NULL, QUEUE_NOTIFY_NEVER);
	bounce_compose(m, kind, to, e, n, &msg);
	env.size = msg.len;
	queue_id_new(m->q, qid);
	st = bounce_submit(m->q, qid, &env, &msg);
	if (st == QUEUE_OK) {
		const char *prev = log_swap_service("bounce");
		msg_qid(m->qid, "%s %s notification: %s", who, what[kind], qid);
		log_thread_service(prev);
	} else {
		msg_warn("%s: cannot queue %s notification: %s", m->qid, what[kind],
			 queue_strerror(st));
	}
	queue_env_free(&env);
	buf_free(&msg);
	return st == QUEUE_OK ? 0 : -1;
}

int bounce_flush(struct deliver_msg *m)
{
	char *copy;
	struct bounce_entry *e;
	int rc = 0;

	if (m->nfailed == 0)
		return 0;
	e = xcalloc(m->nfailed, sizeof(*e));
	for (int k = 0; k < BK_COUNT; k++) {
		copy = xstrdup(buf_str(&m->failed));
		size_t n = bounce_entries(m, copy, (enum bounce_kind)k, e, m->nfailed);
		if (bounce_send(m, (enum bounce_kind)k, e, n) < 0 && k == BK_FAILED)
			rc = -1; /* only a lost non-delivery notice must hold the mail */
		free(copy);
	}
	free(e);
	buf_reset(&m->failed);
	m->nfailed = 0;
	return rc;
}
