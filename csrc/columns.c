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
#include <sys/mman.h>

#include "engine.h"
#include "kimberlite/columns.h"

/*
 * Returned by the callback once the planned records are in (not an error code, so never
 * mistaken for one): read_each_locked stops at the callback's first non-zero return and
 * returns that value as it is.
 */
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

/*
 * Column buffers of KMB_COLUMN_MMAP_MIN bytes or more are mapped, not malloc'd: a consumer
 * streaming batches frees each one in whichever thread drops it last, and glibc keeps
 * freed heap chunks of that size in its per-thread arenas (its mmap threshold grows after
 * the first large free), so the process would grow by a few batches per thread. A mapping
 * goes back to the system at once, and is page-aligned (Arrow asks for 64 bytes).
 */
static void *col_alloc(size_t bytes, int zero)
{
    if (bytes >= KMB_COLUMN_MMAP_MIN) {
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return NULL; /* zero-filled */
#ifdef MADV_HUGEPAGE
        /* Filled once, front to back: huge pages take one fault per 2 MiB, not per 4 KiB
         * (a hint; where transparent huge pages are off it changes nothing). */
        if (bytes >= ((size_t)2 << 20)) (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
        return p;
    }
    if (bytes == 0) bytes = 1; /* an empty column is still a buffer */
    return zero ? calloc(1, bytes) : malloc(bytes);
}

void kmb_columns_release(void *buf, size_t bytes)
{
    if (!buf) return;
    if (bytes >= KMB_COLUMN_MMAP_MIN)
        munmap(buf, bytes);
    else
        free(buf);
}

size_t kmb_columns_payload_offsets_size(const kmb_columns *c)
{
    return (c->count + 1) * (c->large ? sizeof(int64_t) : sizeof(int32_t));
}

void kmb_columns_free(kmb_columns *c)
{
    if (!c) return;
    kmb_columns_release(c->payload, (size_t)c->payload_planned);
    kmb_columns_release(c->payload_offsets, (c->planned + 1) * (c->large ? 8 : 4));
    kmb_columns_release(c->offsets, c->planned * sizeof(uint64_t));
    kmb_columns_release(c->hashes, (c->planned + 1) * KMB_HASH_SIZE);
    memset(c, 0, sizeof(*c));
}

/*
 * How many records from `from` (below `stop`, within the max_bytes rule of read_from) and
 * their payload bytes, from the index. Known damage in the range is reported as a read
 * reaching it would; anything else wrong is the reader's to find.
 */
static int plan(kmb_storage *st, stream_state *s, uint64_t from, uint64_t stop,
                uint64_t max_bytes, size_t *n_out, uint64_t *bytes_out)
{
    uint64_t sum = 0, offset = from;
    size_t n = 0;
    while (offset < stop && sum < max_bytes) {
        if (s->damaged && !s->tamper && offset == s->damage_offset) return damaged_error(st, s);
        long k = locate(s, offset);
        if (k < 0) return unreachable(st, s, offset);
        const seg_state *g = &s->segs[k];
        for (size_t i = (size_t)(offset - g->base); i < g->ix.count; i++) {
            if (offset >= stop || sum >= max_bytes) break;
            if (s->damaged && !s->tamper && offset == s->damage_offset) break;
            uint64_t len = rec_end(g, i) - seg_pos(g, i) - KMB_RECORD_OVERHEAD;
            sum += len;
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

static int allocate(kmb_columns *c, unsigned flags, size_t n, uint64_t bytes)
{
    c->planned = n;
    c->payload_planned = bytes;
    if (flags & KMB_COLUMN_PAYLOAD) {
        c->large = (flags & KMB_COLUMN_LARGE) || bytes > INT32_MAX;
        size_t w = c->large ? sizeof(int64_t) : sizeof(int32_t);
        c->payload = col_alloc((size_t)bytes, 0);
        if (!c->payload) return oom();
        c->payload_offsets = col_alloc((n + 1) * w, 1);
        if (!c->payload_offsets) return oom();
    }
    if (flags & KMB_COLUMN_OFFSET) {
        c->offsets = col_alloc(n * sizeof(uint64_t), 0);
        if (!c->offsets) return oom();
    }
    if (flags & KMB_COLUMN_HASHES) {
        c->hashes = col_alloc((n + 1) * KMB_HASH_SIZE, 0);
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
    rc = index_need_range(st, s, from, stop); /* plan reads the index below */
    if (rc) goto out;
    if (stop > s->next) {
        /* Damage at the end hides how many records follow (as read_from): a range past
         * the known end reaches it, and is not cut short quietly. */
        if ((s->damaged && !s->tamper && s->damage_offset >= s->next) ||
            (s->nsegs > 0 && s->segs[s->nsegs - 1].damaged)) {
            rc = damaged_error(st, s);
            goto out;
        }
        stop = s->next;
    }
    size_t n = 0;
    uint64_t bytes = 0;
    rc = plan(st, s, from, stop, max_bytes, &n, &bytes);
    if (rc || n == 0) goto out;
    rc = allocate(out, flags, n, bytes);
    if (rc) goto out;
    fill f = {out, n, 0, bytes};
    /* Exactly these n records: the reader plans nothing past them, so damage after the
     * range (or a long run of empty records) is not the read's concern. */
    rc = read_n_locked(st, s, from, n, KMB_NO_LIMIT, fill_columns, &f);
    if (rc == FILLED) rc = KMB_OK;
    if (rc == KMB_OK && (out->count < n || f.at != bytes))
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
        b[k].bytes = g->ix.count ? g->size - seg_pos(g, 0) : 0;
    }
    *out = b;
    *count = s->nsegs;
out:
    leave(st);
    return rc;
}
