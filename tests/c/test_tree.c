/*
 * test_tree.c — the engine's per-stream Merkle tree (csrc/tree.c): roots and proofs against
 * merkle.h's array accessor over the chain hashes, for every size up to 130 on a rotated
 * memory stream appended in uneven batches; bounds; the stored checkpoint's compare-and-swap.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kimberlite/chain.h"
#include "kimberlite/errors.h"
#include "kimberlite/merkle.h"
#include "kimberlite/storage.h"

#define N 130

TEST(tree_roots_and_proofs_match_the_array_accessor)
{
    kmb_options o;
    kmb_options_init(&o);
    o.max_segment_size = 300;
    kmb_storage *st = NULL;
    CHECK_EQ_INT(kmb_storage_open_memory(&st, &o), KMB_OK);
    static uint8_t leaves[N][KMB_MERKLE_HASH_SIZE];
    uint8_t prev[KMB_HASH_SIZE];
    char buf[N][16];
    kmb_slice ev[N];
    for (int i = 0; i < N; i++) {
        int len = snprintf(buf[i], sizeof buf[i], "ev%d", i);
        ev[i].data = buf[i];
        ev[i].len = (size_t)len;
        uint8_t h[KMB_HASH_SIZE];
        kmb_chain_hash(h, i ? prev : NULL, buf[i], (size_t)len);
        memcpy(prev, h, sizeof prev);
        kmb_merkle_leaf_hash(leaves[i], h, KMB_HASH_SIZE);
    }
    int done = 0, k = 1;
    while (done < N) {
        int n = done + k > N ? N - done : k;
        CHECK_EQ_INT(kmb_storage_append(st, 3, ev + done, (size_t)n, NULL, 0, NULL), KMB_OK);
        done += n;
        k = k % 7 + 1;
        /* roots and proofs at every size so far (the tree catches up between batches) */
        kmb_merkle_leaves acc = {(const uint8_t(*)[KMB_MERKLE_HASH_SIZE])leaves, (uint64_t)done};
        for (uint64_t size = 1; size <= (uint64_t)done; size++) {
            uint8_t want[32], got[32];
            uint64_t used = 0;
            kmb_merkle_root(want, acc.leaves, size);
            CHECK_EQ_INT(kmb_storage_tree_root(st, 3, size, got, &used), KMB_OK);
            CHECKF(memcmp(want, got, 32) == 0 && used == size, "root %" PRIu64, size);
            uint64_t idx = (size * 7) % size;
            uint8_t p1[KMB_MERKLE_MAX_INCLUSION][32], p2[KMB_MERKLE_MAX_INCLUSION][32];
            unsigned n1 = 0, n2 = 0;
            CHECK_EQ_INT(kmb_storage_inclusion_proof(st, 3, idx, size, p1, &n1, NULL), KMB_OK);
            CHECK_EQ_INT(kmb_merkle_inclusion_proof(p2, &n2, kmb_merkle_leaves_node, &acc, idx, size), KMB_OK);
            CHECKF(n1 == n2 && memcmp(p1, p2, n1 * 32u) == 0, "inclusion %" PRIu64, size);
            uint8_t c1[KMB_MERKLE_MAX_CONSISTENCY][32], c2[KMB_MERKLE_MAX_CONSISTENCY][32];
            uint64_t old = size / 2 + 1;
            CHECK_EQ_INT(kmb_storage_consistency_proof(st, 3, old, size, c1, &n1, NULL), KMB_OK);
            CHECK_EQ_INT(kmb_merkle_consistency_proof(c2, &n2, kmb_merkle_leaves_node, &acc, old, size), KMB_OK);
            CHECKF(n1 == n2 && memcmp(c1, c2, n1 * 32u) == 0, "consistency %" PRIu64, size);
        }
    }
    uint8_t root[32], want[32];
    uint64_t size = 0;
    kmb_merkle_root(want, (const uint8_t(*)[32])leaves, N);
    CHECK_EQ_INT(kmb_storage_tree_root(st, 3, KMB_TREE_SIZE_ALL, root, &size), KMB_OK);
    CHECK(size == N && memcmp(root, want, 32) == 0);
    CHECK_EQ_INT(kmb_storage_durable_root(st, 3, root, &size), KMB_OK);
    CHECK(size == N && memcmp(root, want, 32) == 0);
    kmb_storage_free(st);
}

