/*
 * format.h — the byte layout of a record and of an .idx file, field by field (internal).
 *
 * docs/FORMAT.md is the contract; this header is its one encoding in C. Every offset and
 * size of a field is named here, so no other file writes a bare layout number: record.c
 * and the engine's writers and scanners build and read records with the helpers below,
 * index.c builds and reads .idx files with the names below.
 *
 *   record   [offset:u64][prev_hash:32B][length:u32][payload:length bytes][crc32:u32]
 *   .idx     [magic "VDXI"][version:u8][reserved:3B][count:u64][entry:u64 × count][crc32:u32]
 *
 * All integers little-endian; each CRC-32 covers every byte before it.
 */
#ifndef KIMBERLITE_FORMAT_H
#define KIMBERLITE_FORMAT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kimberlite/index.h"
#include "kimberlite/record.h"

/* ---------------------------------------------------------------- record */

#define KMB_REC_OFFSET_AT 0     /* u64: the record's offset in its stream */
#define KMB_REC_PREV_HASH_AT 8  /* 32 bytes: the previous record's chain hash (zeros at genesis) */
#define KMB_REC_LENGTH_AT 40    /* u32: payload length */
#define KMB_REC_PAYLOAD_AT 44   /* the payload; the CRC follows it */
#define KMB_REC_CRC_SIZE 4

_Static_assert(KMB_REC_PREV_HASH_AT == KMB_REC_OFFSET_AT + 8, "record layout");
_Static_assert(KMB_REC_LENGTH_AT == KMB_REC_PREV_HASH_AT + KMB_HASH_SIZE, "record layout");
_Static_assert(KMB_REC_PAYLOAD_AT == KMB_REC_LENGTH_AT + 4, "record layout");
_Static_assert(KMB_REC_PAYLOAD_AT == KMB_HEADER_SIZE, "record layout");
_Static_assert(KMB_RECORD_OVERHEAD == KMB_HEADER_SIZE + KMB_REC_CRC_SIZE, "record layout");

/* Where the CRC of a record with a payload of `length` bytes starts (= the bytes it covers). */
static inline size_t kmb_rec_crc_at(size_t length) { return KMB_REC_PAYLOAD_AT + length; }

/* The size of the whole record whose header starts at `hdr` (KMB_HEADER_SIZE bytes). */
static inline uint64_t kmb_rec_size_of(const uint8_t *hdr)
{
    return kmb_record_size(kmb_load_u32le(hdr + KMB_REC_LENGTH_AT));
}

/* The offset field of the record whose header starts at `hdr`. */
static inline uint64_t kmb_rec_offset_of(const uint8_t *hdr)
{
    return kmb_load_u64le(hdr + KMB_REC_OFFSET_AT);
}

/*
 * A record is written in up to three steps, so that a writer that learns prev_hash after
 * the payload (a pipelined append) uses the same encoder as everyone else:
 *   kmb_rec_put_body       offset, length and payload; returns the record's size;
 *   kmb_rec_put_prev_hash  prev_hash (NULL: 32 zero bytes);
 *   kmb_rec_put_crc        the CRC, computed over the first kmb_rec_crc_at(length) bytes.
 * kmb_record_encode (record.c) is the three in a row.
 */
static inline size_t kmb_rec_put_body(uint8_t *out, uint64_t offset, const void *payload,
                                      uint32_t length)
{
    kmb_store_u64le(out + KMB_REC_OFFSET_AT, offset);
    kmb_store_u32le(out + KMB_REC_LENGTH_AT, length);
    if (length > 0) memcpy(out + KMB_REC_PAYLOAD_AT, payload, length);
    return (size_t)kmb_record_size(length);
}

static inline void kmb_rec_put_prev_hash(uint8_t *out, const uint8_t *prev_hash)
{
    if (prev_hash != NULL)
        memcpy(out + KMB_REC_PREV_HASH_AT, prev_hash, KMB_HASH_SIZE);
    else
        memset(out + KMB_REC_PREV_HASH_AT, 0, KMB_HASH_SIZE);
}

static inline void kmb_rec_put_crc(uint8_t *out, uint32_t length, uint32_t crc)
{
    kmb_store_u32le(out + kmb_rec_crc_at(length), crc);
}

static inline uint32_t kmb_rec_crc_of(const uint8_t *rec, uint32_t length)
{
    return kmb_load_u32le(rec + kmb_rec_crc_at(length));
}

/* ---------------------------------------------------------------- .idx file */

#define KMB_IDX_MAGIC_AT 0
#define KMB_IDX_MAGIC_SIZE 4
#define KMB_IDX_VERSION_AT 4    /* u8 */
#define KMB_IDX_RESERVED_AT 5   /* 3 bytes, zero */
#define KMB_IDX_RESERVED_SIZE 3
#define KMB_IDX_COUNT_AT 8      /* u64: number of entries */
#define KMB_IDX_ENTRIES_AT 16   /* u64 × count: byte position of each record */
#define KMB_IDX_ENTRY_SIZE 8
#define KMB_IDX_CRC_SIZE 4      /* after the entries */

_Static_assert(KMB_IDX_ENTRIES_AT == KMB_INDEX_HEADER_SIZE, ".idx layout");
_Static_assert(KMB_IDX_COUNT_AT + 8 == KMB_IDX_ENTRIES_AT, ".idx layout");
_Static_assert(KMB_IDX_CRC_SIZE == KMB_INDEX_TRAILER_SIZE, ".idx layout");

/* Where entry i starts. */
static inline size_t kmb_idx_entry_at(size_t i) { return KMB_IDX_ENTRIES_AT + KMB_IDX_ENTRY_SIZE * i; }

#endif
