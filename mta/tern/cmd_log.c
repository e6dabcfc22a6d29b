/* cmd_log.c - "tern log [-c DIR] [-p priority] [-t tag] [-i] [TEXT...]",
 * like postlog(1): one line per invocation (or per stdin line when no
 * TEXT is given) in Tern's log, "tern/postlog[pid]: TEXT", through the
 * same destination ternd uses (maillog_file if set, else syslog with
 * syslog_facility). -p info|warn|error|fatal|panic as Postfix's.
 */
#include "cfg.h"
#include "log.h"
#include "params.h"
#include "tern.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096 /* longer stdin lines are split, as Postfix's line_length_limit */

enum lcmd_prio { LCMD_INFO, LCMD_WARN, LCMD_ERROR, LCMD_FATAL };

static int lcmd_prio_parse(const char *s, enum lcmd_prio *p)
{
	static const struct {
		const char *name;
		enum lcmd_prio prio;
	} names[] = {{"info", LCMD_INFO},   {"warn", LCMD_WARN},   {"warning", LCMD_WARN},
		     {"error", LCMD_ERROR}, {"fatal", LCMD_FATAL}, {"panic", LCMD_FATAL}};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(s, names[i].name) == 0) {
			*p = names[i].prio;
			return 0;
		}
	return -1;
}

/* fatal and panic log and exit 1, as postlog's msg_fatal(). */
static void lcmd_emit(enum lcmd_prio p, const char *text)
{
	if (p == LCMD_WARN)
		msg_warn("%s", text);
	else if (p == LCMD_ERROR)
		msg_error("%s", text);
	else if (p == LCMD_FATAL)
		msg_fatal("%s", text);
	else
		msg_info("%s", text);
}

/* maillog_file, else syslog, as ternd chooses. */
static int lcmd_dest(const char *dir, const char *tag)
{
	struct cfg *c = cfg_new(tern_params);
	struct buf err = BUF_INIT, file = BUF_INIT, fac = BUF_INIT;
	int rc = -1;

	if (cfg_load_dir(c, tern_config_dir(dir), TERN_CONF_FILE, 1, &err) < 0 ||
	    cfg_get_path(c, NULL, "maillog_file", &file, &err) < 0 ||
	    cfg_get_str(c, NULL, "syslog_facility", &fac, &err) < 0) {
		tern_error("%s", buf_str(&err));
		goto out;
	}
	log_open(tag);
	if (file.len > 0 && log_to_file(file.data) < 0)
		tern_error("open %s: %m", file.data);
	else if (file.len == 0 && log_to_syslog(fac.data) < 0)
		tern_error("unknown syslog_facility \"%s\"", fac.data);
	else
		rc = 0;
out:
	cfg_free(c);
	buf_free(&err);
	buf_free(&file);
	buf_free(&fac);
	return rc;
}

static void lcmd_stdin(enum lcmd_prio p)
{
	struct buf line = BUF_INIT;
	int ch;

	buf_init(&line);
	while ((ch = getchar()) != EOF) {
		if (ch != '\n' && line.len < LOG_LINE_MAX) {
			buf_putc(&line, ch);
			continue;
		}
		lcmd_emit(p, line.data);
		buf_reset(&line);
		if (ch != '\n')
			buf_putc(&line, ch);
	}
	if (line.len)
		lcmd_emit(p, line.data);
	buf_free(&line);
}

int cmd_log(int argc, char **argv)
{
	enum lcmd_prio prio = LCMD_INFO;
	const char *dir = NULL, *tag = "postlog";
	struct buf text = BUF_INIT;
	int c;

	optind = 1;
	while ((c = getopt(argc, argv, "+c:ip:t:v")) != -1) {
		if (c == 'c')
			dir = optarg;
		else if (c == 't')
			tag = optarg;
		else if (c == 'p' && lcmd_prio_parse(optarg, &prio) < 0) {
			tern_error("unknown priority value: %s", optarg);
			return 2;
		} else if (c == '?') {
			tern_usage("log");
			return 2;
		}
	}
	if (lcmd_dest(dir, tag) < 0)
		return 1;
	for (int i = optind; i < argc; i++)
		buf_printf(&text, "%s%s", i > optind ? " " : "", argv[i]);
	if (optind < argc)
		lcmd_emit(prio, text.data);
	else
		lcmd_stdin(prio);
	buf_free(&text);
	return 0;
}
