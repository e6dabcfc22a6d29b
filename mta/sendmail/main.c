/* main.c - the Sendmail-compatible front end: one binary installed as
 * sendmail, mailq and newaliases (chosen by argv[0]), as Postfix's.
 *
 * sendmail writes the message into the maildrop directory and exits 0
 * only once the file is durable (75, EX_TEMPFAIL, when it cannot be
 * written), so local submission works while ternd is down. mailq runs
 * "tern queue list"; newaliases builds every hash:/cdb: alias_database.
 * Options follow Postfix's sendmail(1); harmless sendmail options are
 * accepted and ignored as Postfix does; -bs speaks SMTP on stdin/stdout
 * (sendmail_smtp.c); -bv and -bd are refused clearly.
 */
#include "cfg.h"
#include "log.h"
#include "params.h"
#include "sendmail.h"
#include "table_source.h"

#include "../ternd/pickup.h"

#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum sm_mode { SM_MODE_SEND, SM_MODE_SMTP, SM_MODE_MAILQ, SM_MODE_NEWALIASES, SM_MODE_FLUSH };

struct sm_opts {
	enum sm_mode mode;
	const char *config_dir;
	const char *sender; /* -f/-r, NULL: the login name */
	const char *fullname;
	int extract; /* -t */
	int dot_ends;
};

static const char *sm_progname = "sendmail";

static int sm_fatal(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sm_fatal(int status, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: fatal: ", sm_progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return status;
}

static int sm_usage(void)
{
	fprintf(stderr,
		"usage: %s [options] [recipient...]\n"
		"  -t              recipients also from To:, Cc:, Bcc: (Bcc: is removed)\n"
		"  -f sender       envelope sender (<> for the null sender)\n"
		"  -F name         full name for an added From:\n"
		"  -i, -oi         a line with a lone \".\" does not end the message\n"
		"  -bs             speak SMTP on stdin/stdout, each message into the maildrop\n"
		"  -bp             list the queue (mailq)\n"
		"  -bi, -I         rebuild the alias databases (newaliases)\n"
		"  -q              flush the queue\n"
		"  -C dir          configuration directory\n",
		sm_progname);
	return SM_EX_USAGE;
}

/* -o options: only -oi means something; the rest (-oem, -om, -o7...) are
 * Sendmail settings Postfix ignores. */
static void sm_opt_o(struct sm_opts *o, const char *arg)
{
	if (strcmp(arg, "i") == 0)
		o->dot_ends = 0;
}

/* -b modes. Returns 0, or an exit status for a refused mode. */
static int sm_opt_b(struct sm_opts *o, const char *arg)
{
	if (strcmp(arg, "m") == 0)
		o->mode = SM_MODE_SEND;
	else if (strcmp(arg, "p") == 0)
		o->mode = SM_MODE_MAILQ;
	else if (strcmp(arg, "i") == 0)
		o->mode = SM_MODE_NEWALIASES;
	else if (strcmp(arg, "s") == 0)
		o->mode = SM_MODE_SMTP;
	else if (strcmp(arg, "v") == 0)
		return sm_fatal(SM_EX_USAGE, "-bv is not supported: address verification by "
					     "mail (a delivery report instead of delivery) is "
					     "not implemented");
	else if (strcmp(arg, "d") == 0)
		return sm_fatal(SM_EX_USAGE, "-bd is not supported: ternd receives mail "
					     "from the network");
	else
		return sm_fatal(SM_EX_USAGE, "unsupported: -b%s", arg);
	return 0;
}

static int sm_opt_one(struct sm_opts *o, int c, const char *arg)
{
	switch (c) {
	case 'b':
		return sm_opt_b(o, arg);
	case 'C':
		o->config_dir = arg;
		break;
	case 'F':
		o->fullname = arg;
		break;
	case 'f':
	case 'r':
		o->sender = arg;
		break;
	case 'I':
		o->mode = SM_MODE_NEWALIASES;
		break;
	case 'i':
		o->dot_ends = 0;
		break;
	case 'o':
		sm_opt_o(o, arg);
		break;
	case 'q':
		if (arg == NULL) /* -qInterval (a queue runner) has no meaning here */
			o->mode = SM_MODE_FLUSH;
		break;
	case 't':
		o->extract = 1;
		break;
	case '?':
		return sm_usage();
	default: /* -B -G -L -N -O -R -U -V -X -c -e -h -m -n -p -v -x: ignored */
		break;
	}
	return 0;
}

/* Postfix sendmail's option letters; '+': options end at the first
 * recipient, as POSIX getopt. */
static int sm_opts_parse(struct sm_opts *o, int argc, char **argv)
{
	int c, rc;

	while ((c = getopt(argc, argv, "+B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q::tvx")) != -1)
		if ((rc = sm_opt_one(o, c, optarg)) != 0)
			return rc;
	return 0;
}

/* "tern" next to this binary (the install links all live in sbin). */
static void sm_exec_tern(char **args)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	struct buf path = BUF_INIT;

	if (n > 0) {
		self[n] = 0;
		buf_printf(&path, "%s/tern", dirname(self));
		execv(path.data, args);
	}
	execvp("tern", args);
	buf_free(&path);
}

