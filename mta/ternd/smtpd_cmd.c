/* smtpd_cmd.c - the SMTP command table and the envelope commands: HELO,
 * EHLO, MAIL, RCPT, DATA, BDAT, RSET, NOOP, VRFY, ETRN, QUIT, XCLIENT and
 * unknown input, with Postfix 3.7's reply texts, error counting
 * (smtpd_hard_error_limit), the junk command limit and the statistics of
 * the disconnect line. ESMTP parameters: SIZE BODY SMTPUTF8 RET ENVID
 * (MAIL), NOTIFY ORCPT (RCPT), RFC 1870/6152/6531/3461.
 * Pitfall: a command returns -1 only for a 4xx/5xx reply (it counts).
 */
#include "smtpd_int.h"
#include "smtpd_milter.h"

#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define SMTPD_F_JUNK 0x1 /* counts against smtpd_junk_command_limit */

struct smtpd_cmd {
	const char *name;
	enum smtpd_cmd_id id;
	int (*fn)(struct smtpd_session *s, int argc, char **argv, const char *rest);
	int flags;
};

/* ------------------------------------------------------------------ */
/* helpers                                                             */

static void cmd_free_str(char **p)
{
	free(*p);
	*p = NULL;
}

void smtpd_txn_reset(struct smtpd_session *s)
{
	smtpd_milter_abort(s); /* milters in the middle of this message */
	queue_env_free(&s->env);
	queue_env_init(&s->env);
	cmd_free_str(&s->sender_raw);
	cmd_free_str(&s->first_rcpt);
	s->in_mail = 0;
	s->have_qid = 0;
	s->qid[0] = 0;
	s->rcpt_total = 0;
	s->declared_size = 0;
	s->bdat_used = 0;
	s->bdat_total = 0;
	s->bdat_reply = NULL;
	s->bdat_err = 0;
	s->txn_hold = s->txn_discard = 0;
	cmd_free_str(&s->txn_redirect);
	cmd_free_str(&s->txn_filter);
	buf_reset(&s->txn_bcc);
	buf_reset(&s->txn_prepend);
	cmd_free_str(&s->pend_raw);
	cmd_free_str(&s->pend_canon);
	cmd_free_str(&s->pend_orcpt);
	cmd_free_str(&s->bdat_denied);
	cmd_free_str(&s->sasl_sender);
	smtpd_data_release(s);
}

/* "NOQUEUE: reject: RCPT from h[a]: 554 ...; from=<s> to=<r> proto=ESMTP helo=<h>" */
void smtpd_log_reject(struct smtpd_session *s, const char *stage, const char *reply,
		      const char *rcpt)
{
	struct buf b = BUF_INIT;

	buf_printf(&b, "reject: %s from %s: %s;", stage, s->client.namaddr, reply);
	if (s->sender_raw)
		buf_printf(&b, " from=<%s>", s->sender_raw);
	if (rcpt)
		buf_printf(&b, " to=<%s>", rcpt);
	buf_printf(&b, " proto=%s", s->esmtp ? "ESMTP" : "SMTP");
	if (s->helo)
		buf_printf(&b, " helo=<%s>", s->helo);
	msg_qid(s->have_qid ? s->qid : NULL, "%s", buf_str(&b));
	buf_free(&b);
}

/* RFC 3461 §4: xtext = *( xchar / "+" 2HEXCHAR ), xchar "!".."~" but "+" "=". */
static int cmd_xtext_ok(const char *s)
{
	for (; *s; s++) {
		if (*s == '+') {
			if (!isxdigit((unsigned char)s[1]) || !isxdigit((unsigned char)s[2]))
				return 0;
			s += 2;
		} else if (*s < '!' || *s > '~' || *s == '=') {
			return 0;
		}
	}
	return 1;
}

/* ------------------------------------------------------------------ */
/* HELO / EHLO                                                         */

void smtpd_printable(char *text)
{
	for (unsigned char *cp = (unsigned char *)text; *cp; cp++)
		if (*cp < 0x20 || *cp == 0x7f)
			*cp = '?';
}

static void cmd_helo_apply(struct smtpd_session *s, const char *helo, int esmtp)
{
	/* RFC 5321 §4.1.4: a new EHLO/HELO resets the transaction. */
	smtpd_txn_reset(s);
	free(s->helo);
	s->helo = xstrdup(helo);
	s->esmtp = esmtp;
}

static void cmd_ehlo_reply(struct smtpd_session *s);

/* The milters saw HELO: only their 421 refuses it (smtpd_milter.c). */
static void cmd_helo_milter(struct smtpd_session *s, int rc, const char *reply)
{
	if (rc < 0) {
		s->check_disconnect = 1;
		smtpd_reply(s, "%s", reply);
	} else if (s->check_cmd == SMTPD_C_EHLO) {
		cmd_ehlo_reply(s);
	} else {
		smtpd_reply(s, "250 %s", s->conf->myhostname);
	}
	smtpd_cmd_done(s, rc);
}

/* smtpd_delay_reject = no: smtpd_helo_restrictions decide now. */
static void cmd_helo_checked(struct smtpd_session *s, int rc, const char *reply)
{
	int esmtp = s->check_cmd == SMTPD_C_EHLO;
	char *helo = s->pend_raw; /* smtpd_txn_reset() would free it */

	s->pend_raw = NULL;
	if (rc < 0) {
		smtpd_reply(s, "%s", reply);
	} else {
		cmd_helo_apply(s, helo, esmtp);
		if (smtpd_milter_on(s)) {
			free(helo);
			smtpd_milter_helo(s, cmd_helo_milter);
			return;
		}
		if (esmtp)
			cmd_ehlo_reply(s);
		else
			smtpd_reply(s, "250 %s", s->conf->myhostname);
	}
	free(helo);
	smtpd_cmd_done(s, rc);
}

