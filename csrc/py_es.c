/*
 * py_es.c — the insert path of kimberlite.eventsourcing in C (private to that module).
 *
 * Two types, both private (underscore names in kimberlite._core):
 *
 * _EsStream: the base of kimberlite.eventsourcing._StreamState. It holds the fields the
 *   insert path reads and writes at every call as C fields, exposed to Python as plain
 *   attributes (members): next_id, indexed, flush_at (int64), complete (bool), keys (dict),
 *   pend (list). The rest of _StreamState is Python slots in the subclass.
 *
 * _EsWriter(uuid_type, storage=None, lock=None, fast=None, listeners=None, fsync=True,
 *           written_behind=None, notify=None): one per store (and one without a storage
 *   for encode_record).
 *   - encode(first_id, events, tracking=None): the record of format version 1 (see the
 *     docstring of kimberlite/eventsourcing.py), or None when an argument is not of the
 *     plain kinds handled here (events a list or tuple; originator ids of exactly uuid_type
 *     or str; versions and ids ints; topics and names str; states exactly bytes) or cannot
 *     be encoded: the caller then uses the Python encoder, the reference, which either
 *     encodes it (an unusual but valid value) or raises the library's DataError. So the C
 *     encoder never has to reproduce the reference's error messages, only its bytes.
 *   - insert(sid, events): the whole of the usual insert_events call, under `lock`: the
 *     stream's state from `fast` (a dict sid -> _EsStream of the streams an insert may
 *     take the fast path on), the encoding, the duplicate check against `keys`, the append
 *     (kmb_storage_append with expected_offset = indexed, the GIL released around it), and
 *     the index bookkeeping (keys, next_id, indexed, seven values added to pend); then
 *     written_behind(st) when indexed passes flush_at and notify(sid) when `listeners` is
 *     not empty, as the Python path does. Returns the list of notification ids, or None
 *     (nothing done, nothing written) when the call is not the usual one: the stream is
 *     not in `fast`, the events are not one aggregate with a UUID id whose versions go up
 *     by one from the last recorded one (or from 1 for a new key the stream knows to be
 *     new), or an argument is not plain (see encode). The caller then takes the Python
 *     path, which decides (and raises IntegrityError / DataError where due). An engine
 *     failure raises kimberlite's exception (StorageError and subclasses, or ValueError for
 *     a closed storage or an oversized record) with nothing changed in the state.
 *
 * Memory: the writer holds strong references to what it was given (GC-tracked, for
 * callbacks that reach back to it; kimberlite.eventsourcing passes closures over a weak
 * reference to the store, so there is no cycle). No global state.
 */
#include "py_kimberlite.h"

#include <limits.h>
#include <string.h>

#include <structmember.h>

#define ES_MAGIC "KMES"
#define ES_VERSION 1
#define ES_FLAG_TRACKING 1
#define ES_HEAD_SIZE 20 /* magic 4, version 1, flags 1, reserved 2, first id 8, count 4 */
#define ES_KEY_SIZE 16
#define ES_STACK_EVENTS 16

/* ---- _EsStream ------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    long long next_id;
    long long indexed;
    long long flush_at;
    char complete;
    PyObject *keys; /* dict: index key (bytes) -> versions (int, set or None) */
    PyObject *pend; /* list: index entries not yet written, flat */
} EsStreamObject;

static PyObject *es_stream_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    EsStreamObject *self = (EsStreamObject *)tp->tp_alloc(tp, 0);
    if (self == NULL) return NULL;
    self->keys = PyDict_New();
    self->pend = PyList_New(0);
    if (self->keys == NULL || self->pend == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int es_stream_traverse(EsStreamObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->keys);
    Py_VISIT(self->pend);
    return 0;
}

static int es_stream_clear(EsStreamObject *self)
{
    Py_CLEAR(self->keys);
    Py_CLEAR(self->pend);
    return 0;
}

