/* cmd_conf.c - "tern conf", Tern's postconf: show and edit tern.conf.
 *
 *   tern conf [-c DIR] [-d|-n] [-x] [-h] [-H] [NAME...]   show (sorted, raw)
 *   tern conf [-c DIR] [-e] NAME=VALUE...                  edit in place
 *   tern conf [-c DIR] -X NAME...                          remove settings
 *
 * As postconf: an unknown NAME is a warning (exit 0), plain NAME=VALUE
 * implies -e, -e writes unknown names silently, and a config directory
 * given with -c or $TERN_CONFIG_DIR must exist ("open DIR/tern.conf: No
 * such file or directory"; only a missing tern.conf means defaults).
 * Unlike postconf, values are checked: a bad value given to -e is refused
 * before the file is touched, and showing a config with a bad line fails
 * with "tern: FILE, line N: ..." and exit 1.
 */
#include "cfg.h"
#include "params.h"
#include "tern.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONF_DEFAULTS 0x1 /* -d */
#define CONF_SET 0x2	  /* -n */
#define CONF_EXPAND 0x4	  /* -x */
#define CONF_VALUE 0x8	  /* -h */
#define CONF_EDIT 0x10	  /* -e */
#define CONF_REMOVE 0x20  /* -X */
#define CONF_HELP 0x40	  /* -H */

static void conf_warnings(const struct cfg *c)
{
	for (size_t i = 0; i < cfg_warning_count(c); i++)
		tern_error("warning: %s", cfg_warning(c, i));
}

/* As postconf prints values: each run of white space (such as the
 * indentation of continuation lines) shown as one space. */
static void conf_squeeze(const char *in, struct buf *out)
{
	buf_set(out, "");
	for (; *in; in++) {
		if (!isspace((unsigned char)*in))
			buf_putc(out, *in);
		else if (out->len && !isspace((unsigned char)in[1]) && in[1])
			buf_putc(out, ' ');
	}
}

static void conf_print(const struct cfg *c, const struct cfg_entry *e, unsigned flags)
{
	struct buf v = BUF_INIT, err = BUF_INIT, sq = BUF_INIT;
	const char *value = e->value ? e->value : "";

	/* Raw parameters are shown as written, as postconf -x does. */
	if ((flags & CONF_EXPAND) && !cfg_is_raw(c, e->name)) {
		if (cfg_expand(c, NULL, value, &v, &err) < 0)
			tern_error("warning: %s: %s", e->name, buf_str(&err));
		else
			value = buf_str(&v);
	}
	conf_squeeze(value, &sq);
	value = buf_str(&sq);
	if ((flags & CONF_HELP) && e->param)
		printf("# %s (%s%s)\n", e->param->help, cfg_type_name(e->param->type),
		       (e->param->flags & CFG_P_TERN) ? ", Tern only" : "");
	if (flags & CONF_VALUE)
		printf("%s\n", value);
	else
		printf("%s =%s%s\n", e->name, *value ? " " : "", value);
	buf_free(&v);
	buf_free(&err);
	buf_free(&sq);
}

/* One named parameter, as postconf NAME: unknown names only warn. */
static void conf_show_name(const struct cfg *c, const char *name, unsigned flags)
{
	struct cfg_entry e = {.name = name};
	const struct cfg_param *p = cfg_param_find(c, name);

	if ((flags & CONF_SET) && !cfg_is_set(c, name))
		return;
	if (flags & CONF_DEFAULTS) {
		if (p == NULL) {
			tern_error("warning: %s: unknown parameter", name);
			return;
		}
		e.value = p->dyn ? cfg_get_raw(c, NULL, name) : p->def;
	} else {
		e.value = cfg_get_raw(c, NULL, name);
		if (e.value == NULL && !cfg_name_known(c, name)) {
			tern_error("warning: %s: unknown parameter", name);
			return;
		}
	}
	e.param = p;
	conf_print(c, &e, flags);
}

static int conf_show(const struct cfg *c, int argc, char **argv, unsigned flags)
{
	struct cfg_entry *v;
	size_t n;

	if (argc > 0) {
		for (int i = 0; i < argc; i++)
			conf_show_name(c, argv[i], flags);
		return 0;
	}
	n = cfg_entries(c,
			(flags & CONF_DEFAULTS) ? CFG_ENTRIES_DEFAULTS
			: (flags & CONF_SET)	? CFG_ENTRIES_SET
						: 0,
			&v);
	for (size_t i = 0; i < n; i++)
		conf_print(c, &v[i], flags);
	free(v);
	return 0;
}

/* Is arg a well-formed edit? NAME=VALUE for -e, NAME for -X; the name
 * is one word. Refused, in postconf's words, before anything is loaded. */
static int conf_edit_arg_ok(const char *arg, unsigned flags)
{
	const char *t = arg, *e;

	while (isspace((unsigned char)*t))
		t++;
	if (*t == '#') {
		tern_error("-e and -X accept no comment input: \"%s\"", t);
		return 0;
	}
	for (e = t; *e && !isspace((unsigned char)*e) && *e != '='; e++)
		;
	if (flags & CONF_REMOVE) {
		if (e == t && *e == 0) {
			tern_error("-X requires non-blank parameter names");
			return 0;
		}
		if (strchr(t, '=')) {
			tern_error("-X takes parameter names, not \"%s\"", arg);
			return 0;
		}
		while (isspace((unsigned char)*e))
			e++;
		if (*e) {
			tern_error("bad parameter name: \"%s\"", t);
			return 0;
		}
		return 1;
	}
	if (strchr(t, '=') == NULL) {
		tern_error("\"%s\": expected name=value", arg);
		return 0;
	}
	if (e == t) {
		tern_error("missing attribute name: \"%s\"", t);
		return 0;
	}
	while (isspace((unsigned char)*e))
		e++;
	if (*e != '=') {
		tern_error("missing '=' after attribute name: \"%s\"", t);
		return 0;
	}
	return 1;
}

