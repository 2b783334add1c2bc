/*
 * kimberlite/merkle.h — RFC 9162 (Certificate Transparency 2.0, §2.1) Merkle trees: hashing,
 * compact ranges, inclusion and consistency proofs. Pure: no I/O, no allocation, no global
 * state; every function is thread-safe.
 *
 *   leaf(d)    = SHA-256(0x00 || d)
 *   node(l, r) = SHA-256(0x01 || l || r)
 *   MTH({})    = SHA-256("")
 *   MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two < n
 *
 * The entries of a Kimberlite stream's tree are the records' 32-byte chain hashes (SPEC §6);
 * this module works on leaf hashes and never looks at entries itself.
 *
 * Node addressing. A "node" (level, index) is the root of the perfect subtree over leaves
 * [index << level, (index + 1) << level): level 0 is the leaf hashes. Only perfect subtrees
 * have addresses; a tree whose size is not a power of two has "ephemeral" nodes on its right
 * edge, which the proof generators compute from perfect ones. A node accessor
 * (kmb_merkle_node_fn) is the only way proof generation reads the tree, so the same code
 * runs over an array in memory, over tile files (the tlog-tiles geometry of tile.h), or over
 * anything else that can produce the hash of a perfect subtree.
 *
 * Errors are KMB_* codes with a message in kmb_error_last() (errors.h): KMB_EINVAL for
 * arguments that are out of range, KMB_EPROOF for a proof that does not verify, and
 * whatever an accessor returns, passed through unchanged.
 */
#ifndef KIMBERLITE_MERKLE_H
#define KIMBERLITE_MERKLE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KMB_MERKLE_HASH_SIZE 32

/* A tree of size n < 2**64 is at most 64 levels tall. */
#define KMB_MERKLE_MAX_HEIGHT 64

/* Longest inclusion proof (hashes) for any tree size below 2**64. */
#define KMB_MERKLE_MAX_INCLUSION 64

/* Longest consistency proof (hashes) for any sizes below 2**64. */
#define KMB_MERKLE_MAX_CONSISTENCY 128

/* out = SHA-256(0x00 || data[0:len]). `data` may be NULL when len is 0. Cannot fail. */
void kmb_merkle_leaf_hash(uint8_t out[KMB_MERKLE_HASH_SIZE], const void *data, size_t len);

/* out = SHA-256(0x01 || left || right). `out` may alias either input. Cannot fail. */
void kmb_merkle_node_hash(uint8_t out[KMB_MERKLE_HASH_SIZE],
                          const uint8_t left[KMB_MERKLE_HASH_SIZE],
                          const uint8_t right[KMB_MERKLE_HASH_SIZE]);

/* out = SHA-256(""), the root of the empty tree. Cannot fail. */
void kmb_merkle_empty_root(uint8_t out[KMB_MERKLE_HASH_SIZE]);

/*
 * out = MTH of the n leaf hashes at `leaves` (n may be 0: the empty root). O(n) hashing,
 * O(log n) stack, no allocation. Cannot fail.
 */
void kmb_merkle_root(uint8_t out[KMB_MERKLE_HASH_SIZE],
                     const uint8_t (*leaves)[KMB_MERKLE_HASH_SIZE], uint64_t n);

/* ---- compact ranges -------------------------------------------------------------------- */

/*
 * The compact range [0, size): the roots of the perfect subtrees that the binary
 * decomposition of `size` gives, largest (leftmost) first — one per set bit of `size`, so at
 * most 64. It is all a writer needs to integrate further leaves in O(log n) amortised and to
 * get the root of the tree at its current size. A zeroed struct is the empty range.
 * Plain data: copy it freely; it owns nothing.
 */
typedef struct kmb_merkle_range {
    uint64_t size;                                           /* leaves integrated */
    unsigned count;                                          /* popcount(size) */
    uint8_t hashes[KMB_MERKLE_MAX_HEIGHT][KMB_MERKLE_HASH_SIZE]; /* largest subtree first */
} kmb_merkle_range;

/*
 * Called by kmb_merkle_range_append for every node that becomes complete (a new perfect
 * subtree: the leaf itself at level 0, then each merge). Return KMB_OK to go on; any other
 * value stops the append and is returned (the range is then left unchanged).
 */
typedef int (*kmb_merkle_visit_fn)(void *ctx, unsigned level, uint64_t index,
                                   const uint8_t hash[KMB_MERKLE_HASH_SIZE]);

/* Reset `r` to the empty range. */
void kmb_merkle_range_init(kmb_merkle_range *r);

/*
 * Append one leaf hash to `r`, merging the perfect subtrees it completes. `visit` (may be
 * NULL) sees each completed node, lowest level first, before `r` is updated.
 * Errors: KMB_EINVAL if r->size is already 2**64 - 1; whatever `visit` returns. On error
 * `r` is unchanged.
 */
int kmb_merkle_range_append(kmb_merkle_range *r, const uint8_t leaf[KMB_MERKLE_HASH_SIZE],
                            kmb_merkle_visit_fn visit, void *ctx);

/* out = the root of the tree of r->size leaves (the empty root for size 0). Cannot fail. */
void kmb_merkle_range_root(const kmb_merkle_range *r, uint8_t out[KMB_MERKLE_HASH_SIZE]);

/* ---- proofs over a node accessor --------------------------------------------------------- */

