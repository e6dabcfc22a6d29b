/* test_ternd_queue.c - the durable queue (mta/ternd/queue*.c): record
 * round trips, CRC and torn-tail recovery, journal replay, group commit
 * from many threads, EIO/ENOSPC fault injection, IDs, claiming, and
 * reclamation/compaction keeping every live message. Ends with an
 * informational throughput figure (20 threads, 5 KiB bodies).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "../../mta/ternd/queue_impl.h"
#include "log.h"

static char qdir[64];
static char logpath[64];

static int setup(void **state)
{
	strcpy(qdir, "/tmp/tern-queue-test.XXXXXX");
	assert_non_null(mkdtemp(qdir));
	strcpy(logpath, "/tmp/tern-queue-log.XXXXXX");
	close(mkstemp(logpath));
	log_to_file(logpath);
	return 0;
}

static int teardown(void **state)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", qdir, logpath);
	return system(cmd) == 0 ? 0 : -1;
}

static int log_contains(const char *needle)
{
	char line[4096];
	int found = 0;
	FILE *fp = fopen(logpath, "r");

	while (fp && !found && fgets(line, sizeof(line), fp))
		found = strstr(line, needle) != NULL;
	if (fp)
		fclose(fp);
	return found;
}

static struct queue *open_q(const struct queue_opts *o)
{
	struct queue *q = NULL;
	struct buf err = BUF_INIT;
	int rc = queue_open(qdir, o, &q, &err);

	if (rc != QUEUE_OK)
		fail_msg("queue_open: %s", err.data);
	buf_free(&err);
	return q;
}

static struct queue *open_rdonly(void)
{
	struct queue_opts o = {.rdonly = QUEUE_OPEN_RDONLY};
	return open_q(&o);
}

static void make_env(struct queue_env *env, const char *sender, int nrcpt)
{
	char a[64];

	queue_env_init(env);
	env->sender = strdup(sender);
	for (int i = 0; i < nrcpt; i++) {
		snprintf(a, sizeof(a), "user%d@example.test", i);
		queue_env_add_rcpt(env, a, i == 0 ? "rfc822;User0@Example.TEST" : NULL,
				   i == 0 ? QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE : 0);
	}
	env->arrival = 1700000000;
	env->client_name = strdup("client.example.org");
	env->client_addr = strdup("192.0.2.7");
	env->helo = strdup("helo.example.org");
	env->protocol = strdup("ESMTP");
}

/* Submitting through an event loop: the callback arrives on this base
 * from the commit thread (event_base_once) and breaks the loop. */
struct waiter {
	struct event_base *base;
	int left;
	int nok, neio, nenospc;
};

static void on_commit(void *arg, enum queue_status st, const char *qid)
{
	struct waiter *w = arg;

	w->nok += st == QUEUE_OK;
	w->neio += st == QUEUE_EIO;
	w->nenospc += st == QUEUE_ENOSPC;
	if (--w->left == 0)
		event_base_loopbreak(w->base);
}

static void keepalive(evutil_socket_t fd, short what, void *arg)
{
}

static void wait_all(struct waiter *w)
{
	struct timeval tv = {60, 0};
	struct event *ev = event_new(w->base, -1, EV_PERSIST, keepalive, NULL);

	event_add(ev, &tv);
	if (w->left > 0)
		event_base_dispatch(w->base);
	event_free(ev);
}

static enum queue_status submit(struct queue *q, const char *qid, const struct queue_env *env,
				const char *content, size_t len)
{
	struct waiter w = {event_base_new(), 1, 0, 0, 0};

	queue_submit(q, qid, env, content, len, w.base, on_commit, &w);
	wait_all(&w);
	event_base_free(w.base);
	return w.nok ? QUEUE_OK : w.neio ? QUEUE_EIO : w.nenospc ? QUEUE_ENOSPC : QUEUE_ECORRUPT;
}

static void submit_simple(struct queue *q, char *qid, int nrcpt, size_t size)
{
	struct queue_env env;
	char *body = malloc(size + 1);

	memset(body, 'x', size);
	make_env(&env, "sender@example.org", nrcpt);
	queue_id_new(q, qid);
	assert_int_equal(submit(q, qid, &env, body, size), QUEUE_OK);
	queue_env_free(&env);
	free(body);
}

