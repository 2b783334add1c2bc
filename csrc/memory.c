/*
 * memory.c — the memory backend: segments and indexes as heap buffers.
 *
 * It implements the same segment-store interface as the disk backend, so the engine above
 * (storage.c) gives MemoryStorage exactly the records, hashes, offsets, segment accounting
 * and errors of Storage. Quarantined tails are kept in memory too: nothing is deleted.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kimberlite/errors.h"
#include "kimberlite/sys/backend.h"
#include "kimberlite/index.h"
#include "kimberlite/layout.h"

typedef struct mem_buf {
    uint8_t *data;
    size_t len, cap;
} mem_buf;

typedef struct mem_segment {
    mem_buf bytes;
    mem_buf index; /* the stored index bytes (.idx format), decoded by the engine */
    int has_index;
    unsigned quarantines; /* quarantine objects made from this segment */
} mem_segment;

typedef struct mem_stream {
    uint64_t id;
    mem_segment *segs;
    size_t nsegs, cap;
    mem_buf *torn; /* quarantined tails, in order */
    size_t ntorn;
    mem_buf checkpoint; /* the latest signed checkpoint's bytes (tree.c) */
    int has_checkpoint;
    mem_buf tree; /* the tree data (tree.c); has_tree: saved at least once */
    int has_tree;
} mem_stream;

typedef struct mem_backend {
    kmb_backend base;
    mem_stream *streams; /* sorted by id */
    size_t n, cap;
} mem_backend;

static mem_backend *M(kmb_backend *b) { return (mem_backend *)b; }

static int oom(void) { return kmb_error_set(KMB_ENOMEM, 0, "out of memory in the memory backend"); }

/* Index of the first stream with id >= `id` (binary search). */
static size_t lower_bound(mem_backend *m, uint64_t id)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->streams[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static mem_stream *find_stream(mem_backend *m, uint64_t id)
{
    size_t i = lower_bound(m, id);
    return (i < m->n && m->streams[i].id == id) ? &m->streams[i] : NULL;
}

static int missing(kmb_backend *b, uint64_t stream, uint32_t seg)
{
    char name[64];
    b->describe(b, stream, seg, name, sizeof(name));
    return kmb_error_set(KMB_ENOTFOUND, 0, "no segment %s", name);
}

static mem_segment *find_segment(mem_backend *m, uint64_t stream, uint32_t seg)
{
    mem_stream *s = find_stream(m, stream);
    return (s && seg < s->nsegs) ? &s->segs[seg] : NULL;
}

static int mem_list_streams(kmb_backend *b, uint64_t **out, size_t *count)
{
    mem_backend *m = M(b);
    *out = NULL;
    *count = 0;
    if (m->n == 0) return KMB_OK;
    uint64_t *ids = malloc(m->n * sizeof(*ids));
    if (!ids) return oom();
    for (size_t i = 0; i < m->n; i++) ids[i] = m->streams[i].id;
    *out = ids;
    *count = m->n;
    return KMB_OK;
}

static int mem_list_segments(kmb_backend *b, uint64_t stream, uint32_t **out, size_t *count)
{
    mem_stream *s = find_stream(M(b), stream);
    *out = NULL;
    *count = 0;
    if (!s || s->nsegs == 0) return KMB_OK;
    uint32_t *segs = malloc(s->nsegs * sizeof(*segs));
    if (!segs) return oom();
    for (size_t i = 0; i < s->nsegs; i++) segs[i] = (uint32_t)i;
    *out = segs;
    *count = s->nsegs;
    return KMB_OK;
}

static int mem_segment_exists(kmb_backend *b, uint64_t stream, uint32_t seg, int *exists)
{
    *exists = find_segment(M(b), stream, seg) != NULL;
    return KMB_OK;
}

static int mem_segment_size(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t *out)
{
    mem_segment *s = find_segment(M(b), stream, seg);
    if (!s) return missing(b, stream, seg);
    *out = s->bytes.len;
    return KMB_OK;
}

static int mem_read(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t pos, void *buf,
                    size_t len, size_t *nread)
{
    mem_segment *s = find_segment(M(b), stream, seg);
    if (!s) return missing(b, stream, seg);
    size_t n = 0;
    if (pos < s->bytes.len) {
        n = s->bytes.len - (size_t)pos;
        if (n > len) n = len;
        memcpy(buf, s->bytes.data + pos, n);
    }
    *nread = n;
    return KMB_OK;
}

static int buf_reserve(mem_buf *mb, size_t need)
{
    if (need <= mb->cap) return KMB_OK;
    size_t ncap = mb->cap ? mb->cap : 4096;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2) {
            ncap = need;
            break;
        }
        ncap *= 2;
    }
    uint8_t *p = realloc(mb->data, ncap);
    if (!p) return oom();
    mb->data = p;
    mb->cap = ncap;
    return KMB_OK;
}

