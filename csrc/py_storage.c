/*
 * py_storage.c — the types kimberlite.Storage (files) and kimberlite.MemoryStorage.
 *
 * Both wrap one kmb_storage (storage.h) and share every method; they differ only in how
 * they open (kmb_storage_open / kmb_storage_open_memory) and in their repr. The layer is
 * thin: it converts arguments, releases the GIL around every engine call (the engine
 * serialises calls on one kmb_storage with its own mutex, so no Python-side lock is needed
 * and the GIL is never held while the engine may block), and turns engine codes into
 * exceptions with kmb_raise().
 *
 * Lifetime: close() only closes the engine storage (which then answers KMB_ECLOSED, so a
 * call racing with close() fails cleanly); the kmb_storage is freed in tp_dealloc, when no
 * other thread can be inside it.
 *
 * Recovery events: the engine reports recovery actions (quarantined torn tails, rebuilt
 * indexes, damage found) through a callback that runs without the GIL, with the engine
 * mutex held. The callback only queues the message under a small mutex of its own; after
 * each engine call the calling thread, holding the GIL again, drains the queue into
 * logging.getLogger("kimberlite").warning().
 */
#include "py_kimberlite.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <structmember.h>

#include "kimberlite/sys/faults.h"

/* Payload bytes above which read results are copied into bytes objects without the GIL. */
#define KMB_COPY_GIL_THRESHOLD (256 * 1024)

typedef struct kmb_event_node {
    struct kmb_event_node *next;
    char message[];
} kmb_event_node;

typedef struct {
    PyObject_HEAD
    kmb_storage *st;    /* NULL until __init__ succeeds; freed in dealloc only */
    int closed;         /* close() was called (guarded by the GIL) */
    int is_memory;
    int read_only;
    uint64_t max_segment_size;
    uint64_t max_event_size;
    PyObject *path;     /* str, or None for MemoryStorage */
    pthread_mutex_t events_mu;
    kmb_event_node *events_head;
    kmb_event_node *events_tail;
    PyObject *weakreflist;
} StorageObject;

/* ---- recovery events -------------------------------------------------------------------- */

/* Engine callback: runs without the GIL and with the engine mutex held. Only queues. */
static void storage_on_event(void *ctx, const char *message)
{
    StorageObject *self = (StorageObject *)ctx;
    size_t n = strlen(message);
    kmb_event_node *node = malloc(sizeof *node + n + 1);
    if (node == NULL) return; /* dropping a log line beats failing the engine call */
    node->next = NULL;
    memcpy(node->message, message, n + 1);
    pthread_mutex_lock(&self->events_mu);
    if (self->events_tail != NULL)
        self->events_tail->next = node;
    else
        self->events_head = node;
    self->events_tail = node;
    pthread_mutex_unlock(&self->events_mu);
}

static kmb_event_node *storage_take_events(StorageObject *self)
{
    pthread_mutex_lock(&self->events_mu);
    kmb_event_node *head = self->events_head;
    self->events_head = self->events_tail = NULL;
    pthread_mutex_unlock(&self->events_mu);
    return head;
}

static void free_events(kmb_event_node *node)
{
    while (node != NULL) {
        kmb_event_node *next = node->next;
        free(node);
        node = next;
    }
}

/*
 * Log the queued recovery messages (GIL held). Any exception already set (the caller's
 * error) is kept; a failure of logging itself is reported as unraisable.
 */
static void storage_drain_events(StorageObject *self)
{
    kmb_event_node *head = storage_take_events(self);
    if (head == NULL) return;

    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *logger = NULL;
    PyObject *logging = PyImport_ImportModule("logging");
    if (logging != NULL) {
        logger = PyObject_CallMethod(logging, "getLogger", "s", "kimberlite");
        Py_DECREF(logging);
    }
    for (kmb_event_node *n = head; n != NULL && logger != NULL; n = n->next) {
        PyObject *msg = PyUnicode_DecodeFSDefault(n->message);
        PyObject *r = msg ? PyObject_CallMethod(logger, "warning", "O", msg) : NULL;
        Py_XDECREF(msg);
        if (r == NULL) break;
        Py_DECREF(r);
    }
    if (PyErr_Occurred()) PyErr_WriteUnraisable((PyObject *)self);
    Py_XDECREF(logger);
    free_events(head);
    PyErr_Restore(type, value, tb);
}

