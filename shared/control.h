/* control.h - the local control protocol between "tern" and ternd.
 *
 * ternd listens on a unix socket (control_socket, mode 0600, owned by
 * mail_owner); each request and reply is one attribute list in the
 * policy protocol's plain encoding (attr.h): "name=value" lines ending
 * with an empty line, one connection per request. Requests carry
 * "command" (status, stop, reload, flush, abort, queue-hold,
 * queue-release, queue-requeue, queue-delete, delivery-pause,
 * delivery-resume, log) and its arguments ("ids" is a space-separated
 * list of queue IDs or "ALL"); replies carry "status=ok" or
 * "status=error" with "message=..." and command-specific attributes.
 *
 * Pitfall: control_request() distinguishes "ternd is not running" (no
 * socket, or connection refused: CONTROL_DOWN) from a real error, so the
 * CLI can say so and fall back to working on the queue directly.
 */
#ifndef TERN_CONTROL_H
#define TERN_CONTROL_H

#include "attr.h"
#include "buf.h"

enum control_status {
	CONTROL_OK = 0,
	CONTROL_DOWN = 1,   /* nobody listening: ternd is not running */
	CONTROL_ERROR = -1, /* I/O or protocol error (err says what) */
};

/* Send req to the daemon at path, wait up to timeout seconds, decode the
 * reply into reply (reset first). */
enum control_status control_request(const char *path, const struct attr_list *req,
				    struct attr_list *reply, int timeout, struct buf *err);

#endif
