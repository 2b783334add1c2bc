/*
 * kimberlite/tile.h — C2SP tlog-tiles geometry: which tiles a tree has, how wide they are,
 * where a node's hash lives in them, and their resource paths. Pure arithmetic and string
 * formatting: no I/O, no allocation, thread-safe.
 *
 * A tile of level L holds up to 256 consecutive hashes of Merkle level 8L (tile height 8):
 * level-0 tiles hold leaf hashes, level-1 tiles the roots of full level-0 tiles, and so on.
 * Tile N of level L holds the level-8L node hashes N*256 .. N*256 + W - 1; W = 256 for a
 * full tile, 1..255 for the partial tile at the right edge of a tree. Partial tiles are
 * never hashed upward: a level-(L+1) entry exists only for a full level-L tile.
 * Entry bundles (level "entries") group the tree's entries 256 at a time the same way.
 *
 * Paths (tlog-tiles): "tile/<L>/<N>" or "tile/<L>/<N>.p/<W>" for a partial tile, and
 * "tile/entries/<N>[.p/<W>]". N is written in groups of three decimal digits, every group
 * but the last prefixed with "x": 0 -> "000", 1234067 -> "x001/x234/067".
 */
#ifndef KIMBERLITE_TILE_H
#define KIMBERLITE_TILE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KMB_TILE_HEIGHT 8
#define KMB_TILE_WIDTH 256 /* hashes in a full tile */

/* Pass as `level` to kmb_tile_path for an entry bundle. */
#define KMB_TILE_ENTRIES (-1)

/* Longest path kmb_tile_path can produce, NUL included. */
#define KMB_TILE_PATH_MAX 64

/*
 * The number of tile levels a tree of `size` leaves has (levels with at least one full or
 * partial tile): 0 for the empty tree, 1 up to 255 leaves, 2 up to 65535, ...
 */
unsigned kmb_tile_levels(uint64_t size);

/*
 * The tiles of `level` in a tree of `size` leaves: *full = the number of full tiles
 * (indices 0 .. *full - 1), *partial = the width of the partial tile that follows them
 * (index *full), 0 when there is none. A level at or above kmb_tile_levels(size) has none.
 * For entry bundles pass level 0 (the bundles align with the level-0 tiles).
 */
void kmb_tile_count(uint64_t size, unsigned level, uint64_t *full, unsigned *partial);

/*
 * Where the hash of Merkle node (node_level, node_index) is found (merkle.h addressing):
 * in tile (*tile_level, *tile_index), as the root of the *count entries starting at
 * *first (count is 2**(node_level % 8); count 1 means the entry itself is the hash).
 */
void kmb_tile_locate(unsigned node_level, uint64_t node_index, unsigned *tile_level,
                     uint64_t *tile_index, unsigned *first, unsigned *count);

/*
 * Write the resource path of a tile to out[0 .. cap) (NUL-terminated): level >= 0 for hash
 * tiles, KMB_TILE_ENTRIES for an entry bundle; width 256 (or 0) for a full tile, 1..255 for
 * a partial one. Returns the path's length, or KMB_EINVAL (with kmb_error_last) for a level
 * below -1 or above 63, a width above 256, or a buffer shorter than the path (out is then
 * left as the empty string when cap > 0).
 */
int kmb_tile_path(char *out, size_t cap, int level, uint64_t index, unsigned width);

#ifdef __cplusplus
}
#endif
#endif
