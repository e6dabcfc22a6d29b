/* smtp_client.h - the parts of the smtp/lmtp/relay transports
 * (deliver.h) shared by their three files:
 *
 *   deliver_smtp.c  settings, per-destination concurrency slots, dead
 *                   destinations, and the jobs: one message's recipients
 *                   for one destination, in transactions of at most the
 *                   recipient limit, tried server after server
 *   smtp_servers.c  destination -> server list (MX, A/AAAA, literals,
 *                   lmtp unix:/inet:, loop detection)
 *   smtp_conn.c     one SMTP/LMTP session on an engine loop (libevent),
 *                   and the connection cache
 *
 * Everything a job and its sessions touch lives on one event loop; only
 * the slot table, the dead-destination table and the connection cache
 * are shared (each under its own mutex).
 */
#ifndef TERN_SMTP_CLIENT_H
#define TERN_SMTP_CLIENT_H

#include "buf.h"
#include "deliver.h"
#include "listener.h"

#include <sys/socket.h>
#include <sys/un.h>

struct event_base;
struct queue_rcpt;
struct smtp_server;

#define SMTP_PORT 25
#define LMTP_PORT 24

/* Per transport (smtp, relay, lmtp): Postfix's timeouts and limits. */
struct smtp_proto_conf {
	long long connect, helo, mail, rcpt, data_init, data_xfer, data_done, quit; /* seconds */
	long long concurrency, rcpt_limit;
};

struct deliver_smtp_conf {
	struct smtp_proto_conf smtp, lmtp, relay;
	char *helo_name, *myhostname;
	long long mx_address_limit, mx_session_limit;
	int skip_5xx_greeting;
	int want_v4, want_v6;
	long long cache_time, reuse_time; /* smtp_connection_cache/reuse_time_limit */
	int cache_on_demand;		  /* smtp_connection_cache_on_demand */
	char **cache_dests;		  /* smtp_connection_cache_destinations (next hops) */
	size_t ncache_dests;
	struct sockaddr_storage bind4, bind6; /* smtp_bind_address(6); family 0: none */
	int addr_pref;			      /* smtp_address_preference: 0 any, 4, 6 */
	long long line_limit;		      /* smtp_line_length_limit, 0: none */
	long long dead_time;		  /* a destination nobody answers at: skipped this long */
	struct resolver *resolver; /* only to check dns_servers; lookups use smtp_resolver() */
	unsigned long generation;  /* which settings a thread's resolver belongs to */
	struct listen_set self; /* our listeners, for loop detection */
	struct sockaddr_storage *ifaddrs; /* this host's interface addresses (wildcard listeners) */
	size_t nifaddrs;
	char *dns_servers;
	/* TLS and SASL (smtp_tls.c) */
	struct ssl_ctx_st *tls_ctx;
	int tls_level; /* SMTP_TLS_*: smtp_tls_security_level */
	char *tls_verify_match, *tls_secure_match;
	char *tls_servername; /* smtp_tls_servername: "", hostname, nexthop or a name */
	int tls_wrapper; /* smtp_tls_wrappermode */
	int tls_loglevel; /* smtp_tls_loglevel: >= 1 logs "TLS connection established" */
	int tls_mandatory_min; /* smtp_tls_mandatory_protocols: lowest version at encrypt+ */
	int tls_note_offer;    /* smtp_tls_note_starttls_offer */
	long long starttls_timeout;
	struct deliver_maps tls_policy; /* smtp_tls_policy_maps */
	int sasl_enable, sasl_by_sender, sasl_soft_bounce;
	int sasl_plain, sasl_plain_tls; /* PLAIN/LOGIN allowed without, with TLS */
	struct deliver_maps sasl_maps;	/* smtp_sasl_password_maps */
};

/* --- TLS and SASL (smtp_tls.c) ------------------------------------------ */

struct ssl_st;
enum { SMTP_TLS_NONE, SMTP_TLS_MAY, SMTP_TLS_ENCRYPT, SMTP_TLS_VERIFY, SMTP_TLS_SECURE };

/* The TLS policy of one destination. */
struct smtp_tls_policy {
	int level;
	char *match; /* policy table "match=": overrides the *_cert_match setting */
	char servername[254]; /* policy "servername=" (a DNS name: 253 at most), else "" */
};

int smtp_tls_conf_init(struct deliver_smtp_conf *sc, const struct cfg *cfg, struct buf *err);
void smtp_tls_conf_free(struct deliver_smtp_conf *sc);
const char *smtp_tls_level_name(int level);
/* smtp_tls_security_level, or the destination's entry in
 * smtp_tls_policy_maps; -1 with err when the table cannot be read. */
int smtp_tls_policy_find(const struct deliver_smtp_conf *sc, const char *nexthop,
			 struct smtp_tls_policy *p, struct buf *err);
/* Credentials from smtp_sasl_password_maps (by sender first with
 * smtp_sender_dependent_authentication, then by next hop): 1 found,
 * 0 none (or SASL off), -1 table error. */
int smtp_sasl_find(const struct deliver_smtp_conf *sc, const char *sender, const char *nexthop,
		   struct buf *user, struct buf *pass, struct buf *err);
/* The connection's SSL: protocol floor by level, SNI by smtp_tls_servername
 * or the policy's servername= (host: the server's name). */
struct ssl_st *smtp_tls_ssl_new(const struct deliver_smtp_conf *sc, const struct smtp_tls_policy *p,
				const char *host, const char *nexthop);
