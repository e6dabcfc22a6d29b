/* test_log.c - the exact Postfix-compatible line format of shared/log.c,
 * on stderr and in a log file (pflogsumm and admins' greps depend on it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

static char *slurp(const char *path)
{
	struct buf b = BUF_INIT;
	char chunk[512];
	ssize_t n;
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		buf_append(&b, chunk, (size_t)n);
	close(fd);
	return buf_detach(&b);
}

static void test_log_stderr_format(void **state)
{
	char path[] = "/tmp/tern-log-XXXXXX", expect[256];
	int fd = mkstemp(path), saved = dup(2);
	dup2(fd, 2);
	log_open("smtpd");
	log_to_stderr();
	msg_info("connect from %s", "localhost[127.0.0.1]");
	msg_warn("bad %d", 1);
	msg_error("worse");
	msg_qid("B27928276DA1", "client=%s", "x[1.2.3.4]");
	msg_qid(NULL, "reject: %s", "RCPT");
	msg_debug("invisible unless verbose");
	dup2(saved, 2);
	close(saved);
	close(fd);
	char *got = slurp(path);
	long pid = (long)getpid();
	snprintf(expect, sizeof(expect),
		 "tern/smtpd[%ld]: connect from localhost[127.0.0.1]\n"
		 "tern/smtpd[%ld]: warning: bad 1\n"
		 "tern/smtpd[%ld]: error: worse\n"
		 "tern/smtpd[%ld]: B27928276DA1: client=x[1.2.3.4]\n"
		 "tern/smtpd[%ld]: NOQUEUE: reject: RCPT\n",
		 pid, pid, pid, pid, pid);
	assert_string_equal(got, expect);
	assert_string_equal(log_service(), "smtpd");
	free(got);
	unlink(path);
}

static void test_log_file_has_syslog_prefix(void **state)
{
	char path[] = "/tmp/tern-logf-XXXXXX", tail[128];
	int fd = mkstemp(path);
	close(fd);
	log_open("policyd");
	assert_int_equal(log_to_file(path), 0);
	msg_info("hello");
	log_to_stderr();
	char *got = slurp(path);
	/* "Mmm dd hh:mm:ss host tern/policyd[pid]: hello" */
	snprintf(tail, sizeof(tail), " tern/policyd[%ld]: hello\n", (long)getpid());
	assert_non_null(strstr(got, tail));
	assert_int_equal(got[3], ' ');
	assert_int_equal(got[9], ':');
	free(got);
	unlink(path);
	assert_int_equal(log_to_file("/nonexistent-dir/x.log"), -1);
	assert_int_equal(log_to_syslog("nosuchfacility"), -1);
}

/* Batched lines: nothing until the flush, then all of them in order,
 * each whole; msg_info_text gives the same line as msg_info. */
static void test_log_batch(void **state)
{
	char path[] = "/tmp/tern-logb-XXXXXX", expect[512];
	int fd = mkstemp(path);
	long pid = (long)getpid();
	close(fd);
	log_open("policyd");
	assert_int_equal(log_to_file(path), 0);
	log_batch_begin();
	msg_info("one %d", 1);
	msg_warn("two");
	msg_info_text("three and more", 5);
	char *got = slurp(path);
	assert_string_equal(got, "");
	free(got);
	log_batch_flush();
	got = slurp(path);
	snprintf(expect, sizeof(expect),
		 " tern/policyd[%ld]: one 1\n", pid);
	assert_non_null(strstr(got, expect));
	snprintf(expect, sizeof(expect), " tern/policyd[%ld]: warning: two\n", pid);
	assert_non_null(strstr(got, expect));
	snprintf(expect, sizeof(expect), " tern/policyd[%ld]: three\n", pid);
	assert_non_null(strstr(got, expect));
	assert_true(strstr(got, "one 1") < strstr(got, "warning: two"));
	free(got);
	/* a full batch goes out by itself; the end flushes the rest */
	for (int i = 0; i < 100; i++)
		msg_info("line %03d", i);
	got = slurp(path);
	assert_non_null(strstr(got, "line 063\n"));
	assert_null(strstr(got, "line 064"));
	free(got);
	log_batch_end();
	got = slurp(path);
	assert_non_null(strstr(got, "line 099\n"));
	free(got);
	/* no batch: at once */
	msg_info("after");
	got = slurp(path);
	assert_non_null(strstr(got, "after\n"));
	free(got);
	log_to_stderr();
	unlink(path);
}

static void test_log_cli_format(void **state)
{
	char path[] = "/tmp/tern-logc-XXXXXX";
	int fd = mkstemp(path), saved = dup(2);
	dup2(fd, 2);
	log_to_cli("tern");
	msg_warn("%s, line %d: bad", "/x/y", 3);
	msg_info("plain");
	dup2(saved, 2);
	close(saved);
	close(fd);
	log_to_stderr();
	char *got = slurp(path);
	assert_string_equal(got, "tern: warning: /x/y, line 3: bad\ntern: plain\n");
	free(got);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_log_stderr_format),
	    cmocka_unit_test(test_log_file_has_syslog_prefix),
	    cmocka_unit_test(test_log_cli_format),
	    cmocka_unit_test(test_log_batch),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
