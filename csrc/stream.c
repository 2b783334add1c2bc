/*
 * stream.c — the stream table and a stream's segments: finding and adding streams,
 * sealing the active segment and starting the next (rotation), damage marks, and locating
 * the segment that holds an offset.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* ---------------------------------------------------------------- stream table */

static size_t slot_of(uint64_t id, size_t cap)
{
    uint64_t z = id + 0x9E3779B97F4A7C15ull; /* splitmix64 finaliser */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (size_t)(z ^ (z >> 31)) & (cap - 1);
}

stream_state *table_find(kmb_storage *st, uint64_t id)
{
    if (!st->tcap) return NULL;
    for (size_t i = slot_of(id, st->tcap);; i = (i + 1) & (st->tcap - 1)) {
        stream_state *s = st->table[i];
        if (!s) return NULL;
        if (s->id == id) return s;
    }
}

int table_insert(kmb_storage *st, stream_state *s)
{
    if ((st->tcount + 1) * 10 >= st->tcap * 7) {
        size_t ncap = st->tcap ? st->tcap * 2 : 64;
        stream_state **nt = calloc(ncap, sizeof(*nt));
        if (!nt) return oom();
        for (size_t i = 0; i < st->tcap; i++) {
            stream_state *x = st->table[i];
            if (!x) continue;
            size_t j = slot_of(x->id, ncap);
            while (nt[j]) j = (j + 1) & (ncap - 1);
            nt[j] = x;
        }
        free(st->table);
        st->table = nt;
        st->tcap = ncap;
    }
    size_t j = slot_of(s->id, st->tcap);
    while (st->table[j]) j = (j + 1) & (st->tcap - 1);
    st->table[j] = s;
    st->tcount++;
    return KMB_OK;
}

/* Remove a stream from the table (backward-shift deletion keeps probing correct). */
void table_remove(kmb_storage *st, stream_state *s)
{
    size_t i = slot_of(s->id, st->tcap);
    while (st->table[i] != s) i = (i + 1) & (st->tcap - 1);
    st->table[i] = NULL;
    for (size_t j = (i + 1) & (st->tcap - 1); st->table[j]; j = (j + 1) & (st->tcap - 1)) {
        stream_state *x = st->table[j];
        st->table[j] = NULL;
        size_t k = slot_of(x->id, st->tcap);
        while (st->table[k]) k = (k + 1) & (st->tcap - 1);
        st->table[k] = x;
    }
    st->tcount--;
}

void stream_free(stream_state *s)
{
    if (!s) return;
    free(s->tamper);
    tree_free(s->tree);
    for (size_t i = 0; i < s->nsegs; i++) kmb_index_free(&s->segs[i].ix);
    free(s->segs);
    free(s);
}
stream_state *stream_new(uint64_t id, int dir_unsynced)
{
    stream_state *s = calloc(1, sizeof(*s));
    if (!s) {
        oom();
        return NULL;
    }
    s->id = id;
    s->dir_unsynced = dir_unsynced;
    return s;
}

seg_state *push_segment(stream_state *s, uint32_t number, uint64_t base)
{
    if (s->nsegs == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 4;
        seg_state *p = realloc(s->segs, ncap * sizeof(*p));
        if (!p) return NULL;
        s->segs = p;
        s->cap = ncap;
    }
    seg_state *g = &s->segs[s->nsegs++];
    memset(g, 0, sizeof(*g));
    g->number = number;
    g->base = base;
    kmb_index_init(&g->ix);
    return g;
}

/*
 * Eager rotation, first half: seal the active segment (write its index, a writer only)
 * and make a new, empty segment the active one. Its file is made by make_active_file,
 * at once after an append or, if that failed, before the next append writes anything.
 */
int seal_active(kmb_storage *st, stream_state *s)
{
    seg_state *g = active_seg(s);
    (void)save_index_if_dirty(st, s, g); /* a failed index write only costs a rebuild later */
    seg_state *n = push_segment(s, g->number + 1, g->base + seg_records(g));
    if (!n) return oom();
    n->index_verified = 1;
    n->pending = 1;
    return KMB_OK;
}

