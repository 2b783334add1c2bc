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
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"

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


/*
 * Read and check the single record at byte `pos` of segment g (valid bytes end at `end`).
 * On KMB_OK *out borrows st->rbuf. Returns KMB_ECORRUPT/KMB_EEOF (no context) when the
 * bytes there are not a whole, valid record, KMB_EIO on read errors.
 */
int read_record_at(kmb_storage *st, uint64_t stream, const seg_state *g, uint64_t pos,
                          uint64_t end, kmb_record *out, size_t *size_out)
{
    if (pos >= end || end - pos < KMB_RECORD_OVERHEAD)
        return kmb_error_set(KMB_EEOF, 0, "segment ends inside a record");
    uint8_t hdr[KMB_HEADER_SIZE];
    size_t n = 0;
    int rc = st->backend->read(st->backend, stream, g->number, pos, hdr, sizeof(hdr), &n);
    if (rc) return with_stream(st, rc, stream, g->number);
    if (n < sizeof(hdr)) return kmb_error_set(KMB_EEOF, 0, "segment ends inside a record");
    uint64_t total = kmb_rec_size_of(hdr);
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
        uint64_t total = kmb_rec_size_of(p);
        if (total > end - pos) break;
        rc = window_get(st, s->id, g->number, pos, (size_t)total, end, &p);
        if (rc == KMB_EEOF) break;
        if (rc) return rc;
        kmb_record rec;
        size_t used;
        if (!kmb_record_probe(&rec, &used, p, (size_t)total)) break;
        if (!*base_known && g->ix.count == 0) {
            g->base = rec.offset; /* after damage upstream: take the segment's own word */
            *base_known = 1;
        }
        if (rec.offset != g->base + g->ix.count) break;
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
        uint64_t off = kmb_rec_offset_of(p);
        uint64_t total = kmb_rec_size_of(p);
        if (total > end - q) continue;
        if (off < expected || off - expected > span) continue;
        rc = window_get(st, stream, g->number, q, (size_t)total, end, &p);
        if (rc == KMB_EEOF) continue;
        if (rc) return rc;
        kmb_record rec;
        size_t used;
        if (kmb_record_probe(&rec, &used, p, (size_t)total)) {
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
    kmb_record rec;
    size_t size;
    /* The first and last entries must hold records with the offsets the index implies. */
    if (read_record_at(st, s->id, g, pos[0], disk_size, &rec, &size) != KMB_OK) return 0;
    if (*base_known && rec.offset != g->base) return 0;
    uint64_t base = rec.offset;
    if (read_record_at(st, s->id, g, pos[n - 1], disk_size, &rec, &size) != KMB_OK) return 0;
    if (rec.offset != base + n - 1) return 0;
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

/*
 * Segment g's stored index, decoded and checked by index.c into g->ix. The backend reads no
 * more than the index of a segment of disk_size bytes could take (one entry per
 * KMB_RECORD_OVERHEAD bytes), so a huge or hostile .idx costs nothing: it is refused
 * (KMB_EINDEX) and rebuilt by scanning.
 */
static int load_stored_index(kmb_storage *st, stream_state *s, seg_state *g, uint64_t disk_size)
{
    uint8_t *data = NULL;
    size_t len = 0;
    uint64_t max_len = kmb_index_encoded_size(disk_size / KMB_RECORD_OVERHEAD);
    int rc = st->backend->load_index(st->backend, s->id, g->number, max_len, &data, &len);
    if (rc == KMB_OK && len > max_len)
        rc = kmb_error_set(KMB_EINDEX, 0, "index larger than its segment could need");
    if (rc == KMB_OK) rc = kmb_index_decode(&g->ix, data, len);
    free(data);
    return rc;
}

/* Load segment `number` of s (appending it to s->segs). */
static int load_segment(kmb_storage *st, stream_state *s, uint32_t number, int active)
{
    int base_known = 1;
    uint64_t base = 0;
    if (s->nsegs) {
        seg_state *prev = &s->segs[s->nsegs - 1];
        base = prev->base + seg_records(prev);
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
    rc = load_stored_index(st, s, g, disk_size);
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
        if (seg_records(g) == 0) continue;
        size_t i = g->ix.count - 1;
        kmb_record rec;
        size_t size;
        int rc = read_record_at(st, s->id, g, g->ix.positions[i], g->size, &rec, &size);
        if (rc == KMB_EIO || rc == KMB_ENOMEM) return rc;
        if (rc) {
            mark_damaged(st, s, g, g->base + i, g->ix.positions[i], "corrupted last record");
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

/* Load a stream from the backend. *out is NULL (and KMB_OK) when the stream is absent. */
static int load_stream(kmb_storage *st, uint64_t id, stream_state **out)
{
    *out = NULL;
    uint32_t *nums = NULL;
    size_t n = 0;
    int rc = list_segments_settled(st, id, &nums, &n);
    if (rc) return rc;
    if (n == 0) return KMB_OK;
    stream_state *s = stream_new(id, 1); /* as for its segments: made by an earlier run */
    if (!s) {
        free(nums);
        return KMB_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (nums[i] != i) {
            /* A missing segment: records are missing. Keep what precedes it. */
            if (s->nsegs) {
                seg_state *g = active_seg(s);
                mark_damaged(st, s, g, g->base + seg_records(g), g->size, "missing segment file");
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
    size_t before = g->ix.count;
    uint64_t end = g->size;
    kmb_index_truncate(&g->ix, 0);
    g->index_verified = 1;
    g->index_dirty = 1;
    int base_known = 1;
    uint64_t stop;
    int rc = scan(st, s, g, 0, end, &base_known, &stop);
    if (rc) return 0;
    char path[KMB_PATH_MAX];
    describe(st, s->id, g->number, path, sizeof(path));
    note(st, "index of %s pointed at bad records; rebuilt it by scanning", path);
    if (stop < end || g->ix.count != before) {
        uint64_t offset = g->base + g->ix.count;
        g->size = stop < end ? stop : end;
        mark_damaged(st, s, g, offset, stop, "corrupted record");
    }
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
