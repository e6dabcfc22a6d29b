/* conf.c - policyd.conf: the parameter registry (policyd_params[]) and the
 * immutable, reference-counted snapshot (struct pd_conf) a reload swaps.
 *
 * The file uses ternd's parser (cfg.h): main.cf syntax, $name expansion,
 * "FILE, line N" errors, unknown names warned about. Every check reads
 * its own parameters in its init(); a check that fails to initialise
 * (missing table, bad rule, state store that cannot be opened) refuses
 * the start or the reload.
 */
#include "policyd.h"
#include "state.h"

#include "inet.h"
#include "log.h"
#include "table.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* clang-format off */
#define STR(n, d, h) {n, CFG_STR, d, h, 0, 0, NULL, CFG_P_TERN, NULL}
#define BOOL(n, d, h) {n, CFG_BOOL, d, h, 0, 0, NULL, CFG_P_TERN, NULL}
#define INT(n, d, lo, hi, h) {n, CFG_INT, d, h, lo, hi, NULL, CFG_P_TERN, NULL}
#define TIME(n, d, u, lo, h) {n, CFG_TIME, d, h, lo, 0, u, CFG_P_TERN, NULL}
#define SIZE(n, d, h) {n, CFG_SIZE, d, h, 0, 0, NULL, CFG_P_TERN, NULL}
#define LIST(n, d, h) {n, CFG_LIST, d, h, 0, 0, NULL, CFG_P_TERN, NULL}
#define MAPS(n, d, h) {n, CFG_TABLES, d, h, 0, 0, NULL, CFG_P_TERN, NULL}
/* clang-format on */

static void pd_param_myhostname(const struct cfg *c, const struct cfg_param *p, struct buf *out)
{
	char host[256] = "";

	if (gethostname(host, sizeof(host) - 1) < 0 || host[0] == 0)
		strcpy(host, "localhost");
	buf_set(out, host);
}