/* 0: apply and answer now; SMTPD_CMD_PENDING: the checks answer; -1. */
static int cmd_helo_common(struct smtpd_session *s, int argc, char **argv, int esmtp)
{
	struct buf helo = BUF_INIT;

	if (argc < 2) {
		smtpd_reply(s, esmtp ? "501 Syntax: EHLO hostname" : "501 Syntax: HELO hostname");
		return -1;
	}
	/* As Postfix: all the words, made printable (it lands in Received:). */
	for (int i = 1; i < argc; i++)
		buf_printf(&helo, "%s%s", i > 1 ? " " : "", argv[i]);
	smtpd_printable(helo.data);
	if (smtpd_check_has(s->conf, SMTPD_STAGE_HELO)) {
		free(s->pend_raw);
		s->pend_raw = buf_detach(&helo);
		s->check_cmd = esmtp ? SMTPD_C_EHLO : SMTPD_C_HELO;
		smtpd_check_start(s, SMTPD_STAGE_HELO, s->pend_raw, NULL, cmd_helo_checked);
		return SMTPD_CMD_PENDING;
	}
	cmd_helo_apply(s, buf_str(&helo), esmtp);
	buf_free(&helo);
	if (smtpd_milter_on(s)) {
		s->check_cmd = esmtp ? SMTPD_C_EHLO : SMTPD_C_HELO;
		smtpd_milter_helo(s, cmd_helo_milter);
		return SMTPD_CMD_PENDING;
	}
	return 0;
}

static int cmd_helo(struct smtpd_session *s, int argc, char **argv, const char *rest)
{
	int rc = cmd_helo_common(s, argc, argv, 0);

	if (rc != 0)
		return rc;
	smtpd_reply(s, "250 %s", s->conf->myhostname);
	return 0;
}

static int cmd_ehlo(struct smtpd_session *s, int argc, char **argv, const char *rest)
{
	int rc = cmd_helo_common(s, argc, argv, 1);

	if (rc != 0)
		return rc;
	cmd_ehlo_reply(s);
	return 0;
}

static void cmd_ehlo_reply(struct smtpd_session *s)
{
	const struct smtpd_conf *c = s->conf;
	int d = c->ehlo_discard, broken = 0;
	const char *auth;
	struct buf r = BUF_INIT;

	/* Postfix's order (smtpd.c ehlo_cmd()); ETRN is not offered: no flush. */
	buf_printf(&r, "250-%s", c->myhostname);
	if (!(d & SMTPD_EHLO_PIPELINING))
		buf_puts(&r, "\r\n250-PIPELINING");
	if (!(d & SMTPD_EHLO_SIZE)) {
		if (c->size_limit > 0)
			buf_printf(&r, "\r\n250-SIZE %lld", c->size_limit);
		else
			buf_puts(&r, "\r\n250-SIZE");
	}
	if (!(d & SMTPD_EHLO_VRFY) && !c->disable_vrfy)
		buf_puts(&r, "\r\n250-VRFY");
	if (smtpd_tls_offer(s))
		buf_puts(&r, "\r\n250-STARTTLS");
	if ((auth = smtpd_sasl_offer(s, &broken)) != NULL) {
		buf_printf(&r, "\r\n250-AUTH %s", auth);
		if (broken) /* RFC 2554 drafts: "AUTH=" for old Outlook */
			buf_printf(&r, "\r\n250-AUTH=%s", auth);
	}
	if (!(d & SMTPD_EHLO_XCLIENT) && smtpd_client_trusted(s, c->xclient_hosts))
		buf_puts(&r, "\r\n250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN");
	if (!(d & SMTPD_EHLO_ENHANCED))
		buf_puts(&r, "\r\n250-ENHANCEDSTATUSCODES");
	if (!(d & SMTPD_EHLO_8BITMIME))
		buf_puts(&r, "\r\n250-8BITMIME");
	if (!(d & SMTPD_EHLO_DSN))
		buf_puts(&r, "\r\n250-DSN");
	if (!(d & SMTPD_EHLO_SMTPUTF8) && c->smtputf8_enable)
		buf_puts(&r, "\r\n250-SMTPUTF8");
	if (!(d & SMTPD_EHLO_CHUNKING))
		buf_puts(&r, "\r\n250-CHUNKING");
	{ /* the last line is "250 " */
		char *nl = strrchr(r.data, '\n');
		(nl ? nl + 1 : r.data)[3] = ' ';
	}
	smtpd_reply(s, "%s", buf_str(&r));
	buf_free(&r);
}

/* ------------------------------------------------------------------ */
/* MAIL                                                                */

