/*
 * append.c — appending a batch: validate it, find (or make) the stream, write the records
 * (inline, or pipelined with the hashing worker for large batches), make them durable,
 * commit them to the in-memory state, and rotate a full segment. All or nothing: a batch
 * that fails is cut back from the segment before the call returns (or, when even the cut
 * fails, before the next append and at close).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "kimberlite/crc32.h"

#define SCRATCH_KEEP ((size_t)4 << 20) /* larger append buffers are given back after use */

/* ---------------------------------------------------------------- writing records */

/*
 * The most bytes of the piece that starts `done` bytes into a batch of `total`: WRITE_CHUNK,
 * but smaller at both ends (never below PIECE_MIN). The worker can hash nothing before this
 * thread has copied the first piece, and this thread can write the last piece only after
 * the worker has sealed and hashed it: with small end pieces neither waits long (with
 * 256 KiB pieces throughout, a 1 MiB batch lost about a tenth of its time so).
 */
#define PIECE_MIN ((size_t)16 << 10)
static size_t piece_limit(uint64_t done, uint64_t total)
{
    uint64_t lim = WRITE_CHUNK, left = total - done;
    if (done < lim) lim = done;         /* ramp up: 16, 16, 32, 64, ... KiB */
    if (left / 2 < lim) lim = left / 2; /* ramp down: about half of what is left */
    return lim < PIECE_MIN ? PIECE_MIN : (size_t)lim;
}

/* Records [i, j) fill a piece: at least one record, at most piece_limit(done, total) bytes. */
static size_t piece_end(const kmb_slice *events, size_t count, size_t i, uint64_t done,
                        uint64_t total, size_t *bytes)
{
    size_t j = i, limit = piece_limit(done, total);
    *bytes = 0;
    while (j < count && (j == i || *bytes + kmb_record_size(events[j].len) <= limit)) {
        *bytes += (size_t)kmb_record_size(events[j].len);
        j++;
    }
    return j;
}

/*
 * First pass over a piece, on the caller's thread: offsets, lengths, payloads, and the
 * CRCs of long payloads (kept in their records' CRC fields until the headers are complete).
 * No hash is needed yet. From here on only this copy is read: another thread may change
 * the caller's buffers, and each record's CRC, payload and chain hash must come from the
 * same bytes. copies[k] is pointed at record k's copied payload, for the hashing worker.
 */
static void encode_bodies(uint8_t *p, seg_state *g, const kmb_slice *events, size_t i,
                          size_t j, uint64_t next, uint64_t pos, kmb_slice *copies)
{
    uint8_t *start = p;
    for (size_t k = i; k < j; k++) {
        uint32_t len = (uint32_t)events[k].len;
        g->ix.positions[g->ix.count + k] = pos + (uint64_t)(p - start);
        kmb_rec_put_body(p, next + k, events[k].data, len);
        copies[k].data = p + KMB_REC_PAYLOAD_AT;
        copies[k].len = len;
        if (len >= COMBINE_MIN_LEN)
            kmb_rec_put_crc(p, len, kmb_crc32(p + KMB_REC_PAYLOAD_AT, len));
        p += kmb_record_size(len);
    }
}

/*
 * Second pass, record by record, on the thread that chains the hashes (kmb_hash_job.seal),
 * each just before its hash: the record's prev_hash, then its CRC, whole for short
 * payloads, as CRC(header || payload) = combine(CRC(header), CRC(payload)) for long ones.
 * The worker has the previous hash at hand and the payload in its cache, and this takes
 * work off the caller, which at 1 KiB and less is the slower of the two (it also copies
 * and writes). `p` walks the piece; op_len and op cache the combine operator of the last
 * length. Only one thread uses a sealer at a time: the caller sets `p` between jobs.
 */
typedef struct sealer {
    uint8_t *p;
    uint64_t op_len;
    uint32_t op;
} sealer;