/*
 * After an engine call (GIL held): raise for a failure first (kmb_error_last() is still this
 * call's), then log recovery events. Returns 0 for KMB_OK, -1 with an exception set.
 */
static int storage_finish(StorageObject *self, int rc)
{
    if (rc != KMB_OK) {
        kmb_module_state *ms = kmb_state_of_type(Py_TYPE(self));
        if (ms != NULL) kmb_raise(ms, rc);
    }
    storage_drain_events(self);
    return rc == KMB_OK ? 0 : -1;
}

/* ---- helpers ---------------------------------------------------------------------------- */

static int storage_check_open(StorageObject *self)
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

static int storage_track_for_fork(StorageObject *self);

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
    if (rc != KMB_OK) {
        kmb_module_state *ms = kmb_state_of_type(Py_TYPE(self));
        if (ms != NULL) kmb_raise(ms, rc);
        return -1;
    }
    kmb_storage_set_event_callback(st, storage_on_event, self);
    const kmb_options *in_force = kmb_storage_options(st);
    self->st = st;
    self->closed = 0;
    self->read_only = in_force->read_only != 0;
    self->max_segment_size = in_force->max_segment_size;
    self->max_event_size = in_force->max_event_size;
    return storage_track_for_fork(self);
}

static int storage_init(StorageObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "max_segment_size", "max_event_size", "read_only", NULL};
    PyObject *path_bytes = NULL, *mss = NULL, *mes = NULL;
    int read_only = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|$OOp:Storage", kwlist,
                                     PyUnicode_FSConverter, &path_bytes, &mss, &mes, &read_only))
        return -1;
    int rc = -1;
    kmb_options opts;
    kmb_options_init(&opts);
    opts.read_only = read_only;
    if (storage_size_option(mss, "max_segment_size", &opts.max_segment_size) < 0) goto cleanup;
    if (storage_size_option(mes, "max_event_size", &opts.max_event_size) < 0) goto cleanup;
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
    static char *kwlist[] = {"max_segment_size", "max_event_size", NULL};
    PyObject *mss = NULL, *mes = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OO:MemoryStorage", kwlist, &mss, &mes))
        return -1;
    kmb_options opts;
    kmb_options_init(&opts);
    if (storage_size_option(mss, "max_segment_size", &opts.max_segment_size) < 0) return -1;
    if (storage_size_option(mes, "max_event_size", &opts.max_event_size) < 0) return -1;
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
    free_events(storage_take_events(self));
    pthread_mutex_destroy(&self->events_mu);
    Py_CLEAR(self->path);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *storage_repr(StorageObject *self)
{
    if (self->st == NULL) return PyUnicode_FromFormat("<%s (uninitialised)>", Py_TYPE(self)->tp_name);
    const char *state = self->closed ? "True" : "False";
    if (self->is_memory || self->path == Py_None)
        return PyUnicode_FromFormat("<%s max_segment_size=%llu closed=%s>", Py_TYPE(self)->tp_name,
                                    (unsigned long long)self->max_segment_size, state);
    return PyUnicode_FromFormat("<%s path=%R read_only=%s closed=%s>", Py_TYPE(self)->tp_name,
                                self->path, self->read_only ? "True" : "False", state);
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

static PyObject *storage_append_batch(StorageObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stream_id", "events", "expected_offset", "fsync", NULL};
    PyObject *sid, *events, *expected_obj = Py_None;
    int fsync = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|Op:append_batch", kwlist, &sid, &events,
                                     &expected_obj, &fsync))
        return NULL;
    if (storage_check_open(self) < 0) return NULL;
    uint64_t stream;
    if (kmb_stream_id(sid, &stream) < 0) return NULL;

    uint64_t expected = 0;
    const uint64_t *expected_p = NULL;
    int expected_unrepresentable = 0;
    if (expected_obj != Py_None) {
        if (kmb_int_to_u64(expected_obj, "expected_offset", 0, &expected) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_ValueError)) return NULL;
            /* Negative or >= 2**64: it can never match, but the engine still validates the
             * batch first. UINT64_MAX is never a next offset (offsets stay below 2**63). */
            PyErr_Clear();
            expected = UINT64_MAX;
            expected_unrepresentable = 1;
        }
        expected_p = &expected;
    }

    if (PyUnicode_Check(events) || PyObject_CheckBuffer(events)) {
        PyErr_Format(PyExc_TypeError,
                     "events must be an iterable of bytes-like objects, not a single %.100s; "
                     "to append one event, pass [event]", Py_TYPE(events)->tp_name);
        return NULL;
    }
    /*
     * A list is copied into a tuple: while the GIL is out another thread could remove an
     * item from the list and free it, and exact bytes objects are used without a view.
     */
    PyObject *seq = PyList_CheckExact(events) ? PyList_AsTuple(events)
                    : PySequence_Fast(events, "events must be an iterable of bytes-like objects");
    if (seq == NULL) return NULL;

    PyObject *result = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), nviews = 0;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    kmb_slice stack_slices[64];
    kmb_slice *slices = stack_slices;
    Py_buffer *views = NULL; /* only for items that are not exact bytes, allocated on need */
    if (n > (Py_ssize_t)(sizeof stack_slices / sizeof stack_slices[0])) {
        slices = PyMem_Malloc((size_t)n * sizeof *slices);
        if (slices == NULL) {
            PyErr_NoMemory();
            goto cleanup;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = items[i];
        if (PyBytes_CheckExact(item)) { /* the common case: no buffer protocol round trip */
            slices[i].data = PyBytes_AS_STRING(item);
            slices[i].len = (size_t)PyBytes_GET_SIZE(item);
            continue;
        }
        if (views == NULL) {
            views = PyMem_Malloc((size_t)(n - i) * sizeof *views);
            if (views == NULL) {
                PyErr_NoMemory();
                goto cleanup;
            }
        }
        if (PyUnicode_Check(item) || !PyObject_CheckBuffer(item)) {
            /* Not a bytes-like object: the index is formatted only now, for the message. */
            char what[48];
            snprintf(what, sizeof what, "events[%zd]", i);
            Py_buffer unused;
            if (kmb_get_buffer(item, &unused, what) == 0) PyBuffer_Release(&unused);
            if (!PyErr_Occurred()) PyErr_Format(PyExc_TypeError, "%s must be a bytes-like object", what);
            goto cleanup;
        }
        if (kmb_get_buffer(item, &views[nviews], "an event") < 0) goto cleanup;
        slices[i].data = views[nviews].buf;
        slices[i].len = (size_t)views[nviews].len;
        nviews++;
    }

    uint64_t next = 0;
    int rc;
    /* The views stay held (and their exporters referenced) while the GIL is out. */
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_append(self->st, stream, slices, (size_t)n, expected_p, fsync, &next);
    Py_END_ALLOW_THREADS
    if (rc == KMB_EOFFSET && expected_unrepresentable) {
        kmb_module_state *ms = kmb_state_of_type(Py_TYPE(self));
        if (ms != NULL)
            kmb_raise_offset_mismatch(ms, stream, expected_obj, kmb_error_last()->actual_offset);
        storage_drain_events(self);
        goto cleanup;
    }
    if (storage_finish(self, rc) < 0) goto cleanup;
    result = PyLong_FromUnsignedLongLong(next);

cleanup:
    for (Py_ssize_t i = 0; i < nviews; i++) PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    if (slices != stack_slices) PyMem_Free(slices);
    Py_DECREF(seq);
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
    if (storage_check_open(self) < 0) return -1;
    *from = 0;
    if (kmb_stream_id(sid, stream) < 0) return -1;
    /* A from_offset past 2**64 - 1 is simply past the end: clamp. */
    if (from_obj != NULL && kmb_int_to_u64(from_obj, "from_offset", 1, from) < 0) return -1;
    return storage_max_bytes(max_obj, max_bytes);
}

