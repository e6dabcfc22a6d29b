/* test_cfg.c - configuration parser, expansion, typed values, listener
 * overrides and in-place editing (shared/cfg*.c), and the invariants of
 * ternd's registry (shared/params.c). Config files are written to a
 * temporary directory so messages carry a real "FILE, line N". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "lines.h"
#include "params.h"

static const struct cfg_param test_reg[] = {
    {"host", CFG_STR, "h.example", "host name", 0, 0, NULL, 0, NULL},
    {"flag", CFG_BOOL, "no", "a flag", 0, 0, NULL, 0, NULL},
    {"count", CFG_INT, "5", "a count", 1, 10, NULL, 0, NULL},
    {"timeout", CFG_TIME, "300s", "a timeout", 1, 0, "s", 0, NULL},
    {"lifetime", CFG_TIME, "5d", "a lifetime", 0, 0, "d", 0, NULL},
    {"size", CFG_SIZE, "1024", "a size", 0, 0, NULL, 0, NULL},
    {"items", CFG_LIST, "", "a list", 0, 0, NULL, 0, NULL},
    {"maps", CFG_TABLES, "", "tables", 0, 0, NULL, 0, NULL},
    {"listen_smtp", CFG_LISTEN, "*:25", "smtp", 0, 0, NULL, CFG_P_TERN, NULL},
    {"listen_smtps", CFG_LISTEN, "", "smtps", 0, 0, NULL, CFG_P_TERN, NULL},
    {"banner", CFG_STR, "$host ESMTP", "banner", 0, 0, NULL, 0, NULL},
    {"spool", CFG_STR, "spool", "a path", 0, 0, NULL, 0, NULL},
    {"smtpd_restriction_classes", CFG_LIST, "", "classes", 0, 0, NULL, 0, NULL},
    {"smtpd_reject_footer", CFG_STR, "$client_address", "raw", 0, 0, NULL, 0, NULL},
    {NULL, CFG_STR, NULL, NULL, 0, 0, NULL, 0, NULL},
};

static char test_dir[] = "/tmp/test_cfg.XXXXXX";
static char test_path[sizeof(test_dir) + 16];

static int setup(void **state)
{
	if (mkdtemp(test_dir) == NULL)
		return -1;
	snprintf(test_path, sizeof(test_path), "%s/tern.conf", test_dir);
	return 0;
}

static int teardown(void **state)
{
	unlink(test_path);
	rmdir(test_dir);
	return 0;
}

static void write_file(const char *text)
{
	FILE *fp = fopen(test_path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static char *read_file(void)
{
	struct buf b = BUF_INIT;
	char chunk[512];
	size_t n;
	FILE *fp = fopen(test_path, "r");
	assert_non_null(fp);
	while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
		buf_append(&b, chunk, n);
	fclose(fp);
	buf_puts(&b, "");
	return buf_detach(&b);
}

/* Load text as tern.conf with the test registry; rc and err returned. */
static struct cfg *load(const char *text, int *rc, struct buf *err)
{
	struct cfg *c = cfg_new(test_reg);
	write_file(text);
	buf_set(err, "");
	*rc = cfg_load_dir(c, test_dir, "tern.conf", 0, err);
	return c;
}

/* Expanded global value of name (static buffer for brevity). */
static const char *get(struct cfg *c, const char *listener, const char *name)
{
	static struct buf out = BUF_INIT;
	struct buf err = BUF_INIT;
	int rc = cfg_get_str(c, listener, name, &out, &err);
	if (rc < 0)
		fail_msg("get %s: %s", name, buf_str(&err));
	buf_free(&err);
	return buf_str(&out);
}

/* The error message of loading text, with the temp dir replaced by D. */
static char *load_error(const char *text)
{
	struct buf err = BUF_INIT, out = BUF_INIT;
	int rc;
	struct cfg *c = load(text, &rc, &err);
	assert_int_equal(rc, -1);
	const char *e = buf_str(&err), *hit;
	while ((hit = strstr(e, test_dir)) != NULL) {
		buf_append(&out, e, (size_t)(hit - e));
		buf_puts(&out, "D");
		e = hit + strlen(test_dir);
	}
	buf_puts(&out, e);
	cfg_free(c);
	buf_free(&err);
	return buf_detach(&out);
}

static void assert_load_error(const char *text, const char *want)
{
	char *got = load_error(text);
	assert_string_equal(got, want);
	free(got);
}