static void seal_record(void *ctx, size_t size, const uint8_t *prev)
{
    sealer *z = ctx;
    uint8_t *p = z->p;
    uint32_t len = (uint32_t)size;
    kmb_rec_put_prev_hash(p, prev);
    if (len < COMBINE_MIN_LEN) { /* cheaper to checksum it whole than to combine */
        kmb_rec_put_crc(p, len, kmb_crc32(p, kmb_rec_crc_at(len)));
    } else {
        if (len != z->op_len) {
            z->op = kmb_crc32_combine_gen(len);
            z->op_len = len;
        }
        uint32_t header_crc = kmb_crc32(p, KMB_HEADER_SIZE);
        kmb_rec_put_crc(p, len, kmb_crc32_combine_op(header_crc, kmb_rec_crc_of(p, len), z->op));
    }
    z->p = p + kmb_record_size(len);
}

/*
 * Encode a large batch and write it at byte *end of segment g, a piece (up to WRITE_CHUNK
 * bytes, less at both ends: piece_limit) at a time, the chain hashed and the records sealed
 * on the worker from this thread's copy of the payloads: while the worker seals and hashes
 * piece k, this thread copies and checksums piece k+1 (encode_bodies), then writes piece k
 * once it is done. The two halves of the scratch buffer alternate between the pieces.
 * Fills g->ix.positions past g->ix.count; *end is where the batch ends, head the hash of
 * its last record. On failure the worker has stopped and nothing refers to `events`.
 */
static int write_batch_pipelined(kmb_storage *st, stream_state *s, seg_state *g,
                                 const kmb_slice *events, size_t count, uint64_t next,
                                 uint64_t *end, uint8_t head[KMB_HASH_SIZE])
{
    kmb_hasher *w = &st->worker;
    size_t half = 0, bytes = 0;
    uint64_t total = 0, done = 0;
    for (size_t k = 0; k < count; k++) total += kmb_record_size(events[k].len);
    for (size_t i = 0; i < count;) {
        i = piece_end(events, count, i, done, total, &bytes);
        if (bytes > half) half = bytes;
        done += bytes;
    }
    /* The hashes, then the slices that point the worker at the copied payloads. */
    int rc = grow(&st->hashes, &st->hashes_cap, count * (KMB_HASH_SIZE + sizeof(kmb_slice)));
    if (rc == KMB_OK) rc = grow(&st->scratch, &st->scratch_cap, 2 * half);
    if (rc) return rc;
    uint8_t(*hashes)[KMB_HASH_SIZE] = (uint8_t(*)[KMB_HASH_SIZE])(void *)st->hashes;
    kmb_slice *copies = (kmb_slice *)(void *)(st->hashes + count * KMB_HASH_SIZE);
    uint8_t *buf[2] = {st->scratch, st->scratch + half};

    uint64_t start = *end, pos = *end;
    sealer z = {buf[0], UINT64_MAX, 0};
    size_t j = piece_end(events, count, 0, 0, total, &bytes);
    encode_bodies(buf[0], g, events, 0, j, next, pos, copies);
    kmb_hash_job job;
    memset(&job, 0, sizeof(job));
    job.count = j;
    job.out = hashes;
    job.events = copies;
    job.start = next ? s->head : NULL;
    job.seal = seal_record;
    job.seal_ctx = &z;
    kmb_hasher_post(w, &job);
    for (int k = 0;; k ^= 1) {
        size_t next_bytes = 0, i = j - job.count;
        size_t nj = j < count ? piece_end(events, count, j, pos - start + bytes, total, &next_bytes)
                              : j;
        if (j < count) encode_bodies(buf[k ^ 1], g, events, j, nj, next, pos + bytes, copies);
        /* Piece [i, j) is sealed and hashed. */
        if (!kmb_hasher_stalled(w, kmb_hasher_wait(w, j - i))) kmb_hasher_recovered(w);
        if (j < count) {
            z.p = buf[k ^ 1];
            job.count = nj - j;
            job.out = hashes + j;
            job.events = copies + j;
            job.start = hashes[j - 1];
            kmb_hasher_post(w, &job);
        }
        rc = st->backend->write(st->backend, s->id, g->number, pos, buf[k], bytes);
        if (rc) goto fail;
        pos += bytes;
        if (j == count) break;
        j = nj;
        bytes = next_bytes;
    }
    memcpy(head, hashes[count - 1], KMB_HASH_SIZE);
    *end = pos;
    return KMB_OK;
fail:
    kmb_hasher_finish(w, 1);
    return rc;
}

