/* main.c - tern-policyd, Tern's policy server (Postfix SMTPD access
 * policy delegation, server side): options, configuration, daemon mode,
 * PID file, privileges, signals and reload.
 *
 * Usage: tern-policyd [-f] [-n] [-v] [-c FILE] [reload | stop]
 * -f: foreground, log to stderr; -n: check the configuration (tables,
 * rules, state spec) and exit; "reload"/"stop" signal the running server
 * named by pid_file. Start order: config -> listeners (may need root) ->
 * detach (the parent waits until the child is ready, so a failed start
 * still exits non-zero) -> PID file -> drop to "user" -> state store and
 * checks -> event loop. SIGHUP reloads (an invalid file is refused and
 * the running configuration kept), SIGTERM/SIGINT stop.
 */
#include "policyd.h"
#include "server.h"

#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PD_DEFAULT_CONFIG "/etc/tern/" PD_CONF_FILE

struct pd_main {
	const char *config;
	int foreground;
	struct event_base *base;
	struct pd_server *srv;
	struct pd_conf *conf;
	char *pid_file;
	uid_t uid;
	gid_t gid;
	int ready_fd; /* daemon mode: tells the waiting parent how the start went */
	struct event *sigev[4];
	int stop; /* a terminating signal came: leave the main loop */
};

/* Load and build a configuration; checks open their tables and state. */
static struct pd_conf *pd_main_load(const char *path, struct buf *err)
{
	struct cfg *cfg = cfg_new(policyd_params);

	if (cfg_load_file(cfg, path, 0, err) < 0) {
		cfg_free(cfg);
		return NULL;
	}
	for (size_t i = 0; i < cfg_warning_count(cfg); i++)
		msg_warn("%s", cfg_warning(cfg, i));
	return pd_conf_new(cfg, err);
}

/* The cfg alone (no tables, no state): what "reload"/"stop" and the
 * privileged start need before the checks are built. */
static struct cfg *pd_main_cfg(const char *path, struct buf *err)
{
	struct cfg *cfg = cfg_new(policyd_params);

	if (cfg_load_file(cfg, path, 0, err) < 0) {
		cfg_free(cfg);
		return NULL;
	}
	return cfg;
}

static int pd_main_log(struct pd_main *m, const struct cfg *cfg, struct buf *err)
{
	return log_setup(cfg, m->foreground, err);
}

static int pd_main_user(struct pd_main *m, const struct cfg *cfg, struct buf *err)
{
	struct buf name = BUF_INIT;
	struct passwd *pw;
	int rc = 0;

	m->uid = getuid();
	m->gid = getgid();
	if (geteuid() != 0)
		return 0; /* unprivileged (tests): stay who we are */
	buf_init(&name);
	if (cfg_get_str(cfg, NULL, "user", &name, err) < 0)
		rc = -1;
	else if ((pw = getpwnam(buf_str(&name))) == NULL) {
		buf_printf(err, "parameter user: unknown user name: %s", buf_str(&name));
		rc = -1;
	} else if (pw->pw_uid == 0) {
		buf_printf(err, "parameter user: %s has privileged user ID", buf_str(&name));
		rc = -1;
	} else {
		m->uid = pw->pw_uid;
		m->gid = pw->pw_gid;
	}
	buf_free(&name);
	return rc;
}

/* As root: an LMDB state directory (and its files, e.g. made by "-n" as
 * root) must belong to the unprivileged user the server becomes. */
static int pd_main_state_dir(struct pd_main *m, const struct cfg *cfg, struct buf *err)
{
	static const char *files[] = {"", "/data.mdb", "/lock.mdb"};
	struct buf spec = BUF_INIT, path = BUF_INIT;
	const char *dir;
	int rc = 0;

	buf_init(&spec);
	buf_init(&path);
	if (geteuid() != 0 || cfg_get_str(cfg, NULL, "state", &spec, err) < 0 ||
	    strncmp(buf_str(&spec), "lmdb:/", 6) != 0)
		goto done;
	dir = buf_str(&spec) + 5;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		buf_printf(err, "state: create directory %s: %s", dir, strerror(errno));
		rc = -1;
		goto done;
	}
	for (size_t i = 0; i < 3 && rc == 0; i++) {
		buf_reset(&path);
		buf_printf(&path, "%s%s", dir, files[i]);
		if (chown(buf_str(&path), m->uid, m->gid) < 0 && (i == 0 || errno != ENOENT)) {
			buf_printf(err, "state: chown %s: %s", buf_str(&path), strerror(errno));
			rc = -1;
		}
	}