/* Split NAME=VALUE arguments (or take NAMEs for -X), trimming white space
 * around the name and the value as the parser would. */
static int conf_edit_args(int argc, char **argv, unsigned flags, char **names, char **values)
{
	for (int i = 0; i < argc; i++)
		if (!conf_edit_arg_ok(argv[i], flags))
			return -1;
	for (int i = 0; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		char *name = xstrdup(argv[i]), *value = NULL;
		if (!(flags & CONF_REMOVE)) {
			name[eq - argv[i]] = 0;
			struct buf b = BUF_INIT;
			buf_set(&b, eq + 1);
			buf_trim(&b);
			value = buf_detach(&b);
		}
		struct buf nb = BUF_INIT;
		buf_set(&nb, name);
		buf_trim(&nb);
		free(name);
		names[i] = buf_detach(&nb);
		values[i] = value;
	}
	return 0;
}

/* Check the edits against the file as it is (even a broken one: -e must
 * be able to fix it), then rewrite the file. */
static int conf_edit(const char *dir, int argc, char **argv, unsigned flags)
{
	char **names = xcalloc((size_t)argc + 1, sizeof(*names));
	char **values = xcalloc((size_t)argc + 1, sizeof(*values));
	struct cfg *c = cfg_new(tern_params);
	struct buf err = BUF_INIT, path = BUF_INIT;
	int rc = 1;

	if (conf_edit_args(argc, argv, flags, names, values) < 0)
		goto done;
	(void)cfg_load_dir(c, dir, TERN_CONF_FILE, 1, &err);
	for (int i = 0; i < argc; i++)
		if (values[i])
			cfg_set(c, names[i], values[i], NULL, 0);
	for (int i = 0; i < argc; i++) {
		buf_set(&err, "");
		if (values[i] && cfg_check(c, names[i], values[i], &err) < 0) {
			tern_error("%s", buf_str(&err));
			goto done;
		}
		/* An unknown name is written silently, as postconf -e. */
	}
	buf_set(&err, "");
	buf_printf(&path, "%s/%s", dir, TERN_CONF_FILE);
	if (cfg_file_edit(buf_str(&path), names, values, (size_t)argc, &err) < 0) {
		tern_error("%s", buf_str(&err));
		goto done;
	}
	rc = 0;
done:
	for (int i = 0; i < argc; i++) {
		free(names[i]);
		free(values[i]);
	}
	free(names);
	free(values);
	cfg_free(c);
	buf_free(&err);
	buf_free(&path);
	return rc;
}

/* As postconf: a config directory given explicitly (-c DIR or
 * $TERN_CONFIG_DIR) must exist; a missing tern.conf inside one is fine. */
static int conf_dir_ok(const char *dir_opt, const char *dir)
{
	const char *env = getenv("TERN_CONFIG_DIR");
	struct stat st;

	if (!(dir_opt && *dir_opt) && !(env && *env))
		return 1;
	if (stat(dir, &st) == 0)
		return 1;
	tern_error("open %s/%s: %s", dir, TERN_CONF_FILE, strerror(errno));
	return 0;
}

static int conf_has_assignment(int argc, char **argv)
{
	for (int i = 0; i < argc; i++)
		if (strchr(argv[i], '='))
			return 1;
	return 0;
}

int cmd_conf(int argc, char **argv)
{
	const char *dir_opt = NULL;
	unsigned flags = 0;
	struct cfg *c;
	struct buf err = BUF_INIT;
	int ch, rc;

	optind = 1;
	while ((ch = getopt(argc, argv, "+c:dnxheXH")) != -1) {
		switch (ch) {
		case 'c':
			dir_opt = optarg;
			break;
		case 'd':
			flags |= CONF_DEFAULTS;
			break;
		case 'n':
			flags |= CONF_SET;
			break;
		case 'x':
			flags |= CONF_EXPAND;
			break;
		case 'h':
			flags |= CONF_VALUE;
			break;
		case 'e':
			flags |= CONF_EDIT;
			break;
		case 'X':
			flags |= CONF_REMOVE;
			break;
		case 'H':
			flags |= CONF_HELP;
			break;
		default:
			tern_usage("conf");
			return 2;
		}
	}
	argc -= optind;
	argv += optind;
	if (!(flags & CONF_REMOVE) && conf_has_assignment(argc, argv))
		flags |= CONF_EDIT; /* postconf 2.8+: a value implies -e */
	if ((flags & (CONF_EDIT | CONF_REMOVE)) == (CONF_EDIT | CONF_REMOVE) ||
	    ((flags & (CONF_EDIT | CONF_REMOVE)) && argc == 0) ||
	    ((flags & CONF_DEFAULTS) && (flags & CONF_SET))) {
		tern_usage("conf");
		return 2;
	}
	if (!(flags & CONF_DEFAULTS) && !conf_dir_ok(dir_opt, tern_config_dir(dir_opt)))
		return 1;
	if (flags & (CONF_EDIT | CONF_REMOVE))
		return conf_edit(tern_config_dir(dir_opt), argc, argv, flags);

	c = cfg_new(tern_params);
	rc = 0;
	if (!(flags & CONF_DEFAULTS)) {
		rc = cfg_load_dir(c, tern_config_dir(dir_opt), TERN_CONF_FILE, 1, &err);
		conf_warnings(c);
	}
	if (rc < 0)
		tern_error("%s", buf_str(&err));
	else
		rc = conf_show(c, argc, argv, flags);
	cfg_free(c);
	buf_free(&err);
	return rc < 0 ? 1 : rc;
}
