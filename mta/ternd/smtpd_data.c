/* smtpd_data.c - message content: DATA (dot-unstuffing, end only at
 * <CRLF>.<CRLF>, RFC 5321 §4.1.1.4) and BDAT (RFC 3030 chunks, no dot
 * handling), bare LF per smtpd_forbid_bare_newline, bare CR replaced by
 * a space (Postfix 3.9 cleanup_replace_stray_cr_lf), message_size_limit,
 * hopcount_limit, Message-ID for the log; then Received: + queue_submit()
 * and the "250 2.0.0 Ok: queued as ID" from the commit callback only.
 * Pitfall (SMTP smuggling, CVE-2023-51764): "<LF>.<LF>", "<LF>.<CRLF>",
 * "<CR>.<CR>"... are content, never the end; memory is bounded per read.
 */
#include "smtpd_int.h"
#include "smtpd_milter.h"

#include "log.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <errno.h>
#include <string.h>
#include <strings.h>

#define SMTPD_BDAT_STEP 65536

/* Message content is held in memory until the queue commit; all
 * sessions together may hold smtpd_data_memory_limit bytes, so many
 * clients sending big messages at once cannot exhaust the host. */
static size_t smtpd_data_memory; /* atomic: every loop thread charges it */

void smtpd_data_release(struct smtpd_session *s)
{
	if (s->data_charged)
		__atomic_sub_fetch(&smtpd_data_memory, s->data_charged, __ATOMIC_RELAXED);
	s->data_charged = 0;
	if (s->content.cap > 256 * 1024) /* give a big message's memory back */
		buf_free(&s->content);
	else
		buf_reset(&s->content);
}

static int content_charge(struct smtpd_session *s, size_t n)
{
	size_t total = __atomic_add_fetch(&smtpd_data_memory, n, __ATOMIC_RELAXED);

	if (s->conf->data_memory_limit > 0 && total > (size_t)s->conf->data_memory_limit) {
		__atomic_sub_fetch(&smtpd_data_memory, n, __ATOMIC_RELAXED);
		return -1;
	}
	s->data_charged += n;
	return 0;
}

static void content_reset(struct smtpd_session *s)
{
	smtpd_data_release(s);
	buf_reset(&s->msgid);
	s->data_bytes = 0;
	s->data_prev_crlf = 1;
	s->data_midline = 0;
	s->data_in_header = 1;
	s->data_hdr_cont = 0;
	s->data_too_big = 0;
	s->data_no_memory = 0;
	s->data_bare_lf = 0;
	s->data_hops = 0;
	s->data_line_off = 0;
}

/* Append part of a line; stray CRs become spaces. Past the size limit
 * nothing more is kept, but the transfer goes on to its end. */
static void content_append(struct smtpd_session *s, const char *p, size_t n)
{
	size_t start = s->content.len;

	if (s->data_too_big || s->data_no_memory)
		return;
	if (s->conf->size_limit > 0 && s->content.len + n > (size_t)s->conf->size_limit) {
		s->data_too_big = 1;
		return;
	}
	if (content_charge(s, n) < 0) {
		msg_warn(
		    "smtpd_data_memory_limit (%lld bytes) reached: refusing the message from %s",
		    s->conf->data_memory_limit, s->client.namaddr);
		s->data_no_memory = 1;
		smtpd_data_release(s);
		return;
	}
	buf_append(&s->content, p, n);
	/* A stray CR is stored as a space (as Postfix 3.9); memchr skips
	 * the common case, a line without one, at memory speed. */
	for (char *cr = s->content.data + start, *end = s->content.data + s->content.len;
	     (cr = memchr(cr, '\r', (size_t)(end - cr))) != NULL; cr++)
		*cr = ' ';
}

/* The header: count Received: (hopcount_limit), keep Message-ID. */
static void content_header_line(struct smtpd_session *s, const char *line, size_t n)
{
	if (n == 0) {
		s->data_in_header = 0;
		return;
	}
	if (line[0] == ' ' || line[0] == '\t')
		return; /* a continuation line */
	if (n > 9 && strncasecmp(line, "Received:", 9) == 0)
		s->data_hops++;
	if (n > 11 && strncasecmp(line, "Message-ID:", 11) == 0 && s->msgid.len == 0) {
		buf_append(&s->msgid, line + 11, n - 11);
		buf_trim(&s->msgid);
	}
	/* A line that is no header field ends the header (RFC 5322 §2.2). */
	if (memchr(line, ':', n) == NULL)
		s->data_in_header = 0;
}

static void content_eol(struct smtpd_session *s)
{
	if (!s->data_too_big) {
		if (s->data_in_header)
			content_header_line(s, s->content.data + s->data_line_off,
					    s->content.len - s->data_line_off);
		buf_putc(&s->content, '\n');
	}
	s->data_line_off = s->content.len;
}

