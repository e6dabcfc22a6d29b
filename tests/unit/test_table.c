/* test_table.c - texthash, cdb/hash, cidr, inline and static tables:
 * each with good and malformed input, checked against what "postmap -q"
 * answers for the same source (Postfix 3.7), plus reload on change. */
#include <sys/stat.h>
#include <sys/time.h>

#include "table_source.h"
#include "table_test.h"

static char tmpdir[] = "/tmp/test_table.XXXXXX";

static char *path_of(const char *name)
{
	struct buf p = BUF_INIT;
	buf_printf(&p, "%s/%s", tmpdir, name);
	return buf_detach(&p);
}

/* Write file name in tmpdir; returns its path. */
static char *write_tmp(const char *name, const char *text)
{
	char *path = path_of(name);
	write_file(path, text);
	return path;
}

/* Push mtime forward so change detection cannot miss a same-second edit. */
static void touch_later(const char *path, int secs)
{
	struct timeval tv[2];
	gettimeofday(&tv[0], NULL);
	tv[0].tv_sec += secs;
	tv[1] = tv[0];
	assert_int_equal(utimes(path, tv), 0);
}

/* Look key up; returns "=value", "-" (not found) or "!error". */
static char *q(struct table *t, const char *key)
{
	struct buf value = BUF_INIT, err = BUF_INIT, out = BUF_INIT;
	int rc = table_lookup(t, key, &value, &err);
	if (rc == TABLE_FOUND)
		buf_printf(&out, "=%s", buf_str(&value));
	else if (rc == TABLE_NOTFOUND)
		buf_puts(&out, "-");
	else
		buf_printf(&out, "!%s", buf_str(&err));
	buf_free(&value);
	buf_free(&err);
	return buf_detach(&out);
}

#define ASSERT_Q(t, key, want)                                                                     \
	do {                                                                                       \
		char *got_ = q(t, key);                                                            \
		assert_string_equal(got_, want);                                                   \
		free(got_);                                                                        \
	} while (0)

/* table_open must fail with an error containing want. */
static void open_fails(const char *spec, const char *want)
{
	struct buf err = BUF_INIT;
	struct table *t = table_open(spec, &err);
	assert_null(t);
	if (strstr(buf_str(&err), want) == NULL)
		fail_msg("table_open(%s): error \"%s\" lacks \"%s\"", spec, buf_str(&err), want);
	buf_free(&err);
}

static struct buf spec;
static const char *spec_of(const char *type, const char *path)
{
	buf_reset(&spec);
	buf_printf(&spec, "%s:%s", type, path);
	return spec.data;
}

static const char source_text[] = "Foo bar  Baz \n"
				  "foo second\n"
				  "novalue   \n"
				  "key2\tval2\n"
				  "\tcont\tline\n"
				  "# comment\n"
				  "key3: v3\n"
				  "  # indented comment inside a continuation\n"
				  "K4 V4 UPPER\n";

/* Same answers for texthash and a built cdb (postmap -q agrees). */
static void check_source_answers(struct table *t)
{
	ASSERT_Q(t, "foo", "=bar  Baz");
	ASSERT_Q(t, "FOO", "=bar  Baz");
	ASSERT_Q(t, "novalue", "-");
	ASSERT_Q(t, "key2", "=val2\tcont\tline");
	ASSERT_Q(t, "key3:", "=v3");
	ASSERT_Q(t, "key3", "-");
	ASSERT_Q(t, "k4", "=V4 UPPER");
	ASSERT_Q(t, "#", "-");
	ASSERT_Q(t, "", "-");
}

static void test_texthash(void **state)
{
	char *path = write_tmp("th", source_text);
	struct table *t = open_ok(spec_of("texthash", path));
	check_source_answers(t);
	table_close(t);
	open_fails("texthash:/nonexistent/x", "open /nonexistent/x");
	open_fails("texthash:", "missing file name");
	free(path);
}

static void test_source_parse(void **state)
{
	struct buf key = BUF_INIT, value = BUF_INIT, why = BUF_INIT;
	assert_int_equal(table_source_parse("KEY  a b ", &key, &value, &why), 0);
	assert_string_equal(key.data, "key");
	assert_string_equal(value.data, "a b");
	assert_int_equal(table_source_parse("lonely", &key, &value, &why), -1);
	assert_string_equal(why.data, "expected format: key whitespace value");
	buf_reset(&why);
	assert_int_equal(table_source_parse("", &key, &value, &why), -1);
	/* Overlong keys are refused, not truncated. */
	struct buf big = BUF_INIT;
	for (int i = 0; i < TABLE_SOURCE_KEY_MAX + 1; i++)
		buf_putc(&big, 'k');
	buf_puts(&big, " v");
	buf_reset(&why);
	assert_int_equal(table_source_parse(big.data, &key, &value, &why), -1);
	assert_non_null(strstr(why.data, "key longer than"));
	buf_truncate(&big, TABLE_SOURCE_KEY_MAX);
	buf_puts(&big, " v");
	assert_int_equal(table_source_parse(big.data, &key, &value, &why), 0);
	buf_free(&big);
	buf_free(&key);
	buf_free(&value);
	buf_free(&why);
}

