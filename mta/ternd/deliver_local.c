/* deliver_local.c - the local transport, as Postfix's local(8): alias
 * expansion (aliases(5): addresses, ":include:/file", "|command",
 * "/file/name"), then system users (getpwnam) into home_mailbox (a
 * maildir when it ends in "/") or an mbox under mail_spool_directory.
 * Safety as Postfix: commands and files only from alias tables owned by
 * root or mail_owner (never from :include: files unless allowed), run as
 * default_privs (root-owned source) or mail_owner; expansion depth is
 * bounded and an alias already expanded on the way delivers to the
 * mailbox instead of looping. Commands run with fork+exec only
 * (async-signal-safe after fork in a threaded process). Duplicates
 * within one queue recipient's expansion are delivered once, as
 * local(8)'s duplicate filter does (see "duplicate elimination").
 */
#define _GNU_SOURCE /* pipe2, memfd_create */
#include "deliver.h"
#include "fileio.h"
#include "hash.h"
#include "pwent.h"

#include "addr.h"
#include "attr.h"
#include "casefold.h"
#include "lines.h"
#include "log.h"
#include "queue.h"
#include "route.h"
#include "table.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LOCAL_CMD_TIMEOUT 1000	    /* command_time_limit default, seconds */
#define LOCAL_CMD_OUTPUT_MAX 2000   /* bytes of command output kept for a bounce */
#define LOCAL_INCLUDE_MAX (1 << 20) /* :include: files are config, bound them */
#define EX_TEMPFAIL_CODE 75	    /* sysexits.h EX_TEMPFAIL: defer */

/* Who the |command and /file items of an expansion may run as. */
struct local_trust {
	int allowed; /* may this source name commands/files at all */
	uid_t uid;
	gid_t gid;
	const char *source; /* "alias" or "include", for the refusal text */
};

static void local_expand_value(struct deliver_rcpt *r, const char *value,
			       const struct local_trust *tr, int include_depth);

/* --- duplicate elimination -------------------------------------------
 * Postfix's local(8) gives each queue recipient a duplicate filter
 * (local.c: been_here_init(duplicate_filter_limit, BH_FLAG_FOLD) per
 * recipient) and asks it before every destination of the expansion: an
 * address ("recipient LEVEL addr", "indirect addr" once it leaves
 * local), a mailbox ("mailbox localpart"), a /file ("file UID path"),
 * a |command ("command USER:UID cmd"), an :include: file ("include UID
 * path"). A repeat is skipped without a log line: the mail did reach
 * that destination, and the queue recipient's outcome is the first
 * visit's. Keys are case-folded whole, paths included, as Postfix's.
 *
 * The filter is per queue recipient, not per message: two aliases that
 * share a member give that member two copies, each with its own
 * X-Original-To: (Postfix 3.7 does the same; local_destination_
 * recipient_limit = 1 makes every recipient its own delivery there).
 * A recipient repeated in the envelope is dropped when the message is
 * queued (queue_submit(), as cleanup's filter).
 *
 * The filter lives in the deliver_local() call for the queue recipient
 * (the root of the deliver_rcpt chain); the whole expansion runs inside
 * that call on one worker thread, which finds it through a per-thread
 * pointer. A chain with another root finds no filter and delivers: a
 * duplicate at worst, never a loss. */

struct local_dups {
	const struct deliver_rcpt *root; /* the queue recipient */
	char **slot;			 /* open addressing; NULL = free */
	size_t cap, used;		 /* cap: 0 or a power of two */
};

static __thread struct local_dups *local_dups_cur;

static size_t local_dups_hash(const char *s)
{
	return (size_t)hash_fnv1a_str(s);
}

/* local_dups_slot - where key is, or the free slot it would take. */
static size_t local_dups_slot(const struct local_dups *d, const char *key)
{
	size_t i = local_dups_hash(key) & (d->cap - 1);

	while (d->slot[i] != NULL && strcmp(d->slot[i], key) != 0)
		i = (i + 1) & (d->cap - 1);
	return i;
}

static void local_dups_grow(struct local_dups *d)
{
	struct local_dups n = {d->root, NULL, d->cap ? d->cap * 2 : 64, d->used};

	n.slot = xcalloc(n.cap, sizeof(*n.slot));
	for (size_t i = 0; i < d->cap; i++)
		if (d->slot[i] != NULL)
			n.slot[local_dups_slot(&n, d->slot[i])] = d->slot[i];
	free(d->slot);
	*d = n;
}

static void local_dups_free(struct local_dups *d)
{
	for (size_t i = 0; i < d->cap; i++)
		free(d->slot[i]);
	free(d->slot);
}

static const struct deliver_rcpt *local_root(const struct deliver_rcpt *r)
{
	while (r->parent != NULL)
		r = r->parent;
	return r;
}

/* local_dup - Postfix's been_here(): 1 if r's queue recipient has met
 * this destination already (skip it), else remember it and 0. */
