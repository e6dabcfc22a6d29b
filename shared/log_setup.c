/* log_setup.c - where a daemon's log lines go, from its settings
 * (log.h: log_setup()): stderr in the foreground, else maillog_file when
 * set, else syslog with syslog_facility. One place for ternd,
 * tern-policyd and the milters. */
#include "cfg.h"
#include "log.h"

#include <errno.h>
#include <string.h>

int log_setup(const struct cfg *cfg, int foreground, struct buf *err)
{
	struct buf v = BUF_INIT;
	int rc = 0;

	if (foreground) {
		log_to_stderr();
		return 0;
	}
	if (cfg_get_path(cfg, NULL, "maillog_file", &v, err) < 0) {
		rc = -1;
	} else if (v.len) {
		if (log_to_file(buf_str(&v)) < 0) {
			buf_printf(err, "open maillog_file %s: %s", buf_str(&v), strerror(errno));
			rc = -1;
		}
	} else if (cfg_get_str(cfg, NULL, "syslog_facility", &v, err) < 0) {
		rc = -1;
	} else if (log_to_syslog(buf_str(&v)) < 0) {
		buf_printf(err, "bad syslog_facility \"%s\"", buf_str(&v));
		rc = -1;
	}
	buf_free(&v);
	return rc;
}
