/* log.h - Postfix-compatible logging for every Tern program.
 *
 * Lines read "tern/<service>[<pid>]: <text>", with "warning: ", "error: ",
 * "fatal: " prefixes, exactly like Postfix's "postfix/<service>[pid]:"
 * lines, so pflogsumm (--syslog-name=tern) and admins' greps carry over.
 * Destinations: stderr (the default, for foreground runs and tools),
 * syslog (facility mail unless told otherwise), or an append-only file
 * whose lines carry a syslog-style "Mmm dd hh:mm:ss host" prefix, or,
 * for command-line tools, "tern: warning: ..." on stderr (log_to_cli).
 * Each line is written with one write(2), so threads do not interleave.
 * An event loop that answers many requests per turn may batch: between
 * log_batch_begin() and log_batch_end() the calling thread's lines are
 * collected and written by log_batch_flush() (at the end of each turn)
 * with one write(2), or one sendmmsg(2) of one datagram per line for
 * syslog; lines stay whole and in order, fatal lines go out at once.
 * msg_fatal() logs and exits with status 1; never call it on input that
 * came from outside the process (return an error instead).
 */
#ifndef TERN_LOG_H
#define TERN_LOG_H

#include <stdarg.h>
#include <stddef.h>

void log_open(const char *service);
/* ternd is one process doing the work of Postfix's smtpd, cleanup, qmgr,
 * local, virtual, pickup...: each thread (or a stretch of code) logs
 * under the name of the component it acts as, so "tern/smtpd[pid]:" and
 * "tern/qmgr[pid]:" lines look like Postfix's and pflogsumm
 * (--syslog-name=tern) counts them. NULL goes back to the process name.
 * log_swap_service() returns the previous name, for restoring. */
void log_thread_service(const char *service);
const char *log_swap_service(const char *service);
const char *log_service(void);
int log_to_syslog(const char *facility);
int log_to_file(const char *path);
/* A daemon's log destination from its settings: stderr when foreground,
 * else maillog_file if set, else syslog at syslog_facility (log_setup.c). */
struct cfg;
struct buf;
int log_setup(const struct cfg *cfg, int foreground, struct buf *err);
void log_to_stderr(void);
void log_to_cli(const char *progname);
void log_set_verbose(int level);
/* The descriptor log lines are written to (stderr or the log file), or
 * -1 for syslog: a forked helper that closes its inherited descriptors
 * keeps this one. */
int log_descriptor(void);
extern int msg_verbose;
void log_batch_begin(void);
void log_batch_flush(void);
void log_batch_end(void);

void msg_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void msg_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void msg_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void msg_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void msg_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* msg_info of text that is already formatted (no printf on a hot path). */
void msg_info_text(const char *text, size_t len);

/* "QUEUEID: text", Postfix's per-message line; qid NULL gives "NOQUEUE". */
void msg_qid(const char *qid, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
