/*
 * storage.c — the log engine: streams, segments, rotation, recovery and the hash chain.
 *
 * Everything about records lives here once, for every backend (disk.c, memory.c), so
 * that Storage and MemoryStorage behave identically. The rule every loader applies:
 *
 *   A record at byte p of a segment is valid if and only if its header, payload and CRC
 *   lie inside the segment, the CRC matches, and its offset is the one expected at p.
 *
 * Loading a segment scans from the end of its confirmed index to the end of the file.
 * Where scanning stops before the end, the active segment's remainder is a torn tail (an
 * append that never returned) unless a valid record follows; then, as anywhere in a sealed
 * segment, it is corruption: nothing is cut, reads that reach it and appends fail.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kimberlite/backend.h"
#include "kimberlite/chain.h"
#include "kimberlite/crc32.h"
#include "kimberlite/errors.h"
#include "kimberlite/index.h"
#include "kimberlite/record.h"
#include "kimberlite/storage.h"
#include "kimberlite/sys/faults.h"

#include "disk.h"   /* kmb_backend_disk_io: the fault plan of sys/faults.h */
#include "hasher.h" /* the hashing worker */

#define SCAN_CHUNK ((size_t)1 << 20)   /* bytes read at a time when scanning */
#define READ_CHUNK ((size_t)256 << 10) /* bytes read and checked at a time */
#define READ_CHUNKS 3 /* chunks in flight: being delivered, checked, read */
#define WRITE_CHUNK ((size_t)256 << 10) /* bytes written at a time by a pipelined append */
#ifndef WORKER_MIN_BYTES /* (overridable at build time, for experiments) */
#define WORKER_MIN_BYTES ((size_t)256 << 10) /* smaller operations hash inline */
#endif
#define COMBINE_MIN_LEN 1024 /* shorter payloads are checksummed with their header */
#define READER_SETTLE_TRIES 20         /* a reader's retries before calling a tail damaged */

typedef struct seg_state {
    uint32_t number;
    uint64_t base;      /* offset of the segment's first record */
    uint64_t size;      /* end of the last valid record: where the next append goes */
    kmb_index ix;       /* positions of the valid records */
    int index_dirty;    /* ix differs from the stored index */
    int index_verified; /* ix was built by scanning in this process */
    int damaged;        /* invalid data at `size` that is not a torn tail */
    int pending;        /* the active segment after a rotation whose file is not made yet */
    int unsynced;       /* written with fsync=0 (or loaded from disk): not known durable */
} seg_state;

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
    int damaged;      /* corruption found: appends refused */
    uint64_t damage_offset, damage_pos;
    uint32_t damage_seg;
    char damage_what[160];
    kmb_error *tamper; /* a broken hash-chain link found by a read or verify (owned) */
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
    kmb_hasher worker; /* the hashing worker (hasher.c), started on first need */
    rchunk chunks[READ_CHUNKS]; /* the reader's buffers, reused */
    uint8_t *hashes;   /* a pipelined append's hashes, reused */
    size_t hashes_cap;
    kmb_event_fn event_fn;
    void *event_ctx;
};

/* ---------------------------------------------------------------- small helpers */

static int oom(void) { return kmb_error_set(KMB_ENOMEM, 0, "out of memory"); }

static int grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return KMB_OK;
    size_t ncap = *cap ? *cap : 4096;
    while (ncap < need) ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
    uint8_t *p = realloc(*buf, ncap);
    if (!p) return oom();
    *buf = p;
    *cap = ncap;
    return KMB_OK;
}

static void note(kmb_storage *st, const char *fmt, ...)
{
    if (!st->event_fn) return;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    st->event_fn(st->event_ctx, msg);
}

static void describe(kmb_storage *st, uint64_t stream, uint32_t seg, char *out, size_t cap)
{
    st->backend->describe(st->backend, stream, seg, out, cap);
}

/* Add stream/segment context to the error a backend call just recorded. */
static int with_stream(kmb_storage *st, int rc, uint64_t stream, uint32_t seg)
{
    kmb_error *e = kmb_error_mut();
    e->has_stream = 1;
    e->stream_id = stream;
    if (e->path[0] == '\0') describe(st, stream, seg, e->path, sizeof(e->path));
    return rc;
}

/* Record a corruption error: what, where, and what the user can do. */
static int corrupt(kmb_storage *st, uint64_t stream, uint32_t seg, uint64_t offset,
                   uint64_t pos, const char *what)
{
    char path[KMB_PATH_MAX];
    describe(st, stream, seg, path, sizeof(path));
    kmb_error_set(KMB_ECORRUPT, 0,
                  "stream %" PRIu64 ": %s at offset %" PRIu64 " (byte %" PRIu64
                  " of %s); the records before it are intact: read them with read_from up "
                  "to that offset and restore the rest from a copy",
                  stream, what, offset, pos, path);
    kmb_error *e = kmb_error_mut();
    kmb_error_set_path(path);
    e->has_stream = 1;
    e->stream_id = stream;
    e->has_offset = 1;
    e->offset = offset;
    e->has_position = 1;
    e->position = pos;
    return KMB_ECORRUPT;
}

static int damaged_error(kmb_storage *st, stream_state *s)
{
    if (s->tamper) {
        *kmb_error_mut() = *s->tamper;
        return s->tamper->code;
    }
    return corrupt(st, s->id, s->damage_seg, s->damage_offset, s->damage_pos, s->damage_what);
}

static void mark_damaged(kmb_storage *st, stream_state *s, seg_state *g, uint64_t offset,
                         uint64_t pos, const char *what)
{
    g->damaged = 1;
    if (!s->damaged) {
        s->damaged = 1;
        s->damage_seg = g->number;
        s->damage_offset = offset;
        s->damage_pos = pos;
        snprintf(s->damage_what, sizeof(s->damage_what), "%s", what);
        char path[KMB_PATH_MAX];
        describe(st, s->id, g->number, path, sizeof(path));
        note(st,
             "stream %" PRIu64 ": %s at byte %" PRIu64 " of %s (offset %" PRIu64
             "); nothing was cut; reads reaching it and appends to this stream will fail",
             s->id, what, pos, path, offset);
    }
}

/*
 * A read or verify found a broken chain link (the thread's error describes it). Remember it
 * so that appends refuse to extend a chain that no longer verifies, as for corruption.
 */
static void mark_tampered(stream_state *s)
{
    if (s->damaged) return;
    s->tamper = malloc(sizeof(*s->tamper));
    if (!s->tamper) return; /* best effort: the caller still gets the error */
    *s->tamper = *kmb_error_last();
    s->damaged = 1;
    s->damage_offset = s->tamper->offset;
    s->damage_pos = s->tamper->position;
}

static uint64_t seg_count(const seg_state *g) { return g->ix.count; }

/* End of record i of g: the next record's start, or the end of the valid bytes. */
static uint64_t rec_end(const seg_state *g, size_t i)
{
    return i + 1 < g->ix.count ? g->ix.positions[i + 1] : g->size;
}

/* ---------------------------------------------------------------- stream table */

static size_t slot_of(uint64_t id, size_t cap)
{
    uint64_t z = id + 0x9E3779B97F4A7C15ull; /* splitmix64 finaliser */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (size_t)(z ^ (z >> 31)) & (cap - 1);
}

static stream_state *table_find(kmb_storage *st, uint64_t id)
{
    if (!st->tcap) return NULL;
    for (size_t i = slot_of(id, st->tcap);; i = (i + 1) & (st->tcap - 1)) {
        stream_state *s = st->table[i];
        if (!s) return NULL;
        if (s->id == id) return s;
    }
}

static int table_insert(kmb_storage *st, stream_state *s)
{
    if ((st->tcount + 1) * 10 >= st->tcap * 7) {
        size_t ncap = st->tcap ? st->tcap * 2 : 64;
        stream_state **nt = calloc(ncap, sizeof(*nt));
        if (!nt) return oom();
        for (size_t i = 0; i < st->tcap; i++) {
            stream_state *x = st->table[i];
            if (!x) continue;
            size_t j = slot_of(x->id, ncap);
            while (nt[j]) j = (j + 1) & (ncap - 1);
            nt[j] = x;
        }
        free(st->table);
        st->table = nt;
        st->tcap = ncap;
    }
    size_t j = slot_of(s->id, st->tcap);
    while (st->table[j]) j = (j + 1) & (st->tcap - 1);
    st->table[j] = s;
    st->tcount++;
    return KMB_OK;
}

/* Remove a stream from the table (backward-shift deletion keeps probing correct). */
static void table_remove(kmb_storage *st, stream_state *s)
{
    size_t i = slot_of(s->id, st->tcap);
    while (st->table[i] != s) i = (i + 1) & (st->tcap - 1);
    st->table[i] = NULL;
    for (size_t j = (i + 1) & (st->tcap - 1); st->table[j]; j = (j + 1) & (st->tcap - 1)) {
        stream_state *x = st->table[j];
        st->table[j] = NULL;
        size_t k = slot_of(x->id, st->tcap);
        while (st->table[k]) k = (k + 1) & (st->tcap - 1);
        st->table[k] = x;
    }
    st->tcount--;
}

static void stream_free(stream_state *s)
{
    if (!s) return;
    free(s->tamper);
    for (size_t i = 0; i < s->nsegs; i++) kmb_index_free(&s->segs[i].ix);
    free(s->segs);
    free(s);
}

static seg_state *push_segment(stream_state *s, uint32_t number, uint64_t base)
{
    if (s->nsegs == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 4;
        seg_state *p = realloc(s->segs, ncap * sizeof(*p));
        if (!p) return NULL;
        s->segs = p;
        s->cap = ncap;
    }
    seg_state *g = &s->segs[s->nsegs++];
    memset(g, 0, sizeof(*g));
    g->number = number;
    g->base = base;
    kmb_index_init(&g->ix);
    return g;
}

/*
 * Eager rotation, first half: seal the active segment (write its index, a writer only)
 * and make a new, empty segment the active one. Its file is made by make_active_file,
 * at once after an append or, if that failed, before the next append writes anything.
 */
