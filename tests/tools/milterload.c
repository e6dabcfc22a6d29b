/* milterload.c - load generator for milters (the MTA side of the milter
 * protocol, version 6), used by tests/bench/milter_dkim_bench.py.
 *
 * Usage: milterload [-c CONNS] [-t SECONDS] [-w SECONDS] [-a CLIENT_ADDR]
 *                   -f MESSAGE [-e HEADER [-m TEXT]] ENDPOINT
 * ENDPOINT is inet:host:port or unix:/path. MESSAGE is a message file
 * (header fields, an empty line, the body). Each connection is a thread
 * that negotiates as Postfix does (every action and step offered, then
 * what the milter took is honoured: SMFIP_NO* events are not sent, no
 * reply is awaited for SMFIP_NR_* ones), sends connect and HELO, then
 * messages back to back on the same session (MAIL after end of message
 * starts the next transaction, as for a second message in one SMTP
 * session). Each message has its own queue ID ({i} macro). Packets that
 * get no reply go out in one write with the next that does.
 *
 * A message counts only if the milter's end-of-message answer is
 * continue or accept and, with -e, among its modifications is an
 * add-header or insert-header of field HEADER (with -m: whose value
 * contains TEXT); anything else is a failure (the first is described on
 * stderr). Prints one JSON object: messages, seconds, rate, p50/p99/max
 * latency of a whole transaction in microseconds, failures.
 */
#include "buf.h"
#include "inet.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Protocol steps (SMFIP_*) and replies, milter-policy-ecosystem.md §1. */
#define P_NOCONNECT 0x1
#define P_NOHELO 0x2
#define P_NOMAIL 0x4
#define P_NORCPT 0x8
#define P_NOBODY 0x10
#define P_NOHDRS 0x20
#define P_NOEOH 0x40
#define P_NR_HDR 0x80
#define P_SKIP 0x400
#define P_NR_CONN 0x1000
#define P_NR_HELO 0x2000
#define P_NR_MAIL 0x4000
#define P_NR_RCPT 0x8000
#define P_NR_EOH 0x40000
#define P_NR_BODY 0x80000
#define P_HDR_LEADSPC 0x100000
#define P_ALL 0x1fffff
#define A_ALL 0x1ff
#define LOAD_PACKET_MAX (1024 * 1024)
#define LOAD_BODY_CHUNK 65535

struct load_hdr {
	char *name, *value; /* value as after the colon, folding as bare LF */
};

struct load_thread {
	pthread_t tid;
	int index;
	uint32_t *lat; /* microseconds */
	size_t nlat, cap;
	long failures;
};

static struct load_hdr *load_hdrs;
static size_t load_nhdrs;
static struct buf load_body; /* CRLF line ends */
static const char *load_endpoint, *load_addr = "127.0.0.1", *load_want_hdr, *load_want_text;
static double load_deadline, load_measure;
static unsigned long load_seq;
static pthread_mutex_t load_err_lock = PTHREAD_MUTEX_INITIALIZER;
static int load_err_told;

static double load_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The first failure is described; the rest are only counted. */
static void load_fail(struct load_thread *t, const char *what)
{
	t->failures++;
	pthread_mutex_lock(&load_err_lock);
	if (!load_err_told++)
		fprintf(stderr, "milterload: %s\n", what);
	pthread_mutex_unlock(&load_err_lock);
}

/* One milter session: the socket, what was negotiated, the pending
 * output and the input not yet parsed. */
struct load_conn {
	int fd;
	uint32_t proto;
	struct buf out, in;
	size_t in_off;
};

static void load_put(struct load_conn *c, char cmd, const char *data, size_t len)
{
	uint32_t n = htonl((uint32_t)len + 1);

	buf_append(&c->out, (const char *)&n, 4);
	buf_putc(&c->out, cmd);
	buf_append(&c->out, data, len);
}

/* A macro packet: stage, then name NUL value NUL pairs. */
static void load_macros(struct load_conn *c, char stage, const char *const *kv, size_t n)
{
	struct buf d = BUF_INIT;

	buf_init(&d);
	buf_putc(&d, stage);
	for (size_t i = 0; i < n; i++)
		buf_append(&d, kv[i], strlen(kv[i]) + 1);
	load_put(c, 'D', d.data, d.len);
	buf_free(&d);
}

static int load_flush(struct load_conn *c)
{
	size_t off = 0;

	while (off < c->out.len) {
		ssize_t n = write(c->fd, c->out.data + off, c->out.len - off);
		if (n <= 0)
			return -1;
		off += (size_t)n;
	}
	buf_reset(&c->out);
	return 0;
}

