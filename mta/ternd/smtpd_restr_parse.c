/* smtpd_restr_parse.c - read the smtpd_*_restrictions lists, the
 * smtpd_restriction_classes and the codes/settings the engine needs into
 * a struct restr_conf (smtpd_restr.h), once per config snapshot: tables
 * and policy services are opened here, so a session never parses.
 * Errors name the file and line of the parameter, as every tern.conf
 * error does: "FILE, line N: smtpd_recipient_restrictions: unknown
 * restriction "foo"". Postfix only finds an unknown name when a mail
 * reaches it (451 4.3.5); Tern refuses the configuration instead.
 * Pitfall: a class may name other classes (and itself): only evaluation
 * bounds the recursion (Postfix: 100 levels).
 */
#include "smtpd_int.h"

#include "log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

enum restr_arg { A_NONE, A_TABLE, A_DOMAIN, A_POLICY, A_NUMBER };

static const struct {
	const char *name;
	enum restr_op op;
	enum restr_arg arg;
} restr_names[] = {
    {"permit", RO_PERMIT, A_NONE},
    {"reject", RO_REJECT, A_NONE},
    {"defer", RO_DEFER, A_NONE},
    {"defer_if_permit", RO_DEFER_IF_PERMIT, A_NONE},
    {"defer_if_reject", RO_DEFER_IF_REJECT, A_NONE},
    {"warn_if_reject", RO_WARN_IF_REJECT, A_NONE},
    {"sleep", RO_SLEEP, A_NUMBER},
    {"check_policy_service", RO_POLICY, A_POLICY},
    {"reject_unauth_pipelining", RO_UNAUTH_PIPELINING, A_NONE},
    {"reject_plaintext_session", RO_PLAINTEXT, A_NONE},
    {"reject_multi_recipient_bounce", RO_MULTI_RCPT_BOUNCE, A_NONE},
    {"permit_mynetworks", RO_PERMIT_MYNETWORKS, A_NONE},
    {"permit_inet_interfaces", RO_PERMIT_INET_INTERFACES, A_NONE},
    {"permit_sasl_authenticated", RO_PERMIT_SASL, A_NONE},
    {"permit_tls_all_clientcerts", RO_PERMIT_TLS_ALL, A_NONE},
    {"permit_tls_clientcerts", RO_PERMIT_TLS, A_NONE},
    {"check_ccert_access", RO_CCERT_ACCESS, A_TABLE},
    {"check_sasl_access", RO_SASL_ACCESS, A_TABLE},
    {"check_client_access", RO_CLIENT_ACCESS, A_TABLE},
    {"check_client_a_access", RO_CLIENT_A_ACCESS, A_TABLE},
    {"check_client_mx_access", RO_CLIENT_MX_ACCESS, A_TABLE},
    {"check_client_ns_access", RO_CLIENT_NS_ACCESS, A_TABLE},
    {"check_reverse_client_hostname_access", RO_REVERSE_ACCESS, A_TABLE},
    {"check_reverse_client_hostname_a_access", RO_REVERSE_A_ACCESS, A_TABLE},
    {"check_reverse_client_hostname_mx_access", RO_REVERSE_MX_ACCESS, A_TABLE},
    {"check_reverse_client_hostname_ns_access", RO_REVERSE_NS_ACCESS, A_TABLE},
    {"reject_unknown_client_hostname", RO_UNKNOWN_CLIENT, A_NONE},
    {"reject_unknown_client", RO_UNKNOWN_CLIENT, A_NONE},
    {"reject_unknown_reverse_client_hostname", RO_UNKNOWN_REVERSE_CLIENT, A_NONE},
    {"reject_rbl_client", RO_RBL_CLIENT, A_DOMAIN},
    {"reject_rbl", RO_RBL_CLIENT, A_DOMAIN},
    {"permit_dnswl_client", RO_DNSWL_CLIENT, A_DOMAIN},
    {"reject_rhsbl_client", RO_RHSBL_CLIENT, A_DOMAIN},
    {"permit_rhswl_client", RO_RHSWL_CLIENT, A_DOMAIN},
    {"reject_rhsbl_reverse_client", RO_RHSBL_REVERSE_CLIENT, A_DOMAIN},
    {"check_helo_access", RO_HELO_ACCESS, A_TABLE},
    {"check_helo_a_access", RO_HELO_A_ACCESS, A_TABLE},
    {"check_helo_mx_access", RO_HELO_MX_ACCESS, A_TABLE},
    {"check_helo_ns_access", RO_HELO_NS_ACCESS, A_TABLE},
    {"reject_invalid_helo_hostname", RO_INVALID_HELO, A_NONE},
    {"reject_invalid_hostname", RO_INVALID_HELO, A_NONE},
    {"reject_non_fqdn_helo_hostname", RO_NON_FQDN_HELO, A_NONE},
    {"reject_non_fqdn_hostname", RO_NON_FQDN_HELO, A_NONE},
    {"reject_unknown_helo_hostname", RO_UNKNOWN_HELO, A_NONE},
    {"reject_unknown_hostname", RO_UNKNOWN_HELO, A_NONE},
    {"reject_rhsbl_helo", RO_RHSBL_HELO, A_DOMAIN},
    {"permit_naked_ip_address", RO_PERMIT_NAKED_IP, A_NONE},
    {"check_sender_access", RO_SENDER_ACCESS, A_TABLE},
    {"check_sender_a_access", RO_SENDER_A_ACCESS, A_TABLE},
    {"check_sender_mx_access", RO_SENDER_MX_ACCESS, A_TABLE},
    {"check_sender_ns_access", RO_SENDER_NS_ACCESS, A_TABLE},
    {"reject_non_fqdn_sender", RO_NON_FQDN_SENDER, A_NONE},
    {"reject_unknown_sender_domain", RO_UNKNOWN_SENDER_DOMAIN, A_NONE},
    {"reject_unknown_address", RO_UNKNOWN_SENDER_DOMAIN, A_NONE},
    {"reject_rhsbl_sender", RO_RHSBL_SENDER, A_DOMAIN},
    {"reject_unlisted_sender", RO_UNLISTED_SENDER, A_NONE},
    {"reject_sender_login_mismatch", RO_SENDER_LOGIN_MISMATCH, A_NONE},
    {"reject_authenticated_sender_login_mismatch", RO_SENDER_LOGIN_MISMATCH, A_NONE},
    {"reject_known_sender_login_mismatch", RO_SENDER_LOGIN_MISMATCH, A_NONE},
    {"reject_unauthenticated_sender_login_mismatch", RO_SENDER_LOGIN_MISMATCH, A_NONE},
    {"check_recipient_access", RO_RECIPIENT_ACCESS, A_TABLE},
    {"check_recipient_a_access", RO_RECIPIENT_A_ACCESS, A_TABLE},
    {"check_recipient_mx_access", RO_RECIPIENT_MX_ACCESS, A_TABLE},
    {"check_recipient_ns_access", RO_RECIPIENT_NS_ACCESS, A_TABLE},
    {"permit_auth_destination", RO_PERMIT_AUTH_DEST, A_NONE},
    {"permit_mx_backup", RO_PERMIT_MX_BACKUP, A_NONE},
    {"reject_unauth_destination", RO_REJECT_UNAUTH_DEST, A_NONE},
    {"defer_unauth_destination", RO_DEFER_UNAUTH_DEST, A_NONE},
    {"check_relay_domains", RO_CHECK_RELAY_DOMAINS, A_NONE},
    {"reject_non_fqdn_recipient", RO_NON_FQDN_RCPT, A_NONE},
    {"reject_unknown_recipient_domain", RO_UNKNOWN_RCPT_DOMAIN, A_NONE},
    {"reject_rhsbl_recipient", RO_RHSBL_RCPT, A_DOMAIN},
    {"reject_unlisted_recipient", RO_UNLISTED_RCPT, A_NONE},
    {"check_recipient_maps", RO_UNLISTED_RCPT, A_NONE},
    {"check_etrn_access", RO_ETRN_ACCESS, A_TABLE},
};

