/* milter.h - what every tern-*-milter shares: program start, config
 * snapshots, and small libmilter helpers.
 *
 * milter_main() is each program's main(): it parses "-f -c FILE -n -v",
 * loads FILE (main.cf syntax, the milter's own parameters plus the common
 * ones below), sets up logging ("tern/<name>-milter[pid]: ..."), opens
 * the socket, detaches unless -f, writes the PID file, drops privileges
 * and runs libmilter. SIGUSR1 re-reads FILE: a valid config replaces the
 * running one for new SMTP sessions, sessions in progress keep the one
 * they started with (a reference count), an invalid one is logged and
 * ignored. SIGHUP, SIGTERM and SIGINT stop the milter, as libmilter
 * does (libmilter has no reload on SIGHUP); sessions in progress are cut.
 *
 * Pitfall: libmilter runs callbacks of one connection on different worker
 * threads over time; per-connection state lives in smfi_setpriv() only.
 */
#ifndef TERN_MILTER_H
#define TERN_MILTER_H

#include "buf.h"
#include "cfg.h"

#include <libmilter/mfapi.h>

struct milter_prog {
	const char *name;		/* "dkim": service dkim-milter, program tern-dkim-milter */
	const char *default_socket;	/* "inet:8891@127.0.0.1" */
	const struct cfg_param *params; /* the milter's own, terminated by name NULL */
	struct smfiDesc *desc;
	/* Build the milter's run-time state from a loaded, validated config;
	 * NULL with err set refuses the config. */
	void *(*conf_load)(const struct cfg *cfg, struct buf *err);
	void (*conf_free)(void *state);
	/* "tern-X-milter WORD args...": a helper command (genkey), or NULL. */
	int (*command)(int argc, char **argv);
};

int milter_main(int argc, char **argv, const struct milter_prog *prog);

/* A reference to the running config: take one per SMTP session (at
 * connect), read the milter's state through milter_conf_state(), give it
 * back at close. A reload never frees a config a session still holds. */
void *milter_conf_acquire(void);
void *milter_conf_state(void *ref);
void milter_conf_release(void *ref);

/* A copy of macro name's value (e.g. "i", "{auth_type}"), or NULL. */
char *milter_macro_dup(SMFICTX *ctx, const char *name);
/* "<a@b>" -> "a@b" (also without brackets); "" for the null sender. */
char *milter_addr_strip(const char *arg);
/* The queue ID for log lines: the "i" macro, else "NOQUEUE". */
void milter_qid(SMFICTX *ctx, struct buf *out);
/* Reply text for smfi_setreply: Sendmail treats it as a printf format, so
 * '%' is doubled (milter-policy-ecosystem.md §1.11); CR/LF become spaces. */
void milter_reply_text(const char *text, struct buf *out);

/* Does an Authentication-Results value claim authserv_id? Such fields
 * arriving from outside are forged and get deleted (RFC 8601 §5). */
int milter_ar_is_ours(const char *value, const char *authserv_id);
/* The authserv-id to write: the configured one, else the MTA's "j"
 * macro (its host name), else gethostname(). */
char *milter_authserv_id(SMFICTX *ctx, const char *configured);

#endif
