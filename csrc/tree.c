/*
 * tree.c — each stream's RFC 9162 Merkle tree (SPEC §6), integrated lazily, cached on disk.
 *
 * The entries of a stream's tree are its records' chain hashes hash_0 … hash_{n-1}. Appends
 * do nothing for the tree: when a root or a proof is asked for, the tree catches up from the
 * records it has not seen yet, read through the engine's checked reader (read_each_locked:
 * CRC, offset and chain link of every record), so every entry is a verified chain hash —
 * record i's hash is the prev_hash record i+1 stores and the reader checked, and the last
 * record's hash is computed from its checked bytes.
 *
 * In memory (s->tree, freed with the stream's state): the compact range of the integrated
 * leaves, and the perfect nodes of every level that is a multiple of STORE_STEP (level 0 —
 * the leaf hashes — then 5, 10, …): 32 + 32/32 + … ≈ 33 bytes per record. A node of another
 * level is recomputed from at most 2**(STORE_STEP-1) stored nodes (at most 15 node hashes),
 * so roots and proofs cost O(log n) hashes after the catch-up.
 *
 * The tree data (treedata.h; docs/FORMAT.md §12) keeps the same nodes through the backend
 * (tree_size, load_tree, save_tree): complete 256-node tiles, appended, and a frontier (each
 * level's incomplete tile, the entry count n and the chain hash of entry n-1) rewritten after
 * them. It is a cache, never trusted beyond what the records confirm:
 *  - first use in a process loads only the header and the frontier (a few KB): a tree whose
 *    levels hold nodes from each level's last tile on (`base`), enough for the compact range
 *    and every later node. The tiles below are read when a proof or an older root needs
 *    them, one tile at a time (load_tile, at its canonical position), each checked (level,
 *    index, CRC).
 *  - n must not exceed the stream's records, and the chain hash of entry n-1 must be the one
 *    the records have (the head, or record n's prev_hash, which the catch-up compares): a
 *    chain hash commits to every record before it, so the tree data describes these records.
 *  - anything wrong (missing, short, a bad magic, CRC or length, n too large, another
 *    history, a read error) drops it: the tree is rebuilt from the records and the next save
 *    rewrites the whole file. Never an error for the caller.
 * Saves happen after a catch-up and on flush/close, never on the append path; a read-only
 * storage never saves. What a save leaves after a crash is checked like anything else.
 *
 * Staleness: the tree is dropped with the stream's state (reloads, repairs, the testing
 * hooks' rewrites), rebuilt when the stream has fewer records than it, and checked against
 * the stream's head whenever it is at the stream's end.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "kimberlite/merkle.h"
#include "kimberlite/treedata.h"

#define STORE_STEP KMB_TREEDATA_STEP /* levels kept: multiples of this */
#define STORED_LEVELS KMB_TREEDATA_LEVELS
#define HS KMB_MERKLE_HASH_SIZE
#define TILE_N KMB_TREEDATA_TILE_NODES

typedef struct node_array {
    uint8_t (*h)[HS];     /* h[i]: node i of the level */
    uint64_t count, cap;  /* nodes of the level integrated; room for */
    uint64_t base;        /* below it, node i is only valid if its tile is loaded */
    uint8_t *loaded;      /* bit k: tile k (< base / 256) read from the tree data */
} node_array;

struct kmb_tree {
    kmb_merkle_range range;            /* leaves integrated: range.size */
    node_array levels[STORED_LEVELS];  /* levels[k]: the perfect nodes of level k*STORE_STEP */
    uint8_t last[KMB_HASH_SIZE];       /* hash_{range.size - 1}: compared with the head */
    int partial;                       /* some level's base > 0 (seeded from the tree data) */
    int data_known;                    /* the stored tree data is the one described below */
    uint64_t data_n;                   /* its entry count (its tiles: T(data_n)) */
    int data_bad;                      /* a tile read on demand was not usable: rebuild */
    int damaged_prefix;                /* built from a damaged stream's intact prefix */
    int from_data;                     /* seeded from the tree data, not from the records */
    kmb_storage *st;                   /* for reading tiles on demand (the tree's owner) */
    uint64_t stream;
    uint8_t (*park)[HS];               /* entries range.size … + parked - 1, from appends */
    uint64_t parked, park_cap;
};

void tree_free(struct kmb_tree *t)
{
    if (!t) return;
    for (size_t k = 0; k < STORED_LEVELS; k++) {
        free(t->levels[k].h);
        free(t->levels[k].loaded);
    }
    free(t->park);
    free(t);
}

/* Forget every node (the tree is rebuilt from genesis); the stored data is rewritten. */
static void tree_reset(struct kmb_tree *t)
{
    for (size_t k = 0; k < STORED_LEVELS; k++) {
        t->levels[k].count = t->levels[k].base = 0;
        free(t->levels[k].loaded);
        t->levels[k].loaded = NULL;
    }
    kmb_merkle_range_init(&t->range);
    t->partial = 0;
    t->data_known = 0;
    t->data_bad = 0;
    t->parked = 0;
    t->damaged_prefix = 0;
    t->from_data = 0;
}

