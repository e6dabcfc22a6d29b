/* cmd_queue.c - "tern queue": list (postqueue -p / -j, mailq), show
 * (postcat -q), delete|hold|release|requeue (postsuper -d/-h/-H/-r),
 * flush [domain] (postqueue -f / -s) and shape (qshape).
 *
 * Reading works whether ternd runs or not: the queue is opened
 * read-only (no lock). Changes go through ternd's control socket when it
 * runs; when it does not, the queue is opened read-write here (its lock
 * keeps a starting ternd out meanwhile).
 */
#include "cfg.h"
#include "control.h"
#include "log.h"
#include "params.h"
#include "tern.h"

#include "../ternd/queue.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QCMD_ID_BATCH 4000 /* bytes of "ids" per control request */
#define QCMD_TIMEOUT 60	   /* seconds for one control request */

struct qcmd {
	struct cfg *cfg;
	struct buf queue_dir, socket;
};

/* One message as listed: a copy of queue_info plus its envelope. */
struct qcmd_msg {
	char *qid, *sender, *reason;
	enum queue_msg_state state;
	time_t arrival;
	size_t size;
};

struct qcmd_msgs {
	struct qcmd_msg *v;
	size_t n, cap;
};

static int qcmd_load(struct qcmd *c, const char *dir)
{
	struct buf err = BUF_INIT;
	int rc = -1;

	c->cfg = cfg_new(tern_params);
	if (cfg_load_dir(c->cfg, tern_config_dir(dir), TERN_CONF_FILE, 1, &err) < 0 ||
	    cfg_get_path(c->cfg, NULL, "queue_directory", &c->queue_dir, &err) < 0 ||
	    cfg_get_path(c->cfg, NULL, "control_socket", &c->socket, &err) < 0)
		tern_error("%s", buf_str(&err));
	else
		rc = 0;
	buf_free(&err);
	return rc;
}

static void qcmd_free(struct qcmd *c)
{
	if (c->cfg)
		cfg_free(c->cfg);
	buf_free(&c->queue_dir);
	buf_free(&c->socket);
}

static struct queue *qcmd_open(struct qcmd *c, int rdonly)
{
	struct queue_opts opts = {rdonly ? QUEUE_OPEN_RDONLY : 0, 0, 0, 0};
	struct buf err = BUF_INIT;
	struct queue *q = NULL;
	int st = queue_open(c->queue_dir.data, &opts, &q, &err);

	if (st != QUEUE_OK) {
		tern_error("open queue %s: %s", c->queue_dir.data,
			   err.len ? err.data : queue_strerror((enum queue_status)st));
		q = NULL;
	}
	buf_free(&err);
	return q;
}

/* ---- collecting messages ---- */

static int qcmd_collect(void *arg, const struct queue_info *info)
{
	struct qcmd_msgs *m = arg;
	struct qcmd_msg *e;

	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 64;
		m->v = xrealloc(m->v, m->cap * sizeof(*m->v));
	}
	e = &m->v[m->n++];
	e->qid = xstrdup(info->qid);
	e->sender = xstrdup(info->sender ? info->sender : "");
	e->reason = info->reason ? xstrdup(info->reason) : NULL;
	e->state = info->state;
	e->arrival = info->arrival;
	e->size = info->size;
	return 0;
}

/* showq's order: active, then deferred, then hold; oldest first. */
static int qcmd_msg_cmp(const void *a, const void *b)
{
	const struct qcmd_msg *x = a, *y = b;

	if (x->state != y->state)
		return (int)x->state - (int)y->state;
	if (x->arrival != y->arrival)
		return x->arrival < y->arrival ? -1 : 1;
	return strcmp(x->qid, y->qid);
}

static void qcmd_msgs_get(struct queue *q, struct qcmd_msgs *m)
{
	queue_foreach(q, qcmd_collect, m);
	if (m->n > 1)
		qsort(m->v, m->n, sizeof(*m->v), qcmd_msg_cmp);
}

static void qcmd_msgs_free(struct qcmd_msgs *m)
{
	for (size_t i = 0; i < m->n; i++) {
		free(m->v[i].qid);
		free(m->v[i].sender);
		free(m->v[i].reason);
	}
	free(m->v);
}

