/* server.c - listeners, event loops, connections, the policy protocol
 * framing and the worker pool (server.h).
 *
 * Protocol (postfix.md §1.1): "name=value\n" lines ended by an empty line;
 * one "action=...\n\n" reply per request; the connection stays open. On
 * any trouble (malformed line, NUL byte, request over request_size_limit,
 * a request that is not request=smtpd_access_policy) the server logs a
 * warning and disconnects without a reply, as SMTPD_POLICY_README asks:
 * Postfix then retries or applies its default_action.
 *
 * Threads: "event_loops" loops (default: one per CPU). Loop 0 is the
 * main thread's base: it also accepts, handles signals and the state
 * timers, and hands each new connection to the loops in turn; the others
 * run on their own threads. A connection lives on one loop for good, so
 * its memory is only touched by that loop (and by a worker while busy).
 * Cost per request, which is what the benchmark measures: one read(2),
 * one write(2) (plus the decision log line); the read event stays armed
 * and the write event is only used when the socket is full, so there is
 * no epoll_ctl(2) per request. The state store's periodic sync and
 * clean-up run on a thread of their own: an fsync that takes a second on
 * a busy disk must not stop a loop.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "server.h"
#include "state.h"

#include "addr.h"
#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define PD_EXPIRE_INTERVAL 600	   /* seconds between state clean-ups */
#define PD_SYNC_INTERVAL 5	   /* seconds between state syncs (state_lmdb.c) */
#define PD_OUTPUT_MAX (256 * 1024) /* unread replies before we stop reading */
#define PD_READ_CHUNK 16384	   /* bytes asked of each read(2) */
#define PD_LOOPS_MAX 64

struct pd_listener {
	char *text;
	int fd;
	struct evconnlistener *lev;
	struct pd_server *srv;
};

struct pd_loop;

struct pd_conn {
	struct pd_loop *loop;
	int fd;
	struct event *rev, *wev;
	int reading;	    /* rev is added */
	struct buf in, out; /* bytes read, not yet decoded / not yet written */
	size_t in_off, out_off;
	struct attr_decoder dec;
	struct pd_eval_run run;
	struct pd_instance inst;
	struct pd_conf *conf; /* held while a request is on a worker */
	struct buf reply;
	struct buf wire; /* the reply as sent, reused */
	char peer[128];
	size_t req_bytes;
	int busy;    /* a request is on a worker */
	int closing; /* free when the worker gives it back */
	int eof;     /* the client closed its side: answer, then close */
	int dead;    /* a write failed: free at the next chance */
	struct pd_conn *next;
	struct pd_conn *prev_all, *next_all;
};

/* One event loop. The lock guards what other threads hand over: new
 * connections (from loop 0) and finished jobs (from the workers). */
struct pd_loop {
	struct pd_server *srv;
	int index;
	struct event_base *base;
	int own_base;
	pthread_t thread;
	int started;
	pthread_mutex_t lock;
	struct pd_conn *incoming, *done;
	int efd;
	struct event *notify;
	struct pd_conn *all;
	struct pd_conf *conf; /* this loop's reference to the configuration */
	unsigned gen;
	int stop; /* set (atomically) before the loop is broken */
};

struct pd_server {
	struct event_base *base;
	struct pd_conf *conf;
	pthread_mutex_t conf_lock;
	unsigned conf_gen; /* bumped by a reload: loops pick the new conf up */
	char *listen_text;
	struct pd_listener *ls;
	size_t nls;
	long long nclients; /* atomic */
	int stopping;
	struct pd_loop *loops;
	int nloops;
	unsigned next_loop;
	/* workers */
	pthread_t *threads;
	int nthreads;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct pd_conn *jobs, **jobs_tail;
	int quit;
	/* housekeeping: state sync and expiry */
	pthread_t hk_thread;
	int hk_started, hk_quit;
	pthread_mutex_t hk_lock;
	pthread_cond_t hk_cond;
};

static void pd_conn_resume(struct pd_conn *c);

/* ---- configuration per loop ---- */

/* The configuration for the next request on this loop. */
static struct pd_conf *pd_loop_conf(struct pd_loop *lp)
{
	struct pd_server *srv = lp->srv;

