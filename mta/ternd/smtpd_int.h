/* smtpd_int.h - what the smtpd_*.c modules share and nobody else sees:
 * the per-listener config snapshot, the session state and the seams
 * between session I/O (smtpd_session.c), commands (smtpd_cmd.c),
 * content (smtpd_data.c), access checks per stage (smtpd_check.c) with
 * the restriction engine (smtpd_restr*.c, smtpd_restr.h) and the policy
 * client (smtpd_policy.c), BCC/REDIRECT at queue time (smtpd_bcc.c),
 * Received: (smtpd_received.c), XCLIENT (smtpd_xclient.c) and "tern
 * explain" (smtpd_explain.c).
 * Pitfall: a session is owned by one event loop; only the connection
 * counters (smtpd_session.c) and the policy pool list are shared between
 * loops. A session waiting for a check (SMTPD_ST_CHECK) reads no input
 * and is freed only when the check reports back.
 */
#ifndef TERN_SMTPD_INT_H
#define TERN_SMTPD_INT_H

#include "addr.h"
#include "buf.h"
#include "cfg.h"
#include "inet.h"
#include "matchlist.h"
#include "queue.h"
#include "smtpd.h"
#include "smtpd_restr.h"
#include "smtpd_tls.h"
#include "table.h"

#include <stddef.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>

struct event;
struct bufferevent;
struct resolver;

/* ---- access checks (smtpd_check.c, engine in smtpd_restr*.c) */
struct smtpd_checks;
struct smtpd_checks *smtpd_checks_new(const struct cfg *cfg, const char *listener, struct buf *err);
void smtpd_checks_free(struct smtpd_checks *c);
const struct restr_conf *smtpd_checks_restr(const struct smtpd_checks *c);

/* ---- the config snapshot (smtpd_conf.c) */
enum smtpd_bare_nl { SMTPD_BARE_NO, SMTPD_BARE_NORMALIZE, SMTPD_BARE_NOTE, SMTPD_BARE_REJECT };

/* EHLO keywords (smtpd_discard_ehlo_keywords) */
#define SMTPD_EHLO_PIPELINING 0x001
#define SMTPD_EHLO_SIZE 0x002
#define SMTPD_EHLO_VRFY 0x004
#define SMTPD_EHLO_ENHANCED 0x008
#define SMTPD_EHLO_8BITMIME 0x010
#define SMTPD_EHLO_DSN 0x020
#define SMTPD_EHLO_SMTPUTF8 0x040
#define SMTPD_EHLO_CHUNKING 0x080
#define SMTPD_EHLO_XCLIENT 0x100
#define SMTPD_EHLO_SILENT 0x200 /* "silent-discard": don't log discards */
#define SMTPD_EHLO_STARTTLS 0x400
#define SMTPD_EHLO_AUTH 0x800

struct smtpd_conf {
	int refs;
	char *listener;
	char *myhostname, *mail_name, *banner, *myorigin, *mydomain, *dns_servers;
	char *rcpt_delim;
	char *compat_level, *mail_version; /* sent to policy services */
	char *always_bcc;
	char *content_filter; /* content_filter: transport:destination, "" = none */
	struct table **sender_bcc, **rcpt_bcc; /* sender_bcc_maps, recipient_bcc_maps */
	size_t nsender_bcc, nrcpt_bcc;
	long long size_limit, line_limit, rcpt_limit, soft_limit, hard_limit, junk_limit;
	long long data_memory_limit; /* smtpd_data_memory_limit: all sessions */
	long long timeout_ms, err_sleep_ms, hopcount_limit;
	long long conn_count_limit, conn_rate_limit, rate_unit_s;
	int ehlo_discard;
	int disable_vrfy, helo_required, strict_rfc821, smtputf8_enable, append_at_myorigin,
	    append_dot_mydomain, peername_lookup, port_logging, forbid_unauth_pipelining;
	enum smtpd_bare_nl bare_nl;
	int bare_nl_code;
	struct matchlist *mynetworks, *bare_nl_exclusions, *xclient_hosts, *event_exceptions;
	struct smtpd_checks *checks;
	struct smtpd_tls_conf *tls;   /* smtpd_tls.c: NULL without TLS */
	struct smtpd_sasl_conf *sasl; /* smtpd_sasl.c: NULL without AUTH */
	/* smtpd_milters, non_smtpd_milters (smtpd_milter_conf.c) */
	struct smtpd_milter_conf *milters, *local_milters;
};

