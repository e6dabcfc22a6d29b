/* main.c - ternd, the Tern mail daemon: configuration, privileges,
 * listeners, queue, scheduler, pickup, control socket and signals.
 *
 * Usage: ternd [-f] [-n] [-v] [-c DIR]. -f: foreground, log to stderr;
 * -n: check the configuration as a start would (no bind) and exit.
 * Start order: config (refused with FILE, line N) -> relay sanity check
 * -> listeners and control socket (may need root) -> privileged helper ->
 * drop to mail_owner -> queue -> engine loops -> scheduler and pickup.
 */
#include "control.h"
#include "deliver.h"
#include "engine.h"
#include "listener.h"
#include "pickup.h"
#include "queue.h"
#include "sched.h"
#include "smtpd.h"

#include "cfg.h"
#include "log.h"
#include "params.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TERND_DRAIN_SECONDS 10 /* stop: how long open sessions may finish */
#define TERND_SCHED_WORKERS 4	   /* at least */
#define TERND_SCHED_WORKERS_MAX 500 /* at most, whatever default_process_limit says */

/* One listener's settings snapshot, looked up by name at accept time. */
struct ternd_conf {
	char *name;
	struct smtpd_conf *conf;
};

struct ternd {
	const char *config_dir;
	int foreground;
	struct cfg *cfg;
	struct cfg **retired; /* old configs: snapshots and sessions may point into them */
	size_t nretired;
	struct event_base *base; /* main loop: signals, accept, control */
	struct engine *engine;
	struct listen_set listeners;
	struct evconnlistener **levs;
	struct ternd_conf *confs;
	size_t nconfs;
	struct queue *queue;
	struct sched *sched;
	struct pickup *pickup;
	struct control_server *control;
	struct smtpd_hooks hooks;
	struct buf pid_file, queue_dir;
	uid_t uid;
	gid_t gid;
	time_t started;
	int stopping;
	struct event *drain_timer;
	struct event *accept_pause; /* re-enables the listeners after EMFILE */
	time_t drain_deadline;
	struct event *sigev[4];
};

static void ternd_die(struct ternd *d, const struct buf *err) __attribute__((noreturn));

/* Before "daemon started" the admin (or "tern start") is watching
 * stderr: say why we exit there too, not only in the mail log. */
static void ternd_die(struct ternd *d, const struct buf *err)
{
	if (!d->foreground && d->started == 0)
		fprintf(stderr, "tern/ternd: fatal: %s\n", buf_str(err));
	control_server_close(d->control);
	if (d->pid_file.len && d->control)
		unlink(buf_str(&d->pid_file));
	msg_fatal("%s", buf_str(err));
}

/* ---- configuration ---- */

static const char *ternd_relay_required[] = {
    "reject_unauth_destination", "defer_unauth_destination", "reject", "defer",
    "defer_if_permit",		 "check_relay_domains",	     NULL};

static int ternd_is_class(const struct cfg *cfg, const char *listener, const char *name)
{
	struct cfg_list l;
	struct buf err = BUF_INIT;
	int found = 0;

	buf_init(&err);
	if (cfg_get_list(cfg, listener, "smtpd_restriction_classes", &l, &err) == 0) {
		for (size_t i = 0; i < l.count; i++)
			found |= strcmp(l.items[i], name) == 0;
		cfg_list_free(&l);
	}
	buf_free(&err);
	return found;
}

/* Postfix's has_required(): a fail-safe restriction appears before any
 * "permit" (which ends the list); "warn_if_reject X" does not count;
 * restriction classes are searched too. */
