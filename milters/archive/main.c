/* main.c - tern-archive-milter: archive copies decided by lookup tables on
 * the envelope sender, each recipient, the client and the SASL login, as
 * Postfix's sender_bcc_maps / recipient_bcc_maps but in one milter that any
 * MTA can use (design.md "Tern's own delegates").
 *
 * The decision is made at end of message, when the recipient list is
 * final; each archive address is added once with smfi_addrcpt_par(...,
 * "NOTIFY=NEVER") so an archive copy never bounces to the sender, or with
 * smfi_addrcpt() when the MTA does not offer ADDRCPT_PAR
 * (milter-policy-ecosystem.md §8). A failed table lookup tempfails the
 * message: silently not archiving is the worse outcome for an archive.
 */
#include "milter.h"

#include "log.h"
#include "table.h"
#include "table_keys.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct cfg_param archive_params[] = {
    {"archive_sender_maps", CFG_TABLES, "",
     "envelope sender -> archive address(es) (Postfix sender_bcc_maps keys)", 0, 0, NULL,
     CFG_P_TERN, NULL},
    {"archive_recipient_maps", CFG_TABLES, "",
     "each envelope recipient -> archive address(es) (recipient_bcc_maps keys)", 0, 0, NULL,
     CFG_P_TERN, NULL},
    {"archive_client_maps", CFG_TABLES, "",
     "client name / address (check_client_access keys) -> archive address(es)", 0, 0, NULL,
     CFG_P_TERN, NULL},
    {"archive_sasl_maps", CFG_TABLES, "", "SASL login name -> archive address(es)", 0, 0, NULL,
     CFG_P_TERN, NULL},
    {"archive_notify", CFG_STR, "NEVER",
     "DSN NOTIFY= of an added archive recipient (empty: no ESMTP argument)", 0, 0, NULL, CFG_P_TERN,
     NULL},
    {"archive_header", CFG_STR, "",
     "insert this trace header naming the archive copies (empty: none)", 0, 0, NULL, CFG_P_TERN,
     NULL},
    {"archive_lookup_error_action", CFG_STR, "tempfail",
     "a table failed: tempfail (451 4.3.0) or accept without archiving", 0, 0, NULL, CFG_P_TERN,
     NULL},
    {NULL, 0, NULL, NULL, 0, 0, NULL, 0, NULL},
};

/* The maps of one parameter, in the order listed (first match wins). */
struct archive_maps {
	struct table **t;
	size_t n;
};

enum archive_what { ARCHIVE_SENDER, ARCHIVE_RECIPIENT, ARCHIVE_CLIENT, ARCHIVE_SASL, ARCHIVE_N };

static const char *const archive_map_params[ARCHIVE_N] = {
    "archive_sender_maps", "archive_recipient_maps", "archive_client_maps", "archive_sasl_maps"};
static const char *const archive_reason[ARCHIVE_N] = {"sender", "recipient", "client", "sasl"};

struct archive_conf {
	struct archive_maps maps[ARCHIVE_N];
	char *notify; /* "NOTIFY=NEVER" or NULL */
	char *header; /* trace header name or NULL */
	int tempfail; /* on a lookup error */
};

/* One SMTP session; the envelope part is reset per message. */
struct archive_conn {
	void *conf_ref;
	struct archive_conf *conf;
	unsigned long actions;	/* negotiated SMFIF_* */
	unsigned long protocol; /* negotiated SMFIP_* */
	char *client_addr, *client_name;
	char *sender, *sasl_user;
	char **rcpt;
	size_t nrcpt, rcpt_cap;
};

/* ---- configuration ---- */

static void archive_maps_free(struct archive_maps *m)
{
	for (size_t i = 0; i < m->n; i++)
		table_close(m->t[i]);
	free(m->t);
	m->t = NULL;
	m->n = 0;
}

static void archive_conf_free(void *p)
{
	struct archive_conf *ac = p;

	if (ac == NULL)
		return;
	for (int i = 0; i < ARCHIVE_N; i++)
		archive_maps_free(&ac->maps[i]);
	free(ac->notify);
	free(ac->header);
	free(ac);
}

static int archive_maps_open(const struct cfg *cfg, const char *param, struct archive_maps *m,
			     struct buf *err)
{
	struct cfg_list l = {NULL, 0};

	if (cfg_get_list(cfg, NULL, param, &l, err) < 0)
		return -1;
	m->t = xcalloc(l.count + 1, sizeof(*m->t));
	for (size_t i = 0; i < l.count; i++) {
		struct buf e = BUF_INIT;

		buf_init(&e);
		/* Lenient, as Postfix: a missing file fails lookups (tempfail)
		 * and is retried, it does not stop the milter. */
		if ((m->t[m->n] = table_open_lenient(l.items[i], &e)) == NULL) {
			buf_printf(err, "%s: %s", param, buf_str(&e));
			buf_free(&e);
			cfg_list_free(&l);
			return -1;
		}
		m->n++;
		buf_free(&e);
	}
	cfg_list_free(&l);
	return 0;
}