static void check_load(struct queue *q, const char *qid, const char *content, size_t len)
{
	struct queue_env env;
	struct buf body = BUF_INIT, err = BUF_INIT;

	queue_env_init(&env);
	assert_int_equal(queue_load(q, qid, &env, &body, &err), QUEUE_OK);
	assert_int_equal(body.len, len);
	assert_memory_equal(body.data, content, len);
	assert_string_equal(env.sender, "s@example.org");
	assert_int_equal(env.nrcpt, 3);
	assert_string_equal(env.rcpt[0].addr, "user0@example.test");
	assert_string_equal(env.rcpt[0].orcpt, "rfc822;User0@Example.TEST");
	assert_int_equal(env.rcpt[0].notify, QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE);
	assert_null(env.rcpt[1].orcpt);
	assert_string_equal(env.ret, "HDRS");
	assert_string_equal(env.envid, "QQ314159");
	assert_true(env.body_8bit && env.smtputf8);
	assert_int_equal(env.arrival, 1700000000);
	assert_string_equal(env.client_addr, "192.0.2.7");
	assert_string_equal(env.sasl_username, "joe");
	assert_int_equal(env.size, len);
	queue_env_free(&env);
	buf_free(&body);
	buf_free(&err);
}

static void test_roundtrip(void **state)
{
	static const size_t sizes[] = {0, 1, 7, 100000, 1 << 20};
	char qids[5][QUEUE_ID_SIZE], *bodies[5];
	struct queue_env env;
	struct queue *q = open_q(NULL);

	make_env(&env, "s@example.org", 3);
	env.ret = strdup("HDRS"), env.envid = strdup("QQ314159");
	env.body_8bit = env.smtputf8 = 1;
	env.sasl_username = strdup("joe");
	for (int i = 0; i < 5; i++) {
		bodies[i] = malloc(sizes[i] + 1);
		for (size_t j = 0; j < sizes[i]; j++) /* NULs, CR, LF, long lines, high bytes */
			bodies[i][j] =
			    (char)(i == 3 ? (j % 99999 == 0 ? '\n' : 'a') : (j * 7) & 0xff);
		queue_id_new(q, qids[i]);
		assert_int_equal(submit(q, qids[i], &env, bodies[i], sizes[i]), QUEUE_OK);
		check_load(q, qids[i], bodies[i], sizes[i]);
	}
	queue_close(q);
	q = open_q(NULL);
	assert_int_equal(queue_count(q), 5);
	for (int i = 0; i < 5; i++)
		check_load(q, qids[i], bodies[i], sizes[i]);
	queue_close(q);
	q = open_rdonly(); /* "tern queue" view */
	assert_int_equal(queue_count(q), 5);
	check_load(q, qids[4], bodies[4], sizes[4]);
	assert_int_equal(queue_hold(q, qids[0]), QUEUE_EBUSY);
	queue_close(q);
	for (int i = 0; i < 5; i++)
		free(bodies[i]);
	queue_env_free(&env);
}

struct seen {
	char qid[QUEUE_ID_SIZE];
	struct queue_info info;
	char reason[64];
};

static int find_info(void *arg, const struct queue_info *info)
{
	struct seen *s = arg;

	if (strcmp(info->qid, s->qid) != 0)
		return 0;
	s->info = *info;
	snprintf(s->reason, sizeof(s->reason), "%s", info->reason ? info->reason : "");
	return 1;
}

static struct seen info_of(struct queue *q, const char *qid)
{
	struct seen s;

	memset(&s, 0, sizeof(s));
	snprintf(s.qid, sizeof(s.qid), "%s", qid);
	if (queue_foreach(q, find_info, &s) == 0)
		s.qid[0] = '\0';
	return s;
}

/* The newest segment file that holds records (not the empty one a
 * read-write open starts). */
