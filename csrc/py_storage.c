/*
 * py_storage.c — the types kimberlite.Storage (files) and kimberlite.MemoryStorage.
 *
 * Both wrap one kmb_storage (storage.h) and share every method; they differ only in how
 * they open (kmb_storage_open / kmb_storage_open_memory) and in their options. The layer is
 * thin: it converts arguments, releases the GIL around every engine call (the engine
 * serialises calls on one kmb_storage with its own mutex, so no Python-side lock is needed
 * and the GIL is never held while the engine may block), and turns engine codes into
 * exceptions through one path (kmb_storage_finish -> kmb_raise, py_errors.c). Both reads
 * share one data path (read_sink, over kmb_storage_read_each).
 *
 * Lifetime: close() only closes the engine storage (which then answers KMB_ECLOSED, so a
 * call racing with close() fails cleanly); the kmb_storage is freed in tp_dealloc, when no
 * other thread can be inside it.
 *
 * Recovery events (torn tails quarantined, indexes rebuilt, damage found) are queued by
 * the engine's callback and logged after each call: py_events.c.
 */
#include "py_kimberlite.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <structmember.h>

/* A read chunk of at least a quarter of this many payload bytes (and 1 KiB per record on
 * average) is copied into its bytes objects without the GIL (read_sink_chunk). */
#define KMB_COPY_GIL_THRESHOLD (256 * 1024)

typedef kmb_storage_object StorageObject;

/*
 * After an engine call (GIL held): raise for a failure first (kmb_error_last() is still this
 * call's; `expected` as in kmb_raise_expected), then log recovery events. Returns 0 for
 * KMB_OK, -1 with an exception set. The one raise path of every method.
 */
static int storage_finish_expected(StorageObject *self, int rc, PyObject *expected)
{
    if (rc != KMB_OK) {
        kmb_module_state *ms = kmb_state_of_type(Py_TYPE(self));
        if (ms != NULL) kmb_raise_expected(ms, rc, expected);
    }
    kmb_events_drain(self);
    return rc == KMB_OK ? 0 : -1;
}

int kmb_storage_finish(StorageObject *self, int rc)
{
    return storage_finish_expected(self, rc, NULL);
}

/* ---- helpers ---------------------------------------------------------------------------- */

int kmb_storage_check_open(StorageObject *self)
{
    if (self->st == NULL) {
        PyErr_Format(PyExc_ValueError, "%s object is not initialised (its __init__ was not called "
                     "or failed)", Py_TYPE(self)->tp_name);
        return -1;
    }
    if (self->closed) {
        PyErr_Format(PyExc_ValueError, "operation on a closed %s; open a new one",
                     Py_TYPE(self)->tp_name);
        return -1;
    }
    return 0;
}

/* A size option: a positive int (TypeError for non-ints, ValueError for <= 0); huge values
 * are clamped to 2**64 - 1. NULL keeps *out. */
static int storage_size_option(PyObject *obj, const char *name, uint64_t *out)
{
    if (obj == NULL) return 0;
    uint64_t v = 1;
    if (kmb_int_to_u64(obj, name, 1, &v) < 0 || v == 0) {
        if (v == 0 || PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "%s must be a positive int, got %R", name, obj);
        }
        return -1;
    }
    *out = v;
    return 0;
}

/* read_threads: None (automatic: 0) or an int from 1 to KMB_MAX_READ_THREADS. */
static int storage_threads_option(PyObject *obj, unsigned *out)
{
    if (obj == NULL || obj == Py_None) return 0;
    uint64_t v = 0;
    if (kmb_int_to_u64(obj, "read_threads", 1, &v) < 0 || v < 1 || v > KMB_MAX_READ_THREADS) {
        if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError,
                         "read_threads must be an int from 1 to %u, or None (one per CPU, "
                         "at most 8), got %R", KMB_MAX_READ_THREADS, obj);
        }
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

/* None -> UINT64_MAX (no limit); otherwise a non-negative int of any size. */
static int storage_max_bytes(PyObject *obj, uint64_t *out)
{
    if (obj == Py_None) {
        *out = KMB_NO_LIMIT;
        return 0;
    }
    return kmb_int_to_u64(obj, "max_bytes", 1, out);
}

static PyObject *u64_list(const uint64_t *v, size_t n)
{
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (list == NULL) return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *x = PyLong_FromUnsignedLongLong(v[i]);
        if (x == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, x);
    }
    return list;
}

/* ---- construction and destruction ------------------------------------------------------- */

static PyObject *storage_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    StorageObject *self = (StorageObject *)tp->tp_alloc(tp, 0);
    if (self == NULL) return NULL;
    if (pthread_mutex_init(&self->events_mu, NULL) != 0) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    Py_INCREF(Py_None);
    self->path = Py_None;
    return (PyObject *)self;
}


/* Common tail of both __init__: open with the GIL released, then adopt the storage, and
 * enter it in the at-fork registry. */
