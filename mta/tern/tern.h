/* tern.h - the admin CLI's command table.
 *
 * Every "tern CMD" is one entry in tern_commands[] (main.c) pointing to a
 * cmd_<name>() in cmd_<name>.c. Commands get argv starting at their own
 * name, return the process exit status, and print errors as
 * "tern: <message>" on stderr (see tern_error()).
 */
#ifndef TERN_CLI_H
#define TERN_CLI_H

struct tern_command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *usage; /* one line: arguments */
	const char *help;  /* one line: what it does */
};

int cmd_conf(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_start(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_reload(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_abort(int argc, char **argv);
int cmd_flush(int argc, char **argv);
int cmd_queue(int argc, char **argv);
int cmd_delivery(int argc, char **argv);
int cmd_log(int argc, char **argv);
int cmd_explain(int argc, char **argv);
int cmd_passwd(int argc, char **argv);

void tern_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int tern_usage(const char *cmd);
/* The config directory: -c DIR, else $TERN_CONFIG_DIR, else /etc/tern. */
const char *tern_config_dir(const char *opt);

#endif