/* Names Postfix has that Tern cannot honour: refused with the reason,
 * never silently ignored. */
static const struct {
	const char *name, *why;
} restr_unsupported[] = {
    {"reject_unverified_sender", "Tern has no address verification service"},
    {"reject_unverified_recipient", "Tern has no address verification service"},
    {"reject_maps_rbl", "removed from Postfix; use reject_rbl_client domain"},
};

const char *restr_op_name(enum restr_op op)
{
	for (size_t i = 0; i < sizeof(restr_names) / sizeof(*restr_names); i++)
		if (restr_names[i].op == op)
			return restr_names[i].name;
	return op == RO_IMPLICIT ? "(table)" : "(class)";
}

static long restr_class_find(const struct restr_conf *rc, const char *name)
{
	for (size_t i = 0; i < rc->nclasses; i++)
		if (strcmp(rc->classes[i].name, name) == 0)
			return (long)i;
	return -1;
}

int restr_name_find(const struct restr_conf *rc, const char *word, struct restr_item *it, int *arg)
{
	long cls;

	memset(it, 0, sizeof(*it));
	for (size_t k = 0; k < sizeof(restr_names) / sizeof(*restr_names); k++) {
		if (strcasecmp(word, restr_names[k].name) == 0) {
			it->op = restr_names[k].op;
			it->name = restr_names[k].name;
			*arg = (int)restr_names[k].arg;
			return 0;
		}
	}
	if ((cls = restr_class_find(rc, word)) < 0)
		return -1;
	it->op = RO_CLASS;
	it->cls = (size_t)cls;
	it->name = rc->classes[cls].name;
	*arg = 0;
	return 0;
}