static int local_dup(const struct deliver_rcpt *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int local_dup(const struct deliver_rcpt *r, const char *fmt, ...)
{
	struct local_dups *d = local_dups_cur;
	struct buf raw = BUF_INIT, key = BUF_INIT;
	va_list ap;
	int seen = 0;

	if (d == NULL || d->root != local_root(r))
		return 0;
	va_start(ap, fmt);
	buf_vprintf(&raw, fmt, ap);
	va_end(ap);
	casefold(&key, raw.data, raw.len);
	if (d->cap > 0 && d->slot[local_dups_slot(d, buf_str(&key))] != NULL) {
		seen = 1;
	} else if (r->msg->conf->dup_filter_limit <= 0 ||
		   d->used < (size_t)r->msg->conf->dup_filter_limit) {
		/* duplicate_filter_limit: later keys are not remembered, so a
		 * huge :include: list costs bounded memory */
		if ((d->used + 1) * 2 > d->cap)
			local_dups_grow(d);
		d->slot[local_dups_slot(d, buf_str(&key))] = buf_detach(&key);
		d->used++;
	}
	buf_free(&raw);
	buf_free(&key);
	return seen;
}

/* --- mbox ---------------------------------------------------------- */

/* local_mbox_build - "From sender date" line, headers, body with ">From "
 * quoting, and the empty line that ends an mbox message. */
static void local_mbox_build(struct buf *out, const char *sender, const char *headers,
			     const char *content, size_t len)
{
	time_t now = time(NULL);
	char date[64];
	struct tm tm;
	const char *p = content, *end = content + len;

	strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", localtime_r(&now, &tm));
	buf_printf(out, "From %s  %s\n%s", *sender ? sender : "MAILER-DAEMON", date, headers);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
		if (n >= 5 && memcmp(p, "From ", 5) == 0)
			buf_putc(out, '>');
		buf_append(out, p, n);
		p += n;
	}
	if (len > 0 && content[len - 1] != '\n')
		buf_putc(out, '\n');
	buf_putc(out, '\n');
}

/* local_dotlock - path.lock by O_EXCL, stale after 500s (Postfix's
 * stale_lock_time); EACCES on the spool directory is not fatal (fcntl
 * still serialises us with other fcntl users). 0, or an errno. */
