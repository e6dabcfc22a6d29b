/* cmd_daemon.c - "tern start | stop | reload | status | check | abort |
 * flush": the postfix(1) commands, talking to ternd over the control
 * socket found through the same configuration (-c DIR, $TERN_CONFIG_DIR).
 *
 * Messages keep postfix-script's wording with Tern's names ("tern/tern:
 * starting the Tern mail system"). Pitfall: "not running" is decided by
 * the control socket (CONTROL_DOWN), never by a possibly stale pid file.
 */
#include "tern.h"

#include "attr.h"
#include "cfg.h"
#include "control.h"
#include "params.h"

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DAEMON_REQ_TIMEOUT 30 /* seconds for one control request */
#define DAEMON_START_WAIT 30  /* seconds for ternd to come up */
#define DAEMON_STOP_WAIT 60   /* seconds for ternd to drain and exit */

/* postfix-script's $INFO lines: "postfix/postfix-script: ..." */
static void daemon_info(const char *text, const char *arg)
{
	fprintf(stderr, "tern/tern: %s%s\n", text, arg ? arg : "");
}

static void daemon_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int daemon_usage(const char *cmd)
{
	tern_usage(cmd);
	return 2;
}

/* "-c DIR" for every daemon command; returns the config dir or NULL. */
static const char *daemon_args(int argc, char **argv)
{
	const char *dir = NULL;
	int ch;

	optind = 1;
	while ((ch = getopt(argc, argv, "c:")) != -1) {
		if (ch != 'c')
			return NULL;
		dir = optarg;
	}
	if (optind != argc)
		return NULL;
	return tern_config_dir(dir);
}

static struct cfg *daemon_cfg_load(const char *dir, int show_warnings)
{
	struct cfg *cfg = cfg_new(tern_params);
	struct buf err = BUF_INIT;

	buf_init(&err);
	if (cfg_load_dir(cfg, dir, "tern.conf", 0, &err) < 0) {
		tern_error("%s", buf_str(&err));
		cfg_free(cfg);
		cfg = NULL;
	} else if (show_warnings) {
		for (size_t i = 0; i < cfg_warning_count(cfg); i++)
			tern_error("warning: %s", cfg_warning(cfg, i));
	}
	buf_free(&err);
	return cfg;
}

/* One request; reply filled. Prints errors except CONTROL_DOWN. */
static enum control_status daemon_request(const struct cfg *cfg, const char *command,
					  struct attr_list *reply)
{
	struct attr_list req;
	struct buf path = BUF_INIT, err = BUF_INIT;
	enum control_status st = CONTROL_ERROR;

	attr_list_init(&req);
	buf_init(&path);
	buf_init(&err);
	attr_list_set(&req, "command", command);
	if (cfg_get_path(cfg, NULL, "control_socket", &path, &err) == 0)
		st = control_request(buf_str(&path), &req, reply, DAEMON_REQ_TIMEOUT, &err);
	if (st == CONTROL_ERROR)
		tern_error("%s", buf_str(&err));
	attr_list_free(&req);
	buf_free(&path);
	buf_free(&err);
	return st;
}

/* ternd next to this tern binary (build/bin, /usr/sbin), else $PATH. */
static void daemon_ternd_path(struct buf *out)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	buf_set(out, "ternd");
	if (n <= 0)
		return;
	self[n] = 0;
	if ((slash = strrchr(self, '/')) == NULL)
		return;
	slash[1] = 0;
	buf_set(out, self);
	buf_puts(out, "ternd");
	if (access(buf_str(out), X_OK) != 0)
		buf_set(out, "ternd");
}

/* Run "ternd -n -c DIR": the daemon's own check (relay restrictions,
 * tables, listener addresses), with its messages on our stderr. */
