/*
 * test_merkle.c — RFC 9162 hashing, compact ranges, proofs and their verification
 * (merkle.h), and the tlog-tiles geometry (tile.h).
 *
 * Proofs are checked three ways: against SPEC §6's vectors, against the RFC's recursive
 * definitions written out below independently of merkle.c's iterative walk (over a naive
 * recursive MTH), and by verifying every generated proof and rejecting every one-bit change.
 */
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "kimberlite/chain.h"
#include "kimberlite/errors.h"
#include "kimberlite/merkle.h"
#include "kimberlite/tile.h"

#define N_LEAVES 300

static uint8_t g_leaves[N_LEAVES][32];

/* Leaves of the test tree: leaf hashes of the chain hashes of payloads "e0", "e1", … */
static void make_leaves(void)
{
    uint8_t h[32];
    char payload[16];
    for (int i = 0; i < N_LEAVES; i++) {
        int len = snprintf(payload, sizeof payload, "e%d", i);
        kmb_chain_hash(h, i ? h : NULL, payload, (size_t)len);
        kmb_merkle_leaf_hash(g_leaves[i], h, 32);
    }
}

/* MTH(D[a:b]) by the RFC's recursion, nothing shared with merkle.c's proof code. */
static void ref_mth(uint8_t out[32], uint64_t a, uint64_t b)
{
    if (b - a == 1) {
        memcpy(out, g_leaves[a], 32);
        return;
    }
    uint64_t k = 1;
    while (k * 2 < b - a) k *= 2;
    uint8_t l[32], r[32];
    ref_mth(l, a, a + k);
    ref_mth(r, a + k, b);
    kmb_merkle_node_hash(out, l, r);
}

/* PATH(m, D[a:b]) appended to out (RFC order: deepest first, so recurse then append). */
static void ref_path(uint8_t (*out)[32], unsigned *n, uint64_t m, uint64_t a, uint64_t b)
{
    if (b - a <= 1) return;
    uint64_t k = 1;
    while (k * 2 < b - a) k *= 2;
    if (m < k) {
        ref_path(out, n, m, a, a + k);
        ref_mth(out[(*n)++], a + k, b);
    } else {
        ref_path(out, n, m - k, a + k, b);
        ref_mth(out[(*n)++], a, a + k);
    }
}

/* SUBPROOF(m, D[a:b], flag). */
static void ref_subproof(uint8_t (*out)[32], unsigned *n, uint64_t m, uint64_t a, uint64_t b,
                         int flag)
{
    if (m == b - a) {
        if (!flag) ref_mth(out[(*n)++], a, b);
        return;
    }
    uint64_t k = 1;
    while (k * 2 < b - a) k *= 2;
    if (m <= k) {
        ref_subproof(out, n, m, a, a + k, flag);
        ref_mth(out[(*n)++], a + k, b);
    } else {
        ref_subproof(out, n, m - k, a + k, b, 0);
        ref_mth(out[(*n)++], a, a + k);
    }
}

TEST(merkle_spec_vectors)
{
    uint8_t h[3][32], leaf[3][32], want[32], got[32];
    kmb_chain_hash(h[0], NULL, "event1", 6);
    kmb_chain_hash(h[1], h[0], "event2", 6);
    kmb_chain_hash(h[2], h[1], "event3", 6);
    for (int i = 0; i < 3; i++) kmb_merkle_leaf_hash(leaf[i], h[i], 32);
    kt_unhex(want, 32, "5be5e2dc53091c14c5db48c3ace1b79d9e6586b470cfc40bd1cf11d479b16003");
    CHECK(memcmp(leaf[0], want, 32) == 0);
    kt_unhex(want, 32, "fc5f28ed108ed9bab385e83cba6f70e7603ba2b08758b3b00b681aa27e3623cf");
    CHECK(memcmp(leaf[1], want, 32) == 0);
    kt_unhex(want, 32, "5a779d72c6abdf44cebc6afb01203752714899534420c9b8f1ea2e17d30f383d");
    CHECK(memcmp(leaf[2], want, 32) == 0);
    kmb_merkle_root(got, (const uint8_t(*)[32])leaf, 2);
    kt_unhex(want, 32, "21796c878398dd34f9c799bde6e2d1557a65b83f45f25376f16bae0257b901ae");
    CHECK(memcmp(got, want, 32) == 0);
    kmb_merkle_root(got, (const uint8_t(*)[32])leaf, 3);
    kt_unhex(want, 32, "39f1336fb10972e633b68d2acec163fe94b31b2bdec6d5475960942d0e1585ed");
    CHECK(memcmp(got, want, 32) == 0);

    kmb_merkle_leaves t = {(const uint8_t(*)[32])leaf, 3};
    uint8_t proof[KMB_MERKLE_MAX_CONSISTENCY][32], root2[32];
    unsigned n = 99;
    kmb_merkle_root(root2, (const uint8_t(*)[32])leaf, 2);
    CHECK_EQ_INT(kmb_merkle_inclusion_proof(proof, &n, kmb_merkle_leaves_node, &t, 2, 3), KMB_OK);
    CHECK_EQ_INT(n, 1);
    CHECK(memcmp(proof[0], root2, 32) == 0);
    CHECK_EQ_INT(kmb_merkle_inclusion_proof(proof, &n, kmb_merkle_leaves_node, &t, 0, 2), KMB_OK);
    CHECK_EQ_INT(n, 1);
    CHECK(memcmp(proof[0], leaf[1], 32) == 0);
    CHECK_EQ_INT(kmb_merkle_consistency_proof(proof, &n, kmb_merkle_leaves_node, &t, 1, 3),
                 KMB_OK);
    CHECK_EQ_INT(n, 2);
    CHECK(memcmp(proof[0], leaf[1], 32) == 0);
    CHECK(memcmp(proof[1], leaf[2], 32) == 0);
}

