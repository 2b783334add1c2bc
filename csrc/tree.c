/*
 * tree.c — each stream's RFC 9162 Merkle tree (SPEC §6), integrated lazily.
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
 * the leaf hashes — then 4, 8, …): 32 + 32/16 + … ≈ 34 bytes per record. A node of another
 * level is recomputed from at most 2**(STORE_STEP-1) stored nodes (at most 7 node hashes),
 * so roots and proofs cost O(log n) hashes after the catch-up. Nothing is persisted: a new
 * process rebuilds the tree on first use (one read of the stream), which docs/TLOG.md says.
 *
 * Staleness: the tree is dropped with the stream's state (reloads, repairs, the testing
 * hooks' rewrites), rebuilt when the stream has fewer records than it, and checked against
 * the stream's head whenever it is at the stream's end.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "kimberlite/merkle.h"

#define STORE_STEP 4 /* levels kept: multiples of this */
#define STORED_LEVELS (KMB_MERKLE_MAX_HEIGHT / STORE_STEP + 1)

typedef struct node_array {
    uint8_t (*h)[KMB_MERKLE_HASH_SIZE];
    uint64_t count, cap;
} node_array;

struct kmb_tree {
    kmb_merkle_range range;            /* leaves integrated: range.size */
    node_array levels[STORED_LEVELS];  /* levels[k]: the perfect nodes of level k*STORE_STEP */
    uint8_t last[KMB_HASH_SIZE];       /* hash_{range.size - 1}: compared with the head */
};

void tree_free(struct kmb_tree *t)
{
    if (!t) return;
    for (size_t k = 0; k < STORED_LEVELS; k++) free(t->levels[k].h);
    free(t);
}

static void tree_reset(struct kmb_tree *t)
{
    for (size_t k = 0; k < STORED_LEVELS; k++) t->levels[k].count = 0;
    kmb_merkle_range_init(&t->range);
}

/* kmb_merkle_visit_fn: keep the completed nodes of the stored levels. */
static int keep_node(void *ctx, unsigned level, uint64_t index,
                     const uint8_t hash[KMB_MERKLE_HASH_SIZE])
{
    struct kmb_tree *t = ctx;
    if (level % STORE_STEP) return KMB_OK;
    node_array *a = &t->levels[level / STORE_STEP];
    if (index != a->count)
        return kmb_error_set(KMB_ERROR, 0, "Merkle tree: node (%u, %" PRIu64 ") out of order",
                             level, index);
    if (a->count == a->cap) {
        uint64_t cap = a->cap ? a->cap * 2 : 64;
        if (cap > SIZE_MAX / KMB_MERKLE_HASH_SIZE) return oom();
        void *p = realloc(a->h, (size_t)cap * KMB_MERKLE_HASH_SIZE);
        if (!p) return oom();
        a->h = p;
        a->cap = cap;
    }
    memcpy(a->h[a->count++], hash, KMB_MERKLE_HASH_SIZE);
    return KMB_OK;
}

/* Integrate one entry (a chain hash) as the next leaf. */
static int add_entry(struct kmb_tree *t, const uint8_t entry[KMB_HASH_SIZE])
{
    uint8_t leaf[KMB_MERKLE_HASH_SIZE];
    kmb_merkle_leaf_hash(leaf, entry, KMB_HASH_SIZE);
    int rc = kmb_merkle_range_append(&t->range, leaf, keep_node, t);
    if (rc) return rc;
    memcpy(t->last, entry, KMB_HASH_SIZE);
    return KMB_OK;
}

/* kmb_merkle_node_fn over a kmb_tree: a stored node, or one made from stored ones. */
static int tree_node(void *ctx, unsigned level, uint64_t index,
                     uint8_t out[KMB_MERKLE_HASH_SIZE])
{
    const struct kmb_tree *t = ctx;
    unsigned base = level - level % STORE_STEP, span_log = level % STORE_STEP;
    const node_array *a = &t->levels[base / STORE_STEP];
    uint64_t first = index << span_log, n = (uint64_t)1 << span_log;
    if (first + n > a->count || first + n < first)
        return kmb_error_set(KMB_ERROR, 0, "Merkle tree: node (%u, %" PRIu64 ") not integrated",
                             level, index);
    uint8_t work[1 << (STORE_STEP - 1)][KMB_MERKLE_HASH_SIZE];
    if (n == 1) {
        memcpy(out, a->h[first], KMB_MERKLE_HASH_SIZE);
        return KMB_OK;
    }
    for (uint64_t i = 0; i < n / 2; i++)
        kmb_merkle_node_hash(work[i], a->h[first + 2 * i], a->h[first + 2 * i + 1]);
    for (uint64_t w = n / 2; w > 1; w /= 2)
        for (uint64_t i = 0; i < w / 2; i++) kmb_merkle_node_hash(work[i], work[2 * i], work[2 * i + 1]);
    memcpy(out, work[0], KMB_MERKLE_HASH_SIZE);
    return KMB_OK;
}

/* ---------------------------------------------------------------- catching up */

typedef struct catch_up {
    struct kmb_tree *t;
    uint64_t expect;             /* offset of the next record delivered */
    uint8_t tail[KMB_HASH_SIZE]; /* hash of the last record delivered */
    int have_tail;
    int stale; /* the first record read does not link to the tree's last entry */
} catch_up;

#define TREE_STALE 1 /* take_records' stop code: rebuild the tree from genesis */