static int ternd_relay_has(const struct cfg *cfg, const char *listener, const char *param,
			   int depth)
{
	struct cfg_list l;
	struct buf err = BUF_INIT;
	int found = 0, stop = 0;

	buf_init(&err);
	if (depth > 10 || cfg_get_list(cfg, listener, param, &l, &err) < 0) {
		buf_free(&err);
		return 0;
	}
	for (size_t i = 0; i < l.count && !found && !stop; i++) {
		const char *it = l.items[i];
		if (strcmp(it, "warn_if_reject") == 0 && i + 1 < l.count) {
			i++;
			continue;
		}
		if (strcmp(it, "permit") == 0) {
			stop = 1;
			continue;
		}
		for (const char **r = ternd_relay_required; *r && !found; r++)
			found = strcmp(it, *r) == 0;
		if (!found && it[0] != '{' && ternd_is_class(cfg, listener, it))
			found = ternd_relay_has(cfg, listener, it, depth + 1);
	}
	cfg_list_free(&l);
	buf_free(&err);
	return found;
}

/* ternd refuses a configuration that would make an open relay, with
 * Postfix's smtpd fatal error text. */
static int ternd_relay_check_one(const struct cfg *cfg, const char *listener, struct buf *err)
{
	struct buf k1 = BUF_INIT, k2 = BUF_INIT;
	int own;

	if (ternd_relay_has(cfg, listener, "smtpd_relay_restrictions", 0) ||
	    ternd_relay_has(cfg, listener, "smtpd_recipient_restrictions", 0))
		return 0;
	buf_init(&k1);
	buf_init(&k2);
	if (listener) {
		buf_printf(&k1, "%s.smtpd_relay_restrictions", listener);
		buf_printf(&k2, "%s.smtpd_recipient_restrictions", listener);
	}
	own = listener && (cfg_is_set(cfg, buf_str(&k1)) || cfg_is_set(cfg, buf_str(&k2)));
	buf_puts(err, "in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, "
		      "specify at least one working instance of: reject_unauth_destination, "
		      "defer_unauth_destination, reject, defer, defer_if_permit or "
		      "check_relay_domains");
	if (own)
		buf_printf(err, " (listener %s)", listener);
	buf_free(&k1);
	buf_free(&k2);
	return -1;
}

static int ternd_relay_check(const struct cfg *cfg, struct buf *err)
{
	struct cfg_list names;
	int rc;

	if ((rc = ternd_relay_check_one(cfg, NULL, err)) < 0 || cfg_listeners(cfg, &names) < 0)
		return -1;
	for (size_t i = 0; i < names.count && rc == 0; i++)
		rc = ternd_relay_check_one(cfg, names.items[i], err);
	cfg_list_free(&names);
	return rc;
}

/* Load and validate DIR/tern.conf; warnings go to the log. */
static int ternd_config_load(const char *dir, struct cfg **out, struct buf *err)
{
	struct cfg *cfg = cfg_new(tern_params);

	if (cfg_load_dir(cfg, dir, "tern.conf", 0, err) < 0 || ternd_relay_check(cfg, err) < 0) {
		cfg_free(cfg);
		return -1;
	}
	for (size_t i = 0; i < cfg_warning_count(cfg); i++)
		msg_warn("%s", cfg_warning(cfg, i));
	*out = cfg;
	return 0;
}

static void ternd_confs_free(struct ternd_conf *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		smtpd_conf_unref(v[i].conf);
		free(v[i].name);
	}
	free(v);
}

/* One smtpd_conf per listener (tables are opened here, so a missing
 * table file refuses the start or the reload). */
static int ternd_confs_build(struct cfg *cfg, struct ternd_conf **out, size_t *nout,
			     struct buf *err)
{
	struct cfg_list names;
	struct ternd_conf *v;
	size_t n = 0;
	int rc = 0;

	if (cfg_listeners(cfg, &names) < 0)
		return -1;
	v = xcalloc(names.count + 1, sizeof(*v));
	for (size_t i = 0; i < names.count && rc == 0; i++) {
		struct smtpd_conf *c = smtpd_conf_new(cfg, names.items[i], err);
		if (c == NULL) {
			rc = -1;
			break;
		}
		v[n].name = xstrdup(names.items[i]);
		v[n++].conf = c;
	}
	cfg_list_free(&names);
	if (rc < 0) {
		ternd_confs_free(v, n);
		return -1;
	}
	*out = v;
	*nout = n;
	return 0;
}