static int mem_write(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t pos,
                     const void *buf, size_t len)
{
    mem_segment *s = find_segment(M(b), stream, seg);
    if (!s) return missing(b, stream, seg);
    if (pos > SIZE_MAX - len) return oom();
    size_t end = (size_t)pos + len;
    int rc = buf_reserve(&s->bytes, end);
    if (rc) return rc;
    if (pos > s->bytes.len) memset(s->bytes.data + s->bytes.len, 0, (size_t)pos - s->bytes.len);
    memcpy(s->bytes.data + pos, buf, len);
    if (end > s->bytes.len) s->bytes.len = end;
    return KMB_OK;
}

static int mem_truncate(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t size)
{
    mem_segment *s = find_segment(M(b), stream, seg);
    if (!s) return missing(b, stream, seg);
    if (size < s->bytes.len) {
        s->bytes.len = (size_t)size;
    } else if (size > s->bytes.len) {
        int rc = buf_reserve(&s->bytes, (size_t)size);
        if (rc) return rc;
        memset(s->bytes.data + s->bytes.len, 0, (size_t)size - s->bytes.len);
        s->bytes.len = (size_t)size;
    }
    return KMB_OK;
}

static int mem_sync(kmb_backend *b, uint64_t stream, uint32_t seg)
{
    return find_segment(M(b), stream, seg) ? KMB_OK : missing(b, stream, seg);
}

static int mem_create_segment(kmb_backend *b, uint64_t stream, uint32_t seg, int durable)
{
    (void)durable;
    mem_backend *m = M(b);
    size_t i = lower_bound(m, stream);
    if (i == m->n || m->streams[i].id != stream) {
        if (m->n == m->cap) {
            size_t ncap = m->cap ? m->cap * 2 : 16;
            mem_stream *p = realloc(m->streams, ncap * sizeof(*p));
            if (!p) return oom();
            m->streams = p;
            m->cap = ncap;
        }
        memmove(&m->streams[i + 1], &m->streams[i], (m->n - i) * sizeof(*m->streams));
        memset(&m->streams[i], 0, sizeof(*m->streams));
        m->streams[i].id = stream;
        m->n++;
    }
    mem_stream *s = &m->streams[i];
    if (seg < s->nsegs) return KMB_OK; /* exists: kept as is */
    if (seg != s->nsegs)
        return kmb_error_set(KMB_EINVAL, 0, "memory backend: segment %" PRIu32
                             " of stream %" PRIu64 " created out of order", seg, stream);
    if (s->nsegs == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 4;
        mem_segment *p = realloc(s->segs, ncap * sizeof(*p));
        if (!p) return oom();
        s->segs = p;
        s->cap = ncap;
    }
    memset(&s->segs[s->nsegs], 0, sizeof(*s->segs));
    s->nsegs++;
    return KMB_OK;
}