/* "FILE, line N: " of the setting that gave param (listener view). */
static void restr_where(const struct cfg *cfg, const char *listener, const char *param,
			struct buf *out)
{
	struct cfg_entry *e = NULL;
	size_t n = cfg_entries(cfg, CFG_ENTRIES_SET, &e);
	struct buf key = BUF_INIT;
	const struct cfg_entry *hit = NULL;

	if (listener)
		buf_printf(&key, "%s.%s", listener, param);
	for (size_t i = 0; i < n && hit == NULL; i++)
		if (listener && strcmp(e[i].name, buf_str(&key)) == 0)
			hit = &e[i];
	for (size_t i = 0; i < n && hit == NULL; i++)
		if (strcmp(e[i].name, param) == 0)
			hit = &e[i];
	if (hit && hit->file)
		buf_printf(out, "%s, line %d: ", hit->file, hit->line);
	else if (hit == NULL)
		buf_puts(out, "default: ");
	free(e);
	buf_free(&key);
}

struct restr_parser {
	struct restr_conf *rc;
	const struct cfg *cfg;
	const char *listener;
	const char *param;
	struct buf *err;
};

static void restr_fail(struct restr_parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void restr_fail(struct restr_parser *p, const char *fmt, ...)
{
	va_list ap;

	buf_reset(p->err);
	restr_where(p->cfg, p->listener, p->param, p->err);
	buf_printf(p->err, "%s: ", p->param);
	va_start(ap, fmt);
	buf_vprintf(p->err, fmt, ap);
	va_end(ap);
}

static struct table *restr_table(struct restr_parser *p, const char *spec)
{
	struct restr_conf *rc = p->rc;
	struct buf why = BUF_INIT;
	struct table *t;

	for (size_t i = 0; i < rc->ntables; i++)
		if (strcmp(rc->tables[i]->spec, spec) == 0)
			return rc->tables[i];
	if ((t = table_open_lenient(spec, &why)) == NULL) {
		restr_fail(p, "%s", buf_str(&why));
		buf_free(&why);
		return NULL;
	}
	buf_free(&why);
	rc->tables = xrealloc(rc->tables, (rc->ntables + 1) * sizeof(*rc->tables));
	rc->tables[rc->ntables++] = t;
	return t;
}

static struct policy_service *restr_policy(struct restr_parser *p, const char *spec)
{
	struct restr_conf *rc = p->rc;
	struct buf why = BUF_INIT;
	struct policy_service *ps;

	for (size_t i = 0; i < rc->npolicies; i++)
		if (strcmp(rc->policies[i]->spec, spec) == 0)
			return rc->policies[i];
	if ((ps = policy_service_parse(p->cfg, p->listener, spec, &why)) == NULL) {
		restr_fail(p, "check_policy_service %s: %s", spec, buf_str(&why));
		buf_free(&why);
		return NULL;
	}
	buf_free(&why);
	rc->policies = xrealloc(rc->policies, (rc->npolicies + 1) * sizeof(*rc->policies));
	rc->policies[rc->npolicies++] = ps;
	return ps;
}

/* The argument of item i: -1 with the error set when it is missing. */
static int restr_arg(struct restr_parser *p, const struct cfg_list *items, size_t *i,
		     enum restr_arg kind, struct restr_item *it)
{
	const char *name = items->items[*i];
	const char *arg = *i + 1 < items->count ? items->items[*i + 1] : NULL;

	if (arg == NULL) {
		restr_fail(p, "restriction %s needs %s", name,
			   kind == A_TABLE    ? "a type:table argument"
			   : kind == A_DOMAIN ? "a domain name argument"
			   : kind == A_POLICY ? "a transport:server argument"
					      : "a number argument");
		return -1;
	}
	if (kind == A_TABLE && (strchr(arg, ':') == NULL || arg[0] == '{')) {
		restr_fail(p, "restriction %s: bad argument \"%s\": need maptype:mapname", name,
			   arg);
		return -1;
	}
	if (kind == A_NUMBER && (arg[strspn(arg, "0123456789")] != 0 || !*arg)) {
		restr_fail(p, "restriction %s must be followed by number", name);
		return -1;
	}
	if (kind == A_POLICY && arg[0] != '{' && strchr(arg, ':') == NULL) {
		restr_fail(p, "restriction %s must be followed by transport:server", name);
		return -1;
	}
	++*i;
	it->arg = xstrdup(arg);
	if (kind == A_TABLE && (it->table = restr_table(p, arg)) == NULL)
		return -1;
	if (kind == A_POLICY && (it->policy = restr_policy(p, arg)) == NULL)
		return -1;
	return 0;
}

static int restr_item_parse(struct restr_parser *p, const struct cfg_list *items, size_t *i,
			    int allow_bare, struct restr_item *it)
{
	const char *word = items->items[*i];
	long cls;

	memset(it, 0, sizeof(*it));
	if (strchr(word, ':') != NULL && word[0] != '{') {
		/* A bare type:table means the list's check_<class>_access. */
		if (!allow_bare) {
			restr_fail(
			    p,
			    "lookup table \"%s\" needs a check_*_access restriction before it "
			    "(there is no implicit one in this list)",
			    word);
			return -1;
		}
		it->op = RO_IMPLICIT;
		it->name = "(table)";
		it->arg = xstrdup(word);
		return (it->table = restr_table(p, word)) ? 0 : -1;
	}
	for (size_t k = 0; k < sizeof(restr_names) / sizeof(*restr_names); k++) {
		if (strcasecmp(word, restr_names[k].name) != 0)
			continue;
		it->op = restr_names[k].op;
		it->name = restr_names[k].name;
		return restr_names[k].arg == A_NONE
			   ? 0
			   : restr_arg(p, items, i, restr_names[k].arg, it);
	}
	if ((cls = restr_class_find(p->rc, word)) >= 0) {
		it->op = RO_CLASS;
		it->cls = (size_t)cls;
		it->name = p->rc->classes[cls].name;
		return 0;
	}
	for (size_t k = 0; k < sizeof(restr_unsupported) / sizeof(*restr_unsupported); k++) {
		if (strcasecmp(word, restr_unsupported[k].name) == 0) {
			restr_fail(p, "restriction \"%s\" is not supported: %s", word,
				   restr_unsupported[k].why);
			return -1;
		}
	}
	restr_fail(p, "unknown restriction \"%s\"", word);
	return -1;
}

static int restr_list_parse(struct restr_parser *p, const char *param, int allow_bare,
			    struct restr_list *out)
{
	struct cfg_list items = {NULL, 0};
	int rc = 0;

	p->param = param;
	out->param = xstrdup(param);
	if (cfg_get_list(p->cfg, p->listener, param, &items, p->err) < 0)
		return -1;
	out->v = xcalloc(items.count + 1, sizeof(*out->v));
	for (size_t i = 0; i < items.count && rc == 0; i++) {
		rc = restr_item_parse(p, &items, &i, allow_bare, &out->v[out->n]);
		if (rc == 0)
			out->n++;
		else
			free(out->v[out->n].arg);
	}
	cfg_list_free(&items);
	return rc;
}

static void restr_list_free(struct restr_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].arg);
	free(l->v);
	free(l->param);
	memset(l, 0, sizeof(*l));
}

