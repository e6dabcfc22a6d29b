/* deliver.h - delivery transports (local, virtual, discard, error,
 * retry, smtp, lmtp) as called by the scheduler's workers.
 *
 * Delivery into system users' mailboxes needs their uid: ternd forks a
 * small privileged helper before dropping root (deliver_helper_spawn());
 * it performs only "deliver this file into user U's Maildir/mbox" as
 * that user, requested over a socketpair. Without root (make run, tests)
 * no helper is spawned and local users are delivered as mail_owner.
 */
#ifndef TERN_DELIVER_H
#define TERN_DELIVER_H

#include "buf.h"
#include "cfg.h"

/* Call as root before dropping privileges; returns 0 (and does nothing)
 * when not root. */
int deliver_helper_spawn(struct cfg *cfg, struct buf *err);
/* Is a helper running (then deliveries to system users go through it)? */
int deliver_helper_active(void);
/* Ask the helper to append the message (headers + content) to user's
 * mailbox (home_mailbox or mail_spool_directory), as that user. 0 ok,
 * -1 with err and *temp. "what" gets "maildir" or "mailbox". */
int deliver_helper_request(const char *user, const char *sender, const char *headers,
			   const char *content, size_t len, struct buf *what, struct buf *err,
			   int *temp);

/* --- Transports as called by the scheduler (sched.c) ------------------
 * One struct deliver_msg per claimed message; one deliver_rcpt_run() per
 * pending queue recipient. Transports report each final address with
 * deliver_report(), which logs Postfix's "to=<...>, [orig_to=<...>,]
 * relay=..., delay=..., delays=a/b/c/d, dsn=X.Y.Z, status=..." line and
 * sums the outcome; the scheduler then journals the queue recipient. */
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

struct queue;
struct queue_env;
struct route_conf;
struct table;

/* A list of lookup tables (alias_maps, virtual_mailbox_maps). A table
 * that failed to open stays in the list as NULL with its error, and a
 * lookup reaching it is a temporary failure, as Postfix's "hash:/etc/aliases
 * is unavailable": mail waits instead of bouncing. */
struct deliver_maps {
	struct table **t;
	size_t n;
};

/* Open the tables of list parameter name leniently (a missing file makes
 * lookups fail temporarily; a bad spec is an error); free them. */
int deliver_maps_open(const struct cfg *cfg, const char *name, struct deliver_maps *m,
		      struct buf *err);
void deliver_maps_free(struct deliver_maps *m);
/* Look key up in each table in turn; reloads a table whose file changed
 * (newaliases). TABLE_FOUND with value and *hit (the table), NOTFOUND or
 * ERROR (err set). */
int deliver_maps_lookup(const struct deliver_maps *m, const char *key, struct buf *value,
			struct table **hit, struct buf *err);

/* Settings snapshot for the transports; immutable once built, shared by
 * the workers, replaced (not changed) on reload. */
struct deliver_conf {
	struct route_conf *route;
	char *myhostname, *myorigin, *delims;
	struct deliver_maps aliases; /* alias_maps */
	struct deliver_maps vmaps;   /* virtual_mailbox_maps */
	char *vbase;		     /* virtual_mailbox_base */
	char *home_mailbox;	     /* "" = mbox under spool_dir; "x/" = maildir */
	char *spool_dir;	     /* mail_spool_directory */
	uid_t owner_uid;	     /* mail_owner */
	gid_t owner_gid;
	uid_t privs_uid; /* default_privs */
	gid_t privs_gid;
	int cmd_alias, file_alias; /* allow_mail_to_commands/files has "alias" */
	long long mailbox_limit;   /* mailbox_size_limit, 0 = none */
	long long min_backoff, max_backoff, run_delay, lifetime, bounce_lifetime;
	long long delay_warning;	/* delay_warning_time, 0 = never */
	long long bounce_size_limit;	/* most of the original returned in full */
	long long dup_filter_limit;	/* duplicate_filter_limit, 0 = none */
	char *double_bounce_sender;	/* "double-bounce@$myorigin" */
	char *bounce_2_rcpt;		/* 2bounce_notice_recipient */
	struct deliver_smtp_conf *smtp; /* the smtp and lmtp clients (deliver_smtp.c) */
};

struct deliver_conf *deliver_conf_new(const struct cfg *cfg, struct buf *err);
void deliver_conf_free(struct deliver_conf *dc);

/* One message being delivered. */
struct deliver_msg {
	struct queue *q;
	const struct deliver_conf *conf;
	const char *qid;
	const struct queue_env *env;
	const char *content;
	size_t len;
	double t_active;   /* when the scheduler took it (for delays=a/b) */
	/* Called once before the first transport that may block (all but
	 * discard, error, retry): the scheduler then no longer counts on this
	 * worker to take the next message soon. May be NULL. */
	void (*on_slow)(void *arg);
	void *slow_arg;
	struct buf failed; /* bounce.c: one line per DSN entry, see bounce_note() */
	size_t nfailed;	   /* entries in failed (of any action) */
};

/* One address to deliver, with the queue recipient it came from. */
struct deliver_rcpt {
	struct deliver_msg *msg;
	const char *addr; /* this address (an alias expansion or the rcpt) */
	const char *orig; /* the queue recipient, logged as orig_to= if different */
	int depth;	  /* alias nesting, bounded (DELIVER_MAX_DEPTH) */
	const struct deliver_rcpt *parent; /* the alias this came from, or NULL */
	const char *alias;		   /* local(8): the alias name expanded for this address */
	double t_start;			   /* delivery start (delays=c/d) */
	double t_conn;			   /* connection set up (smtp/lmtp; 0: none), delays=c */
	const char *agent;		   /* log service ("smtp", "lmtp"); NULL: from relay */
	const struct queue_rcpt *qr;	   /* the queue recipient (DSN NOTIFY/ORCPT) */
	int remote_dsn;			   /* smtp: the next hop took NOTIFY=, no "relayed" notice */
	int nsent, nbounced, ndeferred;
	struct buf reason; /* first deferral reason, for queue_defer() */
	char reason_dsn[16]; /* and its status code, for an expiry's DSN */
};

