/*
 * kimberlite/sys/backend.h — the segment-store interface under the log engine: what a
 * backend implements. Public, for someone writing a third backend (like libgit2's
 * include/git2/sys/odb_backend.h); applications only open storages (storage.h).
 *
 * A backend stores the bytes of segments and of their indexes; it knows nothing of records,
 * chains or recovery, which the engine implements once for every backend: records are
 * checked, indexes decoded and verified (index.h), damage found and torn tails classified
 * by the engine, so a new backend gets all of that by construction. The disk backend keeps
 * files (data_dir/{stream}/segment_%06u.log and .idx); the memory backend keeps buffers.
 *
 * Writing one: embed `kmb_backend` as the first member of your own struct, fill every
 * required callback (the optional ones may be NULL), set `version` to KMB_BACKEND_VERSION
 * and hand it to kmb_storage_open_backend (storage.h), which takes ownership.
 *
 * Conventions for every callback:
 *  - Errors: return KMB_OK, or a KMB_E* code (errors.h) after recording the details with
 *    kmb_error_set() (and kmb_error_set_path() when a file is involved). The engine adds
 *    the stream and, when the error has no path, describe()'s name of the segment. Use
 *    KMB_EIO with the errno for operating-system failures, KMB_ENOMEM for allocations,
 *    KMB_ENOTFOUND for "no such segment/index" where a callback says so.
 *  - Ownership: arrays and buffers returned through `out` are malloc'd and owned by the
 *    caller (the engine free()s them); buffers passed in are borrowed for the call only.
 *  - Serialisation: the engine makes one call at a time per backend (under the storage's
 *    mutex), so callbacks need no locking of their own. They may be called from any thread.
 *  - `seg` is a segment number (0, 1, …); `stream` a stream id.
 */
#ifndef KIMBERLITE_SYS_BACKEND_H
#define KIMBERLITE_SYS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "fault_codes.h" /* kmb_fault_plan */

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The interface's version. kmb_storage_open_backend refuses a backend built for another.
 * 3: load_index's buffer comes from kmb_index_buffer_alloc (a version-2 backend's malloc'd
 * buffer would be released with kmb_index_buffer_free: refused instead); the tree data
 * callbacks.
 * 4: the optional load_index_ends (a large index read in part at open).
 */
#define KMB_BACKEND_VERSION 4
#define KMB_WATERMARK_MAX 64 /* bytes of a stream's durable watermark record */

/*
 * Capability flags (kmb_backend.flags).
 *
 * KMB_BACKEND_PROCESS_BOUND: a writer on this backend holds resources bound to the process
 * that opened it (the disk backend's flock on the data directory). In a child after fork()
 * the engine refuses every call (two processes would write) and close() releases the
 * backend without flushing, syncing or cutting anything: the parent still owns the files.
 */
#define KMB_BACKEND_PROCESS_BOUND (1u << 0)

typedef struct kmb_backend kmb_backend;

struct kmb_backend {
    /*
     * These three come first and keep their place in every version of the interface, so
     * that the engine can read the version of any backend and release one it refuses.
     */
    unsigned version;             /* KMB_BACKEND_VERSION */
    unsigned flags;               /* KMB_BACKEND_* capabilities, or 0 */
    void (*free)(kmb_backend *b); /* release the backend and all it holds (files, locks) */

    int read_only; /* 1 if the backend refuses writes (the storage is then read-only) */

    /* ---- required callbacks */

    /* Streams that exist, ascending. *out is NULL when *count is 0. */
    int (*list_streams)(kmb_backend *b, uint64_t **out, size_t *count);

    /* Segment numbers of a stream, ascending; *count 0 (and KMB_OK) if the stream is absent. */
    int (*list_segments)(kmb_backend *b, uint64_t stream, uint32_t **out, size_t *count);

    /* *exists = 1 if the segment exists, else 0. */
    int (*segment_exists)(kmb_backend *b, uint64_t stream, uint32_t seg, int *exists);

    /* Current size in bytes of a segment. */
    int (*segment_size)(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t *out);

    /* Read up to len bytes at pos; *nread < len only at the end of the segment. */
    int (*read)(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t pos, void *buf,
                size_t len, size_t *nread);

