/* smtpd_restr.c - evaluation of Postfix restriction lists (Postfix
 * smtpd_check.c generic_checks() and check_table_result()): every
 * restriction of smtpd_restr.h's list, access(5) table results and
 * policy replies, DNS lists (RBL/RHSBL/DNSWL with =filters and
 * rbl_reply_maps), reject_unknown_* and MX/A access checks, with
 * Postfix's reply codes, enhanced status codes, texts and log lines.
 * Asynchronous answers (DNS, policy, sleep) come from the evaluation's
 * memo; a missing one is requested and RESTR_PENDING stops the pass
 * (see smtpd_restr.h for why a replay is safe).
 * Pitfall: a lookup table error is "451 4.3.0 Temporary lookup failure",
 * never "not found"; configuration errors (451 4.3.5) are never turned
 * into warnings by warn_if_reject.
 */
#include "smtpd_int.h"

#include "log.h"
#include "resolver.h"
#include "table_keys.h"

#include <event2/event.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#define RESTR_MAX_RECURSION 100

/* ------------------------------------------------------------------ */
/* evaluation state                                                    */

void restr_eval_init(struct restr_eval *ev)
{
	memset(ev, 0, sizeof(*ev));
	buf_init(&ev->dip.reason);
	buf_init(&ev->dir.reason);
	buf_init(&ev->reply);
	buf_init(&ev->log);
	buf_init(&ev->trace);
	buf_init(&ev->bcc);
	buf_init(&ev->prepend);
}

void restr_eval_reset_pass(struct restr_eval *ev)
{
	ev->recursion = ev->warn_if_reject = 0;
	ev->dip.active = ev->dir.active = 0;
	ev->rcptmap_checked = ev->sender_rcptmap_checked = 0;
	buf_reset(&ev->reply);
	buf_reset(&ev->log);
	buf_reset(&ev->trace);
	buf_reset(&ev->bcc);
	buf_reset(&ev->prepend);
	ev->disconnect = ev->discard = ev->hold = 0;
	free(ev->filter);
	free(ev->redirect);
	ev->filter = ev->redirect = NULL;
	ev->next = 0;
}

static void restr_answer_free(struct restr_answer *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
	free(a->pref);
}

void restr_eval_free(struct restr_eval *ev)
{
	for (size_t i = 0; i < ev->nmemo; i++)
		restr_answer_free(&ev->memo[i]);
	free(ev->memo);
	buf_free(&ev->dip.reason);
	buf_free(&ev->dir.reason);
	buf_free(&ev->reply);
	buf_free(&ev->log);
	buf_free(&ev->trace);
	buf_free(&ev->bcc);
	buf_free(&ev->prepend);
	free(ev->filter);
	free(ev->redirect);
	memset(ev, 0, sizeof(*ev));
}

void restr_tracef(struct restr_eval *ev, const char *fmt, ...)
{
	va_list ap;

	if (!ev->tracing)
		return;
	for (int i = 0; i < ev->recursion; i++)
		buf_puts(&ev->trace, "  ");
	va_start(ap, fmt);
	buf_vprintf(&ev->trace, fmt, ap);
	va_end(ap);
	buf_putc(&ev->trace, '\n');
}

/* "NOQUEUE: reject: RCPT from h[a]: TEXT; from=<s> to=<r> proto=ESMTP helo=<h>"
 * (Postfix log_whatsup()); the queue ID prefix is added when logged. */
void restr_log_whatsup(struct restr_eval *ev, const char *whatsup, const char *text)
{
	struct smtpd_session *s = ev->s;

	buf_printf(&ev->log, "%s: %s from %s: %s;", whatsup, ev->where, s->client.namaddr, text);
	if (ev->sender)
		buf_printf(&ev->log, " from=<%s>", ev->sender);
	if (ev->recipient)
		buf_printf(&ev->log, " to=<%s>", ev->recipient);
	buf_printf(&ev->log, " proto=%s", s->esmtp ? "ESMTP" : "SMTP");
	if (ev->helo)
		buf_printf(&ev->log, " helo=<%s>", ev->helo);
	buf_putc(&ev->log, '\n');
	restr_tracef(ev, "log: %s: %s", whatsup, text);
}

/* ------------------------------------------------------------------ */
/* replies                                                             */

/* RFC 3463 status "d.ddd.ddd" at text: its length, else 0. */
static size_t restr_dsn_len(const char *t)
{
	size_t n = 0, part = 0;

	if (t[0] != '2' && t[0] != '4' && t[0] != '5')
		return 0;
	for (int field = 0; field < 3; field++) {
		if (field) {
			if (t[n] != '.')
				return 0;
			n++;
		}
		for (part = 0; isdigit((unsigned char)t[n]) && part < 3; part++)
			n++;
		if (part == 0 || (field == 0 && part != 1))
			return 0;
	}
	return t[n] == 0 || t[n] == ' ' || t[n] == '\t' ? n : 0;
}

/* Postfix dsn_split(): an enhanced status at the start of text, or def. */
static const char *restr_dsn_split(char dsn[16], const char *def, const char *text)
{
	size_t n = restr_dsn_len(text);

	if (n > 0 && n < 16) {
		memcpy(dsn, text, n);
		dsn[n] = 0;
		text += n;
		while (*text == ' ' || *text == '\t')
			text++;
	} else {
		snprintf(dsn, 16, "%s", def);
	}
	return text;
}

/* Postfix smtpd_dsn_fix() (dsn_map[]): address statuses that do not fit
 * the reply class are mapped to ones that do. */
void restr_dsn_fix(char dsn[16], const char *reply_class)
{
	static const struct {
		const char *in, *snd, *rcpt;
	} map[] = {
	    {".1.1", ".1.7", NULL}, {".1.2", ".1.8", NULL}, {".1.3", ".1.7", NULL},
	    {".1.4", ".1.7", NULL}, {".1.5", ".1.0", NULL}, {".1.6", ".1.7", NULL},
	    {".1.7", NULL, ".1.3"}, {".1.8", NULL, ".1.2"},
	};
	int sender = strcmp(reply_class, RESTR_NAME_SENDER) == 0;
	int rcpt = strcmp(reply_class, RESTR_NAME_RECIPIENT) == 0;

	if (strncmp(dsn + 1, ".1.", 3) != 0)
		return;
	if (!sender && !rcpt) { /* not an address: X.1.Y means nothing here */
		snprintf(dsn + 1, 15, ".0.0");
		return;
	}
	for (size_t i = 0; i < sizeof(map) / sizeof(*map); i++) {
		const char *to = sender ? map[i].snd : map[i].rcpt;
		if (strcmp(dsn + 1, map[i].in) == 0 && to) {
			snprintf(dsn + 1, 15, "%s", to);
			return;
		}
	}
}

static void restr_printable(struct buf *b)
{
	for (size_t i = 0; i < b->len; i++)
		if ((unsigned char)b->data[i] < 0x20 || b->data[i] == 0x7f)
			b->data[i] = ' ';
}

static int restr_vreject(struct restr_eval *ev, int soft, int code, const char *dsn,
			 const char *fmt, va_list ap)
{
	int warn = ev->warn_if_reject && !soft;
	struct buf text = BUF_INIT;

	buf_printf(&text, "%d %s ", code, dsn);
	buf_vprintf(&text, fmt, ap);
	if (code < 400 || code > 599) {
		msg_warn("SMTP reply code configuration error: %s", buf_str(&text));
		buf_set(&text, "450 4.7.1 Service unavailable");
	} else if (restr_dsn_len(buf_str(&text) + 4) == 0) {
		msg_warn("DSN detail code configuration error: %s", buf_str(&text));
		buf_set(&text, "450 4.7.1 Service unavailable");
	}
	if (text.len > 510)
		buf_truncate(&text, 510);
	restr_printable(&text);
	/* An earlier temporary problem may have hidden a permit: defer. */
	if (!warn && ev->dir.active && text.data[0] == '5') {
		char d[16];
		snprintf(d, sizeof(d), "%s", ev->dir.dsn);
		ev->warn_if_reject = ev->dir.active = 0;
		buf_free(&text);
		return restr_reject(ev, ev->dir.soft, ev->dir.code, d, "%s",
				    buf_str(&ev->dir.reason));
	}
	if (ev->rc->soft_bounce && text.data[0] == '5')
		text.data[0] = '4';
	text.data[4] = text.data[0]; /* the SMTP code wins over the DSN class */
	restr_log_whatsup(ev, warn ? "reject_warning" : "reject", buf_str(&text));
	if (!warn) {
		buf_set(&ev->reply, buf_str(&text));
		if (strncmp(text.data, "421", 3) == 0 || strncmp(text.data, "521", 3) == 0)
			ev->disconnect = 1;
	}
	buf_free(&text);
	return warn ? RESTR_DUNNO : RESTR_REJECT;
}

int restr_reject(struct restr_eval *ev, int soft, int code, const char *dsn, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = restr_vreject(ev, soft, code, dsn, fmt, ap);
	va_end(ap);
	return rc;
}

