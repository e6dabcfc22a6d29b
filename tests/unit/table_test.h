/* table_test.h - scaffolding shared by the table unit tests (test_table*.c):
 * write a table's file, open a table or fail the test, answer a lookup as one
 * string ("value", "NOTFOUND" or "ERROR: message") and assert on it, and
 * capture the log in a temporary file to check the warnings a table logs.
 * Header-only: every helper is static inline, so a test takes what it uses. */
#ifndef TERN_TABLE_TEST_H
#define TERN_TABLE_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "table.h"

/* The table file query_file() writes and the file the log goes to: made by
 * table_test_setup(), removed by table_test_teardown(). */
static char table_path[] = "/tmp/table_test.XXXXXX";
static char log_path[] = "/tmp/table_test_log.XXXXXX";

static inline void write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

/* The warnings logged since the last call. */
static inline char *take_log(void)
{
	struct buf b = BUF_INIT;
	char chunk[512];
	size_t n;
	FILE *fp = fopen(log_path, "r");

	assert_non_null(fp);
	while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
		buf_append(&b, chunk, n);
	fclose(fp);
	assert_int_equal(truncate(log_path, 0), 0);
	buf_puts(&b, "");
	return buf_detach(&b);
}

/* The table spec opens, or the test fails. */
static inline struct table *open_ok(const char *spec)
{
	struct buf err = BUF_INIT;
	struct table *t = table_open(spec, &err);
	if (t == NULL)
		fail_msg("table_open(%s): %s", spec, buf_str(&err));
	buf_free(&err);
	return t;
}

/* Look key up in t: the value, "NOTFOUND" or "ERROR: message". */
static inline char *answer(struct table *t, const char *key)
{
	struct buf err = BUF_INIT, value = BUF_INIT;
	char *out;

	switch (table_lookup(t, key, &value, &err)) {
	case TABLE_FOUND:
		out = buf_detach(&value);
		break;
	case TABLE_NOTFOUND:
		out = xstrdup("NOTFOUND");
		break;
	default:
		buf_reset(&value);
		buf_printf(&value, "ERROR: %s", buf_str(&err));
		out = buf_detach(&value);
	}
	buf_free(&err);
	buf_free(&value);
	return out;
}

/* Open spec (or fail the test), answer key, close. */
static inline char *query_spec(const char *spec, const char *key)
{
	struct table *t = open_ok(spec);
	char *out = answer(t, key);

	table_close(t);
	return out;
}

/* Look key up in a type table ("pcre", "regexp") made of text. */
static inline char *query_file(const char *type, const char *text, const char *key)
{
	struct buf spec = BUF_INIT;
	char *out;

	write_file(table_path, text);
	buf_printf(&spec, "%s:%s", type, table_path);
	out = query_spec(buf_str(&spec), key);
	buf_free(&spec);
	return out;
}

/* got (an answer, freed here) must be want; a want that begins "ERROR" need
 * only begin the answer. text and key name the query when it fails. */
#define assert_answer(got, text, key, want)                                                        \
	do {                                                                                       \
		char *got_ = (got);                                                                \
		if (strncmp(got_, want, strlen(want)) != 0 ||                                      \
		    (strncmp(want, "ERROR", 5) != 0 && strcmp(got_, want) != 0))                   \
			fail_msg("[%s] key \"%s\": got \"%s\", want \"%s\"", text, key, got_,      \
				 want);                                                            \
		free(got_);                                                                        \
	} while (0)

#define assert_logged(needle)                                                                      \
	do {                                                                                       \
		char *log_ = take_log();                                                           \
		if (strstr(log_, needle) == NULL)                                                  \
			fail_msg("log lacks \"%s\": %s", needle, log_);                            \
		free(log_);                                                                        \
	} while (0)

/* A rule table (pcre, regexp) with the broken rule and then "/a|b/ fallback"
 * skips the rule, logging warning (in a line naming the "<type> map" when
 * map_named), and answers "fallback" for "a". */
#define assert_bad_rule(type, rule, warning, map_named)                                            \
	do {                                                                                       \
		struct buf text_ = BUF_INIT, map_ = BUF_INIT;                                      \
		buf_printf(&text_, "%s\n/a|b/ fallback\n", rule);                                  \
		buf_printf(&map_, "%s map ", type);                                                \
		char *got_ = query_file(type, buf_str(&text_), "a");                               \
		char *log_ = take_log();                                                           \
		if (strcmp(got_, "fallback") != 0 || strstr(log_, warning) == NULL ||              \
		    ((map_named) && strstr(log_, buf_str(&map_)) == NULL))                         \
			fail_msg("rule \"%s\": got \"%s\", log \"%s\"", rule, got_, log_);         \
		free(got_);                                                                        \
		free(log_);                                                                        \
		buf_free(&text_);                                                                  \
		buf_free(&map_);                                                                   \
	} while (0)

/* cmocka group setup/teardown: make table_path and log_path, and send the
 * log to log_path for take_log(); then put everything back. */
static inline int table_test_setup(void **state)
{
	int fd = mkstemp(table_path);
	close(fd);
	fd = mkstemp(log_path);
	close(fd);
	log_open("test");
	log_to_file(log_path);
	return 0;
}

static inline int table_test_teardown(void **state)
{
	log_to_stderr();
	unlink(table_path);
	unlink(log_path);
	return 0;
}

#endif