static int sm_run_tern(const struct sm_opts *o, const char *a1, const char *a2)
{
	char *args[] = {"tern", (char *)a1, (char *)a2, NULL};

	if (o->config_dir)
		setenv("TERN_CONFIG_DIR", o->config_dir, 1);
	fflush(NULL);
	sm_exec_tern(args);
	return sm_fatal(SM_EX_SOFTWARE, "cannot run tern: %m");
}

static struct cfg *sm_config(const struct sm_opts *o, struct buf *err)
{
	const char *dir = o->config_dir ? o->config_dir : getenv("TERN_CONFIG_DIR");
	struct cfg *c = cfg_new(tern_params);

	if (cfg_load_dir(c, dir && *dir ? dir : "/etc/tern", TERN_CONF_FILE, 1, err) < 0) {
		cfg_free(c);
		return NULL;
	}
	return c;
}

/* newaliases: each indexed alias_database table, postalias semantics. */
static int sm_newaliases(const struct cfg *c)
{
	struct cfg_list maps = {NULL, 0};
	struct buf err = BUF_INIT, path = BUF_INIT;
	int status = 0;

	if (cfg_get_list(c, NULL, "alias_database", &maps, &err) < 0)
		return sm_fatal(SM_EX_USAGE, "%s", err.data);
	for (size_t i = 0; i < maps.count; i++) {
		const char *spec = maps.items[i], *colon = strchr(spec, ':');
		const char *file = colon ? colon + 1 : spec;
		if (colon && strncmp(spec, "hash:", 5) != 0 && strncmp(spec, "cdb:", 4) != 0) {
			fprintf(stderr, "%s: warning: %s: not an indexed table; skipped\n",
				sm_progname, spec);
			continue;
		}
		buf_reset(&path);
		if (*file != '/')
			buf_printf(&path, "%s/", cfg_dir(c));
		buf_puts(&path, file);
		buf_reset(&err);
		if (table_cdb_build_aliases(path.data, &err) < 0)
			status = sm_fatal(SM_EX_CANTCREAT, "%s", err.data);
	}
	cfg_list_free(&maps);
	buf_free(&err);
	buf_free(&path);
	return status;
}

/* The full name: -F, else $NAME, else the password file's GECOS field
 * up to the first comma, "&" standing for the capitalised login. */
static void sm_fullname(const struct sm_opts *o, const struct passwd *pw, struct buf *out)
{
	const char *name = o->fullname ? o->fullname : getenv("NAME");

	if (name) {
		buf_puts(out, name);
		return;
	}
	if (pw == NULL || pw->pw_gecos == NULL)
		return;
	for (const char *p = pw->pw_gecos; *p && *p != ','; p++) {
		if (*p != '&') {
			buf_putc(out, *p);
			continue;
		}
		for (const char *l = pw->pw_name; *l; l++)
			buf_putc(out, l == pw->pw_name && *l >= 'a' && *l <= 'z' ? *l - 32 : *l);
	}
}