const struct cfg_param policyd_params[] = {
    /* server */
    LIST("listen", "inet:127.0.0.1:10040", "where to accept clients: inet:host:port unix:/path"),
    LIST("checks", "access", "checks in order: access, spf, greylist, ratelimit, bcc"),
    STR("user", "tern", "unprivileged user to run as when started as root"),
    STR("pid_file", "/run/tern/policyd.pid", "process ID file"),
    STR("maillog_file", "", "log file (empty: syslog, or stderr with -f)"),
    STR("syslog_facility", "mail", "syslog facility"),
    STR("unix_socket_mode", "0666", "permissions of unix: listening sockets"),
    INT("max_clients", "1000", 1, 1000000, "concurrent client connections"),
    TIME("idle_timeout", "1000s", "s", 1, "close a client connection idle this long"),
    SIZE("request_size_limit", "65536", "largest request accepted (bytes)"),
    INT("worker_threads", "4", 1, 256, "threads for checks that block (SPF, Redis)"),
    INT("event_loops", "0", 0, 64, "event loop threads serving clients (0: one per CPU)"),
    {"myhostname", CFG_STR, "localhost", "this host's name (X-Greylist, SPF receiver)", 0, 0, NULL,
     CFG_P_TERN, pd_param_myhostname},
    STR("recipient_delimiter", "+", "address extension delimiters"),
    BOOL("test_time_attribute", "no", "honour policy_test_time=EPOCH in requests (tests only)"),
    STR("dns_servers", "", "DNS servers (addr[@port] ...), empty: resolv.conf"),
    TIME("dns_timeout", "20s", "s", 1, "per DNS query"),
    /* access */
    MAPS("client_access", "", "tables for the client name and address"),
    MAPS("helo_access", "", "tables for the HELO name"),
    MAPS("sender_access", "", "tables for the envelope sender"),
    MAPS("recipient_access", "", "tables for the recipient"),
    MAPS("sasl_access", "", "tables for the SASL login name"),
    LIST("smtpd_restriction_classes", "", "restriction class names usable as table results"),
    STR("access_lookup_failure_action", "451 4.3.0 Temporary lookup failure",
	"action when a table lookup fails"),
    /* state */
    STR("state", "lmdb:/var/lib/tern/policyd", "lmdb:/directory or redis://host:port/db"),
    SIZE("state_map_size", "256m", "LMDB map size"),
    TIME("state_timeout", "2s", "s", 1, "Redis connect and command timeout"),
    STR("state_error_action", "DUNNO", "action when the state store fails"),
    /* SPF */
    BOOL("spf_helo_check", "yes", "check the HELO identity too"),
    INT("spf_cache_size", "10000", 0, 10000000, "SPF results kept (0: none)"),
    TIME("spf_cache_max_ttl", "5m", "s", 0,
	 "longest an SPF result is kept (DNS TTLs bound it too)"),
    STR("spf_helo_fail_action", "reject", "HELO fail: reject, defer, prepend, dunno or an action"),
    STR("spf_pass_action", "prepend", "mail from pass"),
    STR("spf_fail_action", "reject", "mail from fail"),
    STR("spf_softfail_action", "prepend", "mail from softfail"),
    STR("spf_neutral_action", "prepend", "mail from neutral"),
    STR("spf_none_action", "prepend", "mail from none"),
    STR("spf_permerror_action", "prepend", "mail from permerror"),
    STR("spf_temperror_action", "prepend", "mail from temperror"),
    STR("spf_header_type", "received-spf", "received-spf, authentication-results or none"),
    STR("spf_authserv_id", "$myhostname", "Authentication-Results authserv-id"),
    BOOL("spf_hide_receiver", "no", "write receiver=<UNKNOWN>"),
    LIST("spf_skip_addresses", "127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128",
	 "clients never checked (networks)"),
    BOOL("spf_skip_authenticated", "yes", "skip SASL-authenticated clients"),
    LIST("spf_whitelist_clients", "", "client networks never checked"),
    LIST("spf_whitelist_helo", "", "HELO names never checked"),
    LIST("spf_whitelist_domains", "", "sender domains never checked"),
    /* greylisting */
    TIME("greylist_delay", "300s", "s", 0, "how long a new triplet is deferred"),
    TIME("greylist_retry_window", "2d", "d", 1, "a retry after this starts over"),
    TIME("greylist_max_age", "35d", "d", 1, "forget triplets unseen this long"),
    STR("greylist_action", "DEFER_IF_PERMIT", "the deferral action"),
    STR("greylist_text", "Greylisted, see http://postgrey.schweikert.ch/help/%r.html",
	"deferral text (%s seconds left, %r recipient domain)"),
    BOOL("greylist_header", "yes", "PREPEND X-Greylist once per message that was delayed"),
    INT("greylist_ipv4_prefix", "24", 0, 32, "client network bits (IPv4)"),
    INT("greylist_ipv6_prefix", "64", 0, 128, "client network bits (IPv6)"),
    INT("greylist_auto_whitelist_clients", "5", 0, 1000000,
	"whitelist a client after N delivered triplets (0: never)"),
    LIST("greylist_whitelist_clients", "", "postgrey-syntax client whitelist files"),
    LIST("greylist_whitelist_recipients", "", "postgrey-syntax recipient whitelist files"),
    /* rate limits */
    LIST("ratelimit_rules", "", "KEY:METRIC:LIMIT/WINDOW ..."),
    STR("ratelimit_action", "DEFER_IF_PERMIT 4.7.1 Rate limit exceeded, try again later",
	"action for a message over a limit"),
    STR("ratelimit_count_state", "END-OF-MESSAGE", "END-OF-MESSAGE or DATA"),
    /* BCC */
    MAPS("bcc_sender_maps", "", "sender -> BCC address"),
    MAPS("bcc_recipient_maps", "", "recipient -> BCC address"),
    MAPS("bcc_client_maps", "", "client address -> BCC address"),
    MAPS("bcc_sasl_maps", "", "SASL login -> BCC address"),
    {NULL, 0, NULL, NULL, 0, 0, NULL, 0, NULL},
};

/* ---- small getters: every check's init uses them ---- */

int pd_cfg_str(const struct cfg *cfg, const char *name, char **out, struct buf *err)
{
	struct buf v = BUF_INIT;

	buf_init(&v);
	if (cfg_get_str(cfg, NULL, name, &v, err) < 0) {
		buf_free(&v);
		return -1;
	}
	*out = buf_detach(&v);
	return 0;
}

int pd_cfg_ll(const struct cfg *cfg, const char *name, long long *out, struct buf *err)
{
	return cfg_get_int(cfg, NULL, name, out, err);
}

int pd_cfg_secs(const struct cfg *cfg, const char *name, long long *out, struct buf *err)
{
	return cfg_get_time(cfg, NULL, name, out, err);
}

int pd_cfg_bool(const struct cfg *cfg, const char *name, int *out, struct buf *err)
{
	return cfg_get_bool(cfg, NULL, name, out, err);
}

void pd_tables_free(struct table **t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		table_close(t[i]);
	free(t);
}

int pd_cfg_tables(const struct cfg *cfg, const char *name, struct table ***out, size_t *n,
		  struct buf *err)
{
	struct cfg_list l;
	struct table **v;
	size_t i;

	*out = NULL;
	*n = 0;
	if (cfg_get_list(cfg, NULL, name, &l, err) < 0)
		return -1;
	v = xcalloc(l.count + 1, sizeof(*v));
	for (i = 0; i < l.count; i++) {
		if ((v[i] = table_open(l.items[i], err)) == NULL) {
			buf_printf(err, " (parameter %s)", name);
			pd_tables_free(v, i);
			cfg_list_free(&l);
			return -1;
		}
	}
	*out = v;
	*n = l.count;
	cfg_list_free(&l);
	return 0;
}