static void test_cfg_syntax(void **state)
{
	struct buf err = BUF_INIT;
	int rc;
	struct cfg *c = load("# comment\n"
			     "host=a.example\n"
			     "   # indented comment inside nothing\n"
			     "banner   =   hello\n"
			     "   world   \n"
			     "\n"
			     "host = b.example   \n"
			     "items = a,\n"
			     "  # comment between continuation lines\n"
			     "  b\n",
			     &rc, &err);
	assert_int_equal(rc, 0);
	assert_string_equal(get(c, NULL, "host"), "b.example"); /* last wins */
	/* How much white space joins continuation lines is lines.c's
	 * business; that they are joined is ours. */
	assert_true(strncmp(cfg_get_raw(c, NULL, "banner"), "hello ", 6) == 0);
	assert_true(strlen(cfg_get_raw(c, NULL, "banner")) >= 11);
	assert_string_equal(
	    cfg_get_raw(c, NULL, "banner") + strlen(cfg_get_raw(c, NULL, "banner")) - 6, " world");
	struct cfg_list l;
	assert_int_equal(cfg_get_list(c, NULL, "items", &l, &err), 0);
	assert_int_equal(l.count, 2);
	assert_string_equal(l.items[1], "b");
	cfg_list_free(&l);
	assert_string_equal(get(c, NULL, "count"), "5"); /* default */
	assert_true(cfg_is_set(c, "host"));
	assert_false(cfg_is_set(c, "count"));
	assert_int_equal(cfg_warning_count(c), 0);
	cfg_free(c);
	buf_free(&err);
}

static void test_cfg_syntax_errors(void **state)
{
	assert_load_error("host = x\nxyz\n",
			  "D/tern.conf, line 2: missing '=' after attribute name: \"xyz\"");
	assert_load_error("host = x\n\nfoo bar = 1\n",
			  "D/tern.conf, line 3: missing '=' after attribute name: \"foo bar = 1\"");
	assert_load_error("= value\n", "D/tern.conf, line 1: missing attribute name: \"= value\"");

	/* Missing file: an error unless missing_ok. */
	struct cfg *c = cfg_new(test_reg);
	struct buf err = BUF_INIT;
	assert_int_equal(cfg_load_dir(c, test_dir, "nonexistent.conf", 0, &err), -1);
	assert_non_null(strstr(buf_str(&err), "nonexistent.conf"));
	buf_set(&err, "");
	assert_int_equal(cfg_load_dir(c, test_dir, "nonexistent.conf", 1, &err), 0);
	cfg_free(c);
	buf_free(&err);
}

static void test_cfg_expansion(void **state)
{
	struct buf err = BUF_INIT;
	int rc;
	struct cfg *c =
	    load("a = A\n"
		 "empty =\n"
		 "b = [$a|${a}|$(a)|$undefined|$$a|50$$ x]\n"
		 "c = ${a?yes $a}|${empty?yes}|${a:no}|${empty:no $a}\n"
		 "d = ${a?{one}:{two}}|${empty?{one}:{two}}|${undefined ? { x } : { y $a }}\n"
		 "e = $b $c\n"
		 "host = mx.$a\n",
		 &rc, &err);
	assert_int_equal(rc, 0);
	assert_string_equal(get(c, NULL, "b"), "[A|A|A||$a|50$ x]");
	assert_string_equal(get(c, NULL, "c"), "yes A|||no A");
	assert_string_equal(get(c, NULL, "d"), "one|two|y A");
	assert_string_equal(get(c, NULL, "e"), "[A|A|A||$a|50$ x] yes A|||no A");
	assert_string_equal(get(c, NULL, "banner"), "mx.A ESMTP"); /* default uses setting */
	assert_string_equal(cfg_get_raw(c, NULL, "banner"), "$host ESMTP");
	/* References to undefined names are warned about first, then
	 * user-defined names that nothing refers to (as postconf); d and e
	 * are referenced by nothing. */
	assert_int_equal(cfg_warning_count(c), 4);
	assert_non_null(strstr(cfg_warning(c, 0), "line 3: undefined parameter: undefined"));
	assert_non_null(strstr(cfg_warning(c, 1), "line 5: undefined parameter: undefined"));
	assert_non_null(strstr(cfg_warning(c, 2), "line 5: unused parameter: d="));
	assert_non_null(strstr(cfg_warning(c, 3), "line 6: unused parameter: e="));
	cfg_free(c);
	buf_free(&err);
}

static void test_cfg_expansion_errors(void **state)
{
	char *e = load_error("host = x\na = $b\nb = ${c}\nc = $(a)\n");
	assert_string_equal(e, "D/tern.conf, line 2: parameter \"a\": recursive expansion of "
			       "\"$a\" (a -> b -> c -> a)");
	free(e);
	e = load_error("host = $host\n");
	assert_non_null(strstr(e, "line 1: parameter \"host\": recursive expansion"));
	free(e);
	assert_load_error("banner = ${host\n",
			  "D/tern.conf, line 1: parameter \"banner\": missing '}' in \"${host\"");
	assert_load_error("banner = ${{$a} == {b}?x}\n",
			  "D/tern.conf, line 1: parameter \"banner\": unsupported expression "
			  "\"${{$a} == {b}?x}\"");
	e = load_error("banner = ${host?{a}:b}\n");
	assert_non_null(strstr(e, "bad conditional expression"));
	free(e);
	/* Exponential expansion is cut off, not run for ever. */
	struct buf text = BUF_INIT;
	buf_puts(&text, "banner = $l0\n");
	for (int i = 0; i < 40; i++)
		buf_printf(&text, "l%d = $l%d$l%d\n", i, i + 1, i + 1);
	buf_puts(&text, "l40 = x\n");
	e = load_error(buf_str(&text));
	assert_non_null(strstr(e, "parameter \"banner\": "));
	free(e);
	buf_free(&text);
}