done:
	buf_free(&spec);
	buf_free(&path);
	return rc;
}

static int pd_main_privs_drop(struct pd_main *m, struct buf *err)
{
	if (geteuid() != 0)
		return 0;
	if (setgroups(1, &m->gid) < 0 || setgid(m->gid) < 0 || setuid(m->uid) < 0) {
		buf_printf(err, "cannot drop privileges to uid %ld: %s", (long)m->uid,
			   strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		buf_puts(err, "privileges were not dropped: setuid(0) still works");
		return -1;
	}
	return 0;
}

static int pd_main_pid_write(struct pd_main *m, struct buf *err)
{
	char text[32];
	int fd, len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());

	/* /run/tern does not survive a reboot: make it (as ternd does) */
	char *dir = xstrdup(m->pid_file), *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
			buf_printf(err, "create directory %s: %s", dir, strerror(errno));
			free(dir);
			return -1;
		}
	}
	free(dir);
	fd = open(m->pid_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, text, (size_t)len) != len) {
		buf_printf(err, "write pid_file %s: %s", m->pid_file, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* Background: fork, and let the parent exit only once the child reports
 * success (exit 0) or its error (printed, exit 1). */
static int pd_main_detach(struct pd_main *m, struct buf *err)
{
	int p[2], fd;
	pid_t pid;

	if (m->foreground)
		return 0;
	if (pipe(p) < 0 || (pid = fork()) < 0) {
		buf_printf(err, "cannot go to the background: %s", strerror(errno));
		return -1;
	}
	if (pid > 0) {
		char msg[1024];
		ssize_t n;

		close(p[1]);
		n = read(p[0], msg, sizeof(msg) - 1);
		if (n > 0 && msg[0] == 0)
			_exit(0);
		if (n > 0) {
			msg[n] = 0;
			fprintf(stderr, "tern/policyd: fatal: %s\n", msg);
		} else
			fprintf(stderr, "tern/policyd: fatal: the server exited during start\n");
		_exit(1);
	}
	close(p[0]);
	fcntl(p[1], F_SETFD, FD_CLOEXEC);
	m->ready_fd = p[1];
	setsid();
	/* The event base was made before fork(): its epoll set belongs to
	 * both processes until re-initialised (libevent's rule). */
	if (event_reinit(m->base) < 0) {
		buf_puts(err, "libevent: cannot re-initialise the event base after fork");
		return -1;
	}
	if ((fd = open("/dev/null", O_RDWR)) >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		if (fd > 2)
			close(fd);
	}
	return 0;
}

static void pd_main_ready(struct pd_main *m, const struct buf *err)
{
	int fd;

	if (m->ready_fd <= 0)
		return;
	if (err == NULL) {
		if (write(m->ready_fd, "", 1) < 0)
			(void)0;
		if ((fd = open("/dev/null", O_RDWR)) >= 0) {
			dup2(fd, 2);
			if (fd > 2)
				close(fd);
		}
	} else if (write(m->ready_fd, err->data, err->len) < 0)
		(void)0;
	close(m->ready_fd);
	m->ready_fd = -1;
}

/* Before detaching, the admin is watching stderr (not the log). */
static void pd_main_fail_early(struct pd_main *m, const struct buf *err) __attribute__((noreturn));
static void pd_main_fail_early(struct pd_main *m, const struct buf *err)
{
	if (!m->foreground)
		fprintf(stderr, "tern/policyd: fatal: %s\n", buf_str(err));
	msg_fatal("%s", buf_str(err));
}

static void pd_main_die(struct pd_main *m, const struct buf *err) __attribute__((noreturn));
static void pd_main_die(struct pd_main *m, const struct buf *err)
{
	pd_main_ready(m, err);
	msg_fatal("%s", buf_str(err));
}

/* ---- signals ---- */

static void pd_main_reload(struct pd_main *m)
{
	struct buf err = BUF_INIT;
	struct pd_conf *pc;

	buf_init(&err);
	if ((pc = pd_main_load(m->config, &err)) == NULL) {
		msg_error("reload refused, keeping the running configuration: %s", buf_str(&err));
		buf_free(&err);
		return;
	}
	pd_server_set_conf(m->srv, pc);
	pd_conf_unref(m->conf);
	m->conf = pc;
	buf_reset(&err);
	if (pd_main_log(m, pc->cfg, &err) < 0)
		msg_warn("reload: logging unchanged: %s", buf_str(&err));
	msg_info("reload -- configuration %s, checks %s", m->config,
		 cfg_get_raw(pc->cfg, NULL, "checks"));
	buf_free(&err);
}

static void pd_main_signal_cb(evutil_socket_t signo, short what, void *arg)
{
	struct pd_main *m = arg;

	if (signo == SIGHUP) {
		pd_main_reload(m);
		return;
	}
	msg_info("terminating on signal %d", (int)signo);
	pd_server_stop(m->srv);
	__atomic_store_n(&m->stop, 1, __ATOMIC_RELEASE);
	event_base_loopbreak(m->base);
}

static void pd_main_signals(struct pd_main *m)
{
	static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};

	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < 4; i++) {
		m->sigev[i] = evsignal_new(m->base, sigs[i], pd_main_signal_cb, m);
		event_add(m->sigev[i], NULL);
	}
}

