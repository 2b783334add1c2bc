/*
 * engine.h — the log engine's internal structures and the helpers its files share.
 *
 * The engine (storage.h) is split by concept, one file each:
 *   stream.c   the stream table, segments, sealing and rotation, damage marks, locate
 *   recover.c  loading a stream: scanning, index trust, tail settling, a reader's refresh
 *   read.c     the chunked reader: read, read_each, verify
 *   append.c   append: validate, write (inline or pipelined), make durable, commit, rotate
 *   storage.c  open, close, queries, and the helpers below that every file uses
 *   hooks.c    the testing and fault-injection entry points (sys/faults.h, storage.h)
 * Everything about records lives in these files once, for every backend (disk.c,
 * memory.c), reached only through the kmb_backend table (sys/backend.h; no engine file
 * includes a backend's own header), so that Storage and MemoryStorage behave identically
 * by construction. Not a public header: nothing outside the engine includes it.
 */
#ifndef KIMBERLITE_ENGINE_H
#define KIMBERLITE_ENGINE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "format.h"
#include "hasher.h"
#include "kimberlite/chain.h"
#include "kimberlite/errors.h"
#include "kimberlite/index.h"
#include "kimberlite/record.h"
#include "kimberlite/storage.h"
#include "kimberlite/sys/backend.h"

#if defined(__GNUC__)
#pragma GCC visibility push(hidden) /* engine-internal symbols stay inside the library */
#endif

#define SCAN_CHUNK ((size_t)1 << 20)   /* bytes read at a time when scanning */
#define READ_CHUNK ((size_t)256 << 10) /* bytes read and checked at a time */
#define READ_CHUNKS 3 /* chunks in flight: being delivered, checked, read */
#define WRITE_CHUNK ((size_t)256 << 10) /* bytes written at a time by a pipelined append */
#ifndef WORKER_MIN_BYTES /* (overridable at build time, for experiments) */
#define WORKER_MIN_BYTES ((size_t)256 << 10) /* smaller operations hash inline */
#endif
#ifndef COMBINE_MIN_LEN
#define COMBINE_MIN_LEN 1024 /* shorter payloads are checksummed with their header */
#endif
#define READER_SETTLE_TRIES 20         /* a reader's retries before calling a tail damaged */

typedef struct seg_state {
    uint32_t number;
    uint64_t base;      /* offset of the segment's first record */
    uint64_t size;      /* end of the last valid record: where the next append goes */
    kmb_index ix;       /* positions of the valid records (maybe partial: index_need) */
    size_t ix_used;     /* while ix is partial: its entries that came from the stored file */
    int index_dirty;    /* ix differs from the stored index */
    int index_verified; /* ix was built by scanning in this process */
    int damaged;        /* invalid data at `size` that is not a torn tail */
    int pending;        /* the active segment after a rotation whose file is not made yet */
    int unsynced;       /* written with fsync=0 (or loaded from disk): not known durable */
} seg_state;

/* A position in a stream's files: a segment number and a byte in it. */
typedef struct kmb_mark {
    uint32_t seg;
    uint64_t pos;
} kmb_mark;

static inline int mark_before(kmb_mark a, kmb_mark b)
{
    return a.seg < b.seg || (a.seg == b.seg && a.pos < b.pos);
}

struct kmb_tree; /* tree.c */

typedef struct stream_state {
    uint64_t id;
    seg_state *segs;
    size_t nsegs, cap;
    uint64_t next; /* next offset */
    uint8_t head[KMB_HASH_SIZE];
    int has_head;
    /*
     * A failed batch could not be cut back: the active segment holds bytes past its `size`
     * that must never become records. The in-memory state never included them, so reads
     * are right as they are; appends first retry the cut (cut_back), and so does close.
     * (Reloading instead would rescan and show the whole records of the failed batch.)
     */
    int cut_pending;
    int dir_unsynced; /* files created without syncing their directory (or loaded) */
    /*
     * The durable watermark (watermark.c): the last batch known durable ended at wm_end
     * and began at wm_batch. Recovery may cut invalid bytes at or past wm_end as a torn
     * tail: nothing there was acknowledged as durable.
     */
    int wm_known;
    kmb_mark wm_end;
    kmb_mark wm_batch;
    int damaged;      /* corruption found: appends refused */
    uint64_t damage_offset, damage_pos;
    uint32_t damage_seg;
    char damage_what[160];
    kmb_error *tamper; /* a broken hash-chain link found by a read or verify (owned) */
    struct kmb_tree *tree; /* the stream's Merkle tree in memory (tree.c), built on demand */
} stream_state;

