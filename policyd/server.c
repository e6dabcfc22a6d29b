/* server.c - listeners, connections, the policy protocol framing and the
 * worker pool (server.h).
 *
 * Protocol (postfix.md §1.1): "name=value\n" lines ended by an empty line;
 * one "action=...\n\n" reply per request; the connection stays open. On
 * any trouble (malformed line, NUL byte, request over request_size_limit,
 * a request that is not request=smtpd_access_policy) the server logs a
 * warning and disconnects without a reply, as SMTPD_POLICY_README asks:
 * Postfix then retries or applies its default_action.
 */
#include "server.h"
#include "state.h"

#include "addr.h"
#include "log.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
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

struct pd_listener {
	char *text;
	int fd;
	struct evconnlistener *lev;
	struct pd_server *srv;
};

struct pd_conn {
	struct pd_server *srv;
	struct bufferevent *bev;
	struct attr_decoder dec;
	struct pd_instance inst;
	struct pd_conf *conf; /* held while a request is evaluated */
	struct buf reply;
	char peer[128];
	size_t req_bytes;
	int busy;    /* a request is on a worker */
	int closing; /* free when the worker gives it back */
	int eof;     /* the client closed its side: answer, then close */
	struct pd_conn *next;
	struct pd_conn *prev_all, *next_all;
};

struct pd_server {
	struct event_base *base;
	struct pd_conf *conf;
	char *listen_text;
	struct pd_listener *ls;
	size_t nls;
	long long nclients;
	struct pd_conn *all;
	int stopping;
	/* workers */
	pthread_t *threads;
	int nthreads;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct pd_conn *jobs, **jobs_tail;
	struct pd_conn *done;
	int quit;
	int efd;
	struct event *notify;
	struct event *expire;
	struct event *sync;
};

static void pd_conn_read(struct pd_conn *c);

/* ---- connections ---- */

static void pd_conn_free(struct pd_conn *c)
{
	struct pd_server *srv = c->srv;

	if (c->busy) { /* the worker still uses it: finish later */
		c->closing = 1;
		if (c->bev) {
			bufferevent_free(c->bev);
			c->bev = NULL;
		}
		return;
	}
	if (c->bev)
		bufferevent_free(c->bev);
	if (c->prev_all)
		c->prev_all->next_all = c->next_all;
	else
		srv->all = c->next_all;
	if (c->next_all)
		c->next_all->prev_all = c->prev_all;
	attr_decoder_free(&c->dec);
	pd_instance_free(&c->inst);
	buf_free(&c->reply);
	if (c->conf)
		pd_conf_unref(c->conf);
	free(c);
	srv->nclients--;
}

static void pd_conn_reply(struct pd_conn *c)
{
	struct buf out = BUF_INIT, err = BUF_INIT;

	buf_init(&out);
	buf_init(&err);
	/* Postfix treats a reply that is not UTF-8 as a failed request; a
	 * table result or a client's bytes must not cause that. */
	if (!addr_utf8_valid(c->reply.data, c->reply.len)) {
		msg_warn("%s: action is not valid UTF-8; non-ASCII bytes replaced by '?'", c->peer);
		for (size_t i = 0; i < c->reply.len; i++)
			if ((unsigned char)c->reply.data[i] >= 0x80)
				c->reply.data[i] = '?';
	}
	if (attr_print_reply(&out, buf_str(&c->reply), &err) < 0) {
		/* a check produced an action the protocol cannot carry */
		msg_warn("%s: cannot send action: %s; sending DUNNO", c->peer, buf_str(&err));
		buf_reset(&out);
		attr_print_reply(&out, "DUNNO", &err);
	}
	if (c->bev)
		bufferevent_write(c->bev, out.data, out.len);
	buf_free(&out);
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

/* A complete request is in c->dec.list. */
static int pd_conn_request(struct pd_conn *c)
{
	struct pd_server *srv = c->srv;
	const char *req = attr_get(&c->dec.list, "request");

	if (strcmp(req, "smtpd_access_policy") != 0) {
		msg_warn("%s: unrecognized request type: \"%.100s\"; disconnecting", c->peer, req);
		return -1;
	}
	if (c->dec.warn.len)
		msg_warn("%s: %s", c->peer, buf_str(&c->dec.warn));
	c->req_bytes = 0;
	c->conf = srv->conf;
	pd_conf_ref(c->conf);
	if (c->conf->blocking && srv->nthreads > 0) {
		c->busy = 1;
		pd_job_submit(srv, c);
		return 1;
	}
	pd_eval(c->conf, &c->dec.list, &c->inst, c->peer, &c->reply);
	pd_conf_unref(c->conf);
	c->conf = NULL;
	pd_conn_reply(c);
	return 0;
}

/* Feed what arrived to the decoder; answer every complete request (stop
 * at one that went to a worker: the rest waits in the input buffer).
 * Returns -1 when the connection was freed. */
static int pd_conn_process(struct pd_conn *c)
{
	struct evbuffer *in;

	while (c->bev && !c->busy) {
		struct evbuffer_iovec vec;
		size_t used = 0;
		enum attr_decode_status st;

		/* A client that pipelines without reading its replies waits
		 * until they drain (pd_conn_write_cb): bounded memory. */
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) > PD_OUTPUT_MAX)
			return 0;
		in = bufferevent_get_input(c->bev);
		if (evbuffer_peek(in, -1, NULL, &vec, 1) < 1 || vec.iov_len == 0)
			return 0;
		st = attr_decoder_feed(&c->dec, vec.iov_base, vec.iov_len, &used);
		evbuffer_drain(in, used);
		c->req_bytes += used;
		if (st == ATTR_DECODE_ERROR) {
			msg_warn("%s: malformed request: %s; disconnecting", c->peer,
				 buf_str(&c->dec.err));
			pd_conn_free(c);
			return -1;
		}
		if ((long long)c->req_bytes > c->srv->conf->size_limit) {
			msg_warn("%s: request longer than request_size_limit (%lld bytes); "
				 "disconnecting",
				 c->peer, c->srv->conf->size_limit);
			pd_conn_free(c);
			return -1;
		}
		if (st == ATTR_DECODE_DONE && pd_conn_request(c) < 0) {
			pd_conn_free(c);
			return -1;
		}
	}
	return 0;
}

