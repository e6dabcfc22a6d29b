/* netstring.c - netstring encode/decode (see netstring.h).
 *
 * Format (cr.yp.to/proto/netstrings.txt): decimal length, ':', that many
 * bytes, ','. Leading zeros are refused as the definition demands ("0:,"
 * is the only length that starts with 0), so "012:" cannot be used to
 * smuggle a differently parsed length past another implementation.
 */
#include "netstring.h"

#include <ctype.h>

void netstring_encode(struct buf *out, const void *data, size_t len)
{
	buf_printf(out, "%zu:", len);
	buf_append(out, data, len);
	buf_putc(out, ',');
}

/* Parse the length prefix; returns the index of ':' or 0 if incomplete,
 * -1 on error. */
static long netstring_decode_length(const char *in, size_t inlen, size_t max, size_t *lenp,
				    struct buf *err)
{
	size_t i, n = 0;

	for (i = 0; i < inlen && in[i] != ':'; i++) {
		if (!isdigit((unsigned char)in[i])) {
			buf_printf(err, "netstring: %s in length",
				   i == 0 ? "expected a digit" : "expected a digit or ':'");
			return -1;
		}
		if (i == 1 && in[0] == '0') {
			buf_puts(err, "netstring: leading zero in length");
			return -1;
		}
		n = n * 10 + (size_t)(in[i] - '0');
		if (n > max) { /* also stops overflow: max is far below SIZE_MAX/10 */
			buf_printf(err, "netstring: length exceeds limit %zu", max);
			return -1;
		}
	}
	if (i == inlen)
		return 0;
	if (i == 0) {
		buf_puts(err, "netstring: missing length before ':'");
		return -1;
	}
	*lenp = n;
	return (long)i;
}

int netstring_decode(const char *in, size_t inlen, size_t max, const char **data, size_t *len,
		     size_t *used, struct buf *err)
{
	size_t n = 0, start;
	long colon;

	if (max > ((size_t)-1) / 16)
		max = ((size_t)-1) / 16;
	colon = netstring_decode_length(in, inlen, max, &n, err);
	if (colon <= 0)
		return colon < 0 ? NETSTRING_ERROR : NETSTRING_PARTIAL;
	start = (size_t)colon + 1;
	if (inlen - start < n + 1)
		return NETSTRING_PARTIAL;
	if (in[start + n] != ',') {
		buf_puts(err, "netstring: missing ',' after data");
		return NETSTRING_ERROR;
	}
	*data = in + start;
	*len = n;
	*used = start + n + 1;
	return NETSTRING_OK;
}