/* Parse (stream_id, from_offset=0, max_bytes=None) and read into *res (zeroed). */
static int storage_read_common(StorageObject *self, PyObject *args, PyObject *kwds,
                               const char *format, kmb_read_result *res)
{
    uint64_t stream, from, max_bytes;
    if (storage_read_args(self, args, kwds, format, &stream, &from, &max_bytes) < 0) return -1;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_read(self->st, stream, from, max_bytes, res);
    Py_END_ALLOW_THREADS
    return storage_finish(self, rc);
}

/*
 * The payloads of a read result as a new list of bytes. The bytes objects are allocated
 * with the GIL held, but a large copy into them runs without it: nobody else can see them
 * yet.
 */
static PyObject *payload_list(const kmb_read_result *res)
{
    PyObject *list = PyList_New((Py_ssize_t)res->count);
    if (list == NULL) return NULL;
    for (size_t i = 0; i < res->count; i++) {
        PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)res->records[i].length);
        if (b == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, b);
    }
    int release = res->payload_bytes >= KMB_COPY_GIL_THRESHOLD;
    PyThreadState *ts = release ? PyEval_SaveThread() : NULL;
    for (size_t i = 0; i < res->count; i++) {
        const kmb_record *r = &res->records[i];
        if (r->length) memcpy(PyBytes_AS_STRING(PyList_GET_ITEM(list, (Py_ssize_t)i)), r->payload, r->length);
    }
    if (release) PyEval_RestoreThread(ts);
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

