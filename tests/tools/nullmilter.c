/* nullmilter.c - a milter that accepts everything, for make bench's
 * milter phase: one thread, epoll, as cheap per connection as a milter
 * can be, so the bench measures the MTA's milter client and not the
 * filter.
 *
 *   nullmilter [-m nr|skip|reply] PORT
 *
 * listens on 127.0.0.1:PORT and answers the milter protocol (version 6):
 *   nr     (default) every event is sent by the MTA, none is answered:
 *          the SMFIP_NR_* flags for everything the MTA offers; EOM gets
 *          CONTINUE;
 *   skip   the MTA is asked not to send the events at all (SMFIP_NO*),
 *          only OPTNEG, macros, EOM and QUIT remain;
 *   reply  no flags: every event gets CONTINUE, as a version-2 milter's.
 * Prints "ready" on stdout once listening; on SIGTERM/SIGINT prints
 * "connections=N messages=N" (N = EOMs answered) and exits.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define NO_EVENTS 0x0000037fu /* NOCONNECT..NOEOH, NOUNKNOWN, NODATA (not NR_HDR) */
#define NR_EVENTS 0x000ff080u /* NR_HDR, NR_CONN..NR_BODY */
#define MAX_PACKET (1u << 20)

enum mode { MODE_NR, MODE_SKIP, MODE_REPLY };

struct conn {
	int fd;
	uint32_t pflags; /* negotiated protocol flags */
	size_t len, cap;
	unsigned char *buf;
};

static volatile sig_atomic_t stop;
static unsigned long long n_conn, n_msg;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int send_all(int fd, const unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1; /* a milter reply fits the socket buffer; else give up */
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int reply(struct conn *c, char cmd, const unsigned char *data, uint32_t dlen)
{
	unsigned char out[64];
	uint32_t len = htonl(dlen + 1);
	memcpy(out, &len, 4);
	out[4] = (unsigned char)cmd;
	memcpy(out + 5, data, dlen);
	return send_all(c->fd, out, 5 + dlen);
}

/* Does event `cmd` need an answer under the negotiated flags? */
static int wants_reply(const struct conn *c, unsigned char cmd)
{
	switch (cmd) {
	case 'C': return !(c->pflags & 0x00001000u);
	case 'H': return !(c->pflags & 0x00002000u);
	case 'M': return !(c->pflags & 0x00004000u);
	case 'R': return !(c->pflags & 0x00008000u);
	case 'T': return !(c->pflags & 0x00010000u);
	case 'U': return !(c->pflags & 0x00020000u);
	case 'N': return !(c->pflags & 0x00040000u);
	case 'B': return !(c->pflags & 0x00080000u);
	case 'L': return !(c->pflags & 0x00000080u);
	case 'E': return 1;
	default: return 0; /* D (macros), A (abort), K, Q */
	}
}

/* One packet; -1 ends the connection. */
static int packet(struct conn *c, enum mode mode, unsigned char cmd, const unsigned char *p, uint32_t n)
{
	if (cmd == 'O') {
		uint32_t v[3];
		if (n < 12)
			return -1;
		memcpy(v, p, 12);
		uint32_t offered = ntohl(v[2]), want = 0;
		if (mode == MODE_NR)
			want = offered & NR_EVENTS;
		else if (mode == MODE_SKIP)
			want = offered & NO_EVENTS;
		c->pflags = want;
		v[0] = htonl(6);
		v[1] = htonl(0); /* no edits */
		v[2] = htonl(want);
		return reply(c, 'O', (const unsigned char *)v, 12);
	}
	if (cmd == 'Q')
		return -1;
	if (cmd == 'E')
		n_msg++;
	if (wants_reply(c, cmd))
		return reply(c, 'c', NULL, 0);
	return 0;
}

static int conn_read(struct conn *c, enum mode mode)
{
	for (;;) {
		if (c->cap - c->len < 65536) {
			size_t cap = c->cap ? c->cap * 2 : 131072;
			unsigned char *b = realloc(c->buf, cap);
			if (!b)
				return -1;
			c->buf = b;
			c->cap = cap;
		}
		ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			break;
		if (r <= 0)
			return -1;
		c->len += (size_t)r;
		if ((size_t)r < 65536)
			break; /* drained, most likely */
	}
	size_t off = 0;
	while (c->len - off >= 5) {
		uint32_t len;
		memcpy(&len, c->buf + off, 4);
		len = ntohl(len);
		if (len == 0 || len > MAX_PACKET)
			return -1;
		if (c->len - off < 4 + (size_t)len)
			break;
		if (packet(c, mode, c->buf[off + 4], c->buf + off + 5, len - 1) < 0)
			return -1;
		off += 4 + (size_t)len;
	}
	memmove(c->buf, c->buf + off, c->len - off);
	c->len -= off;
	return 0;
}

int main(int argc, char **argv)
{
	enum mode mode = MODE_NR;
	int opt;
	while ((opt = getopt(argc, argv, "m:")) != -1) {
		if (opt == 'm' && strcmp(optarg, "nr") == 0)
			mode = MODE_NR;
		else if (opt == 'm' && strcmp(optarg, "skip") == 0)
			mode = MODE_SKIP;
		else if (opt == 'm' && strcmp(optarg, "reply") == 0)
			mode = MODE_REPLY;
		else {
			fprintf(stderr, "usage: nullmilter [-m nr|skip|reply] PORT\n");
			return 2;
		}
	}
	if (optind + 1 != argc) {
		fprintf(stderr, "usage: nullmilter [-m nr|skip|reply] PORT\n");
		return 2;
	}
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[optind]))};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(lfd, 1024) < 0) {
		fprintf(stderr, "nullmilter: listen on 127.0.0.1:%s: %s\n", argv[optind], strerror(errno));
		return 1;
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	printf("ready\n");
	fflush(stdout);

	struct epoll_event evs[256];
	while (!stop) {
		int n = epoll_wait(ep, evs, 256, 500);
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (!c) {
				int fd;
				while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
					struct conn *nc = calloc(1, sizeof *nc);
					if (!nc) {
						close(fd);
						continue;
					}
					nc->fd = fd;
					struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
					epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
					n_conn++;
				}
				continue;
			}
			if (conn_read(c, mode) < 0) {
				close(c->fd); /* also leaves the epoll set */
				free(c->buf);
				free(c);
			}
		}
	}
	printf("connections=%llu messages=%llu\n", n_conn, n_msg);
	return 0;
}