/* The envelope sender: -f (with or without <>; "<>" is the null
 * sender), else the login name of the real user. */
static int sm_sender(const struct sm_opts *o, const struct passwd *pw, struct buf *out)
{
	const char *s = o->sender;

	if (s == NULL) {
		if (pw == NULL)
			return sm_fatal(SM_EX_NOUSER, "unable to find out your user name");
		buf_puts(out, pw->pw_name);
		return 0;
	}
	if (*s == '<' && s[strlen(s) - 1] == '>')
		buf_append(out, s + 1, strlen(s) - 2);
	else
		buf_puts(out, s);
	return 0;
}

static int sm_rcpt_collect(const struct sm_opts *o, struct sm_msg *m, int argc, char **argv,
			   struct sm_list *rcpt)
{
	for (int i = 0; i < argc; i++)
		sm_addr_list_parse(argv[i], rcpt);
	if (o->extract)
		sm_msg_extract_rcpt(m, rcpt);
	if (rcpt->n == 0)
		return sm_fatal(SM_EX_USAGE, o->extract
						 ? "No recipient addresses found in message header"
						 : "Recipient addresses must be specified on the "
						   "command line or via the -t option");
	for (size_t i = 0; i < rcpt->n; i++)
		if (!sm_drop_addr_ok(rcpt->v[i]))
			return sm_fatal(SM_EX_DATAERR, "bad recipient address syntax: %s",
					rcpt->v[i]);
	return 0;
}

static int sm_env_load(const struct cfg *c, struct sm_env *e, struct buf *err)
{
	if (cfg_get_path(c, NULL, "queue_directory", &e->queue_dir, err) < 0 ||
	    cfg_get_str(c, NULL, "myhostname", &e->hostname, err) < 0 ||
	    cfg_get_str(c, NULL, "myorigin", &e->origin, err) < 0 ||
	    cfg_get_str(c, NULL, "mail_owner", &e->owner, err) < 0 ||
	    cfg_get_str(c, NULL, "smtpd_banner", &e->banner, err) < 0 ||
	    cfg_get_str(c, NULL, "mail_name", &e->mail_name, err) < 0 ||
	    cfg_get_size(c, NULL, "message_size_limit", &e->size_limit, err) < 0 ||
	    cfg_get_int(c, NULL, "line_length_limit", &e->line_limit, err) < 0 ||
	    cfg_get_int(c, NULL, "smtpd_recipient_limit", &e->rcpt_limit, err) < 0 ||
	    cfg_get_int(c, NULL, "smtpd_hard_error_limit", &e->error_limit, err) < 0)
		return -1;
	buf_puts(&e->queue_dir, "/" PICKUP_MAILDROP_DIR);
	return 0;
}

static void sm_env_free(struct sm_env *e)
{
	buf_free(&e->queue_dir);
	buf_free(&e->hostname);
	buf_free(&e->origin);
	buf_free(&e->owner);
	buf_free(&e->banner);
	buf_free(&e->mail_name);
}