/* Encode a small batch into one buffer, chaining the hashes here: one write per batch. */
static int write_batch_inline(kmb_storage *st, stream_state *s, seg_state *g,
                              const kmb_slice *events, size_t count, uint64_t next,
                              uint64_t total, uint64_t *end, uint8_t head[KMB_HASH_SIZE],
                              uint8_t (*park)[KMB_HASH_SIZE])
{
    int rc = grow(&st->scratch, &st->scratch_cap, (size_t)total);
    if (rc) return rc;
    memcpy(head, s->head, KMB_HASH_SIZE);
    uint8_t *p = st->scratch;
    uint64_t pos = *end;
    for (size_t i = 0; i < count; i++) {
        uint64_t offset = next + i;
        g->ix.positions[g->ix.count + i] = pos;
        size_t n = kmb_record_encode(p, offset, offset ? head : NULL, events[i].data,
                                     (uint32_t)events[i].len);
        /* Hash the copy, not the caller's buffer, which another thread may be changing. */
        kmb_chain_hash(head, offset ? head : NULL, p + KMB_REC_PAYLOAD_AT, events[i].len);
        if (park) memcpy(park[i], head, KMB_HASH_SIZE); /* for the tree (tree.c) */
        p += n;
        pos += n;
    }
    rc = st->backend->write(st->backend, s->id, g->number, *end, st->scratch, (size_t)total);
    if (rc) return rc;
    *end = pos;
    return KMB_OK;
}

/*
 * Before an fsync=True append: make durable what earlier fsync=False appends (or another
 * process) left in the page cache and this batch's chain now depends on — sealed segments'
 * data and the directory entries of files created without a sync. The active segment is
 * synced after the batch is written, which covers its earlier data too. Nothing of the
 * batch is written yet, so a failure here leaves the stream as it was.
 */
int make_durable(kmb_storage *st, stream_state *s, int with_active)
{
    for (size_t k = 0; k + (with_active ? 0 : 1) < s->nsegs; k++) {
        seg_state *g = &s->segs[k];
        if (!g->unsynced || g->pending) continue;
        int rc = st->backend->sync(st->backend, s->id, g->number);
        if (rc) return with_stream(st, rc, s->id, g->number);
        g->unsynced = 0;
    }
    if (s->dir_unsynced && st->backend->sync_dir) {
        int rc = st->backend->sync_dir(st->backend, s->id);
        if (rc) return with_stream(st, rc, s->id, s->segs[s->nsegs - 1].number);
    }
    s->dir_unsynced = 0;
    return KMB_OK;
}

#define SCRATCH_KEEP ((size_t)4 << 20) /* larger append buffers are given back after use */

/* Cut the active segment back to its valid size after a failed batch (see cut_pending). */
int cut_back(kmb_storage *st, stream_state *s)
{
    seg_state *g = active_seg(s);
    int rc = st->backend->truncate(st->backend, s->id, g->number, g->size);
    if (rc) return with_stream(st, rc, s->id, g->number);
    s->cut_pending = 0;
    return KMB_OK;
}

/* ---------------------------------------------------------------- the steps of an append */

