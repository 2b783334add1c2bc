/*
 * kimberlite/storage.h — the log engine: numbered streams of records in rotating segments.
 *
 * Design (SPEC.md §3, docs/FORMAT.md):
 *  - A stream is an append-only sequence of records, offsets 0, 1, 2, … with no gaps, kept
 *    in segments numbered from 0. Rotation is eager: an append that leaves the active
 *    segment at or above max_segment_size makes a new, empty segment the active one. A
 *    batch never straddles two segments.
 *  - Appends are all or nothing: every input is validated before a byte is written, and a
 *    failed write is cut back. fsync = 1 makes the batch durable before the call returns.
 *  - Streams load lazily, on first use, in time proportional to their indexes plus the
 *    unindexed tail of each segment. A writer moves a torn tail of the active segment into a
 *    quarantine file; damage followed by valid records, or in a sealed segment, is
 *    corruption: reads that reach it and appends to that stream fail with KMB_ECORRUPT.
 *  - Reads check every record they return (CRC, offset, chain link) and cost what they
 *    return, not the size of the stream.
 *
 * Threads: every function may be called from any thread; calls on one kmb_storage are
 * serialised by a mutex inside it. Large appends, reads and verifies (256 KiB and more)
 * hand the SHA-256 chain to a worker thread owned by the storage, started on first need
 * (with every signal blocked) and joined by kmb_storage_close; smaller ones hash on the
 * calling thread. Errors: see errors.h; details via kmb_error_last().
 */
#ifndef KIMBERLITE_STORAGE_H
#define KIMBERLITE_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "chain.h"
#include "errors.h"
#include "record.h"
#include "slice.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KMB_DEFAULT_MAX_SEGMENT_SIZE (UINT64_C(256) * 1024 * 1024)
#define KMB_DEFAULT_MAX_EVENT_SIZE (UINT64_C(64) * 1024 * 1024)
#define KMB_NO_LIMIT UINT64_MAX

typedef struct kmb_storage kmb_storage;
typedef struct kmb_backend kmb_backend; /* the backend interface: sys/backend.h */

typedef struct kmb_options {
    uint64_t max_segment_size; /* > 0; default KMB_DEFAULT_MAX_SEGMENT_SIZE */
    uint64_t max_event_size;   /* > 0; default KMB_DEFAULT_MAX_EVENT_SIZE; capped at 2**32-1 */
    int read_only;             /* disk only: no lock, no writes */
    /*
     * Threads that check and hash a large read or verify, the caller included (see
     * kmb_storage_read_each): 0 = automatic (the environment variable KIMBERLITE_READ_THREADS
     * if set, else the CPUs the process may use, at most 8; 1 on one CPU), 1 = inline on the
     * caller, N (at most KMB_MAX_READ_THREADS) = the caller and N-1 pool threads, even on
     * fewer CPUs. kmb_storage_options reports the number in force.
     */
    unsigned read_threads;
} kmb_options;

#define KMB_MAX_READ_THREADS 64u
#define KMB_READ_THREADS_ENV "KIMBERLITE_READ_THREADS"

/* Records returned by kmb_storage_read: payloads point into `buffer`. */
typedef struct kmb_read_result {
    kmb_record *records; /* count entries, owned */
    size_t count;
    uint64_t payload_bytes; /* sum of the payload lengths */
    uint8_t *buffer;        /* owned; backs every records[i].payload */
    size_t buffer_cap;
    size_t records_cap;
} kmb_read_result;

/* Fill `opts` with the defaults. */
void kmb_options_init(kmb_options *opts);

/*
 * Open a storage on a data directory (the disk backend). `opts` NULL means defaults.
 * On KMB_OK the caller owns *out: release it with kmb_storage_free.
 * Errors: KMB_EINVAL (bad options), KMB_EIO (cannot create or open the directory; the
 * directory is missing in read-only mode), KMB_ELOCKED, KMB_ENOMEM.
 */
int kmb_storage_open(kmb_storage **out, const char *path, const kmb_options *opts);

/* Open a storage over a new memory backend. opts->read_only must be 0. */
int kmb_storage_open_memory(kmb_storage **out, const kmb_options *opts);

/*
 * Open a storage over any backend (sys/backend.h). Takes ownership of `backend` in every
 * case (it is freed on failure). opts->read_only is taken from backend->read_only.
 * Errors: KMB_EINVAL (bad options; a backend of another KMB_BACKEND_VERSION or missing a
 * required callback), KMB_ENOMEM, KMB_ERROR (no mutex).
 */
