/*
 * test_columns.c — kimberlite/columns.h: column reads against kmb_storage_read, budgets,
 * empty payloads, large (mapped) buffers, verify_range chaining, segment bounds, errors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kimberlite/chain.h"
#include "kimberlite/columns.h"
#include "kimberlite/errors.h"
#include "kimberlite/record.h"
#include "kimberlite/storage.h"

#define N 300

/* Event i: i % 23 bytes of (i + j) & 0xff (every 23rd one empty). */
static size_t event(int i, uint8_t *buf)
{
    size_t n = (size_t)(i % 23);
    for (size_t j = 0; j < n; j++) buf[j] = (uint8_t)(i + (int)j);
    return n;
}

/* A memory storage with small segments holding stream 1 = events 0 .. N-1. */
static kmb_storage *filled(void)
{
    kmb_options o;
    kmb_options_init(&o);
    o.max_segment_size = 1024;
    kmb_storage *st = NULL;
    if (kmb_storage_open_memory(&st, &o) != KMB_OK) return NULL;
    for (int i = 0; i < N; i += 10) {
        uint8_t bufs[10][32];
        kmb_slice s[10];
        for (int k = 0; k < 10; k++) s[k] = (kmb_slice){bufs[k], event(i + k, bufs[k])};
        if (kmb_storage_append(st, 1, s, 10, NULL, 0, NULL) != KMB_OK) {
            kmb_storage_free(st);
            return NULL;
        }
    }
    return st;
}

/* Check c's columns against kmb_storage_read of the same records. 1 if they match. */
static int matches_read(kmb_storage *st, const kmb_columns *c)
{
    kmb_read_result r;
    memset(&r, 0, sizeof(r));
    if (kmb_storage_read(st, 1, c->first, KMB_NO_LIMIT, &r) != KMB_OK) return 0;
    int ok = r.count >= c->count;
    uint64_t at = 0;
    for (size_t i = 0; ok && i < c->count; i++) {
        const kmb_record *rec = &r.records[i];
        int64_t lo = c->large ? ((int64_t *)c->payload_offsets)[i]
                              : ((int32_t *)c->payload_offsets)[i];
        int64_t hi = c->large ? ((int64_t *)c->payload_offsets)[i + 1]
                              : ((int32_t *)c->payload_offsets)[i + 1];
        ok = (uint64_t)lo == at && (uint64_t)(hi - lo) == rec->length &&
             (rec->length == 0 || memcmp(c->payload + lo, rec->payload, rec->length) == 0) &&
             c->offsets[i] == rec->offset &&
             memcmp(c->hashes + i * KMB_HASH_SIZE, rec->prev_hash, KMB_HASH_SIZE) == 0;
        at += rec->length;
    }
    if (ok && c->count) {
        uint8_t h[KMB_HASH_SIZE];
        kmb_record_hash(h, &r.records[c->count - 1]);
        ok = memcmp(h, c->last_hash, KMB_HASH_SIZE) == 0 &&
             memcmp(h, c->hashes + c->count * KMB_HASH_SIZE, KMB_HASH_SIZE) == 0;
    }
    ok = ok && at == c->payload_bytes;
    kmb_read_result_free(&r);
    return ok;
}

TEST(columns_match_read_for_every_range_and_width)
{
    kmb_storage *st = filled();
    CHECK(st != NULL);
    static const uint64_t cuts[][2] = {{0, N}, {0, 1}, {1, 2}, {22, 24}, {45, 199}, {299, N},
                                       {23, 23}, {100, 1000}};
    unsigned all = KMB_COLUMN_PAYLOAD | KMB_COLUMN_OFFSET | KMB_COLUMN_HASHES;
    for (size_t k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
        for (int large = 0; large < 2; large++) {
            kmb_columns c;
            int rc = kmb_storage_read_columns(st, 1, cuts[k][0], cuts[k][1], KMB_NO_LIMIT,
                                              all | (large ? KMB_COLUMN_LARGE : 0), &c);
            uint64_t want = (cuts[k][1] < N ? cuts[k][1] : N) - cuts[k][0];
            int ok = rc == KMB_OK && c.count == want && (want == 0 || c.large == large) &&
                     matches_read(st, &c);
            kmb_columns_free(&c);
            CHECKF(ok, "range %" PRIu64 "..%" PRIu64 " large=%d rc=%d", cuts[k][0],
                   cuts[k][1], large, rc);
        }
    }
    kmb_storage_free(st);
}