static void restr_defer_if(struct restr_defer *d, int soft, int code, const char *dsn,
			   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void restr_defer_if(struct restr_defer *d, int soft, int code, const char *dsn,
			   const char *fmt, ...)
{
	va_list ap;

	if (d->active) /* keep the first reason */
		return;
	d->active = 1;
	d->soft = soft;
	d->code = code;
	snprintf(d->dsn, sizeof(d->dsn), "%s", dsn);
	buf_reset(&d->reason);
	va_start(ap, fmt);
	buf_vprintf(&d->reason, fmt, ap);
	va_end(ap);
}

/* Postfix DEFER_IF_PERMIT*(): with a "defer" tempfail action reject now,
 * under warn_if_reject log only, else remember. */
#define RESTR_DEFER_IF_PERMIT(ev, now, code, dsn, ...)                                             \
	((now) || (ev)->warn_if_reject                                                             \
	     ? restr_reject((ev), 0, (code), (dsn), __VA_ARGS__)                                   \
	     : (restr_defer_if(&(ev)->dip, 0, (code), (dsn), __VA_ARGS__), RESTR_DUNNO))

int restr_apply_defer_if_permit(struct restr_eval *ev)
{
	char d[16];

	snprintf(d, sizeof(d), "%s", ev->dip.dsn);
	return restr_reject(ev, ev->dip.soft, ev->dip.code, d, "%s", buf_str(&ev->dip.reason));
}

static int restr_server_error(struct restr_eval *ev)
{
	return restr_reject(ev, 1, 451, "4.3.5", "Server configuration error");
}

static int restr_lookup_error(struct restr_eval *ev, const char *reply_name, const char *why)
{
	msg_warn("%s: table lookup error: %s", reply_name, why);
	return restr_reject(ev, 1, 451, "4.3.0", "<%s>: Temporary lookup failure", reply_name);
}

/* "permit" log lines for smtpd_log_access_permit_actions. */
static int restr_permit(struct restr_eval *ev, const char *action, const char *reply_class,
			const char *reply_name, const char *from)
{
	struct buf t = BUF_INIT;

	for (size_t i = 0; i < ev->rc->npermit_log && !ev->dip.active; i++) {
		if (strcasecmp(ev->rc->permit_log[i], action) != 0 &&
		    strcasecmp(ev->rc->permit_log[i], "static:all") != 0)
			continue;
		buf_printf(&t, "action=%s for %s=%s", action, reply_class, reply_name);
		if (from)
			buf_printf(&t, " from %s", from);
		restr_log_whatsup(ev, "permit", buf_str(&t));
		break;
	}
	buf_free(&t);
	return RESTR_OK;
}

/* ------------------------------------------------------------------ */
/* asynchronous answers                                                */

static struct restr_answer *restr_answer_new(struct restr_eval *ev, int status)
{
	struct restr_answer *a;

	ev->memo = xrealloc(ev->memo, (ev->nmemo + 1) * sizeof(*ev->memo));
	a = &ev->memo[ev->nmemo++];
	memset(a, 0, sizeof(*a));
	a->status = status;
	return a;
}

static void restr_answer_push(struct restr_answer *a, const char *text, int pref)
{
	a->v = xrealloc(a->v, (a->n + 1) * sizeof(*a->v));
	a->pref = xrealloc(a->pref, (a->n + 1) * sizeof(*a->pref));
	a->v[a->n] = xstrdup(text);
	a->pref[a->n++] = pref;
}

static void restr_answered(struct restr_eval *ev)
{
	ev->waiting = 0;
	ev->resume(ev);
}

static void restr_dns_cb(void *arg, const struct resolver_result *res)
{
	struct restr_eval *ev = arg;
	struct restr_answer *a;
	struct buf t = BUF_INIT;

	a = restr_answer_new(ev, res->status);

	for (size_t i = 0; res->status == RESOLVER_FOUND && i < res->count; i++) {
		buf_reset(&t);
		if (res->qtype == RESOLVER_T_MX || res->qtype == RESOLVER_T_NS)
			buf_puts(&t, res->rr[i].text);
		else
			resolver_rr_format(res->qtype, &res->rr[i], &t);
		restr_answer_push(a, buf_str(&t), res->rr[i].pref);
	}
	buf_free(&t);
	if (ev->starting) /* answered from a cache inside resolver_query() */
		return;
	restr_answered(ev);
}

static void restr_trace_answer(struct restr_eval *ev, const char *what, const char *name,
			       const struct restr_answer *a)
{
	struct buf t = BUF_INIT;

	if (!ev->tracing)
		return;
	for (size_t i = 0; i < a->n; i++)
		buf_printf(&t, "%s%s", i ? ", " : "", a->v[i]);
	restr_tracef(ev, "dns %s %s: %s%s%s", what, name,
		     resolver_status_str((enum resolver_status)a->status), a->n ? ": " : "",
		     buf_str(&t));
	buf_free(&t);
}

/* A DNS answer: 0 with *out set, or RESTR_PENDING (query started). */
static int restr_dns(struct restr_eval *ev, const char *name, int qtype,
		     const struct restr_answer **out)
{
	struct resolver *r;
	struct buf err = BUF_INIT;
	int rc;

	if (ev->next < ev->nmemo) {
		*out = &ev->memo[ev->next++];
		restr_trace_answer(ev, resolver_type_name(qtype), name, *out);
		return 0;
	}
	r = smtpd_resolver(ev->s);
	ev->starting = 1;
	rc = r != NULL ? resolver_query(r, name, qtype, restr_dns_cb, ev, &err) : -1;
	ev->starting = 0;
	if (rc == 0 && ev->next < ev->nmemo) { /* already answered */
		buf_free(&err);
		*out = &ev->memo[ev->next++];
		restr_trace_answer(ev, resolver_type_name(qtype), name, *out);
		return 0;
	}
	if (rc == 0) {
		buf_free(&err);
		ev->waiting = 1;
		return RESTR_PENDING;
	}
	msg_warn("DNS lookup of %s: %s", name, r ? buf_str(&err) : "no resolver");
	buf_free(&err);
	restr_answer_new(ev, RESOLVER_TEMPFAIL);
	*out = &ev->memo[ev->next++];
	return 0;
}

static void restr_sleep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct restr_eval *ev = arg;

	restr_answer_new(ev, 0);
	restr_answered(ev);
}

static int restr_sleep(struct restr_eval *ev, const char *secs)
{
	struct timeval tv = {atoi(secs), 0};

	if (ev->next < ev->nmemo) {
		ev->next++;
		return RESTR_DUNNO;
	}
	restr_tracef(ev, "sleep %s", secs);
	ev->waiting = 1;
	event_base_once(ev->s->base, -1, EV_TIMEOUT, restr_sleep_cb, ev, &tv);
	return RESTR_PENDING;
}

/* ------------------------------------------------------------------ */
/* access tables                                                       */

static int restr_list_words(struct restr_eval *ev, const char *value, const char *reply_name,
			    const char *reply_class, enum restr_op def_acl);

/* "NAME:" header syntax for PREPEND (Postfix is_header()). */
static int restr_is_header(const char *t)
{
	size_t n = 0;

	while (t[n] && t[n] != ':' && (unsigned char)t[n] > 32 && (unsigned char)t[n] < 127)
		n++;
	return n > 0 && t[n] == ':';
}

/* Actions that need a mail transaction (Postfix can_delegate_action()). */
static int restr_can_delegate(struct restr_eval *ev, const char *table, const char *action)
{
	if (ev->stage == SMTPD_STAGE_ETRN) {
		msg_warn("access table %s: action %s is unavailable in smtpd_etrn_restrictions",
			 table, action);
		return 0;
	}
	if (ev->sender == NULL) {
		msg_warn("access table %s: with smtpd_delay_reject=no, action %s is always skipped "
			 "in Client host or Helo command restrictions",
			 table, action);
		return 0;
	}
	return 1;
}

static int restr_word_is(const char *value, size_t len, const char *word)
{
	return strlen(word) == len && strncasecmp(value, word, len) == 0;
}

static int restr_alldig(const char *s)
{
	if (*s == 0)
		return 0;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return 0;
	return 1;
}

/* Postfix check_table_result(): one access(5) value (or policy reply). */
static int restr_table_result(struct restr_eval *ev, const char *table, const char *value,
			      const char *datum, const char *reply_name, const char *reply_class,
			      enum restr_op def_acl)
{
	size_t len = strcspn(value, " \t");
	const char *text = value + len;
	struct buf t = BUF_INIT;
	char dsn[16];
	int rc = RESTR_DUNNO;

	while (*text == ' ' || *text == '\t')
		text++;
	restr_tracef(ev, "%s: \"%s\" -> %s", table, datum, value);
	if (restr_word_is(value, len, "DUNNO"))
		return RESTR_DUNNO;
	if (restr_word_is(value, len, "REJECT")) {
		text = restr_dsn_split(dsn, "5.7.1", text);
		restr_dsn_fix(dsn, reply_class);
		return restr_reject(ev, 0, ev->rc->access_code, dsn, "<%s>: %s rejected: %s",
				    reply_name, reply_class, *text ? text : "Access denied");
	}
	if (restr_word_is(value, len, "DEFER")) {
		text = restr_dsn_split(dsn, "4.7.1", text);
		restr_dsn_fix(dsn, reply_class);
		return restr_reject(ev, 0, ev->rc->access_defer_code, dsn, "<%s>: %s rejected: %s",
				    reply_name, reply_class, *text ? text : "Access denied");
	}
	if (restr_word_is(value, len, "INFO") || restr_word_is(value, len, "WARN")) {
		restr_log_whatsup(ev, restr_word_is(value, len, "INFO") ? "info" : "warn", text);
		return RESTR_DUNNO;
	}
	if (restr_word_is(value, len, "FILTER")) {
		if (!restr_can_delegate(ev, table, "FILTER"))
			return RESTR_DUNNO;
		if (*text == 0 || strchr(text, ':') == NULL) {
			msg_warn("access table %s entry \"%s\" requires transport:destination",
				 table, datum);
			return RESTR_DUNNO;
		}
		/* The message goes to transport:destination instead of its
		 * recipients' routes (queued with it); the last FILTER wins. */
		buf_printf(&t, "<%s>: %s triggers FILTER %s", reply_name, reply_class, text);
		restr_log_whatsup(ev, "filter", buf_str(&t));
		buf_free(&t);
		free(ev->filter);
		ev->filter = xstrdup(text);
		return RESTR_DUNNO;
	}
	if (restr_word_is(value, len, "HOLD")) {
		if (!restr_can_delegate(ev, table, "HOLD") || ev->hold)
			return RESTR_DUNNO;
		buf_printf(&t, "<%s>: %s %s", reply_name, reply_class,
			   *text ? text : "triggers HOLD action");
		restr_log_whatsup(ev, "hold", buf_str(&t));
		buf_free(&t);
		ev->hold = 1;
		return RESTR_DUNNO;
	}
	if (restr_word_is(value, len, "DISCARD")) {
		if (!restr_can_delegate(ev, table, "DISCARD"))
			return RESTR_DUNNO;
		buf_printf(&t, "<%s>: %s %s", reply_name, reply_class,
			   *text ? text : "triggers DISCARD action");
		restr_log_whatsup(ev, "discard", buf_str(&t));
		buf_free(&t);
		ev->discard = 1;
		return restr_permit(ev, "DISCARD", reply_class, reply_name, table);
	}
	if (restr_word_is(value, len, "REDIRECT") || restr_word_is(value, len, "BCC")) {
		int bcc = restr_word_is(value, len, "BCC");
		if (!restr_can_delegate(ev, table, bcc ? "BCC" : "REDIRECT"))
			return RESTR_DUNNO;
		if (strchr(text, '@') == NULL) {
			msg_warn("access table %s entry \"%s\" requires user@domain target", table,
				 datum);
			return RESTR_DUNNO;
		}
		buf_printf(&t, "<%s>: %s triggers %s %s", reply_name, reply_class,
			   bcc ? "BCC" : "REDIRECT", text);
		restr_log_whatsup(ev, bcc ? "bcc" : "redirect", buf_str(&t));
		buf_free(&t);
		if (bcc) {
			buf_printf(&ev->bcc, "%s\n", text);
		} else {
			free(ev->redirect);
			ev->redirect = xstrdup(text);
		}
		return RESTR_DUNNO;
	}
	if (restr_word_is(value, len, "DEFER_IF_PERMIT")) {
		text = restr_dsn_split(dsn, "4.7.1", text);
		restr_dsn_fix(dsn, reply_class);
		return RESTR_DEFER_IF_PERMIT(ev, 0, ev->rc->access_defer_code, dsn,
					     "<%s>: %s rejected: %s", reply_name, reply_class,
					     *text ? text : "Service unavailable");
	}
	if (restr_word_is(value, len, "DEFER_IF_REJECT")) {
		text = restr_dsn_split(dsn, "4.7.1", text);
		restr_dsn_fix(dsn, reply_class);
		restr_defer_if(&ev->dir, 0, ev->rc->access_defer_code, dsn, "<%s>: %s rejected: %s",
			       reply_name, reply_class, *text ? text : "Service unavailable");
		return RESTR_DUNNO;
	}
	if (restr_word_is(value, len, "PREPEND")) {
		if (ev->sender == NULL) {
			restr_can_delegate(ev, table, "PREPEND");
			return RESTR_DUNNO;
		}
		if (ev->stage == SMTPD_STAGE_EOD) {
			msg_warn("access table %s: action PREPEND must be used before "
				 "smtpd_end_of_data_restrictions",
				 table);
			return RESTR_DUNNO;
		}
		if (!restr_is_header(text)) {
			msg_warn("access table %s entry \"%s\" requires header: text", table,
				 datum);
			return RESTR_DUNNO;
		}
		buf_printf(&ev->prepend, "%s\n", text);
		return RESTR_DUNNO;
	}
	/* Postfix tests all-numeric before 4xx/5xx: "450" alone is OK. */
	if (restr_alldig(value))
		return restr_permit(ev, value, reply_class, reply_name, table);
	if (len == 3 && *text && (value[0] == '4' || value[0] == '5') &&
	    isdigit((unsigned char)value[1]) && isdigit((unsigned char)value[2])) {
		char def[] = "X.7.1";
		def[0] = value[0];
		text = restr_dsn_split(dsn, def, text);
		restr_dsn_fix(dsn, reply_class);
		return restr_reject(ev, 0, atoi(value), dsn, "<%s>: %s rejected: %s", reply_name,
				    reply_class, *text ? text : "Access denied");
	}
	if (restr_word_is(value, len, "OK") || restr_word_is(value, len, "RELAY"))
		return restr_permit(ev, restr_word_is(value, len, "OK") ? "OK" : "RELAY",
				    reply_class, reply_name, table);
	if (strchr(value, ':') != NULL) {
		msg_warn("access table %s has entry with lookup table: %s", table, value);
		msg_warn("do not specify lookup tables inside SMTPD access maps");
		msg_warn("define a restriction class and specify its name instead.");
		return restr_server_error(ev);
	}
	if (ev->recursion > RESTR_MAX_RECURSION) {
		msg_warn("access table %s entry %s causes unreasonable recursion", table, value);
		return restr_server_error(ev);
	}
	rc = restr_list_words(ev, value, reply_name, reply_class, def_acl);
	return rc;
}

