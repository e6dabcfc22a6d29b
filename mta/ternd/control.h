/* control.h (ternd) - the server side of the control socket: accepts
 * "tern" requests (protocol in shared/control.h) on the main loop and
 * answers them. Commands that block (queue journal writes, the pause
 * flag file) run on a short-lived thread so the loop keeps serving.
 * Pitfall: the file name matches shared/control.h; this header is found
 * first by files in mta/ternd, so its guard and names differ.
 */
#ifndef TERND_CONTROL_SERVER_H
#define TERND_CONTROL_SERVER_H

#include "attr.h"
#include "buf.h"

#include <sys/types.h>

struct event_base;
struct queue;
struct sched;
struct control_server;

/* What the daemon lends the control server. Called on the main loop
 * except queue()/sched(), which are read from the worker thread. */
struct control_ops {
	void *arg;
	void (*status)(void *arg, struct attr_list *reply);
	int (*reload)(void *arg, struct buf *err);
	void (*stop)(void *arg, int abort); /* after the reply went out */
	struct queue *(*queue)(void *arg);
	struct sched *(*sched)(void *arg);
};

/* Create the socket at path (a stale one is removed; a live one means
 * another ternd: error), mode 0600, owned by uid/gid when root. */
struct control_server *control_server_open(struct event_base *base, const char *path, uid_t uid,
					   gid_t gid, const struct control_ops *ops,
					   struct buf *err);
/* Stop accepting and remove the socket. */
void control_server_close(struct control_server *cs);

#endif