/* After the client's EOF: once every complete request is answered,
 * close when the replies are written (pd_conn_write_cb). A script that
 * pipes requests into nc half-closes like this; Postfix never does. */
static void pd_conn_eof_check(struct pd_conn *c)
{
	if (!c->eof || c->busy || c->bev == NULL ||
	    evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
		return;
	if (attr_decoder_eof(&c->dec) < 0)
		msg_warn("%s: connection closed in the middle of a request", c->peer);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		pd_conn_free(c);
		return;
	}
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0); /* write_cb when all is sent */
}

static void pd_conn_read(struct pd_conn *c)
{
	if (pd_conn_process(c) == 0)
		pd_conn_eof_check(c);
}

static void pd_conn_read_cb(struct bufferevent *bev, void *arg)
{
	pd_conn_read(arg);
}

static void pd_conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct pd_conn *c = arg;

	if (c->eof && !c->busy && evbuffer_get_length(bufferevent_get_output(bev)) == 0 &&
	    evbuffer_get_length(bufferevent_get_input(bev)) == 0) {
		pd_conn_free(c); /* every reply sent after the client's EOF */
		return;
	}
	pd_conn_read(c);
}

static void pd_conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct pd_conn *c = arg;

	if (what & BEV_EVENT_TIMEOUT)
		msg_info("%s: idle timeout, disconnecting", c->peer);
	else if (what & BEV_EVENT_ERROR)
		msg_warn("%s: read error: %s", c->peer, strerror(EVUTIL_SOCKET_ERROR()));
	else if (what & BEV_EVENT_EOF) {
		c->eof = 1;
		pd_conn_eof_check(c); /* frees now, or after the last reply */
		return;
	}
	pd_conn_free(c);
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

static void pd_accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
			 int salen, void *arg)
{
	struct pd_listener *l = arg;
	struct pd_server *srv = l->srv;
	struct pd_conn *c;
	struct timeval idle = {(time_t)srv->conf->idle_timeout, 0};

	if (srv->stopping || srv->nclients >= srv->conf->max_clients) {
		if (!srv->stopping)
			msg_warn("too many clients (max_clients = %lld): refusing a connection "
				 "on %s",
				 srv->conf->max_clients, l->text);
		close(fd);
		return;
	}
	c = xcalloc(1, sizeof(*c));
	c->srv = srv;
	pd_peer_text(sa, (socklen_t)salen, l->text, c->peer, sizeof(c->peer));
	c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		close(fd);
		free(c);
		return;
	}
	/* The decoder bounds each name and value; request_size_limit bounds
	 * the whole request (both are external input limits). */
	attr_decoder_init(&c->dec, 0, 0);
	pd_instance_init(&c->inst);
	buf_init(&c->reply);
	c->next_all = srv->all;
	if (srv->all)
		srv->all->prev_all = c;
	srv->all = c;
	srv->nclients++;
	bufferevent_setcb(c->bev, pd_conn_read_cb, pd_conn_write_cb, pd_conn_event_cb, c);
	/* Stop reading while a request is evaluated and more waits: the
	 * input buffer never holds much more than one request. */
	bufferevent_setwatermark(c->bev, EV_READ, 0, (size_t)srv->conf->size_limit + 4096);
	bufferevent_setwatermark(c->bev, EV_WRITE, PD_OUTPUT_MAX / 2, 0);
	bufferevent_set_timeouts(c->bev, &idle, &idle);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (msg_verbose)
		msg_info("connect from %s", c->peer);
}

/* ---- workers ---- */

