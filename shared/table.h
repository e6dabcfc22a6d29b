/* table.h - lookup tables "type:name", one interface for every program.
 *
 * Types (as Postfix's, same file syntax and matching): texthash, cdb
 * (with hash: as an alias, built as cdb), cidr, pcre, regexp, inline,
 * static, socketmap, sqlite, unix (passwd.byname, group.byname).
 * table_open() parses the spec, loads the
 * table and remembers the file it came from; table_lookup() matches one
 * key exactly as "postmap -q KEY type:name" would (case folding for the
 * indexed types, whole-string matching for pattern types). Lookup-key
 * order for addresses, domains and clients lives in table_keys.h.
 *
 * Backends are a table of function pointers (struct table_ops); file
 * backends get their source as logical lines (lines.h) whether it is a
 * file or an inline "type:{ {rule}, {rule} }" list.
 *
 * Tables may be shared between threads: table_lookup() and table_reload()
 * take the table's mutex.
 *
 * Pitfall: lookups return TABLE_ERROR for a failed external lookup
 * (socketmap/sqlite down): callers must treat that as a temporary
 * failure, never as "not found".
 */
#ifndef TERN_TABLE_H
#define TERN_TABLE_H

#include "buf.h"
#include "lines.h"

#include <pthread.h>
#include <sys/types.h>
#include <time.h>

enum table_status {
	TABLE_ERROR = -1,   /* temporary failure; message in err */
	TABLE_NOTFOUND = 0, /* no match */
	TABLE_FOUND = 1,    /* value holds the result */
};

/* table_ops.flags */
#define TABLE_OPS_PATTERN 0x1 /* whole-string match (pcre, regexp, cidr...) */
#define TABLE_OPS_NOFOLD 0x2  /* keys are not case-folded before lookup */
#define TABLE_OPS_FILE 0x4    /* name is a file (or an inline {...} list) */
#define TABLE_OPS_LINES 0x8   /* load() receives the source as logical lines */

struct table;

struct table_ops {
	const char *type;
	int flags;
	/* Load the table. With TABLE_OPS_LINES, src is the source (a file or
	 * the rules of "type:{...}"); otherwise src is NULL and t->name is
	 * the argument after "type:". Errors name file and line. */
	int (*load)(struct table *t, struct lines *src, struct buf *err);
	int (*lookup)(struct table *t, const char *key, struct buf *value, struct buf *err);
	void (*free)(struct table *t);
};

struct table {
	const struct table_ops *ops;
	char *spec;   /* "type:name" as given */
	char *type;   /* as given (e.g. "hash") */
	char *name;   /* the part after "type:" */
	char *path;   /* file watched for changes, NULL if none */
	time_t mtime; /* of path when loaded */
	long mtime_ns;
	ino_t ino;
	void *priv;	      /* backend state */
	char *unavailable;    /* why the last load failed (lenient open), else NULL */
	pthread_mutex_t lock; /* lookups and reloads are serialised: several
			       * backends keep per-lookup state (cdb position,
			       * socketmap connection) */
};

struct table *table_open(const char *spec, struct buf *err);
/* As Postfix: a table whose file cannot be loaded does not stop the
 * program. The failure is logged ("TYPE:NAME is unavailable. REASON"),
 * every lookup fails temporarily (TABLE_ERROR), and table_reload() tries
 * again once the file appears or changes. A bad spec (no type, unknown
 * type) still returns NULL with err set. */
struct table *table_open_lenient(const char *spec, struct buf *err);
int table_lookup(struct table *t, const char *key, struct buf *value, struct buf *err);
/* Reload when the file changed (or always with force); on failure the
 * old contents stay in use and err says why. Returns 1 reloaded, 0 not
 * needed, -1 failed. */
int table_reload(struct table *t, int force, struct buf *err);
void table_close(struct table *t);
int table_is_pattern(const struct table *t);
const struct table_ops *table_ops_find(const char *type);

/* Split "type:{ {a}, {b} }" or "{ a, b }" style inline text into elements,
 * as Postfix's inline: and pcre:{...} forms. Returns -1 on unbalanced
 * braces. Each element has its outer braces removed and is trimmed. */
#define TABLE_INLINE_BRACED 0x1 /* every element must be a {...} group */
int table_inline_split(const char *text, int flags, char ***items, size_t *count, struct buf *err);
void table_inline_free(char **items, size_t count);

#endif