/* Check the whole batch before a byte is written; *total is its encoded size. */
static int validate_batch(kmb_storage *st, const kmb_slice *events, size_t count,
                          uint64_t *total)
{
    if (st->opts.read_only)
        return kmb_error_set(KMB_EREADONLY, 0,
                             "this storage is read-only; open it without read_only=True to append");
    if (count == 0)
        return kmb_error_set(KMB_EINVAL, 0, "empty batch: append_batch needs at least one event");
    *total = 0;
    for (size_t i = 0; i < count; i++) {
        if (events[i].len > st->opts.max_event_size)
            return kmb_error_set(KMB_EINVAL, 0,
                                 "event %zu of the batch is %zu bytes, larger than max_event_size "
                                 "(%" PRIu64 " bytes); split it or open the storage with a larger "
                                 "max_event_size",
                                 i, events[i].len, st->opts.max_event_size);
        *total += kmb_record_size(events[i].len);
    }
    if (*total > SIZE_MAX / 2)
        return kmb_error_set(KMB_EINVAL, 0, "batch too large (%" PRIu64 " bytes)", *total);
    return KMB_OK;
}

/* The batch's first offset `next` must be the caller's expected one, its last below 2**63. */
static int check_offsets(uint64_t stream, uint64_t next, size_t count,
                         const uint64_t *expected_offset)
{
    if (expected_offset && *expected_offset != next) {
        kmb_error_set(KMB_EOFFSET, 0,
                      "stream %" PRIu64 ": expected offset %" PRIu64
                      " but the stream's next offset is %" PRIu64
                      "; nothing was written (another append got there first: re-read the "
                      "stream and retry)",
                      stream, *expected_offset, next);
        kmb_error *e = error_at(stream, NULL);
        e->expected_offset = *expected_offset;
        e->actual_offset = next;
        return KMB_EOFFSET;
    }
    if (count > KMB_MAX_OFFSET - next)
        return kmb_error_set(KMB_EINVAL, 0, "stream %" PRIu64 ": offsets would reach 2**63", stream);
    return KMB_OK;
}

/* A new stream: the file of its first segment, then its state (stream_new, as loading). */
static int create_stream(kmb_storage *st, uint64_t stream, int fsync, stream_state **out)
{
    int rc = st->backend->create_segment(st->backend, stream, 0, fsync);
    if (rc) return with_stream(st, rc, stream, 0);
    stream_state *s = stream_new(stream, !fsync);
    if (!s) return KMB_ENOMEM;
    seg_state *g0 = push_segment(s, 0, 0);
    if (!g0 || table_insert(st, s) != KMB_OK) {
        stream_free(s);
        return oom();
    }
    g0->index_verified = 1;
    *out = s;
    return KMB_OK;
}

/*
 * The stream a batch of `count` events goes to, ready for it: loaded or created, not
 * damaged, a failed batch's bytes cut back, the offsets checked, its active segment's file
 * made, and (fsync) what the batch's chain depends on made durable.
 */
static int stream_for_append(kmb_storage *st, uint64_t stream, size_t count,
                             const uint64_t *expected_offset, int fsync, stream_state **out)
{
    stream_state *s = NULL;
    int rc = get_stream(st, stream, &s);
    if (rc) return rc;
    /* An append adds to the active segment's index, which is saved whole: complete it
     * (a bad stored index is rebuilt, and damage found is refused below). */
    if (s) rc = index_complete(st, s, active_seg(s));
    if (rc) return rc;
    if (s && s->damaged) return damaged_error(st, s);
    if (s && s->cut_pending) {
        rc = cut_back(st, s);
        if (rc) return rc;
    }
    rc = check_offsets(stream, s ? s->next : 0, count, expected_offset);
    if (rc) return rc;
    if (!s) {
        rc = create_stream(st, stream, fsync, &s);
        if (rc) return rc;
    }
    rc = make_active_file(st, s, fsync); /* after a rotation whose file failed */
    if (rc) return rc;
    if (fsync) {
        rc = make_durable(st, s, 0);
        if (rc) return rc;
    }
    *out = s;
    return KMB_OK;
}

/*
 * Write the batch after the active segment's valid bytes (and sync it when fsync), all or
 * nothing: on failure the segment is cut back to its size before the batch, or the cut is
 * left pending. *end is where the batch ends, head the hash of its last record.
 */
