/*
 * py_testing.c — private methods of Storage and MemoryStorage that exist for tests only.
 *
 * _segment_bytes / _replace_segment_bytes serve kimberlite.testing (damage a stream on
 * purpose, in memory or on disk, and make the engine load it again); _set_fault / _io_calls
 * drive the engine's fault plan (include/kimberlite/sys/faults.h, docs/TESTING.md). They are
 * kept out of py_storage.c so that the Storage type reads as the public API, and are added
 * to both types at module exec by kmb_testing_methods_add().
 */
#include "py_kimberlite.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kimberlite/sys/faults.h"

typedef kmb_storage_object StorageObject;

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
    if (kmb_storage_check_open(self) < 0) return NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_segment_bytes(self->st, stream, seg, &buf, &len);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (kmb_storage_finish(self, rc) == 0) result = PyBytes_FromStringAndSize((char *)buf, (Py_ssize_t)len);
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
    if (kmb_storage_check_open(self) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_replace_segment_bytes(self->st, stream, seg, data.buf, (size_t)data.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(tree_data_doc,
"_tree_data($self, stream_id, /)\n--\n\n"
"Return the stream's stored tree data, or None (private: for tests of the tree cache).");

static PyObject *storage_tree_data(StorageObject *self, PyObject *sid)
{
    uint64_t stream;
    if (kmb_stream_id(sid, &stream) < 0) return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_tree_data(self->st, stream, &buf, &len);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (kmb_storage_finish(self, rc) == 0) {
        if (buf) result = PyBytes_FromStringAndSize((char *)buf, (Py_ssize_t)len);
        else {
            Py_INCREF(Py_None);
            result = Py_None;
        }
    }
    free(buf);
    return result;
}

PyDoc_STRVAR(replace_tree_data_doc,
"_replace_tree_data($self, stream_id, data, /)\n--\n\n"
"Store data as the stream's tree data and make the engine load the stream again on next\n"
"use (private: for tests of the tree cache, which damage it on purpose).");

static PyObject *storage_replace_tree_data(StorageObject *self, PyObject *args)
{
    PyObject *sid;
    Py_buffer data;
    uint64_t stream;
    if (!PyArg_ParseTuple(args, "Oy*:_replace_tree_data", &sid, &data)) return NULL;
    if (kmb_stream_id(sid, &stream) < 0 || kmb_storage_check_open(self) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_replace_tree_data(self->st, stream, data.buf, (size_t)data.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (kmb_storage_finish(self, rc) < 0) return NULL;
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
    if (kmb_storage_check_open(self) < 0) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_set_fault(self->st, ops, (uint64_t)nth, crash ? KMB_FAULT_CRASH : err,
                               persistent, short_write);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(io_calls_doc,
"_io_calls($self)\n--\n\n"
"FOR TESTS ONLY. (calls, faults): the file operations counted and the faults injected\n"
"since the last _set_fault.");

static PyObject *storage_io_calls(StorageObject *self, PyObject *Py_UNUSED(ignored))
{
    if (kmb_storage_check_open(self) < 0) return NULL;
    uint64_t calls = 0, faults = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_fault_counts(self->st, &calls, &faults);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    return Py_BuildValue("(KK)", (unsigned long long)calls, (unsigned long long)faults);
}

PyDoc_STRVAR(set_read_tuning_doc,
"_set_read_tuning($self, /, min_bytes=0, chunk_bytes=0, block=0, helpers_only=False)\n--\n\n"
"FOR TESTS ONLY. Make small reads take the parallel reader's path: reads of min_bytes or\n"
"more use the pool, chunk_bytes are checked at a time, threads claim `block` records at a\n"
"time, and with helpers_only the caller leaves every record to the pool (0 = default).");

static PyObject *storage_set_read_tuning(StorageObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"min_bytes", "chunk_bytes", "block", "helpers_only", NULL};
    unsigned long long min_bytes = 0;
    Py_ssize_t chunk = 0, block = 0;
    int helpers_only = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|Knnp:_set_read_tuning", kwlist, &min_bytes,
                                     &chunk, &block, &helpers_only))
        return NULL;
    if (chunk < 0 || block < 0) {
        PyErr_SetString(PyExc_ValueError, "chunk_bytes and block must not be negative");
        return NULL;
    }
    if (kmb_storage_check_open(self) < 0) return NULL;
    int rc = kmb_storage_set_read_tuning(self->st, (uint64_t)min_bytes, (size_t)chunk,
                                         (size_t)block, helpers_only);
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(read_stats_doc,
"_read_stats($self)\n--\n\n"
"FOR TESTS ONLY. (helped, read_threads): records the pool's threads checked since they\n"
"started in this process, and the read_threads in force.");

static PyObject *storage_read_stats(StorageObject *self, PyObject *Py_UNUSED(ignored))
{
    if (kmb_storage_check_open(self) < 0) return NULL;
    uint64_t helped = 0;
    unsigned threads = 0;
    int rc = kmb_storage_read_stats(self->st, &helped, &threads);
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    return Py_BuildValue("(KI)", (unsigned long long)helped, threads);
}

PyDoc_STRVAR(index_window_doc,
"_index_window($self, stream, /)\n--\n\n"
"FOR TESTS ONLY. For each segment of the stream, 0 when its offset index is loaded whole,\n"
"else the first entry of the window loaded at open (a partial index).");

static PyObject *storage_index_window(StorageObject *self, PyObject *arg)
{
    unsigned long long stream = PyLong_AsUnsignedLongLong(arg);
    if (stream == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    size_t n = 0, cap = 0, *out = NULL;
    int rc = kmb_storage_index_window(self->st, stream, NULL, 0, &n);
    while (rc == KMB_OK && n > cap) {
        cap = n;
        size_t *p = realloc(out, cap * sizeof *p);
        if (!p) {
            free(out);
            return PyErr_NoMemory();
        }
        out = p;
        rc = kmb_storage_index_window(self->st, stream, out, cap, &n);
    }
    if (kmb_storage_finish(self, rc) < 0) {
        free(out);
        return NULL;
    }
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t k = 0; list && k < n; k++) {
        PyObject *x = PyLong_FromSize_t(out[k]);
        if (!x) Py_CLEAR(list);
        else PyList_SET_ITEM(list, (Py_ssize_t)k, x);
    }
    free(out);
    return list;
}

#define KW_METHOD(name, fn, doc) \
    {name, (PyCFunction)(void (*)(void))(fn), METH_VARARGS | METH_KEYWORDS, doc}

static PyMethodDef testing_methods[] = {
    KW_METHOD("_set_fault", storage_set_fault, set_fault_doc),
    {"_io_calls", (PyCFunction)storage_io_calls, METH_NOARGS, io_calls_doc},
    KW_METHOD("_set_read_tuning", storage_set_read_tuning, set_read_tuning_doc),
    {"_read_stats", (PyCFunction)storage_read_stats, METH_NOARGS, read_stats_doc},
    {"_index_window", (PyCFunction)storage_index_window, METH_O, index_window_doc},
    {"_segment_bytes", (PyCFunction)storage_segment_bytes, METH_VARARGS, segment_bytes_doc},
    {"_replace_segment_bytes", (PyCFunction)storage_replace_segment_bytes, METH_VARARGS,
     replace_segment_bytes_doc},
    {"_tree_data", (PyCFunction)storage_tree_data, METH_O, tree_data_doc},
    {"_replace_tree_data", (PyCFunction)storage_replace_tree_data, METH_VARARGS,
     replace_tree_data_doc},
    {NULL, NULL, 0, NULL},
};

int kmb_testing_methods_add(PyTypeObject *tp)
{
    return kmb_type_add_methods(tp, testing_methods);
}
