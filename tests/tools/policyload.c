/* policyload.c - load generator for policy servers (Postfix's policy
 * delegation protocol), used by tests/bench/policyd_bench.py.
 *
 * Usage: policyload [-c CONNS] [-T LOOPS] [-t SECONDS] [-w SECONDS] -f REQUESTS ENDPOINT
 * ENDPOINT is inet:host:port or unix:/path. REQUESTS holds requests as
 * they go on the wire (attribute lines, an empty line after each); the
 * text "{seq}" in them is replaced by a number unique to each request
 * sent, so instances, recipients or senders can vary. Each connection
 * sends a request, waits for its reply and sends the next, as a Postfix
 * smtpd does (no pipelining), cycling through the requests from its own
 * starting point. The CONNS connections are driven by LOOPS epoll loops
 * (threads; default 1), so the client costs little CPU and the server
 * is what is measured: a thread per connection cost this 2-core machine
 * most of a core in context switches. -w: a warm-up on the same
 * connections before the measured -t seconds (a server that starts a
 * process per connection is then measured in its steady state). Prints
 * one JSON object: requests, seconds, rate, p50/p99/max latency in
 * microseconds, failures (closed connections, replies without
 * "action="), a count per reply's first word, and client_cpu: the CPU
 * this client used (user + system, in cores), to show whether the client
 * or the server is the bottleneck.
 *
 * policyload -S [-c THREADS] inet:host:port runs the other side instead:
 * the least a policy server can do (read a request, answer
 * "action=DUNNO"), with THREADS epoll loops (SO_REUSEPORT listeners), so
 * the benchmark can show the ceiling this machine and client allow.
 */
#define _GNU_SOURCE /* memmem */
#include "buf.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LOAD_WORDS 16

struct load_thread {
	pthread_t tid;
	int index;
	int first, nconns; /* this loop's connections: first .. first+nconns-1 */
	uint32_t *lat;	   /* microseconds */
	size_t nlat, cap;
	long failures;
	char words[LOAD_WORDS][24];
	long counts[LOAD_WORDS];
};

/* One client connection: at most one request outstanding, as Postfix's
 * smtpd has (it waits for each reply before the next request). */
struct load_conn {
	int fd;
	size_t k;	 /* next request template */
	double t0;	 /* when the outstanding request was written */
	struct buf req;	 /* the request being sent */
	struct buf in;	 /* reply bytes so far */
	size_t scanned;	 /* bytes of in already searched for "\n\n" */
};

static char **load_reqs;
static size_t load_nreqs;
static const char *load_endpoint;
static double load_deadline, load_measure;
static unsigned long load_seq;

static double load_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int load_connect(void)
{
	int fd = -1;

	if (strncmp(load_endpoint, "unix:", 5) == 0) {
		struct sockaddr_un sun = {.sun_family = AF_UNIX};
		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", load_endpoint + 5);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
			close(fd);
			fd = -1;
		}
	} else {
		const char *hp =
		    strncmp(load_endpoint, "inet:", 5) == 0 ? load_endpoint + 5 : load_endpoint;
		char *host = strdup(hp), *port = strrchr(host, ':');
		struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
		if (port) {
			*port++ = 0;
			if (getaddrinfo(host, port, &hints, &res) == 0) {
				fd = socket(res->ai_family, SOCK_STREAM, 0);
				if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
					close(fd);
					fd = -1;
				}
				freeaddrinfo(res);
			}
		}
		free(host);
	}
	return fd;
}

static void load_count(struct load_thread *t, const char *action)
{
	size_t n = strcspn(action, " \n");
	int i;

	if (n >= sizeof(t->words[0]))
		n = sizeof(t->words[0]) - 1;
	for (i = 0; i < LOAD_WORDS && t->words[i][0]; i++)
		if (strncmp(t->words[i], action, n) == 0 && t->words[i][n] == 0)
			break;
	if (i == LOAD_WORDS)
		return;
	if (t->words[i][0] == 0)
		memcpy(t->words[i], action, n);
	t->counts[i]++;
}