/* After QUIT and its reply: TLS close_notify as Postfix sends it, on the
 * non-blocking socket (sent or dropped, never waited for). */
void smtp_tls_close_notify(struct ssl_st *ssl);
/* After the handshake: is the certificate good enough for the level?
 * *trust gets "Verified", "Trusted" or "Untrusted"; -1 with why if not. */
int smtp_tls_check(struct ssl_st *ssl, const struct deliver_smtp_conf *sc,
		   const struct smtp_tls_policy *p, const char *host, const char *nexthop,
		   const char **trust, struct buf *why);
/* "Verified TLS connection established to h[a]:p: TLSv1.3 with cipher ..." */
void smtp_tls_log(struct ssl_st *ssl, const char *agent, const char *trust,
		  const struct smtp_server *sv);

/* --- servers (smtp_servers.c) ------------------------------------------ */

struct smtp_server {
	char *name; /* host name for logs ("mx1.example.com", "127.0.0.1"; unix: myhostname) */
	char addr[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* printable, or the socket path */
	struct sockaddr_storage ss;
	socklen_t sslen;
	int port;
	int from_mx; /* subject to loop detection */
};

struct smtp_servers {
	struct smtp_server *v;
	size_t n;
};

/* Why no server could be found: dsn and text, for every recipient. */
struct smtp_fail {
	char dsn[16];
	struct buf text;
};

void smtp_fail_set(struct smtp_fail *f, const char *dsn, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The whole nexthop (maybe a list "a, b") into one server list, capped
 * at smtp_mx_address_limit, with DNS on base's loop. done() runs there
 * (maybe before this returns) with rc 0 and the list (the callee may
 * take it: move s->v out and zero s), or -1 with f set and bounce when
 * no retry can help (null MX, NXDOMAIN, mail loops back to myself). */
void smtp_servers_find_async(struct event_base *base, const struct deliver_smtp_conf *sc,
			     int lmtp, const char *nexthop,
			     void (*done)(void *arg, int rc, struct smtp_servers *s,
					  struct smtp_fail *f, int bounce),
			     void *arg);
void smtp_servers_free(struct smtp_servers *s);
/* Copy of one server (name owned by the copy; free with smtp_server_free). */
void smtp_server_copy(struct smtp_server *dst, const struct smtp_server *src);
void smtp_server_free(struct smtp_server *sv);
/* "h[a]:port" (unix: "myhostname[/path]") and "h[a]", for logs and DSNs. */
void smtp_relay_name(const struct smtp_server *sv, struct buf *out);
void smtp_hostaddr(const struct smtp_server *sv, struct buf *out);

/* --- one session (smtp_conn.c) ------------------------------------------ */

enum smtp_rstate { RS_OPEN, RS_SENT, RS_SOFT, RS_HARD };

/* One recipient of a transaction and what became of it. */
struct smtp_rcpt {
	struct deliver_rcpt *r;
	enum smtp_rstate st;
	char dsn[16];
	struct buf text;   /* reply or reason */
	const char *relay; /* for the log */
	int accepted;	   /* RCPT got 2xx in the current transaction */
	int remote_dsn;	   /* the server took NOTIFY= (no "relayed" notice) */
};

void smtp_rcpt_set(struct smtp_rcpt *x, enum smtp_rstate st, const char *dsn, const char *text);

/* How a session ended, for the job deciding what to try next. */
struct smtp_conn_end {
	int started; /* it got as far as a transaction (counts toward smtp_mx_session_limit) */
	int stale;   /* a cached connection found dead before anything happened */
	int reused;  /* it came from the connection cache */
	const struct smtp_server *sv; /* the server (valid during the callback) */
};

/* What a session is for: the recipients of xs[0..n) that are OPEN or
 * SOFT, on one server. why gets the reason a failed session gives its
 * recipients; t_conn the time the connection was set up (delays=c).
 * done() runs once, on base's loop, when the session is over (a QUIT
 * may still be on its way: the session frees itself afterwards). */
struct smtp_conn_req {
	struct event_base *base;
	const struct deliver_smtp_conf *sc;
	const struct smtp_proto_conf *pc;
	int lmtp;
	struct deliver_msg *m;
	struct smtp_rcpt *xs;
	size_t n;
	struct buf *relay; /* "h[a]:port" as logged; filled here for a cached connection
			    * (", conn_use=N" added); must outlive the job's report */
	const char *cache_key; /* "transport:nexthop[ user]": where it may wait afterwards */
	const char *nexthop;   /* for TLS name checks (secure) */
	const char *agent;     /* "smtp", "relay", "lmtp": the service logging TLS lines */
	const struct smtp_tls_policy *tls;
	const char *sasl_user, *sasl_pass; /* NULL: no AUTH */
	struct buf *why;
	char *why_dsn; /* [16]: "4.4.1" (no connection) or "4.4.2" (broken session) */
	double *t_conn;
	void (*done)(void *arg, const struct smtp_conn_end *end);
	void *arg;
};

/* Start a session on a new connection to sv. */
void smtp_conn_start(const struct smtp_conn_req *req, const struct smtp_server *sv);
/* Start one on a cached connection for req->cache_key; 0 when there is none. */
int smtp_conn_start_cached(const struct smtp_conn_req *req);
/* Close cached connections: all, or those past their time. */
void smtp_conn_cache_reap(int all);
/* On base's loop: close every session there, for good (shutdown). */
void smtp_conn_cancel_all(struct event_base *base);

#endif