static int restr_classes_parse(struct restr_parser *p)
{
	struct restr_conf *rc = p->rc;
	struct cfg_list names = {NULL, 0};
	int ok = 0;

	if (cfg_get_list(p->cfg, p->listener, "smtpd_restriction_classes", &names, p->err) < 0)
		return -1;
	rc->classes = xcalloc(names.count + 1, sizeof(*rc->classes));
	for (size_t i = 0; i < names.count; i++) /* all names first: classes may refer ahead */
		if (restr_class_find(rc, names.items[i]) < 0)
			rc->classes[rc->nclasses++].name = xstrdup(names.items[i]);
	for (size_t i = 0; i < rc->nclasses && ok == 0; i++) {
		const char *raw = cfg_get_raw(p->cfg, p->listener, rc->classes[i].name);
		if (raw == NULL || *raw == 0) {
			p->param = "smtpd_restriction_classes";
			restr_fail(p, "restriction class `%s' needs a definition",
				   rc->classes[i].name);
			ok = -1;
			break;
		}
		ok = restr_list_parse(p, rc->classes[i].name, 1, &rc->classes[i].list);
	}
	cfg_list_free(&names);
	return ok;
}

static int restr_codes(struct restr_parser *p)
{
	static const struct {
		const char *name;
		size_t off;
	} codes[] = {
	    {"access_map_reject_code", offsetof(struct restr_conf, access_code)},
	    {"access_map_defer_code", offsetof(struct restr_conf, access_defer_code)},
	    {"reject_code", offsetof(struct restr_conf, reject_code)},
	    {"defer_code", offsetof(struct restr_conf, defer_code)},
	    {"relay_domains_reject_code", offsetof(struct restr_conf, relay_code)},
	    {"maps_rbl_reject_code", offsetof(struct restr_conf, rbl_code)},
	    {"invalid_hostname_reject_code", offsetof(struct restr_conf, bad_name_code)},
	    {"non_fqdn_reject_code", offsetof(struct restr_conf, non_fqdn_code)},
	    {"plaintext_reject_code", offsetof(struct restr_conf, plaintext_code)},
	    {"unknown_address_reject_code", offsetof(struct restr_conf, unk_addr_code)},
	    {"unknown_client_reject_code", offsetof(struct restr_conf, unk_client_code)},
	    {"unknown_hostname_reject_code", offsetof(struct restr_conf, unk_name_code)},
	    {"multi_recipient_bounce_reject_code", offsetof(struct restr_conf, mul_rcpt_code)},
	};
	long long v;

	for (size_t i = 0; i < sizeof(codes) / sizeof(*codes); i++) {
		if (cfg_get_int(p->cfg, p->listener, codes[i].name, &v, p->err) < 0)
			return -1;
		*(int *)((char *)p->rc + codes[i].off) = (int)v;
	}
	return 0;
}