TEST(columns_budget_follows_the_read_from_rule)
{
    kmb_storage *st = filled();
    CHECK(st != NULL);
    for (uint64_t budget = 0; budget < 60; budget += 7) {
        kmb_columns c;
        kmb_read_result r;
        memset(&r, 0, sizeof(r));
        CHECK_EQ_INT(kmb_storage_read_columns(st, 1, 20, N, budget, KMB_COLUMN_PAYLOAD, &c),
                     KMB_OK);
        CHECK_EQ_INT(kmb_storage_read(st, 1, 20, budget, &r), KMB_OK);
        int same = c.count == r.count && c.payload_bytes == r.payload_bytes &&
                   (r.payload_bytes == 0 || memcmp(c.payload, r.buffer, r.payload_bytes) == 0);
        kmb_columns_free(&c);
        kmb_read_result_free(&r);
        CHECKF(same, "budget %" PRIu64, budget);
    }
    kmb_storage_free(st);
}

TEST(columns_empty_payloads_and_nothing_to_read)
{
    kmb_storage *st = NULL;
    CHECK_EQ_INT(kmb_storage_open_memory(&st, NULL), KMB_OK);
    kmb_slice e[3] = {{"", 0}, {"", 0}, {"", 0}};
    CHECK_EQ_INT(kmb_storage_append(st, 1, e, 3, NULL, 0, NULL), KMB_OK);
    kmb_columns c;
    CHECK_EQ_INT(kmb_storage_read_columns(st, 1, 0, 3, KMB_NO_LIMIT, KMB_COLUMN_PAYLOAD, &c),
                 KMB_OK);
    int ok = c.count == 3 && c.payload_bytes == 0 && c.payload != NULL &&
             ((int32_t *)c.payload_offsets)[3] == 0;
    kmb_columns_free(&c);
    CHECK(ok);
    /* the stream's end, a missing stream, an empty range: nothing, no buffers */
    CHECK_EQ_INT(kmb_storage_read_columns(st, 1, 3, 9, KMB_NO_LIMIT, KMB_COLUMN_PAYLOAD, &c),
                 KMB_OK);
    CHECK(c.count == 0 && c.payload == NULL);
    CHECK_EQ_INT(kmb_storage_read_columns(st, 7, 0, 9, KMB_NO_LIMIT, KMB_COLUMN_PAYLOAD, &c),
                 KMB_OK);
    CHECK(c.count == 0 && c.payload == NULL);
    CHECK_EQ_INT(kmb_storage_read_columns(st, 1, 2, 1, KMB_NO_LIMIT, 0, &c), KMB_EINVAL);
    CHECK(c.count == 0 && c.payload == NULL);
    kmb_storage_free(st);
}

TEST(columns_large_buffers_are_mapped_and_released)
{
    kmb_storage *st = NULL;
    CHECK_EQ_INT(kmb_storage_open_memory(&st, NULL), KMB_OK);
    size_t len = 100000;
    uint8_t *big = malloc(len);
    CHECK(big != NULL);
    kt_fill_random(big, len, 7);
    kmb_slice e[4] = {{big, len}, {big, len}, {big, 10}, {big, len}};
    int rc = kmb_storage_append(st, 1, e, 4, NULL, 0, NULL);
    kmb_columns c;
    if (rc == KMB_OK)
        rc = kmb_storage_read_columns(st, 1, 0, 4, KMB_NO_LIMIT, KMB_COLUMN_PAYLOAD, &c);
    int ok = rc == KMB_OK && c.payload_bytes == 3 * len + 10 &&
             c.payload_bytes >= KMB_COLUMN_MMAP_MIN &&
             memcmp(c.payload + 2 * len + 10, big, len) == 0;
    /* take the payload over, as the binding does, and release it separately */
    uint8_t *taken = c.payload;
    size_t taken_len = (size_t)c.payload_bytes;
    c.payload = NULL;
    kmb_columns_free(&c);
    kmb_columns_release(taken, taken_len);
    free(big);
    kmb_storage_free(st);
    CHECK(ok);
}

