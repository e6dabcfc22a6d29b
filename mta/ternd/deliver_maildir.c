/* deliver_maildir.c - the one maildir writer (local and virtual use it).
 * Maildir protocol: write tmp/NAME, fsync it, link it to new/NAME, fsync
 * new/ so the entry is durable, then remove tmp/NAME; readers only look
 * at new/ and cur/, so a partial file is never visible. NAME is
 * "SECONDS.MUSECPpidQcount.host", unique per host, process and delivery.
 * Pitfall: errors are temporary (retry) except a full mailbox (EDQUOT/
 * EFBIG), which bounces as Postfix's 5.2.2.
 */
#include "deliver.h"
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

static atomic_ulong maildir_counter;

/* maildir_mkdirs - DIR and its tmp/new/cur, created as Postfix does
 * when missing (with parents for DIR itself). */
static int maildir_mkdirs(const char *dir, struct buf *err)
{
	static const char *const sub[] = {"", "/tmp", "/new", "/cur"};
	struct buf p = BUF_INIT;
	int rc = 0;

	for (size_t i = 0; i < 4 && rc == 0; i++) {
		buf_reset(&p);
		buf_printf(&p, "%s%s", dir, sub[i]);
		for (char *s = p.data + 1; i == 0 && (s = strchr(s, '/')) != NULL; s++) {
			*s = 0;
			if (mkdir(p.data, 0700) < 0 && errno != EEXIST)
				break;
			*s = '/';
		}
		if (mkdir(buf_str(&p), 0700) < 0 && errno != EEXIST) {
			buf_printf(err, "create maildir directory %s: %s", buf_str(&p),
				   strerror(errno));
			rc = -1;
		}
	}
	buf_free(&p);
	return rc;
}

static void maildir_name(struct buf *name)
{
	struct timeval tv;
	char host[256];

	gettimeofday(&tv, NULL);
	if (gethostname(host, sizeof(host)) < 0)
		strcpy(host, "localhost");
	host[sizeof(host) - 1] = 0;
	/* '/' and ':' cannot appear in a maildir name (Maildir spec). */
	for (char *s = host; *s; s++)
		if (*s == '/' || *s == ':')
			*s = '_';
	buf_printf(name, "%lld.M%ldP%ldQ%lu.%s", (long long)tv.tv_sec, (long)tv.tv_usec,
		   (long)getpid(), (unsigned long)atomic_fetch_add(&maildir_counter, 1) + 1, host);
}

/* maildir_temp_errno - a full mailbox is permanent, the rest may pass. */
static int maildir_temp_errno(int e)
{
	return !(e == EDQUOT || e == EFBIG);
}

int deliver_maildir_write(const char *dir, const char *headers, const char *content, size_t len,
			  struct buf *err, int *temp)
{
	struct buf name = BUF_INIT, tmp = BUF_INIT, new = BUF_INIT, base = BUF_INIT;
	int fd = -1, rc = -1;

	/* "Maildir/" names the directory; drop the slash for joining. */
	buf_set(&base, dir);
	while (base.len > 1 && base.data[base.len - 1] == '/')
		buf_truncate(&base, base.len - 1);
	dir = buf_str(&base);
	*temp = 1;
	if (maildir_mkdirs(dir, err) < 0)
		goto out;
	maildir_name(&name);
	buf_printf(&tmp, "%s/tmp/%s", dir, buf_str(&name));
	buf_printf(&new, "%s/new/%s", dir, buf_str(&name));
	if ((fd = open(buf_str(&tmp), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
		buf_printf(err, "create maildir file %s: %s", buf_str(&tmp), strerror(errno));
		goto out;
	}
	if (fileio_write_all(fd, headers, strlen(headers)) < 0 ||
	    fileio_write_all(fd, content, len) < 0 || fsync(fd) < 0) {
		*temp = maildir_temp_errno(errno);
		buf_printf(err, "write maildir file %s: %s", buf_str(&tmp), strerror(errno));
		goto unlink_tmp;
	}
	if (close(fd) < 0) {
		fd = -1;
		buf_printf(err, "close maildir file %s: %s", buf_str(&tmp), strerror(errno));
		goto unlink_tmp;
	}
	fd = -1;
	/* link, not rename: never replace an existing new/ entry. */
	if (link(buf_str(&tmp), buf_str(&new)) < 0) {
		buf_printf(err, "create maildir file %s: %s", buf_str(&new), strerror(errno));
		goto unlink_tmp;
	}
	buf_truncate(&new, strlen(dir) + 4);
	if (fileio_sync_dir(buf_str(&new)) < 0) {
		buf_printf(err, "fsync maildir directory %s: %s", buf_str(&new), strerror(errno));
		goto unlink_tmp;
	}
	rc = 0;
unlink_tmp:
	if (fd >= 0)
		close(fd);
	(void)unlink(buf_str(&tmp));
out:
	buf_free(&name);
	buf_free(&tmp);
	buf_free(&new);
	buf_free(&base);
	return rc;
}