int kmb_storage_open_backend(kmb_storage **out, kmb_backend *backend, const kmb_options *opts);

/*
 * Flush indexes and release the backend (files, lock). Idempotent; after it every other
 * call fails with KMB_ECLOSED. Returns the first index-flush error, if any, but closes
 * regardless.
 */
int kmb_storage_close(kmb_storage *st);

/* Close (errors ignored) and free. NULL is ignored. */
void kmb_storage_free(kmb_storage *st);

/* 1 once kmb_storage_close has run. */
int kmb_storage_is_closed(kmb_storage *st);

/* The options in force (read-only flag included). */
const kmb_options *kmb_storage_options(kmb_storage *st);

/*
 * Append a batch of `count` events to a stream, creating the stream if needed.
 * expected_offset: NULL appends at the end; otherwise it must equal the stream's next
 * offset. fsync: 1 = durable on return. On KMB_OK *next_out (may be NULL) is the new next
 * offset. Errors, with nothing written: KMB_EINVAL (count 0, an event larger than
 * max_event_size), KMB_EOFFSET, KMB_EREADONLY, KMB_ECLOSED, KMB_ECORRUPT (the stream is
 * damaged), KMB_EIO (the segment is cut back to its size before the batch), KMB_ENOMEM.
 */
int kmb_storage_append(kmb_storage *st, uint64_t stream, const kmb_slice *events,
                       size_t count, const uint64_t *expected_offset, int fsync,
                       uint64_t *next_out);

/*
 * Read records from `from` on, while the sum of payload sizes returned so far is below
 * max_bytes (KMB_NO_LIMIT: no limit; 0 returns nothing). Every record is checked (CRC,
 * offset, chain link). *out must be zero-initialised or a previously used result (reused
 * buffers); release it with kmb_read_result_free. An absent stream or `from` at or past
 * the end gives 0 records. Errors: KMB_ECORRUPT, KMB_ECHAIN, KMB_EIO, KMB_ECLOSED,
 * KMB_ENOMEM; *out then holds 0 records.
 */
int kmb_storage_read(kmb_storage *st, uint64_t stream, uint64_t from, uint64_t max_bytes,
                     kmb_read_result *out);

/*
 * Called by kmb_storage_read_each with each chunk of records, in order, once every record
 * of the chunk has been checked (CRC, offset, chain link). `records` and the payloads they
 * point to are borrowed: valid only during the call. The callback runs with the storage's
 * mutex held, so it must not call into the same storage; it may block on other locks (the
 * Python binding takes the GIL in it). Return 0 to go on; any other value stops the read.
 */
typedef int (*kmb_read_fn)(void *ctx, const kmb_record *records, size_t count);

/*
 * The same read as kmb_storage_read, delivered in chunks instead of one result: memory
 * stays bounded (a few hundred KiB of reused buffers, or one record when a record is
 * larger) whatever the read returns, and the consumer handles each chunk while it is in
 * the cache. A large read hashes on the storage's worker thread, overlapped with reading
 * and checking. Every record is delivered exactly once, and never before it was checked;
 * when the read fails after some chunks were delivered, those records are good and the
 * error concerns the records after them. Returns KMB_OK, the errors of kmb_storage_read,
 * or the nonzero value `fn` returned (then no error is recorded by the engine).
 */
int kmb_storage_read_each(kmb_storage *st, uint64_t stream, uint64_t from, uint64_t max_bytes,
                          kmb_read_fn fn, void *ctx);

/* Release a read result's memory (it is zeroed and reusable). */
void kmb_read_result_free(kmb_read_result *r);

/*
 * Number of records in the stream (0 if absent). Loads the stream on first use, so:
 * Errors: KMB_EIO, KMB_ECLOSED, KMB_ENOMEM (damage found while loading is not an error
 * here: reads and appends report it).
 */
int kmb_storage_next_offset(kmb_storage *st, uint64_t stream, uint64_t *out);

/* The stream's head hash; *has = 0 for an absent or empty stream. Errors: as next_offset. */
int kmb_storage_head(kmb_storage *st, uint64_t stream, uint8_t out[KMB_HASH_SIZE], int *has);

