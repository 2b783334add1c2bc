/*
 * tile.c — C2SP tlog-tiles geometry and paths (tile.h). Arithmetic only.
 */
#include "kimberlite/tile.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "kimberlite/errors.h"

/* Hashes of Merkle level 8*level in a tree of `size` leaves: full nodes only. */
static uint64_t level_width(uint64_t size, unsigned level)
{
    unsigned shift = level * KMB_TILE_HEIGHT;
    return shift >= 64 ? 0 : size >> shift;
}

unsigned kmb_tile_levels(uint64_t size)
{
    unsigned n = 0;
    while (level_width(size, n) > 0) n++;
    return n;
}

void kmb_tile_count(uint64_t size, unsigned level, uint64_t *full, unsigned *partial)
{
    uint64_t w = level_width(size, level);
    *full = w / KMB_TILE_WIDTH;
    *partial = (unsigned)(w % KMB_TILE_WIDTH);
}

void kmb_tile_locate(unsigned node_level, uint64_t node_index, unsigned *tile_level,
                     uint64_t *tile_index, unsigned *first, unsigned *count)
{
    unsigned sub = node_level % KMB_TILE_HEIGHT;
    uint64_t entry = node_index << sub; /* first level-8L hash under the node */
    *tile_level = node_level / KMB_TILE_HEIGHT;
    *tile_index = entry / KMB_TILE_WIDTH;
    *first = (unsigned)(entry % KMB_TILE_WIDTH);
    *count = 1u << sub;
}

int kmb_tile_path(char *out, size_t cap, int level, uint64_t index, unsigned width)
{
    if (cap > 0) out[0] = '\0';
    if (level < KMB_TILE_ENTRIES || level > 63)
        return kmb_error_set(KMB_EINVAL, 0, "tile level %d is out of range (-1 for entries, 0..63)",
                             level);
    if (width > KMB_TILE_WIDTH)
        return kmb_error_set(KMB_EINVAL, 0, "tile width %u is above %d", width, KMB_TILE_WIDTH);
    char buf[KMB_TILE_PATH_MAX];
    int n;
    if (level == KMB_TILE_ENTRIES)
        n = snprintf(buf, sizeof buf, "tile/entries/");
    else
        n = snprintf(buf, sizeof buf, "tile/%d/", level);
    /* The index in three-digit groups, most significant first: at most 7 groups. */
    unsigned groups[7];
    int g = 0;
    uint64_t x = index;
    do {
        groups[g++] = (unsigned)(x % 1000);
        x /= 1000;
    } while (x > 0);
    while (g-- > 0) n += snprintf(buf + n, sizeof buf - (size_t)n, g > 0 ? "x%03u/" : "%03u", groups[g]);
    if (width > 0 && width < KMB_TILE_WIDTH)
        n += snprintf(buf + n, sizeof buf - (size_t)n, ".p/%u", width);
    if ((size_t)n >= cap)
        return kmb_error_set(KMB_EINVAL, 0, "tile path needs %d bytes, the buffer has %zu", n + 1,
                             cap);
    memcpy(out, buf, (size_t)n + 1);
    return n;
}
