/* eval.c - one policy request: run the configured checks in order, keep
 * per-message memory, compose the one reply and log the decision.
 *
 * Rules (issue 8): the first definitive action wins (OK, REJECT, DEFER,
 * DEFER_IF_*, 4xx/5xx, DISCARD, restriction names); DUNNO goes on;
 * "informational" actions (PREPEND, BCC, HOLD, REDIRECT, FILTER, WARN,
 * INFO) do not stop the checks, as in Postfix's check_table_result(), so
 * they are queued in the message's memory. A reply carries one action:
 * the definitive one if any, else the next queued one, else DUNNO. Queued
 * actions a definitive reply could not carry go out with later requests
 * of the same message (next recipient, DATA); never PREPEND at
 * END-OF-MESSAGE, which Postfix refuses (postfix.md §1.3).
 */
#include "policyd.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

void pd_instance_init(struct pd_instance *in)
{
	memset(in, 0, sizeof(*in)); /* cache[] stays unallocated until used */
	buf_init(&in->id);
	buf_init(&in->given);
	for (size_t i = 0; i < PD_PENDING_MAX; i++)
		buf_init(&in->pending[i]);
}

void pd_instance_free(struct pd_instance *in)
{
	buf_free(&in->id);
	buf_free(&in->given);
	for (size_t i = 0; i < PD_CHECKS_MAX; i++) {
		buf_free(&in->cache[i]);
		buf_free(&in->cache_note[i]);
	}
	for (size_t i = 0; i < PD_PENDING_MAX; i++)
		buf_free(&in->pending[i]);
}

void pd_instance_switch(struct pd_instance *in, const char *id)
{
	if (*id && strcmp(buf_str(&in->id), id) == 0)
		return;
	buf_set(&in->id, id);
	in->done = 0;
	for (size_t i = 0; i < PD_CHECKS_MAX; i++) {
		if (in->cache[i].data)
			buf_reset(&in->cache[i]);
		if (in->cache_note[i].data)
			buf_reset(&in->cache_note[i]);
	}
	buf_reset(&in->given);
	for (size_t i = 0; i < in->npending; i++)
		buf_reset(&in->pending[i]);
	in->npending = 0;
}

/* A message gets each informational action once, however many of its
 * recipients' lookups produce it (a PREPEND per recipient would add the
 * header once per recipient). */
static int pd_instance_given(struct pd_instance *in, const char *action)
{
	const char *p = buf_str(&in->given);
	size_t n = strlen(action);

	while ((p = strstr(p, action)) != NULL) {
		if ((p == in->given.data || p[-1] == '\n') && (p[n] == '\n' || p[n] == 0))
			return 1;
		p += n;
	}
	buf_puts(&in->given, action);
	buf_putc(&in->given, '\n');
	return 0;
}

void pd_instance_push(struct pd_instance *in, const char *action)
{
	if (pd_instance_given(in, action))
		return;
	if (in->npending == PD_PENDING_MAX) {
		msg_warn("instance %s: more than %d queued actions, dropping \"%.80s\"",
			 buf_str(&in->id), PD_PENDING_MAX, action);
		return;
	}
	buf_set(&in->pending[in->npending++], action);
}

/* The queued action that may be sent at this protocol state, removed
 * from the queue; NULL if none. */
static int pd_instance_pop(struct pd_instance *in, const char *state, struct buf *out)
{
	int eom = strcasecmp(state, "END-OF-MESSAGE") == 0;

	for (size_t i = 0; i < in->npending; i++) {
		const char *a = buf_str(&in->pending[i]);
		if (eom && strncasecmp(a, "PREPEND", 7) == 0)
			continue;
		buf_set(out, a);
		buf_reset(&in->pending[i]);
		/* keep order: shift the rest down */
		struct buf tmp = in->pending[i];
		memmove(&in->pending[i], &in->pending[i + 1],
			(in->npending - i - 1) * sizeof(in->pending[0]));
		in->pending[--in->npending] = tmp;
		return 1;
	}
	return 0;
}

static int pd_word_is(const char *action, const char *word)
{
	size_t n = strlen(word);

	return strncasecmp(action, word, n) == 0 &&
	       (action[n] == 0 || action[n] == ' ' || action[n] == '\t');
}

enum pd_action_class pd_action_classify(const char *action)
{
	static const char *info[] = {"PREPEND", "BCC",	"HOLD", "REDIRECT",
				     "FILTER",	"WARN", "INFO", NULL};

	while (*action == ' ' || *action == '\t')
		action++;
	if (*action == 0 || pd_word_is(action, "DUNNO"))
		return PD_ACT_DUNNO;
	for (size_t i = 0; info[i]; i++)
		if (pd_word_is(action, info[i]))
			return PD_ACT_INFO;
	return PD_ACT_DEFINITIVE;
}

static long long pd_attr_ll(const struct attr_list *l, const char *name)
{
	const char *v = attr_get(l, name);
	char *end;
	long long n = strtoll(v, &end, 10);

	return end == v || n < 0 ? 0 : n;
}