static int reserve(node_array *a, uint64_t want)
{
    if (want <= a->cap) return KMB_OK;
    uint64_t cap = a->cap ? a->cap : 64;
    while (cap < want) cap = cap > UINT64_MAX / 2 ? want : cap * 2;
    if (cap > SIZE_MAX / HS) return oom();
    void *p = realloc(a->h, (size_t)cap * HS);
    if (!p) return oom();
    a->h = p;
    a->cap = cap;
    return KMB_OK;
}

/* kmb_merkle_visit_fn: keep the completed nodes of the stored levels. */
static int keep_node(void *ctx, unsigned level, uint64_t index, const uint8_t hash[HS])
{
    struct kmb_tree *t = ctx;
    if (level % STORE_STEP) return KMB_OK;
    node_array *a = &t->levels[level / STORE_STEP];
    if (index != a->count)
        return kmb_error_set(KMB_ERROR, 0, "Merkle tree: node (%u, %" PRIu64 ") out of order",
                             level, index);
    if (a->count == a->cap) {
        int rc = reserve(a, a->count + 1);
        if (rc) return rc;
    }
    memcpy(a->h[a->count++], hash, HS);
    return KMB_OK;
}

/* Integrate one entry (a chain hash) as the next leaf. */
static int add_entry(struct kmb_tree *t, const uint8_t entry[KMB_HASH_SIZE])
{
    uint8_t leaf[HS];
    kmb_merkle_leaf_hash(leaf, entry, KMB_HASH_SIZE);
    int rc = kmb_merkle_range_append(&t->range, leaf, keep_node, t);
    if (rc) return rc;
    memcpy(t->last, entry, KMB_HASH_SIZE);
    return KMB_OK;
}

static int load_tile(struct kmb_tree *t, unsigned k, uint64_t tile);

/* kmb_merkle_node_fn over a kmb_tree: a stored node, or one made from stored ones; a tile
 * below a level's base is read from the tree data first. */
static int tree_node(void *ctx, unsigned level, uint64_t index, uint8_t out[HS])
{
    struct kmb_tree *t = ctx;
    unsigned base = level - level % STORE_STEP, span_log = level % STORE_STEP;
    node_array *a = &t->levels[base / STORE_STEP];
    uint64_t first = index << span_log, n = (uint64_t)1 << span_log;
    if (first + n > a->count || first + n < first)
        return kmb_error_set(KMB_ERROR, 0, "Merkle tree: node (%u, %" PRIu64 ") not integrated",
                             level, index);
    for (uint64_t k = first / TILE_N; k * TILE_N < first + n && k * TILE_N < a->base; k++) {
        if (a->loaded[k / 8] & (1u << (k % 8))) continue;
        int rc = load_tile(t, base / STORE_STEP, k);
        if (rc) return rc;
    }
    uint8_t work[1 << (STORE_STEP - 1)][HS];
    if (n == 1) {
        memcpy(out, a->h[first], HS);
        return KMB_OK;
    }
    for (uint64_t i = 0; i < n / 2; i++)
        kmb_merkle_node_hash(work[i], a->h[first + 2 * i], a->h[first + 2 * i + 1]);
    for (uint64_t w = n / 2; w > 1; w /= 2)
        for (uint64_t i = 0; i < w / 2; i++) kmb_merkle_node_hash(work[i], work[2 * i], work[2 * i + 1]);
    memcpy(out, work[0], HS);
    return KMB_OK;
}

/* ---------------------------------------------------------------- the tree data */

static int has_tree_data(const kmb_storage *st)
{
    const kmb_backend *b = st->backend;
    return b->tree_size && b->load_tree && b->save_tree;
}

/*
 * Seed an empty tree from the stored frontier. 1 if it was usable (the tree then holds n
 * entries with each level from its incomplete tile on), 0 if not (the tree stays empty).
 * Whether entry n-1 is the records' is checked by the catch-up that follows.
 */
static int load_frontier(kmb_storage *st, stream_state *s, struct kmb_tree *t)
{
    kmb_backend *b = st->backend;
    uint64_t len, n, want;
    uint8_t hdr[KMB_TREEDATA_HEADER], foot[KMB_TREEDATA_FOOTER];
    uint8_t *front = NULL;
    int ok = 0;
    if (b->tree_size(b, s->id, &len) != KMB_OK) goto out;
    if (len < KMB_TREEDATA_HEADER + KMB_TREEDATA_FOOTER + HS) goto out;
    if (b->load_tree(b, s->id, 0, hdr, sizeof(hdr)) || !kmb_treedata_header_ok(hdr)) goto out;
    if (b->load_tree(b, s->id, len - sizeof(foot), foot, sizeof(foot))) goto out;
    if (!kmb_treedata_footer_n(foot, &n) || n > s->next) goto out;
    if (kmb_treedata_file_len(n, &want) || want != len) goto out;
    size_t flen = (size_t)(HS + HS * kmb_treedata_frontier_nodes(n));
    front = malloc(flen);
    if (!front) goto out;
    if (b->load_tree(b, s->id, len - sizeof(foot) - flen, front, flen)) goto out;
    if (!kmb_treedata_frontier_ok(front, flen, foot)) goto out;
    const uint8_t *p = front + HS;
    for (unsigned k = 0; k < STORED_LEVELS; k++) {
        node_array *a = &t->levels[k];
        uint64_t have = n >> (k * STORE_STEP), cnt = have & (TILE_N - 1);
        if (have == 0) continue;
        /* Room for every node (calloc: pages below the base stay untouched until a tile is
         * read into them) and a bitmap of the tiles read. */
        uint64_t cap = have + TILE_N;
        if (cap > SIZE_MAX / HS) goto out;
        a->h = calloc((size_t)cap, HS);
        a->loaded = calloc((size_t)((have / TILE_N) / 8 + 1), 1);
        if (!a->h || !a->loaded) goto out;
        a->cap = cap;
        a->base = have - cnt;
        memcpy(a->h[a->base], p, (size_t)cnt * HS);
        a->count = have;
        p += cnt * HS;
        if (a->base) t->partial = 1;
    }
    if (kmb_merkle_range_load(&t->range, tree_node, t, n) != KMB_OK) goto out;
    memcpy(t->last, front, HS);
    t->from_data = 1;
    t->data_known = 1;
    t->data_n = n;
    ok = 1;
out:
    free(front);
    if (!ok) tree_reset(t);
    kmb_error_clear();
    return ok;
}