#define DELIVER_MAX_DEPTH 100 /* Postfix local: expansion depth limit */

enum deliver_status { DELIVER_SENT, DELIVER_DEFER, DELIVER_BOUNCE };

/* Route addr and run its transport, to the end (a worker may wait for
 * an SMTP delivery); every outcome goes through deliver_report(). */
void deliver_rcpt_run(struct deliver_rcpt *r);
/* The same for n recipients of one message, without waiting for SMTP:
 * local, virtual, discard, error and retry run now; those routed to the
 * same smtp/lmtp destination share sessions (up to the recipient limit
 * per transaction), which run on an event loop. Returns 0 when every
 * recipient has its outcome, 1 when done(arg) will run (once, on a loop
 * thread) after the last one. rs and the message must live until then. */
int deliver_rcpts_start(struct deliver_rcpt **rs, size_t n, void (*done)(void *arg), void *arg);
/* Log and count one final result. dsn "2.0.0" / "4.x.y" / "5.x.y"
 * decides the status; relay is "local", "virtual", "none"... */
void deliver_report(struct deliver_rcpt *r, const char *relay, const char *dsn, const char *fmt,
		    ...) __attribute__((format(printf, 4, 5)));
double deliver_now(void);

/* Transports (deliver_local.c, deliver_virtual.c, deliver_discard.c). */
void deliver_local(struct deliver_rcpt *r, const char *nexthop);
void deliver_virtual(struct deliver_rcpt *r, const char *nexthop);
void deliver_discard(struct deliver_rcpt *r, const char *nexthop);
void deliver_error(struct deliver_rcpt *r, const char *nexthop);
void deliver_retry(struct deliver_rcpt *r, const char *nexthop);

/* The smtp, relay and lmtp clients (deliver_smtp.c, smtp_conn.c,
 * smtp_servers.c). A job is rs[0..n), all of one message, for the
 * destination nexthop ("domain" with MX lookup, "[host]:port",
 * "host:port", lmtp "unix:/path" / "inet:host:port"; relayhost already
 * applied by routing). deliver_smtp_prepare() runs on a worker: a
 * destination known dead reports every recipient at once and gives NULL. deliver_smtp_launch() runs a
 * message's jobs on one engine loop and returns 1 (done(arg) follows
 * there once every recipient is reported), or 0 when it reported them
 * all already (no loops). deliver_smtp_wait() launches and waits. */
struct engine;
struct deliver_smtp_conf;
struct deliver_smtp_job;
struct deliver_smtp_conf *deliver_smtp_conf_new(const struct cfg *cfg, struct buf *err);
void deliver_smtp_conf_free(struct deliver_smtp_conf *sc);
struct deliver_smtp_job *deliver_smtp_prepare(struct deliver_rcpt **rs, size_t n,
					      const char *transport, const char *nexthop);
int deliver_smtp_launch(struct deliver_smtp_job **jobs, size_t n, void (*done)(void *arg),
			void *arg);
void deliver_smtp_wait(struct deliver_smtp_job **jobs, size_t n);
/* The loops the sessions run on (main.c, after engine_start()). */
int deliver_smtp_init(struct engine *e, struct buf *err);
/* Close every session for good (sched_stop(), while the loops still
 * run); their messages stay queued. Later jobs report 4.3.0 at once. */
void deliver_smtp_shutdown(void);
/* tern flush: forget suspended (dead) destinations, close cached connections. */
void deliver_smtp_reset(void);

/* The one maildir writer (deliver_maildir.c): headers then content into
 * DIR/tmp, fsync, link into DIR/new, fsync DIR/new; creates DIR/{tmp,new,
 * cur} as needed. 0, or -1 with err and *temp (1 = retry may help). */
int deliver_maildir_write(const char *dir, const char *headers, const char *content, size_t len,
			  struct buf *err, int *temp);
/* mbox append with fcntl + dotlock locking (deliver_local.c). */
int deliver_mbox_write(const char *path, const char *sender, const char *headers,
		       const char *content, size_t len, struct buf *err, int *temp);
/* Return-Path:, Delivered-To: (and X-Original-To:) for a delivery. */
void deliver_headers(const struct deliver_rcpt *r, struct buf *out);

/* Delivery status notifications (bounce.c, RFC 3464/3461). bounce_note()
 * records one recipient's entry — action "failed", "delayed", "delivered"
 * or "relayed" — if its NOTIFY= asks for it (no NOTIFY: failures and
 * delays only); relay is the remote host ("none" or "local"... when not
 * remote), text the reply or reason. qr may be NULL. After the attempt
 * the scheduler calls bounce_flush(), which queues one report per kind
 * to the sender: non-delivery, delay, success. Mail from <> gets none;
 * its failures go to 2bounce_notice_recipient from double_bounce_sender,
 * and a failing notice from that sender is discarded (logged), so
 * notices never loop. -1 when a report could not be queued: the caller
 * must then keep the recipients (defer), not lose the notice. */
void bounce_note(struct deliver_msg *m, const char *action, const char *addr, const char *orig,
		 const struct queue_rcpt *qr, const char *dsn, const char *relay,
		 const char *text);
int bounce_flush(struct deliver_msg *m);
/* The queue recipient an address descends from (aliases), or NULL. */
const struct queue_rcpt *deliver_rcpt_queue_rcpt(const struct deliver_rcpt *r);

#endif