static int mail_param(struct smtpd_session *s, void *ctx, char *p)
{
	char *eq = strchr(p, '=');
	const char *v = eq ? eq + 1 : NULL;
	size_t nl = eq ? (size_t)(eq - p) : strlen(p);
	char *end;

	if (nl == 4 && strncasecmp(p, "SIZE", 4) == 0 && v) {
		errno = 0;
		if (!isdigit((unsigned char)*v) ||
		    (s->declared_size = strtoll(v, &end, 10), *end) || s->declared_size < 0) {
			smtpd_reply(s, "501 5.5.4 Bad message size syntax");
			return -1;
		}
		if (errno == ERANGE) { /* Postfix's wording for a size no file can have */
			smtpd_reply(s, "552 5.3.4 Message size exceeds file system imposed limit");
			return -1;
		}
		if (s->conf->size_limit > 0 && s->declared_size > s->conf->size_limit) {
			smtpd_reply(s, "552 5.3.4 Message size exceeds fixed limit");
			return -1;
		}
	} else if (nl == 4 && strncasecmp(p, "BODY", 4) == 0 && v &&
		   (strcasecmp(v, "8BITMIME") == 0 || strcasecmp(v, "7BIT") == 0)) {
		s->env.body_8bit = strcasecmp(v, "8BITMIME") == 0;
	} else if (nl == 8 && strncasecmp(p, "SMTPUTF8", 8) == 0 && !v &&
		   s->conf->smtputf8_enable) {
		s->env.smtputf8 = 1;
	} else if (nl == 3 && strncasecmp(p, "RET", 3) == 0 && v) {
		if (s->env.ret || (strcasecmp(v, "FULL") && strcasecmp(v, "HDRS"))) {
			smtpd_reply(s, "501 5.5.4 Bad RET parameter syntax");
			return -1;
		}
		s->env.ret = xstrdup(v);
	} else if (nl == 4 && strncasecmp(p, "AUTH", 4) == 0 && v) {
		if (smtpd_sasl_mail_param(s, v) < 0)
			return -1;
	} else if (nl == 5 && strncasecmp(p, "ENVID", 5) == 0 && v) {
		if (s->env.envid || !*v || strlen(v) > 100 || !cmd_xtext_ok(v)) {
			smtpd_reply(s, "501 5.5.4 Bad ENVID parameter syntax");
			return -1;
		}
		s->env.envid = xstrdup(v);
	} else {
		smtpd_reply(s, "555 5.5.4 Unsupported option: %s", p);
		return -1;
	}
	return 0;
}

/* Each parameter goes to fn with the caller's context: sessions on all
 * loop threads parse at once, so nothing here may live in a global. */
static int cmd_params(struct smtpd_session *s, const char *rest,
		      int (*fn)(struct smtpd_session *, void *, char *), void *ctx)
{
	char *copy = xstrdup(rest ? rest : ""), *save = NULL, *p;
	int rc = 0;

	for (p = strtok_r(copy, " \t", &save); p && rc == 0; p = strtok_r(NULL, " \t", &save))
		rc = fn(s, ctx, p);
	free(copy);
	return rc;
}

/* "FROM:" / "TO:" then the path; NULL when the keyword is missing. */
static const char *cmd_path_arg(const char *rest, const char *kw)
{
	size_t n = strlen(kw);

	if (rest == NULL || strncasecmp(rest, kw, n) != 0)
		return NULL;
	rest += n;
	while (*rest == ' ' || *rest == '\t')
		rest++;
	return *rest ? rest : NULL;
}

static int cmd_addr_flags(struct smtpd_session *s)
{
	int f = 0;

	if (!s->conf->strict_rfc821)
		f |= ADDR_PARSE_ALLOW_BARE;
	if (s->env.smtputf8)
		f |= ADDR_PARSE_SMTPUTF8;
	return f;
}

/* The raw address as Postfix shows it in replies and logs: without <>. */
static char *cmd_raw_addr(const char *arg)
{
	const char *lt = strchr(arg, '<'), *gt;
	size_t n;

	if (lt && (gt = strchr(lt, '>')) != NULL)
		return xstrndup(lt + 1, (size_t)(gt - lt - 1));
	n = strcspn(arg, " \t");
	return xstrndup(arg, n);
}

static int cmd_has_word(const char *text, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = text; (p = strchr(p, ' ')) != NULL; p++)
		if (strncasecmp(p + 1, word, n) == 0 && (p[n + 1] == 0 || p[n + 1] == ' '))
			return 1;
	return 0;
}

static int mail_sender(struct smtpd_session *s, const char *arg, const char **params)
{
	struct addr a;
	struct buf err = BUF_INIT, canon = BUF_INIT;
	enum addr_status st;
	int rc = -1;

	addr_init(&a);
	/* SMTPUTF8 may follow the address: look ahead so a UTF-8 sender parses. */
	if (s->conf->smtputf8_enable && cmd_has_word(arg, "SMTPUTF8"))
		s->env.smtputf8 = 1;
	st = addr_parse_path(&a, arg, cmd_addr_flags(s), params, &err);
	if (st == ADDR_ERR_NEED_SMTPUTF8) {
		smtpd_reply(s, "553 5.6.7 Must declare SMTPUTF8 to send unicode address");
		goto out;
	}
	if (st != ADDR_OK) {
		smtpd_reply(s, "501 5.1.7 Bad sender address syntax");
		goto out;
	}
	smtpd_check_canon(s->conf, &a, &canon);
	s->env.sender = buf_detach(&canon);
	s->sender_raw = cmd_raw_addr(arg);
	rc = 0;
out:
	addr_free(&a);
	buf_free(&err);
	buf_free(&canon);
	return rc;
}

static void cmd_mail_accept(struct smtpd_session *s)
{
	struct timeval tv;

	s->in_mail = 1;
	s->txn_seq++;
	gettimeofday(&tv, NULL);
	s->env.arrival = tv.tv_sec;
	s->env.arrival_usec = (long)tv.tv_usec;
	smtpd_reply(s, "250 2.1.0 Ok");
}

