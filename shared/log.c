/* log.c - Postfix-style log lines to stderr, syslog or a file (see log.h).
 *
 * The line is formatted into a private buffer first and emitted with one
 * write(2) (or one syslog(3) call): concurrent threads never interleave.
 */
#define _GNU_SOURCE /* sendmmsg */
#include "log.h"
#include "buf.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

enum log_dest { LOG_DEST_STDERR, LOG_DEST_SYSLOG, LOG_DEST_FILE, LOG_DEST_CLI };

static char log_name[64] = "tern/tern";
static __thread const char *log_thread_svc; /* static strings only */
static int log_facility = LOG_MAIL;
static char log_cli_name[64] = "tern";
static enum log_dest log_dest = LOG_DEST_STDERR;
static int log_fd = 2;
int msg_verbose;

/* The PID and host name in every line, looked up once (a busy server logs
 * several lines per message); a forked child looks its PID up again. */
static pid_t log_pid;
static char log_host[256];
static pthread_once_t log_atfork_once = PTHREAD_ONCE_INIT;

static void log_child(void)
{
	log_pid = 0;
}

static void log_atfork(void)
{
	pthread_atfork(NULL, NULL, log_child);
}

static long log_getpid(void)
{
	if (log_pid == 0) {
		pthread_once(&log_atfork_once, log_atfork);
		log_pid = getpid();
	}
	return (long)log_pid;
}

/* "Mmm dd hh:mm:ss" of now, formatted once per second per thread */
static const char *log_stamp(void)
{
	static __thread time_t last = -1;
	static __thread char stamp[32];
	time_t now = time(NULL);

	if (now != last) {
		struct tm tm;
		localtime_r(&now, &tm);
		strftime(stamp, sizeof(stamp), "%b %e %H:%M:%S", &tm);
		last = now;
	}
	return stamp;
}

static const char *log_hostname(void)
{
	if (log_host[0] == 0) {
		char host[sizeof(log_host)], *dot;
		if (gethostname(host, sizeof(host)) != 0)
			strcpy(host, "localhost");
		host[sizeof(host) - 1] = 0;
		if ((dot = strchr(host, '.')) != NULL)
			*dot = 0;
		memcpy(log_host, host, sizeof(host)); /* same value from any thread */
	}
	return log_host;
}

static const struct {
	const char *name;
	int facility;
} log_facilities[] = {
    {"mail", LOG_MAIL},	    {"daemon", LOG_DAEMON}, {"user", LOG_USER},	    {"local0", LOG_LOCAL0},
    {"local1", LOG_LOCAL1}, {"local2", LOG_LOCAL2}, {"local3", LOG_LOCAL3}, {"local4", LOG_LOCAL4},
    {"local5", LOG_LOCAL5}, {"local6", LOG_LOCAL6}, {"local7", LOG_LOCAL7},
};

void log_open(const char *service)
{
	snprintf(log_name, sizeof(log_name), "tern/%s", service);
}

const char *log_service(void)
{
	return log_thread_svc ? log_thread_svc : log_name + 5;
}

void log_thread_service(const char *service)
{
	log_thread_svc = service;
}

const char *log_swap_service(const char *service)
{
	const char *prev = log_thread_svc;
	log_thread_svc = service;
	return prev;
}

int log_to_syslog(const char *facility)
{
	int fac = -1;
	for (size_t i = 0; i < sizeof(log_facilities) / sizeof(log_facilities[0]); i++)
		if (strcasecmp(facility ? facility : "mail", log_facilities[i].name) == 0)
			fac = log_facilities[i].facility;
	if (fac < 0)
		return -1;
	log_facility = fac;
	log_dest = LOG_DEST_SYSLOG;
	return 0;
}

int log_to_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	if (log_dest == LOG_DEST_FILE && log_fd > 2)
		close(log_fd);
	log_fd = fd;
	log_dest = LOG_DEST_FILE;
	return 0;
}

/* Command-line tools write "tern: warning: text" as postmap/postconf do:
 * the admin reading a terminal wants the command, not a syslog tag. */