static struct smtpd_conf *ternd_conf_find(struct ternd *d, const char *name)
{
	for (size_t i = 0; i < d->nconfs; i++)
		if (strcmp(d->confs[i].name, name) == 0)
			return d->confs[i].conf;
	return NULL;
}

/* ---- logging, files, privileges ---- */

static int ternd_log_setup(struct ternd *d, const struct cfg *cfg, struct buf *err)
{
	return log_setup(cfg, d->foreground, err);
}

static int ternd_owner(struct ternd *d, const struct cfg *cfg, struct buf *err)
{
	struct buf name = BUF_INIT;
	struct passwd *pw;
	int rc = 0;

	d->uid = getuid();
	d->gid = getgid();
	if (geteuid() != 0)
		return 0; /* unprivileged (make run, tests): stay who we are */
	buf_init(&name);
	if (cfg_get_str(cfg, NULL, "mail_owner", &name, err) < 0)
		rc = -1;
	else if ((pw = getpwnam(buf_str(&name))) == NULL) {
		buf_printf(err, "parameter mail_owner: unknown user name value: %s",
			   buf_str(&name));
		rc = -1;
	} else if (pw->pw_uid == 0) { /* Postfix refuses the same */
		buf_printf(err, "parameter mail_owner: user %s has privileged user ID",
			   buf_str(&name));
		rc = -1;
	} else if (pw->pw_gid == 0) {
		buf_printf(err, "parameter mail_owner: user %s has privileged group ID",
			   buf_str(&name));
		rc = -1;
	} else {
		d->uid = pw->pw_uid;
		d->gid = pw->pw_gid;
	}
	buf_free(&name);
	return rc;
}

/* Create a missing directory for mail_owner (pid file, socket, queue).
 * With ours (queue_directory, data_directory: never a shared parent such
 * as /run), one that root made (mkdir by hand, a package script) is
 * handed to mail_owner, as "postfix set-permissions" would: the engine never runs
 * as root, so it could not use it otherwise. */