static void es_stream_dealloc(EsStreamObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    es_stream_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMemberDef es_stream_members[] = {
    {"next_id", T_LONGLONG, offsetof(EsStreamObject, next_id), 0,
     PyDoc_STR("notification id of the next event")},
    {"indexed", T_LONGLONG, offsetof(EsStreamObject, indexed), 0,
     PyDoc_STR("offset of the first record not yet indexed (in memory)")},
    {"flush_at", T_LONGLONG, offsetof(EsStreamObject, flush_at), 0,
     PyDoc_STR("the index is considered for a write when indexed passes this")},
    {"complete", T_BOOL, offsetof(EsStreamObject, complete), 0,
     PyDoc_STR("keys holds every key of the stream")},
    {"keys", T_OBJECT_EX, offsetof(EsStreamObject, keys), 0,
     PyDoc_STR("dict: index key -> versions")},
    {"pend", T_OBJECT_EX, offsetof(EsStreamObject, pend), 0,
     PyDoc_STR("list: the index entries not yet written, flat")},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(es_stream_doc,
"_EsStream()\n--\n\n"
"The base of kimberlite.eventsourcing._StreamState: the fields of the insert path.");

static PyType_Slot es_stream_slots[] = {
    {Py_tp_doc, (void *)es_stream_doc},
    {Py_tp_new, (void *)es_stream_new},
    {Py_tp_dealloc, (void *)es_stream_dealloc},
    {Py_tp_traverse, (void *)es_stream_traverse},
    {Py_tp_clear, (void *)es_stream_clear},
    {Py_tp_members, es_stream_members},
    {0, NULL},
};

static PyType_Spec es_stream_spec = {
    .name = "kimberlite._core._EsStream",
    .basicsize = sizeof(EsStreamObject),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = es_stream_slots,
};

/* ---- _EsWriter ------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *uuid_type;
    PyObject *storage;        /* kimberlite Storage / MemoryStorage, or None */
    PyObject *lock;           /* an object with acquire() and release(), or None */
    PyObject *fast;           /* dict sid -> _EsStream, or None */
    PyObject *listeners;      /* dict, or None */
    PyObject *written_behind; /* callable(st), or None */
    PyObject *notify;         /* callable(sid), or None */
    PyObject *acquire, *release; /* lock.acquire, lock.release (bound), or None */
    int fsync;
    PyTypeObject *stream_type;   /* _EsStream, from the module state (borrowed: the module
                                  * outlives this object, which its type references) */
    PyObject *storage_error;     /* kimberlite.StorageError, the same (borrowed) */
    /* interned attribute names */
    PyObject *s_originator_id, *s_originator_version, *s_topic, *s_state, *s_int;
    PyObject *s_application_name, *s_notification_id;
} EsWriterObject;

/* One event, as encoded: borrowed pointers into objects held by `hold` (new references). */
typedef struct {
    const char *oid;    /* the UUID's 16 bytes (in `key`), or the str id's UTF-8 */
    Py_ssize_t oid_len;
    int is_uuid;
    long long version;
    const char *topic;
    Py_ssize_t topic_len;
    const char *state;
    Py_ssize_t state_len;
    unsigned char key[ES_KEY_SIZE];
    PyObject *hold[3];  /* originator id, topic, state */
} es_event;

typedef struct {
    es_event *ev;
    Py_ssize_t n;
    es_event stack[ES_STACK_EVENTS];
} es_events;

static void es_events_release(es_events *e, Py_ssize_t filled)
{
    for (Py_ssize_t i = 0; i < filled; i++)
        for (int j = 0; j < 3; j++) Py_XDECREF(e->ev[i].hold[j]);
    if (e->ev != e->stack) PyMem_Free(e->ev);
    e->ev = e->stack;
}

/*
 * Clear an ordinary exception (Exception and its subclasses: the value is not of a kind
 * handled here, the caller falls back to the reference encoder) and return 1; other
 * exceptions (KeyboardInterrupt, ...) stay set and 0 is returned: the caller fails.
 */
static int es_refuse(void)
{
    if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception)) return 0;
    PyErr_Clear();
    return 1;
}

/* A UUID's 16 bytes, big-endian (what uuid.UUID.bytes is): from its `int`. 0 or -1. */
static int es_uuid_bytes(EsWriterObject *w, PyObject *oid, unsigned char out[ES_KEY_SIZE])
{
    PyObject *v = PyObject_GetAttr(oid, w->s_int);
    if (v == NULL) return -1;
    int rc = -1;
    if (PyLong_CheckExact(v)) {
#if PY_VERSION_HEX >= 0x030D0000
        Py_ssize_t need = PyLong_AsNativeBytes(v, out, ES_KEY_SIZE,
                                               Py_ASNATIVEBYTES_BIG_ENDIAN |
                                                   Py_ASNATIVEBYTES_UNSIGNED_BUFFER |
                                                   Py_ASNATIVEBYTES_REJECT_NEGATIVE);
        rc = need >= 0 && need <= ES_KEY_SIZE ? 0 : -1;
        if (rc < 0 && !PyErr_Occurred()) PyErr_SetString(PyExc_OverflowError, "UUID int");
#else /* (negative or >= 2**128: OverflowError) */
        rc = _PyLong_AsByteArray((PyLongObject *)v, out, ES_KEY_SIZE, 0, 0);
#endif
    } else {
        PyErr_SetString(PyExc_TypeError, "UUID int");
    }
    Py_DECREF(v);
    return rc;
}

/*
 * Fetch and check the events (a list or tuple) into *e. Returns 1 when done, 0 when an
 * event is not of the plain kinds (no exception set: fall back), -1 with an exception set
 * (a non-ordinary one). *e must be released with es_events_release(e, e->n) in all cases
 * (e->n counts the events filled so far).
 */