/* The milters saw MAIL (after our own checks). */
static void cmd_mail_milter(struct smtpd_session *s, int rc, const char *reply)
{
	if (rc < 0) {
		smtpd_txn_reset(s);
		smtpd_reply(s, "%s", reply);
		if (strncmp(reply, "421", 3) == 0)
			s->check_disconnect = 1;
	} else {
		cmd_mail_accept(s);
	}
	smtpd_cmd_done(s, rc);
}

/* smtpd_delay_reject = no: smtpd_sender_restrictions decide now. */
static void cmd_mail_checked(struct smtpd_session *s, int rc, const char *reply)
{
	if (rc == 0 && smtpd_milter_on(s)) {
		smtpd_milter_mail(s, cmd_mail_milter);
		return;
	}
	if (rc < 0) {
		smtpd_txn_reset(s);
		smtpd_reply(s, "%s", reply);
	} else {
		cmd_mail_accept(s);
	}
	smtpd_cmd_done(s, rc);
}

static int cmd_mail(struct smtpd_session *s, int argc, char **argv, const char *rest)
{
	const char *arg = cmd_path_arg(rest, "FROM:"), *params = NULL;

	if (s->conf->helo_required && s->helo == NULL) {
		smtpd_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
		return -1;
	}
	if (s->in_mail) {
		smtpd_reply(s, "503 5.5.1 Error: nested MAIL command");
		return -1;
	}
	if (arg == NULL) {
		smtpd_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return -1;
	}
	smtpd_txn_reset(s);
	if (s->sasl_username) /* queued with the message; milters' {auth_authen} */
		s->env.sasl_username = xstrdup(s->sasl_username);
	if (mail_sender(s, arg, &params) < 0 || cmd_params(s, params, mail_param, NULL) < 0) {
		smtpd_txn_reset(s);
		return -1;
	}
	smtpd_milter_args(s, arg);
	if (smtpd_check_has(s->conf, SMTPD_STAGE_MAIL)) {
		s->check_cmd = SMTPD_C_MAIL;
		smtpd_check_start(s, SMTPD_STAGE_MAIL, s->sender_raw, s->env.sender,
				  cmd_mail_checked);
		return SMTPD_CMD_PENDING;
	}
	if (smtpd_milter_on(s)) {
		s->check_cmd = SMTPD_C_MAIL;
		smtpd_milter_mail(s, cmd_mail_milter);
		return SMTPD_CMD_PENDING;
	}
	cmd_mail_accept(s);
	return 0;
}

/* ------------------------------------------------------------------ */
/* RCPT                                                                */

struct rcpt_params {
	char *orcpt;
	int notify;
};

static int rcpt_notify(const char *v)
{
	char *copy = xstrdup(v), *save = NULL, *w;
	int bits = 0;

	for (w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
		if (strcasecmp(w, "NEVER") == 0)
			bits |= QUEUE_NOTIFY_NEVER;
		else if (strcasecmp(w, "SUCCESS") == 0)
			bits |= QUEUE_NOTIFY_SUCCESS;
		else if (strcasecmp(w, "FAILURE") == 0)
			bits |= QUEUE_NOTIFY_FAILURE;
		else if (strcasecmp(w, "DELAY") == 0)
			bits |= QUEUE_NOTIFY_DELAY;
		else
			bits = -1;
		if (bits < 0)
			break;
	}
	free(copy);
	/* RFC 3461 §4.1: NEVER excludes the others. */
	if (bits <= 0 || ((bits & QUEUE_NOTIFY_NEVER) && bits != QUEUE_NOTIFY_NEVER))
		return -1;
	return bits;
}

static int rcpt_param(struct smtpd_session *s, void *ctx, char *p)
{
	struct rcpt_params *rcpt_cur = ctx;
	char *eq = strchr(p, '=');
	const char *v = eq ? eq + 1 : NULL;
	size_t nl = eq ? (size_t)(eq - p) : strlen(p);

	if (nl == 6 && strncasecmp(p, "NOTIFY", 6) == 0 && v) {
		if (rcpt_cur->notify || (rcpt_cur->notify = rcpt_notify(v)) < 0) {
			rcpt_cur->notify = 0;
			smtpd_reply(s, "501 5.5.4 Error: Bad NOTIFY parameter syntax");
			return -1;
		}
	} else if (nl == 5 && strncasecmp(p, "ORCPT", 5) == 0 && v) {
		/* RFC 3461 §4.2: addr-type ";" xtext */
		const char *semi = strchr(v, ';');
		if (rcpt_cur->orcpt || semi == NULL || semi == v || !cmd_xtext_ok(semi + 1) ||
		    strlen(v) > 500) {
			smtpd_reply(s, "501 5.5.4 Error: Bad ORCPT parameter syntax");
			return -1;
		}
		rcpt_cur->orcpt = xstrdup(v);
	} else {
		smtpd_reply(s, "555 5.5.4 Unsupported option: %s", p);
		return -1;
	}
	return 0;
}

static void rcpt_accept(struct smtpd_session *s)
{
	if (!s->have_qid) { /* Postfix: the queue file exists from the first RCPT */
		queue_id_new(s->q, s->qid);
		s->have_qid = 1;
		if (s->sasl_username) /* Postfix: ", sasl_method=..., sasl_username=..." */
			msg_qid(s->qid, "client=%s, sasl_method=%s, sasl_username=%s%s%s",
				s->client.namaddr, s->sasl_method, s->sasl_username,
				s->sasl_sender ? ", sasl_sender=" : "",
				s->sasl_sender ? s->sasl_sender : "");
		else
			msg_qid(s->qid, "client=%s", s->client.namaddr);
	}
	if (s->first_rcpt == NULL)
		s->first_rcpt = xstrdup(s->pend_raw);
	queue_env_add_rcpt(&s->env, s->pend_canon, s->pend_orcpt, s->pend_notify);
	smtpd_reply(s, "250 2.1.5 Ok");
}