/* Read, complete and drop the message. */
static int sm_submit(const struct sm_opts *o, const struct sm_env *e, int argc, char **argv)
{
	struct sm_read_opts ro = {o->dot_ends, (size_t)e->size_limit, o->extract};
	struct sm_msg m = {NULL, 0, 0, BUF_INIT, 0, 0};
	struct sm_list rcpt = {NULL, 0, 0};
	struct buf sender = BUF_INIT, full = BUF_INIT, err = BUF_INIT;
	struct passwd *pw = getpwuid(getuid());
	int rc;

	buf_init(&sender);
	buf_init(&full);
	if ((rc = sm_sender(o, pw, &sender)) != 0)
		goto out;
	if (*sender.data && !sm_drop_addr_ok(sender.data)) {
		rc = sm_fatal(SM_EX_DATAERR, "bad sender address syntax: %s", sender.data);
		goto out;
	}
	sm_fullname(o, pw, &full);
	if ((rc = sm_msg_read(&m, stdin, &ro, &err)) != 0) {
		rc = sm_fatal(rc, "%s", err.data);
		goto out;
	}
	if ((rc = sm_rcpt_collect(o, &m, argc, argv, &rcpt)) != 0)
		goto out;
	if (sm_drop_message(e, sender.data, full.data, &rcpt, &m, &err) < 0)
		rc = sm_fatal(SM_EX_TEMPFAIL, "%s", err.data);
out:
	sm_msg_free(&m);
	sm_list_free(&rcpt);
	buf_free(&sender);
	buf_free(&full);
	buf_free(&err);
	return rc;
}

/* Postfix's stand-alone smtpd refuses mail from the network (2.3 and
 * later), and so does -bs: it makes no access checks and lets the client
 * set any sender, so a -bs behind inetd or a socket unit would be an
 * open relay. A pipe, a tty or a UNIX-domain socket is a local client. */
static int sm_stdin_is_network(void)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(0, (struct sockaddr *)&ss, &len) < 0)
		return 0;
	return ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
}

/* -bs: recipients come with RCPT TO; -f, -t and -i mean nothing in SMTP. */
static int sm_smtp(const struct sm_opts *o, const struct sm_env *e, int argc)
{
	struct buf full = BUF_INIT;
	int rc;

	if (argc > 0)
		return sm_fatal(SM_EX_USAGE, "-bs takes no recipients: they are given "
					     "with RCPT TO");
	if (sm_stdin_is_network())
		return sm_fatal(SM_EX_USAGE,
				"-bs does not receive mail from the network "
				"(standard input is a TCP socket); that is ternd's job");
	buf_init(&full);
	sm_fullname(o, getpwuid(getuid()), &full);
	rc = sm_smtp_run(e, full.data, 0, stdout);
	buf_free(&full);
	return rc;
}

static int sm_run(const struct sm_opts *o, int argc, char **argv)
{
	struct sm_env e = {BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT, 0, 0, 0, 0};
	struct buf err = BUF_INIT;
	struct cfg *c = sm_config(o, &err);
	int rc;

	if (c == NULL) {
		rc = sm_fatal(SM_EX_TEMPFAIL, "%s", err.data);
	} else if (o->mode == SM_MODE_NEWALIASES) {
		rc = sm_newaliases(c);
	} else if (sm_env_load(c, &e, &err) < 0) {
		rc = sm_fatal(SM_EX_TEMPFAIL, "%s", err.data);
	} else if (o->mode == SM_MODE_SMTP) {
		rc = sm_smtp(o, &e, argc);
	} else {
		rc = sm_submit(o, &e, argc, argv);
	}
	sm_env_free(&e);
	buf_free(&err);
	if (c)
		cfg_free(c);
	return rc;
}

int main(int argc, char **argv)
{
	struct sm_opts o = {SM_MODE_SEND, NULL, NULL, NULL, 0, 1};
	const char *base = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	int rc;

	if (strcmp(base, "mailq") == 0)
		o.mode = SM_MODE_MAILQ;
	else if (strcmp(base, "newaliases") == 0)
		o.mode = SM_MODE_NEWALIASES;
	sm_progname = o.mode == SM_MODE_SEND ? "sendmail" : base;
	log_open(sm_progname);
	log_to_cli(sm_progname);
	if ((rc = sm_opts_parse(&o, argc, argv)) != 0)
		return rc;
	if (o.mode == SM_MODE_MAILQ)
		return sm_run_tern(&o, "queue", "list");
	if (o.mode == SM_MODE_FLUSH)
		return sm_run_tern(&o, "flush", NULL);
	return sm_run(&o, argc - optind, argv + optind);
}