static int es_fetch(EsWriterObject *w, PyObject *events, es_events *e)
{
    e->ev = e->stack;
    e->n = 0;
    if (!PyList_CheckExact(events) && !PyTuple_CheckExact(events)) return 0;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(events);
    if (n > ES_STACK_EVENTS) {
        e->ev = PyMem_Calloc((size_t)n, sizeof *e->ev);
        if (e->ev == NULL) {
            e->ev = e->stack;
            PyErr_NoMemory();
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        /* (a list may change while its items' attributes are fetched: index it each time) */
        if (i >= PySequence_Fast_GET_SIZE(events)) return 0;
        PyObject *item = PySequence_Fast_GET_ITEM(events, i);
        Py_INCREF(item);
        es_event *ev = &e->ev[i];
        memset(ev, 0, sizeof *ev);
        e->n = i + 1;
        PyObject *oid = PyObject_GetAttr(item, w->s_originator_id);
        ev->hold[0] = oid;
        PyObject *ver = oid ? PyObject_GetAttr(item, w->s_originator_version) : NULL;
        PyObject *topic = ver ? PyObject_GetAttr(item, w->s_topic) : NULL;
        ev->hold[1] = topic;
        PyObject *state = topic ? PyObject_GetAttr(item, w->s_state) : NULL;
        ev->hold[2] = state;
        Py_DECREF(item);
        if (state == NULL) {
            Py_XDECREF(ver);
            return es_refuse() ? 0 : -1;
        }
        int ok = 1;
        if (Py_TYPE(oid) == (PyTypeObject *)w->uuid_type) {
            ev->is_uuid = 1;
            if (es_uuid_bytes(w, oid, ev->key) < 0) ok = 0;
            ev->oid = (const char *)ev->key;
            ev->oid_len = ES_KEY_SIZE;
        } else if (PyUnicode_CheckExact(oid)) {
            ev->oid = PyUnicode_AsUTF8AndSize(oid, &ev->oid_len);
            if (ev->oid == NULL || (uint64_t)ev->oid_len > UINT32_MAX) ok = 0;
        } else {
            ok = 0;
        }
        if (ok && PyLong_Check(ver)) {
            ev->version = PyLong_AsLongLong(ver);
            if (ev->version == -1 && PyErr_Occurred()) ok = 0;
        } else {
            ok = 0;
        }
        Py_DECREF(ver);
        if (ok && PyUnicode_CheckExact(topic)) {
            ev->topic = PyUnicode_AsUTF8AndSize(topic, &ev->topic_len);
            if (ev->topic == NULL || (uint64_t)ev->topic_len > UINT32_MAX) ok = 0;
        } else {
            ok = 0;
        }
        if (ok && PyBytes_CheckExact(state) && (uint64_t)PyBytes_GET_SIZE(state) <= UINT32_MAX) {
            ev->state = PyBytes_AS_STRING(state);
            ev->state_len = PyBytes_GET_SIZE(state);
        } else {
            ok = 0;
        }
        if (!ok) return es_refuse() ? 0 : -1;
    }
    return 1;
}

static inline char *put_u32(char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (char)(v >> (8 * i));
    return p + 4;
}

static inline char *put_u64(char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (char)(v >> (8 * i));
    return p + 8;
}

/*
 * The record of `e` (tracking: name UTF-8 and id when name != NULL). New bytes, or NULL
 * with an exception (MemoryError only: everything was checked by es_fetch).
 */
static PyObject *es_record(uint64_t first_id, const es_events *e, const char *name,
                           Py_ssize_t name_len, long long tracked)
{
    size_t size = ES_HEAD_SIZE + (name ? 12 + (size_t)name_len : 0);
    for (Py_ssize_t i = 0; i < e->n; i++) {
        const es_event *ev = &e->ev[i];
        size += (ev->is_uuid ? 25 : 13 + (size_t)ev->oid_len) + 8 + (size_t)ev->topic_len +
                (size_t)ev->state_len;
    }
    if (size > (size_t)PY_SSIZE_T_MAX) return PyErr_NoMemory();
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (out == NULL) return NULL;
    char *p = PyBytes_AS_STRING(out);
    memcpy(p, ES_MAGIC, 4);
    p[4] = ES_VERSION;
    p[5] = name ? ES_FLAG_TRACKING : 0;
    p[6] = p[7] = 0;
    p = put_u64(p + 8, first_id);
    p = put_u32(p, (uint32_t)e->n);
    if (name) {
        p = put_u32(p, (uint32_t)name_len);
        memcpy(p, name, (size_t)name_len);
        p = put_u64(p + name_len, (uint64_t)tracked);
    }
    for (Py_ssize_t i = 0; i < e->n; i++) {
        const es_event *ev = &e->ev[i];
        if (ev->is_uuid) {
            *p++ = 0;
            memcpy(p, ev->key, ES_KEY_SIZE);
            p += ES_KEY_SIZE;
        } else {
            *p++ = 1;
            p = put_u32(p, (uint32_t)ev->oid_len);
            memcpy(p, ev->oid, (size_t)ev->oid_len);
            p += ev->oid_len;
        }
        p = put_u64(p, (uint64_t)ev->version);
        p = put_u32(p, (uint32_t)ev->topic_len);
        memcpy(p, ev->topic, (size_t)ev->topic_len);
        p = put_u32(p + ev->topic_len, (uint32_t)ev->state_len);
        memcpy(p, ev->state, (size_t)ev->state_len);
        p += ev->state_len;
    }
    return out;
}

static PyObject *es_writer_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"uuid_type", "storage", "lock", "fast", "listeners", "fsync",
                             "written_behind", "notify", NULL};
    PyObject *uuid_type, *storage = Py_None, *lock = Py_None, *fast = Py_None;
    PyObject *listeners = Py_None, *written_behind = Py_None, *notify = Py_None;
    int fsync = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OOOOpOO:_EsWriter", kwlist, &uuid_type,
                                     &storage, &lock, &fast, &listeners, &fsync,
                                     &written_behind, &notify))
        return NULL;
    kmb_module_state *ms = kmb_state_of_type(tp);
    if (ms == NULL) return NULL;
    if (!PyType_Check(uuid_type)) {
        PyErr_Format(PyExc_TypeError, "uuid_type must be a class (uuid.UUID), not %.100s",
                     Py_TYPE(uuid_type)->tp_name);
        return NULL;
    }
    if (storage != Py_None && !PyObject_TypeCheck(storage, ms->storage_type) &&
        !PyObject_TypeCheck(storage, ms->memory_storage_type)) {
        PyErr_Format(PyExc_TypeError, "storage must be a kimberlite Storage or MemoryStorage "
                     "(or None), not %.100s", Py_TYPE(storage)->tp_name);
        return NULL;
    }
    if (storage != Py_None &&
        (lock == Py_None || !PyDict_CheckExact(fast) || !PyDict_CheckExact(listeners) ||
         !PyCallable_Check(written_behind) || !PyCallable_Check(notify))) {
        PyErr_SetString(PyExc_TypeError, "with a storage, lock (an RLock), fast and listeners "
                        "(dicts), written_behind and notify (callables) are required");
        return NULL;
    }
    EsWriterObject *self = (EsWriterObject *)tp->tp_alloc(tp, 0);
    if (self == NULL) return NULL;
    self->uuid_type = Py_NewRef(uuid_type);
    self->storage = Py_NewRef(storage);
    self->lock = Py_NewRef(lock);
    self->fast = Py_NewRef(fast);
    self->listeners = Py_NewRef(listeners);
    self->written_behind = Py_NewRef(written_behind);
    self->notify = Py_NewRef(notify);
    self->fsync = fsync;
    self->stream_type = ms->es_stream_type;
    self->storage_error = ms->StorageError;
    if (lock == Py_None) {
        self->acquire = Py_NewRef(Py_None);
        self->release = Py_NewRef(Py_None);
    } else if ((self->acquire = PyObject_GetAttrString(lock, "acquire")) == NULL ||
               (self->release = PyObject_GetAttrString(lock, "release")) == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    if ((self->s_originator_id = PyUnicode_InternFromString("originator_id")) == NULL ||
        (self->s_originator_version = PyUnicode_InternFromString("originator_version")) == NULL ||
        (self->s_topic = PyUnicode_InternFromString("topic")) == NULL ||
        (self->s_state = PyUnicode_InternFromString("state")) == NULL ||
        (self->s_int = PyUnicode_InternFromString("int")) == NULL ||
        (self->s_application_name = PyUnicode_InternFromString("application_name")) == NULL ||
        (self->s_notification_id = PyUnicode_InternFromString("notification_id")) == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int es_writer_traverse(EsWriterObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->uuid_type);
    Py_VISIT(self->storage);
    Py_VISIT(self->lock);
    Py_VISIT(self->fast);
    Py_VISIT(self->listeners);
    Py_VISIT(self->written_behind);
    Py_VISIT(self->notify);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    return 0;
}

static int es_writer_clear(EsWriterObject *self)
{
    Py_CLEAR(self->uuid_type);
    Py_CLEAR(self->storage);
    Py_CLEAR(self->lock);
    Py_CLEAR(self->fast);
    Py_CLEAR(self->listeners);
    Py_CLEAR(self->written_behind);
    Py_CLEAR(self->notify);
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    return 0;
}

static void es_writer_dealloc(EsWriterObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    es_writer_clear(self);
    Py_XDECREF(self->s_originator_id);
    Py_XDECREF(self->s_originator_version);
    Py_XDECREF(self->s_topic);
    Py_XDECREF(self->s_state);
    Py_XDECREF(self->s_int);
    Py_XDECREF(self->s_application_name);
    Py_XDECREF(self->s_notification_id);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

PyDoc_STRVAR(es_encode_doc,
"encode($self, first_id, events, tracking=None, /)\n--\n\n"
"The kimberlite.eventsourcing record of `events` (bytes), or None when a value is not of\n"
"the plain kinds this encoder handles (use the Python encoder then).");

static PyObject *es_writer_encode(EsWriterObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || nargs > 3) {
        PyErr_Format(PyExc_TypeError, "encode() takes 2 or 3 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyLong_Check(args[0])) Py_RETURN_NONE;
    unsigned long long first = PyLong_AsUnsignedLongLong(args[0]);
    if (first == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!es_refuse()) return NULL;
        Py_RETURN_NONE;
    }
    const char *name = NULL;
    Py_ssize_t name_len = 0;
    long long tracked = 0;
    PyObject *name_obj = NULL;
    if (nargs == 3 && args[2] != Py_None) {
        name_obj = PyObject_GetAttr(args[2], self->s_application_name);
        PyObject *nid = name_obj ? PyObject_GetAttr(args[2], self->s_notification_id) : NULL;
        int ok = nid != NULL && PyUnicode_CheckExact(name_obj) && PyLong_Check(nid);
        if (ok) {
            tracked = PyLong_AsLongLong(nid);
            name = PyUnicode_AsUTF8AndSize(name_obj, &name_len);
            ok = !(tracked == -1 && PyErr_Occurred()) && name != NULL &&
                 (uint64_t)name_len <= UINT32_MAX;
        }
        Py_XDECREF(nid);
        if (!ok) {
            Py_XDECREF(name_obj);
            if (!es_refuse()) return NULL;
            Py_RETURN_NONE;
        }
    }
    es_events e;
    int rc = es_fetch(self, args[1], &e);
    PyObject *out = NULL;
    if (rc > 0 && (uint64_t)e.n <= UINT32_MAX)
        out = es_record(first, &e, name, name_len, tracked);
    else if (rc >= 0)
        out = Py_NewRef(Py_None);
    es_events_release(&e, e.n);
    Py_XDECREF(name_obj);
    return out;
}

/* lock.acquire() / lock.release() (bound): 0 or -1. */
static int es_call0(PyObject *fn)
{
    PyObject *r = PyObject_CallNoArgs(fn);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* The list [first, first + n). */
static PyObject *es_ids(long long first, Py_ssize_t n)
{
    PyObject *ids = PyList_New(n);
    if (ids == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLongLong(first + i);
        if (v == NULL) {
            Py_DECREF(ids);
            return NULL;
        }
        PyList_SET_ITEM(ids, i, v);
    }
    return ids;
}

/* Add the values to the list: 0 or -1. */
static int es_extend(PyObject *list, PyObject *const *values, int n)
{
    for (int i = 0; i < n; i++)
        if (PyList_Append(list, values[i]) < 0) return -1;
    return 0;
}

/*
 * The insert under the lock (see the file comment). Returns the ids, Py_None (a new
 * reference: not the usual call, nothing done) or NULL with an exception.
 */
static PyObject *es_insert_locked(EsWriterObject *self, PyObject *sid, PyObject *events)
{
    PyObject *st_obj = PyDict_GetItemWithError(self->fast, sid); /* borrowed */
    if (st_obj == NULL) return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    if (!PyObject_TypeCheck(st_obj, self->stream_type)) {
        PyErr_Format(PyExc_TypeError, "the fast streams must be _EsStream objects, not %.100s",
                     Py_TYPE(st_obj)->tp_name);
        return NULL;
    }
    Py_INCREF(st_obj); /* (held across the append: the dict may drop it meanwhile) */
    EsStreamObject *st = (EsStreamObject *)st_obj;
    PyObject *result = NULL, *payload = NULL, *key = NULL, *ids = NULL;
    PyObject *keys = NULL, *pend = NULL;
    PyObject *entry[7] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    es_events e;
    int rc = es_fetch(self, events, &e);
    if (rc < 0) goto done;
    if (rc == 0 || e.n == 0 || st->next_id < 1 || st->indexed < 0 ||
        st->keys == NULL || !PyDict_CheckExact(st->keys) || st->pend == NULL ||
        !PyList_CheckExact(st->pend))
        goto fallback;
    /* Held from here on: keys and pend are writable (and deletable) attributes, which
     * another thread may change while the GIL is released around the append. */
    keys = Py_NewRef(st->keys);
    pend = Py_NewRef(st->pend);
    /* One aggregate with a UUID id, versions going up by one (compared pairwise: no
     * arithmetic that could overflow near INT64_MAX). */
    for (Py_ssize_t i = 0; i < e.n; i++) {
        if (!e.ev[i].is_uuid || memcmp(e.ev[i].key, e.ev[0].key, ES_KEY_SIZE) != 0 ||
            (i > 0 && (e.ev[i - 1].version == LLONG_MAX ||
                       e.ev[i].version != e.ev[i - 1].version + 1)))
            goto fallback;
    }
    long long v0 = e.ev[0].version, v1 = e.ev[e.n - 1].version;
    if ((key = PyBytes_FromStringAndSize((const char *)e.ev[0].key, ES_KEY_SIZE)) == NULL)
        goto done;
    /* Versions 1..known recorded (an int), none (absent, or None), or a set: fallback. */
    PyObject *known = PyDict_GetItemWithError(keys, key); /* borrowed */
    if (known == NULL && PyErr_Occurred()) goto done;
    if (known == NULL || known == Py_None) {
        if (v0 != 1 || (known == NULL && !st->complete)) goto fallback;
    } else if (PyLong_CheckExact(known)) {
        int overflow;
        long long k = PyLong_AsLongLongAndOverflow(known, &overflow);
        if (k == -1 && PyErr_Occurred()) goto done;
        if (overflow || k == LLONG_MAX || v0 != k + 1) goto fallback;
    } else {
        goto fallback;
    }
    long long first = st->next_id, offset = st->indexed;
    if (first > LLONG_MAX - (long long)e.n) goto fallback;
    if ((payload = es_record((uint64_t)first, &e, NULL, 0, 0)) == NULL) goto done;
    /* Everything the bookkeeping needs is made before the append, which then cannot be
     * followed by a failure of these allocations. */
    if ((ids = es_ids(first, e.n)) == NULL) goto done;
    PyObject *v1_obj = PyLong_FromLongLong(v1);
    entry[0] = Py_NewRef(key);
    entry[1] = PyLong_FromLongLong(v0);
    entry[2] = v1_obj;
    entry[3] = PyLong_FromLongLong(offset);
    entry[4] = PyLong_FromLongLong(first);
    entry[5] = PyLong_FromSsize_t(e.n);
    entry[6] = PyLong_FromLong(ES_HEAD_SIZE);
    for (int i = 1; i < 7; i++)
        if (entry[i] == NULL) goto done;

    uint64_t stream; /* (may call sid.__index__: before the storage is checked) */
    if (kmb_stream_id(sid, &stream) < 0) goto done;
    kmb_storage_object *so = (kmb_storage_object *)self->storage;
    if (kmb_storage_check_open(so) < 0) goto done;
    uint64_t expected = (uint64_t)offset, next = 0;
    kmb_slice slice = {PyBytes_AS_STRING(payload), (size_t)PyBytes_GET_SIZE(payload)};
    int arc;
    Py_BEGIN_ALLOW_THREADS
    arc = kmb_storage_append(so->st, stream, &slice, 1, &expected, self->fsync, &next);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(so, arc) < 0) goto done;

    /* Stored: from here on nothing may report failure for the record itself. */
    st->next_id = first + (long long)e.n;
    st->indexed = offset + 1;
    if (PyDict_SetItem(keys, key, v1_obj) < 0 || es_extend(pend, entry, 7) < 0)
        goto done; /* (MemoryError: the Python path would fail the same way) */
    if (st->indexed > st->flush_at) {
        PyObject *r = PyObject_CallOneArg(self->written_behind, st_obj);
        if (r == NULL) goto done;
        Py_DECREF(r);
    }
    if (PyDict_GET_SIZE(self->listeners) > 0) {
        PyObject *r = PyObject_CallOneArg(self->notify, sid);
        if (r == NULL) goto done;
        Py_DECREF(r);
    }
    result = ids;
    ids = NULL;
    goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    es_events_release(&e, e.n);
    for (int i = 0; i < 7; i++) Py_XDECREF(entry[i]);
    Py_XDECREF(ids);
    Py_XDECREF(key);
    Py_XDECREF(payload);
    Py_XDECREF(keys);
    Py_XDECREF(pend);
    Py_DECREF(st_obj);
    return result;
}

PyDoc_STRVAR(es_insert_doc,
"insert($self, sid, events, /)\n--\n\n"
"Record `events` on stream `sid` if this is the usual call (see kimberlite/eventsourcing.py):\n"
"the list of notification ids; None when it is not (nothing done). Engine failures raise\n"
"kimberlite's exceptions, with nothing written or changed.");

/* insert(sid, events): the lock taken around es_insert_locked. */
static PyObject *es_insert_impl(EsWriterObject *self, PyObject *sid, PyObject *events)
{
    if (self->storage == NULL || self->storage == Py_None || self->acquire == NULL ||
        self->fast == NULL || self->listeners == NULL) {
        PyErr_SetString(PyExc_ValueError, "this _EsWriter has no storage (it only encodes)");
        return NULL;
    }
    if (es_call0(self->acquire) < 0) return NULL;
    PyObject *result = es_insert_locked(self, sid, events);
    /* release() even after an error (the error stays the one reported) */
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    if (es_call0(self->release) < 0) {
        Py_XDECREF(exc_type);
        Py_XDECREF(exc_value);
        Py_XDECREF(exc_tb);
        Py_XDECREF(result);
        return NULL;
    }
    PyErr_Restore(exc_type, exc_value, exc_tb);
    return result;
}

static PyObject *es_writer_insert(EsWriterObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "insert() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    return es_insert_impl(self, args[0], args[1]);
}

PyDoc_STRVAR(es_columns_doc,
"columns($self, pend, /)\n--\n\n"
"The index entries of `pend` (a list, flat: a 16-byte key then six ints, then the next\n"
"entry) as an index block's body: (the keys, 16 bytes each, joined; the six int64\n"
"columns, little-endian, one after the other). TypeError / ValueError for malformed\n"
"entries.");

#define ES_STRIDE 7

static PyObject *es_writer_columns(EsWriterObject *self, PyObject *pend)
{
    (void)self;
    if (!PyList_CheckExact(pend)) {
        PyErr_Format(PyExc_TypeError, "pend must be a list, not %.100s", Py_TYPE(pend)->tp_name);
        return NULL;
    }
    Py_ssize_t len = PyList_GET_SIZE(pend);
    if (len % ES_STRIDE != 0) {
        PyErr_Format(PyExc_ValueError, "pend holds %zd values, not a multiple of %d", len,
                     ES_STRIDE);
        return NULL;
    }
    Py_ssize_t n = len / ES_STRIDE;
    if (n > PY_SSIZE_T_MAX / (8 * (ES_STRIDE - 1))) return PyErr_NoMemory();
    PyObject *keys = PyBytes_FromStringAndSize(NULL, n * ES_KEY_SIZE);
    PyObject *ints = PyBytes_FromStringAndSize(NULL, n * 8 * (ES_STRIDE - 1));
    if (keys == NULL || ints == NULL) goto fail;
    char *kp = PyBytes_AS_STRING(keys), *ip = PyBytes_AS_STRING(ints);
    /* (items are read one by one: nothing here runs Python code that could change pend) */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyList_GET_ITEM(pend, i * ES_STRIDE);
        if (!PyBytes_CheckExact(k) || PyBytes_GET_SIZE(k) != ES_KEY_SIZE) {
            PyErr_Format(PyExc_ValueError, "index entry %zd: the key must be 16 bytes", i);
            goto fail;
        }
        memcpy(kp + i * ES_KEY_SIZE, PyBytes_AS_STRING(k), ES_KEY_SIZE);
        for (Py_ssize_t j = 1; j < ES_STRIDE; j++) {
            PyObject *v = PyList_GET_ITEM(pend, i * ES_STRIDE + j);
            if (!PyLong_CheckExact(v)) {
                PyErr_Format(PyExc_TypeError, "index entry %zd: value %zd is not an int", i, j);
                goto fail;
            }
            long long x = PyLong_AsLongLong(v);
            if (x == -1 && PyErr_Occurred()) goto fail;
            put_u64(ip + ((j - 1) * n + i) * 8, (uint64_t)x);
        }
    }
    PyObject *out = PyTuple_Pack(2, keys, ints);
    Py_DECREF(keys);
    Py_DECREF(ints);
    return out;
fail:
    Py_XDECREF(keys);
    Py_XDECREF(ints);
    return NULL;
}

static PyMethodDef es_writer_methods[] = {
    {"columns", (PyCFunction)es_writer_columns, METH_O, es_columns_doc},
    {"encode", (PyCFunction)(void (*)(void))es_writer_encode, METH_FASTCALL, es_encode_doc},
    {"insert", (PyCFunction)(void (*)(void))es_writer_insert, METH_FASTCALL, es_insert_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(es_writer_doc,
"_EsWriter(uuid_type, storage=None, lock=None, fast=None, listeners=None, fsync=True,\n"
"          written_behind=None, notify=None)\n--\n\n"
"The insert path of kimberlite.eventsourcing in C (private; see csrc/py_es.c).");

static PyType_Slot es_writer_slots[] = {
    {Py_tp_doc, (void *)es_writer_doc},
    {Py_tp_new, (void *)es_writer_new},
    {Py_tp_dealloc, (void *)es_writer_dealloc},
    {Py_tp_traverse, (void *)es_writer_traverse},
    {Py_tp_clear, (void *)es_writer_clear},
    {Py_tp_methods, es_writer_methods},
    {0, NULL},
};

static PyType_Spec es_writer_spec = {
    .name = "kimberlite._core._EsWriter",
    .basicsize = sizeof(EsWriterObject),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = es_writer_slots,
};

/* ---- _EsInsert ------------------------------------------------------------------------- */

/*
 * _EsInsert(writer, sid, fallback, on_error, returns_ids): a recorder's insert_events made
 * callable without a Python frame (kimberlite.eventsourcing sets one as the recorder's
 * instance attribute). insert_events(events) is writer.insert(sid, events); when that says
 * None (not the usual call), or for any other arguments (keywords such as tracking=), it is
 * fallback(*args, **kwargs): the recorder's insert_events method. An engine error
 * (kimberlite.StorageError or ValueError) is passed to on_error(exc), which raises the
 * library's exception for it (chained). Returns the ids if returns_ids, else None.
 */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *writer; /* _EsWriter */
    PyObject *sid;
    PyObject *fallback;
    PyObject *on_error;
    int returns_ids;
} EsInsertObject;

static PyObject *es_call_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                                    PyObject *kwnames)
{
    EsInsertObject *self = (EsInsertObject *)callable;
    if (self->writer == NULL || self->fallback == NULL) { /* (cleared by the collector) */
        PyErr_SetString(PyExc_ValueError, "_EsInsert was cleared");
        return NULL;
    }
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0))
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    EsWriterObject *w = (EsWriterObject *)self->writer;
    PyObject *ids = es_insert_impl(w, self->sid, args[0]);
    if (ids == NULL) {
        if (PyErr_ExceptionMatches(w->storage_error) || PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyObject *t, *v, *tb;
            PyErr_Fetch(&t, &v, &tb);
            PyErr_NormalizeException(&t, &v, &tb);
            if (tb != NULL) PyException_SetTraceback(v, tb);
            PyObject *r = PyObject_CallOneArg(self->on_error, v);
            Py_XDECREF(t);
            Py_XDECREF(v);
            Py_XDECREF(tb);
            if (r != NULL) {
                Py_DECREF(r);
                PyErr_SetString(PyExc_SystemError, "_EsInsert: on_error returned");
            }
        }
        return NULL;
    }
    if (ids == Py_None) {
        Py_DECREF(ids);
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    if (self->returns_ids) return ids;
    Py_DECREF(ids);
    Py_RETURN_NONE;
}