/*
 * Verify the whole stream from genesis: every CRC, offset and chain link, in bounded
 * memory. expected_head (NULL: none) must equal the head, else KMB_ECHAIN. On KMB_OK
 * *next_out is the record count and head_out and *has_head the head (each output may be NULL).
 * Errors: KMB_ECORRUPT, KMB_ECHAIN, KMB_EIO, KMB_ECLOSED, KMB_ENOMEM.
 */
int kmb_storage_verify(kmb_storage *st, uint64_t stream, const uint8_t *expected_head,
                       uint64_t *next_out, uint8_t head_out[KMB_HASH_SIZE], int *has_head);

/*
 * Streams that exist, ascending; the caller frees *out (NULL when *count is 0).
 * Errors: KMB_EIO, KMB_ECLOSED, KMB_ENOMEM.
 */
int kmb_storage_streams(kmb_storage *st, uint64_t **out, size_t *count);

/* Number of segments of a stream, the active one included (0 if absent). Errors: as
 * next_offset. */
int kmb_storage_segment_count(kmb_storage *st, uint64_t stream, uint64_t *out);

/* Sealed segment numbers, ascending; the caller frees *out (NULL when *count is 0).
 * Errors: as next_offset. */
int kmb_storage_completed_segments(kmb_storage *st, uint64_t stream, uint32_t **out,
                                   size_t *count);

/*
 * Write every index that changed since it was last written. No-op when read-only. Every
 * index is attempted; the first failure is returned. Errors: KMB_EIO, KMB_ECLOSED,
 * KMB_ENOMEM.
 */
int kmb_storage_flush_indexes(kmb_storage *st);

/* One quarantine object made by kmb_storage_repair. */
typedef struct kmb_repair_item {
    char name[KMB_PATH_MAX]; /* the quarantine file's path (disk) or name (memory) */
    uint64_t bytes;          /* bytes moved into it */
} kmb_repair_item;

/* What kmb_storage_repair did. Release with kmb_repair_report_free. */
typedef struct kmb_repair_report {
    uint64_t next_offset;   /* the stream's next offset after the repair */
    kmb_repair_item *items; /* count entries (malloc'd, owned by the report), in order made */
    size_t count;
    uint64_t bytes_moved;   /* the sum of items[i].bytes */
} kmb_repair_report;

/*
 * The explicit salvage path for a damaged stream (docs/GUARANTEES.md, "Repair"): rescan
 * every segment and check every chain link from genesis, then move everything after the
 * last valid record — the rest of its segment and every later segment, whole — into
 * quarantine objects (segment_NNNNNN.log.torn-K beside the segment on disk). Nothing is
 * deleted; a stream with nothing to repair is not changed (count 0). Afterwards verify
 * passes and appends continue the chain. *out is overwritten (zeroed on failure); release
 * it with kmb_repair_report_free. An absent stream gives an empty report. Errors:
 * KMB_EREADONLY (repair needs the writer), KMB_EIO (then some objects may have been moved:
 * run it again), KMB_ECLOSED, KMB_ENOMEM, KMB_EINVAL (a backend that cannot remove segments).
 */
int kmb_storage_repair(kmb_storage *st, uint64_t stream, kmb_repair_report *out);

/* Release a repair report's memory (it is zeroed). NULL is allowed. */
void kmb_repair_report_free(kmb_repair_report *r);

/*
 * ---- the verifiable log (SPEC §6; csrc/tree.c) ----
 *
 * Each stream is an RFC 9162 Merkle log whose entries are its records' chain hashes
 * (merkle.h). The tree is kept in memory per stream and integrated lazily: appends do not
 * touch it; these calls first catch it up from the records not integrated yet, read and
 * checked like kmb_storage_read (CRC, offset, chain link), then answer in O(log n) hashes.
 * Nothing of it is persisted: a new process rebuilds it on first use (one read of the
 * stream). Memory: about 34 bytes per record of the streams asked about.
 *
 * `size` KMB_TREE_SIZE_ALL means the stream's next offset at the time of the call; the size
 * used is written to *size_out (may be NULL). A stream that does not exist has 0 records.
 * Errors: KMB_EINVAL for sizes and indexes out of range (below), nothing computed; the
 * errors of kmb_storage_read (KMB_ECORRUPT, KMB_ECHAIN, KMB_EIO, KMB_ENOMEM) while catching
 * up; KMB_ECLOSED.
 */
#define KMB_TREE_SIZE_ALL UINT64_MAX

/* out = the root of the tree of the first `size` records, 0 <= size <= next offset (size 0:
 * SHA-256 of the empty string). */