	if (__atomic_load_n(&srv->conf_gen, __ATOMIC_ACQUIRE) != lp->gen) {
		pthread_mutex_lock(&srv->conf_lock);
		pd_conf_ref(srv->conf);
		pd_conf_unref(lp->conf);
		lp->conf = srv->conf;
		lp->gen = srv->conf_gen;
		pthread_mutex_unlock(&srv->conf_lock);
	}
	return lp->conf;
}

/* ---- connections ---- */

static void pd_conn_close_fd(struct pd_conn *c)
{
	if (c->rev) {
		event_free(c->rev);
		c->rev = NULL;
	}
	if (c->wev) {
		event_free(c->wev);
		c->wev = NULL;
	}
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	c->reading = 0;
}

static void pd_conn_free(struct pd_conn *c)
{
	struct pd_loop *lp = c->loop;

	pd_conn_close_fd(c);
	if (c->busy) { /* the worker still uses it: finish later */
		c->closing = 1;
		return;
	}
	if (c->prev_all)
		c->prev_all->next_all = c->next_all;
	else if (lp->all == c)
		lp->all = c->next_all;
	if (c->next_all)
		c->next_all->prev_all = c->prev_all;
	attr_decoder_free(&c->dec);
	pd_eval_run_free(&c->run);
	pd_instance_free(&c->inst);
	buf_free(&c->reply);
	buf_free(&c->wire);
	buf_free(&c->in);
	buf_free(&c->out);
	if (c->conf)
		pd_conf_unref(c->conf);
	free(c);
	__atomic_sub_fetch(&lp->srv->nclients, 1, __ATOMIC_RELAXED);
}

static size_t pd_conn_outlen(const struct pd_conn *c)
{
	return c->out.len - c->out_off;
}

/* Arm or disarm the read event as the connection's state asks: no
 * reading while a client's unread replies pile up, or while a request is
 * on a worker and a whole request more already waits (bounded memory). */
static void pd_conn_want_read(struct pd_conn *c)
{
	struct pd_conf *pc = c->loop->conf;
	int want = c->fd >= 0 && !c->eof && !c->dead && pd_conn_outlen(c) <= PD_OUTPUT_MAX &&
		   c->in.len - c->in_off <= (size_t)pc->size_limit + 4096;

	if (want && !c->reading) {
		struct timeval idle = {(time_t)pc->idle_timeout, 0};
		event_add(c->rev, &idle);
	} else if (!want && c->reading)
		event_del(c->rev);
	c->reading = want;
}

/* Send now if the socket takes it; what it does not take waits for the
 * write event. */
static void pd_conn_send(struct pd_conn *c, const char *data, size_t len)
{
	ssize_t n = 0;

	if (c->fd < 0 || c->dead)
		return;
	if (pd_conn_outlen(c) == 0) {
		buf_reset(&c->out);
		c->out_off = 0;
		n = write(c->fd, data, len);
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			if (msg_verbose)
				msg_info("%s: write: %s", c->peer, strerror(errno));
			c->dead = 1;
			return;
		}
		if (n < 0)
			n = 0;
		if ((size_t)n == len)
			return;
	}
	buf_append(&c->out, data + n, len - (size_t)n);
	{
		struct timeval idle = {(time_t)c->loop->conf->idle_timeout, 0};
		event_add(c->wev, &idle);
	}
}

static void pd_conn_reply(struct pd_conn *c)
{
	struct buf *out = &c->wire, err = BUF_INIT; /* err: allocated if used */

	buf_reset(out);
	/* Postfix treats a reply that is not UTF-8 as a failed request; a
	 * table result or a client's bytes must not cause that. */
	if (!addr_utf8_valid(c->reply.data, c->reply.len)) {
		msg_warn("%s: action is not valid UTF-8; non-ASCII bytes replaced by '?'", c->peer);
		for (size_t i = 0; i < c->reply.len; i++)
			if ((unsigned char)c->reply.data[i] >= 0x80)
				c->reply.data[i] = '?';
	}
	if (attr_print_reply(out, buf_str(&c->reply), &err) < 0) {
		/* a check produced an action the protocol cannot carry */
		msg_warn("%s: cannot send action: %s; sending DUNNO", c->peer, buf_str(&err));
		buf_reset(out);
		attr_print_reply(out, "DUNNO", &err);
	}
	pd_conn_send(c, out->data, out->len);
	if (out->cap > 65536)
		buf_free(out);
	buf_free(&err);
}

