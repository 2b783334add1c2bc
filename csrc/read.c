/*
 * read.c — reading records back: the chunked reader behind read, read_each and verify.
 *
 * Reads and verify go through one reader: records are read a chunk at a time (at most
 * READ_CHUNK bytes, at least one record) into one of three reused buffers, checked (CRC,
 * offset), hashed, linked (each record's prev_hash against the hash of the record before
 * it), and only then delivered. Each record's hash depends only on its own bytes (its
 * stored prev_hash is what the link check compares), so checking and hashing are shared
 * between this thread and the pool's threads (read_threads - 1 of them), block by block;
 * only the comparisons, made here once the chunk is done, follow the chain: a chunk's
 * first record links to the previous chunk's last hash (r->running), so the first bad
 * offset is the inline reader's whatever thread hashed what.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* ---------------------------------------------------------------- checks */

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
    kmb_error *e = error_at(s->id, path);
    error_set_position(e, offset, pos);
    error_set_hashes(e, want, actual);
    return KMB_ECHAIN;
}

/* Read the bytes of records [i0, i1) of g into buf. */
static int read_range(kmb_storage *st, stream_state *s, seg_state *g, size_t i0, size_t i1,
                      uint8_t *buf)
{
    uint64_t start = seg_pos(g, i0), end = rec_end(g, i1 - 1);
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
    uint64_t pos = seg_pos(g, i);
    kmb_record rec;
    size_t size;
    int rc = read_record_at(st, s->id, g, pos, rec_end(g, i), &rec, &size);
    if (rc == KMB_EIO || rc == KMB_ENOMEM) return rc;
    if (rc || rec.offset != offset - 1)
        return corrupt(st, s->id, g->number, offset - 1, pos, "record fails its CRC check");
    kmb_record_hash(out, &rec);
    return KMB_OK;
}


/* ---------------------------------------------------------------- the chunked reader */

