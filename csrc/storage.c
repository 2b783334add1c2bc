/*
 * storage.c — the log engine's entry points: open, close and the queries, and the helpers
 * every engine file shares (errors with context, notes, buffers, locking).
 *
 * The engine's other files are named for what they do: stream.c, recover.c, read.c,
 * append.c and hooks.c (engine.h lists them). A backend (kimberlite/sys/backend.h) is
 * reached only through its function table.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"

/* ---------------------------------------------------------------- shared helpers */

int grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return KMB_OK;
    size_t ncap = *cap ? *cap : 4096;
    while (ncap < need) ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
    uint8_t *p = realloc(*buf, ncap);
    if (!p) return oom();
    *buf = p;
    *cap = ncap;
    return KMB_OK;
}

void note(kmb_storage *st, const char *fmt, ...)
{
    if (!st->event_fn) return;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    st->event_fn(st->event_ctx, msg);
}

kmb_error *error_at(uint64_t stream, const char *path)
{
    kmb_error *e = kmb_error_mut();
    if (path) kmb_error_set_path(path);
    e->has_stream = 1;
    e->stream_id = stream;
    return e;
}

void error_set_position(kmb_error *e, uint64_t offset, uint64_t pos)
{
    e->has_offset = 1;
    e->offset = offset;
    e->has_position = 1;
    e->position = pos;
}

void error_set_hashes(kmb_error *e, const uint8_t *expected, const uint8_t *actual)
{
    e->has_expected_hash = expected != NULL;
    if (expected) memcpy(e->expected_hash, expected, KMB_HASH_SIZE);
    e->has_actual_hash = actual != NULL;
    if (actual) memcpy(e->actual_hash, actual, KMB_HASH_SIZE);
}

int with_stream(kmb_storage *st, int rc, uint64_t stream, uint32_t seg)
{
    kmb_error *e = error_at(stream, NULL);
    if (e->path[0] == '\0') describe(st, stream, seg, e->path, sizeof(e->path));
    return rc;
}

int corrupt(kmb_storage *st, uint64_t stream, uint32_t seg, uint64_t offset, uint64_t pos,
            const char *what)
{
    char path[KMB_PATH_MAX];
    describe(st, stream, seg, path, sizeof(path));
    kmb_error_set(KMB_ECORRUPT, 0,
                  "stream %" PRIu64 ": %s at offset %" PRIu64 " (byte %" PRIu64
                  " of %s); the records before it are intact: read them with read_from up "
                  "to that offset and restore the rest from a copy",
                  stream, what, offset, pos, path);
    error_set_position(error_at(stream, path), offset, pos);
    return KMB_ECORRUPT;
}

int save_index_if_dirty(kmb_storage *st, stream_state *s, seg_state *g)
{
    if (st->opts.read_only || !g->index_dirty || g->damaged) return KMB_OK;
    int rc = index_complete(st, s, g); /* a partial index is saved whole */
    if (rc) return rc;
    if (g->damaged) return KMB_OK;
    uint8_t *data = NULL;
    size_t len = 0;
    rc = kmb_index_encode(&g->ix, &data, &len);
    if (rc) return rc;
    rc = st->backend->save_index(st->backend, s->id, g->number, data, len);
    free(data);
    if (rc) return with_stream(st, rc, s->id, g->number);
    g->index_dirty = 0;
    return KMB_OK;
}

static int closed_error(void)
{
    return kmb_error_set(KMB_ECLOSED, 0, "I/O operation on a closed storage");
}

/* Whether this storage is a disk writer inherited across fork() by a child process. */
static int inherited(kmb_storage *st) { return st->fork_guard && getpid() != st->pid; }

/* Lock and check the storage is open; on failure the lock is not held. */
int enter(kmb_storage *st)
{
    /* Checked before locking: the mutex may have been held by another thread at fork(). */
    if (inherited(st))
        return kmb_error_set(KMB_ERROR, 0,
                             "this Storage was opened by process %ld and inherited across "
                             "fork(); a child cannot use its parent's writer: open a new "
                             "Storage in this process (read_only=True beside the parent's "
                             "writer)",
                             (long)st->pid);
    pthread_mutex_lock(&st->mu);
    if (st->closed) {
        pthread_mutex_unlock(&st->mu);
        return closed_error();
    }
    return KMB_OK;
}

void leave(kmb_storage *st) { pthread_mutex_unlock(&st->mu); }

/* ---------------------------------------------------------------- open */

void kmb_options_init(kmb_options *opts)
{
    opts->max_segment_size = KMB_DEFAULT_MAX_SEGMENT_SIZE;
    opts->max_event_size = KMB_DEFAULT_MAX_EVENT_SIZE;
    opts->read_only = 0;
    opts->read_threads = 0;
}