static int seal_active(kmb_storage *st, stream_state *s)
{
    seg_state *g = &s->segs[s->nsegs - 1];
    uint32_t number = g->number;
    if (!st->opts.read_only && g->index_dirty && !g->damaged &&
        st->backend->save_index(st->backend, s->id, number, &g->ix) == KMB_OK)
        g->index_dirty = 0; /* a failed index write only costs a rebuild later */
    seg_state *n = push_segment(s, number + 1, g->base + seg_count(g));
    if (!n) return oom();
    n->index_verified = 1;
    n->pending = 1;
    return KMB_OK;
}

/* Eager rotation, second half: create the file of a pending active segment. */
static int make_active_file(kmb_storage *st, stream_state *s, int durable)
{
    seg_state *g = &s->segs[s->nsegs - 1];
    if (!g->pending) return KMB_OK;
    if (!durable) s->dir_unsynced = 1;
    int rc = st->backend->create_segment(st->backend, s->id, g->number, durable);
    if (rc) return with_stream(st, rc, s->id, g->number);
    g->pending = 0;
    return KMB_OK;
}

/* A full active segment (left by a crash, or a smaller max_segment_size) rotates. */
static int rotate_if_full(kmb_storage *st, stream_state *s)
{
    seg_state *g = &s->segs[s->nsegs - 1];
    if (g->pending || g->damaged || g->size < st->opts.max_segment_size) return KMB_OK;
    return seal_active(st, s);
}

/* ---------------------------------------------------------------- reading bytes */

/*
 * Make the window cover [at, at+len) of a segment whose readable end is `end`, reading
 * SCAN_CHUNK bytes (or len, if larger) at a time. *out points at byte `at`.
 * KMB_EEOF when fewer bytes exist than [at, at+len) needs (the file shrank).
 */
static int window_get(kmb_storage *st, uint64_t stream, uint32_t seg, uint64_t at, size_t len,
                      uint64_t end, const uint8_t **out)
{
    window *w = &st->win;
    if (at >= w->start && at + len <= w->start + w->len) {
        *out = w->buf + (at - w->start);
        return KMB_OK;
    }
    size_t want = len > SCAN_CHUNK ? len : SCAN_CHUNK;
    if (end - at < want) want = (size_t)(end - at);
    if (want < len) return kmb_error_set(KMB_EEOF, 0, "segment ends inside a record");
    w->len = 0;
    int rc = grow(&w->buf, &w->cap, want);
    if (rc) return rc;
    size_t n = 0;
    rc = st->backend->read(st->backend, stream, seg, at, w->buf, want, &n);
    if (rc) return with_stream(st, rc, stream, seg);
    w->start = at;
    w->len = n;
    if (n < len) return kmb_error_set(KMB_EEOF, 0, "segment ends inside a record");
    *out = w->buf;
    return KMB_OK;
}

static void window_reset(kmb_storage *st) { st->win.len = 0; }

/*
 * Read and check the single record at byte `pos` of segment g (valid bytes end at `end`).
 * On KMB_OK *out borrows st->rbuf. Returns KMB_ECORRUPT/KMB_EEOF (no context) when the
 * bytes there are not a whole, valid record, KMB_EIO on read errors.
 */
static int read_record_at(kmb_storage *st, uint64_t stream, const seg_state *g, uint64_t pos,
                          uint64_t end, kmb_record *out, size_t *size_out)
{
    if (pos >= end || end - pos < KMB_RECORD_OVERHEAD)
        return kmb_error_set(KMB_EEOF, 0, "segment ends inside a record");
    uint8_t hdr[KMB_HEADER_SIZE];
    size_t n = 0;
    int rc = st->backend->read(st->backend, stream, g->number, pos, hdr, sizeof(hdr), &n);
    if (rc) return with_stream(st, rc, stream, g->number);
    if (n < sizeof(hdr)) return kmb_error_set(KMB_EEOF, 0, "segment ends inside a record");
    uint64_t total = kmb_record_size(kmb_load_u32le(hdr + 40));
    if (total > end - pos) return kmb_error_set(KMB_EEOF, 0, "segment ends inside a record");
    rc = grow(&st->rbuf, &st->rbuf_cap, (size_t)total);
    if (rc) return rc;
    rc = st->backend->read(st->backend, stream, g->number, pos, st->rbuf, (size_t)total, &n);
    if (rc) return with_stream(st, rc, stream, g->number);
    if (n < total) return kmb_error_set(KMB_EEOF, 0, "segment ends inside a record");
    if (!kmb_record_probe(out, size_out, st->rbuf, (size_t)total))
        return kmb_error_set(KMB_ECORRUPT, 0, "record fails its CRC check");
    return KMB_OK;
}

/* ---------------------------------------------------------------- loading */

/*
 * Scan segment g from byte `pos` to `end`, appending the positions of valid records to
 * g->ix. *stop is where scanning stopped (== end when everything was valid).
 */
static int scan(kmb_storage *st, stream_state *s, seg_state *g, uint64_t pos, uint64_t end,
                int *base_known, uint64_t *stop)
{
    window_reset(st);
    while (end - pos >= KMB_RECORD_OVERHEAD) {
        const uint8_t *p = NULL;
        int rc = window_get(st, s->id, g->number, pos, KMB_HEADER_SIZE, end, &p);
        if (rc == KMB_EEOF) break;
        if (rc) return rc;
        uint64_t total = kmb_record_size(kmb_load_u32le(p + 40));
        if (total > end - pos) break;
        rc = window_get(st, s->id, g->number, pos, (size_t)total, end, &p);
        if (rc == KMB_EEOF) break;
        if (rc) return rc;
        kmb_record r;
        size_t used;
        if (!kmb_record_probe(&r, &used, p, (size_t)total)) break;
        if (!*base_known && g->ix.count == 0) {
            g->base = r.offset; /* after damage upstream: take the segment's own word */
            *base_known = 1;
        }
        if (r.offset != g->base + g->ix.count) break;
        rc = kmb_index_append(&g->ix, pos);
        if (rc) return oom();
        pos += total;
    }
    *stop = pos;
    return KMB_OK;
}

/*
 * Whether a valid record starts anywhere in [from, end) of segment g: the test that tells
 * a torn tail (nothing valid follows) from corruption. A record "follows validly" when its
 * CRC matches and its offset could continue the stream (`expected` or later, within what
 * the bytes could hold); a stale copy of an older record does not. Checking the offset
 * before the CRC also keeps random bytes from costing a CRC each.
 */
static int valid_record_follows(kmb_storage *st, uint64_t stream, seg_state *g, uint64_t from,
                                uint64_t end, uint64_t expected, int *found)
{
    *found = 0;
    window_reset(st);
    uint64_t span = (end - from) / KMB_RECORD_OVERHEAD + 1;
    for (uint64_t q = from; end - q >= KMB_RECORD_OVERHEAD; q++) {
        const uint8_t *p = NULL;
        int rc = window_get(st, stream, g->number, q, KMB_HEADER_SIZE, end, &p);
        if (rc == KMB_EEOF) break;
        if (rc) return rc;
        uint64_t off = kmb_load_u64le(p);
        uint64_t total = kmb_record_size(kmb_load_u32le(p + 40));
        if (total > end - q) continue;
        if (off < expected || off - expected > span) continue;
        rc = window_get(st, stream, g->number, q, (size_t)total, end, &p);
        if (rc == KMB_EEOF) continue;
        if (rc) return rc;
        kmb_record r;
        size_t used;
        if (kmb_record_probe(&r, &used, p, (size_t)total)) {
            *found = 1;
            return KMB_OK;
        }
    }
    return KMB_OK;
}

