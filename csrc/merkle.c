/*
 * merkle.c — RFC 9162 Merkle tree hashing, compact ranges and proofs (merkle.h).
 *
 * Proof generation walks the RFC's recursive definitions (PATH, SUBPROOF) iteratively from
 * the root down, asking a node accessor for perfect subtrees only; ephemeral right-edge nodes
 * are folded from them here. Verification is the RFC's own algorithms (§2.1.3.2, §2.1.4.2),
 * preceded by an exact proof-length check so that a proof padded or cut short is rejected
 * with a message that says so, not just "root mismatch".
 *
 * SHA-256 uses OpenSSL's low-level calls on a stack context, as chain.c does (no per-hash
 * allocation); OPENSSL_SUPPRESS_DEPRECATED keeps OpenSSL 3 quiet about them.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include "kimberlite/merkle.h"

#include <inttypes.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "kimberlite/errors.h"

#define HS KMB_MERKLE_HASH_SIZE

void kmb_merkle_leaf_hash(uint8_t out[HS], const void *data, size_t len)
{
    static const uint8_t prefix = 0x00;
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, &prefix, 1);
    if (len > 0) SHA256_Update(&c, data, len);
    SHA256_Final(out, &c);
}

void kmb_merkle_node_hash(uint8_t out[HS], const uint8_t left[HS], const uint8_t right[HS])
{
    uint8_t buf[1 + 2 * HS]; /* copied first, so that out may alias left or right */
    buf[0] = 0x01;
    memcpy(buf + 1, left, HS);
    memcpy(buf + 1 + HS, right, HS);
    /* The low-level calls, not the one-shot SHA256(): in OpenSSL 3 that fetches an EVP
     * digest on every call, which costs more than the hash itself. */
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, buf, sizeof buf);
    SHA256_Final(out, &c);
}

void kmb_merkle_empty_root(uint8_t out[HS])
{
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Final(out, &c);
}

/* ---- bit helpers ------------------------------------------------------------------------- */

static unsigned bit_length(uint64_t x)
{
    return x == 0 ? 0 : 64u - (unsigned)__builtin_clzll(x);
}

/* The largest power of two strictly below n (n >= 2): RFC 9162's split point k. */
static uint64_t split_point(uint64_t n)
{
    return (uint64_t)1 << (bit_length(n - 1) - 1);
}

/* ---- compact ranges ---------------------------------------------------------------------- */

void kmb_merkle_range_init(kmb_merkle_range *r)
{
    memset(r, 0, sizeof *r);
}

int kmb_merkle_range_append(kmb_merkle_range *r, const uint8_t leaf[HS],
                            kmb_merkle_visit_fn visit, void *ctx)
{
    if (r->size == UINT64_MAX)
        return kmb_error_set(KMB_EINVAL, 0, "Merkle range is full (2**64 - 1 leaves)");
    uint8_t h[HS];
    memcpy(h, leaf, HS);
    uint64_t index = r->size;
    unsigned level = 0, top = r->count;
    if (visit != NULL) {
        int rc = visit(ctx, 0, index, h);
        if (rc != KMB_OK) return rc;
    }
    /* Each set low bit of the old size is a perfect subtree that the new leaf completes. */
    while ((r->size >> level) & 1) {
        kmb_merkle_node_hash(h, r->hashes[top - 1], h);
        top--;
        level++;
        index >>= 1;
        if (visit != NULL) {
            int rc = visit(ctx, level, index, h);
            if (rc != KMB_OK) return rc;
        }
    }
    memcpy(r->hashes[top], h, HS);
    r->count = top + 1;
    r->size++;
    return KMB_OK;
}

void kmb_merkle_range_root(const kmb_merkle_range *r, uint8_t out[HS])
{
    if (r->count == 0) {
        kmb_merkle_empty_root(out);
        return;
    }
    uint8_t h[HS];
    memcpy(h, r->hashes[r->count - 1], HS);
    for (unsigned i = r->count - 1; i-- > 0;) kmb_merkle_node_hash(h, r->hashes[i], h);
    memcpy(out, h, HS);
}

