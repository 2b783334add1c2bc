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

#ifdef __cplusplus
}
#endif
#endif