static int write_batch(kmb_storage *st, stream_state *s, const kmb_slice *events, size_t count,
                       uint64_t total, int fsync, uint64_t *end, uint8_t head[KMB_HASH_SIZE],
                       uint8_t (*park)[KMB_HASH_SIZE])
{
    seg_state *g = active_seg(s);
    int rc = kmb_index_reserve(&g->ix, count);
    if (rc) return rc;
    *end = g->size;
    /* Large batches hash on the worker while this thread encodes and writes. */
    if (worker_use(st, total)) {
        rc = write_batch_pipelined(st, s, g, events, count, s->next, end, head);
        if (rc == KMB_OK && park) memcpy(park, st->hashes, count * KMB_HASH_SIZE);
    } else {
        rc = write_batch_inline(st, s, g, events, count, s->next, total, end, head, park);
    }
    if (rc == KMB_OK && fsync) rc = st->backend->sync(st->backend, s->id, g->number);
    if (rc == KMB_OK) return KMB_OK;
    kmb_error saved = *kmb_error_last();
    if (st->backend->truncate(st->backend, s->id, g->number, g->size) != KMB_OK)
        s->cut_pending = 1; /* retried before the next append and at close */
    *kmb_error_mut() = saved;
    return with_stream(st, rc, s->id, g->number);
}

/*
 * The written batch becomes part of the stream: index, size, next offset, head; after an
 * fsync=True append, the durable watermark moves to cover it (watermark.c).
 */
static void commit_batch(kmb_storage *st, stream_state *s, size_t count, uint64_t end,
                         const uint8_t head[KMB_HASH_SIZE], int fsync)
{
    seg_state *g = active_seg(s);
    if (fsync) watermark_advance(st, s, g, g->size, end);
    g->ix.count += count;
    g->size = end;
    g->index_dirty = 1;
    g->unsynced = !fsync;
    s->next += count;
    memcpy(s->head, head, KMB_HASH_SIZE);
    s->has_head = 1;
}

/* Eager rotation of a full segment. The batch stands even if this fails: retried next time. */
static void rotate_after_append(kmb_storage *st, stream_state *s, int fsync)
{
    seg_state *g = active_seg(s);
    if (g->size < st->opts.max_segment_size) return;
    uint32_t full = g->number; /* g moves if sealing grows s->segs */
    kmb_error saved = *kmb_error_last();
    if (seal_active(st, s) != KMB_OK || make_active_file(st, s, fsync) != KMB_OK) {
        char path[KMB_PATH_MAX];
        describe(st, s->id, full, path, sizeof(path));
        note(st, "stream %" PRIu64 ": could not start a new segment after %s (%s); will retry",
             s->id, path, kmb_error_last()->message);
    }
    *kmb_error_mut() = saved;
}

int kmb_storage_append(kmb_storage *st, uint64_t stream, const kmb_slice *events, size_t count,
                       const uint64_t *expected_offset, int fsync, uint64_t *next_out)
{
    int rc = enter(st);
    if (rc) return rc;
    stream_state *s = NULL;
    uint64_t total = 0, end = 0;
    uint8_t head[KMB_HASH_SIZE];
    rc = validate_batch(st, events, count, &total);
    if (rc == KMB_OK) rc = stream_for_append(st, stream, count, expected_offset, fsync, &s);
    uint8_t (*park)[KMB_HASH_SIZE] = NULL;
    if (rc == KMB_OK) {
        park = tree_park_slots(s, count);
        rc = write_batch(st, s, events, count, total, fsync, &end, head, park);
    }
    if (rc == KMB_OK) {
        commit_batch(st, s, count, end, head, fsync);
        if (park) tree_park_commit(s, count);
        rotate_after_append(st, s, fsync);
        if (next_out) *next_out = s->next;
    }
    if (st->scratch_cap > SCRATCH_KEEP) { /* don't hold a huge batch's copy until close */
        free(st->scratch);
        st->scratch = NULL;
        st->scratch_cap = 0;
    }
    leave(st);
    return rc;
}