/* Try the keys in order; the first match decides (its value may say
 * DUNNO). *found: a key matched. */
static int restr_access_keys(struct restr_eval *ev, struct table *t, const struct table_keys *k,
			     const char *datum, const char *reply_name, const char *reply_class,
			     enum restr_op def_acl, int *found)
{
	struct buf value = BUF_INIT, err = BUF_INIT;
	int rc;

	*found = 0;
	rc = table_lookup_keys(t, k, &value, NULL, &err);
	if (rc == TABLE_ERROR) {
		rc = restr_lookup_error(ev, reply_name, buf_str(&err));
	} else if (rc == TABLE_FOUND) {
		*found = 1;
		rc = restr_table_result(ev, t->spec, buf_str(&value), datum, reply_name,
					reply_class, def_acl);
	} else {
		restr_tracef(ev, "%s: \"%s\" not found", t->spec, datum);
		rc = RESTR_DUNNO;
	}
	buf_free(&value);
	buf_free(&err);
	return rc;
}

static int restr_parent_style(const struct restr_eval *ev)
{
	return ev->rc->access_parent ? TABLE_KEYS_PARENT : 0;
}

static int restr_domain_access(struct restr_eval *ev, struct table *t, const char *domain,
			       const char *reply_name, const char *reply_class,
			       enum restr_op def_acl, int *found)
{
	struct table_keys k = TABLE_KEYS_INIT;
	int rc;

	table_keys_helo(&k, domain, restr_parent_style(ev));
	rc = restr_access_keys(ev, t, &k, domain, reply_name, reply_class, def_acl, found);
	table_keys_free(&k);
	return rc;
}

static int restr_addr_access(struct restr_eval *ev, struct table *t, const char *addr,
			     const char *reply_name, const char *reply_class, enum restr_op def_acl,
			     int *found)
{
	struct table_keys k = TABLE_KEYS_INIT;
	int rc;

	table_keys_client(&k, NULL, addr, 0);
	rc = restr_access_keys(ev, t, &k, addr, reply_name, reply_class, def_acl, found);
	table_keys_free(&k);
	return rc;
}

/* Postfix check_mail_access(): the qualified address, then without its
 * extension, the domain and parents, user+ext@, user@. */
static int restr_mail_access(struct restr_eval *ev, struct table *t, const char *canon,
			     const char *reply_name, const char *reply_class, enum restr_op def_acl)
{
	struct table_keys k = TABLE_KEYS_INIT;
	struct buf low = BUF_INIT;
	int found, rc;

	buf_set(&low, canon);
	buf_lower(&low);
	table_keys_address(&k, buf_str(&low), ev->s->conf->rcpt_delim, restr_parent_style(ev));
	rc = restr_access_keys(ev, t, &k, canon, reply_name, reply_class, def_acl, &found);
	table_keys_free(&k);
	buf_free(&low);
	return rc;
}

static int restr_null_access(struct restr_eval *ev, struct table *t, const char *reply_name,
			     const char *reply_class, enum restr_op def_acl)
{
	struct table_keys k = TABLE_KEYS_INIT;
	int found, rc;

	table_keys_add(&k, ev->rc->null_key, strlen(ev->rc->null_key), 1);
	rc = restr_access_keys(ev, t, &k, ev->rc->null_key, reply_name, reply_class, def_acl,
			       &found);
	table_keys_free(&k);
	return rc;
}

/* Postfix forbid_allowlist(): OK from an MX/NS/A check is a config error. */
static int restr_forbid_ok(struct restr_eval *ev, const char *name, int rc, const char *target)
{
	if (rc != RESTR_OK)
		return rc;
	msg_warn("restriction %s returns OK for %s", name, target);
	msg_warn("this is not allowed for security reasons");
	msg_warn("use DUNNO instead of OK if you want to make an exception");
	return restr_server_error(ev);
}

/* The addresses of host (A, then AAAA) against the table. */
static int restr_host_addrs(struct restr_eval *ev, struct table *t, const char *host,
			    const char *reply_name, const char *reply_class, enum restr_op def_acl,
			    int *found)
{
	static const int types[] = {RESOLVER_T_A, RESOLVER_T_AAAA};
	const struct restr_answer *a;
	int rc;

	*found = 0;
	for (int ti = 0; ti < 2; ti++) {
		if ((rc = restr_dns(ev, host, types[ti], &a)) == RESTR_PENDING)
			return rc;
		for (size_t i = 0; a->status == RESOLVER_FOUND && i < a->n; i++) {
			rc = restr_addr_access(ev, t, a->v[i], reply_name, reply_class, def_acl,
					       found);
			if (rc != RESTR_DUNNO || *found)
				return rc;
		}
	}
	return RESTR_DUNNO;
}

/* Which servers check_*_{a,mx,ns}_access looks at. */
static int restr_server_qtype(enum restr_op op)
{
	switch (op) {
	case RO_CLIENT_MX_ACCESS:
	case RO_REVERSE_MX_ACCESS:
	case RO_HELO_MX_ACCESS:
	case RO_SENDER_MX_ACCESS:
	case RO_RECIPIENT_MX_ACCESS:
		return RESOLVER_T_MX;
	case RO_CLIENT_NS_ACCESS:
	case RO_REVERSE_NS_ACCESS:
	case RO_HELO_NS_ACCESS:
	case RO_SENDER_NS_ACCESS:
	case RO_RECIPIENT_NS_ACCESS:
		return RESOLVER_T_NS;
	default:
		return 0;
	}
}

/* Postfix check_server_access(): the servers of a domain — its MX hosts
 * (qtype RESOLVER_T_MX), its name servers (RESOLVER_T_NS: of the nearest
 * parent domain that has some), or the host itself (check_*_a_access,
 * qtype 0) — by name, then by address. */
static int restr_server_access(struct restr_eval *ev, struct table *t, const char *name,
			       int qtype, const char *reply_name, const char *reply_class,
			       enum restr_op def_acl)
{
	const char *domain = strrchr(name, '@') ? strrchr(name, '@') + 1 : name;
	const struct restr_answer *a;
	int found = 0, rc;
	struct inet_addr ip;

	if (*domain == '[') { /* an address literal is its own MX */
		struct buf lit = BUF_INIT;
		if (!addr_literal_parse(domain, &ip))
			return RESTR_DUNNO;
		inet_addr_format(&ip, &lit);
		rc = restr_addr_access(ev, t, buf_str(&lit), reply_name, reply_class, def_acl,
				       &found);
		buf_free(&lit);
		return rc;
	}
	if (qtype == 0)
		return restr_host_addrs(ev, t, domain, reply_name, reply_class, def_acl, &found);
	if ((rc = restr_dns(ev, domain, qtype, &a)) == RESTR_PENDING)
		return rc;
	/* NS: no records here, ask the parent (example.com for a.example.com) */
	while (qtype == RESOLVER_T_NS &&
	       (a->status == RESOLVER_NODATA || a->status == RESOLVER_NXDOMAIN) &&
	       (domain = strchr(domain, '.')) != NULL && domain[1] != 0) {
		domain++;
		if ((rc = restr_dns(ev, domain, qtype, &a)) == RESTR_PENDING)
			return rc;
	}
	if (qtype == RESOLVER_T_MX && a->status == RESOLVER_NODATA) { /* its own MX */
		rc = restr_domain_access(ev, t, domain, reply_name, reply_class, def_acl, &found);
		if (rc != RESTR_DUNNO || found)
			return rc;
		return restr_host_addrs(ev, t, domain, reply_name, reply_class, def_acl, &found);
	}
	if (a->status != RESOLVER_FOUND) {
		if (qtype == RESOLVER_T_MX || a->status != RESOLVER_NXDOMAIN)
			msg_warn("Unable to look up %s host for %s: %s",
				 qtype == RESOLVER_T_MX ? "MX" : "NS", domain,
				 resolver_status_str((enum resolver_status)a->status));
		return RESTR_DUNNO;
	}
	for (size_t i = 0; i < a->n; i++) {
		/* a->v may move when the memo grows: copy the name */
		char *host = xstrdup(ev->memo[ev->next - 1].v[i]);
		size_t me = ev->next - 1;
		rc = restr_domain_access(ev, t, host, reply_name, reply_class, def_acl, &found);
		if (rc == RESTR_DUNNO && !found)
			rc =
			    restr_host_addrs(ev, t, host, reply_name, reply_class, def_acl, &found);
		free(host);
		a = &ev->memo[me];
		if (rc != RESTR_DUNNO || found)
			return rc;
	}
	return RESTR_DUNNO;
}

