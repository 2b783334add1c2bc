/*
 * kimberlite/index.h — the offset index of one segment and its .idx file format.
 *
 *   0       4     magic "VDXI"
 *   4       1     version 0x01
 *   5       3     reserved, zero
 *   8       8     entry count N (u64 LE)
 *   16      8*N   byte position of each record of the segment, in order (u64 LE)
 *   16+8*N  4     CRC-32 of bytes 0 .. 16+8*N
 *
 * Entry i is where the segment's i-th record starts. The index is a cache: the engine
 * never trusts it beyond what the segment confirms and rebuilds it when it is missing or bad.
 */
#ifndef KIMBERLITE_INDEX_H
#define KIMBERLITE_INDEX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KMB_INDEX_MAGIC "VDXI"
#define KMB_INDEX_VERSION 1
#define KMB_INDEX_HEADER_SIZE 16
#define KMB_INDEX_TRAILER_SIZE 4

/*
 * An index in memory: a growable array of positions. A plain value type: zero-initialise
 * it (or call kmb_index_init) and release it with kmb_index_free. Not thread-safe.
 */
typedef struct kmb_index {
    uint64_t *positions; /* owned (or inside `block`); NULL when capacity is 0 */
    size_t count;
    size_t capacity;
    void *block; /* NULL, or the kmb_index_buffer_alloc buffer positions point into */
    /*
     * 0 for a whole index. Otherwise the index is partial (kmb_index_adopt_partial):
     * entries 1 .. lo-1 are not loaded yet (they read as 0 and must not be used: complete
     * the index first, kmb_index_complete); entry 0 and entries lo .. count-1 are.
     */
    size_t lo;
} kmb_index;

/* Whether entry i of the index is loaded (always, for a whole index). */
static inline int kmb_index_has(const kmb_index *ix, size_t i)
{
    return i == 0 || i >= ix->lo;
}

/* Make an empty index. Cannot fail (allocates nothing). */
void kmb_index_init(kmb_index *ix);

/* Release the positions; the index is empty and reusable afterwards. NULL is ignored. */
void kmb_index_free(kmb_index *ix);

/* Append a position. KMB_ENOMEM if the array cannot grow (the index is unchanged). */
int kmb_index_append(kmb_index *ix, uint64_t position);

/* Make room for `extra` more entries. KMB_ENOMEM on failure (index unchanged). */
int kmb_index_reserve(kmb_index *ix, size_t extra);

/*
 * Drop the entries from `count` on (no-op if count >= ix->count). A partial index
 * truncated to one entry or none is whole again; truncated before its loaded window, it
 * stays partial with entries 1 .. count-1 not loaded (lo = count).
 */
void kmb_index_truncate(kmb_index *ix, size_t count);

/*
 * Make `dst` (initialised) hold the same entries as `src`. KMB_ENOMEM if it cannot grow;
 * `dst` is then empty. `src` is not changed; the two must not be the same index. A partial
 * `src` gives a partial `dst` (the same lo).
 */
int kmb_index_copy(kmb_index *dst, const kmb_index *src);

/* 1 and *out = position of entry i if i < count and the entry is loaded, else 0. */
int kmb_index_lookup(const kmb_index *ix, uint64_t i, uint64_t *out);

/* Size in bytes of the encoded file of an index with `count` entries. */
static inline uint64_t kmb_index_encoded_size(uint64_t count)
{
    return KMB_INDEX_HEADER_SIZE + 8 * count + KMB_INDEX_TRAILER_SIZE;
}

/*
 * Encode the index in the .idx format into a new buffer. On KMB_OK the caller owns *out
 * (free() it) of *len bytes. KMB_ENOMEM on allocation failure; KMB_EINVAL for a partial
 * index (complete it first).
 */
int kmb_index_encode(const kmb_index *ix, uint8_t **out, size_t *len);

/*
 * Decode an .idx image into `out` (which must be initialised; its previous entries are
 * replaced). KMB_EINDEX on bad magic, version, reserved bytes, size or CRC (out is then
 * empty), KMB_ENOMEM on allocation failure.
 */
int kmb_index_decode(kmb_index *out, const void *data, size_t len);

/*
 * A buffer of `len` bytes for an encoded index (what a backend's load_index returns and
 * kmb_index_adopt takes). A large one (1 MiB or more) is an anonymous mapping asked for
 * huge pages and populated at once, because a new process otherwise pays a page fault per
 * 4 KiB of a big index (an 8 MB index: ~2000 faults, most of the cost of opening a 1M-record
 * stream); a small one is malloc'd. NULL when out of memory. Release it with
 * kmb_index_buffer_free (never free()).
 */