TEST(verify_range_chains_and_finds_tampering)
{
    kmb_storage *st = filled();
    CHECK(st != NULL);
    uint64_t next, count;
    uint8_t head[KMB_HASH_SIZE], first[KMB_HASH_SIZE], last[KMB_HASH_SIZE],
        running[KMB_HASH_SIZE] = {0};
    int has;
    CHECK_EQ_INT(kmb_storage_verify(st, 1, NULL, &next, head, &has), KMB_OK);
    static const uint64_t cuts[] = {0, 1, 50, 51, 170, 299, N};
    for (size_t k = 0; k + 1 < sizeof(cuts) / sizeof(cuts[0]); k++) {
        CHECK_EQ_INT(kmb_storage_verify_range(st, 1, cuts[k], cuts[k + 1], &count, first, last),
                     KMB_OK);
        CHECK_EQ_U64(count, cuts[k + 1] - cuts[k]);
        CHECK(memcmp(first, running, KMB_HASH_SIZE) == 0); /* stitched at the boundary */
        memcpy(running, last, KMB_HASH_SIZE);
    }
    CHECK(memcmp(running, head, KMB_HASH_SIZE) == 0);
    CHECK_EQ_INT(kmb_storage_verify_range(st, 1, N, N + 5, &count, first, last), KMB_OK);
    CHECK_EQ_U64(count, 0);

    /* forge record 120's payload byte (CRC recomputed): the link at 121 breaks */
    uint64_t target = 120;
    kmb_segment_bounds *b = NULL;
    size_t nb = 0;
    CHECK_EQ_INT(kmb_storage_segment_bounds(st, 1, &b, &nb), KMB_OK);
    size_t k = 0;
    while (k < nb && b[k].next <= target) k++;
    CHECK(k < nb);
    uint32_t seg = b[k].number;
    uint64_t base = b[k].first;
    free(b);
    uint8_t *bytes = NULL;
    size_t blen = 0;
    CHECK_EQ_INT(kmb_storage_segment_bytes(st, 1, seg, &bytes, &blen), KMB_OK);
    size_t pos = 0;
    for (uint64_t o = base; o < target; o++) {
        kmb_record r;
        size_t used;
        CHECK(kmb_record_decode(&r, &used, bytes + pos, blen - pos) == KMB_OK);
        pos += used;
    }
    kmb_record r;
    size_t used;
    CHECK(kmb_record_decode(&r, &used, bytes + pos, blen - pos) == KMB_OK && r.length > 0);
    uint8_t forged[64];
    memcpy(forged, r.payload, r.length);
    forged[0] ^= 0xff;
    uint8_t enc[128];
    size_t elen = kmb_record_encode(enc, r.offset, r.prev_hash, forged, r.length);
    CHECK(elen == used);
    memcpy(bytes + pos, enc, used);
    int rc = kmb_storage_replace_segment_bytes(st, 1, seg, bytes, blen);
    free(bytes);
    CHECK_EQ_INT(rc, KMB_OK);
    CHECK_EQ_INT(kmb_storage_verify_range(st, 1, 0, target + 1, &count, first, last), KMB_OK);
    CHECK_EQ_INT(kmb_storage_verify_range(st, 1, 100, 200, &count, first, last), KMB_ECHAIN);
    CHECK(kmb_error_last()->has_offset && kmb_error_last()->offset == target + 1);
    CHECK_EQ_U64(count, 0);
    CHECK_EQ_INT(kmb_storage_verify_range(st, 1, target + 1, N, &count, first, last), KMB_ECHAIN);
    CHECK_EQ_INT(kmb_storage_verify_range(st, 1, target + 2, N, &count, first, last), KMB_OK);
    kmb_storage_free(st);
}