/* ---- the session (smtpd_session.c) */
enum smtpd_state {
	SMTPD_ST_LOOKUP, /* reverse DNS before the greeting */
	SMTPD_ST_CMD,
	SMTPD_ST_DATA,
	SMTPD_ST_BDAT,
	SMTPD_ST_QUEUE, /* waiting for queue_submit()'s callback */
	SMTPD_ST_CHECK, /* waiting for an access check (DNS, policy service) */
	SMTPD_ST_CLOSE, /* flushing the last reply */
	SMTPD_ST_TLS,	/* TLS handshake (STARTTLS or wrapper mode) */
};

/* Command statistics, in Postfix's smtpd_cmd_table order for the
 * "disconnect from ..." line (smtpd_format_cmd_stats()). */
enum smtpd_cmd_id {
	SMTPD_C_HELO,
	SMTPD_C_EHLO,
	SMTPD_C_XCLIENT,
	SMTPD_C_STARTTLS,
	SMTPD_C_AUTH,
	SMTPD_C_MAIL,
	SMTPD_C_RCPT,
	SMTPD_C_DATA,
	SMTPD_C_BDAT,
	SMTPD_C_RSET,
	SMTPD_C_NOOP,
	SMTPD_C_VRFY,
	SMTPD_C_ETRN,
	SMTPD_C_QUIT,
	SMTPD_C_UNKNOWN,
	SMTPD_C_COUNT
};

struct smtpd_client {
	char *name; /* verified host name or "unknown" */
	char *addr; /* printable address, "192.0.2.1" / "2001:db8::1" */
	char *port;
	char *rfc_addr;		     /* for Received: "192.0.2.1" / "IPv6:2001:db8::1" */
	char *namaddr;		     /* "name[addr]" (":port" with smtpd_client_port_logging) */
	char *rev_name;		     /* unverified PTR name or "unknown" */
	int name_status, rev_status; /* 0 known, 4 temporary failure, 5 permanent */
	int forged;		     /* our lookup: a PTR name that does not resolve back */
	struct inet_addr ip;
};

struct smtpd_session {
	struct event_base *base;
	struct bufferevent *bev;
	struct smtpd_conf *conf;
	struct queue *q;
	struct smtpd_hooks hooks;
	enum smtpd_state state;
	struct smtpd_client client;
	struct inet_addr counted_ip; /* key of the connection counter, for release */
	int counted;
	int conn_count; /* this client's connections, 0 when exempt from the limits */
	struct event *sleep_ev; /* error-sleep (smtpd_error_sleep_time) */
	struct buf delayed;	/* reply held back by the error sleep */
	struct buf out;		/* replies not yet handed to the socket */
	struct event *flush_ev; /* writes out once the current callback is done */
	int paused;		/* error sleep or output backlog: no input processing */
	int dead;		/* peer gone while a queue commit is in flight */
	int peer_eof;		/* client half-closed: answer what it sent, then close */
	int draining;		/* smtpd_sessions_drain() was called */
	int in_list;
	int connect_logged;
	struct smtpd_session *prev, *next;

	/* command line reader */
	struct buf line;
	int line_skip;	/* line longer than line_length_limit: skipping to LF */
	int line_lastc; /* last raw byte of the line (CR test) */
	int line_long;

	/* SMTP state */
	char *helo;
	int esmtp;
	const char *last_cmd; /* for "lost connection after X" */
	int error_count, junk_cmds;
	int ok[SMTPD_C_COUNT], total[SMTPD_C_COUNT];
	int bare_lf_noted;
	int xclient_done;
	int ill_pipelining; /* sent ahead of our reply where RFC 2920 forbids it */
	char *server_addr, *server_port; /* our end of the connection */

