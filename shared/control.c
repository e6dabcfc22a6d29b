/* control.c - the client side of ternd's control socket (control.h).
 *
 * One connection per request: connect, write the attribute list, read
 * one reply list within the deadline. A missing socket or a refused
 * connection means "ternd is not running" (CONTROL_DOWN), not an error.
 */
#include "control.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int control_ms_left(const struct timespec *deadline)
{
	struct timespec now;
	long long ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (deadline->tv_sec - now.tv_sec) * 1000LL + (deadline->tv_nsec - now.tv_nsec) / 1000000;
	return ms < 0 ? 0 : ms > 86400000 ? 86400000 : (int)ms;
}

static int control_wait(int fd, short events, const struct timespec *deadline, struct buf *err)
{
	struct pollfd p = {fd, events, 0};
	int rc;

	do
		rc = poll(&p, 1, control_ms_left(deadline));
	while (rc < 0 && errno == EINTR);
	if (rc == 0)
		buf_puts(err, "timeout talking to ternd on the control socket");
	else if (rc < 0)
		buf_printf(err, "control socket: %s", strerror(errno));
	return rc > 0 ? 0 : -1;
}

static enum control_status control_connect(const char *path, int *fdp, struct buf *err)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		buf_printf(err, "control socket path too long: %s", path);
		return CONTROL_ERROR;
	}
	strcpy(sun.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
		buf_printf(err, "socket: %s", strerror(errno));
		return CONTROL_ERROR;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int e = errno;
		close(fd);
		if (e == ENOENT || e == ECONNREFUSED || e == ENOTDIR)
			return CONTROL_DOWN;
		buf_printf(err, "connect %s: %s", path, strerror(e));
		return CONTROL_ERROR;
	}
	*fdp = fd;
	return CONTROL_OK;
}

static int control_send(int fd, const struct buf *out, const struct timespec *deadline,
			struct buf *err)
{
	size_t off = 0;

	while (off < out->len) {
		ssize_t n;
		if (control_wait(fd, POLLOUT, deadline, err) < 0)
			return -1;
		n = send(fd, out->data + off, out->len - off, MSG_NOSIGNAL);
		if (n < 0 && errno != EINTR && errno != EAGAIN) {
			buf_printf(err, "control socket write: %s", strerror(errno));
			return -1;
		}
		if (n > 0)
			off += (size_t)n;
	}
	return 0;
}

static int control_recv(int fd, struct attr_decoder *d, const struct timespec *deadline,
			struct buf *err)
{
	char chunk[4096];

	for (;;) {
		ssize_t n;
		size_t used;
		if (control_wait(fd, POLLIN, deadline, err) < 0)
			return -1;
		n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			buf_puts(err, n == 0 ? "ternd closed the control connection without a reply"
					     : "control socket read error");
			return -1;
		}
		switch (attr_decoder_feed(d, chunk, (size_t)n, &used)) {
		case ATTR_DECODE_DONE:
			return 0;
		case ATTR_DECODE_ERROR:
			buf_printf(err, "bad reply from ternd: %s", buf_str(&d->err));
			return -1;
		case ATTR_DECODE_MORE:
			break;
		}
	}
}

enum control_status control_request(const char *path, const struct attr_list *req,
				    struct attr_list *reply, int timeout, struct buf *err)
{
	struct attr_decoder d;
	struct buf out = BUF_INIT;
	struct timespec deadline;
	enum control_status st;
	int fd = -1;

	attr_list_reset(reply);
	if ((st = control_connect(path, &fd, err)) != CONTROL_OK)
		return st;
	attr_decoder_init(&d, 0, 0);
	buf_init(&out);
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout > 0 ? timeout : 1;
	st = CONTROL_ERROR;
	if (attr_print_list(&out, req, err) < 0 || control_send(fd, &out, &deadline, err) < 0 ||
	    control_recv(fd, &d, &deadline, err) < 0)
		goto done;
	for (size_t i = 0; i < d.list.n; i++)
		attr_list_set(reply, d.list.v[i].name, d.list.v[i].value);
	st = CONTROL_OK;
done:
	close(fd);
	attr_decoder_free(&d);
	buf_free(&out);
	return st;
}