static void rcpt_checked(struct smtpd_session *s, int rc, const char *reply);

/* The milters saw the accepted RCPT: a refusal is for this one only. */
static void rcpt_milter(struct smtpd_session *s, int rc, const char *reply)
{
	if (rc < 0 && strncmp(reply, "421", 3) == 0)
		s->check_disconnect = 1;
	rcpt_checked(s, rc < 0 ? -2 : 1, reply); /* -2, 1: the milters had it */
}

static void rcpt_checked(struct smtpd_session *s, int rc, const char *reply)
{
	if (rc == 0 && smtpd_milter_on(s)) {
		smtpd_milter_rcpt(s, rcpt_milter);
		return;
	}
	if (rc == -1 && smtpd_milter_on(s)) { /* for milters with SMFIP_RCPT_REJ */
		smtpd_milter_rcpt_rej(s, reply, rcpt_milter);
		return;
	}
	rc = rc < 0 ? -1 : 0;
	if (rc < 0)
		smtpd_reply(s, "%s", reply);
	else
		rcpt_accept(s);
	cmd_free_str(&s->pend_raw);
	cmd_free_str(&s->pend_canon);
	cmd_free_str(&s->pend_orcpt);
	smtpd_cmd_done(s, rc);
}

static int rcpt_addr(struct smtpd_session *s, const char *arg, struct rcpt_params *rp)
{
	struct addr a;
	struct buf err = BUF_INIT, canon = BUF_INIT;
	const char *params = NULL;
	enum addr_status st;
	int rc = -1;

	addr_init(&a);
	st = addr_parse_path(&a, arg, cmd_addr_flags(s), &params, &err);
	if (st == ADDR_ERR_NEED_SMTPUTF8) {
		smtpd_reply(s, "553 5.6.7 Must declare SMTPUTF8 to send unicode address");
		goto out;
	}
	if (st != ADDR_OK || (a.flags & ADDR_F_NULL)) {
		smtpd_reply(s, "501 5.1.3 Bad recipient address syntax");
		goto out;
	}
	if (cmd_params(s, params, rcpt_param, rp) < 0)
		goto out;
	smtpd_check_canon(s->conf, &a, &canon);
	s->pend_raw = cmd_raw_addr(arg);
	s->pend_canon = buf_detach(&canon);
	s->pend_orcpt = rp->orcpt;
	rp->orcpt = NULL;
	s->pend_notify = rp->notify;
	s->check_cmd = SMTPD_C_RCPT;
	smtpd_check_start(s, SMTPD_STAGE_RCPT, s->pend_raw, s->pend_canon, rcpt_checked);
	rc = SMTPD_CMD_PENDING;
out:
	addr_free(&a);
	buf_free(&err);
	buf_free(&canon);
	return rc;
}

static int cmd_rcpt(struct smtpd_session *s, int argc, char **argv, const char *rest)
{
	const char *arg = cmd_path_arg(rest, "TO:");
	struct rcpt_params rp = {NULL, 0};
	int rc;

	if (!s->in_mail) {
		smtpd_reply(s, "503 5.5.1 Error: need MAIL command");
		return -1;
	}
	if (arg == NULL) {
		smtpd_reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		return -1;
	}
	if ((long long)s->env.nrcpt >= s->conf->rcpt_limit) {
		smtpd_reply(s, "452 4.5.3 Error: too many recipients");
		return -1;
	}
	s->rcpt_total++;
	smtpd_milter_args(s, arg);
	rc = rcpt_addr(s, arg, &rp);
	free(rp.orcpt);
	return rc;
}

/* ------------------------------------------------------------------ */
/* DATA / BDAT                                                         */

static int data_ready(struct smtpd_session *s)
{
	if (!s->in_mail) {
		smtpd_reply(s, "503 5.5.1 Error: need RCPT command");
		return -1;
	}
	if (s->env.nrcpt == 0) {
		smtpd_reply(s, "554 5.5.1 Error: no valid recipients");
		return -1;
	}
	return 0;
}

/* smtpd_data_restrictions decided: 354, or the refusal (the transaction
 * stays, as Postfix's). */
static void cmd_data_checked(struct smtpd_session *s, int rc, const char *reply);

static void cmd_data_milter(struct smtpd_session *s, int rc, const char *reply)
{
	if (rc < 0 && strncmp(reply, "421", 3) == 0)
		s->check_disconnect = 1;
	cmd_data_checked(s, rc < 0 ? rc : 1, reply);
}

static void cmd_data_checked(struct smtpd_session *s, int rc, const char *reply)
{
	if (rc == 0 && smtpd_milter_on(s)) { /* rc 1: the milters said yes */
		smtpd_milter_data(s, cmd_data_milter);
		return;
	}
	rc = rc > 0 ? 0 : rc;
	if (rc < 0) {
		smtpd_reply(s, "%s", reply);
		smtpd_cmd_done(s, rc);
		return;
	}
	smtpd_data_begin(s); /* counted when the message is queued */
	smtpd_reply(s, "354 End data with <CR><LF>.<CR><LF>");
	smtpd_cmd_done(s, 0);
}

