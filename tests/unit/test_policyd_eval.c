/* test_policyd_eval.c - unit tests for tern-policyd's decision logic
 * (policyd/eval.c, conf.c, state.c): action classes, how one reply is
 * chosen from the checks' verdicts, the per-message memory (queued and
 * once-only actions, never PREPEND at END-OF-MESSAGE), client networks,
 * the state record text, and configuration errors that refuse a start;
 * evaluation in steps (the event loop runs what cannot block, a worker
 * the rest, from the check that would block).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "policyd.h"
#include "state.h"

static void test_action_classes(void **state)
{
	assert_int_equal(pd_action_classify(""), PD_ACT_DUNNO);
	assert_int_equal(pd_action_classify("dunno"), PD_ACT_DUNNO);
	assert_int_equal(pd_action_classify("  DUNNO"), PD_ACT_DUNNO);
	assert_int_equal(pd_action_classify("PREPEND X-A: b"), PD_ACT_INFO);
	assert_int_equal(pd_action_classify("bcc a@b"), PD_ACT_INFO);
	assert_int_equal(pd_action_classify("HOLD"), PD_ACT_INFO);
	assert_int_equal(pd_action_classify("WARN x"), PD_ACT_INFO);
	assert_int_equal(pd_action_classify("OK"), PD_ACT_DEFINITIVE);
	assert_int_equal(pd_action_classify("REJECT no"), PD_ACT_DEFINITIVE);
	assert_int_equal(pd_action_classify("DEFER_IF_PERMIT x"), PD_ACT_DEFINITIVE);
	assert_int_equal(pd_action_classify("450 4.7.1 x"), PD_ACT_DEFINITIVE);
	assert_int_equal(pd_action_classify("DISCARD"), PD_ACT_DEFINITIVE);
	/* a word that only starts like an informational action */
	assert_int_equal(pd_action_classify("PREPENDX"), PD_ACT_DEFINITIVE);
	assert_int_equal(pd_action_classify("DUNNOT"), PD_ACT_DEFINITIVE);
}

/* State directories made for the tests, removed at the end. */
static char *dirs[32];
static size_t ndirs;

static void dirs_remove(void)
{
	static const char *files[] = {"data.mdb", "lock.mdb"};
	char path[256];

	for (size_t i = 0; i < ndirs; i++) {
		for (size_t f = 0; f < 2; f++) {
			snprintf(path, sizeof(path), "%s/%s", dirs[i], files[f]);
			unlink(path);
		}
		rmdir(dirs[i]);
		free(dirs[i]);
	}
}

static struct pd_conf *conf_from(const char *text, struct buf *err)
{
	struct cfg *cfg = cfg_new(policyd_params);
	char dir[] = "/tmp/tern-unit-policyd-XXXXXX";
	struct buf all = BUF_INIT;
	struct pd_conf *pc;

	assert_non_null(mkdtemp(dir));
	assert_true(ndirs < sizeof(dirs) / sizeof(dirs[0]));
	dirs[ndirs++] = strdup(dir);
	buf_printf(&all, "state = lmdb:%s\nstate_map_size = 16m\n%s", dir, text);
	if (cfg_parse_string(cfg, "unit.conf", buf_str(&all), err) < 0 ||
	    cfg_validate(cfg, err) < 0) {
		cfg_free(cfg);
		buf_free(&all);
		return NULL;
	}
	pc = pd_conf_new(cfg, err);
	buf_free(&all);
	return pc;
}

static void eval(struct pd_conf *pc, struct pd_instance *in, const char *state, const char *sender,
		 const char *rcpt, const char *inst, struct buf *reply)
{
	struct attr_list l;

	attr_list_init(&l);
	attr_list_set(&l, "request", "smtpd_access_policy");
	attr_list_set(&l, "protocol_state", state);
	attr_list_set(&l, "client_address", "192.0.2.1");
	attr_list_set(&l, "sender", sender);
	attr_list_set(&l, "recipient", rcpt);
	attr_list_set(&l, "instance", inst);
	pd_eval(pc, &l, in, "unit", reply);
	attr_list_free(&l);
}

