/* tlsload.c - STARTTLS load for SMTP servers, used by make bench
 * (tests/bench/bench.py, the "tls" phase).
 *
 * Usage: tlsload [-c CONCURRENCY] [-s SESSIONS] [-m MESSAGES] [-b BYTES] [-r RCPT] [-i]
 *                HOST PORT
 *
 * CONCURRENCY threads (default: SESSIONS) run SESSIONS sessions in all,
 * each thread one after the other. Each session: connect, greeting, EHLO, STARTTLS, the TLS
 * handshake (certificates are not checked: this measures the server),
 * EHLO again, then MESSAGES transactions of BYTES each (MAIL, RCPT,
 * DATA, one command at a time, each reply awaited), QUIT. Prints one
 * JSON object: sessions, handshakes, handshake_seconds (sum over
 * sessions), messages, seconds (wall clock), failures, first_error.
 *
 * -i (idle): open SESSIONS sessions one after the other up to the
 * second EHLO and keep them open; print "ready N" (N = sessions up) and
 * wait until standard input closes, then QUIT them all. Used to measure
 * the server's memory per idle TLS session.
 */
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
	int fd;
	SSL *ssl;
	char buf[4096];
	size_t len, pos;
};

static const char *opt_host, *opt_port, *opt_rcpt = "u@example.test";
static int opt_sessions = 1, opt_messages = 1, opt_bytes = 5120, opt_idle, opt_conc;
static int sessions_started;
static SSL_CTX *ctx;
static char *body;

static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static long stat_handshakes, stat_messages, stat_failures;
static double stat_hs_seconds;
static char first_error[256];

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fail(const char *what)
{
	pthread_mutex_lock(&stats_lock);
	stat_failures++;
	if (!first_error[0])
		snprintf(first_error, sizeof(first_error), "%s", what);
	pthread_mutex_unlock(&stats_lock);
}

static int conn_write(struct conn *c, const char *data, size_t len)
{
	while (len > 0) {
		int n = c->ssl ? SSL_write(c->ssl, data, (int)len) : (int)write(c->fd, data, len);
		if (n <= 0)
			return -1;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* One reply (all lines); its code, or -1. */
static int conn_reply(struct conn *c)
{
	char line[1024];
	size_t ll = 0;

	for (;;) {
		if (c->pos == c->len) {
			int n = c->ssl ? SSL_read(c->ssl, c->buf, sizeof(c->buf))
				       : (int)read(c->fd, c->buf, sizeof(c->buf));
			if (n <= 0)
				return -1;
			c->len = (size_t)n, c->pos = 0;
		}
		char ch = c->buf[c->pos++];
		if (ch != '\n') {
			if (ll < sizeof(line) - 1)
				line[ll++] = ch;
			continue;
		}
		line[ll] = 0;
		if (ll >= 4 && line[3] == '-') {
			ll = 0;
			continue;
		}
		return ll >= 3 ? atoi(line) : -1;
	}
}

static int conn_cmd(struct conn *c, const char *cmd, int want)
{
	if (conn_write(c, cmd, strlen(cmd)) < 0)
		return -1;
	return conn_reply(c) / 100 == want / 100 ? 0 : -1;
}

/* Up to the EHLO after the handshake. */
static int conn_open(struct conn *c)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	double t0;

	memset(c, 0, sizeof(*c));
	c->fd = -1;
	if (getaddrinfo(opt_host, opt_port, &hints, &ai) != 0)
		return fail("getaddrinfo"), -1;
	c->fd = socket(ai->ai_family, SOCK_STREAM, 0);
	if (c->fd < 0 || connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		freeaddrinfo(ai);
		return fail("connect"), -1;
	}
	freeaddrinfo(ai);
	if (conn_reply(c) != 220 || conn_cmd(c, "EHLO tlsload.example\r\n", 250) < 0 ||
	    conn_cmd(c, "STARTTLS\r\n", 220) < 0)
		return fail("greeting, EHLO or STARTTLS"), -1;
	t0 = now();
	c->ssl = SSL_new(ctx);
	SSL_set_fd(c->ssl, c->fd);
	if (SSL_connect(c->ssl) != 1)
		return fail("TLS handshake"), -1;
	pthread_mutex_lock(&stats_lock);
	stat_handshakes++;
	stat_hs_seconds += now() - t0;
	pthread_mutex_unlock(&stats_lock);
	c->len = c->pos = 0;
	if (conn_cmd(c, "EHLO tlsload.example\r\n", 250) < 0)
		return fail("EHLO over TLS"), -1;
	return 0;
}

static void conn_close(struct conn *c)
{
	if (c->ssl) {
		(void)conn_cmd(c, "QUIT\r\n", 221);
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	if (c->fd >= 0)
		close(c->fd);
}

static void session(void)
{
	struct conn c;
	char rcpt[512];

	snprintf(rcpt, sizeof(rcpt), "RCPT TO:<%s>\r\n", opt_rcpt);
	if (conn_open(&c) == 0) {
		for (int i = 0; i < opt_messages; i++) {
			if (conn_cmd(&c, "MAIL FROM:<load@tlsload.example>\r\n", 250) < 0 ||
			    conn_cmd(&c, rcpt, 250) < 0 || conn_cmd(&c, "DATA\r\n", 354) < 0 ||
			    conn_write(&c, body, strlen(body)) < 0 || conn_reply(&c) != 250) {
				fail("transaction");
				break;
			}
			pthread_mutex_lock(&stats_lock);
			stat_messages++;
			pthread_mutex_unlock(&stats_lock);
		}
	}
	conn_close(&c);
}

static void *worker(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&stats_lock);
		int mine = sessions_started < opt_sessions;
		sessions_started += mine;
		pthread_mutex_unlock(&stats_lock);
		if (!mine)
			return NULL;
		session();
	}
}

