/* pwent.h - thread-safe user lookups (getpwnam_r/getpwuid_r with a buffer
 * that grows on ERANGE).
 *
 * ternd looks users up from several delivery threads at once, where
 * getpwnam()'s static result could be overwritten by another thread's
 * lookup between the call and the use of pw_dir. The result separates
 * "no such user" (a bounce) from a name-service failure (a deferral).
 */
#ifndef TERN_PWENT_H
#define TERN_PWENT_H

#include <pwd.h>
#include <sys/types.h>

struct pwent {
	struct passwd pw;
	char *mem; /* owned storage behind pw's strings */
};

/* 1 found (p->pw valid until pwent_free), 0 no such user, -1 lookup error
 * (errno set). */
int pwent_by_name(const char *name, struct pwent *p);
int pwent_by_uid(uid_t uid, struct pwent *p);
void pwent_free(struct pwent *p);

#endif