/* Read tile `tile` of stored level k from the tree data into the level's nodes. On failure
 * t->data_bad is set: the caller rebuilds the tree from the records. */
static int load_tile(struct kmb_tree *t, unsigned k, uint64_t tile)
{
    kmb_backend *b = t->st->backend;
    node_array *a = &t->levels[k];
    unsigned level = k * STORE_STEP;
    uint8_t *buf = malloc(KMB_TREEDATA_TILE);
    int ok = buf && t->data_known;
    uint64_t pos = KMB_TREEDATA_HEADER +
                   kmb_treedata_tile_ordinal(level, tile) * (uint64_t)KMB_TREEDATA_TILE;
    ok = ok && b->load_tree(b, t->stream, pos, buf, KMB_TREEDATA_TILE) == KMB_OK &&
         kmb_treedata_tile_ok(buf, level, tile);
    if (ok) {
        memcpy(a->h[tile * TILE_N], buf + KMB_TREEDATA_TILE_HEAD, (size_t)TILE_N * HS);
        a->loaded[tile / 8] |= (uint8_t)(1u << (tile % 8));
    }
    free(buf);
    if (ok) return KMB_OK;
    t->data_bad = 1;
    return kmb_error_set(KMB_ECORRUPT, 0, "stream %" PRIu64 ": tree data tile (%u, %" PRIu64
                         ") not usable; the tree is rebuilt from the records", t->stream,
                         level, tile);
}

/*
 * Write what the stored tree data lacks: the tiles completed since it was saved, then the
 * frontier. Best effort: a failure leaves the data unknown (the next save rewrites it all)
 * and is no error of the caller's (the tree in memory is right; the data is a cache).
 */
static void tree_save(kmb_storage *st, stream_state *s)
{
    struct kmb_tree *t = s->tree;
    uint64_t n = t ? t->range.size : 0;
    if (!t || n == 0 || st->opts.read_only || !has_tree_data(st) || s->damaged) return;
    if (t->data_known && t->data_n == n) return;
    int whole = !t->data_known || t->data_n > n;
    if (whole && t->partial) return; /* cannot rewrite tiles it has not loaded */
    uint64_t c, index;
    unsigned lvl, level;
    kmb_treedata_cursor_after(whole ? 0 : t->data_n, &c, &lvl);
    /* Pieces of at most SAVE_CHUNK bytes: the first at pos (0: the whole file, renamed into
     * place), each next one appended. A crash between two leaves a file without its footer,
     * which the checks refuse. */
    enum { SAVE_CHUNK = 128 * KMB_TREEDATA_TILE };
    uint64_t flen = HS + HS * kmb_treedata_frontier_nodes(n), tiles = 0, c1 = c, ix;
    unsigned l1 = lvl, lv;
    while (tiles < 128 && kmb_treedata_next_tile(n, &c1, &l1, &lv, &ix)) tiles++;
    uint64_t want = (whole ? KMB_TREEDATA_HEADER : 0) + tiles * KMB_TREEDATA_TILE;
    if (want < flen + KMB_TREEDATA_FOOTER) want = flen + KMB_TREEDATA_FOOTER;
    size_t cap = want > SAVE_CHUNK ? SAVE_CHUNK : (size_t)want;
    if (cap < flen + KMB_TREEDATA_FOOTER) cap = (size_t)(flen + KMB_TREEDATA_FOOTER);
    uint8_t *buf = malloc(cap);
    if (!buf) return;
    uint64_t pos = whole ? 0 : KMB_TREEDATA_HEADER +
                               kmb_treedata_tiles(t->data_n) * (uint64_t)KMB_TREEDATA_TILE;
    size_t used = 0;
    int rc = KMB_OK;
    kmb_error saved = *kmb_error_last();
    if (whole) {
        kmb_treedata_put_header(buf);
        used = KMB_TREEDATA_HEADER;
    }
    while (rc == KMB_OK && kmb_treedata_next_tile(n, &c, &lvl, &level, &index)) {
        const node_array *a = &t->levels[level / STORE_STEP];
        if (index * TILE_N < a->base) { /* not in memory (cannot happen) */
            rc = KMB_ERROR;
            break;
        }
        if (used + KMB_TREEDATA_TILE > cap) {
            rc = st->backend->save_tree(st->backend, s->id, pos, buf, used);
            pos += used;
            used = 0;
        }
        kmb_treedata_put_tile(buf + used, level, index, (const uint8_t (*)[HS])a->h[index * TILE_N]);
        used += KMB_TREEDATA_TILE;
    }
    if (rc == KMB_OK && used + flen + KMB_TREEDATA_FOOTER > cap) {
        rc = st->backend->save_tree(st->backend, s->id, pos, buf, used);
        pos += used;
        used = 0;
    }
    if (rc == KMB_OK) {
        uint8_t *front = buf + used, *p = front;
        memcpy(p, t->last, HS);
        p += HS;
        for (unsigned k = 0; k < STORED_LEVELS; k++) {
            const node_array *a = &t->levels[k];
            uint64_t have = n >> (k * STORE_STEP), cnt = have & (TILE_N - 1);
            if (cnt) memcpy(p, a->h[have - cnt], (size_t)cnt * HS);
            p += cnt * HS;
        }
        kmb_treedata_put_footer(p, n, front, (size_t)flen);
        used += flen + KMB_TREEDATA_FOOTER;
        rc = st->backend->save_tree(st->backend, s->id, pos, buf, used);
    }
    *kmb_error_mut() = saved;
    free(buf);
    t->data_known = rc == KMB_OK;
    t->data_n = n;
}