/* Write c's next request (blocking socket: a request of a few hundred
 * bytes always fits the empty send buffer). 0, or -1 if the peer is gone. */
static int load_send(struct load_conn *c)
{
	const char *tmpl = load_reqs[c->k++ % load_nreqs], *p;
	unsigned long seq = __atomic_add_fetch(&load_seq, 1, __ATOMIC_RELAXED);

	buf_reset(&c->req);
	while ((p = strstr(tmpl, "{seq}")) != NULL) {
		buf_append(&c->req, tmpl, (size_t)(p - tmpl));
		buf_printf(&c->req, "%lu", seq);
		tmpl = p + 5;
	}
	buf_puts(&c->req, tmpl);
	buf_reset(&c->in);
	c->scanned = 0;
	c->t0 = load_now();
	return write(c->fd, c->req.data, c->req.len) == (ssize_t)c->req.len ? 0 : -1;
}

static int load_open(struct load_thread *t, struct load_conn *c, int ep)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};

	c->fd = load_connect();
	if (c->fd < 0)
		return -1;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0 || load_send(c) < 0) {
		close(c->fd);
		c->fd = -1;
		return -1;
	}
	(void)t;
	return 0;
}

static void load_lost(struct load_thread *t, struct load_conn *c, int ep)
{
	t->failures++;
	close(c->fd); /* also leaves the epoll set */
	c->fd = -1;
	if (load_now() < load_deadline && load_open(t, c, ep) < 0)
		t->failures++;
}

/* The reply to c's request is complete: count it, send the next. */
static void load_reply(struct load_thread *t, struct load_conn *c, int ep)
{
	double now = load_now();

	if (c->t0 >= load_measure) { /* warm-up replies are not counted */
		if (t->nlat == t->cap) {
			t->cap = t->cap ? 2 * t->cap : 65536;
			t->lat = xrealloc(t->lat, t->cap * sizeof(*t->lat));
		}
		t->lat[t->nlat++] = (uint32_t)((now - c->t0) * 1e6);
		if (strncmp(buf_str(&c->in), "action=", 7) == 0)
			load_count(t, buf_str(&c->in) + 7);
		else
			t->failures++;
	}
	if (now < load_deadline && load_send(c) < 0)
		load_lost(t, c, ep);
}

/* One event loop driving its share of the connections: a client that
 * spends little CPU, so that the server, not the client, is measured. */
static void *load_run(void *arg)
{
	struct load_thread *t = arg;
	struct load_conn *conns = xcalloc((size_t)t->nconns, sizeof(*conns));
	struct epoll_event evs[64];
	int ep = epoll_create1(0);
	char chunk[8192];

	for (int i = 0; i < t->nconns; i++) {
		conns[i].k = (size_t)(t->first + i) * 7;
		buf_init(&conns[i].req);
		buf_init(&conns[i].in);
		if (load_open(t, &conns[i], ep) < 0)
			t->failures++;
	}
	while (load_now() < load_deadline) {
		int n = epoll_wait(ep, evs, 64, 100);
		for (int i = 0; i < n; i++) {
			struct load_conn *c = evs[i].data.ptr;
			ssize_t got = read(c->fd, chunk, sizeof(chunk));
			const char *end;

			if (got <= 0) {
				load_lost(t, c, ep);
				continue;
			}
			buf_append(&c->in, chunk, (size_t)got);
			end = c->in.len >= 2 ? memmem(c->in.data + c->scanned,
						      c->in.len - c->scanned, "\n\n", 2)
					     : NULL;
			c->scanned = c->in.len > 0 ? c->in.len - 1 : 0;
			if (end != NULL)
				load_reply(t, c, ep);
		}
	}
	for (int i = 0; i < t->nconns; i++) {
		if (conns[i].fd >= 0)
			close(conns[i].fd);
		buf_free(&conns[i].req);
		buf_free(&conns[i].in);
	}
	free(conns);
	close(ep);
	return NULL;
}