/* unknown_*_tempfail_action: defer or defer_if_permit (Postfix name_code). */
static int restr_tempfail(struct restr_parser *p, const char *param, int *defer)
{
	struct buf v = BUF_INIT;
	int rc = 0;

	if (cfg_get_str(p->cfg, p->listener, param, &v, p->err) < 0)
		return -1;
	if (strcasecmp(buf_str(&v), "defer") == 0)
		*defer = 1;
	else if (strcasecmp(buf_str(&v), "defer_if_permit") == 0)
		*defer = 0;
	else {
		p->param = param;
		restr_fail(p, "bad value \"%s\" (defer or defer_if_permit)", buf_str(&v));
		rc = -1;
	}
	buf_free(&v);
	return rc;
}

static int restr_settings(struct restr_parser *p)
{
	struct restr_conf *rc = p->rc;
	const struct cfg *cfg = p->cfg;
	const char *l = p->listener;
	struct buf v = BUF_INIT;
	struct cfg_list items = {NULL, 0};
	const char *raw;

	if (cfg_get_bool(cfg, l, "smtpd_delay_reject", &rc->delay_reject, p->err) < 0 ||
	    cfg_get_bool(cfg, l, "smtpd_helo_required", &rc->helo_required, p->err) < 0 ||
	    cfg_get_bool(cfg, l, "soft_bounce", &rc->soft_bounce, p->err) < 0 ||
	    cfg_get_bool(cfg, l, "show_user_unknown_table_name", &rc->show_unk_table, p->err) < 0 ||
	    cfg_get_bool(cfg, l, "allow_untrusted_routing", &rc->allow_untrusted_routing, p->err) <
		0 ||
	    cfg_get_str(cfg, l, "smtpd_null_access_lookup_key", &v, p->err) < 0 ||
	    restr_codes(p) < 0 ||
	    restr_tempfail(p, "unknown_helo_hostname_tempfail_action", &rc->unk_name_tf_defer) <
		0 ||
	    restr_tempfail(p, "unknown_address_tempfail_action", &rc->unk_addr_tf_defer) < 0)
		goto fail;
	rc->null_key = buf_detach(&v);
	/* parent_domain_matches_subdomains names smtpd_access_maps: a key
	 * "example.com" also matches sub.example.com (else ".example.com"). */
	if (cfg_get_list(cfg, l, "parent_domain_matches_subdomains", &items, p->err) < 0)
		goto fail;
	for (size_t i = 0; i < items.count; i++)
		rc->access_parent |= strcasecmp(items.items[i], "smtpd_access_maps") == 0;
	cfg_list_free(&items);
	/* A raw parameter: $rbl_code... are filled in per reply. */
	raw = cfg_get_raw(cfg, l, "default_rbl_reply");
	rc->default_rbl_reply = xstrdup(raw ? raw : "");
	raw = cfg_get_raw(cfg, l, "permit_mx_backup_networks");
	rc->perm_mx_set = raw && raw[strspn(raw, " \t,")] != 0;
	if ((rc->perm_mx_networks = matchlist_from_cfg(cfg, l, "permit_mx_backup_networks",
						       MATCHLIST_ADDR, p->err)) == NULL)
		goto fail;
	if (cfg_get_list(cfg, l, "rbl_reply_maps", &items, p->err) < 0)
		goto fail;
	rc->rbl_reply_maps = xcalloc(items.count + 1, sizeof(*rc->rbl_reply_maps));
	p->param = "rbl_reply_maps";
	for (size_t i = 0; i < items.count; i++) {
		struct table *t = restr_table(p, items.items[i]);
		if (t == NULL) {
			cfg_list_free(&items);
			goto fail;
		}
		rc->rbl_reply_maps[rc->nrbl_reply_maps++] = t;
	}
	cfg_list_free(&items);
	if (cfg_get_list(cfg, l, "smtpd_log_access_permit_actions", &items, p->err) < 0)
		goto fail;
	rc->permit_log = items.items;
	rc->npermit_log = items.count;
	buf_free(&v);
	return 0;
fail:
	buf_free(&v);
	return -1;
}

