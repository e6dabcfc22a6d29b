/* listener.h - the listening sockets of every "listen_NAME" in the config.
 *
 * listener_set_open() resolves each listener's addresses ("*:port" and
 * "port" expand to inet_interfaces x inet_protocols, as a master.cf
 * service without a host) and binds them; on reload it takes over the
 * open sockets of an old set whose address did not change, so no
 * connection is refused while the new configuration comes up.
 * Pitfall: a failed bind leaves the old set untouched (all or nothing).
 */
#ifndef TERN_LISTENER_H
#define TERN_LISTENER_H

#include "buf.h"
#include "cfg.h"

#include <sys/socket.h>

struct listen_sock {
	char *name; /* listener name: "smtp" for listen_smtp */
	char *text; /* the address as bound, "127.0.0.1:25" / "[::1]:25" */
	struct sockaddr_storage ss;
	socklen_t sslen;
	int fd;	    /* listening, non-blocking; -1 when closed */
	void *data; /* the owner's (ternd: its state, for accept) */
};

struct listen_set {
	struct listen_sock *v;
	size_t n;
};

/* Build the sockets for cfg. Sockets of old (may be NULL) with the same
 * address are moved over (old's fd becomes -1), the others are bound
 * anew. 0, or -1 with err naming the listener and the address; on error
 * old is unchanged and nothing stays bound. */
int listener_set_open(const struct cfg *cfg, struct listen_set *old, struct listen_set *out,
		      struct buf *err);
/* Undo a successful listener_set_open() whose caller changed its mind:
 * moved sockets go back to old, newly bound ones are closed. */
void listener_set_restore(struct listen_set *set, struct listen_set *old);
/* Resolve only (no bind): for "ternd -n" and "tern check". */
int listener_set_resolve(const struct cfg *cfg, struct listen_set *out, struct buf *err);
/* Close every socket still open and free the set. */
void listener_set_close(struct listen_set *set);

#endif