static void data_segment(char *path, size_t size)
{
	char segdir[128];
	struct dirent *de;
	struct stat sb;
	DIR *d;

	snprintf(segdir, sizeof(segdir), "%s/seg", qdir);
	d = opendir(segdir);
	path[0] = '\0';
	while ((de = readdir(d)) != NULL) {
		char p[512];
		snprintf(p, sizeof(p), "%s/%s", segdir, de->d_name);
		if (de->d_name[0] != '.' && stat(p, &sb) == 0 && sb.st_size > QSEG_HDR_SIZE &&
		    strcmp(p, path) > 0)
			snprintf(path, size, "%s", p);
	}
	closedir(d);
	assert_true(path[0] != '\0');
}

static void flip_byte(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	unsigned char c;

	assert_int_equal(pread(fd, &c, 1, off), 1);
	c ^= 0x20;
	assert_int_equal(pwrite(fd, &c, 1, off), 1);
	close(fd);
}

static void test_crc_detects_flip(void **state)
{
	char a[QUEUE_ID_SIZE], b[QUEUE_ID_SIZE], path[512];
	struct queue_env env;
	struct buf body = BUF_INIT, err = BUF_INIT;
	struct queue *q = open_q(NULL);
	struct stat sb;

	submit_simple(q, a, 1, 500);
	submit_simple(q, b, 1, 500);
	data_segment(path, sizeof(path));
	assert_int_equal(stat(path, &sb), 0);
	flip_byte(path, sb.st_size - 100); /* inside b's content */
	queue_env_init(&env);
	assert_int_equal(queue_load(q, b, &env, &body, &err), QUEUE_ECORRUPT);
	queue_env_free(&env);
	assert_int_equal(queue_load(q, a, &env, &body, &err), QUEUE_OK);
	queue_env_free(&env);
	queue_close(q);
	q = open_q(NULL); /* the scan stops at b and says where */
	assert_int_equal(queue_count(q), 1);
	assert_int_equal(queue_load(q, b, &env, &body, &err), QUEUE_ENOENT);
	assert_true(log_contains("record checksum mismatch at offset"));
	queue_close(q);
	buf_free(&body);
	buf_free(&err);
}

static void test_torn_tail(void **state)
{
	char a[QUEUE_ID_SIZE], b[QUEUE_ID_SIZE], c[QUEUE_ID_SIZE], path[512];
	struct queue *q = open_q(NULL);
	struct stat sb;
	off_t full, start;

	submit_simple(q, a, 2, 300);
	submit_simple(q, b, 2, 300);
	queue_close(q);
	data_segment(path, sizeof(path));
	assert_int_equal(stat(path, &sb), 0);
	full = sb.st_size;
	q = open_rdonly();
	pthread_mutex_lock(&q->lock);
	start = qidx_find(q, b)->off;
	pthread_mutex_unlock(&q->lock);
	queue_close(q);
	for (off_t cut = full - 1; cut >= start; cut--) {
		assert_int_equal(truncate(path, cut), 0);
		q = open_rdonly();
		if (queue_count(q) != 1 || info_of(q, a).qid[0] == '\0')
			fail_msg("cut at %lld: %zu messages", (long long)cut, queue_count(q));
		queue_close(q);
	}
	/* read-write: new writes never follow the torn bytes */
	assert_int_equal(truncate(path, full - 3), 0);
	q = open_q(NULL);
	assert_int_equal(queue_count(q), 1);
	submit_simple(q, c, 1, 10);
	queue_close(q);
	q = open_q(NULL);
	assert_int_equal(queue_count(q), 2);
	pthread_mutex_lock(&q->lock);
	assert_non_null(qidx_find(q, a));
	assert_non_null(qidx_find(q, c));
	assert_null(qidx_find(q, b));
	pthread_mutex_unlock(&q->lock);
	queue_close(q);
}