/* ------------------------------------------------------------------ */
/* policy service                                                      */

static void restr_policy_cb(void *arg, const char *action, const char *why)
{
	struct restr_eval *ev = arg;
	struct restr_answer *a = restr_answer_new(ev, action ? 0 : -1);

	restr_answer_push(a, action ? action : why, 0);
	restr_answered(ev);
}

static const char *restr_stage_state(const struct restr_eval *ev)
{
	switch (ev->stage) {
	case SMTPD_STAGE_CONNECT:
		return "CONNECT";
	case SMTPD_STAGE_HELO:
		return ev->where;
	case SMTPD_STAGE_MAIL:
		return "MAIL";
	case SMTPD_STAGE_RCPT:
		return "RCPT";
	case SMTPD_STAGE_VRFY:
		return "VRFY";
	case SMTPD_STAGE_DATA:
		return "DATA";
	case SMTPD_STAGE_EOD:
		return "END-OF-MESSAGE";
	case SMTPD_STAGE_ETRN:
		return "ETRN";
	}
	return "";
}

/* Values are single lines: a CR or LF from the client would inject an
 * attribute (the client name, HELO and addresses are made printable on
 * the way in, this is the last line of defence). */
static void restr_attr(struct buf *b, const char *name, const char *value)
{
	buf_printf(b, "%s=", name);
	for (const char *p = value ? value : ""; *p; p++)
		buf_putc(b, *p == '\n' || *p == '\r' ? ' ' : *p);
	buf_putc(b, '\n');
}

/* Postfix's act_size: the content as received, lines counted with CRLF. */
static long long restr_act_size(const struct smtpd_session *s)
{
	long long n = (long long)s->content.len;

	for (size_t i = 0; i < s->content.len; i++)
		n += s->content.data[i] == '\n';
	return n;
}

/* name=xtext(value) (RFC 3461: '+', '=', controls and non-ASCII as +HH). */
static void restr_attr_xtext(struct buf *b, const char *name, const char *value)
{
	struct buf x = BUF_INIT;

	for (const unsigned char *p = (const unsigned char *)value; *p; p++)
		if (*p < '!' || *p > '~' || *p == '+' || *p == '=')
			buf_printf(&x, "+%02X", *p);
		else
			buf_putc(&x, *p);
	restr_attr(b, name, buf_str(&x));
	buf_free(&x);
}

/* The request, every attribute in Postfix's order (postfix.md §1.2),
 * empty when unknown. */
static void restr_policy_request(struct restr_eval *ev, const struct policy_service *p,
				 struct buf *b)
{
	struct smtpd_session *s = ev->s;
	struct buf t = BUF_INIT;
	int final = ev->stage == SMTPD_STAGE_DATA || ev->stage == SMTPD_STAGE_EOD;

	restr_attr(b, "request", "smtpd_access_policy");
	restr_attr(b, "protocol_state", restr_stage_state(ev));
	restr_attr(b, "protocol_name", s->esmtp ? "ESMTP" : "SMTP");
	restr_attr(b, "client_address", s->client.addr);
	restr_attr(b, "client_name", s->client.name);
	restr_attr(b, "client_port", s->client.port);
	restr_attr(b, "reverse_client_name", s->client.rev_name);
	restr_attr(b, "server_address", s->server_addr);
	restr_attr(b, "server_port", s->server_port);
	restr_attr(b, "helo_name", ev->helo);
	restr_attr(b, "sender", ev->sender);
	restr_attr(b, "recipient", ev->recipient);
	buf_printf(&t, "%zu", final ? s->env.nrcpt : 0);
	restr_attr(b, "recipient_count", buf_str(&t));
	restr_attr(b, "queue_id", s->have_qid ? s->qid : "");
	buf_reset(&t);
	if (s->in_mail)
		buf_printf(&t, "%x.%lx.%lx.%x", (unsigned)getpid(), (unsigned long)s->env.arrival,
			   (unsigned long)s->env.arrival_usec, (unsigned)s->txn_seq);
	restr_attr(b, "instance", buf_str(&t));
	buf_reset(&t);
	buf_printf(&t, "%lld", ev->stage == SMTPD_STAGE_EOD ? restr_act_size(s) : s->declared_size);
	restr_attr(b, "size", buf_str(&t));
	restr_attr(b, "etrn_domain", ev->etrn);
	restr_attr(b, "stress", "");
	restr_attr(b, "sasl_method", s->sasl_method ? s->sasl_method : "");
	restr_attr(b, "sasl_username", s->sasl_username ? s->sasl_username : "");
	restr_attr(b, "sasl_sender", s->sasl_sender ? s->sasl_sender : "");
	{ /* subject and issuer only when trusted; xtext (Postfix 2.2.11+) */
		struct buf subj = BUF_INIT, iss = BUF_INIT, fp = BUF_INIT, pk = BUF_INIT;
		if (smtpd_tls_ccert_status(s) == SMTPD_CCERT_TRUSTED)
			smtpd_tls_ccert_names(s, &subj, &iss);
		smtpd_tls_ccert_fingerprints(s, &fp, &pk);
		restr_attr_xtext(b, "ccert_subject", buf_str(&subj));
		restr_attr_xtext(b, "ccert_issuer", buf_str(&iss));
		restr_attr(b, "ccert_fingerprint", buf_str(&fp));
		restr_attr(b, "ccert_pubkey_fingerprint", buf_str(&pk));
		buf_free(&subj), buf_free(&iss), buf_free(&fp), buf_free(&pk);
	}
	restr_attr(b, "encryption_protocol", s->tls ? smtpd_tls_protocol(s) : "");
	restr_attr(b, "encryption_cipher", s->tls ? smtpd_tls_cipher(s) : "");
	buf_reset(&t);
	buf_printf(&t, "%d", smtpd_tls_bits(s, NULL));
	restr_attr(b, "encryption_keysize", buf_str(&t));
	restr_attr(b, "policy_context", p->policy_context);
	restr_attr(b, "compatibility_level", s->conf->compat_level);
	restr_attr(b, "mail_version", s->conf->mail_version);
	restr_attr(b, "tls_sni", smtpd_tls_sni(s) ? smtpd_tls_sni(s) : ""); /* Postfix 3.12 */
	buf_putc(b, '\n');
	buf_free(&t);
}

static int restr_policy(struct restr_eval *ev, const struct policy_service *p,
			const char *reply_name, const char *reply_class, enum restr_op def_acl)
{
	const struct restr_answer *a;
	struct buf req = BUF_INIT;
	char *action;
	int rc;

	if (ev->next >= ev->nmemo) {
		restr_policy_request(ev, p, &req);
		restr_tracef(ev, "policy %s: query (protocol_state=%s)", p->endpoint,
			     restr_stage_state(ev));
		ev->waiting = 1;
		policy_query(ev->s->base, p, buf_str(&req), restr_policy_cb, ev);
		buf_free(&req);
		return RESTR_PENDING;
	}
	a = &ev->memo[ev->next++];
	if (a->status != 0) {
		restr_tracef(ev, "policy %s: failed (%s), default_action %s", p->endpoint, a->v[0],
			     p->default_action);
		action = xstrdup(p->default_action);
	} else {
		restr_tracef(ev, "policy %s: action=%s", p->endpoint, a->v[0]);
		action = xstrdup(a->v[0]);
	}
	rc = restr_table_result(ev, p->endpoint, action, "policy query", reply_name, reply_class,
				def_acl);
	free(action);
	return rc;
}

/* ------------------------------------------------------------------ */
/* DNS lists                                                           */

/* "$name", "${name}", "${name?text}", "${name:text}" (Postfix mac_expand
 * subset) with the RBL attributes. */
struct restr_rbl_ctx {
	struct restr_eval *ev;
	const char *domain, *what, *class, *txt;
	char code[8];
};

static const char *restr_rbl_attr(const struct restr_rbl_ctx *x, const char *name)
{
	struct smtpd_session *s = x->ev->s;

	if (strcmp(name, "rbl_code") == 0)
		return x->code;
	if (strcmp(name, "rbl_domain") == 0)
		return x->domain;
	if (strcmp(name, "rbl_reason") == 0 || strcmp(name, "rbl_txt") == 0)
		return x->txt;
	if (strcmp(name, "rbl_what") == 0)
		return x->what;
	if (strcmp(name, "rbl_class") == 0)
		return x->class;
	if (strcmp(name, "client") == 0)
		return s->client.namaddr;
	if (strcmp(name, "client_address") == 0)
		return s->client.addr;
	if (strcmp(name, "client_name") == 0)
		return s->client.name;
	if (strcmp(name, "reverse_client_name") == 0)
		return s->client.rev_name;
	if (strcmp(name, "helo_name") == 0)
		return x->ev->helo ? x->ev->helo : "";
	if (strcmp(name, "sender") == 0)
		return x->ev->sender ? (*x->ev->sender ? x->ev->sender : "<>") : "";
	if (strcmp(name, "recipient") == 0)
		return x->ev->recipient ? x->ev->recipient : "";
	return NULL;
}

