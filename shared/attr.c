/* attr.c - Postfix plain attribute protocol codec (see attr.h).
 *
 * Grammar (Postfix attr_scan_plain): attr-list = (name "=" value "\n")* "\n";
 * a name has no NUL, '=' or newline, a value no NUL or newline, each at
 * most 4*line_length_limit octets. CR is an ordinary value byte, as in
 * Postfix: "action=DUNNO\r" is not DUNNO.
 */
#include "attr.h"

#include "addr.h"

#include <stdlib.h>
#include <string.h>

void attr_list_init(struct attr_list *l)
{
	l->v = NULL;
	l->n = l->cap = 0;
	l->borrowed = 0;
}

void attr_list_reset(struct attr_list *l)
{
	size_t i;

	for (i = 0; i < l->n && !l->borrowed; i++) {
		free(l->v[i].name);
		free(l->v[i].value);
	}
	l->n = 0;
}

/* A borrowed list that is about to change gets its own copies. */
static void attr_list_own(struct attr_list *l)
{
	if (!l->borrowed)
		return;
	for (size_t i = 0; i < l->n; i++) {
		l->v[i].name = xstrdup(l->v[i].name);
		l->v[i].value = xstrdup(l->v[i].value);
	}
	l->borrowed = 0;
}

void attr_list_free(struct attr_list *l)
{
	attr_list_reset(l);
	free(l->v);
	attr_list_init(l);
}

static struct attr *attr_list_find(const struct attr_list *l, const char *name)
{
	size_t i;

	for (i = 0; i < l->n; i++) /* first byte first: most names differ there */
		if (l->v[i].name[0] == name[0] && strcmp(l->v[i].name, name) == 0)
			return &l->v[i];
	return NULL;
}

int attr_list_set(struct attr_list *l, const char *name, const char *value)
{
	struct attr *a;

	attr_list_own(l);
	a = attr_list_find(l, name);

	if (a != NULL) {
		free(a->value);
		a->value = xstrdup(value);
		return 1;
	}
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 32;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n].name = xstrdup(name);
	l->v[l->n].value = xstrdup(value);
	l->n++;
	return 0;
}

const char *attr_get(const struct attr_list *l, const char *name)
{
	const struct attr *a = attr_list_find(l, name);

	return a != NULL ? a->value : "";
}

int attr_has(const struct attr_list *l, const char *name)
{
	return attr_list_find(l, name) != NULL;
}

int attr_print(struct buf *out, const char *name, const char *value, struct buf *err)
{
	/* Newlines would inject attributes or end the list early; '=' in
	 * the name would shift the name/value split on the other side. */
	if (*name == 0 || strpbrk(name, "=\n") != NULL) {
		buf_set(err, "attribute name is empty or contains '=' or newline");
		return -1;
	}
	if (strchr(value, '\n') != NULL) {
		buf_printf(err, "value of attribute \"%s\" contains a newline", name);
		return -1;
	}
	if (strlen(name) > ATTR_STRING_MAX || strlen(value) > ATTR_STRING_MAX) {
		buf_printf(err, "attribute \"%.40s\" longer than %d octets", name, ATTR_STRING_MAX);
		return -1;
	}
	buf_puts(out, name);
	buf_putc(out, '=');
	buf_puts(out, value);
	buf_putc(out, '\n');
	return 0;
}

int attr_print_list(struct buf *out, const struct attr_list *l, struct buf *err)
{
	size_t i, mark = out->len;

	for (i = 0; i < l->n; i++) {
		if (attr_print(out, l->v[i].name, l->v[i].value, err) < 0) {
			buf_truncate(out, mark); /* never send half a request */
			return -1;
		}
	}
	buf_putc(out, '\n');
	return 0;
}

int attr_print_reply(struct buf *out, const char *action, struct buf *err)
{
	if (attr_print(out, "action", action, err) < 0)
		return -1;
	buf_putc(out, '\n');
	return 0;
}

void attr_decoder_init(struct attr_decoder *d, size_t max_string, size_t max_count)
{
	attr_list_init(&d->list);
	buf_init(&d->store);
	d->offs = NULL;
	d->nattr = d->offcap = 0;
	d->seen = 0;
	buf_init(&d->line);
	buf_init(&d->err);
	buf_init(&d->warn);
	d->max_string = max_string ? max_string : ATTR_STRING_MAX;
	d->max_count = max_count ? max_count : ATTR_COUNT_MAX;
	d->done = d->failed = 0;
}

void attr_decoder_free(struct attr_decoder *d)
{
	attr_list_free(&d->list);
	buf_free(&d->store);
	free(d->offs);
	buf_free(&d->line);
	buf_free(&d->err);
	buf_free(&d->warn);
}

static enum attr_decode_status attr_decoder_fail(struct attr_decoder *d, const char *msg)
{
	buf_set(&d->err, msg);
	d->failed = 1;
	return ATTR_DECODE_ERROR;
}

/* The attribute of the list being decoded named name, or -1. */
static long attr_decoder_find(const struct attr_decoder *d, const char *name)
{
	for (size_t i = 0; i < d->nattr; i++) {
		const char *n = d->store.data + d->offs[2 * i];
		if (n[0] == name[0] && strcmp(n, name) == 0)
			return (long)i;
	}
	return -1;
}

