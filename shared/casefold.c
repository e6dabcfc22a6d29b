/* casefold.c - Unicode case folding for lookup keys (see casefold.h).
 *
 * ICU's UCaseMap is not documented as safe for concurrent use, so each
 * thread opens its own on first use.
 */
#include "casefold.h"
#include "addr.h"

#include <ctype.h>
#include <string.h>
#include <unicode/ucasemap.h>

static __thread UCaseMap *casefold_map;

static void casefold_ascii(struct buf *out, const char *s, size_t len)
{
	buf_reset(out);
	buf_reserve(out, len);
	for (size_t i = 0; i < len; i++)
		out->data[i] = (char)tolower((unsigned char)s[i]);
	out->len = len;
	out->data[len] = 0;
}

static int casefold_is_ascii(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] >= 0x80)
			return 0;
	return 1;
}

void casefold(struct buf *out, const char *s, size_t len)
{
	UErrorCode uerr = U_ZERO_ERROR;

	if (casefold_is_ascii(s, len) || !addr_utf8_valid(s, len) || len > INT32_MAX / 4) {
		casefold_ascii(out, s, len);
		return;
	}
	if (casefold_map == NULL) {
		casefold_map = ucasemap_open(NULL, U_FOLD_CASE_DEFAULT, &uerr);
		if (U_FAILURE(uerr)) {
			casefold_map = NULL;
			casefold_ascii(out, s, len);
			return;
		}
	}
	/* Folding can grow the text (ß -> ss); ICU tells the size it needs. */
	buf_reset(out);
	buf_reserve(out, len + 16);
	int32_t n = ucasemap_utf8FoldCase(casefold_map, out->data, (int32_t)(out->cap - 1), s,
					  (int32_t)len, &uerr);
	if (uerr == U_BUFFER_OVERFLOW_ERROR) {
		uerr = U_ZERO_ERROR;
		buf_reserve(out, (size_t)n + 1);
		n = ucasemap_utf8FoldCase(casefold_map, out->data, (int32_t)(out->cap - 1), s,
					  (int32_t)len, &uerr);
	}
	if (U_FAILURE(uerr) || n < 0) {
		casefold_ascii(out, s, len);
		return;
	}
	out->len = (size_t)n;
	out->data[out->len] = 0;
}

void casefold_buf(struct buf *b)
{
	struct buf tmp = BUF_INIT;
	casefold(&tmp, buf_str(b), b->len);
	buf_free(b);
	*b = tmp;
}