/* ---- commands ---- */

/* "tern-policyd reload|stop": signal the server named by pid_file. */
static int pd_main_command(const char *config, const char *cmd)
{
	struct buf err = BUF_INIT, path = BUF_INIT;
	struct cfg *cfg = NULL;
	FILE *fp = NULL;
	long pid = 0;
	int rc = 1, sig = strcmp(cmd, "reload") == 0 ? SIGHUP
			  : strcmp(cmd, "stop") == 0 ? SIGTERM
						     : 0;

	buf_init(&err);
	buf_init(&path);
	if (sig == 0) {
		fprintf(stderr, "tern-policyd: unknown command \"%s\" (reload, stop)\n", cmd);
		rc = 2;
		goto done;
	}
	if ((cfg = pd_main_cfg(config, &err)) == NULL ||
	    cfg_get_path(cfg, NULL, "pid_file", &path, &err) < 0) {
		fprintf(stderr, "tern-policyd: %s\n", buf_str(&err));
		goto done;
	}
	errno = 0;
	if ((fp = fopen(buf_str(&path), "r")) == NULL || fscanf(fp, "%ld", &pid) != 1 || pid <= 1 ||
	    kill((pid_t)pid, sig) < 0) {
		fprintf(stderr, "tern-policyd: %s: no running server (pid_file %s): %s\n", cmd,
			buf_str(&path), errno ? strerror(errno) : "bad pid file");
		goto done;
	}
	printf("tern-policyd: %s signalled (pid %ld)\n", cmd, pid);
	rc = 0;
done:
	if (fp)
		fclose(fp);
	if (cfg)
		cfg_free(cfg);
	buf_free(&path);
	buf_free(&err);
	return rc;
}