static const char *qcmd_state_name(enum queue_msg_state s)
{
	return s == QUEUE_STATE_ACTIVE ? "active" : s == QUEUE_STATE_HOLD ? "hold" : "deferred";
}

/* The envelope, for the recipients still pending; 0 ok, -1 gone. */
static int qcmd_env(struct queue *q, const char *qid, struct queue_env *env)
{
	struct buf content = BUF_INIT, err = BUF_INIT;
	enum queue_status st;

	queue_env_init(env);
	st = queue_load(q, qid, env, &content, &err);
	buf_free(&content);
	buf_free(&err);
	return st == QUEUE_OK ? 0 : -1;
}

/* ---- list ---- */

/* postqueue -p (showq_compat.c): "%-11s %7ld %20.20s %s", the ID marked
 * '*' when active, '!' when held; the reason right-aligned; 41 columns
 * of indent for recipients. */
static void qcmd_list_one(const struct qcmd_msg *m, const struct queue_env *env)
{
	char id[QUEUE_ID_SIZE + 2], when[32];
	int pad;

	snprintf(id, sizeof(id), "%s%s", m->qid,
		 m->state == QUEUE_STATE_ACTIVE ? "*"
		 : m->state == QUEUE_STATE_HOLD ? "!"
						: "");
	ctime_r(&m->arrival, when);
	printf("%-11s %7ld %20.20s %s\n", id, (long)m->size, when,
	       *m->sender ? m->sender : "MAILER-DAEMON");
	if (m->reason && *m->reason && m->state != QUEUE_STATE_ACTIVE) {
		pad = 76 - (int)strlen(m->reason);
		printf("%*s(%s)\n", pad > 0 ? pad : 0, "", m->reason);
	}
	for (size_t i = 0; i < env->nrcpt; i++)
		if (env->rcpt[i].state == QUEUE_RCPT_PENDING)
			printf("%41s%s\n", "", env->rcpt[i].addr);
	printf("\n");
}

static void qcmd_json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20 || ch == 0x7f)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

/* postqueue -j: one JSON object per line, Postfix's field names. */
static void qcmd_json_one(const struct qcmd_msg *m, const struct queue_env *env)
{
	int first = 1;

	printf("{\"queue_name\": \"%s\", \"queue_id\": ", qcmd_state_name(m->state));
	qcmd_json_str(m->qid);
	printf(", \"arrival_time\": %lld, \"message_size\": %zu, \"forced_expire\": false, "
	       "\"sender\": ",
	       (long long)m->arrival, m->size);
	qcmd_json_str(m->sender);
	printf(", \"recipients\": [");
	for (size_t i = 0; i < env->nrcpt; i++) {
		if (env->rcpt[i].state != QUEUE_RCPT_PENDING)
			continue;
		printf("%s{\"address\": ", first ? "" : ", ");
		qcmd_json_str(env->rcpt[i].addr);
		if (m->reason && *m->reason && m->state != QUEUE_STATE_ACTIVE) {
			printf(", \"delay_reason\": ");
			qcmd_json_str(m->reason);
		}
		printf("}");
		first = 0;
	}
	printf("]}\n");
}

static int qcmd_list(struct qcmd *c, int json)
{
	struct queue *q = qcmd_open(c, 1);
	struct qcmd_msgs m = {NULL, 0, 0};
	struct queue_env env;
	unsigned long long bytes = 0;
	size_t shown = 0;

	if (q == NULL)
		return 1;
	qcmd_msgs_get(q, &m);
	for (size_t i = 0; i < m.n; i++) {
		if (qcmd_env(q, m.v[i].qid, &env) < 0)
			continue; /* finished meanwhile */
		if (!json && shown == 0)
			printf("%-11s %7s %-20s %s\n", "-Queue ID-", "--Size--",
			       "----Arrival Time----", "-Sender/Recipient-------");
		if (json)
			qcmd_json_one(&m.v[i], &env);
		else
			qcmd_list_one(&m.v[i], &env);
		queue_env_free(&env);
		bytes += m.v[i].size;
		shown++;
	}
	if (!json && shown == 0)
		printf("Mail queue is empty\n");
	else if (!json)
		printf("-- %llu Kbytes in %zu Request%s.\n", bytes / 1024, shown,
		       shown == 1 ? "" : "s");
	qcmd_msgs_free(&m);
	queue_close(q);
	return 0;
}