    /*
     * Write all len bytes at pos, or fail. After a failure some of the bytes may have been
     * written: the engine truncates the segment back.
     */
    int (*write)(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t pos, const void *buf,
                 size_t len);

    /* Cut a segment to `size` bytes. */
    int (*truncate)(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t size);

    /* Make the segment's data durable (fdatasync); a backend without durability returns KMB_OK. */
    int (*sync)(kmb_backend *b, uint64_t stream, uint32_t seg);

    /*
     * Create an empty segment (and the stream, if new). An existing segment is kept as is.
     * durable: also make the new names durable (the disk backend syncs the directories).
     */
    int (*create_segment)(kmb_backend *b, uint64_t stream, uint32_t seg, int durable);

    /*
     * Move the bytes [from, end) of a segment into a new quarantine object named after the
     * segment ("segment_000003.log.torn-1"), then cut the segment at `from`. Nothing is
     * deleted. The name used is written to name_out (NUL-terminated, truncated to name_cap).
     */
    int (*quarantine)(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t from,
                      char *name_out, size_t name_cap);

    /*
     * The stored index bytes of a segment (the .idx format, index.h), as saved by
     * save_index: *out (from kmb_index_buffer_alloc, index.h, released by the caller with
     * kmb_index_buffer_free; NULL when *len is 0) holds *len bytes.
     * A stored index larger than max_len bytes is not read at all: return KMB_EINDEX (no
     * index of a segment that exists can be that large; the engine rebuilds it).
     * KMB_ENOTFOUND if there is none. The engine decodes and checks the bytes itself.
     */
    int (*load_index)(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t max_len,
                      uint8_t **out, size_t *len);

    /* Store a segment's index bytes, replacing any previous ones (atomically, ideally). */
    int (*save_index)(kmb_backend *b, uint64_t stream, uint32_t seg, const uint8_t *data,
                      size_t len);

    /* Name a segment for messages ("/data/7/segment_000002.log", "memory:7/2"). Cannot fail. */
    void (*describe)(kmb_backend *b, uint64_t stream, uint32_t seg, char *out, size_t cap);

    /* ---- optional callbacks: NULL when the backend has nothing to do or no such layer */

    /*
     * Make a stream's names durable: its segments' entries in the stream directory and the
     * stream directory's entry in the data directory. The engine calls it before an
     * fsync=True append when segments were created without durable=1.
     */
    int (*sync_dir)(kmb_backend *b, uint64_t stream);

    /*
     * For tests (sys/faults.h): when `plan` is not NULL, install it on the backend's I/O
     * layer, replacing any previous plan and resetting the counters; then, for each of
     * `calls` and `faults` that is not NULL, report the counted calls and the faults
     * injected since. Without this callback, kmb_storage_set_fault fails with KMB_EINVAL.
     */
    int (*fault_plan)(kmb_backend *b, const kmb_fault_plan *plan, uint64_t *calls,
                      uint64_t *faults);

    /*
     * A stream's durable watermark: a small record (the engine's bytes, at most
     * KMB_WATERMARK_MAX) saying how far its segments are known to be durable. The engine
     * saves it after an fsync=True append's sync returned and never asks for it to be
     * synced: whatever version survives a crash was written after the data it describes
     * reached the disk, so it is never ahead of the durable data. save: replace the previous
     * bytes; best effort (the engine ignores its errors). load: *len bytes into buf;
     * KMB_ENOTFOUND when there is none. NULL where crashes cannot happen (memory): recovery
     * then uses its strict rule.
     */
    int (*save_watermark)(kmb_backend *b, uint64_t stream, const void *data, size_t len);
    int (*load_watermark)(kmb_backend *b, uint64_t stream, void *buf, size_t cap, size_t *len);

    /*
     * Remove the stream's last segment, which repair has just emptied into a quarantine
     * object, and its index. KMB_EINVAL if it is not empty or not the last.
     */
    int (*remove_segment)(kmb_backend *b, uint64_t stream, uint32_t seg);

    /*
     * In the child of a fork(), for a backend inherited from the parent: give up what
     * belongs to the parent's process without touching it (the disk backend closes its copy
     * of the writer's lock descriptor, which leaves the parent's lock held by the parent's
     * own descriptor). Called with nothing else running. NULL: nothing to give up.
     */
    void (*after_fork_child)(kmb_backend *b);

