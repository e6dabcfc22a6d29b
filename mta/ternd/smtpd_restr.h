/* smtpd_restr.h - the SMTP access restriction engine (Postfix smtpd_check):
 * restriction lists parsed once per config snapshot (smtpd_restr_parse.c),
 * evaluated per command (smtpd_restr.c) with Postfix's semantics: in order,
 * OK/permit ends a list, REJECT/DEFER end the stage, DUNNO goes on,
 * DEFER_IF_PERMIT/DEFER_IF_REJECT are remembered, warn_if_reject turns the
 * next reject into a log line, classes and table results recurse.
 *
 * Asynchronous checks (DNS, policy services, sleep) never block the loop:
 * an evaluation is a pure function of the session and of the answers
 * already received ("memo", by order of asking). When it needs an answer
 * it does not have, it starts the query and stops with RESTR_PENDING; the
 * answer is appended to the memo and the whole stage is evaluated again
 * from the start, now finding the answer. Log lines and side effects
 * (HOLD, BCC, PREPEND...) are collected in the evaluation and take effect
 * only once it is complete, so a replay never logs twice.
 * Pitfall: everything an evaluation reads must be the same on a replay
 * (the session is paused meanwhile: no command can change it).
 */
#ifndef TERN_SMTPD_RESTR_H
#define TERN_SMTPD_RESTR_H

#include "buf.h"
#include "cfg.h"
#include "table.h"

#include <stddef.h>

struct event_base;
struct matchlist;
struct smtpd_session;
struct smtpd_checks;
struct policy_service;

/* Results of one restriction, a list, or a stage (Postfix SMTPD_CHECK_*). */
#define RESTR_DUNNO 0
#define RESTR_OK 1
#define RESTR_REJECT 2
#define RESTR_PENDING 3 /* an answer is awaited: stop, the stage is re-run */

enum restr_op {
	RO_PERMIT,
	RO_REJECT,
	RO_DEFER,
	RO_DEFER_IF_PERMIT,
	RO_DEFER_IF_REJECT,
	RO_WARN_IF_REJECT,
	RO_SLEEP,
	RO_POLICY,
	RO_UNAUTH_PIPELINING,
	RO_PLAINTEXT,
	RO_MULTI_RCPT_BOUNCE,
	RO_PERMIT_MYNETWORKS,
	RO_PERMIT_INET_INTERFACES,
	RO_PERMIT_SASL,
	RO_PERMIT_TLS_ALL,
	RO_PERMIT_TLS,
	RO_CCERT_ACCESS,
	RO_SASL_ACCESS,
	RO_CLIENT_ACCESS,
	RO_CLIENT_A_ACCESS,
	RO_CLIENT_MX_ACCESS,
	RO_CLIENT_NS_ACCESS,
	RO_REVERSE_ACCESS,
	RO_REVERSE_A_ACCESS,
	RO_REVERSE_MX_ACCESS,
	RO_REVERSE_NS_ACCESS,
	RO_UNKNOWN_CLIENT,
	RO_UNKNOWN_REVERSE_CLIENT,
	RO_RBL_CLIENT,
	RO_DNSWL_CLIENT,
	RO_RHSBL_CLIENT,
	RO_RHSWL_CLIENT,
	RO_RHSBL_REVERSE_CLIENT,
	RO_HELO_ACCESS,
	RO_HELO_A_ACCESS,
	RO_HELO_MX_ACCESS,
	RO_HELO_NS_ACCESS,
	RO_INVALID_HELO,
	RO_NON_FQDN_HELO,
	RO_UNKNOWN_HELO,
	RO_RHSBL_HELO,
	RO_PERMIT_NAKED_IP,
	RO_SENDER_ACCESS,
	RO_SENDER_A_ACCESS,
	RO_SENDER_MX_ACCESS,
	RO_SENDER_NS_ACCESS,
	RO_NON_FQDN_SENDER,
	RO_UNKNOWN_SENDER_DOMAIN,
	RO_RHSBL_SENDER,
	RO_UNLISTED_SENDER,
	RO_SENDER_LOGIN_MISMATCH,
	RO_RECIPIENT_ACCESS,
	RO_RECIPIENT_A_ACCESS,
	RO_RECIPIENT_MX_ACCESS,
	RO_RECIPIENT_NS_ACCESS,
	RO_PERMIT_AUTH_DEST,
	RO_PERMIT_MX_BACKUP,
	RO_REJECT_UNAUTH_DEST,
	RO_DEFER_UNAUTH_DEST,
	RO_CHECK_RELAY_DOMAINS,
	RO_NON_FQDN_RCPT,
	RO_UNKNOWN_RCPT_DOMAIN,
	RO_RHSBL_RCPT,
	RO_UNLISTED_RCPT,
	RO_ETRN_ACCESS,
	RO_IMPLICIT, /* a bare type:table: the list's check_<class>_access */
	RO_CLASS,    /* a smtpd_restriction_classes name */
};