int kmb_storage_tree_root(kmb_storage *st, uint64_t stream, uint64_t size, uint8_t out[32],
                          uint64_t *size_out);

/*
 * The RFC 9162 inclusion proof of record `index` in the tree of `size` records (0 < size <=
 * next offset, index < size): out[0 .. *count), nearest the leaf first. `out` must hold
 * KMB_MERKLE_MAX_INCLUSION (64) hashes.
 */
int kmb_storage_inclusion_proof(kmb_storage *st, uint64_t stream, uint64_t index, uint64_t size,
                                uint8_t (*out)[32], unsigned *count, uint64_t *size_out);

/*
 * The RFC 9162 consistency proof from the tree of old_size records to that of new_size
 * (0 < old_size <= new_size <= next offset; equal sizes give *count 0): out[0 .. *count).
 * `out` must hold KMB_MERKLE_MAX_CONSISTENCY (128) hashes. *size_out is new_size.
 */
int kmb_storage_consistency_proof(kmb_storage *st, uint64_t stream, uint64_t old_size,
                                  uint64_t new_size, uint8_t (*out)[32], unsigned *count,
                                  uint64_t *size_out);

/*
 * Make every record of the stream durable: sync the segments written with fsync=0 (or
 * found on disk unsynced) and the stream's directory entries. An absent stream is KMB_OK.
 * Errors: KMB_EREADONLY, KMB_EIO, KMB_ECLOSED.
 */
int kmb_storage_sync(kmb_storage *st, uint64_t stream);

/*
 * For signing: make every record of the stream durable (as kmb_storage_sync), then give
 * the root and size (the next offset) of the whole tree, all under one lock, so that no
 * record appended meanwhile (and not durable) is included. An absent or empty stream gives
 * size 0 and the empty root. Errors: KMB_EREADONLY, those of kmb_storage_sync and of
 * catching the tree up; KMB_ECORRUPT for a damaged stream.
 */
int kmb_storage_durable_root(kmb_storage *st, uint64_t stream, uint8_t out[32],
                             uint64_t *size_out);

/* The largest stored checkpoint (bytes): a note and a key, a few hundred bytes in practice. */
#define KMB_CHECKPOINT_MAX 65536

/*
 * The stream's stored checkpoint bytes (opaque to the engine: kimberlite._storage writes and
 * checks them; docs/TLOG.md gives the format). *out (malloc'd, the caller frees it; NULL when
 * *len is 0) is NULL when none is stored, the stream is absent, or the backend stores none.
 * Errors: KMB_EIO, KMB_ECORRUPT (not a regular file, or too large), KMB_ECLOSED, KMB_ENOMEM.
 */
int kmb_storage_load_checkpoint(kmb_storage *st, uint64_t stream, uint8_t **out, size_t *len);

/*
 * Replace the stream's stored checkpoint bytes with data[0:len], atomically and durably,
 * if and only if the bytes stored now are expected[0:expected_len] (expected NULL: none is
 * stored) — a compare-and-swap, so that two signers never lose one another's checkpoint.
 * Errors: KMB_EOFFSET (the stored bytes differ: nothing written), KMB_EINVAL (no records in
 * the stream, len > KMB_CHECKPOINT_MAX, a backend without checkpoint storage),
 * KMB_EREADONLY, KMB_EIO, KMB_ECLOSED, KMB_ENOMEM.
 */
int kmb_storage_store_checkpoint(kmb_storage *st, uint64_t stream, const uint8_t *expected,
                                 size_t expected_len, const uint8_t *data, size_t len);

/*
 * Recovery actions taken while loading streams (quarantines, index rebuilds, damage found)
 * are reported to this callback, if set, with a one-line message. The callback runs with
 * the storage's mutex held and must not call back into the storage.
 */
typedef void (*kmb_event_fn)(void *ctx, const char *message);
void kmb_storage_set_event_callback(kmb_storage *st, kmb_event_fn fn, void *ctx);

/*
 * Testing hooks (used by kimberlite.testing to damage a stream in either backend; not for
 * applications). kmb_storage_segment_bytes copies a segment's bytes into *out (malloc'd,
 * owned by the caller). kmb_storage_replace_segment_bytes overwrites a segment with `len`
 * bytes and drops the engine's cached state of that stream, so that the next call loads it
 * again, exactly as after reopening (recovery runs, damage is found as on disk).
 * Errors: KMB_ENOTFOUND (no such segment), KMB_EREADONLY, KMB_EIO, KMB_ECLOSED, KMB_ENOMEM.
 */
