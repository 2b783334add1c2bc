/*
 * repair.c — the explicit salvage path: cut a damaged stream back to its last valid record.
 *
 * Recovery (recover.c) never cuts acknowledged data: damage that is not a torn tail stops
 * reads and appends, and stays in place for someone to look at. When the user decides the
 * records after the damage are lost anyway (there is no copy to restore from), repair
 * makes the stream usable again:
 *
 *   everything after the last record that is valid and continues the chain from genesis
 *   — the rest of its segment and every later segment, whole — is moved into quarantine
 *   files, and nothing is deleted.
 *
 * It rescans every segment (indexes are not trusted) and checks every link, so it costs a
 * full verify; it runs only when asked. A stream with nothing to repair is left untouched.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* Where the valid stream ends: segment index k of s, byte pos; `drop_k` when segment k
 * itself must go (it is not where the stream continues: a gap before it). */
typedef struct cut {
    int found;
    size_t k;
    uint64_t pos;
    int drop_k;
} cut;

static void cut_at(cut *c, size_t k, uint64_t pos, int drop_k)
{
    c->found = 1;
    c->k = k;
    c->pos = pos;
    c->drop_k = drop_k;
}

/*
 * Rebuild segment g's index by scanning all of it from its expected first offset; *size is
 * its size in bytes and *stop the end of its valid records.
 */
static int rescan_segment(kmb_storage *st, stream_state *s, seg_state *g, uint64_t base,
                          uint64_t *size, uint64_t *stop)
{
    int rc = st->backend->segment_size(st->backend, s->id, g->number, size);
    if (rc) return with_stream(st, rc, s->id, g->number);
    kmb_index_truncate(&g->ix, 0);
    g->base = base;
    g->damaged = 0;
    g->index_verified = 1;
    int base_known = 1;
    rc = scan(st, s, g, 0, *size, &base_known, stop);
    if (rc) return rc;
    g->size = *stop;
    return KMB_OK;
}

/* Find the end of the valid stream: the first gap, empty sealed segment, invalid byte or
 * broken link, walking from genesis. */
static int find_cut(kmb_storage *st, stream_state *s, cut *c)
{
    uint8_t running[KMB_HASH_SIZE] = {0};
    uint64_t offset = 0;
    memset(c, 0, sizeof(*c));
    for (size_t k = 0; k < s->nsegs; k++) {
        seg_state *g = &s->segs[k];
        if (g->number != (k ? s->segs[k - 1].number + 1 : 0)) {
            cut_at(c, k, 0, 1); /* segments missing before this one */
            return KMB_OK;
        }
        if (g->pending) return KMB_OK; /* the next segment's file is not made yet */
        uint64_t size, stop;
        int rc = rescan_segment(st, s, g, offset, &size, &stop);
        if (rc) return rc;
        if (size == 0) {
            if (k + 1 < s->nsegs) cut_at(c, k, 0, 0); /* an empty sealed segment */
            return KMB_OK;
        }
        if (seg_records(g) > 0) {
            rc = verify_segment(st, s, g, running);
            if (rc == KMB_ECHAIN || rc == KMB_ECORRUPT) {
                const kmb_error *e = kmb_error_last();
                uint64_t bad = e->has_offset && e->offset >= g->base ? e->offset - g->base : 0;
                if (bad > seg_records(g)) bad = 0;
                cut_at(c, k, bad < seg_records(g) ? seg_pos(g, bad) : stop, 0);
                return KMB_OK;
            }
            if (rc) return rc;
        }
        if (stop < size) {
            cut_at(c, k, stop, 0);
            return KMB_OK;
        }
        offset += seg_records(g);
    }
    return KMB_OK;
}

/* Move [from, end) of segment `seg` into a quarantine object, and note it in the report. */
static int move_out(kmb_storage *st, stream_state *s, uint32_t seg, uint64_t from,
                    kmb_repair_report *out)
{
    uint64_t size;
    int rc = st->backend->segment_size(st->backend, s->id, seg, &size);
    if (rc) return with_stream(st, rc, s->id, seg);
    if (size <= from) return KMB_OK;
    kmb_repair_item *items = realloc(out->items, (out->count + 1) * sizeof(*items));
    if (!items) return oom();
    out->items = items;
    kmb_repair_item *it = &items[out->count];
    memset(it, 0, sizeof(*it));
    rc = st->backend->quarantine(st->backend, s->id, seg, from, it->name, sizeof(it->name));
    if (rc) return with_stream(st, rc, s->id, seg);
    it->bytes = size - from;
    out->count++;
    out->bytes_moved += it->bytes;
    char path[KMB_PATH_MAX];
    describe(st, s->id, seg, path, sizeof(path));
    note(st, "stream %" PRIu64 ": repair moved %" PRIu64 " bytes from byte %" PRIu64
             " of %s to %s", s->id, it->bytes, from, path, it->name);
    return KMB_OK;
}

/* Carry out the cut: later segments first (each the last when it goes), then segment k. */
static int apply_cut(kmb_storage *st, stream_state *s, const cut *c, kmb_repair_report *out)
{
    if (!st->backend->remove_segment && c->k + 1 < s->nsegs)
        return kmb_error_set(KMB_EINVAL, 0, "this backend cannot remove segments: no repair");
    for (size_t j = s->nsegs; j-- > c->k + (c->drop_k ? 0 : 1);) {
        seg_state *g = &s->segs[j];
        if (g->pending) continue;
        int rc = move_out(st, s, g->number, 0, out);
        if (rc == KMB_OK) rc = st->backend->remove_segment(st->backend, s->id, g->number);
        if (rc) return with_stream(st, rc, s->id, g->number);
    }
    if (!c->drop_k) {
        seg_state *g = &s->segs[c->k];
        int rc = move_out(st, s, g->number, c->pos, out);
        if (rc) return rc;
        watermark_lower(st, s, g, c->pos);
    } else if (c->k > 0) {
        seg_state *g = &s->segs[c->k - 1];
        watermark_lower(st, s, g, g->size);
    }
    return KMB_OK;
}

int kmb_storage_repair(kmb_storage *st, uint64_t stream, kmb_repair_report *out)
{
    memset(out, 0, sizeof(*out));
    int rc = enter(st);
    if (rc) return rc;
    if (st->opts.read_only) {
        rc = kmb_error_set(KMB_EREADONLY, 0,
                           "this storage is read-only; repair needs the writer: open it "
                           "without read_only=True");
        goto out;
    }
    /* Forget what is cached: repair looks at the files as they are now. */
    stream_state *s = table_find(st, stream);
    if (s) {
        if (s->cut_pending) cut_back(st, s);
        table_remove(st, s);
        stream_free(s);
    }
    rc = get_stream(st, stream, &s);
    if (rc || !s) goto out;
    cut c;
    rc = find_cut(st, s, &c);
    if (rc == KMB_OK && c.found) rc = apply_cut(st, s, &c, out);
    /* Load the stream again from what is now on disk (its indexes are rebuilt). */
    table_remove(st, s);
    stream_free(s);
    s = NULL;
    if (rc) goto out;
    rc = get_stream(st, stream, &s);
    if (rc == KMB_OK && s && s->damaged) rc = damaged_error(st, s); /* cannot happen */
    if (rc == KMB_OK && s) out->next_offset = s->next;
out:
    if (rc) kmb_repair_report_free(out);
    leave(st);
    return rc;
}

void kmb_repair_report_free(kmb_repair_report *r)
{
    if (!r) return;
    free(r->items);
    memset(r, 0, sizeof(*r));
}