/* A '$' without a name after it is Postfix's "empty macro name" error,
 * quoting the value it is in; "$$" is still a literal '$'. */
static void test_cfg_empty_macro_name(void **state)
{
	assert_load_error("host = a$ b\n",
			  "D/tern.conf, line 1: parameter \"host\": empty macro name: \"a$ b\"");
	assert_load_error("host = $\n",
			  "D/tern.conf, line 1: parameter \"host\": empty macro name: \"$\"");
	assert_load_error("host = x\nbanner = a$\n",
			  "D/tern.conf, line 2: parameter \"banner\": empty macro name: \"a$\"");
	assert_load_error("host = $-x\n",
			  "D/tern.conf, line 1: parameter \"host\": empty macro name: \"$-x\"");
	assert_load_error("host = ${}\n",
			  "D/tern.conf, line 1: parameter \"host\": empty macro name: \"${}\"");
	assert_load_error("host = $()\n",
			  "D/tern.conf, line 1: parameter \"host\": empty macro name: \"$()\"");
	assert_load_error("host = ${a?{x$}}\na = 1\n",
			  "D/tern.conf, line 1: parameter \"host\": empty macro name: "
			  "\"${a?{x$}}\"");
	/* Reached through $x: the message quotes x's value. */
	assert_load_error("host = $x\nx = a$ b\n",
			  "D/tern.conf, line 1: parameter \"host\": empty macro name: \"a$ b\"");

	struct buf err = BUF_INIT;
	int rc;
	struct cfg *c = load("host = 5$$ and $$\n", &rc, &err);
	assert_int_equal(rc, 0);
	assert_string_equal(get(c, NULL, "host"), "5$ and $");
	/* "tern conf -e" checks with cfg_check(). */
	assert_int_equal(cfg_check(c, "host", "$", &err), -1);
	assert_string_equal(buf_str(&err), "parameter \"host\": empty macro name: \"$\"");
	cfg_free(c);

	/* Raw parameters are not expanded: their $names are filled in at
	 * run time, and a '$' in them is no error (as postconf). */
	c = load("smtpd_reject_footer = $client_address a$ b ${nosuch}\n", &rc, &err);
	assert_int_equal(rc, 0);
	assert_true(cfg_is_raw(c, "smtpd_reject_footer"));
	assert_false(cfg_is_raw(c, "host"));
	assert_string_equal(get(c, NULL, "smtpd_reject_footer"), "$client_address a$ b ${nosuch}");
	assert_int_equal(cfg_warning_count(c), 0); /* no "undefined parameter" */
	cfg_free(c);
	/* Postfix 3.7's raw parameters, all of them. */
	static const struct cfg_param raw_reg[] = {
	    {"smtpd_reject_footer", CFG_STR, "", "r", 0, 0, NULL, 0, NULL},
	    {"smtpd_expansion_filter", CFG_STR, "", "r", 0, 0, NULL, 0, NULL},
	    {"postscreen_reject_footer", CFG_STR, "", "r", 0, 0, NULL, 0, NULL},
	    {"postscreen_expansion_filter", CFG_STR, "", "r", 0, 0, NULL, 0, NULL},
	    {"mailbox_command", CFG_STR, "", "r", 0, 0, NULL, 0, NULL},
	    {"luser_relay", CFG_STR, "", "r", 0, 0, NULL, 0, NULL},
	    {"forward_path", CFG_STR, "", "r", 0, 0, NULL, 0, NULL},
	    {"default_rbl_reply", CFG_STR, "", "r", 0, 0, NULL, 0, NULL},
	    {"command_execution_directory", CFG_STR, "", "r", 0, 0, NULL, 0, NULL},
	    {"myorigin", CFG_STR, "", "not raw", 0, 0, NULL, 0, NULL},
	    {NULL, CFG_STR, NULL, NULL, 0, 0, NULL, 0, NULL},
	};
	c = cfg_new(raw_reg);
	for (size_t i = 0; raw_reg[i].name; i++)
		assert_int_equal(cfg_is_raw(c, raw_reg[i].name),
				 strcmp(raw_reg[i].name, "myorigin") != 0);
	cfg_free(c);
	buf_free(&err);
}

