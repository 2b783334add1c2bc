/*
 * kimberlite/columns.h — verified reads into column buffers (Arrow-style), range
 * verification and segment bounds.
 *
 * kmb_storage_read_columns reads records [from, stop) of a stream through the same
 * verified reader as kmb_storage_read_each (CRC, offset and chain link of every record,
 * the first one linked to the record before it) and lays them out as columns:
 *   - payload: every payload back to back in ONE buffer, plus count + 1 payload offsets
 *     (int32, or int64 when `large`): record i is payload[po[i] .. po[i+1]). This is the
 *     layout of Arrow's binary (int32) and large_binary (int64) arrays, so the buffers can
 *     be handed to Arrow as they are;
 *   - offsets: the record offsets as uint64 (from, from + 1, …);
 *   - hashes: count + 1 hashes of 32 bytes: the stored prev_hash of each record, then the
 *     hash of the last record. Because the chain was checked, hashes[i + 1] is also the hash
 *     of record i: one buffer holds both the prev_hash and the hash column.
 * Memory: the buffers are allocated at their exact final size once the range is planned
 * (the reader's chunk buffers aside, nothing else grows with the range).
 *
 * Thread safety: as every kmb_storage_* call (the storage's lock is held inside).
 */
#ifndef KIMBERLITE_COLUMNS_H
#define KIMBERLITE_COLUMNS_H

#include <stddef.h>
#include <stdint.h>

#include "kimberlite/chain.h"
#include "kimberlite/storage.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Which columns kmb_storage_read_columns fills (bit flags). */
#define KMB_COLUMN_PAYLOAD 1u /* payload + payload_offsets */
#define KMB_COLUMN_OFFSET 2u  /* offsets */
#define KMB_COLUMN_HASHES 4u  /* hashes */
#define KMB_COLUMN_LARGE 8u   /* int64 payload offsets even when int32 would do */

/* Buffers of this many bytes or more are mapped (mmap), smaller ones malloc'd. */
#define KMB_COLUMN_MMAP_MIN ((size_t)256 << 10)

typedef struct kmb_columns {
    uint64_t first;          /* offset of the first record read (= from) */
    size_t count;            /* records read */
    uint64_t payload_bytes;  /* sum of their payload sizes */
    /*
     * The buffers, owned by this struct (NULL when not asked for). A caller may take any
     * of them over by copying the pointer and setting the field to NULL; it then releases
     * it with kmb_columns_release(buf, size), size as given here (after a successful read,
     * count and payload_bytes are what was planned). Large buffers are mapped, so never
     * free() them. Each is at least 1 byte, even when empty.
     */
    uint8_t *payload;        /* payload_bytes bytes */
    void *payload_offsets;   /* count + 1 entries of int32_t, or int64_t when large */
    int large;               /* payload_offsets are int64_t */
    uint64_t *offsets;       /* count * 8 bytes */
    uint8_t *hashes;         /* (count + 1) * KMB_HASH_SIZE bytes */
    size_t planned;          /* (internal) records the buffers were sized for */
    uint64_t payload_planned; /* (internal) payload bytes they were sized for */
    /* Always filled when count > 0 (zeros otherwise): */
    uint8_t first_prev[KMB_HASH_SIZE]; /* stored prev_hash of the first record (zeros: genesis) */
    uint8_t last_hash[KMB_HASH_SIZE];  /* chain hash of the last record */
} kmb_columns;

/*
 * Read the records [from, stop) of `stream` (stop is clamped to the stream's next offset;
 * from at or past it reads nothing) into `out`, in order, while the sum of the payload
 * sizes read so far is below max_bytes (as kmb_storage_read: the record that crosses the
 * limit is included; KMB_NO_LIMIT: none; 0 reads nothing). `flags` picks the columns
 * (KMB_COLUMN_*); with none, the records are only verified (first_prev / last_hash /
 * count). Payload offsets are int32 unless KMB_COLUMN_LARGE is given or the payloads
 * exceed INT32_MAX bytes (out->large tells which).
 *
 * `out` is overwritten (it need not be initialised); release it with kmb_columns_free,
 * also after an error (it then owns nothing). A stream that does not exist reads nothing.
 *
 * Errors: those of kmb_storage_read_each — KMB_ECORRUPT, KMB_ECHAIN (a damaged or altered
 * record in the range, or the record before it), KMB_EIO, KMB_ECLOSED — and KMB_EINVAL
 * (stop < from), KMB_ENOMEM.
 */
int kmb_storage_read_columns(kmb_storage *st, uint64_t stream, uint64_t from, uint64_t stop,
                             uint64_t max_bytes, unsigned flags, kmb_columns *out);

/* Free the buffers `c` still owns and zero it. NULL is ignored. */
void kmb_columns_free(kmb_columns *c);

/* Release one buffer taken over from a kmb_columns, of `bytes` bytes (its size as the
 * struct documents it). NULL is ignored. */
void kmb_columns_release(void *buf, size_t bytes);

/* The size in bytes of c->payload_offsets: (count + 1) * 4, or * 8 when large. */
size_t kmb_columns_payload_offsets_size(const kmb_columns *c);

/*
 * Verify the records [from, stop) of `stream` (stop clamped to the next offset): each
 * record's CRC and offset, each link inside the range, and the first record's link to the
 * record before it. *count_out is the number of records checked; first_prev the first
 * one's stored prev_hash (zeros at genesis) and last_hash the last one's hash (both zeros
 * when the count is 0). Ranges verified separately, even by different processes, chain
 * into a whole-stream verification when each range's first_prev equals the previous
 * range's last_hash (kimberlite.dask.verify). Errors: as kmb_storage_read_columns.
 */
int kmb_storage_verify_range(kmb_storage *st, uint64_t stream, uint64_t from, uint64_t stop,
                             uint64_t *count_out, uint8_t first_prev[KMB_HASH_SIZE],
                             uint8_t last_hash[KMB_HASH_SIZE]);

/* One segment of a stream, as kmb_storage_segment_bounds reports it. */
typedef struct kmb_segment_bounds {
    uint32_t number;       /* the segment's number (its file name on disk) */
    uint64_t first;        /* offset of its first record */
    uint64_t next;         /* one past its last valid record (= first when empty) */
    uint64_t bytes;        /* bytes of its valid records (headers included) */
} kmb_segment_bounds;

/*
 * The segments of `stream` in order, the active one included: *out is malloc'd (the caller
 * frees it; NULL when *count is 0, also for a stream that does not exist). Cost: the
 * stream's load on first use, then proportional to its number of segments.
 * Errors: KMB_ECLOSED, KMB_EIO, KMB_ECORRUPT (from loading), KMB_ENOMEM.
 */
int kmb_storage_segment_bounds(kmb_storage *st, uint64_t stream, kmb_segment_bounds **out,
                               size_t *count);

#ifdef __cplusplus
}
#endif

#endif
