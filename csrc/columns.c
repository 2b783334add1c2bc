/*
 * columns.c — verified reads laid out as columns (kimberlite/columns.h): the Arrow path of
 * the binding, range verification and segment bounds for kimberlite.dask.
 *
 * Nothing here reads or checks a record itself: every record comes from read.c's verified
 * reader (read_each_locked), which hands over chunks of checked records. This file plans
 * the range first — how many records, how many payload bytes, from the index in memory —
 * so that each column is allocated once at its final size and filled by a single copy.
 */
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "kimberlite/columns.h"

/* Returned by the callback once the planned records are in (not an error code). */
#define FILLED 1

typedef struct fill {
    kmb_columns *out;
    size_t want;          /* records planned */
    uint64_t at;          /* payload bytes copied so far */
    uint64_t cap;         /* payload bytes planned */
} fill;

static int fill_columns(void *ctx, const kmb_record *recs, size_t n)
{
    fill *f = ctx;
    kmb_columns *c = f->out;
    for (size_t j = 0; j < n; j++) {
        if (c->count == f->want) return FILLED;
        const kmb_record *r = &recs[j];
        size_t i = c->count;
        if (i == 0) memcpy(c->first_prev, r->prev_hash, KMB_HASH_SIZE);
        if (c->payload) {
            if (r->length > f->cap - f->at) /* the planned sizes no longer hold */
                return kmb_error_set(KMB_ERROR, 0,
                                     "stream changed while it was read; read it again");
            memcpy(c->payload + f->at, r->payload, r->length);
        }
        f->at += r->length;
        if (c->payload_offsets) {
            if (c->large)
                ((int64_t *)c->payload_offsets)[i + 1] = (int64_t)f->at;
            else
                ((int32_t *)c->payload_offsets)[i + 1] = (int32_t)f->at;
        }
        if (c->offsets) c->offsets[i] = r->offset;
        if (c->hashes) memcpy(c->hashes + i * KMB_HASH_SIZE, r->prev_hash, KMB_HASH_SIZE);
        c->count++;
        if (c->count == f->want) kmb_record_hash(c->last_hash, r);
    }
    return c->count == f->want ? FILLED : KMB_OK;
}

void kmb_columns_free(kmb_columns *c)
{
    if (!c) return;
    free(c->payload);
    free(c->payload_offsets);
    free(c->offsets);
    free(c->hashes);
    memset(c, 0, sizeof(*c));
}

/*
 * How many records from `from` (below `stop`, within the max_bytes rule of read_from) and
 * their payload bytes, from the index. Known damage in the range is reported as a read
 * reaching it would; anything else wrong is the reader's to find.
 */
static int plan(kmb_storage *st, stream_state *s, uint64_t from, uint64_t stop,
                uint64_t max_bytes, size_t *n_out, uint64_t *bytes_out, uint32_t *last_len)
{
    uint64_t sum = 0, offset = from;
    size_t n = 0;
    *last_len = 0;
    while (offset < stop && sum < max_bytes) {
        if (s->damaged && !s->tamper && offset == s->damage_offset) return damaged_error(st, s);
        long k = locate(s, offset);
        if (k < 0) return unreachable(st, s, offset);
        const seg_state *g = &s->segs[k];
        for (size_t i = (size_t)(offset - g->base); i < g->ix.count; i++) {
            if (offset >= stop || sum >= max_bytes) break;
            if (s->damaged && !s->tamper && offset == s->damage_offset) break;
            uint64_t len = rec_end(g, i) - g->ix.positions[i] - KMB_RECORD_OVERHEAD;
            sum += len;
            *last_len = (uint32_t)len;
            n++;
            offset++;
        }
    }
    if (sum > SIZE_MAX / 2 || n > SIZE_MAX / (2 * KMB_HASH_SIZE))
        return kmb_error_set(KMB_ENOMEM, 0, "read too large; read it in chunks (max_bytes)");
    *n_out = n;
    *bytes_out = sum;
    return KMB_OK;
}

/* malloc at least 1 byte, so that an empty column is still a buffer. */
static void *alloc(size_t bytes) { return malloc(bytes ? bytes : 1); }