static void pd_req_fill(struct pd_req *rq, struct pd_conf *pc, const struct attr_list *attrs,
			struct pd_instance *inst)
{
	memset(rq, 0, sizeof(*rq));
	rq->attrs = attrs;
	rq->state = attr_get(attrs, "protocol_state");
	rq->client_address = attr_get(attrs, "client_address");
	rq->client_name = attr_get(attrs, "client_name");
	rq->helo = attr_get(attrs, "helo_name");
	rq->sender = attr_get(attrs, "sender");
	rq->recipient = attr_get(attrs, "recipient");
	rq->sasl_username = attr_get(attrs, "sasl_username");
	rq->instance = attr_get(attrs, "instance");
	rq->recipient_count = pd_attr_ll(attrs, "recipient_count");
	rq->size = pd_attr_ll(attrs, "size");
	rq->now = time(NULL);
	/* postgrey's test hook: only when the admin allowed it, else any
	 * client could skip greylisting by claiming a later time. */
	if (pc->test_time && attr_has(attrs, "policy_test_time"))
		rq->now = (time_t)pd_attr_ll(attrs, "policy_test_time");
	rq->inst = inst;
}

/* The Postfix-style log fields of one request, put together without
 * printf (a line per request is a measurable share of the work). */
static void pd_log_decision(struct buf *line, const struct pd_req *rq, const char *peer,
			    const struct buf *notes, const char *action)
{
	struct {
		const char *label, *value;
	} f[] = {
	    {"decision: client=", *rq->client_name ? rq->client_name : "unknown"},
	    {"[", rq->client_address},
	    {"], helo=<", rq->helo},
	    {">, from=<", rq->sender},
	    {">, to=<", rq->recipient},
	    {">, state=", *rq->state ? rq->state : "-"},
	    {", instance=", *rq->instance ? rq->instance : "-"},
	    {", peer=", peer},
	    {", checks=", notes->len ? buf_str(notes) : "-"},
	    {", action=", action},
	};

	buf_reset(line);
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		buf_puts(line, f[i].label);
		buf_puts(line, f[i].value);
	}
	msg_info_text(line->data, line->len);
	if (line->cap > 65536)
		buf_free(line);
}

void pd_eval_run_init(struct pd_eval_run *run)
{
	memset(run, 0, sizeof(*run));
	buf_init(&run->notes);
	buf_init(&run->logline);
	buf_init(&run->v.action);
	buf_init(&run->v.note);
}

void pd_eval_run_free(struct pd_eval_run *run)
{
	buf_free(&run->notes);
	buf_free(&run->logline);
	buf_free(&run->v.action);
	buf_free(&run->v.note);
}

void pd_eval_run_start(struct pd_eval_run *run)
{
	run->next = 0;
	run->fresh = 1;
	buf_reset(&run->notes);
}

/* Run check ck into run->v; -1 when it would block and may not. */
static int pd_eval_check(struct pd_check *ck, struct pd_req *rq, struct pd_verdict *v,
			 int may_block)
{
	buf_reset(&v->action);
	buf_reset(&v->note);
	if (may_block || !ck->blocking) {
		ck->ops->run(ck, rq, v);
		return 0;
	}
	return ck->ops->try_run ? ck->ops->try_run(ck, rq, v) : -1;
}

int pd_eval_step(struct pd_eval_run *run, struct pd_conf *pc, const struct attr_list *attrs,
		 struct pd_instance *inst, const char *peer, struct buf *reply, int may_block)
{
	struct pd_req rq;
	struct pd_verdict *v = &run->v;
	int decided = 0;

	if (run->fresh) {
		pd_instance_switch(inst, attr_get(attrs, "instance"));
		buf_reset(reply);
	}
	pd_req_fill(&rq, pc, attrs, inst);
	if (run->fresh)
		run->now = rq.now;
	else
		rq.now = run->now;
	run->fresh = 0;
	for (; run->next < pc->nchecks && !decided; run->next++) {
		struct pd_check *ck = &pc->checks[run->next];

		if (pd_eval_check(ck, &rq, v, may_block) < 0)
			return 1; /* this check again, on a worker */
		if (v->note.len) {
			if (run->notes.len)
				buf_putc(&run->notes, ',');
			buf_append(&run->notes, v->note.data, v->note.len);
		}
		switch (pd_action_classify(buf_str(&v->action))) {
		case PD_ACT_DUNNO:
			break;
		case PD_ACT_INFO:
			pd_instance_push(inst, buf_str(&v->action));
			break;
		case PD_ACT_DEFINITIVE:
			buf_set(reply, buf_str(&v->action));
			decided = 1;
			break;
		}
	}
	if (!decided && !pd_instance_pop(inst, rq.state, reply))
		buf_set(reply, "DUNNO");
	pd_log_decision(&run->logline, &rq, peer, &run->notes, buf_str(reply));
	/* Without an instance there is no later request to carry the rest. */
	if (*rq.instance == 0)
		pd_instance_switch(inst, "");
	return 0;
}

void pd_eval(struct pd_conf *pc, const struct attr_list *attrs, struct pd_instance *inst,
	     const char *peer, struct buf *reply)
{
	struct pd_eval_run run;

	pd_eval_run_init(&run);
	pd_eval_run_start(&run);
	pd_eval_step(&run, pc, attrs, inst, peer, reply, 1);
	pd_eval_run_free(&run);
}