/*
 * read_from's consumer of verified chunks (kmb_read_fn). The engine calls it without the
 * GIL and with its mutex held (never the other way round anywhere in this module, so this
 * cannot deadlock); it takes the GIL only to make the chunk's bytes objects, while the
 * engine's worker may be hashing the next chunk. Large payloads are copied into the new
 * objects after the GIL is released again: nobody else can see them yet.
 */
typedef struct payload_sink {
    PyThreadState *ts; /* the calling thread's state while the GIL is out */
    PyObject **items;  /* new references, in stream order */
    size_t count, cap;
    int failed;        /* a Python exception is set */
} payload_sink;

static int payload_sink_chunk(void *ctx, const kmb_record *recs, size_t n)
{
    payload_sink *k = ctx;
    if (k->count + n > k->cap) {
        size_t cap = k->cap ? k->cap : 256;
        while (cap < k->count + n) cap *= 2;
        PyObject **p = PyMem_RawRealloc(k->items, cap * sizeof *p);
        if (p == NULL) {
            PyEval_RestoreThread(k->ts);
            PyErr_NoMemory();
            k->failed = 1;
            k->ts = PyEval_SaveThread();
            return KMB_ENOMEM;
        }
        k->items = p;
        k->cap = cap;
    }
    uint64_t bytes = 0;
    for (size_t j = 0; j < n; j++) bytes += recs[j].length;
    int copy_later = bytes >= KMB_COPY_GIL_THRESHOLD / 4 && bytes >= (uint64_t)n * 1024;
    size_t base = k->count;
    PyEval_RestoreThread(k->ts);
    for (size_t j = 0; j < n; j++) {
        const char *src = copy_later ? NULL : (const char *)recs[j].payload;
        PyObject *b = PyBytes_FromStringAndSize(src, (Py_ssize_t)recs[j].length);
        if (b == NULL) {
            k->failed = 1;
            break;
        }
        k->items[k->count++] = b;
    }
    k->ts = PyEval_SaveThread();
    if (k->failed) return KMB_ENOMEM;
    if (copy_later)
        for (size_t j = 0; j < n; j++)
            if (recs[j].length)
                memcpy(PyBytes_AS_STRING(k->items[base + j]), recs[j].payload, recs[j].length);
    return 0;
}

static PyObject *storage_read_from(StorageObject *self, PyObject *args, PyObject *kwds)
{
    uint64_t stream, from, max_bytes;
    if (storage_read_args(self, args, kwds, "O|OO:read_from", &stream, &from, &max_bytes) < 0)
        return NULL;
    payload_sink k;
    memset(&k, 0, sizeof k);
    k.ts = PyEval_SaveThread();
    int rc = kmb_storage_read_each(self->st, stream, from, max_bytes, payload_sink_chunk, &k);
    PyEval_RestoreThread(k.ts);
    PyObject *list = NULL;
    if (k.failed)
        storage_drain_events(self); /* the callback's exception stands */
    else if (storage_finish(self, rc) == 0)
        list = PyList_New((Py_ssize_t)k.count);
    if (list != NULL) {
        for (size_t i = 0; i < k.count; i++) PyList_SET_ITEM(list, (Py_ssize_t)i, k.items[i]);
    } else {
        for (size_t i = 0; i < k.count; i++) Py_DECREF(k.items[i]);
    }
    PyMem_RawFree(k.items);
    return list;
}

