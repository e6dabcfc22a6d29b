/* test_ternd_maildir.c - the maildir writer and the mbox appender
 * (mta/ternd/deliver_maildir.c, deliver_local.c): the message lands
 * complete in new/ with headers first, tmp/ is left empty, names are
 * unique across threads, errors are reported (temporary) instead of
 * leaving partial files, and mbox gets "From " lines, >From quoting and
 * no stale lock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../mta/ternd/deliver.h"

static char root[] = "/tmp/test_maildir_XXXXXX";

/* dir_list - names in dir (not . and ..), count returned. */
static int dir_list(const char *dir, char names[][256], int max)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (n < max)
			snprintf(names[n], 256, "%s", e->d_name);
		n++;
	}
	closedir(d);
	return n;
}

static void read_file(const char *path, struct buf *out)
{
	FILE *fp = fopen(path, "r");
	char tmp[4096];
	size_t n;

	assert_non_null(fp);
	while ((n = fread(tmp, 1, sizeof(tmp), fp)) > 0)
		buf_append(out, tmp, n);
	fclose(fp);
}

static void test_write_complete(void **state)
{
	char dir[512], sub[1024], names[4][256];
	struct buf err = BUF_INIT, got = BUF_INIT;
	const char *msg = "Subject: hi\n\nbody line\n";
	int temp = 0;

	snprintf(dir, sizeof(dir), "%s/a/b/Maildir/", root);
	assert_int_equal(
	    deliver_maildir_write(dir, "Delivered-To: joe@x\n", msg, strlen(msg), &err, &temp), 0);
	snprintf(sub, sizeof(sub), "%s/new", dir);
	assert_int_equal(dir_list(sub, names, 4), 1);
	snprintf(sub, sizeof(sub), "%s/tmp", dir);
	assert_int_equal(dir_list(sub, names, 4), 0); /* nothing left behind */
	snprintf(sub, sizeof(sub), "%s/cur", dir);
	assert_int_equal(dir_list(sub, names, 4), 0);
	snprintf(sub, sizeof(sub), "%s/new", dir);
	dir_list(sub, names, 4);
	snprintf(sub, sizeof(sub), "%s/new/%s", dir, names[0]);
	read_file(sub, &got);
	assert_string_equal(buf_str(&got), "Delivered-To: joe@x\nSubject: hi\n\nbody line\n");
	buf_free(&err);
	buf_free(&got);
}

struct writer_arg {
	const char *dir;
	int fails;
};

static void *writer(void *p)
{
	struct writer_arg *a = p;
	struct buf err = BUF_INIT;
	int temp;

	for (int i = 0; i < 50; i++)
		if (deliver_maildir_write(a->dir, "", "x\n", 2, &err, &temp) != 0)
			a->fails++;
	buf_free(&err);
	return NULL;
}

/* Four threads, 50 messages each, same millisecond: 200 distinct files. */
static void test_unique_names(void **state)
{
	char dir[512], sub[600];
	static char names[256][256];
	pthread_t t[4];
	struct writer_arg a[4];

	snprintf(dir, sizeof(dir), "%s/uniq", root);
	for (int i = 0; i < 4; i++) {
		a[i].dir = dir;
		a[i].fails = 0;
		pthread_create(&t[i], NULL, writer, &a[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].fails, 0);
	}
	snprintf(sub, sizeof(sub), "%s/new", dir);
	assert_int_equal(dir_list(sub, names, 256), 200);
	for (int i = 0; i < 200; i++)
		for (int j = i + 1; j < 200; j++)
			assert_string_not_equal(names[i], names[j]);
}

/* A maildir that cannot be created (a file is in the way): temporary
 * error naming the path, and nothing written anywhere. */
static void test_error_is_temporary(void **state)
{
	char file[512], dir[600];
	struct buf err = BUF_INIT;
	FILE *fp;
	int temp = 0;

	snprintf(file, sizeof(file), "%s/blocker", root);
	fp = fopen(file, "w");
	assert_non_null(fp);
	fclose(fp);
	snprintf(dir, sizeof(dir), "%s/Maildir/", file);
	assert_int_equal(deliver_maildir_write(dir, "", "x\n", 2, &err, &temp), -1);
	assert_int_equal(temp, 1);
	assert_non_null(strstr(buf_str(&err), "blocker"));
	buf_free(&err);
}

static void test_mbox(void **state)
{
	char path[512], lock[600];
	struct buf err = BUF_INIT, got = BUF_INIT;
	const char *msg = "Subject: s\n\nFrom me\nFromage\n";
	int temp = 0;

	snprintf(path, sizeof(path), "%s/mbox", root);
	snprintf(lock, sizeof(lock), "%s.lock", path);
	assert_int_equal(deliver_mbox_write(path, "a@b", "X-H: 1\n", msg, strlen(msg), &err, &temp),
			 0);
	assert_int_equal(deliver_mbox_write(path, "", "", "no newline", 10, &err, &temp), 0);
	read_file(path, &got);
	assert_true(strncmp(buf_str(&got), "From a@b  ", 10) == 0);
	assert_non_null(strstr(
	    buf_str(&got), "\nX-H: 1\nSubject: s\n\n>From me\nFromage\n\nFrom MAILER-DAEMON  "));
	assert_non_null(strstr(buf_str(&got), "\nno newline\n\n"));
	assert_int_equal(access(lock, F_OK), -1);
	buf_free(&err);
	buf_free(&got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_write_complete),
	    cmocka_unit_test(test_unique_names),
	    cmocka_unit_test(test_error_is_temporary),
	    cmocka_unit_test(test_mbox),
	};
	char cmd[600];
	int rc;

	if (mkdtemp(root) == NULL)
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	if (system(cmd) != 0)
		rc = 1;
	return rc;
}
