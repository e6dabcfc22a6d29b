/* cmd_passwd.c - "tern passwd [-m yescrypt|sha512] [-d] FILE USER": add,
 * change (-d: delete) USER in the SMTP AUTH password file that
 * smtpd_sasl_type = passwd reads (smtpd_sasl.c). The password is the
 * first line of standard input, never an argument (ps, shell history).
 * Entries are "USER:HASH" with a crypt(3) hash: yescrypt by default,
 * sha512-crypt for systems whose libcrypt lacks it.
 * The file is replaced atomically (temporary file, fsync, rename), keeps
 * its mode (new files: 0640) and may be edited while ternd runs: every
 * AUTH reads it anew.
 */
#include "tern.h"

#include "buf.h"
#include "fileio.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int passwd_read_secret(struct buf *out)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n = getline(&line, &cap, stdin);

	if (n < 0) {
		free(line);
		return -1;
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = 0;
	buf_puts(out, line);
	explicit_bzero(line, cap);
	free(line);
	return 0;
}

/* The file without USER's line, then the new line (unless deleting). */
static int passwd_rewrite(const char *path, const char *user, const char *entry, int *found,
			  struct buf *out)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0, ul = strlen(user);

	*found = 0;
	if (f == NULL && errno != ENOENT) {
		tern_error("%s: %m", path);
		return -1;
	}
	while (f && getline(&line, &cap, f) >= 0) {
		if (strncmp(line, user, ul) == 0 && line[ul] == ':') {
			*found = 1;
			continue;
		}
		buf_puts(out, line);
		if (out->len && out->data[out->len - 1] != '\n')
			buf_putc(out, '\n');
	}
	free(line);
	if (f)
		fclose(f);
	if (entry)
		buf_printf(out, "%s\n", entry);
	return 0;
}

static int passwd_replace(const char *path, const struct buf *data)
{
	struct buf tmp = BUF_INIT;
	struct stat st;
	mode_t mode = stat(path, &st) == 0 ? st.st_mode & 07777 : 0640;
	int fd, rc = -1;

	buf_printf(&tmp, "%s.tmp.%ld", path, (long)getpid());
	fd = open(buf_str(&tmp), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0) {
		tern_error("%s: %m", buf_str(&tmp));
		goto out;
	}
	if (fchmod(fd, mode) < 0 || fileio_write_all(fd, data->data, data->len) < 0 ||
	    fsync(fd) < 0 || close(fd) < 0) {
		tern_error("%s: %m", buf_str(&tmp));
		unlink(buf_str(&tmp));
		goto out;
	}
	if (stat(path, &st) == 0 && chown(buf_str(&tmp), st.st_uid, st.st_gid) < 0) {
		/* not root: the file stays ours, as it was */
	}
	if (rename(buf_str(&tmp), path) < 0 || fileio_sync_parent(path) < 0) {
		tern_error("%s: %m", path);
		unlink(buf_str(&tmp));
		goto out;
	}
	rc = 0;
out:
	buf_free(&tmp);
	return rc;
}

int cmd_passwd(int argc, char **argv)
{
	const char *prefix = "$y$", *file, *user;
	struct buf secret = BUF_INIT, data = BUF_INIT, entry = BUF_INIT;
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data *cd = NULL;
	const char *hash;
	int opt, del = 0, found, rc = 1;

	optind = 1;
	while ((opt = getopt(argc, argv, "dm:")) != -1) {
		if (opt == 'd')
			del = 1;
		else if (opt == 'm' && strcmp(optarg, "yescrypt") == 0)
			prefix = "$y$";
		else if (opt == 'm' && strcmp(optarg, "sha512") == 0)
			prefix = "$6$";
		else
			return tern_usage("passwd");
	}
	if (argc - optind != 2)
		return tern_usage("passwd");
	file = argv[optind];
	user = argv[optind + 1];
	/* ':' separates the fields; control characters and spaces would not
	 * survive an SMTP AUTH exchange or the log. */
	for (const char *p = user; *p; p++)
		if (*p == ':' || (unsigned char)*p <= ' ' || *p == 0x7f) {
			tern_error("bad user name \"%s\"", user);
			return 1;
		}
	if (*user == 0 || *user == '#') {
		tern_error("bad user name \"%s\"", user);
		return 1;
	}
	if (!del) {
		if (passwd_read_secret(&secret) < 0 || secret.len == 0) {
			tern_error("no password on standard input");
			goto out;
		}
		cd = calloc(1, sizeof(*cd));
		if (cd == NULL ||
		    crypt_gensalt_rn(prefix, 0, NULL, 0, salt, sizeof(salt)) == NULL ||
		    (hash = crypt_r(buf_str(&secret), salt, cd)) == NULL || *hash == '*') {
			tern_error("crypt(3) cannot make a %s hash", prefix);
			goto out;
		}
		buf_printf(&entry, "%s:%s", user, hash);
	}
	if (passwd_rewrite(file, user, del ? NULL : buf_str(&entry), &found, &data) < 0)
		goto out;
	if (del && !found) {
		tern_error("%s: no user \"%s\"", file, user);
		goto out;
	}
	if (passwd_replace(file, &data) < 0)
		goto out;
	rc = 0;
out:
	if (secret.data)
		explicit_bzero(secret.data, secret.len);
	if (cd)
		explicit_bzero(cd, sizeof(*cd));
	free(cd);
	buf_free(&secret);
	buf_free(&data);
	buf_free(&entry);
	return rc;
}