/* ---------------------------------------------------------------- catching up */

/*
 * A large catch-up hashes on a second thread (the builder) while this one reads: the reader
 * delivers checked records chunk by chunk and costs about one core; the tree's hashing
 * (a leaf hash and about one node hash per entry, ~200 ns) runs beside it instead of after
 * it. The reader writes each entry (a chain hash) into its level-0 slot and publishes the
 * count under `mu`; the builder turns published slots into leaf hashes in place and appends
 * them to the compact range (keep_node stores the levels; every array was reserved first,
 * so nothing moves). Below BUILD_MIN entries, or if no thread can be started, everything
 * runs inline. The builder touches only the tree's range and levels; the reader only the
 * slots past `produced`; the GIL is not held (the binding releases it around tree calls).
 */
#define BUILD_MIN 65536

typedef struct builder {
    struct kmb_tree *t;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t produced; /* level-0 slots holding entries (guarded by mu) */
    int done;          /* the reader published its last entry (guarded by mu) */
    int stop;          /* the reader failed: give up (guarded by mu) */
    int rc;            /* the builder's failure (read after the join) */
} builder;

static void *build_main(void *arg)
{
    builder *b = arg;
    struct kmb_tree *t = b->t;
    uint64_t next = t->range.size;
    for (;;) {
        pthread_mutex_lock(&b->mu);
        while (b->produced == next && !b->done && !b->stop) pthread_cond_wait(&b->cv, &b->mu);
        uint64_t avail = b->produced;
        int stop = b->stop, done = b->done;
        pthread_mutex_unlock(&b->mu);
        if (stop || (done && next == avail)) break;
        for (; next < avail; next++) {
            uint8_t *slot = t->levels[0].h[next];
            kmb_merkle_leaf_hash(slot, slot, KMB_HASH_SIZE); /* reads it all, then writes */
            int rc = kmb_merkle_range_append(&t->range, slot, keep_node, t);
            if (rc) {
                b->rc = rc;
                return NULL;
            }
        }
    }
    return NULL;
}

typedef struct catch_up {
    struct kmb_tree *t;
    uint64_t have;               /* entries in the tree when the read started */
    uint64_t expect;             /* offset of the next record delivered */
    uint8_t tail[KMB_HASH_SIZE]; /* hash of the last record delivered */
    int have_tail;
    int stale; /* the first record read does not link to the tree's last entry */
    builder *b; /* NULL: integrate inline */
    uint64_t produced; /* with a builder: entries written to level-0 slots */
} catch_up;

#define TREE_STALE 1 /* take_records' stop code: rebuild the tree from genesis */

/* Publish the entries written so far to the builder. */
static void publish(catch_up *c, int done)
{
    pthread_mutex_lock(&c->b->mu);
    c->b->produced = c->produced;
    c->b->done |= done;
    pthread_cond_signal(&c->b->cv);
    pthread_mutex_unlock(&c->b->mu);
}

