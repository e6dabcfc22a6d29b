/* engine.c - the per-core event loops (engine.h).
 *
 * Each loop runs event_base_loop(EVLOOP_NO_EXIT_ON_EMPTY) in its thread;
 * engine_stop() asks each base to break (event_base_loopbreak is
 * thread-safe with evthread) and joins. Pitfall: callbacks queued with
 * engine_run_on() after engine_stop() never run.
 */
#include "engine.h"

#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct engine_loop {
	struct event_base *base;
	pthread_t thread;
	int running;
};

struct engine {
	struct engine_loop *loops;
	int n;
	atomic_uint next;
};

struct engine_job {
	void (*fn)(void *arg);
	void *arg;
};

int engine_init(void)
{
	static int done = -1;
	if (done < 0)
		done = evthread_use_pthreads();
	return done;
}

struct engine *engine_new(int nloops, struct buf *err)
{
	struct engine *e;

	if (engine_init() < 0) {
		buf_puts(err, "libevent: cannot enable thread support");
		return NULL;
	}
	if (nloops <= 0) {
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		nloops = ncpu < 2 ? 2 : ncpu > 64 ? 64 : (int)ncpu;
	}
	e = xcalloc(1, sizeof(*e));
	e->loops = xcalloc((size_t)nloops, sizeof(*e->loops));
	e->n = nloops;
	atomic_init(&e->next, 0);
	for (int i = 0; i < nloops; i++) {
		if ((e->loops[i].base = event_base_new()) == NULL) {
			buf_puts(err, "libevent: cannot create an event base");
			engine_free(e);
			return NULL;
		}
	}
	return e;
}

static void *engine_loop_run(void *arg)
{
	struct engine_loop *l = arg;

	/* The loops run SMTP sessions: their lines are Postfix's smtpd's. */
	log_thread_service("smtpd");
	event_base_loop(l->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

int engine_start(struct engine *e, struct buf *err)
{
	for (int i = 0; i < e->n; i++) {
		int rc = pthread_create(&e->loops[i].thread, NULL, engine_loop_run, &e->loops[i]);
		if (rc != 0) {
			buf_printf(err, "cannot start event loop thread: %s", strerror(rc));
			return -1;
		}
		e->loops[i].running = 1;
	}
	return 0;
}

int engine_nloops(const struct engine *e)
{
	return e->n;
}

struct event_base *engine_base(const struct engine *e, int i)
{
	return i >= 0 && i < e->n ? e->loops[i].base : NULL;
}

struct event_base *engine_next(struct engine *e)
{
	unsigned i = atomic_fetch_add(&e->next, 1);
	return e->loops[i % (unsigned)e->n].base;
}

static void engine_job_run(evutil_socket_t fd, short what, void *arg)
{
	struct engine_job *job = arg;
	(void)fd;
	(void)what;
	job->fn(job->arg);
	free(job);
}

int engine_run_on(struct event_base *base, void (*fn)(void *arg), void *arg)
{
	struct engine_job *job = xmalloc(sizeof(*job));
	struct timeval now = {0, 0};

	job->fn = fn;
	job->arg = arg;
	if (event_base_once(base, -1, EV_TIMEOUT, engine_job_run, job, &now) < 0) {
		free(job);
		return -1;
	}
	return 0;
}

static void engine_loop_break(void *arg)
{
	event_base_loopbreak(arg);
}

/* The break is queued as an event: a plain event_base_loopbreak() before
 * the thread entered its loop would be forgotten (the loop clears it). */
void engine_stop(struct engine *e)
{
	for (int i = 0; i < e->n; i++)
		if (e->loops[i].running &&
		    engine_run_on(e->loops[i].base, engine_loop_break, e->loops[i].base) < 0)
			event_base_loopbreak(e->loops[i].base);
	for (int i = 0; i < e->n; i++) {
		if (e->loops[i].running)
			pthread_join(e->loops[i].thread, NULL);
		e->loops[i].running = 0;
	}
}

void engine_free(struct engine *e)
{
	if (e == NULL)
		return;
	engine_stop(e);
	for (int i = 0; i < e->n; i++)
		if (e->loops[i].base)
			event_base_free(e->loops[i].base);
	free(e->loops);
	free(e);
}