/* Check a stored index against the segment; 1 if it can be used. *scan_from is its end. */
static int index_confirmed(kmb_storage *st, stream_state *s, seg_state *g, uint64_t disk_size,
                           int *base_known, uint64_t *scan_from)
{
    size_t n = g->ix.count;
    const uint64_t *pos = g->ix.positions;
    if (n == 0) {
        *scan_from = 0;
        return 1;
    }
    if (pos[0] != 0) return 0;
    for (size_t i = 1; i < n; i++)
        if (pos[i] < pos[i - 1] || pos[i] - pos[i - 1] < KMB_RECORD_OVERHEAD) return 0;
    if (pos[n - 1] >= disk_size) return 0;
    kmb_record r;
    size_t size;
    /* The first and last entries must hold records with the offsets the index implies. */
    if (read_record_at(st, s->id, g, pos[0], disk_size, &r, &size) != KMB_OK) return 0;
    if (*base_known && r.offset != g->base) return 0;
    uint64_t base = r.offset;
    if (read_record_at(st, s->id, g, pos[n - 1], disk_size, &r, &size) != KMB_OK) return 0;
    if (r.offset != base + n - 1) return 0;
    g->base = base;
    *base_known = 1;
    *scan_from = pos[n - 1] + size;
    return 1;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/*
 * Decide what the bytes [stop, end) of segment g are, after scanning stopped at `stop`.
 * Active segment, nothing valid after: a torn tail, quarantined by a writer and simply not
 * visible to a reader. Otherwise: damage. A reader first lets a live writer finish (its
 * pages may show up out of order) by re-reading a few times.
 */
static int settle_tail(kmb_storage *st, stream_state *s, seg_state *g, int active,
                       uint64_t *stop, int *base_known)
{
    int rc;
    for (int attempt = 0;; attempt++) {
        uint64_t end;
        rc = st->backend->segment_size(st->backend, s->id, g->number, &end);
        if (rc) return with_stream(st, rc, s->id, g->number);
        if (*stop >= end) return KMB_OK;
        uint64_t expected = g->base + g->ix.count;
        int follows = 1;
        if (active) {
            rc = valid_record_follows(st, s->id, g, *stop, end, expected, &follows);
            if (rc) return rc;
        }
        if (!follows) {
            if (st->opts.read_only) return KMB_OK; /* not visible yet */
            char qname[KMB_PATH_MAX] = "";
            char path[KMB_PATH_MAX];
            describe(st, s->id, g->number, path, sizeof(path));
            rc = st->backend->quarantine(st->backend, s->id, g->number, *stop, qname,
                                         sizeof(qname));
            if (rc) return with_stream(st, rc, s->id, g->number);
            note(st,
                 "stream %" PRIu64 ": torn tail of %" PRIu64 " bytes at byte %" PRIu64
                 " of %s (an append that never returned) moved to %s",
                 s->id, end - *stop, *stop, path, qname);
            return KMB_OK;
        }
        if (st->opts.read_only && active && attempt < READER_SETTLE_TRIES) {
            sleep_ms(1);
            rc = scan(st, s, g, *stop, end, base_known, stop);
            if (rc) return rc;
            continue;
        }
        mark_damaged(st, s, g, expected, *stop,
                     active ? "corrupted record followed by valid records"
                            : "corrupted record in a sealed segment");
        return KMB_OK;
    }
}

/* Load segment `number` of s (appending it to s->segs). */
static int load_segment(kmb_storage *st, stream_state *s, uint32_t number, int active)
{
    int base_known = 1;
    uint64_t base = 0;
    if (s->nsegs) {
        seg_state *prev = &s->segs[s->nsegs - 1];
        base = prev->base + seg_count(prev);
        base_known = !prev->damaged;
    }
    seg_state *g = push_segment(s, number, base);
    if (!g) return oom();
    g->unsynced = 1; /* written by an earlier run: its durability is not known */
    uint64_t disk_size;
    int rc = st->backend->segment_size(st->backend, s->id, number, &disk_size);
    if (rc) return with_stream(st, rc, s->id, number);

    char path[KMB_PATH_MAX];
    uint64_t from = 0;
    rc = st->backend->load_index(st->backend, s->id, number, &g->ix);
    if (rc == KMB_ENOMEM) return rc;
    size_t indexed = g->ix.count;
    if (rc == KMB_OK && !index_confirmed(st, s, g, disk_size, &base_known, &from)) {
        describe(st, s->id, number, path, sizeof(path));
        note(st, "index of %s does not match the segment; rebuilding it", path);
        kmb_index_truncate(&g->ix, 0);
        indexed = 0;
        from = 0;
        g->base = base;
        g->index_verified = 1;
    } else if (rc != KMB_OK) {
        /* A reader beside a live writer finds no index for the active segment: normal. */
        if (rc != KMB_ENOTFOUND || (disk_size > 0 && !st->opts.read_only)) {
            describe(st, s->id, number, path, sizeof(path));
            note(st, "index of %s is %s; rebuilding it", path,
                 rc == KMB_ENOTFOUND ? "missing" : "damaged");
        }
        kmb_index_truncate(&g->ix, 0);
        indexed = 0;
        g->index_verified = 1;
    }
    uint64_t stop;
    rc = scan(st, s, g, from, disk_size, &base_known, &stop);
    if (rc) return rc;
    rc = settle_tail(st, s, g, active, &stop, &base_known);
    if (rc) return rc;
    g->size = stop;
    if (g->ix.count != indexed) g->index_dirty = 1;
    return KMB_OK;
}

/* Compute the head hash from the last record of the stream. */
static int load_head(kmb_storage *st, stream_state *s)
{
    s->has_head = 0;
    if (s->next == 0) return KMB_OK;
    for (size_t k = s->nsegs; k-- > 0;) {
        seg_state *g = &s->segs[k];
        if (seg_count(g) == 0) continue;
        size_t i = g->ix.count - 1;
        kmb_record r;
        size_t size;
        int rc = read_record_at(st, s->id, g, g->ix.positions[i], g->size, &r, &size);
        if (rc == KMB_EIO || rc == KMB_ENOMEM) return rc;
        if (rc) {
            mark_damaged(st, s, g, g->base + i, g->ix.positions[i], "corrupted last record");
            return KMB_OK;
        }
        kmb_record_hash(s->head, &r);
        s->has_head = 1;
        return KMB_OK;
    }
    return KMB_OK;
}

static void update_next(stream_state *s)
{
    seg_state *last = &s->segs[s->nsegs - 1];
    s->next = last->base + seg_count(last);
}

/*
 * List a stream's segments. A listing with a hole is damage (a missing segment file) —
 * unless the "missing" segment exists after all: a directory listing taken while a live
 * writer creates segments may miss a name created during it yet show a later one (readdir
 * makes no promise about names added after opendir). Then list again, a bounded number
 * of times, so that a reader never reports damage that is only the writer's activity.
 */
static int list_segments_settled(kmb_storage *st, uint64_t id, uint32_t **out, size_t *n)
{
    for (int attempt = 0;; attempt++) {
        int rc = st->backend->list_segments(st->backend, id, out, n);
        if (rc) return with_stream(st, rc, id, 0);
        size_t hole = 0;
        while (hole < *n && (*out)[hole] == hole) hole++;
        if (hole == *n || attempt >= READER_SETTLE_TRIES) return KMB_OK;
        int exists = 0;
        rc = st->backend->segment_exists(st->backend, id, (uint32_t)hole, &exists);
        if (rc) {
            free(*out);
            *out = NULL;
            return with_stream(st, rc, id, (uint32_t)hole);
        }
        if (!exists) return KMB_OK; /* really missing: load_stream reports it */
        free(*out);
        *out = NULL;
    }
}

/* Load a stream from the backend. *out is NULL (and KMB_OK) when the stream is absent. */
static int load_stream(kmb_storage *st, uint64_t id, stream_state **out)
{
    *out = NULL;
    uint32_t *nums = NULL;
    size_t n = 0;
    int rc = list_segments_settled(st, id, &nums, &n);
    if (rc) return rc;
    if (n == 0) return KMB_OK;
    stream_state *s = calloc(1, sizeof(*s));
    if (!s) {
        free(nums);
        return oom();
    }
    s->id = id;
    s->dir_unsynced = 1; /* as for its segments: made by an earlier run */
    for (size_t i = 0; i < n; i++) {
        if (nums[i] != i) {
            /* A missing segment: records are missing. Keep what precedes it. */
            if (s->nsegs) {
                seg_state *g = &s->segs[s->nsegs - 1];
                mark_damaged(st, s, g, g->base + seg_count(g), g->size, "missing segment file");
            }
            break;
        }
        rc = load_segment(st, s, nums[i], i + 1 == n);
        if (rc) goto fail;
    }
    free(nums);
    nums = NULL;
    if (s->nsegs == 0) {
        stream_free(s);
        return KMB_OK;
    }
    rc = rotate_if_full(st, s);
    if (rc) goto fail;
    update_next(s);
    rc = load_head(st, s);
    if (rc) goto fail;
    rc = table_insert(st, s);
    if (rc) goto fail;
    *out = s;
    return KMB_OK;
fail:
    free(nums);
    stream_free(s);
    return rc;
}

/* A reader's catch-up with a live writer: new records, new segments. */
static int refresh(kmb_storage *st, stream_state *s)
{
    uint64_t before = s->next;
    int rc;
    for (;;) {
        seg_state *g = &s->segs[s->nsegs - 1];
        int exists = 0;
        if (g->pending) {
            /* The writer's next segment: does its file exist by now? */
            rc = st->backend->segment_exists(st->backend, s->id, g->number, &exists);
            if (rc) return with_stream(st, rc, s->id, g->number);
            if (!exists) {
                /*
                 * Only this reader's guess, from its own max_segment_size (a writer with a
                 * larger one may still be filling the segment before it): drop it, follow
                 * that segment, and guess again below.
                 */
                kmb_index_free(&g->ix);
                s->nsegs--;
                continue;
            }
            g->pending = 0;
        }
        rc = st->backend->segment_exists(st->backend, s->id, g->number + 1, &exists);
        if (rc) return with_stream(st, rc, s->id, g->number + 1);
        if (!g->damaged) {
            uint64_t end;
            rc = st->backend->segment_size(st->backend, s->id, g->number, &end);
            if (rc) return with_stream(st, rc, s->id, g->number);
            int base_known = 1;
            uint64_t stop = g->size;
            if (end > g->size) {
                rc = scan(st, s, g, g->size, end, &base_known, &stop);
                if (rc) return rc;
                if (exists && stop < end) {
                    /* Sealed now: whatever does not scan is damage. */
                    rc = settle_tail(st, s, g, 0, &stop, &base_known);
                    if (rc) return rc;
                }
                g->size = stop;
            }
        }
        if (!exists) break;
        rc = st->backend->segment_exists(st->backend, s->id, g->number + 2, &exists);
        if (rc) return with_stream(st, rc, s->id, g->number + 2);
        rc = load_segment(st, s, g->number + 1, !exists);
        if (rc) return rc;
    }
    rc = rotate_if_full(st, s);
    if (rc) return rc;
    update_next(s);
    if (s->next != before) return load_head(st, s);
    return KMB_OK;
}

/* The stream's state, loading it on first use. *out NULL when the stream does not exist. */
static int get_stream(kmb_storage *st, uint64_t id, stream_state **out)
{
    stream_state *s = table_find(st, id);
    if (s) {
        *out = s;
        return st->opts.read_only ? refresh(st, s) : KMB_OK;
    }
    return load_stream(st, id, out);
}

/* ---------------------------------------------------------------- checking records */

/* Index of the segment holding `offset` (its base <= offset < base + count), or -1. */
static long locate(const stream_state *s, uint64_t offset)
{
    size_t lo = 0, hi = s->nsegs;
    while (lo < hi) { /* first segment whose base > offset */
        size_t mid = lo + (hi - lo) / 2;
        if (s->segs[mid].base <= offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* Empty segments share their base with the next one: step back to one holding it. */
    for (size_t k = lo; k-- > 0;) {
        const seg_state *g = &s->segs[k];
        if (offset >= g->base && offset - g->base < seg_count(g)) return (long)k;
        if (seg_count(g) > 0) break;
    }
    return -1;
}

/* Error for an offset that falls where damage hides records. */
static int unreachable(kmb_storage *st, stream_state *s, uint64_t offset)
{
    if (s->damaged) return damaged_error(st, s);
    return corrupt(st, s->id, s->segs[s->nsegs - 1].number, offset, 0, "record missing");
}

/* Record a broken chain link: the record at `offset` stores `actual`, not `want`. */
static int chain_broken(kmb_storage *st, stream_state *s, const seg_state *g, uint64_t offset,
                        uint64_t pos, const uint8_t *want, const uint8_t *actual)
{
    char path[KMB_PATH_MAX];
    describe(st, s->id, g->number, path, sizeof(path));
    kmb_error_set(KMB_ECHAIN, 0,
                  "stream %" PRIu64 ": hash chain broken at offset %" PRIu64
                  " (byte %" PRIu64 " of %s): its prev_hash does not match the hash "
                  "of the record before it, so the log was altered; restore it from "
                  "a trusted copy",
                  s->id, offset, pos, path);
    kmb_error *e = kmb_error_mut();
    kmb_error_set_path(path);
    e->has_stream = 1;
    e->stream_id = s->id;
    e->has_offset = 1;
    e->offset = offset;
    e->has_position = 1;
    e->position = pos;
    e->has_expected_hash = 1;
    memcpy(e->expected_hash, want, KMB_HASH_SIZE);
    e->has_actual_hash = 1;
    memcpy(e->actual_hash, actual, KMB_HASH_SIZE);
    return KMB_ECHAIN;
}

/* Read the bytes of records [i0, i1) of g into buf. */
static int read_range(kmb_storage *st, stream_state *s, seg_state *g, size_t i0, size_t i1,
                      uint8_t *buf)
{
    uint64_t start = g->ix.positions[i0], end = rec_end(g, i1 - 1);
    size_t n = 0;
    int rc = st->backend->read(st->backend, s->id, g->number, start, buf, (size_t)(end - start), &n);
    if (rc) return with_stream(st, rc, s->id, g->number);
    if (n < end - start)
        return corrupt(st, s->id, g->number, g->base + i0, start, "segment is shorter than its records");
    return KMB_OK;
}

/* The hash of the record before `offset` (zeros at genesis), after checking its CRC. */
static int hash_before(kmb_storage *st, stream_state *s, uint64_t offset,
                       uint8_t out[KMB_HASH_SIZE])
{
    memset(out, 0, KMB_HASH_SIZE);
    if (offset == 0) return KMB_OK;
    long k = locate(s, offset - 1);
    if (k < 0) return unreachable(st, s, offset - 1);
    seg_state *g = &s->segs[k];
    size_t i = (size_t)(offset - 1 - g->base);
    uint64_t pos = g->ix.positions[i];
    kmb_record r;
    size_t size;
    int rc = read_record_at(st, s->id, g, pos, rec_end(g, i), &r, &size);
    if (rc == KMB_EIO || rc == KMB_ENOMEM) return rc;
    if (rc || r.offset != offset - 1)
        return corrupt(st, s->id, g->number, offset - 1, pos, "record fails its CRC check");
    kmb_record_hash(out, &r);
    return KMB_OK;
}

/*
 * After a check failed on segment g: if its index came from disk unconfirmed, rebuild it by
 * scanning and return 1 (the caller retries). Otherwise mark the damage and return 0.
 */
static int rescan_after_failure(kmb_storage *st, stream_state *s, seg_state *g)
{
    if (g->index_verified) return 0;
    const kmb_error *e = kmb_error_last();
    int code = e->code;
    if (code != KMB_ECORRUPT) return 0;
    size_t before = g->ix.count;
    uint64_t end = g->size;
    kmb_index_truncate(&g->ix, 0);
    g->index_verified = 1;
    g->index_dirty = 1;
    int base_known = 1;
    uint64_t stop;
    int rc = scan(st, s, g, 0, end, &base_known, &stop);
    char path[KMB_PATH_MAX];
    describe(st, s->id, g->number, path, sizeof(path));
    note(st, "index of %s pointed at bad records; rebuilt it by scanning", path);
    if (rc) return 0;
    if (stop < end || g->ix.count != before) {
        uint64_t offset = g->base + g->ix.count;
        g->size = stop < end ? stop : end;
        mark_damaged(st, s, g, offset, stop, "corrupted record");
        (void)before;
    }
    return 1;
}

/*
 * A check failed (the thread's error says where). Rebuild the failing segment's index if it
 * came unconfirmed from storage and return 1 so the caller retries; otherwise record the
 * damage and return 0. The error is preserved either way.
 */
static int retry_after_failure(kmb_storage *st, stream_state *s, uint64_t fallback_offset)
{
    kmb_error saved = *kmb_error_last();
    long k = locate(s, saved.has_offset ? saved.offset : fallback_offset);
    int retry = 0;
    if (k >= 0) {
        seg_state *g = &s->segs[k];
        retry = rescan_after_failure(st, s, g);
        if (!retry) mark_damaged(st, s, g, saved.offset, saved.position, "corrupted record");
        update_next(s);
    }
    *kmb_error_mut() = saved;
    return retry;
}

/* ---------------------------------------------------------------- the hashing worker */

/*
 * Whether an operation of `bytes` should hand its hashing to the worker (hasher.c).
 * Smaller operations hash inline: handing off would cost more than it saves.
 */
static int worker_use(kmb_storage *st, uint64_t bytes)
{
    if (bytes < WORKER_MIN_BYTES) return 0;
    return kmb_hasher_ready(&st->worker);
}

/* ---------------------------------------------------------------- the chunked reader */

/*
 * Reads and verify go through one reader: records are read a chunk at a time (at most
 * READ_CHUNK bytes, at least one record) into one of three reused buffers, checked (CRC,
 * offset), hashed, linked (each record's prev_hash against the hash of the record before
 * it), and only then delivered. Each record's hash depends only on its own bytes (its
 * stored prev_hash is what the link check compares), so checking and hashing are shared
 * between this thread and the worker, block by block; only the comparisons, made here
 * once the chunk is done, follow the chain.
 */
typedef struct reader {
    kmb_storage *st;
    stream_state *s;
    uint64_t offset;                 /* next record to read */
    size_t left;                     /* records still to read */
    uint8_t running[KMB_HASH_SIZE];  /* hash of the record before the next chunk to link */
    int have_running;
    int use_worker;
    int busy;                        /* the worker has a job of this reader */
    size_t chunks_checked;           /* with the worker */
    int stopped;                     /* the callback asked to stop */
    kmb_read_fn fn;
    void *ctx;
    size_t delivered;                /* records delivered so far */
    uint64_t delivered_payload;      /* their payload bytes */
} reader;

static int grow_chunk(rchunk *c, size_t bytes, size_t n)
{
    int rc = grow(&c->buf, &c->cap, bytes);
    if (rc) return rc;
    if (n > c->rcap) {
        kmb_record *r = realloc(c->recs, n * sizeof(*r));
        if (!r) return oom();
        c->recs = r;
        uint8_t(*h)[KMB_HASH_SIZE] = realloc(c->hash, n * sizeof(*h));
        if (!h) return oom();
        c->hash = h;
        uint8_t *t = realloc(c->status, n);
        if (!t) return oom();
        c->status = t;
        c->rcap = n;
    }
    return KMB_OK;
}

/* Release chunk buffers that one large record made larger than usual. */
static void trim_chunks(kmb_storage *st)
{
    for (int i = 0; i < READ_CHUNKS; i++) {
        rchunk *c = &st->chunks[i];
        if (c->cap > 4 * READ_CHUNK) {
            free(c->buf);
            c->buf = NULL;
            c->cap = 0;
        }
    }
}

static void free_chunks(kmb_storage *st)
{
    for (int i = 0; i < READ_CHUNKS; i++) {
        free(st->chunks[i].buf);
        free(st->chunks[i].recs);
        free(st->chunks[i].hash);
        free(st->chunks[i].status);
    }
    memset(st->chunks, 0, sizeof(st->chunks));
}

/* Read the bytes of the next chunk of records into c (not yet checked). */
static int read_chunk(reader *r, rchunk *c)
{
    kmb_storage *st = r->st;
    stream_state *s = r->s;
    long k = locate(s, r->offset);
    if (k < 0) return unreachable(st, s, r->offset);
    seg_state *g = &s->segs[k];
    size_t i0 = (size_t)(r->offset - g->base);
    size_t lim = g->ix.count - i0 < r->left ? g->ix.count : i0 + r->left;
    uint64_t start = g->ix.positions[i0];
    size_t i1 = i0 + 1;
    while (i1 < lim && rec_end(g, i1) - start <= READ_CHUNK) i1++;
    /*
     * The first chunk of a read needs the hash of the record before it. When that record is
     * in the same segment it comes with the chunk: one read instead of three.
     */
    size_t first = i0;
    int rc;
    if (!r->have_running) {
        if (i0 > 0) {
            first = i0 - 1;
        } else {
            rc = hash_before(st, s, r->offset, r->running);
            if (rc) return rc;
            r->have_running = 1;
        }
    }
    uint64_t from = g->ix.positions[first];
    rc = grow_chunk(c, (size_t)(rec_end(g, i1 - 1) - from), i1 - i0);
    if (rc) return rc;
    rc = read_range(st, s, g, first, i1, c->buf);
    if (rc) return rc;
    if (first < i0) {
        /* As hash_before: the record's CRC and offset are checked, then it is hashed. */
        size_t size = (size_t)(start - from), used;
        kmb_record prev;
        if (!kmb_record_probe(&prev, &used, c->buf, size) || prev.offset != r->offset - 1)
            return corrupt(st, s->id, g->number, r->offset - 1, from, "record fails its CRC check");
        kmb_record_hash(r->running, &prev);
        r->have_running = 1;
    }
    c->skip = (size_t)(start - from);
    c->g = g;
    c->i0 = i0;
    c->count = i1 - i0;
    r->offset += c->count;
    r->left -= c->count;
    return KMB_OK;
}

static kmb_hash_job chunk_job(rchunk *c)
{
    kmb_hash_job j;
    memset(&j, 0, sizeof(j));
    j.count = c->count;
    j.out = c->hash;
    j.pos = c->g->ix.positions + c->i0;
    j.end = rec_end(c->g, c->i0 + c->count - 1);
    j.first = c->g->base + c->i0;
    j.buf = c->buf + c->skip;
    j.recs = c->recs;
    j.status = c->status;
    /* Claim about 8 KiB of records at a time: few atomic operations for small records. */
    uint64_t bytes = j.end - j.pos[0];
    j.block = (size_t)((UINT64_C(8192) * c->count) / (bytes + 1)) + 1;
    return j;
}

/* Hand chunk c's checking and hashing to the worker (large reads only). */
static void chunk_start(reader *r, rchunk *c)
{
    if (!r->use_worker) return;
    kmb_hash_job job = chunk_job(c);
    kmb_hasher_post(&r->st->worker, &job);
    r->busy = 1;
}

/* Check and hash chunk c: claim blocks alongside the worker, or do it all here. */
static void chunk_finish(reader *r, rchunk *c)
{
    kmb_hash_job job = chunk_job(c);
    if (!r->busy) {
        kmb_hash_job_run(&job, NULL);
        return;
    }
    kmb_hasher *w = &r->st->worker;
    size_t mine = kmb_hash_job_run(&job, w);
    uint64_t waited = kmb_hasher_wait(w, c->count);
    r->busy = 0;
    /*
     * A worker that did under a quarter of a chunk while this thread waited for it has no
     * CPU of its own (a busy machine): finish this read without it, and the next few. (Not
     * judged on the first chunk, which the worker may have woken up late for.)
     */
    int slow = r->chunks_checked++ > 0 && waited > KMB_HASHER_SPIN_NS / 4 &&
               (c->count - mine) * 4 < c->count;
    if (kmb_hasher_stalled(w, waited) || slow) {
        kmb_hasher_backoff(w);
        r->use_worker = 0;
    }
}

/*
 * The verdict on a checked chunk, record by record in order: CRC, offset, then the link
 * (prev_hash against the hash of the record before it). The first failure is reported.
 */
static int chunk_verdict(reader *r, const rchunk *c)
{
    static const uint8_t zeros[KMB_HASH_SIZE];
    const seg_state *g = c->g;
    for (size_t j = 0; j < c->count; j++) {
        uint64_t offset = g->base + c->i0 + j;
        uint64_t pos = g->ix.positions[c->i0 + j];
        if (c->status[j] == KMB_CHECK_BAD_CRC)
            return corrupt(r->st, r->s->id, g->number, offset, pos, "record fails its CRC check");
        if (c->status[j] == KMB_CHECK_BAD_OFFSET)
            return corrupt(r->st, r->s->id, g->number, offset, pos,
                           "record carries the wrong offset");
        const uint8_t *want = offset == 0 ? zeros : j ? c->hash[j - 1] : r->running;
        if (memcmp(c->recs[j].prev_hash, want, KMB_HASH_SIZE) != 0)
            return chain_broken(r->st, r->s, g, offset, pos, want, c->recs[j].prev_hash);
    }
    memcpy(r->running, c->hash[c->count - 1], KMB_HASH_SIZE);
    return KMB_OK;
}

static int deliver_chunk(reader *r, const rchunk *c)
{
    if (r->fn) {
        int rc = r->fn(r->ctx, c->recs, c->count);
        if (rc) {
            r->stopped = 1;
            return rc;
        }
    }
    r->delivered += c->count;
    for (size_t j = 0; j < c->count; j++) r->delivered_payload += c->recs[j].length;
    return KMB_OK;
}

/*
 * Read, check and deliver r->left records from r->offset, chunk by chunk, three chunks in
 * flight: while the worker checks chunk c, this thread reads chunk c+1 and delivers chunk
 * c-1 (verified), then joins in on c and judges it. The earliest failure is the one
 * reported: a bad record in c before an error reading c+1.
 */
static int reader_run(reader *r)
{
    rchunk *prev = NULL, *cur = NULL;
    int idx = 0, rc = KMB_OK;
    if (r->left) {
        cur = &r->st->chunks[idx++];
        rc = read_chunk(r, cur);
        if (rc) return rc;
        chunk_start(r, cur);
    }
    while (cur) {
        rchunk *next = NULL;
        int read_rc = KMB_OK;
        if (r->left) {
            next = &r->st->chunks[idx];
            idx = (idx + 1) % READ_CHUNKS;
            read_rc = read_chunk(r, next);
        }
        if (prev && read_rc == KMB_OK) {
            rc = deliver_chunk(r, prev);
            if (rc) break;
        }
        chunk_finish(r, cur);
        rc = chunk_verdict(r, cur);
        if (rc == KMB_OK) rc = read_rc;
        if (rc) break;
        prev = cur;
        cur = next;
        if (cur) chunk_start(r, cur);
    }
    if (rc == KMB_OK && prev) rc = deliver_chunk(r, prev);
    if (r->busy) {
        kmb_hasher_finish(&r->st->worker, 1);
        r->busy = 0;
    }
    return rc;
}

/* Set up a reader of n records from `from`; the worker shares the work of large reads. */
static void reader_init(reader *r, kmb_storage *st, stream_state *s, uint64_t from, size_t n,
                        uint64_t bytes, kmb_read_fn fn, void *ctx)
{
    memset(r, 0, sizeof(*r));
    r->st = st;
    r->s = s;
    r->offset = from;
    r->left = n;
    r->fn = fn;
    r->ctx = ctx;
    r->use_worker = worker_use(st, bytes);
}

/*
 * Encode a batch whose hashes the worker chains meanwhile, and write it at byte `pos` of
 * segment g, WRITE_CHUNK bytes at a time: for each piece this thread copies the payloads
 * and computes their CRCs, waits for the hashes the piece's headers need, completes each
 * record's CRC as CRC(header || payload) = combine(CRC(header), CRC(payload)) and writes.
 * Fills g->ix.positions past g->ix.count; *end is where the batch ends, head the hash of
 * its last record. On failure the worker has stopped and nothing refers to `events`.
 */
static int write_batch_pipelined(kmb_storage *st, stream_state *s, seg_state *g,
                                 const kmb_slice *events, size_t count, uint64_t next,
                                 uint64_t *end, uint8_t head[KMB_HASH_SIZE])
{
    static const uint8_t zeros[KMB_HASH_SIZE];
    kmb_hasher *w = &st->worker;
    int rc = grow(&st->hashes, &st->hashes_cap, count * KMB_HASH_SIZE);
    if (rc) return rc;
    uint8_t(*hashes)[KMB_HASH_SIZE] = (uint8_t(*)[KMB_HASH_SIZE])(void *)st->hashes;
    kmb_hash_job job;
    memset(&job, 0, sizeof(job));
    job.count = count;
    job.out = hashes;
    job.events = events;
    job.start = next ? s->head : NULL;
    kmb_hasher_post(w, &job);
    uint64_t pos = *end;
    uint64_t op_len = UINT64_MAX;
    uint32_t op = 0;
    for (size_t i = 0; i < count;) {
        size_t j = i;
        size_t bytes = 0;
        while (j < count &&
               (j == i || bytes + kmb_record_size(events[j].len) <= WRITE_CHUNK)) {
            bytes += (size_t)kmb_record_size(events[j].len);
            j++;
        }
        rc = grow(&st->scratch, &st->scratch_cap, bytes);
        if (rc) goto fail;
        uint8_t *p = st->scratch;
        for (size_t r = i; r < j; r++) { /* payloads and their CRCs: no hash needed yet */
            size_t len = events[r].len;
            g->ix.positions[g->ix.count + r] = pos + (uint64_t)(p - st->scratch);
            kmb_store_u64le(p, next + r);
            kmb_store_u32le(p + 40, (uint32_t)len);
            if (len) memcpy(p + KMB_HEADER_SIZE, events[r].data, len);
            if (len >= COMBINE_MIN_LEN)
                kmb_store_u32le(p + KMB_HEADER_SIZE + len, kmb_crc32(p + KMB_HEADER_SIZE, len));
            p += kmb_record_size(len);
        }
        kmb_hasher_stalled(w, kmb_hasher_wait(w, j - 1)); /* record j-1 links to hash j-2 */
        p = st->scratch;
        for (size_t r = i; r < j; r++) { /* headers, then whole-record CRCs */
            size_t len = events[r].len;
            const uint8_t *prev = next + r == 0 ? zeros : r ? hashes[r - 1] : s->head;
            memcpy(p + 8, prev, KMB_HASH_SIZE);
            uint8_t *crc = p + KMB_HEADER_SIZE + len;
            if (len < COMBINE_MIN_LEN) { /* cheaper to checksum it whole than to combine */
                kmb_store_u32le(crc, kmb_crc32(p, KMB_HEADER_SIZE + len));
                p += kmb_record_size(len);
                continue;
            }
            if (len != op_len) {
                op = kmb_crc32_combine_gen(len);
                op_len = len;
            }
            kmb_store_u32le(crc, kmb_crc32_combine_op(kmb_crc32(p, KMB_HEADER_SIZE),
                                                      kmb_load_u32le(crc), op));
            p += kmb_record_size(len);
        }
        rc = st->backend->write(st->backend, s->id, g->number, pos, st->scratch, bytes);
        if (rc) goto fail;
        pos += bytes;
        i = j;
    }
    kmb_hasher_stalled(w, kmb_hasher_wait(w, count));
    memcpy(head, hashes[count - 1], KMB_HASH_SIZE);
    *end = pos;
    return KMB_OK;
fail:
    kmb_hasher_finish(w, 1);
    return rc;
}

/* Encode a small batch into one buffer, chaining the hashes here: one write per batch. */
static int write_batch_inline(kmb_storage *st, stream_state *s, seg_state *g,
                              const kmb_slice *events, size_t count, uint64_t next,
                              uint64_t total, uint64_t *end, uint8_t head[KMB_HASH_SIZE])
{
    int rc = grow(&st->scratch, &st->scratch_cap, (size_t)total);
    if (rc) return rc;
    memcpy(head, s->head, KMB_HASH_SIZE);
    uint8_t *p = st->scratch;
    uint64_t pos = *end;
    for (size_t i = 0; i < count; i++) {
        uint64_t offset = next + i;
        g->ix.positions[g->ix.count + i] = pos;
        size_t n = kmb_record_encode(p, offset, offset ? head : NULL, events[i].data,
                                     (uint32_t)events[i].len);
        kmb_chain_hash(head, offset ? head : NULL, events[i].data, events[i].len);
        p += n;
        pos += n;
    }
    rc = st->backend->write(st->backend, s->id, g->number, *end, st->scratch, (size_t)total);
    if (rc) return rc;
    *end = pos;
    return KMB_OK;
}

/* ---------------------------------------------------------------- public API */

void kmb_options_init(kmb_options *opts)
{
    opts->max_segment_size = KMB_DEFAULT_MAX_SEGMENT_SIZE;
    opts->max_event_size = KMB_DEFAULT_MAX_EVENT_SIZE;
    opts->read_only = 0;
}

int kmb_storage_open_backend(kmb_storage **out, kmb_backend *backend, const kmb_options *opts)
{
    *out = NULL;
    kmb_options o;
    kmb_options_init(&o);
    if (opts) o = *opts;
    if (o.max_segment_size == 0) {
        backend->free(backend);
        return kmb_error_set(KMB_EINVAL, 0, "max_segment_size must be positive");
    }
    if (o.max_event_size == 0) {
        backend->free(backend);
        return kmb_error_set(KMB_EINVAL, 0, "max_event_size must be positive");
    }
    if (o.max_event_size > UINT32_MAX) o.max_event_size = UINT32_MAX;
    o.read_only = backend->read_only;
    kmb_storage *st = calloc(1, sizeof(*st));
    if (!st) {
        backend->free(backend);
        return oom();
    }
    if (pthread_mutex_init(&st->mu, NULL) != 0) {
        free(st);
        backend->free(backend);
        return kmb_error_set(KMB_ERROR, 0, "cannot create a mutex");
    }
    st->backend = backend;
    st->opts = o;
    st->pid = getpid();
    st->fork_guard = !o.read_only && kmb_backend_disk_io(backend) != NULL;
    *out = st;
    return KMB_OK;
}

int kmb_storage_open(kmb_storage **out, const char *path, const kmb_options *opts)
{
    *out = NULL;
    if (opts && (opts->max_segment_size == 0 || opts->max_event_size == 0))
        return kmb_error_set(KMB_EINVAL, 0, "max_segment_size and max_event_size must be positive");
    kmb_backend *b;
    int rc = kmb_backend_disk_open(&b, path, opts ? opts->read_only : 0);
    if (rc) return rc;
    return kmb_storage_open_backend(out, b, opts);
}

int kmb_storage_open_memory(kmb_storage **out, const kmb_options *opts)
{
    *out = NULL;
    if (opts && opts->read_only)
        return kmb_error_set(KMB_EINVAL, 0, "a memory storage cannot be read-only");
    kmb_backend *b;
    int rc = kmb_backend_memory_new(&b);
    if (rc) return rc;
    return kmb_storage_open_backend(out, b, opts);
}

const kmb_options *kmb_storage_options(kmb_storage *st) { return &st->opts; }

void kmb_storage_set_event_callback(kmb_storage *st, kmb_event_fn fn, void *ctx)
{
    pthread_mutex_lock(&st->mu);
    st->event_fn = fn;
    st->event_ctx = ctx;
    pthread_mutex_unlock(&st->mu);
}

static int closed_error(void)
{
    return kmb_error_set(KMB_ECLOSED, 0, "I/O operation on a closed storage");
}

/* Lock and check the storage is open; on failure the lock is not held. */
static int inherited(kmb_storage *st) { return st->fork_guard && getpid() != st->pid; }

static int enter(kmb_storage *st)
{
    /* Checked before locking: the mutex may have been held by another thread at fork(). */
    if (inherited(st))
        return kmb_error_set(KMB_ERROR, 0,
                             "this Storage was opened by process %ld and inherited across "
                             "fork(); a child cannot use its parent's writer: open a new "
                             "Storage in this process (read_only=True beside the parent's "
                             "writer)",
                             (long)st->pid);
    pthread_mutex_lock(&st->mu);
    if (st->closed) {
        pthread_mutex_unlock(&st->mu);
        return closed_error();
    }
    return KMB_OK;
}

static void leave(kmb_storage *st) { pthread_mutex_unlock(&st->mu); }

/* Cut the active segment back to its valid size after a failed batch (see cut_pending). */
static int cut_back(kmb_storage *st, stream_state *s)
{
    seg_state *g = &s->segs[s->nsegs - 1];
    int rc = st->backend->truncate(st->backend, s->id, g->number, g->size);
    if (rc) return with_stream(st, rc, s->id, g->number);
    s->cut_pending = 0;
    return KMB_OK;
}

static int flush_locked(kmb_storage *st)
{
    if (st->opts.read_only) return KMB_OK;
    int first = KMB_OK;
    for (size_t i = 0; i < st->tcap; i++) {
        stream_state *s = st->table[i];
        if (!s) continue;
        for (size_t k = 0; k < s->nsegs; k++) {
            seg_state *g = &s->segs[k];
            if (!g->index_dirty || g->damaged) continue;
            int rc = st->backend->save_index(st->backend, s->id, g->number, &g->ix);
            if (rc == KMB_OK)
                g->index_dirty = 0;
            else if (first == KMB_OK)
                first = with_stream(st, rc, s->id, g->number);
        }
    }
    return first;
}

int kmb_storage_flush_indexes(kmb_storage *st)
{
    int rc = enter(st);
    if (rc) return rc;
    rc = flush_locked(st);
    leave(st);
    return rc;
}

/* Free everything without flushing, syncing or locking: the parent still owns the files. */
static void release_inherited(kmb_storage *st)
{
    for (size_t i = 0; i < st->tcap; i++) stream_free(st->table[i]);
    free(st->table);
    st->table = NULL;
    st->tcap = st->tcount = 0;
    st->backend->free(st->backend); /* closing our copies of the fds keeps the parent's lock */
    st->backend = NULL;
    free(st->scratch);
    free(st->win.buf);
    free(st->rbuf);
    st->scratch = st->rbuf = NULL;
    memset(&st->win, 0, sizeof(st->win));
    kmb_hasher_stop(&st->worker);
    free_chunks(st);
    free(st->hashes);
    st->hashes = NULL;
    st->closed = 1;
}

int kmb_storage_close(kmb_storage *st)
{
    if (inherited(st)) {
        if (!st->closed) release_inherited(st);
        return KMB_OK;
    }
    pthread_mutex_lock(&st->mu);
    if (st->closed) {
        pthread_mutex_unlock(&st->mu);
        return KMB_OK;
    }
    int rc = flush_locked(st);
    /* Last chance to cut back failed batches: a reopen must not find their records. */
    for (size_t i = 0; i < st->tcap; i++) {
        stream_state *s = st->table[i];
        if (s && s->cut_pending && cut_back(st, s) != KMB_OK && rc == KMB_OK) rc = KMB_EIO;
    }
    kmb_error saved = *kmb_error_last();
    for (size_t i = 0; i < st->tcap; i++) stream_free(st->table[i]);
    free(st->table);
    st->table = NULL;
    st->tcap = st->tcount = 0;
    st->backend->free(st->backend);
    st->backend = NULL;
    free(st->scratch);
    st->scratch = NULL;
    st->scratch_cap = 0;
    free(st->win.buf);
    memset(&st->win, 0, sizeof(st->win));
    free(st->rbuf);
    st->rbuf = NULL;
    st->rbuf_cap = 0;
    kmb_hasher_stop(&st->worker);
    free_chunks(st);
    free(st->hashes);
    st->hashes = NULL;
    st->hashes_cap = 0;
    st->closed = 1;
    pthread_mutex_unlock(&st->mu);
    if (rc) *kmb_error_mut() = saved;
    return rc;
}

int kmb_storage_is_closed(kmb_storage *st)
{
    pthread_mutex_lock(&st->mu);
    int c = st->closed;
    pthread_mutex_unlock(&st->mu);
    return c;
}

void kmb_storage_free(kmb_storage *st)
{
    if (!st) return;
    kmb_storage_close(st);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

/* ---------------------------------------------------------------- fork() (storage.h) */

void kmb_storage_fork_prepare(kmb_storage *st) { pthread_mutex_lock(&st->mu); }

void kmb_storage_fork_parent(kmb_storage *st) { pthread_mutex_unlock(&st->mu); }

void kmb_storage_fork_child(kmb_storage *st)
{
    /* Only this thread exists now, and it holds the mutex (fork_prepare): no call was in
     * progress, so the state is consistent; the hasher's thread stayed in the parent. */
    kmb_hasher_forget(&st->worker);
    if (inherited(st) && st->backend != NULL) kmb_backend_disk_forget_lock(st->backend);
    pthread_mutex_unlock(&st->mu);
}

/*
 * Before an fsync=True append: make durable what earlier fsync=False appends (or another
 * process) left in the page cache and this batch's chain now depends on — sealed segments'
 * data and the directory entries of files created without a sync. The active segment is
 * synced after the batch is written, which covers its earlier data too. Nothing of the
 * batch is written yet, so a failure here leaves the stream as it was.
 */
static int make_durable(kmb_storage *st, stream_state *s)
{
    for (size_t k = 0; k + 1 < s->nsegs; k++) {
        seg_state *g = &s->segs[k];
        if (!g->unsynced || g->pending) continue;
        int rc = st->backend->sync(st->backend, s->id, g->number);
        if (rc) return with_stream(st, rc, s->id, g->number);
        g->unsynced = 0;
    }
    if (s->dir_unsynced && st->backend->sync_dir) {
        int rc = st->backend->sync_dir(st->backend, s->id);
        if (rc) return with_stream(st, rc, s->id, s->segs[s->nsegs - 1].number);
    }
    s->dir_unsynced = 0;
    return KMB_OK;
}

#define SCRATCH_KEEP ((size_t)4 << 20) /* larger append buffers are given back after use */

int kmb_storage_append(kmb_storage *st, uint64_t stream, const kmb_slice *events, size_t count,
                       const uint64_t *expected_offset, int fsync, uint64_t *next_out)
{
    int rc = enter(st);
    if (rc) return rc;
    stream_state *s = NULL;
    if (st->opts.read_only) {
        rc = kmb_error_set(KMB_EREADONLY, 0,
                           "this storage is read-only; open it without read_only=True to append");
        goto out;
    }
    if (count == 0) {
        rc = kmb_error_set(KMB_EINVAL, 0, "empty batch: append_batch needs at least one event");
        goto out;
    }
    /* Validate everything before a byte is written. */
    uint64_t total = 0;
    for (size_t i = 0; i < count; i++) {
        if (events[i].len > st->opts.max_event_size) {
            rc = kmb_error_set(KMB_EINVAL, 0,
                               "event %zu of the batch is %zu bytes, larger than max_event_size "
                               "(%" PRIu64 " bytes); split it or open the storage with a larger "
                               "max_event_size",
                               i, events[i].len, st->opts.max_event_size);
            goto out;
        }
        total += kmb_record_size(events[i].len);
    }
    if (total > SIZE_MAX / 2) {
        rc = kmb_error_set(KMB_EINVAL, 0, "batch too large (%" PRIu64 " bytes)", total);
        goto out;
    }
    rc = get_stream(st, stream, &s);
    if (rc) goto out;
    if (s && s->damaged) {
        rc = damaged_error(st, s);
        goto out;
    }
    if (s && s->cut_pending) {
        rc = cut_back(st, s);
        if (rc) goto out;
    }
    uint64_t next = s ? s->next : 0;
    if (expected_offset && *expected_offset != next) {
        kmb_error_set(KMB_EOFFSET, 0,
                      "stream %" PRIu64 ": expected offset %" PRIu64
                      " but the stream's next offset is %" PRIu64
                      "; nothing was written (another append got there first: re-read the "
                      "stream and retry)",
                      stream, *expected_offset, next);
        kmb_error *e = kmb_error_mut();
        e->has_stream = 1;
        e->stream_id = stream;
        e->expected_offset = *expected_offset;
        e->actual_offset = next;
        rc = KMB_EOFFSET;
        goto out;
    }
    if (count > KMB_MAX_OFFSET - next) {
        rc = kmb_error_set(KMB_EINVAL, 0, "stream %" PRIu64 ": offsets would reach 2**63", stream);
        goto out;
    }

    if (!s) {
        rc = st->backend->create_segment(st->backend, stream, 0, fsync);
        if (rc) {
            rc = with_stream(st, rc, stream, 0);
            goto out;
        }
        s = calloc(1, sizeof(*s));
        if (!s) {
            rc = oom();
            goto out;
        }
        s->id = stream;
        s->dir_unsynced = !fsync;
        seg_state *g0 = push_segment(s, 0, 0);
        if (!g0 || table_insert(st, s) != KMB_OK) {
            stream_free(s);
            s = NULL;
            rc = oom();
            goto out;
        }
        g0->index_verified = 1;
    }
    rc = make_active_file(st, s, fsync); /* after a rotation whose file failed */
    if (rc) goto out;
    if (fsync) {
        rc = make_durable(st, s);
        if (rc) goto out;
    }
    seg_state *g = &s->segs[s->nsegs - 1];
    rc = kmb_index_reserve(&g->ix, count);
    if (rc) goto out;

    /* Large batches hash on the worker while this thread encodes and writes. */
    uint8_t head[KMB_HASH_SIZE];
    uint64_t pos = g->size;
    if (worker_use(st, total))
        rc = write_batch_pipelined(st, s, g, events, count, next, &pos, head);
    else
        rc = write_batch_inline(st, s, g, events, count, next, total, &pos, head);
    if (rc == KMB_OK && fsync) rc = st->backend->sync(st->backend, stream, g->number);
    if (rc) {
        kmb_error saved = *kmb_error_last();
        /* All or nothing: cut the segment back to its size before the batch. */
        if (st->backend->truncate(st->backend, stream, g->number, g->size) != KMB_OK)
            s->cut_pending = 1; /* retried before the next append and at close */
        *kmb_error_mut() = saved;
        rc = with_stream(st, rc, stream, g->number);
        goto out;
    }
    g->ix.count += count;
    g->size = pos;
    g->index_dirty = 1;
    g->unsynced = !fsync;
    s->next = next + count;
    memcpy(s->head, head, KMB_HASH_SIZE);
    s->has_head = 1;
    if (g->size >= st->opts.max_segment_size) {
        /* Eager rotation. The batch stands even if this fails: it is retried next time. */
        kmb_error saved = *kmb_error_last();
        if (seal_active(st, s) != KMB_OK || make_active_file(st, s, fsync) != KMB_OK) {
            char path[KMB_PATH_MAX];
            describe(st, stream, g->number, path, sizeof(path));
            note(st, "stream %" PRIu64 ": could not start a new segment after %s (%s); will retry",
                 stream, path, kmb_error_last()->message);
        }
        *kmb_error_mut() = saved;
    }
    if (next_out) *next_out = s->next;
out:
    if (st->scratch_cap > SCRATCH_KEEP) { /* don't hold a huge batch's copy until close */
        free(st->scratch);
        st->scratch = NULL;
        st->scratch_cap = 0;
    }
    leave(st);
    return rc;
}

void kmb_read_result_free(kmb_read_result *r)
{
    if (!r) return;
    free(r->records);
    free(r->buffer);
    memset(r, 0, sizeof(*r));
}

/* Plan a read: how many records from `from`, and how many bytes they take. */
static int plan_read(kmb_storage *st, stream_state *s, uint64_t from, uint64_t max_bytes,
                     size_t *n_out, uint64_t *bytes_out)
{
    uint64_t sum = 0, bytes = 0, offset = from;
    size_t n = 0;
    long k = from < s->next ? locate(s, from) : (long)s->nsegs - 1;
    if (k < 0) return unreachable(st, s, from);
    while (sum < max_bytes) {
        /* Reaching known corruption is an error, even when no valid record follows it. */
        if (s->damaged && !s->tamper && offset == s->damage_offset) return damaged_error(st, s);
        if (offset >= s->next) {
            /* Damage at the end hides how many records follow: reaching it is an error. */
            if (s->segs[s->nsegs - 1].damaged) return damaged_error(st, s);
            break;
        }
        seg_state *g = &s->segs[k];
        if (offset < g->base || offset - g->base >= seg_count(g)) {
            /* Past this segment's valid records: the next segment must continue here. */
            if (g->damaged) return damaged_error(st, s);
            if ((size_t)k + 1 >= s->nsegs) break;
            k++;
            if (s->segs[k].base != offset && seg_count(&s->segs[k]) > 0)
                return unreachable(st, s, offset);
            continue;
        }
        size_t i = (size_t)(offset - g->base);
        uint64_t size = rec_end(g, i) - g->ix.positions[i];
        sum += size - KMB_RECORD_OVERHEAD;
        bytes += size;
        n++;
        offset++;
    }
    if (bytes > SIZE_MAX / 2) return kmb_error_set(KMB_ENOMEM, 0, "read too large; pass max_bytes");
    *n_out = n;
    *bytes_out = bytes;
    return KMB_OK;
}

int kmb_storage_read_each(kmb_storage *st, uint64_t stream, uint64_t from, uint64_t max_bytes,
                          kmb_read_fn fn, void *ctx)
{
    int rc = enter(st);
    if (rc) return rc;
    stream_state *s;
    rc = get_stream(st, stream, &s);
    if (rc || !s || max_bytes == 0) goto out;
    if (from >= s->next && !s->segs[s->nsegs - 1].damaged &&
        !(s->damaged && !s->tamper && from == s->damage_offset))
        goto out;
    for (;;) {
        int was_damaged = s->damaged;
        size_t n = 0;
        uint64_t bytes = 0;
        reader r;
        rc = plan_read(st, s, from, max_bytes, &n, &bytes);
        if (rc || n == 0) break;
        reader_init(&r, st, s, from, n, bytes, fn, ctx);
        rc = reader_run(&r);
        if (rc == KMB_OK || r.stopped) break;
        /*
         * Each retry rebuilds one more unconfirmed index, so this ends. What was delivered
         * stays delivered: the read resumes after it.
         */
        if (rc == KMB_ECHAIN) mark_tampered(s);
        if (rc != KMB_ECORRUPT || was_damaged || !retry_after_failure(st, s, r.offset)) break;
        from += r.delivered;
        if (max_bytes != KMB_NO_LIMIT) max_bytes -= r.delivered_payload;
    }
out:
    trim_chunks(st);
    leave(st);
    return rc;
}

/* kmb_storage_read's callback: append a chunk's records and payloads to the result. */
static int collect_records(void *ctx, const kmb_record *recs, size_t n)
{
    kmb_read_result *out = ctx;
    uint64_t bytes = 0;
    for (size_t j = 0; j < n; j++) bytes += recs[j].length;
    if (bytes > SIZE_MAX / 2 - out->payload_bytes) return oom();
    int rc = grow(&out->buffer, &out->buffer_cap, (size_t)(out->payload_bytes + bytes));
    if (rc) return rc;
    if (out->count + n > out->records_cap) {
        size_t cap = out->records_cap ? out->records_cap : 64;
        while (cap < out->count + n) cap *= 2;
        kmb_record *p = realloc(out->records, cap * sizeof(*p));
        if (!p) return oom();
        out->records = p;
        out->records_cap = cap;
    }
    for (size_t j = 0; j < n; j++) {
        kmb_record *r = &out->records[out->count++];
        *r = recs[j];
        r->payload = NULL; /* set once the buffer stops moving */
        if (r->length) memcpy(out->buffer + out->payload_bytes, recs[j].payload, r->length);
        out->payload_bytes += r->length;
    }
    return KMB_OK;
}

int kmb_storage_read(kmb_storage *st, uint64_t stream, uint64_t from, uint64_t max_bytes,
                     kmb_read_result *out)
{
    out->count = 0;
    out->payload_bytes = 0;
    int rc = kmb_storage_read_each(st, stream, from, max_bytes, collect_records, out);
    if (rc) {
        out->count = 0;
        out->payload_bytes = 0;
        return rc;
    }
    uint64_t at = 0; /* payloads lie back to back in the buffer, in order */
    for (size_t i = 0; i < out->count; i++) {
        out->records[i].payload = out->buffer + at;
        at += out->records[i].length;
    }
    return KMB_OK;
}

int kmb_storage_next_offset(kmb_storage *st, uint64_t stream, uint64_t *out)
{
    int rc = enter(st);
    if (rc) return rc;
    stream_state *s;
    rc = get_stream(st, stream, &s);
    *out = (rc == KMB_OK && s) ? s->next : 0;
    leave(st);
    return rc;
}

int kmb_storage_head(kmb_storage *st, uint64_t stream, uint8_t out[KMB_HASH_SIZE], int *has)
{
    int rc = enter(st);
    if (rc) return rc;
    stream_state *s;
    rc = get_stream(st, stream, &s);
    *has = 0;
    if (rc == KMB_OK && s && s->has_head) {
        memcpy(out, s->head, KMB_HASH_SIZE);
        *has = 1;
    }
    leave(st);
    return rc;
}

static int head_mismatch(uint64_t stream, const uint8_t *expected, const uint8_t *actual,
                         int has_actual, uint64_t next)
{
    kmb_error_set(KMB_ECHAIN, 0,
                  "stream %" PRIu64 ": head hash does not match the trusted head (%" PRIu64
                  " records); records were altered, removed or added since that head was "
                  "recorded",
                  stream, next);
    kmb_error *e = kmb_error_mut();
    e->has_stream = 1;
    e->stream_id = stream;
    if (next > 0) {
        e->has_offset = 1;
        e->offset = next - 1;
    }
    e->has_expected_hash = 1;
    memcpy(e->expected_hash, expected, KMB_HASH_SIZE);
    if (has_actual) {
        e->has_actual_hash = 1;
        memcpy(e->actual_hash, actual, KMB_HASH_SIZE);
    }
    return KMB_ECHAIN;
}

/* One pass of verify over a loaded, undamaged stream; *head_out is the computed head. */
static int verify_once(kmb_storage *st, stream_state *s, uint8_t head_out[KMB_HASH_SIZE])
{
    uint8_t running[KMB_HASH_SIZE] = {0};
    uint64_t offset = 0;
    for (size_t k = 0; k < s->nsegs; k++) {
        seg_state *g = &s->segs[k];
        if (seg_count(g) == 0) continue;
        if (g->base != offset)
            return corrupt(st, s->id, g->number, offset, 0,
                           "segment does not continue the previous one");
        reader r;
        reader_init(&r, st, s, offset, g->ix.count, g->size, NULL, NULL);
        memcpy(r.running, running, KMB_HASH_SIZE);
        r.have_running = 1;
        int rc = reader_run(&r);
        if (rc) return rc;
        memcpy(running, r.running, KMB_HASH_SIZE);
        offset += g->ix.count;
    }
    if (offset != s->next)
        return corrupt(st, s->id, s->segs[s->nsegs - 1].number, offset, 0, "records missing");
    memcpy(head_out, running, KMB_HASH_SIZE);
    return KMB_OK;
}

int kmb_storage_verify(kmb_storage *st, uint64_t stream, const uint8_t *expected_head,
                       uint64_t *next_out, uint8_t head_out[KMB_HASH_SIZE], int *has_head)
{
    uint64_t next_dummy;
    uint8_t head_dummy[KMB_HASH_SIZE];
    int has_dummy;
    if (!next_out) next_out = &next_dummy;
    if (!head_out) head_out = head_dummy;
    if (!has_head) has_head = &has_dummy;
    *next_out = 0;
    *has_head = 0;
    int rc = enter(st);
    if (rc) return rc;
    stream_state *s;
    uint8_t head[KMB_HASH_SIZE];
    rc = get_stream(st, stream, &s);
    if (rc) goto out;
    if (!s || (s->next == 0 && !s->damaged)) {
        if (expected_head) rc = head_mismatch(stream, expected_head, NULL, 0, 0);
        goto out;
    }
    for (;;) {
        if (s->damaged) {
            rc = damaged_error(st, s);
            break;
        }
        rc = verify_once(st, s, head);
        if (rc == KMB_ECHAIN) mark_tampered(s); /* a broken link, not a head mismatch */
        if (rc != KMB_ECORRUPT || !retry_after_failure(st, s, 0)) break;
    }
    if (rc == KMB_OK && expected_head && memcmp(expected_head, head, KMB_HASH_SIZE) != 0)
        rc = head_mismatch(stream, expected_head, head, 1, s->next);
    if (rc == KMB_OK) {
        *next_out = s->next;
        memcpy(head_out, head, KMB_HASH_SIZE);
        *has_head = 1;
    }
out:
    trim_chunks(st);
    leave(st);
    return rc;
}

/* ---------------------------------------------------------------- fault injection */

/* The disk backend's file layer, or KMB_EINVAL: only it has one (sys/faults.h). */
static int fault_io(kmb_storage *st, kmb_io **out)
{
    *out = kmb_backend_disk_io(st->backend);
    if (*out == NULL)
        return kmb_error_set(KMB_EINVAL, 0, "fault injection needs a storage on the disk backend");
    return KMB_OK;
}

int kmb_storage_set_fault(kmb_storage *st, unsigned ops, uint64_t nth, int err, int persistent,
                          int short_write)
{
    int rc = enter(st);
    if (rc) return rc;
    kmb_io *io;
    rc = fault_io(st, &io);
    if (rc == KMB_OK && err < KMB_FAULT_CRASH)
        rc = kmb_error_set(KMB_EINVAL, 0, "fault errno must be positive, 0 or KMB_FAULT_CRASH");
    if (rc == KMB_OK) kmb_io_set_fault(io, ops, nth, err, persistent, short_write);
    leave(st);
    return rc;
}

int kmb_storage_fault_counts(kmb_storage *st, uint64_t *calls, uint64_t *faults)
{
    int rc = enter(st);
    if (rc) return rc;
    kmb_io *io;
    rc = fault_io(st, &io);
    if (rc == KMB_OK) {
        if (calls) *calls = io->calls;
        if (faults) *faults = io->faults;
    }
    leave(st);
    return rc;
}

int kmb_storage_streams(kmb_storage *st, uint64_t **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    int rc = enter(st);
    if (rc) return rc;
    rc = st->backend->list_streams(st->backend, out, count);
    leave(st);
    return rc;
}

int kmb_storage_segment_count(kmb_storage *st, uint64_t stream, uint64_t *out)
{
    int rc = enter(st);
    if (rc) return rc;
    stream_state *s;
    rc = get_stream(st, stream, &s);
    *out = (rc == KMB_OK && s) ? s->nsegs : 0;
    leave(st);
    return rc;
}

int kmb_storage_completed_segments(kmb_storage *st, uint64_t stream, uint32_t **out,
                                   size_t *count)
{
    *out = NULL;
    *count = 0;
    int rc = enter(st);
    if (rc) return rc;
    stream_state *s;
    rc = get_stream(st, stream, &s);
    if (rc == KMB_OK && s && s->nsegs > 1) {
        uint32_t *nums = malloc((s->nsegs - 1) * sizeof(*nums));
        if (!nums) {
            rc = oom();
        } else {
            for (size_t i = 0; i + 1 < s->nsegs; i++) nums[i] = s->segs[i].number;
            *out = nums;
            *count = s->nsegs - 1;
        }
    }
    leave(st);
    return rc;
}

/* ---------------------------------------------------------------- testing hooks */

int kmb_storage_segment_bytes(kmb_storage *st, uint64_t stream, uint32_t seg, uint8_t **out,
                              size_t *len)
{
    *out = NULL;
    *len = 0;
    int rc = enter(st);
    if (rc) return rc;
    uint64_t size = 0;
    size_t n = 0;
    uint8_t *buf = NULL;
    rc = st->backend->segment_size(st->backend, stream, seg, &size);
    if (rc) {
        rc = with_stream(st, rc, stream, seg);
        goto out;
    }
    if (size > SIZE_MAX - 1) {
        rc = oom();
        goto out;
    }
    buf = malloc(size ? (size_t)size : 1);
    if (!buf) {
        rc = oom();
        goto out;
    }
    rc = st->backend->read(st->backend, stream, seg, 0, buf, (size_t)size, &n);
    if (rc) {
        free(buf);
        rc = with_stream(st, rc, stream, seg);
        goto out;
    }
    *out = buf;
    *len = n;
out:
    leave(st);
    return rc;
}

int kmb_storage_replace_segment_bytes(kmb_storage *st, uint64_t stream, uint32_t seg,
                                      const void *data, size_t len)
{
    int rc = enter(st);
    if (rc) return rc;
    if (st->opts.read_only) {
        rc = kmb_error_set(KMB_EREADONLY, 0, "cannot replace segment bytes in read-only mode");
        goto out;
    }
    /* Save the stream's indexes first, as close() would: the stream then reloads like a
     * directory reopened after a clean close, not after a crash. */
    stream_state *s = table_find(st, stream);
    for (size_t k = 0; s && k < s->nsegs; k++) {
        seg_state *g = &s->segs[k];
        if (g->index_dirty && !g->damaged &&
            st->backend->save_index(st->backend, stream, g->number, &g->ix) == KMB_OK)
            g->index_dirty = 0;
    }
    int exists = 0;
    rc = st->backend->segment_exists(st->backend, stream, seg, &exists);
    if (rc == KMB_OK && !exists) {
        char name[KMB_PATH_MAX];
        describe(st, stream, seg, name, sizeof(name));
        rc = kmb_error_set(KMB_ENOTFOUND, 0, "no segment %s", name);
    }
    if (rc == KMB_OK && len) rc = st->backend->write(st->backend, stream, seg, 0, data, len);
    if (rc == KMB_OK) rc = st->backend->truncate(st->backend, stream, seg, len);
    if (rc) rc = with_stream(st, rc, stream, seg);
    /* Forget what was cached about the stream, as if this storage had just been opened:
     * the next call that uses it loads it again from the backend. */
    if (s) {
        table_remove(st, s);
        stream_free(s);
    }
    window_reset(st);
out:
    leave(st);
    return rc;
}
