/*
 * test_pipeline.c — the engine's large-operation paths: appends whose hashes the worker
 * thread chains while the caller encodes and writes, and chunked reads and verifies
 * (kmb_storage_read_each) whose checking and hashing the worker shares. Each must give
 * exactly what the small, single-threaded paths give, and catch every kind of damage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kimberlite/crc32.h"
#include "kimberlite/errors.h"
#include "kimberlite/storage.h"

/* Large enough that a batch, a read or a verify goes to the worker (WORKER_MIN_BYTES). */
#define BIG ((size_t)1 << 20)

/* n events of pseudo-random lengths (some empty) and contents, in one malloc'd block. */
typedef struct events {
    kmb_slice *v;
    uint8_t *data;
    size_t n, bytes;
} events;

static int make_events(events *e, size_t n, size_t max_len, uint64_t seed)
{
    uint8_t *lens = malloc(n * 2);
    e->v = malloc(n * sizeof(*e->v));
    if (!lens || !e->v) {
        free(lens);
        free(e->v);
        return 0;
    }
    kt_fill_random(lens, n * 2, seed);
    e->bytes = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = ((size_t)lens[2 * i] << 8 | lens[2 * i + 1]) % (max_len + 1);
        if (i % 17 == 5) len = 0;
        e->v[i].len = len;
        e->bytes += len;
    }
    free(lens);
    e->data = malloc(e->bytes + 1);
    if (!e->data) {
        free(e->v);
        return 0;
    }
    kt_fill_random(e->data, e->bytes, seed + 1);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        e->v[i].data = e->data + at;
        at += e->v[i].len;
    }
    e->n = n;
    return 1;
}

static void free_events(events *e)
{
    free(e->v);
    free(e->data);
}

/* A memory storage with a pool of 2 asked for explicitly: it runs even on one CPU. */
static kmb_storage *memory_storage(void)
{
    kmb_storage *st = NULL;
    kmb_options o;
    kmb_options_init(&o);
    o.read_threads = 2;
    if (kmb_storage_open_memory(&st, &o) != KMB_OK) return NULL;
    return st;
}

/* A stream appended in small batches (hashed inline) and a copy appended in big batches. */
TEST(pipelined_append_writes_exactly_the_bytes_of_small_batches)
{
    events e;
    CHECK(make_events(&e, 1500, 3000, 7));
    CHECK(e.bytes > 2 * BIG);
    kmb_storage *a = memory_storage(), *b = memory_storage(), *c = memory_storage();
    CHECK(a && b && c);
    uint64_t next = 0;
    /* a: 10 events per batch; b: a genesis batch of 3, then the rest in two big batches;
     * c: all in one big batch, so that the worker seals the genesis record too */
    for (size_t i = 0; i < e.n; i += 10) {
        size_t k = e.n - i < 10 ? e.n - i : 10;
        CHECK_EQ_INT(kmb_storage_append(a, 1, e.v + i, k, NULL, 0, &next), KMB_OK);
    }
    CHECK_EQ_INT(kmb_storage_append(b, 1, e.v, 3, NULL, 0, &next), KMB_OK);
    CHECK_EQ_INT(kmb_storage_append(b, 1, e.v + 3, 700, NULL, 0, &next), KMB_OK);
    CHECK_EQ_INT(kmb_storage_append(b, 1, e.v + 703, e.n - 703, NULL, 1, &next), KMB_OK);
    CHECK_EQ_U64(next, e.n);
    CHECK_EQ_INT(kmb_storage_append(c, 1, e.v, e.n, NULL, 0, &next), KMB_OK);
    CHECK_EQ_U64(next, e.n);
    uint8_t *sa = NULL, *sb = NULL, *sc = NULL;
    size_t la = 0, lb = 0, lc = 0;
    CHECK_EQ_INT(kmb_storage_segment_bytes(a, 1, 0, &sa, &la), KMB_OK);
    CHECK_EQ_INT(kmb_storage_segment_bytes(b, 1, 0, &sb, &lb), KMB_OK);
    CHECK_EQ_INT(kmb_storage_segment_bytes(c, 1, 0, &sc, &lc), KMB_OK);
    int same = la == lb && memcmp(sa, sb, la) == 0;
    int same_c = la == lc && memcmp(sa, sc, la) == 0;
    free(sa);
    free(sb);
    free(sc);
    CHECK(same);
    CHECK(same_c);
    uint8_t ha[32], hb[32];
    int has_a = 0, has_b = 0;
    CHECK_EQ_INT(kmb_storage_head(a, 1, ha, &has_a), KMB_OK);
    CHECK_EQ_INT(kmb_storage_head(b, 1, hb, &has_b), KMB_OK);
    CHECK(has_a && has_b && memcmp(ha, hb, 32) == 0);
    uint64_t n = 0;
    uint8_t head[32];
    int has = 0;
    CHECK_EQ_INT(kmb_storage_verify(b, 1, ha, &n, head, &has), KMB_OK);
    CHECK_EQ_U64(n, e.n);
    kmb_storage_free(a);
    kmb_storage_free(b);
    kmb_storage_free(c);
    free_events(&e);
}

