/* test_fileio.c - durable-file helpers (shared/fileio.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"

static void test_fileio_write_all_and_sync(void **state)
{
	char dir[] = "/tmp/tern-fileio-XXXXXX", path[64], big[100000];
	struct stat st;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/f", dir);
	int fd = open(path, O_WRONLY | O_CREAT, 0600);
	memset(big, 'x', sizeof(big));
	assert_int_equal(fileio_write_all(fd, big, sizeof(big)), 0);
	close(fd);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, sizeof(big));
	assert_int_equal(fileio_sync_dir(dir), 0);
	assert_int_equal(fileio_sync_parent(path), 0);
	assert_int_equal(fileio_sync_dir("/nonexistent-tern"), -1);
	assert_int_equal(fileio_write_all(-1, "x", 1), -1);
	unlink(path);
	rmdir(dir);
}

static void test_fileio_flag(void **state)
{
	char dir[] = "/tmp/tern-flag-XXXXXX", path[64];
	struct buf err = BUF_INIT;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/delivery.paused", dir);
	assert_int_equal(fileio_flag_set(path, 1, &err), 0);
	assert_int_equal(access(path, F_OK), 0);
	assert_int_equal(fileio_flag_set(path, 1, &err), 0); /* idempotent */
	assert_int_equal(fileio_flag_set(path, 0, &err), 0);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(fileio_flag_set(path, 0, &err), 0); /* already gone */
	rmdir(dir);
	assert_int_equal(fileio_flag_set("/nonexistent-tern/x", 1, &err), -1);
	assert_non_null(strstr(buf_str(&err), "create /nonexistent-tern/x"));
	buf_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fileio_write_all_and_sync),
	    cmocka_unit_test(test_fileio_flag),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
