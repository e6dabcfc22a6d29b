/* sendmail_drop.c - write one maildrop file (docs/queue.md "Maildrop
 * files") so local submission works while ternd is down; the common end
 * of a command-line submission and of each message of a -bs session.
 *
 * Durability: the file is written under a dot-name pickup ignores,
 * fsync()ed, renamed to its final name and the directory synced; only
 * then does sendmail exit 0. Pitfall: maildrop is mode 1733, so an
 * ordinary user cannot open it to fsync it: syncfs() on the file stands in.
 */
#define _GNU_SOURCE /* syncfs() */
#include "addr.h"
#include "attr.h"
#include "fileio.h"
#include "sendmail.h"

#include "../ternd/pickup.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

int sm_drop_addr_ok(const char *s)
{
	struct addr a;
	struct buf err = BUF_INIT;
	int ok;

	addr_init(&a);
	ok = strpbrk(s, "\r\n") == NULL &&
	     addr_parse_mailbox(&a, s, ADDR_PARSE_SMTPUTF8, &err) == ADDR_OK;
	addr_free(&a);
	buf_free(&err);
	return ok;
}

/* "1700000000.123456.4242.<32 hex>": time-ordered (pickup takes files in
 * name order) and unguessable (other users must not open a message). */
static void sm_drop_name(struct buf *name)
{
	unsigned char rnd[16] = {0};
	struct timeval tv;

	gettimeofday(&tv, NULL);
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		rnd[0] ^= (unsigned char)tv.tv_usec;
	buf_printf(name, "%ld.%06ld.%ld.", (long)tv.tv_sec, (long)tv.tv_usec, (long)getpid());
	for (size_t i = 0; i < sizeof(rnd); i++)
		buf_printf(name, "%02x", rnd[i]);
}

static int sm_drop_header(struct buf *out, unsigned uid, const char *sender, const char *fullname,
			  const struct sm_list *rcpt, struct buf *err)
{
	char num[32];

	buf_puts(out, PICKUP_MAGIC "\n");
	snprintf(num, sizeof(num), "%u", uid);
	if (attr_print(out, "uid", num, err) < 0 || attr_print(out, "sender", sender, err) < 0)
		return -1;
	if (fullname && *fullname && attr_print(out, "fullname", fullname, err) < 0)
		return -1;
	for (size_t i = 0; i < rcpt->n; i++)
		if (attr_print(out, "rcpt", rcpt->v[i], err) < 0)
			return -1;
	buf_putc(out, '\n');
	return 0;
}

/* Make the rename durable: fsync the directory when we may open it,
 * else syncfs() the file system the file lives on. */
static int sm_drop_sync_dir(const char *dir, int file_fd)
{
	if (fileio_sync_dir(dir) == 0)
		return 0;
	return errno == EACCES ? syncfs(file_fd) : -1;
}

int sm_drop_write(const char *dir, unsigned uid, const char *sender, const char *fullname,
		  const struct sm_list *rcpt, const struct buf *content, struct buf *err)
{
	struct buf head = BUF_INIT, name = BUF_INIT, tmp = BUF_INIT, dst = BUF_INIT;
	int fd = -1, rc = -1;

	if (sm_drop_header(&head, uid, sender, fullname, rcpt, err) < 0)
		goto out;
	sm_drop_name(&name);
	buf_printf(&tmp, "%s/.%s", dir, name.data);
	buf_printf(&dst, "%s/%s", dir, name.data);
	fd = open(tmp.data, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		buf_printf(err, "create file %s: %s", tmp.data, strerror(errno));
		goto out;
	}
	/* pickup runs as mail_owner and must read a file another user owns. */
	if (fchmod(fd, 0644) < 0 || fileio_write_all(fd, head.data, head.len) < 0 ||
	    fileio_write_all(fd, content->data ? content->data : "", content->len) < 0 ||
	    fsync(fd) < 0) {
		buf_printf(err, "write file %s: %s", tmp.data, strerror(errno));
		goto fail;
	}
	if (rename(tmp.data, dst.data) < 0) {
		buf_printf(err, "rename %s to %s: %s", tmp.data, dst.data, strerror(errno));
		goto fail;
	}
	if (sm_drop_sync_dir(dir, fd) < 0) {
		/* Renamed but maybe not durable: pickup may still take it, so
		 * keep the file; the caller's tempfail makes the user retry
		 * (a duplicate at worst, never a loss). */
		buf_printf(err, "sync directory %s: %s", dir, strerror(errno));
		goto out;
	}
	rc = 0;
	goto out;
fail:
	unlink(tmp.data);
out:
	if (fd >= 0)
		close(fd);
	buf_free(&head);
	buf_free(&name);
	buf_free(&tmp);
	buf_free(&dst);
	return rc;
}

/* Create dir with mode, handing it to owner when we are root. */
static int sm_mkdir_owned(const char *dir, mode_t mode, const char *owner, struct buf *err)
{
	struct passwd *pw;

	if (mkdir(dir, mode) < 0 && errno != EEXIST) {
		buf_printf(err, "create directory %s: %s", dir, strerror(errno));
		return -1;
	}
	if (chmod(dir, mode) < 0) { /* umask */
		buf_printf(err, "chmod %s: %s", dir, strerror(errno));
		return -1;
	}
	if (geteuid() == 0 && owner && (pw = getpwnam(owner)) != NULL &&
	    chown(dir, pw->pw_uid, pw->pw_gid) < 0) {
		buf_printf(err, "chown %s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

int sm_drop_dir_ensure(const char *dir, const char *owner, struct buf *err)
{
	struct buf parent = BUF_INIT;
	struct stat st;
	char *slash;
	int rc = -1;

	if (stat(dir, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return 0;
		buf_printf(err, "%s: not a directory", dir);
		return -1;
	}
	/* Not yet created by ternd/"tern check": make the queue directory and
	 * maildrop (1733: anyone may drop, nobody but the owner may list). */
	buf_set(&parent, dir);
	if ((slash = strrchr(parent.data, '/')) != NULL && slash != parent.data) {
		*slash = 0;
		if (stat(parent.data, &st) < 0 && sm_mkdir_owned(parent.data, 0755, owner, err) < 0)
			goto out;
	}
	rc = sm_mkdir_owned(dir, 01733, owner, err);
out:
	buf_free(&parent);
	return rc;
}

int sm_drop_message(const struct sm_env *e, const char *sender, const char *fullname,
		    const struct sm_list *rcpt, struct sm_msg *m, struct buf *err)
{
	struct buf from = BUF_INIT, content = BUF_INIT;
	int rc = -1;

	buf_puts(&from, sender);
	if (*sender && strchr(sender, '@') == NULL)
		buf_printf(&from, "@%s", e->origin.data);
	sm_msg_add_missing(m, e->hostname.data, buf_str(&from), fullname);
	sm_msg_format(m, &content);
	if (sm_drop_dir_ensure(e->queue_dir.data, e->owner.data, err) == 0 &&
	    sm_drop_write(e->queue_dir.data, (unsigned)getuid(), sender, fullname, rcpt, &content,
			  err) == 0)
		rc = 0;
	buf_free(&from);
	buf_free(&content);
	return rc;
}