static void make_body(void)
{
	const char *hdr = "From: load@tlsload.example\r\nSubject: tlsload\r\n\r\n";
	size_t n = strlen(hdr);

	body = malloc((size_t)opt_bytes + n + 100);
	strcpy(body, hdr);
	while ((int)n < opt_bytes) { /* 72-character lines */
		memset(body + n, 'x', 72);
		memcpy(body + n + 72, "\r\n", 2);
		n += 74;
	}
	strcpy(body + n, ".\r\n");
}

int main(int argc, char **argv)
{
	int ch;
	double t0;

	while ((ch = getopt(argc, argv, "c:s:m:b:r:i")) != -1) {
		switch (ch) {
		case 'c':
			opt_conc = atoi(optarg);
			break;
		case 's':
			opt_sessions = atoi(optarg);
			break;
		case 'm':
			opt_messages = atoi(optarg);
			break;
		case 'b':
			opt_bytes = atoi(optarg);
			break;
		case 'r':
			opt_rcpt = optarg;
			break;
		case 'i':
			opt_idle = 1;
			break;
		default:
			goto usage;
		}
	}
	if (argc - optind != 2 || opt_sessions < 1)
		goto usage;
	opt_host = argv[optind], opt_port = argv[optind + 1];
	ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	make_body();
	t0 = now();
	if (opt_idle) {
		struct conn *cs = calloc((size_t)opt_sessions, sizeof(*cs));
		int up = 0;
		char b[64];
		for (int i = 0; i < opt_sessions; i++)
			if (conn_open(&cs[i]) == 0)
				up++;
		printf("ready %d\n", up);
		fflush(stdout);
		while (read(0, b, sizeof(b)) > 0)
			;
		for (int i = 0; i < opt_sessions; i++)
			conn_close(&cs[i]);
		free(cs);
	} else {
		int n = opt_conc > 0 && opt_conc < opt_sessions ? opt_conc : opt_sessions;
		pthread_t *t = calloc((size_t)n, sizeof(*t));
		for (int i = 0; i < n; i++)
			pthread_create(&t[i], NULL, worker, NULL);
		for (int i = 0; i < n; i++)
			pthread_join(t[i], NULL);
		free(t);
	}
	printf("{\"sessions\": %d, \"handshakes\": %ld, \"handshake_seconds\": %.4f, "
	       "\"messages\": %ld, \"seconds\": %.4f, \"failures\": %ld, \"first_error\": \"%s\"}\n",
	       opt_sessions, stat_handshakes, stat_hs_seconds, stat_messages, now() - t0,
	       stat_failures, first_error);
	SSL_CTX_free(ctx);
	free(body);
	return stat_failures ? 1 : 0;
usage:
	fprintf(stderr, "usage: tlsload [-c CONCURRENCY] [-s SESSIONS] [-m MESSAGES] [-b BYTES] "
			"[-r RCPT] [-i] HOST PORT\n");
	return 2;
}