/* One parsed restriction. */
struct restr_item {
	enum restr_op op;
	const char *name;	       /* as written (lower case for built-ins) */
	char *arg;		       /* table spec, DNS list domain[=filter], sleep seconds */
	struct table *table;	       /* check_*_access */
	struct policy_service *policy; /* check_policy_service */
	size_t cls;		       /* RO_CLASS: index in checks->classes */
};

struct restr_list {
	char *param; /* parameter (or class) it came from */
	struct restr_item *v;
	size_t n;
};

/* The restriction lists of one listener (part of struct smtpd_checks). */
enum restr_stage_list {
	RL_CLIENT,
	RL_HELO,
	RL_SENDER,
	RL_RELAY,
	RL_RECIPIENT,
	RL_DATA,
	RL_EOD,
	RL_ETRN,
	RL_COUNT
};

struct restr_class {
	char *name;
	struct restr_list list;
};

struct restr_conf {
	struct restr_list lists[RL_COUNT];
	struct restr_class *classes;
	size_t nclasses;
	struct policy_service **policies; /* owned, one per distinct spec */
	size_t npolicies;
	struct table **tables; /* owned, one per distinct spec */
	size_t ntables;
	struct table **rbl_reply_maps;
	size_t nrbl_reply_maps;
	char *default_rbl_reply;
	char *null_key;
	int access_parent; /* smtpd_access_maps in parent_domain_matches_subdomains */
	int delay_reject, helo_required, soft_bounce, show_unk_table, allow_untrusted_routing;
	int access_code, access_defer_code, reject_code, defer_code, relay_code, rbl_code,
	    bad_name_code, non_fqdn_code, plaintext_code, unk_addr_code, unk_client_code,
	    unk_name_code, mul_rcpt_code;
	int unk_name_tf_defer,
	    unk_addr_tf_defer; /* tempfail action is "defer" (else defer_if_permit) */
	struct matchlist *perm_mx_networks, *inet_interfaces;
	int perm_mx_set;   /* permit_mx_backup_networks is not empty */
	char **permit_log; /* smtpd_log_access_permit_actions */
	size_t npermit_log;
};

int restr_conf_load(struct restr_conf *rc, const struct cfg *cfg, const char *listener,
		    struct buf *err);
void restr_conf_free(struct restr_conf *rc);
const char *restr_op_name(enum restr_op op);
/* A restriction or class name as a table value may give it: fills it
 * (op, name, cls); *arg is the argument kind (0 none, 1 table, 2 domain,
 * 3 policy, 4 number). -1 when unknown. */
int restr_name_find(const struct restr_conf *rc, const char *word, struct restr_item *it, int *arg);

/* ---- evaluation ---- */

/* Protocol stages (Postfix state->where). */
enum smtpd_stage {
	SMTPD_STAGE_CONNECT,
	SMTPD_STAGE_HELO,
	SMTPD_STAGE_MAIL,
	SMTPD_STAGE_RCPT,
	SMTPD_STAGE_VRFY,
	SMTPD_STAGE_DATA,
	SMTPD_STAGE_EOD,
	SMTPD_STAGE_ETRN,
};

/* A remembered deferral (Postfix SMTPD_DEFER). */
struct restr_defer {
	int active;
	int soft; /* error class: configuration/data errors are never warnings */
	int code;
	char dsn[16];
	struct buf reason;
};

/* One answer of an asynchronous lookup. DNS: status = resolver_status,
 * v = records as text (MX: host names, pref in pref[]); policy: status 0
 * with v[0] = the action, or -1 (failed after all tries); sleep: 0. */
