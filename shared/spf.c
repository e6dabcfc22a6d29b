/* spf.c - SPF checks on libspf2 with DNS through libtern's resolver, and
 * the Received-SPF / Authentication-Results / reply texts (spf.h).
 *
 * libspf2's DNS layers are a public struct of function pointers
 * (spf_dns.h): our bottom layer answers each lookup with a synchronous
 * resolver_lookup() (libunbound, $dns_servers), and libspf2's own cache
 * layer sits on top (it has its own mutex). resolver.c keeps per-object
 * state that is not thread-safe, so each lookup borrows a resolver from a
 * pool, growing to one per concurrent thread.
 * Pitfall: SPF_error() in libspf2 always abort()s after its handler; it
 * is only used for "cannot happen" and out-of-memory paths.
 */
#include "spf.h"

#include "log.h"
#include "resolver.h"

#include <sys/types.h>

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <spf2/spf.h>
#include <spf2/spf_dns.h>
#include <spf2/spf_dns_cache.h>

#define SPF_POOL_MAX 64
#define SPF_CACHE_BITS 10 /* 1024 cached answers */

struct spf_ctx {
	SPF_server_t *server;
	SPF_dns_server_t *cache; /* libspf2's cache layer, on top of ours */
	SPF_dns_server_t *layer; /* ours, below libspf2's cache */
	char *dns_servers;
	int timeout;
	pthread_mutex_t lock;
	struct resolver *pool[SPF_POOL_MAX];
	size_t npool;
};

/* ---- DNS layer ---- */

static struct resolver *spf_resolver_get(struct spf_ctx *ctx)
{
	struct resolver *r = NULL;
	struct buf err = BUF_INIT;

	pthread_mutex_lock(&ctx->lock);
	if (ctx->npool > 0)
		r = ctx->pool[--ctx->npool];
	pthread_mutex_unlock(&ctx->lock);
	if (r)
		return r;
	buf_init(&err);
	r = resolver_new(ctx->dns_servers, ctx->timeout, NULL, &err);
	if (r == NULL)
		msg_warn("spf: cannot create a DNS resolver: %s", buf_str(&err));
	buf_free(&err);
	return r;
}

static void spf_resolver_put(struct spf_ctx *ctx, struct resolver *r)
{
	pthread_mutex_lock(&ctx->lock);
	if (ctx->npool < SPF_POOL_MAX) {
		ctx->pool[ctx->npool++] = r;
		r = NULL;
	}
	pthread_mutex_unlock(&ctx->lock);
	if (r)
		resolver_free(r);
}

static int spf_herrno(enum resolver_status st)
{
	switch (st) {
	case RESOLVER_FOUND:
		return NETDB_SUCCESS;
	case RESOLVER_NXDOMAIN:
		return HOST_NOT_FOUND;
	case RESOLVER_NODATA:
	case RESOLVER_NULLMX:
		return NO_DATA;
	case RESOLVER_PERMFAIL:
		return NO_RECOVERY;
	default:
		return TRY_AGAIN;
	}
}

/* Copy one parsed record into libspf2's RR slot i; -1 if it cannot. */
static int spf_rr_fill(SPF_dns_rr_t *rr, int i, int type, const struct resolver_rr *src)
{
	size_t len;

	switch (type) {
	case ns_t_a:
		if (src->family != AF_INET ||
		    SPF_dns_rr_buf_realloc(rr, i, sizeof(struct in_addr)) != SPF_E_SUCCESS)
			return -1;
		memcpy(&rr->rr[i]->a, src->addr, 4);
		return 0;
	case ns_t_aaaa:
		if (src->family != AF_INET6 ||
		    SPF_dns_rr_buf_realloc(rr, i, sizeof(struct in6_addr)) != SPF_E_SUCCESS)
			return -1;
		memcpy(&rr->rr[i]->aaaa, src->addr, 16);
		return 0;
	default: /* TXT, MX (exchange name), PTR (name) */
		len = strlen(src->text) + 1;
		if (SPF_dns_rr_buf_realloc(rr, i, len) != SPF_E_SUCCESS)
			return -1;
		memcpy(rr->rr[i]->txt, src->text, len);
		return 0;
	}
}

