/* casefold.h - fold lookup keys to one case, as Postfix's casefold().
 *
 * Postfix with smtputf8_enable=yes (its default) folds table keys with
 * full Unicode case folding, so "GRÜSSE.example" finds "grüße.example"
 * (ß folds to "ss"). ASCII takes a fast path; non-ASCII valid UTF-8 goes
 * through ICU's default case folding; invalid UTF-8 is folded as ASCII
 * only, so a hostile key can neither fail nor grow unboundedly.
 */
#ifndef TERN_CASEFOLD_H
#define TERN_CASEFOLD_H

#include "buf.h"

/* Replace out's contents with the folded form of s[0..len). */
void casefold(struct buf *out, const char *s, size_t len);
/* Fold b in place. */
void casefold_buf(struct buf *b);

#endif