static int ternd_mkdir(struct ternd *d, const char *dir, mode_t mode, int ours, struct buf *err)
{
	struct stat st;

	if (stat(dir, &st) == 0) {
		if (!ours || geteuid() != 0 || st.st_uid != 0 || !S_ISDIR(st.st_mode))
			return 0;
		if (chown(dir, d->uid, d->gid) < 0) {
			buf_printf(err, "chown %s: %s", dir, strerror(errno));
			return -1;
		}
		msg_info("gave directory %s to mail_owner (uid %ld)", dir, (long)d->uid);
		return 0;
	}
	if (mkdir(dir, mode) < 0 && errno != EEXIST) {
		buf_printf(err, "create directory %s: %s", dir, strerror(errno));
		return -1;
	}
	if (geteuid() == 0 && chown(dir, d->uid, d->gid) < 0) {
		buf_printf(err, "chown %s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

/* maildrop may have been made by a root sendmail before ternd ever ran */
static int ternd_mkdir_maildrop(struct ternd *d, struct buf *err)
{
	struct buf dir = BUF_INIT;
	int rc;

	buf_printf(&dir, "%s/%s", buf_str(&d->queue_dir), PICKUP_MAILDROP_DIR);
	rc = ternd_mkdir(d, buf_str(&dir), 01733, 1, err);
	buf_free(&dir);
	return rc;
}

static int ternd_mkparent(struct ternd *d, const char *path, struct buf *err)
{
	char *dir = xstrdup(path), *slash = strrchr(dir, '/');
	int rc = 0;

	if (slash && slash != dir) {
		*slash = 0;
		rc = ternd_mkdir(d, dir, 0755, 0, err);
	}
	free(dir);
	return rc;
}

static int ternd_pid_write(struct ternd *d, struct buf *err)
{
	char text[32];
	int fd, len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());

	if (ternd_mkparent(d, buf_str(&d->pid_file), err) < 0)
		return -1;
	fd = open(buf_str(&d->pid_file), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, text, (size_t)len) != len) {
		buf_printf(err, "write pid_file %s: %s", buf_str(&d->pid_file), strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* Never keep root in the engine (design.md "Process model"). */
static int ternd_privs_drop(struct ternd *d, struct buf *err)
{
	if (geteuid() != 0)
		return 0;
	if (setgroups(1, &d->gid) < 0 || setgid(d->gid) < 0 || setuid(d->uid) < 0) {
		buf_printf(err, "cannot drop privileges to mail_owner (uid %ld): %s", (long)d->uid,
			   strerror(errno));
		return -1;
	}
	if (d->uid != 0 && setuid(0) == 0) {
		buf_puts(err, "privileges were not dropped: setuid(0) still works");
		return -1;
	}
	return 0;
}

/* ---- accepting connections ---- */

struct ternd_accept {
	struct ternd *d;
	int fd;
	struct sockaddr_storage peer, local;
	socklen_t peerlen, locallen;
	struct smtpd_conf *conf;
	struct event_base *base;
};

/* Runs on the chosen engine loop, so the session starts in its thread. */
static void ternd_session_start(void *arg)
{
	struct ternd_accept *a = arg;

	smtpd_session_start(a->base, a->fd, (struct sockaddr *)&a->peer, a->peerlen,
			    (struct sockaddr *)&a->local, a->locallen, a->conf, a->d->queue,
			    &a->d->hooks);
	smtpd_conf_unref(a->conf); /* the session holds its own reference */
	free(a);
}

static void ternd_accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
			    int salen, void *arg)
{
	struct listen_sock *ls = arg;
	struct ternd *d = ls->data;
	struct ternd_accept *a;
	struct smtpd_conf *conf = ternd_conf_find(d, ls->name);

	if (conf == NULL || d->stopping) {
		close(fd);
		return;
	}
	a = xcalloc(1, sizeof(*a));
	a->d = d;
	a->fd = fd;
	memcpy(&a->peer, sa, (size_t)salen < sizeof(a->peer) ? (size_t)salen : sizeof(a->peer));
	a->peerlen = (socklen_t)salen;
	a->locallen = sizeof(a->local);
	if (getsockname(fd, (struct sockaddr *)&a->local, &a->locallen) < 0)
		a->locallen = 0;
	a->conf = conf;
	smtpd_conf_ref(conf);
	a->base = engine_next(d->engine);
	if (engine_run_on(a->base, ternd_session_start, a) < 0) {
		msg_warn("cannot hand a connection to an event loop");
		smtpd_conf_unref(conf);
		close(fd);
		free(a);
	}
}

static void ternd_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct ternd *d = arg;

	for (size_t i = 0; d->levs && i < d->listeners.n; i++)
		if (d->levs[i])
			evconnlistener_enable(d->levs[i]);
}

/* EMFILE, ENFILE, ENOBUFS: libevent would retry the accept at once and
 * spin the main loop (and fill the log, and then the disk). Pause every
 * listener for a second, with one warning per pause; sessions in
 * progress go on. */
static void ternd_accept_error(struct evconnlistener *lev, void *arg)
{
	struct ternd *d = ((struct listen_sock *)arg)->data;
	struct timeval pause = {1, 0};
	int e = errno;

	for (size_t i = 0; d->levs && i < d->listeners.n; i++)
		if (d->levs[i])
			evconnlistener_disable(d->levs[i]);
	if (d->accept_pause == NULL)
		d->accept_pause = evtimer_new(d->base, ternd_accept_resume, d);
	if (d->accept_pause == NULL || evtimer_add(d->accept_pause, &pause) < 0) {
		ternd_accept_resume(-1, 0, d); /* cannot pause: keep serving */
		return;
	}
	msg_warn("accept: %s -- not accepting connections for 1 second", strerror(e));
}

static void ternd_levs_free(struct ternd *d)
{
	for (size_t i = 0; d->levs && i < d->listeners.n; i++)
		if (d->levs[i])
			evconnlistener_free(d->levs[i]);
	free(d->levs);
	d->levs = NULL;
}

static int ternd_levs_start(struct ternd *d, struct buf *err)
{
	d->levs = xcalloc(d->listeners.n + 1, sizeof(*d->levs));
	for (size_t i = 0; i < d->listeners.n; i++) {
		struct listen_sock *ls = &d->listeners.v[i];
		ls->data = d;
		d->levs[i] = evconnlistener_new(d->base, ternd_accept_cb, ls, LEV_OPT_CLOSE_ON_EXEC,
						-1, ls->fd);
		if (d->levs[i] == NULL) {
			buf_printf(err, "listener %s: cannot watch %s", ls->name, ls->text);
			return -1;
		}
		evconnlistener_set_error_cb(d->levs[i], ternd_accept_error);
	}
	return 0;
}

/* ---- stop, reload, status ---- */

static void ternd_drain_check(evutil_socket_t fd, short what, void *arg)
{
	struct ternd *d = arg;

	if (smtpd_sessions_active() == 0 || time(NULL) >= d->drain_deadline) {
		if (smtpd_sessions_active() > 0)
			msg_warn("stopping with %d session(s) still open", smtpd_sessions_active());
		event_base_loopbreak(d->base);
	}
}

/* Stop accepting, let sessions finish (abort: do not wait). */
static void ternd_stop(struct ternd *d, int signo, int abort)
{
	struct timeval tick = {0, 100000};

	if (d->stopping && !abort)
		return;
	msg_info("terminating on signal %d", signo);
	d->stopping = 1;
	ternd_levs_free(d);
	listener_set_close(&d->listeners);
	if (abort) {
		event_base_loopbreak(d->base);
		return;
	}
	smtpd_sessions_drain();
	d->drain_deadline = time(NULL) + TERND_DRAIN_SECONDS;
	d->drain_timer = event_new(d->base, -1, EV_PERSIST, ternd_drain_check, d);
	event_add(d->drain_timer, &tick);
}

static void ternd_retire(struct ternd *d, struct cfg *old)
{
	d->retired = xrealloc(d->retired, (d->nretired + 1) * sizeof(*d->retired));
	d->retired[d->nretired++] = old;
}

static void ternd_started_log(const char *what, struct ternd *d)
{
	msg_info("%s -- version %s, configuration %s", what,
		 cfg_get_raw(d->cfg, NULL, "mail_version"), d->config_dir);
}

/* All or nothing: the running configuration stays unless every part of
 * the new one (values, relay check, tables, listeners, scheduler) is ok. */
static int ternd_reload(struct ternd *d, struct buf *err)
{
	struct cfg *cfg = NULL;
	struct ternd_conf *confs = NULL;
	struct listen_set ls = {NULL, 0};
	size_t nconfs = 0;

	if (d->stopping) {
		buf_puts(err, "the Tern mail system is stopping");
		return -1;
	}
	if (ternd_config_load(d->config_dir, &cfg, err) < 0 ||
	    ternd_confs_build(cfg, &confs, &nconfs, err) < 0 ||
	    listener_set_open(cfg, &d->listeners, &ls, err) < 0)
		goto fail;
	if (d->sched && sched_reload(d->sched, cfg, err) < 0) {
		listener_set_restore(&ls, &d->listeners);
		goto fail;
	}
	ternd_levs_free(d);
	listener_set_close(&d->listeners);
	d->listeners = ls;
	if (ternd_levs_start(d, err) < 0)
		msg_error("%s", buf_str(err)); /* unreachable short of ENOMEM */
	ternd_confs_free(d->confs, d->nconfs);
	d->confs = confs;
	d->nconfs = nconfs;
	if (d->pickup && pickup_reload(d->pickup, cfg, err) < 0) /* as valid as confs */
		msg_warn("pickup: %s", buf_str(err));
	ternd_retire(d, d->cfg);
	d->cfg = cfg;
	buf_reset(err);
	if (ternd_log_setup(d, cfg, err) < 0)
		msg_warn("reload: logging unchanged: %s", buf_str(err));
	ternd_started_log("reload", d);
	return 0;
fail:
	msg_error("reload refused, keeping the running configuration: %s", buf_str(err));
	if (confs)
		ternd_confs_free(confs, nconfs);
	if (cfg)
		cfg_free(cfg);
	return -1;
}

static void ternd_signal_cb(evutil_socket_t signo, short what, void *arg)
{
	struct ternd *d = arg;
	struct buf err = BUF_INIT;

	buf_init(&err);
	if (signo == SIGHUP)
		ternd_reload(d, &err);
	else
		ternd_stop(d, (int)signo, signo == SIGQUIT);
	buf_free(&err);
}

static void ternd_ctl_status(void *arg, struct attr_list *reply)
{
	struct ternd *d = arg;
	struct buf v = BUF_INIT;

	buf_init(&v);
	buf_printf(&v, "%ld", (long)getpid());
	attr_list_set(reply, "pid", buf_str(&v));
	attr_list_set(reply, "version", cfg_get_raw(d->cfg, NULL, "mail_version"));
	buf_reset(&v);
	buf_printf(&v, "%ld", (long)(time(NULL) - d->started));
	attr_list_set(reply, "uptime", buf_str(&v));
	buf_reset(&v);
	buf_printf(&v, "%zu", d->queue ? queue_count(d->queue) : (size_t)0);
	attr_list_set(reply, "queue", buf_str(&v));
	buf_reset(&v);
	buf_printf(&v, "%d", smtpd_sessions_active());
	attr_list_set(reply, "sessions", buf_str(&v));
	attr_list_set(reply, "paused", d->sched && sched_paused(d->sched) ? "yes" : "no");
	attr_list_set(reply, "config", d->config_dir);
	buf_free(&v);
}

static int ternd_ctl_reload(void *arg, struct buf *err)
{
	return ternd_reload(arg, err);
}

static void ternd_ctl_stop(void *arg, int abort)
{
	ternd_stop(arg, abort ? SIGQUIT : SIGTERM, abort);
}

static struct queue *ternd_ctl_queue(void *arg)
{
	return ((struct ternd *)arg)->queue;
}

static struct sched *ternd_ctl_sched(void *arg)
{
	return ((struct ternd *)arg)->sched;
}

static void ternd_queued(void *arg, const char *qid)
{
	struct ternd *d = arg;
	if (d->sched)
		sched_wakeup(d->sched);
}

/* ---- start ---- */

static void ternd_signals(struct ternd *d)
{
	static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};

	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < 4; i++) {
		d->sigev[i] = evsignal_new(d->base, sigs[i], ternd_signal_cb, d);
		event_add(d->sigev[i], NULL);
	}
}