static void test_texthash_overlong_and_reload(void **state)
{
	struct buf text = BUF_INIT, err = BUF_INIT;
	for (int i = 0; i < TABLE_SOURCE_KEY_MAX + 10; i++)
		buf_putc(&text, 'x');
	buf_puts(&text, " long\nshort v1\n");
	char *path = write_tmp("reload", text.data);
	struct table *t = open_ok(spec_of("texthash", path));
	ASSERT_Q(t, "short", "=v1");
	assert_int_equal(t->priv != NULL, 1);
	assert_int_equal(table_reload(t, 0, &err), 0); /* unchanged */
	free(write_tmp("reload", "short v2\nnew entry\n"));
	touch_later(path, 5);
	assert_int_equal(table_reload(t, 0, &err), 1);
	ASSERT_Q(t, "short", "=v2");
	ASSERT_Q(t, "new", "=entry");
	/* A vanished file keeps the old contents; a forced reload says why. */
	unlink(path);
	assert_int_equal(table_reload(t, 0, &err), 0);
	assert_int_equal(table_reload(t, 1, &err), -1);
	assert_non_null(strstr(err.data, "No such file"));
	ASSERT_Q(t, "short", "=v2");
	table_close(t);
	buf_free(&text);
	buf_free(&err);
	free(path);
}

static void test_cdb(void **state)
{
	struct buf err = BUF_INIT;
	char *path = write_tmp("cdbsrc", source_text);
	char *cdb = path_of("cdbsrc.cdb");
	struct stat st;

	open_fails(spec_of("cdb", path), "open database");
	assert_int_equal(table_cdb_build(path, &err), 0);
	assert_int_equal(stat(cdb, &st), 0);
	struct table *t = open_ok(spec_of("cdb", path));
	assert_string_equal(t->path, cdb); /* changes are watched on the .cdb */
	check_source_answers(t);
	struct table *h = open_ok(spec_of("hash", path)); /* hash: is cdb */
	ASSERT_Q(h, "Foo", "=bar  Baz");
	table_close(h);

	/* Rebuild: the rename gives a new inode, so the reload sees it. */
	free(write_tmp("cdbsrc", "foo rebuilt\n"));
	assert_int_equal(table_reload(t, 0, &err), 0); /* source edit alone: no */
	assert_int_equal(table_cdb_build(path, &err), 0);
	assert_int_equal(table_reload(t, 0, &err), 1);
	ASSERT_Q(t, "foo", "=rebuilt");
	ASSERT_Q(t, "key2", "-");
	table_close(t);

	/* Malformed: missing source, corrupt .cdb, inline form. */
	buf_reset(&err);
	assert_int_equal(table_cdb_build("/nonexistent/src", &err), -1);
	assert_non_null(strstr(err.data, "/nonexistent/src"));
	free(write_tmp("bad.cdb", "not a cdb"));
	char *bad = path_of("bad");
	open_fails(spec_of("cdb", bad), "not a valid cdb file");
	open_fails("cdb:{ {a b} }", "must be a file");
	free(bad);
	free(cdb);
	free(path);
	buf_free(&err);
}