static void test_journal_replay(void **state)
{
	char m1[QUEUE_ID_SIZE], m2[QUEUE_ID_SIZE], m3[QUEUE_ID_SIZE];
	struct queue *q = open_q(NULL);
	struct seen s;
	time_t later = time(NULL) + 1000;

	submit_simple(q, m1, 2, 100);
	submit_simple(q, m2, 2, 100);
	submit_simple(q, m3, 2, 100);
	assert_int_equal(queue_rcpt_done(q, m1, 0, QUEUE_RCPT_SENT), QUEUE_OK);
	assert_int_equal(queue_rcpt_done(q, m1, 5, QUEUE_RCPT_SENT), QUEUE_ESTATE);
	assert_int_equal(queue_defer(q, m2, later, "4.4.1 connect to mx: timed out"), QUEUE_OK);
	assert_int_equal(queue_hold(q, m3), QUEUE_OK);
	assert_int_equal(queue_release(q, m1), QUEUE_ESTATE);
	assert_int_equal(queue_delete(q, "NOSUCHID"), QUEUE_ENOENT);
	queue_close(q);

	q = open_q(NULL);
	assert_int_equal(queue_count(q), 3);
	s = info_of(q, m1);
	assert_int_equal(s.info.npending, 1);
	assert_int_equal(s.info.state, QUEUE_STATE_ACTIVE);
	s = info_of(q, m2);
	assert_int_equal(s.info.state, QUEUE_STATE_DEFERRED);
	assert_int_equal(s.info.next_attempt, later);
	assert_string_equal(s.reason, "4.4.1 connect to mx: timed out");
	s = info_of(q, m3);
	assert_int_equal(s.info.state, QUEUE_STATE_HOLD);
	assert_int_equal(queue_release(q, m3), QUEUE_OK);
	assert_int_equal(queue_delete(q, m2), QUEUE_OK);
	assert_int_equal(queue_rcpt_done(q, m1, 1, QUEUE_RCPT_BOUNCED), QUEUE_OK);
	assert_int_equal(queue_count(q), 1); /* m1 finished: removed */
	assert_true(log_contains(": removed"));
	queue_close(q);

	q = open_q(NULL);
	assert_int_equal(queue_count(q), 1);
	s = info_of(q, m3);
	assert_int_equal(s.info.state, QUEUE_STATE_ACTIVE);
	assert_int_equal(s.info.next_attempt, 0);
	assert_int_equal(queue_requeue(q, m3), QUEUE_OK);
	queue_close(q);
}

static int warned_of(struct queue *q, const char *qid)
{
	struct queue_env env;
	struct buf body = BUF_INIT, err = BUF_INIT;
	int warned;

	queue_env_init(&env);
	assert_int_equal(queue_load(q, qid, &env, &body, &err), QUEUE_OK);
	warned = env.delay_warned;
	queue_env_free(&env);
	buf_free(&body);
	buf_free(&err);
	return warned;
}

/* A delay warning's mark survives a restart (compaction: test_compaction). */
static void test_warned_mark(void **state)
{
	char m1[QUEUE_ID_SIZE], m2[QUEUE_ID_SIZE];
	struct queue *q = open_q(NULL);

	submit_simple(q, m1, 1, 100);
	submit_simple(q, m2, 1, 100);
	assert_false(warned_of(q, m1));
	assert_int_equal(queue_mark_warned(q, m1), QUEUE_OK);
	assert_true(warned_of(q, m1));
	assert_false(warned_of(q, m2));
	assert_int_equal(queue_mark_warned(q, "NOSUCHID"), QUEUE_ENOENT);
	queue_close(q);
	q = open_q(NULL);
	assert_true(warned_of(q, m1));
	assert_false(warned_of(q, m2));
	queue_close(q);
}

/* Many producer threads, each with its own event loop, as ternd's. */
struct producer {
	struct queue *q;
	int n;
	size_t size;
	int nok;
};

static void *producer_main(void *arg)
{
	struct producer *p = arg;
	struct waiter w = {event_base_new(), p->n, 0, 0, 0};
	struct queue_env env;
	char qid[QUEUE_ID_SIZE], *body = malloc(p->size);

	memset(body, 'b', p->size);
	make_env(&env, "bulk@example.org", 1);
	for (int i = 0; i < p->n; i++) {
		queue_id_new(p->q, qid);
		queue_submit(p->q, qid, &env, body, p->size, w.base, on_commit, &w);
	}
	wait_all(&w);
	p->nok = w.nok;
	event_base_free(w.base);
	queue_env_free(&env);
	free(body);
	return NULL;
}

