/* faultinject.c - LD_PRELOAD shim for the fault tests
 * (tests/integration/test_faults.py): makes fsync()/fdatasync() or
 * pwrite()/pwritev() fail on demand, while a flag file exists.
 *
 * Built as build/tests/faultinject.so (-fPIC -shared). Environment:
 *
 *   TERN_FAULT_FSYNC=PATH    while PATH exists, fsync() and fdatasync()
 *                            on a matching file fail with EIO
 *   TERN_FAULT_WRITE=PATH    while PATH exists, pwrite()/pwritev() on a
 *                            matching file fail with TERN_FAULT_WRITE_ERRNO
 *                            (a number; default EIO), before writing
 *   TERN_FAULT_MATCH=TEXT    a file matches when its path (readlink of
 *                            /proc/self/fd/N) contains TEXT, or ends
 *                            with TEXT minus a trailing '/'
 *                            (default "/seg/": the queue's segment files
 *                            and the seg/ directory itself); "*" = all
 *   TERN_FAULT_LOG=PATH      every injected failure appends one line
 *                            "CALL PATH errno" here (O_APPEND), so a test
 *                            can tell the shim fired
 *
 * The flag file is checked on every call, so a test switches faults on
 * and off while the program runs. The real calls are found with
 * dlsym(RTLD_NEXT). Under ASan the shim must come after libasan in
 * LD_PRELOAD (the test does that).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

typedef int (*sync_fn)(int);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);

static void *fi_next(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);

	if (p == NULL) {
		static const char msg[] = "faultinject: dlsym failed\n";
		(void)!write(2, msg, sizeof(msg) - 1);
		abort();
	}
	return p;
}

/* fi_match - does fd's path match TERN_FAULT_MATCH? */
static int fi_match(int fd, char *path, size_t size)
{
	const char *want = getenv("TERN_FAULT_MATCH");
	char link[64];
	ssize_t n;
	size_t wl;

	if (want == NULL || *want == 0)
		want = "/seg/";
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	if ((n = readlink(link, path, size - 1)) < 0)
		n = 0;
	path[n] = 0;
	if (strcmp(want, "*") == 0)
		return 1;
	if (strstr(path, want) != NULL)
		return 1;
	wl = strlen(want);
	if (wl > 1 && want[wl - 1] == '/' && (size_t)n >= wl - 1 &&
	    strncmp(path + n - (wl - 1), want, wl - 1) == 0)
		return 1; /* "/seg/" also matches the directory ".../seg" */
	return 0;
}

static void fi_log(const char *call, const char *path, int err)
{
	const char *log = getenv("TERN_FAULT_LOG");
	char line[4200];
	int fd, len;

	if (log == NULL || *log == 0)
		return;
	len = snprintf(line, sizeof(line), "%s %s %d\n", call, path, err);
	if (len < 0 || (size_t)len >= sizeof(line))
		len = (int)sizeof(line) - 1;
	if ((fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) >= 0) {
		(void)!write(fd, line, (size_t)len);
		close(fd);
	}
}

/* fi_fail - 0, or the errno to fail this call with */
static int fi_fail(const char *flagvar, int err, int fd, const char *call)
{
	const char *flag = getenv(flagvar);
	char path[4096];
	int saved = errno;

	if (flag == NULL || *flag == 0 || access(flag, F_OK) != 0 ||
	    !fi_match(fd, path, sizeof(path))) {
		errno = saved;
		return 0;
	}
	fi_log(call, path, err);
	return err;
}

static int fi_write_errno(void)
{
	const char *e = getenv("TERN_FAULT_WRITE_ERRNO");
	int n = e != NULL ? atoi(e) : 0;

	return n > 0 ? n : EIO;
}

int fsync(int fd)
{
	static sync_fn next;
	int err;

	if (next == NULL)
		next = (sync_fn)fi_next("fsync");
	if ((err = fi_fail("TERN_FAULT_FSYNC", EIO, fd, "fsync")) != 0)
		return errno = err, -1;
	return next(fd);
}

int fdatasync(int fd)
{
	static sync_fn next;
	int err;

	if (next == NULL)
		next = (sync_fn)fi_next("fdatasync");
	if ((err = fi_fail("TERN_FAULT_FSYNC", EIO, fd, "fdatasync")) != 0)
		return errno = err, -1;
	return next(fd);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	static pwrite_fn next;
	int err;

	if (next == NULL)
		next = (pwrite_fn)fi_next("pwrite");
	if ((err = fi_fail("TERN_FAULT_WRITE", fi_write_errno(), fd, "pwrite")) != 0)
		return errno = err, -1;
	return next(fd, buf, n, off);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	static pwritev_fn next;
	int err;

	if (next == NULL)
		next = (pwritev_fn)fi_next("pwritev");
	if ((err = fi_fail("TERN_FAULT_WRITE", fi_write_errno(), fd, "pwritev")) != 0)
		return errno = err, -1;
	return next(fd, iov, cnt, off);
}

/* The same calls under their large-file names (_FILE_OFFSET_BITS=64). */
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	return pwrite(fd, buf, n, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return pwritev(fd, iov, cnt, off);
}