static void content_bare_lf(struct smtpd_session *s)
{
	s->data_bare_lf = 1;
}

/* ------------------------------------------------------------------ */
/* the end: checks, Received:, queue                                   */

static void data_done(struct smtpd_session *s)
{
	s->state = SMTPD_ST_CMD;
	s->last_cmd = "END-OF-MESSAGE";
}

static void data_queued_reply(struct smtpd_session *s, enum queue_status st);
static void data_queued(void *arg, enum queue_status st, const char *qid)
{
	data_queued_reply(arg, st);
}

static void data_queued_reply(struct smtpd_session *s, enum queue_status st)
{

	if (st == QUEUE_OK) {
		/* cleanup(8) logs message-id= in Postfix. */
		const char *prev = log_swap_service("cleanup");
		msg_qid(s->qid, "message-id=%s", s->msgid.len ? buf_str(&s->msgid) : "<>");
		log_thread_service(prev);
		if (s->hooks.queued)
			s->hooks.queued(s->hooks.arg, s->qid);
	}
	if (!s->dead) {
		s->state = SMTPD_ST_CMD;
		if (st == QUEUE_OK && s->bdat_used)
			smtpd_reply(s, "250 2.0.0 Ok: %zu bytes queued as %s", s->bdat_total,
				    s->qid);
		else if (st == QUEUE_OK)
			smtpd_reply(s, "250 2.0.0 Ok: queued as %s", s->qid);
		else if (st == QUEUE_ENOSPC)
			smtpd_reply(s, "452 4.3.1 Insufficient system storage");
		else
			smtpd_reply(s, "451 4.3.0 Error: queue file write error");
		if (st != QUEUE_OK)
			s->error_count++;
		else
			s->ok[s->bdat_used ? SMTPD_C_BDAT : SMTPD_C_DATA]++;
		if (st != QUEUE_OK)
			msg_warn("%s: queue: %s", s->qid, queue_strerror(st));
		smtpd_txn_reset(s);
		if (s->draining) {
			s->state = SMTPD_ST_CLOSE;
			smtpd_reply(s, "421 4.3.2 Service shutting down");
		}
	}
	smtpd_session_resume(s);
}

/* DISCARD (access action): claim delivery, keep nothing. */
static void data_discard(struct smtpd_session *s)
{
	msg_qid(s->qid, "discarded by an access restriction; not queued");
	s->ok[s->bdat_used ? SMTPD_C_BDAT : SMTPD_C_DATA]++;
	if (s->bdat_used)
		smtpd_reply(s, "250 2.0.0 Ok: %zu bytes queued as %s", s->bdat_total, s->qid);
	else
		smtpd_reply(s, "250 2.0.0 Ok: queued as %s", s->qid);
	smtpd_txn_reset(s);
}

static void data_commit(struct smtpd_session *s, const struct buf *msg, time_t now);

/* The milters decided, their edits are in s->content and s->env. */
static void data_milter_done(struct smtpd_session *s, int rc, const char *reply)
{
	if (rc < 0) {
		smtpd_reply(s, "%s", reply);
		s->error_count++;
		if (strncmp(reply, "421", 3) == 0)
			smtpd_session_close(s);
		else
			smtpd_txn_reset(s);
	} else if (s->txn_discard) {
		data_discard(s);
	} else {
		data_commit(s, &s->content, time(NULL));
	}
}

static void data_submit(struct smtpd_session *s)
{
	struct buf msg = BUF_INIT;
	time_t now = time(NULL);
	size_t nprepend = 0;

	if (s->txn_discard) {
		data_discard(s);
		return;
	}
	if (smtpd_bcc_apply(s) < 0) { /* a BCC map failed: the copy must not be lost */
		smtpd_reply(s, "451 4.3.0 Error: queue file write error");
		s->error_count++;
		smtpd_txn_reset(s);
		return;
	}
	/* PREPEND headers (access/policy action) go above our Received:. */
	for (const char *p = buf_str(&s->txn_prepend), *nl; (nl = strchr(p, '\n')) != NULL;
	     p = nl + 1) {
		buf_append(&msg, p, (size_t)(nl - p + 1));
		nprepend += *p != ' ' && *p != '\t';
	}
	smtpd_received_format(s, now, &msg);
	buf_append(&msg, s->content.data ? s->content.data : "", s->content.len);
	if (smtpd_milter_on(s)) { /* they see all but our Received: and edit it */
		struct buf old = s->content;
		s->content = msg;
		buf_free(&old);
		smtpd_milter_content(s, &s->content, nprepend, data_milter_done);
		return;
	}
	data_commit(s, &msg, now);
	buf_free(&msg);
}

