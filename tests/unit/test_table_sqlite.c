/* test_table_sqlite.c - sqlite: tables (shared/table_sqlite.c) against a
 * database the test builds with the sqlite3 library. Expected results
 * are those of Postfix 3.7's "postmap -q KEY sqlite:FILE" (postfix-sqlite)
 * for the same database and configuration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "table.h"

static char dir[] = "/tmp/test_table_sqlite.XXXXXX";
static struct buf db_path = BUF_INIT, cf_path = BUF_INIT;

static void write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static int setup(void **state)
{
	static const char *sql =
		"CREATE TABLE a(k TEXT, v TEXT);"
		"INSERT INTO a VALUES('user@example.com','u1'),('multi','m1'),('multi','m2'),"
		"('multi','m3'),('o''neil','quote'),('empty',''),('null',NULL),('Mixed','mx'),"
		"('x@y.z','dest@host.example'),('x@y.z','plain'),('x@y.z','@dom'),"
		"('x@y.z','lp@');"
		"CREATE TABLE n(k TEXT, v INTEGER); INSERT INTO n VALUES('one', 42);";
	sqlite3 *db;

	assert_non_null(mkdtemp(dir));
	buf_printf(&db_path, "%s/db.sqlite", dir);
	buf_printf(&cf_path, "%s/sqlite.cf", dir);
	assert_int_equal(sqlite3_open(buf_str(&db_path), &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	return 0;
}

static int teardown(void **state)
{
	unlink(buf_str(&db_path));
	unlink(buf_str(&cf_path));
	rmdir(dir);
	buf_free(&db_path);
	buf_free(&cf_path);
	return 0;
}

/* Open a table whose config is "dbpath = <db>\n" + conf. */
static struct table *open_conf(const char *conf, struct buf *err)
{
	struct buf text = BUF_INIT, spec = BUF_INIT;
	struct table *t;

	buf_printf(&text, "dbpath = %s\n%s", buf_str(&db_path), conf);
	write_file(buf_str(&cf_path), buf_str(&text));
	buf_printf(&spec, "sqlite:%s", buf_str(&cf_path));
	t = table_open(buf_str(&spec), err);
	buf_free(&text);
	buf_free(&spec);
	return t;
}

/* The value, "NOTFOUND" or "ERROR: message". */
static char *query(const char *conf, const char *key)
{
	struct buf err = BUF_INIT, value = BUF_INIT;
	struct table *t = open_conf(conf, &err);
	char *out;

	if (t == NULL)
		fail_msg("open: %s", buf_str(&err));
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
	table_close(t);
	buf_free(&err);
	buf_free(&value);
	return out;
}

#define assert_query(conf, key, want)                                                          \
	do {                                                                                   \
		char *got_ = query(conf, key);                                                 \
		if (strncmp(got_, want, strlen(want)) != 0 ||                                  \
		    (strncmp(want, "ERROR", 5) != 0 && strcmp(got_, want) != 0))               \
			fail_msg("[%s] key \"%s\": got \"%s\", want \"%s\"", conf, key, got_,  \
				 want);                                                        \
		free(got_);                                                                    \
	} while (0)

#define Q_A "query = SELECT v FROM a WHERE k='%s'\n"

static void test_sqlite_basic(void **state)
{
	assert_query(Q_A, "user@example.com", "u1");
	assert_query(Q_A, "multi", "m1,m2,m3");
	assert_query(Q_A, "o'neil", "quote"); /* quoted, not an SQL error */
	assert_query(Q_A, "x' OR '1'='1", "NOTFOUND");
	assert_query(Q_A, "empty", "NOTFOUND");
	assert_query(Q_A, "null", "NOTFOUND");
	assert_query(Q_A, "nope", "NOTFOUND");
	/* Keys are folded: "Mixed" is looked up as "mixed". */
	assert_query(Q_A, "Mixed", "NOTFOUND");
	assert_query("query = SELECT v FROM n WHERE k='%s'\n", "one", "42");
	/* Continuation lines and comments in the config. */
	assert_query("# comment\nquery = SELECT v\n  FROM a WHERE k='%s'\n", "multi", "m1,m2,m3");
	assert_query("select_field = v\ntable = a\nwhere_field = k\n"
		     "additional_conditions = AND v <> 'm2'\n",
		     "multi", "m1,m3");
}