static void test_reply_choice_and_message_memory(void **state)
{
	struct buf err = BUF_INIT, reply = BUF_INIT;
	struct pd_instance in;
	struct pd_conf *pc = conf_from(
	    "checks = access, bcc\n"
	    "sender_access = inline:{ {p@x.test = PREPEND X-P: 1}, {r@x.test = REJECT no} }\n"
	    "recipient_access = inline:{ {h@y.test = PREPEND X-H: 2} }\n"
	    "bcc_sender_maps = inline:{ {p@x.test = arch@y.test} }\n",
	    &err);

	assert_non_null(pc);
	pd_instance_init(&in);
	/* PREPEND and BCC both apply: the reply carries the first ... */
	eval(pc, &in, "RCPT", "p@x.test", "a@y.test", "m1", &reply);
	assert_string_equal(buf_str(&reply), "PREPEND X-P: 1");
	/* ... the next request of the message the second; the sender's
	 * PREPEND is not repeated for a second recipient */
	eval(pc, &in, "RCPT", "p@x.test", "b@y.test", "m1", &reply);
	assert_string_equal(buf_str(&reply), "BCC arch@y.test");
	eval(pc, &in, "RCPT", "p@x.test", "c@y.test", "m1", &reply);
	assert_string_equal(buf_str(&reply), "DUNNO");
	/* never PREPEND at END-OF-MESSAGE: it stays queued ... */
	eval(pc, &in, "RCPT", "p@x.test", "h@y.test", "m2", &reply);
	assert_string_equal(buf_str(&reply), "PREPEND X-P: 1");
	eval(pc, &in, "END-OF-MESSAGE", "p@x.test", "", "m2", &reply);
	assert_string_equal(buf_str(&reply), "BCC arch@y.test");
	eval(pc, &in, "END-OF-MESSAGE", "p@x.test", "", "m2", &reply);
	assert_string_equal(buf_str(&reply), "DUNNO");
	/* a definitive action wins over queued ones, which wait */
	eval(pc, &in, "RCPT", "r@x.test", "h@y.test", "m3", &reply);
	assert_string_equal(buf_str(&reply), "REJECT no");
	eval(pc, &in, "DATA", "r@x.test", "", "m3", &reply);
	assert_string_equal(buf_str(&reply), "REJECT no");
	pd_instance_free(&in);
	pd_conf_unref(pc);
	buf_free(&err);
	buf_free(&reply);
}

static void test_eval_steps(void **state)
{
	struct buf err = BUF_INIT, reply = BUF_INIT;
	struct pd_instance in;
	struct pd_eval_run run;
	struct attr_list l;
	/* nothing answers DNS on port 9: a check that gets that far ends in
	 * temperror, quickly */
	struct pd_conf *pc = conf_from("checks = access, spf\n"
				       "sender_access = inline:{ {p@x.test = PREPEND X-P: 1} }\n"
				       "dns_servers = 127.0.0.1@9\ndns_timeout = 1s\n",
				       &err);

	assert_non_null(pc);
	assert_true(pc->checks[1].blocking && !pc->checks[0].blocking);
	pd_instance_init(&in);
	pd_eval_run_init(&run);
	attr_list_init(&l);
	attr_list_set(&l, "request", "smtpd_access_policy");
	attr_list_set(&l, "protocol_state", "RCPT");
	attr_list_set(&l, "client_address", "192.0.2.1");
	attr_list_set(&l, "recipient", "r@y.test");
	/* no sender and no HELO: SPF has nothing to look up, so the loop
	 * answers without a worker */
	attr_list_set(&l, "sender", "");
	attr_list_set(&l, "instance", "i1");
	pd_eval_run_start(&run);
	assert_int_equal(pd_eval_step(&run, pc, &l, &in, "unit", &reply, 0), 0);
	assert_string_equal(buf_str(&run.notes), "access=dunno,spf=none(hit)");
	/* a sender: access runs on the loop, SPF would need DNS: stop there */
	attr_list_set(&l, "sender", "p@x.test");
	attr_list_set(&l, "instance", "i2");
	pd_eval_run_start(&run);
	assert_int_equal(pd_eval_step(&run, pc, &l, &in, "unit", &reply, 0), 1);
	assert_int_equal(run.next, 1);
	assert_int_equal(in.npending, 1); /* access's PREPEND is queued already */
	/* the worker goes on from SPF, not from the start */
	assert_int_equal(pd_eval_step(&run, pc, &l, &in, "unit", &reply, 1), 0);
	assert_string_equal(buf_str(&reply), "PREPEND X-P: 1");
	assert_string_equal(buf_str(&run.notes), "access=sender:PREPEND X-P: 1,spf=temperror");
	attr_list_free(&l);
	pd_eval_run_free(&run);
	pd_instance_free(&in);
	pd_conf_unref(pc);
	buf_free(&err);
	buf_free(&reply);
}