    /*
     * A stream's latest signed checkpoint (csrc/tree.c; SPEC §6): opaque bytes the engine
     * writes and checks. save: replace the previous bytes atomically and durably (the disk
     * backend writes a temporary file, syncs it, renames it to {stream}/checkpoint and syncs
     * the directory), so that a crash leaves the old bytes or the new ones. load: *out
     * (malloc'd, owned by the caller) holds *len bytes; KMB_ENOTFOUND when there are none.
     * NULL (both): the backend cannot store checkpoints (Storage.checkpoint refuses).
     */
    int (*save_checkpoint)(kmb_backend *b, uint64_t stream, const uint8_t *data, size_t len);
    int (*load_checkpoint)(kmb_backend *b, uint64_t stream, uint64_t max_len, uint8_t **out,
                           size_t *len);

    /*
     * A stream's tree data (csrc/tree.c; treedata.h; docs/FORMAT.md §12): a cache of its
     * Merkle tree's nodes, opaque bytes the engine writes, checks on every load and rebuilds
     * from the records whenever they are missing, short or wrong, so a backend may lose them
     * at any time. The disk backend keeps data_dir/{stream}/tree.
     * tree_size: *len = the stored length; KMB_ENOTFOUND when there are none (or when what
     *   is there cannot be read as plain bytes, e.g. not a regular file).
     * load_tree: exactly len bytes at pos into buf; an error (any code) if fewer exist.
     * save_tree: keep the first pos bytes (pos <= the stored length; 0 replaces everything,
     *   creating the data if needed), write `len` bytes of data after them and drop whatever
     *   followed. Never synced: whatever a crash leaves is checked on load. Only writers call it.
     * NULL (all three): no tree data; each process rebuilds a stream's tree from its records.
     * Added in interface version 3.
     */
    int (*tree_size)(kmb_backend *b, uint64_t stream, uint64_t *len);
    int (*load_tree)(kmb_backend *b, uint64_t stream, uint64_t pos, void *buf, size_t len);
    int (*save_tree)(kmb_backend *b, uint64_t stream, uint64_t pos, const void *data,
                     size_t len);

    /*
     * The two ends of a segment's stored index, for a large index of which a new process
     * needs only the end (docs/DESIGN.md, "Open reads the end of a large index"): *size is
     * the stored index's length in bytes; when it is at least min_size (and at most max_len),
     * its first head_len bytes go to head and its last tail_len bytes to tail (buffers of
     * those sizes; min_size >= head_len + tail_len). A smaller index: KMB_OK with *size
     * set and nothing read (the engine then calls load_index). Larger than max_len:
     * KMB_EINDEX, nothing read. KMB_ENOTFOUND if there is none; a short read (the file
     * shrank meanwhile) is an error (any code). The bytes come from one version of the
     * index: one open file, read twice. The engine checks them, and reads the whole index
     * with load_index (maybe a newer version by then) before it uses any other entry.
     * NULL: the engine always reads the whole index with load_index (the memory backend,
     * whose index is already in memory). Added in interface version 4.
     */
    int (*load_index_ends)(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t max_len,
                           uint64_t min_size, uint8_t *head, size_t head_len, uint8_t *tail,
                           size_t tail_len, uint64_t *size);
};

/*
 * Open the disk backend on `path`. read_only = 0: create the directory if needed and take
 * the exclusive writer lock (KMB_ELOCKED if another writer holds it). read_only = 1: the
 * directory must exist (KMB_EIO, ENOENT otherwise); no lock, no writes.
 * On KMB_OK the caller owns *out (release with (*out)->free(*out), or hand it to
 * kmb_storage_open_backend). Errors: KMB_EINVAL (empty path), KMB_EIO, KMB_ELOCKED,
 * KMB_ENOMEM.
 */
int kmb_backend_disk_open(kmb_backend **out, const char *path, int read_only);

/* A new, empty memory backend. KMB_ENOMEM on failure. Ownership as above. */
int kmb_backend_memory_new(kmb_backend **out);

#ifdef __cplusplus
}
#endif
#endif