static void test_cfg_typed_values(void **state)
{
	struct buf err = BUF_INIT;
	long long v;
	int b, rc;
	struct cfg *c = load("flag = YES\ncount = 10\ntimeout = 2m\nlifetime = 3\nsize = 2k\n"
			     "listen_smtp = 127.0.0.1:2525 [::1]:2525 *:smtp 26\n",
			     &rc, &err);
	assert_int_equal(rc, 0);
	assert_int_equal(cfg_get_bool(c, NULL, "flag", &b, &err), 0);
	assert_int_equal(b, 1);
	assert_int_equal(cfg_get_int(c, NULL, "count", &v, &err), 0);
	assert_int_equal(v, 10);
	assert_int_equal(cfg_get_time(c, NULL, "timeout", &v, &err), 0);
	assert_int_equal(v, 120);
	assert_int_equal(cfg_get_time(c, NULL, "lifetime", &v, &err), 0);
	assert_int_equal(v, 3 * 86400); /* bare number: the parameter's unit */
	assert_int_equal(cfg_get_size(c, NULL, "size", &v, &err), 0);
	assert_int_equal(v, 2048);
	cfg_free(c);

	assert_int_equal(cfg_parse_time_ms("250ms", "s", &v), 0);
	assert_int_equal(v, 250);
	assert_int_equal(cfg_parse_time_ms("2w", "s", &v), 0);
	assert_int_equal(v, 2LL * 7 * 86400 * 1000);
	assert_int_equal(cfg_parse_time_ms("1h30m", "s", &v), -1);
	assert_int_equal(cfg_parse_time_ms("-1s", "s", &v), -1);
	assert_int_equal(cfg_parse_time_ms("99999999999999999999s", "s", &v), -1);
	assert_int_equal(cfg_parse_size("1G", &v), 0);
	assert_int_equal(v, 1024LL * 1024 * 1024);
	assert_int_equal(cfg_parse_size("1kb", &v), -1);
	assert_int_equal(cfg_parse_int("-3", &v), 0);
	assert_int_equal(v, -3);
	assert_int_equal(cfg_parse_int("3x", &v), -1);
	assert_int_equal(cfg_parse_int("", &v), -1);
	assert_int_equal(cfg_parse_bool("On", &b), -1);
	buf_free(&err);
}

static void test_cfg_typed_errors(void **state)
{
	assert_load_error(
	    "host = x\n\n\n\n\n\n\n\n\n\n\nflag = maybe\n",
	    "D/tern.conf, line 12: bad boolean value \"maybe\" for parameter \"flag\"");
	assert_load_error(
	    "count = 5x\n",
	    "D/tern.conf, line 1: bad numerical value \"5x\" for parameter \"count\"");
	assert_load_error("count = 0\n", "D/tern.conf, line 1: invalid value for parameter "
					 "\"count\": must be at least 1");
	assert_load_error("count = 11\n", "D/tern.conf, line 1: invalid value for parameter "
					  "\"count\": must be at most 10");
	assert_load_error("timeout = 5x\n",
			  "D/tern.conf, line 1: bad time value \"5x\" for parameter \"timeout\" "
			  "(use a number and a unit: ms, s, m, h, d or w)");
	assert_load_error("timeout = 0\n", "D/tern.conf, line 1: invalid value for parameter "
					   "\"timeout\": must be at least 1s");
	assert_load_error("size = 12 MB\n",
			  "D/tern.conf, line 1: bad size value \"12 MB\" for parameter \"size\"");
	assert_load_error("maps = hash:/etc/x, /etc/y\n",
			  "D/tern.conf, line 1: bad table \"/etc/y\" in parameter \"maps\": "
			  "expected type:name");
	assert_load_error("items = a { b\n", "D/tern.conf, line 1: missing '}' in \"{ b\"");
	/* A bad value reached through $name is reported where it is used. */
	assert_load_error(
	    "n = ten\ncount = $n\n",
	    "D/tern.conf, line 2: bad numerical value \"ten\" for parameter \"count\"");
	const char *bad_listen[] = {"::1:25", "host:0", "host:70000", "[::1:25",
				    "host:",  "[]:25",	"*:Smtp",     "a b:25x"};
	for (size_t i = 0; i < sizeof(bad_listen) / sizeof(bad_listen[0]); i++) {
		struct buf text = BUF_INIT;
		buf_printf(&text, "listen_smtp = 127.0.0.1:25, %s\n", bad_listen[i]);
		char *e = load_error(buf_str(&text));
		assert_non_null(strstr(e, "D/tern.conf, line 1: bad listener address"));
		free(e);
		buf_free(&text);
	}
	/* A default that does not fit its type says "default". */
	static const struct cfg_param bad_reg[] = {
	    {"flag", CFG_BOOL, "perhaps", "bad default", 0, 0, NULL, 0, NULL},
	    {NULL, CFG_STR, NULL, NULL, 0, 0, NULL, 0, NULL},
	};
	struct cfg *c = cfg_new(bad_reg);
	struct buf err = BUF_INIT;
	assert_int_equal(cfg_validate(c, &err), -1);
	assert_string_equal(buf_str(&err),
			    "default: bad boolean value \"perhaps\" for parameter \"flag\"");
	/* Getters on unknown names fail cleanly. */
	long long v;
	buf_set(&err, "");
	assert_int_equal(cfg_get_int(c, NULL, "nosuch", &v, &err), -1);
	assert_string_equal(buf_str(&err), "unknown parameter \"nosuch\"");
	cfg_free(c);
	buf_free(&err);
}

