/* crc32c.c - CRC-32C with a run-time choice between the SSE4.2 crc32
 * instruction and a slicing-by-8 table (see crc32c.h).
 *
 * The table is built once (pthread_once) from the reflected polynomial
 * 0x82F63B78. The hardware path is compiled with a target attribute so
 * the rest of the program needs no -msse4.2 and still runs on any x86-64.
 */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#define CRC32C_POLY 0x82F63B78u

static uint32_t crc32c_table[8][256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void crc32c_table_init(void)
{
	uint32_t c;

	for (int n = 0; n < 256; n++) {
		c = (uint32_t)n;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
		crc32c_table[0][n] = c;
	}
	for (int n = 0; n < 256; n++) {
		c = crc32c_table[0][n];
		for (int k = 1; k < 8; k++) {
			c = crc32c_table[0][c & 0xff] ^ (c >> 8);
			crc32c_table[k][n] = c;
		}
	}
}

uint32_t crc32c_sw(uint32_t crc, const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t w;

	pthread_once(&crc32c_once, crc32c_table_init);
	crc = ~crc;
	while (len >= 8) {
		memcpy(&w, p, 8); /* unaligned-safe; the table math assumes little-endian */
		w ^= crc;
		crc = crc32c_table[7][w & 0xff] ^ crc32c_table[6][(w >> 8) & 0xff] ^
		      crc32c_table[5][(w >> 16) & 0xff] ^ crc32c_table[4][(w >> 24) & 0xff] ^
		      crc32c_table[3][(w >> 32) & 0xff] ^ crc32c_table[2][(w >> 40) & 0xff] ^
		      crc32c_table[1][(w >> 48) & 0xff] ^ crc32c_table[0][w >> 56];
		p += 8, len -= 8;
	}
	while (len-- > 0)
		crc = crc32c_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <nmmintrin.h>

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const void *data,
							    size_t len)
{
	const unsigned char *p = data;
	uint64_t c = ~crc, w;

	while (len >= 8) {
		memcpy(&w, p, 8);
		c = _mm_crc32_u64(c, w);
		p += 8, len -= 8;
	}
	while (len-- > 0)
		c = _mm_crc32_u8((uint32_t)c, *p++);
	return ~(uint32_t)c;
}

int crc32c_hw_available(void)
{
	static int have = -1;

	if (have < 0) /* benign race: every thread computes the same answer */
		have = __builtin_cpu_supports("sse4.2") ? 1 : 0;
	return have;
}

uint32_t crc32c(uint32_t crc, const void *data, size_t len)
{
	return crc32c_hw_available() ? crc32c_hw(crc, data, len) : crc32c_sw(crc, data, len);
}
#else
int crc32c_hw_available(void)
{
	return 0;
}

uint32_t crc32c(uint32_t crc, const void *data, size_t len)
{
	return crc32c_sw(crc, data, len);
}
#endif