static int mem_quarantine(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t from,
                          char *name_out, size_t name_cap)
{
    mem_backend *m = M(b);
    mem_stream *st = find_stream(m, stream);
    mem_segment *s = find_segment(m, stream, seg);
    if (!st || !s) return missing(b, stream, seg);
    size_t n = from < s->bytes.len ? s->bytes.len - (size_t)from : 0;
    mem_buf *p = realloc(st->torn, (st->ntorn + 1) * sizeof(*p));
    if (!p) return oom();
    st->torn = p;
    mem_buf *q = &st->torn[st->ntorn];
    memset(q, 0, sizeof(*q));
    if (n) {
        if (buf_reserve(q, n)) return oom();
        memcpy(q->data, s->bytes.data + from, n);
        q->len = n;
    }
    st->ntorn++;
    s->quarantines++;
    if (from < s->bytes.len) s->bytes.len = (size_t)from;
    if (name_out && name_cap)
        snprintf(name_out, name_cap, "memory:%" PRIu64 "/" KMB_SEGMENT_NAME_FORMAT ".torn-%u",
                 stream, seg, s->quarantines);
    return KMB_OK;
}

/* Remove the stream's emptied last segment (repair). */
static int mem_remove_segment(kmb_backend *b, uint64_t stream, uint32_t seg)
{
    mem_stream *st = find_stream(M(b), stream);
    if (!st || seg >= st->nsegs) return missing(b, stream, seg);
    mem_segment *s = &st->segs[seg];
    if (seg + 1 != st->nsegs || s->bytes.len != 0)
        return kmb_error_set(KMB_EINVAL, 0, "memory backend: segment %" PRIu32 " of stream %"
                             PRIu64 " is not an empty last segment; not removed", seg, stream);
    free(s->bytes.data);
    free(s->index.data);
    st->nsegs--;
    return KMB_OK;
}

static int mem_load_index(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t max_len,
                          uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    mem_segment *s = find_segment(M(b), stream, seg);
    if (!s) return missing(b, stream, seg);
    if (!s->has_index) return kmb_error_set(KMB_ENOTFOUND, 0, "no index");
    size_t n = s->index.len;
    if (n > max_len)
        return kmb_error_set(KMB_EINDEX, 0,
                             "index of memory:%" PRIu64 "/segment_%06" PRIu32 ".log is %zu bytes, "
                             "more than its segment could need (%" PRIu64 ")",
                             stream, seg, n, max_len);
    uint8_t *copy = kmb_index_buffer_alloc(n ? n : 1);
    if (!copy) return oom();
    if (n) memcpy(copy, s->index.data, n);
    *out = copy;
    *len = n;
    return KMB_OK;
}

static int mem_save_index(kmb_backend *b, uint64_t stream, uint32_t seg, const uint8_t *data,
                          size_t len)
{
    mem_segment *s = find_segment(M(b), stream, seg);
    if (!s) return missing(b, stream, seg);
    if (buf_reserve(&s->index, len)) return oom();
    if (len) memcpy(s->index.data, data, len);
    s->index.len = len;
    s->has_index = 1;
    return KMB_OK;
}

static int mem_save_checkpoint(kmb_backend *b, uint64_t stream, const uint8_t *data, size_t len)
{
    mem_stream *s = find_stream(M(b), stream);
    if (!s) return missing(b, stream, 0);
    if (buf_reserve(&s->checkpoint, len)) return oom();
    if (len) memcpy(s->checkpoint.data, data, len);
    s->checkpoint.len = len;
    s->has_checkpoint = 1;
    return KMB_OK;
}

static int mem_load_checkpoint(kmb_backend *b, uint64_t stream, uint64_t max_len, uint8_t **out,
                               size_t *len)
{
    *out = NULL;
    *len = 0;
    mem_stream *s = find_stream(M(b), stream);
    if (!s || !s->has_checkpoint) return kmb_error_set(KMB_ENOTFOUND, 0, "no checkpoint");
    if (s->checkpoint.len > max_len)
        return kmb_error_set(KMB_ECORRUPT, 0, "checkpoint of memory:%" PRIu64 " too large", stream);
    uint8_t *copy = malloc(s->checkpoint.len ? s->checkpoint.len : 1);
    if (!copy) return oom();
    if (s->checkpoint.len) memcpy(copy, s->checkpoint.data, s->checkpoint.len);
    *out = copy;
    *len = s->checkpoint.len;
    return KMB_OK;
}

