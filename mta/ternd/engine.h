/* engine.h - ternd's event loops: one libevent base per core, each run by
 * its own thread, plus round-robin hand-out of new connections.
 *
 * The main thread keeps its own base for signals, the listeners and the
 * control socket; SMTP sessions live on the engine loops. Work is passed
 * to a loop with engine_run_on() (event_base_once, thread-safe because
 * engine_new() calls evthread_use_pthreads() before any base exists).
 * Loops run until engine_stop(), even when they have no events.
 */
#ifndef TERN_ENGINE_H
#define TERN_ENGINE_H

#include "buf.h"

struct event_base;
struct engine;

/* Make libevent thread-safe; call before creating any event base. */
int engine_init(void);
/* nloops <= 0: one per online CPU, at least 2. */
struct engine *engine_new(int nloops, struct buf *err);
int engine_start(struct engine *e, struct buf *err);
int engine_nloops(const struct engine *e);
struct event_base *engine_base(const struct engine *e, int i);
/* The next loop in round-robin order (thread-safe). */
struct event_base *engine_next(struct engine *e);
/* Run fn(arg) on base's loop thread, as soon as possible. */
int engine_run_on(struct event_base *base, void (*fn)(void *arg), void *arg);
/* Break every loop and join the threads; then engine_free(). */
void engine_stop(struct engine *e);
void engine_free(struct engine *e);

#endif