static PyObject *es_call_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"writer", "sid", "fallback", "on_error", "returns_ids", NULL};
    PyObject *writer, *sid, *fallback, *on_error;
    int returns_ids;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOp:_EsInsert", kwlist, &writer, &sid,
                                     &fallback, &on_error, &returns_ids))
        return NULL;
    kmb_module_state *ms = kmb_state_of_type(tp);
    if (ms == NULL) return NULL;
    if (!PyObject_TypeCheck(writer, ms->es_writer_type)) {
        PyErr_Format(PyExc_TypeError, "writer must be an _EsWriter, not %.100s",
                     Py_TYPE(writer)->tp_name);
        return NULL;
    }
    uint64_t unused;
    if (kmb_stream_id(sid, &unused) < 0) return NULL;
    if (!PyCallable_Check(fallback) || !PyCallable_Check(on_error)) {
        PyErr_SetString(PyExc_TypeError, "fallback and on_error must be callable");
        return NULL;
    }
    EsInsertObject *self = (EsInsertObject *)tp->tp_alloc(tp, 0);
    if (self == NULL) return NULL;
    self->vectorcall = es_call_vectorcall;
    self->writer = Py_NewRef(writer);
    self->sid = Py_NewRef(sid);
    self->fallback = Py_NewRef(fallback);
    self->on_error = Py_NewRef(on_error);
    self->returns_ids = returns_ids;
    return (PyObject *)self;
}

