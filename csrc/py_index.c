/*
 * py_index.c — the type kimberlite.OffsetIndex over kmb_index (index.h).
 *
 * The in-memory offset index of one segment (entry i = byte position of the segment's i-th
 * record) and its .idx file. kmb_index is not thread-safe, so every operation on the
 * object's own index runs with the GIL held; save() hands a private copy to the file code
 * and releases the GIL for the I/O, load() decodes into a fresh index without the GIL.
 */
#include "py_kimberlite.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    kmb_index ix; /* zero-initialised by tp_alloc == an empty index */
} IndexObject;

static int index_raise(IndexObject *self, int rc)
{
    kmb_module_state *ms = kmb_state_of_type(Py_TYPE(self));
    if (ms != NULL) kmb_raise(ms, rc);
    return -1;
}

static int index_append_obj(IndexObject *self, PyObject *pos)
{
    uint64_t v;
    if (kmb_int_to_u64(pos, "position", 0, &v) < 0) return -1;
    int rc = kmb_index_append(&self->ix, v);
    if (rc != KMB_OK) return index_raise(self, rc);
    return 0;
}

static int index_init(IndexObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"positions", NULL};
    PyObject *positions = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:OffsetIndex", kwlist, &positions))
        return -1;
    /* Build a new index first, so that a bad item leaves self unchanged. */
    kmb_index fresh;
    kmb_index_init(&fresh);
    if (positions != NULL) {
        PyObject *seq = PySequence_Fast(positions, "positions must be an iterable of ints");
        if (seq == NULL) return -1;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        int ok = kmb_index_reserve(&fresh, (size_t)n) == KMB_OK;
        if (!ok) PyErr_NoMemory();
        for (Py_ssize_t i = 0; ok && i < n; i++) {
            uint64_t v;
            ok = kmb_int_to_u64(PySequence_Fast_GET_ITEM(seq, i), "position", 0, &v) == 0;
            if (ok) ok = kmb_index_append(&fresh, v) == KMB_OK || (PyErr_NoMemory(), 0);
        }
        Py_DECREF(seq);
        if (!ok) {
            kmb_index_free(&fresh);
            return -1;
        }
    }
    kmb_index_free(&self->ix);
    self->ix = fresh;
    return 0;
}

static void index_dealloc(IndexObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    kmb_index_free(&self->ix);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *index_positions_list(const kmb_index *ix, size_t limit)
{
    size_t n = ix->count < limit ? ix->count : limit;
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (list == NULL) return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *x = PyLong_FromUnsignedLongLong(ix->positions[i]);
        if (x == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, x);
    }
    return list;
}

static PyObject *index_repr(IndexObject *self)
{
    const char *name = Py_TYPE(self)->tp_name;
    const char *dot = strrchr(name, '.');
    if (dot != NULL) name = dot + 1;
    if (self->ix.count <= 8) {
        PyObject *list = index_positions_list(&self->ix, 8);
        if (list == NULL) return NULL;
        PyObject *r = PyUnicode_FromFormat("%s(%R)", name, list);
        Py_DECREF(list);
        return r;
    }
    return PyUnicode_FromFormat("<%s of %zu positions: %llu, %llu, ..., %llu>", name,
                                self->ix.count, (unsigned long long)self->ix.positions[0],
                                (unsigned long long)self->ix.positions[1],
                                (unsigned long long)self->ix.positions[self->ix.count - 1]);
}

static Py_ssize_t index_len(IndexObject *self)
{
    return (Py_ssize_t)self->ix.count;
}

static PyObject *index_richcompare(PyObject *a, PyObject *b, int op)
{
    kmb_module_state *ms = kmb_state_of_type(Py_TYPE(a));
    if (ms == NULL) return NULL;
    if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(b, ms->index_type))
        Py_RETURN_NOTIMPLEMENTED;
    const kmb_index *x = &((IndexObject *)a)->ix, *y = &((IndexObject *)b)->ix;
    int eq = x->count == y->count &&
             (x->count == 0 || memcmp(x->positions, y->positions, x->count * sizeof(uint64_t)) == 0);
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

PyDoc_STRVAR(index_append_doc,
"append($self, pos, /)\n--\n\n"
"Append the byte position of the segment's next record (an int in [0, 2**64 - 1]).");

static PyObject *index_append(IndexObject *self, PyObject *pos)
{
    if (index_append_obj(self, pos) < 0) return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(index_lookup_doc,
"lookup($self, offset, /)\n--\n\n"
"Return the byte position of the segment's record number `offset` (counted from the\n"
"segment's first record), or None when offset is out of range (negative or >= len).");

static PyObject *index_lookup(IndexObject *self, PyObject *offset)
{
    uint64_t i, pos;
    if (!PyLong_Check(offset)) {
        PyErr_Format(PyExc_TypeError, "offset must be an int, not %.100s",
                     Py_TYPE(offset)->tp_name);
        return NULL;
    }
    if (kmb_int_to_u64(offset, "offset", 1, &i) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) return NULL;
        PyErr_Clear(); /* negative: out of range */
        Py_RETURN_NONE;
    }
    if (!kmb_index_lookup(&self->ix, i, &pos)) Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(pos);
}

