/*
 * watermark.c — a stream's durable watermark: how far its files are known to be durable.
 *
 * After an fsync=True append's sync returned, the engine records where that batch began and
 * ended (the backend keeps the bytes; disk: {stream}/durable). It is never synced itself:
 * whichever version survives a crash was written after the data it describes had reached
 * the disk, so it is never ahead of the durable data. Recovery (recover.c) uses it to tell a
 * batch in flight at a power cut — whose pages may survive in any order, leaving valid
 * records after a hole — from damage to acknowledged data, which is never cut. A missing or
 * damaged watermark only makes recovery stricter. Format: docs/FORMAT.md.
 */
#include <string.h>

#include "engine.h"
#include "kimberlite/crc32.h"

/*
 * The durable watermark record (backend.h), 36 bytes: "KMBW", version 1, 3 zero bytes, the
 * end of the last batch known durable (segment u32, byte u64), where that batch began
 * (segment u32, byte u64), CRC-32 of the 32 bytes before it. docs/FORMAT.md.
 */
#define WM_SIZE 36

static void watermark_store(kmb_storage *st, stream_state *s)
{
    if (!st->backend->save_watermark) return;
    uint8_t b[WM_SIZE] = {'K', 'M', 'B', 'W', 1};
    kmb_store_u32le(b + 8, s->wm_end.seg);
    kmb_store_u64le(b + 12, s->wm_end.pos);
    kmb_store_u32le(b + 20, s->wm_batch.seg);
    kmb_store_u64le(b + 24, s->wm_batch.pos);
    kmb_store_u32le(b + 32, kmb_crc32(b, 32));
    st->backend->save_watermark(st->backend, s->id, b, sizeof(b));
}

/* Load the stream's watermark; a missing or damaged one leaves wm_known 0 (the strict rule). */
void watermark_load(kmb_storage *st, stream_state *s)
{
    uint8_t b[KMB_WATERMARK_MAX];
    size_t len = 0;
    if (!st->backend->load_watermark ||
        st->backend->load_watermark(st->backend, s->id, b, sizeof(b), &len) != KMB_OK)
        return;
    if (len != WM_SIZE || memcmp(b, "KMBW", 4) != 0 || b[4] != 1 ||
        kmb_load_u32le(b + 32) != kmb_crc32(b, 32))
        return;
    s->wm_end = (kmb_mark){kmb_load_u32le(b + 8), kmb_load_u64le(b + 12)};
    s->wm_batch = (kmb_mark){kmb_load_u32le(b + 20), kmb_load_u64le(b + 24)};
    if (mark_before(s->wm_end, s->wm_batch)) return;
    s->wm_known = 1;
}

/*
 * After an fsync=True append's sync: the batch [start, end) of segment g is durable. Best
 * effort (backend.h): a lost update leaves an older watermark, which is still truthful.
 */
void watermark_advance(kmb_storage *st, stream_state *s, const seg_state *g,
                              uint64_t start, uint64_t end)
{
    s->wm_known = 1;
    s->wm_batch = (kmb_mark){g->number, start};
    s->wm_end = (kmb_mark){g->number, end};
    watermark_store(st, s);
}

/* After a cut of segment g at `pos`: the watermark must not vouch for bytes to come. */
void watermark_lower(kmb_storage *st, stream_state *s, const seg_state *g, uint64_t pos)
{
    kmb_mark cut = {g->number, pos};
    if (!s->wm_known || !mark_before(cut, s->wm_end)) return;
    s->wm_end = cut;
    if (mark_before(cut, s->wm_batch)) s->wm_batch = cut;
    watermark_store(st, s);
}