static SPF_dns_rr_t *spf_dns_lookup(SPF_dns_server_t *layer, const char *domain, ns_type type,
				    int should_cache)
{
	struct spf_ctx *ctx = layer->hook;
	struct resolver_result res;
	struct resolver *r;
	SPF_dns_rr_t *rr;
	int herrno, n = 0;

	if (type != ns_t_a && type != ns_t_aaaa && type != ns_t_mx && type != ns_t_ptr &&
	    type != ns_t_txt) /* ns_t_spf (99) and others: RFC 7208 dropped type SPF */
		return SPF_dns_rr_new_init(layer, domain, type, 0, NO_DATA);
	if ((r = spf_resolver_get(ctx)) == NULL)
		return SPF_dns_rr_new_init(layer, domain, type, 0, TRY_AGAIN);
	resolver_result_init(&res);
	resolver_lookup(r, domain, (int)type, &res);
	spf_resolver_put(ctx, r);
	herrno = spf_herrno(res.status);
	if (herrno == NETDB_SUCCESS && res.count == 0)
		herrno = NO_DATA;
	rr = SPF_dns_rr_new_init(layer, domain, type, res.ttl > 0 ? res.ttl : 0, herrno);
	if (rr != NULL && herrno == NETDB_SUCCESS) {
		for (size_t i = 0; i < res.count; i++)
			if (spf_rr_fill(rr, n, (int)type, &res.rr[i]) == 0)
				n++;
		rr->num_rr = n;
		if (n == 0)
			rr->herrno = NO_DATA;
	}
	resolver_result_free(&res);
	return rr;
}

/* libspf2's warnings go to our log; info and debug are dropped. */
static void spf_log_warning(const char *file, int line, const char *msg)
{
	msg_warn("libspf2: %s", msg);
}

static void spf_log_quiet(const char *file, int line, const char *msg)
{
}

struct spf_ctx *spf_ctx_new(const char *dns_servers, int timeout, const char *receiver,
			    struct buf *err)
{
	struct spf_ctx *ctx = xcalloc(1, sizeof(*ctx));
	struct resolver *probe;

	SPF_warning_handler = spf_log_warning;
	SPF_info_handler = spf_log_quiet;
	SPF_debug_handler = spf_log_quiet;
	pthread_mutex_init(&ctx->lock, NULL);
	ctx->dns_servers = xstrdup(dns_servers ? dns_servers : "");
	ctx->timeout = timeout;
	/* Refuse a bad dns_servers now rather than at each lookup. */
	if ((probe = resolver_new(ctx->dns_servers, timeout, NULL, err)) == NULL)
		goto fail;
	spf_resolver_put(ctx, probe);
	ctx->layer = xcalloc(1, sizeof(*ctx->layer));
	ctx->layer->destroy = NULL; /* ours: freed in spf_ctx_free */
	ctx->layer->lookup = spf_dns_lookup;
	ctx->layer->name = "tern-resolver";
	ctx->layer->hook = ctx;
	if ((ctx->cache = SPF_dns_cache_new(ctx->layer, "tern-cache", 0, SPF_CACHE_BITS)) == NULL ||
	    (ctx->server = SPF_server_new_dns(ctx->cache, 0)) == NULL) {
		buf_puts(err, "libspf2: cannot create the SPF server");
		goto fail;
	}
	if (receiver && *receiver && SPF_server_set_rec_dom(ctx->server, receiver) != 0) {
		buf_printf(err, "libspf2: bad receiver domain \"%s\"", receiver);
		goto fail;
	}
	return ctx;
fail:
	spf_ctx_free(ctx);
	return NULL;
}

void spf_ctx_free(struct spf_ctx *ctx)
{
	if (ctx == NULL)
		return;
	if (ctx->server)
		SPF_server_free(ctx->server); /* a server given its DNS layers does not free them */
	if (ctx->cache)
		SPF_dns_free(ctx->cache); /* our layer below has no destructor */
	free(ctx->layer);
	for (size_t i = 0; i < ctx->npool; i++)
		resolver_free(ctx->pool[i]);
	pthread_mutex_destroy(&ctx->lock);
	free(ctx->dns_servers);
	free(ctx);
}

/* ---- evaluation ---- */

void spf_outcome_init(struct spf_outcome *o)
{
	o->result = SPF_R_NONE;
	o->identity = SPF_ID_MAILFROM;
	buf_init(&o->comment);
	buf_init(&o->reason);
	buf_init(&o->domain);
}

void spf_outcome_free(struct spf_outcome *o)
{
	buf_free(&o->comment);
	buf_free(&o->reason);
	buf_free(&o->domain);
}