static void *pd_worker_main(void *arg)
{
	struct pd_server *srv = arg;
	uint64_t one = 1;

	pthread_mutex_lock(&srv->lock);
	for (;;) {
		struct pd_conn *c;

		while (srv->jobs == NULL && !srv->quit)
			pthread_cond_wait(&srv->cond, &srv->lock);
		if (srv->quit)
			break;
		c = srv->jobs;
		srv->jobs = c->next;
		if (srv->jobs == NULL)
			srv->jobs_tail = &srv->jobs;
		pthread_mutex_unlock(&srv->lock);
		pd_eval(c->conf, &c->dec.list, &c->inst, c->peer, &c->reply);
		pthread_mutex_lock(&srv->lock);
		c->next = srv->done;
		srv->done = c;
		if (write(srv->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			msg_warn("worker: cannot wake the event loop: %s", strerror(errno));
	}
	pthread_mutex_unlock(&srv->lock);
	return NULL;
}

static void pd_worker_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pd_server *srv = arg;
	struct pd_conn *done, *c, *rev = NULL;
	uint64_t n;

	if (read(srv->efd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		msg_warn("worker notification: %s", strerror(errno));
	pthread_mutex_lock(&srv->lock);
	done = srv->done;
	srv->done = NULL;
	pthread_mutex_unlock(&srv->lock);
	while (done) { /* oldest first */
		c = done;
		done = c->next;
		c->next = rev;
		rev = c;
	}
	while ((c = rev) != NULL) {
		rev = c->next;
		c->busy = 0;
		pd_conf_unref(c->conf);
		c->conf = NULL;
		if (c->closing) {
			pd_conn_free(c);
			continue;
		}
		pd_conn_reply(c);
		pd_conn_read(c); /* pipelined requests */
	}
}

static void pd_sync_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pd_server *srv = arg;

	pd_state_sync(srv->conf->state);
}

static void pd_expire_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pd_server *srv = arg;

	if (srv->conf->state && !pd_state_blocking(srv->conf->state))
		pd_state_expire(srv->conf->state, (long long)time(NULL));
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
	srv->efd = -1;
	srv->jobs_tail = &srv->jobs;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->cond, NULL);
	srv->listen_text = xstrdup(cfg_get_raw(pc->cfg, NULL, "listen"));
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

int pd_server_start(struct pd_server *srv, struct buf *err)
{
	struct timeval every = {PD_EXPIRE_INTERVAL, 0}, sync = {PD_SYNC_INTERVAL, 0};

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
	srv->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (srv->efd < 0) {
		buf_printf(err, "eventfd: %s", strerror(errno));
		return -1;
	}
	srv->notify = event_new(srv->base, srv->efd, EV_READ | EV_PERSIST, pd_worker_done_cb, srv);
	srv->expire = event_new(srv->base, -1, EV_PERSIST, pd_expire_cb, srv);
	srv->sync = event_new(srv->base, -1, EV_PERSIST, pd_sync_cb, srv);
	if (srv->notify == NULL || srv->expire == NULL || srv->sync == NULL ||
	    event_add(srv->notify, NULL) < 0 || event_add(srv->expire, &every) < 0 ||
	    event_add(srv->sync, &sync) < 0) {
		buf_puts(err, "libevent: cannot add the worker events");
		return -1;
	}
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

	if (strcmp(now ? now : "", srv->listen_text ? srv->listen_text : "") != 0)
		msg_warn("reload: a changed \"listen\" takes effect only after a restart");
	pd_conf_ref(pc);
	pd_conf_unref(srv->conf);
	srv->conf = pc;
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

void pd_server_free(struct pd_server *srv)
{
	if (srv == NULL)
		return;
	pd_server_stop(srv);
	pthread_mutex_lock(&srv->lock);
	srv->quit = 1;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
	for (int i = 0; i < srv->nthreads; i++)
		pthread_join(srv->threads[i], NULL);
	free(srv->threads);
	/* Jobs never started or finished but not collected: give them back. */
	for (struct pd_conn *c = srv->jobs; c; c = c->next)
		c->busy = 0;
	for (struct pd_conn *c = srv->done; c; c = c->next)
		c->busy = 0;
	while (srv->all) {
		struct pd_conn *c = srv->all;
		c->busy = 0;
		pd_conn_free(c);
	}
	for (size_t i = 0; i < srv->nls; i++) {
		if (srv->ls[i].fd >= 0)
			close(srv->ls[i].fd);
		if (strncmp(srv->ls[i].text, "unix:", 5) == 0)
			unlink(srv->ls[i].text + 5);
		free(srv->ls[i].text);
	}
	free(srv->ls);
	if (srv->notify)
		event_free(srv->notify);
	if (srv->expire)
		event_free(srv->expire);
	if (srv->sync)
		event_free(srv->sync);
	if (srv->efd >= 0)
		close(srv->efd);
	pthread_mutex_destroy(&srv->lock);
	pthread_cond_destroy(&srv->cond);
	pd_conf_unref(srv->conf);
	free(srv->listen_text);
	free(srv);
}

const char *pd_server_listen_text(const struct pd_server *srv)
{
	return srv->listen_text;
}