	/* access checks */
	struct smtpd_check_req *check; /* in progress (SMTPD_ST_CHECK when waiting) */
	enum smtpd_cmd_id check_cmd;   /* the command waiting for it */
	int check_disconnect;	       /* a 421/521 access reply: close after it */
	struct buf *check_trace;       /* "tern explain": the evaluation, step by step */
	char *access_denied;	       /* client rejected at CONNECT (smtpd_delay_reject=no) */
	struct restr_defer dip;	       /* defer_if_permit reason of earlier stages */
	int dip_client, dip_helo, dip_sender;
	unsigned txn_seq;			  /* transactions so far: the policy "instance" */
	char *pend_raw, *pend_canon, *pend_orcpt; /* the command waiting for its checks */
	int pend_notify;
	size_t pend_size;  /* BDAT waiting for smtpd_data_restrictions */
	char *bdat_denied; /* their refusal: every chunk gets it */
	/* effects of access actions on the transaction */
	int txn_hold, txn_discard;
	char *txn_redirect;
	char *txn_filter; /* FILTER transport:destination (access action) */
	struct buf txn_bcc, txn_prepend; /* '\n'-separated */

	/* transaction */
	int in_mail;
	char *sender_raw; /* as given, for logs */
	struct queue_env env;
	char qid[QUEUE_ID_SIZE];
	int have_qid;
	size_t rcpt_total; /* RCPT commands this transaction, for the limit */
	char *first_rcpt;  /* first accepted recipient as given (Received: for) */
	long long declared_size;

	/* content (DATA or BDAT) */
	struct buf content;
	size_t data_bytes; /* bytes received on the wire, for logs */
	int data_prev_crlf, data_midline, data_in_header, data_hdr_cont;
	int data_too_big, data_bare_lf, data_hops;
	int data_no_memory;   /* smtpd_data_memory_limit reached: 452 at the end */
	size_t data_charged;  /* bytes of content counted against that limit */
	size_t data_line_off; /* where the current line starts in content */
	int bdat_cr;	      /* a chunk ended in CR: maybe half a CRLF */
	struct buf msgid;
	int bdat_used; /* BDAT seen in this transaction: DATA refused */
	int bdat_last, bdat_err;
	size_t bdat_left, bdat_total;
	const char *bdat_reply; /* sticky error for the remaining chunks */

	struct smtpd_milters *milters; /* milter connections (smtpd_milter.c) */
	int local_submit; /* no SMTP client: non_smtpd_milters for pickup (smtpd_milter_local.c) */

	/* TLS and AUTH (smtpd_tls.c, smtpd_sasl.c) */
	struct ssl_st *tls;		   /* established TLS (owned by bev), else NULL */
	char *sasl_method, *sasl_username; /* after a successful AUTH */
	char *sasl_sender;		   /* MAIL FROM AUTH=, of this transaction */
	struct smtpd_sasl_xchg *sasl_xchg; /* AUTH exchange in progress */
	struct smtpd_dovecot *sasl_dovecot; /* smtpd_sasl_type = dovecot: its connection */
};