PyDoc_STRVAR(read_records_doc,
"read_records($self, stream_id, from_offset=0, max_bytes=None)\n--\n\n"
"Like read_from(), but return kimberlite.Record objects (offset, prev_hash, payload).\n\n"
"prev_hash is None for the genesis record (offset 0).");

static PyObject *storage_read_records(StorageObject *self, PyObject *args, PyObject *kwds)
{
    kmb_module_state *ms = kmb_state_of_type(Py_TYPE(self));
    if (ms == NULL) return NULL;
    if (ms->record_class == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "kimberlite.Record is not registered; import kimberlite first");
        return NULL;
    }
    PyObject *cls = ms->record_class;
    Py_INCREF(cls);
    kmb_read_result res;
    memset(&res, 0, sizeof res);
    PyObject *list = NULL;
    if (storage_read_common(self, args, kwds, "O|OO:read_records", &res) < 0) goto cleanup;
    list = payload_list(&res);
    if (list == NULL) goto cleanup;
    for (size_t i = 0; i < res.count; i++) {
        const kmb_record *r = &res.records[i];
        PyObject *argv[3];
        argv[0] = PyLong_FromUnsignedLongLong(r->offset);
        argv[1] = kmb_hash_to_py(r->prev_hash, !kmb_hash_is_zero(r->prev_hash));
        argv[2] = PyList_GET_ITEM(list, (Py_ssize_t)i); /* borrowed; replaced below */
        PyObject *rec = NULL;
        if (argv[0] && argv[1]) rec = PyObject_Vectorcall(cls, argv, 3, NULL);
        Py_XDECREF(argv[0]);
        Py_XDECREF(argv[1]);
        if (rec == NULL) {
            Py_CLEAR(list);
            goto cleanup;
        }
        PyList_SetItem(list, (Py_ssize_t)i, rec); /* drops the payload's list reference */
    }
