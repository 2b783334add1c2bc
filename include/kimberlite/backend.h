/*
 * kimberlite/backend.h — the segment-store interface under the log engine.
 *
 * A backend stores the bytes of segments and indexes; it knows nothing of records, chains
 * or recovery, which the engine (storage.h) implements once for every backend. The disk
 * backend keeps files (data_dir/{stream}/segment_%06u.log and .idx); the memory backend
 * keeps buffers. A backend is a struct of function pointers, like libgit2's odb backends:
 * embed `kmb_backend` as the first member of your own struct.
 *
 * Conventions for every callback: return KMB_OK or a KMB_E* code after recording the
 * details with kmb_error_set(); `seg` is a segment number; arrays returned through `out`
 * are malloc'd and owned by the caller. The engine serialises calls (one at a time per
 * backend), so callbacks need no locking of their own.
 */
#ifndef KIMBERLITE_BACKEND_H
#define KIMBERLITE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "index.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KMB_BACKEND_VERSION 1
#define KMB_WATERMARK_MAX 64 /* bytes of a stream's durable watermark record */

typedef struct kmb_backend kmb_backend;

struct kmb_backend {
    unsigned version; /* KMB_BACKEND_VERSION */
    int read_only;    /* 1 if the backend refuses writes */

    /* Streams that exist, ascending. *out is NULL when *count is 0. */
    int (*list_streams)(kmb_backend *b, uint64_t **out, size_t *count);

    /* Segment numbers of a stream, ascending; *count 0 (and KMB_OK) if the stream is absent. */
    int (*list_segments)(kmb_backend *b, uint64_t stream, uint32_t **out, size_t *count);

    /* *exists = 1 if the segment exists. */
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

    /* Make the segment's data durable (fdatasync). */
    int (*sync)(kmb_backend *b, uint64_t stream, uint32_t seg);

    /*
     * Create an empty segment (and the stream, if new). An existing segment is kept as is.
     * durable: also sync the directories so that the new names survive a power cut.
     */
    int (*create_segment)(kmb_backend *b, uint64_t stream, uint32_t seg, int durable);

    /*
     * Move the bytes [from, end) of a segment into a new quarantine object named after the
     * segment ("segment_000003.log.torn-1"), then cut the segment at `from`. Nothing is
     * deleted. The name used is written to name_out (NUL-terminated, truncated to name_cap).
     */
    int (*quarantine)(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t from,
                      char *name_out, size_t name_cap);

    /* Load a segment's index into `out` (initialised). KMB_ENOTFOUND if there is none,
     * KMB_EINDEX if it is bad. */
    int (*load_index)(kmb_backend *b, uint64_t stream, uint32_t seg, kmb_index *out);

    /* Store a segment's index (replacing any previous one). */
    int (*save_index)(kmb_backend *b, uint64_t stream, uint32_t seg, const kmb_index *ix);

    /* Describe a segment for messages ("/data/7/segment_000002.log", "memory:7/2"). */
    void (*describe)(kmb_backend *b, uint64_t stream, uint32_t seg, char *out, size_t cap);

    /* Release the backend and everything it holds (files, locks, memory). */
    void (*free)(kmb_backend *b);

    /*
     * Make a stream's names durable: its segment files' entries in the stream directory
     * and the stream directory's entry in the data directory (fsync of both directories).
     * The engine calls it before an fsync=True append when files were created without
     * syncing. NULL when there is nothing to do (memory).
     */
    int (*sync_dir)(kmb_backend *b, uint64_t stream);

    /*
     * The durable watermark of a stream: a small record (the engine's bytes, at most
     * KMB_WATERMARK_MAX) saying how far the stream is known to be durable (storage.c). The
     * engine saves it after an fsync=True append's sync returned and never syncs it:
     * whatever version survives a crash is one the data had already reached, so it is
     * never ahead of the durable data. save: replaces the previous bytes; best effort, its
     * errors are ignored. load: *len bytes into buf; KMB_ENOTFOUND when there is none.
     * Both NULL where crashes cannot happen (memory).
     */
    int (*save_watermark)(kmb_backend *b, uint64_t stream, const void *data, size_t len);
    int (*load_watermark)(kmb_backend *b, uint64_t stream, void *buf, size_t cap, size_t *len);

    /*
     * Remove an empty segment (and its index) that repair emptied into a quarantine
     * object; only the stream's last segment is ever removed. KMB_EINVAL if it is not empty.
     */
    int (*remove_segment)(kmb_backend *b, uint64_t stream, uint32_t seg);
};

/*
 * Open the disk backend on `path`. read_only = 0: create the directory if needed and take
 * the exclusive writer lock (KMB_ELOCKED if another writer holds it). read_only = 1: the
 * directory must exist (KMB_EIO, ENOENT otherwise); no lock, no writes.
 * On KMB_OK the caller owns *out (release with (*out)->free(*out), or hand it to
 * kmb_storage_open_backend). Errors: KMB_EIO, KMB_ELOCKED, KMB_ENOMEM.
 */
int kmb_backend_disk_open(kmb_backend **out, const char *path, int read_only);

/* A new, empty memory backend. KMB_ENOMEM on failure. Ownership as above. */
int kmb_backend_memory_new(kmb_backend **out);

#ifdef __cplusplus
}
#endif
#endif