/* smtpd_session.c */
void smtpd_reply(struct smtpd_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void smtpd_session_close(struct smtpd_session *s); /* after the last reply is out */
int smtpd_session_pending_input(struct smtpd_session *s);
void smtpd_session_peek_input(struct smtpd_session *s, struct buf *out, size_t max);
void smtpd_session_resume(struct smtpd_session *s);
int smtpd_client_trusted(struct smtpd_session *s, const struct matchlist *l);
void smtpd_client_set(struct smtpd_client *c, const char *name, const char *addr, const char *port,
		      int port_logging);
void smtpd_client_free(struct smtpd_client *c);
void smtpd_greet(struct smtpd_session *s);
/* XCLIENT: greet the new client, after the connect checks when check. */
void smtpd_session_connect_check(struct smtpd_session *s, int check);
struct resolver *smtpd_resolver(struct smtpd_session *s); /* this loop's */
/* Put ssl under the session: replies so far leave in plaintext, unread
 * plaintext input is dropped (CVE-2011-0411), the handshake runs on the
 * loop (SMTPD_ST_TLS) with timeout_ms; reply (no CRLF) is sent first, in
 * plaintext. 0, or -1 when it could not start (ssl is freed). */
int smtpd_session_tls_start(struct smtpd_session *s, struct ssl_st *ssl, long long timeout_ms,
			    const char *reply);
/* After the handshake: back to commands (greet first in wrapper mode). */
void smtpd_session_tls_ready(struct smtpd_session *s, int greet);

/* smtpd_cmd.c */
void smtpd_cmd_run(struct smtpd_session *s, char *line, int bare_lf);
void smtpd_txn_reset(struct smtpd_session *s);
void smtpd_log_reject(struct smtpd_session *s, const char *stage, const char *reply,
		      const char *rcpt);
/* A command whose checks were awaited is done: count it (rc 0 ok, -1 error). */
void smtpd_cmd_done(struct smtpd_session *s, int rc);
#define SMTPD_CMD_PENDING 1 /* command handler result: the answer comes later */

/* smtpd_data.c */
void smtpd_data_begin(struct smtpd_session *s);
void smtpd_data_input(struct smtpd_session *s); /* DATA: consumes input */
void smtpd_bdat_input(struct smtpd_session *s); /* BDAT: consumes input */
void smtpd_bdat_begin(struct smtpd_session *s, size_t size, int last);
void smtpd_data_free(struct smtpd_session *s);

/* smtpd_check.c: run the checks of a stage. cb gets rc 0 (accept) or -1
 * with the reply (4xx/5xx text without CRLF); it runs before the return
 * when no answer had to be awaited (return 0), else later (return 1)
 * with the session in SMTPD_ST_CHECK meanwhile. */
typedef void (*smtpd_check_cb)(struct smtpd_session *s, int rc, const char *reply);
int smtpd_check_start(struct smtpd_session *s, enum smtpd_stage stage, const char *raw,
		      const char *canon, smtpd_check_cb cb);
/* Does this stage have anything to check (else skip the round trip)? */
int smtpd_check_has(const struct smtpd_conf *conf, enum smtpd_stage stage);
int smtpd_check_delay_reject(const struct smtpd_conf *conf);
/* For the engine: domain in mydestination/virtual_mailbox_domains (1),
 * not (0), lookup error (-1); the recipient may be relayed to (1), not
 * (0), lookup error (-1, reply set); implicit address validation. */
int smtpd_check_domain_final(struct smtpd_session *s, const char *domain, struct buf *err);
int smtpd_check_domain_local(struct smtpd_session *s, const char *domain, struct buf *err);
int smtpd_conf_domain_local(const struct smtpd_conf *c, const char *domain, struct buf *err);
int smtpd_check_rcpt_authorized(struct restr_eval *ev);
int smtpd_check_rcpt_maps(struct restr_eval *ev);
int smtpd_check_sender_maps(struct restr_eval *ev);
/* Qualify an address as Postfix's trivial-rewrite (append_at_myorigin,
 * append_dot_mydomain) and format it plain into out. */
void smtpd_check_canon(const struct smtpd_conf *conf, const struct addr *a, struct buf *out);

/* smtpd_bcc.c: REDIRECT, automatic BCC and BCC actions, before queueing */
int smtpd_bcc_apply(struct smtpd_session *s); /* -1: a map failed (451, not queued) */

/* smtpd_received.c */
void smtpd_received_format(struct smtpd_session *s, time_t when, struct buf *out);

/* smtpd_xclient.c */
int smtpd_xclient_cmd(struct smtpd_session *s, int argc, char **argv);

/* Replace control characters with '?' (Postfix's printable()): client
 * supplied text that ends up in headers, logs or replies (HELO, XCLIENT
 * values) must never carry a CR or LF (header injection, reply desync). */
void smtpd_printable(char *text);

/* Drop the content of the transaction and its memory charge. */
void smtpd_data_release(struct smtpd_session *s);

#endif