TEST(pipelined_append_rotates_and_reopens_on_disk)
{
    char dir[512];
    CHECK(kt_make_temp_dir(dir, sizeof dir));
    events e;
    CHECK(make_events(&e, 800, 4000, 11));
    kmb_options o;
    kmb_options_init(&o);
    o.max_segment_size = 600000; /* a big batch ends past it: rotation after the batch */
    kmb_storage *st = NULL;
    CHECK_EQ_INT(kmb_storage_open(&st, dir, &o), KMB_OK);
    uint64_t next = 0, segs = 0;
    CHECK_EQ_INT(kmb_storage_append(st, 9, e.v, 400, NULL, 1, &next), KMB_OK);
    CHECK_EQ_INT(kmb_storage_append(st, 9, e.v + 400, 400, NULL, 0, &next), KMB_OK);
    CHECK_EQ_INT(kmb_storage_segment_count(st, 9, &segs), KMB_OK);
    CHECK(segs >= 2);
    uint8_t head[32], head2[32];
    int has = 0;
    CHECK_EQ_INT(kmb_storage_head(st, 9, head, &has), KMB_OK);
    kmb_storage_free(st);
    CHECK_EQ_INT(kmb_storage_open(&st, dir, &o), KMB_OK);
    uint64_t n = 0;
    CHECK_EQ_INT(kmb_storage_verify(st, 9, head, &n, head2, &has), KMB_OK);
    CHECK_EQ_U64(n, 800);
    kmb_read_result r;
    memset(&r, 0, sizeof r);
    CHECK_EQ_INT(kmb_storage_read(st, 9, 0, KMB_NO_LIMIT, &r), KMB_OK);
    CHECK_EQ_U64(r.count, 800);
    int ok = 1;
    for (size_t i = 0; i < r.count; i++)
        ok &= r.records[i].length == e.v[i].len && r.records[i].offset == i &&
              (e.v[i].len == 0 || memcmp(r.records[i].payload, e.v[i].data, e.v[i].len) == 0);
    kmb_read_result_free(&r);
    CHECK(ok);
    kmb_storage_free(st);
    kt_remove_tree(dir);
    free_events(&e);
}

/* A kmb_read_fn that checks what it receives against the events appended. */
typedef struct sink {
    const events *e;
    uint64_t next;  /* offset expected next */
    size_t chunks;
    size_t stop_at; /* return 42 on this chunk (1-based); 0: never */
    int bad;
} sink;

static int sink_fn(void *ctx, const kmb_record *recs, size_t n)
{
    sink *k = ctx;
    k->chunks++;
    if (k->stop_at && k->chunks == k->stop_at) return 42;
    if (n == 0) k->bad = 1;
    for (size_t i = 0; i < n; i++, k->next++) {
        const kmb_slice *want = &k->e->v[k->next];
        if (recs[i].offset != k->next || recs[i].length != want->len ||
            (want->len && memcmp(recs[i].payload, want->data, want->len) != 0))
            k->bad = 1;
    }
    return 0;
}