static int storage_adopt(StorageObject *self, const char *path, const kmb_options *opts)
{
    if (self->st != NULL) {
        PyErr_Format(PyExc_RuntimeError, "%s.__init__() cannot be called twice",
                     Py_TYPE(self)->tp_name);
        return -1;
    }
    kmb_storage *st = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = path ? kmb_storage_open(&st, path, opts) : kmb_storage_open_memory(&st, opts);
    Py_END_ALLOW_THREADS
    if (rc != KMB_OK) return kmb_storage_finish(self, rc); /* the one raise path */
    kmb_storage_set_event_callback(st, kmb_events_push, self);
    const kmb_options *in_force = kmb_storage_options(st);
    self->st = st;
    self->closed = 0;
    self->read_only = in_force->read_only != 0;
    self->max_segment_size = in_force->max_segment_size;
    self->max_event_size = in_force->max_event_size;
    self->read_threads = in_force->read_threads;
    return kmb_storage_track_for_fork(self);
}

static int storage_init(StorageObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "max_segment_size", "max_event_size", "read_only",
                             "read_threads", NULL};
    PyObject *path_bytes = NULL, *mss = NULL, *mes = NULL, *rt = NULL;
    int read_only = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|$OOpO:Storage", kwlist,
                                     PyUnicode_FSConverter, &path_bytes, &mss, &mes, &read_only,
                                     &rt))
        return -1;
    int rc = -1;
    kmb_options opts;
    kmb_options_init(&opts);
    opts.read_only = read_only;
    if (storage_size_option(mss, "max_segment_size", &opts.max_segment_size) < 0) goto cleanup;
    if (storage_size_option(mes, "max_event_size", &opts.max_event_size) < 0) goto cleanup;
    if (storage_threads_option(rt, &opts.read_threads) < 0) goto cleanup;
    PyObject *path_str = PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(path_bytes),
                                                          PyBytes_GET_SIZE(path_bytes));
    if (path_str == NULL) goto cleanup;
    if (storage_adopt(self, PyBytes_AS_STRING(path_bytes), &opts) < 0) {
        Py_DECREF(path_str);
        goto cleanup;
    }
    Py_XSETREF(self->path, path_str);
    self->is_memory = 0;
    rc = 0;
cleanup:
    Py_XDECREF(path_bytes);
    return rc;
}

static int memory_storage_init(StorageObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_segment_size", "max_event_size", "read_threads", NULL};
    PyObject *mss = NULL, *mes = NULL, *rt = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OOO:MemoryStorage", kwlist, &mss, &mes, &rt))
        return -1;
    kmb_options opts;
    kmb_options_init(&opts);
    if (storage_size_option(mss, "max_segment_size", &opts.max_segment_size) < 0) return -1;
    if (storage_size_option(mes, "max_event_size", &opts.max_event_size) < 0) return -1;
    if (storage_threads_option(rt, &opts.read_threads) < 0) return -1;
    if (storage_adopt(self, NULL, &opts) < 0) return -1;
    self->is_memory = 1;
    return 0;
}

static int storage_traverse(StorageObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->path);
    return 0;
}

static void storage_dealloc(StorageObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) PyObject_ClearWeakRefs((PyObject *)self);
    if (self->st != NULL) {
        kmb_storage *st = self->st;
        self->st = NULL;
        /* Closing flushes indexes and releases the lock: I/O, so without the GIL. */
        Py_BEGIN_ALLOW_THREADS
        kmb_storage_free(st);
        Py_END_ALLOW_THREADS
    }
    kmb_events_discard(self);
    pthread_mutex_destroy(&self->events_mu);
    Py_CLEAR(self->path);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* ---- methods ---------------------------------------------------------------------------- */

PyDoc_STRVAR(append_batch_doc,
"append_batch($self, stream_id, events, expected_offset=None, fsync=True)\n--\n\n"
"Append a batch of events to a stream and return the stream's new next offset.\n\n"
"stream_id: an int in [0, 2**64 - 1]; the stream is created on first append.\n"
"events: an iterable of bytes-like objects (bytes, bytearray, memoryview, ...), each at\n"
"most max_event_size bytes. str or other non-buffers raise TypeError, an empty batch or\n"
"an oversized event ValueError; in every case nothing is written.\n"
"expected_offset: None appends at the end; an int must equal next_offset(stream_id),\n"
"else OffsetMismatchError is raised and nothing is written (optimistic concurrency).\n"
"fsync: True makes the batch durable (synced) before returning; False only hands it to\n"
"the operating system. Ignored by MemoryStorage.\n\n"
"The batch is all or nothing when it fails: on a write error the segment is cut back and\n"
"StorageIOError is raised. A read-only Storage raises StorageError; a stream with damaged\n"
"records raises CorruptedRecordError rather than extend the chain past the damage.");

/*
 * expected_offset: None -> *out = NULL. An int the engine can carry -> *value. A negative
 * int or one >= 2**64 can never match, but the engine still validates the batch first: it
 * gets UINT64_MAX (never a next offset: offsets stay below 2**63) and *unrepresentable is
 * set, so that the error names the caller's value. 0 or -1 (TypeError for non-ints).
 */
