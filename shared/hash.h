/* hash.h - FNV-1a (64 bits), the hash of Tern's in-memory tables: the
 * configuration index, table dictionaries, the SPF result cache, ternd's
 * queue index and local delivery's duplicate set, the DKIM
 * milter's public key cache. Not keyed: where outsiders choose the input,
 * a collision costs only a cache miss or a longer chain, never a wrong
 * answer (callers compare the keys themselves).
 */
#ifndef TERN_HASH_H
#define TERN_HASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t hash_fnv1a(const void *data, size_t len);
/* The same over a NUL-terminated string (the NUL not included). */
uint64_t hash_fnv1a_str(const char *s);

#endif
