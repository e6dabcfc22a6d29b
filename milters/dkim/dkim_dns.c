/* dkim_dns.c - DKIM public keys (RFC 6376 §3.6.2) through libtern's
 * resolver, plugged into libopendkim with dkim_set_key_lookup().
 *
 * A struct resolver serves one lookup at a time, and libmilter runs many
 * sessions on many threads: lookups borrow a resolver from a small pool
 * and give it back, so concurrent verifications never share one, and a
 * busy milter does not pay for a new libunbound context per message.
 * A temporary DNS failure is noted in the message's dkim_lookup_ctx so
 * the A-R says temperror (never "no key"), whatever libopendkim makes of
 * the callback's TRYAGAIN.
 */
#include "dkim_milter.h"

#include "log.h"
#include "resolver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DKIM_DNS_IDLE_MAX 32 /* resolvers kept for reuse */

struct dkim_resolvers {
	pthread_mutex_t lock;
	char *servers;
	int timeout;
	struct resolver *idle[DKIM_DNS_IDLE_MAX];
	size_t nidle;
};

struct dkim_resolvers *dkim_dns_new(const char *servers, int timeout, struct buf *err)
{
	struct dkim_resolvers *r = xcalloc(1, sizeof(*r));
	struct resolver *first;

	/* One resolver now: a bad dns_servers value is refused at load. */
	if ((first = resolver_new(servers, timeout, NULL, err)) == NULL) {
		free(r);
		return NULL;
	}
	pthread_mutex_init(&r->lock, NULL);
	r->servers = xstrdup(servers);
	r->timeout = timeout;
	r->idle[r->nidle++] = first;
	return r;
}

void dkim_dns_free(struct dkim_resolvers *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->nidle; i++)
		resolver_free(r->idle[i]);
	pthread_mutex_destroy(&r->lock);
	free(r->servers);
	free(r);
}

static struct resolver *dkim_dns_get(struct dkim_resolvers *r, struct buf *err)
{
	struct resolver *res = NULL;

	pthread_mutex_lock(&r->lock);
	if (r->nidle > 0)
		res = r->idle[--r->nidle];
	pthread_mutex_unlock(&r->lock);
	return res ? res : resolver_new(r->servers, r->timeout, NULL, err);
}

static void dkim_dns_put(struct dkim_resolvers *r, struct resolver *res)
{
	pthread_mutex_lock(&r->lock);
	if (r->nidle < DKIM_DNS_IDLE_MAX) {
		r->idle[r->nidle++] = res;
		res = NULL;
	}
	pthread_mutex_unlock(&r->lock);
	if (res)
		resolver_free(res);
}

static void dkim_dns_note_tempfail(struct dkim_lookup_ctx *lc, const char *name)
{
	if (lc->ntempfail < DKIM_LOOKUP_MAX)
		snprintf(lc->tempfail[lc->ntempfail++], sizeof(lc->tempfail[0]), "%s", name);
}

DKIM_CBSTAT dkim_dns_key_lookup(DKIM *dkim, DKIM_SIGINFO *sig, u_char *out, size_t outlen)
{
	struct dkim_lookup_ctx *lc = dkim_get_user_context(dkim);
	const char *sel = (const char *)dkim_sig_getselector(sig);
	const char *dom = (const char *)dkim_sig_getdomain(sig);
	struct resolver_result res;
	struct buf name = BUF_INIT, err = BUF_INIT;
	struct resolver *r;
	DKIM_CBSTAT rc = DKIM_CBSTAT_ERROR;

	if (lc == NULL || sel == NULL || dom == NULL)
		return DKIM_CBSTAT_ERROR;
	buf_init(&name);
	buf_init(&err);
	buf_printf(&name, "%s._domainkey.%s", sel, dom);
	if ((r = dkim_dns_get(lc->dns, &err)) == NULL) {
		msg_warn("DKIM key %s: no resolver: %s", buf_str(&name), buf_str(&err));
		dkim_dns_note_tempfail(lc, buf_str(&name));
		rc = DKIM_CBSTAT_TRYAGAIN;
		goto done;
	}
	resolver_result_init(&res);
	resolver_lookup(r, buf_str(&name), RESOLVER_T_TXT, &res);
	switch (res.status) {
	case RESOLVER_FOUND:
		/* RFC 6376 §3.6.2.2: several records give undefined results;
		 * we take the first, as most verifiers do. */
		if (res.count > 0 && strlen(res.rr[0].text) < outlen) {
			memcpy(out, res.rr[0].text, strlen(res.rr[0].text) + 1);
			rc = DKIM_CBSTAT_CONTINUE;
		}
		break;
	case RESOLVER_NXDOMAIN:
	case RESOLVER_NODATA:
	case RESOLVER_NULLMX:
		rc = DKIM_CBSTAT_NOTFOUND;
		break;
	case RESOLVER_TEMPFAIL:
		msg_info("DKIM key %s: temporary DNS failure: %s", buf_str(&name),
			 buf_str(&res.msg));
		dkim_dns_note_tempfail(lc, buf_str(&name));
		rc = DKIM_CBSTAT_TRYAGAIN;
		break;
	case RESOLVER_PERMFAIL:
		rc = DKIM_CBSTAT_ERROR;
		break;
	}
	resolver_result_free(&res);
	dkim_dns_put(lc->dns, r);
done:
	buf_free(&name);
	buf_free(&err);
	return rc;
}
