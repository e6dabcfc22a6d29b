/* smtpd_conf.c - the immutable per-listener settings snapshot of the SMTP
 * server (smtpd.h): every smtpd parameter read once in the listener's
 * view ("<listener>.<param>" overrides), lists and tables opened, so a
 * session never touches struct cfg. ternd builds new snapshots on reload;
 * live sessions keep theirs until their reference is dropped.
 * Pitfall: mynetworks_style only applies when mynetworks is not set and
 * the style is (Tern's mynetworks default is loopback, not "host").
 */
#include "smtpd_int.h"
#include "smtpd_milter.h"

#include "log.h"

#include <ifaddrs.h>
#include <netinet/in.h>
#include <string.h>

static int conf_str(const struct cfg *cfg, const char *l, const char *name, char **out,
		    struct buf *err)
{
	struct buf v = BUF_INIT;

	if (cfg_get_str(cfg, l, name, &v, err) < 0) {
		buf_free(&v);
		return -1;
	}
	*out = buf_detach(&v);
	return 0;
}

static int conf_int(const struct cfg *cfg, const char *l, const char *name, long long *out,
		    struct buf *err)
{
	return cfg_get_int(cfg, l, name, out, err);
}

static int conf_bool(const struct cfg *cfg, const char *l, const char *name, int *out,
		     struct buf *err)
{
	return cfg_get_bool(cfg, l, name, out, err);
}

/* smtpd_discard_ehlo_keywords: names as Postfix's ehlo_mask table. */
static int conf_ehlo_discard(const struct cfg *cfg, const char *l, int *mask, struct buf *err)
{
	static const struct {
		const char *name;
		int bit;
	} kw[] = {
	    {"pipelining", SMTPD_EHLO_PIPELINING},
	    {"size", SMTPD_EHLO_SIZE},
	    {"vrfy", SMTPD_EHLO_VRFY},
	    {"enhancedstatuscodes", SMTPD_EHLO_ENHANCED},
	    {"8bitmime", SMTPD_EHLO_8BITMIME},
	    {"dsn", SMTPD_EHLO_DSN},
	    {"smtputf8", SMTPD_EHLO_SMTPUTF8},
	    {"chunking", SMTPD_EHLO_CHUNKING},
	    {"xclient", SMTPD_EHLO_XCLIENT},
	    {"starttls", SMTPD_EHLO_STARTTLS},
	    {"auth", SMTPD_EHLO_AUTH},
	    {"silent-discard", SMTPD_EHLO_SILENT},
	};
	struct cfg_list items = {NULL, 0};

	*mask = 0;
	if (cfg_get_list(cfg, l, "smtpd_discard_ehlo_keywords", &items, err) < 0)
		return -1;
	for (size_t i = 0; i < items.count; i++)
		for (size_t k = 0; k < sizeof(kw) / sizeof(*kw); k++)
			if (strcasecmp(items.items[i], kw[k].name) == 0)
				*mask |= kw[k].bit;
	cfg_list_free(&items);
	return 0;
}

static int conf_bare_nl(const struct cfg *cfg, const char *l, struct smtpd_conf *c, struct buf *err)
{
	struct buf v = BUF_INIT;
	long long code;
	int rc = -1;

	if (cfg_get_str(cfg, l, "smtpd_forbid_bare_newline", &v, err) < 0 ||
	    conf_int(cfg, l, "smtpd_forbid_bare_newline_reject_code", &code, err) < 0)
		goto out;
	/* Postfix 3.7.10+: no | normalize (= yes) | reject; 3.9 adds note. */
	if (strcasecmp(buf_str(&v), "no") == 0)
		c->bare_nl = SMTPD_BARE_NO;
	else if (strcasecmp(buf_str(&v), "normalize") == 0 || strcasecmp(buf_str(&v), "yes") == 0)
		c->bare_nl = SMTPD_BARE_NORMALIZE;
	else if (strcasecmp(buf_str(&v), "note") == 0)
		c->bare_nl = SMTPD_BARE_NOTE;
	else if (strcasecmp(buf_str(&v), "reject") == 0)
		c->bare_nl = SMTPD_BARE_REJECT;
	else {
		buf_printf(err,
			   "smtpd_forbid_bare_newline: bad value \"%s\" (no, normalize, note, "
			   "reject)",
			   buf_str(&v));
		goto out;
	}
	c->bare_nl_code = (int)code;
	rc = 0;
out:
	buf_free(&v);
	return rc;
}