/*
 * Write the hash of node (level, index) to `out`: the root of the perfect subtree over leaves
 * [index << level, (index + 1) << level). The proof functions only ask for nodes that lie
 * wholly inside the tree they were given. Return KMB_OK, or an error code (with
 * kmb_error_set) that the caller gets back unchanged.
 */
typedef int (*kmb_merkle_node_fn)(void *ctx, unsigned level, uint64_t index,
                                  uint8_t out[KMB_MERKLE_HASH_SIZE]);

/*
 * out = the root of the tree of the first `size` leaves (the empty root for size 0), from at
 * most 2 log2(size) accessor calls. Errors: the accessor's.
 */
int kmb_merkle_tree_root(uint8_t out[KMB_MERKLE_HASH_SIZE], kmb_merkle_node_fn get_node,
                         void *ctx, uint64_t size);

/*
 * Rebuild the compact range of the first `size` leaves from a node accessor, one call per
 * set bit of `size`: how a writer resumes integration from stored tree data after a
 * restart. Errors: the accessor's; *r is unchanged on error.
 */
int kmb_merkle_range_load(kmb_merkle_range *r, kmb_merkle_node_fn get_node, void *ctx,
                          uint64_t size);

/*
 * out = MTH(D[begin:end]) for any 0 <= begin < end, from perfect subtrees only (at most
 * 2 log2(end - begin) accessor calls when begin is aligned as in an RFC 9162 tree).
 * Errors: KMB_EINVAL if begin >= end; the accessor's.
 */
int kmb_merkle_subtree_root(uint8_t out[KMB_MERKLE_HASH_SIZE], kmb_merkle_node_fn get_node,
                            void *ctx, uint64_t begin, uint64_t end);

/* The number of hashes in the inclusion proof of `index` in a tree of `size` (index < size). */
unsigned kmb_merkle_inclusion_length(uint64_t index, uint64_t size);

/*
 * The number of hashes in the consistency proof from old_size to new_size
 * (0 < old_size <= new_size; 0 when they are equal).
 */
unsigned kmb_merkle_consistency_length(uint64_t old_size, uint64_t new_size);

/*
 * RFC 9162 §2.1.3.1 PATH(index, D[size]): write the inclusion proof to out[0 .. *out_len),
 * nearest the leaf first. `out` must hold KMB_MERKLE_MAX_INCLUSION hashes (or at least
 * kmb_merkle_inclusion_length(index, size)).
 * Errors: KMB_EINVAL unless index < size; the accessor's. *out_len is set only on success.
 */
int kmb_merkle_inclusion_proof(uint8_t (*out)[KMB_MERKLE_HASH_SIZE], unsigned *out_len,
                               kmb_merkle_node_fn get_node, void *ctx, uint64_t index,
                               uint64_t size);

/*
 * RFC 9162 §2.1.4.1 PROOF(old_size, D[new_size]): write the consistency proof to
 * out[0 .. *out_len), deepest first. `out` must hold KMB_MERKLE_MAX_CONSISTENCY hashes (or at
 * least kmb_merkle_consistency_length(old_size, new_size)). Equal sizes give an empty proof.
 * Errors: KMB_EINVAL unless 0 < old_size <= new_size; the accessor's.
 */
int kmb_merkle_consistency_proof(uint8_t (*out)[KMB_MERKLE_HASH_SIZE], unsigned *out_len,
                                 kmb_merkle_node_fn get_node, void *ctx, uint64_t old_size,
                                 uint64_t new_size);

/*
 * A node accessor over an array of leaf hashes in memory (ctx: a kmb_merkle_leaves). Each
 * call hashes the 2**level leaves of the node: O(size) per proof, meant for small trees and
 * tests. The array is borrowed.
 */
typedef struct kmb_merkle_leaves {
    const uint8_t (*leaves)[KMB_MERKLE_HASH_SIZE];
    uint64_t count;
} kmb_merkle_leaves;

int kmb_merkle_leaves_node(void *ctx, unsigned level, uint64_t index,
                           uint8_t out[KMB_MERKLE_HASH_SIZE]);

/* ---- verification ------------------------------------------------------------------------ */

/*
 * RFC 9162 §2.1.3.2: KMB_OK if `proof` (proof_len hashes) proves that `leaf` is the leaf
 * hash at `index` in the tree of `size` leaves whose root is `root`.
 * Errors (KMB_EPROOF, with a message saying which check failed): index >= size; a proof of
 * the wrong length for (index, size); a root that does not match.
 */
int kmb_merkle_verify_inclusion(const uint8_t leaf[KMB_MERKLE_HASH_SIZE], uint64_t index,
                                uint64_t size, const uint8_t (*proof)[KMB_MERKLE_HASH_SIZE],
                                size_t proof_len, const uint8_t root[KMB_MERKLE_HASH_SIZE]);

/*
 * RFC 9162 §2.1.4.2: KMB_OK if `proof` proves that the tree (new_size, new_root) extends the
 * tree (old_size, old_root). Equal sizes verify only with an empty proof and equal roots.
 * Errors (KMB_EPROOF): old_size == 0; old_size > new_size; a proof of the wrong length;
 * equal sizes with a non-empty proof or different roots; either root not matching.
 */
int kmb_merkle_verify_consistency(uint64_t old_size, uint64_t new_size,
                                  const uint8_t (*proof)[KMB_MERKLE_HASH_SIZE],
                                  size_t proof_len, const uint8_t old_root[KMB_MERKLE_HASH_SIZE],
                                  const uint8_t new_root[KMB_MERKLE_HASH_SIZE]);

#ifdef __cplusplus
}
#endif
#endif
