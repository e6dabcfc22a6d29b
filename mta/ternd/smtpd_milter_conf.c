/* smtpd_milter_conf.c - the milter settings of one listener snapshot:
 * the list of milters (smtpd_milters), each "socket" or "{ socket,
 * name=value ... }" with Postfix 3.0's per-milter overrides
 * (connect_timeout, command_timeout, content_timeout, default_action,
 * protocol), the global milter_* defaults and the macro lists per stage.
 * Pitfall: a bad setting refuses the config at load (as Postfix refuses
 * to start the service), never at the first session.
 */
#include "smtpd_milter_int.h"

#include "log.h"
#include "route.h"
#include "table.h"

#include <string.h>
#include <strings.h>

static const char *const stage_params[MILTER_NSTAGES] = {
    [MILTER_ST_CONNECT] = "milter_connect_macros",
    [MILTER_ST_HELO] = "milter_helo_macros",
    [MILTER_ST_MAIL] = "milter_mail_macros",
    [MILTER_ST_RCPT] = "milter_rcpt_macros",
    [MILTER_ST_DATA] = "milter_data_macros",
    [MILTER_ST_EOM] = "milter_end_of_data_macros",
    [MILTER_ST_EOH] = "milter_end_of_header_macros",
    [MILTER_ST_UNKNOWN] = "milter_unknown_command_macros",
};

int milter_action_parse(const char *text, enum milter_action *out)
{
	static const struct {
		const char *name;
		enum milter_action act;
	} acts[] = {
	    {"accept", MILTER_ACT_ACCEPT},     {"reject", MILTER_ACT_REJECT},
	    {"tempfail", MILTER_ACT_TEMPFAIL}, {"quarantine", MILTER_ACT_QUARANTINE},
	    {"shutdown", MILTER_ACT_SHUTDOWN},
	};

	for (size_t i = 0; i < sizeof(acts) / sizeof(*acts); i++)
		if (strcasecmp(text, acts[i].name) == 0) {
			*out = acts[i].act;
			return 0;
		}
	return -1;
}

/* milter_protocol: 2, 3, 4 or 6, optionally "no_header_reply" (Postfix). */
static int milter_protocol_parse(const char *text, int *version, int *nohdr_reply)
{
	struct cfg_list words = {NULL, 0};
	struct buf err = BUF_INIT;
	int rc = -1;

	*nohdr_reply = 0;
	*version = 0;
	if (cfg_list_split(text, &words, &err) < 0)
		goto out;
	for (size_t i = 0; i < words.count; i++) {
		const char *w = words.items[i];
		if (strcmp(w, "no_header_reply") == 0)
			*nohdr_reply = 1;
		else if (strcmp(w, "2") == 0 || strcmp(w, "3") == 0 || strcmp(w, "4") == 0 ||
			 strcmp(w, "6") == 0)
			*version = w[0] - '0';
		else
			goto out;
	}
	rc = *version ? 0 : -1;
out:
	cfg_list_free(&words);
	buf_free(&err);
	return rc;
}

static int milter_endpoint_ok(const char *ep, struct buf *err)
{
	const char *colon;

	if (strncmp(ep, "unix:", 5) == 0 || strncmp(ep, "local:", 6) == 0)
		return strchr(ep, ':')[1] == '/'
			   ? 0
			   : (buf_printf(err, "%s: need an absolute path", ep), -1);
	if (strncmp(ep, "inet:", 5) == 0 && (colon = strrchr(ep + 5, ':')) != NULL && colon[1])
		return 0;
	buf_printf(err, "unsupported milter endpoint \"%s\" (inet:host:port or unix:/path)", ep);
	return -1;
}

/* One "name=value" inside the braces. */
static int milter_setting(struct milter_spec *m, const char *item, struct buf *err)
{
	struct buf whole = BUF_INIT, name = BUF_INIT, value = BUF_INIT;
	const char *eq;
	long long *ms = NULL;
	int rc = -1;

	cfg_list_unbrace(item, &whole);
	if ((eq = strchr(buf_str(&whole), '=')) == NULL) {
		buf_printf(err, "\"%s\": expected name=value", item);
		goto out;
	}
	buf_append(&name, whole.data, (size_t)(eq - whole.data));
	buf_trim(&name);
	buf_set(&value, eq + 1);
	buf_trim(&value);
	if (strcmp(buf_str(&name), "connect_timeout") == 0)
		ms = &m->connect_ms;
	else if (strcmp(buf_str(&name), "command_timeout") == 0)
		ms = &m->command_ms;
	else if (strcmp(buf_str(&name), "content_timeout") == 0)
		ms = &m->content_ms;
	if (ms != NULL) {
		if (cfg_parse_time_ms(buf_str(&value), "s", ms) < 0 || *ms < 1) {
			buf_printf(err, "bad %s value \"%s\"", buf_str(&name), buf_str(&value));
			goto out;
		}
	} else if (strcmp(buf_str(&name), "default_action") == 0) {
		if (milter_action_parse(buf_str(&value), &m->def_action) < 0) {
			buf_printf(err, "bad default_action value \"%s\"", buf_str(&value));
			goto out;
		}
	} else if (strcmp(buf_str(&name), "protocol") == 0) {
		if (milter_protocol_parse(buf_str(&value), &m->version, &m->nohdr_reply) < 0) {
			buf_printf(err, "bad protocol value \"%s\"", buf_str(&value));
			goto out;
		}
	} else {
		buf_printf(err, "unknown milter setting \"%s\"", buf_str(&name));
		goto out;
	}
	rc = 0;
out:
	buf_free(&whole);
	buf_free(&name);
	buf_free(&value);
	return rc;
}

