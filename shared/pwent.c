/* pwent.c - thread-safe user lookups (see pwent.h). */
#include "pwent.h"
#include "buf.h"

#include <errno.h>
#include <stdlib.h>

static int pwent_lookup(const char *name, uid_t uid, struct pwent *p)
{
	struct passwd *res = NULL;
	size_t size = 1024;
	int rc;

	p->mem = NULL;
	for (;;) {
		p->mem = xrealloc(p->mem, size);
		rc = name ? getpwnam_r(name, &p->pw, p->mem, size, &res)
			  : getpwuid_r(uid, &p->pw, p->mem, size, &res);
		if (rc != ERANGE || size >= (1 << 20))
			break;
		size *= 2;
	}
	if (rc == 0 && res != NULL)
		return 1;
	free(p->mem);
	p->mem = NULL;
	/* glibc reports "no such entry" as 0 with NULL, some as ENOENT/ESRCH */
	if (rc == 0 || rc == ENOENT || rc == ESRCH || rc == EBADF || rc == EPERM)
		return 0;
	errno = rc;
	return -1;
}

int pwent_by_name(const char *name, struct pwent *p)
{
	return pwent_lookup(name, 0, p);
}

int pwent_by_uid(uid_t uid, struct pwent *p)
{
	return pwent_lookup(NULL, uid, p);
}

void pwent_free(struct pwent *p)
{
	free(p->mem);
	p->mem = NULL;
}