/* kmb_read_fn: each record's prev_hash is the (checked) hash of the record before it. */
static int take_records(void *ctx, const kmb_record *recs, size_t n)
{
    catch_up *c = ctx;
    struct kmb_tree *t = c->t;
    for (size_t j = 0; j < n; j++) {
        if (recs[j].offset != c->expect)
            return kmb_error_set(KMB_ERROR, 0, "Merkle tree: record %" PRIu64
                                 " delivered where %" PRIu64 " was expected",
                                 recs[j].offset, c->expect);
        if (recs[j].offset > c->have) {
            if (c->b) {
                if (c->produced + 1 >= t->levels[0].cap) /* room for it and the tail */
                    return kmb_error_set(KMB_ERROR, 0, "Merkle tree: more records than "
                                         "the stream had");
                memcpy(t->levels[0].h[c->produced++], recs[j].prev_hash, KMB_HASH_SIZE);
            } else {
                int rc = add_entry(t, recs[j].prev_hash);
                if (rc) return rc;
            }
        } else if (recs[j].offset == c->have && recs[j].offset > 0 &&
                   memcmp(recs[j].prev_hash, t->last, KMB_HASH_SIZE) != 0) {
            c->stale = 1; /* the records before it are not those the tree was built from */
            return TREE_STALE;
        }
        c->expect++;
    }
    kmb_record_hash(c->tail, &recs[n - 1]);
    c->have_tail = 1;
    if (c->b) publish(c, 0);
    return KMB_OK;
}

/* Read the records from the tree's size on and integrate them (c->stale: they do not link
 * to its last entry; nothing was integrated then). */
static int catch_up_read(kmb_storage *st, stream_state *s, catch_up *c)
{
    struct kmb_tree *t = c->t;
    builder b = {.t = t};
    pthread_t th;
    int threaded = 0;
    c->have = c->expect = c->produced = t->range.size;
    if (s->next - c->have >= BUILD_MIN && pthread_mutex_init(&b.mu, NULL) == 0) {
        if (pthread_cond_init(&b.cv, NULL) == 0) {
            b.produced = c->produced;
            if (pthread_create(&th, NULL, build_main, &b) == 0) threaded = 1;
            else pthread_cond_destroy(&b.cv);
        }
        if (!threaded) pthread_mutex_destroy(&b.mu);
    }
    c->b = threaded ? &b : NULL;
    int rc = read_each_locked(st, s, c->expect, KMB_NO_LIMIT, take_records, c);
    if (threaded) {
        if (rc == KMB_OK && c->have_tail) /* the last record's own hash: the last entry */
            memcpy(t->levels[0].h[c->produced++], c->tail, KMB_HASH_SIZE);
        pthread_mutex_lock(&b.mu);
        b.produced = c->produced;
        if (rc) b.stop = 1;
        else b.done = 1;
        pthread_cond_signal(&b.cv);
        pthread_mutex_unlock(&b.mu);
        pthread_join(th, NULL);
        pthread_cond_destroy(&b.cv);
        pthread_mutex_destroy(&b.mu);
        c->b = NULL;
        if (rc == KMB_OK && b.rc)
            rc = kmb_error_set(b.rc, 0, "stream %" PRIu64 ": the tree could not integrate "
                               "its records", s->id);
        if (rc == KMB_OK && c->have_tail) {
            memcpy(t->last, c->tail, KMB_HASH_SIZE);
            c->have_tail = 0; /* integrated */
        }
    }
    return rc;
}

/* Room for the nodes of `next` entries, so that the catch-up never reallocates. */
static int reserve_for(struct kmb_tree *t, uint64_t next)
{
    for (unsigned k = 0; k < STORED_LEVELS; k++) {
        node_array *a = &t->levels[k];
        if (reserve(a, next >> (k * STORE_STEP))) return oom();
    }
    return KMB_OK;
}

/* Bring s's tree up to the stream's next offset. */
static int tree_sync(kmb_storage *st, stream_state *s)
{
    if (!s->tree) {
        s->tree = calloc(1, sizeof(*s->tree));
        if (!s->tree) return oom();
        s->tree->st = st;
        s->tree->stream = s->id;
        if (has_tree_data(st) && s->next > 0) (void)load_frontier(st, s, s->tree);
    }
    struct kmb_tree *t = s->tree;
    /* Entries parked by appends since the last catch-up: integrated without a read. */
    if (t->parked && t->range.size + t->parked <= s->next) {
        for (uint64_t k = 0; k < t->parked; k++) {
            int rc = add_entry(t, t->park[k]);
            if (rc) {
                tree_reset(t);
                return rc;
            }
        }
    }
    t->parked = 0;
    uint64_t have = t->range.size;
    if (have > s->next || (have > 0 && have == s->next &&
                           (!s->has_head || memcmp(t->last, s->head, KMB_HASH_SIZE) != 0))) {
        tree_reset(t); /* the records changed under the tree: rebuild it from them */
        have = 0;
    }
    if (have == s->next) {
        tree_save(st, s);
        return KMB_OK;
    }
    int rc = reserve_for(t, s->next);
    if (rc) return rc;
    /* Read from the first record not integrated: its hash is its successor's prev_hash, and
     * its own prev_hash must be the tree's last entry. */
    catch_up c = {.t = t};
    rc = catch_up_read(st, s, &c);
    if (c.stale) {
        /* Records under the tree changed (another process rewrote them): start over. */
        tree_reset(t);
        memset(&c, 0, sizeof(c));
        c.t = t;
        rc = reserve_for(t, s->next);
        if (rc == KMB_OK) rc = catch_up_read(st, s, &c);
    }
    trim_chunks(st);
    if (rc == KMB_OK && c.expect != s->next)
        rc = kmb_error_set(KMB_ERROR, 0, "stream %" PRIu64 ": the tree read %" PRIu64
                           " records of %" PRIu64, s->id, c.expect, s->next);
    if (rc == KMB_OK && c.have_tail) rc = add_entry(t, c.tail);
    if (rc == KMB_OK && s->has_head && memcmp(t->last, s->head, KMB_HASH_SIZE) != 0)
        rc = kmb_error_set(KMB_ECHAIN, 0, "stream %" PRIu64 ": the records read do not end "
                           "at the stream's head hash", s->id);
    if (rc) {
        tree_reset(t); /* never keep a partial or doubtful tree */
        return rc;
    }
    tree_save(st, s);
    return KMB_OK;
}

