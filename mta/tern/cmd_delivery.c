/* cmd_delivery.c - "tern delivery pause|resume|status": the persistent
 * freeze/thaw of all delivery while mail is still received (seed 002's
 * "freeze"). The state is the flag file SCHED_PAUSE_FILE in the queue
 * directory, so it survives restarts: through ternd's control socket
 * when it runs (the scheduler stops or restarts at once), written or
 * removed here when it does not.
 */
#include "cfg.h"
#include "control.h"
#include "fileio.h"
#include "log.h"
#include "params.h"
#include "tern.h"

#include "../ternd/sched.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct dcmd {
	struct buf queue_dir, socket, flag;
};

static int dcmd_load(struct dcmd *d, const char *dir)
{
	struct cfg *c = cfg_new(tern_params);
	struct buf err = BUF_INIT;
	int rc = -1;

	if (cfg_load_dir(c, tern_config_dir(dir), TERN_CONF_FILE, 1, &err) < 0 ||
	    cfg_get_path(c, NULL, "queue_directory", &d->queue_dir, &err) < 0 ||
	    cfg_get_path(c, NULL, "control_socket", &d->socket, &err) < 0) {
		tern_error("%s", buf_str(&err));
	} else {
		buf_printf(&d->flag, "%s/%s", d->queue_dir.data, SCHED_PAUSE_FILE);
		rc = 0;
	}
	cfg_free(c);
	buf_free(&err);
	return rc;
}

static int dcmd_flag_set(struct dcmd *d, int paused)
{
	struct stat st;
	struct buf err = BUF_INIT;

	if (stat(d->queue_dir.data, &st) < 0) {
		tern_error("queue directory %s: %s (\"tern check\" creates it)", d->queue_dir.data,
			   strerror(errno));
		return -1;
	}
	if (fileio_flag_set(d->flag.data, paused, &err) < 0) {
		tern_error("%s", buf_str(&err));
		buf_free(&err);
		return -1;
	}
	return 0;
}

/* Through ternd; CONTROL_DOWN when it does not run. */
static enum control_status dcmd_request(struct dcmd *d, const char *command)
{
	struct attr_list req, reply;
	struct buf err = BUF_INIT;
	enum control_status st;

	attr_list_init(&req);
	attr_list_init(&reply);
	attr_list_set(&req, "command", command);
	st = control_request(d->socket.data, &req, &reply, 30, &err);
	if (st == CONTROL_ERROR) {
		tern_error("%s", buf_str(&err));
	} else if (st == CONTROL_OK && strcmp(attr_get(&reply, "status"), "ok") != 0) {
		tern_error("%s", attr_get(&reply, "message"));
		st = CONTROL_ERROR;
	}
	attr_list_free(&req);
	attr_list_free(&reply);
	buf_free(&err);
	return st;
}

static int dcmd_pause(struct dcmd *d, int paused)
{
	enum control_status st = dcmd_request(d, paused ? "delivery-pause" : "delivery-resume");

	if (st == CONTROL_DOWN && dcmd_flag_set(d, paused) == 0)
		st = CONTROL_OK;
	if (st != CONTROL_OK)
		return 1;
	msg_info("delivery %s", paused ? "paused" : "resumed");
	return 0;
}

static int dcmd_status(struct dcmd *d)
{
	struct stat st;
	char when[32];

	if (lstat(d->flag.data, &st) < 0) {
		printf("delivery is active\n");
		return 0;
	}
	ctime_r(&st.st_mtime, when);
	when[strcspn(when, "\n")] = 0;
	printf("delivery is paused (since %s)\n", when);
	return 0;
}

int cmd_delivery(int argc, char **argv)
{
	struct dcmd d = {BUF_INIT, BUF_INIT, BUF_INIT};
	const char *dir = NULL;
	int rc = 2;

	argc--, argv++;
	if (argc >= 2 && strcmp(argv[0], "-c") == 0) {
		dir = argv[1];
		argc -= 2, argv += 2;
	}
	if (argc != 1 ||
	    (strcmp(argv[0], "pause") && strcmp(argv[0], "resume") && strcmp(argv[0], "status"))) {
		tern_usage("delivery");
		return 2;
	}
	if (dcmd_load(&d, dir) < 0)
		rc = 1;
	else if (strcmp(argv[0], "status") == 0)
		rc = dcmd_status(&d);
	else
		rc = dcmd_pause(&d, strcmp(argv[0], "pause") == 0);
	buf_free(&d.queue_dir);
	buf_free(&d.socket);
	buf_free(&d.flag);
	return rc;
}