static int expected_offset_arg(PyObject *obj, uint64_t *value, const uint64_t **out,
                               int *unrepresentable)
{
    *out = NULL;
    *unrepresentable = 0;
    if (obj == Py_None) return 0;
    if (kmb_int_to_u64(obj, "expected_offset", 0, value) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) return -1;
        PyErr_Clear();
        *value = UINT64_MAX;
        *unrepresentable = 1;
    }
    *out = value;
    return 0;
}

/*
 * The events of a batch as slices over their buffers, valid until batch_release(). A list
 * is copied into a tuple: while the GIL is out another thread could remove an item from the
 * list and free it. Exact bytes objects are used without a buffer view (the common case);
 * other bytes-like objects are held through views, whose exporters stay referenced.
 */
typedef struct batch {
    PyObject *seq;        /* holds the items alive */
    kmb_slice *slices;    /* count entries: stack, or PyMem */
    size_t count;
    Py_buffer *views;     /* only for items that are not exact bytes, allocated on need */
    Py_ssize_t nviews;
    kmb_slice stack[64];
} batch;

static void batch_release(batch *b)
{
    for (Py_ssize_t i = 0; i < b->nviews; i++) PyBuffer_Release(&b->views[i]);
    PyMem_Free(b->views);
    if (b->slices != b->stack) PyMem_Free(b->slices);
    Py_XDECREF(b->seq);
}

/* TypeError for events[i], which is not a bytes-like object (the index is formatted only
 * now, for the message). */
static int batch_item_error(PyObject *item, Py_ssize_t i)
{
    char what[48];
    snprintf(what, sizeof what, "events[%zd]", i);
    Py_buffer unused;
    if (kmb_get_buffer(item, &unused, what) == 0) PyBuffer_Release(&unused);
    if (!PyErr_Occurred()) PyErr_Format(PyExc_TypeError, "%s must be a bytes-like object", what);
    return -1;
}

/* Fill *b (zeroed by the caller) from `events`. 0, or -1 with an exception (then release
 * *b all the same). */
static int batch_build(batch *b, PyObject *events)
{
    if (PyUnicode_Check(events) || PyObject_CheckBuffer(events)) {
        PyErr_Format(PyExc_TypeError,
                     "events must be an iterable of bytes-like objects, not a single %.100s; "
                     "to append one event, pass [event]", Py_TYPE(events)->tp_name);
        return -1;
    }
    b->slices = b->stack;
    b->seq = PyList_CheckExact(events)
                 ? PyList_AsTuple(events)
                 : PySequence_Fast(events, "events must be an iterable of bytes-like objects");
    if (b->seq == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(b->seq);
    PyObject **items = PySequence_Fast_ITEMS(b->seq);
    if (n > (Py_ssize_t)(sizeof b->stack / sizeof b->stack[0])) {
        b->slices = PyMem_Malloc((size_t)n * sizeof *b->slices);
        if (b->slices == NULL) {
            b->slices = b->stack;
            PyErr_NoMemory();
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = items[i];
        if (PyBytes_CheckExact(item)) {
            b->slices[i].data = PyBytes_AS_STRING(item);
            b->slices[i].len = (size_t)PyBytes_GET_SIZE(item);
            continue;
        }
        if (PyUnicode_Check(item) || !PyObject_CheckBuffer(item)) return batch_item_error(item, i);
        if (b->views == NULL && (b->views = PyMem_Malloc((size_t)(n - i) * sizeof *b->views)) == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        Py_buffer *v = &b->views[b->nviews];
        if (kmb_get_buffer(item, v, "an event") < 0) return -1;
        b->nviews++;
        b->slices[i].data = v->buf;
        b->slices[i].len = (size_t)v->len;
    }
    b->count = (size_t)n;
    return 0;
}

static PyObject *storage_append_batch(StorageObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stream_id", "events", "expected_offset", "fsync", NULL};
    PyObject *sid, *events, *expected_obj = Py_None;
    int fsync = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|Op:append_batch", kwlist, &sid, &events,
                                     &expected_obj, &fsync))
        return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    uint64_t stream, expected, next = 0;
    const uint64_t *expected_p;
    int unrepresentable;
    if (kmb_stream_id(sid, &stream) < 0) return NULL;
    if (expected_offset_arg(expected_obj, &expected, &expected_p, &unrepresentable) < 0)
        return NULL;

    PyObject *result = NULL;
    batch b;
    memset(&b, 0, sizeof b);
    if (batch_build(&b, events) == 0) {
        int rc;
        Py_BEGIN_ALLOW_THREADS /* the views stay held while the GIL is out */
        rc = kmb_storage_append(self->st, stream, b.slices, b.count, expected_p, fsync, &next);
        Py_END_ALLOW_THREADS
        if (storage_finish_expected(self, rc, unrepresentable ? expected_obj : NULL) == 0)
            result = PyLong_FromUnsignedLongLong(next);
    }
    batch_release(&b);
    return result;
}

/* Parse (stream_id, from_offset=0, max_bytes=None). */
static int storage_read_args(StorageObject *self, PyObject *args, PyObject *kwds,
                             const char *format, uint64_t *stream, uint64_t *from,
                             uint64_t *max_bytes)
{
    static char *kwlist[] = {"stream_id", "from_offset", "max_bytes", NULL};
    PyObject *sid, *from_obj = NULL, *max_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, format, kwlist, &sid, &from_obj, &max_obj))
        return -1;
    if (kmb_storage_check_open(self) < 0) return -1;
    *from = 0;
    if (kmb_stream_id(sid, stream) < 0) return -1;
    /* A from_offset past 2**64 - 1 is simply past the end: clamp. */
    if (from_obj != NULL && kmb_int_to_u64(from_obj, "from_offset", 1, from) < 0) return -1;
    return storage_max_bytes(max_obj, max_bytes);
}