static enum spf_result spf_result_map(SPF_result_t r, SPF_errcode_t rc)
{
	switch (r) {
	case SPF_RESULT_NEUTRAL:
		return SPF_R_NEUTRAL;
	case SPF_RESULT_PASS:
		return SPF_R_PASS;
	case SPF_RESULT_FAIL:
		return SPF_R_FAIL;
	case SPF_RESULT_SOFTFAIL:
		return SPF_R_SOFTFAIL;
	case SPF_RESULT_NONE:
		return SPF_R_NONE;
	case SPF_RESULT_TEMPERROR:
		return SPF_R_TEMPERROR;
	case SPF_RESULT_PERMERROR:
		return SPF_R_PERMERROR;
	default:
		/* INVALID: libspf2 gave up. A DNS failure is temporary
		 * (RFC 7208 §2.6.6); anything else (a broken record) is
		 * permanent (§2.6.7). */
		return rc == SPF_E_DNS_ERROR ? SPF_R_TEMPERROR : SPF_R_PERMERROR;
	}
}

static void spf_domain_of(const char *sender, const char *helo, enum spf_identity id,
			  struct buf *out)
{
	const char *at = strrchr(sender, '@');

	buf_reset(out);
	if (id == SPF_ID_HELO || *sender == 0 || at == NULL)
		buf_puts(out, helo);
	else
		buf_puts(out, at + 1);
	buf_lower(out);
}

int spf_check(struct spf_ctx *ctx, enum spf_identity id, const char *ip, const char *helo,
	      const char *sender, struct spf_outcome *o, struct buf *err)
{
	SPF_request_t *req;
	SPF_response_t *resp = NULL;
	SPF_errcode_t rc;
	const char *comment;

	o->identity = id;
	buf_reset(&o->comment);
	buf_reset(&o->reason);
	spf_domain_of(sender, helo, id, &o->domain);
	if ((req = SPF_request_new(ctx->server)) == NULL) {
		buf_puts(err, "libspf2: out of memory");
		return -1;
	}
	if (SPF_request_set_ipv4_str(req, ip) != SPF_E_SUCCESS &&
	    SPF_request_set_ipv6_str(req, ip) != SPF_E_SUCCESS) {
		buf_printf(err, "not a client IP address: \"%.64s\"", ip);
		SPF_request_free(req);
		return -1;
	}
	/* Nothing to check: no HELO for a HELO check, or neither HELO nor
	 * a sender for MAIL FROM (RFC 7208 §2.3, §2.4). */
	if (o->domain.len == 0 || strchr(buf_str(&o->domain), '.') == NULL ||
	    buf_str(&o->domain)[0] == '[') {
		o->result = SPF_R_NONE;
		buf_set(&o->reason, "no domain to check");
		buf_printf(&o->comment, "no %s domain to check",
			   id == SPF_ID_HELO ? "HELO" : "sender");
		SPF_request_free(req);
		return 0;
	}
	if (*helo)
		SPF_request_set_helo_dom(req, helo);
	/* Without env_from, libspf2 checks postmaster@helo: the HELO
	 * identity, and the null sender's (RFC 7208 §2.4). */
	if (id == SPF_ID_MAILFROM && *sender)
		SPF_request_set_env_from(req, sender);
	rc = SPF_request_query_mailfrom(req, &resp);
	o->result = spf_result_map(SPF_response_result(resp), rc);
	comment = SPF_response_get_header_comment(resp);
	if (comment && *comment)
		buf_set(&o->comment, comment);
	if (rc != SPF_E_SUCCESS)
		buf_set(&o->reason, SPF_strerror(rc));
	else
		buf_set(&o->reason, SPF_strreason(SPF_response_reason(resp)));
	if (o->comment.len == 0)
		buf_printf(&o->comment, "%s: %s", ctx->server->rec_dom ? ctx->server->rec_dom : "",
			   buf_str(&o->reason));
	SPF_response_free(resp);
	SPF_request_free(req);
	return 0;
}

/* ---- texts ---- */

static const char *spf_names[] = {"none",     "neutral",   "pass",     "fail",
				  "softfail", "temperror", "permerror"};

const char *spf_result_name(enum spf_result r)
{
	return (unsigned)r < sizeof(spf_names) / sizeof(spf_names[0]) ? spf_names[r] : "none";
}

int spf_result_parse(const char *name, enum spf_result *r)
{
	for (size_t i = 0; i < sizeof(spf_names) / sizeof(spf_names[0]); i++) {
		if (strcasecmp(name, spf_names[i]) == 0) {
			*r = (enum spf_result)i;
			return 0;
		}
	}
	return -1;
}