/* Flush, then read one reply packet: its command; *data and *len its body
 * (valid until the next call). -1: connection lost or bad packet. */
static int load_reply(struct load_conn *c, const char **data, size_t *len)
{
	char chunk[16384];
	uint32_t n;

	if (c->out.len && load_flush(c) < 0)
		return -1;
	for (;;) {
		size_t avail = c->in.len - c->in_off;
		if (avail >= 4) {
			memcpy(&n, c->in.data + c->in_off, 4);
			n = ntohl(n);
			if (n < 1 || n > LOAD_PACKET_MAX)
				return -1;
			if (avail >= 4 + (size_t)n) {
				int cmd = (unsigned char)c->in.data[c->in_off + 4];
				*data = c->in.data + c->in_off + 5;
				*len = n - 1;
				c->in_off += 4 + n;
				return cmd;
			}
		}
		if (c->in_off == c->in.len) {
			buf_reset(&c->in);
			c->in_off = 0;
		}
		ssize_t r = read(c->fd, chunk, sizeof(chunk));
		if (r <= 0)
			return -1;
		buf_append(&c->in, chunk, (size_t)r);
	}
}

/* Send an event unless the milter asked not to get it (no), and wait for
 * its reply unless it said it will not give one (nr). Returns the reply
 * command, 'c' when none is due, -1 on a lost connection. */
static int load_event(struct load_conn *c, char cmd, const char *data, size_t len, uint32_t no,
		      uint32_t nr)
{
	const char *d;
	size_t n;

	if (c->proto & no)
		return 'c';
	load_put(c, cmd, data, len);
	if (c->proto & nr)
		return 'c';
	return load_reply(c, &d, &n);
}

static int load_open(struct load_conn *c)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	struct buf why = BUF_INIT;
	uint32_t neg[3] = {htonl(6), htonl(A_ALL), htonl(P_ALL)};
	const char *d;
	size_t n;
	int one = 1;

	buf_init(&why);
	if (inet_endpoint_sockaddr(load_endpoint, &ss, &sl, &why) < 0) {
		fprintf(stderr, "milterload: %s: %s\n", load_endpoint, buf_str(&why));
		exit(2);
	}
	buf_free(&why);
	if ((c->fd = socket(ss.ss_family, SOCK_STREAM, 0)) < 0)
		return -1;
	if (connect(c->fd, (struct sockaddr *)&ss, sl) < 0)
		return -1;
	if (ss.ss_family != AF_UNIX)
		(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	load_put(c, 'O', (const char *)neg, sizeof(neg));
	if (load_reply(c, &d, &n) != 'O' || n < 12)
		return -1;
	memcpy(&c->proto, d + 8, 4);
	c->proto = ntohl(c->proto);
	return 0;
}

/* connect + HELO, with the macros a Postfix smtpd gives. */
static int load_hello(struct load_conn *c)
{
	const char *mc[] = {"j",       "mx.bench",	"{daemon_name}", "bench", "{client_addr}",
			    load_addr, "{client_name}", "client.bench"};
	struct buf d = BUF_INIT;
	int r;

	buf_init(&d);
	buf_append(&d, "client.bench", 13);
	buf_putc(&d, strchr(load_addr, ':') ? '6' : '4');
	buf_append(&d, "\x9c\x40", 2); /* port 40000 */
	buf_append(&d, load_addr, strlen(load_addr) + 1);
	load_macros(c, 'C', mc, 8);
	r = load_event(c, 'C', d.data, d.len, P_NOCONNECT, P_NR_CONN);
	if (r == 'c')
		r = load_event(c, 'H', "client.bench", 13, P_NOHELO, P_NR_HELO);
	buf_free(&d);
	return r == 'c' ? 0 : -1;
}

/* The end-of-message answer: modifications, then a final reply. 1 good,
 * 0 wrong answer (why set), -1 connection lost. */