/*
 * The one data path of read_from and read_records: the consumer of verified chunks
 * (kmb_read_fn) of kmb_storage_read_each. The engine calls it without the GIL and with its
 * mutex held (never the other way round anywhere in this module, so this cannot deadlock).
 *
 * The one GIL rule of both reads: the GIL is taken only to create the chunk's objects,
 * while the engine's worker may be hashing the next chunk; a chunk of large payloads (at
 * least KMB_COPY_GIL_THRESHOLD / 4 bytes in all and 1 KiB per record on average) is copied
 * into its new bytes objects after the GIL is released again: nobody else can see them yet
 * (bytes objects are not tracked by the garbage collector).
 *
 * read_records makes each Record there and then (kmb_record_new: the fields of a verified
 * record are copied, not checked again). Records are not tracked by the garbage collector
 * either, so until the list is returned only the sink can reach a payload being filled.
 */
typedef struct read_sink {
    PyThreadState *ts;      /* the calling thread's state while the GIL is out */
    kmb_module_state *ms;   /* records: the module state (Record class), else NULL */
    PyObject **items;       /* new references, in stream order: bytes, or Records */
    PyObject **fill;        /* items whose payload bytes are still to be copied (copy later) */
    size_t count, cap;
    int failed;             /* a Python exception is set */
} read_sink;

/* Room for n more items (no GIL needed: raw allocator). 0 or -1. */
static int read_sink_grow(read_sink *k, size_t n)
{
    if (k->count + n <= k->cap) return 0;
    size_t cap = k->cap ? k->cap : 256;
    while (cap < k->count + n) cap *= 2;
    PyObject **p = PyMem_RawRealloc(k->items, cap * sizeof *p);
    if (p == NULL) return -1;
    k->items = p;
    k->cap = cap;
    return 0;
}

/* Create the chunk's objects (GIL held); with copy_later, payloads stay unfilled and
 * fill[j] is the bytes object of record j. */
static int read_sink_objects(read_sink *k, const kmb_record *recs, size_t n, PyObject **fill)
{
    for (size_t j = 0; j < n; j++) {
        const char *src = fill ? NULL : (const char *)recs[j].payload;
        PyObject *item = PyBytes_FromStringAndSize(src, (Py_ssize_t)recs[j].length);
        if (item == NULL) return -1;
        if (fill) fill[j] = item;
        if (k->ms != NULL && (item = kmb_record_new(k->ms, &recs[j], item)) == NULL) return -1;
        k->items[k->count++] = item;
    }
    return 0;
}

static int read_sink_chunk(void *ctx, const kmb_record *recs, size_t n)
{
    read_sink *k = ctx;
    if (n == 0) return 0;
    uint64_t bytes = 0;
    for (size_t j = 0; j < n; j++) bytes += recs[j].length;
    int copy_later = bytes >= KMB_COPY_GIL_THRESHOLD / 4 && bytes >= (uint64_t)n * 1024;
    PyObject **fill = copy_later ? PyMem_RawMalloc(n * sizeof *fill) : NULL;
    int grown = (copy_later && fill == NULL) ? -1 : read_sink_grow(k, n);
    PyEval_RestoreThread(k->ts);
    if (grown < 0) PyErr_NoMemory();
    k->failed = grown < 0 || read_sink_objects(k, recs, n, fill) < 0;
    k->ts = PyEval_SaveThread();
    if (!k->failed && fill != NULL)
        for (size_t j = 0; j < n; j++)
            if (recs[j].length) memcpy(PyBytes_AS_STRING(fill[j]), recs[j].payload, recs[j].length);
    PyMem_RawFree(fill);
    return k->failed ? KMB_ENOMEM : 0;
}

static void read_sink_clear(read_sink *k)
{
    for (size_t i = 0; i < k->count; i++) Py_XDECREF(k->items[i]);
    PyMem_RawFree(k->items);
}

/* The list read_from or read_records returns, from a complete sink (GIL held). Takes the
 * sink's references. */
static PyObject *read_sink_list(read_sink *k)
{
    PyObject *list = PyList_New((Py_ssize_t)k->count);
    if (list == NULL) return NULL;
    for (size_t i = 0; i < k->count; i++) {
        PyList_SET_ITEM(list, (Py_ssize_t)i, k->items[i]);
        k->items[i] = NULL;
    }
    return list;
}

