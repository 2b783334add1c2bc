/*
 * kimberlite/record.h — one record of a segment file (docs/FORMAT.md, "Record").
 *
 *   [offset:u64][prev_hash:32B][length:u32][payload:length bytes][crc32:u32]
 *
 * All integers little-endian; the CRC-32 covers every byte before it. A record is valid if
 * and only if all its bytes are present, its CRC matches and its offset is below 2**63
 * (the engine further requires the offset expected at its position).
 */
#ifndef KIMBERLITE_RECORD_H
#define KIMBERLITE_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "chain.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KMB_HEADER_SIZE 44       /* offset + prev_hash + length */
#define KMB_RECORD_OVERHEAD 48   /* header + crc32 */
#define KMB_MAX_OFFSET (UINT64_C(1) << 63) /* offsets are < this */

/* A decoded record. `payload` is borrowed from the buffer it was decoded from. */
typedef struct kmb_record {
    uint64_t offset;
    uint8_t prev_hash[KMB_HASH_SIZE]; /* zeros for genesis */
    uint32_t length;
    const uint8_t *payload;
} kmb_record;

/* Bytes a record with a payload of `length` bytes takes: length + KMB_RECORD_OVERHEAD. */
static inline uint64_t kmb_record_size(uint64_t length) { return length + KMB_RECORD_OVERHEAD; }

/*
 * Encode one record into `out`, which must have room for kmb_record_size(length) bytes.
 * `prev_hash` NULL writes 32 zero bytes. Returns the number of bytes written. Cannot fail.
 */
size_t kmb_record_encode(uint8_t *out, uint64_t offset, const uint8_t *prev_hash,
                         const void *payload, uint32_t length);

/*
 * Decode the record at the start of data[0..len).
 * On KMB_OK fills *out (payload points into `data`) and *consumed (bytes of the record).
 * Errors (kmb_error_last() has the details, position relative to `data`):
 *   KMB_EEOF      data ends inside the record (len too short for header or body);
 *   KMB_ECORRUPT  CRC mismatch, or offset >= 2**63.
 */
int kmb_record_decode(kmb_record *out, size_t *consumed, const void *data, size_t len);

/*
 * Like kmb_record_decode but records no error and does nothing but checks: returns 1 and
 * fills *out / *consumed when a valid record starts at data, 0 otherwise. For scanning.
 */
int kmb_record_probe(kmb_record *out, size_t *consumed, const void *data, size_t len);

/*
 * The record's chain hash: SHA-256(payload) when r->offset is 0 (genesis), otherwise
 * SHA-256(prev_hash || payload).
 */
void kmb_record_hash(uint8_t out[KMB_HASH_SIZE], const kmb_record *r);

/* Little-endian helpers shared by the format code. */
static inline uint64_t kmb_load_u64le(const uint8_t *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
           (uint64_t)p[7] << 56;
}
static inline uint32_t kmb_load_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void kmb_store_u64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void kmb_store_u32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

#ifdef __cplusplus
}
#endif
#endif