void log_to_cli(const char *progname)
{
	snprintf(log_cli_name, sizeof(log_cli_name), "%s", progname);
	log_to_stderr();
	log_dest = LOG_DEST_CLI;
}

void log_to_stderr(void)
{
	if (log_dest == LOG_DEST_FILE && log_fd > 2)
		close(log_fd);
	log_fd = 2;
	log_dest = LOG_DEST_STDERR;
}

int log_descriptor(void)
{
	return log_dest == LOG_DEST_SYSLOG ? -1 : log_fd;
}

void log_set_verbose(int level)
{
	msg_verbose = level;
}

/* A thread's batch (log_batch_begin): whole lines, or whole datagrams
 * for syslog, with where each ends. */
#define LOG_BATCH_LINES 64
#define LOG_BATCH_BYTES 32768
static __thread struct {
	int on;
	int n;
	struct buf text;
	size_t ends[LOG_BATCH_LINES];
} log_batch;

/* The thread's /dev/log socket, connected on first use. */
static __thread int log_syslog_fd = -1;

static int log_syslog_socket(void)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	if (log_syslog_fd >= 0)
		return log_syslog_fd;
	strcpy(sun.sun_path, "/dev/log");
	if ((log_syslog_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) >= 0 &&
	    connect(log_syslog_fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		close(log_syslog_fd);
		log_syslog_fd = -1;
	}
	return log_syslog_fd;
}

/* Send n datagrams (the batch's, or one) with one sendmmsg(2); on an
 * error (syslogd restarted) reconnect once and send what is left. */