TEST(segment_bounds_cover_the_stream)
{
    kmb_storage *st = filled();
    CHECK(st != NULL);
    kmb_segment_bounds *b = NULL;
    size_t n = 0;
    uint64_t segs = 0;
    CHECK_EQ_INT(kmb_storage_segment_bounds(st, 1, &b, &n), KMB_OK);
    CHECK_EQ_INT(kmb_storage_segment_count(st, 1, &segs), KMB_OK);
    int ok = n == segs && n > 2 && b[0].first == 0 && b[n - 1].next == N;
    uint64_t bytes = 0;
    for (size_t k = 0; ok && k < n; k++) {
        ok = b[k].first <= b[k].next && (k == 0 || b[k].first == b[k - 1].next);
        bytes += b[k].bytes;
    }
    uint64_t want = 0;
    uint8_t tmp[32];
    for (int i = 0; i < N; i++) want += KMB_RECORD_OVERHEAD + event(i, tmp);
    free(b);
    CHECK(ok);
    CHECK_EQ_U64(bytes, want);
    CHECK_EQ_INT(kmb_storage_segment_bounds(st, 9, &b, &n), KMB_OK);
    CHECK(b == NULL && n == 0);
    kmb_storage_close(st);
    CHECK_EQ_INT(kmb_storage_segment_bounds(st, 1, &b, &n), KMB_ECLOSED);
    kmb_columns c;
    CHECK_EQ_INT(kmb_storage_read_columns(st, 1, 0, 1, KMB_NO_LIMIT, 0, &c), KMB_ECLOSED);
    kmb_storage_free(st);
}

/*
 * A range whose last record is empty ends at `stop`: the reader reads nothing past it, so
 * damage right after the range is not reported (events: 10 B, empty, 10 B, ...; bit rot
 * in record 2).
 */
TEST(columns_stop_at_stop_when_the_last_record_is_empty)
{
    kmb_options o;
    kmb_options_init(&o);
    kmb_storage *st = NULL;
    CHECK_EQ_INT(kmb_storage_open_memory(&st, &o), KMB_OK);
    uint8_t ten[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    kmb_slice s[4] = {{ten, 10}, {ten, 0}, {ten, 10}, {ten, 10}};
    CHECK_EQ_INT(kmb_storage_append(st, 1, s, 4, NULL, 0, NULL), KMB_OK);
    kmb_segment_bounds *b = NULL;
    size_t nb = 0;
    CHECK_EQ_INT(kmb_storage_segment_bounds(st, 1, &b, &nb), KMB_OK);
    CHECK(nb == 1);
    uint32_t seg = b[0].number;
    free(b);
    uint8_t *bytes = NULL;
    size_t blen = 0;
    CHECK_EQ_INT(kmb_storage_segment_bytes(st, 1, seg, &bytes, &blen), KMB_OK);
    /* record 2 starts after two records of 10 and 0 payload bytes; flip its first payload byte */
    size_t pos = 2 * KMB_RECORD_OVERHEAD + 10;
    kmb_record r;
    size_t used;
    CHECK(kmb_record_decode(&r, &used, bytes + pos, blen - pos) == KMB_OK && r.offset == 2);
    bytes[pos + KMB_HEADER_SIZE] ^= 1;
    int rc = kmb_storage_replace_segment_bytes(st, 1, seg, bytes, blen);
    free(bytes);
    CHECK_EQ_INT(rc, KMB_OK);

    uint64_t count;
    uint8_t first[KMB_HASH_SIZE], last[KMB_HASH_SIZE];
    CHECK_EQ_INT(kmb_storage_verify_range(st, 1, 0, 2, &count, first, last), KMB_OK);
    CHECK_EQ_U64(count, 2);
    CHECK_EQ_INT(kmb_storage_verify_range(st, 1, 1, 2, &count, first, last), KMB_OK);
    CHECK_EQ_U64(count, 1);
    kmb_columns c;
    CHECK_EQ_INT(kmb_storage_read_columns(st, 1, 0, 2, KMB_NO_LIMIT,
                                          KMB_COLUMN_PAYLOAD | KMB_COLUMN_OFFSET, &c),
                 KMB_OK);
    CHECK_EQ_U64(c.count, 2);
    CHECK_EQ_U64(c.payload_bytes, 10);
    CHECK_EQ_U64(c.offsets[1], 1);
    kmb_columns_free(&c);
    /* a range that reaches the damage still reports it */
    CHECK_EQ_INT(kmb_storage_verify_range(st, 1, 0, 3, &count, first, last), KMB_ECORRUPT);
    CHECK(kmb_error_last()->has_offset && kmb_error_last()->offset == 2);
    /* and a range before it still reads, now that the damage is known */
    CHECK_EQ_INT(kmb_storage_verify_range(st, 1, 0, 2, &count, first, last), KMB_OK);
    CHECK_EQ_U64(count, 2);
    kmb_storage_free(st);
}
