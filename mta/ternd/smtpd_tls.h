/* smtpd_tls.h - TLS (STARTTLS, wrapper mode) and SMTP AUTH of the SMTP
 * server: per-listener settings built with the config snapshot
 * (smtpd_conf.c), the STARTTLS and AUTH commands, and the TLS/SASL facts
 * other modules report (Received:, policy attributes, log lines).
 * smtpd_tls.c owns TLS, smtpd_sasl.c owns AUTH and its back ends.
 */
#ifndef TERN_SMTPD_TLS_H
#define TERN_SMTPD_TLS_H

#include "buf.h"
#include "cfg.h"

struct event_base;
struct smtpd_conf;
struct smtpd_session;
struct smtpd_tls_conf;
struct smtpd_sasl_conf;

/* ---- TLS (smtpd_tls.c) */
#define SMTPD_TLS_NONE 0
#define SMTPD_TLS_MAY 1
#define SMTPD_TLS_ENCRYPT 2

/* NULL with err on a bad setting or an unreadable certificate/key. */
struct smtpd_tls_conf *smtpd_tls_conf_new(const struct cfg *cfg, const char *listener,
					  struct buf *err);
void smtpd_tls_conf_free(struct smtpd_tls_conf *tc);
int smtpd_tls_wrapper(const struct smtpd_conf *conf);
/* STARTTLS is offered in EHLO (a level, and no TLS yet). */
int smtpd_tls_offer(const struct smtpd_session *s);
/* smtpd_tls_security_level = encrypt and no TLS yet: the command is
 * refused with "530 5.7.0 Must issue a STARTTLS command first" (1). */
int smtpd_tls_required(struct smtpd_session *s, const char *verb);
int smtpd_tls_cmd(struct smtpd_session *s, int argc, char **argv);
/* Start the handshake of wrapper mode (smtps); 0 started, -1 closed. */
int smtpd_tls_wrap(struct smtpd_session *s);
/* The handshake finished (from the session's event callback). */
void smtpd_tls_established(struct smtpd_session *s);
void smtpd_tls_failed(struct smtpd_session *s, short what); /* logs; the caller frees */
/* All replies are flushed and the server ends the session (QUIT, 421):
 * send TLS close_notify, without waiting for the client's. */
void smtpd_tls_close_notify(struct smtpd_session *s);
/* Facts of the established TLS session: NULL / 0 without TLS. */
const char *smtpd_tls_protocol(const struct smtpd_session *s);
const char *smtpd_tls_cipher(const struct smtpd_session *s);
int smtpd_tls_bits(const struct smtpd_session *s, int *alg_bits);
const char *smtpd_tls_sni(const struct smtpd_session *s);
/* "(using TLSv1.3 with cipher X (256/256 bits))" for Received:, or nothing. */
void smtpd_tls_received(const struct smtpd_session *s, struct buf *out);

/* Client certificates (smtpd_tls_ask_ccert). */
#define SMTPD_CCERT_NONE 0
#define SMTPD_CCERT_UNTRUSTED 1 /* presented, no chain to smtpd_tls_CAfile */
#define SMTPD_CCERT_TRUSTED 2
int smtpd_tls_ccert_status(const struct smtpd_session *s);
/* The common names of the certificate's subject and issuer (printable). */
void smtpd_tls_ccert_names(const struct smtpd_session *s, struct buf *subject, struct buf *issuer);
/* smtpd_tls_fingerprint_digest of the certificate and of its public key. */
void smtpd_tls_ccert_fingerprints(const struct smtpd_session *s, struct buf *cert_fp,
				  struct buf *pkey_fp);
/* A trusted certificate listed in relay_clientcerts: 1, 0, -1 (err). */
int smtpd_tls_ccert_relay(const struct smtpd_session *s, struct buf *err);

/* ---- AUTH (smtpd_sasl.c) */
/* Per-client event counts per anvil_rate_time_unit, shared by all loops:
 * add (0: only read) to the kind, return its count in the current unit. */