/* After a tile read on demand failed (t->data_bad): rebuild the tree from the records. */
static int tree_rebuild(kmb_storage *st, stream_state *s, int rc)
{
    if (rc == KMB_OK || !s->tree->data_bad) return rc;
    kmb_error_clear();
    tree_reset(s->tree);
    return tree_sync(st, s);
}

/*
 * Parking (append.c): a stream whose tree has seen every record (integrated or parked) keeps
 * the chain hashes of the next appends, up to PARK_MAX, so that the next catch-up integrates
 * them without reading the records back. They are the hashes the append computed from the
 * bytes it wrote (the same computation that gives the stream's head, which the catch-up
 * compares its last entry with); a catch-up from records read back is used otherwise.
 */
#define PARK_MAX 65536 /* entries: 2 MB */

uint8_t (*tree_park_slots(stream_state *s, size_t count))[KMB_HASH_SIZE]
{
    struct kmb_tree *t = s->tree;
    if (!t || t->range.size + t->parked != s->next || count > PARK_MAX - t->parked) return NULL;
    if (t->parked + count > t->park_cap) {
        uint64_t cap = t->park_cap ? t->park_cap : 1024;
        while (cap < t->parked + count) cap *= 2;
        if (cap > PARK_MAX) cap = PARK_MAX;
        void *p = realloc(t->park, (size_t)cap * HS);
        if (!p) return NULL; /* no parking: the catch-up reads instead */
        t->park = p;
        t->park_cap = cap;
    }
    return &t->park[t->parked];
}

void tree_park_commit(stream_state *s, size_t count)
{
    s->tree->parked += count;
}

/* flush/close (storage.c): catch the trees in use up and save their data. Best effort. */
void tree_flush(kmb_storage *st, stream_state *s)
{
    if (!s->tree || s->damaged || st->opts.read_only) return;
    kmb_error saved = *kmb_error_last();
    (void)tree_sync(st, s);
    *kmb_error_mut() = saved;
}

/* ---------------------------------------------------------------- public */

static int size_error(uint64_t stream, const char *what, uint64_t value, uint64_t next)
{
    return kmb_error_set(KMB_EINVAL, 0,
                         "stream %" PRIu64 ": %s %" PRIu64 " is out of range: the stream has %"
                         PRIu64 " records (tree sizes run from 1 to the next offset)",
                         stream, what, value, next);
}

/*
 * A damaged stream (SPEC §3: reads that reach the damage raise, the rest work): its tree is
 * built from the records before the damage only — read and checked like any catch-up, the
 * last entry hashed from the last intact record — without the tree data (nothing in it can
 * be checked past the damage) and without saving. Sizes within that prefix get their roots
 * and proofs; a larger size, or the whole stream, raises the damage (tree_limit).
 */
static int tree_sync_damaged(kmb_storage *st, stream_state *s)
{
    uint64_t lim = s->damage_offset < s->next ? s->damage_offset : s->next;
    /* A broken link at record d: record d-1's hash is what record d does not confirm (either
     * may be the forged one), so the prefix stops before it. */
    if (s->tamper && lim > 0) lim--;
    if (!s->tree) {
        s->tree = calloc(1, sizeof(*s->tree));
        if (!s->tree) return oom();
        s->tree->st = st;
        s->tree->stream = s->id;
    }
    struct kmb_tree *t = s->tree;
    t->parked = 0;
    if (t->range.size > 0 && t->range.size <= lim && t->damaged_prefix) return KMB_OK;
    tree_reset(t);
    if (lim == 0) return KMB_OK;
    int rc = reserve_for(t, lim);
    if (rc) return rc;
    /* Read exactly the records before the damage: a budget of their payload bytes (from
     * the index) stops the read there. Zero-length records just before the damage fall
     * outside the budget: the prefix answered is then shorter (never longer). */
    uint64_t budget = 0;
    rc = index_need_range(st, s, 0, lim);
    if (rc) return rc;
    long k = locate(s, 0);
    for (uint64_t off = 0; k >= 0 && off < lim;) {
        const seg_state *g = &s->segs[k];
        if (off < g->base || off - g->base >= seg_records(g)) {
            if ((size_t)++k >= s->nsegs) break;
            continue;
        }
        size_t i = (size_t)(off - g->base);
        budget += rec_end(g, i) - seg_pos(g, i) - KMB_RECORD_OVERHEAD;
        off++;
    }
    catch_up c = {.t = t};
    c.have = c.expect = 0;
    rc = budget ? read_each_locked(st, s, 0, budget, take_records, &c) : KMB_OK;
    trim_chunks(st);
    if (rc == KMB_OK && c.have_tail) rc = add_entry(t, c.tail);
    if (rc == KMB_OK && (c.expect > lim || t->range.size != c.expect))
        rc = kmb_error_set(KMB_ERROR, 0, "stream %" PRIu64 ": the tree read %" PRIu64
                           " records before the damage at %" PRIu64, s->id, c.expect, lim);
    if (rc) tree_reset(t);
    else t->damaged_prefix = 1;
    return rc;
}