static void log_syslog_sendv(const char *text, const size_t *ends, int n)
{
	struct mmsghdr msgs[LOG_BATCH_LINES];
	struct iovec iov[LOG_BATCH_LINES];
	int done = 0;

	for (int i = 0; i < n; i++) {
		size_t from = i ? ends[i - 1] : 0;
		iov[i].iov_base = (char *)text + from;
		iov[i].iov_len = ends[i] - from;
		memset(&msgs[i], 0, sizeof(msgs[i]));
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	for (int attempt = 0; attempt < 2 && done < n; attempt++) {
		int fd = log_syslog_socket(), sent;
		if (fd < 0)
			break;
		while (done < n && (sent = sendmmsg(fd, msgs + done, (unsigned)(n - done),
						    MSG_NOSIGNAL)) > 0)
			done += sent;
		if (done < n) {
			close(fd);
			log_syslog_fd = -1;
		}
	}
}

static void log_write_out(const char *text, size_t len)
{
	/* A short write to a log is not worth retrying. */
	if (write(log_fd, text, len) < 0)
		(void)0;
}

void log_batch_flush(void)
{
	if (log_batch.n == 0)
		return;
	if (log_dest == LOG_DEST_SYSLOG)
		log_syslog_sendv(log_batch.text.data, log_batch.ends, log_batch.n);
	else
		log_write_out(log_batch.text.data, log_batch.text.len);
	buf_reset(&log_batch.text);
	log_batch.n = 0;
}

void log_batch_begin(void)
{
	log_batch.on = 1;
}

void log_batch_end(void)
{
	log_batch_flush();
	log_batch.on = 0;
	buf_free(&log_batch.text);
}

/* One finished line or datagram: into the batch, or out now. */
static void log_out(int prio, const struct buf *line)
{
	if (!log_batch.on || prio <= LOG_CRIT) {
		log_batch_flush(); /* keep the order */
		if (log_dest == LOG_DEST_SYSLOG) {
			size_t end = line->len;
			log_syslog_sendv(line->data, &end, 1);
		} else {
			log_write_out(line->data, line->len);
		}
		return;
	}
	buf_append(&log_batch.text, line->data, line->len);
	log_batch.ends[log_batch.n++] = log_batch.text.len;
	if (log_batch.n == LOG_BATCH_LINES || log_batch.text.len >= LOG_BATCH_BYTES)
		log_batch_flush();
}

/* The start of a line: "<PRI>stamp " (syslog) or "stamp host " (file),
 * then "tern/service[pid]: prefix" ("progname: prefix" for tools). Built
 * without printf: a busy policy server logs a line per request. */
static void log_head(struct buf *line, int prio, const char *prefix)
{
	if (log_dest == LOG_DEST_SYSLOG) {
		buf_printf(line, "<%d>", log_facility | prio);
		buf_puts(line, log_stamp());
		buf_putc(line, ' ');
	} else if (log_dest == LOG_DEST_FILE) {
		buf_puts(line, log_stamp());
		buf_putc(line, ' ');
		buf_puts(line, log_hostname());
		buf_putc(line, ' ');
	}
	if (log_dest == LOG_DEST_CLI) {
		buf_puts(line, log_cli_name);
		buf_puts(line, ": ");
		buf_puts(line, prefix);
		return;
	}
	buf_puts(line, "tern/");
	buf_puts(line, log_service());
	buf_putc(line, '[');
	buf_put_ll(line, log_getpid());
	buf_puts(line, "]: ");
	buf_puts(line, prefix);
}

/* The thread's line buffer, kept between lines, freed when the thread
 * ends (a pthread key's destructor: the memory of a thread that is gone
 * would otherwise be a leak). */
static __thread struct buf log_line;
static pthread_key_t log_key;
static pthread_once_t log_key_once = PTHREAD_ONCE_INIT;

static void log_thread_end(void *arg)
{
	(void)arg;
	log_batch_flush();
	buf_free(&log_batch.text);
	buf_free(&log_line);
}

static void log_key_make(void)
{
	(void)pthread_key_create(&log_key, log_thread_end);
}

static struct buf *log_line_buf(void)
{
	if (log_line.data == NULL) {
		pthread_once(&log_key_once, log_key_make);
		(void)pthread_setspecific(log_key, &log_line);
	}
	buf_reset(&log_line);
	return &log_line;
}

static void log_finish(int prio, struct buf *line)
{
	if (log_dest != LOG_DEST_SYSLOG)
		buf_putc(line, '\n');
	log_out(prio, line);
	if (line->cap > 65536) /* one huge line must not stay allocated */
		buf_free(line);
}

/* syslog(3) fixes the tag at openlog(); Tern's tag changes per thread
 * (log_thread_service), so the datagram is built here: RFC 3164 form,
 * "<PRI>Mmm dd hh:mm:ss tern/smtpd[pid]: text", to /dev/log. */
static void log_emit(int prio, const char *prefix, const char *fmt, va_list ap)
{
	int saved_errno = errno;
	struct buf *line = log_line_buf();

	log_head(line, prio, prefix);
	buf_vprintf(line, fmt, ap);
	log_finish(prio, line);
	errno = saved_errno;
}

void msg_info_text(const char *text, size_t len)
{
	int saved_errno = errno;
	struct buf *line = log_line_buf();

	log_head(line, LOG_INFO, "");
	buf_append(line, text, len);
	log_finish(LOG_INFO, line);
	errno = saved_errno;
}

void msg_info(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_emit(LOG_INFO, "", fmt, ap);
	va_end(ap);
}

void msg_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_emit(LOG_WARNING, "warning: ", fmt, ap);
	va_end(ap);
}

void msg_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_emit(LOG_ERR, "error: ", fmt, ap);
	va_end(ap);
}

void msg_fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_emit(LOG_CRIT, "fatal: ", fmt, ap);
	va_end(ap);
	exit(1);
}

void msg_debug(const char *fmt, ...)
{
	va_list ap;
	if (!msg_verbose)
		return;
	va_start(ap, fmt);
	log_emit(LOG_DEBUG, "", fmt, ap);
	va_end(ap);
}

void msg_qid(const char *qid, const char *fmt, ...)
{
	char prefix[64];
	va_list ap;
	snprintf(prefix, sizeof(prefix), "%.40s: ", qid && *qid ? qid : "NOQUEUE");
	va_start(ap, fmt);
	log_emit(LOG_INFO, prefix, fmt, ap);
	va_end(ap);
}