/* ---- show ---- */

static const char *qcmd_rcpt_record(enum queue_rcpt_state s)
{
	return s == QUEUE_RCPT_PENDING ? "recipient" : "done_recipient";
}

/* postcat -q: envelope records, then the content, in postcat's frame. */
static void qcmd_show_env(const char *qid, const struct queue_env *env)
{
	char when[32];

	ctime_r(&env->arrival, when);
	when[strcspn(when, "\n")] = 0;
	printf("*** ENVELOPE RECORDS %s ***\n", qid);
	printf("message_size: %zu\n", env->size);
	printf("message_arrival_time: %s\n", when);
	if (env->client_name)
		printf("named_attribute: log_client_name=%s\n", env->client_name);
	if (env->client_addr)
		printf("named_attribute: log_client_address=%s\n", env->client_addr);
	if (env->helo && *env->helo)
		printf("named_attribute: log_helo_name=%s\n", env->helo);
	if (env->protocol)
		printf("named_attribute: log_protocol_name=%s\n", env->protocol);
	if (env->sasl_username)
		printf("named_attribute: sasl_username=%s\n", env->sasl_username);
	printf("sender: %s\n", env->sender);
	for (size_t i = 0; i < env->nrcpt; i++) {
		if (env->rcpt[i].orcpt)
			printf("original_recipient: %s\n", env->rcpt[i].orcpt);
		printf("%s: %s\n", qcmd_rcpt_record(env->rcpt[i].state), env->rcpt[i].addr);
	}
}

static int qcmd_show(struct qcmd *c, const char *qid)
{
	struct queue *q = qcmd_open(c, 1);
	struct queue_env env;
	struct buf content = BUF_INIT, err = BUF_INIT;
	int rc = 1;

	if (q == NULL)
		return 1;
	queue_env_init(&env);
	if (queue_load(q, qid, &env, &content, &err) != QUEUE_OK) {
		tern_error("%s: no such message", qid);
		goto out;
	}
	qcmd_show_env(qid, &env);
	printf("*** MESSAGE CONTENTS %s ***\n", qid);
	fwrite(content.data ? content.data : "", 1, content.len, stdout);
	if (content.len && content.data[content.len - 1] != '\n')
		putchar('\n');
	printf("*** HEADER EXTRACTED %s ***\n", qid);
	printf("*** MESSAGE FILE END %s ***\n", qid);
	rc = 0;
out:
	queue_env_free(&env);
	buf_free(&content);
	buf_free(&err);
	queue_close(q);
	return rc;
}

/* ---- delete, hold, release, requeue ---- */

struct qcmd_op {
	const char *name;      /* tern queue NAME */
	const char *control;   /* control command */
	const char *done_text; /* postsuper's summary */
	enum queue_status (*fn)(struct queue *q, const char *qid);
};

static const struct qcmd_op qcmd_ops[] = {
    {"delete", "queue-delete", "Deleted", queue_delete},
    {"hold", "queue-hold", "Placed on hold", queue_hold},
    {"release", "queue-release", "Released from hold", queue_release},
    {"requeue", "queue-requeue", "Requeued", queue_requeue},
};

/* mail_queue_id_ok(): [A-Za-z0-9_], bounded. */
static int qcmd_id_ok(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n >= QUEUE_ID_SIZE)
		return 0;
	for (; *id; id++)
		if (!isalnum((unsigned char)*id) && *id != '_')
			return 0;
	return 1;
}

static void qcmd_id_add(struct buf *ids, const char *id)
{
	if (strcmp(id, "ALL") == 0 || qcmd_id_ok(id))
		buf_printf(ids, "%s%s", ids->len ? " " : "", id);
	else
		msg_warn("invalid mail queue id: %.100s", id);
}

/* "-": IDs from stdin, white-space separated (seed 003's awk pipeline). */
static void qcmd_ids_stdin(struct buf *ids)
{
	struct buf tok = BUF_INIT;
	int ch;

	buf_init(&tok);
	do {
		ch = getchar();
		if (ch != EOF && !isspace(ch)) {
			if (tok.len < 256)
				buf_putc(&tok, ch);
			continue;
		}
		if (tok.len)
			qcmd_id_add(ids, tok.data);
		buf_reset(&tok);
	} while (ch != EOF);
	buf_free(&tok);
}