/* A sliding window over a segment's bytes, for scanning. */
typedef struct window {
    uint8_t *buf;
    size_t cap;
    uint64_t start;
    size_t len;
} window;

/* A chunk of whole records of one segment, read and CRC-checked, and their hashes. */
typedef struct rchunk {
    uint8_t *buf;
    size_t cap;
    kmb_record *recs;
    uint8_t (*hash)[KMB_HASH_SIZE];
    uint8_t *status; /* KMB_CHECK_OK, _BAD_CRC, _BAD_OFFSET */
    size_t rcap;     /* entries of recs, hash and status */
    size_t count;
    const seg_state *g;
    size_t i0;   /* index in g of recs[0] */
    size_t skip; /* bytes in buf before recs[0]'s record (the record before it) */
} rchunk;

struct kmb_storage {
    pthread_mutex_t mu;
    kmb_backend *backend;
    kmb_options opts;
    int closed;
    pid_t pid;      /* the process that opened it */
    int fork_guard; /* a disk writer: unusable in a child after fork() (two writers) */
    stream_state **table; /* open addressing on stream id */
    size_t tcap, tcount;
    uint8_t *scratch; /* append encoding buffer, reused */
    size_t scratch_cap;
    window win;       /* scanning window, reused */
    uint8_t *rbuf;    /* single-record reads, reused */
    size_t rbuf_cap;
    kmb_hasher worker; /* the hashing pool (hasher.c), started on first need */
    /* The parallel reader's tuning (kmb_storage_set_read_tuning; defaults at open). */
    uint64_t par_min;   /* reads of this many bytes or more use the pool */
    size_t read_chunk;  /* bytes read and checked at a time (READ_CHUNK) */
    size_t par_block;   /* records a thread claims at a time; 0 = about 8 KiB of them */
    int helpers_only;   /* the caller leaves the checking to the pool (tests) */
    rchunk chunks[READ_CHUNKS]; /* the reader's buffers, reused */
    uint8_t *hashes;   /* a pipelined append's hashes, reused */
    size_t hashes_cap;
    kmb_event_fn event_fn;
    void *event_ctx;
    /* Stored indexes of idx_lazy_min entries or more are loaded in part: the last
     * idx_lazy_window entries (recover.c; 0: never). KIMBERLITE_INDEX_LAZY overrides both. */
    size_t idx_lazy_min, idx_lazy_window;
};

#define IDX_LAZY_MIN ((size_t)64 << 10) /* entries: a 512 KiB .idx */
#define IDX_LAZY_WINDOW ((size_t)4096)  /* entries: the last 32 KiB of it */
#define IDX_LAZY_ENV "KIMBERLITE_INDEX_LAZY"  /* "MIN[,WINDOW]" entries, for tests */
#define IDX_CHECKS_ENV "KIMBERLITE_INDEX_CHECKS" /* "1": abort on an unloaded entry used */

/* ---------------------------------------------------------------- small helpers (inline) */

static inline int oom(void) { return kmb_error_set(KMB_ENOMEM, 0, "out of memory"); }

/* Number of records of segment g (not to be confused with a stream's number of segments). */
static inline uint64_t seg_records(const seg_state *g) { return g->ix.count; }

/* An entry of a partial index used before index_need loaded it (recover.c): an engine bug. */
void index_missed(const seg_state *g, size_t i);

/*
 * Entry i of g's index: where record i starts. Every read of g->ix.positions goes through
 * it (or checks kmb_index_has itself): an entry of a partial index that was not loaded
 * (index_need) reads as 0, which no record check passes, and under KIMBERLITE_INDEX_CHECKS=1
 * (the tests) aborts the process.
 */
static inline uint64_t seg_pos(const seg_state *g, size_t i)
{
    if (!kmb_index_has(&g->ix, i)) index_missed(g, i);
    return g->ix.positions[i];
}

/* Whether the entries [a, b) of g's index are all loaded (a partial index lacks 1 .. lo-1). */
static inline int seg_loaded(const seg_state *g, size_t a, size_t b)
{
    return g->ix.lo == 0 || b <= 1 || a >= g->ix.lo;
}