static void data_commit(struct smtpd_session *s, const struct buf *msg, time_t now)
{
	free(s->env.client_name);
	free(s->env.client_addr);
	free(s->env.helo);
	free(s->env.protocol);
	s->env.client_name = xstrdup(s->client.name);
	s->env.client_addr = xstrdup(s->client.addr);
	s->env.helo = s->helo ? xstrdup(s->helo) : NULL;
	s->env.protocol = xstrdup(smtpd_proto_name(s)); /* ESMTPSA... (RFC 3848) */
	s->env.size = msg->len;
	if (s->env.arrival == 0)
		s->env.arrival = now;
	s->state = SMTPD_ST_QUEUE;
	/* Reading stays on (arming and disarming it costs two epoll_ctl per
	 * message); session_input() leaves what arrives until the commit. */
	s->env.hold = s->txn_hold; /* HOLD: committed into the hold queue */
	smtpd_filter_set(s->conf, s->txn_filter, &s->env);
	queue_submit(s->q, s->qid, &s->env, msg->data, msg->len, s->base, data_queued, s);
}

/* Refusals at the end of the content; 0 when the message may be queued. */
static int data_refuse(struct smtpd_session *s)
{
	const struct smtpd_conf *c = s->conf;

	if (s->bdat_reply != NULL) { /* BDAT without a valid transaction */
		smtpd_reply(s, "%s", s->bdat_reply);
		return -1;
	}
	if (s->data_too_big) {
		smtpd_reply(s, "552 5.3.4 Error: message file too big");
		return -1;
	}
	if (s->data_no_memory) {
		smtpd_reply(s, "452 4.3.1 Insufficient system storage");
		return -1;
	}
	if (s->data_bare_lf && c->bare_nl != SMTPD_BARE_NO &&
	    !smtpd_client_trusted(s, c->bare_nl_exclusions)) {
		s->bare_lf_noted = 1;
		if (c->bare_nl == SMTPD_BARE_REJECT) {
			smtpd_reply(s, "%d 5.5.2 %s Error: bare <LF> received", c->bare_nl_code,
				    c->myhostname);
			if (c->bare_nl_code == 521)
				smtpd_session_close(s);
			return -1;
		}
	}
	if (s->data_hops > c->hopcount_limit) {
		smtpd_reply(s, "554 5.4.0 Error: too many hops");
		return -1;
	}
	return 0;
}

/* smtpd_end_of_data_restrictions decided. */
static void data_eod_checked(struct smtpd_session *s, int rc, const char *reply)
{
	if (rc == 0) {
		data_submit(s);
		return;
	}
	smtpd_reply(s, "%s", reply);
	s->error_count++;
	if (s->check_disconnect)
		smtpd_session_close(s);
	else
		smtpd_txn_reset(s);
}

static void data_finish(struct smtpd_session *s)
{
	data_done(s);
	if (data_refuse(s) < 0) {
		s->error_count++;
		if (s->state != SMTPD_ST_CLOSE)
			smtpd_txn_reset(s);
		return;
	}
	if (smtpd_check_has(s->conf, SMTPD_STAGE_EOD))
		smtpd_check_start(s, SMTPD_STAGE_EOD, NULL, NULL, data_eod_checked);
	else
		data_submit(s);
}

/* ------------------------------------------------------------------ */
/* DATA                                                                */

void smtpd_data_begin(struct smtpd_session *s)
{
	content_reset(s);
	s->state = SMTPD_ST_DATA;
	/* The DATA command counts as done when the message is queued. */
	s->ok[SMTPD_C_DATA]--;
}

/* One complete line (without LF; cr_end: it ended in CRLF). Returns 1
 * at the end of the data. */
static int data_line(struct smtpd_session *s, const char *p, size_t n, int cr_end)
{
	int line_start = !s->data_midline;

	if (line_start && s->data_prev_crlf && cr_end && n == 1 && p[0] == '.')
		return 1;
	if (line_start && n > 0 && p[0] == '.') /* RFC 5321 §4.5.2 */
		p++, n--;
	if (!cr_end)
		content_bare_lf(s);
	content_append(s, p, n);
	content_eol(s);
	s->data_midline = 0;
	s->data_prev_crlf = cr_end;
	return 0;
}

/* Part of an over-long line: kept, never an end marker. */
static void data_partial(struct smtpd_session *s, const char *p, size_t n)
{
	if (!s->data_midline && n > 0 && p[0] == '.')
		p++, n--;
	content_append(s, p, n);
	s->data_midline = 1;
	s->data_prev_crlf = 0;
}

