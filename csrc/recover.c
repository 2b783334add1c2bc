/*
 * recover.c — loading a stream from its backend, and what to trust of what was found.
 *
 * The rule every loader applies:
 *
 *   A record at byte p of a segment is valid if and only if its header, payload and CRC
 *   lie inside the segment, the CRC matches, and its offset is the one expected at p.
 *
 * Loading a segment scans from the end of its confirmed index to the end of the file.
 * Where scanning stops before the end, the active segment's remainder is a torn tail (an
 * append that never returned) unless a valid record follows; then, as anywhere in a sealed
 * segment, it is corruption: nothing is cut, reads that reach it and appends fail.
 * A reader beside a live writer catches up (refresh) instead of reloading, and a check
 * that fails on an index loaded unconfirmed rebuilds that index and retries.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "kimberlite/crc32.h"

/* ---------------------------------------------------------------- reading bytes */

/*
 * Make the window cover [at, at+len) of a segment whose readable end is `end`, reading
 * SCAN_CHUNK bytes (or len, if larger) at a time. *out points at byte `at`.
 * KMB_EEOF when fewer bytes exist than [at, at+len) needs (the file shrank).
 */
static int window_get_by(kmb_storage *st, uint64_t stream, uint32_t seg, uint64_t at,
                         size_t len, uint64_t end, size_t chunk, const uint8_t **out)
{
    window *w = &st->win;
    if (at >= w->start && at + len <= w->start + w->len) {
        *out = w->buf + (at - w->start);
        return KMB_OK;
    }
    size_t want = len > chunk ? len : chunk;
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

static int window_get(kmb_storage *st, uint64_t stream, uint32_t seg, uint64_t at, size_t len,
                      uint64_t end, const uint8_t **out)
{
    return window_get_by(st, stream, seg, at, len, end, SCAN_CHUNK, out);
}

/* Bytes read at a time to check one record where it stands (read_record_at): a page, not a
 * scanning chunk, so that probing a record costs a page of reading, not a megabyte. */
#define PROBE_CHUNK ((size_t)4096)


/*
 * Whether a valid record starts at byte `pos` of segment `seg` (readable end `end`): its
 * header and claimed length lie within the bytes present, its offset is below 2**63 and
 * its CRC matches. The CRC is streamed through the window a piece at a time, so a claimed
 * length never causes an allocation: memory stays one window whatever the bytes say.
 * On *valid, *offset and *total are the record's offset and size in bytes.
 */
static int check_at_by(kmb_storage *st, uint64_t stream, uint32_t seg, uint64_t pos,
                       uint64_t end, size_t chunk, int *valid, uint64_t *offset, uint64_t *total)
{
    *valid = 0;
    if (pos > end || end - pos < KMB_RECORD_OVERHEAD) return KMB_OK;
    const uint8_t *p = NULL;
    int rc = window_get_by(st, stream, seg, pos, KMB_HEADER_SIZE, end, chunk, &p);
    if (rc) return rc == KMB_EEOF ? KMB_OK : rc;
    uint64_t off = kmb_rec_offset_of(p);
    uint64_t size = kmb_rec_size_of(p);
    if (size > end - pos || off >= KMB_MAX_OFFSET) return KMB_OK;
    uint64_t body = size - 4;
    uint32_t crc = 0;
    for (uint64_t done = 0; done < body;) {
        size_t n = body - done > SCAN_CHUNK ? SCAN_CHUNK : (size_t)(body - done);
        rc = window_get_by(st, stream, seg, pos + done, n, end, chunk, &p);
        if (rc) return rc == KMB_EEOF ? KMB_OK : rc;
        crc = kmb_crc32_update(crc, p, n);
        done += n;
    }
    rc = window_get_by(st, stream, seg, pos + body, 4, end, chunk, &p);
    if (rc) return rc == KMB_EEOF ? KMB_OK : rc;
    if (kmb_load_u32le(p) != crc) return KMB_OK;
    *valid = 1;
    *offset = off;
    *total = size;
    return KMB_OK;
}

static int check_at(kmb_storage *st, uint64_t stream, uint32_t seg, uint64_t pos,
                    uint64_t end, int *valid, uint64_t *offset, uint64_t *total)
{
    return check_at_by(st, stream, seg, pos, end, SCAN_CHUNK, valid, offset, total);
}

/*
 * Read and check the single record at byte `pos` of segment g (valid bytes end at `end`).
 * On KMB_OK *out borrows st->rbuf. Returns KMB_ECORRUPT/KMB_EEOF (no context) when the
 * bytes there are not a whole, valid record, KMB_EIO on read errors. The record is checked
 * (check_at) before its bytes are held, so memory follows real records, not claims.
 */
int read_record_at(kmb_storage *st, uint64_t stream, const seg_state *g, uint64_t pos,
                          uint64_t end, kmb_record *out, size_t *size_out)
{
    int valid = 0;
    uint64_t offset = 0, total = 0;
    window_reset(st); /* the window may hold another segment's bytes */
    int rc = check_at_by(st, stream, g->number, pos, end, PROBE_CHUNK, &valid, &offset, &total);
    window_reset(st);
    if (rc) return rc;
    if (!valid) return kmb_error_set(KMB_ECORRUPT, 0, "no valid record at this position");
    if (total > SIZE_MAX / 2) return oom();
    rc = grow(&st->rbuf, &st->rbuf_cap, (size_t)total);
    if (rc) return rc;
    size_t n = 0;
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
int scan(kmb_storage *st, stream_state *s, seg_state *g, uint64_t pos, uint64_t end,
         int *base_known, uint64_t *stop)
{
    window_reset(st);
    while (end - pos >= KMB_RECORD_OVERHEAD) {
        int valid;
        uint64_t offset = 0, total = 0;
        int rc = check_at(st, s->id, g->number, pos, end, &valid, &offset, &total);
        if (rc) return rc;
        if (!valid) break;
        if (!*base_known && g->ix.count == 0) {
            g->base = offset; /* after damage upstream: take the segment's own word */
            *base_known = 1;
        }
        if (offset != g->base + g->ix.count) break;
        rc = kmb_index_append(&g->ix, pos);
        if (rc) return oom();
        pos += total;
    }
    *stop = pos;
    return KMB_OK;
}

/*
 * Whether a valid record with an offset in [lo, hi] starts anywhere in [from, end) of
 * segment g: the test that tells a torn tail (nothing valid follows) from corruption. A
 * stale copy of an older record does not count. Checking the offset before the CRC keeps
 * random bytes from costing a CRC each; crafted bytes (headers everywhere claiming long
 * records) could still make the search quadratic, so it is bounded: after checksumming
 * four times the tail's size it stops and answers "found" — the safe answer, which leaves
 * the bytes in place as damage instead of cutting them. Linear: at most 4 × (end - from)
 * + one window of bytes are checksummed, and the tail is read at most 5 times.
 */
static int valid_record_follows(kmb_storage *st, uint64_t stream, seg_state *g, uint64_t from,
                                uint64_t end, uint64_t lo, uint64_t hi, int *found)
{
    *found = 0;
    window_reset(st);
    uint64_t budget = 4 * (end - from) + SCAN_CHUNK, spent = 0;
    for (uint64_t q = from; end - q >= KMB_RECORD_OVERHEAD; q++) {
        const uint8_t *p = NULL;
        int rc = window_get(st, stream, g->number, q, KMB_HEADER_SIZE, end, &p);
        if (rc == KMB_EEOF) break;
        if (rc) return rc;
        uint64_t off = kmb_rec_offset_of(p);
        uint64_t total = kmb_rec_size_of(p);
        if (total > end - q || off < lo || off > hi) continue;
        spent += total;
        if (spent > budget) {
            *found = 1;
            return KMB_OK;
        }
        int valid;
        uint64_t offset = 0, size = 0;
        rc = check_at(st, stream, g->number, q, end, &valid, &offset, &size);
        if (rc) return rc;
        if (valid) {
            *found = 1;
            return KMB_OK;
        }
    }
    return KMB_OK;
}

/* Check a stored index against the segment; 1 if it can be used. *scan_from is its end. */
static int index_confirmed(kmb_storage *st, stream_state *s, seg_state *g, uint64_t disk_size,
                           size_t gaps_good, int *base_known, uint64_t *scan_from)
{
    size_t n = g->ix.count;
    if (n == 0) {
        *scan_from = 0;
        return 1;
    }
    /* Entry 0 and the last entry are loaded even in a partial index. */
    const uint64_t first = seg_pos(g, 0), last = seg_pos(g, n - 1);
    if (first != 0) return 0;
    /* A record spans at least the overhead and at most the largest event this storage
     * accepts (a wider gap would make a read hold bytes no record of ours can need): the
     * entries kept must lie within the prefix load_stored_index found to have such gaps. */
    if (n > gaps_good) return 0;
    if (last >= disk_size) return 0;
    kmb_record rec;
    size_t size;
    /* The first and last entries must hold records with the offsets the index implies. */
    if (read_record_at(st, s->id, g, first, disk_size, &rec, &size) != KMB_OK) return 0;
    if (*base_known && rec.offset != g->base) return 0;
    uint64_t base = rec.offset;
    if (read_record_at(st, s->id, g, last, disk_size, &rec, &size) != KMB_OK) return 0;
    if (rec.offset != base + n - 1) return 0;
    g->base = base;
    *base_known = 1;
    *scan_from = last + size;
    return 1;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/*
 * Whether [stop, end) of segment g starts with zero bytes up to the next 4 KiB boundary
 * (at least 8: a whole offset field, which no record at a stop can have as zeros), past
 * which a valid record follows: what a power cut that lost the first page of a batch in
 * flight leaves. *resume is the boundary.
 */
static int zero_page_at(kmb_storage *st, uint64_t stream, const seg_state *g, uint64_t stop,
                        uint64_t end, int *yes, uint64_t *resume)
{
    *yes = 0;
    uint64_t z = (stop / 4096 + 1) * 4096;
    if (z > end || z - stop < 8) return KMB_OK;
    const uint8_t *p = NULL;
    window_reset(st);
    int rc = window_get(st, stream, g->number, stop, (size_t)(z - stop), end, &p);
    if (rc) return rc == KMB_EEOF ? KMB_OK : rc;
    for (size_t i = 0; i < z - stop; i++)
        if (p[i]) return KMB_OK;
    *yes = 1;
    *resume = z;
    return KMB_OK;
}

/*
 * Whether the invalid bytes at `stop` of the segment the last append wrote to are a torn
 * tail although valid records follow them: at or past the end of the last batch known
 * durable, nothing was acknowledged as durable (a power cut may keep any of a batch's
 * pages); inside that batch, only a lost first page (zero_page_at) followed by records
 * that all skip ahead is taken for one. Earlier acknowledged data is never cut.
 */
static int torn_despite_records(kmb_storage *st, stream_state *s, seg_state *g, uint64_t stop,
                                uint64_t end, uint64_t expected, int *torn)
{
    *torn = 0;
    if (!s->wm_known) return KMB_OK;
    kmb_mark at = {g->number, stop};
    if (!mark_before(at, s->wm_end)) {
        *torn = 1;
        return KMB_OK;
    }
    if (mark_before(at, s->wm_batch)) return KMB_OK;
    int zeros = 0, again = 0;
    uint64_t resume = 0;
    int rc = zero_page_at(st, s->id, g, stop, end, &zeros, &resume);
    if (rc || !zeros) return rc;
    rc = valid_record_follows(st, s->id, g, resume, end, expected, expected, &again);
    if (rc) return rc;
    *torn = !again;
    return KMB_OK;
}

/*
 * Decide what the bytes [stop, end) of segment g are, after scanning stopped at `stop`.
 * The rule (docs/FORMAT.md, "Recovery"): in the segment the last append wrote to, the
 * invalid bytes at the end of the valid records are a torn tail — the residue of an append
 * that never returned — if no valid record follows them, or if they lie at or past the
 * durable watermark (a power cut can keep any subset of an unacknowledged batch's pages, so
 * valid records may follow a hole there). A writer moves a torn tail into a quarantine file;
 * a reader does not see it. Anything else is damage: nothing is cut. A reader first lets a
 * live writer finish (its pages may show up out of order) by re-reading a few times.
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
        int follows = 1, whole = 0;
        uint64_t off_at = 0, size_at = 0;
        if (active) { /* a whole record with the wrong offset is not what a torn write leaves */
            window_reset(st);
            rc = check_at(st, s->id, g->number, *stop, end, &whole, &off_at, &size_at);
            if (rc) return rc;
        }
        if (active && !whole) {
            uint64_t span = (end - *stop) / KMB_RECORD_OVERHEAD + 1;
            rc = valid_record_follows(st, s->id, g, *stop, end, expected, expected + span,
                                      &follows);
            if (rc == KMB_OK && follows) {
                int torn = 0;
                rc = torn_despite_records(st, s, g, *stop, end, expected, &torn);
                follows = !torn;
            }
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
            watermark_lower(st, s, g, *stop);
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

/*
 * An index written after a batch that was never made durable can span a hole a power cut
 * left in that batch (its first and last entries still confirm), and so hide it from the
 * torn-tail rule. Past the durable watermark, the index is not trusted: the bytes there are
 * scanned, as if the index ended at the watermark.
 */
static void trust_index_to_watermark(const stream_state *s, seg_state *g)
{
    if (!s->wm_known || g->number < s->wm_end.seg) return;
    size_t keep = 0;
    if (g->number == s->wm_end.seg) {
        /* (A partial index is completed first unless the watermark lies past its first
         * loaded entry: load_segment.) The search starts there. */
        /* The first entry at or past the watermark, by bisection: the entries kept are then
         * checked to increase (index_confirmed), which is what makes the answer exact. On
         * entries that do not increase, the bisection still stops at some i with
         * positions[i-1] < wm <= positions[i], and index_confirmed rejects the index. */
        const uint64_t *pos = g->ix.positions;
        size_t lo = g->ix.lo, hi = g->ix.count;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (pos[mid] < s->wm_end.pos) lo = mid + 1;
            else hi = mid;
        }
        keep = lo;
    }
    kmb_index_truncate(&g->ix, keep);
}

/*
 * Segment g's stored index, decoded and checked by index.c into g->ix. The backend reads no
 * more than the index of a segment of disk_size bytes could take (one entry per
 * KMB_RECORD_OVERHEAD bytes), so a huge or hostile .idx costs nothing: it is refused
 * (KMB_EINDEX) and rebuilt by scanning.
 */
static int load_stored_index(kmb_storage *st, stream_state *s, seg_state *g, uint64_t disk_size,
                             int lazy, size_t *gaps_good)
{
    uint8_t *data = NULL;
    size_t len = 0;
    uint64_t max_len = kmb_index_encoded_size(disk_size / KMB_RECORD_OVERHEAD);
    uint64_t max_gap = kmb_record_size(st->opts.max_event_size);
    kmb_backend *b = st->backend;
    size_t win = st->idx_lazy_window;
    if (lazy && b->load_index_ends && st->idx_lazy_min && win) {
        /* A large index: its header, entry 0 and last `win` entries only (see index.h,
         * kmb_index_adopt_partial); the rest is read when something needs it. */
        uint8_t head[KMB_INDEX_HEADER_SIZE + 8];
        size_t tail_len = win * 8 + KMB_INDEX_TRAILER_SIZE;
        size_t least = st->idx_lazy_min > win + 2 ? st->idx_lazy_min : win + 2;
        uint64_t min_size = kmb_index_encoded_size(least), size = 0;
        uint8_t *tail = malloc(tail_len);
        if (!tail) return oom();
        int rc = b->load_index_ends(b, s->id, g->number, max_len, min_size, head, sizeof head,
                                    tail, tail_len, &size);
        if (rc == KMB_OK && size >= min_size && size <= max_len) {
            uint64_t n = (size - KMB_INDEX_HEADER_SIZE - KMB_INDEX_TRAILER_SIZE) / 8;
            data = kmb_index_buffer_reserve((size_t)size);
            if (!data) rc = oom();
            if (data) {
                memcpy(data, head, sizeof head);
                memcpy(data + size - tail_len, tail, tail_len);
                /* takes data; checks the header and the window's gaps */
                rc = kmb_index_adopt_partial(&g->ix, data, (size_t)size, (size_t)(n - win),
                                             KMB_RECORD_OVERHEAD, max_gap, gaps_good);
                data = NULL;
            }
            free(tail);
            if (rc != KMB_EINVAL) return rc; /* EINVAL (a big-endian host): read it whole */
        } else {
            free(tail);
            if (rc != KMB_OK) return rc;
            if (size > max_len)
                return kmb_error_set(KMB_EINDEX, 0, "index larger than its segment could need");
        }
    }
    int rc = b->load_index(b, s->id, g->number, max_len, &data, &len);
    if (rc == KMB_OK && len > max_len)
        rc = kmb_error_set(KMB_EINDEX, 0, "index larger than its segment could need");
    if (rc == KMB_OK) {
        /* takes data; checks the gaps in the same pass as the CRC (see index_confirmed) */
        rc = kmb_index_adopt_checked(&g->ix, data, len, KMB_RECORD_OVERHEAD, max_gap, gaps_good);
        data = NULL;
    }
    kmb_index_buffer_free(data);
    return rc;
}

/*
 * Read the whole stored index of g and make its partial index whole with it
 * (kmb_index_complete). KMB_EINDEX (or the backend's error) when the stored index cannot
 * complete it: the index is then unchanged, still partial. KMB_ENOMEM.
 */
static int read_whole_index(kmb_storage *st, stream_state *s, seg_state *g)
{
    uint8_t *data = NULL;
    size_t len = 0;
    uint64_t disk_size = 0;
    int rc = st->backend->segment_size(st->backend, s->id, g->number, &disk_size);
    if (rc) return with_stream(st, rc, s->id, g->number);
    uint64_t max_len = kmb_index_encoded_size(disk_size / KMB_RECORD_OVERHEAD);
    rc = st->backend->load_index(st->backend, s->id, g->number, max_len, &data, &len);
    if (rc == KMB_OK && len > max_len) {
        kmb_index_buffer_free(data);
        rc = kmb_error_set(KMB_EINDEX, 0, "index larger than its segment could need");
    }
    if (rc) return rc;
    return kmb_index_complete(&g->ix, g->ix_used, data, len, KMB_RECORD_OVERHEAD,
                              kmb_record_size(st->opts.max_event_size));
}

void index_missed(const seg_state *g, size_t i)
{
    const char *env = getenv(IDX_CHECKS_ENV);
    if (env && env[0] == '1') {
        fprintf(stderr, "kimberlite: internal error: entry %zu of the partial index of segment "
                "%" PRIu32 " (entries 1..%zu not loaded) used before it was loaded\n",
                i, g->number, g->ix.lo - 1);
        abort();
    }
}

/*
 * Load segment `number` of s (appending it to s->segs). active: the segment the last append
 * wrote to (its invalid tail may be torn); sealed: a later segment exists (it must hold
 * records); after_gap: segments are missing before it (its records say where it starts).
 */
static int load_segment(kmb_storage *st, stream_state *s, uint32_t number, int active,
                        int sealed, int after_gap)
{
    int base_known = !after_gap;
    uint64_t base = 0;
    if (s->nsegs) {
        seg_state *prev = &s->segs[s->nsegs - 1];
        base = prev->base + seg_records(prev);
        base_known = base_known && !prev->damaged;
    }
    seg_state *g = push_segment(s, number, base);
    if (!g) return oom();
    g->unsynced = 1; /* written by an earlier run: its durability is not known */
    uint64_t disk_size;
    int rc = st->backend->segment_size(st->backend, s->id, number, &disk_size);
    if (rc) return with_stream(st, rc, s->id, number);
    if (disk_size == 0 && sealed) {
        /* Eager rotation makes a segment only after the one before it filled up. */
        mark_damaged(st, s, g, base, 0, "empty sealed segment (its records are missing)");
        g->index_verified = 1;
        return KMB_OK;
    }

    char path[KMB_PATH_MAX];
    uint64_t from = 0;
    size_t gaps_good = 0;
    rc = load_stored_index(st, s, g, disk_size, 1, &gaps_good);
    if (rc == KMB_ENOMEM) return rc;
    size_t stored = g->ix.count; /* what the index file says: rewritten if it differs */
    if (rc == KMB_OK && g->ix.lo && s->wm_known &&
        (g->number == s->wm_end.seg && g->ix.positions[g->ix.lo] >= s->wm_end.pos)) {
        /* The watermark lies before the loaded window: the bisection needs the whole index,
         * loaded and judged exactly as a small one is. */
        kmb_index_free(&g->ix);
        rc = load_stored_index(st, s, g, disk_size, 0, &gaps_good);
        if (rc == KMB_ENOMEM) return rc;
        stored = g->ix.count;
    }
    if (rc == KMB_OK) trust_index_to_watermark(s, g);
    size_t indexed = g->ix.count;
    g->ix_used = indexed; /* the entries from the file: a completion compares them */
    if (rc == KMB_OK && !index_confirmed(st, s, g, disk_size, gaps_good, &base_known, &from)) {
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
    if (g->ix.count != indexed || g->ix.count != stored) g->index_dirty = 1;
    return KMB_OK;
}

/* Compute the head hash from the last record of the stream. */
static int load_head(kmb_storage *st, stream_state *s)
{
    s->has_head = 0;
    if (s->next == 0) return KMB_OK;
    for (size_t k = s->nsegs; k-- > 0;) {
        seg_state *g = &s->segs[k];
        if (seg_records(g) == 0) continue;
        size_t i = g->ix.count - 1;
        kmb_record rec;
        size_t size;
        int rc = read_record_at(st, s->id, g, seg_pos(g, i), g->size, &rec, &size);
        if (rc == KMB_EIO || rc == KMB_ENOMEM) return rc;
        if (rc) {
            mark_damaged(st, s, g, g->base + i, seg_pos(g, i), "corrupted last record");
            return KMB_OK;
        }
        kmb_record_hash(s->head, &rec);
        s->has_head = 1;
        return KMB_OK;
    }
    return KMB_OK;
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

/*
 * Segments missing before segment `present` (numbers want .. present-1): records are
 * missing there. The damage is placed at the end of what precedes the gap.
 */
static void mark_gap(kmb_storage *st, stream_state *s, uint32_t want, uint32_t present)
{
    char what[96];
    snprintf(what, sizeof(what), "missing segment file segment_%06" PRIu32 ".log%s", want,
             present - want > 1 ? " (and more)" : "");
    if (s->nsegs) {
        seg_state *g = &s->segs[s->nsegs - 1];
        mark_damaged(st, s, g, g->base + seg_records(g), g->size, what);
    } else {
        mark_damaged_at(st, s, want, 0, 0, what);
    }
}

/*
 * The segment the last append wrote to, by position in nums: the last one, or the one
 * before an empty last one (eager rotation made the new file, then a crash took the end of
 * the batch that filled its predecessor).
 */
static int tail_segment(kmb_storage *st, uint64_t id, const uint32_t *nums, size_t n,
                        size_t *tail)
{
    *tail = n - 1;
    if (n < 2 || nums[n - 1] != nums[n - 2] + 1) return KMB_OK;
    uint64_t size;
    int rc = st->backend->segment_size(st->backend, id, nums[n - 1], &size);
    if (rc) return with_stream(st, rc, id, nums[n - 1]);
    if (size == 0) *tail = n - 2;
    return KMB_OK;
}

/* Load a stream from the backend. *out is NULL (and KMB_OK) when the stream is absent. */
static int load_stream(kmb_storage *st, uint64_t id, stream_state **out)
{
    *out = NULL;
    uint32_t *nums = NULL;
    size_t n = 0, tail = 0;
    int rc = list_segments_settled(st, id, &nums, &n);
    if (rc) return rc;
    if (n == 0) return KMB_OK;
    stream_state *s = stream_new(id, 1); /* as for its segments: made by an earlier run */
    if (!s) {
        free(nums);
        return KMB_ENOMEM;
    }
    watermark_load(st, s);
    rc = tail_segment(st, id, nums, n, &tail);
    if (rc) goto fail;
    for (size_t i = 0; i < n; i++) {
        uint32_t want = s->nsegs ? s->segs[s->nsegs - 1].number + 1 : 0;
        if (nums[i] != want) mark_gap(st, s, want, nums[i]); /* a gap is damage, not an end */
        rc = load_segment(st, s, nums[i], i >= tail, i + 1 < n, nums[i] != want);
        if (rc) goto fail;
    }
    free(nums);
    nums = NULL;
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
        rc = load_segment(st, s, g->number + 1, !exists, exists, 0);
        if (rc) return rc;
    }
    rc = rotate_if_full(st, s);
    if (rc) return rc;
    update_next(s);
    if (s->next != before) return load_head(st, s);
    return KMB_OK;
}

/* The stream's state, loading it on first use. *out NULL when the stream does not exist. */
int get_stream(kmb_storage *st, uint64_t id, stream_state **out)
{
    stream_state *s = table_find(st, id);
    if (s) {
        *out = s;
        return st->opts.read_only ? refresh(st, s) : KMB_OK;
    }
    return load_stream(st, id, out);
}

/* ---------------------------------------------------------------- retrying after a failed check */

/* After a rescan of g's [0, end) that stopped at `stop`: the note, and damage if records
 * no longer scan (the index had `before` entries). */
static int rebuilt(kmb_storage *st, stream_state *s, seg_state *g, size_t before, uint64_t end,
                   uint64_t stop, const char *why)
{
    char path[KMB_PATH_MAX];
    describe(st, s->id, g->number, path, sizeof(path));
    note(st, "index of %s %s; rebuilt it by scanning", path, why);
    if (stop < end || g->ix.count != before) {
        uint64_t offset = g->base + g->ix.count;
        g->size = stop < end ? stop : end;
        mark_damaged(st, s, g, offset, stop, "corrupted record");
    }
    return KMB_OK;
}

/*
 * Rebuild g's index by scanning its valid bytes [0, g->size), as a bad index at open is;
 * records that no longer scan are damage. `why` completes the note. The scan's error, if it
 * fails (the index is then whatever it found).
 */
static int rebuild_by_scan(kmb_storage *st, stream_state *s, seg_state *g, const char *why)
{
    size_t before = g->ix.count;
    uint64_t end = g->size;
    kmb_index_truncate(&g->ix, 0);
    g->index_verified = 1;
    g->index_dirty = 1;
    int base_known = 1;
    uint64_t stop;
    int rc = scan(st, s, g, 0, end, &base_known, &stop);
    if (rc) return rc;
    return rebuilt(st, s, g, before, end, stop, why);
}

int index_complete(kmb_storage *st, stream_state *s, seg_state *g)
{
    if (g->ix.lo == 0) return KMB_OK;
    int rc = read_whole_index(st, s, g);
    if (rc == KMB_OK || rc == KMB_ENOMEM) return rc;
    /*
     * Damaged, replaced, shortened, removed or unreadable since the partial load: a bad
     * index, rebuilt by scanning as at open. The scan fills a new index; if it fails (an
     * I/O error on the segment), the partial one is kept as it was and the error returned,
     * so that the operation fails without changing anything and a later one tries again.
     */
    kmb_index partial = g->ix;
    int verified = g->index_verified, dirty = g->index_dirty;
    kmb_index_init(&g->ix);
    g->index_verified = 1;
    g->index_dirty = 1;
    int base_known = 1;
    uint64_t stop;
    rc = scan(st, s, g, 0, g->size, &base_known, &stop);
    if (rc) {
        kmb_index_free(&g->ix);
        g->ix = partial;
        g->index_verified = verified;
        g->index_dirty = dirty;
        return rc;
    }
    rc = rebuilt(st, s, g, partial.count, g->size, stop, "changed or was damaged since open");
    kmb_index_free(&partial);
    update_next(s);
    return rc;
}

int index_need_range(kmb_storage *st, stream_state *s, uint64_t from, uint64_t to)
{
    uint64_t lo = from ? from - 1 : 0; /* and the record before: its hash links `from` */
    for (size_t k = 0; k < s->nsegs; k++) {
        seg_state *g = &s->segs[k];
        uint64_t n = seg_records(g);
        if (n == 0 || lo >= g->base + n || to <= g->base) continue;
        uint64_t a = lo > g->base ? lo - g->base : 0;
        uint64_t b = to - g->base < n ? to - g->base + 1 : n; /* rec_end: entry i+1 */
        int rc = index_need(st, s, g, (size_t)a, (size_t)b);
        if (rc) return rc;
    }
    return KMB_OK;
}

int index_complete_all(kmb_storage *st, stream_state *s)
{
    for (size_t k = 0; k < s->nsegs; k++) {
        int rc = index_complete(st, s, &s->segs[k]);
        if (rc) return rc;
    }
    return KMB_OK;
}

/*
 * After a check failed on segment g: if its index came from disk unconfirmed, rebuild it by
 * scanning and return 1 (the caller retries; damage the scan finds is marked). Otherwise
 * return 0 and change nothing.
 */
static int rescan_after_failure(kmb_storage *st, stream_state *s, seg_state *g)
{
    if (g->index_verified) return 0;
    const kmb_error *e = kmb_error_last();
    int code = e->code;
    if (code != KMB_ECORRUPT) return 0;
    if (rebuild_by_scan(st, s, g, "pointed at bad records") != KMB_OK) return 0;
    return 1;
}

/*
 * A check failed (the thread's error says where). Rebuild the failing segment's index if it
 * came unconfirmed from storage and return 1 so the caller retries; otherwise record the
 * damage and return 0. The error is preserved either way.
 */
int retry_after_failure(kmb_storage *st, stream_state *s, uint64_t fallback_offset)
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