static void pd_main_usage(void)
{
	fprintf(stderr, "usage: tern-policyd [-f] [-n] [-v] [-c config_file] [reload | stop]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static char abspath[PATH_MAX];
	struct pd_main m;
	struct buf err = BUF_INIT, pidp = BUF_INIT;
	struct cfg *cfg;
	int ch, check = 0;

	memset(&m, 0, sizeof(m));
	m.ready_fd = -1;
	buf_init(&err);
	buf_init(&pidp);
	log_open(PD_SERVICE);
	log_to_cli("tern/policyd");
	while ((ch = getopt(argc, argv, "fnvc:")) != -1) {
		switch (ch) {
		case 'f':
			m.foreground = 1;
			break;
		case 'n':
			check = 1;
			break;
		case 'v':
			log_set_verbose(msg_verbose + 1);
			break;
		case 'c':
			m.config = optarg;
			break;
		default:
			pd_main_usage();
		}
	}
	if (m.config == NULL)
		m.config = getenv("TERN_POLICYD_CONFIG") && *getenv("TERN_POLICYD_CONFIG")
			       ? getenv("TERN_POLICYD_CONFIG")
			       : PD_DEFAULT_CONFIG;
	if (realpath(m.config, abspath) != NULL)
		m.config = abspath; /* reload after a chdir-free start */
	if (optind + 1 == argc) {
		buf_free(&err);
		buf_free(&pidp);
		return pd_main_command(m.config, argv[optind]);
	}
	if (optind != argc)
		pd_main_usage();

	if (check) {
		struct pd_conf *pc = pd_main_load(m.config, &err);
		if (pc == NULL)
			msg_fatal("%s", buf_str(&err));
		pd_conf_unref(pc);
		buf_free(&err);
		buf_free(&pidp);
		return 0;
	}
	/* Privileged part: only the cfg, the log and the sockets. */
	if ((cfg = pd_main_cfg(m.config, &err)) == NULL ||
	    cfg_get_path(cfg, NULL, "pid_file", &pidp, &err) < 0 ||
	    pd_main_user(&m, cfg, &err) < 0 || pd_main_state_dir(&m, cfg, &err) < 0)
		msg_fatal("%s", buf_str(&err));
	m.pid_file = buf_detach(&pidp);
	if (pd_main_log(&m, cfg, &err) < 0) {
		log_to_cli("tern/policyd");
		msg_fatal("%s", buf_str(&err));
	}
	if (evthread_use_pthreads() < 0 || (m.base = event_base_new()) == NULL)
		msg_fatal("libevent: cannot create the event base");
	{
		/* A pd_conf without checks, for the listeners only. */
		struct pd_conf *boot = xcalloc(1, sizeof(*boot));
		boot->refs = 1;
		boot->cfg = cfg;
		if (cfg_get_size(cfg, NULL, "request_size_limit", &boot->size_limit, &err) < 0 ||
		    cfg_get_time(cfg, NULL, "idle_timeout", &boot->idle_timeout, &err) < 0 ||
		    cfg_get_int(cfg, NULL, "max_clients", &boot->max_clients, &err) < 0 ||
		    cfg_get_int(cfg, NULL, "worker_threads", &boot->workers, &err) < 0 ||
		    cfg_get_int(cfg, NULL, "event_loops", &boot->loops, &err) < 0 ||
		    (m.srv = pd_server_new(m.base, boot, m.uid, m.gid, &err)) == NULL)
			pd_main_fail_early(&m, &err);
		pd_conf_unref(boot);
	}
	if (pd_main_detach(&m, &err) < 0)
		pd_main_fail_early(&m, &err);
	pd_main_signals(&m);
	if (pd_main_pid_write(&m, &err) < 0 || pd_main_privs_drop(&m, &err) < 0 ||
	    (m.conf = pd_main_load(m.config, &err)) == NULL)
		pd_main_die(&m, &err);
	pd_server_set_conf(m.srv, m.conf);
	if (pd_server_start(m.srv, &err) < 0)
		pd_main_die(&m, &err);
	msg_info("daemon started -- listening on %s, %d event loop(s), checks %s, configuration %s",
		 pd_server_listen_text(m.srv), pd_server_loops(m.srv),
		 cfg_get_raw(m.conf->cfg, NULL, "checks"), m.config);
	pd_main_ready(&m, NULL);
	pd_loop_run(m.base, &m.stop);
	pd_server_free(m.srv);
	pd_conf_unref(m.conf);
	for (size_t i = 0; i < 4; i++)
		if (m.sigev[i])
			event_free(m.sigev[i]);
	event_base_free(m.base);
	unlink(m.pid_file);
	free(m.pid_file);
	buf_free(&err);
	return 0;
}
