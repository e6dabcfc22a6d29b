/* control.c - ternd's control socket server (control.h in this dir).
 *
 * One request per connection, decoded with the bounded attribute decoder
 * (a local admin tool, but still input from outside the process); the
 * reply is written and the connection closed. Dispatch is a table;
 * commands marked blocking run on a detached thread and post their reply
 * back to the loop, so a slow fsync never stalls the main loop.
 */
#include "control.h"

#include "engine.h"
#include "log.h"
#include "queue.h"
#include "sched.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CONTROL_MAX_STRING 65536 /* "ids" may list many queue IDs */
#define CONTROL_MAX_ATTRS 32
#define CONTROL_TIMEOUT 30 /* seconds to send a request */

struct control_server {
	struct event_base *base;
	struct evconnlistener *lev;
	struct control_ops ops;
	char *path;
};

struct control_conn {
	struct control_server *cs;
	struct bufferevent *bev;
	struct attr_decoder dec;
	struct attr_list reply;
	int after; /* 0, or 1 = stop, 2 = abort once the reply is out */
};

struct control_cmd {
	const char *name;
	int (*run)(struct control_conn *c, const struct attr_list *req, struct buf *err);
	int blocking;
};

static void control_conn_free(struct control_conn *c)
{
	bufferevent_free(c->bev);
	attr_decoder_free(&c->dec);
	attr_list_free(&c->reply);
	free(c);
}

/* ---- commands ---- */

static int control_cmd_status(struct control_conn *c, const struct attr_list *req, struct buf *err)
{
	c->cs->ops.status(c->cs->ops.arg, &c->reply);
	return 0;
}

static int control_cmd_reload(struct control_conn *c, const struct attr_list *req, struct buf *err)
{
	return c->cs->ops.reload(c->cs->ops.arg, err);
}

static int control_cmd_stop(struct control_conn *c, const struct attr_list *req, struct buf *err)
{
	c->after = 1;
	return 0;
}

static int control_cmd_abort(struct control_conn *c, const struct attr_list *req, struct buf *err)
{
	c->after = 2;
	return 0;
}

static int control_cmd_flush(struct control_conn *c, const struct attr_list *req, struct buf *err)
{
	struct sched *s = c->cs->ops.sched(c->cs->ops.arg);
	if (s)
		sched_flush(s);
	return 0;
}

static int control_cmd_log(struct control_conn *c, const struct attr_list *req, struct buf *err)
{
	msg_info("%s", attr_get(req, "text"));
	return 0;
}

static int control_pause(struct control_conn *c, int paused, struct buf *err)
{
	struct sched *s = c->cs->ops.sched(c->cs->ops.arg);
	if (s == NULL) {
		buf_puts(err, "the scheduler is not running");
		return -1;
	}
	return sched_pause(s, paused, err);
}

static int control_cmd_pause(struct control_conn *c, const struct attr_list *req, struct buf *err)
{
	return control_pause(c, 1, err);
}

static int control_cmd_resume(struct control_conn *c, const struct attr_list *req, struct buf *err)
{
	return control_pause(c, 0, err);
}

/* "ALL": every live message, collected first so the journal calls do
 * not run inside queue_foreach(). */
static int control_collect(void *arg, const struct queue_info *info)
{
	struct buf *ids = arg;
	buf_printf(ids, "%s ", info->qid);
	return 0;
}

struct control_qop {
	const char *cmd;
	enum queue_status (*fn)(struct queue *q, const char *qid);
	const char *logtext; /* postsuper's per-message log line */
};

static const struct control_qop control_qops[] = {
    {"queue-hold", queue_hold, "placed on hold"},
    {"queue-release", queue_release, "released from hold"},
    {"queue-requeue", queue_requeue, "requeued"},
    {"queue-delete", queue_delete, "removed"},
};

static void control_qop_apply(const struct control_qop *op, struct queue *q, const char *ids,
			      int *done, struct buf *errors)
{
	char *copy = xstrdup(ids), *save = NULL;

	for (char *id = strtok_r(copy, " \t,", &save); id; id = strtok_r(NULL, " \t,", &save)) {
		enum queue_status st = op->fn(q, id);
		if (st == QUEUE_OK) {
			msg_qid(id, "%s", op->logtext);
			(*done)++;
		} else {
			buf_printf(errors, "%s%s: %s", errors->len ? "; " : "", id,
				   queue_strerror(st));
		}
	}
	free(copy);
}