/* seg_pos's check for the entries [i0, i0+n) of g, used through a pointer. */
static inline void seg_range_check(const seg_state *g, size_t i0, size_t n)
{
    if (n && g->ix.lo && i0 < g->ix.lo && i0 + n > 1) index_missed(g, i0 ? i0 : 1);
}

/* End of record i of g: the next record's start, or the end of the valid bytes. */
static inline uint64_t rec_end(const seg_state *g, size_t i)
{
    return i + 1 < g->ix.count ? seg_pos(g, i + 1) : g->size;
}

/* The active (last) segment of a stream. */
static inline seg_state *active_seg(stream_state *s) { return &s->segs[s->nsegs - 1]; }

static inline void describe(kmb_storage *st, uint64_t stream, uint32_t seg, char *out,
                            size_t cap)
{
    st->backend->describe(st->backend, stream, seg, out, cap);
}

/*
 * Whether an operation of `bytes` should hand its hashing to the worker (hasher.c).
 * Smaller operations hash inline: handing off would cost more than it saves.
 */
static inline int worker_use(kmb_storage *st, uint64_t bytes)
{
    if (bytes < WORKER_MIN_BYTES) return 0;
    return kmb_hasher_ready(&st->worker);
}

/*
 * Whether a read or verify of `bytes` should share its checking with the pool: only with
 * read_threads of 2 or more, for reads of at least par_min bytes.
 */
static inline int pool_use(kmb_storage *st, uint64_t bytes)
{
    if (st->opts.read_threads < 2 || bytes < st->par_min) return 0;
    return kmb_hasher_ready(&st->worker);
}

/* ---------------------------------------------------------------- storage.c */

/* Grow *buf to at least `need` bytes (doubling). KMB_ENOMEM, *buf unchanged, on failure. */
int grow(uint8_t **buf, size_t *cap, size_t need);