static int cmd_data(struct smtpd_session *s, int argc, char **argv, const char *rest)
{
	if (argc != 1) {
		smtpd_reply(s, "501 5.5.4 Syntax: DATA");
		return -1;
	}
	if (s->bdat_used) {
		smtpd_reply(s, "503 5.5.1 Error: DATA after BDAT");
		return -1;
	}
	if (data_ready(s) < 0)
		return -1;
	/* RFC 2920 §3.1: DATA ends a pipelined group; a client that sends
	 * content before our 354 is not waiting for it (transaction stuffing). */
	if (s->conf->forbid_unauth_pipelining && smtpd_session_pending_input(s)) {
		msg_info("improper command pipelining after DATA from %s", s->client.namaddr);
		s->state = SMTPD_ST_CLOSE;
		smtpd_reply(s, "554 5.5.0 Error: SMTP protocol synchronization");
		smtpd_session_close(s);
		return -1;
	}
	if (smtpd_check_has(s->conf, SMTPD_STAGE_DATA)) {
		s->check_cmd = SMTPD_C_DATA;
		smtpd_check_start(s, SMTPD_STAGE_DATA, NULL, NULL, cmd_data_checked);
		return SMTPD_CMD_PENDING;
	}
	if (smtpd_milter_on(s)) {
		s->check_cmd = SMTPD_C_DATA;
		smtpd_milter_data(s, cmd_data_milter);
		return SMTPD_CMD_PENDING;
	}
	smtpd_data_begin(s);
	smtpd_reply(s, "354 End data with <CR><LF>.<CR><LF>");
	return 0;
}

/* Refused by smtpd_data_restrictions: the chunks are read and skipped,
 * each answered with the refusal (RFC 3030 §3). */
static void cmd_bdat_checked(struct smtpd_session *s, int rc, const char *reply)
{
	if (rc < 0) {
		free(s->bdat_denied);
		s->bdat_denied = xstrdup(reply);
	}
	s->ok[SMTPD_C_BDAT]++; /* as for an accepted BDAT command: see smtpd_bdat_begin() */
	smtpd_bdat_begin(s, s->pend_size, s->pend_notify);
}

static int cmd_bdat(struct smtpd_session *s, int argc, char **argv, const char *rest)
{
	char *end;
	unsigned long long n;

	/* Without a valid size the chunk cannot be skipped: Postfix says 521
	 * and disconnects (smtpd.c bdat_cmd()). */
	if (argc < 2 || argc > 3 || !isdigit((unsigned char)argv[1][0]) ||
	    (n = strtoull(argv[1], &end, 10), *end) || n > (1ULL << 40) ||
	    (argc == 3 && strcasecmp(argv[2], "LAST") != 0)) {
		s->state = SMTPD_ST_CLOSE;
		smtpd_reply(s, "521 5.5.4 Syntax: BDAT count [LAST]");
		smtpd_session_close(s);
		return -1;
	}
	/* smtpd_data_restrictions apply to the first chunk, as to DATA. */
	if (!s->bdat_used && s->in_mail && s->env.nrcpt > 0 &&
	    smtpd_check_has(s->conf, SMTPD_STAGE_DATA)) {
		s->pend_size = (size_t)n;
		s->pend_notify = argc == 3;
		s->check_cmd = SMTPD_C_BDAT;
		smtpd_check_start(s, SMTPD_STAGE_DATA, NULL, NULL, cmd_bdat_checked);
		return SMTPD_CMD_PENDING;
	}
	smtpd_bdat_begin(s, (size_t)n, argc == 3);
	return 0;
}

/* ------------------------------------------------------------------ */
/* the rest                                                            */

static int cmd_rset(struct smtpd_session *s, int argc, char **argv, const char *rest)
{
	if (argc != 1) {
		smtpd_reply(s, "501 5.5.4 Syntax: RSET");
		return -1;
	}
	smtpd_txn_reset(s);
	smtpd_reply(s, "250 2.0.0 Ok");
	return 0;
}

static int cmd_noop(struct smtpd_session *s, int argc, char **argv, const char *rest)
{
	smtpd_reply(s, "250 2.0.0 Ok");
	return 0;
}

static int cmd_quit(struct smtpd_session *s, int argc, char **argv, const char *rest)
{
	s->state = SMTPD_ST_CLOSE;
	smtpd_reply(s, "221 2.0.0 Bye");
	smtpd_session_close(s);
	return 0;
}

static void cmd_vrfy_checked(struct smtpd_session *s, int rc, const char *reply)
{
	if (rc < 0)
		smtpd_reply(s, "%s", reply);
	else /* RFC 5321 §3.5.3: 252, we do not confirm mailboxes. */
		smtpd_reply(s, "252 2.0.0 %s", s->pend_raw);
	cmd_free_str(&s->pend_raw);
	cmd_free_str(&s->pend_orcpt);
	smtpd_cmd_done(s, rc);
}