/* Postfix's own_inet_addr/mynetworks_style: host = our addresses, subnet
 * = their interface networks, class = the classful (A/B/C) networks. */
static void conf_style_net(const struct ifaddrs *ifa, const char *style, struct buf *out)
{
	struct inet_addr a, m;
	int len, bits = 0;

	a.family = m.family = ifa->ifa_addr->sa_family;
	if (a.family == AF_INET) {
		memcpy(a.bytes, &((struct sockaddr_in *)ifa->ifa_addr)->sin_addr, 4);
		if (ifa->ifa_netmask)
			memcpy(m.bytes, &((struct sockaddr_in *)ifa->ifa_netmask)->sin_addr, 4);
	} else {
		memcpy(a.bytes, &((struct sockaddr_in6 *)ifa->ifa_addr)->sin6_addr, 16);
		if (ifa->ifa_netmask)
			memcpy(m.bytes, &((struct sockaddr_in6 *)ifa->ifa_netmask)->sin6_addr, 16);
	}
	len = inet_addr_bits(&a);
	for (int i = 0; ifa->ifa_netmask && i < len / 8; i++)
		for (int b = 7; b >= 0; b--)
			bits += (m.bytes[i] >> b) & 1;
	if (strcasecmp(style, "subnet") == 0 && ifa->ifa_netmask)
		len = bits;
	else if (strcasecmp(style, "class") == 0 && a.family == AF_INET)
		len = a.bytes[0] < 128 ? 8 : a.bytes[0] < 192 ? 16 : 24;
	else if (strcasecmp(style, "class") == 0 && ifa->ifa_netmask)
		len = bits;
	inet_prefix_mask(&a, len);
	buf_puts(out, a.family == AF_INET6 ? " [" : " ");
	inet_addr_format(&a, out);
	buf_printf(out, a.family == AF_INET6 ? "]/%d" : "/%d", len);
}

static int conf_mynetworks(struct cfg *cfg, const char *l, struct smtpd_conf *c, struct buf *err)
{
	struct buf style = BUF_INIT, nets = BUF_INIT;
	struct ifaddrs *ifs = NULL;

	if (!cfg_is_set(cfg, "mynetworks") && cfg_is_set(cfg, "mynetworks_style") &&
	    cfg_get_str(cfg, l, "mynetworks_style", &style, err) == 0 && getifaddrs(&ifs) == 0) {
		for (struct ifaddrs *i = ifs; i; i = i->ifa_next)
			if (i->ifa_addr && (i->ifa_addr->sa_family == AF_INET ||
					    i->ifa_addr->sa_family == AF_INET6))
				conf_style_net(i, buf_str(&style), &nets);
		freeifaddrs(ifs);
		cfg_set(cfg, "mynetworks", buf_str(&nets), NULL, 0);
	}
	buf_free(&style);
	buf_free(&nets);
	c->mynetworks = matchlist_from_cfg(cfg, l, "mynetworks", MATCHLIST_ADDR, err);
	return c->mynetworks ? 0 : -1;
}

static int conf_maps(struct cfg *cfg, const char *l, const char *param, struct table ***out,
		     size_t *n, struct buf *err);