static int milter_spec_parse(const struct milter_spec *def, const char *item, struct milter_spec *m,
			     struct buf *err)
{
	struct cfg_list parts = {NULL, 0};
	struct buf inner = BUF_INIT, ep = BUF_INIT;
	int rc = -1;

	*m = *def;
	m->endpoint = NULL;
	cfg_list_unbrace(item, &inner);
	if (cfg_list_split(buf_str(&inner), &parts, err) < 0)
		goto out;
	if (parts.count == 0) {
		buf_set(err, "empty milter");
		goto out;
	}
	cfg_list_unbrace(parts.items[0], &ep);
	if (milter_endpoint_ok(buf_str(&ep), err) < 0)
		goto out;
	m->endpoint = buf_detach(&ep);
	for (size_t i = 1; i < parts.count; i++)
		if (milter_setting(m, parts.items[i], err) < 0)
			goto out;
	rc = 0;
out:
	cfg_list_free(&parts);
	buf_free(&inner);
	buf_free(&ep);
	return rc;
}

static int milter_conf_defaults(struct cfg *cfg, const char *l, struct milter_spec *def,
				struct buf *err)
{
	struct buf v = BUF_INIT;
	int rc = -1;

	if (cfg_get_time_ms(cfg, l, "milter_connect_timeout", &def->connect_ms, err) < 0 ||
	    cfg_get_time_ms(cfg, l, "milter_command_timeout", &def->command_ms, err) < 0 ||
	    cfg_get_time_ms(cfg, l, "milter_content_timeout", &def->content_ms, err) < 0 ||
	    cfg_get_str(cfg, l, "milter_default_action", &v, err) < 0)
		goto out;
	if (milter_action_parse(buf_str(&v), &def->def_action) < 0) {
		buf_printf(err, "milter_default_action: bad value \"%s\"", buf_str(&v));
		goto out;
	}
	buf_reset(&v);
	if (cfg_get_str(cfg, l, "milter_protocol", &v, err) < 0)
		goto out;
	if (milter_protocol_parse(buf_str(&v), &def->version, &def->nohdr_reply) < 0) {
		buf_printf(err, "milter_protocol: bad value \"%s\"", buf_str(&v));
		goto out;
	}
	rc = 0;
out:
	buf_free(&v);
	return rc;
}

static int milter_conf_macros(struct cfg *cfg, const char *l, struct smtpd_milter_conf *mc,
			      struct buf *err)
{
	struct cfg_list defs = {NULL, 0};
	struct buf v = BUF_INIT;

	for (int i = 0; i < MILTER_NSTAGES; i++) {
		buf_reset(&v);
		if (cfg_get_str(cfg, l, stage_params[i], &v, err) < 0)
			goto fail;
		mc->macros[i] = buf_detach(&v);
	}
	if (cfg_get_str(cfg, l, "milter_macro_daemon_name", &v, err) < 0)
		goto fail;
	mc->daemon_name = buf_detach(&v);
	if (cfg_get_str(cfg, l, "milter_macro_v", &v, err) < 0)
		goto fail;
	mc->mail_v = buf_detach(&v);
	if (cfg_get_list(cfg, l, "milter_macro_defaults", &defs, err) < 0)
		goto fail;
	mc->defaults = defs.items; /* "name=value" each */
	mc->ndefaults = defs.count;
	return 0;
fail:
	buf_free(&v);
	return -1;
}

/* A milter list ("a, { b, name=value }") into v/n; -1 with err. */
static int milter_list_parse(const struct milter_spec *def, const char *text,
			     struct milter_spec **v, size_t *n, struct buf *err)
{
	struct cfg_list items = {NULL, 0};

	*v = NULL;
	*n = 0;
	if (cfg_list_split(text, &items, err) < 0)
		return -1;
	*v = xcalloc(items.count + 1, sizeof(**v));
	for (size_t i = 0; i < items.count; i++) {
		if (milter_spec_parse(def, items.items[i], &(*v)[i], err) < 0) {
			cfg_list_free(&items);
			milter_specs_free(*v, *n);
			*v = NULL;
			*n = 0;
			return -1;
		}
		(*n)++;
	}
	cfg_list_free(&items);
	return 0;
}