static void assert_split(const char *value, int n, const char *joined)
{
	struct cfg_list l;
	struct buf err = BUF_INIT, out = BUF_INIT;
	assert_int_equal(cfg_list_split(value, &l, &err), 0);
	assert_int_equal(l.count, n);
	for (size_t i = 0; i < l.count; i++)
		buf_printf(&out, "%s|", l.items[i]);
	assert_string_equal(buf_str(&out), joined);
	assert_null(l.items[l.count]);
	cfg_list_free(&l);
	buf_free(&err);
	buf_free(&out);
}

static void test_cfg_list_split(void **state)
{
	struct cfg_list l;
	struct buf err = BUF_INIT, out = BUF_INIT;

	assert_split("", 0, "");
	assert_split(" , ,", 0, "");
	assert_split("a,b c\t,\n d", 4, "a|b|c|d|");
	assert_split("permit_mynetworks, check_policy_service { inet:127.0.0.1:9998, "
		     "timeout=10s }, reject",
		     4,
		     "permit_mynetworks|check_policy_service|{ inet:127.0.0.1:9998, timeout=10s }|"
		     "reject|");
	assert_split("inline:{ {a = b}, {c = d} } pcre:/x", 2,
		     "inline:{ {a = b}, {c = d} }|pcre:/x|");
	assert_int_equal(cfg_list_split("a { b", &l, &err), -1);
	assert_string_equal(buf_str(&err), "missing '}' in \"{ b\"");
	buf_set(&err, "");
	assert_int_equal(cfg_list_split("a } b", &l, &err), -1);
	assert_string_equal(buf_str(&err), "unexpected '}' in \"} b\"");
	cfg_list_unbrace("  { inet:127.0.0.1:9998, timeout=10s }  ", &out);
	assert_string_equal(buf_str(&out), "inet:127.0.0.1:9998, timeout=10s");
	cfg_list_unbrace(" plain ", &out);
	assert_string_equal(buf_str(&out), "plain");
	buf_free(&err);
	buf_free(&out);
}

static void test_cfg_unknown_warnings(void **state)
{
	struct buf err = BUF_INIT;
	int rc;
	struct cfg *c = load("host = x\n"
			     "hsot = typo\n"
			     "my_rbl = zen.example\n"
			     "items = reject_rbl_client $my_rbl\n"
			     "smtpd_restriction_classes = cls\n"
			     "cls = permit\n"
			     "listen_custom = 127.0.0.1:2600\n"
			     "nosuch.count = 3\n"
			     "custom.nosuch = 3\n",
			     &rc, &err);
	assert_int_equal(rc, 0);
	assert_int_equal(cfg_warning_count(c), 3);
	char *w = xstrdup(cfg_warning(c, 0));
	assert_non_null(strstr(w, "tern.conf, line 2: unused parameter: hsot=typo"));
	assert_non_null(strstr(cfg_warning(c, 1), "line 8: override \"nosuch.count\" for "
						  "undeclared listener (no listen_nosuch)"));
	assert_non_null(strstr(cfg_warning(c, 2), "line 9: unused parameter: custom.nosuch=3"));
	assert_null(cfg_warning(c, 3));
	assert_true(cfg_name_known(c, "cls"));
	assert_true(cfg_name_known(c, "listen_anything"));
	assert_false(cfg_name_known(c, "listen_"));
	assert_false(cfg_name_known(c, "hsot"));
	free(w);
	cfg_free(c);
	buf_free(&err);
}

/* The same file's warnings as postconf gives them (postconf has no line
 * numbers; Tern adds them). */
static void test_cfg_postfix_warnings(void **state)
{
	struct buf err = BUF_INIT;
	int rc;
	struct cfg *c = load(" leading = x\n"
			     "host = ${nosuch?x}\n"
			     "banner = $$nosuch2 $host\n"
			     "zz = ${host?$other} $(count)\n",
			     &rc, &err);
	assert_int_equal(rc, 0);
	const char *want[] = {
	    "/tern.conf, line 1: logical line must not start with whitespace: \" leading = x\"",
	    "/tern.conf, line 2: undefined parameter: nosuch",
	    "/tern.conf, line 4: undefined parameter: other",
	    "/tern.conf, line 4: unused parameter: zz=${host?$other} $(count)",
	};
	assert_int_equal(cfg_warning_count(c), 4);
	for (size_t i = 0; i < 4; i++) {
		const char *got = cfg_warning(c, i);
		assert_memory_equal(got, test_dir, strlen(test_dir));
		assert_string_equal(got + strlen(test_dir), want[i]);
	}
	cfg_free(c);
	/* Long lines are quoted to 30 bytes, as Postfix. */
	c = load("  234567890123456789012345678901\nhost = x\n", &rc, &err);
	assert_int_equal(rc, 0);
	assert_int_equal(cfg_warning_count(c), 1);
	assert_non_null(
	    strstr(cfg_warning(c, 0), "whitespace: \"  2345678901234567890123456789...\""));
	cfg_free(c);
	buf_free(&err);
}

