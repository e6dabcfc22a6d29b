/* policyload.c - load generator for policy servers (Postfix's policy
 * delegation protocol), used by tests/bench/policyd_bench.py.
 *
 * Usage: policyload [-c CONNS] [-t SECONDS] [-w SECONDS] -f REQUESTS ENDPOINT
 * ENDPOINT is inet:host:port or unix:/path. REQUESTS holds requests as
 * they go on the wire (attribute lines, an empty line after each); the
 * text "{seq}" in them is replaced by a number unique to each request
 * sent, so instances, recipients or senders can vary. Each connection is
 * one thread that sends a request, waits for its reply and sends the next,
 * as a Postfix smtpd does (no pipelining), cycling through the requests
 * from its own starting point. -w: a warm-up on the same connections
 * before the measured -t seconds (a server that starts a process per
 * connection is then measured in its steady state). Prints one JSON
 * object: requests,
 * seconds, rate, p50/p99/max latency in microseconds, failures (closed
 * connections, replies without "action="), and a count per reply's first
 * word.
 */
#include "buf.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LOAD_WORDS 16

struct load_thread {
	pthread_t tid;
	int index;
	uint32_t *lat; /* microseconds */
	size_t nlat, cap;
	long failures;
	char words[LOAD_WORDS][24];
	long counts[LOAD_WORDS];
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

static void *load_run(void *arg)
{
	struct load_thread *t = arg;
	struct buf req = BUF_INIT, in = BUF_INIT;
	char chunk[8192];
	size_t k = (size_t)t->index * 7;
	int fd = load_connect();

	buf_init(&req);
	buf_init(&in);
	while (fd >= 0 && load_now() < load_deadline) {
		const char *tmpl = load_reqs[k++ % load_nreqs], *p;
		unsigned long seq = __atomic_add_fetch(&load_seq, 1, __ATOMIC_RELAXED);
		double t0;
		char *end;

		buf_reset(&req);
		while ((p = strstr(tmpl, "{seq}")) != NULL) {
			buf_append(&req, tmpl, (size_t)(p - tmpl));
			buf_printf(&req, "%lu", seq);
			tmpl = p + 5;
		}
		buf_puts(&req, tmpl);
		t0 = load_now();
		if (write(fd, req.data, req.len) != (ssize_t)req.len)
			goto lost;
		buf_reset(&in);
		while ((end = strstr(buf_str(&in), "\n\n")) == NULL) {
			ssize_t n = read(fd, chunk, sizeof(chunk));
			if (n <= 0)
				goto lost;
			buf_append(&in, chunk, (size_t)n);
		}
		if (t0 < load_measure)
			continue; /* warm-up: not counted */
		if (t->nlat == t->cap) {
			t->cap = t->cap ? 2 * t->cap : 65536;
			t->lat = xrealloc(t->lat, t->cap * sizeof(*t->lat));
		}
		t->lat[t->nlat++] = (uint32_t)((load_now() - t0) * 1e6);
		if (strncmp(buf_str(&in), "action=", 7) == 0)
			load_count(t, buf_str(&in) + 7);
		else
			t->failures++;
		continue;
	lost:
		t->failures++;
		close(fd);
		fd = load_connect();
	}
	if (fd >= 0)
		close(fd);
	else
		t->failures++;
	buf_free(&req);
	buf_free(&in);
	return NULL;
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
	int ch, conns = 1;
	double secs = 3, warm = 0, start, took;
	const char *file = NULL;
	struct load_thread *t;
	uint32_t *all;
	size_t n = 0, at = 0;
	long failures = 0;

	while ((ch = getopt(argc, argv, "c:t:w:f:")) != -1) {
		if (ch == 'w')
			warm = atof(optarg);
		else if (ch == 'c')
			conns = atoi(optarg);
		else if (ch == 't')
			secs = atof(optarg);
		else if (ch == 'f')
			file = optarg;
		else
			goto usage;
	}
	if (file == NULL || optind + 1 != argc || conns < 1)
		goto usage;
	load_endpoint = argv[optind];
	load_read(file);
	t = xcalloc((size_t)conns, sizeof(*t));
	start = load_now();
	load_measure = start + warm;
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
		for (int i = 0; i < conns; i++)
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
	printf("}}\n");
	return failures ? 1 : 0;
usage:
	fprintf(
	    stderr,
	    "usage: policyload [-c conns] [-t seconds] -f requests inet:host:port|unix:/path\n");
	return 2;
}