PyDoc_STRVAR(index_save_doc,
"save($self, path)\n--\n\n"
"Write the index to `path` in the .idx format (\"VDXI\", version 1, count, positions,\n"
"CRC-32), through a temporary file renamed over `path`. Not synced: an index is a cache.\n"
"Raises StorageIOError on an operating-system error.");

static PyObject *index_save(IndexObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", NULL};
    PyObject *path = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&:save", kwlist, PyUnicode_FSConverter,
                                     &path))
        return NULL;
    PyObject *result = NULL;
    /* A private copy, so that another thread may use this index while the GIL is out. */
    kmb_index copy;
    kmb_index_init(&copy);
    if (kmb_index_copy(&copy, &self->ix) != KMB_OK) {
        PyErr_NoMemory();
        goto cleanup;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_index_save(&copy, PyBytes_AS_STRING(path));
    Py_END_ALLOW_THREADS
    if (rc != KMB_OK) {
        index_raise(self, rc);
        goto cleanup;
    }
    Py_INCREF(Py_None);
    result = Py_None;
cleanup:
    kmb_index_free(&copy);
    Py_DECREF(path);
    return result;
}

PyDoc_STRVAR(index_load_doc,
"load($type, path)\n--\n\n"
"Read an .idx file and return a new OffsetIndex. Raises IndexCorruptedError when the\n"
"magic, version, reserved bytes, size or CRC are wrong, StorageIOError on an\n"
"operating-system error (a missing file included).");

static PyObject *index_load(PyTypeObject *cls, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", NULL};
    PyObject *path = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&:load", kwlist, PyUnicode_FSConverter,
                                     &path))
        return NULL;
    kmb_module_state *ms = kmb_state_of_type(cls);
    if (ms == NULL) {
        Py_DECREF(path);
        return NULL;
    }
    kmb_index loaded;
    kmb_index_init(&loaded);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_index_load(&loaded, PyBytes_AS_STRING(path));
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (rc != KMB_OK) {
        kmb_index_free(&loaded);
        return kmb_raise(ms, rc);
    }
    PyObject *obj = PyObject_CallNoArgs((PyObject *)cls);
    if (obj == NULL) {
        kmb_index_free(&loaded);
        return NULL;
    }
    if (!PyObject_TypeCheck(obj, ms->index_type)) {
        PyErr_Format(PyExc_TypeError, "%s() did not return an OffsetIndex", cls->tp_name);
        Py_DECREF(obj);
        kmb_index_free(&loaded);
        return NULL;
    }
    IndexObject *self = (IndexObject *)obj;
    kmb_index_free(&self->ix);
    self->ix = loaded;
    return obj;
}

static PyObject *index_get_positions(IndexObject *self, void *Py_UNUSED(closure))
{
    return index_positions_list(&self->ix, self->ix.count);
}

static PyMethodDef index_methods[] = {
    {"append", (PyCFunction)index_append, METH_O, index_append_doc},
    {"lookup", (PyCFunction)index_lookup, METH_O, index_lookup_doc},
    {"save", (PyCFunction)(void (*)(void))index_save, METH_VARARGS | METH_KEYWORDS,
     index_save_doc},
    {"load", (PyCFunction)(void (*)(void))index_load, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     index_load_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef index_getset[] = {
    {"positions", (getter)index_get_positions, NULL,
     PyDoc_STR("A list copy of the positions, in order."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(index_doc,
"OffsetIndex(positions=())\n--\n\n"
"The offset index of one segment: entry i is the byte position where the segment's\n"
"i-th record starts, giving O(1) random access. A cache of the segment, stored beside\n"
"it as segment_NNNNNN.log.idx.\n\n"
"positions: an iterable of ints in [0, 2**64 - 1].");

static PyType_Slot index_slots[] = {
    {Py_tp_doc, (void *)index_doc},
    {Py_tp_init, (void *)index_init},
    {Py_tp_dealloc, (void *)index_dealloc},
    {Py_tp_repr, (void *)index_repr},
    {Py_tp_richcompare, (void *)index_richcompare},
    {Py_tp_methods, index_methods},
    {Py_tp_getset, index_getset},
    {Py_sq_length, (void *)index_len},
    {Py_mp_length, (void *)index_len},
    {0, NULL},
};

static PyType_Spec index_spec = {
    .name = "kimberlite.OffsetIndex",
    .basicsize = sizeof(IndexObject),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = index_slots,
};

int kmb_index_type_init(PyObject *module, kmb_module_state *st)
{
    return kmb_add_type(module, &index_spec, &st->index_type);
}