static int control_cmd_queue(struct control_conn *c, const struct attr_list *req, struct buf *err)
{
	const char *cmd = attr_get(req, "command"), *ids = attr_get(req, "ids");
	struct queue *q = c->cs->ops.queue(c->cs->ops.arg);
	struct sched *s = c->cs->ops.sched(c->cs->ops.arg);
	struct buf all = BUF_INIT, errors = BUF_INIT, count = BUF_INIT;
	const struct control_qop *op = NULL;
	int done = 0, rc = 0;

	for (size_t i = 0; i < sizeof(control_qops) / sizeof(control_qops[0]); i++)
		if (strcmp(control_qops[i].cmd, cmd) == 0)
			op = &control_qops[i];
	buf_init(&all);
	buf_init(&errors);
	buf_init(&count);
	if (op == NULL || q == NULL) {
		buf_puts(err, q == NULL ? "the queue is not open" : "unknown queue command");
		rc = -1;
		goto done;
	}
	if (strcmp(ids, "ALL") == 0) {
		queue_foreach(q, control_collect, &all);
		ids = buf_str(&all);
	}
	control_qop_apply(op, q, ids, &done, &errors);
	if (done && s)
		sched_wakeup(s);
	buf_printf(&count, "%d", done);
	attr_list_set(&c->reply, "count", buf_str(&count));
	if (errors.len)
		attr_list_set(&c->reply, "errors", buf_str(&errors));
done:
	buf_free(&all);
	buf_free(&errors);
	buf_free(&count);
	return rc;
}

static const struct control_cmd control_cmds[] = {
    {"status", control_cmd_status, 0},
    {"reload", control_cmd_reload, 0},
    {"stop", control_cmd_stop, 0},
    {"abort", control_cmd_abort, 0},
    {"flush", control_cmd_flush, 0},
    {"log", control_cmd_log, 0},
    {"queue-hold", control_cmd_queue, 1},
    {"queue-release", control_cmd_queue, 1},
    {"queue-requeue", control_cmd_queue, 1},
    {"queue-delete", control_cmd_queue, 1},
    {"delivery-pause", control_cmd_pause, 1},
    {"delivery-resume", control_cmd_resume, 1},
};

/* ---- connection handling ---- */

static void control_write_cb(struct bufferevent *bev, void *arg)
{
	struct control_conn *c = arg;
	struct control_server *cs = c->cs;
	int after = c->after;

	control_conn_free(c);
	if (after)
		cs->ops.stop(cs->ops.arg, after == 2);
}

static void control_reply_send(struct control_conn *c, int rc, const struct buf *why)
{
	struct buf out = BUF_INIT, err = BUF_INIT;

	buf_init(&out);
	buf_init(&err);
	attr_list_set(&c->reply, "status", rc == 0 ? "ok" : "error");
	if (rc != 0)
		attr_list_set(&c->reply, "message", buf_str(why));
	if (attr_print_list(&out, &c->reply, &err) < 0) {
		buf_reset(&out);
		attr_print(&out, "status", "error", &err);
		attr_print(&out, "message", "reply not encodable", &err);
		buf_putc(&out, '\n');
	}
	bufferevent_setcb(c->bev, NULL, control_write_cb, NULL, c);
	bufferevent_enable(c->bev, EV_WRITE);
	bufferevent_write(c->bev, out.data, out.len);
	buf_free(&out);
	buf_free(&err);
}

struct control_job {
	struct control_conn *c;
	const struct control_cmd *cmd;
	struct buf err;
	int rc;
};

static void control_job_done(void *arg)
{
	struct control_job *job = arg;

	control_reply_send(job->c, job->rc, &job->err);
	buf_free(&job->err);
	free(job);
}

static void *control_job_run(void *arg)
{
	struct control_job *job = arg;

	log_thread_service("postsuper"); /* queue changes by the admin */
	job->rc = job->cmd->run(job->c, &job->c->dec.list, &job->err);
	if (engine_run_on(job->c->cs->base, control_job_done, job) < 0)
		msg_warn("control: cannot return a reply to the main loop");
	return NULL;
}

