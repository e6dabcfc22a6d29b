/* buf.c - growable byte/string buffer (see buf.h).
 *
 * Growth doubles the capacity so appends are amortised O(1); the buffer
 * is NUL-terminated after every operation.
 */
#include "buf.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void buf_oom(size_t n)
{
	/* No logging machinery here: it may itself need memory. */
	char msg[96];
	int len = snprintf(msg, sizeof(msg), "fatal: out of memory allocating %zu bytes\n", n);
	if (len > 0 && write(2, msg, (size_t)len) < 0)
		_exit(75);
	_exit(75); /* EX_TEMPFAIL: the caller's peer retries later */
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL)
		buf_oom(n);
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (p == NULL)
		buf_oom(n * size);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (q == NULL)
		buf_oom(n);
	return q;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *p = xmalloc(len + 1);
	memcpy(p, s, len);
	p[len] = 0;
	return p;
}

void buf_init(struct buf *b)
{
	b->cap = 64;
	b->data = xmalloc(b->cap);
	b->data[0] = 0;
	b->len = 0;
}

void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void buf_reserve(struct buf *b, size_t extra)
{
	if (b->data == NULL)
		buf_init(b);
	if (extra >= (size_t)-1 / 2 - b->len)
		buf_oom(extra);
	if (b->len + extra + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < b->len + extra + 1)
		cap *= 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

void buf_reset(struct buf *b)
{
	buf_truncate(b, 0);
}

void buf_truncate(struct buf *b, size_t len)
{
	if (b->data == NULL)
		buf_init(b);
	if (len < b->len)
		b->len = len;
	b->data[b->len] = 0;
}

void buf_append(struct buf *b, const void *data, size_t n)
{
	buf_reserve(b, n);
	if (n)
		memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = 0;
}

void buf_put_ll(struct buf *b, long long v)
{
	char num[24], *p = num + sizeof(num);
	unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

	do
		*--p = (char)('0' + u % 10);
	while ((u /= 10) > 0);
	if (v < 0)
		*--p = '-';
	buf_append(b, p, (size_t)(num + sizeof(num) - p));
}

void buf_puts(struct buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

void buf_putc(struct buf *b, int c)
{
	char ch = (char)c;
	buf_append(b, &ch, 1);
}

void buf_set(struct buf *b, const char *s)
{
	buf_reset(b);
	buf_puts(b, s);
}

void buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list aq;
	buf_reserve(b, 64);
	va_copy(aq, ap);
	int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, aq);
	va_end(aq);
	if (n < 0) {
		b->data[b->len] = 0;
		return;
	}
	if ((size_t)n >= b->cap - b->len) {
		buf_reserve(b, (size_t)n);
		vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
	}
	b->len += (size_t)n;
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(b, fmt, ap);
	va_end(ap);
}

void buf_lower(struct buf *b)
{
	for (size_t i = 0; i < b->len; i++)
		b->data[i] = (char)tolower((unsigned char)b->data[i]);
}

/* Remove leading and trailing white space (as Postfix's trimblanks). */
void buf_trim(struct buf *b)
{
	size_t start = 0, end = b->len;
	if (b->data == NULL)
		buf_init(b);
	while (start < end && isspace((unsigned char)b->data[start]))
		start++;
	while (end > start && isspace((unsigned char)b->data[end - 1]))
		end--;
	memmove(b->data, b->data + start, end - start);
	b->len = end - start;
	b->data[b->len] = 0;
}

char *buf_detach(struct buf *b)
{
	if (b->data == NULL)
		buf_init(b);
	char *p = b->data;
	b->data = NULL;
	b->len = b->cap = 0;
	return p;
}

const char *buf_str(const struct buf *b)
{
	return b->data ? b->data : "";
}
