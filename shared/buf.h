/* buf.h - the growable byte/string buffer every Tern module uses.
 *
 * A struct buf owns a heap array that is always NUL-terminated, so
 * buf_str() can be handed to C string APIs, while len counts the bytes
 * (which may include NULs for binary data). External data never goes into
 * fixed-size arrays; it goes into a buf.
 *
 * Pitfall: pointers returned by buf_str() are invalidated by any append.
 * Allocation failure is fatal (as Postfix's mymalloc): there is no sane
 * recovery for a mail daemon that cannot allocate a few bytes.
 */
#ifndef TERN_BUF_H
#define TERN_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data; /* always NUL-terminated once initialised */
	size_t len; /* bytes in use, excluding the terminator */
	size_t cap; /* bytes allocated */
};

#define BUF_INIT                                                                                   \
	{                                                                                          \
		NULL, 0, 0                                                                         \
	}

void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *data, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, int c);
void buf_set(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void buf_truncate(struct buf *b, size_t len);
/* Append v in decimal (no printf: for per-request paths). */
void buf_put_ll(struct buf *b, long long v);
void buf_lower(struct buf *b);
void buf_trim(struct buf *b);
char *buf_detach(struct buf *b);
const char *buf_str(const struct buf *b);

/* Allocation helpers with the same fatal-on-failure contract. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
