/* spf.c - SPF checks on libspf2 with DNS through libtern's resolver, and
 * the Received-SPF / Authentication-Results / reply texts (spf.h).
 *
 * libspf2's DNS layers are a public struct of function pointers
 * (spf_dns.h): our bottom layer answers each lookup with a synchronous
 * resolver_lookup() (libunbound, $dns_servers), and libspf2's own cache
 * layer sits on top (it has its own mutex). resolver.c keeps per-object
 * state that is not thread-safe, so each lookup borrows a resolver from a
 * pool, growing to one per concurrent thread.
 * Result cache (spf_ctx_set_cache): libspf2 compiles the record and
 * walks its mechanisms on every check even when every DNS answer is in
 * its cache, which costs more than the rest of a policy request. A
 * result is kept, keyed by identity, client IP, HELO and sender domain
 * (and the sender's local part only when a record seen during the check
 * uses the %{l} or %{s} macros), for as long as the shortest remaining
 * lifetime of the DNS answers it used (libspf2's cache's, whose minimum
 * TTLs already decide when an answer is asked again), at most max_ttl.
 * temperror is not kept: the next message asks DNS again. The entries
 * are bounded (least recently used first out). The comment libspf2
 * writes names the sender: it is stored with the sender cut out and put
 * back on a hit, so a hit gives the same texts as a fresh check.
 * Pitfall: SPF_error() in libspf2 always abort()s after its handler; it
 * is only used for "cannot happen" and out-of-memory paths.
 */
#include "spf.h"

#include "log.h"
#include "hash.h"
#include "resolver.h"

#include <sys/types.h>

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <spf2/spf.h>
#include <spf2/spf_dns.h>
#include <spf2/spf_dns_cache.h>

#define SPF_POOL_MAX 64
#define SPF_CACHE_BITS 10 /* 1024 cached answers */

struct spf_cache_entry {
	char *key;
	uint32_t hash;
	time_t expires;
	time_t used;  /* when last made newest: at most once a second */
	int by_local; /* a marker: look again with the local part in the key */
	enum spf_result result;
	char *comment; /* with SPF_SENDER_MARK where the sender was */
	char *reason;
	struct spf_cache_entry *hnext, *older, *newer;
};

struct spf_cache {
	pthread_mutex_t lock;
	struct spf_cache_entry **slots;
	size_t nslots, count, max;
	long max_ttl;
	struct spf_cache_entry *newest, *oldest;
};

#define SPF_SENDER_MARK '\001'