static int load_eom(struct load_conn *c, struct buf *why)
{
	int seen = load_want_hdr == NULL, cmd;
	const char *d;
	size_t n;

	load_put(c, 'E', "", 0);
	while ((cmd = load_reply(c, &d, &n)) >= 0) {
		/* 'h': name NUL value NUL; 'i': 4-byte index, name NUL value NUL */
		if ((cmd == 'h' || cmd == 'i') && load_want_hdr) {
			size_t off = cmd == 'i' ? 4 : 0;
			const char *name = d + off, *value;
			if (n > off && memchr(name, 0, n - off) != NULL) {
				value = name + strlen(name) + 1;
				if (strcasecmp(name, load_want_hdr) == 0 && value < d + n &&
				    memchr(value, 0, (size_t)(d + n - value)) &&
				    (load_want_text == NULL || strstr(value, load_want_text)))
					seen = 1;
			}
			continue;
		}
		if (cmd != 0 && strchr("+-2bfmpq", cmd))
			continue; /* other modifications, progress */
		if ((cmd == 'c' || cmd == 'a') && seen)
			return 1;
		if (cmd == 'c' || cmd == 'a')
			buf_printf(why, "no %s field%s%s added", load_want_hdr,
				   load_want_text ? " containing " : "",
				   load_want_text ? load_want_text : "");
		else
			buf_printf(why, "end of message answered '%c' %.*s", cmd,
				   (int)(n > 200 ? 200 : n), d);
		return 0;
	}
	return -1;
}

/* One transaction on an open session: 1 good, 0 failed, -1 lost. */
static int load_message(struct load_conn *c, unsigned long seq, struct buf *why)
{
	char qid[32];
	const char *mi[] = {"i", qid};
	struct buf h = BUF_INIT;
	int r;

	snprintf(qid, sizeof(qid), "B%lX", seq);
	r = load_event(c, 'M', "<alice@example.com>", 20, P_NOMAIL, P_NR_MAIL);
	if (r == 'c')
		r = load_event(c, 'R', "<bob@example.org>", 18, P_NORCPT, P_NR_RCPT);
	buf_init(&h);
	for (size_t i = 0; i < load_nhdrs && r == 'c'; i++) {
		const char *v = load_hdrs[i].value;
		if (!(c->proto & P_HDR_LEADSPC) && *v == ' ')
			v++;
		buf_reset(&h);
		buf_append(&h, load_hdrs[i].name, strlen(load_hdrs[i].name) + 1);
		buf_append(&h, v, strlen(v) + 1);
		r = load_event(c, 'L', h.data, h.len, P_NOHDRS, P_NR_HDR);
	}
	buf_free(&h);
	if (r == 'c') {
		load_macros(c, 'N', mi, 2);
		r = load_event(c, 'N', "", 0, P_NOEOH, P_NR_EOH);
	}
	for (size_t off = 0; r == 'c' && off < load_body.len; off += LOAD_BODY_CHUNK) {
		size_t n = load_body.len - off;
		r = load_event(c, 'B', load_body.data + off,
			       n > LOAD_BODY_CHUNK ? LOAD_BODY_CHUNK : n, P_NOBODY, P_NR_BODY);
	}
	if (r < 0)
		return -1;
	if (r != 'c' && r != 's') {
		buf_printf(why, "refused before end of message: '%c'", r);
		load_put(c, 'A', "", 0); /* abort; the session goes on */
		return 0;
	}
	load_macros(c, 'E', mi, 2);
	return load_eom(c, why);
}

static void load_close(struct load_conn *c)
{
	if (c->fd >= 0) {
		load_put(c, 'Q', "", 0);
		(void)load_flush(c);
		close(c->fd);
	}
	c->fd = -1;
	buf_reset(&c->out);
	buf_reset(&c->in);
	c->in_off = 0;
}

static void *load_run(void *arg)
{
	struct load_thread *t = arg;
	struct load_conn c = {.fd = -1};
	struct buf why = BUF_INIT;

	buf_init(&c.out);
	buf_init(&c.in);
	buf_init(&why);
	while (load_now() < load_deadline) {
		double t0;
		int r;

		if (c.fd < 0 && (load_open(&c) < 0 || load_hello(&c) < 0)) {
			load_fail(t, "cannot open a milter session");
			load_close(&c);
			usleep(100000);
			continue;
		}
		t0 = load_now();
		buf_reset(&why);
		r = load_message(&c, __atomic_add_fetch(&load_seq, 1, __ATOMIC_RELAXED), &why);
		if (r < 0) {
			load_fail(t, "milter closed the connection");
			load_close(&c);
			continue;
		}
		if (t0 < load_measure)
			continue; /* warm-up: not counted */
		if (r == 0) {
			load_fail(t, buf_str(&why));
			continue;
		}
		if (t->nlat == t->cap) {
			t->cap = t->cap ? 2 * t->cap : 65536;
			t->lat = xrealloc(t->lat, t->cap * sizeof(*t->lat));
		}
		t->lat[t->nlat++] = (uint32_t)((load_now() - t0) * 1e6);
	}
	load_close(&c);
	buf_free(&c.out);
	buf_free(&c.in);
	buf_free(&why);
	return NULL;
}