static int cmd_vrfy(struct smtpd_session *s, int argc, char **argv, const char *rest)
{
	struct addr a;
	struct buf err = BUF_INIT, reply = BUF_INIT;
	char *raw = NULL;
	int rc = -1;

	addr_init(&a);
	if (s->conf->disable_vrfy) {
		smtpd_reply(s, "502 5.5.1 VRFY command is disabled");
		goto out;
	}
	if (rest == NULL || *rest == 0) {
		smtpd_reply(s, "501 5.5.4 Syntax: VRFY address [SMTPUTF8]");
		goto out;
	}
	raw = cmd_raw_addr(rest);
	if (addr_parse_path(&a, rest, ADDR_PARSE_ALLOW_BARE | ADDR_PARSE_SMTPUTF8, NULL, &err) !=
	    ADDR_OK) {
		smtpd_reply(s, "501 5.1.3 Bad recipient address syntax");
		goto out;
	}
	smtpd_check_canon(s->conf, &a, &reply);
	free(s->pend_raw);
	free(s->pend_orcpt);
	s->pend_raw = xstrdup(rest);
	s->pend_orcpt = raw; /* the recipient as given, for the checks */
	raw = NULL;
	s->check_cmd = SMTPD_C_VRFY;
	smtpd_check_start(s, SMTPD_STAGE_VRFY, s->pend_orcpt, buf_str(&reply), cmd_vrfy_checked);
	rc = SMTPD_CMD_PENDING;
out:
	free(raw);
	addr_free(&a);
	buf_free(&err);
	buf_free(&reply);
	return rc;
}

/* No fast flush service (yet): every domain is "service unavailable",
 * Postfix's answer for a domain outside $fast_flush_domains. */
static void cmd_etrn_checked(struct smtpd_session *s, int rc, const char *reply)
{
	if (rc < 0)
		smtpd_reply(s, "%s", reply);
	else
		smtpd_reply(s, "459 <%s>: service unavailable", s->pend_raw ? s->pend_raw : "");
	cmd_free_str(&s->pend_raw);
	smtpd_cmd_done(s, -1);
}

static int cmd_etrn(struct smtpd_session *s, int argc, char **argv, const char *rest)
{
	if (s->helo == NULL) {
		smtpd_reply(s, "503 Error: send HELO/EHLO first");
		return -1;
	}
	if (s->in_mail) {
		smtpd_reply(s, "503 Error: MAIL transaction in progress");
		return -1;
	}
	if (argc != 2) {
		smtpd_reply(s, "500 Syntax: ETRN domain");
		return -1;
	}
	free(s->pend_raw);
	s->pend_raw = xstrdup(argv[1]);
	s->check_cmd = SMTPD_C_ETRN;
	smtpd_check_start(s, SMTPD_STAGE_ETRN, s->pend_raw, NULL, cmd_etrn_checked);
	return SMTPD_CMD_PENDING;
}

static int cmd_xclient(struct smtpd_session *s, int argc, char **argv, const char *rest)
{
	return smtpd_xclient_cmd(s, argc, argv);
}

static int cmd_starttls(struct smtpd_session *s, int argc, char **argv, const char *rest)
{
	return smtpd_tls_cmd(s, argc, argv);
}

static int cmd_auth(struct smtpd_session *s, int argc, char **argv, const char *rest)
{
	return smtpd_sasl_cmd(s, argc, argv);
}

static const struct smtpd_cmd smtpd_cmds[] = {
    {"HELO", SMTPD_C_HELO, cmd_helo, 0},
    {"EHLO", SMTPD_C_EHLO, cmd_ehlo, 0},
    {"XCLIENT", SMTPD_C_XCLIENT, cmd_xclient, 0},
    {"STARTTLS", SMTPD_C_STARTTLS, cmd_starttls, 0},
    {"AUTH", SMTPD_C_AUTH, cmd_auth, 0},
    {"MAIL", SMTPD_C_MAIL, cmd_mail, 0},
    {"RCPT", SMTPD_C_RCPT, cmd_rcpt, 0},
    {"DATA", SMTPD_C_DATA, cmd_data, 0},
    {"BDAT", SMTPD_C_BDAT, cmd_bdat, 0},
    {"RSET", SMTPD_C_RSET, cmd_rset, SMTPD_F_JUNK},
    {"NOOP", SMTPD_C_NOOP, cmd_noop, SMTPD_F_JUNK},
    {"VRFY", SMTPD_C_VRFY, cmd_vrfy, SMTPD_F_JUNK},
    {"ETRN", SMTPD_C_ETRN, cmd_etrn, SMTPD_F_JUNK},
    {"QUIT", SMTPD_C_QUIT, cmd_quit, 0},
};

/* ------------------------------------------------------------------ */
/* dispatch                                                            */

#define CMD_MAXARGS 16

static int cmd_split(char *line, char **argv)
{
	int argc = 0;
	char *save = NULL;

	for (char *w = strtok_r(line, " \t", &save); w && argc < CMD_MAXARGS;
	     w = strtok_r(NULL, " \t", &save))
		argv[argc++] = w;
	return argc;
}

static const struct smtpd_cmd *cmd_find(const char *verb)
{
	for (size_t i = 0; i < sizeof(smtpd_cmds) / sizeof(*smtpd_cmds); i++)
		if (strcasecmp(verb, smtpd_cmds[i].name) == 0)
			return &smtpd_cmds[i];
	return NULL;
}

/* RFC 2920 §3.1: a client may send more before our reply only after
 * EHLO and only if the command is not one that ends a group (EHLO, DATA,
 * VRFY, EXPN, TURN, QUIT, NOOP). A client that does is flagged for the
 * rest of the session (reject_unauth_pipelining), as Postfix does. */
static void cmd_pipelining(struct smtpd_session *s, const struct smtpd_cmd *cmd)
{
	static const enum smtpd_cmd_id last[] = {SMTPD_C_HELO, SMTPD_C_EHLO, SMTPD_C_DATA,
						 SMTPD_C_VRFY, SMTPD_C_QUIT, SMTPD_C_NOOP};
	int is_last = 0;
	struct buf next = BUF_INIT;

	if (s->ill_pipelining)
		return;
	for (size_t i = 0; i < sizeof(last) / sizeof(*last); i++)
		is_last |= cmd->id == last[i];
	/* (the common case first: no peek at the socket for MAIL/RCPT) */
	if ((s->esmtp && !is_last) || !smtpd_session_pending_input(s))
		return;
	s->ill_pipelining = 1;
	smtpd_session_peek_input(s, &next, 100);
	msg_info("improper command pipelining after %s from %s: %s", cmd->name,
		 s->client.namaddr, buf_str(&next));
	buf_free(&next);
}

