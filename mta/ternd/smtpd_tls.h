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
/* smtpd_sasl_dovecot.c: check user/pass with Dovecot's auth server at
 * path; cb gets 0 (ok, user: Dovecot's name for the login or NULL), 1
 * (bad credentials) or -1 (temporary failure, why), on the loop of base.
 * -1 when the request could not start (cb is not called). */
typedef void (*smtpd_sasl_dovecot_cb)(void *arg, int result, const char *user, const char *why);
int smtpd_sasl_dovecot_auth(struct event_base *base, const char *path, const char *user,
			    const char *pass, int secured, const char *lip, const char *rip,
			    smtpd_sasl_dovecot_cb cb, void *arg);
/* Forget the login (STARTTLS, end of session). */
void smtpd_sasl_reset(struct smtpd_session *s);
/* "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA" (RFC 3848) or "SMTP"... */
const char *smtpd_proto_name(const struct smtpd_session *s);

#endif