static void control_dispatch(struct control_conn *c)
{
	const char *name = attr_get(&c->dec.list, "command");
	const struct control_cmd *cmd = NULL;
	struct control_job *job;
	pthread_t t;

	bufferevent_disable(c->bev, EV_READ);
	for (size_t i = 0; i < sizeof(control_cmds) / sizeof(control_cmds[0]); i++)
		if (strcmp(control_cmds[i].name, name) == 0)
			cmd = &control_cmds[i];
	job = xcalloc(1, sizeof(*job));
	job->c = c;
	job->cmd = cmd;
	buf_init(&job->err);
	if (cmd == NULL) {
		buf_printf(&job->err, "unknown command \"%s\"", name);
		job->rc = -1;
	} else if (!cmd->blocking) {
		job->rc = cmd->run(c, &c->dec.list, &job->err);
	} else if (pthread_create(&t, NULL, control_job_run, job) == 0) {
		pthread_detach(t);
		return;
	} else {
		buf_puts(&job->err, "cannot start a worker thread");
		job->rc = -1;
	}
	control_job_done(job);
}

static void control_read_cb(struct bufferevent *bev, void *arg)
{
	struct control_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len = evbuffer_get_length(in), used = 0;
	const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);

	switch (attr_decoder_feed(&c->dec, data, len, &used)) {
	case ATTR_DECODE_MORE:
		evbuffer_drain(in, used);
		break;
	case ATTR_DECODE_DONE:
		evbuffer_drain(in, len);
		control_dispatch(c);
		break;
	case ATTR_DECODE_ERROR:
		msg_warn("control: bad request: %s", buf_str(&c->dec.err));
		control_conn_free(c);
		break;
	}
}

static void control_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct control_conn *c = arg;

	if (what & BEV_EVENT_TIMEOUT)
		msg_warn("control: timeout reading a request");
	control_conn_free(c);
}

static void control_accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
			      int salen, void *arg)
{
	struct control_server *cs = arg;
	struct control_conn *c = xcalloc(1, sizeof(*c));
	struct timeval tv = {CONTROL_TIMEOUT, 0};

	c->cs = cs;
	attr_decoder_init(&c->dec, CONTROL_MAX_STRING, CONTROL_MAX_ATTRS);
	attr_list_init(&c->reply);
	c->bev = bufferevent_socket_new(cs->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		close(fd);
		attr_decoder_free(&c->dec);
		free(c);
		return;
	}
	bufferevent_setcb(c->bev, control_read_cb, NULL, control_event_cb, c);
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	bufferevent_enable(c->bev, EV_READ);
}

/* ---- socket setup ---- */

/* A socket file nobody answers on is left over from a crash: remove it.
 * One that answers belongs to a running ternd. */
static int control_stale_check(const struct sockaddr_un *sun, struct buf *err)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), rc = 0;

	if (fd < 0) {
		buf_printf(err, "socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0) {
		buf_printf(err, "the Tern mail system is already running (control socket %s)",
			   sun->sun_path);
		rc = -1;
	} else if (errno == ECONNREFUSED) {
		unlink(sun->sun_path);
	}
	close(fd);
	return rc;
}

static int control_bind(const char *path, uid_t uid, gid_t gid, struct buf *err)
{
	struct sockaddr_un sun;
	mode_t old;
	int fd = -1;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		buf_printf(err, "control_socket path too long: %s", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	if (control_stale_check(&sun, err) < 0)
		return -1;
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
		goto fail;
	/* Created 0600 from the start: no window where others could connect. */
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		umask(old);
		goto fail;
	}
	umask(old);
	if (chmod(path, 0600) < 0 || (geteuid() == 0 && chown(path, uid, gid) < 0) ||
	    listen(fd, 64) < 0)
		goto fail;
	return fd;
fail:
	buf_printf(err, "control socket %s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

struct control_server *control_server_open(struct event_base *base, const char *path, uid_t uid,
					   gid_t gid, const struct control_ops *ops,
					   struct buf *err)
{
	struct control_server *cs;
	int fd = control_bind(path, uid, gid, err);

	if (fd < 0)
		return NULL;
	cs = xcalloc(1, sizeof(*cs));
	cs->base = base;
	cs->ops = *ops;
	cs->path = xstrdup(path);
	cs->lev = evconnlistener_new(base, control_accept_cb, cs, LEV_OPT_CLOSE_ON_FREE, -1, fd);
	if (cs->lev == NULL) {
		buf_printf(err, "control socket %s: cannot listen", path);
		close(fd);
		unlink(path);
		free(cs->path);
		free(cs);
		return NULL;
	}
	return cs;
}

void control_server_close(struct control_server *cs)
{
	if (cs == NULL)
		return;
	evconnlistener_free(cs->lev);
	unlink(cs->path);
	free(cs->path);
	free(cs);
}
