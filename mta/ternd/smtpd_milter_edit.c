/* smtpd_milter_edit.c - envelope edits a milter asks for at the end of
 * the message: add a recipient (with NOTIFY= and ORCPT=, the only
 * parameters Postfix 3.0+ honours), delete recipients, change the sender
 * (RET= and ENVID=, as Postfix 3.3+). Addresses come in SMTP form
 * ("<a@b>", or bare) and are qualified as RCPT TO would be.
 * Pitfall: a bad request is a warning, not a reason to refuse the mail
 * (Postfix cleanup_milter.c does the same).
 */
#include "smtpd_milter_int.h"

#include "addr.h"
#include "log.h"

#include <string.h>
#include <strings.h>

/* "<a@b>" -> canonical "a@b" ("" for "<>"); -1 when unparsable. */
static int edit_addr(struct smtpd_session *s, const char *text, struct buf *out)
{
	struct addr a;
	struct buf err = BUF_INIT;
	int rc = -1;

	addr_init(&a);
	if (addr_parse_path(&a, text, ADDR_PARSE_ALLOW_BARE | ADDR_PARSE_SMTPUTF8, NULL, &err) ==
	    ADDR_OK) {
		if (!(a.flags & ADDR_F_NULL))
			smtpd_check_canon(s->conf, &a, out);
		rc = 0;
	}
	addr_free(&a);
	buf_free(&err);
	return rc;
}

static int edit_notify(const char *v)
{
	char *copy = xstrdup(v), *save = NULL, *w;
	int bits = 0;

	for (w = strtok_r(copy, ",", &save); w && bits >= 0; w = strtok_r(NULL, ",", &save)) {
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
	}
	free(copy);
	if (bits <= 0 || ((bits & QUEUE_NOTIFY_NEVER) && bits != QUEUE_NOTIFY_NEVER))
		return -1;
	return bits;
}

/* Walk "A=1 B=2": fn gets name (upper-cased compare) and value. */
static void edit_params(const char *milter, const char *req, const char *args,
			const char *const *ok, char **vals)
{
	char *copy = xstrdup(args ? args : ""), *save = NULL, *w;

	for (w = strtok_r(copy, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
		char *eq = strchr(w, '=');
		size_t i;
		for (i = 0; ok[i]; i++)
			if (eq && (size_t)(eq - w) == strlen(ok[i]) &&
			    strncasecmp(w, ok[i], strlen(ok[i])) == 0)
				break;
		if (ok[i] == NULL || vals[i] != NULL) {
			msg_warn("milter %s: Ignoring bad ESMTP parameter \"%s\" in %s request",
				 milter, w, req);
			continue;
		}
		vals[i] = xstrdup(eq + 1);
	}
	free(copy);
}

static int edit_add_rcpt(struct smtpd_session *s, const char *milter, const char *addr,
			 const char *args)
{
	static const char *const ok[] = {"NOTIFY", "ORCPT", NULL};
	char *vals[2] = {NULL, NULL};
	struct buf canon = BUF_INIT;
	int notify = 0;

	if (edit_addr(s, addr, &canon) < 0 || canon.len == 0) {
		msg_warn("milter %s: ignoring bad recipient \"%s\" in ADDRCPT request", milter,
			 addr);
		buf_free(&canon);
		return 0;
	}
	edit_params(milter, "SMFI_ADDRCPT_PAR", args, ok, vals);
	if (vals[0] && (notify = edit_notify(vals[0])) < 0) {
		msg_warn("milter %s: Ignoring bad NOTIFY=%s in ADDRCPT_PAR request", milter,
			 vals[0]);
		notify = 0;
	}
	queue_env_add_rcpt(&s->env, buf_str(&canon), vals[1], notify);
	free(vals[0]);
	free(vals[1]);
	buf_free(&canon);
	return 0;
}

static int edit_del_rcpt(struct smtpd_session *s, const char *milter, const char *addr)
{
	struct buf canon = BUF_INIT;
	size_t kept = 0;

	if (edit_addr(s, addr, &canon) < 0) {
		msg_warn("milter %s: ignoring bad recipient \"%s\" in DELRCPT request", milter,
			 addr);
		buf_free(&canon);
		return 0;
	}
	for (size_t i = 0; i < s->env.nrcpt; i++) {
		struct queue_rcpt *r = &s->env.rcpt[i];
		if (strcasecmp(r->addr, buf_str(&canon)) == 0) {
			free(r->addr);
			free(r->orcpt);
			continue;
		}
		s->env.rcpt[kept++] = *r;
	}
	s->env.nrcpt = kept;
	buf_free(&canon);
	return 0;
}

static int edit_chg_from(struct smtpd_session *s, const char *milter, const char *addr,
			 const char *args)
{
	static const char *const ok[] = {"RET", "ENVID", NULL};
	char *vals[2] = {NULL, NULL};
	struct buf canon = BUF_INIT;

	if (edit_addr(s, addr, &canon) < 0) {
		msg_warn("milter %s: ignoring bad sender \"%s\" in CHGFROM request", milter, addr);
		buf_free(&canon);
		return 0;
	}
	free(s->env.sender);
	s->env.sender = buf_detach(&canon);
	edit_params(milter, "SMFI_CHGFROM", args, ok, vals);
	if (vals[0]) {
		free(s->env.ret);
		s->env.ret = vals[0];
	}
	if (vals[1]) {
		free(s->env.envid);
		s->env.envid = vals[1];
	}
	return 0;
}

int milter_edit_envelope(struct smtpd_session *s, const char *milter, int code, const char *addr,
			 const char *args)
{
	switch (code) {
	case SMFIR_ADDRCPT:
		return edit_add_rcpt(s, milter, addr, NULL);
	case SMFIR_ADDRCPT_PAR:
		return edit_add_rcpt(s, milter, addr, args);
	case SMFIR_DELRCPT:
		return edit_del_rcpt(s, milter, addr);
	case SMFIR_CHGFROM:
		return edit_chg_from(s, milter, addr, args);
	}
	return -1;
}
