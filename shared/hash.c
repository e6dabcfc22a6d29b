/* hash.c - FNV-1a, 64 bits (hash.h). */
#include "hash.h"

#define HASH_FNV_OFFSET 14695981039346656037ULL
#define HASH_FNV_PRIME 1099511628211ULL

uint64_t hash_fnv1a(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t h = HASH_FNV_OFFSET;

	while (len--)
		h = (h ^ *p++) * HASH_FNV_PRIME;
	return h;
}

uint64_t hash_fnv1a_str(const char *s)
{
	uint64_t h = HASH_FNV_OFFSET;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * HASH_FNV_PRIME;
	return h;
}