/* RFC 3461 §4.1: NEVER alone, or a comma list of SUCCESS, FAILURE, DELAY. */
static int archive_notify_check(const char *v)
{
	char *copy = xstrdup(v), *save = NULL, *w;
	int rc = 0;

	if (strcasecmp(v, "NEVER") == 0)
		goto done;
	for (w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save))
		if (strcasecmp(w, "SUCCESS") && strcasecmp(w, "FAILURE") && strcasecmp(w, "DELAY"))
			rc = -1;
	if (*v == ',' || v[strlen(v) - 1] == ',' || strstr(v, ",,"))
		rc = -1;
done:
	free(copy);
	return rc;
}

static void *archive_conf_load(const struct cfg *cfg, struct buf *err)
{
	struct archive_conf *ac = xcalloc(1, sizeof(*ac));
	struct buf v = BUF_INIT;

	buf_init(&v);
	for (int i = 0; i < ARCHIVE_N; i++)
		if (archive_maps_open(cfg, archive_map_params[i], &ac->maps[i], err) < 0)
			goto fail;
	if (cfg_get_str(cfg, NULL, "archive_notify", &v, err) < 0)
		goto fail;
	if (v.len) {
		if (archive_notify_check(buf_str(&v)) < 0) {
			buf_printf(err,
				   "archive_notify: bad value \"%s\" (NEVER, or a comma list of "
				   "SUCCESS, FAILURE, DELAY)",
				   buf_str(&v));
			goto fail;
		}
		ac->notify = xmalloc(v.len + 8);
		snprintf(ac->notify, v.len + 8, "NOTIFY=%s", buf_str(&v));
	}
	if (cfg_get_str(cfg, NULL, "archive_header", &v, err) < 0)
		goto fail;
	if (v.len)
		ac->header = xstrdup(buf_str(&v));
	if (cfg_get_str(cfg, NULL, "archive_lookup_error_action", &v, err) < 0)
		goto fail;
	if (strcmp(buf_str(&v), "tempfail") == 0)
		ac->tempfail = 1;
	else if (strcmp(buf_str(&v), "accept") != 0) {
		buf_printf(err, "archive_lookup_error_action: \"%s\" is not tempfail or accept",
			   buf_str(&v));
		goto fail;
	}
	buf_free(&v);
	return ac;
fail:
	buf_free(&v);
	archive_conf_free(ac);
	return NULL;
}

/* ---- the decision ---- */

/* Changed table files are re-read once per message, before deciding. */
static void archive_maps_refresh(struct archive_conf *ac)
{
	for (int w = 0; w < ARCHIVE_N; w++)
		for (size_t i = 0; i < ac->maps[w].n; i++) {
			struct buf e = BUF_INIT;

			buf_init(&e);
			if (table_reload(ac->maps[w].t[i], 0, &e) < 0)
				msg_warn("%s: %s", ac->maps[w].t[i]->spec, buf_str(&e));
			buf_free(&e);
		}
}

/* First match over the maps of one parameter. */
static int archive_lookup(struct archive_maps *m, const struct table_keys *k, struct buf *value,
			  struct buf *err)
{
	for (size_t i = 0; i < m->n; i++) {
		int rc = table_lookup_keys(m->t[i], k, value, NULL, err);

		if (rc != TABLE_NOTFOUND)
			return rc;
	}
	return TABLE_NOTFOUND;
}

/* Add the addresses in value (a list) to out, once each. */
static void archive_add(struct cfg_list *out, const char *value)
{
	struct cfg_list l = {NULL, 0};
	struct buf e = BUF_INIT;

	buf_init(&e);
	if (cfg_list_split(value, &l, &e) == 0) {
		for (size_t i = 0; i < l.count; i++) {
			char *a = milter_addr_strip(l.items[i]);
			size_t j;

			for (j = 0; j < out->count && strcasecmp(out->items[j], a); j++)
				;
			if (j < out->count || *a == 0) {
				free(a);
				continue;
			}
			out->items = xrealloc(out->items, (out->count + 1) * sizeof(char *));
			out->items[out->count++] = a;
		}
	}
	cfg_list_free(&l);
	buf_free(&e);
}

/* One lookup kind; 0 or -1 (lookup error, err set). */
static int archive_check(struct archive_conn *c, enum archive_what w, const char *key,
			 struct cfg_list *out, struct buf *why, struct buf *err)
{
	struct table_keys k = TABLE_KEYS_INIT;
	struct buf v = BUF_INIT;
	int rc;