static void test_cidr(void **state)
{
	char *path = write_tmp("cidr", "1.2.3.0/24 net24\n"
				       "1.2.3.4/24 hostbits\n"
				       "[10.0.0.0]/8 br8\n"
				       "[10.1.0.0/16] br16\n"
				       "::ffff:0:0/96 mapped\n"
				       "2001:DB8::/32 v6\n"
				       "2001:db8::1/32 v6hostbits\n"
				       "!192.168.0.0/16 notpriv\n"
				       "1.2.3.300 bad\n"
				       "1.2.3.4/33 badlen\n"
				       "nocidr\n"
				       "5.5.5.5\n"
				       "if 172.16.0.0/12\n"
				       "172.16.1.0/24 inner   value  \n"
				       "endif\n"
				       "endif\n"
				       "endif garbage\n");
	struct table *t = open_ok(spec_of("cidr", path));
	assert_int_equal(table_is_pattern(t), 1);
	ASSERT_Q(t, "1.2.3.4", "=net24");
	ASSERT_Q(t, "10.2.3.4", "=br8");
	ASSERT_Q(t, "::ffff:1.2.3.4", "=mapped"); /* not net24: other family */
	ASSERT_Q(t, "2001:db8::5", "=v6");
	ASSERT_Q(t, "8.8.8.8", "=notpriv");
	ASSERT_Q(t, "192.168.1.1", "-");
	ASSERT_Q(t, "172.16.1.1", "=notpriv");
	ASSERT_Q(t, "::1", "-"); /* a negated IPv4 rule never matches IPv6 */
	ASSERT_Q(t, "5.5.5.5", "=notpriv");
	ASSERT_Q(t, "foo", "-");
	ASSERT_Q(t, "01.2.3.4", "-");
	ASSERT_Q(t, "[1.2.3.4]", "-");
	ASSERT_Q(t, "", "-");
	table_close(t);
	free(path);

	/* Nested and negated if; an unclosed IF keeps its block conditional. */
	path = write_tmp("cidrif", "if 10.0.0.0/8\n"
				   "if !10.1.0.0/16\n"
				   "10.2.0.0/16 a\n"
				   "endif\n"
				   "10.0.0.0/8 b\n"
				   "endif\n"
				   "IF ! 9.0.0.0/8\n"
				   "0.0.0.0/0 not-nine\n"
				   "[::1]/128 l\n"
				   " continued\n"
				   "if 1.0.0.0/8 junk\n"
				   "0.0.0.0/0 never\n");
	t = open_ok(spec_of("cidr", path));
	ASSERT_Q(t, "10.2.0.1", "=a");
	ASSERT_Q(t, "10.1.0.1", "=b");
	ASSERT_Q(t, "10.3.0.1", "=b");
	ASSERT_Q(t, "9.1.1.1", "-");
	ASSERT_Q(t, "8.1.1.1", "=not-nine");
	ASSERT_Q(t, "::1", "-"); /* inside the unclosed IPv4 IF */
	table_close(t);
	free(path);

	t = open_ok("cidr:{ {192.0.2.0/24 doc net}, {0.0.0.0/0 all}, {::/0 all6} }");
	ASSERT_Q(t, "192.0.2.9", "=doc net");
	ASSERT_Q(t, "1.1.1.1", "=all");
	ASSERT_Q(t, "fe80::1", "=all6");
	table_close(t);
	open_fails("cidr:/nonexistent/cidr", "open /nonexistent/cidr");
}

static void test_inline(void **state)
{
	struct table *t = open_ok("inline:{ Key=Value, {k2 = v with spaces, commas }, a=1, A=2,"
				  " {b = 1 = 2}, e= }");
	ASSERT_Q(t, "KEY", "=Value");
	ASSERT_Q(t, "k2", "=v with spaces, commas");
	ASSERT_Q(t, "a", "=2"); /* later duplicates replace, as Postfix */
	ASSERT_Q(t, "b", "=1 = 2");
	ASSERT_Q(t, "e", "=");
	ASSERT_Q(t, "value", "-");
	table_close(t);
	open_fails("inline:{ Key = Value }", "missing '='");
	open_fails("inline:{novalue}", "missing '='");
	open_fails("inline:{}", "empty list");
	open_fails("inline:{x=y", "missing '}'");
	open_fails("inline:{ {x=y }", "unbalanced");
	open_fails("inline:x=y", "need \"inline:{name=value...}\"");
	open_fails("inline", "expected type:name");
	open_fails("nosuch:{a=b}", "unsupported table type");
}

static void test_static(void **state)
{
	struct table *t = open_ok("static:Foo Bar");
	ASSERT_Q(t, "anything", "=Foo Bar");
	ASSERT_Q(t, "", "=Foo Bar");
	table_close(t);
	t = open_ok("static:{ text with  spaces }");
	ASSERT_Q(t, "x", "=text with  spaces");
	table_close(t);
	t = open_ok("static:{}");
	ASSERT_Q(t, "x", "=");
	table_close(t);
	open_fails("static:", "expected \"static:value\"");
	open_fails("static:{ a } b", "syntax error after '}'");
	open_fails("static:{a", "missing '}'");
	/* Postfix: nothing, not even white space, after the matching brace. */
	open_fails("static:{x} ", "syntax error after '}'");
	open_fails("static:{x}}", "syntax error after '}'");
}

static int setup(void **state)
{
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	struct buf cmd = BUF_INIT;
	buf_printf(&cmd, "rm -rf '%s'", tmpdir);
	int rc = system(cmd.data);
	buf_free(&cmd);
	buf_free(&spec);
	return rc == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_source_parse),
	    cmocka_unit_test(test_texthash),
	    cmocka_unit_test(test_texthash_overlong_and_reload),
	    cmocka_unit_test(test_cdb),
	    cmocka_unit_test(test_cidr),
	    cmocka_unit_test(test_inline),
	    cmocka_unit_test(test_static),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