struct spf_ctx {
	SPF_server_t *server;
	SPF_dns_server_t *track; /* ours, on top: what a check looked up */
	SPF_dns_server_t *cache; /* libspf2's cache layer */
	SPF_dns_server_t *layer; /* ours, below libspf2's cache */
	struct spf_cache *results;
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

/* What the check running on this thread looked up: the shortest
 * remaining lifetime, and whether a record uses the sender's local part. */
struct spf_track {
	int active;
	long ttl; /* -1: no answer with a lifetime yet */
	int local;
};

static __thread struct spf_track spf_track;

static int spf_txt_uses_local(const char *txt)
{
	for (const char *p = strstr(txt, "%{"); p; p = strstr(p + 2, "%{"))
		if (strchr("lLsS", p[2]) != NULL)
			return 1;
	return 0;
}

static SPF_dns_rr_t *spf_track_lookup(SPF_dns_server_t *layer, const char *domain, ns_type type,
				      int should_cache)
{
	SPF_dns_server_t *below = layer->layer_below;
	SPF_dns_rr_t *rr = below->lookup(below, domain, type, should_cache);
	time_t now = time(NULL);
	long left;

	if (rr == NULL || !spf_track.active)
		return rr;
	/* libspf2's cache sets utc_ttl to when it asks again; an answer
	 * that did not go through it has only its TTL. */
	left = rr->utc_ttl > now ? (long)(rr->utc_ttl - now) : (long)rr->ttl;
	if (left < 0)
		left = 0;
	if (spf_track.ttl < 0 || left < spf_track.ttl)
		spf_track.ttl = left;
	if (type == ns_t_txt)
		for (int i = 0; i < rr->num_rr; i++)
			if (rr->rr[i] && spf_txt_uses_local(rr->rr[i]->txt))
				spf_track.local = 1;
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

/* ---- result cache ---- */

static uint32_t spf_hash(const char *s)
{
	return (uint32_t)hash_fnv1a_str(s);
}

static void spf_cache_entry_free(struct spf_cache_entry *e)
{
	free(e->key);
	free(e->comment);
	free(e->reason);
	free(e);
}

static void spf_cache_free(struct spf_cache *c)
{
	struct spf_cache_entry *e, *next;

	if (c == NULL)
		return;
	for (e = c->newest; e; e = next) {
		next = e->older;
		spf_cache_entry_free(e);
	}
	free(c->slots);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

static void spf_cache_unlink(struct spf_cache *c, struct spf_cache_entry *e)
{
	struct spf_cache_entry **pp = &c->slots[e->hash & (c->nslots - 1)];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	if (e->newer)
		e->newer->older = e->older;
	else
		c->newest = e->older;
	if (e->older)
		e->older->newer = e->newer;
	else
		c->oldest = e->newer;
	c->count--;
}

static void spf_cache_push_front(struct spf_cache *c, struct spf_cache_entry *e)
{
	e->newer = NULL;
	e->older = c->newest;
	if (c->newest)
		c->newest->newer = e;
	c->newest = e;
	if (c->oldest == NULL)
		c->oldest = e;
}

/* With the lock held: the live entry for key (made newest), or NULL. */
static struct spf_cache_entry *spf_cache_find(struct spf_cache *c, const char *key, time_t now)
{
	uint32_t h = spf_hash(key);
	struct spf_cache_entry *e = c->slots[h & (c->nslots - 1)];

	while (e && (e->hash != h || strcmp(e->key, key) != 0))
		e = e->hnext;
	if (e == NULL)
		return NULL;
	if (e->expires <= now) {
		spf_cache_unlink(c, e);
		spf_cache_entry_free(e);
		return NULL;
	}
	if (c->newest != e && e->used != now) { /* to the young end of the age list */
		e->used = now;
		e->newer->older = e->older;
		if (e->older)
			e->older->newer = e->newer;
		else
			c->oldest = e->newer;
		spf_cache_push_front(c, e);
	}
	return e;
}

/* With the lock held: add (or replace) an entry. */
static void spf_cache_put(struct spf_cache *c, struct spf_cache_entry *e)
{
	struct spf_cache_entry *old, **slot;

	e->hash = spf_hash(e->key);
	slot = &c->slots[e->hash & (c->nslots - 1)];
	for (old = *slot; old && (old->hash != e->hash || strcmp(old->key, e->key) != 0);)
		old = old->hnext;
	if (old) {
		spf_cache_unlink(c, old);
		spf_cache_entry_free(old);
	}
	while (c->count >= c->max && c->oldest) {
		old = c->oldest;
		spf_cache_unlink(c, old);
		spf_cache_entry_free(old);
	}
	e->hnext = *slot;
	*slot = e;
	c->count++;
	spf_cache_push_front(c, e);
}

int spf_ctx_set_cache(struct spf_ctx *ctx, size_t max_entries, long max_ttl)
{
	struct spf_cache *c;
	size_t n = 64;

	spf_cache_free(ctx->results);
	ctx->results = NULL;
	if (max_entries == 0 || max_ttl <= 0)
		return 0;
	while (n < max_entries && n < ((size_t)1 << 24))
		n <<= 1;
	c = xcalloc(1, sizeof(*c));
	pthread_mutex_init(&c->lock, NULL);
	c->slots = xcalloc(n, sizeof(*c->slots));
	c->nslots = n;
	c->max = max_entries;
	c->max_ttl = max_ttl;
	ctx->results = c;
	return 0;
}

/* "id ip helo domain" (the sender's domain as given: the comment is
 * built from it); with_local adds the local part. Fields are split by
 * a byte that no attribute value holds (policy and milter input is
 * line-based and NUL-free, and controls never reach here). */
static void spf_cache_key(enum spf_identity id, const char *ip, const char *helo,
			  const char *sender, int with_local, struct buf *key)
{
	const char *at = strrchr(sender, '@');
	const char *domain = id == SPF_ID_HELO ? "" : at ? at + 1 : sender;

	buf_reset(key);
	buf_put_ll(key, (long long)id);
	buf_putc(key, '\002');
	buf_puts(key, ip);
	buf_putc(key, '\002');
	buf_puts(key, helo);
	buf_putc(key, '\002');
	buf_puts(key, domain);
	if (with_local && id == SPF_ID_MAILFROM) {
		buf_putc(key, '\002');
		buf_append(key, sender, at ? (size_t)(at - sender) : 0);
	}
}

/* The sender libspf2 names in its comment: the MAIL FROM as given, or
 * postmaster@helo for the HELO identity and the null sender. */
static void spf_comment_sender(enum spf_identity id, const char *helo, const char *sender,
			       struct buf *out)
{
	buf_reset(out);
	if (id == SPF_ID_MAILFROM && *sender)
		buf_puts(out, sender);
	else
		buf_printf(out, "postmaster@%s", helo);
}

static void spf_comment_expand(const char *tpl, const char *who, struct buf *out)
{
	const char *mark;

	buf_reset(out);
	while ((mark = strchr(tpl, SPF_SENDER_MARK)) != NULL) {
		buf_append(out, tpl, (size_t)(mark - tpl));
		buf_puts(out, who);
		tpl = mark + 1;
	}
	buf_puts(out, tpl);
}

/* The comment with the sender cut out; NULL if the sender is named in
 * a way we do not recognise (the result is then not kept). */
static char *spf_comment_template(const char *comment, const char *who)
{
	struct buf t = BUF_INIT;
	size_t n = strlen(who);
	const char *p, *at = strrchr(who, '@');

	buf_init(&t);
	while ((p = n ? strstr(comment, who) : NULL) != NULL) {
		buf_append(&t, comment, (size_t)(p - comment));
		buf_putc(&t, SPF_SENDER_MARK);
		comment = p + n;
	}
	buf_puts(&t, comment);
	/* "domain of USER@x" in another spelling would name the first sender
	 * to every later one */
	if (at && at != who && strstr(buf_str(&t), "@") != NULL) {
		buf_free(&t);
		return NULL;
	}
	return buf_detach(&t);
}

/* 1 and o filled when the cache holds this check's result. */
static int spf_cache_get(struct spf_ctx *ctx, enum spf_identity id, const char *ip,
			 const char *helo, const char *sender, struct spf_outcome *o)
{
	struct spf_cache *c = ctx->results;
	struct spf_cache_entry *e;
	struct buf key = BUF_INIT, who = BUF_INIT, tpl = BUF_INIT;
	time_t now = time(NULL);
	int hit = 0;

	spf_cache_key(id, ip, helo, sender, 0, &key);
	pthread_mutex_lock(&c->lock);
	e = spf_cache_find(c, buf_str(&key), now);
	if (e && e->by_local) {
		spf_cache_key(id, ip, helo, sender, 1, &key);
		e = spf_cache_find(c, buf_str(&key), now);
	}
	if (e) { /* copy under the lock, expand after it */
		o->result = e->result;
		buf_set(&tpl, e->comment);
		buf_set(&o->reason, e->reason);
		hit = 1;
	}
	pthread_mutex_unlock(&c->lock);
	if (hit) {
		spf_comment_sender(id, helo, sender, &who);
		spf_comment_expand(buf_str(&tpl), buf_str(&who), &o->comment);
	}
	buf_free(&key);
	buf_free(&who);
	buf_free(&tpl);
	return hit;
}

static void spf_cache_store(struct spf_ctx *ctx, enum spf_identity id, const char *ip,
			    const char *helo, const char *sender, const struct spf_outcome *o,
			    const struct spf_track *tr)
{
	struct spf_cache *c = ctx->results;
	struct spf_cache_entry *e, *mark = NULL;
	struct buf key = BUF_INIT, who = BUF_INIT;
	long ttl = tr->ttl < 0 || tr->ttl > c->max_ttl ? c->max_ttl : tr->ttl;
	char *tpl;

	if (o->result == SPF_R_TEMPERROR || ttl <= 0)
		return;
	buf_init(&key);
	buf_init(&who);
	spf_comment_sender(id, helo, sender, &who);
	if ((tpl = spf_comment_template(buf_str(&o->comment), buf_str(&who))) == NULL)
		goto done;
	e = xcalloc(1, sizeof(*e));
	e->expires = time(NULL) + ttl;
	e->result = o->result;
	e->comment = tpl;
	e->reason = xstrdup(buf_str(&o->reason));
	if (tr->local && id == SPF_ID_MAILFROM) {
		mark = xcalloc(1, sizeof(*mark));
		spf_cache_key(id, ip, helo, sender, 0, &key);
		mark->key = xstrdup(buf_str(&key));
		mark->by_local = 1;
		mark->expires = e->expires;
		mark->comment = xstrdup("");
		mark->reason = xstrdup("");
	}
	spf_cache_key(id, ip, helo, sender, mark != NULL, &key);
	e->key = xstrdup(buf_str(&key));
	pthread_mutex_lock(&c->lock);
	if (mark)
		spf_cache_put(c, mark);
	spf_cache_put(c, e);
	pthread_mutex_unlock(&c->lock);
done:
	buf_free(&key);
	buf_free(&who);
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
	if ((ctx->cache = SPF_dns_cache_new(ctx->layer, "tern-cache", 0, SPF_CACHE_BITS)) == NULL) {
		buf_puts(err, "libspf2: cannot create the SPF server");
		goto fail;
	}
	ctx->track = xcalloc(1, sizeof(*ctx->track));
	ctx->track->lookup = spf_track_lookup;
	ctx->track->layer_below = ctx->cache;
	ctx->track->name = "tern-track";
	ctx->track->hook = ctx;
	if ((ctx->server = SPF_server_new_dns(ctx->track, 0)) == NULL) {
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
	/* ours: no destructor, and nothing below it to free */
	free(ctx->track);
	if (ctx->cache)
		SPF_dns_free(ctx->cache); /* our layer below has no destructor */
	free(ctx->layer);
	spf_cache_free(ctx->results);
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

/* Nothing to check: no HELO for a HELO check, or neither HELO nor a
 * sender for MAIL FROM (RFC 7208 §2.3, §2.4). Returns 1 with o set. */
static int spf_nothing_to_check(enum spf_identity id, struct spf_outcome *o)
{
	if (o->domain.len && strchr(buf_str(&o->domain), '.') != NULL &&
	    buf_str(&o->domain)[0] != '[')
		return 0;
	o->result = SPF_R_NONE;
	buf_set(&o->reason, "no domain to check");
	buf_printf(&o->comment, "no %s domain to check", id == SPF_ID_HELO ? "HELO" : "sender");
	return 1;
}

static void spf_outcome_start(struct spf_outcome *o, enum spf_identity id, const char *helo,
			      const char *sender)
{
	o->identity = id;
	buf_reset(&o->comment);
	buf_reset(&o->reason);
	spf_domain_of(sender, helo, id, &o->domain);
}

int spf_check_cached(struct spf_ctx *ctx, enum spf_identity id, const char *ip, const char *helo,
		     const char *sender, struct spf_outcome *o)
{
	struct in6_addr a6;
	struct in_addr a4;

	spf_outcome_start(o, id, helo, sender);
	/* a bad address is spf_check()'s error to report */
	if (inet_pton(AF_INET, ip, &a4) != 1 && inet_pton(AF_INET6, ip, &a6) != 1)
		return 0;
	if (spf_nothing_to_check(id, o))
		return 1;
	return ctx->results && spf_cache_get(ctx, id, ip, helo, sender, o);
}

int spf_check(struct spf_ctx *ctx, enum spf_identity id, const char *ip, const char *helo,
	      const char *sender, struct spf_outcome *o, struct buf *err)
{
	SPF_request_t *req;
	SPF_response_t *resp = NULL;
	SPF_errcode_t rc;
	const char *comment;
	struct spf_track tr;

	if (spf_check_cached(ctx, id, ip, helo, sender, o))
		return 0;
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
	if (*helo)
		SPF_request_set_helo_dom(req, helo);
	/* Without env_from, libspf2 checks postmaster@helo: the HELO
	 * identity, and the null sender's (RFC 7208 §2.4). */
	if (id == SPF_ID_MAILFROM && *sender)
		SPF_request_set_env_from(req, sender);
	spf_track.active = 1;
	spf_track.ttl = -1;
	spf_track.local = 0;
	rc = SPF_request_query_mailfrom(req, &resp);
	tr = spf_track;
	spf_track.active = 0;
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
	if (ctx->results)
		spf_cache_store(ctx, id, ip, helo, sender, o, &tr);
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
