/* attr.h - Postfix "plain" attribute protocol (policy delegation, anvil).
 *
 * A request or reply is "name=value\n" lines ended by an empty line. The
 * encoder refuses names/values Postfix's attr_print_plain could not carry
 * (newline, NUL, '=' in a name). The decoder is incremental for
 * non-blocking streams: feed it whatever bytes arrived; it stops at each
 * complete list so pipelined requests are answered one at a time.
 * Pitfall: a repeated attribute keeps the last value and sets a warning.
 * A decoded list borrows its strings from the decoder (no allocation per
 * attribute): it is valid until the next feed.
 */
#ifndef TERN_ATTR_H
#define TERN_ATTR_H

#include "buf.h"

#include <stddef.h>

/* Postfix: each string at most 4 * line_length_limit (2048). */
#define ATTR_STRING_MAX (4 * 2048)
#define ATTR_COUNT_MAX 1024

struct attr {
	char *name;
	char *value;
};

struct attr_list {
	struct attr *v;
	size_t n, cap;
	int borrowed; /* names and values point into a decoder's store */
};

void attr_list_init(struct attr_list *l);
void attr_list_free(struct attr_list *l);
void attr_list_reset(struct attr_list *l);
/* Set name to value, replacing an existing entry; returns 1 if it replaced. */
int attr_list_set(struct attr_list *l, const char *name, const char *value);
/* The value, or "" when the attribute is missing (Postfix treats both alike). */
const char *attr_get(const struct attr_list *l, const char *name);
int attr_has(const struct attr_list *l, const char *name);

/* Encoding: append "name=value\n"; -1 with err for unencodable input. */
int attr_print(struct buf *out, const char *name, const char *value, struct buf *err);
/* Append every attribute of l and the terminating empty line. */
int attr_print_list(struct buf *out, const struct attr_list *l, struct buf *err);
/* A policy reply: "action=<text>\n\n". */
int attr_print_reply(struct buf *out, const char *action, struct buf *err);

enum attr_decode_status {
	ATTR_DECODE_ERROR = -1, /* malformed input: d->err says why; drop the peer */
	ATTR_DECODE_MORE = 0,	/* all input consumed, list incomplete */
	ATTR_DECODE_DONE = 1,	/* d->list holds a complete list */
};

struct attr_decoder {
	struct attr_list list; /* the list just completed (points into store) */
	struct buf store;      /* this list's "name\0value\0" pairs */
	size_t *offs;	       /* per attribute: name offset, value offset */
	size_t nattr, offcap;  /* attributes so far; offs capacity (pairs) */
	unsigned long long seen; /* a bit per name hash: repeats are rare */
	struct buf line;       /* partial line carried between feeds */
	struct buf err;	       /* why decoding failed */
	struct buf warn;       /* non-fatal: repeated attributes */
	size_t max_string;     /* per name and per value */
	size_t max_count;      /* attributes per list */
	int done;	       /* list complete: reset before the next feed */
	int failed;	       /* sticky: the stream is out of sync */
};

/* max_string / max_count of 0 select ATTR_STRING_MAX / ATTR_COUNT_MAX. */
void attr_decoder_init(struct attr_decoder *d, size_t max_string, size_t max_count);
void attr_decoder_free(struct attr_decoder *d);
/* Consume up to len bytes; *used says how many. After DONE, feed the rest
 * (data + *used) again for the next list. Errors are sticky. */
enum attr_decode_status attr_decoder_feed(struct attr_decoder *d, const char *data, size_t len,
					  size_t *used);
/* At end of stream: 0 if no partial list is pending, else -1 with d->err. */
int attr_decoder_eof(struct attr_decoder *d);

/* A policy reply's action (Postfix reads only "action"; extra attributes
 * are ignored). -1 with err when missing or empty, or (utf8) not UTF-8,
 * which Postfix treats as a failed request. */
int attr_reply_action(const struct attr_list *l, int utf8, const char **action, struct buf *err);

#endif