static void pd_job_submit(struct pd_server *srv, struct pd_conn *c)
{
	pthread_mutex_lock(&srv->lock);
	c->next = NULL;
	*srv->jobs_tail = c;
	srv->jobs_tail = &c->next;
	pthread_cond_signal(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
}

/* A complete request is in c->dec.list. Evaluated here when no check
 * needs to block for it (an SPF answer in the cache does not), else on
 * a worker from the first check that would block. */
static int pd_conn_request(struct pd_conn *c)
{
	struct pd_server *srv = c->loop->srv;
	struct pd_conf *pc = pd_loop_conf(c->loop);
	const char *req = attr_get(&c->dec.list, "request");

	if (strcmp(req, "smtpd_access_policy") != 0) {
		msg_warn("%s: unrecognized request type: \"%.100s\"; disconnecting", c->peer, req);
		return -1;
	}
	if (c->dec.warn.len)
		msg_warn("%s: %s", c->peer, buf_str(&c->dec.warn));
	c->req_bytes = 0;
	pd_eval_run_start(&c->run);
	if (pd_eval_step(&c->run, pc, &c->dec.list, &c->inst, c->peer, &c->reply,
			 srv->nthreads == 0) == 1) {
		c->conf = pc;
		pd_conf_ref(pc);
		c->busy = 1;
		pd_job_submit(srv, c);
		return 1;
	}
	pd_conn_reply(c);
	return 0;
}

/* Decode what arrived; answer every complete request (stop at one that
 * went to a worker: the rest waits in c->in). Returns -1 when the
 * connection must be freed. */
static int pd_conn_process(struct pd_conn *c)
{
	struct pd_conf *pc = c->loop->conf;

	while (!c->busy && !c->dead && c->in_off < c->in.len) {
		size_t used = 0;
		enum attr_decode_status st;

		/* A client that pipelines without reading its replies waits
		 * until they drain (pd_conn_write_cb): bounded memory. */
		if (pd_conn_outlen(c) > PD_OUTPUT_MAX)
			return 0;
		st = attr_decoder_feed(&c->dec, c->in.data + c->in_off, c->in.len - c->in_off,
				       &used);
		c->in_off += used;
		c->req_bytes += used;
		if (c->in_off == c->in.len) {
			buf_reset(&c->in);
			c->in_off = 0;
		}
		if (st == ATTR_DECODE_ERROR) {
			msg_warn("%s: malformed request: %s; disconnecting", c->peer,
				 buf_str(&c->dec.err));
			return -1;
		}
		if ((long long)c->req_bytes > pc->size_limit) {
			msg_warn("%s: request longer than request_size_limit (%lld bytes); "
				 "disconnecting",
				 c->peer, pc->size_limit);
			return -1;
		}
		if (st == ATTR_DECODE_DONE && pd_conn_request(c) < 0)
			return -1;
	}
	return c->dead ? -1 : 0;
}

/* After the client's EOF: once every complete request is answered,
 * close when the replies are written (pd_conn_write_cb). A script that
 * pipes requests into nc half-closes like this; Postfix never does.
 * Returns 1 when the connection was freed. */
static int pd_conn_eof_check(struct pd_conn *c)
{
	if (!c->eof || c->busy || c->in_off < c->in.len)
		return 0;
	if (attr_decoder_eof(&c->dec) < 0)
		msg_warn("%s: connection closed in the middle of a request", c->peer);
	if (pd_conn_outlen(c) == 0) {
		pd_conn_free(c);
		return 1;
	}
	return 0;
}

/* Go on after new input, a drained output or a worker's answer. */
static void pd_conn_resume(struct pd_conn *c)
{
	if (pd_conn_process(c) < 0) {
		pd_conn_free(c);
		return;
	}
	if (pd_conn_eof_check(c))
		return;
	pd_conn_want_read(c);
}

static void pd_conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pd_conn *c = arg;
	ssize_t n;

	if (what & EV_TIMEOUT) {
		msg_info("%s: idle timeout, disconnecting", c->peer);
		pd_conn_free(c);
		return;
	}
	buf_reserve(&c->in, PD_READ_CHUNK);
	n = read(fd, c->in.data + c->in.len, c->in.cap - c->in.len - 1);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		msg_warn("%s: read error: %s", c->peer, strerror(errno));
		pd_conn_free(c);
		return;
	}
	if (n == 0) {
		c->eof = 1;
		pd_conn_want_read(c); /* stop watching: the rest is answered */
	} else {
		c->in.len += (size_t)n;
		c->in.data[c->in.len] = 0;
	}
	pd_conn_resume(c);
}