static int restr_rbl_expand(const struct restr_rbl_ctx *x, const char *tpl, struct buf *out)
{
	while (*tpl) {
		const char *v, *end;
		char name[64], op = 0;
		const char *alt = NULL;
		size_t n = 0, altlen = 0;

		if (*tpl != '$') {
			buf_putc(out, *tpl++);
			continue;
		}
		tpl++;
		if (*tpl == '$') {
			buf_putc(out, *tpl++);
			continue;
		}
		if (*tpl == '{' || *tpl == '(') {
			char close = *tpl == '{' ? '}' : ')';
			tpl++;
			while ((isalnum((unsigned char)*tpl) || *tpl == '_') &&
			       n < sizeof(name) - 1)
				name[n++] = *tpl++;
			name[n] = 0;
			if (*tpl == '?' || *tpl == ':') {
				int depth = 0;
				op = *tpl++;
				alt = tpl;
				for (end = tpl; *end && !(*end == close && depth == 0); end++)
					depth += *end == close - (close == '}' ? 2 : 1) ? 1
						 : *end == close			? -1
											: 0;
				if (*end != close)
					return -1;
				altlen = (size_t)(end - alt);
				tpl = end + 1;
			} else if (*tpl++ != close) {
				return -1;
			}
		} else {
			while ((isalnum((unsigned char)*tpl) || *tpl == '_') &&
			       n < sizeof(name) - 1)
				name[n++] = *tpl++;
			name[n] = 0;
		}
		if (n == 0 || (v = restr_rbl_attr(x, name)) == NULL) {
			msg_warn("unknown macro name \"%s\" in expansion request", name);
			return -1;
		}
		if (op == '?' && *v) {
			char *sub = xstrndup(alt, altlen);
			int rc = restr_rbl_expand(x, sub, out);
			free(sub);
			if (rc < 0)
				return -1;
		} else if (op == ':' && !*v) {
			char *sub = xstrndup(alt, altlen);
			int rc = restr_rbl_expand(x, sub, out);
			free(sub);
			if (rc < 0)
				return -1;
		} else if (op == 0) {
			buf_puts(out, v);
		}
	}
	return 0;
}

/* Postfix rbl_reject_reply(). */
static int restr_rbl_reply(struct restr_eval *ev, const char *rbl_domain, const char *what,
			   const char *reply_class, const char *txt)
{
	struct restr_rbl_ctx x = {ev, rbl_domain, what, reply_class, txt ? txt : "", ""};
	struct buf tpl = BUF_INIT, why = BUF_INIT, err = BUF_INIT, low = BUF_INIT;
	const char *text;
	char dsn[16];
	int rc = TABLE_NOTFOUND;

	snprintf(x.code, sizeof(x.code), "%d", ev->rc->rbl_code);
	buf_set(&low, rbl_domain);
	buf_lower(&low);
	for (size_t i = 0; i < ev->rc->nrbl_reply_maps && rc == TABLE_NOTFOUND; i++)
		rc = table_lookup(ev->rc->rbl_reply_maps[i], buf_str(&low), &tpl, &err);
	if (rc == TABLE_ERROR)
		return restr_lookup_error(ev, rbl_domain, buf_str(&err));
	if (rc != TABLE_FOUND || restr_rbl_expand(&x, buf_str(&tpl), &why) < 0) {
		if (rc == TABLE_FOUND)
			msg_warn("bad rbl reply template for domain %s: %s", rbl_domain,
				 buf_str(&tpl));
		buf_reset(&why);
		if (restr_rbl_expand(&x, ev->rc->default_rbl_reply, &why) < 0) {
			msg_warn("bad default_rbl_reply template: %s", ev->rc->default_rbl_reply);
			buf_set(&why, "bad");
		}
	}
	text = buf_str(&why);
	if ((text[0] != '4' && text[0] != '5') || !isdigit((unsigned char)text[1]) ||
	    !isdigit((unsigned char)text[2]) || text[3] != ' ') {
		msg_warn("rbl response code configuration error: %s", text);
		rc = restr_reject(ev, 0, 450, "4.7.1", "Service unavailable");
	} else {
		const char *rest = restr_dsn_split(dsn, "4.7.1", text + 4);
		restr_dsn_fix(dsn, reply_class);
		rc = restr_reject(ev, 0, atoi(text), dsn, "%s",
				  *rest ? rest : "Service unavailable");
	}
	buf_free(&tpl);
	buf_free(&why);
	buf_free(&err);
	buf_free(&low);
	return rc;
}

/* Does one A record match the "=filter" (a.b.c.d, with [n..m] or [n;m]
 * ranges per octet as Postfix 3.x allows)? */
static int restr_rbl_filter_octet(const char *pat, size_t len, int v)
{
	char buf[64];

	if (len >= sizeof(buf))
		return 0;
	memcpy(buf, pat, len);
	buf[len] = 0;
	if (buf[0] != '[')
		return atoi(buf) == v && buf[strspn(buf, "0123456789")] == 0;
	for (char *save = NULL, *w = strtok_r(buf + 1, ";]", &save); w;
	     w = strtok_r(NULL, ";]", &save)) {
		char *dots = strstr(w, "..");
		if (dots ? (v >= atoi(w) && v <= atoi(dots + 2)) : atoi(w) == v)
			return 1;
	}
	return 0;
}

static int restr_rbl_filter(const char *filter, const char *addr)
{
	struct inet_addr ip;
	const char *p = filter;

	if (inet_addr_parse(addr, &ip) < 0 || ip.family != AF_INET)
		return 0;
	for (int i = 0; i < 4; i++) {
		size_t n = 0;
		int depth = 0;
		while (p[n] &&
		       (depth || p[n] != '.' || (n > 0 && p[n - 1] == '.') || p[n + 1] == '.')) {
			if (p[n] == '[')
				depth = 1;
			else if (p[n] == ']')
				depth = 0;
			n++;
		}
		if (!restr_rbl_filter_octet(p, n, ip.bytes[i]))
			return 0;
		p += n;
		if (i < 3) {
			if (*p != '.')
				return 0;
			p++;
		}
	}
	return *p == 0;
}

/* Look "name.rbldomain" up: 1 listed (with *txt), 0 not, or RESTR_PENDING. */
static int restr_rbl_listed(struct restr_eval *ev, const char *query_name, const char *filter,
			    char **txt)
{
	const struct restr_answer *a;
	size_t me;
	int listed = 0, rc;

	*txt = NULL;
	if ((rc = restr_dns(ev, query_name, RESOLVER_T_A, &a)) == RESTR_PENDING)
		return rc;
	me = ev->next - 1;
	if (a->status == RESOLVER_TEMPFAIL || a->status == RESOLVER_PERMFAIL)
		msg_warn("%s: RBL lookup error: %s", query_name,
			 resolver_status_str((enum resolver_status)a->status));
	if (a->status != RESOLVER_FOUND)
		return 0;
	for (size_t i = 0; i < a->n && !listed; i++)
		listed = filter == NULL || restr_rbl_filter(filter, a->v[i]);
	if (!listed)
		return 0;
	(void)me;
	if ((rc = restr_dns(ev, query_name, RESOLVER_T_TXT, &a)) == RESTR_PENDING)
		return rc;
	if (a->status == RESOLVER_FOUND) { /* Postfix joins the TXT records with " / " */
		struct buf t = BUF_INIT;
		for (size_t i = 0; i < a->n && t.len < 500; i++)
			buf_printf(&t, "%s%s", i ? " / " : "", a->v[i]);
		if (t.len > 500)
			buf_truncate(&t, 500);
		*txt = buf_detach(&t);
	}
	return 1;
}

/* The query name for an address (reversed octets/nibbles) or a domain. */
static int restr_rbl_name(const char *what, int is_addr, const char *domain, struct buf *q)
{
	struct inet_addr ip;

	if (!is_addr) {
		buf_printf(q, "%s.%s", what, domain);
		return 0;
	}
	if (inet_addr_parse(what, &ip) < 0)
		return -1;
	if (ip.family == AF_INET) {
		buf_printf(q, "%u.%u.%u.%u.", ip.bytes[3], ip.bytes[2], ip.bytes[1], ip.bytes[0]);
	} else {
		for (int i = 15; i >= 0; i--)
			buf_printf(q, "%x.%x.", ip.bytes[i] & 15, ip.bytes[i] >> 4);
	}
	buf_puts(q, domain);
	return 0;
}

/* reject_rbl_client / permit_dnswl_client (is_addr) and the RHS lists. */
static int restr_dnsbl(struct restr_eval *ev, const struct restr_item *it, const char *what,
		       const char *subject, int is_addr, const char *reply_class, int permit)
{
	char *domain = xstrdup(it->arg), *filter = strchr(domain, '=');
	struct buf q = BUF_INIT;
	char *txt = NULL;
	int rc = RESTR_DUNNO, listed;

	if (filter)
		*filter++ = 0;
	if (subject == NULL || *subject == 0 || (!is_addr && subject[0] == '['))
		goto out;
	if (restr_rbl_name(subject, is_addr, domain, &q) < 0)
		goto out;
	if ((listed = restr_rbl_listed(ev, buf_str(&q), filter, &txt)) == RESTR_PENDING) {
		rc = RESTR_PENDING;
	} else if (listed && permit) {
		rc = restr_permit(ev, it->name, reply_class, what, domain);
	} else if (listed) {
		rc = restr_rbl_reply(ev, domain, what, reply_class, txt);
	}
out:
	free(txt);
	free(domain);
	buf_free(&q);
	return rc;
}

/* ------------------------------------------------------------------ */
/* names and addresses                                                 */

/* Postfix valid_hostname() (with the trailing-dot cut of dup_if_truncate). */
static int restr_valid_hostname(const char *name)
{
	struct buf err = BUF_INIT;
	int ok = addr_domain_check(name, 0, &err) == ADDR_OK;

	buf_free(&err);
	return ok;
}

static char *restr_cut_dot(const char *name)
{
	size_t n = strlen(name);

	if (n > 1 && name[n - 1] == '.' && name[n - 2] != '.')
		return xstrndup(name, n - 1);
	return xstrdup(name);
}

static int restr_valid_hostaddr(const char *s)
{
	struct inet_addr ip;

	if (strncasecmp(s, "IPv6:", 5) == 0)
		return inet_addr_parse(s + 5, &ip) == 0 && ip.family == AF_INET6;
	return inet_addr_parse(s, &ip) == 0 && ip.family == AF_INET;
}

static int restr_invalid_hostaddr(struct restr_eval *ev, const char *addr, const char *reply_name,
				  const char *reply_class)
{
	size_t n = strlen(addr);
	char *test = addr[0] == '[' && n > 2 && addr[n - 1] == ']' ? xstrndup(addr + 1, n - 2)
								   : xstrdup(addr);
	int rc = RESTR_DUNNO;

	if (!restr_valid_hostaddr(test))
		rc = restr_reject(ev, 0, ev->rc->bad_name_code, "5.5.2",
				  "<%s>: %s rejected: invalid ip address", reply_name, reply_class);
	free(test);
	return rc;
}