static int conf_lists(struct cfg *cfg, const char *l, struct smtpd_conf *c, struct buf *err)
{
	if (conf_mynetworks(cfg, l, c, err) < 0)
		return -1;
	c->bare_nl_exclusions =
	    matchlist_from_cfg(cfg, l, "smtpd_forbid_bare_newline_exclusions", MATCHLIST_ADDR, err);
	if (c->bare_nl_exclusions == NULL)
		return -1;
	c->xclient_hosts =
	    matchlist_from_cfg(cfg, l, "smtpd_authorized_xclient_hosts", MATCHLIST_ADDR, err);
	if (c->xclient_hosts == NULL)
		return -1;
	c->event_exceptions =
	    matchlist_from_cfg(cfg, l, "smtpd_client_event_limit_exceptions", MATCHLIST_ADDR, err);
	if (c->event_exceptions == NULL)
		return -1;
	if (conf_maps(cfg, l, "sender_bcc_maps", &c->sender_bcc, &c->nsender_bcc, err) < 0 ||
	    conf_maps(cfg, l, "recipient_bcc_maps", &c->rcpt_bcc, &c->nrcpt_bcc, err) < 0)
		return -1;
	c->checks = smtpd_checks_new(cfg, l, err);
	if (c->checks == NULL)
		return -1;
	/* certificates are read here: a reload re-reads them */
	if ((c->tls = smtpd_tls_conf_new(cfg, l, err)) == NULL ||
	    (c->sasl = smtpd_sasl_conf_new(cfg, l, err)) == NULL)
		return -1;
	c->milters = smtpd_milter_conf_new(cfg, l, "smtpd_milters", err);
	if (c->milters == NULL)
		return -1;
	/* pickup's settings are the global ones (l NULL): only they matter */
	c->local_milters = smtpd_milter_conf_new(cfg, l, "non_smtpd_milters", err);
	return c->local_milters ? 0 : -1;
}

static int conf_strings(struct cfg *cfg, const char *l, struct smtpd_conf *c, struct buf *err)
{
	if (conf_str(cfg, l, "myhostname", &c->myhostname, err) < 0 ||
	    conf_str(cfg, l, "mail_name", &c->mail_name, err) < 0 ||
	    conf_str(cfg, l, "smtpd_banner", &c->banner, err) < 0 ||
	    conf_str(cfg, l, "myorigin", &c->myorigin, err) < 0 ||
	    conf_str(cfg, l, "mydomain", &c->mydomain, err) < 0 ||
	    conf_str(cfg, l, "dns_servers", &c->dns_servers, err) < 0 ||
	    conf_str(cfg, l, "recipient_delimiter", &c->rcpt_delim, err) < 0 ||
	    conf_str(cfg, l, "compatibility_level", &c->compat_level, err) < 0 ||
	    conf_str(cfg, l, "mail_version", &c->mail_version, err) < 0 ||
	    conf_str(cfg, l, "always_bcc", &c->always_bcc, err) < 0 ||
	    conf_str(cfg, l, "content_filter", &c->content_filter, err) < 0)
		return -1;
	return 0;
}

static int conf_maps(struct cfg *cfg, const char *l, const char *param, struct table ***out,
		     size_t *n, struct buf *err)
{
	struct cfg_list items = {NULL, 0};
	int rc = 0;

	if (cfg_get_list(cfg, l, param, &items, err) < 0)
		return -1;
	*out = xcalloc(items.count + 1, sizeof(**out));
	for (size_t i = 0; i < items.count && rc == 0; i++) {
		struct buf why = BUF_INIT;
		if (((*out)[*n] = table_open_lenient(items.items[i], &why)) == NULL) {
			buf_printf(err, "%s: %s", param, buf_str(&why));
			rc = -1;
		} else {
			++*n;
		}
		buf_free(&why);
	}
	cfg_list_free(&items);
	return rc;
}

static void conf_maps_free(struct table **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		table_close(v[i]);
	free(v);
}