TEST(merkle_empty_root_is_sha256_of_nothing)
{
    uint8_t got[32], want[32];
    kt_unhex(want, 32, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    kmb_merkle_empty_root(got);
    CHECK(memcmp(got, want, 32) == 0);
    kmb_merkle_root(got, NULL, 0);
    CHECK(memcmp(got, want, 32) == 0);
    kmb_merkle_range r;
    kmb_merkle_range_init(&r);
    kmb_merkle_range_root(&r, got);
    CHECK(memcmp(got, want, 32) == 0);
}

TEST(merkle_node_hash_output_may_alias_inputs)
{
    uint8_t a[32], b[32], want[32];
    kt_fill_random(a, 32, 1);
    kt_fill_random(b, 32, 2);
    kmb_merkle_node_hash(want, a, b);
    kmb_merkle_node_hash(a, a, b);
    CHECK(memcmp(a, want, 32) == 0);
}

struct visit_log {
    unsigned calls;
    uint64_t fail_at;
};

/* Checks every completed node against the reference MTH of its leaves. */
static int check_visit(void *ctx, unsigned level, uint64_t index, const uint8_t hash[32])
{
    struct visit_log *v = ctx;
    v->calls++;
    if (v->calls == v->fail_at) return kmb_error_set(KMB_EIO, 5, "injected");
    uint8_t want[32];
    ref_mth(want, index << level, (index + 1) << level);
    return memcmp(want, hash, 32) == 0 ? KMB_OK : KMB_ERROR;
}

TEST(merkle_compact_range_gives_every_root_and_every_node)
{
    make_leaves();
    kmb_merkle_range r;
    kmb_merkle_range_init(&r);
    struct visit_log v = {0, 0};
    uint8_t got[32], want[32];
    for (uint64_t n = 1; n <= N_LEAVES; n++) {
        CHECK_EQ_INT(kmb_merkle_range_append(&r, g_leaves[n - 1], check_visit, &v), KMB_OK);
        CHECK_EQ_U64(r.size, n);
        CHECK_EQ_INT(r.count, __builtin_popcountll(n));
        kmb_merkle_range_root(&r, got);
        ref_mth(want, 0, n);
        CHECKF(memcmp(got, want, 32) == 0, "root of size %d", (int)n);
        kmb_merkle_root(got, (const uint8_t(*)[32])g_leaves, n);
        CHECKF(memcmp(got, want, 32) == 0, "kmb_merkle_root of size %d", (int)n);
    }
    /* 2n - popcount(n) perfect subtrees complete while n leaves arrive. */
    CHECK_EQ_INT(v.calls, 2 * N_LEAVES - __builtin_popcountll(N_LEAVES));
}

TEST(merkle_compact_range_append_is_unchanged_when_visit_fails)
{
    make_leaves();
    kmb_merkle_range r, before;
    kmb_merkle_range_init(&r);
    for (int i = 0; i < 7; i++) CHECK_EQ_INT(kmb_merkle_range_append(&r, g_leaves[i], NULL, NULL), KMB_OK);
    before = r;
    /* The 8th leaf completes levels 0..3: fail at each in turn. */
    for (uint64_t k = 1; k <= 4; k++) {
        struct visit_log v = {0, k};
        CHECK_EQ_INT(kmb_merkle_range_append(&r, g_leaves[7], check_visit, &v), KMB_EIO);
        CHECK(memcmp(&r, &before, sizeof r) == 0);
    }
    r.size = UINT64_MAX;
    CHECK_EQ_INT(kmb_merkle_range_append(&r, g_leaves[0], NULL, NULL), KMB_EINVAL);
}

TEST(merkle_range_load_and_tree_root_from_an_accessor)
{
    make_leaves();
    kmb_merkle_leaves t = {(const uint8_t(*)[32])g_leaves, N_LEAVES};
    kmb_merkle_range grown, loaded;
    kmb_merkle_range_init(&grown);
    uint8_t a[32], b[32];
    for (uint64_t n = 0; n <= N_LEAVES; n++) {
        if (n > 0) CHECK_EQ_INT(kmb_merkle_range_append(&grown, g_leaves[n - 1], NULL, NULL), KMB_OK);
        CHECK_EQ_INT(kmb_merkle_range_load(&loaded, kmb_merkle_leaves_node, &t, n), KMB_OK);
        CHECK_EQ_U64(loaded.size, n);
        CHECK_EQ_INT(loaded.count, grown.count);
        CHECKF(memcmp(loaded.hashes, grown.hashes, 32 * (size_t)grown.count) == 0, "size %d", (int)n);
        CHECK_EQ_INT(kmb_merkle_tree_root(a, kmb_merkle_leaves_node, &t, n), KMB_OK);
        kmb_merkle_range_root(&loaded, b);
        CHECK(memcmp(a, b, 32) == 0);
    }
    /* Resume integration from a loaded range: the same roots as growing from scratch. */
    CHECK_EQ_INT(kmb_merkle_range_load(&loaded, kmb_merkle_leaves_node, &t, 77), KMB_OK);
    for (uint64_t n = 78; n <= N_LEAVES; n++)
        CHECK_EQ_INT(kmb_merkle_range_append(&loaded, g_leaves[n - 1], NULL, NULL), KMB_OK);
    kmb_merkle_range_root(&loaded, a);
    kmb_merkle_range_root(&grown, b);
    CHECK(memcmp(a, b, 32) == 0);
    /* An accessor error leaves the range as it was. */
    kmb_merkle_range before = loaded;
    kmb_merkle_leaves small = {(const uint8_t(*)[32])g_leaves, 10};
    CHECK_EQ_INT(kmb_merkle_range_load(&loaded, kmb_merkle_leaves_node, &small, 11), KMB_EINVAL);
    CHECK(memcmp(&loaded, &before, sizeof before) == 0);
}

TEST(merkle_inclusion_proofs_match_the_rfc_and_verify)
{
    make_leaves();
    kmb_merkle_leaves t = {(const uint8_t(*)[32])g_leaves, N_LEAVES};
    uint8_t got[KMB_MERKLE_MAX_INCLUSION][32], want[KMB_MERKLE_MAX_INCLUSION][32], root[32];
    uint8_t next[32];
    for (uint64_t n = 1; n < N_LEAVES; n += (n < 70 ? 1 : 13)) {
        ref_mth(root, 0, n);
        ref_mth(next, 0, n + 1);
        for (uint64_t i = 0; i < n; i++) {
            unsigned gn = 0, wn = 0;
            CHECK_EQ_INT(kmb_merkle_inclusion_proof(got, &gn, kmb_merkle_leaves_node, &t, i, n),
                         KMB_OK);
            ref_path(want, &wn, i, 0, n);
            CHECKF(gn == wn && memcmp(got, want, 32 * (size_t)gn) == 0, "proof (%d, %d)", (int)i,
                   (int)n);
            CHECK_EQ_INT(gn, kmb_merkle_inclusion_length(i, n));
            CHECKF(kmb_merkle_verify_inclusion(g_leaves[i], i, n, (const uint8_t(*)[32])got, gn,
                                               root) == KMB_OK,
                   "verify (%d, %d): %s", (int)i, (int)n, kmb_error_last()->message);
            /* Wrong index, wrong size, wrong leaf: rejected. */
            if (i + 1 < n)
                CHECK(kmb_merkle_verify_inclusion(g_leaves[i], i + 1, n,
                                                  (const uint8_t(*)[32])got, gn,
                                                  root) == KMB_EPROOF);
            /* Against the next tree's (size, root), the old proof fails. (Against the old root
             * with a larger size it may pass: a size is only meaningful with its own root,
             * which is why verifiers take both from one signed checkpoint.) */
            CHECKF(kmb_merkle_verify_inclusion(g_leaves[i], i, n + 1, (const uint8_t(*)[32])got,
                                               gn, next) == KMB_EPROOF,
                   "(%d, %d + 1)", (int)i, (int)n);
            CHECK(kmb_merkle_verify_inclusion(g_leaves[(i + 1) % N_LEAVES], i, n,
                                              (const uint8_t(*)[32])got, gn, root) == KMB_EPROOF);
        }
    }
}

TEST(merkle_inclusion_rejects_every_bit_flip_and_length_change)
{
    make_leaves();
    kmb_merkle_leaves t = {(const uint8_t(*)[32])g_leaves, N_LEAVES};
    uint8_t p[KMB_MERKLE_MAX_INCLUSION + 1][32], root[32], leaf[32];
    const uint64_t n = 37, i = 20;
    unsigned len;
    CHECK_EQ_INT(kmb_merkle_inclusion_proof(p, &len, kmb_merkle_leaves_node, &t, i, n), KMB_OK);
    ref_mth(root, 0, n);
    memcpy(leaf, g_leaves[i], 32);
    for (unsigned bit = 0; bit < 32 * 8 * len; bit++) {
        p[bit / 256][(bit / 8) % 32] ^= (uint8_t)(1u << (bit % 8));
        CHECK(kmb_merkle_verify_inclusion(leaf, i, n, (const uint8_t(*)[32])p, len, root) == KMB_EPROOF);
        p[bit / 256][(bit / 8) % 32] ^= (uint8_t)(1u << (bit % 8));
    }
    for (unsigned bit = 0; bit < 256; bit++) {
        leaf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        CHECK(kmb_merkle_verify_inclusion(leaf, i, n, (const uint8_t(*)[32])p, len, root) == KMB_EPROOF);
        leaf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        root[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        CHECK(kmb_merkle_verify_inclusion(leaf, i, n, (const uint8_t(*)[32])p, len, root) == KMB_EPROOF);
        root[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    CHECK(kmb_merkle_verify_inclusion(leaf, i, n, (const uint8_t(*)[32])p, len, root) == KMB_OK);
    CHECK(kmb_merkle_verify_inclusion(leaf, i, n, (const uint8_t(*)[32])p, len - 1, root) == KMB_EPROOF);
    memcpy(p[len], root, 32);
    CHECK(kmb_merkle_verify_inclusion(leaf, i, n, (const uint8_t(*)[32])p, len + 1, root) == KMB_EPROOF);
    CHECK(kmb_merkle_verify_inclusion(leaf, n, n, (const uint8_t(*)[32])p, len, root) == KMB_EPROOF);
    CHECK(kmb_merkle_verify_inclusion(leaf, 0, 0, (const uint8_t(*)[32])p, 0, root) == KMB_EPROOF);
    CHECK(strstr(kmb_error_last()->message, "below the tree size") != NULL);
}

TEST(merkle_consistency_proofs_match_the_rfc_and_verify)
{
    make_leaves();
    kmb_merkle_leaves t = {(const uint8_t(*)[32])g_leaves, N_LEAVES};
    uint8_t got[KMB_MERKLE_MAX_CONSISTENCY][32], want[KMB_MERKLE_MAX_CONSISTENCY][32];
    uint8_t r1[32], r2[32];
    for (uint64_t n = 1; n <= N_LEAVES; n += (n < 64 ? 1 : 11)) {
        ref_mth(r2, 0, n);
        for (uint64_t m = 1; m <= n; m += (n < 64 ? 1 : 7)) {
            unsigned gn = 0, wn = 0;
            CHECK_EQ_INT(kmb_merkle_consistency_proof(got, &gn, kmb_merkle_leaves_node, &t, m, n),
                         KMB_OK);
            ref_subproof(want, &wn, m, 0, n, 1);
            CHECKF(gn == wn && memcmp(got, want, 32 * (size_t)gn) == 0, "proof (%d -> %d)",
                   (int)m, (int)n);
            CHECK_EQ_INT(gn, kmb_merkle_consistency_length(m, n));
            ref_mth(r1, 0, m);
            CHECKF(kmb_merkle_verify_consistency(m, n, (const uint8_t(*)[32])got, gn, r1, r2) ==
                       KMB_OK,
                   "verify %d -> %d: %s", (int)m, (int)n, kmb_error_last()->message);
            if (m < n) {
                CHECK(kmb_merkle_verify_consistency(m, n, (const uint8_t(*)[32])got, gn, r2, r2) ==
                      KMB_EPROOF);
                CHECK(kmb_merkle_verify_consistency(m, n, (const uint8_t(*)[32])got, gn, r1, r1) ==
                      KMB_EPROOF);
                CHECK(kmb_merkle_verify_consistency(m + 1, n, (const uint8_t(*)[32])got, gn, r1,
                                                    r2) == KMB_EPROOF);
                CHECK(kmb_merkle_verify_consistency(n, m, (const uint8_t(*)[32])got, gn, r1, r2) ==
                      KMB_EPROOF);
                for (unsigned j = 0; j < gn; j++) {
                    got[j][j % 32] ^= 0x10;
                    CHECK(kmb_merkle_verify_consistency(m, n, (const uint8_t(*)[32])got, gn, r1,
                                                        r2) == KMB_EPROOF);
                    got[j][j % 32] ^= 0x10;
                }
            }
        }
    }
}

TEST(merkle_consistency_edge_cases_are_rejected)
{
    make_leaves();
    uint8_t r1[32], r2[32], p[2][32];
    ref_mth(r1, 0, 5);
    ref_mth(r2, 0, 8);
    memcpy(p[0], r1, 32);
    /* Equal sizes: empty proof and equal roots only. */
    CHECK(kmb_merkle_verify_consistency(5, 5, NULL, 0, r1, r1) == KMB_OK);
    CHECK(kmb_merkle_verify_consistency(5, 5, NULL, 0, r1, r2) == KMB_EPROOF);
    CHECK(strstr(kmb_error_last()->message, "forked") != NULL);
    CHECK(kmb_merkle_verify_consistency(5, 5, (const uint8_t(*)[32])p, 1, r1, r1) == KMB_EPROOF);
    /* Size 0 is never a consistency proof, not even 0 -> 0. */
    CHECK(kmb_merkle_verify_consistency(0, 0, NULL, 0, r1, r1) == KMB_EPROOF);
    CHECK(kmb_merkle_verify_consistency(0, 8, NULL, 0, r1, r2) == KMB_EPROOF);
    CHECK(kmb_merkle_verify_consistency(0, 8, (const uint8_t(*)[32])p, 1, r1, r2) == KMB_EPROOF);
    /* Out of order, and an empty proof between different sizes. */
    CHECK(kmb_merkle_verify_consistency(8, 5, NULL, 0, r2, r1) == KMB_EPROOF);
    CHECK(kmb_merkle_verify_consistency(5, 8, NULL, 0, r1, r2) == KMB_EPROOF);
    /* Generation refuses the same arguments. */
    kmb_merkle_leaves t = {(const uint8_t(*)[32])g_leaves, 8};
    uint8_t out[KMB_MERKLE_MAX_CONSISTENCY][32];
    unsigned n = 77;
    CHECK(kmb_merkle_consistency_proof(out, &n, kmb_merkle_leaves_node, &t, 0, 8) == KMB_EINVAL);
    CHECK(kmb_merkle_consistency_proof(out, &n, kmb_merkle_leaves_node, &t, 9, 8) == KMB_EINVAL);
    CHECK(kmb_merkle_inclusion_proof(out, &n, kmb_merkle_leaves_node, &t, 8, 8) == KMB_EINVAL);
    CHECK_EQ_INT(n, 77);
    /* The in-memory accessor refuses nodes outside its tree; the error passes through. */
    CHECK(kmb_merkle_inclusion_proof(out, &n, kmb_merkle_leaves_node, &t, 3, 9) == KMB_EINVAL);
    CHECK(strstr(kmb_error_last()->message, "outside a tree of 8") != NULL);
    CHECK(kmb_merkle_subtree_root(out[0], kmb_merkle_leaves_node, &t, 3, 3) == KMB_EINVAL);
}

TEST(merkle_proof_lengths_stay_within_the_bounds_for_huge_trees)
{
    CHECK_EQ_INT(kmb_merkle_inclusion_length(0, UINT64_MAX), 64);
    CHECK(kmb_merkle_inclusion_length(UINT64_MAX - 1, UINT64_MAX) <= KMB_MERKLE_MAX_INCLUSION);
    CHECK(kmb_merkle_consistency_length(3, UINT64_MAX) <= KMB_MERKLE_MAX_CONSISTENCY);
    CHECK(kmb_merkle_consistency_length((UINT64_MAX >> 1) | 1, UINT64_MAX) <=
          KMB_MERKLE_MAX_CONSISTENCY);
    CHECK_EQ_INT(kmb_merkle_inclusion_length(5, 5), 0);
    CHECK_EQ_INT(kmb_merkle_consistency_length(4, 4), 0);
}

/* ---- tiles ----------------------------------------------------------------------------- */

TEST(tile_counts_match_the_tlog_tiles_example)
{
    /* c2sp.org/tlog-tiles: a tree of 70,000 leaves. */
    uint64_t full;
    unsigned partial;
    CHECK_EQ_INT(kmb_tile_levels(70000), 3);
    kmb_tile_count(70000, 0, &full, &partial);
    CHECK_EQ_U64(full, 273);
    CHECK_EQ_INT(partial, 112);
    kmb_tile_count(70000, 1, &full, &partial);
    CHECK_EQ_U64(full, 1);
    CHECK_EQ_INT(partial, 17);
    kmb_tile_count(70000, 2, &full, &partial);
    CHECK_EQ_U64(full, 0);
    CHECK_EQ_INT(partial, 1);
    kmb_tile_count(70000, 3, &full, &partial);
    CHECK_EQ_U64(full, 0);
    CHECK_EQ_INT(partial, 0);
    CHECK_EQ_INT(kmb_tile_levels(0), 0);
    CHECK_EQ_INT(kmb_tile_levels(255), 1);
    CHECK_EQ_INT(kmb_tile_levels(256), 2);
    CHECK_EQ_INT(kmb_tile_levels(UINT64_MAX), 8);
    kmb_tile_count(UINT64_MAX, 7, &full, &partial);
    CHECK_EQ_U64(full, 0);
    CHECK_EQ_INT(partial, 255);
}

TEST(tile_paths_use_three_digit_groups)
{
    char buf[KMB_TILE_PATH_MAX];
    CHECK_EQ_INT(kmb_tile_path(buf, sizeof buf, 0, 0, 256), 10);
    CHECK(strcmp(buf, "tile/0/000") == 0);
    kmb_tile_path(buf, sizeof buf, 1, 1234067, 0);
    CHECK(strcmp(buf, "tile/1/x001/x234/067") == 0);
    kmb_tile_path(buf, sizeof buf, 0, 273, 112);
    CHECK(strcmp(buf, "tile/0/273.p/112") == 0);
    kmb_tile_path(buf, sizeof buf, KMB_TILE_ENTRIES, 1000, 3);
    CHECK(strcmp(buf, "tile/entries/x001/000.p/3") == 0);
    kmb_tile_path(buf, sizeof buf, 2, UINT64_MAX, 255);
    CHECK(strcmp(buf, "tile/2/x018/x446/x744/x073/x709/x551/615.p/255") == 0);
    CHECK_EQ_INT(kmb_tile_path(buf, 8, 0, 0, 0), KMB_EINVAL);
    CHECK(buf[0] == '\0');
    CHECK_EQ_INT(kmb_tile_path(buf, sizeof buf, -2, 0, 0), KMB_EINVAL);
    CHECK_EQ_INT(kmb_tile_path(buf, sizeof buf, 64, 0, 0), KMB_EINVAL);
    CHECK_EQ_INT(kmb_tile_path(buf, sizeof buf, 0, 0, 257), KMB_EINVAL);
}

TEST(tile_locate_finds_each_node_inside_its_tile)
{
    unsigned tl, first, count;
    uint64_t ti;
    kmb_tile_locate(0, 300, &tl, &ti, &first, &count);
    CHECK(tl == 0 && ti == 1 && first == 44 && count == 1);
    kmb_tile_locate(3, 40, &tl, &ti, &first, &count); /* leaves 320..327 */
    CHECK(tl == 0 && ti == 1 && first == 64 && count == 8);
    kmb_tile_locate(8, 5, &tl, &ti, &first, &count); /* a level-1 entry */
    CHECK(tl == 1 && ti == 0 && first == 5 && count == 1);
    kmb_tile_locate(15, 1, &tl, &ti, &first, &count);
    CHECK(tl == 1 && ti == 0 && first == 128 && count == 128);
}