void kmb_merkle_root(uint8_t out[HS], const uint8_t (*leaves)[HS], uint64_t n)
{
    kmb_merkle_range r;
    kmb_merkle_range_init(&r);
    for (uint64_t i = 0; i < n; i++) (void)kmb_merkle_range_append(&r, leaves[i], NULL, NULL);
    kmb_merkle_range_root(&r, out);
}

/* ---- proof generation -------------------------------------------------------------------- */

int kmb_merkle_subtree_root(uint8_t out[HS], kmb_merkle_node_fn get_node, void *ctx,
                            uint64_t begin, uint64_t end)
{
    if (begin >= end)
        return kmb_error_set(KMB_EINVAL, 0,
                             "empty leaf range [%" PRIu64 ", %" PRIu64 ") has no subtree root",
                             begin, end);
    uint64_t n = end - begin;
    if (n == 1) return get_node(ctx, 0, begin, out);
    if ((n & (n - 1)) == 0 && begin % n == 0) {
        unsigned level = (unsigned)__builtin_ctzll(n);
        return get_node(ctx, level, begin >> level, out);
    }
    uint64_t k = split_point(n);
    uint8_t left[HS], right[HS];
    int rc = kmb_merkle_subtree_root(left, get_node, ctx, begin, begin + k);
    if (rc != KMB_OK) return rc;
    rc = kmb_merkle_subtree_root(right, get_node, ctx, begin + k, end);
    if (rc != KMB_OK) return rc;
    kmb_merkle_node_hash(out, left, right);
    return KMB_OK;
}

int kmb_merkle_tree_root(uint8_t out[HS], kmb_merkle_node_fn get_node, void *ctx,
                         uint64_t size)
{
    if (size == 0) {
        kmb_merkle_empty_root(out);
        return KMB_OK;
    }
    return kmb_merkle_subtree_root(out, get_node, ctx, 0, size);
}

int kmb_merkle_range_load(kmb_merkle_range *r, kmb_merkle_node_fn get_node, void *ctx,
                          uint64_t size)
{
    kmb_merkle_range tmp;
    kmb_merkle_range_init(&tmp);
    uint64_t begin = 0;
    for (unsigned level = 64; level-- > 0;) {
        if (!((size >> level) & 1)) continue;
        /* The perfect subtree of 2**level leaves that starts at `begin`. */
        int rc = get_node(ctx, level, begin >> level, tmp.hashes[tmp.count]);
        if (rc != KMB_OK) return rc;
        tmp.count++;
        begin += (uint64_t)1 << level;
    }
    tmp.size = size;
    *r = tmp;
    return KMB_OK;
}

/* transparency-dev/merkle's decomposition: the inner part (below the point where the paths
 * to index and to size-1 meet) and the border part (right-edge siblings above it). */
static void decompose(uint64_t index, uint64_t size, unsigned *inner, unsigned *border)
{
    *inner = bit_length(index ^ (size - 1));
    *border = (unsigned)__builtin_popcountll(*inner >= 64 ? 0 : index >> *inner);
}

unsigned kmb_merkle_inclusion_length(uint64_t index, uint64_t size)
{
    if (index >= size) return 0;
    unsigned inner, border;
    decompose(index, size, &inner, &border);
    return inner + border;
}

unsigned kmb_merkle_consistency_length(uint64_t old_size, uint64_t new_size)
{
    if (old_size == 0 || old_size >= new_size) return 0;
    unsigned shift = (unsigned)__builtin_ctzll(old_size);
    unsigned inner, border;
    decompose(old_size - 1, new_size, &inner, &border);
    inner -= shift;
    return inner + border + (old_size == ((uint64_t)1 << shift) ? 0u : 1u);
}

static void reverse_into(uint8_t (*out)[HS], uint8_t (*tmp)[HS], unsigned n)
{
    for (unsigned i = 0; i < n; i++) memcpy(out[i], tmp[n - 1 - i], HS);
}