/* A key-value-pair value (RFC 7208 §9.1: dot-atom or quoted-string). */
static void spf_kv_value(const char *v, struct buf *out)
{
	const char *p;

	for (p = v; *p; p++)
		if (!(isalnum((unsigned char)*p) || strchr(".-_+=@!#$%&'*/?^`{|}~", *p)))
			break;
	if (*p == 0 && *v) {
		buf_puts(out, v);
		return;
	}
	buf_putc(out, '"');
	for (p = v; *p; p++) {
		if (*p == '"' || *p == '\\')
			buf_putc(out, '\\');
		if ((unsigned char)*p >= ' ')
			buf_putc(out, *p);
	}
	buf_putc(out, '"');
}

/* Header comments must not contain unbalanced parentheses or controls. */
static void spf_comment(const char *c, struct buf *out)
{
	for (; *c; c++)
		if ((unsigned char)*c >= ' ' && *c != '(' && *c != ')' && *c != '\\')
			buf_putc(out, *c);
}

void spf_received_spf(const struct spf_outcome *o, const char *ip, const char *helo,
		      const char *sender, const char *receiver, struct buf *out)
{
	buf_printf(out, "%s (", spf_result_name(o->result));
	spf_comment(buf_str(&o->comment), out);
	buf_printf(out, ") client-ip=%s; envelope-from=", ip);
	if (*sender)
		spf_kv_value(sender, out);
	else
		buf_puts(out, "\"\"");
	buf_puts(out, "; helo=");
	spf_kv_value(*helo ? helo : "", out);
	buf_puts(out, "; receiver=");
	if (receiver)
		spf_kv_value(receiver, out);
	else
		buf_puts(out, "<UNKNOWN>");
	buf_printf(out, "; identity=%s", o->identity == SPF_ID_HELO ? "helo" : "mailfrom");
}

void spf_auth_results(const struct spf_outcome *o, const char *authserv_id, const char *helo,
		      const char *sender, struct buf *out)
{
	buf_printf(out, "%s; spf=%s (", authserv_id, spf_result_name(o->result));
	spf_comment(buf_str(&o->comment), out);
	buf_puts(out, ") ");
	if (o->identity == SPF_ID_HELO || *sender == 0) {
		buf_puts(out, "smtp.helo=");
		spf_kv_value(*helo ? helo : "", out);
	} else {
		buf_puts(out, "smtp.mailfrom=");
		spf_kv_value(sender, out);
	}
}

void spf_reply_text(const struct spf_outcome *o, int defer, const char *ip, const char *helo,
		    const char *sender, const char *receiver, struct buf *out)
{
	int error = o->result == SPF_R_TEMPERROR || o->result == SPF_R_PERMERROR;
	const char *what;
	const char *id = o->identity == SPF_ID_HELO ? helo : *sender ? sender : helo;

	switch (o->result) {
	case SPF_R_FAIL:
		what = "SPF fail - not authorized";
		break;
	case SPF_R_SOFTFAIL:
		what = "SPF softfail - not authorized";
		break;
	case SPF_R_TEMPERROR:
		what = "SPF temperror - temporary DNS failure";
		break;
	case SPF_R_PERMERROR:
		what = "SPF permerror - invalid SPF record";
		break;
	default:
		what = o->result == SPF_R_NEUTRAL ? "SPF neutral" : "SPF none";
		break;
	}
	if (defer)
		buf_printf(out, "DEFER_IF_PERMIT 4.7.%d Message deferred", error ? 24 : 23);
	else
		buf_printf(out, "550 5.7.%d Message rejected", error ? 24 : 23);
	buf_printf(out, " due to: %s. Please see http://www.openspf.net/Why?s=%s;id=", what,
		   o->identity == SPF_ID_HELO ? "helo" : "mfrom");
	/* The reply must be one line of valid UTF-8 (Postfix refuses
	 * anything else with smtputf8_enable): the identity goes into the
	 * URL with controls, spaces and ';' left out, non-ASCII %-encoded. */
	for (const char *p = id; *p; p++) {
		unsigned char ch = (unsigned char)*p;
		if (ch >= 0x7f)
			buf_printf(out, "%%%02X", ch);
		else if (ch > ' ' && ch != ';')
			buf_putc(out, *p);
	}
	buf_printf(out, ";ip=%s;r=%s", ip, receiver ? receiver : "<UNKNOWN>");
}