/* ---- the snapshot ---- */

static const struct pd_check_ops *pd_check_ops_all[] = {
    &pd_check_access_ops,    &pd_check_spf_ops, &pd_check_greylist_ops,
    &pd_check_ratelimit_ops, &pd_check_bcc_ops, NULL};

static const struct pd_check_ops *pd_check_ops_find(const char *name)
{
	for (size_t i = 0; pd_check_ops_all[i]; i++)
		if (strcmp(pd_check_ops_all[i]->name, name) == 0)
			return pd_check_ops_all[i];
	return NULL;
}

struct pd_state *pd_conf_state(struct pd_conf *pc, struct buf *err)
{
	char *spec = NULL;
	long long map_size = 0, timeout = 0;

	if (pc->state)
		return pc->state;
	if (pd_cfg_str(pc->cfg, "state", &spec, err) < 0 ||
	    cfg_get_size(pc->cfg, NULL, "state_map_size", &map_size, err) < 0 ||
	    pd_cfg_secs(pc->cfg, "state_timeout", &timeout, err) < 0) {
		free(spec);
		return NULL;
	}
	pc->state = pd_state_open(spec, (size_t)map_size, (int)timeout, err);
	free(spec);
	return pc->state;
}

/* Settings a check group may not change: they belong to the server. */
static const char *pd_group_refused[] = {"listen",
					 "checks",
					 "user",
					 "pid_file",
					 "maillog_file",
					 "syslog_facility",
					 "unix_socket_mode",
					 "max_clients",
					 "idle_timeout",
					 "request_size_limit",
					 "worker_threads",
					 "event_loops",
					 "state",
					 "state_map_size",
					 "state_timeout",
					 "test_time_attribute",
					 NULL};

/* A copy of the file's settings with a group's "name = value" items on
 * top: "{ ratelimit, ratelimit_rules = ..., { ratelimit_action = REJECT x } }"
 * (name in *check). Items are validated like the file's own lines. */
static struct cfg *pd_group_cfg(const struct cfg *base, const char *group, char **check,
				struct buf *err)
{
	struct cfg *c = cfg_new(policyd_params);
	struct cfg_entry *e = NULL;
	struct cfg_list items = {NULL, 0};
	struct buf inner = BUF_INIT, item = BUF_INIT, name = BUF_INIT;
	size_t n = cfg_entries(base, CFG_ENTRIES_SET, &e);

	buf_init(&inner);
	buf_init(&item);
	buf_init(&name);
	for (size_t i = 0; i < n; i++)
		cfg_set(c, e[i].name, e[i].value, e[i].file, e[i].line);
	free(e);
	cfg_list_unbrace(group, &inner);
	if (cfg_list_split(buf_str(&inner), &items, err) < 0 || items.count == 0) {
		buf_printf(err, "%sparameter checks: empty or unbalanced group \"%s\"",
			   err->len ? "; " : "", group);
		goto fail;
	}
	*check = xstrdup(items.items[0]);
	for (size_t i = 1; i < items.count; i++) {
		const char *eq;
		cfg_list_unbrace(items.items[i], &item);
		if ((eq = strchr(buf_str(&item), '=')) == NULL) {
			buf_printf(err,
				   "parameter checks: \"%s\" in group \"%s\" is not name = value",
				   buf_str(&item), group);
			goto fail;
		}
		buf_reset(&name);
		buf_append(&name, item.data, (size_t)(eq - item.data));
		buf_trim(&name);
		for (size_t k = 0; pd_group_refused[k]; k++)
			if (strcmp(buf_str(&name), pd_group_refused[k]) == 0) {
				buf_printf(err,
					   "parameter checks: %s is a server setting, not "
					   "one a check group may change",
					   buf_str(&name));
				goto fail;
			}
		while (*++eq == ' ' || *eq == '\t')
			;
		if (cfg_check(c, buf_str(&name), eq, err) < 0) {
			buf_printf(err, " (parameter checks, group \"%s\")", *check);
			goto fail;
		}
		cfg_set(c, buf_str(&name), eq, NULL, 0);
	}
	cfg_list_free(&items);
	buf_free(&inner);
	buf_free(&item);
	buf_free(&name);
	return c;
fail:
	cfg_list_free(&items);
	buf_free(&inner);
	buf_free(&item);
	buf_free(&name);
	cfg_free(c);
	return NULL;
}

