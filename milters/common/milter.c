/* milter.c - program start and config snapshots shared by Tern's milters
 * (see milter.h): command line, config, logging, socket, detach, PID file,
 * privilege drop, SIGUSR1 reload, then libmilter's smfi_main().
 *
 * Order matters: the socket and the PID file are made before privileges
 * are dropped (a unix socket or PID file under /run needs root), the
 * process detaches before any thread exists (fork keeps only the caller),
 * and SIGUSR1/SIGHUP/SIGTERM/SIGINT are blocked before the reload thread
 * starts so that only sigwait() threads ever see them.
 */
#include "milter.h"

#include "log.h"
#include "pwent.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef TERN_VERSION
#define TERN_VERSION "0.1"
#endif

/* A loaded config and the milter's state built from it. */
struct milter_conf {
	struct cfg *cfg;
	void *state;
	int refs; /* sessions using it, +1 while it is the current one */
};

static const struct milter_prog *milter_prog;
static const char *milter_conf_path;
static const char *milter_pid_path; /* set once, before any thread starts */
static struct cfg_param *milter_registry;
static pthread_mutex_t milter_conf_lock = PTHREAD_MUTEX_INITIALIZER;
static struct milter_conf *milter_conf_current;

/* Parameters every milter has. socket's default comes from the program. */
static const struct cfg_param milter_common_params[] = {
    {"socket", CFG_STR, NULL, "where to listen: inet:PORT@HOST, inet6:PORT@HOST or unix:/path", 0,
     0, NULL, CFG_P_TERN, NULL},
    {"socket_umask", CFG_STR, "007", "umask (octal) while the unix socket is created", 0, 0, NULL,
     CFG_P_TERN, NULL},
    {"pid_file", CFG_STR, "", "write the daemon's PID here (empty: none)", 0, 0, NULL, CFG_P_TERN,
     NULL},
    {"user", CFG_STR, "tern",
     "started as root: run as this user after opening the socket (empty: stay root)", 0, 0, NULL,
     CFG_P_TERN, NULL},
    {"maillog_file", CFG_STR, "", "log to this file instead of syslog (not with -f)", 0, 0, NULL, 0,
     NULL},
    {"syslog_facility", CFG_STR, "mail", "syslog facility", 0, 0, NULL, 0, NULL},
    {"milter_timeout", CFG_TIME, "7210s",
     "libmilter's read/write timeout towards the MTA (smfi_settimeout)", 1, 0, "s", CFG_P_TERN,
     NULL},
    {NULL, 0, NULL, NULL, 0, 0, NULL, 0, NULL},
};

/* The milter's own parameters, then the common ones it does not redefine. */
static struct cfg_param *milter_registry_build(const struct milter_prog *p)
{
	size_t own = 0, m = 0, n, i, j;
	struct cfg_param *r;

	while (p->params[own].name)
		own++;
	while (milter_common_params[m].name)
		m++;
	r = xcalloc(own + m + 1, sizeof(*r));
	memcpy(r, p->params, own * sizeof(*r));
	n = own;
	for (i = 0; i < m; i++) {
		for (j = 0; j < own && strcmp(p->params[j].name, milter_common_params[i].name); j++)
			;
		if (j < own)
			continue;
		r[n] = milter_common_params[i];
		if (strcmp(r[n].name, "socket") == 0)
			r[n].def = p->default_socket;
		n++;
	}
	return r;
}

static struct milter_conf *milter_conf_load(struct buf *err)
{
	struct milter_conf *mc = xcalloc(1, sizeof(*mc));

	mc->cfg = cfg_new(milter_registry);
	if (cfg_load_file(mc->cfg, milter_conf_path, 0, err) < 0)
		goto fail;
	for (size_t i = 0; i < cfg_warning_count(mc->cfg); i++)
		msg_warn("%s", cfg_warning(mc->cfg, i));
	if ((mc->state = milter_prog->conf_load(mc->cfg, err)) == NULL)
		goto fail;
	mc->refs = 1;
	return mc;
fail:
	cfg_free(mc->cfg);
	free(mc);
	return NULL;
}

static void milter_conf_unref(struct milter_conf *mc)
{
	milter_prog->conf_free(mc->state);
	cfg_free(mc->cfg);
	free(mc);
}