static int restr_invalid_hostname(struct restr_eval *ev, const char *name)
{
	char *test = restr_cut_dot(name);
	int rc = RESTR_DUNNO;

	if (!restr_valid_hostname(test) && !restr_valid_hostaddr(test))
		rc = restr_reject(ev, 0, ev->rc->bad_name_code, "5.5.2",
				  "<%s>: %s rejected: Invalid name", name, RESTR_NAME_HELO);
	free(test);
	return rc;
}

static int restr_non_fqdn_hostname(struct restr_eval *ev, const char *name)
{
	char *test = restr_cut_dot(name);
	int rc = RESTR_DUNNO;

	if (!restr_valid_hostname(test) || strchr(test, '.') == NULL)
		rc = restr_reject(ev, 0, ev->rc->non_fqdn_code, "5.5.2",
				  "<%s>: %s rejected: need fully-qualified hostname", name,
				  RESTR_NAME_HELO);
	free(test);
	return rc;
}

static int restr_non_fqdn_address(struct restr_eval *ev, const char *addr, const char *reply_class)
{
	const char *at = strrchr(addr, '@');
	const char *domain = at ? at + 1 : "";
	char *test;
	int rc = RESTR_DUNNO;

	if (domain[0] == '[' && domain[strlen(domain) - 1] == ']')
		return RESTR_DUNNO;
	test = restr_cut_dot(domain);
	if (!*test || !restr_valid_hostname(test) || strchr(test, '.') == NULL)
		rc = restr_reject(ev, 0, ev->rc->non_fqdn_code, "4.5.2",
				  "<%s>: %s rejected: need fully-qualified address", addr,
				  reply_class);
	free(test);
	return rc;
}

/* Lookups of name with the types in order until one is found: the last
 * status seen, FOUND/NULLMX as soon as one answers so, RESTR_PENDING. */
static int restr_dns_any(struct restr_eval *ev, const char *name, const int *types, size_t n,
			 int *status)
{
	const struct restr_answer *a;
	int tempfail = 0, rc;

	for (size_t i = 0; i < n; i++) {
		if ((rc = restr_dns(ev, name, types[i], &a)) == RESTR_PENDING)
			return rc;
		if (a->status == RESOLVER_FOUND || a->status == RESOLVER_NULLMX) {
			*status = a->status;
			return 0;
		}
		tempfail |= a->status == RESOLVER_TEMPFAIL;
	}
	*status = tempfail ? RESOLVER_TEMPFAIL : RESOLVER_NXDOMAIN;
	return 0;
}

/* reject_unknown_helo_hostname (Postfix reject_unknown_hostname()). */
static int restr_unknown_hostname(struct restr_eval *ev, const char *name)
{
	static const int types[] = {RESOLVER_T_A, RESOLVER_T_AAAA, RESOLVER_T_MX};
	int st, rc;

	if ((rc = restr_dns_any(ev, name, types, 3, &st)) == RESTR_PENDING)
		return rc;
	if (st == RESOLVER_FOUND || st == RESOLVER_NULLMX)
		return RESTR_DUNNO;
	if (st != RESOLVER_TEMPFAIL)
		return restr_reject(ev, 0, ev->rc->unk_name_code, "4.7.1",
				    "<%s>: %s rejected: Host not found", name, RESTR_NAME_HELO);
	return RESTR_DEFER_IF_PERMIT(ev, ev->rc->unk_name_tf_defer, 450, "4.7.1",
				     "<%s>: %s rejected: Host not found", name, RESTR_NAME_HELO);
}

/* reject_unknown_{sender,recipient}_domain (Postfix reject_unknown_mailhost()). */
static int restr_unknown_address(struct restr_eval *ev, const char *raw, const char *canon,
				 const char *reply_class)
{
	static const int types[] = {RESOLVER_T_MX, RESOLVER_T_A, RESOLVER_T_AAAA};
	const char *at = strrchr(canon, '@');
	const char *domain = at ? at + 1 : "";
	int sender = strcmp(reply_class, RESTR_NAME_SENDER) == 0;
	int st, rc, final;
	struct buf err = BUF_INIT;

	if (*domain == 0 || (domain[0] == '[' && domain[strlen(domain) - 1] == ']'))
		return RESTR_DUNNO;
	final = smtpd_check_domain_final(ev->s, domain, &err);
	if (final < 0) {
		rc = restr_lookup_error(ev, raw, buf_str(&err));
		buf_free(&err);
		return rc;
	}
	buf_free(&err);
	if (final)
		return RESTR_DUNNO;
	if ((rc = restr_dns_any(ev, domain, types, 3, &st)) == RESTR_PENDING)
		return rc;
	if (st == RESOLVER_FOUND)
		return RESTR_DUNNO;
	if (st == RESOLVER_NULLMX)
		return restr_reject(ev, 0, sender ? 550 : 556, sender ? "4.7.27" : "4.1.10",
				    "<%s>: %s rejected: Domain %s does not accept mail (nullMX)",
				    raw, reply_class, domain);
	if (st != RESOLVER_TEMPFAIL)
		return restr_reject(ev, 0, ev->rc->unk_addr_code, sender ? "4.1.8" : "4.1.2",
				    "<%s>: %s rejected: Domain not found", raw, reply_class);
	return RESTR_DEFER_IF_PERMIT(ev, ev->rc->unk_addr_tf_defer, 450, sender ? "4.1.8" : "4.1.2",
				     "<%s>: %s rejected: Domain not found", raw, reply_class);
}

/* Is ip one of this host's interface addresses (Postfix own_inet_addr)? */
static int restr_own_addr(const char *ip)
{
	struct ifaddrs *ifs = NULL;
	struct inet_addr want, have;
	int found = 0;

	if (inet_addr_parse(ip, &want) < 0 || getifaddrs(&ifs) < 0)
		return 0;
	for (struct ifaddrs *i = ifs; i && !found; i = i->ifa_next) {
		if (i->ifa_addr == NULL || i->ifa_addr->sa_family != want.family)
			continue;
		have.family = want.family;
		if (want.family == AF_INET)
			memcpy(have.bytes, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, 4);
		else
			memcpy(have.bytes, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, 16);
		found = memcmp(have.bytes, want.bytes, want.family == AF_INET ? 4 : 16) == 0;
	}
	freeifaddrs(ifs);
	return found;
}

/* permit_mx_backup: we are an MX host of the recipient domain. */
static int restr_mx_backup(struct restr_eval *ev)
{
	const char *at = strrchr(ev->rcpt_canon, '@');
	const char *domain = at ? at + 1 : "";
	const struct restr_answer *a;
	struct buf err = BUF_INIT;
	int final, rc;
	size_t me;

	if (*domain == 0)
		return RESTR_OK;
	if ((final = smtpd_check_domain_final(ev->s, domain, &err)) != 0) {
		rc = final < 0 ? restr_lookup_error(ev, ev->recipient, buf_str(&err)) : RESTR_OK;
		buf_free(&err);
		return rc;
	}
	buf_free(&err);
	if (domain[0] == '[')
		return RESTR_DUNNO;
	if ((rc = restr_dns(ev, domain, RESOLVER_T_MX, &a)) == RESTR_PENDING)
		return rc;
	me = ev->next - 1;
	if (a->status == RESOLVER_TEMPFAIL || a->status == RESOLVER_PERMFAIL) {
		restr_defer_if(&ev->dir, 0, 450, "4.4.4",
			       "<%s>: %s rejected: Unable to look up mail exchanger information",
			       ev->recipient, RESTR_NAME_RECIPIENT);
		return RESTR_DUNNO;
	}
	if (a->status != RESOLVER_FOUND) /* no MX: a CNAME for us, perhaps */
		return RESTR_DUNNO;
	/* Postfix 2.3+: we must be listed, but not among the best (primary)
	 * MX hosts; with permit_mx_backup_networks, every address of the
	 * primary MX hosts must be in it. */
	{
		int best = ev->memo[me].n ? ev->memo[me].pref[0] : 0, me_any = 0, me_best = 0;
		for (size_t i = 0; i < ev->memo[me].n; i++) {
			char *host = xstrdup(ev->memo[me].v[i]);
			int pref = ev->memo[me].pref[i], mine = 0;
			if (strcasecmp(host, ev->s->conf->myhostname) == 0 ||
			    smtpd_check_domain_local(ev->s, host, &err) > 0) {
				mine = 1;
			} else {
				const struct restr_answer *aa;
				if ((rc = restr_dns(ev, host, RESOLVER_T_A, &aa)) ==
				    RESTR_PENDING) {
					free(host);
					buf_free(&err);
					return rc;
				}
				for (size_t k = 0; aa->status == RESOLVER_FOUND && k < aa->n; k++)
					mine |= restr_own_addr(aa->v[k]);
				if (pref == best && ev->rc->perm_mx_set)
					for (size_t k = 0;
					     aa->status == RESOLVER_FOUND && k < aa->n; k++)
						if (matchlist_addr(ev->rc->perm_mx_networks,
								   aa->v[k], &err) <= 0)
							me_best = 1; /* a primary outside: no */
			}
			free(host);
			me_any |= mine;
			me_best |= mine && pref == best;
		}
		buf_free(&err);
		return me_any && !me_best ? RESTR_OK : RESTR_DUNNO;
	}
}

/* ------------------------------------------------------------------ */
/* the restrictions                                                    */

static int restr_item_eval(struct restr_eval *ev, const struct restr_item *it,
			   const char *reply_name, const char *reply_class, enum restr_op def_acl);