static void pd_conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pd_conn *c = arg;
	ssize_t n;

	if (what & EV_TIMEOUT) {
		msg_info("%s: idle timeout (client not reading), disconnecting", c->peer);
		pd_conn_free(c);
		return;
	}
	n = write(fd, c->out.data + c->out_off, pd_conn_outlen(c));
	if (n < 0 && errno != EAGAIN && errno != EINTR) {
		msg_warn("%s: write error: %s", c->peer, strerror(errno));
		pd_conn_free(c);
		return;
	}
	if (n > 0)
		c->out_off += (size_t)n;
	if (pd_conn_outlen(c) > 0)
		return;
	event_del(c->wev);
	buf_reset(&c->out);
	c->out_off = 0;
	pd_conn_resume(c);
}

/* On c's loop: start serving a connection made by the accepting loop. */
static void pd_conn_attach(struct pd_conn *c)
{
	struct pd_loop *lp = c->loop;

	pd_loop_conf(lp);
	c->rev = event_new(lp->base, c->fd, EV_READ | EV_PERSIST, pd_conn_read_cb, c);
	c->wev = event_new(lp->base, c->fd, EV_WRITE | EV_PERSIST, pd_conn_write_cb, c);
	c->next_all = lp->all;
	if (lp->all)
		lp->all->prev_all = c;
	lp->all = c;
	if (c->rev == NULL || c->wev == NULL) {
		msg_warn("%s: libevent: cannot watch the connection", c->peer);
		pd_conn_free(c);
		return;
	}
	pd_conn_want_read(c);
	if (msg_verbose)
		msg_info("connect from %s (loop %d)", c->peer, lp->index);
}

