/* cfg.h - Postfix main.cf-style configuration for every Tern program.
 *
 * A struct cfg holds the settings of one file ("name = value" logical
 * lines, last setting wins) on top of a registry of known parameters
 * (name, type, default, help) that the caller supplies: ternd uses
 * tern_params[] (params.h), other programs bring their own. Values are
 * kept raw and expanded on request ($name, ${name}, $(name), ${name?x},
 * ${name:x}, ${name?{x}:{y}}, $$), so "tern conf" can print them as
 * written. cfg_load() validates every typed value, so a bad config is
 * refused at load with "FILE, line N: ..." instead of failing later.
 *
 * Listeners: "listen_NAME = addr:port ..." declares listener NAME, and
 * "NAME.param = value" overrides param for that listener only (master.cf
 * -o style); getters take a listener name (or NULL for the global view).
 *
 * Raw parameters: Postfix's "raw" parameters (forward_path,
 * mailbox_command, luser_relay, smtpd_reject_footer, smtpd_expansion_filter
 * ...; see cfg_is_raw()) are never expanded here: their $names are filled
 * in at run time by the program that uses them, so getters return them as
 * written, as postconf does.
 *
 * Pitfalls: getters return -1 with err set for unknown names and for
 * expansion loops; list items keep their {braces} (cfg_list_unbrace()).
 */
#ifndef TERN_CFG_H
#define TERN_CFG_H

#include "buf.h"

#include <stddef.h>

struct cfg;

enum cfg_type {
	CFG_STR,    /* any text */
	CFG_BOOL,   /* yes | no (any case), as Postfix */
	CFG_INT,    /* decimal integer within [min, max] */
	CFG_TIME,   /* integer + optional unit ms s m h d w; bare = param's unit */
	CFG_SIZE,   /* bytes; Tern also accepts k/m/g (1024-based) suffixes */
	CFG_LIST,   /* items separated by commas and/or white space, {grouping} */
	CFG_TABLES, /* list whose items are type:name lookup tables */
	CFG_LISTEN, /* list of listener addresses: host:port, [v6]:port, *:port, port */
};

/* cfg_param.flags */
#define CFG_P_TERN 0x1 /* Tern's own parameter, not one of Postfix's */

struct cfg_param {
	const char *name;
	enum cfg_type type;
	const char *def;  /* raw default; may use $other like Postfix's */
	const char *help; /* one line */
	long long min;	  /* INT, SIZE: bounds; TIME: bounds in seconds */
	long long max;	  /* 0 = no upper bound */
	const char *unit; /* TIME: unit of a bare number ("s", "ms", "d", ...) */
	unsigned flags;
	/* Dynamic default (myhostname...), recomputed after each load so it
	 * can depend on other settings; def is what "-d" shows if it fails. */
	void (*dyn)(const struct cfg *c, const struct cfg_param *p, struct buf *out);
};

/* One split list value. Items are trimmed and keep any {braces}. */
struct cfg_list {
	char **items;
	size_t count;
};

/* What cfg_entries() returns, for printing. */
struct cfg_entry {
	const char *name;
	const char *value;	       /* raw effective value */
	const char *def;	       /* raw default, NULL if none */
	const struct cfg_param *param; /* NULL for user-defined names */
	const char *file;	       /* where set, NULL for defaults */
	int line;
};

#define CFG_ENTRIES_SET 0x1	 /* only names set in the file */
#define CFG_ENTRIES_DEFAULTS 0x2 /* only the registry, values = defaults */

/* registry: array terminated by an entry with name NULL. */
struct cfg *cfg_new(const struct cfg_param *registry);
void cfg_free(struct cfg *c);

/* Load DIR/tern.conf (cfg_load_dir, name chosen by the caller) or a file.
 * A missing file is not an error when missing_ok. Parses, then validates
 * all values. Returns 0, or -1 with err = "FILE, line N: ...". Warnings
 * are collected, in Postfix's words, see cfg_warning(): "unused parameter:
 * name=value" (a name nothing reads), "undefined parameter: name" (a
 * $reference to a name neither registered nor set) and "logical line must
 * not start with whitespace: "..."", each after "FILE, line N: ". */
int cfg_load_dir(struct cfg *c, const char *dir, const char *file, int missing_ok, struct buf *err);
int cfg_load_file(struct cfg *c, const char *path, int missing_ok, struct buf *err);
/* Parse text as if it were the file "name"; no validation (cfg_validate),
 * no unused/undefined parameter warnings. */