static int local_dotlock(const char *lock)
{
	struct stat st;
	int fd;

	for (int i = 0; i < 60; i++) {
		if ((fd = open(lock, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) >= 0) {
			close(fd);
			return 0;
		}
		if (errno == EACCES || errno == EPERM || errno == EROFS)
			return EACCES;
		if (errno != EEXIST)
			return errno;
		if (stat(lock, &st) == 0 && time(NULL) - st.st_mtime > 500)
			(void)unlink(lock);
		else
			sleep(1);
	}
	return EAGAIN;
}

/* local_mbox_append - syscalls only (also used in a forked child):
 * lock, append, fsync, truncate back on failure. Returns 0 or errno;
 * *stage names the failing step for the message. */
static int local_mbox_append(const char *path, const char *lock, const char *blob, size_t n,
			     int *stage)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	int fd, e = 0, locked;
	off_t size;

	*stage = 0;
	if ((fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0)
		return errno;
	*stage = 1;
	locked = local_dotlock(lock);
	if (locked != 0 && locked != EACCES) {
		e = locked;
		goto out;
	}
	/* Never wait forever: a user holding a lock on their own mailbox
	 * must not stall every delivery (Postfix: deliver_lock_attempts=20,
	 * deliver_lock_delay=1s, then a temporary failure). */
	for (int attempt = 0;; attempt++) {
		if (fcntl(fd, F_SETLK, &fl) == 0)
			break;
		if ((errno != EAGAIN && errno != EACCES && errno != EINTR) || attempt >= 19) {
			e = errno == EACCES ? EAGAIN : errno;
			goto unlock;
		}
		sleep(1);
	}
	*stage = 2;
	size = lseek(fd, 0, SEEK_END);
	while (n > 0 && e == 0) {
		ssize_t w = write(fd, blob, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			e = w < 0 ? errno : EIO;
		else {
			blob += w;
			n -= (size_t)w;
		}
	}
	if (e == 0 && fsync(fd) < 0)
		e = errno;
	if (e != 0 && size >= 0)
		if (ftruncate(fd, size) < 0) /* never leave half a message */
			e = e ? e : errno;
unlock:
	if (locked == 0)
		(void)unlink(lock);
out:
	close(fd);
	return e;
}

static const char *local_mbox_stage(int stage)
{
	static const char *const s[] = {"cannot open file", "cannot lock file",
					"cannot append message to file"};
	return s[stage];
}

int deliver_mbox_write(const char *path, const char *sender, const char *headers,
		       const char *content, size_t len, struct buf *err, int *temp)
{
	struct buf blob = BUF_INIT, lock = BUF_INIT;
	int stage, e;

	local_mbox_build(&blob, sender, headers, content, len);
	buf_printf(&lock, "%s.lock", path);
	e = local_mbox_append(path, buf_str(&lock), blob.data, blob.len, &stage);
	if (e != 0) {
		buf_printf(err, "%s %s: %s", local_mbox_stage(stage), path, strerror(e));
		*temp = !(e == EDQUOT || e == EFBIG);
	}
	buf_free(&blob);
	buf_free(&lock);
	return e ? -1 : 0;
}

/* --- child processes (commands, files as another user) ------------- */

/* local_become - in a forked child: drop to uid/gid if we are root. */
static int local_become(uid_t uid, gid_t gid)
{
	if (geteuid() != 0)
		return 0;
	if (setgroups(1, &gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
		return -1;
	return 0;
}

/* local_wait - wait for pid, killing it at the deadline. */
static int local_wait(pid_t pid, time_t deadline, int *timed_out)
{
	int status = 0;

	*timed_out = 0;
	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (time(NULL) > deadline) {
			*timed_out = 1;
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			break;
		}
		usleep(10000);
	}
	return status;
}

/* local_file_child - append to a file as tr->uid in a child process. */
static int local_file_as(const char *path, const char *blob, size_t n, const struct local_trust *tr,
			 int *stage)
{
	char lock[4200];
	int pfd[2], res[2] = {0, EIO}, to;
	pid_t pid;

	if ((size_t)snprintf(lock, sizeof(lock), "%s.lock", path) >= sizeof(lock))
		return ENAMETOOLONG;
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return errno;
	if ((pid = fork()) < 0) {
		res[1] = errno;
	} else if (pid == 0) {
		close(pfd[0]);
		if (local_become(tr->uid, tr->gid) < 0) {
			res[1] = EPERM;
		} else {
			res[1] = local_mbox_append(path, lock, blob, n, &res[0]);
		}
		if (write(pfd[1], res, sizeof(res)) < 0)
			_exit(1);
		_exit(0);
	} else {
		close(pfd[1]);
		pfd[1] = -1;
		if (read(pfd[0], res, sizeof(res)) != sizeof(res))
			res[1] = EIO;
		local_wait(pid, time(NULL) + LOCAL_CMD_TIMEOUT, &to);
	}
	close(pfd[0]);
	if (pfd[1] >= 0)
		close(pfd[1]);
	*stage = res[0];
	return res[1];
}

/* local_cmd_io - feed the message to the command's stdin while keeping
 * (a bounded part of) its output, until both are done or the deadline. */
static void local_cmd_io(int in, int out, const char *blob, size_t n, struct buf *output,
			 time_t deadline)
{
	char tmp[4096];

	while ((in >= 0 || out >= 0) && time(NULL) <= deadline) {
		struct pollfd p[2] = {{in, POLLOUT, 0}, {out, POLLIN, 0}};
		if (poll(p, 2, 1000) < 0 && errno != EINTR)
			break;
		if (in >= 0 && (p[0].revents & (POLLOUT | POLLERR | POLLHUP))) {
			ssize_t w = n ? write(in, blob, n > 65536 ? 65536 : n) : 0;
			if (w > 0) {
				blob += w;
				n -= (size_t)w;
			}
			if (n == 0 || (w < 0 && errno != EINTR && errno != EAGAIN)) {
				close(in);
				in = -1;
			}
		}
		if (out >= 0 && (p[1].revents & (POLLIN | POLLERR | POLLHUP))) {
			ssize_t rd = read(out, tmp, sizeof(tmp));
			if (rd > 0 && output->len < LOCAL_CMD_OUTPUT_MAX)
				buf_append(output, tmp, (size_t)rd);
			if (rd == 0 || (rd < 0 && errno != EINTR && errno != EAGAIN)) {
				close(out);
				out = -1;
			}
		}
	}
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
}

/* local_cmd_env - Postfix local(8)'s command environment. */
static char **local_cmd_env(const struct deliver_rcpt *r, const struct local_trust *tr)
{
	const char *at = strrchr(r->addr, '@');
	struct pwent pe;
	const struct passwd *pw = pwent_by_uid(tr->uid, &pe) > 0 ? &pe.pw : NULL;
	struct buf b = BUF_INIT;
	char **env = xcalloc(9, sizeof(*env));
	size_t i = 0;

#define ENVSET(...)                                                                                \
	do {                                                                                       \
		buf_reset(&b);                                                                     \
		buf_printf(&b, __VA_ARGS__);                                                       \
		env[i++] = xstrdup(buf_str(&b));                                                   \
	} while (0)
	ENVSET("PATH=/usr/bin:/bin");
	ENVSET("SHELL=/bin/sh");
	ENVSET("HOME=%s", pw ? pw->pw_dir : "/");
	ENVSET("LOGNAME=%s", pw ? pw->pw_name : "nobody");
	ENVSET("USER=%s", pw ? pw->pw_name : "nobody");
	ENVSET("SENDER=%s", r->msg->env->sender);
	ENVSET("RECIPIENT=%s", r->addr);
	ENVSET("DOMAIN=%s", at ? at + 1 : "");
#undef ENVSET
	buf_free(&b);
	if (pw != NULL)
		pwent_free(&pe);
	return env;
}

static void local_cmd_report(struct deliver_rcpt *r, const char *cmd, int status, int to,
			     struct buf *output)
{
	buf_trim(output);
	for (size_t i = 0; i < output->len; i++)
		if (output->data[i] == '\n' || output->data[i] == '\r')
			output->data[i] = ' ';
	if (to)
		deliver_report(r, "local", "4.3.0", "Command time limit exceeded: \"%s\"", cmd);
	else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		deliver_report(r, "local", "2.0.0", "delivered to command: %s", cmd);
	else if (WIFEXITED(status))
		deliver_report(r, "local",
			       WEXITSTATUS(status) == EX_TEMPFAIL_CODE ? "4.3.0" : "5.3.0",
			       "Command died with status %d: \"%s\"%s%s", WEXITSTATUS(status), cmd,
			       output->len ? ". Command output: " : "", buf_str(output));
	else
		deliver_report(r, "local", "4.3.0", "Command died with signal %d: \"%s\"",
			       WTERMSIG(status), cmd);
}

static void local_deliver_command(struct deliver_rcpt *r, const char *cmd,
				  const struct local_trust *tr)
{
	struct buf hdr = BUF_INIT, blob = BUF_INIT, output = BUF_INIT;
	int in[2] = {-1, -1}, out[2] = {-1, -1}, status = 0, to = 0;
	char **env = local_cmd_env(r, tr);
	pid_t pid;

	deliver_headers(r, &hdr);
	buf_printf(&blob, "%s", buf_str(&hdr));
	buf_append(&blob, r->msg->content, r->msg->len);
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || (pid = fork()) < 0) {
		deliver_report(r, "local", "4.3.0", "cannot run command \"%s\": %s", cmd,
			       strerror(errno));
		goto out;
	}
	if (pid == 0) {
		if (local_become(tr->uid, tr->gid) < 0 || dup2(in[0], 0) < 0 ||
		    dup2(out[1], 1) < 0 || dup2(out[1], 2) < 0 || chdir("/") < 0)
			_exit(EX_TEMPFAIL_CODE);
		execle("/bin/sh", "sh", "-c", cmd, (char *)NULL, env);
		_exit(EX_TEMPFAIL_CODE);
	}
	close(in[0]);
	close(out[1]);
	signal(SIGPIPE, SIG_IGN); /* a command that stops reading must not kill ternd */
	local_cmd_io(in[1], out[0], blob.data, blob.len, &output, time(NULL) + LOCAL_CMD_TIMEOUT);
	in[0] = in[1] = out[0] = out[1] = -1;
	status = local_wait(pid, time(NULL) + LOCAL_CMD_TIMEOUT, &to);
	local_cmd_report(r, cmd, status, to, &output);
out:
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (out[i] >= 0)
			close(out[i]);
	}
	for (size_t i = 0; env[i]; i++)
		free(env[i]);
	free(env);
	buf_free(&hdr);
	buf_free(&blob);
	buf_free(&output);
}

static void local_deliver_file(struct deliver_rcpt *r, const char *path,
			       const struct local_trust *tr)
{
	struct buf hdr = BUF_INIT, blob = BUF_INIT, err = BUF_INIT;
	size_t n = strlen(path);
	int stage = 0, e, temp = 1;

	deliver_headers(r, &hdr);
	if (path[n - 1] == '/') {
		/* A maildir: written in this process (we are the right user
		 * unless root, and root-owned aliases get default_privs). */
		if (geteuid() == 0 && tr->uid != 0) {
			deliver_report(r, "local", "4.3.0",
				       "maildir delivery failed: cannot write %s as another user",
				       path);
		} else if (deliver_maildir_write(path, buf_str(&hdr), r->msg->content, r->msg->len,
						 &err, &temp) == 0) {
			deliver_report(r, "local", "2.0.0", "delivered to maildir");
		} else {
			deliver_report(r, "local", temp ? "4.2.0" : "5.2.2",
				       "maildir delivery failed: %s", buf_str(&err));
		}
		goto out;
	}
	local_mbox_build(&blob, r->msg->env->sender, buf_str(&hdr), r->msg->content, r->msg->len);
	if ((e = local_file_as(path, blob.data, blob.len, tr, &stage)) == 0)
		deliver_report(r, "local", "2.0.0", "delivered to file: %s", path);
	else
		deliver_report(r, "local", e == EDQUOT || e == EFBIG ? "5.2.2" : "4.2.0",
			       "%s %s: %s", local_mbox_stage(stage > 2 ? 2 : stage), path,
			       strerror(e));
out:
	buf_free(&hdr);
	buf_free(&blob);
	buf_free(&err);
}

/* --- system users --------------------------------------------------- */

static void local_deliver_user(struct deliver_rcpt *r, const char *user)
{
	const struct deliver_conf *dc = r->msg->conf;
	struct buf hdr = BUF_INIT, path = BUF_INIT, err = BUF_INIT, what = BUF_INIT;
	struct pwent pe;
	const struct passwd *pw = NULL;
	size_t hm = strlen(dc->home_mailbox);
	int rc, temp = 1, found = pwent_by_name(user, &pe);

	if (found < 0) { /* a name-service failure is not "unknown user" */
		deliver_report(r, "local", "4.3.0", "user lookup for \"%s\" failed: %s", user,
			       strerror(errno));
		goto out;
	}
	if (found == 0) {
		deliver_report(r, "local", "5.1.1", "unknown user: \"%s\"", user);
		goto out;
	}
	pw = &pe.pw;
	deliver_headers(r, &hdr);
	if (deliver_helper_active()) {
		rc = deliver_helper_request(user, r->msg->env->sender, buf_str(&hdr),
					    r->msg->content, r->msg->len, &what, &err, &temp);
	} else if (hm > 0) {
		buf_printf(&path, "%s/%s", pw->pw_dir, dc->home_mailbox);
		buf_set(&what, dc->home_mailbox[hm - 1] == '/' ? "maildir" : "mailbox");
		rc = dc->home_mailbox[hm - 1] == '/'
			 ? deliver_maildir_write(buf_str(&path), buf_str(&hdr), r->msg->content,
						 r->msg->len, &err, &temp)
			 : deliver_mbox_write(buf_str(&path), r->msg->env->sender, buf_str(&hdr),
					      r->msg->content, r->msg->len, &err, &temp);
	} else {
		buf_printf(&path, "%s/%s", dc->spool_dir, pw->pw_name);
		buf_set(&what, "mailbox");
		rc = deliver_mbox_write(buf_str(&path), r->msg->env->sender, buf_str(&hdr),
					r->msg->content, r->msg->len, &err, &temp);
	}
	if (rc == 0)
		deliver_report(r, "local", "2.0.0", "delivered to %s", buf_str(&what));
	else
		deliver_report(r, "local", temp ? "4.2.0" : "5.2.2", "%s delivery failed: %s",
			       what.len ? buf_str(&what) : "mailbox", buf_str(&err));
out:
	if (pw != NULL)
		pwent_free(&pe);
	buf_free(&hdr);
	buf_free(&path);
	buf_free(&err);
	buf_free(&what);
}

/* --- aliases --------------------------------------------------------- */

/* local_alias_trust - aliases(5) safety: commands and files only from a
 * table owned by root (run as default_privs) or mail_owner (run as
 * mail_owner); inline tables come from tern.conf and count as root's. */
static void local_alias_trust(const struct deliver_conf *dc, const struct table *t,
			      struct local_trust *tr)
{
	struct stat st;
	uid_t owner = 0;

	if (t->path != NULL && stat(t->path, &st) == 0)
		owner = st.st_uid;
	else if (t->path != NULL)
		owner = (uid_t)-1;
	tr->source = "alias";
	tr->allowed = (owner == 0 || owner == dc->owner_uid);
	tr->uid = owner == 0 ? dc->privs_uid : dc->owner_uid;
	tr->gid = owner == 0 ? dc->privs_gid : dc->owner_gid;
	/* Unprivileged runs can only be themselves. */
	if (geteuid() != 0) {
		tr->uid = geteuid();
		tr->gid = getegid();
	}
}

/* local_alias_seen - was this alias name expanded higher up the chain?
 * ("joe: joe, other" delivers joe's mailbox instead of looping.) */
static int local_alias_seen(const struct deliver_rcpt *r, const char *name)
{
	for (; r != NULL; r = r->parent)
		if (r->alias != NULL && strcmp(r->alias, name) == 0)
			return 1;
	return 0;
}

/* local_child_dup - the duplicate filter for an address of an
 * expansion. One that stays with local is keyed with its nesting depth
 * (Postfix: "recipient LEVEL addr"), so "joe: joe, x" met again deeper
 * down is expanded again and ends in the mailbox filter; one that leaves
 * local (Postfix forwards it as new mail) is keyed at any depth. */
static int local_child_dup(const struct deliver_rcpt *c)
{
	struct route rt;
	struct buf err = BUF_INIT;
	int dup = 0;

	route_init(&rt);
	/* A lookup error is deliver_rcpt_run()'s to report (a deferral). */
	if (route_resolve(c->msg->conf->route, c->addr, &rt, &err) == 0)
		dup = strcmp(buf_str(&rt.transport), "local") == 0
			  ? local_dup(c, "recipient %d %s", c->depth, c->addr)
			  : local_dup(c, "indirect %s", c->addr);
	route_free(&rt);
	buf_free(&err);
	return dup;
}

/* local_child - deliver one expansion as a new address (re-routed). */
static void local_child(struct deliver_rcpt *r, const char *addr, const char *alias)
{
	struct deliver_rcpt c = {
	    .msg = r->msg, .orig = r->orig, .depth = r->depth + 1, .parent = r, .alias = alias};
	struct buf q = BUF_INIT;

	buf_init(&c.reason);
	buf_set(&q, addr);
	if (strchr(addr, '@') == NULL) /* unqualified: @$myorigin, as cleanup */
		buf_printf(&q, "@%s", r->msg->conf->myorigin);
	c.addr = buf_str(&q);
	if (local_child_dup(&c)) {
		/* met before through another item: its outcome stands */
	} else if (c.depth > DELIVER_MAX_DEPTH) {
		deliver_report(&c, "local", "5.4.6", "mail forwarding loop for %s", c.addr);
	} else {
		deliver_rcpt_run(&c);
	}
	r->nsent += c.nsent;
	r->nbounced += c.nbounced;
	r->ndeferred += c.ndeferred;
	if (r->reason.len == 0 && c.reason.len)
		buf_set(&r->reason, buf_str(&c.reason));
	buf_free(&c.reason);
	buf_free(&q);
}

/* local_include - ":include:/file": its lines are more alias values; its
 * commands/files are not allowed (allow_mail_to_* lacks "include"). */
static void local_include(struct deliver_rcpt *r, const char *path, int include_depth)
{
	struct local_trust tr = {0, 0, 0, "include"};
	struct lines lr;
	struct buf line = BUF_INIT, err = BUF_INIT;
	int rc;

	if (*path != '/') {
		deliver_report(r, "local", "5.3.5", ":include:%s: not an absolute path", path);
		return;
	}
	if (include_depth > 10 || lines_open(&lr, path, &err) < 0) {
		deliver_report(r, "local", include_depth > 10 ? "5.4.6" : "4.3.0",
			       "cannot open include file %s: %s", path,
			       include_depth > 10 ? "include nesting too deep" : buf_str(&err));
		goto out;
	}
	while ((rc = lines_next(&lr, &line, &err)) == 1)
		local_expand_value(r, buf_str(&line), &tr, include_depth + 1);
	if (rc < 0)
		deliver_report(r, "local", "4.3.0", "cannot read include file %s: %s", path,
			       buf_str(&err));
	lines_close(&lr);
out:
	buf_free(&line);
	buf_free(&err);
}

/* local_expand_item - one comma-separated alias value item. */
static void local_expand_item(struct deliver_rcpt *r, const char *item,
			      const struct local_trust *tr, int include_depth)
{
	/* Duplicates first, as Postfix: a refused item listed twice is
	 * refused once. A command is keyed with the alias it serves (the
	 * environment differs), a file and an include with the user. */
	if (strncasecmp(item, ":include:", 9) == 0) {
		if (!local_dup(r, "include %ld %s", (long)tr->uid, item + 9))
			local_include(r, item + 9, include_depth);
	} else if (item[0] == '|') {
		if (local_dup(r, "command %s:%ld %s", r->alias ? r->alias : "", (long)tr->uid,
			      item + 1))
			return;
		if (!tr->allowed || !r->msg->conf->cmd_alias)
			deliver_report(r, "local", "5.7.1", "mail to command is restricted");
		else
			local_deliver_command(r, item + 1, tr);
	} else if (item[0] == '/') {
		if (local_dup(r, "file %ld %s", (long)tr->uid, item))
			return;
		if (!tr->allowed || !r->msg->conf->file_alias)
			deliver_report(r, "local", "5.7.1", "mail to file is restricted");
		else
			local_deliver_file(r, item, tr);
	} else {
		local_child(r, item, r->alias);
	}
}

/* local_expand_value - split "a, b, \"|cmd x, y\"" at commas outside
 * double quotes; quotes are removed. */
static void local_expand_value(struct deliver_rcpt *r, const char *value,
			       const struct local_trust *tr, int include_depth)
{
	struct buf item = BUF_INIT;
	int quoted = 0;

	for (const char *p = value;; p++) {
		if (*p == '"') {
			quoted = !quoted;
			continue;
		}
		if (*p == 0 || (*p == ',' && !quoted)) {
			buf_trim(&item);
			if (item.len)
				local_expand_item(r, buf_str(&item), tr, include_depth);
			buf_reset(&item);
			if (*p == 0)
				break;
			continue;
		}
		buf_putc(&item, *p);
	}
	buf_free(&item);
}

/* local_alias_lookup - "user+ext" then "user" (aliases(5) keys are
 * local parts only). */
static int local_alias_lookup(struct deliver_rcpt *r, const char *local, const char *user,
			      struct buf *value, struct local_trust *tr, struct buf *err)
{
	const struct deliver_conf *dc = r->msg->conf;
	struct table *hit = NULL;
	int rc = deliver_maps_lookup(&dc->aliases, local, value, &hit, err);

	if (rc == TABLE_NOTFOUND && strcmp(local, user) != 0)
		rc = deliver_maps_lookup(&dc->aliases, user, value, &hit, err);
	if (rc == TABLE_FOUND)
		local_alias_trust(dc, hit, tr);
	return rc;
}

/* local_mailbox - a system user's mailbox, once per queue recipient
 * (Postfix: "mailbox localpart", the extension included, whether or not
 * the user exists). */
static void local_mailbox(struct deliver_rcpt *r, const char *local, const char *user)
{
	if (!local_dup(r, "mailbox %s", local))
		local_deliver_user(r, user);
}

/* local_resolve - aliases first, then the user's mailbox. */
static void local_resolve(struct deliver_rcpt *r)
{
	const char *at = strrchr(r->addr, '@');
	struct buf local = BUF_INIT, user = BUF_INIT, ext = BUF_INIT, value = BUF_INIT,
		   err = BUF_INIT;
	struct local_trust tr;
	int rc;

	buf_append(&local, r->addr, at ? (size_t)(at - r->addr) : strlen(r->addr));
	buf_lower(&local); /* local(8) folds the local part for aliases and users */
	if (!addr_split_ext(buf_str(&local), r->msg->conf->delims, &user, &ext))
		buf_set(&user, buf_str(&local));
	if (local_alias_seen(r, buf_str(&user))) {
		local_mailbox(r, buf_str(&local), buf_str(&user));
		goto out;
	}
	rc = local_alias_lookup(r, buf_str(&local), buf_str(&user), &value, &tr, &err);
	if (rc == TABLE_ERROR) {
		deliver_report(r, "local", "4.3.0", "alias database unavailable: %s",
			       buf_str(&err));
	} else if (rc == TABLE_FOUND) {
		struct deliver_rcpt *mut = r;
		const char *saved = r->alias;
		mut->alias = buf_str(&user);
		local_expand_value(r, buf_str(&value), &tr, 0);
		mut->alias = saved;
	} else {
		local_mailbox(r, buf_str(&local), buf_str(&user));
	}
out:
	buf_free(&local);
	buf_free(&user);
	buf_free(&ext);
	buf_free(&value);
	buf_free(&err);
}

void deliver_local(struct deliver_rcpt *r, const char *nexthop)
{
	struct local_dups dups = {r, NULL, 0, 0}, *saved = local_dups_cur;

	if (r->parent != NULL) { /* an expansion: its queue recipient's filter */
		local_resolve(r);
		return;
	}
	local_dups_cur = &dups; /* a queue recipient: a fresh filter */
	local_resolve(r);
	local_dups_cur = saved;
	local_dups_free(&dups);
}

/* --- the privileged helper --------------------------------------------
 * Forked by ternd as root before it drops privileges (and before it
 * starts threads). It serves one kind of request over a SEQPACKET
 * socketpair: "user=U, sender=S" plus a file descriptor holding the
 * headers and message; it picks the mailbox itself (home_mailbox or
 * mail_spool_directory, from the configuration it was started with) and
 * forks a child that becomes U to write it. Replies: status=0|4|5,
 * what=maildir|mailbox, text=reason. */

#define HELPER_MSG_MAX 8192

static int helper_fd = -1;
static pthread_mutex_t helper_lock = PTHREAD_MUTEX_INITIALIZER;

struct helper_conf {
	char *home_mailbox, *spool_dir;
};

int deliver_helper_active(void)
{
	return helper_fd >= 0;
}

/* helper_send - one datagram with an optional descriptor. */
static int helper_send(int sock, const struct buf *msg, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = {0};
	struct iovec iov = {msg->data, msg->len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

	if (fd >= 0) {
		struct cmsghdr *c;
		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	return sendmsg(sock, &mh, MSG_NOSIGNAL) == (ssize_t)msg->len ? 0 : -1;
}

/* helper_recv - one datagram decoded as an attribute list; *fd gets a
 * passed descriptor or -1. 0, or -1 (peer gone or malformed). */
static int helper_recv(int sock, struct attr_list *out, int *fd)
{
	char data[HELPER_MSG_MAX], cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {data, sizeof(data)};
	struct msghdr mh = {
	    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	struct attr_decoder d;
	size_t used = 0;
	ssize_t n;
	int rc = -1;

	if (fd != NULL)
		*fd = -1;
	while ((n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	if (n <= 0)
		return -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		int got;
		if (c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
			continue;
		memcpy(&got, CMSG_DATA(c), sizeof(int));
		if (fd != NULL && *fd < 0)
			*fd = got;
		else
			close(got);
	}
	attr_decoder_init(&d, 0, 16);
	if (attr_decoder_feed(&d, data, (size_t)n, &used) == ATTR_DECODE_DONE) {
		for (size_t i = 0; i < d.list.n; i++)
			attr_list_set(out, d.list.v[i].name, d.list.v[i].value);
		rc = 0;
	}
	attr_decoder_free(&d);
	return rc;
}

/* helper_read_fd - the whole message from the passed descriptor. */
static int helper_read_fd(int fd, struct buf *out)
{
	char tmp[65536];
	ssize_t n;

	if (lseek(fd, 0, SEEK_SET) < 0)
		return -1;
	while ((n = read(fd, tmp, sizeof(tmp))) > 0)
		buf_append(out, tmp, (size_t)n);
	return n < 0 ? -1 : 0;
}

/* helper_child - as the user: write the mailbox, report on the pipe. */
static void helper_child(const struct helper_conf *hc, const struct passwd *pw, const char *sender,
			 int msgfd, int out)
{
	struct buf msg = BUF_INIT, path = BUF_INIT, err = BUF_INIT, reply = BUF_INIT;
	size_t hm = strlen(hc->home_mailbox);
	int maildir = hm > 0 && hc->home_mailbox[hm - 1] == '/', temp = 1, rc = -1;

	if (hm > 0)
		buf_printf(&path, "%s/%s", pw->pw_dir, hc->home_mailbox);
	else
		buf_printf(&path, "%s/%s", hc->spool_dir, pw->pw_name);
	/* A spool mbox may live in a root-owned directory: create it for
	 * the user before becoming the user (never following a symlink). */
	if (hm == 0) {
		int fd = open(buf_str(&path), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
		if (fd >= 0) {
			if (fchown(fd, pw->pw_uid, pw->pw_gid) < 0)
				(void)unlink(buf_str(&path));
			close(fd);
		}
	}
	if (setgroups(1, &pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
		buf_printf(&err, "cannot become user %s: %s", pw->pw_name, strerror(errno));
	else if (helper_read_fd(msgfd, &msg) < 0)
		buf_printf(&err, "cannot read message: %s", strerror(errno));
	else if (maildir)
		rc = deliver_maildir_write(buf_str(&path), "", msg.data ? msg.data : "", msg.len,
					   &err, &temp);
	else
		rc = deliver_mbox_write(buf_str(&path), sender, "", msg.data ? msg.data : "",
					msg.len, &err, &temp);
	buf_printf(&reply, "%c%s", rc == 0 ? '0' : temp ? '4' : '5', buf_str(&err));
	if (write(out, reply.data, reply.len) < 0)
		_exit(1);
	_exit(0);
}

/* helper_deliver - fork the per-delivery child and collect its answer. */
static void helper_deliver(const struct helper_conf *hc, const struct attr_list *req, int msgfd,
			   struct attr_list *rep)
{
	struct passwd *pw = getpwnam(attr_get(req, "user"));
	size_t hm = strlen(hc->home_mailbox);
	char res[2048];
	int p[2], to;
	ssize_t n = 0;
	pid_t pid;

	attr_list_set(rep, "what",
		      hm > 0 && hc->home_mailbox[hm - 1] == '/' ? "maildir" : "mailbox");
	if (pw == NULL || msgfd < 0) {
		attr_list_set(rep, "status", "5");
		attr_list_set(rep, "text", pw == NULL ? "unknown user" : "no message");
		return;
	}
	if (pipe2(p, O_CLOEXEC) < 0 || (pid = fork()) < 0) {
		attr_list_set(rep, "status", "4");
		attr_list_set(rep, "text", strerror(errno));
		return;
	}
	if (pid == 0) {
		close(p[0]);
		helper_child(hc, pw, attr_get(req, "sender"), msgfd, p[1]);
	}
	close(p[1]);
	while ((n = read(p[0], res, sizeof(res) - 1)) < 0 && errno == EINTR)
		;
	close(p[0]);
	local_wait(pid, time(NULL) + LOCAL_CMD_TIMEOUT, &to);
	res[n > 0 ? n : 0] = 0;
	attr_list_set(rep, "status", n > 0 ? (char[]){res[0], 0} : "4");
	attr_list_set(rep, "text", n > 1 ? res + 1 : "delivery process failed");
}

/* helper_serve - the helper's loop; it ends when ternd goes away. */
static void helper_serve(int sock, const struct helper_conf *hc)
{
	struct attr_list req, rep;
	struct buf out = BUF_INIT, err = BUF_INIT;
	int fd;

	attr_list_init(&req);
	attr_list_init(&rep);
	while (helper_recv(sock, &req, &fd) == 0) {
		helper_deliver(hc, &req, fd, &rep);
		if (fd >= 0)
			close(fd);
		buf_reset(&out);
		if (attr_print_list(&out, &rep, &err) < 0 || helper_send(sock, &out, -1) < 0)
			break;
		attr_list_reset(&req);
		attr_list_reset(&rep);
	}
	attr_list_free(&req);
	attr_list_free(&rep);
	buf_free(&out);
	buf_free(&err);
	_exit(0);
}

/* helper_close_inherited - the root helper keeps nothing of ternd's but
 * its request socket and the log: no listeners, no queue files, and not
 * the terminal of "tern start" (whose caller waits for it to close). */
static void helper_close_inherited(int keep)
{
	int logfd = log_descriptor(), null = open("/dev/null", O_RDWR);
	long max = sysconf(_SC_OPEN_MAX);

	for (int fd = 0; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
		if (fd != keep && fd != logfd && fd != null)
			close(fd);
	for (int fd = 0; fd <= 2 && null >= 0; fd++)
		if (fd != logfd && fd != keep)
			dup2(null, fd);
	if (null > 2 && null != keep && null != logfd)
		close(null);
}

int deliver_helper_spawn(struct cfg *cfg, struct buf *err)
{
	struct helper_conf hc = {NULL, NULL};
	struct buf v = BUF_INIT;
	int sv[2];
	pid_t pid;

	if (geteuid() != 0)
		return 0;
	if (cfg_get_str(cfg, NULL, "home_mailbox", &v, err) < 0)
		return -1;
	buf_trim(&v);
	hc.home_mailbox = buf_detach(&v);
	if (cfg_get_path(cfg, NULL, "mail_spool_directory", &v, err) < 0) {
		free(hc.home_mailbox);
		return -1;
	}
	hc.spool_dir = buf_detach(&v);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0 || (pid = fork()) < 0) {
		buf_printf(err, "cannot start the delivery helper: %s", strerror(errno));
		free(hc.home_mailbox);
		free(hc.spool_dir);
		return -1;
	}
	if (pid == 0) {
		close(sv[0]);
		helper_close_inherited(sv[1]);
		helper_serve(sv[1], &hc);
	}
	close(sv[1]);
	helper_fd = sv[0];
	free(hc.home_mailbox);
	free(hc.spool_dir);
	return 0;
}

/* helper_memfd - the message as a descriptor to pass. */
static int helper_memfd(const char *headers, const char *content, size_t len)
{
	int fd = memfd_create("tern-delivery", MFD_CLOEXEC);

	if (fd < 0)
		return -1;
	if (fileio_write_all(fd, headers, strlen(headers)) < 0 ||
	    fileio_write_all(fd, content, len) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

int deliver_helper_request(const char *user, const char *sender, const char *headers,
			   const char *content, size_t len, struct buf *what, struct buf *err,
			   int *temp)
{
	struct buf req = BUF_INIT;
	struct attr_list rep;
	int fd = helper_memfd(headers, content, len), rc = -1;

	attr_list_init(&rep);
	*temp = 1;
	buf_set(what, "mailbox");
	if (fd < 0) {
		buf_printf(err, "cannot pass message to the delivery helper: %s", strerror(errno));
		goto out;
	}
	if (attr_print(&req, "user", user, err) < 0 || attr_print(&req, "sender", sender, err) < 0)
		goto out;
	buf_putc(&req, '\n');
	pthread_mutex_lock(&helper_lock);
	if (helper_send(helper_fd, &req, fd) < 0 || helper_recv(helper_fd, &rep, NULL) < 0)
		buf_printf(err, "delivery helper unavailable");
	else
		rc = strcmp(attr_get(&rep, "status"), "0") == 0 ? 0 : -1;
	pthread_mutex_unlock(&helper_lock);
	if (attr_has(&rep, "what"))
		buf_set(what, attr_get(&rep, "what"));
	if (rc < 0 && attr_has(&rep, "status")) {
		*temp = strcmp(attr_get(&rep, "status"), "5") != 0;
		buf_set(err, attr_get(&rep, "text"));
	}
out:
	if (fd >= 0)
		close(fd);
	attr_list_free(&rep);
	buf_free(&req);
	return rc;
}