/* Bare LF in a command line (smtpd_forbid_bare_newline = reject). */
static int cmd_bare_lf(struct smtpd_session *s, int bare_lf)
{
	const struct smtpd_conf *c = s->conf;

	if (!bare_lf || c->bare_nl == SMTPD_BARE_NO ||
	    smtpd_client_trusted(s, c->bare_nl_exclusions))
		return 0;
	s->bare_lf_noted = 1;
	if (c->bare_nl != SMTPD_BARE_REJECT)
		return 0;
	smtpd_reply(s, "%d 5.5.2 %s Error: bare <LF> received", c->bare_nl_code, c->myhostname);
	if (c->bare_nl_code == 521)
		smtpd_session_close(s);
	return -1;
}

static int cmd_hard_limit(struct smtpd_session *s)
{
	if (s->error_count < s->conf->hard_limit)
		return 0;
	msg_qid(s->have_qid ? s->qid : NULL, "too many errors after %s from %s", s->last_cmd,
		s->client.namaddr);
	s->state = SMTPD_ST_CLOSE;
	smtpd_reply(s, "421 4.7.0 %s Error: too many errors", s->conf->myhostname);
	smtpd_session_close(s);
	return -1;
}

/* The milters saw an unknown command: their refusal, else ours. */
static void cmd_unknown_milter(struct smtpd_session *s, int rc, const char *reply)
{
	smtpd_reply(s, "%s", rc < 0 ? reply : "500 5.5.2 Error: command not recognized");
	if (rc < 0 && strncmp(reply, "421", 3) == 0) {
		smtpd_session_close(s);
		return;
	}
	if (s->state == SMTPD_ST_CMD)
		cmd_hard_limit(s);
}

void smtpd_cmd_run(struct smtpd_session *s, char *line, int bare_lf)
{
	char *argv[CMD_MAXARGS];
	char *copy = xstrdup(line);
	const char *rest;
	const struct smtpd_cmd *cmd;
	int argc, rc;

	if (smtpd_sasl_busy(s)) { /* the line answers our 334 (RFC 4954 §4) */
		free(copy);
		smtpd_sasl_input(s, line);
		return;
	}
	argc = cmd_split(copy, argv);
	if (argc == 0) {
		s->error_count++;
		smtpd_reply(s, "500 5.5.2 Error: bad syntax");
		goto out;
	}
	cmd = cmd_find(argv[0]);
	rest = line + strspn(line, " \t");
	rest += strcspn(rest, " \t");
	rest += strspn(rest, " \t");
	if (cmd == NULL) {
		s->total[SMTPD_C_UNKNOWN]++;
		s->error_count++;
		s->last_cmd = "UNKNOWN";
		if (smtpd_milter_on(s)) { /* a milter may answer it (Postfix) */
			smtpd_milter_unknown(s, argv[0], cmd_unknown_milter); /* Postfix: the word */
			goto done;
		}
		smtpd_reply(s, "500 5.5.2 Error: command not recognized");
		goto out;
	}
	s->total[cmd->id]++;
	s->last_cmd = cmd->name;
	/* Client refused at connect (smtpd_delay_reject = no): only QUIT. */
	if (s->access_denied && cmd->id != SMTPD_C_QUIT) {
		if (strncmp(s->access_denied + 1, "21", 2) == 0)
			smtpd_reply(s, "%s", s->access_denied);
		else
			smtpd_reply(s, "503 5.7.0 Error: access denied for %s", s->client.namaddr);
		s->error_count++;
		goto out;
	}
	cmd_pipelining(s, cmd);
	if (cmd_bare_lf(s, bare_lf) < 0) {
		s->error_count++;
		goto out;
	}
	if (smtpd_tls_required(s, cmd->name)) {
		s->error_count++;
		goto out;
	}
	/* Postfix: junk commands beyond the limit count as errors. */
	if ((cmd->flags & SMTPD_F_JUNK) && s->junk_cmds++ > s->conf->junk_limit &&
	    !smtpd_client_trusted(s, s->conf->mynetworks))
		s->error_count++;
	rc = cmd->fn(s, argc, argv, *rest ? rest : NULL);
	if (rc == SMTPD_CMD_PENDING) /* counted by smtpd_cmd_done() */
		goto done;
	if (rc == 0)
		s->ok[cmd->id]++;
	else
		s->error_count++;
out:
	/* Postfix checks the limit before it reads the next command, so the
	 * 421 follows the reply that reached it. */
	if (s->state == SMTPD_ST_CMD)
		cmd_hard_limit(s);
done:
	free(copy);
}

void smtpd_cmd_done(struct smtpd_session *s, int rc)
{
	if (rc == 0)
		s->ok[s->check_cmd]++;
	else
		s->error_count++;
	/* A 421/521 access reply ends the session (Postfix 2.3+/2.6+). */
	if (s->check_disconnect && s->state != SMTPD_ST_CLOSE) {
		s->state = SMTPD_ST_CLOSE;
		smtpd_session_close(s);
		return;
	}
	if (s->state == SMTPD_ST_CMD)
		cmd_hard_limit(s);
}