static double run_producers(struct queue *q, int nthreads, int per, size_t size)
{
	pthread_t th[32];
	struct producer p[32];
	struct timeval t0, t1;

	gettimeofday(&t0, NULL);
	for (int i = 0; i < nthreads; i++) {
		p[i] = (struct producer){q, per, size, 0};
		pthread_create(&th[i], NULL, producer_main, &p[i]);
	}
	for (int i = 0; i < nthreads; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(p[i].nok, per);
	}
	gettimeofday(&t1, NULL);
	return (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_usec - t0.tv_usec) / 1e6;
}

static void test_group_commit(void **state)
{
	struct queue *q = open_q(NULL);
	struct queue_stats st;

	run_producers(q, 8, 50, 2000);
	queue_stats(q, &st);
	assert_int_equal(queue_count(q), 400);
	assert_int_equal(st.records, 400);
	/* one fdatasync per batch (plus one per new segment, not counted) */
	assert_int_equal(st.fsyncs, st.batches);
	assert_true(st.fsyncs < 400);
	print_message("group commit: 400 messages in %llu fdatasyncs\n",
		      (unsigned long long)st.fsyncs);
	queue_close(q);
	q = open_q(NULL);
	assert_int_equal(queue_count(q), 400);
	queue_close(q);
}

/* Fault injection: the next fdatasync / write fails. */
static int fail_fsyncs, fail_writes;

static int bad_fdatasync(int fd)
{
	if (fail_fsyncs > 0) {
		fail_fsyncs--;
		errno = EIO;
		return -1;
	}
	return fdatasync(fd);
}

static ssize_t bad_pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
	if (fail_writes > 0) {
		fail_writes--;
		/* a partial write, then the error: garbage must not stay referenced */
		if (pwrite(fd, iov[0].iov_base, iov[0].iov_len / 2, off) < 0)
			return -1;
		errno = ENOSPC;
		return -1;
	}
	return pwritev(fd, iov, n, off);
}

/* queue_rcpt_done_nowait: the delivery agent does not wait for the disk;
 * the mark is applied with the next commit, and a failed write releases
 * the claim with the given retry time instead of losing the message. */
/* in_flow_delay: with every token taken, a submission waits until one is
 * given back (here after 50 ms, well before the 5 s delay), or until the
 * delay passes; unpaced submissions (notices) never wait. */
static struct queue *flow_q;

static void flow_give_one(evutil_socket_t fd, short what, void *arg)
{
	queue_flow_put(flow_q, 1);
}

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_flow_control(void **state)
{
	struct queue *q = open_q(NULL);
	struct queue_env env;
	char qid[QUEUE_ID_SIZE];
	double t0;

	make_env(&env, "sender@example.org", 1);
	queue_flow_set(q, 5000);
	{ /* the budget goes at full speed (one group commit or a few) */
		struct waiter all = {event_base_new(), QUEUE_FLOW_TOKENS, 0, 0, 0};
		for (int i = 0; i < QUEUE_FLOW_TOKENS; i++) {
			queue_id_new(q, qid);
			queue_submit(q, qid, &env, "x\n", 2, all.base, on_commit, &all);
		}
		wait_all(&all);
		assert_int_equal(all.nok, QUEUE_FLOW_TOKENS);
		event_base_free(all.base);
	}
	{
		struct queue_stats st;
		queue_stats(q, &st);
		assert_int_equal(st.flow_waits, 0);
	}
	/* no token left: it waits for the one given back after 50 ms */
	struct waiter w = {event_base_new(), 1, 0, 0, 0};
	struct timeval give = {0, 50000};
	flow_q = q;
	event_base_once(w.base, -1, EV_TIMEOUT, flow_give_one, NULL, &give);
	t0 = mono_now();
	queue_id_new(q, qid);
	queue_submit(q, qid, &env, "y\n", 2, w.base, on_commit, &w);
	wait_all(&w);
	assert_int_equal(w.nok, 1);
	assert_true(mono_now() - t0 >= 0.045);
	assert_true(mono_now() - t0 < 4.0);
	{
		struct queue_stats st;
		queue_stats(q, &st);
		assert_int_equal(st.flow_waits, 1);
	}
	/* none given back: the delay passes and it is committed anyway */
	queue_flow_set(q, 300);
	w.left = 1;
	t0 = mono_now();
	queue_id_new(q, qid);
	queue_submit(q, qid, &env, "z\n", 2, w.base, on_commit, &w);
	wait_all(&w);
	assert_int_equal(w.nok, 2);
	assert_true(mono_now() - t0 >= 0.25);
	/* a notice never waits */
	w.left = 1;
	t0 = mono_now();
	queue_id_new(q, qid);
	queue_submit_unpaced(q, qid, &env, "n\n", 2, w.base, on_commit, &w);
	wait_all(&w);
	assert_int_equal(w.nok, 3);
	assert_true(mono_now() - t0 < 0.25);
	/* filled up (the scheduler is idle): no waiting */
	queue_flow_fill(q);
	w.left = 1;
	t0 = mono_now();
	queue_id_new(q, qid);
	queue_submit(q, qid, &env, "f\n", 2, w.base, on_commit, &w);
	wait_all(&w);
	assert_int_equal(w.nok, 4);
	assert_true(mono_now() - t0 < 0.25);
	event_base_free(w.base);
	queue_env_free(&env);
	queue_close(q);
}