/*
 * The read_threads in force: the option, else KIMBERLITE_READ_THREADS, else the CPUs (an
 * explicit number is *forced: used even on fewer CPUs). KMB_EINVAL for a bad variable.
 */
static int resolve_read_threads(unsigned opt, unsigned *out, int *forced)
{
    *forced = 1;
    if (opt) {
        *out = opt;
        return KMB_OK;
    }
    const char *env = getenv(KMB_READ_THREADS_ENV);
    if (env && *env) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(env, &end, 10);
        if (errno || *end || env[0] == '-' || env[0] == '+' || v < 1 || v > KMB_MAX_READ_THREADS)
            return kmb_error_set(KMB_EINVAL, 0,
                                 "environment variable " KMB_READ_THREADS_ENV "=%.40s is not "
                                 "a number of threads from 1 to %u; fix or unset it",
                                 env, KMB_MAX_READ_THREADS);
        *out = (unsigned)v;
        return KMB_OK;
    }
    *forced = 0;
    *out = kmb_pool_default_size();
    return KMB_OK;
}

/*
 * The partial index loads in force (recover.c): IDX_LAZY_MIN and IDX_LAZY_WINDOW entries,
 * or KIMBERLITE_INDEX_LAZY="MIN[,WINDOW]" (a knob for tests, which need the partial path
 * on small stores; MIN 0 turns it off). KMB_EINVAL for a bad variable.
 */
static int resolve_index_lazy(size_t *min, size_t *window)
{
    *min = IDX_LAZY_MIN;
    *window = IDX_LAZY_WINDOW;
    const char *env = getenv(IDX_LAZY_ENV);
    if (!env || !*env) return KMB_OK;
    char *end;
    errno = 0;
    unsigned long long m = strtoull(env, &end, 10), w = IDX_LAZY_WINDOW;
    int bad = errno || end == env || env[0] == '-' || env[0] == '+';
    if (!bad && *end == ',') {
        const char *p = end + 1;
        w = strtoull(p, &end, 10);
        bad = errno || end == p || p[0] == '-' || p[0] == '+' || w < 1 || w > (1u << 24);
    }
    if (bad || *end || m > ((size_t)1 << 40))
        return kmb_error_set(KMB_EINVAL, 0,
                             "environment variable " IDX_LAZY_ENV "=%.40s is not MIN[,WINDOW] "
                             "(numbers of index entries, WINDOW from 1 to 2**24); fix or unset "
                             "it", env);
    *min = (size_t)m;
    *window = (size_t)w;
    return KMB_OK;
}

/* A backend this engine can use: its version, and every required callback present. */
static int check_backend(const kmb_backend *b)
{
    if (b->version != KMB_BACKEND_VERSION)
        return kmb_error_set(KMB_EINVAL, 0,
                             "backend of interface version %u; this library implements version "
                             "%d (kimberlite/sys/backend.h): rebuild the backend against it",
                             b->version, KMB_BACKEND_VERSION);
    const char *missing = !b->free             ? "free"
                          : !b->list_streams   ? "list_streams"
                          : !b->list_segments  ? "list_segments"
                          : !b->segment_exists ? "segment_exists"
                          : !b->segment_size   ? "segment_size"
                          : !b->read           ? "read"
                          : !b->write          ? "write"
                          : !b->truncate       ? "truncate"
                          : !b->sync           ? "sync"
                          : !b->create_segment ? "create_segment"
                          : !b->quarantine     ? "quarantine"
                          : !b->load_index     ? "load_index"
                          : !b->save_index     ? "save_index"
                          : !b->describe       ? "describe"
                                               : NULL;
    if (missing)
        return kmb_error_set(KMB_EINVAL, 0, "backend has no %s callback (required by "
                             "kimberlite/sys/backend.h)", missing);
    return KMB_OK;
}

/* The one check of the options (NULL: the defaults), made before anything is opened. */
static int check_options(const kmb_options *opts)
{
    if (opts && opts->max_segment_size == 0)
        return kmb_error_set(KMB_EINVAL, 0, "max_segment_size must be positive");
    if (opts && opts->max_event_size == 0)
        return kmb_error_set(KMB_EINVAL, 0, "max_event_size must be positive");
    if (opts && opts->read_threads > KMB_MAX_READ_THREADS)
        return kmb_error_set(KMB_EINVAL, 0, "read_threads must be from 1 to %u (or 0: automatic)",
                             KMB_MAX_READ_THREADS);
    unsigned n;
    int forced;
    size_t lazy_min, lazy_window;
    int rc = resolve_index_lazy(&lazy_min, &lazy_window);
    if (rc) return rc;
    return resolve_read_threads(opts ? opts->read_threads : 0, &n, &forced);
}