#define SMTPD_EV_AUTH 0	     /* AUTH commands (smtpd_client_auth_rate_limit) */
#define SMTPD_EV_AUTH_FAIL 1 /* failed logins (smtpd_client_auth_failure_limit) */
#define SMTPD_EV_TLS 2	     /* new TLS sessions (smtpd_client_new_tls_session_rate_limit) */
#define SMTPD_EV_COUNT 3
struct inet_addr;
long long smtpd_client_event(const struct inet_addr *ip, long long unit, int kind, int add);
struct smtpd_sasl_conf *smtpd_sasl_conf_new(const struct cfg *cfg, const char *listener,
					    struct buf *err);
void smtpd_sasl_conf_free(struct smtpd_sasl_conf *sc);
/* The AUTH keyword for EHLO ("AUTH PLAIN LOGIN"), or NULL when not offered. */
const char *smtpd_sasl_offer(struct smtpd_session *s, int *broken_clients);
int smtpd_sasl_cmd(struct smtpd_session *s, int argc, char **argv);
/* An AUTH exchange waits for the client's next line. */
int smtpd_sasl_busy(const struct smtpd_session *s);
void smtpd_sasl_input(struct smtpd_session *s, const char *line);
/* MAIL FROM ... AUTH=value (RFC 4954 §5): 0, or -1 after a reply. */
int smtpd_sasl_mail_param(struct smtpd_session *s, const char *value);
/* "\t(Authenticated sender: USER)\n" with smtpd_sasl_authenticated_header. */
void smtpd_sasl_received(const struct smtpd_session *s, struct buf *out);
/* smtpd_sender_login_maps: 1 and the owners of sender (qualified), 0
 * when none is listed, -1 with err on a lookup error. */
int smtpd_sasl_sender_owners(struct smtpd_session *s, const char *sender, struct buf *owners,
			     struct buf *err);
int smtpd_sasl_owner_match(const char *owners, const char *login);
/* Mechanisms (smtpd_sasl.c, smtpd_sasl_dovecot.c). */
#define SMTPD_SASL_PLAIN 0x1
#define SMTPD_SASL_LOGIN 0x2
/* smtpd_sasl_dovecot.c: one connection to Dovecot's auth server per
 * session. Results of an exchange, on the loop of base: CONT (text: the
 * base64 challenge for "334 "), OK (text: Dovecot's user name), FAIL
 * (text: the user name if Dovecot gave one, why: its reason), TEMP (why),
 * NOMECH (Dovecot does not offer the mechanism). */
#define SMTPD_DOVECOT_OK 0
#define SMTPD_DOVECOT_FAIL 1
#define SMTPD_DOVECOT_TEMP 2
#define SMTPD_DOVECOT_CONT 3
#define SMTPD_DOVECOT_NOMECH 4
struct smtpd_dovecot;
typedef void (*smtpd_dovecot_cb)(void *arg, int result, const char *text, const char *why);
/* Connect (asynchronously); NULL when that cannot even start. */
struct smtpd_dovecot *smtpd_dovecot_open(struct event_base *base, const char *path);
/* Free it; allowed from inside its callback. */
void smtpd_dovecot_close(struct smtpd_dovecot *d);
/* Open and not failed: it can take another AUTH. */
int smtpd_dovecot_usable(const struct smtpd_dovecot *d);
/* SMTPD_SASL_* announced by the server at path, as last seen by any
 * connection of this process; -1 before the first handshake. */
int smtpd_dovecot_mechs(const char *path);
/* AUTH: resp is the client's initial response (base64, "" for "="), or
 * NULL. CONT: the client's next response (base64). -1: not possible now
 * (cb is not called). */
int smtpd_dovecot_start(struct smtpd_dovecot *d, int mech, const char *resp, int secured,
			const char *lip, const char *rip, smtpd_dovecot_cb cb, void *arg);
int smtpd_dovecot_continue(struct smtpd_dovecot *d, const char *resp);
/* Forget the login (STARTTLS, XCLIENT, end of session) and close the
 * session's Dovecot connection. */
void smtpd_sasl_reset(struct smtpd_session *s);
/* "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA" (RFC 3848) or "SMTP"... */
const char *smtpd_proto_name(const struct smtpd_session *s);

#endif