void *milter_conf_acquire(void)
{
	struct milter_conf *mc;

	pthread_mutex_lock(&milter_conf_lock);
	mc = milter_conf_current;
	mc->refs++;
	pthread_mutex_unlock(&milter_conf_lock);
	return mc;
}

/* The state pointer handed out is the struct milter_conf itself: the
 * milter reads its state through milter_conf_state(). */
void milter_conf_release(void *ref)
{
	struct milter_conf *mc = ref;
	int last;

	if (mc == NULL)
		return;
	pthread_mutex_lock(&milter_conf_lock);
	last = --mc->refs == 0;
	pthread_mutex_unlock(&milter_conf_lock);
	if (last)
		milter_conf_unref(mc);
}

void *milter_conf_state(void *ref)
{
	return ref ? ((struct milter_conf *)ref)->state : NULL;
}

/* Leave now: libmilter does not wait for sessions in progress either
 * (smfi_stop(3)), and worker threads may be inside a callback or a DNS
 * lookup, so no exit handlers run under their feet. */
static void milter_exit(const char *why, int status)
{
	msg_info("terminating on %s", why);
	if (milter_pid_path)
		(void)unlink(milter_pid_path);
	_exit(status);
}

/* SIGUSR1: build the new config completely, then swap it in.
 * SIGTERM, SIGINT, SIGHUP: stop. libmilter's own signal thread waits for
 * those too and whichever thread gets one stops the milter; this one
 * does it at once, libmilter only when its listener next wakes up (it
 * polls every 5 seconds). */
static void *milter_signal_thread(void *arg)
{
	sigset_t set;
	int sig;

	(void)arg;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	for (;;) {
		struct buf err = BUF_INIT;
		struct milter_conf *mc, *old;

		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig != SIGUSR1)
			milter_exit(sig == SIGTERM  ? "SIGTERM"
				    : sig == SIGINT ? "SIGINT"
						    : "SIGHUP",
				    0);
		buf_init(&err);
		if ((mc = milter_conf_load(&err)) == NULL) {
			msg_error("reload refused, keeping the running configuration: %s",
				  buf_str(&err));
			buf_free(&err);
			continue;
		}
		pthread_mutex_lock(&milter_conf_lock);
		old = milter_conf_current;
		milter_conf_current = mc;
		pthread_mutex_unlock(&milter_conf_lock);
		milter_conf_release(old);
		msg_info("reload -- configuration %s", milter_conf_path);
		buf_free(&err);
	}
	return NULL;
}

static int milter_log_setup(const struct cfg *cfg, int foreground, struct buf *err)
{
	return log_setup(cfg, foreground, err);
}

/* At end of message a milter answers with several packets (edits, then
 * the verdict) while the MTA just waits: with Nagle's algorithm each one
 * after the first waits for the MTA's delayed ACK, 40 ms per message.
 * libmilter never sets TCP_NODELAY and keeps its listening socket to
 * itself; Linux hands the option on from a listening socket to the
 * sockets it accepts, so it is set on our (only) listening TCP socket. */
static void milter_socket_nodelay(void)
{
	int one = 1, listening, fd;
	socklen_t len;
	struct sockaddr_storage ss;

	for (fd = 0; fd < 256; fd++) {
		len = sizeof(listening);
		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening)
			continue;
		len = sizeof(ss);
		if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
		    (ss.ss_family == AF_INET || ss.ss_family == AF_INET6))
			(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
}

/* libmilter: socket spec, timeout, callbacks, then the socket itself (as
 * root, with socket_umask for a unix socket). */
static int milter_socket_open(const struct cfg *cfg, struct buf *err)
{
	struct buf v = BUF_INIT;
	long long tmo = 0;
	char *end;
	long mask;
	mode_t old;
	int rc = -1;

	buf_init(&v);
	if (cfg_get_str(cfg, NULL, "socket_umask", &v, err) < 0)
		goto done;
	mask = strtol(buf_str(&v), &end, 8);
	if (*end || mask < 0 || mask > 0777) {
		buf_printf(err, "socket_umask: bad octal value \"%s\"", buf_str(&v));
		goto done;
	}
	if (cfg_get_str(cfg, NULL, "socket", &v, err) < 0 ||
	    cfg_get_time(cfg, NULL, "milter_timeout", &tmo, err) < 0)
		goto done;
	if (smfi_setconn(v.data) != MI_SUCCESS) {
		buf_printf(err, "socket: bad value \"%s\"", buf_str(&v));
		goto done;
	}
	smfi_settimeout((int)tmo);
	if (smfi_register(*milter_prog->desc) != MI_SUCCESS) {
		buf_puts(err, "smfi_register failed");
		goto done;
	}
	old = umask((mode_t)mask);
	rc = smfi_opensocket(1) == MI_SUCCESS ? 0 : -1;
	umask(old);
	if (rc < 0)
		buf_printf(err, "cannot listen on %s (in use, or a bad address?)", buf_str(&v));
	else
		milter_socket_nodelay();
done:
	buf_free(&v);
	return rc;
}