static void test_rcpt_done_nowait(void **state)
{
	struct queue_io io = {bad_pwritev, bad_fdatasync};
	char m[2][QUEUE_ID_SIZE], got[QUEUE_ID_SIZE];
	struct queue *q = open_q(NULL);
	time_t now = time(NULL);

	submit_simple(q, m[0], 1, 10);
	submit_simple(q, m[1], 1, 10);
	assert_true(queue_claim_due(q, now, got));
	assert_int_equal(queue_rcpt_done_nowait(q, got, 0, QUEUE_RCPT_SENT, now + 300), QUEUE_OK);
	for (int i = 0; i < 500 && queue_count(q) != 1; i++)
		usleep(10000);
	assert_int_equal(queue_count(q), 1); /* finished and removed */
	queue_test_set_io(q, &io);
	fail_fsyncs = 1;
	assert_true(queue_claim_due(q, now, got));
	assert_string_equal(got, m[1]);
	assert_int_equal(queue_rcpt_done_nowait(q, got, 0, QUEUE_RCPT_SENT, now + 300), QUEUE_OK);
	for (int i = 0; i < 500 && queue_next_wakeup(q) != now + 300; i++)
		usleep(10000);
	assert_int_equal(queue_count(q), 1);	    /* still there: not lost */
	assert_false(queue_claim_due(q, now, got)); /* not due again at once */
	assert_true(queue_claim_due(q, now + 300, got));
	assert_string_equal(got, m[1]);
	queue_test_set_io(q, NULL);
	queue_close(q);
}

static void test_eio_and_enospc(void **state)
{
	struct queue_io io = {bad_pwritev, bad_fdatasync};
	struct queue *q = open_q(NULL);
	struct queue_env env;
	struct queue_stats st;
	struct waiter w;
	char qids[5][QUEUE_ID_SIZE], ok[QUEUE_ID_SIZE];

	make_env(&env, "s@example.org", 1);
	queue_test_set_io(q, &io);
	/* a whole batch fails: everything submitted before the commit thread
	 * wakes shares the fate of the one fdatasync */
	fail_fsyncs = 1;
	w = (struct waiter){event_base_new(), 5, 0, 0, 0};
	pthread_mutex_lock(&q->commit_lock); /* hold the thread off: one batch */
	for (int i = 0; i < 5; i++) {
		queue_id_new(q, qids[i]);
		pthread_mutex_unlock(&q->commit_lock);
		queue_submit(q, qids[i], &env, "hello\n", 6, w.base, on_commit, &w);
		pthread_mutex_lock(&q->commit_lock);
	}
	pthread_mutex_unlock(&q->commit_lock);
	wait_all(&w);
	assert_int_equal(w.neio + w.nok, 5);
	assert_true(w.neio >= 1);
	event_base_free(w.base);
	assert_int_equal(queue_count(q), (size_t)w.nok);
	assert_true(log_contains("abandoned after a write error"));

	fail_writes = 1;
	queue_id_new(q, ok);
	assert_int_equal(submit(q, ok, &env, "x\n", 2), QUEUE_ENOSPC);
	queue_id_new(q, ok);
	assert_int_equal(submit(q, ok, &env, "fine\n", 5), QUEUE_OK);
	queue_stats(q, &st);
	assert_true(st.failures >= 2);
	queue_close(q);
	q = open_q(NULL); /* nothing that failed comes back; the good one does */
	pthread_mutex_lock(&q->lock);
	for (int i = 0; i < 5; i++)
		if (qidx_find(q, qids[i]) != NULL)
			assert_true(w.nok > 0); /* only if it was acknowledged */
	assert_non_null(qidx_find(q, ok));
	pthread_mutex_unlock(&q->lock);
	queue_close(q);

	struct queue_opts o = {.minfree_bytes = UINT64_MAX / 4};
	q = open_q(&o);
	queue_id_new(q, ok);
	assert_int_equal(submit(q, ok, &env, "full\n", 5), QUEUE_ENOSPC);
	queue_stats(q, &st);
	assert_int_equal(st.bytes, 0); /* refused before writing */
	queue_close(q);
	queue_env_free(&env);
}