/* Header fields up to the empty line ("Name: value", continuation lines
 * start with white space), then the body with CRLF line ends. */
static void load_read(const char *path)
{
	FILE *fp = fopen(path, "r");
	char line[65536];
	int in_body = 0;

	if (fp == NULL) {
		perror(path);
		exit(2);
	}
	buf_init(&load_body);
	while (fgets(line, sizeof(line), fp)) {
		size_t n = strcspn(line, "\r\n");
		char *colon;

		line[n] = 0;
		if (in_body) {
			buf_append(&load_body, line, n);
			buf_puts(&load_body, "\r\n");
		} else if (n == 0)
			in_body = 1;
		else if ((*line == ' ' || *line == '\t') && load_nhdrs) {
			struct load_hdr *h = &load_hdrs[load_nhdrs - 1];
			char *v = xmalloc(strlen(h->value) + n + 2);
			sprintf(v, "%s\n%s", h->value, line);
			free(h->value);
			h->value = v;
		} else if ((colon = strchr(line, ':')) != NULL) {
			load_hdrs = xrealloc(load_hdrs, (load_nhdrs + 1) * sizeof(*load_hdrs));
			load_hdrs[load_nhdrs].name = xstrndup(line, (size_t)(colon - line));
			load_hdrs[load_nhdrs++].value = xstrdup(colon + 1);
		} else {
			fprintf(stderr, "%s: \"%s\" is not a header field\n", path, line);
			exit(2);
		}
	}
	fclose(fp);
	if (load_nhdrs == 0) {
		fprintf(stderr, "%s: no header field\n", path);
		exit(2);
	}
}

static int load_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int ch, conns = 1;
	double secs = 3, warm = 0, took;
	const char *file = NULL;
	struct load_thread *t;
	uint32_t *all;
	size_t n = 0, at = 0;
	long failures = 0;

	while ((ch = getopt(argc, argv, "a:c:e:f:m:t:w:")) != -1) {
		if (ch == 'a')
			load_addr = optarg;
		else if (ch == 'c')
			conns = atoi(optarg);
		else if (ch == 'e')
			load_want_hdr = optarg;
		else if (ch == 'f')
			file = optarg;
		else if (ch == 'm')
			load_want_text = optarg;
		else if (ch == 't')
			secs = atof(optarg);
		else if (ch == 'w')
			warm = atof(optarg);
		else
			goto usage;
	}
	if (file == NULL || optind + 1 != argc || conns < 1 || (load_want_text && !load_want_hdr))
		goto usage;
	load_endpoint = argv[optind];
	load_read(file);
	t = xcalloc((size_t)conns, sizeof(*t));
	load_measure = load_now() + warm;
	load_deadline = load_measure + secs;
	for (int i = 0; i < conns; i++) {
		t[i].index = i;
		pthread_create(&t[i].tid, NULL, load_run, &t[i]);
	}
	for (int i = 0; i < conns; i++) {
		pthread_join(t[i].tid, NULL);
		n += t[i].nlat;
		failures += t[i].failures;
	}
	took = load_now() - load_measure;
	all = xcalloc(n + 1, sizeof(*all));
	for (int i = 0; i < conns; i++) {
		if (t[i].nlat)
			memcpy(all + at, t[i].lat, t[i].nlat * sizeof(*all));
		at += t[i].nlat;
	}
	qsort(all, n, sizeof(*all), load_cmp);
	printf("{\"messages\": %zu, \"seconds\": %.3f, \"rate\": %.1f, \"p50_us\": %u, "
	       "\"p99_us\": %u, \"max_us\": %u, \"failures\": %ld}\n",
	       n, took, (double)n / took, n ? all[n / 2] : 0,
	       n ? all[(size_t)((double)n * 0.99)] : 0, n ? all[n - 1] : 0, failures);
	for (int i = 0; i < conns; i++)
		free(t[i].lat);
	free(t);
	free(all);
	for (size_t i = 0; i < load_nhdrs; i++) {
		free(load_hdrs[i].name);
		free(load_hdrs[i].value);
	}
	free(load_hdrs);
	buf_free(&load_body);
	return failures ? 1 : 0;
usage:
	fprintf(stderr, "usage: milterload [-c conns] [-t seconds] [-w seconds] [-a client_addr] "
			"-f message [-e header [-m text]] inet:host:port|unix:/path\n");
	return 2;
}
