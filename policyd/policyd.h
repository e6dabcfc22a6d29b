/* policyd.h - tern-policyd's shared types: the configuration snapshot,
 * one request, per-message ("instance") memory, and the check interface.
 *
 * Data path: server.c (listeners, connections, protocol framing) ->
 * eval.c (checks in the configured order, first definitive action wins,
 * PREPEND/BCC queued per instance) -> check_<name>.c -> state.c (LMDB or
 * Redis). A struct pd_conf is immutable once built and reference counted:
 * a reload builds a new one while requests in flight keep the old one.
 * Pitfall: checks run on several threads at once (one event loop per
 * CPU, and worker threads for SPF and Redis): a check's run() must touch
 * only its own immutable settings, the request, the request's instance
 * memory (owned by one connection, used by one thread at a time) and
 * stores that lock themselves (state.c, shared/spf.c's caches).
 */
#ifndef TERN_POLICYD_H
#define TERN_POLICYD_H

#include "attr.h"
#include "buf.h"
#include "cfg.h"

#include <stddef.h>
#include <time.h>

#define PD_SERVICE "policyd"
#define PD_CONF_FILE "policyd.conf"
#define PD_PENDING_MAX 8 /* queued PREPEND/BCC actions per message */

extern const struct cfg_param policyd_params[];

struct pd_state;
struct table;

/* Per-message memory: Postfix's "instance" attribute is constant for all
 * requests of one message on one connection (postfix.md §1.2), so each
 * connection keeps the memory of its current message. Each configured
 * check (by its position in "checks") has a "done" bit and a cached
 * verdict: an SPF check evaluates a message once, a ratelimit check
 * counts it once, greylist and bcc give their action once. */
#define PD_CHECKS_MAX 16

struct pd_instance {
	struct buf id;
	unsigned done;			      /* bit i: checks[i] is done with this message */
	struct buf cache[PD_CHECKS_MAX];      /* checks[i]'s cached action (lazily allocated) */
	struct buf cache_note[PD_CHECKS_MAX]; /* and its log note */
	struct buf pending[PD_PENDING_MAX];   /* PREPEND/BCC/... not yet sent */
	size_t npending;
	struct buf given; /* actions already queued for this message, "\n"-separated */
};

void pd_instance_init(struct pd_instance *in);
void pd_instance_free(struct pd_instance *in);
/* New message when id differs (or is empty: no memory across requests). */
void pd_instance_switch(struct pd_instance *in, const char *id);
void pd_instance_push(struct pd_instance *in, const char *action);

/* One decoded request with the attributes every check reads. */
struct pd_req {
	const struct attr_list *attrs;
	const char *state; /* protocol_state, upper case as sent */
	const char *client_address, *client_name, *helo, *sender, *recipient;
	const char *sasl_username, *instance;
	long long recipient_count, size;
	time_t now; /* wall clock, or policy_test_time when allowed */
	struct pd_instance *inst;
};

/* What a check says: an access(5) action (empty = DUNNO) and a short note
 * for the decision log line ("greylist=new"). */
struct pd_verdict {
	struct buf action;
	struct buf note;
};

struct pd_conf;
struct pd_check;

struct pd_check_ops {
	const char *name;
	int blocking; /* may block (DNS, network state): run on a worker */
	int (*init)(struct pd_check *ck, struct pd_conf *pc, const struct cfg *cfg,
		    struct buf *err);
	void (*run)(struct pd_check *ck, struct pd_req *rq, struct pd_verdict *v);
	void (*free)(struct pd_check *ck);
	/* Optional, for a check that may block: answer like run() if that
	 * needs no waiting (an SPF result in the cache) and return 0, or
	 * return -1 having changed nothing: run() then goes to a worker. */
	int (*try_run)(struct pd_check *ck, struct pd_req *rq, struct pd_verdict *v);
};

/* One entry of "checks": a check name, or a group with its own settings
 * as Postfix's per-service overrides are written:
 * "{ ratelimit, ratelimit_rules = sasl_username:messages:10/1m }". */
struct pd_check {
	const struct pd_check_ops *ops;
	struct pd_conf *pc;
	void *priv;
	int index;	     /* position in checks: its bit in pd_instance.done */
	int blocking;	     /* ops->blocking, or it uses a state store that blocks */
	struct cfg *own_cfg; /* the file's settings plus the group's, or NULL */
};