static void test_config_errors(void **state)
{
	static const struct {
		const char *text, *want;
	} cases[] = {
	    {"checks = access, nope\n", "unknown check \"nope\""},
	    {"checks = ratelimit\nratelimit_rules = sender:messages:10\n", "bad rule"},
	    {"checks = ratelimit\nratelimit_rules = helo:messages:10/1h\n", "bad rule"},
	    {"checks = ratelimit\nratelimit_rules = sender:parcels:10/1h\n", "bad rule"},
	    {"checks = ratelimit\nratelimit_count_state = RCPT\n", "ratelimit_count_state"},
	    {"checks = ratelimit\nratelimit_action = PREPEND X: y\n", "definitive"},
	    {"checks = access\nsmtpd_restriction_classes = c\n", "not defined"},
	    {"checks = access\nsmtpd_restriction_classes = c\nc = permit_mynetworks\n",
	     "not supported"},
	    {"checks = access\nsmtpd_restriction_classes = c\nc = check_sender_access\n",
	     "needs a table"},
	    {"checks = greylist\ngreylist_whitelist_clients = /nonexistent/wl\n",
	     "/nonexistent/wl"},
	    {"checks = access\nstate_error_action = PREPEND X: y\n", "state_error_action"},
	    {"checks = spf\nspf_fail_action = PREPEND X: y\n", "spf_fail_action"},
	    {"checks = spf\nspf_header_type = xml\n", "spf_header_type"},
	    {"checks = { access, listen=inet:127.0.0.1:1 }\n", "server setting"},
	    {"checks = { access, sender_access }\n", "not name = value"},
	    {"checks = { access, greylist_delay=soon }\n", "greylist_delay"},
	    {"checks = { bogus, x=y }\n", "unknown check \"bogus\""},
	    {"checks = {}\n", "empty or unbalanced group"},
	};
	struct buf err = BUF_INIT;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		buf_reset(&err);
		assert_null(conf_from(cases[i].text, &err));
		if (strstr(buf_str(&err), cases[i].want) == NULL)
			fail_msg("case %zu: \"%s\" does not mention \"%s\"", i, buf_str(&err),
				 cases[i].want);
	}
	buf_free(&err);
}

static void test_client_net_and_records(void **state)
{
	struct buf out = BUF_INIT;
	struct pd_state_rec r = {1, -2, 3, 2000000000}, back;

	assert_int_equal(pd_client_net("192.0.2.77", 24, 64, &out), 0);
	assert_string_equal(buf_str(&out), "192.0.2.0/24");
	assert_int_equal(pd_client_net("2001:db8:1:2:3:4:5:6", 24, 64, &out), 0);
	assert_string_equal(buf_str(&out), "2001:db8:1:2::/64");
	assert_int_equal(pd_client_net("::ffff:198.51.100.9", 24, 64, &out), 0);
	assert_string_equal(buf_str(&out), "198.51.100.0/24");
	assert_int_equal(pd_client_net("unknown", 24, 64, &out), -1);
	pd_state_format(&r, &out);
	assert_string_equal(buf_str(&out), "1 -2 3 2000000000");
	assert_int_equal(pd_state_parse(buf_str(&out), &back), 0);
	assert_memory_equal(&r, &back, sizeof(r));
	assert_int_equal(pd_state_parse("1 2 x", &back), -1);
	/* the parser takes exactly what pd_state_format() writes */
	assert_int_equal(pd_state_parse_n("5 -1 0 2000000000", 17, &back), 0);
	assert_true(back.a == 5 && back.b == -1 && back.c == 0 && back.expires == 2000000000);
	assert_int_equal(pd_state_parse_n("5 -1 0 2000000000junk", 21, &back), -1);
	assert_int_equal(pd_state_parse_n("5 1 0 7", 6, &back), -1); /* cut short */
	assert_int_equal(pd_state_parse("5  1 0 7", &back), -1);
	assert_int_equal(pd_state_parse("1 2 3 99999999999999999999", &back), -1);
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_action_classes),
	    cmocka_unit_test(test_reply_choice_and_message_memory),
	    cmocka_unit_test(test_eval_steps),
	    cmocka_unit_test(test_config_errors),
	    cmocka_unit_test(test_client_net_and_records),
	};

	int rc;

	log_open("policyd");
	log_to_file("/dev/null");
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	dirs_remove();
	return rc;
}