void smtpd_data_input(struct smtpd_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t chunk = (size_t)s->conf->line_limit;

	while (s->state == SMTPD_ST_DATA && evbuffer_get_length(in) > 0) {
		struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
		size_t avail = evbuffer_get_length(in), n;
		if (p.pos < 0 || (size_t)p.pos > chunk) {
			if (p.pos < 0 && avail <= chunk)
				break; /* wait for the rest of the line */
			n = chunk;
			buf_reserve(&s->line, n);
			evbuffer_copyout(in, s->line.data, n);
			if (s->line.data[n - 1] == '\r') /* may start a CRLF */
				n--;
			evbuffer_drain(in, n);
			s->data_bytes += n;
			data_partial(s, s->line.data, n);
			continue;
		}
		n = (size_t)p.pos;
		buf_reserve(&s->line, n + 1);
		evbuffer_remove(in, s->line.data, n + 1);
		s->data_bytes += n + 1;
		int cr_end = n > 0 && s->line.data[n - 1] == '\r';
		if (data_line(s, s->line.data, cr_end ? n - 1 : n, cr_end))
			data_finish(s);
	}
	buf_reset(&s->line);
}

/* ------------------------------------------------------------------ */
/* BDAT                                                                */

void smtpd_bdat_begin(struct smtpd_session *s, size_t size, int last)
{
	if (!s->bdat_used) {
		content_reset(s);
		s->bdat_used = 1;
		s->bdat_total = 0;
		s->bdat_reply = NULL;
		s->bdat_cr = 0;
		/* RFC 3030 §3: BDAT without a transaction: skip the chunk, then refuse. */
		if (!s->in_mail)
			s->bdat_reply = "503 5.5.1 Error: need RCPT command";
		else if (s->env.nrcpt == 0)
			s->bdat_reply = "554 5.5.1 Error: no valid recipients";
		else if (s->bdat_denied)
			s->bdat_reply = s->bdat_denied;
	}
	s->bdat_left = size;
	s->bdat_last = last;
	s->state = SMTPD_ST_BDAT;
	s->ok[SMTPD_C_BDAT]--; /* counted at the chunk's end */
	if (size == 0)
		smtpd_bdat_input(s);
}

/* Chunk bytes: CRLF (also split across chunks) and bare LF end lines;
 * a CR not followed by LF is stray (a space, as in DATA). */
static void bdat_bytes(struct smtpd_session *s, const char *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		const char *lf;
		size_t end, len;
		if (s->bdat_cr) {
			s->bdat_cr = 0;
			if (p[i] == '\n') {
				content_eol(s);
				i++;
				continue;
			}
			content_append(s, " ", 1);
		}
		lf = memchr(p + i, '\n', n - i);
		end = lf ? (size_t)(lf - p) : n;
		len = end - i;
		if (len > 0 && p[end - 1] == '\r') {
			len--;
			if (lf == NULL)
				s->bdat_cr = 1; /* may be the first half of a CRLF */
		} else if (lf) {
			content_bare_lf(s);
		}
		content_append(s, p + i, len);
		if (lf)
			content_eol(s);
		i = lf ? end + 1 : n;
	}
}

static void bdat_chunk_end(struct smtpd_session *s)
{
	if (!s->bdat_last) {
		s->state = SMTPD_ST_CMD;
		s->last_cmd = "BDAT";
		if (s->bdat_reply || s->data_too_big || s->data_no_memory) {
			smtpd_reply(s, "%s",
				    s->bdat_reply     ? s->bdat_reply
				    : s->data_too_big ? "552 5.3.4 Error: message file too big"
						      : "452 4.3.1 Insufficient system storage");
			s->error_count++;
		} else {
			s->ok[SMTPD_C_BDAT]++;
			smtpd_reply(s, "250 2.0.0 Ok: %zu bytes", s->bdat_total);
		}
		return;
	}
	if (s->bdat_cr) {
		content_append(s, " ", 1);
		s->bdat_cr = 0;
	}
	if (s->content.len > s->data_line_off) /* RFC 3030: unterminated last line */
		content_eol(s);
	data_finish(s);
}

void smtpd_bdat_input(struct smtpd_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);

	while (s->bdat_left > 0 && evbuffer_get_length(in) > 0) {
		size_t n = evbuffer_get_length(in);
		if (n > s->bdat_left)
			n = s->bdat_left;
		if (n > SMTPD_BDAT_STEP)
			n = SMTPD_BDAT_STEP;
		buf_reserve(&s->line, n);
		evbuffer_remove(in, s->line.data, n);
		s->bdat_left -= n;
		s->bdat_total += n;
		s->data_bytes += n;
		if (s->bdat_reply == NULL)
			bdat_bytes(s, s->line.data, n);
	}
	buf_reset(&s->line);
	if (s->bdat_left == 0 && s->state == SMTPD_ST_BDAT)
		bdat_chunk_end(s);
}

void smtpd_data_free(struct smtpd_session *s)
{
	smtpd_data_release(s);
	buf_free(&s->content);
	buf_free(&s->msgid);
}