static int milter_pid_write(const char *path, struct buf *err)
{
	char text[32];
	int fd, len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, text, (size_t)len) != len) {
		buf_printf(err, "write pid_file %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* A unix socket made by root is handed to the milter's user (and its
 * group: add the MTA's user to that group, socket_umask 007), as
 * opendkim's socket belongs to opendkim. */
static int milter_socket_chown(const struct cfg *cfg, uid_t uid, gid_t gid, struct buf *err)
{
	struct buf v = BUF_INIT;
	const char *path = NULL;
	int rc = 0;

	buf_init(&v);
	if (cfg_get_str(cfg, NULL, "socket", &v, err) < 0)
		rc = -1;
	else if (strncmp(buf_str(&v), "unix:", 5) == 0)
		path = buf_str(&v) + 5;
	else if (strncmp(buf_str(&v), "local:", 6) == 0)
		path = buf_str(&v) + 6;
	if (path && chown(path, uid, gid) < 0) {
		buf_printf(err, "chown %s: %s", path, strerror(errno));
		rc = -1;
	}
	buf_free(&v);
	return rc;
}

/* Started as root with "user" set: become that user for good. */
static int milter_privs_drop(const struct cfg *cfg, struct buf *err)
{
	struct buf name = BUF_INIT;
	struct pwent pe;
	int rc = -1, found;

	if (geteuid() != 0)
		return 0;
	buf_init(&name);
	if (cfg_get_str(cfg, NULL, "user", &name, err) < 0)
		goto done;
	if (name.len == 0) {
		rc = 0;
		goto done;
	}
	if ((found = pwent_by_name(buf_str(&name), &pe)) <= 0) {
		buf_printf(err, "user: %s \"%s\"", found < 0 ? "cannot look up" : "unknown user",
			   buf_str(&name));
		goto done;
	}
	if (pe.pw.pw_uid == 0) {
		pwent_free(&pe);
		rc = 0;
		goto done;
	}
	if (milter_socket_chown(cfg, pe.pw.pw_uid, pe.pw.pw_gid, err) < 0)
		goto drop;
	if (setgroups(1, &pe.pw.pw_gid) < 0 || setgid(pe.pw.pw_gid) < 0 || setuid(pe.pw.pw_uid) < 0)
		buf_printf(err, "cannot become user %s: %s", buf_str(&name), strerror(errno));
	else if (setuid(0) == 0)
		buf_puts(err, "privileges were not dropped: setuid(0) still works");
	else
		rc = 0;
drop:
	pwent_free(&pe);
done:
	buf_free(&name);
	return rc;
}

/* Not -f: leave the terminal and the parent's session. */
static void milter_detach(void)
{
	pid_t pid = fork();
	int fd;

	if (pid < 0)
		msg_fatal("fork: %s", strerror(errno));
	if (pid > 0)
		_exit(0);
	setsid();
	if ((fd = open("/dev/null", O_RDWR)) >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
}

static void milter_usage(const struct milter_prog *p)
{
	fprintf(stderr, "usage: tern-%s-milter [-f] [-n] [-v] -c config_file\n", p->name);
	if (p->command)
		fprintf(stderr, "       tern-%s-milter COMMAND ... (see docs/milters.md)\n",
			p->name);
	exit(2);
}

int milter_main(int argc, char **argv, const struct milter_prog *prog)
{
	static char service[64];
	struct buf err = BUF_INIT, pidf = BUF_INIT;
	int ch, foreground = 0, check = 0, rc;
	sigset_t set;
	pthread_t tid;

	milter_prog = prog;
	snprintf(service, sizeof(service), "%s-milter", prog->name);
	log_open(service);
	if (argc > 1 && argv[1][0] != '-' && prog->command)
		return prog->command(argc - 1, argv + 1);
	while ((ch = getopt(argc, argv, "fnvc:")) != -1) {
		switch (ch) {
		case 'f':
			foreground = 1;
			break;
		case 'n':
			check = 1;
			break;
		case 'v':
			log_set_verbose(msg_verbose + 1);
			break;
		case 'c':
			milter_conf_path = optarg;
			break;
		default:
			milter_usage(prog);
		}
	}
	if (optind != argc || milter_conf_path == NULL)
		milter_usage(prog);
	buf_init(&err);
	buf_init(&pidf);
	milter_registry = milter_registry_build(prog);
	if ((milter_conf_current = milter_conf_load(&err)) == NULL)
		msg_fatal("%s", buf_str(&err));
	if (check)
		return 0;
	if (milter_log_setup(milter_conf_current->cfg, foreground, &err) < 0 ||
	    milter_socket_open(milter_conf_current->cfg, &err) < 0 ||
	    cfg_get_path(milter_conf_current->cfg, NULL, "pid_file", &pidf, &err) < 0)
		msg_fatal("%s", buf_str(&err));
	if (!foreground)
		milter_detach();
	if ((pidf.len && milter_pid_write(buf_str(&pidf), &err) < 0) ||
	    milter_privs_drop(milter_conf_current->cfg, &err) < 0)
		msg_fatal("%s", buf_str(&err));
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (pidf.len)
		milter_pid_path = buf_str(&pidf);
	if ((errno = pthread_create(&tid, NULL, milter_signal_thread, NULL)) != 0)
		msg_fatal("pthread_create: %s", strerror(errno));
	pthread_detach(tid);
	msg_info("daemon started -- version %s, configuration %s", TERN_VERSION, milter_conf_path);
	rc = smfi_main();
	milter_exit(rc == MI_SUCCESS ? "signal (libmilter)" : "libmilter failure",
		    rc == MI_SUCCESS ? 0 : 1);
	return 1;
}

/* ---- libmilter helpers ---- */

char *milter_macro_dup(SMFICTX *ctx, const char *name)
{
	const char *v = smfi_getsymval(ctx, (char *)name);

	return v ? xstrdup(v) : NULL;
}

char *milter_addr_strip(const char *arg)
{
	size_t n;

	if (arg == NULL)
		return xstrdup("");
	n = strlen(arg);
	if (n >= 2 && arg[0] == '<' && arg[n - 1] == '>')
		return xstrndup(arg + 1, n - 2);
	return xstrdup(arg);
}

void milter_qid(SMFICTX *ctx, struct buf *out)
{
	const char *v = smfi_getsymval(ctx, "i");

	buf_set(out, v && *v ? v : "NOQUEUE");
}

void milter_reply_text(const char *text, struct buf *out)
{
	buf_reset(out);
	for (; *text; text++) {
		if (*text == '%')
			buf_puts(out, "%%");
		else if (*text == '\r' || *text == '\n')
			buf_putc(out, ' ');
		else
			buf_putc(out, *text);
	}
}

/* Skip white space, folding and (nested) comments (RFC 5322 CFWS). */
static const char *milter_ar_cfws(const char *p)
{
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
			p++;
		if (*p != '(')
			return p;
		for (int depth = 0; *p; p++) {
			if (*p == '\\' && p[1])
				p++;
			else if (*p == '(')
				depth++;
			else if (*p == ')' && --depth == 0) {
				p++;
				break;
			}
		}
	}
}

int milter_ar_is_ours(const char *value, const char *authserv_id)
{
	const char *p = milter_ar_cfws(value), *end = p;
	size_t n = strlen(authserv_id);

	while (*end && *end != ';' && *end != '(' && !isspace((unsigned char)*end))
		end++;
	return (size_t)(end - p) == n && n > 0 && strncasecmp(p, authserv_id, n) == 0;
}

char *milter_authserv_id(SMFICTX *ctx, const char *configured)
{
	const char *j = smfi_getsymval(ctx, "j");
	char host[256];

	if (configured && *configured)
		return xstrdup(configured);
	if (j && *j)
		return xstrdup(j);
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = 0;
	return xstrdup(host);
}