static int conf_numbers(struct cfg *cfg, const char *l, struct smtpd_conf *c, struct buf *err)
{
	if (cfg_get_size(cfg, l, "message_size_limit", &c->size_limit, err) < 0 ||
	    cfg_get_size(cfg, l, "smtpd_data_memory_limit", &c->data_memory_limit, err) < 0 ||
	    conf_int(cfg, l, "line_length_limit", &c->line_limit, err) < 0 ||
	    conf_int(cfg, l, "smtpd_recipient_limit", &c->rcpt_limit, err) < 0 ||
	    conf_int(cfg, l, "smtpd_soft_error_limit", &c->soft_limit, err) < 0 ||
	    conf_int(cfg, l, "smtpd_hard_error_limit", &c->hard_limit, err) < 0 ||
	    conf_int(cfg, l, "smtpd_junk_command_limit", &c->junk_limit, err) < 0 ||
	    conf_int(cfg, l, "hopcount_limit", &c->hopcount_limit, err) < 0 ||
	    cfg_get_time_ms(cfg, l, "smtpd_timeout", &c->timeout_ms, err) < 0 ||
	    cfg_get_time_ms(cfg, l, "smtpd_error_sleep_time", &c->err_sleep_ms, err) < 0 ||
	    conf_int(cfg, l, "smtpd_client_connection_count_limit", &c->conn_count_limit, err) <
		0 ||
	    conf_int(cfg, l, "smtpd_client_connection_rate_limit", &c->conn_rate_limit, err) < 0 ||
	    cfg_get_time(cfg, l, "anvil_rate_time_unit", &c->rate_unit_s, err) < 0)
		return -1;
	if (c->line_limit < 512) /* Postfix: at least one RFC 5321 text line */
		c->line_limit = 512;
	return 0;
}

static int conf_flags(struct cfg *cfg, const char *l, struct smtpd_conf *c, struct buf *err)
{
	if (conf_bool(cfg, l, "disable_vrfy_command", &c->disable_vrfy, err) < 0 ||
	    conf_bool(cfg, l, "smtpd_helo_required", &c->helo_required, err) < 0 ||
	    conf_bool(cfg, l, "strict_rfc821_envelopes", &c->strict_rfc821, err) < 0 ||
	    conf_bool(cfg, l, "smtputf8_enable", &c->smtputf8_enable, err) < 0 ||
	    conf_bool(cfg, l, "append_at_myorigin", &c->append_at_myorigin, err) < 0 ||
	    conf_bool(cfg, l, "append_dot_mydomain", &c->append_dot_mydomain, err) < 0 ||
	    conf_bool(cfg, l, "smtpd_peername_lookup", &c->peername_lookup, err) < 0 ||
	    conf_bool(cfg, l, "smtpd_client_port_logging", &c->port_logging, err) < 0 ||
	    conf_bool(cfg, l, "smtpd_forbid_unauth_pipelining", &c->forbid_unauth_pipelining, err) <
		0 ||
	    conf_ehlo_discard(cfg, l, &c->ehlo_discard, err) < 0 ||
	    conf_bare_nl(cfg, l, c, err) < 0)
		return -1;
	return 0;
}

struct smtpd_conf *smtpd_conf_new(struct cfg *cfg, const char *listener, struct buf *err)
{
	struct smtpd_conf *c = xcalloc(1, sizeof(*c));

	c->refs = 1;
	c->listener = xstrdup(listener ? listener : "smtp");
	if (conf_strings(cfg, listener, c, err) < 0 || conf_numbers(cfg, listener, c, err) < 0 ||
	    conf_flags(cfg, listener, c, err) < 0 || conf_lists(cfg, listener, c, err) < 0) {
		smtpd_conf_unref(c);
		return NULL;
	}
	return c;
}

void smtpd_conf_ref(struct smtpd_conf *conf)
{
	__atomic_add_fetch(&conf->refs, 1, __ATOMIC_SEQ_CST);
}

void smtpd_conf_unref(struct smtpd_conf *c)
{
	if (c == NULL || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_SEQ_CST) > 0)
		return;
	free(c->listener);
	free(c->myhostname);
	free(c->mail_name);
	free(c->banner);
	free(c->myorigin);
	free(c->mydomain);
	free(c->dns_servers);
	free(c->rcpt_delim);
	free(c->compat_level);
	free(c->mail_version);
	free(c->always_bcc);
	free(c->content_filter);
	conf_maps_free(c->sender_bcc, c->nsender_bcc);
	conf_maps_free(c->rcpt_bcc, c->nrcpt_bcc);
	matchlist_free(c->mynetworks);
	matchlist_free(c->bare_nl_exclusions);
	matchlist_free(c->xclient_hosts);
	matchlist_free(c->event_exceptions);
	smtpd_checks_free(c->checks);
	smtpd_tls_conf_free(c->tls);
	smtpd_sasl_conf_free(c->sasl);
	smtpd_milter_conf_free(c->milters);
	smtpd_milter_conf_free(c->local_milters);
	free(c);
}