/* read_from (records = 0) and read_records (records = 1). */
static PyObject *storage_read(StorageObject *self, PyObject *args, PyObject *kwds,
                              const char *format, int records)
{
    kmb_module_state *ms = kmb_state_of_type(Py_TYPE(self));
    if (ms == NULL) return NULL;
    uint64_t stream, from, max_bytes;
    if (storage_read_args(self, args, kwds, format, &stream, &from, &max_bytes) < 0)
        return NULL;
    read_sink k;
    memset(&k, 0, sizeof k);
    k.ms = records ? ms : NULL;
    k.ts = PyEval_SaveThread();
    int rc = kmb_storage_read_each(self->st, stream, from, max_bytes, read_sink_chunk, &k);
    PyEval_RestoreThread(k.ts);
    PyObject *list = NULL;
    if (k.failed)
        kmb_events_drain(self); /* the callback's exception stands */
    else if (kmb_storage_finish(self, rc) == 0)
        list = read_sink_list(&k);
    read_sink_clear(&k);
    return list;
}

PyDoc_STRVAR(read_from_doc,
"read_from($self, stream_id, from_offset=0, max_bytes=None)\n--\n\n"
"Return the payloads of a stream's events from from_offset on, as a list of bytes.\n\n"
"Events are returned in order while the sum of the payload sizes returned so far is\n"
"below max_bytes: the event that crosses the limit is included, so max_bytes > 0 returns\n"
"at least one event when one exists and max_bytes == 0 returns []. None: no limit.\n"
"from_offset at or past the end, or a stream that does not exist, gives [].\n\n"
"Every record returned is checked (CRC, offset, chain link): damage raises\n"
"CorruptedRecordError or ChainVerificationError instead of returning altered data.");

static PyObject *storage_read_from(StorageObject *self, PyObject *args, PyObject *kwds)
{
    return storage_read(self, args, kwds, "O|OO:read_from", 0);
}

PyDoc_STRVAR(read_records_doc,
"read_records($self, stream_id, from_offset=0, max_bytes=None)\n--\n\n"
"Like read_from(), but return kimberlite.Record objects (offset, prev_hash, payload).\n\n"
"prev_hash is None for the genesis record (offset 0).");

static PyObject *storage_read_records(StorageObject *self, PyObject *args, PyObject *kwds)
{
    return storage_read(self, args, kwds, "O|OO:read_records", 1);
}

/* Parse a lone stream_id argument (positional or keyword). */
static int parse_stream_only(PyObject *args, PyObject *kwds, const char *format,
                             uint64_t *stream)
{
    static char *kwlist[] = {"stream_id", NULL};
    PyObject *sid;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, format, kwlist, &sid)) return -1;
    return kmb_stream_id(sid, stream);
}

PyDoc_STRVAR(next_offset_doc,
"next_offset($self, stream_id)\n--\n\n"
"Return the number of records in the stream (the offset the next event gets); 0 if the\n"
"stream does not exist.");

static PyObject *storage_next_offset(StorageObject *self, PyObject *args, PyObject *kwds)
{
    uint64_t stream, next = 0;
    if (parse_stream_only(args, kwds, "O:next_offset", &stream) < 0) return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_next_offset(self->st, stream, &next);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(next);
}

PyDoc_STRVAR(latest_chain_hash_doc,
"latest_chain_hash($self, stream_id)\n--\n\n"
"Return the stream's head hash (the chain hash of its last record, 32 bytes), or None\n"
"if the stream is empty or does not exist. Keep it somewhere safe to detect tampering\n"
"later with verify(stream_id, expected_head=...).");

static PyObject *storage_latest_chain_hash(StorageObject *self, PyObject *args, PyObject *kwds)
{
    uint64_t stream;
    if (parse_stream_only(args, kwds, "O:latest_chain_hash", &stream) < 0) return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    uint8_t head[KMB_HASH_SIZE];
    int has = 0, rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_head(self->st, stream, head, &has);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    return kmb_hash_to_py(head, has);
}

PyDoc_STRVAR(verify_doc,
"verify($self, stream_id, expected_head=None)\n--\n\n"
"Verify a whole stream from genesis (every CRC, offset and chain link) and return\n"
"(next_offset, head_hash_or_None).\n\n"
"expected_head: a trusted 32-byte head hash (from latest_chain_hash() earlier); if the\n"
"stream's head differs, records included missing at the end, ChainVerificationError is\n"
"raised. Damage raises CorruptedRecordError or ChainVerificationError.");

