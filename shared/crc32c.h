/* crc32c.h - CRC-32C (Castagnoli, RFC 3720 appendix B.4), the checksum of
 * queue records. crc32c(0, data, n) checksums a buffer; pass the previous
 * result as crc to continue over further pieces (header, then payload).
 * Uses the SSE4.2 crc32 instruction when the CPU has it (checked at run
 * time) and a slicing-by-8 table otherwise; both give identical results.
 */
#ifndef TERN_CRC32C_H
#define TERN_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t crc32c(uint32_t crc, const void *data, size_t len);
/* The portable implementation, exposed so tests can compare both paths. */
uint32_t crc32c_sw(uint32_t crc, const void *data, size_t len);
/* 1 when crc32c() uses the hardware instruction. */
int crc32c_hw_available(void);

#endif
