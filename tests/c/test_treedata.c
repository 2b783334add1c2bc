/*
 * test_treedata.c — the tree-data format's pure functions (treedata.h): geometry, canonical
 * tile order against a brute-force enumeration, and every check rejecting damage.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kimberlite/crc32.h"
#include "kimberlite/treedata.h"

/* Brute force: tiles of stored level L completed by n leaves. */
static uint64_t brute_tiles(uint64_t n)
{
    uint64_t t = 0;
    for (unsigned L = 0; L < 56; L += 5) t += n / ((uint64_t)256 << L);
    return t;
}

TEST(treedata_geometry)
{
    CHECK_EQ_U64(kmb_treedata_tiles(0), 0);
    CHECK_EQ_U64(kmb_treedata_tiles(255), 0);
    CHECK_EQ_U64(kmb_treedata_tiles(256), 1);
    CHECK_EQ_U64(kmb_treedata_tiles(8192), 33); /* 32 level-0 tiles and one of level 5 */
    CHECK_EQ_U64(kmb_treedata_frontier_nodes(9000), 40 + 25 + 8);
    CHECK_EQ_U64(kmb_treedata_frontier_nodes(UINT64_MAX), 12 * 255 + 15);
    uint64_t len;
    CHECK(kmb_treedata_file_len(9000, &len) == 0);
    CHECK_EQ_U64(len, 16 + 36 * 8208 + 32 + 73 * 32 + 16);
    CHECK(kmb_treedata_file_len(UINT64_MAX, &len) == -1); /* overflows 64 bits */
    for (uint64_t n = 1; n < 200000; n = n * 3 + 1)
        CHECKF(kmb_treedata_tiles(n) == brute_tiles(n), "n=%" PRIu64, n);
    /* Under 34 bytes per record from a million records on (33.1). */
    CHECK(kmb_treedata_file_len(1000000, &len) == 0);
    CHECK(len < 34 * 1000000ull);
}

TEST(treedata_canonical_order_matches_enumeration)
{
    uint64_t c = 0, index, ord = 0, prev_c = 0;
    unsigned lvl = 0, level, prev_level = 0;
    const uint64_t n = 3 * 8192 * 32 + 1000; /* levels 0, 5 and 10 complete tiles */
    while (kmb_treedata_next_tile(n, &c, &lvl, &level, &index)) {
        uint64_t done = (index + 1) << (level + 8);
        CHECKF(done <= n, "tile (%u, %" PRIu64 ") completes after n", level, index);
        CHECKF(done > prev_c || (done == prev_c && level > prev_level), "order at %" PRIu64, ord);
        CHECKF(kmb_treedata_tile_ordinal(level, index) == ord, "ordinal of (%u, %" PRIu64 ")",
               level, index);
        prev_c = done;
        prev_level = level;
        ord++;
    }
    CHECK_EQ_U64(ord, kmb_treedata_tiles(n));
    /* A cursor started after m continues exactly where a full enumeration would. */
    for (uint64_t m = 0; m < n; m += 7919) {
        kmb_treedata_cursor_after(m, &c, &lvl);
        uint64_t k = kmb_treedata_tiles(m);
        while (kmb_treedata_next_tile(n, &c, &lvl, &level, &index)) {
            CHECKF(kmb_treedata_tile_ordinal(level, index) == k, "m=%" PRIu64, m);
            k++;
        }
        CHECK_EQ_U64(k, kmb_treedata_tiles(n));
    }
}

TEST(treedata_header_checks)
{
    uint8_t h[KMB_TREEDATA_HEADER];
    kmb_treedata_put_header(h);
    CHECK(memcmp(h, "KMBTREE\0\x01\x05\x08\x00", 12) == 0);
    CHECK(kmb_treedata_header_ok(h));
    for (size_t i = 0; i < sizeof(h) * 8; i++) {
        h[i / 8] ^= (uint8_t)(1u << (i % 8));
        CHECKF(!kmb_treedata_header_ok(h), "bit %zu", i);
        h[i / 8] ^= (uint8_t)(1u << (i % 8));
    }
}

TEST(treedata_tile_checks)
{
    uint8_t nodes[256][32], *tile = malloc(KMB_TREEDATA_TILE);
    CHECK(tile != NULL);
    for (int i = 0; i < 256; i++) memset(nodes[i], i, 32);
    kmb_treedata_put_tile(tile, 5, 0x0102030405060708ull, (const uint8_t (*)[32])nodes);
    int ok = kmb_treedata_tile_ok(tile, 5, 0x0102030405060708ull) &&
             !kmb_treedata_tile_ok(tile, 0, 0x0102030405060708ull) &&
             !kmb_treedata_tile_ok(tile, 5, 0x0102030405060709ull) &&
             tile[0] == 5 && tile[4] == 0x08 && tile[11] == 0x01 &&
             memcmp(tile + 12, nodes, sizeof(nodes)) == 0;
    /* Every bit flip is caught (CRC-32 catches any single-bit error). */
    for (size_t i = 0; ok && i < (size_t)KMB_TREEDATA_TILE * 8; i += 3) {
        tile[i / 8] ^= (uint8_t)(1u << (i % 8));
        if (kmb_treedata_tile_ok(tile, 5, 0x0102030405060708ull)) ok = 0;
        tile[i / 8] ^= (uint8_t)(1u << (i % 8));
    }
    free(tile);
    CHECK(ok);
}

TEST(treedata_footer_and_frontier_checks)
{
    const uint64_t n = 9000;
    size_t len = 32 + 32 * (size_t)kmb_treedata_frontier_nodes(n);
    uint8_t *front = malloc(len), foot[KMB_TREEDATA_FOOTER];
    CHECK(front != NULL);
    for (size_t i = 0; i < len; i++) front[i] = (uint8_t)(i * 7);
    kmb_treedata_put_footer(foot, n, front, len);
    uint64_t got = 0;
    int ok = kmb_treedata_footer_n(foot, &got) && got == n &&
             kmb_treedata_frontier_ok(front, len, foot) &&
             !kmb_treedata_frontier_ok(front, len - 32, foot) && memcmp(foot + 12, "KMBF", 4) == 0;
    for (size_t i = 0; ok && i < len * 8; i += 5) {
        front[i / 8] ^= (uint8_t)(1u << (i % 8));
        if (kmb_treedata_frontier_ok(front, len, foot)) ok = 0;
        front[i / 8] ^= (uint8_t)(1u << (i % 8));
    }
    for (size_t i = 0; ok && i < sizeof(foot) * 8; i++) {
        foot[i / 8] ^= (uint8_t)(1u << (i % 8));
        if (kmb_treedata_frontier_ok(front, len, foot)) ok = 0;
        foot[i / 8] ^= (uint8_t)(1u << (i % 8));
    }
    /* n = 0 is never written: a footer saying so is refused. */
    uint8_t zero[KMB_TREEDATA_FOOTER];
    kmb_treedata_put_footer(zero, 0, front, 32);
    ok = ok && !kmb_treedata_footer_n(zero, &got);
    free(front);
    CHECK(ok);
}