static int ternd_paths(struct ternd *d, struct buf *err)
{
	return cfg_get_path(d->cfg, NULL, "pid_file", &d->pid_file, err) < 0 ||
		       cfg_get_path(d->cfg, NULL, "queue_directory", &d->queue_dir, err) < 0
		   ? -1
		   : 0;
}

/* What needs root: sockets, pid file, control socket, the helper. */
static int ternd_start_privileged(struct ternd *d, struct buf *err)
{
	static const struct control_ops ops_tmpl = {
	    NULL,	    ternd_ctl_status, ternd_ctl_reload,
	    ternd_ctl_stop, ternd_ctl_queue,  ternd_ctl_sched};
	struct control_ops ops = ops_tmpl;
	struct buf sock = BUF_INIT;
	int rc = -1;

	buf_init(&sock);
	ops.arg = d;
	if (ternd_owner(d, d->cfg, err) < 0 ||
	    cfg_get_path(d->cfg, NULL, "data_directory", &sock, err) < 0 ||
	    (sock.len > 0 && ternd_mkdir(d, buf_str(&sock), 0755, 1, err) < 0) ||
	    cfg_get_path(d->cfg, NULL, "control_socket", &sock, err) < 0 ||
	    ternd_mkparent(d, buf_str(&sock), err) < 0)
		goto done;
	/* The control socket first: it tells us if another ternd runs. */
	d->control = control_server_open(d->base, buf_str(&sock), d->uid, d->gid, &ops, err);
	if (d->control == NULL || listener_set_open(d->cfg, NULL, &d->listeners, err) < 0 ||
	    ternd_pid_write(d, err) < 0 || ternd_mkdir(d, buf_str(&d->queue_dir), 0700, 1, err) < 0 ||
	    ternd_mkdir_maildrop(d, err) < 0 ||
	    deliver_helper_spawn(d->cfg, err) < 0)
		goto done;
	rc = 0;
done:
	buf_free(&sock);
	return rc;
}