static inline int pd_check_done(const struct pd_req *rq, const struct pd_check *ck)
{
	return (rq->inst->done >> ck->index) & 1u;
}

static inline void pd_check_set_done(struct pd_req *rq, const struct pd_check *ck)
{
	rq->inst->done |= 1u << ck->index;
}

/* Built from a loaded cfg by pd_conf_new() (conf.c). */
struct pd_conf {
	int refs; /* atomic */
	struct cfg *cfg;
	struct pd_check *checks;
	size_t nchecks;
	int blocking; /* some check blocks: evaluate on worker threads */
	int test_time;
	char *myhostname;
	char *delims;		/* recipient_delimiter */
	struct pd_state *state; /* NULL unless a check needs state */
	char *state_error_action;
	long long size_limit; /* bytes per request */
	long long idle_timeout;
	long long max_clients;
	long long workers;
	long long loops; /* event_loops (0: one per CPU), read at start */
};

struct pd_conf *pd_conf_new(struct cfg *cfg, struct buf *err);
void pd_conf_ref(struct pd_conf *pc);
void pd_conf_unref(struct pd_conf *pc);
/* The state store, opened on first use by a check's init. */
struct pd_state *pd_conf_state(struct pd_conf *pc, struct buf *err);

/* eval.c: evaluate one request; reply gets the action text (never empty). */
void pd_eval(struct pd_conf *pc, const struct attr_list *attrs, struct pd_instance *inst,
	     const char *peer, struct buf *reply);

/* The same in steps, so an event loop runs the checks that cannot block
 * and hands the request to a worker only at the first check that would
 * (server.c). One per connection; its buffers are reused by every
 * request, which spares allocations per request. */
struct pd_eval_run {
	size_t next; /* the check to run next */
	int fresh;   /* no check has run yet */
	time_t now;  /* the request's time, kept across the hand-over */
	struct buf notes;
	struct buf logline; /* the decision's log line, built here */
	struct pd_verdict v;
};

void pd_eval_run_init(struct pd_eval_run *run);
void pd_eval_run_free(struct pd_eval_run *run);
void pd_eval_run_start(struct pd_eval_run *run);
/* 0: done, reply set and the decision logged. 1 (only when !may_block):
 * a check would block; call again with may_block on a worker. */
int pd_eval_step(struct pd_eval_run *run, struct pd_conf *pc, const struct attr_list *attrs,
		 struct pd_instance *inst, const char *peer, struct buf *reply, int may_block);

/* Action classes (access(5), postfix.md §1.3). */
enum pd_action_class {
	PD_ACT_DUNNO,	   /* go on with the next check */
	PD_ACT_INFO,	   /* PREPEND, BCC, HOLD, REDIRECT, FILTER, WARN, INFO: queue, go on */
	PD_ACT_DEFINITIVE, /* OK, REJECT, DEFER*, 4xx/5xx, DISCARD, anything else */
};
enum pd_action_class pd_action_classify(const char *action);

/* Checks (check_<name>.c). */
extern const struct pd_check_ops pd_check_access_ops;
extern const struct pd_check_ops pd_check_spf_ops;
extern const struct pd_check_ops pd_check_greylist_ops;
extern const struct pd_check_ops pd_check_ratelimit_ops;
extern const struct pd_check_ops pd_check_bcc_ops;

/* Helpers shared by checks (conf.c). */
int pd_cfg_str(const struct cfg *cfg, const char *name, char **out, struct buf *err);
int pd_cfg_ll(const struct cfg *cfg, const char *name, long long *out, struct buf *err);
int pd_cfg_secs(const struct cfg *cfg, const char *name, long long *out, struct buf *err);
int pd_cfg_bool(const struct cfg *cfg, const char *name, int *out, struct buf *err);
/* Open every table of a CFG_TABLES parameter; *n may be 0. */
int pd_cfg_tables(const struct cfg *cfg, const char *name, struct table ***out, size_t *n,
		  struct buf *err);
void pd_tables_free(struct table **t, size_t n);
/* "192.0.2.7" -> "192.0.2.0/24" style client network key (v4len/v6len). */
int pd_client_net(const char *addr, int v4len, int v6len, struct buf *out);

#endif