cleanup:
    kmb_read_result_free(&res);
    Py_DECREF(cls);
    return list;
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
    if (storage_check_open(self) < 0) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_next_offset(self->st, stream, &next);
    Py_END_ALLOW_THREADS
    if (storage_finish(self, rc) < 0) return NULL;
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
    if (storage_check_open(self) < 0) return NULL;
    uint8_t head[KMB_HASH_SIZE];
    int has = 0, rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_head(self->st, stream, head, &has);
    Py_END_ALLOW_THREADS
    if (storage_finish(self, rc) < 0) return NULL;
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
    if (storage_check_open(self) < 0) return NULL;
    uint64_t stream, next = 0;
    if (kmb_stream_id(sid, &stream) < 0) return NULL;
    uint8_t expected[KMB_HASH_SIZE], head[KMB_HASH_SIZE];
    int has_expected, has_head = 0, rc;
    if (kmb_hash_arg(head_obj, "expected_head", expected, &has_expected) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_verify(self->st, stream, has_expected ? expected : NULL, &next, head,
                            &has_head);
    Py_END_ALLOW_THREADS
    if (storage_finish(self, rc) < 0) return NULL;
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
    if (storage_check_open(self) < 0) return NULL;
    uint64_t *ids = NULL;
    size_t count = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_streams(self->st, &ids, &count);
    Py_END_ALLOW_THREADS
    PyObject *list = NULL;
    if (storage_finish(self, rc) == 0) list = u64_list(ids, count);
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
    if (storage_check_open(self) < 0) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_segment_count(self->st, stream, &count);
    Py_END_ALLOW_THREADS
    if (storage_finish(self, rc) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(count);
}

PyDoc_STRVAR(completed_segments_doc,
"completed_segments($self, stream_id)\n--\n\n"
"Return the numbers of a stream's sealed segments (never written again), ascending.");

static PyObject *storage_completed_segments(StorageObject *self, PyObject *args, PyObject *kwds)
{
    uint64_t stream;
    if (parse_stream_only(args, kwds, "O:completed_segments", &stream) < 0) return NULL;
    if (storage_check_open(self) < 0) return NULL;
    uint32_t *segs = NULL;
    size_t count = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_completed_segments(self->st, stream, &segs, &count);
    Py_END_ALLOW_THREADS
    PyObject *list = NULL;
    if (storage_finish(self, rc) == 0 && (list = PyList_New((Py_ssize_t)count)) != NULL) {
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
    if (storage_check_open(self) < 0) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_flush_indexes(self->st);
    Py_END_ALLOW_THREADS
    if (storage_finish(self, rc) < 0) return NULL;
    Py_RETURN_NONE;
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
    if (storage_finish(self, rc) < 0) return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(enter_doc,
"__enter__($self)\n--\n\n"
"Return self; the storage is closed when the with block ends.");

static PyObject *storage_enter(StorageObject *self, PyObject *Py_UNUSED(ignored))
{
    if (storage_check_open(self) < 0) return NULL;
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

/* ---- private testing hooks (kimberlite.testing) ---------------------------------------- */

static int parse_stream_seg(PyObject *args, const char *format, uint64_t *stream, uint32_t *seg,
                            Py_buffer *data)
{
    PyObject *sid, *seg_obj;
    if (data ? !PyArg_ParseTuple(args, format, &sid, &seg_obj, data)
             : !PyArg_ParseTuple(args, format, &sid, &seg_obj))
        return -1;
    uint64_t v;
    if (kmb_stream_id(sid, stream) < 0 || kmb_int_to_u64(seg_obj, "seg", 1, &v) < 0) goto fail;
    if (v > UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "seg must be in [0, 2**32 - 1], got %R", seg_obj);
        goto fail;
    }
    *seg = (uint32_t)v;
    return 0;
fail:
    if (data) PyBuffer_Release(data);
    return -1;
}

PyDoc_STRVAR(segment_bytes_doc,
"_segment_bytes($self, stream_id, seg, /)\n--\n\n"
"Return the bytes of a segment (private: for kimberlite.testing).");

static PyObject *storage_segment_bytes(StorageObject *self, PyObject *args)
{
    uint64_t stream;
    uint32_t seg;
    if (parse_stream_seg(args, "OO:_segment_bytes", &stream, &seg, NULL) < 0) return NULL;
    if (storage_check_open(self) < 0) return NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_segment_bytes(self->st, stream, seg, &buf, &len);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (storage_finish(self, rc) == 0) result = PyBytes_FromStringAndSize((char *)buf, (Py_ssize_t)len);
    free(buf);
    return result;
}

PyDoc_STRVAR(replace_segment_bytes_doc,
"_replace_segment_bytes($self, stream_id, seg, data, /)\n--\n\n"
"Overwrite a segment with data and make the engine load the stream again on next use, as\n"
"after reopening (private: for kimberlite.testing, which damages streams on purpose).");

static PyObject *storage_replace_segment_bytes(StorageObject *self, PyObject *args)
{
    uint64_t stream;
    uint32_t seg;
    Py_buffer data;
    if (parse_stream_seg(args, "OOy*:_replace_segment_bytes", &stream, &seg, &data) < 0)
        return NULL;
    if (storage_check_open(self) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_replace_segment_bytes(self->st, stream, seg, data.buf, (size_t)data.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (storage_finish(self, rc) < 0) return NULL;
    Py_RETURN_NONE;
}

/* ---- fault injection (tests only: kimberlite/sys/faults.h, docs/TESTING.md) ------------ */

static const struct {
    const char *name;
    unsigned bit;
} fault_op_names[] = {
    {"open", KMB_FAULT_OPEN},       {"read", KMB_FAULT_READ},   {"write", KMB_FAULT_WRITE},
    {"sync", KMB_FAULT_SYNC},       {"rename", KMB_FAULT_RENAME},
    {"truncate", KMB_FAULT_TRUNCATE}, {"mkdir", KMB_FAULT_MKDIR}, {"all", KMB_FAULT_ALL},
};

/* ops: an int mask, or a str of names separated by commas or "|" ("write,sync", "all"). */
static int fault_ops_from(PyObject *obj, unsigned *out)
{
    if (PyLong_Check(obj)) {
        unsigned long v = PyLong_AsUnsignedLong(obj);
        if (v == (unsigned long)-1 && PyErr_Occurred()) return -1;
        if (v & ~(unsigned long)KMB_FAULT_ALL) {
            PyErr_Format(PyExc_ValueError, "unknown fault operation bits in %R", obj);
            return -1;
        }
        *out = (unsigned)v;
        return 0;
    }
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "ops must be a str or an int, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    const char *s = PyUnicode_AsUTF8(obj);
    if (s == NULL) return -1;
    unsigned mask = 0;
    while (*s) {
        size_t n = strcspn(s, ",|");
        size_t i, count = sizeof(fault_op_names) / sizeof(fault_op_names[0]);
        for (i = 0; i < count; i++)
            if (strlen(fault_op_names[i].name) == n && strncmp(s, fault_op_names[i].name, n) == 0)
                break;
        if (i == count) {
            PyErr_Format(PyExc_ValueError, "unknown fault operation %.*s (use open, read, write, "
                         "sync, rename, truncate, mkdir or all)", (int)n, s);
            return -1;
        }
        mask |= fault_op_names[i].bit;
        s += n;
        if (*s) s++;
    }
    *out = mask;
    return 0;
}

PyDoc_STRVAR(set_fault_doc,
"_set_fault($self, ops, nth, errno=5, persistent=False, short=False, crash=False)\n--\n\n"
"FOR TESTS ONLY (kimberlite/sys/faults.h). Make the nth call (1-based) of the file\n"
"operations `ops` fail with `errno`: ops is a str such as \"write\", \"write,sync\" or\n"
"\"all\" (open, read, write, sync, rename, truncate, mkdir) or an int mask; ops=\"\" removes\n"
"the plan. nth=0 only counts calls (see _io_calls). persistent: every later call fails\n"
"too. short: a failing write first writes half its bytes. crash: the process kills\n"
"itself with SIGKILL at that call instead (after the half write when short). Resets the\n"
"counters. Storage only; MemoryStorage raises ValueError.");

static PyObject *storage_set_fault(StorageObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ops", "nth", "errno", "persistent", "short", "crash", NULL};
    PyObject *ops_obj;
    unsigned long long nth;
    int err = EIO, persistent = 0, short_write = 0, crash = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OK|ippp:_set_fault", kwlist, &ops_obj, &nth,
                                     &err, &persistent, &short_write, &crash))
        return NULL;
    unsigned ops;
    if (fault_ops_from(ops_obj, &ops) < 0) return NULL;
    if (err < 0) {
        PyErr_SetString(PyExc_ValueError, "errno must not be negative (use crash=True)");
        return NULL;
    }
    if (storage_check_open(self) < 0) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_set_fault(self->st, ops, (uint64_t)nth, crash ? KMB_FAULT_CRASH : err,
                               persistent, short_write);
    Py_END_ALLOW_THREADS
    if (storage_finish(self, rc) < 0) return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(io_calls_doc,
"_io_calls($self)\n--\n\n"
"FOR TESTS ONLY. (calls, faults): the file operations counted and the faults injected\n"
"since the last _set_fault.");

static PyObject *storage_io_calls(StorageObject *self, PyObject *Py_UNUSED(ignored))
{
    if (storage_check_open(self) < 0) return NULL;
    uint64_t calls = 0, faults = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_fault_counts(self->st, &calls, &faults);
    Py_END_ALLOW_THREADS
    if (storage_finish(self, rc) < 0) return NULL;
    return Py_BuildValue("(KK)", (unsigned long long)calls, (unsigned long long)faults);
}

/* ---- fork() ---------------------------------------------------------------------------
 * The at-fork protocol of storage.h, driven by kimberlite/_fork.py (os.register_at_fork
 * over a WeakSet of live storages, each added by storage_adopt). Private: not for
 * applications.
 */

PyDoc_STRVAR(fork_prepare_doc,
"_fork_prepare($self)\n--\n\n"
"PRIVATE (kimberlite._fork). Before os.fork(): wait for the engine call in progress on\n"
"this storage, then hold its lock until _fork_parent or _fork_child.");

static PyObject *storage_fork_prepare(StorageObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->st == NULL) Py_RETURN_NONE;
    /* Without the GIL: a thread inside the engine may need it (a read hands its chunks to
     * Python under the engine lock) before it can let go of the engine lock. */
    Py_BEGIN_ALLOW_THREADS
    kmb_storage_fork_prepare(self->st);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(fork_parent_doc,
"_fork_parent($self)\n--\n\nPRIVATE (kimberlite._fork). After os.fork(), in the parent.");

static PyObject *storage_fork_parent(StorageObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->st != NULL) kmb_storage_fork_parent(self->st);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(fork_child_doc,
"_fork_child($self)\n--\n\n"
"PRIVATE (kimberlite._fork). After os.fork(), in the child: release the lock, forget the\n"
"parent's hashing thread, and drop an inherited writer's lock descriptor.");

static PyObject *storage_fork_child(StorageObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->st != NULL) kmb_storage_fork_child(self->st);
    Py_RETURN_NONE;
}

/* Add a new storage to the at-fork registry (kimberlite._fork.track). */
static int storage_track_for_fork(StorageObject *self)
{
    PyObject *mod = PyImport_ImportModule("kimberlite._fork");
    if (mod == NULL) return -1;
    PyObject *r = PyObject_CallMethod(mod, "track", "O", (PyObject *)self);
    Py_DECREF(mod);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

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
    {"flush_indexes", (PyCFunction)storage_flush_indexes, METH_NOARGS, flush_indexes_doc},
    {"close", (PyCFunction)storage_close, METH_NOARGS, close_doc},
    {"__enter__", (PyCFunction)storage_enter, METH_NOARGS, enter_doc},
    {"__exit__", (PyCFunction)storage_exit, METH_VARARGS, exit_doc},
    KW_METHOD("_set_fault", storage_set_fault, set_fault_doc),
    {"_io_calls", (PyCFunction)storage_io_calls, METH_NOARGS, io_calls_doc},
    {"_segment_bytes", (PyCFunction)storage_segment_bytes, METH_VARARGS, segment_bytes_doc},
    {"_replace_segment_bytes", (PyCFunction)storage_replace_segment_bytes, METH_VARARGS,
     replace_segment_bytes_doc},
    {"_fork_prepare", (PyCFunction)storage_fork_prepare, METH_NOARGS, fork_prepare_doc},
    {"_fork_parent", (PyCFunction)storage_fork_parent, METH_NOARGS, fork_parent_doc},
    {"_fork_child", (PyCFunction)storage_fork_child, METH_NOARGS, fork_child_doc},
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
"Storage(path, *, max_segment_size=268435456, max_event_size=67108864, read_only=False)\n"
"--\n\n"
"An append-only, tamper-evident event log in a data directory.\n\n"
"Events (byte strings) are appended to numbered streams; every record carries a CRC-32\n"
"and the SHA-256 hash of its predecessor. Segment files rotate at max_segment_size.\n\n"
"path: str, bytes or os.PathLike. A writer creates the directory if needed and holds an\n"
"exclusive lock on it (a second writer gets LockedError). read_only=True takes no lock,\n"
"never writes and sees the records complete when each call begins; the directory must\n"
"exist (StorageIOError otherwise).\n\n"
"Use it as a context manager, or call close(). Safe to share between threads; the GIL\n"
"is released during file I/O, syncing, hashing and checksumming.");

static PyType_Slot storage_slots[] = {
    {Py_tp_doc, (void *)storage_doc},
    {Py_tp_new, (void *)storage_new},
    {Py_tp_init, (void *)storage_init},
    {Py_tp_dealloc, (void *)storage_dealloc},
    {Py_tp_traverse, (void *)storage_traverse},
    {Py_tp_repr, (void *)storage_repr},
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
"MemoryStorage(*, max_segment_size=268435456, max_event_size=67108864)\n--\n\n"
"An event log kept in memory, for tests: the same methods, records, hashes, offsets,\n"
"segment accounting and errors as Storage, without files. fsync is accepted and\n"
"ignored; path is None and read_only False.");

static PyType_Slot memory_storage_slots[] = {
    {Py_tp_doc, (void *)memory_storage_doc},
    {Py_tp_new, (void *)storage_new},
    {Py_tp_init, (void *)memory_storage_init},
    {Py_tp_dealloc, (void *)storage_dealloc},
    {Py_tp_traverse, (void *)storage_traverse},
    {Py_tp_repr, (void *)storage_repr},
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
    return 0;
}