/* The list is complete: point d->list at the store. */
static enum attr_decode_status attr_decoder_finish(struct attr_decoder *d)
{
	attr_list_reset(&d->list);
	d->list.borrowed = 1;
	if (d->list.cap < d->nattr) {
		d->list.cap = d->nattr < 32 ? 32 : d->nattr;
		d->list.v = xrealloc(d->list.v, d->list.cap * sizeof(*d->list.v));
	}
	for (size_t i = 0; i < d->nattr; i++) {
		d->list.v[i].name = d->store.data + d->offs[2 * i];
		d->list.v[i].value = d->store.data + d->offs[2 * i + 1];
	}
	d->list.n = d->nattr;
	d->done = 1;
	return ATTR_DECODE_DONE;
}

/* attr_decoder_line - one complete line (without "\n") in line..line+len */
static enum attr_decode_status attr_decoder_line(struct attr_decoder *d, const char *line,
						 size_t len)
{
	const char *eq;
	size_t nlen, vlen, at;
	unsigned long long bit;
	long old;

	if (len == 0)
		return attr_decoder_finish(d);
	if ((eq = memchr(line, '=', len)) == NULL)
		return attr_decoder_fail(d, "malformed attribute line: missing '='");
	if (eq == line)
		return attr_decoder_fail(d, "malformed attribute line: empty name");
	nlen = (size_t)(eq - line);
	vlen = len - nlen - 1;
	if (nlen > d->max_string || vlen > d->max_string)
		return attr_decoder_fail(d, "attribute name or value too long");
	at = d->store.len;
	buf_append(&d->store, line, nlen);
	buf_putc(&d->store, 0);
	/* Only a name whose hash bit is already set can be a repeat. */
	bit = 1ULL << ((nlen * 31u + (unsigned char)line[0] * 7u +
			(unsigned char)line[nlen - 1]) & 63u);
	old = (d->seen & bit) ? attr_decoder_find(d, d->store.data + at) : -1;
	d->seen |= bit;
	if (old >= 0) {
		/* repeated: keep the last value (the name stays where it was) */
		buf_truncate(&d->store, at);
		d->offs[2 * old + 1] = d->store.len;
		buf_append(&d->store, eq + 1, vlen);
		buf_putc(&d->store, 0);
		if (d->warn.len == 0)
			buf_printf(&d->warn, "repeated attribute \"%.64s\": keeping the last value",
				   d->store.data + d->offs[2 * old]);
		return ATTR_DECODE_MORE;
	}
	if (d->nattr >= d->max_count)
		return attr_decoder_fail(d, "too many attributes");
	if (d->nattr == d->offcap) {
		d->offcap = d->offcap ? 2 * d->offcap : 32;
		d->offs = xrealloc(d->offs, 2 * d->offcap * sizeof(*d->offs));
	}
	d->offs[2 * d->nattr] = at;
	d->offs[2 * d->nattr + 1] = d->store.len;
	d->nattr++;
	buf_append(&d->store, eq + 1, vlen);
	buf_putc(&d->store, 0);
	return ATTR_DECODE_MORE;
}

enum attr_decode_status attr_decoder_feed(struct attr_decoder *d, const char *data, size_t len,
					  size_t *used)
{
	enum attr_decode_status st = ATTR_DECODE_MORE;
	size_t pos = 0, n;
	const char *nl;

	if (d->failed) {
		*used = 0;
		return ATTR_DECODE_ERROR;
	}
	if (d->done) {
		attr_list_reset(&d->list);
		buf_reset(&d->store);
		d->nattr = 0;
		d->seen = 0;
		buf_reset(&d->warn);
		d->done = 0;
	}
	while (pos < len && st == ATTR_DECODE_MORE) {
		nl = memchr(data + pos, '\n', len - pos);
		n = (nl != NULL ? (size_t)(nl - data) : len) - pos;
		if (memchr(data + pos, 0, n) != NULL) {
			st = attr_decoder_fail(d, "NUL byte in attribute stream");
			break;
		}
		/* Bound the carried-over line before buffering: name, '=', value. */
		if (d->line.len + n > 2 * d->max_string + 1) {
			st = attr_decoder_fail(d, "attribute line too long");
			break;
		}
		if (nl != NULL && d->line.len == 0) {
			/* the usual case: the whole line is in data, no copy */
			st = attr_decoder_line(d, data + pos, n);
			pos += n + 1;
			continue;
		}
		buf_append(&d->line, data + pos, n);
		pos += n;
		if (nl == NULL)
			break;
		pos++;
		st = attr_decoder_line(d, d->line.data, d->line.len);
		buf_reset(&d->line);
	}
	*used = pos;
	return st;
}

int attr_decoder_eof(struct attr_decoder *d)
{
	if (d->failed)
		return -1;
	if (d->line.len > 0 || (!d->done && d->nattr > 0)) {
		attr_decoder_fail(d, "premature end of input inside an attribute list");
		return -1;
	}
	return 0;
}

int attr_reply_action(const struct attr_list *l, int utf8, const char **action, struct buf *err)
{
	const char *a = attr_get(l, "action");

	*action = a;
	if (*a == 0) {
		buf_set(err, "policy reply without action attribute");
		return -1;
	}
	if (utf8 && !addr_utf8_valid(a, strlen(a))) {
		buf_set(err, "policy reply action is not valid UTF-8");
		return -1;
	}
	return 0;
}
