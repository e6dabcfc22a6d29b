/* test_table_sqlite.c - sqlite: tables (shared/table_sqlite.c) against a
 * database the test builds with the sqlite3 library. Expected results
 * are those of Postfix 3.7's "postmap -q KEY sqlite:FILE" (postfix-sqlite)
 * for the same database and configuration. */
#include <sqlite3.h>

#include "table_test.h"

static char dir[] = "/tmp/test_table_sqlite.XXXXXX";
static struct buf db_path = BUF_INIT, cf_path = BUF_INIT, spec = BUF_INIT;

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
	buf_printf(&spec, "sqlite:%s", buf_str(&cf_path));
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
	buf_free(&spec);
	return 0;
}

/* Make the table's config "dbpath = <db>\n" + conf. */
static void write_conf(const char *conf)
{
	struct buf text = BUF_INIT;

	buf_printf(&text, "dbpath = %s\n%s", buf_str(&db_path), conf);
	write_file(buf_str(&cf_path), buf_str(&text));
	buf_free(&text);
}

/* The value, "NOTFOUND" or "ERROR: message". */
static char *query(const char *conf, const char *key)
{
	write_conf(conf);
	return query_spec(buf_str(&spec), key);
}

#define assert_query(conf, key, want) assert_answer(query(conf, key), conf, key, want)

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
	struct buf err = BUF_INIT;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		buf_reset(&err);
		write_conf(bad[i].conf);
		struct table *t = table_open(buf_str(&spec), &err);
		if (t != NULL || strstr(buf_str(&err), bad[i].why) == NULL)
			fail_msg("[%s]: opened %d, err \"%s\"", bad[i].conf, t != NULL,
				 buf_str(&err));
	}
	/* A missing database is an error, and is not created (read-only). */
	write_file(buf_str(&cf_path), "dbpath = /nonexistent/db.sqlite\n" Q_A);
	buf_reset(&err);
	assert_null(table_open(buf_str(&spec), &err));
	assert_non_null(strstr(buf_str(&err), "open database /nonexistent/db.sqlite"));
	buf_free(&err);
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
