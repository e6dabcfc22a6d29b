/* fuzz_policyd.c - libFuzzer target for tern-policyd's request path: the
 * bytes a client sends go through the attribute decoder exactly as
 * policyd/server.c feeds it, and every complete request is evaluated by
 * every check (access with a restriction class, greylist and rate limits
 * on a private LMDB, BCC rules), with the per-message memory carried from
 * request to request as on one connection. The reply must always be a
 * non-empty action the protocol can carry.
 *
 * Build and run (clang): make CC=clang BUILD=build/fuzz build/fuzz/fuzz_policyd
 *   build/fuzz/fuzz_policyd -max_total_time=60 tests/fuzz/corpus_policyd
 */
#include "policyd.h"

#include "attr.h"
#include "log.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char fuzz_conf[] =
    "checks = access, greylist, ratelimit, bcc\n"
    "test_time_attribute = yes\n"
    "myhostname = fuzz.test\n"
    "greylist_delay = 60s\n"
    "sender_access = inline:{ {bad@example.com = REJECT no}, {pre@example.com = PREPEND X-A: b},"
    " {hold@example.com = HOLD}, {boss@example.com = restricted} }\n"
    "recipient_access = pcre:{ {/^postmaster@/ OK}, {/^class@/ restricted} }\n"
    "client_access = cidr:{ {198.51.100.0/24 DEFER_IF_PERMIT later} }\n"
    "helo_access = inline:{ {bad.helo = 554 5.7.1 no} }\n"
    "sasl_access = inline:{ {mallory = REJECT locked} }\n"
    "smtpd_restriction_classes = restricted\n"
    "restricted = check_sender_access inline:{ {friend@example.org = OK} }, reject\n"
    "ratelimit_rules = sender:messages:3/1h, client_net:bytes:10k/1h, "
    "recipient_domain:recipients:5/1h, sasl_username:recipients:4/1d\n"
    "bcc_sender_maps = pcre:{ {!/@example\\.com$$/ archive@example.com} }\n";

static struct pd_conf *fuzz_pc;

static void fuzz_init(void)
{
	char dir[] = "/tmp/tern-fuzz-policyd-XXXXXX";
	struct buf err = BUF_INIT, text = BUF_INIT;
	struct cfg *cfg = cfg_new(policyd_params);

	log_open("policyd");
	if (log_to_file("/dev/null") < 0)
		abort();
	if (mkdtemp(dir) == NULL)
		abort();
	buf_printf(&text, "%sstate = lmdb:%s\nstate_map_size = 64m\n", fuzz_conf, dir);
	if (cfg_parse_string(cfg, "fuzz.conf", buf_str(&text), &err) < 0 ||
	    cfg_validate(cfg, &err) < 0 || (fuzz_pc = pd_conf_new(cfg, &err)) == NULL) {
		fprintf(stderr, "fuzz config: %s\n", buf_str(&err));
		abort();
	}
	buf_free(&err);
	buf_free(&text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct attr_decoder dec;
	struct pd_instance inst;
	struct buf reply = BUF_INIT, out = BUF_INIT, err = BUF_INIT;
	size_t off = 0, used;

	if (fuzz_pc == NULL)
		fuzz_init();
	attr_decoder_init(&dec, 0, 0);
	pd_instance_init(&inst);
	while (off < size) {
		enum attr_decode_status st =
		    attr_decoder_feed(&dec, (const char *)data + off, size - off, &used);
		off += used;
		if (st == ATTR_DECODE_ERROR)
			break;
		if (st != ATTR_DECODE_DONE)
			break;
		pd_eval(fuzz_pc, &dec.list, &inst, "fuzz", &reply);
		buf_reset(&out);
		if (reply.len == 0 || attr_print_reply(&out, buf_str(&reply), &err) < 0)
			abort(); /* server.c would have to fall back to DUNNO */
	}
	attr_decoder_eof(&dec);
	attr_decoder_free(&dec);
	pd_instance_free(&inst);
	buf_free(&reply);
	buf_free(&out);
	buf_free(&err);
	return 0;
}