/* The queue is opened after dropping root, so its files belong to
 * mail_owner (a root-owned segment would be unwritable later). */
static int ternd_start_engine(struct ternd *d, struct buf *err)
{
	struct queue_opts qo;
	struct buf maildrop = BUF_INIT;
	long long delay_ms = 0, minfree = 0, nworkers = TERND_SCHED_WORKERS;
	int rc = -1;

	memset(&qo, 0, sizeof(qo));
	buf_init(&maildrop);
	if (cfg_get_time_ms(d->cfg, NULL, "queue_commit_delay", &delay_ms, err) < 0 ||
	    cfg_get_size(d->cfg, NULL, "queue_minfree", &minfree, err) < 0)
		goto done;
	qo.commit_delay_ms = (int)delay_ms;
	qo.minfree_bytes = (uint64_t)minfree;
	if (queue_open(buf_str(&d->queue_dir), &qo, &d->queue, err) < 0 ||
	    ternd_confs_build(d->cfg, &d->confs, &d->nconfs, err) < 0 ||
	    (d->engine = engine_new(0, err)) == NULL || engine_start(d->engine, err) < 0 ||
	    deliver_smtp_init(d->engine, err) < 0)
		goto done;
	/* Delivery workers: blocking deliveries (maildir, commands, the SMTP
	 * and LMTP clients) each hold one, as Postfix's delivery agent
	 * processes do: default_process_limit of them, woken only as needed. */
	if (cfg_get_int(d->cfg, NULL, "default_process_limit", &nworkers, err) < 0)
		goto done;
	if (nworkers > TERND_SCHED_WORKERS_MAX)
		nworkers = TERND_SCHED_WORKERS_MAX;
	if (nworkers < TERND_SCHED_WORKERS)
		nworkers = TERND_SCHED_WORKERS;
	d->sched = sched_start(d->queue, d->cfg, buf_str(&d->queue_dir), (int)nworkers, err);
	if (d->sched == NULL)
		goto done;
	buf_printf(&maildrop, "%s/%s", buf_str(&d->queue_dir), PICKUP_MAILDROP_DIR);
	d->pickup = pickup_start(engine_base(d->engine, 0), d->queue, d->cfg, buf_str(&maildrop),
				 ternd_queued, d, err);
	if (d->pickup == NULL || ternd_levs_start(d, err) < 0)
		goto done;
	rc = 0;
done:
	buf_free(&maildrop);
	return rc;
}