int kmb_merkle_inclusion_proof(uint8_t (*out)[HS], unsigned *out_len,
                               kmb_merkle_node_fn get_node, void *ctx, uint64_t index,
                               uint64_t size)
{
    if (index >= size)
        return kmb_error_set(KMB_EINVAL, 0,
                             "leaf index %" PRIu64 " is not below the tree size %" PRIu64
                             "; prove a leaf that the tree contains",
                             index, size);
    uint8_t tmp[KMB_MERKLE_MAX_INCLUSION][HS];
    unsigned n = 0;
    uint64_t a = 0, b = size;
    while (b - a > 1) { /* PATH(m, D[a:b]) */
        uint64_t k = split_point(b - a);
        int rc;
        if (index - a < k) {
            rc = kmb_merkle_subtree_root(tmp[n], get_node, ctx, a + k, b);
            b = a + k;
        } else {
            rc = kmb_merkle_subtree_root(tmp[n], get_node, ctx, a, a + k);
            a = a + k;
        }
        if (rc != KMB_OK) return rc;
        n++;
    }
    reverse_into(out, tmp, n);
    *out_len = n;
    return KMB_OK;
}

int kmb_merkle_consistency_proof(uint8_t (*out)[HS], unsigned *out_len,
                                 kmb_merkle_node_fn get_node, void *ctx, uint64_t old_size,
                                 uint64_t new_size)
{
    if (old_size == 0 || old_size > new_size)
        return kmb_error_set(KMB_EINVAL, 0,
                             "consistency proof from size %" PRIu64 " to size %" PRIu64
                             ": need 0 < old_size <= new_size",
                             old_size, new_size);
    uint8_t tmp[KMB_MERKLE_MAX_CONSISTENCY][HS];
    unsigned n = 0;
    uint64_t a = 0, b = new_size, m = old_size; /* m: leaves of the old tree inside [a, b) */
    int complete = 1;                           /* SUBPROOF's flag b */
    for (;;) {
        uint64_t len = b - a;
        int rc = KMB_OK;
        if (m == len) {
            if (!complete) rc = kmb_merkle_subtree_root(tmp[n++], get_node, ctx, a, b);
            if (rc != KMB_OK) return rc;
            break;
        }
        uint64_t k = split_point(len);
        if (m <= k) {
            rc = kmb_merkle_subtree_root(tmp[n++], get_node, ctx, a + k, b);
            b = a + k;
        } else {
            rc = kmb_merkle_subtree_root(tmp[n++], get_node, ctx, a, a + k);
            a += k;
            m -= k;
            complete = 0;
        }
        if (rc != KMB_OK) return rc;
    }
    reverse_into(out, tmp, n);
    *out_len = n;
    return KMB_OK;
}

int kmb_merkle_leaves_node(void *ctx, unsigned level, uint64_t index, uint8_t out[HS])
{
    const kmb_merkle_leaves *t = ctx;
    if (level >= 64 || index >= (t->count >> level))
        return kmb_error_set(KMB_EINVAL, 0,
                             "node (level %u, index %" PRIu64 ") lies outside a tree of %" PRIu64
                             " leaves",
                             level, index, t->count);
    kmb_merkle_root(out, t->leaves + (index << level), (uint64_t)1 << level);
    return KMB_OK;
}

/* ---- verification ------------------------------------------------------------------------ */

static int same_hash(const uint8_t a[HS], const uint8_t b[HS])
{
    return CRYPTO_memcmp(a, b, HS) == 0;
}