TEST(read_each_delivers_every_record_once_in_order_in_bounded_chunks)
{
    events e;
    CHECK(make_events(&e, 3000, 1000, 13));
    kmb_storage *st = memory_storage();
    CHECK(st);
    CHECK_EQ_INT(kmb_storage_append(st, 2, e.v, e.n, NULL, 0, NULL), KMB_OK);
    uint64_t froms[] = {0, 1, 1234, 2999, 3000, 5000};
    for (size_t f = 0; f < sizeof froms / sizeof froms[0]; f++) {
        sink k = {&e, froms[f], 0, 0, 0};
        CHECK_EQ_INT(kmb_storage_read_each(st, 2, froms[f], KMB_NO_LIMIT, sink_fn, &k), KMB_OK);
        CHECKF(!k.bad, "from %" PRIu64, froms[f]);
        CHECK_EQ_U64(k.next, froms[f] < e.n ? e.n : froms[f]);
        if (froms[f] == 0) CHECK(k.chunks > 2); /* ~1.5 MB does not come in one piece */
    }
    /* max_bytes: the same records as kmb_storage_read returns */
    uint64_t limits[] = {0, 1, 5000, 300000};
    for (size_t l = 0; l < sizeof limits / sizeof limits[0]; l++) {
        kmb_read_result r;
        memset(&r, 0, sizeof r);
        CHECK_EQ_INT(kmb_storage_read(st, 2, 10, limits[l], &r), KMB_OK);
        sink k = {&e, 10, 0, 0, 0};
        CHECK_EQ_INT(kmb_storage_read_each(st, 2, 10, limits[l], sink_fn, &k), KMB_OK);
        uint64_t count = r.count;
        kmb_read_result_free(&r);
        CHECK(!k.bad);
        CHECK_EQ_U64(k.next - 10, count);
    }
    /* a nonzero return stops the read and comes back as is */
    sink k = {&e, 0, 0, 2, 0};
    CHECK_EQ_INT(kmb_storage_read_each(st, 2, 0, KMB_NO_LIMIT, sink_fn, &k), 42);
    CHECK_EQ_U64(k.chunks, 2);
    /* the storage is still fine afterwards */
    uint64_t n = 0;
    uint8_t head[32];
    int has = 0;
    CHECK_EQ_INT(kmb_storage_verify(st, 2, NULL, &n, head, &has), KMB_OK);
    CHECK_EQ_U64(n, e.n);
    kmb_storage_free(st);
    free_events(&e);
}

/* Rewrite record `at` (all records of `size` bytes) after `edit`, optionally re-CRC'd. */
static int damage(kmb_storage *st, uint64_t stream, size_t size, size_t at, size_t byte,
                  int fix_crc)
{
    uint8_t *seg = NULL;
    size_t len = 0;
    if (kmb_storage_segment_bytes(st, stream, 0, &seg, &len) != KMB_OK) return 0;
    uint8_t *rec = seg + at * size;
    rec[byte] ^= 0x40;
    if (fix_crc) {
        uint32_t c = kmb_crc32(rec, size - 4);
        for (int i = 0; i < 4; i++) rec[size - 4 + (size_t)i] = (uint8_t)(c >> (8 * i));
    }
    int ok = kmb_storage_replace_segment_bytes(st, stream, 0, seg, len) == KMB_OK;
    free(seg);
    return ok;
}

/* Damage in the middle of a large read: reported at its offset, nothing after delivered. */
static void check_damage_found(int fix_crc, size_t byte, int want_rc)
{
    const size_t n = 4000, plen = 400, size = plen + 48, at = 2345;
    uint8_t *data = malloc(n * plen);
    kmb_slice *v = malloc(n * sizeof(*v));
    CHECK(data && v);
    kt_fill_random(data, n * plen, 17);
    for (size_t i = 0; i < n; i++) v[i] = (kmb_slice){data + i * plen, plen};
    events e = {v, data, n, n * plen};
    kmb_storage *st = memory_storage();
    CHECK(st);
    CHECK_EQ_INT(kmb_storage_append(st, 3, v, n, NULL, 0, NULL), KMB_OK);
    CHECK(damage(st, 3, size, at, byte, fix_crc));
    sink k = {&e, 0, 0, 0, 0};
    CHECK_EQ_INT(kmb_storage_read_each(st, 3, 0, KMB_NO_LIMIT, sink_fn, &k), want_rc);
    CHECK(!k.bad);
    CHECK(k.next <= at); /* never a record at or past the damage */
    const kmb_error *err = kmb_error_last();
    CHECK(err->has_offset);
    CHECK_EQ_U64(err->offset, at);
    CHECK_EQ_INT(kmb_storage_verify(st, 3, NULL, NULL, NULL, NULL), want_rc);
    CHECK_EQ_U64(kmb_error_last()->offset, at);
    /* a read that stops before the damage is fine */
    k = (sink){&e, 100, 0, 0, 0};
    CHECK_EQ_INT(kmb_storage_read_each(st, 3, 100, (at - 100) * plen, sink_fn, &k), KMB_OK);
    CHECK(!k.bad);
    CHECK_EQ_U64(k.next, at);
    kmb_storage_free(st);
    free(v);
    free(data);
}