/* ---- -S: a trivial policy server ---- */

struct sink_conn {
	int fd;
	int nl; /* the last byte read was '\n' */
};

static int sink_listen(const char *endpoint)
{
	const char *hp = strncmp(endpoint, "inet:", 5) == 0 ? endpoint + 5 : endpoint;
	char *host = strdup(hp), *port = strrchr(host, ':');
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
	int fd = -1, one = 1;

	if (port == NULL)
		goto done;
	*port++ = 0;
	if (getaddrinfo(host, port, &hints, &res) != 0)
		goto done;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd >= 0 && (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
			bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 511) < 0)) {
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
done:
	free(host);
	return fd;
}

/* Count the requests (lines "...\n\n") that end in data. */
static int sink_requests(struct sink_conn *sc, const char *data, size_t n)
{
	int done = 0;
	const char *p = data, *end = data + n, *q;

	while (p < end && (q = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		if ((q == p && sc->nl) || (q > p && q[-1] == '\n'))
			done++;
		sc->nl = 1;
		p = q + 1;
	}
	if (p < end)
		sc->nl = 0;
	return done;
}

static void *sink_run(void *arg)
{
	const char *endpoint = arg;
	static const char reply[] = "action=DUNNO\n\n";
	char chunk[16384], out[sizeof(reply) * 64];
	struct epoll_event ev, evs[64];
	int lfd = sink_listen(endpoint), ep = epoll_create1(0);

	if (lfd < 0 || ep < 0) {
		fprintf(stderr, "policyload -S: cannot listen on %s\n", endpoint);
		exit(2);
	}
	ev.events = EPOLLIN;
	ev.data.ptr = NULL;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	for (;;) {
		int n = epoll_wait(ep, evs, 64, -1);
		for (int i = 0; i < n; i++) {
			struct sink_conn *sc = evs[i].data.ptr;
			ssize_t got;
			int reqs;

			if (sc == NULL) {
				int fd = accept(lfd, NULL, NULL); /* blocking: one read per event */
				if (fd < 0)
					continue;
				sc = xcalloc(1, sizeof(*sc));
				sc->fd = fd;
				ev.events = EPOLLIN;
				ev.data.ptr = sc;
				epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
				continue;
			}
			got = read(sc->fd, chunk, sizeof(chunk));
			if (got <= 0) {
				close(sc->fd);
				free(sc);
				continue;
			}
			for (reqs = sink_requests(sc, chunk, (size_t)got); reqs > 0;) {
				int k = reqs > 64 ? 64 : reqs;
				for (int j = 0; j < k; j++)
					memcpy(out + j * (sizeof(reply) - 1), reply,
					       sizeof(reply) - 1);
				if (write(sc->fd, out, (size_t)k * (sizeof(reply) - 1)) < 0)
					break;
				reqs -= k;
			}
		}
	}
	return NULL;
}

static int sink_main(const char *endpoint, int threads)
{
	pthread_t tid;

	for (int i = 1; i < threads; i++)
		pthread_create(&tid, NULL, sink_run, (void *)endpoint);
	sink_run((void *)endpoint);
	return 0;
}

static double load_cpu(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

static int load_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static void load_read(const char *path)
{
	FILE *fp = fopen(path, "r");
	struct buf all = BUF_INIT;
	char line[65536], *p, *q;

	if (fp == NULL) {
		perror(path);
		exit(2);
	}
	buf_init(&all);
	while (fgets(line, sizeof(line), fp))
		buf_puts(&all, line);
	fclose(fp);
	for (p = all.data; (q = strstr(p, "\n\n")) != NULL; p = q + 2) {
		load_reqs = xrealloc(load_reqs, (load_nreqs + 1) * sizeof(*load_reqs));
		load_reqs[load_nreqs++] = xstrndup(p, (size_t)(q - p) + 2);
	}
	buf_free(&all);
	if (load_nreqs == 0) {
		fprintf(stderr, "%s: no request (each ends with an empty line)\n", path);
		exit(2);
	}
}

int main(int argc, char **argv)
{
	int ch, conns = 1, loops = 1, sink = 0;
	double secs = 3, warm = 0, start, took, cpu0 = 0, cpu;
	const char *file = NULL;
	struct load_thread *t;
	uint32_t *all;
	size_t n = 0, at = 0;
	long failures = 0;

	while ((ch = getopt(argc, argv, "c:T:t:w:f:S")) != -1) {
		if (ch == 'S')
			sink = 1;
		else if (ch == 'w')
			warm = atof(optarg);
		else if (ch == 'c')
			conns = atoi(optarg);
		else if (ch == 'T')
			loops = atoi(optarg);
		else if (ch == 't')
			secs = atof(optarg);
		else if (ch == 'f')
			file = optarg;
		else
			goto usage;
	}
	if (sink && optind + 1 == argc && conns >= 1)
		return sink_main(argv[optind], conns);
	if (file == NULL || optind + 1 != argc || conns < 1 || loops < 1)
		goto usage;
	if (loops > conns)
		loops = conns;
	load_endpoint = argv[optind];
	load_read(file);
	t = xcalloc((size_t)loops, sizeof(*t));
	start = load_now();
	load_measure = start + warm;
	load_deadline = load_measure + secs;
	for (int i = 0, first = 0; i < loops; i++) {
		t[i].index = i;
		t[i].first = first;
		t[i].nconns = conns / loops + (i < conns % loops);
		first += t[i].nconns;
		pthread_create(&t[i].tid, NULL, load_run, &t[i]);
	}
	for (int i = 0; i < loops; i++) {
		pthread_join(t[i].tid, NULL);
		n += t[i].nlat;
		failures += t[i].failures;
	}
	took = load_now() - load_measure;
	cpu = (load_cpu() - cpu0) / (load_now() - start); /* cores, over the whole run */
	all = xcalloc(n + 1, sizeof(*all));
	for (int i = 0; i < loops; i++) {
		memcpy(all + at, t[i].lat, t[i].nlat * sizeof(*all));
		at += t[i].nlat;
	}
	qsort(all, n, sizeof(*all), load_cmp);
	printf("{\"requests\": %zu, \"seconds\": %.3f, \"rate\": %.1f, \"p50_us\": %u, "
	       "\"p99_us\": %u, \"max_us\": %u, \"failures\": %ld, \"actions\": {",
	       n, took, n / took, n ? all[n / 2] : 0, n ? all[(size_t)(n * 0.99)] : 0,
	       n ? all[n - 1] : 0, failures);
	{
		/* sum the per-thread word counts */
		char words[LOAD_WORDS * 4][24];
		long counts[LOAD_WORDS * 4];
		int nw = 0;
		for (int i = 0; i < loops; i++)
			for (int w = 0; w < LOAD_WORDS && t[i].words[w][0]; w++) {
				int j;
				for (j = 0; j < nw && strcmp(words[j], t[i].words[w]) != 0; j++)
					;
				if (j == nw) {
					if (nw == LOAD_WORDS * 4)
						continue;
					strcpy(words[nw], t[i].words[w]);
					counts[nw++] = 0;
				}
				counts[j] += t[i].counts[w];
			}
		for (int j = 0; j < nw; j++)
			printf("%s\"%s\": %ld", j ? ", " : "", words[j], counts[j]);
	}
	printf("}, \"client_cpu\": %.2f}\n", cpu);
	return failures ? 1 : 0;
usage:
	fprintf(stderr, "usage: policyload [-c conns] [-T loops] [-t seconds] [-w seconds] -f requests "
			"inet:host:port|unix:/path\n"
			"       policyload -S [-c threads] inet:host:port\n");
	return 2;
}