int cfg_parse_string(struct cfg *c, const char *name, const char *text, struct buf *err);
/* Set one value as if read from file:line (file NULL = command line). */
void cfg_set(struct cfg *c, const char *name, const char *value, const char *file, int line);
/* Validate every setting and default; first error wins. */
int cfg_validate(const struct cfg *c, struct buf *err);
/* Validate one name=value pair in the context of c (for "tern conf -e"). */
int cfg_check(const struct cfg *c, const char *name, const char *value, struct buf *err);

size_t cfg_warning_count(const struct cfg *c);
const char *cfg_warning(const struct cfg *c, size_t i);

/* The config directory (relative paths resolve against it), or ".". */
const char *cfg_dir(const struct cfg *c);
/* The file last loaded, or NULL. */
const char *cfg_file(const struct cfg *c);

/* Registry lookups. */
const struct cfg_param *cfg_param_find(const struct cfg *c, const char *name);
size_t cfg_param_count(const struct cfg *c);
/* A name the file may set: registered, listen_*, a listener override, or
 * a restriction class. */
int cfg_name_known(const struct cfg *c, const char *name);
/* Is name set in the file (or by cfg_set)? */
int cfg_is_set(const struct cfg *c, const char *name);
/* Is name (or the parameter a listener override "L.name" sets) one of
 * Postfix's raw parameters, whose value is never $-expanded here? */
int cfg_is_raw(const struct cfg *c, const char *name);

/* Getters. listener: NULL for global, else that listener's view (its
 * "listener.name" override, else the global value; $refs see overrides
 * too). All return 0, or -1 with err naming the setting's file and line. */
const char *cfg_get_raw(const struct cfg *c, const char *listener, const char *name);
int cfg_get_str(const struct cfg *c, const char *listener, const char *name, struct buf *out,
		struct buf *err);
int cfg_get_bool(const struct cfg *c, const char *listener, const char *name, int *out,
		 struct buf *err);
int cfg_get_int(const struct cfg *c, const char *listener, const char *name, long long *out,
		struct buf *err);
int cfg_get_time(const struct cfg *c, const char *listener, const char *name, long long *secs,
		 struct buf *err);
int cfg_get_time_ms(const struct cfg *c, const char *listener, const char *name, long long *msecs,
		    struct buf *err);
int cfg_get_size(const struct cfg *c, const char *listener, const char *name, long long *bytes,
		 struct buf *err);
int cfg_get_list(const struct cfg *c, const char *listener, const char *name, struct cfg_list *out,
		 struct buf *err);
/* Expanded value as a path; a relative path is made absolute against the
 * config directory. Empty stays empty. */
int cfg_get_path(const struct cfg *c, const char *listener, const char *name, struct buf *out,
		 struct buf *err);

/* Expand text (not a parameter) in the listener's view. A '$' followed by
 * anything but a name character, '{', '(' or '$' (or at the end) is an
 * error, as Postfix: "empty macro name: "TEXT"". */
int cfg_expand(const struct cfg *c, const char *listener, const char *text, struct buf *out,
	       struct buf *err);

/* Listener names declared with listen_NAME (non-empty value), sorted. */
int cfg_listeners(const struct cfg *c, struct cfg_list *out);

/* Entries sorted by name; flags CFG_ENTRIES_*. Caller frees the array. */
size_t cfg_entries(const struct cfg *c, unsigned flags, struct cfg_entry **out);

/* The one list splitter: items separated by commas and/or white space;
 * "{...}" groups (nested) stay inside one item, as Postfix's mystrtokq():
 * "check_policy_service { inet:h:p, timeout=10s }" gives two items, the
 * second being the whole group. -1 on unbalanced braces. */
int cfg_list_split(const char *value, struct cfg_list *out, struct buf *err);
void cfg_list_free(struct cfg_list *l);
/* "{ text }" -> "text" (trimmed) in out; other text is copied trimmed. */
void cfg_list_unbrace(const char *item, struct buf *out);

/* Value parsers used by validation, exposed for other option syntaxes
 * (e.g. "timeout=10s" inside a policy service group). 0 or -1 (err set
 * to the reason only, without file or parameter). */
int cfg_parse_bool(const char *s, int *out);
int cfg_parse_int(const char *s, long long *out);
int cfg_parse_time_ms(const char *s, const char *unit, long long *ms);
int cfg_parse_size(const char *s, long long *out);
const char *cfg_type_name(enum cfg_type t);

/* Edit the file in place (cfg_edit.c): for each i, replace the logical
 * line setting names[i] (with its continuation lines) by "name = value",
 * or append it; values[i] NULL removes the setting. Comments and other
 * lines are kept, also those between continuation lines (written after
 * the new "name = value", as postconf -e). Written to a temporary file in
 * the same directory, fsynced and renamed; the file is created if
 * missing. */
int cfg_file_edit(const char *path, char *const *names, char *const *values, size_t n,
		  struct buf *err);

#endif