static PyObject *storage_verify(StorageObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stream_id", "expected_head", NULL};
    PyObject *sid, *head_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:verify", kwlist, &sid, &head_obj))
        return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    uint64_t stream, next = 0;
    if (kmb_stream_id(sid, &stream) < 0) return NULL;
    uint8_t expected[KMB_HASH_SIZE], head[KMB_HASH_SIZE];
    int has_expected, has_head = 0, rc;
    if (kmb_hash_arg(head_obj, "expected_head", expected, &has_expected) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_verify(self->st, stream, has_expected ? expected : NULL, &next, head,
                            &has_head);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    PyObject *h = kmb_hash_to_py(head, has_head);
    if (h == NULL) return NULL;
    PyObject *result = Py_BuildValue("(KN)", (unsigned long long)next, h);
    return result;
}

PyDoc_STRVAR(streams_doc,
"streams($self)\n--\n\n"
"Return the ids of the streams that exist, ascending.");

static PyObject *storage_streams(StorageObject *self, PyObject *Py_UNUSED(ignored))
{
    if (kmb_storage_check_open(self) < 0) return NULL;
    uint64_t *ids = NULL;
    size_t count = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_streams(self->st, &ids, &count);
    Py_END_ALLOW_THREADS
    PyObject *list = NULL;
    if (kmb_storage_finish(self, rc) == 0) list = u64_list(ids, count);
    free(ids);
    return list;
}

PyDoc_STRVAR(segment_count_doc,
"segment_count($self, stream_id)\n--\n\n"
"Return the number of segments of a stream, the active one included; 0 if the stream\n"
"does not exist.");

static PyObject *storage_segment_count(StorageObject *self, PyObject *args, PyObject *kwds)
{
    uint64_t stream, count = 0;
    if (parse_stream_only(args, kwds, "O:segment_count", &stream) < 0) return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_segment_count(self->st, stream, &count);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(count);
}

PyDoc_STRVAR(completed_segments_doc,
"completed_segments($self, stream_id)\n--\n\n"
"Return the numbers of a stream's sealed segments (never written again), ascending.");

static PyObject *storage_completed_segments(StorageObject *self, PyObject *args, PyObject *kwds)
{
    uint64_t stream;
    if (parse_stream_only(args, kwds, "O:completed_segments", &stream) < 0) return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    uint32_t *segs = NULL;
    size_t count = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_completed_segments(self->st, stream, &segs, &count);
    Py_END_ALLOW_THREADS
    PyObject *list = NULL;
    if (kmb_storage_finish(self, rc) == 0 && (list = PyList_New((Py_ssize_t)count)) != NULL) {
        for (size_t i = 0; i < count; i++) {
            PyObject *x = PyLong_FromUnsignedLong(segs[i]);
            if (x == NULL) {
                Py_CLEAR(list);
                break;
            }
            PyList_SET_ITEM(list, (Py_ssize_t)i, x);
        }
    }
    free(segs);
    return list;
}

PyDoc_STRVAR(flush_indexes_doc,
"flush_indexes($self)\n--\n\n"
"Write every offset index that changed since it was last written. Indexes are a cache\n"
"(rebuilt from the segments when missing); this only speeds up the next open. Also done\n"
"when a segment is sealed and on close(). No-op when read-only.");

static PyObject *storage_flush_indexes(StorageObject *self, PyObject *Py_UNUSED(ignored))
{
    if (kmb_storage_check_open(self) < 0) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_flush_indexes(self->st);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(repair_doc,
"_repair($self, stream_id)\n--\n\n"
"The engine's repair (kimberlite.Storage.repair wraps it in a RepairReport): returns\n"
"(next_offset, [(quarantine name, bytes moved), ...], bytes_moved).");

static PyObject *storage_repair(StorageObject *self, PyObject *args, PyObject *kwds)
{
    uint64_t stream;
    if (parse_stream_only(args, kwds, "O:repair", &stream) < 0) return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    kmb_repair_report rep;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_repair(self->st, stream, &rep);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    PyObject *items = PyList_New((Py_ssize_t)rep.count), *result = NULL;
    for (size_t i = 0; items != NULL && i < rep.count; i++) {
        PyObject *item = Py_BuildValue("(sK)", rep.items[i].name,
                                       (unsigned long long)rep.items[i].bytes);
        if (item == NULL) {
            Py_CLEAR(items);
            break;
        }
        PyList_SET_ITEM(items, (Py_ssize_t)i, item);
    }
    if (items != NULL)
        result = Py_BuildValue("(KNK)", (unsigned long long)rep.next_offset, items,
                               (unsigned long long)rep.bytes_moved);
    kmb_repair_report_free(&rep);
    return result;
}

PyDoc_STRVAR(close_doc,
"close($self)\n--\n\n"
"Flush the indexes and release the storage (files, writer lock). Idempotent. Every\n"
"other method then raises ValueError; the attributes stay readable.");

static PyObject *storage_close(StorageObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->st == NULL) Py_RETURN_NONE;
    /* Always through the engine, even when already marked closed: a concurrent close()
     * then waits for the first one to finish flushing and release the lock. */
    self->closed = 1;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_close(self->st);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(enter_doc,
"__enter__($self)\n--\n\n"
"Return self; the storage is closed when the with block ends.");

static PyObject *storage_enter(StorageObject *self, PyObject *Py_UNUSED(ignored))
{
    if (kmb_storage_check_open(self) < 0) return NULL;
    Py_INCREF(self);
    return (PyObject *)self;
}

PyDoc_STRVAR(exit_doc,
"__exit__($self, exc_type, exc_value, traceback, /)\n--\n\n"
"Close the storage. Exceptions raised in the with block propagate.");

static PyObject *storage_exit(StorageObject *self, PyObject *args)
{
    (void)args;
    PyObject *r = storage_close(self, NULL);
    if (r == NULL) return NULL;
    Py_DECREF(r);
    Py_RETURN_FALSE;
}


/* The verifiable-log methods (py_tree.c). */
PyDoc_STRVAR(tree_root_doc,
"tree_root($self, stream_id, tree_size=None)\n--\n\n"
"Return the RFC 9162 Merkle tree root (32 bytes) of the stream's first tree_size records\n"
"(None: all of them), whose entries are the records' chain hashes (SPEC section 6).\n"
"0 <= tree_size <= next_offset(stream_id), else ValueError; 0 gives SHA-256(b'').\n"
"The tree is kept in memory and catches up from the records (each checked) on demand.");
PyDoc_STRVAR(inclusion_proof_doc,
"inclusion_proof($self, stream_id, offset, tree_size=None)\n--\n\n"
"Return the RFC 9162 inclusion proof (a list of 32-byte hashes, nearest the leaf first)\n"
"of the record at `offset` in the tree of the first tree_size records (None: all).\n"
"0 < tree_size <= next_offset and offset < tree_size, else ValueError. Check it with\n"
"kimberlite.tlog.verify_inclusion(tlog.leaf_hash(record_hash), offset, tree_size, proof, root).");
PyDoc_STRVAR(consistency_proof_doc,
"consistency_proof($self, stream_id, old_size, new_size=None)\n--\n\n"
"Return the RFC 9162 consistency proof (a list of 32-byte hashes) that the tree of\n"
"new_size records (None: all) extends the tree of old_size records.\n"
"0 < old_size <= new_size <= next_offset, else ValueError; equal sizes give [].");
PyDoc_STRVAR(sync_doc,
"_sync($self, stream_id)\n--\n\n"
"Make every record of the stream durable (internal).");
PyDoc_STRVAR(durable_root_doc,
"_durable_root($self, stream_id)\n--\n\n"
"Sync the stream, then return (tree_size, root) of all its records (internal: checkpoint).");
PyDoc_STRVAR(load_checkpoint_doc,
"_load_checkpoint($self, stream_id)\n--\n\n"
"The stream's stored checkpoint bytes, or None (internal: latest_checkpoint).");
PyDoc_STRVAR(store_checkpoint_doc,
"_store_checkpoint($self, stream_id, expected, data)\n--\n\n"
"Store checkpoint bytes atomically and durably if the stored ones are `expected` (None:\n"
"none); return False, storing nothing, otherwise (internal: checkpoint).");

#define KW_METHOD(name, fn, doc) \
    {name, (PyCFunction)(void (*)(void))(fn), METH_VARARGS | METH_KEYWORDS, doc}

static PyMethodDef storage_methods[] = {
    KW_METHOD("append_batch", storage_append_batch, append_batch_doc),
    KW_METHOD("read_from", storage_read_from, read_from_doc),
    KW_METHOD("read_records", storage_read_records, read_records_doc),
    KW_METHOD("next_offset", storage_next_offset, next_offset_doc),
    KW_METHOD("latest_chain_hash", storage_latest_chain_hash, latest_chain_hash_doc),
    KW_METHOD("verify", storage_verify, verify_doc),
    {"streams", (PyCFunction)storage_streams, METH_NOARGS, streams_doc},
    KW_METHOD("segment_count", storage_segment_count, segment_count_doc),
    KW_METHOD("completed_segments", storage_completed_segments, completed_segments_doc),
    KW_METHOD("tree_root", kmb_py_tree_root, tree_root_doc),
    KW_METHOD("inclusion_proof", kmb_py_inclusion_proof, inclusion_proof_doc),
    KW_METHOD("consistency_proof", kmb_py_consistency_proof, consistency_proof_doc),
    KW_METHOD("_sync", kmb_py_sync, sync_doc),
    KW_METHOD("_durable_root", kmb_py_durable_root, durable_root_doc),
    KW_METHOD("_load_checkpoint", kmb_py_load_checkpoint, load_checkpoint_doc),
    KW_METHOD("_store_checkpoint", kmb_py_store_checkpoint, store_checkpoint_doc),
    {"flush_indexes", (PyCFunction)storage_flush_indexes, METH_NOARGS, flush_indexes_doc},
    KW_METHOD("_repair", storage_repair, repair_doc),
    {"close", (PyCFunction)storage_close, METH_NOARGS, close_doc},
    {"__enter__", (PyCFunction)storage_enter, METH_NOARGS, enter_doc},
    {"__exit__", (PyCFunction)storage_exit, METH_VARARGS, exit_doc},
    {NULL, NULL, 0, NULL},
};

/* ---- attributes ------------------------------------------------------------------------- */

static PyObject *storage_get_path(StorageObject *self, void *Py_UNUSED(closure))
{
    Py_INCREF(self->path);
    return self->path;
}

static PyObject *storage_get_read_only(StorageObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->read_only);
}

static PyObject *storage_get_max_segment_size(StorageObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->max_segment_size);
}

