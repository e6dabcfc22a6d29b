/* spf.h - SPF (RFC 7208) evaluation on libspf2 with libtern's resolver,
 * and the texts policy servers and milters answer with.
 *
 * One struct spf_ctx per configuration, shared by any number of threads:
 * libspf2's server is read-only after set-up, its DNS cache layer locks
 * itself, and the layer below it (ours) takes a libtern resolver from a
 * small pool for each lookup, so $dns_servers (tests: a dnsmasq on a
 * loopback port) is honoured as everywhere else in Tern. spf_check()
 * blocks on DNS: call it from a worker thread, never an event loop;
 * spf_check_cached() never blocks (a result cache hit, see spf.c).
 *
 * Results follow RFC 7208 §2.6; libspf2's "INVALID" result is mapped as
 * it should be (a DNS error -> temperror, anything else -> permerror).
 * Text builders: the Received-SPF field (RFC 7208 §9.1 with receiver=
 * and identity=), the Authentication-Results field (RFC 8601), and the
 * pypolicyd-spf style reply text ("Message rejected due to: SPF fail -
 * not authorized. Please see http://www.openspf.net/Why?s=mfrom;...")
 * with RFC 7372 enhanced codes (X.7.23 failed, X.7.24 error).
 * Pitfall: libspf2 passes every 127/8 and ::1 client ("localhost is
 * always allowed"); callers and tests must use other addresses.
 */
#ifndef TERN_SPF_H
#define TERN_SPF_H

#include "buf.h"

enum spf_result {
	SPF_R_NONE,
	SPF_R_NEUTRAL,
	SPF_R_PASS,
	SPF_R_FAIL,
	SPF_R_SOFTFAIL,
	SPF_R_TEMPERROR,
	SPF_R_PERMERROR,
};

enum spf_identity {
	SPF_ID_MAILFROM,
	SPF_ID_HELO,
};

struct spf_outcome {
	enum spf_result result;
	enum spf_identity identity;
	struct buf comment; /* for the header comment, e.g. "domain of ... designates ..." */
	struct buf reason;  /* why, for errors ("DNS error", "bad record") */
	struct buf domain;  /* the domain checked */
};

struct spf_ctx;

/* dns_servers: as resolver_new(); timeout: seconds per DNS query;
 * receiver: this host's name (RFC 7208 "receiver", macro %{r}). */
struct spf_ctx *spf_ctx_new(const char *dns_servers, int timeout, const char *receiver,
			    struct buf *err);
void spf_ctx_free(struct spf_ctx *ctx);

void spf_outcome_init(struct spf_outcome *o);
void spf_outcome_free(struct spf_outcome *o);

/* Evaluate one identity for client ip. MAIL FROM: sender (empty = the
 * null sender: RFC 7208 §2.4 checks postmaster@helo). HELO: helo only.
 * Returns 0 with o filled; -1 with err when the request itself is bad
 * (no usable client address). */
int spf_check(struct spf_ctx *ctx, enum spf_identity id, const char *ip, const char *helo,
	      const char *sender, struct spf_outcome *o, struct buf *err);

/* Result cache (off until set; see spf.c for what a key holds and how
 * long a result is kept): max_entries results, each at most max_ttl
 * seconds. 0 turns it off. Not to be called while checks run. */
int spf_ctx_set_cache(struct spf_ctx *ctx, size_t max_entries, long max_ttl);
/* spf_check() without blocking: 1 with o filled when no DNS is needed
 * (a cached result, or nothing to check), 0 otherwise. */
int spf_check_cached(struct spf_ctx *ctx, enum spf_identity id, const char *ip, const char *helo,
		     const char *sender, struct spf_outcome *o);

const char *spf_result_name(enum spf_result r); /* "pass", "temperror", ... */
int spf_result_parse(const char *name, enum spf_result *r);

/* "pass (comment) client-ip=...; envelope-from=...; helo=...;
 * receiver=...; identity=mailfrom" (the field value, no "Received-SPF: ").
 * receiver NULL writes "<UNKNOWN>" (pypolicyd-spf's Hide_Receiver). */
void spf_received_spf(const struct spf_outcome *o, const char *ip, const char *helo,
		      const char *sender, const char *receiver, struct buf *out);
/* "authserv-id; spf=pass (comment) smtp.mailfrom=a@b" (or smtp.helo=). */
void spf_auth_results(const struct spf_outcome *o, const char *authserv_id, const char *helo,
		      const char *sender, struct buf *out);
/* "550 5.7.23 Message rejected due to: SPF fail - not authorized. Please
 * see http://www.openspf.net/Why?s=mfrom;id=...;ip=...;r=..." or, with
 * defer, "DEFER_IF_PERMIT 4.7.24 Message deferred due to: ...". */
void spf_reply_text(const struct spf_outcome *o, int defer, const char *ip, const char *helo,
		    const char *sender, const char *receiver, struct buf *out);

#endif
