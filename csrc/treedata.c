/*
 * treedata.c — the tree-data format (kimberlite/treedata.h, docs/FORMAT.md §12). Pure.
 */
#include "kimberlite/treedata.h"

#include <string.h>

#include "kimberlite/crc32.h"

static const uint8_t MAGIC[8] = {'K', 'M', 'B', 'T', 'R', 'E', 'E', 0};
static const uint8_t FOOT_MAGIC[4] = {'K', 'M', 'B', 'F'};

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

uint64_t kmb_treedata_tiles(uint64_t n)
{
    uint64_t t = 0;
    for (unsigned L = 0; L + KMB_TREEDATA_TILE_LOG < 64; L += KMB_TREEDATA_STEP)
        t += n >> (L + KMB_TREEDATA_TILE_LOG);
    return t;
}

uint64_t kmb_treedata_frontier_nodes(uint64_t n)
{
    uint64_t k = 0;
    for (unsigned L = 0; L < 64; L += KMB_TREEDATA_STEP)
        k += (n >> L) & (KMB_TREEDATA_TILE_NODES - 1);
    return k;
}

int kmb_treedata_file_len(uint64_t n, uint64_t *len)
{
    uint64_t tiles, front;
    if (__builtin_mul_overflow(kmb_treedata_tiles(n), (uint64_t)KMB_TREEDATA_TILE, &tiles))
        return -1;
    front = 32 + 32 * kmb_treedata_frontier_nodes(n); /* at most 32 + 13 * 255 * 32 */
    uint64_t total = KMB_TREEDATA_HEADER + front + KMB_TREEDATA_FOOTER;
    if (__builtin_add_overflow(total, tiles, len)) return -1;
    return 0;
}

void kmb_treedata_put_header(uint8_t out[KMB_TREEDATA_HEADER])
{
    memcpy(out, MAGIC, 8);
    out[8] = KMB_TREEDATA_VERSION;
    out[9] = KMB_TREEDATA_STEP;
    out[10] = KMB_TREEDATA_TILE_LOG;
    out[11] = 0;
    put_u32(out + 12, kmb_crc32(out, 12));
}

int kmb_treedata_header_ok(const uint8_t hdr[KMB_TREEDATA_HEADER])
{
    uint8_t want[KMB_TREEDATA_HEADER];
    kmb_treedata_put_header(want);
    return memcmp(hdr, want, sizeof(want)) == 0;
}

void kmb_treedata_put_tile(uint8_t *out, unsigned level, uint64_t index,
                           const uint8_t (*nodes)[32])
{
    out[0] = (uint8_t)level;
    out[1] = out[2] = out[3] = 0;
    put_u64(out + 4, index);
    memcpy(out + KMB_TREEDATA_TILE_HEAD, nodes, 32 * KMB_TREEDATA_TILE_NODES);
    put_u32(out + KMB_TREEDATA_TILE - 4, kmb_crc32(out, KMB_TREEDATA_TILE - 4));
}

int kmb_treedata_tile_ok(const uint8_t *tile, unsigned level, uint64_t index)
{
    if (tile[0] != level || tile[1] || tile[2] || tile[3] || get_u64(tile + 4) != index)
        return 0;
    return get_u32(tile + KMB_TREEDATA_TILE - 4) == kmb_crc32(tile, KMB_TREEDATA_TILE - 4);
}

uint64_t kmb_treedata_tile_ordinal(unsigned level, uint64_t index)
{
    /* Tiles completed by fewer leaves than this one's c, and those of the levels up to its
     * own completed by c itself; minus one for itself. */
    unsigned shift = level + KMB_TREEDATA_TILE_LOG;
    uint64_t c = (index + 1) << shift, before = 0;
    for (unsigned L = 0; L + KMB_TREEDATA_TILE_LOG < 64; L += KMB_TREEDATA_STEP) {
        unsigned sh = L + KMB_TREEDATA_TILE_LOG;
        before += L <= level ? c >> sh : (c - 1) >> sh;
    }
    return before - 1;
}

void kmb_treedata_cursor_after(uint64_t from, uint64_t *c, unsigned *lvl)
{
    *c = from >> KMB_TREEDATA_TILE_LOG << KMB_TREEDATA_TILE_LOG;
    *lvl = *c ? KMB_TREEDATA_LEVELS : 0; /* every tile completed at *c is written */
}

int kmb_treedata_next_tile(uint64_t n, uint64_t *c, unsigned *lvl, unsigned *level,
                           uint64_t *index)
{
    if (*c == 0) {
        *c = KMB_TREEDATA_TILE_NODES;
        *lvl = 0;
    }
    while (*c <= n) {
        unsigned L = *lvl * KMB_TREEDATA_STEP;
        if (*lvl < KMB_TREEDATA_LEVELS && L + KMB_TREEDATA_TILE_LOG < 64) {
            uint64_t span = (uint64_t)1 << (L + KMB_TREEDATA_TILE_LOG);
            if ((*c & (span - 1)) == 0) {
                *level = L;
                *index = (*c >> (L + KMB_TREEDATA_TILE_LOG)) - 1;
                (*lvl)++;
                return 1;
            }
        }
        /* No higher level completes a tile here: a span that does not divide c is
         * contained in every larger one. */
        if (*c > UINT64_MAX - KMB_TREEDATA_TILE_NODES) return 0;
        *c += KMB_TREEDATA_TILE_NODES;
        *lvl = 0;
    }
    return 0;
}

void kmb_treedata_put_footer(uint8_t out[KMB_TREEDATA_FOOTER], uint64_t n,
                             const uint8_t *frontier, size_t len)
{
    put_u64(out, n);
    uint32_t crc = kmb_crc32_update(kmb_crc32(frontier, len), out, 8);
    put_u32(out + 8, crc);
    memcpy(out + 12, FOOT_MAGIC, 4);
}

int kmb_treedata_footer_n(const uint8_t foot[KMB_TREEDATA_FOOTER], uint64_t *n)
{
    if (memcmp(foot + 12, FOOT_MAGIC, 4) != 0) return 0;
    *n = get_u64(foot);
    return *n >= 1;
}

int kmb_treedata_frontier_ok(const uint8_t *frontier, size_t len,
                             const uint8_t foot[KMB_TREEDATA_FOOTER])
{
    uint64_t n;
    if (!kmb_treedata_footer_n(foot, &n)) return 0;
    if (len != 32 + 32 * kmb_treedata_frontier_nodes(n)) return 0;
    return get_u32(foot + 8) == kmb_crc32_update(kmb_crc32(frontier, len), foot, 8);
}
