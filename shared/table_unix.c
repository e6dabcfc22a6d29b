/* table_unix.c - unix:passwd.byname and unix:group.byname, Postfix's
 * dict_unix: look a user or group up through the system's name service.
 *
 * Results have the /etc/passwd and /etc/group line shape
 * ("name:passwd:uid:gid:gecos:dir:shell", "name:passwd:gid:m1,m2"), as
 * "postmap -q root unix:passwd.byname" prints them. This is what makes
 * Postfix's default local_recipient_maps work. A name service failure
 * (not "no such user") is a temporary error, never "not found".
 */
#include "pwent.h"
#include "table.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>

enum table_unix_kind { TABLE_UNIX_PASSWD = 1, TABLE_UNIX_GROUP };

static int table_unix_load(struct table *t, struct lines *src, struct buf *err)
{
	static int kinds[] = {TABLE_UNIX_PASSWD, TABLE_UNIX_GROUP};

	if (strcmp(t->name, "passwd.byname") == 0)
		t->priv = &kinds[0];
	else if (strcmp(t->name, "group.byname") == 0)
		t->priv = &kinds[1];
	else {
		buf_printf(err,
			   "unknown table: %s (expected unix:passwd.byname or unix:group.byname)",
			   t->spec);
		return -1;
	}
	return 0;
}

static int table_unix_getpw(const char *key, struct buf *value, struct buf *err)
{
	struct pwent pe;
	int rc = pwent_by_name(key, &pe);

	if (rc < 0) {
		buf_printf(err, "unix:passwd.byname lookup of \"%s\": %s", key, strerror(errno));
		return TABLE_ERROR;
	}
	if (rc == 0)
		return TABLE_NOTFOUND;
	buf_printf(value, "%s:%s:%ld:%ld:%s:%s:%s", pe.pw.pw_name, pe.pw.pw_passwd,
		   (long)pe.pw.pw_uid, (long)pe.pw.pw_gid, pe.pw.pw_gecos, pe.pw.pw_dir,
		   pe.pw.pw_shell);
	pwent_free(&pe);
	return TABLE_FOUND;
}

/* getgrnam_r with a scratch buffer that grows on ERANGE. */

static int table_unix_getgr(const char *key, struct buf *value, struct buf *err)
{
	struct group gr, *res = NULL;
	size_t size = 1024;
	int rc;

	for (;;) {
		char *scratch = xmalloc(size);
		rc = getgrnam_r(key, &gr, scratch, size, &res);
		if (rc == 0 && res != NULL) {
			buf_printf(value, "%s:%s:%ld:", gr.gr_name, gr.gr_passwd, (long)gr.gr_gid);
			for (char **m = gr.gr_mem; *m; m++)
				buf_printf(value, "%s%s", m == gr.gr_mem ? "" : ",", *m);
		}
		free(scratch);
		if (rc != ERANGE || size >= 1 << 20)
			break;
		size *= 2;
	}
	if (rc != 0 && rc != ENOENT && rc != ESRCH) {
		buf_printf(err, "unix:group.byname lookup of \"%s\": %s", key, strerror(rc));
		return TABLE_ERROR;
	}
	return res != NULL ? TABLE_FOUND : TABLE_NOTFOUND;
}

static int table_unix_lookup(struct table *t, const char *key, struct buf *value, struct buf *err)
{
	if (*(int *)t->priv == TABLE_UNIX_PASSWD)
		return table_unix_getpw(key, value, err);
	return table_unix_getgr(key, value, err);
}

/* priv points at static storage: nothing to free. */
static void table_unix_free(struct table *t)
{
	t->priv = NULL;
}

const struct table_ops table_unix_ops = {
    .type = "unix",
    .flags = 0,
    .load = table_unix_load,
    .lookup = table_unix_lookup,
    .free = table_unix_free,
};
