/* netstring.h - D. J. Bernstein's netstrings ("12:hello world!,"), the
 * framing of the socketmap protocol and of later Tern protocols.
 *
 * netstring_encode() appends one netstring to a buffer. netstring_decode()
 * parses one from the front of received bytes and says whether it is
 * complete, incomplete (read more) or malformed; a length above the
 * caller's maximum is rejected as soon as its digits are seen, so a peer
 * cannot make us buffer more than max bytes. Pitfall: the decoded data
 * points into the caller's input and is not NUL-terminated.
 */
#ifndef TERN_NETSTRING_H
#define TERN_NETSTRING_H

#include "buf.h"

#include <stddef.h>

enum netstring_status {
	NETSTRING_ERROR = -1,  /* malformed or too long; err says why */
	NETSTRING_PARTIAL = 0, /* well-formed so far, need more input */
	NETSTRING_OK = 1,      /* data and len hold the payload; used its size */
};

void netstring_encode(struct buf *out, const void *data, size_t len);

int netstring_decode(const char *in, size_t inlen, size_t max, const char **data, size_t *len,
		     size_t *used, struct buf *err);

#endif
