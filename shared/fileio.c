/* fileio.c - durable-file helpers (see fileio.h). */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int fileio_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) { /* no progress: treat as a full device, never spin */
			errno = ENOSPC;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int fileio_sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc, saved;

	if (fd < 0)
		return -1;
	rc = fsync(fd);
	saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

int fileio_sync_parent(const char *path)
{
	char *copy = xstrdup(path);
	int rc = fileio_sync_dir(dirname(copy)), saved = errno;

	free(copy);
	errno = saved;
	return rc;
}

int fileio_flag_set(const char *path, int on, struct buf *err)
{
	int fd;

	if (on) {
		fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (fd < 0 || fsync(fd) < 0) {
			buf_printf(err, "create %s: %s", path, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		close(fd);
	} else if (unlink(path) < 0 && errno != ENOENT) {
		buf_printf(err, "remove %s: %s", path, strerror(errno));
		return -1;
	}
	if (fileio_sync_parent(path) < 0) {
		buf_printf(err, "fsync the directory of %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}