static void qcmd_summary(const struct qcmd_op *op, long count)
{
	if (count > 0)
		msg_info("%s: %ld message%s", op->done_text, count, count == 1 ? "" : "s");
}

/* Warnings from the daemon's "errors" attribute: "ID: text; ID: text". */
static void qcmd_reply_errors(const char *errors)
{
	char *copy = xstrdup(errors), *save = NULL;

	for (char *e = strtok_r(copy, ";", &save); e; e = strtok_r(NULL, ";", &save))
		msg_warn("%s", e + strspn(e, " "));
	free(copy);
}

/* One control request; CONTROL_DOWN when ternd does not run. */
static enum control_status qcmd_request(struct qcmd *c, const char *command, const char *ids,
					long *count)
{
	struct attr_list req, reply;
	struct buf err = BUF_INIT;
	enum control_status st;

	attr_list_init(&req);
	attr_list_init(&reply);
	attr_list_set(&req, "command", command);
	if (ids)
		attr_list_set(&req, "ids", ids);
	st = control_request(c->socket.data, &req, &reply, QCMD_TIMEOUT, &err);
	if (st == CONTROL_ERROR) {
		tern_error("%s", buf_str(&err));
	} else if (st == CONTROL_OK && strcmp(attr_get(&reply, "status"), "ok") != 0) {
		tern_error("%s", attr_get(&reply, "message"));
		st = CONTROL_ERROR;
	} else if (st == CONTROL_OK) {
		*count += atol(attr_get(&reply, "count"));
		if (attr_has(&reply, "errors"))
			qcmd_reply_errors(attr_get(&reply, "errors"));
	}
	attr_list_free(&req);
	attr_list_free(&reply);
	buf_free(&err);
	return st;
}

/* Through ternd, in batches that fit a control request. */
static enum control_status qcmd_op_daemon(struct qcmd *c, const struct qcmd_op *op, const char *ids,
					  long *count)
{
	struct buf batch = BUF_INIT;
	enum control_status st = CONTROL_OK;
	char *copy = xstrdup(ids), *save = NULL;

	buf_init(&batch);
	for (char *id = strtok_r(copy, " ", &save); id && st == CONTROL_OK;
	     id = strtok_r(NULL, " ", &save)) {
		buf_printf(&batch, "%s%s", batch.len ? " " : "", id);
		if (batch.len > QCMD_ID_BATCH) {
			st = qcmd_request(c, op->control, batch.data, count);
			buf_reset(&batch);
		}
	}
	if (st == CONTROL_OK && batch.len)
		st = qcmd_request(c, op->control, batch.data, count);
	free(copy);
	buf_free(&batch);
	return st;
}

/* ternd is down: change the queue here, as postsuper does. */
static int qcmd_op_direct(struct qcmd *c, const struct qcmd_op *op, const char *ids, long *count)
{
	struct queue *q = qcmd_open(c, 0);
	struct qcmd_msgs all = {NULL, 0, 0};
	char *copy = xstrdup(ids), *save = NULL;

	if (q == NULL) {
		free(copy);
		return 1;
	}
	for (char *id = strtok_r(copy, " ", &save); id; id = strtok_r(NULL, " ", &save)) {
		if (strcmp(id, "ALL") == 0) {
			qcmd_msgs_get(q, &all);
			for (size_t i = 0; i < all.n; i++)
				*count += op->fn(q, all.v[i].qid) == QUEUE_OK;
			continue;
		}
		enum queue_status st = op->fn(q, id);
		if (st == QUEUE_OK)
			(*count)++;
		else
			msg_warn("%s: %s", id, queue_strerror(st));
	}
	qcmd_msgs_free(&all);
	free(copy);
	queue_close(q);
	return 0;
}