/* Not in the foreground: let go of the terminal "tern start" gave us. */
static void ternd_detach(struct ternd *d)
{
	int fd;

	if (d->foreground || (fd = open("/dev/null", O_RDWR)) < 0)
		return;
	dup2(fd, 0);
	dup2(fd, 1);
	dup2(fd, 2);
	if (fd > 2)
		close(fd);
}

static void ternd_shutdown(struct ternd *d)
{
	if (d->pickup)
		pickup_stop(d->pickup);
	if (d->sched)
		sched_stop(d->sched);
	if (d->engine)
		engine_free(d->engine);
	ternd_confs_free(d->confs, d->nconfs);
	if (d->queue)
		queue_close(d->queue);
	control_server_close(d->control);
	ternd_levs_free(d);
	listener_set_close(&d->listeners);
	if (d->pid_file.len)
		unlink(buf_str(&d->pid_file));
	if (d->drain_timer)
		event_free(d->drain_timer);
	if (d->accept_pause)
		event_free(d->accept_pause);
	for (size_t i = 0; i < 4; i++)
		if (d->sigev[i])
			event_free(d->sigev[i]);
	event_base_free(d->base);
	for (size_t i = 0; i < d->nretired; i++)
		cfg_free(d->retired[i]);
	free(d->retired);
	cfg_free(d->cfg);
	buf_free(&d->pid_file);
	buf_free(&d->queue_dir);
}

