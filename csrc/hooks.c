/*
 * hooks.c — entry points for tests: fault injection (kimberlite/sys/faults.h) and the
 * segment-bytes hooks of storage.h that let a test read or rewrite a segment in place.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "kimberlite/sys/faults.h"

/* ---------------------------------------------------------------- fault injection */

/* The backend's optional fault_plan callback (sys/backend.h), or KMB_EINVAL without one. */
static int fault_plan(kmb_storage *st, const kmb_fault_plan *plan, uint64_t *calls,
                      uint64_t *faults)
{
    if (!st->backend->fault_plan)
        return kmb_error_set(KMB_EINVAL, 0,
                             "fault injection needs a backend with a file layer (the disk "
                             "backend); this storage's backend has none");
    return st->backend->fault_plan(st->backend, plan, calls, faults);
}

int kmb_storage_set_fault(kmb_storage *st, unsigned ops, uint64_t nth, int err, int persistent,
                          int short_write)
{
    int rc = enter(st);
    if (rc) return rc;
    kmb_fault_plan plan = {ops, nth, err, persistent, short_write};
    if (err < KMB_FAULT_CRASH && st->backend->fault_plan)
        rc = kmb_error_set(KMB_EINVAL, 0, "fault errno must be positive, 0 or KMB_FAULT_CRASH");
    else
        rc = fault_plan(st, &plan, NULL, NULL);
    leave(st);
    return rc;
}

int kmb_storage_fault_counts(kmb_storage *st, uint64_t *calls, uint64_t *faults)
{
    int rc = enter(st);
    if (rc) return rc;
    rc = fault_plan(st, NULL, calls, faults);
    leave(st);
    return rc;
}

/* ---------------------------------------------------------------- testing hooks */

int kmb_storage_segment_bytes(kmb_storage *st, uint64_t stream, uint32_t seg, uint8_t **out,
                              size_t *len)
{
    *out = NULL;
    *len = 0;
    int rc = enter(st);
    if (rc) return rc;
    uint64_t size = 0;
    size_t n = 0;
    uint8_t *buf = NULL;
    rc = st->backend->segment_size(st->backend, stream, seg, &size);
    if (rc) {
        rc = with_stream(st, rc, stream, seg);
        goto out;
    }
    if (size > SIZE_MAX - 1) {
        rc = oom();
        goto out;
    }
    buf = malloc(size ? (size_t)size : 1);
    if (!buf) {
        rc = oom();
        goto out;
    }
    rc = st->backend->read(st->backend, stream, seg, 0, buf, (size_t)size, &n);
    if (rc) {
        free(buf);
        rc = with_stream(st, rc, stream, seg);
        goto out;
    }
    *out = buf;
    *len = n;
out:
    leave(st);
    return rc;
}

/* The replace hooks save the stream's dirty indexes first, as close() would: the stream then
 * reloads like a directory reopened after a clean close, not after a crash. */
static void save_indexes(kmb_storage *st, stream_state *s)
{
    for (size_t k = 0; s && k < s->nsegs; k++) (void)save_index_if_dirty(st, s, &s->segs[k]);
}

/* ... and then forget what was cached about the stream, as if this storage had just been
 * opened: the next call that uses it loads it again from the backend. */
static void forget_stream(kmb_storage *st, stream_state *s)
{
    if (s) {
        table_remove(st, s);
        stream_free(s);
    }
    window_reset(st);
}

