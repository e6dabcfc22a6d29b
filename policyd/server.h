/* server.h - tern-policyd's listeners, event loops, client connections
 * and workers.
 *
 * The main loop accepts clients on every "listen" address and deals them
 * out to "event_loops" loops (one per CPU by default, the main one among
 * them), which read requests and run the checks that cannot block; a
 * check that would block (SPF without a cached answer, Redis state) runs
 * on a pool of worker threads, so a slow DNS or Redis answer never holds
 * up other clients. Each connection has at most one request in
 * evaluation; pipelined requests wait in its input buffer and are
 * answered in order, one reply each.
 */
#ifndef TERN_POLICYD_SERVER_H
#define TERN_POLICYD_SERVER_H

#include "policyd.h"

#include <sys/types.h>

struct event_base;
struct pd_server;

/* Bind every address of the "listen" parameter (before dropping root;
 * unix sockets are given to uid/gid). */
struct pd_server *pd_server_new(struct event_base *base, struct pd_conf *pc, uid_t uid, gid_t gid,
				struct buf *err);
/* Start accepting and the worker threads (after dropping root). */
int pd_server_start(struct pd_server *srv, struct buf *err);
/* Use a new configuration for requests from now on (takes a reference);
 * a changed "listen" needs a restart and is reported in err. */
void pd_server_set_conf(struct pd_server *srv, struct pd_conf *pc);
/* Stop accepting and close idle clients; returns the clients still busy. */
void pd_server_stop(struct pd_server *srv);
void pd_server_free(struct pd_server *srv);
/* Run an event loop until *stop is set (atomically) or the base is
 * broken, flushing the thread's batched log lines after every turn. */
struct event_base;
void pd_loop_run(struct event_base *base, int *stop);
/* Listener sockets (for "-n" checks and logs). */
const char *pd_server_listen_text(const struct pd_server *srv);
/* Event loops serving clients (after pd_server_new). */
int pd_server_loops(const struct pd_server *srv);

#endif