TEST(tree_bounds_are_einval)
{
    kmb_storage *st = NULL;
    CHECK_EQ_INT(kmb_storage_open_memory(&st, NULL), KMB_OK);
    kmb_slice ev[3] = {{"a", 1}, {"b", 1}, {"c", 1}};
    CHECK_EQ_INT(kmb_storage_append(st, 1, ev, 3, NULL, 1, NULL), KMB_OK);
    uint8_t root[32], empty[32], p[KMB_MERKLE_MAX_CONSISTENCY][32];
    unsigned n;
    kmb_merkle_empty_root(empty);
    CHECK_EQ_INT(kmb_storage_tree_root(st, 1, 0, root, NULL), KMB_OK);
    CHECK(memcmp(root, empty, 32) == 0);
    CHECK_EQ_INT(kmb_storage_tree_root(st, 1, 4, root, NULL), KMB_EINVAL);
    CHECK_EQ_INT(kmb_storage_inclusion_proof(st, 1, 3, 3, p, &n, NULL), KMB_EINVAL);
    CHECK_EQ_INT(kmb_storage_inclusion_proof(st, 1, 0, 0, p, &n, NULL), KMB_EINVAL);
    CHECK_EQ_INT(kmb_storage_consistency_proof(st, 1, 0, 3, p, &n, NULL), KMB_EINVAL);
    CHECK_EQ_INT(kmb_storage_consistency_proof(st, 1, 3, 2, p, &n, NULL), KMB_EINVAL);
    CHECK_EQ_INT(kmb_storage_consistency_proof(st, 1, 1, 4, p, &n, NULL), KMB_EINVAL);
    CHECK_EQ_INT(kmb_storage_consistency_proof(st, 1, 3, 3, p, &n, NULL), KMB_OK);
    CHECK(n == 0);
    CHECK_EQ_INT(kmb_storage_tree_root(st, 99, KMB_TREE_SIZE_ALL, root, NULL), KMB_OK);
    CHECK(memcmp(root, empty, 32) == 0);
    kmb_storage_free(st);
}

TEST(tree_checkpoint_store_is_a_compare_and_swap)
{
    kmb_storage *st = NULL;
    CHECK_EQ_INT(kmb_storage_open_memory(&st, NULL), KMB_OK);
    uint8_t *out = NULL;
    size_t len = 7;
    CHECK_EQ_INT(kmb_storage_store_checkpoint(st, 1, NULL, 0, (const uint8_t *)"x", 1), KMB_EINVAL);
    kmb_slice ev[1] = {{"a", 1}};
    CHECK_EQ_INT(kmb_storage_append(st, 1, ev, 1, NULL, 1, NULL), KMB_OK);
    CHECK_EQ_INT(kmb_storage_load_checkpoint(st, 1, &out, &len), KMB_OK);
    CHECK(out == NULL && len == 0);
    CHECK_EQ_INT(kmb_storage_store_checkpoint(st, 1, NULL, 0, (const uint8_t *)"one", 3), KMB_OK);
    CHECK_EQ_INT(kmb_storage_store_checkpoint(st, 1, NULL, 0, (const uint8_t *)"two", 3), KMB_EOFFSET);
    CHECK_EQ_INT(kmb_storage_store_checkpoint(st, 1, (const uint8_t *)"onX", 3, (const uint8_t *)"two", 3), KMB_EOFFSET);
    CHECK_EQ_INT(kmb_storage_store_checkpoint(st, 1, (const uint8_t *)"one", 3, (const uint8_t *)"two!", 4), KMB_OK);
    CHECK_EQ_INT(kmb_storage_load_checkpoint(st, 1, &out, &len), KMB_OK);
    CHECK(len == 4 && memcmp(out, "two!", 4) == 0);
    free(out);
    kmb_storage_free(st);
}
