/* cmd_map.c - "tern map": build indexed tables and look keys up, with
 * postmap's habits ("postmap cdb:f" -> "tern map build cdb:f", "postmap
 * -q KEY type:name" -> "tern map -q KEY type:name").
 *
 * Exit status: query 0 found (with "-q -": any key found), 1 not found,
 * 2 on errors (postmap says 1 for both; scripts need to tell them apart);
 * build 0 ok, 1 on errors. Bad source lines are warnings, as postmap.
 */
#include "buf.h"
#include "log.h"
#include "table.h"
#include "table_source.h"
#include "tern.h"

#include <stdio.h>
#include <string.h>

#define MAP_KEY_MAX 65536 /* stdin keys longer than this are errors */

/* "type:file" -> the file for the build; bare "file" means hash:, as
 * postmap's default_database_type. */
static int map_build(const char *spec)
{
	const char *colon = strchr(spec, ':');
	struct buf type = BUF_INIT, err = BUF_INIT;
	const char *path = colon ? colon + 1 : spec;
	int rc = 1;

	buf_append(&type, spec, colon ? (size_t)(colon - spec) : 0);
	if (type.len == 0)
		buf_set(&type, "hash");
	if (strcmp(type.data, "texthash") == 0) {
		tern_error("%s: texthash tables are read directly; no build needed", spec);
		rc = 0;
	} else if (strcmp(type.data, "cdb") != 0 && strcmp(type.data, "hash") != 0) {
		tern_error("%s: cannot build \"%s\" tables (only cdb: and hash:)", spec, type.data);
	} else if (*path == 0) {
		tern_error("%s: missing file name", spec);
	} else if (table_cdb_build(path, &err) < 0) {
		tern_error("%s", err.data);
	} else {
		rc = 0;
	}
	buf_free(&type);
	buf_free(&err);
	return rc;
}

/* One line of stdin without its newline; 1 ok, 0 EOF, -1 too long. */
static int map_read_key(struct buf *key)
{
	int c, got = 0;

	buf_reset(key);
	while ((c = getchar()) != EOF) {
		got = 1;
		if (c == '\n')
			break;
		if (key->len >= MAP_KEY_MAX)
			return -1;
		buf_putc(key, c);
	}
	return got;
}

/* "postmap -q - type:name": "key<TAB>value" for each key found. */
static int map_query_stdin(struct table *t)
{
	struct buf key = BUF_INIT, value = BUF_INIT, err = BUF_INIT;
	int rc, status = 1;

	while ((rc = map_read_key(&key)) > 0) {
		int found = table_lookup(t, key.data, &value, &err);
		if (found == TABLE_ERROR) {
			tern_error("%s: lookup \"%s\": %s", t->spec, key.data, err.data);
			status = 2;
			break;
		}
		if (found == TABLE_FOUND) {
			printf("%s\t%s\n", key.data, value.data);
			status = 0;
		}
	}
	if (rc < 0) {
		tern_error("stdin: key longer than %d bytes", MAP_KEY_MAX);
		status = 2;
	}
	buf_free(&key);
	buf_free(&value);
	buf_free(&err);
	return status;
}

static int map_query(const char *spec, const char *key)
{
	struct buf value = BUF_INIT, err = BUF_INIT;
	struct table *t = table_open(spec, &err);
	int status = 2;

	if (t == NULL) {
		tern_error("%s", err.data);
		goto out;
	}
	if (key == NULL || strcmp(key, "-") == 0) {
		status = map_query_stdin(t);
		goto out;
	}
	switch (table_lookup(t, key, &value, &err)) {
	case TABLE_FOUND:
		printf("%s\n", value.data);
		status = 0;
		break;
	case TABLE_NOTFOUND:
		status = 1;
		break;
	default:
		tern_error("%s: lookup \"%s\": %s", spec, key, err.data);
		break;
	}
out:
	table_close(t);
	buf_free(&value);
	buf_free(&err);
	return status;
}

int cmd_map(int argc, char **argv)
{
	const char *verb = NULL, *key = NULL;
	int i = 1;

	if (i < argc && (strcmp(argv[i], "build") == 0 || strcmp(argv[i], "query") == 0))
		verb = argv[i++];
	for (; i < argc && argv[i][0] == '-' && argv[i][1]; i += 2) {
		if (strcmp(argv[i], "-q") != 0 || i + 1 >= argc) {
			tern_usage("map");
			return 2;
		}
		key = argv[i + 1];
	}
	if (argc - i != 1 || (verb && strcmp(verb, "build") == 0 && key)) {
		tern_usage("map");
		return 2;
	}
	if (verb == NULL)
		verb = key ? "query" : "build";
	if (strcmp(verb, "build") == 0)
		return map_build(argv[i]);
	return map_query(argv[i], key);
}