typedef struct reader {
    kmb_storage *st;
    stream_state *s;
    uint64_t offset;                 /* next record to read */
    size_t left;                     /* records still to read */
    uint8_t running[KMB_HASH_SIZE];  /* hash of the record before the next chunk to link */
    int have_running;
    int pool_ok;                     /* large enough for the pool (read_threads >= 2) */
    int use_worker;                  /* the pool shares the chunks (not backing off) */
    int fresh;                       /* the pool was just (re)joined: next chunk not judged */
    int busy;                        /* the worker has a job of this reader */
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
        kmb_record *recs = realloc(c->recs, n * sizeof(*recs));
        if (!recs) return oom();
        c->recs = recs;
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
void trim_chunks(kmb_storage *st)
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

void free_chunks(kmb_storage *st)
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
    uint64_t start = seg_pos(g, i0);
    size_t i1 = i0 + 1;
    while (i1 < lim && rec_end(g, i1) - start <= st->read_chunk) i1++;
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
    uint64_t from = seg_pos(g, first);
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

static kmb_hash_job chunk_job(const reader *r, rchunk *c)
{
    kmb_hash_job j;
    memset(&j, 0, sizeof(j));
    j.count = c->count;
    j.out = c->hash;
    seg_range_check(c->g, c->i0, c->count);
    j.pos = c->g->ix.positions + c->i0;
    j.end = rec_end(c->g, c->i0 + c->count - 1);
    j.first = c->g->base + c->i0;
    j.buf = c->buf + c->skip;
    j.recs = c->recs;
    j.status = c->status;
    /* Claim about 8 KiB of records at a time: few atomic operations for small records. */
    uint64_t bytes = j.end - j.pos[0];
    j.block = (size_t)((UINT64_C(8192) * c->count) / (bytes + 1)) + 1;
    if (r->st->par_block) j.block = r->st->par_block;
    return j;
}

/*
 * Hand chunk c's checking and hashing to the worker (large reads only). A read that went
 * on alone after the pool stalled takes it back once the backoff is over.
 */
static void chunk_start(reader *r, rchunk *c)
{
    if (!r->use_worker && r->pool_ok) {
        r->use_worker = kmb_hasher_ready(&r->st->worker);
        r->fresh = 1;
    }
    if (!r->use_worker) return;
    kmb_hash_job job = chunk_job(r, c);
    kmb_hasher_post(&r->st->worker, &job);
    r->busy = 1;
}

/* Check and hash chunk c: claim blocks alongside the worker, or do it all here. */
static void chunk_finish(reader *r, rchunk *c)
{
    kmb_hash_job job = chunk_job(r, c);
    if (!r->busy) {
        kmb_hash_job_run(&job, NULL);
        return;
    }
    kmb_hasher *w = &r->st->worker;
    if (r->st->helpers_only) { /* tests: the pool's threads check every record */
        kmb_hasher_wait(w, c->count);
        r->busy = 0;
        return;
    }
    size_t mine = kmb_hash_job_run(&job, w);
    uint64_t waited = kmb_hasher_wait(w, c->count);
    r->busy = 0;
    /*
     * A worker that did under a quarter of a chunk while this thread waited for it may
     * have no CPU of its own (a busy machine); one that kept it waiting for a stall's
     * length surely has none. After a stall, or a second slow chunk before a good streak,
     * go on alone for a while (kmb_hasher_backoff: 8 ms at first, twice as long while
     * trouble repeats), then try the pool again. Not judged on the first chunk after the
     * pool was (re)joined, which the worker may have woken up late for.
     */
    int judged = !r->fresh;
    r->fresh = 0;
    int slow = judged && waited > KMB_HASHER_SPIN_NS / 4 && (c->count - mine) * 4 < c->count;
    int stalled = kmb_hasher_stalled(w, waited); /* a stall starts a backoff itself */
    if (!stalled && slow) stalled = kmb_hasher_slow(w);
    if (stalled)
        r->use_worker = 0;
    else if (judged && !slow)
        kmb_hasher_recovered(w);
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
        uint64_t pos = seg_pos(g, c->i0 + j);
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
    r->use_worker = pool_use(st, bytes);
    r->pool_ok = st->opts.read_threads >= 2 && bytes >= st->par_min;
    r->fresh = 1;
}

/* ---------------------------------------------------------------- read and read_each */

void kmb_read_result_free(kmb_read_result *r)
{
    if (!r) return;
    free(r->records);
    free(r->buffer);
    memset(r, 0, sizeof(*r));
}

/* Plan a read: how many records from `from` (at most max_records), and how many bytes
 * they take. */
static int plan_read(kmb_storage *st, stream_state *s, uint64_t from, size_t max_records,
                     uint64_t max_bytes, size_t *n_out, uint64_t *bytes_out)
{
    uint64_t sum = 0, bytes = 0, offset = from;
    size_t n = 0;
    long k = from < s->next ? locate(s, from) : (long)s->nsegs - 1;
    if (k < 0) return unreachable(st, s, from);
    while (sum < max_bytes && n < max_records) {
        /* Reaching known corruption is an error, even when no valid record follows it. */
        if (s->damaged && !s->tamper && offset == s->damage_offset) return damaged_error(st, s);
        if (offset >= s->next) {
            /* Damage at the end hides how many records follow: reaching it is an error. */
            if (s->segs[s->nsegs - 1].damaged) return damaged_error(st, s);
            break;
        }
        seg_state *g = &s->segs[k];
        if (offset < g->base || offset - g->base >= seg_records(g)) {
            /* Past this segment's valid records: the next segment must continue here. */
            if (g->damaged) return damaged_error(st, s);
            if ((size_t)k + 1 >= s->nsegs) break;
            k++;
            if (s->segs[k].base != offset && seg_records(&s->segs[k]) > 0)
                return unreachable(st, s, offset);
            continue;
        }
        size_t i = (size_t)(offset - g->base);
        /* A partial index (index_need): the entries read, and for the first record the
         * one before it (its hash links the read), must be loaded. Completing the index
         * may rebuild it (a bad one): then look at the segment again. */
        if (!seg_loaded(g, offset == from && i ? i - 1 : i, i + 2 < g->ix.count ? i + 2 : g->ix.count)) {
            int rc = index_complete(st, s, g);
            if (rc) return rc;
            continue;
        }
        uint64_t size = rec_end(g, i) - seg_pos(g, i);
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

int read_n_locked(kmb_storage *st, stream_state *s, uint64_t from, size_t max_records,
                  uint64_t max_bytes, kmb_read_fn fn, void *ctx)
{
    int rc = KMB_OK;
    if (max_bytes == 0 || max_records == 0) return KMB_OK;
    if (from >= s->next && !s->segs[s->nsegs - 1].damaged &&
        !(s->damaged && !s->tamper && from == s->damage_offset))
        return KMB_OK;
    for (;;) {
        int was_damaged = s->damaged;
        size_t n = 0;
        uint64_t bytes = 0;
        reader r;
        rc = plan_read(st, s, from, max_records, max_bytes, &n, &bytes);
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
        if (max_records != SIZE_MAX) max_records -= r.delivered;
        if (max_bytes != KMB_NO_LIMIT) max_bytes -= r.delivered_payload;
    }
    return rc;
}

int read_each_locked(kmb_storage *st, stream_state *s, uint64_t from, uint64_t max_bytes,
                     kmb_read_fn fn, void *ctx)
{
    return read_n_locked(st, s, from, SIZE_MAX, max_bytes, fn, ctx);
}

int kmb_storage_read_each(kmb_storage *st, uint64_t stream, uint64_t from, uint64_t max_bytes,
                          kmb_read_fn fn, void *ctx)
{
    int rc = enter(st);
    if (rc) return rc;
    stream_state *s;
    rc = get_stream(st, stream, &s);
    if (rc == KMB_OK && s) rc = read_each_locked(st, s, from, max_bytes, fn, ctx);
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
        kmb_record *rec = &out->records[out->count++];
        *rec = recs[j];
        rec->payload = NULL; /* set once the buffer stops moving */
        if (rec->length) memcpy(out->buffer + out->payload_bytes, recs[j].payload, rec->length);
        out->payload_bytes += rec->length;
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

/* The stream's head (`actual`, NULL when empty) is not the caller's trusted `expected`. */
static int head_mismatch(uint64_t stream, const uint8_t *expected, const uint8_t *actual,
                         uint64_t next)
{
    kmb_error_set(KMB_ECHAIN, 0,
                  "stream %" PRIu64 ": head hash does not match the trusted head (%" PRIu64
                  " records); records were altered, removed or added since that head was "
                  "recorded",
                  stream, next);
    kmb_error *e = error_at(stream, NULL);
    if (next > 0) {
        e->has_offset = 1;
        e->offset = next - 1;
    }
    error_set_hashes(e, expected, actual);
    return KMB_ECHAIN;
}

/* One pass of verify over a loaded, undamaged stream; *head_out is the computed head. */
int verify_segment(kmb_storage *st, stream_state *s, seg_state *g,
                   uint8_t running[KMB_HASH_SIZE])
{
    reader r;
    reader_init(&r, st, s, g->base, g->ix.count, g->size, NULL, NULL);
    memcpy(r.running, running, KMB_HASH_SIZE);
    r.have_running = 1;
    int rc = reader_run(&r);
    if (rc == KMB_OK) memcpy(running, r.running, KMB_HASH_SIZE);
    return rc;
}

static int verify_once(kmb_storage *st, stream_state *s, uint8_t head_out[KMB_HASH_SIZE])
{
    uint8_t running[KMB_HASH_SIZE] = {0};
    uint64_t offset = 0;
    for (size_t k = 0; k < s->nsegs; k++) {
        seg_state *g = &s->segs[k];
        if (seg_records(g) == 0) continue;
        if (g->base != offset)
            return corrupt(st, s->id, g->number, offset, 0,
                           "segment does not continue the previous one");
        int rc = verify_segment(st, s, g, running);
        if (rc) return rc;
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
        if (expected_head) rc = head_mismatch(stream, expected_head, NULL, 0);
        goto out;
    }
    rc = index_complete_all(st, s); /* verify reads every record */
    if (rc) goto out;
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
        rc = head_mismatch(stream, expected_head, head, s->next);
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
