/* check_bcc.c - the "bcc" check: archiving decisions as "BCC address"
 * actions (Postfix 3.0+ honours BCC from a policy service).
 *
 * Four table lists, tried in order: bcc_sender_maps (the sender, "<>"
 * for the null sender), bcc_recipient_maps, bcc_client_maps (the client
 * address), bcc_sasl_maps (the SASL login). The first match gives the
 * archive address; one BCC per message (instance), given at the first
 * request that matches, later ones get nothing from this check. With
 * pcre tables the seed's "archive when the sender OR the recipient is
 * remote" is the same rule in the sender and recipient lists:
 * !/@example\.com$/ archive@example.com (seed 002).
 * Pitfall: with recipient-dependent rules, the decision falls on the
 * first recipient that matches; BCC applies to the whole message.
 */
#include "policyd.h"

#include "log.h"
#include "table.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { PD_BCC_SENDER, PD_BCC_RECIPIENT, PD_BCC_CLIENT, PD_BCC_SASL, PD_BCC_N };

static const char *pd_bcc_params[PD_BCC_N] = {"bcc_sender_maps", "bcc_recipient_maps",
					      "bcc_client_maps", "bcc_sasl_maps"};

struct pd_bcc {
	struct table **t[PD_BCC_N];
	size_t n[PD_BCC_N];
};

static void pd_bcc_free(struct pd_check *ck)
{
	struct pd_bcc *b = ck->priv;

	if (b == NULL)
		return;
	for (int i = 0; i < PD_BCC_N; i++)
		pd_tables_free(b->t[i], b->n[i]);
	free(b);
}

static int pd_bcc_init(struct pd_check *ck, struct pd_conf *pc, const struct cfg *cfg,
		       struct buf *err)
{
	struct pd_bcc *b = xcalloc(1, sizeof(*b));

	ck->priv = b;
	for (int i = 0; i < PD_BCC_N; i++)
		if (pd_cfg_tables(cfg, pd_bcc_params[i], &b->t[i], &b->n[i], err) < 0)
			return -1;
	return 0;
}

static const char *pd_bcc_key(const struct pd_req *rq, int which)
{
	switch (which) {
	case PD_BCC_SENDER:
		return *rq->sender ? rq->sender : "<>";
	case PD_BCC_RECIPIENT:
		return rq->recipient;
	case PD_BCC_CLIENT:
		return rq->client_address;
	default:
		return rq->sasl_username;
	}
}

static void pd_bcc_run(struct pd_check *ck, struct pd_req *rq, struct pd_verdict *v)
{
	struct pd_bcc *b = ck->priv;
	struct buf value = BUF_INIT, err = BUF_INIT;

	if (pd_check_done(rq, ck))
		return;
	buf_init(&value);
	buf_init(&err);
	for (int i = 0; i < PD_BCC_N; i++) {
		const char *key = pd_bcc_key(rq, i);
		if (*key == 0)
			continue;
		for (size_t j = 0; j < b->n[i]; j++) {
			int rc = table_lookup(b->t[i][j], key, &value, &err);
			if (rc == TABLE_ERROR) {
				msg_warn("%s lookup error: %s", b->t[i][j]->spec, buf_str(&err));
				continue;
			}
			if (rc != TABLE_FOUND || value.len == 0 || strchr(buf_str(&value), ' '))
				continue;
			buf_printf(&v->action, "BCC %s", buf_str(&value));
			buf_printf(&v->note, "bcc=%s", buf_str(&value));
			pd_check_set_done(rq, ck);
			goto done;
		}
	}
done:
	buf_free(&value);
	buf_free(&err);
}

const struct pd_check_ops pd_check_bcc_ops = {
    "bcc", 0, pd_bcc_init, pd_bcc_run, pd_bcc_free, NULL,
};