static PyObject *storage_get_max_event_size(StorageObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->max_event_size);
}

static PyObject *storage_get_read_threads(StorageObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(self->read_threads);
}

static PyObject *storage_get_closed(StorageObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->st == NULL || self->closed);
}

static PyGetSetDef storage_getset[] = {
    {"path", (getter)storage_get_path, NULL,
     PyDoc_STR("The data directory as a str (os.fsdecode of the path given); None for "
               "MemoryStorage."),
     NULL},
    {"read_only", (getter)storage_get_read_only, NULL,
     PyDoc_STR("True if opened with read_only=True (no lock, no writes)."), NULL},
    {"max_segment_size", (getter)storage_get_max_segment_size, NULL,
     PyDoc_STR("Size in bytes at or above which the active segment is sealed."), NULL},
    {"max_event_size", (getter)storage_get_max_event_size, NULL,
     PyDoc_STR("Largest event accepted, in bytes."), NULL},
    {"read_threads", (getter)storage_get_read_threads, NULL,
     PyDoc_STR("Threads, the caller's included, that check and hash a large read or "
               "verify (the read_threads option, KIMBERLITE_READ_THREADS, or the CPUs)."),
     NULL},
    {"closed", (getter)storage_get_closed, NULL, PyDoc_STR("True once close() was called."),
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef storage_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(StorageObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

/* ---- types ------------------------------------------------------------------------------ */

PyDoc_STRVAR(storage_doc,
"Storage(path, *, max_segment_size=268435456, max_event_size=67108864, read_only=False,\n"
"        read_threads=None)\n"
"--\n\n"
"An append-only, tamper-evident event log in a data directory.\n\n"
"Events (byte strings) are appended to numbered streams; every record carries a CRC-32\n"
"and the SHA-256 hash of its predecessor. Segment files rotate at max_segment_size.\n\n"
"path: str, bytes or os.PathLike. A writer creates the directory if needed and holds an\n"
"exclusive lock on it (a second writer gets LockedError). read_only=True takes no lock,\n"
"never writes and sees the records complete when each call begins; the directory must\n"
"exist (StorageIOError otherwise).\n\n"
"read_threads: threads (this one included) that check and hash large reads and verify;\n"
"None means $KIMBERLITE_READ_THREADS if set, else one per CPU the process may use, at\n"
"most 8; 1 checks inline.\n\n"
"Use it as a context manager, or call close(). Safe to share between threads; the GIL\n"
"is released during file I/O, syncing, hashing and checksumming.");

static PyType_Slot storage_slots[] = {
    {Py_tp_doc, (void *)storage_doc},
    {Py_tp_new, (void *)storage_new},
    {Py_tp_init, (void *)storage_init},
    {Py_tp_dealloc, (void *)storage_dealloc},
    {Py_tp_traverse, (void *)storage_traverse},
    {Py_tp_methods, storage_methods},
    {Py_tp_getset, storage_getset},
    {Py_tp_members, storage_members},
    {0, NULL},
};

static PyType_Spec storage_spec = {
    .name = "kimberlite.Storage",
    .basicsize = sizeof(StorageObject),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = storage_slots,
};

PyDoc_STRVAR(memory_storage_doc,
"MemoryStorage(*, max_segment_size=268435456, max_event_size=67108864, read_threads=None)\n"
"--\n\n"
"An event log kept in memory, for tests: the same methods, records, hashes, offsets,\n"
"segment accounting and errors as Storage, without files. fsync is accepted and\n"
"ignored; path is None and read_only False.");

static PyType_Slot memory_storage_slots[] = {
    {Py_tp_doc, (void *)memory_storage_doc},
    {Py_tp_new, (void *)storage_new},
    {Py_tp_init, (void *)memory_storage_init},
    {Py_tp_dealloc, (void *)storage_dealloc},
    {Py_tp_traverse, (void *)storage_traverse},
    {Py_tp_methods, storage_methods},
    {Py_tp_getset, storage_getset},
    {Py_tp_members, storage_members},
    {0, NULL},
};

static PyType_Spec memory_storage_spec = {
    .name = "kimberlite.MemoryStorage",
    .basicsize = sizeof(StorageObject),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = memory_storage_slots,
};

int kmb_storage_types_init(PyObject *module, kmb_module_state *st)
{
    if (kmb_add_type(module, &storage_spec, &st->storage_type) < 0) return -1;
    if (kmb_add_type(module, &memory_storage_spec, &st->memory_storage_type) < 0) return -1;
    if (kmb_testing_methods_add(st->storage_type) < 0) return -1;
    if (kmb_testing_methods_add(st->memory_storage_type) < 0) return -1;
    if (kmb_fork_methods_add(st->storage_type) < 0) return -1;
    if (kmb_fork_methods_add(st->memory_storage_type) < 0) return -1;
    if (kmb_arrow_init(module, st) < 0) return -1;
    if (kmb_arrow_methods_add(st->storage_type) < 0) return -1;
    return kmb_arrow_methods_add(st->memory_storage_type);
}