/* A damaged stream: the whole stream (size ALL) or a size past the intact prefix raises the
 * damage (CorruptedRecordError / ChainVerificationError; the stream's true length may be
 * unknown, so never a ValueError about it); other sizes are answered. */
static int tree_limit(kmb_storage *st, stream_state *s, uint64_t size, uint64_t next)
{
    if (s && s->damaged && (size == KMB_TREE_SIZE_ALL || size > next))
        return damaged_error(st, s);
    return KMB_OK;
}

/*
 * Lock, load the stream and catch its tree up; *s NULL for a stream that does not exist.
 * *next: the sizes the tree can answer for (a damaged stream: its intact prefix); *size
 * (KMB_TREE_SIZE_ALL: *next) is checked against the damage (tree_limit). On KMB_OK the
 * caller holds the lock.
 */
static int tree_enter(kmb_storage *st, uint64_t stream, uint64_t *size, stream_state **s,
                      uint64_t *next)
{
    int rc = enter(st);
    if (rc) return rc;
    rc = get_stream(st, stream, s);
    if (rc == KMB_OK && *s) {
        rc = (*s)->damaged ? tree_sync_damaged(st, *s) : tree_sync(st, *s);
        /* The catch-up may be what finds the damage (a stream loaded without reading its
         * records): answer from the intact prefix at once, as the next call would. */
        if (rc && rc != KMB_EIO && rc != KMB_ENOMEM && (*s)->damaged) {
            kmb_error_clear();
            rc = tree_sync_damaged(st, *s);
        }
    }
    if (rc == KMB_OK) {
        *next = !*s ? 0 : (*s)->damaged ? (*s)->tree->range.size : (*s)->next;
        rc = tree_limit(st, *s, *size, *next);
    }
    if (rc) {
        leave(st);
        return rc;
    }
    if (*size == KMB_TREE_SIZE_ALL) *size = *next;
    return KMB_OK;
}

int kmb_storage_tree_root(kmb_storage *st, uint64_t stream, uint64_t size,
                          uint8_t out[KMB_MERKLE_HASH_SIZE], uint64_t *size_out)
{
    stream_state *s;
    uint64_t next;
    int rc = tree_enter(st, stream, &size, &s, &next);
    if (rc) return rc;
    if (size > next) {
        rc = size_error(stream, "tree_size", size, next);
    } else if (size == 0) {
        kmb_merkle_empty_root(out);
    } else if (size == next) {
        kmb_merkle_range_root(&s->tree->range, out);
    } else {
        rc = kmb_merkle_tree_root(out, tree_node, s->tree, size);
        if (rc && (rc = tree_rebuild(st, s, rc)) == KMB_OK)
            rc = kmb_merkle_tree_root(out, tree_node, s->tree, size);
    }
    if (rc == KMB_OK && size_out) *size_out = size;
    leave(st);
    return rc;
}

int kmb_storage_inclusion_proof(kmb_storage *st, uint64_t stream, uint64_t index, uint64_t size,
                                uint8_t (*out)[KMB_MERKLE_HASH_SIZE], unsigned *count,
                                uint64_t *size_out)
{
    stream_state *s;
    uint64_t next;
    int rc = tree_enter(st, stream, &size, &s, &next);
    if (rc) return rc;
    if (size == 0 || size > next) {
        rc = size_error(stream, "tree_size", size, next);
    } else if (index >= size) {
        rc = kmb_error_set(KMB_EINVAL, 0,
                           "stream %" PRIu64 ": offset %" PRIu64 " is not below the tree size %"
                           PRIu64, stream, index, size);
    } else {
        rc = kmb_merkle_inclusion_proof(out, count, tree_node, s->tree, index, size);
        if (rc && (rc = tree_rebuild(st, s, rc)) == KMB_OK)
            rc = kmb_merkle_inclusion_proof(out, count, tree_node, s->tree, index, size);
    }
    if (rc == KMB_OK && size_out) *size_out = size;
    leave(st);
    return rc;
}

int kmb_storage_consistency_proof(kmb_storage *st, uint64_t stream, uint64_t old_size,
                                  uint64_t new_size, uint8_t (*out)[KMB_MERKLE_HASH_SIZE],
                                  unsigned *count, uint64_t *size_out)
{
    stream_state *s;
    uint64_t next;
    int rc = tree_enter(st, stream, &new_size, &s, &next);
    if (rc) return rc;
    if (new_size == 0 || new_size > next) {
        rc = size_error(stream, "new_size", new_size, next);
    } else if (old_size == 0 || old_size > new_size) {
        rc = kmb_error_set(KMB_EINVAL, 0,
                           "stream %" PRIu64 ": old_size %" PRIu64 " is out of range: it must "
                           "be at least 1 and at most new_size %" PRIu64,
                           stream, old_size, new_size);
    } else {
        rc = kmb_merkle_consistency_proof(out, count, tree_node, s->tree, old_size, new_size);
        if (rc && (rc = tree_rebuild(st, s, rc)) == KMB_OK)
            rc = kmb_merkle_consistency_proof(out, count, tree_node, s->tree, old_size,
                                              new_size);
    }
    if (rc == KMB_OK && size_out) *size_out = new_size;
    leave(st);
    return rc;
}