	if (c->conf->maps[w].n == 0 || key == NULL)
		return 0;
	buf_init(&v);
	table_keys_init(&k);
	if (w == ARCHIVE_CLIENT)
		table_keys_client(&k, c->client_name, key, 0);
	else if (w == ARCHIVE_SASL)
		table_keys_add(&k, key, strlen(key), 1);
	else
		table_keys_address(&k, *key ? key : TABLE_KEYS_NULL_SENDER, "", 0);
	rc = archive_lookup(&c->conf->maps[w], &k, &v, err);
	if (rc == TABLE_FOUND) {
		size_t before = out->count;

		archive_add(out, buf_str(&v));
		if (out->count > before)
			buf_printf(why, "%s%s <%s>", why->len ? ", " : "", archive_reason[w], key);
	}
	table_keys_free(&k);
	buf_free(&v);
	return rc == TABLE_ERROR ? -1 : 0;
}

static int archive_is_rcpt(const struct archive_conn *c, const char *addr)
{
	for (size_t i = 0; i < c->nrcpt; i++)
		if (strcasecmp(c->rcpt[i], addr) == 0)
			return 1;
	return 0;
}

/* ---- per-session state ---- */

static struct archive_conn *archive_conn_get(SMFICTX *ctx)
{
	struct archive_conn *c = smfi_getpriv(ctx);

	if (c == NULL) {
		c = xcalloc(1, sizeof(*c));
		c->conf_ref = milter_conf_acquire();
		c->conf = milter_conf_state(c->conf_ref);
		smfi_setpriv(ctx, c);
	}
	return c;
}

static void archive_msg_reset(struct archive_conn *c)
{
	free(c->sender);
	free(c->sasl_user);
	c->sender = c->sasl_user = NULL;
	for (size_t i = 0; i < c->nrcpt; i++)
		free(c->rcpt[i]);
	c->nrcpt = 0;
}

static sfsistat archive_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
				  unsigned long f2, unsigned long f3, unsigned long *pf0,
				  unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
	struct archive_conn *c = archive_conn_get(ctx);
	unsigned long want = SMFIF_ADDRCPT | SMFIF_ADDRCPT_PAR | SMFIF_SETSYMLIST;
	unsigned long steps = SMFIP_NOHELO | SMFIP_NOHDRS | SMFIP_NOEOH | SMFIP_NOBODY |
			      SMFIP_NOUNKNOWN | SMFIP_NODATA | SMFIP_NR_CONN | SMFIP_NR_MAIL |
			      SMFIP_NR_RCPT;

	if (c->conf->header)
		want |= SMFIF_ADDHDRS;
	if ((f0 & (SMFIF_ADDRCPT | SMFIF_ADDRCPT_PAR)) == 0) {
		msg_warn("the MTA offers neither ADDRCPT nor ADDRCPT_PAR: cannot archive");
		return SMFIS_REJECT;
	}
	c->actions = *pf0 = f0 & want;
	c->protocol = *pf1 = f1 & steps;
	*pf2 = *pf3 = 0;
	if (c->actions & SMFIF_SETSYMLIST) {
		smfi_setsymlist(ctx, SMFIM_CONNECT, "{client_addr} {client_name}");
		smfi_setsymlist(ctx, SMFIM_ENVFROM, "{auth_authen}");
		smfi_setsymlist(ctx, SMFIM_EOM, "i");
	}
	return SMFIS_CONTINUE;
}

static sfsistat archive_reply(const struct archive_conn *c, unsigned long nr)
{
	return c->protocol & nr ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static sfsistat archive_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *sa)
{
	struct archive_conn *c = archive_conn_get(ctx);

	free(c->client_addr);
	free(c->client_name);
	c->client_addr = milter_macro_dup(ctx, "{client_addr}");
	c->client_name = milter_macro_dup(ctx, "{client_name}");
	if (c->client_name == NULL && host && *host != '[')
		c->client_name = xstrdup(host);
	if (c->client_addr == NULL && sa != NULL) {
		char text[INET6_ADDRSTRLEN] = "";

		if (sa->sa_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, text,
				  sizeof(text));
		else if (sa->sa_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, text,
				  sizeof(text));
		if (*text)
			c->client_addr = xstrdup(text);
	}
	return archive_reply(c, SMFIP_NR_CONN);
}

static sfsistat archive_envfrom(SMFICTX *ctx, char **argv)
{
	struct archive_conn *c = archive_conn_get(ctx);

	archive_msg_reset(c);
	c->sender = milter_addr_strip(argv[0]);
	c->sasl_user = milter_macro_dup(ctx, "{auth_authen}");
	return archive_reply(c, SMFIP_NR_MAIL);
}