int kmb_storage_replace_segment_bytes(kmb_storage *st, uint64_t stream, uint32_t seg,
                                      const void *data, size_t len)
{
    int rc = enter(st);
    if (rc) return rc;
    if (st->opts.read_only) {
        rc = kmb_error_set(KMB_EREADONLY, 0, "cannot replace segment bytes in read-only mode");
        goto out;
    }
    stream_state *s = table_find(st, stream);
    save_indexes(st, s);
    int exists = 0;
    rc = st->backend->segment_exists(st->backend, stream, seg, &exists);
    if (rc == KMB_OK && !exists) {
        char name[KMB_PATH_MAX];
        describe(st, stream, seg, name, sizeof(name));
        rc = kmb_error_set(KMB_ENOTFOUND, 0, "no segment %s", name);
    }
    if (rc == KMB_OK && len) rc = st->backend->write(st->backend, stream, seg, 0, data, len);
    if (rc == KMB_OK) rc = st->backend->truncate(st->backend, stream, seg, len);
    if (rc) rc = with_stream(st, rc, stream, seg);
    forget_stream(st, s);
out:
    leave(st);
    return rc;
}

/* ---------------------------------------------------------------- the parallel reader */

int kmb_storage_set_read_tuning(kmb_storage *st, uint64_t min_bytes, size_t chunk_bytes,
                                size_t block, int helpers_only)
{
    int rc = enter(st);
    if (rc) return rc;
    st->par_min = min_bytes ? min_bytes : WORKER_MIN_BYTES;
    st->read_chunk = chunk_bytes ? chunk_bytes : READ_CHUNK;
    st->par_block = block;
    st->helpers_only = helpers_only != 0;
    leave(st);
    return KMB_OK;
}

int kmb_storage_read_stats(kmb_storage *st, uint64_t *helped, unsigned *threads)
{
    int rc = enter(st);
    if (rc) return rc;
    if (helped)
        *helped = st->worker.pid == getpid() ? (uint64_t)atomic_load(&st->worker.helped) : 0;
    if (threads) *threads = st->opts.read_threads;
    leave(st);
    return KMB_OK;
}

int kmb_storage_index_window(kmb_storage *st, uint64_t stream, size_t *out, size_t cap,
                             size_t *nsegs)
{
    *nsegs = 0;
    int rc = enter(st);
    if (rc) return rc;
    stream_state *s;
    rc = get_stream(st, stream, &s);
    if (rc == KMB_OK && s) {
        *nsegs = s->nsegs;
        for (size_t k = 0; k < s->nsegs && k < cap; k++) out[k] = s->segs[k].ix.lo;
    }
    leave(st);
    return rc;
}

int kmb_storage_tree_data(kmb_storage *st, uint64_t stream, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    int rc = enter(st);
    if (rc) return rc;
    kmb_backend *b = st->backend;
    uint64_t size = 0;
    if (!b->tree_size || !b->load_tree) {
        rc = kmb_error_set(KMB_EINVAL, 0, "this storage backend keeps no tree data");
        goto out;
    }
    rc = b->tree_size(b, stream, &size);
    if (rc == KMB_ENOTFOUND) {
        rc = KMB_OK;
        kmb_error_clear();
        goto out;
    }
    if (rc == KMB_OK && size > SIZE_MAX - 1) rc = oom();
    uint8_t *buf = rc ? NULL : malloc(size ? (size_t)size : 1);
    if (rc == KMB_OK && !buf) rc = oom();
    if (rc == KMB_OK && size) rc = b->load_tree(b, stream, 0, buf, (size_t)size);
    if (rc) {
        free(buf);
        goto out;
    }
    *out = buf;
    *len = (size_t)size;
out:
    leave(st);
    return rc;
}

int kmb_storage_replace_tree_data(kmb_storage *st, uint64_t stream, const void *data,
                                  size_t len)
{
    int rc = enter(st);
    if (rc) return rc;
    kmb_backend *b = st->backend;
    if (st->opts.read_only) {
        rc = kmb_error_set(KMB_EREADONLY, 0, "cannot replace tree data in read-only mode");
        goto out;
    }
    if (!b->save_tree) {
        rc = kmb_error_set(KMB_EINVAL, 0, "this storage backend keeps no tree data");
        goto out;
    }
    stream_state *s = table_find(st, stream);
    save_indexes(st, s);
    rc = b->save_tree(b, stream, 0, data, len);
    forget_stream(st, s);
out:
    leave(st);
    return rc;
}