static void pd_peer_text(const struct sockaddr *sa, socklen_t len, const char *ltext, char *out,
			 size_t size)
{
	char host[NI_MAXHOST], port[NI_MAXSERV];

	if (sa->sa_family == AF_UNIX) {
		snprintf(out, size, "%.100s", ltext);
		return;
	}
	if (getnameinfo(sa, len, host, sizeof(host), port, sizeof(port),
			NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		snprintf(out, size, "unknown");
	else if (sa->sa_family == AF_INET6)
		snprintf(out, size, "[%.64s]:%.8s", host, port);
	else
		snprintf(out, size, "%.64s:%.8s", host, port);
}

static void pd_loop_wake(struct pd_loop *lp)
{
	uint64_t one = 1;

	if (write(lp->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		msg_warn("cannot wake event loop %d: %s", lp->index, strerror(errno));
}

static void pd_accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
			 int salen, void *arg)
{
	struct pd_listener *l = arg;
	struct pd_server *srv = l->srv;
	struct pd_loop *lp;
	struct pd_conn *c;

	if (srv->stopping ||
	    __atomic_load_n(&srv->nclients, __ATOMIC_RELAXED) >= srv->conf->max_clients) {
		if (!srv->stopping)
			msg_warn("too many clients (max_clients = %lld): refusing a connection "
				 "on %s",
				 srv->conf->max_clients, l->text);
		close(fd);
		return;
	}
	lp = &srv->loops[srv->next_loop++ % (unsigned)srv->nloops];
	c = xcalloc(1, sizeof(*c));
	c->loop = lp;
	c->fd = fd;
	pd_peer_text(sa, (socklen_t)salen, l->text, c->peer, sizeof(c->peer));
	/* The decoder bounds each name and value; request_size_limit bounds
	 * the whole request (both are external input limits). */
	attr_decoder_init(&c->dec, 0, 0);
	pd_eval_run_init(&c->run);
	pd_instance_init(&c->inst);
	buf_init(&c->reply);
	buf_init(&c->in);
	buf_init(&c->out);
	__atomic_add_fetch(&srv->nclients, 1, __ATOMIC_RELAXED);
	if (lp->index == 0) {
		pd_conn_attach(c);
		return;
	}
	pthread_mutex_lock(&lp->lock);
	c->next = lp->incoming;
	lp->incoming = c;
	pthread_mutex_unlock(&lp->lock);
	pd_loop_wake(lp);
}

/* ---- workers ---- */

static void *pd_worker_main(void *arg)
{
	struct pd_server *srv = arg;

	pthread_mutex_lock(&srv->lock);
	for (;;) {
		struct pd_conn *c;
		struct pd_loop *lp;

		while (srv->jobs == NULL && !srv->quit)
			pthread_cond_wait(&srv->cond, &srv->lock);
		if (srv->quit)
			break;
		c = srv->jobs;
		srv->jobs = c->next;
		if (srv->jobs == NULL)
			srv->jobs_tail = &srv->jobs;
		pthread_mutex_unlock(&srv->lock);
		pd_eval_step(&c->run, c->conf, &c->dec.list, &c->inst, c->peer, &c->reply, 1);
		lp = c->loop;
		pthread_mutex_lock(&lp->lock);
		c->next = lp->done;
		lp->done = c;
		pthread_mutex_unlock(&lp->lock);
		pd_loop_wake(lp);
		pthread_mutex_lock(&srv->lock);
	}
	pthread_mutex_unlock(&srv->lock);
	return NULL;
}

static struct pd_conn *pd_list_reverse(struct pd_conn *c)
{
	struct pd_conn *rev = NULL, *next;

	for (; c; c = next) {
		next = c->next;
		c->next = rev;
		rev = c;
	}
	return rev;
}

/* New connections from loop 0 and answers from the workers. */
static void pd_loop_notify_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pd_loop *lp = arg;
	struct pd_conn *in, *done, *c;
	uint64_t n;

	if (read(lp->efd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		msg_warn("event loop %d notification: %s", lp->index, strerror(errno));
	pthread_mutex_lock(&lp->lock);
	in = lp->incoming;
	done = lp->done;
	lp->incoming = lp->done = NULL;
	pthread_mutex_unlock(&lp->lock);
	pd_loop_conf(lp); /* after a reload: let the old configuration go */
	for (in = pd_list_reverse(in); (c = in) != NULL;) {
		in = c->next;
		pd_conn_attach(c);
	}
	for (done = pd_list_reverse(done); (c = done) != NULL;) { /* oldest first */
		done = c->next;
		c->busy = 0;
		pd_conf_unref(c->conf);
		c->conf = NULL;
		if (c->closing) {
			pd_conn_free(c);
			continue;
		}
		pd_conn_reply(c);
		pd_conn_resume(c); /* pipelined requests */
	}
}

void pd_loop_run(struct event_base *base, int *stop)
{
	log_batch_begin();
	while (!__atomic_load_n(stop, __ATOMIC_ACQUIRE)) {
		if (event_base_loop(base, EVLOOP_ONCE | EVLOOP_NO_EXIT_ON_EMPTY) < 0)
			break;
		log_batch_flush(); /* this turn's decision lines, one write */
		if (event_base_got_break(base))
			break;
	}
	log_batch_end();
}

static void *pd_loop_main(void *arg)
{
	struct pd_loop *lp = arg;

	pd_loop_run(lp->base, &lp->stop);
	return NULL;
}

/* Every PD_SYNC_INTERVAL seconds: flush the state store; every
 * PD_EXPIRE_INTERVAL: drop its expired records (LMDB; Redis expires its
 * own). Uses the configuration of the moment. */
static void *pd_housekeeping_main(void *arg)
{
	struct pd_server *srv = arg;
	time_t next_expire = time(NULL) + PD_EXPIRE_INTERVAL;

	pthread_mutex_lock(&srv->hk_lock);
	while (!srv->hk_quit) {
		struct timespec until;
		struct pd_conf *pc;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += PD_SYNC_INTERVAL;
		while (!srv->hk_quit &&
		       pthread_cond_timedwait(&srv->hk_cond, &srv->hk_lock, &until) == 0)
			;
		if (srv->hk_quit)
			break;
		pthread_mutex_unlock(&srv->hk_lock);
		pthread_mutex_lock(&srv->conf_lock);
		pc = srv->conf;
		pd_conf_ref(pc);
		pthread_mutex_unlock(&srv->conf_lock);
		pd_state_sync(pc->state);
		if (time(NULL) >= next_expire) {
			if (pc->state && !pd_state_blocking(pc->state))
				pd_state_expire(pc->state, (long long)time(NULL));
			next_expire = time(NULL) + PD_EXPIRE_INTERVAL;
		}
		pd_conf_unref(pc);
		pthread_mutex_lock(&srv->hk_lock);
	}
	pthread_mutex_unlock(&srv->hk_lock);
	return NULL;
}

/* ---- listeners ---- */

static int pd_listen_unix(struct pd_server *srv, const char *path, uid_t uid, gid_t gid,
			  struct buf *err)
{
	struct sockaddr_un sun;
	struct stat st;
	struct buf mode_text = BUF_INIT;
	long mode;
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path) || *path != '/') {
		buf_printf(err, "listen: unix:%s: not an absolute path that fits a socket", path);
		return -1;
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, path);
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path); /* left by a previous run */
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(fd, 128) < 0) {
		buf_printf(err, "listen: unix:%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	buf_init(&mode_text);
	cfg_get_str(srv->conf->cfg, NULL, "unix_socket_mode", &mode_text, err);
	mode = strtol(buf_str(&mode_text), NULL, 8);
	buf_free(&mode_text);
	if (chmod(path, (mode_t)(mode & 0777)) < 0 ||
	    (geteuid() == 0 && chown(path, uid, gid) < 0)) {
		buf_printf(err, "listen: unix:%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int pd_listen_inet(const char *text, const char *hostport, struct buf *err)
{
	struct addrinfo hints, *res;
	char *host = xstrdup(hostport), *port;
	int fd = -1, rc, one = 1;

	port = strrchr(host, ':');
	if (port == NULL || port[1] == 0) {
		buf_printf(err, "listen: \"%s\": expected inet:host:port", text);
		free(host);
		return -1;
	}
	*port++ = 0;
	if (*host == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = 0;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((rc = getaddrinfo(*host && strcmp(host, "*") ? host : NULL, port, &hints, &res)) != 0) {
		buf_printf(err, "listen: \"%s\": %s", text, gai_strerror(rc));
		free(host);
		return -1;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 511) < 0) {
		buf_printf(err, "listen: \"%s\": %s", text, strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	free(host);
	return fd;
}

static int pd_listen_one(struct pd_server *srv, const char *text, uid_t uid, gid_t gid,
			 struct buf *err)
{
	if (strncmp(text, "unix:", 5) == 0)
		return pd_listen_unix(srv, text + 5, uid, gid, err);
	if (strncmp(text, "inet:", 5) == 0)
		return pd_listen_inet(text, text + 5, err);
	return pd_listen_inet(text, text, err);
}

struct pd_server *pd_server_new(struct event_base *base, struct pd_conf *pc, uid_t uid, gid_t gid,
				struct buf *err)
{
	struct pd_server *srv = xcalloc(1, sizeof(*srv));
	struct cfg_list l;

	srv->base = base;
	srv->conf = pc;
	pd_conf_ref(pc);
	srv->jobs_tail = &srv->jobs;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_mutex_init(&srv->conf_lock, NULL);
	pthread_cond_init(&srv->cond, NULL);
	pthread_mutex_init(&srv->hk_lock, NULL);
	pthread_cond_init(&srv->hk_cond, NULL);
	srv->listen_text = xstrdup(cfg_get_raw(pc->cfg, NULL, "listen"));
	srv->nloops = (int)pc->loops;
	if (srv->nloops <= 0) { /* the CPUs this process may run on */
		cpu_set_t set;
		long n = sched_getaffinity(0, sizeof(set), &set) == 0
			     ? CPU_COUNT(&set)
			     : sysconf(_SC_NPROCESSORS_ONLN);
		srv->nloops = n < 1 ? 1 : n > PD_LOOPS_MAX ? PD_LOOPS_MAX : (int)n;
	}
	if (cfg_get_list(pc->cfg, NULL, "listen", &l, err) < 0)
		goto fail;
	if (l.count == 0) {
		buf_puts(err, "parameter listen: no address");
		cfg_list_free(&l);
		goto fail;
	}
	srv->ls = xcalloc(l.count, sizeof(*srv->ls));
	for (size_t i = 0; i < l.count; i++) {
		int fd = pd_listen_one(srv, l.items[i], uid, gid, err);
		if (fd < 0) {
			cfg_list_free(&l);
			goto fail;
		}
		srv->ls[srv->nls].text = xstrdup(l.items[i]);
		srv->ls[srv->nls].fd = fd;
		srv->ls[srv->nls++].srv = srv;
	}
	cfg_list_free(&l);
	return srv;
fail:
	pd_server_free(srv);
	return NULL;
}

/* Loop 0 runs on the caller's base; the others get a base and a thread. */
static int pd_loops_start(struct pd_server *srv, struct buf *err)
{
	srv->loops = xcalloc((size_t)srv->nloops, sizeof(*srv->loops));
	for (int i = 0; i < srv->nloops; i++) {
		struct pd_loop *lp = &srv->loops[i];
		lp->srv = srv;
		lp->index = i;
		lp->efd = -1;
		pthread_mutex_init(&lp->lock, NULL);
		lp->gen = srv->conf_gen;
		lp->conf = srv->conf;
		pd_conf_ref(lp->conf);
		lp->base = i == 0 ? srv->base : event_base_new();
		lp->own_base = i > 0;
		if (lp->base == NULL) {
			buf_puts(err, "libevent: cannot create an event base");
			return -1;
		}
		lp->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (lp->efd < 0) {
			buf_printf(err, "eventfd: %s", strerror(errno));
			return -1;
		}
		lp->notify =
		    event_new(lp->base, lp->efd, EV_READ | EV_PERSIST, pd_loop_notify_cb, lp);
		if (lp->notify == NULL || event_add(lp->notify, NULL) < 0) {
			buf_puts(err, "libevent: cannot add the loop notification event");
			return -1;
		}
	}
	for (int i = 1; i < srv->nloops; i++) {
		if (pthread_create(&srv->loops[i].thread, NULL, pd_loop_main, &srv->loops[i]) !=
		    0) {
			buf_puts(err, "cannot start event loop threads");
			return -1;
		}
		srv->loops[i].started = 1;
	}
	return 0;
}

int pd_server_start(struct pd_server *srv, struct buf *err)
{
	if (pd_loops_start(srv, err) < 0)
		return -1;
	for (size_t i = 0; i < srv->nls; i++) {
		struct pd_listener *l = &srv->ls[i];
		evutil_make_socket_nonblocking(l->fd);
		l->lev =
		    evconnlistener_new(srv->base, pd_accept_cb, l,
				       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, l->fd);
		if (l->lev == NULL) {
			buf_printf(err, "cannot watch listener %s", l->text);
			return -1;
		}
		l->fd = -1; /* owned by the listener now */
	}
	if (pthread_create(&srv->hk_thread, NULL, pd_housekeeping_main, srv) != 0) {
		buf_puts(err, "cannot start the housekeeping thread");
		return -1;
	}
	srv->hk_started = 1;
	/* Workers are started whatever the first configuration needs, so a
	 * reload may add a blocking check (spf, redis state). */
	srv->nthreads = (int)srv->conf->workers;
	srv->threads = xcalloc((size_t)srv->nthreads, sizeof(*srv->threads));
	for (int i = 0; i < srv->nthreads; i++) {
		if (pthread_create(&srv->threads[i], NULL, pd_worker_main, srv) != 0) {
			buf_puts(err, "cannot start worker threads");
			srv->nthreads = i;
			return -1;
		}
	}
	return 0;
}

void pd_server_set_conf(struct pd_server *srv, struct pd_conf *pc)
{
	const char *now = cfg_get_raw(pc->cfg, NULL, "listen");
	struct pd_conf *old;

	if (strcmp(now ? now : "", srv->listen_text ? srv->listen_text : "") != 0)
		msg_warn("reload: a changed \"listen\" takes effect only after a restart");
	if (srv->loops && pc->loops != srv->conf->loops)
		msg_warn("reload: a changed \"event_loops\" takes effect only after a restart");
	pd_conf_ref(pc);
	pthread_mutex_lock(&srv->conf_lock);
	old = srv->conf;
	srv->conf = pc;
	__atomic_add_fetch(&srv->conf_gen, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&srv->conf_lock);
	pd_conf_unref(old);
	if (srv->loops)
		for (int i = 1; i < srv->nloops; i++)
			pd_loop_wake(&srv->loops[i]); /* drop the old one when idle too */
}

int pd_server_loops(const struct pd_server *srv)
{
	return srv->nloops;
}

void pd_server_stop(struct pd_server *srv)
{
	srv->stopping = 1;
	for (size_t i = 0; i < srv->nls; i++) {
		if (srv->ls[i].lev) {
			evconnlistener_free(srv->ls[i].lev);
			srv->ls[i].lev = NULL;
		}
	}
}

static void pd_loops_free(struct pd_server *srv)
{
	if (srv->loops == NULL)
		return;
	for (int i = 1; i < srv->nloops; i++)
		if (srv->loops[i].started) {
			/* the flag covers a break between two turns */
			__atomic_store_n(&srv->loops[i].stop, 1, __ATOMIC_RELEASE);
			event_base_loopbreak(srv->loops[i].base);
			pthread_join(srv->loops[i].thread, NULL);
		}
	/* Every loop is still now; the workers are stopped: give back
	 * what they had, then free every connection. */
	for (int i = 0; i < srv->nloops; i++) {
		struct pd_loop *lp = &srv->loops[i];
		struct pd_conn *c, *next;
		for (c = lp->incoming; c; c = next) {
			next = c->next;
			pd_conn_attach(c);
		}
		for (c = lp->done; c; c = c->next)
			c->busy = 0;
		lp->incoming = lp->done = NULL;
	}
	for (int i = 0; i < srv->nloops; i++) {
		struct pd_loop *lp = &srv->loops[i];
		while (lp->all) {
			lp->all->busy = 0;
			pd_conn_free(lp->all);
		}
		if (lp->notify)
			event_free(lp->notify);
		if (lp->efd >= 0)
			close(lp->efd);
		if (lp->own_base && lp->base)
			event_base_free(lp->base);
		pd_conf_unref(lp->conf);
		pthread_mutex_destroy(&lp->lock);
	}
	free(srv->loops);
	srv->loops = NULL;
}

void pd_server_free(struct pd_server *srv)
{
	if (srv == NULL)
		return;
	pd_server_stop(srv);
	if (srv->hk_started) {
		pthread_mutex_lock(&srv->hk_lock);
		srv->hk_quit = 1;
		pthread_cond_signal(&srv->hk_cond);
		pthread_mutex_unlock(&srv->hk_lock);
		pthread_join(srv->hk_thread, NULL);
	}
	pthread_mutex_lock(&srv->lock);
	srv->quit = 1;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
	for (int i = 0; i < srv->nthreads; i++)
		pthread_join(srv->threads[i], NULL);
	free(srv->threads);
	/* Jobs never started: give them back. */
	for (struct pd_conn *c = srv->jobs; c; c = c->next)
		c->busy = 0;
	pd_loops_free(srv);
	for (size_t i = 0; i < srv->nls; i++) {
		if (srv->ls[i].fd >= 0)
			close(srv->ls[i].fd);
		if (strncmp(srv->ls[i].text, "unix:", 5) == 0)
			unlink(srv->ls[i].text + 5);
		free(srv->ls[i].text);
	}
	free(srv->ls);
	pthread_mutex_destroy(&srv->lock);
	pthread_mutex_destroy(&srv->hk_lock);
	pthread_cond_destroy(&srv->hk_cond);
	pthread_mutex_destroy(&srv->conf_lock);
	pthread_cond_destroy(&srv->cond);
	pd_conf_unref(srv->conf);
	free(srv->listen_text);
	free(srv);
}

const char *pd_server_listen_text(const struct pd_server *srv)
{
	return srv->listen_text;
}
