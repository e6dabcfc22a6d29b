/* cfg_impl.h - internals shared by cfg.c, cfg_expand.c and cfg_value.c.
 *
 * Not for other modules: use cfg.h. A struct cfg keeps one cfg_setting
 * per name set in the file (a later line replaces an earlier one).
 */
#ifndef TERN_CFG_IMPL_H
#define TERN_CFG_IMPL_H

#include "cfg.h"

#include <stdarg.h>

struct cfg_setting {
	char *name;
	char *value; /* raw, continuation lines joined with a space */
	char *file;  /* NULL when given on the command line */
	int line;
};

struct cfg {
	const struct cfg_param *reg;
	size_t nreg;
	const struct cfg_param **sorted; /* reg sorted by name, for bsearch */
	char **dyn;			 /* dynamic defaults, by registry index */
	struct cfg_setting *set;	 /* in file order */
	size_t nset, capset;
	size_t *index;		 /* hash of set[] by name: slot = set index + 1, 0 = free */
	size_t capindex;	 /* slots, a power of two, at least twice nset */
	struct cfg_list classes; /* smtpd_restriction_classes, sorted */
	char *dir;		 /* config directory */
	char *file;		 /* file loaded */
	char **warn;
	size_t nwarn, capwarn;
};

/* After settings change: recompute dynamic defaults and the restriction
 * classes, which may depend on any setting. */
void cfg_refresh(struct cfg *c);
const char *cfg_param_default(const struct cfg *c, const struct cfg_param *p);
struct cfg_setting *cfg_setting_find(const struct cfg *c, const char *name);
const struct cfg_param *cfg_param_for(const struct cfg *c, const char *name);
/* Is p (may be NULL) one of Postfix's raw parameters? */
int cfg_param_raw(const struct cfg_param *p);
void cfg_where(const struct cfg *c, const char *listener, const char *name, struct buf *err);
void cfg_warn(struct cfg *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Check an expanded value against p's type; err gets the reason. */
int cfg_value_check(const struct cfg_param *p, const char *name, const char *value,
		    struct buf *err);

#endif