/* "ternd -n": everything a start checks, without binding. */
static int ternd_check_only(struct ternd *d, struct buf *err)
{
	struct listen_set ls = {NULL, 0};

	if (listener_set_resolve(d->cfg, &ls, err) < 0 ||
	    ternd_confs_build(d->cfg, &d->confs, &d->nconfs, err) < 0)
		return -1;
	listener_set_close(&ls);
	ternd_confs_free(d->confs, d->nconfs);
	d->confs = NULL;
	d->nconfs = 0;
	return 0;
}

static void ternd_usage(void)
{
	fprintf(stderr, "usage: ternd [-f] [-n] [-v] [-c config_dir]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static char absdir[PATH_MAX];
	struct ternd d;
	struct buf err = BUF_INIT;
	int ch, check = 0;

	memset(&d, 0, sizeof(d));
	/* Every session costs a descriptor (two with a milter later): use all
	 * the kernel allows us rather than the 1024 soft default. */
	struct rlimit nofile;
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
		nofile.rlim_cur = nofile.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &nofile);
	}
	buf_init(&err);
	buf_init(&d.pid_file);
	buf_init(&d.queue_dir);
	log_open("ternd");
	log_to_cli("tern/ternd");
	while ((ch = getopt(argc, argv, "fnvc:")) != -1) {
		switch (ch) {
		case 'f':
			d.foreground = 1;
			break;
		case 'n':
			check = 1;
			break;
		case 'v':
			log_set_verbose(msg_verbose + 1);
			break;
		case 'c':
			d.config_dir = optarg;
			break;
		default:
			ternd_usage();
		}
	}
	if (optind != argc)
		ternd_usage();
	if (d.config_dir == NULL)
		d.config_dir = getenv("TERN_CONFIG_DIR") && *getenv("TERN_CONFIG_DIR")
				   ? getenv("TERN_CONFIG_DIR")
				   : "/etc/tern";
	/* Logged as "configuration DIR" and used by reload after a chdir-free
	 * start: make it absolute, as Postfix's config_directory is. */
	if (realpath(d.config_dir, absdir) != NULL)
		d.config_dir = absdir;
	if (ternd_config_load(d.config_dir, &d.cfg, &err) < 0 || ternd_paths(&d, &err) < 0)
		msg_fatal("%s", buf_str(&err));
	if (check) {
		if (ternd_check_only(&d, &err) < 0)
			msg_fatal("%s", buf_str(&err));
		cfg_free(d.cfg);
		buf_free(&d.pid_file);
		buf_free(&d.queue_dir);
		buf_free(&err);
		return 0;
	}
	if (ternd_log_setup(&d, d.cfg, &err) < 0) {
		log_to_cli("tern/ternd");
		msg_fatal("%s", buf_str(&err));
	}
	if (engine_init() < 0 || (d.base = event_base_new()) == NULL) {
		buf_puts(&err, "libevent: cannot create the main event base");
		ternd_die(&d, &err);
	}
	d.hooks.queued = ternd_queued;
	d.hooks.arg = &d;
	ternd_signals(&d);
	if (ternd_start_privileged(&d, &err) < 0 || ternd_privs_drop(&d, &err) < 0 ||
	    ternd_start_engine(&d, &err) < 0)
		ternd_die(&d, &err);
	d.started = time(NULL);
	ternd_started_log("daemon started", &d);
	ternd_detach(&d);
	event_base_dispatch(d.base);
	ternd_shutdown(&d);
	buf_free(&err);
	return 0;
}