/* lines.c refuses an over-long logical line (cfg has no limit of its own). */
static void test_cfg_long_line(void **state)
{
	struct buf text = BUF_INIT, want = BUF_INIT;

	buf_puts(&text, "host = x\nbanner = ");
	for (size_t i = 0; i <= LINES_MAX_LEN; i += 64)
		buf_puts(&text, "0123456789012345678901234567890123456789012345678901234567890123");
	buf_puts(&text, "\n");
	buf_printf(&want, "D/tern.conf, line 2: logical line longer than %d bytes", LINES_MAX_LEN);
	assert_load_error(buf_str(&text), buf_str(&want));
	buf_free(&text);
	buf_free(&want);
}

/* Loading stays linear: 20,000 settings (user-defined names, half of
 * them referring to the other half, listener overrides, restriction
 * classes, a redefinition) load, validate and warn correctly. */
static void test_cfg_many_settings(void **state)
{
	struct buf text = BUF_INIT, err = BUF_INIT;
	int rc;

	buf_puts(&text, "smtpd_restriction_classes = cls0 cls1 cls2\nlisten_x = 1\n");
	for (int i = 0; i < 20000; i++) {
		if (i % 2 == 0)
			buf_printf(&text, "u%d = v%d\n", i, i);
		else
			buf_printf(&text, "w%d = $u%d-$host\n", i, i - 1);
		if (i % 1000 == 0)
			buf_printf(&text, "cls%d = permit\nx.count = %d\n", i / 1000 % 3,
				   i / 1000 % 10 + 1);
	}
	buf_puts(&text, "u0 = last\n");
	struct cfg *c = load(buf_str(&text), &rc, &err);
	if (rc < 0)
		fail_msg("load: %s", buf_str(&err));
	assert_string_equal(get(c, NULL, "u19998"), "v19998");
	assert_string_equal(get(c, NULL, "w19999"), "v19998-h.example");
	assert_string_equal(get(c, NULL, "w1"), "last-h.example"); /* last setting wins */
	assert_string_equal(get(c, "x", "count"), "10");
	assert_true(cfg_name_known(c, "cls2"));
	assert_true(cfg_is_set(c, "w10001"));
	assert_false(cfg_is_set(c, "w10000"));
	/* Only the w* names are unused. */
	assert_int_equal(cfg_warning_count(c), 10000);
	assert_non_null(strstr(cfg_warning(c, 0), "unused parameter: w1=$u0-$host"));
	struct cfg_entry *v;
	assert_int_equal(cfg_entries(c, CFG_ENTRIES_SET, &v), 20000 + 3 + 3);
	free(v);
	cfg_free(c);
	buf_free(&text);
	buf_free(&err);
}

static void test_cfg_listeners(void **state)
{
	struct buf err = BUF_INIT, out = BUF_INIT;
	struct cfg_list l;
	long long v;
	int rc;
	struct cfg *c = load("listen_smtps = *:465\n"
			     "smtps.timeout = 10s\n"
			     "smtps.flag = yes\n"
			     "listen_submission = 127.0.0.1:587\n"
			     "submission.banner = sub $timeout\n",
			     &rc, &err);
	assert_int_equal(rc, 0);
	assert_int_equal(cfg_warning_count(c), 0);
	assert_int_equal(cfg_get_time(c, "smtps", "timeout", &v, &err), 0);
	assert_int_equal(v, 10);
	assert_int_equal(cfg_get_time(c, NULL, "timeout", &v, &err), 0);
	assert_int_equal(v, 300);
	assert_int_equal(cfg_get_time(c, "smtp", "timeout", &v, &err), 0);
	assert_int_equal(v, 300);
	assert_string_equal(get(c, "submission", "banner"), "sub 300s");
	assert_string_equal(get(c, "smtps", "banner"), "h.example ESMTP");
	assert_string_equal(cfg_get_raw(c, "smtps", "flag"), "yes");
	assert_int_equal(cfg_listeners(c, &l), 0);
	assert_int_equal(l.count, 3);
	assert_string_equal(l.items[0], "smtp");
	assert_string_equal(l.items[1], "smtps");
	assert_string_equal(l.items[2], "submission");
	cfg_list_free(&l);
	cfg_free(c);

	/* Bad override values are caught at load, with their line. */
	char *e = load_error("listen_smtps = *:465\nsmtps.flag = sure\n");
	assert_string_equal(e, "D/tern.conf, line 2: bad boolean value \"sure\" for parameter "
			       "\"flag\"");
	free(e);
	/* Overrides see overrides: $timeout in the listener's view. */
	c = load("listen_smtps = 465\nsmtps.timeout = 7s\nsmtps.banner = t=$timeout\n", &rc, &err);
	assert_int_equal(rc, 0);
	assert_string_equal(get(c, "smtps", "banner"), "t=7s");
	assert_int_equal(cfg_get_path(c, NULL, "spool", &out, &err), 0);
	assert_string_equal(buf_str(&out) + strlen(test_dir), "/spool");
	assert_memory_equal(buf_str(&out), test_dir, strlen(test_dir));
	cfg_free(c);
	buf_free(&err);
	buf_free(&out);
}

