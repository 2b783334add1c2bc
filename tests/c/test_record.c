/*
 * test_record.c — record encoding is byte-exact (SPEC §2) and decoding rejects damage:
 * truncation is KMB_EEOF, any changed bit is a non-OK decode, nothing crashes on hostile
 * lengths.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kimberlite/errors.h"
#include "kimberlite/record.h"

#define RECORD0                                                                             \
    "0000000000000000"                                                                      \
    "0000000000000000000000000000000000000000000000000000000000000000"                      \
    "06000000 6576656e7431 0cda0e68"
#define RECORD1                                                                             \
    "0100000000000000"                                                                      \
    "29663b9a32ee32c2ca5a645117696ce0888c84b39f8fd91c0ec4ebcd09025df4"                      \
    "06000000 6576656e7432 6114639d"
#define HASH0 "29663b9a32ee32c2ca5a645117696ce0888c84b39f8fd91c0ec4ebcd09025df4"
#define HASH1 "c0351898aed9916debcc05905fb10161c329785aaa559dbc85fc1571516b6f6e"

/* The SPEC's two-record segment, 108 bytes. */
static size_t spec_segment(uint8_t out[108])
{
    size_t n = kt_unhex(out, 54, RECORD0);
    return n + kt_unhex(out + 54, 54, RECORD1);
}

TEST(record_encoding_matches_spec_vectors_byte_for_byte)
{
    uint8_t want[108], got[108], h0[32];
    CHECK_EQ_U64(spec_segment(want), 108);
    CHECK_EQ_U64(kmb_record_encode(got, 0, NULL, "event1", 6), 54);
    kmb_chain_hash(h0, NULL, "event1", 6);
    CHECK_EQ_U64(kmb_record_encode(got + 54, 1, h0, "event2", 6), 54);
    CHECK(memcmp(got, want, 108) == 0);
    CHECK_EQ_U64(kmb_record_size(6), 54);
    CHECK_EQ_INT(KMB_HEADER_SIZE, 44);
    CHECK_EQ_INT(KMB_RECORD_OVERHEAD, 48);
}

TEST(record_decode_of_spec_segment_yields_both_records_and_their_hashes)
{
    uint8_t seg[108], h[32], want0[32], want1[32];
    spec_segment(seg);
    kt_unhex(want0, 32, HASH0);
    kt_unhex(want1, 32, HASH1);
    kmb_record r;
    size_t used = 0;
    CHECK_EQ_INT(kmb_record_decode(&r, &used, seg, sizeof seg), KMB_OK);
    CHECK_EQ_U64(used, 54);
    CHECK_EQ_U64(r.offset, 0);
    CHECK(kmb_hash_is_zero(r.prev_hash));
    CHECK_EQ_U64(r.length, 6);
    CHECK(r.payload == seg + 44 && memcmp(r.payload, "event1", 6) == 0);
    kmb_record_hash(h, &r);
    CHECK(memcmp(h, want0, 32) == 0);

    CHECK_EQ_INT(kmb_record_decode(&r, &used, seg + 54, sizeof seg - 54), KMB_OK);
    CHECK_EQ_U64(used, 54);
    CHECK_EQ_U64(r.offset, 1);
    CHECK(memcmp(r.prev_hash, want0, 32) == 0); /* the chain link */
    CHECK(memcmp(r.payload, "event2", 6) == 0);
    kmb_record_hash(h, &r);
    CHECK(memcmp(h, want1, 32) == 0);
}

TEST(record_round_trips_for_empty_small_and_large_payloads)
{
    static const uint32_t lens[] = {0, 1, 43, 1000, 70000};
    uint8_t prev[32];
    kt_fill_random(prev, 32, 5);
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        uint8_t *payload = malloc(lens[i] + 1), *buf = malloc(kmb_record_size(lens[i]) + 10);
        CHECK(payload != NULL && buf != NULL);
        kt_fill_random(payload, lens[i], i);
        size_t n = kmb_record_encode(buf, 12345 + i, prev, lens[i] ? payload : NULL, lens[i]);
        memset(buf + n, 0xAB, 10); /* trailing bytes of a following record are ignored */
        kmb_record r;
        size_t used = 0;
        int rc = kmb_record_decode(&r, &used, buf, n + 10);
        int ok = rc == KMB_OK && used == n && n == kmb_record_size(lens[i]) &&
                 r.offset == 12345 + i && r.length == lens[i] &&
                 memcmp(r.prev_hash, prev, 32) == 0 &&
                 (lens[i] == 0 || memcmp(r.payload, payload, lens[i]) == 0);
        int probed = kmb_record_probe(&r, &used, buf, n) == 1 && used == n;
        free(payload);
        free(buf);
        CHECKF(ok && probed, "payload length %u", (unsigned)lens[i]);
    }
}

TEST(record_encode_with_null_prev_hash_writes_zeros)
{
    uint8_t buf[64];
    memset(buf, 0xFF, sizeof buf);
    kmb_record_encode(buf, 9, NULL, "x", 1);
    for (int i = 8; i < 40; i++) CHECK_EQ_INT(buf[i], 0);
}