static int pd_conf_check_add(struct pd_conf *pc, const char *item, struct buf *err)
{
	struct pd_check *ck = &pc->checks[pc->nchecks];
	char *name = NULL;
	const struct cfg *cfg = pc->cfg;

	if (pc->nchecks >= PD_CHECKS_MAX) {
		buf_printf(err, "parameter checks: more than %d checks", PD_CHECKS_MAX);
		return -1;
	}
	if (item[0] == '{') {
		if ((ck->own_cfg = pd_group_cfg(pc->cfg, item, &name, err)) == NULL) {
			free(name);
			return -1;
		}
		cfg = ck->own_cfg;
	} else
		name = xstrdup(item);
	ck->ops = pd_check_ops_find(name);
	if (ck->ops == NULL) {
		buf_printf(err,
			   "parameter checks: unknown check \"%s\" (known: access, "
			   "spf, greylist, ratelimit, bcc)",
			   name);
		goto fail;
	}
	free(name);
	ck->pc = pc;
	ck->index = (int)pc->nchecks;
	if (ck->ops->init(ck, pc, cfg, err) < 0) {
		if (ck->ops->free)
			ck->ops->free(ck); /* whatever init had built */
		name = NULL;
		goto fail;
	}
	pc->nchecks++;
	ck->blocking |= ck->ops->blocking;
	pc->blocking |= ck->blocking;
	return 0;
fail:
	free(name);
	if (ck->own_cfg)
		cfg_free(ck->own_cfg);
	memset(ck, 0, sizeof(*ck));
	return -1;
}

static int pd_conf_checks(struct pd_conf *pc, struct buf *err)
{
	struct cfg_list l;
	int rc = 0;

	if (cfg_get_list(pc->cfg, NULL, "checks", &l, err) < 0)
		return -1;
	pc->checks = xcalloc(l.count + 1, sizeof(*pc->checks));
	for (size_t i = 0; i < l.count && rc == 0; i++)
		rc = pd_conf_check_add(pc, l.items[i], err);
	cfg_list_free(&l);
	if (pc->state && pd_state_blocking(pc->state))
		pc->blocking = 1;
	return rc;
}

static void pd_conf_free(struct pd_conf *pc)
{
	for (size_t i = 0; i < pc->nchecks; i++) {
		if (pc->checks[i].ops->free)
			pc->checks[i].ops->free(&pc->checks[i]);
		if (pc->checks[i].own_cfg)
			cfg_free(pc->checks[i].own_cfg);
	}
	free(pc->checks);
	if (pc->state)
		pd_state_close(pc->state);
	free(pc->myhostname);
	free(pc->delims);
	free(pc->state_error_action);
	cfg_free(pc->cfg);
	free(pc);
}

/* Takes ownership of cfg (also on failure). */
struct pd_conf *pd_conf_new(struct cfg *cfg, struct buf *err)
{
	struct pd_conf *pc = xcalloc(1, sizeof(*pc));

	pc->refs = 1;
	pc->cfg = cfg;
	if (pd_cfg_str(cfg, "myhostname", &pc->myhostname, err) < 0 ||
	    pd_cfg_str(cfg, "recipient_delimiter", &pc->delims, err) < 0 ||
	    pd_cfg_str(cfg, "state_error_action", &pc->state_error_action, err) < 0 ||
	    pd_cfg_bool(cfg, "test_time_attribute", &pc->test_time, err) < 0 ||
	    cfg_get_size(cfg, NULL, "request_size_limit", &pc->size_limit, err) < 0 ||
	    pd_cfg_secs(cfg, "idle_timeout", &pc->idle_timeout, err) < 0 ||
	    pd_cfg_ll(cfg, "max_clients", &pc->max_clients, err) < 0 ||
	    pd_cfg_ll(cfg, "worker_threads", &pc->workers, err) < 0 ||
	    pd_cfg_ll(cfg, "event_loops", &pc->loops, err) < 0 || pd_conf_checks(pc, err) < 0) {
		pd_conf_free(pc);
		return NULL;
	}
	if (pd_action_classify(pc->state_error_action) == PD_ACT_INFO) {
		buf_puts(err, "parameter state_error_action: must be DUNNO or a definitive action");
		pd_conf_free(pc);
		return NULL;
	}
	return pc;
}

void pd_conf_ref(struct pd_conf *pc)
{
	__atomic_add_fetch(&pc->refs, 1, __ATOMIC_ACQ_REL);
}

void pd_conf_unref(struct pd_conf *pc)
{
	if (pc && __atomic_sub_fetch(&pc->refs, 1, __ATOMIC_ACQ_REL) == 0)
		pd_conf_free(pc);
}

int pd_client_net(const char *addr, int v4len, int v6len, struct buf *out)
{
	struct inet_addr a;
	int len;

	if (inet_addr_parse(addr, &a) < 0)
		return -1;
	inet_addr_unmap(&a);
	len = a.family == AF_INET ? v4len : v6len;
	inet_prefix_mask(&a, len);
	buf_reset(out);
	inet_addr_format(&a, out);
	buf_putc(out, '/');
	buf_put_ll(out, len);
	return 0;
}