static void test_sqlite_query_expansion(void **state)
{
	static const struct {
		const char *q, *key, *want;
	} cases[] = {
		{"%u", "user@mail.example.com", "user"},
		{"%u", "x", "x"},
		{"%u", "@dom", "NOTFOUND"},
		{"%u", "user@", "user"},
		{"%d", "user@mail.example.com", "mail.example.com"},
		{"%d", "x", "NOTFOUND"},
		{"%d", "@dom", "dom"},
		{"%d", "user@", "NOTFOUND"},
		{"%1", "user@mail.example.com", "com"},
		{"%2", "user@mail.example.com", "example"},
		{"%3", "user@mail.example.com", "mail"},
		{"%4", "user@mail.example.com", "NOTFOUND"},
		{"%1", "x", "NOTFOUND"},
		{"%2", "u@a..b", "a"},
		{"%1", "u@.a.", "a"},
		{"%2", "u@.a.", "NOTFOUND"},
		{"%S/%U/%D", "O'x@a.b", "o'x@a.b/o'x/a.b"},
		{"%S/%U/%D", "x", "NOTFOUND"},
		{"%s%%", "a@b@c.d", "a@b@c.d%"},
	};
	struct buf conf = BUF_INIT;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		buf_reset(&conf);
		buf_printf(&conf, "query = SELECT '%s'\n", cases[i].q);
		assert_query(buf_str(&conf), cases[i].key, cases[i].want);
	}
	buf_free(&conf);
}

static void test_sqlite_result_format(void **state)
{
	static const struct {
		const char *rf, *key, *want;
	} cases[] = {
		{"<%u>", "x@y.z", "<dest>,<plain>,<lp>"},
		{"<%d>", "x@y.z", "<host.example>,<dom>"},
		{"<%U|%D>", "x@y.z", "<x|y.z>,<x|y.z>,<x|y.z>,<x|y.z>"},
		{"[%1.%2]", "x@y.z", "[z.y],[z.y],[z.y],[z.y]"},
		{"[%3]", "x@y.z", "NOTFOUND"},
		{"%S%%", "multi", "multi%,multi%,multi%"},
		{"<%d>", "multi", "NOTFOUND"},
		{"static", "multi", "static,static,static"},
	};
	struct buf conf = BUF_INIT;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		buf_reset(&conf);
		buf_printf(&conf, "%sresult_format = %s\n", Q_A, cases[i].rf);
		assert_query(buf_str(&conf), cases[i].key, cases[i].want);
	}
	buf_free(&conf);
}

static void test_sqlite_limits_and_domain(void **state)
{
	assert_query(Q_A "expansion_limit = 3\n", "multi", "m1,m2,m3");
	assert_query(Q_A "expansion_limit = 2\n", "multi", "ERROR");
	assert_query(Q_A "expansion_limit = 1\n", "user@example.com", "u1");
	assert_query(Q_A "domain = example.com\n", "user@example.com", "u1");
	assert_query(Q_A "domain = example.com\n", "User@EXAMPLE.com", "u1");
	assert_query(Q_A "domain = example.com\n", "multi", "NOTFOUND");
	assert_query("query = SELECT '%s'\ndomain = a.org, example.com\n", "u@sub.example.com",
		     "NOTFOUND");
	assert_query("query = SELECT '%s'\ndomain = a.org, example.com\n", "@example.com",
		     "NOTFOUND");
	assert_query("query = SELECT '%s'\ndomain = a.org, example.com\n", "u@a.org", "u@a.org");
	assert_query("query = SELECT '%s'\ndomain = static:yes\n", "u@any.where", "u@any.where");
	assert_query("query = SELECT v FROM nosuch WHERE k='%s'\n", "one",
		     "ERROR: SQL prepare failed: no such table: nosuch");
}

static void test_sqlite_bad_config(void **state)
{
	static const struct {
		const char *conf, *why;
	} bad[] = {
		{"", "missing query"},
		{"query = SELECT '%x'\n", "invalid query template"},
		{"query = SELECT '%'\n", "invalid query template"},
		{Q_A "result_format = %x\n", "invalid result template"},
		{Q_A "expansion_limit = lots\n", "bad expansion_limit"},
		{Q_A "no equals sign\n", "line 3: missing '='"},
		{Q_A "domain = nosuchtype:x\n", "unsupported table type"},
	};
	struct buf err = BUF_INIT, spec = BUF_INIT;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		buf_reset(&err);
		struct table *t = open_conf(bad[i].conf, &err);
		if (t != NULL || strstr(buf_str(&err), bad[i].why) == NULL)
			fail_msg("[%s]: opened %d, err \"%s\"", bad[i].conf, t != NULL,
				 buf_str(&err));
	}
	/* A missing database is an error, and is not created (read-only). */
	write_file(buf_str(&cf_path), "dbpath = /nonexistent/db.sqlite\n" Q_A);
	buf_printf(&spec, "sqlite:%s", buf_str(&cf_path));
	buf_reset(&err);
	assert_null(table_open(buf_str(&spec), &err));
	assert_non_null(strstr(buf_str(&err), "open database /nonexistent/db.sqlite"));
	buf_free(&err);
	buf_free(&spec);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sqlite_basic),
		cmocka_unit_test(test_sqlite_query_expansion),
		cmocka_unit_test(test_sqlite_result_format),
		cmocka_unit_test(test_sqlite_limits_and_domain),
		cmocka_unit_test(test_sqlite_bad_config),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