int restr_conf_load(struct restr_conf *rc, const struct cfg *cfg, const char *listener,
		    struct buf *err)
{
	static const struct {
		const char *param;
		int bare;
	} lists[RL_COUNT] = {
	    [RL_CLIENT] = {"smtpd_client_restrictions", 1},
	    [RL_HELO] = {"smtpd_helo_restrictions", 1},
	    [RL_SENDER] = {"smtpd_sender_restrictions", 1},
	    [RL_RELAY] = {"smtpd_relay_restrictions", 1},
	    [RL_RECIPIENT] = {"smtpd_recipient_restrictions", 1},
	    [RL_DATA] = {"smtpd_data_restrictions", 0},
	    [RL_EOD] = {"smtpd_end_of_data_restrictions", 0},
	    [RL_ETRN] = {"smtpd_etrn_restrictions", 1},
	};
	struct restr_parser p = {rc, cfg, listener, "", err};

	memset(rc, 0, sizeof(*rc));
	if (restr_settings(&p) < 0 || restr_classes_parse(&p) < 0)
		return -1;
	for (int i = 0; i < RL_COUNT; i++)
		if (restr_list_parse(&p, lists[i].param, lists[i].bare, &rc->lists[i]) < 0)
			return -1;
	return 0;
}

void restr_conf_free(struct restr_conf *rc)
{
	for (int i = 0; i < RL_COUNT; i++)
		restr_list_free(&rc->lists[i]);
	for (size_t i = 0; i < rc->nclasses; i++) {
		restr_list_free(&rc->classes[i].list);
		free(rc->classes[i].name);
	}
	free(rc->classes);
	for (size_t i = 0; i < rc->npolicies; i++)
		policy_service_free(rc->policies[i]);
	free(rc->policies);
	for (size_t i = 0; i < rc->ntables; i++)
		table_close(rc->tables[i]);
	free(rc->tables);
	free(rc->rbl_reply_maps);
	free(rc->default_rbl_reply);
	free(rc->null_key);
	matchlist_free(rc->perm_mx_networks);
	for (size_t i = 0; i < rc->npermit_log; i++)
		free(rc->permit_log[i]);
	free(rc->permit_log);
	memset(rc, 0, sizeof(*rc));
}