static void test_cfg_entries_and_check(void **state)
{
	struct buf err = BUF_INIT;
	struct cfg_entry *v;
	int rc;
	struct cfg *c =
	    load("timeout = 9s\nzz_user = 1\nlisten_x = 1\nbanner = $zz_user\n", &rc, &err);
	assert_int_equal(rc, 0);
	size_t n = cfg_entries(c, CFG_ENTRIES_SET, &v);
	assert_int_equal(n, 4);
	assert_string_equal(v[0].name, "banner");
	assert_string_equal(v[1].name, "listen_x");
	assert_string_equal(v[2].name, "timeout");
	assert_string_equal(v[2].value, "9s");
	assert_int_equal(v[2].line, 1);
	assert_string_equal(v[3].name, "zz_user");
	assert_null(v[3].param);
	free(v);
	n = cfg_entries(c, 0, &v);
	assert_int_equal(n, cfg_param_count(c) + 2); /* + listen_x, zz_user */
	free(v);
	n = cfg_entries(c, CFG_ENTRIES_DEFAULTS, &v);
	assert_int_equal(n, cfg_param_count(c));
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].name, "timeout") == 0)
			assert_string_equal(v[i].value, "300s");
	free(v);
	assert_int_equal(cfg_check(c, "count", "7", &err), 0);
	assert_int_equal(cfg_check(c, "count", "seven", &err), -1);
	assert_string_equal(buf_str(&err), "bad numerical value \"seven\" for parameter \"count\"");
	buf_set(&err, "");
	assert_int_equal(cfg_check(c, "x.flag", "nope", &err), -1);
	assert_int_equal(cfg_check(c, "unknown_thing", "anything", &err), 0);
	cfg_free(c);
	buf_free(&err);
}

static void test_cfg_file_edit(void **state)
{
	struct buf err = BUF_INIT;
	char *names[] = {"banner", "count", "flag", "timeout"};
	char *values[] = {"new banner", NULL, "yes", "10s"};
	char *text;

	write_file("# keep me\n"
		   "banner = old\n"
		   "# a comment inside the logical line\n"
		   "  continued\n"
		   "\n"
		   "  # trailing indented comment\n"
		   "count = 3\n"
		   "#count = commented\n"
		   "host = h\n"
		   "banner = duplicate\n"
		   "items = x");
	assert_int_equal(cfg_file_edit(test_path, names, values, 4, &err), 0);
	text = read_file();
	assert_string_equal(text, "# keep me\n"
				  "banner = new banner\n"
				  "# a comment inside the logical line\n"
				  "\n"
				  "  # trailing indented comment\n"
				  "#count = commented\n"
				  "host = h\n"
				  "items = x\n"
				  "flag = yes\n"
				  "timeout = 10s\n");
	free(text);
	/* The result parses back to what was asked. */
	struct cfg *c = cfg_new(test_reg);
	assert_int_equal(cfg_load_file(c, test_path, 0, &err), 0);
	assert_string_equal(cfg_get_raw(c, NULL, "banner"), "new banner");
	assert_false(cfg_is_set(c, "count"));
	cfg_free(c);

	/* Comment and blank lines between continuation lines are kept after
	 * the new line (as postconf -e), or alone when removed (-X), also
	 * those of a dropped later duplicate. */
	write_file("host = a\n  # c\n\n  b\n# after\nbanner = x\n");
	char *n4[] = {"host"}, *v4[] = {"z"};
	assert_int_equal(cfg_file_edit(test_path, n4, v4, 1, &err), 0);
	text = read_file();
	assert_string_equal(text, "host = z\n  # c\n\n# after\nbanner = x\n");
	free(text);
	write_file("host = a\n  # c\n\n  b\n  # after\n\nbanner = x\n#d\n host = q\n");
	v4[0] = NULL;
	assert_int_equal(cfg_file_edit(test_path, n4, v4, 1, &err), 0);
	text = read_file();
	assert_string_equal(text, "  # c\n\n  # after\n\nbanner = x\n#d\n host = q\n");
	free(text);
	write_file("host = a\n# c\n  b\nhost = d\n #e\n  f\nx = 1\n");
	v4[0] = "z";
	assert_int_equal(cfg_file_edit(test_path, n4, v4, 1, &err), 0);
	text = read_file();
	assert_string_equal(text, "host = z\n# c\n #e\nx = 1\n");
	free(text);

	/* Missing file: created. */
	unlink(test_path);
	char *n1[] = {"host"}, *v1[] = {"x.example"};
	assert_int_equal(cfg_file_edit(test_path, n1, v1, 1, &err), 0);
	text = read_file();
	assert_string_equal(text, "host = x.example\n");
	free(text);
	/* Malformed edits are refused and the file is untouched. */
	char *n2[] = {"bad name"}, *v2[] = {"1"};
	assert_int_equal(cfg_file_edit(test_path, n2, v2, 1, &err), -1);
	n2[0] = "#host";
	assert_int_equal(cfg_file_edit(test_path, n2, v2, 1, &err), -1);
	char *n3[] = {"host"}, *v3[] = {"two\nlines"};
	assert_int_equal(cfg_file_edit(test_path, n3, v3, 1, &err), -1);
	text = read_file();
	assert_string_equal(text, "host = x.example\n");
	free(text);
	buf_free(&err);
}