/* kmb_read_fn: each record's prev_hash is the (checked) hash of the record before it. */
static int take_records(void *ctx, const kmb_record *recs, size_t n)
{
    catch_up *c = ctx;
    for (size_t j = 0; j < n; j++) {
        if (recs[j].offset != c->expect)
            return kmb_error_set(KMB_ERROR, 0, "Merkle tree: record %" PRIu64
                                 " delivered where %" PRIu64 " was expected",
                                 recs[j].offset, c->expect);
        if (recs[j].offset == c->t->range.size && recs[j].offset > 0 &&
            memcmp(recs[j].prev_hash, c->t->last, KMB_HASH_SIZE) != 0) {
            c->stale = 1; /* the records before it are not those the tree was built from */
            return TREE_STALE;
        }
        if (recs[j].offset > c->t->range.size) {
            int rc = add_entry(c->t, recs[j].prev_hash);
            if (rc) return rc;
        }
        c->expect++;
    }
    kmb_record_hash(c->tail, &recs[n - 1]);
    c->have_tail = 1;
    return KMB_OK;
}

/* Bring s's tree up to the stream's next offset. */
static int tree_sync(kmb_storage *st, stream_state *s)
{
    if (!s->tree) {
        s->tree = calloc(1, sizeof(*s->tree));
        if (!s->tree) return oom();
    }
    struct kmb_tree *t = s->tree;
    uint64_t have = t->range.size;
    if (have > s->next || (have > 0 && have == s->next &&
                           (!s->has_head || memcmp(t->last, s->head, KMB_HASH_SIZE) != 0))) {
        tree_reset(t); /* the records changed under the tree: rebuild it from them */
        have = 0;
    }
    if (have == s->next) return KMB_OK;
    /* Read from the first record not integrated: its hash is its successor's prev_hash. */
    catch_up c = {.t = t, .expect = have};
    int rc = read_each_locked(st, s, c.expect, KMB_NO_LIMIT, take_records, &c);
    if (c.stale) {
        /* Records under the tree changed (another process rewrote them): start over. */
        tree_reset(t);
        memset(&c, 0, sizeof(c));
        c.t = t;
        rc = read_each_locked(st, s, 0, KMB_NO_LIMIT, take_records, &c);
    }
    trim_chunks(st);
    if (rc == KMB_OK && c.expect != s->next)
        rc = kmb_error_set(KMB_ERROR, 0, "stream %" PRIu64 ": the tree read %" PRIu64
                           " records of %" PRIu64, s->id, c.expect, s->next);
    if (rc == KMB_OK && c.have_tail) rc = add_entry(t, c.tail);
    if (rc == KMB_OK && s->has_head && memcmp(t->last, s->head, KMB_HASH_SIZE) != 0)
        rc = kmb_error_set(KMB_ECHAIN, 0, "stream %" PRIu64 ": the records read do not end "
                           "at the stream's head hash", s->id);
    if (rc) tree_reset(t); /* never keep a partial or doubtful tree */
    return rc;
}

/* ---------------------------------------------------------------- public */

static int size_error(uint64_t stream, const char *what, uint64_t value, uint64_t next)
{
    return kmb_error_set(KMB_EINVAL, 0,
                         "stream %" PRIu64 ": %s %" PRIu64 " is out of range: the stream has %"
                         PRIu64 " records (tree sizes run from 1 to the next offset)",
                         stream, what, value, next);
}

/* Lock, load the stream and catch its tree up; *s NULL for a stream that does not exist. */
static int tree_enter(kmb_storage *st, uint64_t stream, stream_state **s, uint64_t *next)
{
    int rc = enter(st);
    if (rc) return rc;
    rc = get_stream(st, stream, s);
    if (rc == KMB_OK && *s) {
        rc = (*s)->damaged ? damaged_error(st, *s) : tree_sync(st, *s);
    }
    if (rc) {
        leave(st);
        return rc;
    }
    *next = *s ? (*s)->next : 0;
    return KMB_OK;
}

int kmb_storage_tree_root(kmb_storage *st, uint64_t stream, uint64_t size,
                          uint8_t out[KMB_MERKLE_HASH_SIZE], uint64_t *size_out)
{
    stream_state *s;
    uint64_t next;
    int rc = tree_enter(st, stream, &s, &next);
    if (rc) return rc;
    if (size == KMB_TREE_SIZE_ALL) size = next;
    if (size > next) {
        rc = size_error(stream, "tree_size", size, next);
    } else if (size == 0) {
        kmb_merkle_empty_root(out);
    } else if (size == next) {
        kmb_merkle_range_root(&s->tree->range, out);
    } else {
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
    int rc = tree_enter(st, stream, &s, &next);
    if (rc) return rc;
    if (size == KMB_TREE_SIZE_ALL) size = next;
    if (size == 0 || size > next) {
        rc = size_error(stream, "tree_size", size, next);
    } else if (index >= size) {
        rc = kmb_error_set(KMB_EINVAL, 0,
                           "stream %" PRIu64 ": offset %" PRIu64 " is not below the tree size %"
                           PRIu64, stream, index, size);
    } else {
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
    int rc = tree_enter(st, stream, &s, &next);
    if (rc) return rc;
    if (new_size == KMB_TREE_SIZE_ALL) new_size = next;
    if (new_size == 0 || new_size > next) {
        rc = size_error(stream, "new_size", new_size, next);
    } else if (old_size == 0 || old_size > new_size) {
        rc = kmb_error_set(KMB_EINVAL, 0,
                           "stream %" PRIu64 ": old_size %" PRIu64 " is out of range: it must "
                           "be at least 1 and at most new_size %" PRIu64,
                           stream, old_size, new_size);
    } else {
        rc = kmb_merkle_consistency_proof(out, count, tree_node, s->tree, old_size, new_size);
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
    if (!s || s->next == 0) {
        kmb_merkle_empty_root(out);
        goto out;
    }
    if (s->damaged) {
        rc = damaged_error(st, s);
        goto out;
    }
    rc = make_durable(st, s, 1);
    if (rc == KMB_OK) rc = tree_sync(st, s);
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
