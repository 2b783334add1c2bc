/*
 * py_arrow.c — the binding of kimberlite/columns.h: the storage methods _read_columns
 * (kimberlite/_arrow.py builds Arrow arrays on its buffers), verify_range and
 * segment_bounds, and the small _ColumnBuffer type that hands a malloc'd column to Python
 * through the buffer protocol, so that pyarrow.py_buffer wraps it without a copy and frees
 * it with the last reference. Added to both storage types at module exec by
 * kmb_arrow_methods_add().
 */
#include "py_kimberlite.h"

#include <stdlib.h>

#include "kimberlite/columns.h"

typedef kmb_storage_object StorageObject;

/* ---- _ColumnBuffer------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    void *data;     /* owned: released by kmb_columns_release */
    Py_ssize_t len;
} BufferObject;

static void buffer_dealloc(BufferObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    kmb_columns_release(self->data, (size_t)self->len);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int buffer_getbuffer(BufferObject *self, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)self, self->data, self->len, 1, flags);
}

static Py_ssize_t buffer_length(BufferObject *self) { return self->len; }

static PyObject *buffer_repr(BufferObject *self)
{
    return PyUnicode_FromFormat("<kimberlite._core._ColumnBuffer of %zd bytes>", self->len);
}

PyDoc_STRVAR(buffer_doc,
"A read-only column buffer filled by the engine (bytes-like: memoryview(b),\n"
"pyarrow.py_buffer(b)). Made by Storage._read_columns; its memory is freed with the\n"
"last reference.");

static PyType_Slot buffer_slots[] = {
    {Py_tp_dealloc, buffer_dealloc},
    {Py_tp_repr, buffer_repr},
    {Py_tp_doc, (void *)buffer_doc},
    {Py_bf_getbuffer, buffer_getbuffer},
    {Py_sq_length, buffer_length},
    {0, NULL},
};

static PyType_Spec buffer_spec = {
    .name = "kimberlite._core._ColumnBuffer",
    .basicsize = sizeof(BufferObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = buffer_slots,
};

/* A _ColumnBuffer owning *data (set to NULL: taken over), or None when *data is NULL. On failure
 * *data is left to the caller. */
static PyObject *buffer_take(kmb_module_state *ms, void **data, size_t len)
{
    if (*data == NULL) Py_RETURN_NONE;
    BufferObject *b = PyObject_New(BufferObject, ms->buffer_type);
    if (b == NULL) return NULL;
    b->data = *data;
    b->len = (Py_ssize_t)len;
    *data = NULL;
    return (PyObject *)b;
}

/* ---- arguments ---------------------------------------------------------------------------- */

/* start (an int >= 0; past 2**64 - 1 clamps) and stop (None: no end). stop < start:
 * ValueError. 0 or -1. */
static int range_args(PyObject *start_obj, PyObject *stop_obj, uint64_t *start, uint64_t *stop)
{
    *start = 0;
    *stop = UINT64_MAX;
    if (start_obj && kmb_int_to_u64(start_obj, "start", 1, start) < 0) return -1;
    if (stop_obj && stop_obj != Py_None && kmb_int_to_u64(stop_obj, "stop", 1, stop) < 0)
        return -1;
    if (*stop < *start) {
        PyErr_Format(PyExc_ValueError,
                     "stop (%llu) must not be before start (%llu); pass stop=None to read to "
                     "the end", (unsigned long long)*stop, (unsigned long long)*start);
        return -1;
    }
    return 0;
}

/* ---- _read_columns -------------------------------------------------------------------------- */

PyDoc_STRVAR(read_columns_doc,
"_read_columns($self, stream_id, start, stop, max_bytes, flags)\n--\n\n"
"PRIVATE (kimberlite._arrow). Read the records [start, stop) of a stream (stop None: to\n"
"the end; max_bytes None: no budget, else the read_from rule) through the verified\n"
"reader into column buffers. flags: 1 payload, 2 offset, 4 hashes, 8 int64 payload\n"
"offsets. Returns (count, payload, payload_offsets, large, offsets, hashes):\n"
"_ColumnBuffer objects (None for a column not asked for); hashes holds count + 1 hashes (each\n"
"record's prev_hash, then the last record's hash).");

static PyObject *storage_read_columns(StorageObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stream_id", "start", "stop", "max_bytes", "flags", NULL};
    PyObject *sid, *start_obj, *stop_obj, *max_obj;
    unsigned int flags;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOI:_read_columns", kwlist, &sid,
                                     &start_obj, &stop_obj, &max_obj, &flags))
        return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    uint64_t stream, start, stop, max_bytes = KMB_NO_LIMIT;
    if (kmb_stream_id(sid, &stream) < 0) return NULL;
    if (range_args(start_obj, stop_obj, &start, &stop) < 0) return NULL;
    if (max_obj != Py_None && kmb_int_to_u64(max_obj, "max_bytes", 1, &max_bytes) < 0)
        return NULL;
    kmb_module_state *ms = kmb_state_of_type(Py_TYPE(self));
    if (ms == NULL) return NULL;
    kmb_columns c;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_read_columns(self->st, stream, start, stop, max_bytes, flags, &c);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    PyObject *result = NULL, *payload = NULL, *po = NULL, *offsets = NULL, *hashes = NULL;
    if ((payload = buffer_take(ms, (void **)&c.payload, (size_t)c.payload_bytes)) == NULL ||
        (po = buffer_take(ms, &c.payload_offsets, kmb_columns_payload_offsets_size(&c))) == NULL ||
        (offsets = buffer_take(ms, (void **)&c.offsets, c.count * sizeof(uint64_t))) == NULL ||
        (hashes = buffer_take(ms, (void **)&c.hashes, (c.count + 1) * KMB_HASH_SIZE)) == NULL)
        goto done;
    result = Py_BuildValue("(nOOOOO)", (Py_ssize_t)c.count, payload, po,
                           c.large ? Py_True : Py_False, offsets, hashes);
