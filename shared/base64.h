/* base64.h - RFC 4648 base64, as SMTP AUTH (RFC 4954) uses it.
 *
 * base64_encode() appends the encoding of data to out (no line breaks);
 * base64_decode() appends the decoded bytes to out and fails on any
 * character outside the alphabet, bad padding, or a length that is not a
 * multiple of four: AUTH input comes from the network.
 */
#ifndef TERN_BASE64_H
#define TERN_BASE64_H

#include "buf.h"

#include <stddef.h>

void base64_encode(const void *data, size_t len, struct buf *out);
int base64_decode(const char *in, size_t len, struct buf *out);

#endif