int kmb_merkle_verify_inclusion(const uint8_t leaf[HS], uint64_t index, uint64_t size,
                                const uint8_t (*proof)[HS], size_t proof_len,
                                const uint8_t root[HS])
{
    if (index >= size)
        return kmb_error_set(KMB_EPROOF, 0,
                             "inclusion proof for leaf %" PRIu64 " in a tree of size %" PRIu64
                             ": the index must be below the tree size",
                             index, size);
    unsigned want = kmb_merkle_inclusion_length(index, size);
    if (proof_len != want)
        return kmb_error_set(KMB_EPROOF, 0,
                             "inclusion proof for leaf %" PRIu64 " in a tree of size %" PRIu64
                             " has %zu hashes; it must have exactly %u",
                             index, size, proof_len, want);
    uint64_t fn = index, sn = size - 1;
    uint8_t r[HS];
    memcpy(r, leaf, HS);
    for (size_t i = 0; i < proof_len; i++) {
        if (sn == 0) return kmb_error_set(KMB_EPROOF, 0, "inclusion proof is too long");
        if ((fn & 1) || fn == sn) {
            kmb_merkle_node_hash(r, proof[i], r);
            while (!(fn & 1) && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            kmb_merkle_node_hash(r, r, proof[i]);
        }
        fn >>= 1;
        sn >>= 1;
    }
    if (sn != 0) return kmb_error_set(KMB_EPROOF, 0, "inclusion proof is too short");
    if (!same_hash(r, root))
        return kmb_error_set(KMB_EPROOF, 0,
                             "inclusion proof for leaf %" PRIu64 " in a tree of size %" PRIu64
                             " does not lead to the given root: the leaf, the proof or the root "
                             "is not the one the log signed",
                             index, size);
    return KMB_OK;
}

int kmb_merkle_verify_consistency(uint64_t old_size, uint64_t new_size,
                                  const uint8_t (*proof)[HS], size_t proof_len,
                                  const uint8_t old_root[HS], const uint8_t new_root[HS])
{
    if (old_size == 0)
        return kmb_error_set(KMB_EPROOF, 0,
                             "consistency proof from size 0: every tree extends the empty tree, "
                             "so there is nothing to prove (check old_size)");
    if (old_size > new_size)
        return kmb_error_set(KMB_EPROOF, 0,
                             "consistency proof from size %" PRIu64 " to the smaller size %" PRIu64
                             ": a log never shrinks (sizes out of order?)",
                             old_size, new_size);
    if (old_size == new_size) {
        if (proof_len != 0)
            return kmb_error_set(KMB_EPROOF, 0,
                                 "consistency proof between equal sizes %" PRIu64
                                 " must be empty, got %zu hashes",
                                 old_size, proof_len);
        if (!same_hash(old_root, new_root))
            return kmb_error_set(KMB_EPROOF, 0,
                                 "two different roots for the same tree size %" PRIu64
                                 ": the log forked",
                                 old_size);
        return KMB_OK;
    }
    unsigned want = kmb_merkle_consistency_length(old_size, new_size);
    if (proof_len != want)
        return kmb_error_set(KMB_EPROOF, 0,
                             "consistency proof from size %" PRIu64 " to %" PRIu64
                             " has %zu hashes; it must have exactly %u",
                             old_size, new_size, proof_len, want);
    /* RFC 9162 §2.1.4.2; a power-of-two old size is its own first path element. */
    const uint8_t *first;
    size_t i;
    if ((old_size & (old_size - 1)) == 0) {
        first = old_root;
        i = 0;
    } else {
        first = proof[0];
        i = 1;
    }
    uint64_t fn = old_size - 1, sn = new_size - 1;
    while (fn & 1) {
        fn >>= 1;
        sn >>= 1;
    }
    uint8_t fr[HS], sr[HS];
    memcpy(fr, first, HS);
    memcpy(sr, first, HS);
    for (; i < proof_len; i++) {
        if (sn == 0) return kmb_error_set(KMB_EPROOF, 0, "consistency proof is too long");
        if ((fn & 1) || fn == sn) {
            kmb_merkle_node_hash(fr, proof[i], fr);
            kmb_merkle_node_hash(sr, proof[i], sr);
            while (!(fn & 1) && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            kmb_merkle_node_hash(sr, sr, proof[i]);
        }
        fn >>= 1;
        sn >>= 1;
    }
    if (sn != 0) return kmb_error_set(KMB_EPROOF, 0, "consistency proof is too short");
    if (!same_hash(fr, old_root))
        return kmb_error_set(KMB_EPROOF, 0,
                             "consistency proof from size %" PRIu64 " to %" PRIu64
                             " does not lead to the old root",
                             old_size, new_size);
    if (!same_hash(sr, new_root))
        return kmb_error_set(KMB_EPROOF, 0,
                             "consistency proof from size %" PRIu64 " to %" PRIu64
                             " does not lead to the new root: the new tree does not extend "
                             "the old one",
                             old_size, new_size);
    return KMB_OK;
}