int kmb_storage_open_backend(kmb_storage **out, kmb_backend *backend, const kmb_options *opts)
{
    *out = NULL;
    int rc = check_backend(backend);
    if (rc == KMB_OK) rc = check_options(opts);
    if (rc) {
        if (backend->free) backend->free(backend);
        return rc;
    }
    kmb_options o;
    kmb_options_init(&o);
    if (opts) o = *opts;
    if (o.max_event_size > UINT32_MAX) o.max_event_size = UINT32_MAX;
    o.read_only = backend->read_only;
    int forced;
    (void)resolve_read_threads(o.read_threads, &o.read_threads, &forced); /* checked above */
    kmb_storage *st = calloc(1, sizeof(*st));
    if (!st) {
        backend->free(backend);
        return oom();
    }
    if (pthread_mutex_init(&st->mu, NULL) != 0) {
        free(st);
        backend->free(backend);
        return kmb_error_set(KMB_ERROR, 0, "cannot create a mutex");
    }
    st->backend = backend;
    st->opts = o;
    st->pid = getpid();
    st->fork_guard = !o.read_only && (backend->flags & KMB_BACKEND_PROCESS_BOUND);
    /*
     * The pool: read_threads - 1 threads beside the caller; at least one, which appends
     * use for their chain whatever read_threads says (on two CPUs or more).
     */
    kmb_hasher_configure(&st->worker, o.read_threads > 1 ? o.read_threads - 1 : 1,
                         forced && o.read_threads > 1);
    st->par_min = WORKER_MIN_BYTES;
    st->read_chunk = READ_CHUNK;
    (void)resolve_index_lazy(&st->idx_lazy_min, &st->idx_lazy_window); /* checked above */
    *out = st;
    return KMB_OK;
}

int kmb_storage_open(kmb_storage **out, const char *path, const kmb_options *opts)
{
    *out = NULL;
    int rc = check_options(opts); /* before the directory is created or locked */
    if (rc) return rc;
    kmb_backend *b;
    rc = kmb_backend_disk_open(&b, path, opts ? opts->read_only : 0);
    if (rc) return rc;
    return kmb_storage_open_backend(out, b, opts);
}

int kmb_storage_open_memory(kmb_storage **out, const kmb_options *opts)
{
    *out = NULL;
    if (opts && opts->read_only)
        return kmb_error_set(KMB_EINVAL, 0, "a memory storage cannot be read-only");
    kmb_backend *b;
    int rc = kmb_backend_memory_new(&b);
    if (rc) return rc;
    return kmb_storage_open_backend(out, b, opts);
}

const kmb_options *kmb_storage_options(kmb_storage *st) { return &st->opts; }

void kmb_storage_set_event_callback(kmb_storage *st, kmb_event_fn fn, void *ctx)
{
    pthread_mutex_lock(&st->mu);
    st->event_fn = fn;
    st->event_ctx = ctx;
    pthread_mutex_unlock(&st->mu);
}

/* ---------------------------------------------------------------- close */

/* Free everything the storage holds, backend included; flush and cut-back are the caller's. */
static void storage_release(kmb_storage *st)
{
    for (size_t i = 0; i < st->tcap; i++) stream_free(st->table[i]);
    free(st->table);
    st->table = NULL;
    st->tcap = st->tcount = 0;
    st->backend->free(st->backend);
    st->backend = NULL;
    free(st->scratch);
    st->scratch = NULL;
    st->scratch_cap = 0;
    free(st->win.buf);
    memset(&st->win, 0, sizeof(st->win));
    free(st->rbuf);
    st->rbuf = NULL;
    st->rbuf_cap = 0;
    kmb_hasher_stop(&st->worker);
    free_chunks(st);
    free(st->hashes);
    st->hashes = NULL;
    st->hashes_cap = 0;
    st->closed = 1;
}

/* Save every dirty index (a writer only); the first failure is returned, the rest go on. */
static int flush_locked(kmb_storage *st)
{
    if (st->opts.read_only) return KMB_OK;
    int first = KMB_OK;
    for (size_t i = 0; i < st->tcap; i++) {
        stream_state *s = st->table[i];
        if (s) tree_flush(st, s);
        for (size_t k = 0; s && k < s->nsegs; k++) {
            int rc = save_index_if_dirty(st, s, &s->segs[k]);
            if (rc && first == KMB_OK) first = rc;
        }
    }
    return first;
}

int kmb_storage_flush_indexes(kmb_storage *st)
{
    int rc = enter(st);
    if (rc) return rc;
    rc = flush_locked(st);
    leave(st);
    return rc;
}