static int qcmd_op_run(struct qcmd *c, const struct qcmd_op *op, int argc, char **argv)
{
	struct buf ids = BUF_INIT;
	long count = 0;
	int rc = 0;

	buf_init(&ids);
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "-") == 0)
			qcmd_ids_stdin(&ids);
		else
			qcmd_id_add(&ids, argv[i]);
	}
	if (ids.len > 0) {
		enum control_status st = qcmd_op_daemon(c, op, ids.data, &count);
		if (st == CONTROL_DOWN)
			rc = qcmd_op_direct(c, op, ids.data, &count);
		else if (st == CONTROL_ERROR)
			rc = 1;
	}
	qcmd_summary(op, count);
	buf_free(&ids);
	return rc;
}

/* ---- flush ---- */

static int qcmd_rcpt_in_domain(const struct queue_env *env, const char *domain)
{
	for (size_t i = 0; i < env->nrcpt; i++) {
		const char *at = strrchr(env->rcpt[i].addr, '@');
		if (env->rcpt[i].state == QUEUE_RCPT_PENDING && at &&
		    strcasecmp(at + 1, domain) == 0)
			return 1;
	}
	return 0;
}

/* postqueue -s site: requeue the deferred mail for that domain. */
static int qcmd_flush_domain(struct qcmd *c, const char *domain)
{
	struct queue *q = qcmd_open(c, 1);
	struct qcmd_msgs m = {NULL, 0, 0};
	struct buf ids = BUF_INIT;
	struct queue_env env;
	long count = 0;
	int rc = 0;

	if (q == NULL)
		return 1;
	buf_init(&ids);
	qcmd_msgs_get(q, &m);
	for (size_t i = 0; i < m.n; i++) {
		if (m.v[i].state != QUEUE_STATE_DEFERRED || qcmd_env(q, m.v[i].qid, &env) < 0)
			continue;
		if (qcmd_rcpt_in_domain(&env, domain))
			qcmd_id_add(&ids, m.v[i].qid);
		queue_env_free(&env);
	}
	queue_close(q);
	if (ids.len && qcmd_op_daemon(c, &qcmd_ops[3], ids.data, &count) != CONTROL_OK)
		rc = 1;
	qcmd_msgs_free(&m);
	buf_free(&ids);
	return rc;
}

static int qcmd_flush(struct qcmd *c, const char *domain)
{
	long count = 0;
	enum control_status st;

	st = domain ? (qcmd_flush_domain(c, domain) == 0 ? CONTROL_OK : CONTROL_ERROR)
		    : qcmd_request(c, "flush", NULL, &count);
	if (st == CONTROL_DOWN)
		tern_error("the Tern mail system is not running");
	return st == CONTROL_OK ? 0 : 1;
}

/* ---- shape ---- */

/* qshape's buckets: age in minutes below 5, 10, 20, ... 1280, then older. */
#define QSHAPE_NBUCKET 10
static const int qshape_limits[QSHAPE_NBUCKET] = {5, 10, 20, 40, 80, 160, 320, 640, 1280, 0};

struct qshape_row {
	char *domain;
	long count[QSHAPE_NBUCKET + 1]; /* [0] = total */
};

struct qshape {
	struct qshape_row *rows; /* rows[0] = TOTAL */
	size_t n, cap;
};

static struct qshape_row *qshape_row(struct qshape *s, const char *domain)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->rows[i].domain, domain) == 0)
			return &s->rows[i];
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 16;
		s->rows = xrealloc(s->rows, s->cap * sizeof(*s->rows));
	}
	memset(&s->rows[s->n], 0, sizeof(s->rows[0]));
	s->rows[s->n].domain = xstrdup(domain);
	return &s->rows[s->n++];
}

static int qshape_bucket(time_t now, time_t arrival)
{
	long minutes = (long)(now - arrival) / 60;
	int b = 0;

	while (b < QSHAPE_NBUCKET - 1 && minutes >= qshape_limits[b])
		b++;
	return b + 1;
}

static void qshape_add(struct qshape *s, const struct queue_env *env, int bucket)
{
	for (size_t i = 0; i < env->nrcpt; i++) {
		const char *at = strrchr(env->rcpt[i].addr, '@');
		struct qshape_row *r;
		if (env->rcpt[i].state != QUEUE_RCPT_PENDING)
			continue;
		r = qshape_row(s, at ? at + 1 : "");
		r->count[0]++;
		r->count[bucket]++;
		s->rows[0].count[0]++;
		s->rows[0].count[bucket]++;
	}
}