void *kmb_index_buffer_alloc(size_t len);

/*
 * kmb_index_buffer_alloc for a partial load: the `len` bytes are zero and cost nothing
 * until touched (a large one is mapped but neither populated nor asked for huge pages), so
 * that reading a few KiB of an 8 MB index into it touches a few pages only. Released with
 * kmb_index_buffer_free. NULL when out of memory.
 */
void *kmb_index_buffer_reserve(size_t len);

/* Release a buffer from kmb_index_buffer_alloc or kmb_index_buffer_reserve. NULL is ignored. */
void kmb_index_buffer_free(void *buf);

/*
 * kmb_index_decode, taking ownership of `data` (from kmb_index_buffer_alloc, `len` bytes)
 * in every case: on a
 * little-endian host the buffer is kept and the index's positions point at its entries in
 * place (no second allocation or copy of a large index); elsewhere, or when that is not
 * possible, it is decoded and freed. Same errors as kmb_index_decode; `data` is freed on
 * error too.
 */
int kmb_index_adopt(kmb_index *out, uint8_t *data, size_t len);

/*
 * kmb_index_adopt that also checks the gaps between successive entries in the same pass
 * over the image as the CRC (one trip through memory for a large index). When `good` is
 * not NULL, on KMB_OK *good is the number of leading entries whose successive gaps all lie
 * in [min_gap, max_gap] (and are increasing): count when every gap does, and at least 1
 * when count > 0 (one entry has no gap). *good is 0 on error. Same ownership and errors as
 * kmb_index_adopt.
 */
int kmb_index_adopt_checked(kmb_index *out, uint8_t *data, size_t len, uint64_t min_gap,
                            uint64_t max_gap, size_t *good);

/*
 * Adopt a partly read .idx image as a partial index (for a large index of which a new
 * process needs only the end). `data` (from kmb_index_buffer_reserve, `len` bytes: the
 * whole file's length) holds the file's first 24 bytes (the header and entry 0) and its
 * entries lo .. N-1 at their places; the rest is zero, and the trailing CRC is not read.
 * Checked: the header against len (as kmb_index_decode), 1 <= lo < N, and the gaps of
 * entries lo .. N-1 as kmb_index_adopt_checked does (*good: N when every gap from entry lo
 * on is good, else the first entry >= lo+1 whose gap is not). The CRC is not checked: the
 * index must be completed (kmb_index_complete) before anything below entry lo is used.
 * Takes ownership of `data` in every case. KMB_EINDEX (bad header), KMB_EINVAL (lo out of
 * range, or a big-endian host: load the whole file instead); `out` is then empty.
 */
int kmb_index_adopt_partial(kmb_index *out, uint8_t *data, size_t len, size_t lo,
                            uint64_t min_gap, uint64_t max_gap, size_t *good);

/*
 * Complete a partial index from the whole .idx image `data` (from kmb_index_buffer_alloc,
 * `len` bytes; ownership taken in every case), read after the partial load, possibly from
 * a file written since. The image must pass every check of kmb_index_adopt_checked (magic,
 * version, size, CRC), hold at least `used` entries whose gaps are all in [min_gap,
 * max_gap], and agree with the index on entry 0 and on every loaded entry below `used` (the
 * entries of the index that came from the file: entries at or past `used` were added
 * since, by a scan or an append, and are kept). On KMB_OK the index is whole (lo = 0) and
 * keeps its count. On KMB_EINDEX (with a message that says which check failed) or
 * KMB_ENOMEM the index is unchanged, still partial. A whole index: KMB_OK, data freed.
 */
int kmb_index_complete(kmb_index *ix, size_t used, uint8_t *data, size_t len, uint64_t min_gap,
                       uint64_t max_gap);

/*
 * Write the index to `path`: to "path.tmp" first, then renamed over `path`, so a reader
 * sees the old or the new file, never a mixture. Not synced (an index is a cache).
 * KMB_EIO (errno, path set) or KMB_ENOMEM.
 */
int kmb_index_save(const kmb_index *ix, const char *path);

/*
 * Read and decode the index file at `path` into `out` (initialised). KMB_EIO on a read
 * error (ENOENT when the file does not exist; EISDIR or EINVAL, without waiting, when it
 * is not a regular file: a directory, FIFO, device or socket), KMB_EINDEX when the
 * contents are bad, KMB_ENOMEM.
 */
int kmb_index_load(kmb_index *out, const char *path);

#ifdef __cplusplus
}
#endif
#endif