done:
    Py_XDECREF(payload);
    Py_XDECREF(po);
    Py_XDECREF(offsets);
    Py_XDECREF(hashes);
    kmb_columns_free(&c);
    return result;
}

/* ---- verify_range ----------------------------------------------------------------------------- */

PyDoc_STRVAR(verify_range_doc,
"verify_range($self, stream_id, start=0, stop=None)\n--\n\n"
"Verify the records [start, stop) of a stream (stop None or past the end: to the end):\n"
"each record's CRC, offset and chain link, the first one's link to the record before\n"
"it included. Returns (count, first_prev_hash, last_hash): the number of records checked,\n"
"the first one's stored prev_hash (None at genesis) and the last one's hash (both None\n"
"when the count is 0). Ranges checked separately chain into a whole-stream check when each\n"
"range's first_prev_hash equals the previous range's last_hash (kimberlite.dask.verify).\n"
"Raises CorruptedRecordError or ChainVerificationError (with .offset) for damage or\n"
"tampering in the range.");

static PyObject *storage_verify_range(StorageObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stream_id", "start", "stop", NULL};
    PyObject *sid, *start_obj = NULL, *stop_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OO:verify_range", kwlist, &sid,
                                     &start_obj, &stop_obj))
        return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    uint64_t stream, start, stop, count = 0;
    if (kmb_stream_id(sid, &stream) < 0) return NULL;
    if (range_args(start_obj, stop_obj, &start, &stop) < 0) return NULL;
    uint8_t first[KMB_HASH_SIZE], last[KMB_HASH_SIZE];
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_verify_range(self->st, stream, start, stop, &count, first, last);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    PyObject *f = kmb_hash_to_py(first, count > 0 && start > 0);
    PyObject *l = f ? kmb_hash_to_py(last, count > 0) : NULL;
    if (l == NULL) {
        Py_XDECREF(f);
        return NULL;
    }
    return Py_BuildValue("(KNN)", (unsigned long long)count, f, l);
}

/* ---- segment_bounds ------------------------------------------------------------------------ */

PyDoc_STRVAR(segment_bounds_doc,
"segment_bounds($self, stream_id)\n--\n\n"
"Return the segments of a stream in order, the active one included, as a list of\n"
"(first_offset, next_offset, bytes): the offset of the segment's first record, one past\n"
"its last, and the bytes its records take. [] for a stream that does not exist. Useful\n"
"to split a stream into ranges of about equal size (kimberlite.dask).");

static PyObject *storage_segment_bounds(StorageObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stream_id", NULL};
    PyObject *sid;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:segment_bounds", kwlist, &sid))
        return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    uint64_t stream;
    if (kmb_stream_id(sid, &stream) < 0) return NULL;
    kmb_segment_bounds *b = NULL;
    size_t n = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_segment_bounds(self->st, stream, &b, &n);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list != NULL && i < n; i++) {
        PyObject *t = Py_BuildValue("(KKK)", (unsigned long long)b[i].first,
                                    (unsigned long long)b[i].next,
                                    (unsigned long long)b[i].bytes);
        if (t == NULL) Py_CLEAR(list);
        else PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    free(b);
    return list;
}

/* ---- registration --------------------------------------------------------------------------- */

static PyMethodDef arrow_methods[] = {
    {"_read_columns", (PyCFunction)(void (*)(void))storage_read_columns,
     METH_VARARGS | METH_KEYWORDS, read_columns_doc},
    {"verify_range", (PyCFunction)(void (*)(void))storage_verify_range,
     METH_VARARGS | METH_KEYWORDS, verify_range_doc},
    {"segment_bounds", (PyCFunction)(void (*)(void))storage_segment_bounds,
     METH_VARARGS | METH_KEYWORDS, segment_bounds_doc},
    {NULL, NULL, 0, NULL},
};

int kmb_arrow_init(PyObject *module, kmb_module_state *st)
{
    return kmb_add_type(module, &buffer_spec, &st->buffer_type);
}

int kmb_arrow_methods_add(PyTypeObject *tp)
{
    return kmb_type_add_methods(tp, arrow_methods);
}