static int readonly_error(const char *what)
{
    return kmb_error_set(KMB_EREADONLY, 0, "this Storage is read-only: it cannot %s; open it "
                         "without read_only=True", what);
}

int kmb_storage_sync(kmb_storage *st, uint64_t stream)
{
    int rc = enter(st);
    if (rc) return rc;
    stream_state *s = NULL;
    if (st->opts.read_only)
        rc = readonly_error("sync");
    else if ((rc = get_stream(st, stream, &s)) == KMB_OK && s)
        rc = make_durable(st, s, 1);
    leave(st);
    return rc;
}

int kmb_storage_durable_root(kmb_storage *st, uint64_t stream, uint8_t out[KMB_MERKLE_HASH_SIZE],
                             uint64_t *size_out)
{
    *size_out = 0;
    int rc = enter(st);
    if (rc) return rc;
    stream_state *s = NULL;
    if (st->opts.read_only) {
        rc = readonly_error("sign checkpoints");
        goto out;
    }
    rc = get_stream(st, stream, &s);
    if (rc) goto out;
    if (s && s->damaged) { /* before the size: damage at offset 0 leaves next at 0 */
        rc = damaged_error(st, s);
        goto out;
    }
    if (!s || s->next == 0) {
        kmb_merkle_empty_root(out);
        goto out;
    }
    rc = make_durable(st, s, 1);
    /* The tree data's CRCs catch accidents, not forgery: anyone who can write the directory
     * can plant nodes with good CRCs. A root to be signed is built from the records, once
     * per process (the nodes then stay, each confirmed by the checked reader). */
    if (rc == KMB_OK) rc = tree_sync(st, s);
    if (rc == KMB_OK && s->tree->from_data) {
        tree_reset(s->tree);
        rc = tree_sync(st, s);
    }
    if (rc == KMB_OK) {
        kmb_merkle_range_root(&s->tree->range, out);
        *size_out = s->next;
    }
out:
    leave(st);
    return rc;
}

/* ---------------------------------------------------------------- the stored checkpoint */

int kmb_storage_load_checkpoint(kmb_storage *st, uint64_t stream, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    int rc = enter(st);
    if (rc) return rc;
    stream_state *s = NULL;
    if (!st->backend->load_checkpoint) goto out; /* nothing stored, ever */
    rc = get_stream(st, stream, &s);
    if (rc || !s) goto out;
    rc = st->backend->load_checkpoint(st->backend, stream, KMB_CHECKPOINT_MAX, out, len);
    if (rc == KMB_ENOTFOUND) rc = KMB_OK;
    else if (rc) rc = with_stream(st, rc, stream, 0);
out:
    leave(st);
    return rc;
}

int kmb_storage_store_checkpoint(kmb_storage *st, uint64_t stream, const uint8_t *expected,
                                 size_t expected_len, const uint8_t *data, size_t len)
{
    if (len > KMB_CHECKPOINT_MAX)
        return kmb_error_set(KMB_EINVAL, 0, "checkpoint of %zu bytes is larger than %d", len,
                             KMB_CHECKPOINT_MAX);
    int rc = enter(st);
    if (rc) return rc;
    stream_state *s = NULL;
    uint8_t *cur = NULL;
    size_t cur_len = 0;
    if (st->opts.read_only) {
        rc = readonly_error("store checkpoints");
        goto out;
    }
    if (!st->backend->save_checkpoint || !st->backend->load_checkpoint) {
        rc = kmb_error_set(KMB_EINVAL, 0, "this storage backend cannot store checkpoints");
        goto out;
    }
    rc = get_stream(st, stream, &s);
    if (rc) goto out;
    if (!s || s->next == 0) {
        rc = kmb_error_set(KMB_EINVAL, 0, "stream %" PRIu64 " has no records", stream);
        goto out;
    }
    int has = 1;
    rc = st->backend->load_checkpoint(st->backend, stream, KMB_CHECKPOINT_MAX, &cur, &cur_len);
    if (rc == KMB_ENOTFOUND) {
        has = 0;
        rc = KMB_OK;
    }
    if (rc) {
        rc = with_stream(st, rc, stream, 0);
        goto out;
    }
    if (has != (expected != NULL) ||
        (has && (cur_len != expected_len || memcmp(cur, expected, cur_len) != 0))) {
        rc = kmb_error_set(KMB_EOFFSET, 0, "stream %" PRIu64 ": another checkpoint was stored "
                           "meanwhile; sign again", stream);
        goto out;
    }
    rc = st->backend->save_checkpoint(st->backend, stream, data, len);
    if (rc) rc = with_stream(st, rc, stream, 0);
out:
    free(cur);
    leave(st);
    return rc;
}