static int allocate(kmb_columns *c, unsigned flags, size_t n, uint64_t bytes)
{
    if (flags & KMB_COLUMN_PAYLOAD) {
        c->large = (flags & KMB_COLUMN_LARGE) || bytes > INT32_MAX;
        size_t w = c->large ? sizeof(int64_t) : sizeof(int32_t);
        c->payload = alloc((size_t)bytes);
        c->payload_offsets = calloc(n + 1, w);
        if (!c->payload || !c->payload_offsets) return oom();
    }
    if (flags & KMB_COLUMN_OFFSET) {
        c->offsets = alloc(n * sizeof(uint64_t));
        if (!c->offsets) return oom();
    }
    if (flags & KMB_COLUMN_HASHES) {
        c->hashes = alloc((n + 1) * KMB_HASH_SIZE);
        if (!c->hashes) return oom();
    }
    return KMB_OK;
}

int kmb_storage_read_columns(kmb_storage *st, uint64_t stream, uint64_t from, uint64_t stop,
                             uint64_t max_bytes, unsigned flags, kmb_columns *out)
{
    memset(out, 0, sizeof(*out));
    out->first = from;
    if (stop < from)
        return kmb_error_set(KMB_EINVAL, 0, "stop (%llu) is before start (%llu)",
                             (unsigned long long)stop, (unsigned long long)from);
    int rc = enter(st);
    if (rc) return rc;
    stream_state *s;
    rc = get_stream(st, stream, &s);
    if (rc || !s) goto out;
    if (stop > s->next) stop = s->next;
    size_t n = 0;
    uint64_t bytes = 0;
    uint32_t last_len = 0;
    rc = plan(st, s, from, stop, max_bytes, &n, &bytes, &last_len);
    if (rc || n == 0) goto out;
    rc = allocate(out, flags, n, bytes);
    if (rc) goto out;
    fill f = {out, n, 0, bytes};
    /*
     * The reader's own budget: exactly these n records when the last has a payload; when it
     * is empty, one byte more (the reader then plans on past the range, and the callback
     * stops it once the n records are in).
     */
    rc = read_each_locked(st, s, from, last_len ? bytes : bytes + 1, fill_columns, &f);
    if (rc == FILLED) rc = KMB_OK;
    if (rc == KMB_OK && out->count < n)
        rc = kmb_error_set(KMB_ERROR, 0, "stream changed while it was read; read it again");
    if (rc == KMB_OK) {
        out->payload_bytes = f.at;
        if (out->hashes) memcpy(out->hashes + n * KMB_HASH_SIZE, out->last_hash, KMB_HASH_SIZE);
    }
out:
    trim_chunks(st);
    leave(st);
    if (rc) kmb_columns_free(out);
    return rc;
}

int kmb_storage_verify_range(kmb_storage *st, uint64_t stream, uint64_t from, uint64_t stop,
                             uint64_t *count_out, uint8_t first_prev[KMB_HASH_SIZE],
                             uint8_t last_hash[KMB_HASH_SIZE])
{
    kmb_columns c;
    int rc = kmb_storage_read_columns(st, stream, from, stop, KMB_NO_LIMIT, 0, &c);
    *count_out = rc ? 0 : c.count;
    memcpy(first_prev, c.first_prev, KMB_HASH_SIZE);
    memcpy(last_hash, c.last_hash, KMB_HASH_SIZE);
    kmb_columns_free(&c);
    return rc;
}

int kmb_storage_segment_bounds(kmb_storage *st, uint64_t stream, kmb_segment_bounds **out,
                               size_t *count)
{
    *out = NULL;
    *count = 0;
    int rc = enter(st);
    if (rc) return rc;
    stream_state *s;
    rc = get_stream(st, stream, &s);
    if (rc || !s || s->nsegs == 0) goto out;
    kmb_segment_bounds *b = malloc(s->nsegs * sizeof(*b));
    if (!b) {
        rc = oom();
        goto out;
    }
    for (size_t k = 0; k < s->nsegs; k++) {
        const seg_state *g = &s->segs[k];
        b[k].number = g->number;
        b[k].first = g->base;
        b[k].next = g->base + seg_records(g);
        b[k].bytes = g->ix.count ? g->size - g->ix.positions[0] : 0;
    }
    *out = b;
    *count = s->nsegs;
out:
    leave(st);
    return rc;
}