/* The registry ternd uses: names unique and well formed, help present,
 * every default valid for its type (cfg_validate on an empty config). */
static void test_params_registry(void **state)
{
	struct cfg *c = cfg_new(tern_params);
	struct buf err = BUF_INIT;
	size_t n = cfg_param_count(c);

	assert_true(n >= 250);
	for (size_t i = 0; i < n; i++) {
		const struct cfg_param *p = &tern_params[i];
		assert_non_null(p->help);
		assert_true(strlen(p->help) > 5);
		assert_non_null(p->def);
		for (const char *cp = p->name; *cp; cp++)
			assert_true(islower((unsigned char)*cp) || isdigit((unsigned char)*cp) ||
				    *cp == '_' || (*cp >= 'A' && *cp <= 'Z'));
		for (size_t j = i + 1; j < n; j++)
			if (strcmp(p->name, tern_params[j].name) == 0)
				fail_msg("duplicate parameter %s", p->name);
		if (p->type == CFG_TIME)
			assert_non_null(p->unit);
		assert_ptr_equal(cfg_param_find(c, p->name), p);
	}
	if (cfg_validate(c, &err) < 0)
		fail_msg("registry defaults: %s", buf_str(&err));
	/* Spot checks against Postfix's defaults. */
	assert_string_equal(cfg_get_raw(c, NULL, "smtpd_banner"), "$myhostname ESMTP $mail_name");
	assert_string_equal(cfg_get_raw(c, NULL, "maximal_queue_lifetime"), "5d");
	assert_string_equal(
	    cfg_get_raw(c, NULL, "smtpd_relay_restrictions"),
	    "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination");
	long long v;
	assert_int_equal(cfg_get_time(c, NULL, "maximal_queue_lifetime", &v, &err), 0);
	assert_int_equal(v, 5 * 86400);
	int b;
	assert_int_equal(cfg_get_bool(c, NULL, "smtpd_helo_required", &b, &err), 0);
	assert_int_equal(b, 0);
	struct buf host = BUF_INIT;
	assert_int_equal(cfg_get_str(c, NULL, "myhostname", &host, &err), 0);
	assert_non_null(strchr(buf_str(&host), '.'));

	/* Postfix's raw parameters are shown and returned as written. */
	assert_true(cfg_is_raw(c, "smtpd_expansion_filter"));
	assert_true(cfg_is_raw(c, "forward_path"));
	assert_false(cfg_is_raw(c, "smtpd_banner"));
	assert_int_equal(cfg_get_str(c, NULL, "forward_path", &host, &err), 0);
	assert_string_equal(buf_str(&host), cfg_get_raw(c, NULL, "forward_path"));
	cfg_free(c);

	/* mydomain follows a configured myhostname (cfg_set), and one from
	 * a parsed file. */
	c = cfg_new(tern_params);
	cfg_set(c, "myhostname", "mx.example.org", NULL, 0);
	assert_int_equal(cfg_get_str(c, NULL, "mydomain", &host, &err), 0);
	assert_string_equal(buf_str(&host), "example.org");
	assert_int_equal(cfg_get_str(c, NULL, "smtpd_banner", &host, &err), 0);
	assert_string_equal(buf_str(&host), "mx.example.org ESMTP Tern");
	cfg_free(c);
	c = cfg_new(tern_params);
	assert_int_equal(cfg_parse_string(c, "t", "myhostname = mx.example.net\n", &err), 0);
	assert_int_equal(cfg_get_str(c, NULL, "mydomain", &host, &err), 0);
	assert_string_equal(buf_str(&host), "example.net");
	cfg_free(c);
	buf_free(&host);
	buf_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cfg_syntax),
	    cmocka_unit_test(test_cfg_syntax_errors),
	    cmocka_unit_test(test_cfg_expansion),
	    cmocka_unit_test(test_cfg_expansion_errors),
	    cmocka_unit_test(test_cfg_empty_macro_name),
	    cmocka_unit_test(test_cfg_postfix_warnings),
	    cmocka_unit_test(test_cfg_long_line),
	    cmocka_unit_test(test_cfg_many_settings),
	    cmocka_unit_test(test_cfg_typed_values),
	    cmocka_unit_test(test_cfg_typed_errors),
	    cmocka_unit_test(test_cfg_list_split),
	    cmocka_unit_test(test_cfg_unknown_warnings),
	    cmocka_unit_test(test_cfg_listeners),
	    cmocka_unit_test(test_cfg_entries_and_check),
	    cmocka_unit_test(test_cfg_file_edit),
	    cmocka_unit_test(test_params_registry),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