/* An access check of kind op with table t. */
static int restr_access(struct restr_eval *ev, enum restr_op op, struct table *t,
			const char *reply_name, const char *reply_class, enum restr_op def_acl)
{
	struct smtpd_session *s = ev->s;
	struct table_keys k = TABLE_KEYS_INIT;
	int found, rc = RESTR_DUNNO;
	const char *name = restr_op_name(op);

	switch (op) {
	case RO_CLIENT_ACCESS:
	case RO_REVERSE_ACCESS:
		table_keys_client(&k, op == RO_CLIENT_ACCESS ? s->client.name : s->client.rev_name,
				  s->client.addr, restr_parent_style(ev));
		rc = restr_access_keys(ev, t, &k, s->client.namaddr, s->client.namaddr,
				       RESTR_NAME_CLIENT, def_acl, &found);
		break;
	case RO_CLIENT_A_ACCESS:
	case RO_REVERSE_A_ACCESS:
	case RO_CLIENT_MX_ACCESS:
	case RO_REVERSE_MX_ACCESS:
	case RO_CLIENT_NS_ACCESS:
	case RO_REVERSE_NS_ACCESS: {
		const char *n = op == RO_CLIENT_A_ACCESS || op == RO_CLIENT_MX_ACCESS ||
					op == RO_CLIENT_NS_ACCESS
				    ? s->client.name
				    : s->client.rev_name;
		if (n && strcmp(n, "unknown") != 0)
			rc = restr_forbid_ok(ev, name,
					     restr_server_access(ev, t, n, restr_server_qtype(op),
								 s->client.namaddr,
								 RESTR_NAME_CLIENT, def_acl),
					     s->client.namaddr);
		break;
	}
	case RO_HELO_ACCESS:
		if (ev->helo)
			rc = restr_domain_access(ev, t, ev->helo, ev->helo, RESTR_NAME_HELO,
						 def_acl, &found);
		break;
	case RO_HELO_A_ACCESS:
	case RO_HELO_MX_ACCESS:
	case RO_HELO_NS_ACCESS:
		if (ev->helo)
			rc = restr_forbid_ok(ev, name,
					     restr_server_access(ev, t, ev->helo,
								 restr_server_qtype(op), ev->helo,
								 RESTR_NAME_HELO, def_acl),
					     ev->helo);
		break;
	case RO_SENDER_ACCESS:
		if (ev->sender && *ev->sender)
			rc = restr_mail_access(ev, t, ev->sender_canon, ev->sender,
					       RESTR_NAME_SENDER, def_acl);
		else if (ev->sender)
			rc = restr_null_access(ev, t, ev->sender, RESTR_NAME_SENDER, def_acl);
		break;
	case RO_SENDER_A_ACCESS:
	case RO_SENDER_MX_ACCESS:
	case RO_SENDER_NS_ACCESS:
		if (ev->sender && *ev->sender)
			rc = restr_forbid_ok(
			    ev, name,
			    restr_server_access(ev, t, ev->sender_canon, restr_server_qtype(op),
						ev->sender, RESTR_NAME_SENDER, def_acl),
			    ev->sender);
		break;
	case RO_RECIPIENT_ACCESS:
		if (ev->recipient)
			rc = restr_mail_access(ev, t, ev->rcpt_canon, ev->recipient,
					       RESTR_NAME_RECIPIENT, def_acl);
		break;
	case RO_RECIPIENT_A_ACCESS:
	case RO_RECIPIENT_MX_ACCESS:
	case RO_RECIPIENT_NS_ACCESS:
		if (ev->recipient && *ev->recipient)
			rc = restr_forbid_ok(
			    ev, name,
			    restr_server_access(ev, t, ev->rcpt_canon, restr_server_qtype(op),
						ev->recipient, RESTR_NAME_RECIPIENT, def_acl),
			    ev->recipient);
		break;
	case RO_ETRN_ACCESS:
		if (ev->etrn)
			rc = restr_domain_access(ev, t, ev->etrn, ev->etrn, RESTR_NAME_ETRN,
						 def_acl, &found);
		break;
	case RO_SASL_ACCESS: /* the login name, as a whole */
		if (s->sasl_username) {
			table_keys_add(&k, s->sasl_username, strlen(s->sasl_username), 1);
			rc = restr_access_keys(ev, t, &k, s->sasl_username, s->sasl_username,
					       "SASL login name", def_acl, &found);
		}
		break;
	case RO_CCERT_ACCESS: { /* certificate, then public key fingerprint */
		struct buf fp = BUF_INIT, pk = BUF_INIT;
		smtpd_tls_ccert_fingerprints(s, &fp, &pk);
		if (fp.len) {
			table_keys_add(&k, buf_str(&fp), fp.len, 1);
			table_keys_add(&k, buf_str(&pk), pk.len, 1);
			rc = restr_access_keys(ev, t, &k, buf_str(&fp), s->client.namaddr,
					       RESTR_NAME_CLIENT, def_acl, &found);
		}
		buf_free(&fp);
		buf_free(&pk);
		break;
	}
	default:
		break;
	}
	table_keys_free(&k);
	return rc;
}

static int restr_unauth_dest(struct restr_eval *ev, int defer)
{
	int cls = smtpd_check_rcpt_authorized(ev);

	if (cls < 0)
		return RESTR_REJECT;
	if (cls > 0)
		return RESTR_DUNNO;
	/* defer_unauth_destination: as reject_unauth_destination, with a
	 * temporary code (Postfix 3.x). */
	return restr_reject(ev, 0, defer ? 454 : ev->rc->relay_code, defer ? "4.7.1" : "5.7.1",
			    "<%s>: Relay access denied", ev->recipient);
}

/* reject_sender_login_mismatch and its _authenticated_, _unauthenticated_
 * and _known_ forms (Postfix reject_auth_sender_login_mismatch() and
 * reject_unauth_sender_login_mismatch()), smtpd_sender_login_maps. */
static int restr_login_mismatch(struct restr_eval *ev, const struct restr_item *it)
{
	struct smtpd_session *s = ev->s;
	const char *n = it->name;
	int auth_part = strcmp(n, "reject_unauthenticated_sender_login_mismatch") != 0;
	int unauth_part = strcmp(n, "reject_authenticated_sender_login_mismatch") != 0;
	int known_only = strcmp(n, "reject_known_sender_login_mismatch") == 0;
	struct buf owners = BUF_INIT, err = BUF_INIT;
	int found, rc = RESTR_DUNNO;

	if (ev->sender == NULL || *ev->sender == 0 || ev->sender_canon == NULL)
		return RESTR_DUNNO;
	found = smtpd_sasl_sender_owners(s, ev->sender_canon, &owners, &err);
	if (found < 0)
		rc = restr_lookup_error(ev, ev->sender, buf_str(&err));
	else if (s->sasl_username && auth_part && (found || !known_only) &&
		 !(found && smtpd_sasl_owner_match(buf_str(&owners), s->sasl_username)))
		rc = restr_reject(ev, 0, 553, "5.7.1",
				  "<%s>: Sender address rejected: not owned by user %s", ev->sender,
				  s->sasl_username);
	else if (!s->sasl_username && unauth_part && found)
		rc = restr_reject(ev, 0, 553, "5.7.1",
				  "<%s>: Sender address rejected: not logged in", ev->sender);
	buf_free(&owners);
	buf_free(&err);
	return rc;
}