struct restr_answer {
	int status;
	char **v;
	int *pref;
	size_t n;
};

typedef void (*restr_trace_fn)(void *arg, int depth, const char *text);

struct restr_eval {
	struct smtpd_session *s;
	const struct smtpd_checks *c;
	const struct restr_conf *rc;
	enum smtpd_stage stage;
	const char *where;	/* "RCPT", "END-OF-MESSAGE", ... */
	const char *recipient;	/* raw recipient (RCPT/VRFY, or the only one at DATA) */
	const char *rcpt_canon; /* the same, qualified (NULL when unset) */
	const char *sender;	/* raw sender, NULL before MAIL */
	const char *sender_canon;
	const char *helo; /* NULL before HELO */
	const char *etrn; /* ETRN argument */

	/* per pass */
	int recursion, warn_if_reject;
	struct restr_defer dip, dir; /* defer_if_permit, defer_if_reject */
	int rcptmap_checked, sender_rcptmap_checked;
	struct buf reply; /* the final reply text, "554 5.7.1 ..." */
	int disconnect;	  /* 421/521 from an access table: close after the reply */
	struct buf log;	  /* lines to log when done, '\n'-separated */
	struct buf trace; /* explain output (when trace is on) */
	int tracing;
	int discard, hold;
	char *filter, *redirect;
	struct buf bcc, prepend; /* '\n'-separated */

	/* asynchronous answers, by order of asking */
	struct restr_answer *memo;
	size_t nmemo, next;
	int waiting;
	int starting; /* inside resolver_query(): an answer now is not a resume */
	void (*resume)(struct restr_eval *ev); /* an answer arrived */
};

void restr_eval_init(struct restr_eval *ev);
void restr_eval_reset_pass(struct restr_eval *ev); /* before each (re-)evaluation */
void restr_eval_free(struct restr_eval *ev);

/* One restriction list: RESTR_OK / RESTR_DUNNO / RESTR_REJECT / RESTR_PENDING. */
int restr_list_eval(struct restr_eval *ev, const struct restr_list *l, const char *reply_name,
		    const char *reply_class, enum restr_op def_acl);
/* Postfix smtpd_check_reject(): format, log (buffered), apply
 * defer_if_reject, warn_if_reject and soft_bounce. soft: the error is a
 * configuration or lookup problem (never only a warning). */
int restr_reject(struct restr_eval *ev, int soft, int code, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Apply a remembered defer_if_permit now (end of a stage). */
int restr_apply_defer_if_permit(struct restr_eval *ev);
/* Buffer a "NOQUEUE: whatsup: WHERE from h[a]: text; from=<> ..." line. */
void restr_log_whatsup(struct restr_eval *ev, const char *whatsup, const char *text);
void restr_tracef(struct restr_eval *ev, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Postfix smtpd_dsn_fix(): adjust an X.1.Y status for the reply class. */
void restr_dsn_fix(char dsn[16], const char *reply_class);

#define RESTR_NAME_CLIENT "Client host"
#define RESTR_NAME_HELO "Helo command"
#define RESTR_NAME_SENDER "Sender address"
#define RESTR_NAME_RECIPIENT "Recipient address"
#define RESTR_NAME_ETRN "Etrn command"
#define RESTR_NAME_DATA "Data command"
#define RESTR_NAME_EOD "End-of-data command"

/* ---- policy client (smtpd_policy.c) ---- */

/* Settings of one check_policy_service entry (global defaults with the
 * "{ endpoint, name=value ... }" overrides). */
struct policy_service {
	char *spec;	/* as written, the key of the connection pool */
	char *endpoint; /* inet:host:port or unix:/path */
	long long timeout_ms, max_idle_ms, max_ttl_ms, retry_delay_ms;
	long long request_limit, try_limit;
	char *default_action, *policy_context;
};

struct policy_service *policy_service_parse(const struct cfg *cfg, const char *listener,
					    const char *spec, struct buf *err);
void policy_service_free(struct policy_service *p);

/* Ask the service; cb runs once, later, on base's loop: action is the
 * reply's action, or NULL when every try failed (why says why). */
typedef void (*policy_cb)(void *arg, const char *action, const char *why);
void policy_query(struct event_base *base, const struct policy_service *p, const char *request,
		  policy_cb cb, void *arg);

#endif
