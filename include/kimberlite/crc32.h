/*
 * kimberlite/crc32.h — CRC-32/IEEE, the checksum of every record and index file.
 *
 * Reflected polynomial 0xEDB88320, initial value and final xor 0xFFFFFFFF: the function
 * zlib and Python's zlib.crc32 compute. Correct for any length and alignment.
 */
#ifndef KIMBERLITE_CRC32_H
#define KIMBERLITE_CRC32_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Continue a CRC-32 over `len` bytes at `data`. Start with crc = 0; feeding a buffer in
 * pieces gives the same result as feeding it whole (zlib's crc32(crc, buf, len) semantics).
 * `data` may be NULL when len is 0. Cannot fail; thread-safe.
 */
uint32_t kmb_crc32_update(uint32_t crc, const void *data, size_t len);

/* CRC-32 of one buffer: kmb_crc32_update(0, data, len). */
uint32_t kmb_crc32(const void *data, size_t len);

/*
 * The CRC-32 of A || B from crc1 = CRC-32(A), crc2 = CRC-32(B) and len2 = len(B), without
 * touching the bytes (zlib's crc32_combine). Costs O(log len2) 32-bit multiplications
 * modulo the polynomial, independent of len(A). Cannot fail; thread-safe.
 */
uint32_t kmb_crc32_combine(uint32_t crc1, uint32_t crc2, uint64_t len2);

/*
 * The same in two steps, for many combinations with one len2 (zlib's crc32_combine_gen and
 * crc32_combine_op): op = kmb_crc32_combine_gen(len2) once, then
 * kmb_crc32_combine_op(crc1, crc2, op) == kmb_crc32_combine(crc1, crc2, len2), each in at
 * most 32 steps.
 */
uint32_t kmb_crc32_combine_gen(uint64_t len2);
uint32_t kmb_crc32_combine_op(uint32_t crc1, uint32_t crc2, uint32_t op);

#ifdef __cplusplus
}
#endif
#endif