TEST(record_truncated_at_every_length_is_unexpected_eof)
{
    uint8_t seg[108];
    spec_segment(seg);
    for (size_t cut = 0; cut < 54; cut++) {
        /* Copy into an exact-size heap block so ASan catches any read past `cut`. */
        uint8_t *p = malloc(cut ? cut : 1);
        CHECK(p != NULL);
        memcpy(p, seg + 54, cut);
        kmb_record r;
        size_t used = 0;
        kmb_error_clear();
        int rc = kmb_record_decode(&r, &used, p, cut);
        int probe = kmb_record_probe(&r, &used, p, cut);
        free(p);
        const kmb_error *e = kmb_error_last();
        CHECKF(rc == KMB_EEOF, "cut=%zu rc=%d", cut, rc);
        CHECKF(e->code == KMB_EEOF && e->message[0] != '\0', "cut=%zu", cut);
        CHECKF(e->has_position && e->position == 0, "cut=%zu", cut);
        CHECKF(e->has_offset == (cut >= 8), "cut=%zu", cut);
        CHECKF(cut < 8 || e->offset == 1, "cut=%zu", cut);
        CHECKF(probe == 0, "cut=%zu", cut);
    }
}

TEST(record_every_single_bit_flip_is_detected)
{
    uint8_t seg[108];
    spec_segment(seg);
    for (size_t rec = 0; rec < 2; rec++) {
        for (size_t bit = 0; bit < 54 * 8; bit++) {
            uint8_t buf[54];
            memcpy(buf, seg + 54 * rec, 54);
            buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            kmb_record r;
            size_t used = 0;
            int rc = kmb_record_decode(&r, &used, buf, sizeof buf);
            /* A longer length reads as truncated, anything else fails the CRC. */
            CHECKF(rc == KMB_ECORRUPT || rc == KMB_EEOF, "record %zu bit %zu rc=%d", rec, bit, rc);
            CHECKF(kmb_record_probe(&r, &used, buf, sizeof buf) == 0, "record %zu bit %zu", rec, bit);
        }
    }
}

TEST(record_crc_mismatch_is_corrupt_with_offset_and_position)
{
    uint8_t seg[108];
    spec_segment(seg);
    seg[54 + 44] ^= 0x01; /* a payload byte of record 1 */
    kmb_record r;
    size_t used = 0;
    CHECK_EQ_INT(kmb_record_decode(&r, &used, seg + 54, 54), KMB_ECORRUPT);
    const kmb_error *e = kmb_error_last();
    CHECK(strstr(e->message, "CRC") != NULL);
    CHECK(e->has_offset && e->offset == 1);
    CHECK(e->has_position && e->position == 0);
}

TEST(record_with_length_ffffffff_is_eof_without_overflow)
{
    /* A header claiming a 4 GiB payload, in a buffer of a few dozen bytes. */
    for (size_t len = 44; len <= 100; len++) {
        uint8_t *buf = calloc(1, len);
        CHECK(buf != NULL);
        kmb_store_u32le(buf + 40, 0xFFFFFFFFu);
        kmb_record r;
        size_t used = 0;
        int rc = kmb_record_decode(&r, &used, buf, len);
        int probe = kmb_record_probe(&r, &used, buf, len);
        free(buf);
        CHECKF(rc == KMB_EEOF, "len=%zu rc=%d", len, rc);
        CHECK(probe == 0);
    }
#if SIZE_MAX > 0xFFFFFFFFu
    /* One byte short of the claimed size: decided from the header alone, nothing else read. */
    uint8_t hdr[48] = {0};
    kmb_store_u32le(hdr + 40, 0xFFFFFFFFu);
    kmb_record r;
    size_t used = 0;
    CHECK_EQ_INT(kmb_record_decode(&r, &used, hdr, (size_t)0xFFFFFFFFu + 47), KMB_EEOF);
#endif
}

TEST(record_offset_at_or_above_2_pow_63_is_corrupt)
{
    uint8_t buf[64];
    kmb_record r;
    size_t used = 0;
    kmb_record_encode(buf, KMB_MAX_OFFSET - 1, NULL, "ok", 2);
    CHECK_EQ_INT(kmb_record_decode(&r, &used, buf, sizeof buf), KMB_OK);
    CHECK_EQ_U64(r.offset, KMB_MAX_OFFSET - 1);

    static const uint64_t bad[] = {KMB_MAX_OFFSET, KMB_MAX_OFFSET + 1, UINT64_MAX};
    for (size_t i = 0; i < 3; i++) {
        kmb_record_encode(buf, bad[i], NULL, "no", 2); /* valid CRC, invalid offset */
        CHECK_EQ_INT(kmb_record_decode(&r, &used, buf, sizeof buf), KMB_ECORRUPT);
        const kmb_error *e = kmb_error_last();
        CHECK(e->has_offset && e->offset == bad[i]);
        CHECK(strstr(e->message, "2**63") != NULL);
        CHECK_EQ_INT(kmb_record_probe(&r, &used, buf, sizeof buf), 0);
    }
}

TEST(record_probe_records_no_error)
{
    uint8_t seg[108];
    spec_segment(seg);
    seg[60] ^= 0x10;
    kmb_record r;
    size_t used = 0;
    kmb_error_clear();
    CHECK_EQ_INT(kmb_record_probe(&r, &used, seg, 10), 0);
    CHECK_EQ_INT(kmb_record_probe(&r, &used, seg + 54, 54), 0);
    CHECK_EQ_INT(kmb_error_last()->code, KMB_OK);
    CHECK_EQ_INT(kmb_record_probe(&r, &used, seg, 108), 1);
    CHECK_EQ_U64(used, 54);
}

TEST(record_hash_of_genesis_ignores_stored_prev_hash)
{
    /* Offset 0 hashes the payload alone, whatever bytes sit in prev_hash. */
    kmb_record r = {0};
    uint8_t h[32], want[32];
    memset(r.prev_hash, 0x77, 32);
    r.payload = (const uint8_t *)"event1";
    r.length = 6;
    kmb_record_hash(h, &r);
    kt_unhex(want, 32, HASH0);
    CHECK(memcmp(h, want, 32) == 0);
}
