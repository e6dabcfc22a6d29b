/* main.c - "tern", the admin CLI: dispatches subcommands from one table.
 *
 * Postfix habits map onto it (postconf -> tern conf, postmap -> tern
 * map); "tern help" lists commands, "tern CMD --help" shows one.
 */
#include "log.h"
#include "tern.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmd_help(int argc, char **argv);

static const struct tern_command tern_commands[] = {
    {"conf", cmd_conf, "[-c DIR] [-d|-n] [-x] [-h] [-H] [-e|-X] [NAME[=VALUE]...]",
     "show or edit configuration parameters (like postconf)"},
    {"map", cmd_map, "build type:file | query [-q KEY] type:name",
     "build an indexed table or look keys up (like postmap)"},
    {"start", cmd_start, "[-c DIR]", "start the mail system (ternd) in the background"},
    {"stop", cmd_stop, "[-c DIR]", "stop the mail system, letting sessions finish"},
    {"reload", cmd_reload, "[-c DIR]", "re-read the configuration (refused if invalid)"},
    {"status", cmd_status, "[-c DIR]", "say whether the mail system is running, and its PID"},
    {"check", cmd_check, "[-c DIR]", "check configuration, directories and permissions"},
    {"abort", cmd_abort, "[-c DIR]", "stop the mail system at once"},
    {"flush", cmd_flush, "[-c DIR]", "attempt to deliver all deferred mail now"},
    {"queue", cmd_queue,
     "[-c DIR] list [--json] | show ID | delete|hold|release|requeue ID...|ALL|- | flush [DOMAIN] "
     "| shape",
     "list, show and manage queued mail (like mailq, postcat -q, postsuper, qshape)"},
    {"delivery", cmd_delivery, "[-c DIR] pause|resume|status",
     "freeze or thaw all delivery, persistently (receiving continues)"},
    {"log", cmd_log, "[-c DIR] [-p PRIORITY] [-t TAG] [TEXT...]",
     "write a line to the mail log (like postlog)"},
    {"explain", cmd_explain,
     "[-c DIR] [--listener NAME] --client ADDR [--name HOST] [--reverse-name HOST] "
     "[--helo NAME] --from ADDR --to ADDR [--to ADDR...]",
     "dry-run the access restrictions for one SMTP session, step by step"},
    {"passwd", cmd_passwd, "[-m yescrypt|sha512] [-d] FILE USER",
     "set USER's SMTP AUTH password (read from stdin) in FILE; -d deletes USER"},
    {"help", cmd_help, "[COMMAND]", "show commands, or one command's usage"},
};
#define TERN_NCOMMANDS (sizeof(tern_commands) / sizeof(tern_commands[0]))

void tern_error(const char *fmt, ...)
{
	va_list ap;
	fputs("tern: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

const char *tern_config_dir(const char *opt)
{
	const char *env;
	if (opt && *opt)
		return opt;
	if ((env = getenv("TERN_CONFIG_DIR")) != NULL && *env)
		return env;
	return "/etc/tern";
}

static const struct tern_command *tern_command_find(const char *name)
{
	for (size_t i = 0; i < TERN_NCOMMANDS; i++)
		if (strcmp(tern_commands[i].name, name) == 0)
			return &tern_commands[i];
	return NULL;
}

int tern_usage(const char *name)
{
	const struct tern_command *c = tern_command_find(name);
	if (c == NULL)
		return 2;
	printf("usage: tern %s %s\n  %s\n", c->name, c->usage, c->help);
	return 0;
}

static int cmd_help(int argc, char **argv)
{
	if (argc > 1) {
		if (tern_command_find(argv[1]) == NULL) {
			tern_error("unknown command \"%s\" (try \"tern help\")", argv[1]);
			return 2;
		}
		return tern_usage(argv[1]);
	}
	printf("usage: tern COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < TERN_NCOMMANDS; i++)
		printf("  %-8s %s\n", tern_commands[i].name, tern_commands[i].help);
	printf("\n\"tern COMMAND --help\" shows a command's arguments.\n");
	return 0;
}

int main(int argc, char **argv)
{
	const struct tern_command *c;

	log_open("tern");
	log_to_cli("tern");
	if (argc < 2) {
		cmd_help(1, argv);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
		return cmd_help(1, argv);
	if ((c = tern_command_find(argv[1])) == NULL) {
		tern_error("unknown command \"%s\" (try \"tern help\")", argv[1]);
		return 2;
	}
	/* Only the long form: "-h" means something to some commands (postconf -h). */
	if (argc > 2 && strcmp(argv[2], "--help") == 0)
		return tern_usage(c->name);
	return c->run(argc - 1, argv + 1);
}
