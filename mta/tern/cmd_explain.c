/* cmd_explain.c - "tern explain": show what ternd's access restrictions
 * would do with one SMTP session (smtpd_explain.h), in the spirit of
 * "exim -bh": every restriction list, restriction, table lookup, DNS
 * answer and policy service exchange, and the final replies.
 *   tern explain [-c DIR] [--listener NAME] --client ADDR [--name HOST]
 *       [--reverse-name HOST] [--helo NAME] --from ADDR --to ADDR [--to ADDR...]
 * Exit status 0 when everything would be accepted, 1 when a command would
 * be refused, 2 on usage or configuration errors.
 */
#include "tern.h"

#include "../ternd/smtpd.h"
#include "../ternd/smtpd_explain.h"
#include "cfg.h"
#include "log.h"
#include "params.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_explain(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"client", required_argument, NULL, 'a'},	    {"name", required_argument, NULL, 'n'},
	    {"reverse-name", required_argument, NULL, 'r'}, {"helo", required_argument, NULL, 'h'},
	    {"from", required_argument, NULL, 'f'},	    {"to", required_argument, NULL, 't'},
	    {"listener", required_argument, NULL, 'l'},	    {NULL, 0, NULL, 0},
	};
	struct smtpd_explain_req req = {NULL, NULL, NULL, NULL, NULL, NULL, 0};
	const char **rcpt = xcalloc((size_t)argc + 1, sizeof(*rcpt));
	const char *dir = NULL, *listener = "smtp";
	struct buf err = BUF_INIT;
	struct cfg *cfg = NULL;
	struct smtpd_conf *conf = NULL;
	int c, rc = 2;

	optind = 1;
	while ((c = getopt_long(argc, argv, "c:", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			dir = optarg;
			break;
		case 'a':
			req.addr = optarg;
			break;
		case 'n':
			req.name = optarg;
			break;
		case 'r':
			req.rev_name = optarg;
			break;
		case 'h':
			req.helo = optarg;
			break;
		case 'f':
			req.sender = optarg;
			break;
		case 't':
			rcpt[req.nrcpt++] = optarg;
			break;
		case 'l':
			listener = optarg;
			break;
		default:
			goto out_usage;
		}
	}
	if (optind != argc || req.addr == NULL || req.sender == NULL || req.nrcpt == 0)
		goto out_usage;
	req.rcpt = rcpt;
	log_to_cli("tern");
	cfg = cfg_new(tern_params);
	if (cfg_load_dir(cfg, tern_config_dir(dir), TERN_CONF_FILE, 0, &err) < 0 ||
	    (conf = smtpd_conf_new(cfg, listener, &err)) == NULL) {
		tern_error("%s", buf_str(&err));
		goto out;
	}
	rc = smtpd_explain(conf, &req, stdout);
	goto out;
out_usage:
	tern_usage("explain");
	rc = 2;
out:
	smtpd_conf_unref(conf);
	cfg_free(cfg);
	buf_free(&err);
	free(rcpt);
	return rc;
}