static sfsistat archive_envrcpt(SMFICTX *ctx, char **argv)
{
	struct archive_conn *c = archive_conn_get(ctx);

	if (c->nrcpt == c->rcpt_cap) {
		c->rcpt_cap = c->rcpt_cap ? 2 * c->rcpt_cap : 8;
		c->rcpt = xrealloc(c->rcpt, c->rcpt_cap * sizeof(char *));
	}
	c->rcpt[c->nrcpt++] = milter_addr_strip(argv[0]);
	return archive_reply(c, SMFIP_NR_RCPT);
}

static int archive_decide(struct archive_conn *c, struct cfg_list *out, struct buf *why,
			  struct buf *err)
{
	archive_maps_refresh(c->conf);
	if (archive_check(c, ARCHIVE_SENDER, c->sender, out, why, err) < 0 ||
	    archive_check(c, ARCHIVE_CLIENT, c->client_addr, out, why, err) < 0 ||
	    (c->sasl_user && *c->sasl_user &&
	     archive_check(c, ARCHIVE_SASL, c->sasl_user, out, why, err) < 0))
		return -1;
	for (size_t i = 0; i < c->nrcpt; i++)
		if (archive_check(c, ARCHIVE_RECIPIENT, c->rcpt[i], out, why, err) < 0)
			return -1;
	return 0;
}

static sfsistat archive_eom(SMFICTX *ctx)
{
	struct archive_conn *c = archive_conn_get(ctx);
	struct cfg_list out = {NULL, 0};
	struct buf qid = BUF_INIT, why = BUF_INIT, err = BUF_INIT, a = BUF_INIT;
	sfsistat rc = SMFIS_CONTINUE;

	buf_init(&qid);
	buf_init(&why);
	buf_init(&err);
	buf_init(&a);
	milter_qid(ctx, &qid);
	if (archive_decide(c, &out, &why, &err) < 0) {
		msg_qid(buf_str(&qid), "warning: archive lookup failed: %s", buf_str(&err));
		if (c->conf->tempfail) {
			smfi_setreply(ctx, "451", "4.3.0", "Temporary lookup failure");
			rc = SMFIS_TEMPFAIL;
			goto done;
		}
	}
	for (size_t i = 0; i < out.count; i++) {
		int r;

		if (archive_is_rcpt(c, out.items[i])) {
			msg_qid(buf_str(&qid), "archive: <%s> already a recipient", out.items[i]);
			continue;
		}
		buf_reset(&a);
		buf_printf(&a, "<%s>", out.items[i]);
		if ((c->actions & SMFIF_ADDRCPT_PAR) && c->conf->notify)
			r = smfi_addrcpt_par(ctx, a.data, c->conf->notify);
		else
			r = smfi_addrcpt(ctx, a.data);
		if (r != MI_SUCCESS) {
			msg_qid(buf_str(&qid), "warning: archive: cannot add recipient %s",
				buf_str(&a));
			smfi_setreply(ctx, "451", "4.3.0", "Archive copy failed");
			rc = SMFIS_TEMPFAIL;
			goto done;
		}
		msg_qid(buf_str(&qid), "archive: to=%s, reason=%s", buf_str(&a), buf_str(&why));
		if (c->conf->header && (c->actions & SMFIF_ADDHDRS))
			smfi_insheader(ctx, 0, c->conf->header, a.data);
	}
done:
	archive_msg_reset(c);
	cfg_list_free(&out);
	buf_free(&qid);
	buf_free(&why);
	buf_free(&err);
	buf_free(&a);
	return rc;
}

static sfsistat archive_abort(SMFICTX *ctx)
{
	struct archive_conn *c = smfi_getpriv(ctx);

	if (c)
		archive_msg_reset(c);
	return SMFIS_CONTINUE;
}

static sfsistat archive_close(SMFICTX *ctx)
{
	struct archive_conn *c = smfi_getpriv(ctx);

	if (c == NULL)
		return SMFIS_CONTINUE;
	archive_msg_reset(c);
	free(c->rcpt);
	free(c->client_addr);
	free(c->client_name);
	milter_conf_release(c->conf_ref);
	free(c);
	smfi_setpriv(ctx, NULL);
	return SMFIS_CONTINUE;
}

static struct smfiDesc archive_desc = {
    "tern-archive-milter",
    SMFI_VERSION,
    SMFIF_ADDRCPT | SMFIF_ADDRCPT_PAR | SMFIF_ADDHDRS | SMFIF_SETSYMLIST,
    archive_connect,
    NULL,
    archive_envfrom,
    archive_envrcpt,
    NULL,
    NULL,
    NULL,
    archive_eom,
    archive_abort,
    archive_close,
    NULL,
    NULL,
    archive_negotiate,
};

static const struct milter_prog archive_prog = {
    "archive",	       "inet:8895@127.0.0.1", archive_params, &archive_desc,
    archive_conf_load, archive_conf_free,     NULL,
};

int main(int argc, char **argv)
{
	return milter_main(argc, argv, &archive_prog);
}
