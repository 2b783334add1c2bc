/*
 * kimberlite/treedata.h — the tree-data format: a stream's Merkle tree nodes kept next to its
 * records as a cache (docs/FORMAT.md §12), so that a new process does not rehash the stream.
 *
 * Pure: no I/O, no allocation, no global state. csrc/tree.c writes and reads the bytes through
 * the backend (sys/backend.h: tree_size, load_tree, save_tree) and decides what to trust.
 *
 * The file, byte for byte (integers little-endian):
 *
 *   header   16 B   "KMBTREE\0", version u8 = 1, step u8 = 5, tile_log u8 = 8, zero u8,
 *                   CRC-32 of the 12 bytes before it
 *   tiles    T(n) × 8,208 B, in canonical order (kmb_treedata_next_tile): each
 *                   level u8, three zero bytes, index u64, 256 × 32-byte node hashes,
 *                   CRC-32 of the 8,204 bytes before it
 *   frontier 32 B  the chain hash of entry n-1 (the stream's record n-1)
 *            then, for each stored level L = 0, 5, 10, … below 64: the ((n >> L) mod 256)
 *                   nodes of level L's incomplete tile, 32 B each
 *   footer   16 B   n u64, CRC-32 of (frontier || n), "KMBF"
 *
 * Stored levels are the multiples of KMB_TREEDATA_STEP (level 0 = the leaf hashes); tile k of
 * level L holds that level's nodes 256k … 256k+255 and is written once complete, when the
 * tree has (k+1)·256·2**L leaves. Any node of the tree is made from at most 16 stored ones.
 * Size: 33.1 bytes per record plus at most 255 nodes per level for the frontier.
 */
#ifndef KIMBERLITE_TREEDATA_H
#define KIMBERLITE_TREEDATA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KMB_TREEDATA_VERSION 1
#define KMB_TREEDATA_STEP 5       /* stored levels: multiples of this */
#define KMB_TREEDATA_TILE_LOG 8   /* nodes per tile: 2**8 */
#define KMB_TREEDATA_TILE_NODES 256
#define KMB_TREEDATA_HEADER 16
#define KMB_TREEDATA_TILE_HEAD 12 /* level, 3 zero bytes, index */
#define KMB_TREEDATA_TILE (KMB_TREEDATA_TILE_HEAD + 32 * KMB_TREEDATA_TILE_NODES + 4)
#define KMB_TREEDATA_FOOTER 16
#define KMB_TREEDATA_LEVELS 13 /* stored levels 0, 5, …, 60 */

/* T(n): the number of complete tiles of a tree of n leaves, over all stored levels. */
uint64_t kmb_treedata_tiles(uint64_t n);

/* The number of frontier nodes of a tree of n leaves (each level's incomplete tile). */
uint64_t kmb_treedata_frontier_nodes(uint64_t n);

/*
 * The length of the whole file for a tree of n >= 1 leaves. Returns 0 and sets *len, or
 * -1 if it would not fit in 64 bits.
 */
int kmb_treedata_file_len(uint64_t n, uint64_t *len);

/* Write the 16-byte header. Cannot fail. */
void kmb_treedata_put_header(uint8_t out[KMB_TREEDATA_HEADER]);

/* 1 if `hdr` is a header this version wrote (magic, version, geometry, CRC), else 0. */
int kmb_treedata_header_ok(const uint8_t hdr[KMB_TREEDATA_HEADER]);

/* Write tile (level, index) holding `nodes` (256 hashes) into out[KMB_TREEDATA_TILE]. */
void kmb_treedata_put_tile(uint8_t *out, unsigned level, uint64_t index,
                           const uint8_t (*nodes)[32]);

/*
 * 1 if `tile` (KMB_TREEDATA_TILE bytes) says it is tile (level, index) and its CRC is right;
 * its nodes then start at tile + KMB_TREEDATA_TILE_HEAD. 0 otherwise.
 */
int kmb_treedata_tile_ok(const uint8_t *tile, unsigned level, uint64_t index);

/*
 * Canonical tile order: the tiles of a tree, ordered by the number of leaves that completes
 * them, then by level. Start with *c = 0 and *lvl = 0 (or kmb_treedata_cursor_after); each
 * call returns 1 and the next tile (level, index) whose completion is at most n leaves, or 0
 * when there is none. *c and *lvl are the cursor. Cannot fail.
 */
int kmb_treedata_next_tile(uint64_t n, uint64_t *c, unsigned *lvl, unsigned *level,
                           uint64_t *index);

/* The position (0-based) of tile (level, index) in canonical order: it starts at byte
 * KMB_TREEDATA_HEADER + ordinal * KMB_TREEDATA_TILE. `level` a stored level. Cannot fail. */
uint64_t kmb_treedata_tile_ordinal(unsigned level, uint64_t index);

/*
 * Start a cursor after the tiles of a tree of `from` leaves (all of them written): the next
 * call of kmb_treedata_next_tile returns the first tile completed by a later leaf.
 */
void kmb_treedata_cursor_after(uint64_t from, uint64_t *c, unsigned *lvl);

/* Write the footer of a tree of n leaves, whose frontier bytes are `frontier` (len bytes). */
void kmb_treedata_put_footer(uint8_t out[KMB_TREEDATA_FOOTER], uint64_t n,
                             const uint8_t *frontier, size_t len);

/*
 * Parse a footer: 1 and *n if its magic is right and n >= 1, else 0 (the CRC is checked by
 * kmb_treedata_frontier_ok once the frontier is read).
 */
int kmb_treedata_footer_n(const uint8_t foot[KMB_TREEDATA_FOOTER], uint64_t *n);

/* 1 if `frontier` (len bytes) is the right length for the footer's n and matches its CRC. */
int kmb_treedata_frontier_ok(const uint8_t *frontier, size_t len,
                             const uint8_t foot[KMB_TREEDATA_FOOTER]);

#ifdef __cplusplus
}
#endif
#endif