static int cmp_qid(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void test_unique_ids(void **state)
{
	enum { N = 50000 };
	char(*ids)[QUEUE_ID_SIZE] = malloc(N * QUEUE_ID_SIZE), held[QUEUE_ID_SIZE];
	struct queue *q = open_q(NULL);

	submit_simple(q, held, 1, 10);
	for (int i = 0; i < N; i++) {
		queue_id_new(q, ids[i]);
		assert_int_equal(strlen(ids[i]), 12);
		assert_int_equal(strspn(ids[i], "0123456789ABCDEF"), 12);
		assert_string_not_equal(ids[i], held);
	}
	qsort(ids, N, QUEUE_ID_SIZE, cmp_qid);
	for (int i = 1; i < N; i++)
		assert_string_not_equal(ids[i - 1], ids[i]);
	queue_close(q);
	free(ids);
}

static void test_claim(void **state)
{
	char m[3][QUEUE_ID_SIZE], got[QUEUE_ID_SIZE], got2[QUEUE_ID_SIZE];
	struct queue *q = open_q(NULL);
	time_t now = time(NULL);

	for (int i = 0; i < 3; i++)
		submit_simple(q, m[i], 1, 10);
	assert_int_equal(queue_next_wakeup(q) > 0, 1);
	assert_true(queue_claim_due(q, now, got));
	assert_string_equal(got, m[0]); /* FIFO */
	assert_true(queue_claim_due(q, now, got2));
	assert_string_equal(got2, m[1]);
	queue_unclaim(q, got2); /* to the back of the line */
	assert_true(queue_claim_due(q, now, got2));
	assert_string_equal(got2, m[2]);
	assert_true(queue_claim_due(q, now, got2));
	assert_string_equal(got2, m[1]);
	queue_unclaim(q, m[2]);
	assert_int_equal(queue_hold(q, m[2]), QUEUE_OK);
	assert_int_equal(queue_defer(q, got, now + 100, "4.2.0 later"), QUEUE_OK);
	assert_false(queue_claim_due(q, now, got)); /* deferred, claimed, held */
	assert_int_equal(queue_next_wakeup(q), now + 100);
	assert_true(queue_claim_due(q, now + 100, got));
	assert_string_equal(got, m[0]);
	assert_int_equal(queue_rcpt_done(q, got, 0, QUEUE_RCPT_SENT), QUEUE_OK);
	assert_false(queue_claim_due(q, now + 1000, got));
	assert_int_equal(queue_release(q, m[2]), QUEUE_OK);
	assert_true(queue_claim_due(q, now, got));
	assert_string_equal(got, m[2]);
	queue_close(q);
}

static int count_files(const char *sub)
{
	char p[128];
	struct dirent *de;
	int n = 0;
	DIR *d;

	snprintf(p, sizeof(p), "%s/%s", qdir, sub);
	d = opendir(p);
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static void test_compaction(void **state)
{
	struct queue_opts o = {.segment_size = 8192};
	char m[60][QUEUE_ID_SIZE], cmd[512];
	struct queue *q = open_q(&o);
	struct seen s;
	int before, removed;

	q->no_idle_compact = 1; /* set before the first batch: seen by the thread */

	for (int i = 0; i < 60; i++)
		submit_simple(q, m[i], 2, 1000); /* about 8 messages a segment */
	before = count_files("seg");
	assert_true(before >= 7);
	/* keep 0 (held), 1 (one recipient done), 59; finish the rest */
	assert_int_equal(queue_hold(q, m[0]), QUEUE_OK);
	assert_int_equal(queue_rcpt_done(q, m[1], 0, QUEUE_RCPT_SENT), QUEUE_OK);
	assert_int_equal(queue_mark_warned(q, m[1]), QUEUE_OK);
	for (int i = 2; i < 59; i++)
		assert_int_equal(queue_delete(q, m[i]), QUEUE_OK);
	/* save the oldest segment: a crash after the copy but before the
	 * unlink leaves both copies */
	snprintf(cmd, sizeof(cmd), "cp -a %s/seg %s/seg.save", qdir, qdir);
	assert_int_equal(system(cmd), 0);
	removed = queue_test_compact(q);
	print_message("compaction: %d segments before, %d after\n", before, count_files("seg"));
	assert_true(removed >= 6);
	assert_true(count_files("seg") <= 3);
	assert_int_equal(queue_count(q), 3);
	queue_close(q);

	q = open_q(&o);
	assert_int_equal(queue_count(q), 3);
	s = info_of(q, m[0]);
	assert_int_equal(s.info.state, QUEUE_STATE_HOLD);
	s = info_of(q, m[1]);
	assert_int_equal(s.info.npending, 1);
	assert_true(warned_of(q, m[1])); /* carried by the compaction copy */
	assert_false(warned_of(q, m[59]));
	queue_close(q);

	snprintf(cmd, sizeof(cmd), "cp -n %s/seg.save/* %s/seg/", qdir, qdir);
	assert_int_equal(system(cmd), 0);
	q = open_q(&o); /* duplicates found by queue ID: counted once, latest state */
	assert_int_equal(queue_count(q), 3);
	s = info_of(q, m[0]);
	assert_int_equal(s.info.state, QUEUE_STATE_HOLD);
	s = info_of(q, m[1]);
	assert_int_equal(s.info.npending, 1);
	assert_int_equal(queue_rcpt_done(q, m[1], 1, QUEUE_RCPT_SENT), QUEUE_OK);
	/* left to itself, the commit thread reclaims and compacts when idle */
	for (int i = 0; i < 20; i++)
		submit_simple(q, m[i], 1, 1000);
	before = count_files("seg");
	for (int i = 0; i < 20; i++)
		assert_int_equal(queue_delete(q, m[i]), QUEUE_OK);
	for (int i = 0; i < 300 && count_files("seg") > 2; i++)
		usleep(10000);
	assert_true(before >= 3);
	assert_true(count_files("seg") <= 2);
	queue_close(q);
	q = open_q(&o);
	assert_int_equal(queue_count(q), 2);
	queue_close(q);
}

static void test_throughput(void **state)
{
	struct queue *q = open_q(NULL);
	struct queue_stats st;
	double secs = run_producers(q, 20, 100, 5120);

	queue_stats(q, &st);
	print_message("throughput: %d messages of 5 KiB from 20 threads in %.2fs = %.0f msg/s, "
		      "%llu fdatasyncs (%.1f messages each)\n",
		      2000, secs, 2000 / secs, (unsigned long long)st.fsyncs,
		      2000.0 / (double)(st.fsyncs ? st.fsyncs : 1));
	queue_close(q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_crc_detects_flip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_journal_replay, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_eio_and_enospc, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unique_ids, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_claim, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rcpt_done_nowait, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flow_control, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_warned_mark, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_compaction, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_throughput, setup, teardown),
	};
	evthread_use_pthreads();
	log_open("queue-test");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