static int mem_tree_size(kmb_backend *b, uint64_t stream, uint64_t *len)
{
    mem_stream *s = find_stream(M(b), stream);
    if (!s || !s->has_tree) return kmb_error_set(KMB_ENOTFOUND, 0, "no tree data");
    *len = s->tree.len;
    return KMB_OK;
}

static int mem_load_tree(kmb_backend *b, uint64_t stream, uint64_t pos, void *buf, size_t len)
{
    mem_stream *s = find_stream(M(b), stream);
    if (!s || !s->has_tree) return kmb_error_set(KMB_ENOTFOUND, 0, "no tree data");
    if (pos > s->tree.len || len > s->tree.len - pos)
        return kmb_error_set(KMB_ECORRUPT, 0, "tree data of memory:%" PRIu64 " is too short",
                             stream);
    if (len) memcpy(buf, s->tree.data + pos, len);
    return KMB_OK;
}

static int mem_save_tree(kmb_backend *b, uint64_t stream, uint64_t pos, const void *data,
                         size_t len)
{
    mem_stream *s = find_stream(M(b), stream);
    if (!s) return kmb_error_set(KMB_ENOTFOUND, 0, "no stream memory:%" PRIu64, stream);
    if (pos > (s->has_tree ? s->tree.len : 0) || len > SIZE_MAX - pos)
        return kmb_error_set(KMB_EINVAL, 0, "tree data: write past its end");
    if (buf_reserve(&s->tree, (size_t)pos + len)) return oom();
    if (len) memcpy(s->tree.data + pos, data, len);
    s->tree.len = (size_t)pos + len;
    s->has_tree = 1;
    return KMB_OK;
}

static void mem_describe(kmb_backend *b, uint64_t stream, uint32_t seg, char *out, size_t cap)
{
    (void)b;
    snprintf(out, cap, "memory:%" PRIu64 "/" KMB_SEGMENT_NAME_FORMAT, stream, seg);
}

static void mem_free(kmb_backend *b)
{
    mem_backend *m = M(b);
    if (!m) return;
    for (size_t i = 0; i < m->n; i++) {
        mem_stream *s = &m->streams[i];
        for (size_t j = 0; j < s->nsegs; j++) {
            free(s->segs[j].bytes.data);
            free(s->segs[j].index.data);
        }
        for (size_t j = 0; j < s->ntorn; j++) free(s->torn[j].data);
        free(s->torn);
        free(s->segs);
        free(s->checkpoint.data);
        free(s->tree.data);
    }
    free(m->streams);
    free(m);
}

int kmb_backend_memory_new(kmb_backend **out)
{
    *out = NULL;
    mem_backend *m = calloc(1, sizeof(*m));
    if (!m) return oom();
    kmb_backend *b = &m->base;
    b->version = KMB_BACKEND_VERSION;
    b->read_only = 0;
    b->list_streams = mem_list_streams;
    b->list_segments = mem_list_segments;
    b->segment_exists = mem_segment_exists;
    b->segment_size = mem_segment_size;
    b->read = mem_read;
    b->write = mem_write;
    b->truncate = mem_truncate;
    b->sync = mem_sync;
    b->create_segment = mem_create_segment;
    b->quarantine = mem_quarantine;
    b->load_index = mem_load_index;
    b->save_index = mem_save_index;
    b->describe = mem_describe;
    b->free = mem_free;
    b->remove_segment = mem_remove_segment;
    b->save_checkpoint = mem_save_checkpoint;
    b->load_checkpoint = mem_load_checkpoint;
    b->tree_size = mem_tree_size;
    b->load_tree = mem_load_tree;
    b->save_tree = mem_save_tree;
    *out = b;
    return KMB_OK;
}