int kmb_storage_segment_bytes(kmb_storage *st, uint64_t stream, uint32_t seg, uint8_t **out,
                              size_t *len);
int kmb_storage_replace_segment_bytes(kmb_storage *st, uint64_t stream, uint32_t seg,
                                      const void *data, size_t len);

/*
 * Testing hooks for the parallel reader (not for applications): make small reads take the
 * pool's path. min_bytes: reads and segments of at least this many bytes use the pool
 * (0 = the default, 256 KiB); chunk_bytes: bytes read and checked at a time (0 = 256 KiB);
 * block: records claimed at a time by a thread (0 = about 8 KiB of records); helpers_only:
 * the caller leaves every record to the pool's threads and never backs off. The pool size
 * stays the read_threads option's. kmb_storage_read_stats gives the records the pool's
 * threads have checked since they started in this process (*helped) and the read_threads in
 * force (*threads); either may be NULL. Errors: KMB_ECLOSED.
 */
int kmb_storage_set_read_tuning(kmb_storage *st, uint64_t min_bytes, size_t chunk_bytes,
                                size_t block, int helpers_only);
int kmb_storage_read_stats(kmb_storage *st, uint64_t *helped, unsigned *threads);

/*
 * Testing hook (not for applications): how much of each segment's offset index is loaded,
 * loading the stream if needed. out[k] (k < cap) is 0 when segment k's index is whole, else
 * the first entry of its loaded window (entries 1 .. out[k]-1 are not read yet: a partial
 * index, docs/DESIGN.md); *nsegs is the stream's number of segments (0: no such stream).
 * Errors: KMB_ECLOSED, the load's.
 */
int kmb_storage_index_window(kmb_storage *st, uint64_t stream, size_t *out, size_t cap,
                             size_t *nsegs);

/*
 * Testing hooks for a stream's tree data (the Merkle tree cache, tree.c). kmb_storage_tree_data
 * copies it into *out (malloc'd, owned by the caller; NULL with *len 0 when there is none).
 * kmb_storage_replace_tree_data stores `len` bytes as the tree data (len 0: empty data) and
 * drops the stream's cached state as kmb_storage_replace_segment_bytes does. Errors:
 * KMB_EINVAL (the backend has no tree data), KMB_EREADONLY, KMB_EIO, KMB_ECLOSED, KMB_ENOMEM.
 */
int kmb_storage_tree_data(kmb_storage *st, uint64_t stream, uint8_t **out, size_t *len);
int kmb_storage_replace_tree_data(kmb_storage *st, uint64_t stream, const void *data,
                                  size_t len);

/*
 * fork() support: an at-fork protocol, in the manner of pthread_atfork(3). The library
 * registers nothing itself (no global state): the application (the Python binding does it
 * with os.register_at_fork) calls, for every storage it has open and not yet freed,
 *   kmb_storage_fork_prepare   just before fork(), in the forking thread: waits for the
 *                              call in progress on the storage, if any, to end, then holds
 *                              the storage's mutex, so that no thread is inside it at the
 *                              moment of the fork. Do not hold locks that a thread inside
 *                              the storage may be waiting for (a read callback's, the
 *                              Python GIL) while it waits;
 *   kmb_storage_fork_parent    after fork() in the parent: releases the mutex;
 *   kmb_storage_fork_child     after fork() in the child: releases the mutex, forgets the
 *                              parent's hashing threads (they do not exist in the child;
 *                              new ones start on first need), and, for a disk writer,
 *                              closes the child's copy of the lock file descriptor, so that
 *                              the lock is released when the parent closes its writer
 *                              whether the child lives on or not (flock belongs to the open
 *                              file description the two processes share).
 * A disk writer stays unusable in the child (two writers would interleave records): every
 * call there fails with KMB_ERROR and closing it releases nothing of the parent's. Read-only
 * and memory storages work in the child as in the parent. Closed storages may be passed
 * (until kmb_storage_free). Call prepare for several storages in any fixed order and
 * parent/child for each of them once. None of these fail.
 */
void kmb_storage_fork_prepare(kmb_storage *st);
void kmb_storage_fork_parent(kmb_storage *st);
void kmb_storage_fork_child(kmb_storage *st);

#ifdef __cplusplus
}
#endif
#endif
