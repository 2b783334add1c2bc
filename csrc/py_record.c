/*
 * py_record.c — kimberlite._core._RecordBase, the storage of kimberlite.Record.
 *
 * A record is an immutable value: offset, prev_hash, payload. The base type keeps the
 * offset and the 32-byte prev_hash inline (no Python objects until they are asked for) and
 * the payload as a bytes object; kimberlite/_record.py subclasses it and adds the methods
 * (compute_hash, to_bytes, from_bytes, equality, repr). read_records makes its records with
 * kmb_record_new(), which fills the fields of records the engine has verified without
 * checking them again: two allocations per record (the record and its payload), which
 * keeps read_records within 2x of read_from (benchmarks/bench_records.py).
 *
 * Genesis is decided by the offset, as in the engine (docs/FORMAT.md §5): at offset 0 a
 * prev_hash of None or 32 zero bytes is stored as "none"; at any other offset prev_hash is
 * the 32 bytes given (None is kept as 32 zero bytes, which is what the record stores on
 * disk). So Record.from_bytes(r.to_bytes())[0] == r always holds.
 */
#include "py_kimberlite.h"

#include <string.h>

typedef struct {
    PyObject_HEAD
    uint64_t offset;
    PyObject *payload; /* bytes, never NULL once made */
    int has_prev;
    uint8_t prev[KMB_HASH_SIZE];
} RecordObject;

static int record_prev_arg(PyObject *obj, uint64_t offset, RecordObject *self)
{
    static const uint8_t zero[KMB_HASH_SIZE];
    if (obj == Py_None) {
        memset(self->prev, 0, sizeof self->prev);
    } else {
        if (PyUnicode_Check(obj)) {
            PyErr_SetString(PyExc_TypeError, "prev_hash must be 32 bytes or None, not str");
            return -1;
        }
        Py_buffer view;
        if (kmb_get_buffer(obj, &view, "prev_hash") < 0) return -1;
        if (view.len != KMB_HASH_SIZE) {
            PyErr_Format(PyExc_ValueError, "prev_hash must be 32 bytes or None, got %zd bytes",
                         view.len);
            PyBuffer_Release(&view);
            return -1;
        }
        memcpy(self->prev, view.buf, KMB_HASH_SIZE);
        PyBuffer_Release(&view);
    }
    self->has_prev = offset != 0 || memcmp(self->prev, zero, KMB_HASH_SIZE) != 0;
    return 0;
}

static PyObject *record_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"offset", "prev_hash", "payload", NULL};
    PyObject *offset_obj, *prev_obj, *payload_obj;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO:Record", kwlist, &offset_obj, &prev_obj,
                                     &payload_obj))
        return NULL;
    uint64_t offset;
    if (kmb_int_to_u64(offset_obj, "offset", 0, &offset) < 0 || offset >= KMB_MAX_OFFSET) {
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_ValueError)) return NULL;
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "offset must be in [0, 2**63), got %R", offset_obj);
        return NULL;
    }
    PyObject *payload;
    if (PyBytes_CheckExact(payload_obj)) {
        payload = Py_NewRef(payload_obj);
    } else {
        Py_buffer view;
        if (kmb_get_buffer(payload_obj, &view, "payload") < 0) return NULL;
        payload = PyBytes_FromStringAndSize(view.buf, view.len);
        PyBuffer_Release(&view);
        if (payload == NULL) return NULL;
    }
    RecordObject *self = (RecordObject *)tp->tp_alloc(tp, 0);
    if (self == NULL) {
        Py_DECREF(payload);
        return NULL;
    }
    self->offset = offset;
    self->payload = payload;
    if (record_prev_arg(prev_obj, offset, self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

PyObject *kmb_record_new(kmb_module_state *st, const kmb_record *r, PyObject *payload)
{
    if (payload == NULL) return NULL;
    PyTypeObject *tp = (PyTypeObject *)st->record_class;
    RecordObject *self = (RecordObject *)tp->tp_alloc(tp, 0);
    if (self == NULL) {
        Py_DECREF(payload);
        return NULL;
    }
    self->offset = r->offset;
    self->payload = payload;
    memcpy(self->prev, r->prev_hash, KMB_HASH_SIZE);
    self->has_prev = r->offset != 0 || !kmb_hash_is_zero(r->prev_hash);
    /*
     * A record refers only to bytes and to its type: it cannot be part of a garbage cycle
     * unless someone stores it on its own class. Like CPython's tuples of atomic items, it
     * need not be tracked; without this, a list of 200,000 records spends a third of its
     * time in collections.
     */
    if (PyObject_GC_IsTracked((PyObject *)self)) PyObject_GC_UnTrack(self);
    return (PyObject *)self;
}

static void record_dealloc(RecordObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    Py_CLEAR(self->payload);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *record_get_offset(RecordObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->offset);
}

static PyObject *record_get_prev_hash(RecordObject *self, void *Py_UNUSED(closure))
{
    return kmb_hash_to_py(self->prev, self->has_prev);
}

static PyObject *record_get_payload(RecordObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->payload);
}

static PyGetSetDef record_getset[] = {
    {"offset", (getter)record_get_offset, NULL,
     PyDoc_STR("The record's position in its stream (0, 1, 2, ...)."), NULL},
    {"prev_hash", (getter)record_get_prev_hash, NULL,
     PyDoc_STR("The chain hash of the previous record (32 bytes), or None for genesis "
               "(offset 0)."),
     NULL},
    {"payload", (getter)record_get_payload, NULL, PyDoc_STR("The event's bytes."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(record_doc,
"_RecordBase(offset, prev_hash, payload)\n--\n\n"
"The fields of kimberlite.Record (private: use kimberlite.Record).");

static PyType_Slot record_slots[] = {
    {Py_tp_doc, (void *)record_doc},
    {Py_tp_new, (void *)record_new},
    {Py_tp_dealloc, (void *)record_dealloc},
    {Py_tp_getset, record_getset},
    {0, NULL},
};

static PyType_Spec record_spec = {
    .name = "kimberlite._core._RecordBase",
    .basicsize = sizeof(RecordObject),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = record_slots,
};

int kmb_record_type_init(PyObject *module, kmb_module_state *st)
{
    return kmb_add_type(module, &record_spec, &st->record_base_type);
}