TEST(large_read_and_verify_find_a_bad_crc_in_the_middle)
{
    check_damage_found(0, 48 + 123, KMB_ECORRUPT);
}

TEST(large_read_and_verify_find_a_wrong_offset_in_the_middle)
{
    check_damage_found(1, 2, KMB_ECORRUPT);
}

TEST(large_read_and_verify_find_a_broken_link_in_the_middle)
{
    check_damage_found(1, 8 + 5, KMB_ECHAIN);
}

TEST(large_read_and_verify_find_an_altered_payload_by_the_next_link)
{
    /* payload altered and re-CRC'd: the record itself passes, the next one's link fails */
    const size_t n = 3000, plen = 200, size = plen + 48, at = 1500;
    uint8_t *data = malloc(n * plen);
    kmb_slice *v = malloc(n * sizeof(*v));
    CHECK(data && v);
    kt_fill_random(data, n * plen, 19);
    for (size_t i = 0; i < n; i++) v[i] = (kmb_slice){data + i * plen, plen};
    kmb_storage *st = memory_storage();
    CHECK(st);
    CHECK_EQ_INT(kmb_storage_append(st, 4, v, n, NULL, 0, NULL), KMB_OK);
    CHECK(damage(st, 4, size, at, 48 + 7, 1));
    CHECK_EQ_INT(kmb_storage_verify(st, 4, NULL, NULL, NULL, NULL), KMB_ECHAIN);
    CHECK_EQ_U64(kmb_error_last()->offset, at + 1);
    kmb_read_result r;
    memset(&r, 0, sizeof r);
    CHECK_EQ_INT(kmb_storage_read(st, 4, 0, KMB_NO_LIMIT, &r), KMB_ECHAIN);
    CHECK_EQ_U64(r.count, 0);
    kmb_read_result_free(&r);
    kmb_storage_free(st);
    free(v);
    free(data);
}

/* A pool of four (forced, on any number of CPUs) with tiny chunks and blocks reads and
 * verifies a small stream exactly as the inline reader does, and its threads do the work. */
TEST(read_pool_of_four_on_small_reads_matches_the_inline_reader)
{
    events e;
    CHECK(make_events(&e, 300, 200, 77));
    kmb_storage *st[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        kmb_options o;
        kmb_options_init(&o);
        o.read_threads = k ? 4 : 1;
        CHECK_EQ_INT(kmb_storage_open_memory(&st[k], &o), KMB_OK);
        CHECK_EQ_INT(kmb_storage_append(st[k], 1, e.v, e.n, NULL, 0, NULL), KMB_OK);
    }
    CHECK_EQ_INT(kmb_storage_options(st[1])->read_threads, 4);
    CHECK_EQ_INT(kmb_storage_set_read_tuning(st[1], 1, 700, 1, 1), KMB_OK);
    kmb_read_result r[2];
    memset(r, 0, sizeof(r));
    uint8_t head[2][KMB_HASH_SIZE];
    int ok = 1;
    for (int k = 0; k < 2; k++) {
        ok = ok && kmb_storage_read(st[k], 1, 0, KMB_NO_LIMIT, &r[k]) == KMB_OK;
        ok = ok && kmb_storage_verify(st[k], 1, NULL, NULL, head[k], NULL) == KMB_OK;
    }
    ok = ok && r[0].count == e.n && r[1].count == e.n &&
         r[0].payload_bytes == r[1].payload_bytes &&
         memcmp(r[0].buffer, r[1].buffer, (size_t)r[0].payload_bytes) == 0 &&
         memcmp(head[0], head[1], KMB_HASH_SIZE) == 0;
    uint64_t helped = 0;
    unsigned threads = 0;
    ok = ok && kmb_storage_read_stats(st[1], &helped, &threads) == KMB_OK;
    for (int k = 0; k < 2; k++) {
        kmb_read_result_free(&r[k]);
        kmb_storage_free(st[k]);
    }
    free_events(&e);
    CHECK(ok);
    CHECKF(helped >= 2 * 300 && threads == 4, "helped %llu threads %u",
           (unsigned long long)helped, threads);
}