static int daemon_ternd_check(const char *dir)
{
	struct buf ternd = BUF_INIT;
	pid_t pid;
	int status = 0;

	buf_init(&ternd);
	daemon_ternd_path(&ternd);
	if ((pid = fork()) == 0) {
		execlp(buf_str(&ternd), "ternd", "-n", "-c", dir, (char *)NULL);
		tern_error("cannot run %s: %s", buf_str(&ternd), strerror(errno));
		_exit(127);
	}
	buf_free(&ternd);
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* ---- tern check ---- */

/* A directory ternd needs: create it if missing (owned by mail_owner
 * when we are root); warn, as postfix check does, about unsafe modes. */
static int daemon_dir_check(const char *what, const char *dir, const struct passwd *owner)
{
	struct stat st;

	if (stat(dir, &st) < 0) {
		if (errno != ENOENT || mkdir(dir, 0700) < 0) {
			tern_error("%s %s: %s", what, dir, strerror(errno));
			return -1;
		}
		if (geteuid() == 0 && owner && chown(dir, owner->pw_uid, owner->pw_gid) < 0) {
			tern_error("chown %s: %s", dir, strerror(errno));
			return -1;
		}
		fprintf(stderr, "tern: created %s %s\n", what, dir);
		return 0;
	}
	if (!S_ISDIR(st.st_mode)) {
		tern_error("%s %s: not a directory", what, dir);
		return -1;
	}
	if (owner && st.st_uid == 0 && owner->pw_uid != 0 && geteuid() == 0) {
		/* as ternd does at start: root made it, mail_owner needs it */
		if (chown(dir, owner->pw_uid, owner->pw_gid) < 0) {
			tern_error("chown %s: %s", dir, strerror(errno));
			return -1;
		}
		fprintf(stderr, "tern: gave %s %s to %s\n", what, dir, owner->pw_name);
	} else if (owner && st.st_uid != owner->pw_uid) {
		tern_error("warning: not owned by %s: %s", owner->pw_name, dir);
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		tern_error("warning: group or other writable: %s", dir);
	return 0;
}

static int daemon_dirs_check(const struct cfg *cfg)
{
	static const char *params[] = {"queue_directory", "data_directory"};
	struct buf v = BUF_INIT, err = BUF_INIT;
	struct passwd *owner = NULL;
	int rc = 0;

	buf_init(&v);
	buf_init(&err);
	if (cfg_get_str(cfg, NULL, "mail_owner", &v, &err) == 0 &&
	    (owner = getpwnam(buf_str(&v))) == NULL) {
		tern_error("%sparameter mail_owner: unknown user name value: %s",
			   geteuid() == 0 ? "" : "warning: ", buf_str(&v));
		rc = geteuid() == 0 ? -1 : 0;
	} else if (owner && geteuid() == 0 && (owner->pw_uid == 0 || owner->pw_gid == 0)) {
		tern_error("parameter mail_owner: user %s has privileged %s ID", owner->pw_name,
			   owner->pw_uid == 0 ? "user" : "group");
		return -1;
	}
	for (size_t i = 0; i < 2; i++) {
		buf_reset(&err);
		if (cfg_get_path(cfg, NULL, params[i], &v, &err) < 0) {
			tern_error("%s", buf_str(&err));
			rc = -1;
		} else if (v.len && daemon_dir_check(params[i], buf_str(&v), owner) < 0)
			rc = -1;
	}
	buf_free(&v);
	buf_free(&err);
	return rc;
}

int cmd_check(int argc, char **argv)
{
	const char *dir = daemon_args(argc, argv);
	struct cfg *cfg;
	int rc = 0;

	if (dir == NULL)
		return daemon_usage("check");
	if ((cfg = daemon_cfg_load(dir, 1)) == NULL)
		return 1;
	if (daemon_dirs_check(cfg) < 0)
		rc = 1;
	if (daemon_ternd_check(dir) < 0)
		rc = 1;
	cfg_free(cfg);
	return rc;
}

/* ---- start / stop / abort ---- */

static int daemon_spawn(const char *dir, pid_t *pidp)
{
	struct buf ternd = BUF_INIT;
	pid_t pid;

	buf_init(&ternd);
	daemon_ternd_path(&ternd);
	if ((pid = fork()) == 0) {
		/* Its own session: the terminal's ^C and hangup are not ternd's. */
		setsid();
		execlp(buf_str(&ternd), "ternd", "-c", dir, (char *)NULL);
		tern_error("cannot run %s: %s", buf_str(&ternd), strerror(errno));
		_exit(127);
	}
	buf_free(&ternd);
	if (pid < 0) {
		tern_error("fork: %s", strerror(errno));
		return -1;
	}
	*pidp = pid;
	return 0;
}

/* Wait until the control socket answers, or ternd exits. */
static int daemon_start_wait(const struct cfg *cfg, pid_t pid)
{
	struct attr_list reply;
	int status, rc = -1;

	attr_list_init(&reply);
	for (int i = 0; i < DAEMON_START_WAIT * 20; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			tern_error("fatal: the Tern mail system failed to start (ternd exited with "
				   "status %d); see the messages above or the mail log",
				   WIFEXITED(status) ? WEXITSTATUS(status)
						     : 128 + WTERMSIG(status));
			break;
		}
		if (daemon_request(cfg, "status", &reply) == CONTROL_OK &&
		    strcmp(attr_get(&reply, "pid"), "") != 0 &&
		    atol(attr_get(&reply, "pid")) == (long)pid) {
			rc = 0;
			break;
		}
		daemon_sleep_ms(50);
	}
	if (rc < 0 && waitpid(pid, &status, WNOHANG) == 0)
		tern_error("fatal: ternd (pid %ld) did not answer on its control socket within %d "
			   "seconds",
			   (long)pid, DAEMON_START_WAIT);
	attr_list_free(&reply);
	return rc;
}

int cmd_start(int argc, char **argv)
{
	const char *dir = daemon_args(argc, argv);
	char abs[PATH_MAX];
	struct attr_list reply;
	struct cfg *cfg;
	pid_t pid;
	int rc = 1;

	if (dir == NULL)
		return daemon_usage("start");
	if (realpath(dir, abs) != NULL)
		dir = abs;
	if ((cfg = daemon_cfg_load(dir, 1)) == NULL)
		return 1;
	attr_list_init(&reply);
	switch (daemon_request(cfg, "status", &reply)) {
	case CONTROL_OK:
		tern_error("the Tern mail system is already running (pid %s)",
			   attr_get(&reply, "pid"));
		goto done;
	case CONTROL_ERROR:
		goto done;
	case CONTROL_DOWN:
		break;
	}
	/* As "postfix start" runs "postfix check" first. */
	if (daemon_dirs_check(cfg) < 0)
		goto done;
	daemon_info("starting the Tern mail system", NULL);
	if (daemon_spawn(dir, &pid) == 0 && daemon_start_wait(cfg, pid) == 0)
		rc = 0;
done:
	attr_list_free(&reply);
	cfg_free(cfg);
	return rc;
}

/* ternd's pid is gone (or no longer ours to signal: EPERM means alive). */
static int daemon_gone(pid_t pid)
{
	return kill(pid, 0) < 0 && errno == ESRCH;
}

static int daemon_halt(int argc, char **argv, const char *command, const char *usage)
{
	const char *dir = daemon_args(argc, argv);
	struct attr_list reply;
	enum control_status st;
	struct cfg *cfg;
	pid_t pid;
	int rc = 1;

	if (dir == NULL)
		return daemon_usage(usage);
	if ((cfg = daemon_cfg_load(dir, 0)) == NULL)
		return 1;
	attr_list_init(&reply);
	if ((st = daemon_request(cfg, "status", &reply)) != CONTROL_OK) {
		if (st == CONTROL_DOWN)
			tern_error("the Tern mail system is not running");
		goto done;
	}
	pid = (pid_t)atol(attr_get(&reply, "pid"));
	if (strcmp(command, "stop") == 0)
		daemon_info("stopping the Tern mail system", NULL);
	else
		daemon_info("aborting the Tern mail system", NULL);
	if (daemon_request(cfg, command, &reply) == CONTROL_ERROR)
		goto done;
	for (int i = 0; i < DAEMON_STOP_WAIT * 10 && pid > 0; i++) {
		if (daemon_gone(pid)) {
			rc = 0;
			goto done;
		}
		daemon_sleep_ms(100);
	}
	tern_error("ternd (pid %ld) did not stop within %d seconds", (long)pid, DAEMON_STOP_WAIT);
done:
	attr_list_free(&reply);
	cfg_free(cfg);
	return rc;
}

int cmd_stop(int argc, char **argv)
{
	return daemon_halt(argc, argv, "stop", "stop");
}

int cmd_abort(int argc, char **argv)
{
	return daemon_halt(argc, argv, "abort", "abort");
}

/* ---- status / reload / flush ---- */

/* A request whose only outcome is ok or an error message. */
static int daemon_simple(int argc, char **argv, const char *command, const char *banner)
{
	const char *dir = daemon_args(argc, argv);
	struct attr_list reply;
	struct cfg *cfg;
	enum control_status st;
	int rc = 1;

	if (dir == NULL)
		return daemon_usage(argv[0]);
	if ((cfg = daemon_cfg_load(dir, 0)) == NULL)
		return 1;
	attr_list_init(&reply);
	if (banner)
		daemon_info(banner, NULL);
	st = daemon_request(cfg, command, &reply);
	if (st == CONTROL_DOWN)
		tern_error("the Tern mail system is not running");
	else if (st == CONTROL_OK && strcmp(attr_get(&reply, "status"), "ok") != 0)
		tern_error("%s refused: %s", command, attr_get(&reply, "message"));
	else if (st == CONTROL_OK)
		rc = 0;
	attr_list_free(&reply);
	cfg_free(cfg);
	return rc;
}

int cmd_reload(int argc, char **argv)
{
	return daemon_simple(argc, argv, "reload", "refreshing the Tern mail system");
}

int cmd_flush(int argc, char **argv)
{
	return daemon_simple(argc, argv, "flush", NULL);
}

int cmd_status(int argc, char **argv)
{
	const char *dir = daemon_args(argc, argv);
	struct attr_list reply;
	struct cfg *cfg;
	int rc = 1;

	if (dir == NULL)
		return daemon_usage("status");
	if ((cfg = daemon_cfg_load(dir, 0)) == NULL)
		return 1;
	attr_list_init(&reply);
	switch (daemon_request(cfg, "status", &reply)) {
	case CONTROL_OK:
		daemon_info("the Tern mail system is running: PID: ", attr_get(&reply, "pid"));
		rc = 0;
		break;
	case CONTROL_DOWN:
		daemon_info("the Tern mail system is not running", NULL);
		break;
	case CONTROL_ERROR:
		break;
	}
	attr_list_free(&reply);
	cfg_free(cfg);
	return rc;
}