void milter_specs_free(struct milter_spec *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].endpoint);
	free(v);
}

static int milter_maps_open(struct cfg *cfg, const char *l, struct smtpd_milter_conf *mc,
			    struct buf *err)
{
	struct cfg_list items = {NULL, 0};
	int rc = 0;

	if (cfg_get_list(cfg, l, "smtpd_milter_maps", &items, err) < 0)
		return -1;
	mc->maps = xcalloc(items.count + 1, sizeof(*mc->maps));
	for (size_t i = 0; i < items.count && rc == 0; i++) {
		struct buf why = BUF_INIT;
		if ((mc->maps[mc->nmaps] = table_open_lenient(items.items[i], &why)) == NULL) {
			buf_printf(err, "smtpd_milter_maps: %s", buf_str(&why));
			rc = -1;
		} else {
			mc->nmaps++;
		}
		buf_free(&why);
	}
	cfg_list_free(&items);
	return rc;
}

/* Postfix 3.2 smtpd_milter_maps: the client address is the key (cidr
 * tables are the usual kind); the first table that has it decides. */
int milter_maps_lookup(const struct smtpd_milter_conf *mc, const char *addr,
		       struct milter_spec **v, size_t *n, struct buf *err)
{
	struct buf value = BUF_INIT, why = BUF_INIT;
	int rc = 1;

	for (size_t i = 0; i < mc->nmaps && rc == 1; i++) {
		int st = table_lookup(mc->maps[i], addr, &value, &why);
		if (st == TABLE_ERROR) {
			buf_printf(err, "%s lookup error for %s: %s", mc->maps[i]->spec, addr,
				   buf_str(&why));
			rc = -1;
		} else if (st == TABLE_FOUND) {
			const char *val = buf_str(&value);
			val += strspn(val, " \t");
			if (strncasecmp(val, "DISABLE", 7) == 0 && val[7 + strspn(val + 7, " \t")] == 0) {
				*v = NULL;
				*n = 0;
				rc = 0;
			} else if (milter_list_parse(&mc->def, val, v, n, &why) < 0) {
				buf_printf(err, "%s: bad milter list for %s: %s", mc->maps[i]->spec,
					   addr, buf_str(&why));
				rc = -1;
			} else {
				rc = 0;
			}
		}
	}
	buf_free(&value);
	buf_free(&why);
	return rc;
}

/* param: smtpd_milters (with smtpd_milter_maps) or non_smtpd_milters. */
struct smtpd_milter_conf *smtpd_milter_conf_new(struct cfg *cfg, const char *l, const char *param,
						struct buf *err)
{
	struct smtpd_milter_conf *mc = xcalloc(1, sizeof(*mc));
	struct buf list = BUF_INIT, why = BUF_INIT;

	if (strcmp(param, "smtpd_milters") == 0 && milter_maps_open(cfg, l, mc, err) < 0)
		goto fail;
	if (cfg_get_str(cfg, l, param, &list, err) < 0)
		goto fail;
	if (list.len == strspn(buf_str(&list), " \t,") && mc->nmaps == 0) {
		buf_free(&list); /* milters off: nothing else is read */
		return mc;
	}
	if (milter_conf_defaults(cfg, l, &mc->def, err) < 0 ||
	    milter_conf_macros(cfg, l, mc, err) < 0)
		goto fail;
	if ((mc->route = route_conf_new(cfg, err)) == NULL)
		goto fail;
	if (milter_list_parse(&mc->def, buf_str(&list), &mc->v, &mc->n, &why) < 0) {
		buf_printf(err, "%s: %s", param, buf_str(&why));
		goto fail;
	}
	buf_free(&list);
	buf_free(&why);
	return mc;
fail:
	buf_free(&list);
	buf_free(&why);
	smtpd_milter_conf_free(mc);
	return NULL;
}

void smtpd_milter_conf_free(struct smtpd_milter_conf *mc)
{
	if (mc == NULL)
		return;
	milter_specs_free(mc->v, mc->n);
	for (size_t i = 0; i < mc->nmaps; i++)
		table_close(mc->maps[i]);
	free(mc->maps);
	for (int i = 0; i < MILTER_NSTAGES; i++)
		free(mc->macros[i]);
	free(mc->daemon_name);
	free(mc->mail_v);
	for (size_t i = 0; i < mc->ndefaults; i++)
		free(mc->defaults[i]);
	free(mc->defaults);
	if (mc->route)
		route_conf_free(mc->route);
	free(mc);
}

size_t smtpd_milter_conf_count(const struct smtpd_milter_conf *mc)
{
	return mc ? mc->n + mc->nmaps : 0;
}