static int es_call_traverse(EsInsertObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->writer);
    Py_VISIT(self->sid);
    Py_VISIT(self->fallback);
    Py_VISIT(self->on_error);
    return 0;
}

static int es_call_clear(EsInsertObject *self)
{
    Py_CLEAR(self->writer);
    Py_CLEAR(self->sid);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->on_error);
    return 0;
}

static void es_call_dealloc(EsInsertObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    es_call_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* (tp_call for callers without vectorcall: PyVectorcall_Call unpacks to the above) */
static PyObject *es_call_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    return PyVectorcall_Call(self, args, kwds);
}

static PyMemberDef es_call_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(EsInsertObject, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(es_call_doc,
"_EsInsert(writer, sid, fallback, on_error, returns_ids)\n--\n\n"
"A recorder's insert_events(stored_events, **kwargs), the usual call made in C (private;\n"
"see csrc/py_es.c).");

static PyType_Slot es_call_slots[] = {
    {Py_tp_doc, (void *)es_call_doc},
    {Py_tp_new, (void *)es_call_new},
    {Py_tp_call, (void *)es_call_call},
    {Py_tp_dealloc, (void *)es_call_dealloc},
    {Py_tp_traverse, (void *)es_call_traverse},
    {Py_tp_clear, (void *)es_call_clear},
    {Py_tp_members, es_call_members},
    {0, NULL},
};

static PyType_Spec es_call_spec = {
    .name = "kimberlite._core._EsInsert",
    .basicsize = sizeof(EsInsertObject),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .slots = es_call_slots,
};

int kmb_es_types_init(PyObject *module, kmb_module_state *st)
{
    if (kmb_add_type(module, &es_stream_spec, &st->es_stream_type) < 0) return -1;
    if (kmb_add_type(module, &es_writer_spec, &st->es_writer_type) < 0) return -1;
    return kmb_add_type(module, &es_call_spec, &st->es_insert_type);
}