/* Eager rotation, second half: create the file of a pending active segment. */
int make_active_file(kmb_storage *st, stream_state *s, int durable)
{
    seg_state *g = active_seg(s);
    if (!g->pending) return KMB_OK;
    if (!durable) s->dir_unsynced = 1;
    int rc = st->backend->create_segment(st->backend, s->id, g->number, durable);
    if (rc) return with_stream(st, rc, s->id, g->number);
    g->pending = 0;
    return KMB_OK;
}

/* A full active segment (left by a crash, or a smaller max_segment_size) rotates. */
int rotate_if_full(kmb_storage *st, stream_state *s)
{
    seg_state *g = active_seg(s);
    if (g->pending || g->damaged || g->size < st->opts.max_segment_size) return KMB_OK;
    return seal_active(st, s);
}

/* The stream's next offset: the end of its last segment. */
void update_next(stream_state *s)
{
    seg_state *last = active_seg(s);
    s->next = last->base + seg_records(last);
}

/* ---------------------------------------------------------------- damage marks */

int damaged_error(kmb_storage *st, stream_state *s)
{
    if (s->tamper) {
        *kmb_error_mut() = *s->tamper;
        return s->tamper->code;
    }
    return corrupt(st, s->id, s->damage_seg, s->damage_offset, s->damage_pos, s->damage_what);
}

void mark_damaged_at(kmb_storage *st, stream_state *s, uint32_t seg, uint64_t offset,
                     uint64_t pos, const char *what)
{
    if (!s->damaged) {
        s->damaged = 1;
        s->damage_seg = seg;
        s->damage_offset = offset;
        s->damage_pos = pos;
        snprintf(s->damage_what, sizeof(s->damage_what), "%s", what);
        char path[KMB_PATH_MAX];
        describe(st, s->id, seg, path, sizeof(path));
        note(st,
             "stream %" PRIu64 ": %s at byte %" PRIu64 " of %s (offset %" PRIu64
             "); nothing was cut; reads reaching it and appends to this stream will fail",
             s->id, what, pos, path, offset);
    }
}

void mark_damaged(kmb_storage *st, stream_state *s, seg_state *g, uint64_t offset,
                  uint64_t pos, const char *what)
{
    g->damaged = 1;
    mark_damaged_at(st, s, g->number, offset, pos, what);
}

/*
 * A read or verify found a broken chain link (the thread's error describes it). Remember it
 * so that appends refuse to extend a chain that no longer verifies, as for corruption.
 */
void mark_tampered(stream_state *s)
{
    if (s->damaged) return;
    s->tamper = malloc(sizeof(*s->tamper));
    if (!s->tamper) return; /* best effort: the caller still gets the error */
    *s->tamper = *kmb_error_last();
    s->damaged = 1;
    s->damage_offset = s->tamper->offset;
    s->damage_pos = s->tamper->position;
}

/* ---------------------------------------------------------------- locating records */

/* Index of the segment holding `offset` (its base <= offset < base + count), or -1. */
long locate(const stream_state *s, uint64_t offset)
{
    size_t lo = 0, hi = s->nsegs;
    while (lo < hi) { /* first segment whose base > offset */
        size_t mid = lo + (hi - lo) / 2;
        if (s->segs[mid].base <= offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* Empty segments share their base with the next one: step back to one holding it. */
    for (size_t k = lo; k-- > 0;) {
        const seg_state *g = &s->segs[k];
        if (offset >= g->base && offset - g->base < seg_records(g)) return (long)k;
        if (seg_records(g) > 0) break;
    }
    return -1;
}

/* Error for an offset that falls where damage hides records. */
int unreachable(kmb_storage *st, stream_state *s, uint64_t offset)
{
    if (s->damaged) return damaged_error(st, s);
    return corrupt(st, s->id, s->segs[s->nsegs - 1].number, offset, 0, "record missing");
}