/* Tell the event callback (if any) something the user should know, printf-style. */
void note(kmb_storage *st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/*
 * The one way to add context to the thread's error: its stream, and its path unless `path`
 * is NULL. Returns the error so that callers add the rest (error_set_position, …).
 */
kmb_error *error_at(uint64_t stream, const char *path);

/* Set the record offset and byte position of an error. */
void error_set_position(kmb_error *e, uint64_t offset, uint64_t pos);

/* Set the hashes of a KMB_ECHAIN error; NULL means "None". */
void error_set_hashes(kmb_error *e, const uint8_t *expected, const uint8_t *actual);

/* Add stream/segment context to the error a backend call just recorded; returns rc. */
int with_stream(kmb_storage *st, int rc, uint64_t stream, uint32_t seg);

/* Record a corruption error: what, where, and what the user can do. Returns KMB_ECORRUPT. */
int corrupt(kmb_storage *st, uint64_t stream, uint32_t seg, uint64_t offset, uint64_t pos,
            const char *what);

/* Save segment g's index (encoded by index.c) if it changed and is worth keeping (a writer
 * only). */
int save_index_if_dirty(kmb_storage *st, stream_state *s, seg_state *g);

/* Lock and check the storage is open (and not inherited across fork); unlock with leave. */
int enter(kmb_storage *st);
void leave(kmb_storage *st);

/* ---------------------------------------------------------------- stream.c */

stream_state *table_find(kmb_storage *st, uint64_t id);
int table_insert(kmb_storage *st, stream_state *s);
void table_remove(kmb_storage *st, stream_state *s);

/* A new stream state with no segments; NULL (error set) when out of memory. */
stream_state *stream_new(uint64_t id, int dir_unsynced);
void stream_free(stream_state *s);
seg_state *push_segment(stream_state *s, uint32_t number, uint64_t base);
void update_next(stream_state *s);

int seal_active(kmb_storage *st, stream_state *s);
int make_active_file(kmb_storage *st, stream_state *s, int durable);
int rotate_if_full(kmb_storage *st, stream_state *s);

int damaged_error(kmb_storage *st, stream_state *s);
void mark_damaged(kmb_storage *st, stream_state *s, seg_state *g, uint64_t offset,
                  uint64_t pos, const char *what);
/* The same for damage in segment `seg`, which may be missing (no seg_state). */
void mark_damaged_at(kmb_storage *st, stream_state *s, uint32_t seg, uint64_t offset,
                     uint64_t pos, const char *what);
void mark_tampered(stream_state *s);

long locate(const stream_state *s, uint64_t offset);
int unreachable(kmb_storage *st, stream_state *s, uint64_t offset);

/* ---------------------------------------------------------------- recover.c */

static inline void window_reset(kmb_storage *st) { st->win.len = 0; }
int read_record_at(kmb_storage *st, uint64_t stream, const seg_state *g, uint64_t pos,
                   uint64_t end, kmb_record *out, size_t *size_out);
int get_stream(kmb_storage *st, uint64_t id, stream_state **out);
/* Append the positions of the valid records in [pos, end) of g to g->ix (see recover.c). */
int scan(kmb_storage *st, stream_state *s, seg_state *g, uint64_t pos, uint64_t end,
         int *base_known, uint64_t *stop);
int retry_after_failure(kmb_storage *st, stream_state *s, uint64_t fallback_offset);
/*
 * Make g's index whole (a no-op unless it is partial): read the whole stored index, check
 * it (CRC, gaps) and that it agrees with the entries already used. An index that fails is
 * rebuilt by scanning the segment, as a bad index at open is (damage found is marked), so
 * only I/O errors on the segment and KMB_ENOMEM are returned.
 */
int index_complete(kmb_storage *st, stream_state *s, seg_state *g);
/*
 * Make entries [a, b) of g's index usable: index_complete if one is not loaded. (Reading
 * record i takes entries i and i+1: rec_end.)
 */
static inline int index_need(kmb_storage *st, stream_state *s, seg_state *g, size_t a, size_t b)
{
    return seg_loaded(g, a, b) ? KMB_OK : index_complete(st, s, g);
}
/*
 * index_need for the records [from, to) of s and the one before `from` (whose hash a read
 * from `from` checks the link with).
 */
int index_need_range(kmb_storage *st, stream_state *s, uint64_t from, uint64_t to);
/* index_complete for every segment of s. */
int index_complete_all(kmb_storage *st, stream_state *s);

/* ---------------------------------------------------------------- watermark.c */

void watermark_load(kmb_storage *st, stream_state *s);
void watermark_advance(kmb_storage *st, stream_state *s, const seg_state *g, uint64_t start,
                       uint64_t end);
void watermark_lower(kmb_storage *st, stream_state *s, const seg_state *g, uint64_t pos);

/* ---------------------------------------------------------------- read.c */

void trim_chunks(kmb_storage *st);
/* Check every record of segment g (CRC, offset, link) from the chain hash `running` of the
 * record before it; on KMB_OK `running` is the hash of g's last record. */
int verify_segment(kmb_storage *st, stream_state *s, seg_state *g,
                   uint8_t running[KMB_HASH_SIZE]);
void free_chunks(kmb_storage *st);

/*
 * kmb_storage_read_each on a loaded stream, with the storage's mutex already held (enter):
 * the same checks, retries and delivery. The caller trims the chunks afterwards.
 */
int read_each_locked(kmb_storage *st, stream_state *s, uint64_t from, uint64_t max_bytes,
                     kmb_read_fn fn, void *ctx);
/*
 * read_each_locked of at most max_records records (SIZE_MAX: no limit): the read plans no
 * record past them, so damage after the last one wanted is neither read nor reported.
 */
int read_n_locked(kmb_storage *st, stream_state *s, uint64_t from, size_t max_records,
                  uint64_t max_bytes, kmb_read_fn fn, void *ctx);

/* ---------------------------------------------------------------- tree.c */

/* Release a stream's Merkle tree (s->tree; NULL is ignored). */
void tree_free(struct kmb_tree *t);

/* flush/close: catch s's tree up (if this process built one) and save its tree data. Errors
 * are ignored (the tree data is a cache); the thread's last error is left as it was. */
void tree_flush(kmb_storage *st, stream_state *s);

/*
 * Appends (append.c): where to write the chain hashes of the next `count` records of s so
 * that its tree integrates them without reading them back, or NULL (no tree in use, the tree
 * behind, or the bound reached: nothing to write). tree_park_commit(s, count) once the batch
 * is committed, only after a non-NULL tree_park_slots and with nothing in between.
 */
uint8_t (*tree_park_slots(stream_state *s, size_t count))[KMB_HASH_SIZE];
void tree_park_commit(stream_state *s, size_t count);

/* ---------------------------------------------------------------- append.c */

int cut_back(kmb_storage *st, stream_state *s);
/*
 * Sync what earlier fsync=False appends (or an earlier process) left unsynced in s: the
 * sealed segments' data, the active segment's too when with_active, and the names of files
 * created without a sync.
 */
int make_durable(kmb_storage *st, stream_state *s, int with_active);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