static int qshape_cmp(const void *a, const void *b)
{
	const struct qshape_row *x = a, *y = b;

	if (x->count[0] != y->count[0])
		return x->count[0] > y->count[0] ? -1 : 1;
	return strcmp(x->domain, y->domain);
}

static void qshape_print(struct qshape *s)
{
	static const char *const head[] = {"T",	  "5",	 "10",	"20",	"40",	"80",
					   "160", "320", "640", "1280", "1280+"};
	int width[QSHAPE_NBUCKET + 1], dw = 5;

	if (s->n > 2)
		qsort(s->rows + 1, s->n - 1, sizeof(*s->rows), qshape_cmp);
	for (size_t i = 0; i < s->n; i++)
		if ((int)strlen(s->rows[i].domain) > dw)
			dw = (int)strlen(s->rows[i].domain);
	for (int b = 0; b <= QSHAPE_NBUCKET; b++) {
		char num[32];
		width[b] = (int)strlen(head[b]);
		snprintf(num, sizeof(num), "%ld", s->rows[0].count[b]);
		if ((int)strlen(num) > width[b])
			width[b] = (int)strlen(num);
	}
	printf("%*s", dw, "");
	for (int b = 0; b <= QSHAPE_NBUCKET; b++)
		printf(" %*s", width[b], head[b]);
	printf("\n");
	for (size_t i = 0; i < s->n; i++) {
		printf("%*s", dw, s->rows[i].domain);
		for (int b = 0; b <= QSHAPE_NBUCKET; b++)
			printf(" %*ld", width[b], s->rows[i].count[b]);
		printf("\n");
	}
}

static int qcmd_shape(struct qcmd *c)
{
	struct queue *q = qcmd_open(c, 1);
	struct qcmd_msgs m = {NULL, 0, 0};
	struct qshape s = {NULL, 0, 0};
	struct queue_env env;
	time_t now = time(NULL);

	if (q == NULL)
		return 1;
	qshape_row(&s, "TOTAL");
	qcmd_msgs_get(q, &m);
	for (size_t i = 0; i < m.n; i++) {
		if (qcmd_env(q, m.v[i].qid, &env) < 0)
			continue;
		qshape_add(&s, &env, qshape_bucket(now, m.v[i].arrival));
		queue_env_free(&env);
	}
	qshape_print(&s);
	for (size_t i = 0; i < s.n; i++)
		free(s.rows[i].domain);
	free(s.rows);
	qcmd_msgs_free(&m);
	queue_close(q);
	return 0;
}

/* ---- dispatch ---- */

static int qcmd_dispatch(struct qcmd *c, int argc, char **argv)
{
	const char *sub = argv[0];

	if (strcmp(sub, "list") == 0 && argc <= 2)
		return qcmd_list(c, argc == 2 && strcmp(argv[1], "--json") == 0);
	if (strcmp(sub, "show") == 0 && argc == 2)
		return qcmd_show(c, argv[1]);
	if (strcmp(sub, "flush") == 0 && argc <= 2)
		return qcmd_flush(c, argc == 2 ? argv[1] : NULL);
	if (strcmp(sub, "shape") == 0 && argc == 1)
		return qcmd_shape(c);
	for (size_t i = 0; i < sizeof(qcmd_ops) / sizeof(qcmd_ops[0]); i++)
		if (strcmp(sub, qcmd_ops[i].name) == 0 && argc >= 2)
			return qcmd_op_run(c, &qcmd_ops[i], argc - 1, argv + 1);
	tern_usage("queue");
	return 2;
}

int cmd_queue(int argc, char **argv)
{
	struct qcmd c = {NULL, BUF_INIT, BUF_INIT};
	const char *dir = NULL;
	int rc;

	argc--, argv++;
	if (argc >= 2 && strcmp(argv[0], "-c") == 0) {
		dir = argv[1];
		argc -= 2, argv += 2;
	}
	if (argc < 1 ||
	    (argc == 2 && strcmp(argv[0], "list") == 0 && strcmp(argv[1], "--json") != 0)) {
		tern_usage("queue");
		return 2;
	}
	rc = qcmd_load(&c, dir) < 0 ? 1 : qcmd_dispatch(&c, argc, argv);
	qcmd_free(&c);
	return rc;
}