static int restr_builtin(struct restr_eval *ev, const struct restr_item *it, const char *reply_name,
			 const char *reply_class, enum restr_op def_acl)
{
	struct smtpd_session *s = ev->s;
	const struct restr_conf *rc = ev->rc;
	int st;

	switch (it->op) {
	case RO_PERMIT:
		return restr_permit(ev, "permit", reply_class, reply_name, NULL);
	case RO_REJECT:
		return restr_reject(ev, 0, rc->reject_code, "5.7.1",
				    "<%s>: %s rejected: Access denied", reply_name, reply_class);
	case RO_DEFER:
		return restr_reject(ev, 0, rc->defer_code, "4.3.2",
				    "<%s>: %s rejected: Try again later", reply_name, reply_class);
	case RO_DEFER_IF_PERMIT:
		return RESTR_DEFER_IF_PERMIT(ev, 0, rc->defer_code, "4.7.0",
					     "<%s>: %s rejected: defer_if_permit requested",
					     reply_name, reply_class);
	case RO_DEFER_IF_REJECT:
		restr_defer_if(&ev->dir, 0, rc->defer_code, "4.7.0",
			       "<%s>: %s rejected: defer_if_reject requested", reply_name,
			       reply_class);
		return RESTR_DUNNO;
	case RO_SLEEP:
		return restr_sleep(ev, it->arg);
	case RO_POLICY:
		return restr_policy(ev, it->policy, reply_name, reply_class, def_acl);
	case RO_UNAUTH_PIPELINING:
		if (s->ill_pipelining) /* smtpd_cmd.c cmd_pipelining() */
			return restr_reject(
			    ev, 0, 503, "5.5.0",
			    "<%s>: %s rejected: Improper use of SMTP command pipelining",
			    reply_name, reply_class);
		return RESTR_DUNNO;
	case RO_PLAINTEXT:
		if (s->tls)
			return RESTR_DUNNO;
		return restr_reject(ev, 0, rc->plaintext_code, "4.7.1",
				    "Session encryption is required");
	case RO_MULTI_RCPT_BOUNCE:
		if (ev->sender && *ev->sender == 0 &&
		    s->env.nrcpt > (ev->stage == SMTPD_STAGE_DATA ? 1u : 0u))
			return restr_reject(ev, 0, rc->mul_rcpt_code, "5.5.3",
					    "<%s>: %s rejected: Multi-recipient bounce", reply_name,
					    reply_class);
		return RESTR_DUNNO;
	case RO_PERMIT_MYNETWORKS: {
		struct buf err = BUF_INIT;
		st = matchlist_host(s->conf->mynetworks, s->client.name, s->client.addr, &err);
		if (st < 0)
			st = restr_lookup_error(ev, s->client.namaddr, buf_str(&err));
		else
			st = st ? restr_permit(ev, it->name, reply_class, reply_name, NULL)
				: RESTR_DUNNO;
		buf_free(&err);
		return st;
	}
	case RO_PERMIT_INET_INTERFACES:
		return restr_own_addr(s->client.addr)
			   ? restr_permit(ev, it->name, reply_class, reply_name, NULL)
			   : RESTR_DUNNO;
	case RO_PERMIT_SASL:
		if (s->sasl_username)
			return restr_permit(ev, it->name, reply_class, reply_name, NULL);
		return RESTR_DUNNO;
	case RO_SENDER_LOGIN_MISMATCH:
		return restr_login_mismatch(ev, it);
	case RO_PERMIT_TLS_ALL: /* any certificate with a chain to smtpd_tls_CAfile */
		if (smtpd_tls_ccert_status(s) == SMTPD_CCERT_TRUSTED)
			return restr_permit(ev, it->name, reply_class, reply_name, NULL);
		return RESTR_DUNNO;
	case RO_PERMIT_TLS: { /* ... whose fingerprint is in relay_clientcerts */
		struct buf err = BUF_INIT;
		st = smtpd_tls_ccert_relay(s, &err);
		if (st < 0)
			st = restr_lookup_error(ev, s->client.namaddr, buf_str(&err));
		else
			st = st ? restr_permit(ev, it->name, reply_class, reply_name, NULL)
				: RESTR_DUNNO;
		buf_free(&err);
		return st;
	}
	case RO_UNKNOWN_CLIENT:
		if (s->client.name_status == 0)
			return RESTR_DUNNO;
		return restr_reject(
		    ev, 0, s->client.name_status >= 5 ? rc->unk_client_code : 450, "4.7.25",
		    "Client host rejected: cannot find your hostname, [%s]", s->client.addr);
	case RO_UNKNOWN_REVERSE_CLIENT:
		if (s->client.rev_status == 0)
			return RESTR_DUNNO;
		return restr_reject(ev, 0, s->client.rev_status >= 5 ? rc->unk_client_code : 450,
				    "4.7.1",
				    "Client host rejected: cannot find your reverse hostname, [%s]",
				    s->client.addr);
	case RO_RBL_CLIENT:
	case RO_DNSWL_CLIENT:
		return restr_dnsbl(ev, it, s->client.addr, s->client.addr, 1, RESTR_NAME_CLIENT,
				   it->op == RO_DNSWL_CLIENT);
	case RO_RHSBL_CLIENT:
	case RO_RHSWL_CLIENT:
		if (strcasecmp(s->client.name, "unknown") == 0)
			return RESTR_DUNNO;
		return restr_dnsbl(ev, it, s->client.name, s->client.name, 0, RESTR_NAME_CLIENT,
				   it->op == RO_RHSWL_CLIENT);
	case RO_RHSBL_REVERSE_CLIENT:
		if (strcasecmp(s->client.rev_name, "unknown") == 0)
			return RESTR_DUNNO;
		return restr_dnsbl(ev, it, s->client.rev_name, s->client.rev_name, 0,
				   RESTR_NAME_CLIENT, 0);
	case RO_INVALID_HELO:
		if (ev->helo == NULL)
			return RESTR_DUNNO;
		return ev->helo[0] == '['
			   ? restr_invalid_hostaddr(ev, ev->helo, ev->helo, RESTR_NAME_HELO)
			   : restr_invalid_hostname(ev, ev->helo);
	case RO_NON_FQDN_HELO:
		if (ev->helo == NULL)
			return RESTR_DUNNO;
		return ev->helo[0] == '['
			   ? restr_invalid_hostaddr(ev, ev->helo, ev->helo, RESTR_NAME_HELO)
			   : restr_non_fqdn_hostname(ev, ev->helo);
	case RO_UNKNOWN_HELO:
		if (ev->helo == NULL)
			return RESTR_DUNNO;
		return ev->helo[0] == '['
			   ? restr_invalid_hostaddr(ev, ev->helo, ev->helo, RESTR_NAME_HELO)
			   : restr_unknown_hostname(ev, ev->helo);
	case RO_PERMIT_NAKED_IP:
		msg_warn("restriction permit_naked_ip_address is deprecated. Use permit_mynetworks "
			 "instead");
		if (ev->helo && ev->helo[strspn(ev->helo, "0123456789.:")] == 0 &&
		    (st = restr_invalid_hostaddr(ev, ev->helo, ev->helo, RESTR_NAME_HELO)) ==
			RESTR_DUNNO)
			return restr_permit(ev, it->name, reply_class, reply_name, NULL);
		return RESTR_DUNNO;
	case RO_RHSBL_HELO:
		return ev->helo ? restr_dnsbl(ev, it, ev->helo, ev->helo, 0, RESTR_NAME_HELO, 0)
				: RESTR_DUNNO;
	case RO_NON_FQDN_SENDER:
		return ev->sender && *ev->sender
			   ? restr_non_fqdn_address(ev, ev->sender, RESTR_NAME_SENDER)
			   : RESTR_DUNNO;
	case RO_UNKNOWN_SENDER_DOMAIN:
		return ev->sender && *ev->sender
			   ? restr_unknown_address(ev, ev->sender, ev->sender_canon,
						   RESTR_NAME_SENDER)
			   : RESTR_DUNNO;
	case RO_RHSBL_SENDER:
		if (ev->sender && *ev->sender && strrchr(ev->sender_canon, '@'))
			return restr_dnsbl(ev, it, ev->sender, strrchr(ev->sender_canon, '@') + 1,
					   0, RESTR_NAME_SENDER, 0);
		return RESTR_DUNNO;
	case RO_UNLISTED_SENDER:
		return ev->sender && *ev->sender ? smtpd_check_sender_maps(ev) : RESTR_DUNNO;
	case RO_PERMIT_AUTH_DEST:
		if (ev->recipient == NULL)
			return RESTR_DUNNO;
		st = smtpd_check_rcpt_authorized(ev);
		return st < 0	? RESTR_REJECT
		       : st > 0 ? restr_permit(ev, it->name, reply_class, reply_name, NULL)
				: RESTR_DUNNO;
	case RO_REJECT_UNAUTH_DEST:
	case RO_DEFER_UNAUTH_DEST:
		return ev->recipient ? restr_unauth_dest(ev, it->op == RO_DEFER_UNAUTH_DEST)
				     : RESTR_DUNNO;
	case RO_CHECK_RELAY_DOMAINS:
		if (ev->recipient == NULL)
			return RESTR_DUNNO;
		if ((st = smtpd_check_rcpt_authorized(ev)) != 0)
			return st < 0 ? RESTR_REJECT : RESTR_OK;
		return restr_reject(ev, 0, rc->relay_code, "5.7.1",
				    "<%s>: %s rejected: Relay access denied", reply_name,
				    reply_class);
	case RO_PERMIT_MX_BACKUP:
		if (ev->recipient == NULL)
			return RESTR_DUNNO;
		st = restr_mx_backup(ev);
		return st == RESTR_OK ? restr_permit(ev, it->name, reply_class, reply_name, NULL)
				      : st;
	case RO_NON_FQDN_RCPT:
		return ev->recipient
			   ? restr_non_fqdn_address(ev, ev->recipient, RESTR_NAME_RECIPIENT)
			   : RESTR_DUNNO;
	case RO_UNKNOWN_RCPT_DOMAIN:
		return ev->recipient ? restr_unknown_address(ev, ev->recipient, ev->rcpt_canon,
							     RESTR_NAME_RECIPIENT)
				     : RESTR_DUNNO;
	case RO_RHSBL_RCPT:
		if (ev->recipient && strrchr(ev->rcpt_canon, '@'))
			return restr_dnsbl(ev, it, ev->recipient, strrchr(ev->rcpt_canon, '@') + 1,
					   0, RESTR_NAME_RECIPIENT, 0);
		return RESTR_DUNNO;
	case RO_UNLISTED_RCPT:
		return ev->recipient && *ev->recipient ? smtpd_check_rcpt_maps(ev) : RESTR_DUNNO;
	case RO_CLASS:
		return restr_list_eval(ev, &rc->classes[it->cls].list, reply_name, reply_class,
				       def_acl);
	case RO_IMPLICIT:
		if (def_acl == RO_IMPLICIT) {
			msg_warn("specify one of (check_client_access, check_helo_access, "
				 "check_sender_access, check_recipient_access, check_etrn_access) "
				 "before %s restriction \"%s\"",
				 reply_class, it->arg);
			return restr_server_error(ev);
		}
		return restr_access(ev, def_acl, it->table, reply_name, reply_class, def_acl);
	default:
		return restr_access(ev, it->op, it->table, reply_name, reply_class, def_acl);
	}
}

static int restr_item_eval(struct restr_eval *ev, const struct restr_item *it,
			   const char *reply_name, const char *reply_class, enum restr_op def_acl)
{
	int rc;

	restr_tracef(ev, "%s%s%s", it->name, it->arg ? " " : "", it->arg ? it->arg : "");
	rc = restr_builtin(ev, it, reply_name, reply_class, def_acl);
	if (rc != RESTR_PENDING && it->op != RO_CLASS)
		restr_tracef(ev, "  => %s",
			     rc == RESTR_OK	  ? "OK (permit)"
			     : rc == RESTR_REJECT ? buf_str(&ev->reply)
						  : "DUNNO");
	return rc;
}

/* Postfix generic_checks(). */
int restr_list_eval(struct restr_eval *ev, const struct restr_list *l, const char *reply_name,
		    const char *reply_class, enum restr_op def_acl)
{
	int saved = ev->recursion++, rc = RESTR_DUNNO;

	if (ev->recursion > RESTR_MAX_RECURSION) {
		msg_warn("restriction class %s causes unreasonable recursion", l->param);
		ev->recursion = saved;
		return restr_server_error(ev);
	}
	for (size_t i = 0; i < l->n && !ev->discard; i++) {
		const struct restr_item *it = &l->v[i];
		if (it->op == RO_WARN_IF_REJECT) {
			if (ev->warn_if_reject == 0)
				ev->warn_if_reject = ev->recursion;
			restr_tracef(ev, "warn_if_reject");
			continue;
		}
		rc = restr_item_eval(ev, it, reply_name, reply_class, def_acl);
		if (ev->warn_if_reject >= ev->recursion)
			ev->warn_if_reject = 0;
		if (rc != RESTR_DUNNO)
			break;
		if (ev->dip.active && ev->dir.active)
			break;
	}
	ev->recursion = saved;
	return rc;
}

/* A table value that names restrictions ("reject_non_fqdn_sender,
 * permit" or a class): parsed now, without tables (Postfix refuses
 * those, see above). */
static int restr_list_words(struct restr_eval *ev, const char *value, const char *reply_name,
			    const char *reply_class, enum restr_op def_acl)
{
	struct cfg_list items = {NULL, 0};
	struct restr_list l = {"(table value)", NULL, 0};
	struct buf err = BUF_INIT;
	int rc = RESTR_DUNNO;

	if (cfg_list_split(value, &items, &err) < 0 || items.count == 0) {
		if (items.count == 0 && err.len == 0) {
			msg_warn("access table entry %s has empty value", value);
			rc = RESTR_OK;
		} else {
			rc = restr_server_error(ev);
		}
		goto out;
	}
	l.v = xcalloc(items.count, sizeof(*l.v));
	for (size_t i = 0; i < items.count; i++) {
		struct restr_item *it = &l.v[l.n];
		int arg;
		if (restr_name_find(ev->rc, items.items[i], it, &arg) < 0) {
			msg_warn("unknown smtpd restriction: \"%s\"", items.items[i]);
			rc = restr_server_error(ev);
			goto out;
		}
		if (arg) {
			if (i + 1 >= items.count ||
			    (arg != 2 /* domain */ && arg != 4 /* number */)) {
				msg_warn(
				    "restriction %s needs an argument that a table value cannot "
				    "give",
				    items.items[i]);
				rc = restr_server_error(ev);
				goto out;
			}
			it->arg = xstrdup(items.items[++i]);
		}
		l.n++;
	}
	rc = restr_list_eval(ev, &l, reply_name, reply_class, def_acl);
out:
	for (size_t i = 0; i < l.n; i++)
		free(l.v[i].arg);
	free(l.v);
	cfg_list_free(&items);
	buf_free(&err);
	return rc;
}