int kmb_storage_close(kmb_storage *st)
{
    if (inherited(st)) {
        /* No flush, sync or lock: the parent still owns the files (closing our copies of
         * the descriptors keeps the parent's lock). */
        if (!st->closed) storage_release(st);
        return KMB_OK;
    }
    pthread_mutex_lock(&st->mu);
    if (st->closed) {
        pthread_mutex_unlock(&st->mu);
        return KMB_OK;
    }
    int rc = flush_locked(st);
    /* Last chance to cut back failed batches: a reopen must not find their records. */
    for (size_t i = 0; i < st->tcap; i++) {
        stream_state *s = st->table[i];
        if (s && s->cut_pending && cut_back(st, s) != KMB_OK && rc == KMB_OK) rc = KMB_EIO;
    }
    kmb_error saved = *kmb_error_last();
    storage_release(st);
    pthread_mutex_unlock(&st->mu);
    if (rc) *kmb_error_mut() = saved;
    return rc;
}

int kmb_storage_is_closed(kmb_storage *st)
{
    pthread_mutex_lock(&st->mu);
    int c = st->closed;
    pthread_mutex_unlock(&st->mu);
    return c;
}

void kmb_storage_free(kmb_storage *st)
{
    if (!st) return;
    kmb_storage_close(st);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

/* ---------------------------------------------------------------- fork() (storage.h) */

void kmb_storage_fork_prepare(kmb_storage *st) { pthread_mutex_lock(&st->mu); }

void kmb_storage_fork_parent(kmb_storage *st) { pthread_mutex_unlock(&st->mu); }

void kmb_storage_fork_child(kmb_storage *st)
{
    /* Only this thread exists now, and it holds the mutex (fork_prepare): no call was in
     * progress, so the state is consistent; the hasher's thread stayed in the parent. */
    kmb_hasher_forget(&st->worker);
    if (inherited(st) && st->backend != NULL && st->backend->after_fork_child)
        st->backend->after_fork_child(st->backend);
    pthread_mutex_unlock(&st->mu);
}

/* ---------------------------------------------------------------- queries */

/* Lock the storage and load a stream (*s NULL when absent); on failure nothing is held. */
static int enter_stream(kmb_storage *st, uint64_t stream, stream_state **s)
{
    *s = NULL;
    int rc = enter(st);
    if (rc) return rc;
    rc = get_stream(st, stream, s);
    if (rc) leave(st);
    return rc;
}

/*
 * Damage at or after the last record known hides where the stream ends: records may be
 * missing there (an emptied segment, a damaged record with valid records after it). Its
 * length and head are then unknown, and giving the intact prefix's instead would make the
 * stream look shorter than what was written.
 */
static int end_hidden(kmb_storage *st, stream_state *s)
{
    if (!s->damaged || s->tamper || s->damage_offset < s->next) return KMB_OK;
    return damaged_error(st, s);
}

int kmb_storage_next_offset(kmb_storage *st, uint64_t stream, uint64_t *out)
{
    stream_state *s;
    *out = 0;
    int rc = enter_stream(st, stream, &s);
    if (rc) return rc;
    if (s) rc = end_hidden(st, s);
    if (s && rc == KMB_OK) *out = s->next;
    leave(st);
    return rc;
}

int kmb_storage_head(kmb_storage *st, uint64_t stream, uint8_t out[KMB_HASH_SIZE], int *has)
{
    stream_state *s;
    *has = 0;
    int rc = enter_stream(st, stream, &s);
    if (rc) return rc;
    if (s) rc = end_hidden(st, s);
    if (s && rc == KMB_OK && s->has_head) {
        memcpy(out, s->head, KMB_HASH_SIZE);
        *has = 1;
    }
    leave(st);
    return rc;
}

int kmb_storage_segment_count(kmb_storage *st, uint64_t stream, uint64_t *out)
{
    stream_state *s;
    *out = 0;
    int rc = enter_stream(st, stream, &s);
    if (rc) return rc;
    if (s) *out = s->nsegs;
    leave(st);
    return KMB_OK;
}

int kmb_storage_completed_segments(kmb_storage *st, uint64_t stream, uint32_t **out,
                                   size_t *count)
{
    stream_state *s;
    *out = NULL;
    *count = 0;
    int rc = enter_stream(st, stream, &s);
    if (rc) return rc;
    if (s && s->nsegs > 1) {
        uint32_t *nums = malloc((s->nsegs - 1) * sizeof(*nums));
        if (!nums) {
            rc = oom();
        } else {
            for (size_t i = 0; i + 1 < s->nsegs; i++) nums[i] = s->segs[i].number;
            *out = nums;
            *count = s->nsegs - 1;
        }
    }
    leave(st);
    return rc;
}

int kmb_storage_streams(kmb_storage *st, uint64_t **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    int rc = enter(st);
    if (rc) return rc;
    rc = st->backend->list_streams(st->backend, out, count);
    leave(st);
    return rc;
}
