/* smtpd_bcc.c - the envelope changes made just before a message received
 * over SMTP is queued (Postfix does them in cleanup): REDIRECT (access
 * action: every recipient replaced), automatic BCC (always_bcc,
 * sender_bcc_maps, recipient_bcc_maps, postfix.md §6.1) and the BCC
 * access/policy action. BCC recipients are added with NOTIFY=NEVER
 * (Postfix 2.3+: no DSN about a copy the sender did not ask for), once
 * each, and not when already a recipient.
 * Lookup order for the maps (mail_addr_find): user+ext@domain,
 * user@domain, user+ext and user (local domains only), @domain; pattern
 * tables see the whole address only. One result per lookup.
 * Pitfall: a map lookup error must not lose the copy silently: the
 * message is refused for now (451 4.3.0, as Postfix's cleanup does), so
 * the client retries and the copy is made then.
 */
#include "smtpd_int.h"

#include "log.h"
#include "table_keys.h"

#include <string.h>

static int bcc_is_rcpt(const struct queue_env *env, const char *addr)
{
	for (size_t i = 0; i < env->nrcpt; i++)
		if (strcasecmp(env->rcpt[i].addr, addr) == 0)
			return 1;
	return 0;
}

/* Add one BCC recipient (as given in a table or action: qualified as an
 * SMTP address would be). */
static void bcc_add_env(const struct smtpd_conf *c, struct queue_env *env, const char *qid,
			const char *text, const char *why)
{
	struct addr a;
	struct buf err = BUF_INIT, canon = BUF_INIT;

	addr_init(&a);
	if (addr_parse_mailbox(&a, text, 0, &err) != ADDR_OK) {
		msg_warn("%s: %s: bad BCC address \"%s\": %s", qid, why, text, buf_str(&err));
	} else {
		smtpd_check_canon(c, &a, &canon);
		if (!bcc_is_rcpt(env, buf_str(&canon)))
			queue_env_add_rcpt(env, buf_str(&canon), NULL, QUEUE_NOTIFY_NEVER);
	}
	addr_free(&a);
	buf_free(&err);
	buf_free(&canon);
}

static void bcc_add(struct smtpd_session *s, const char *text, const char *why)
{
	bcc_add_env(s->conf, &s->env, s->qid, text, why);
}

static void bcc_keys(const struct smtpd_conf *c, const char *addr, struct table_keys *k)
{
	const char *at = strrchr(addr, '@');
	struct buf user = BUF_INIT, ext = BUF_INIT, key = BUF_INIT;
	const char *domain = at ? at + 1 : "";
	char *local = xstrndup(addr, at ? (size_t)(at - addr) : strlen(addr));
	int split = c->rcpt_delim && *c->rcpt_delim && addr_split_ext(local, c->rcpt_delim, &user, &ext);
	struct buf err = BUF_INIT;

	table_keys_add(k, addr, strlen(addr), 1);
	if (split) {
		buf_printf(&key, "%s@%s", buf_str(&user), domain);
		table_keys_add(k, key.data, key.len, 0);
	}
	if (*domain && smtpd_conf_domain_local(c, domain, &err) > 0) {
		table_keys_add(k, local, strlen(local), 0);
		if (split)
			table_keys_add(k, user.data, user.len, 0);
	}
	if (*domain) {
		buf_reset(&key);
		buf_printf(&key, "@%s", domain);
		table_keys_add(k, key.data, key.len, 0);
	}
	free(local);
	buf_free(&user);
	buf_free(&ext);
	buf_free(&key);
	buf_free(&err);
}

static int bcc_lookup(const struct smtpd_conf *c, struct queue_env *env, const char *qid,
		      struct table **maps, size_t n, const char *param, const char *addr)
{
	struct table_keys k = TABLE_KEYS_INIT;
	struct buf value = BUF_INIT, err = BUF_INIT, low = BUF_INIT;
	int rc = TABLE_NOTFOUND;

	if (n == 0 || *addr == 0)
		return 0;
	buf_set(&low, addr);
	buf_lower(&low);
	bcc_keys(c, buf_str(&low), &k);
	for (size_t i = 0; i < n && rc == TABLE_NOTFOUND; i++)
		rc = table_lookup_keys(maps[i], &k, &value, NULL, &err);
	if (rc == TABLE_ERROR)
		msg_warn("%s: %s lookup error for %s: %s", qid, param, addr, buf_str(&err));
	else if (rc == TABLE_FOUND && value.len)
		bcc_add_env(c, env, qid, buf_str(&value), param);
	table_keys_free(&k);
	buf_free(&value);
	buf_free(&err);
	buf_free(&low);
	return rc == TABLE_ERROR ? -1 : 0;
}

int smtpd_bcc_auto(const struct smtpd_conf *c, struct queue_env *env, const char *qid)
{
	size_t nrcpt = env->nrcpt; /* BCCs of BCCs: no */
	int rc = 0;

	if (bcc_lookup(c, env, qid, c->sender_bcc, c->nsender_bcc, "sender_bcc_maps",
		       env->sender) < 0)
		rc = -1;
	for (size_t i = 0; i < nrcpt && rc == 0; i++) {
		char *r = xstrdup(env->rcpt[i].addr); /* the array may move */
		if (bcc_lookup(c, env, qid, c->rcpt_bcc, c->nrcpt_bcc, "recipient_bcc_maps", r) < 0)
			rc = -1;
		free(r);
	}
	if (rc == 0 && c->always_bcc && *c->always_bcc && nrcpt > 0)
		bcc_add_env(c, env, qid, c->always_bcc, "always_bcc");
	return rc;
}

void smtpd_filter_set(const struct smtpd_conf *c, const char *filter, struct queue_env *env)
{
	const char *f = filter && *filter ? filter : c->content_filter;

	free(env->filter);
	env->filter = f && *f ? xstrdup(f) : NULL;
}

int smtpd_bcc_apply(struct smtpd_session *s)
{
	if (s->txn_redirect) { /* REDIRECT: the only recipient from now on */
		struct queue_env *env = &s->env;
		for (size_t i = 0; i < env->nrcpt; i++) {
			free(env->rcpt[i].addr);
			free(env->rcpt[i].orcpt);
		}
		env->nrcpt = 0;
		bcc_add(s, s->txn_redirect, "REDIRECT");
		if (env->nrcpt)
			env->rcpt[0].notify = 0;
	}
	if (smtpd_bcc_auto(s->conf, &s->env, s->qid) < 0)
		return -1;
	for (const char *p = buf_str(&s->txn_bcc), *nl; (nl = strchr(p, '\n')) != NULL;
	     p = nl + 1) {
		char *one = xstrndup(p, (size_t)(nl - p));
		bcc_add(s, one, "BCC action");
		free(one);
	}
	return 0;
}
