/*
 * py_tree.c — the verifiable-log methods of Storage and MemoryStorage (SPEC §6):
 * tree_root, inclusion_proof, consistency_proof, and _sync (used by kimberlite._storage's
 * checkpoint). The engine work (catch-up, hashing, syncing) runs without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#include "kimberlite/merkle.h"
#include "kimberlite/storage.h"
#include "py_kimberlite.h"

/*
 * A tree size, offset or old size: an int in [0, 2**63) (no stream has more records), or
 * None where `none_ok` (*out = KMB_TREE_SIZE_ALL). TypeError / ValueError otherwise.
 */
static int size_arg(PyObject *obj, const char *name, int none_ok, uint64_t *out)
{
    if (obj == Py_None && none_ok) {
        *out = KMB_TREE_SIZE_ALL;
        return 0;
    }
    if (kmb_int_to_u64(obj, name, 0, out) < 0) return -1;
    if (*out > (uint64_t)INT64_MAX) {
        PyErr_Format(PyExc_ValueError, "%s %S is out of range: no stream has that many records",
                     name, obj);
        return -1;
    }
    return 0;
}

static PyObject *hash_list(const uint8_t (*h)[KMB_MERKLE_HASH_SIZE], unsigned n)
{
    PyObject *list = PyList_New(n);
    if (list == NULL) return NULL;
    for (unsigned i = 0; i < n; i++) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)h[i], KMB_MERKLE_HASH_SIZE);
        if (b == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, b);
    }
    return list;
}

PyObject *kmb_py_tree_root(kmb_storage_object *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stream_id", "tree_size", NULL};
    PyObject *sid, *size_obj = Py_None;
    uint64_t stream, size;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:tree_root", kwlist, &sid, &size_obj))
        return NULL;
    if (kmb_stream_id(sid, &stream) < 0 || size_arg(size_obj, "tree_size", 1, &size) < 0)
        return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    uint8_t root[KMB_MERKLE_HASH_SIZE];
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_tree_root(self->st, stream, size, root, NULL);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    return PyBytes_FromStringAndSize((const char *)root, KMB_MERKLE_HASH_SIZE);
}

PyObject *kmb_py_inclusion_proof(kmb_storage_object *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stream_id", "offset", "tree_size", NULL};
    PyObject *sid, *off_obj, *size_obj = Py_None;
    uint64_t stream, offset, size;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|O:inclusion_proof", kwlist, &sid, &off_obj,
                                     &size_obj))
        return NULL;
    if (kmb_stream_id(sid, &stream) < 0 || size_arg(off_obj, "offset", 0, &offset) < 0 ||
        size_arg(size_obj, "tree_size", 1, &size) < 0)
        return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    uint8_t proof[KMB_MERKLE_MAX_INCLUSION][KMB_MERKLE_HASH_SIZE];
    unsigned n = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_inclusion_proof(self->st, stream, offset, size, proof, &n, NULL);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    return hash_list((const uint8_t(*)[KMB_MERKLE_HASH_SIZE])proof, n);
}

PyObject *kmb_py_consistency_proof(kmb_storage_object *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stream_id", "old_size", "new_size", NULL};
    PyObject *sid, *old_obj, *new_obj = Py_None;
    uint64_t stream, old_size, new_size;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|O:consistency_proof", kwlist, &sid,
                                     &old_obj, &new_obj))
        return NULL;
    if (kmb_stream_id(sid, &stream) < 0 || size_arg(old_obj, "old_size", 0, &old_size) < 0 ||
        size_arg(new_obj, "new_size", 1, &new_size) < 0)
        return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    uint8_t proof[KMB_MERKLE_MAX_CONSISTENCY][KMB_MERKLE_HASH_SIZE];
    unsigned n = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_consistency_proof(self->st, stream, old_size, new_size, proof, &n, NULL);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    return hash_list((const uint8_t(*)[KMB_MERKLE_HASH_SIZE])proof, n);
}

PyObject *kmb_py_sync(kmb_storage_object *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stream_id", NULL};
    PyObject *sid;
    uint64_t stream;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:_sync", kwlist, &sid)) return NULL;
    if (kmb_stream_id(sid, &stream) < 0) return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_sync(self->st, stream);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    Py_RETURN_NONE;
}

PyObject *kmb_py_durable_root(kmb_storage_object *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stream_id", NULL};
    PyObject *sid;
    uint64_t stream, size = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:_durable_root", kwlist, &sid)) return NULL;
    if (kmb_stream_id(sid, &stream) < 0) return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    uint8_t root[KMB_MERKLE_HASH_SIZE];
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_durable_root(self->st, stream, root, &size);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    return Py_BuildValue("(Ky#)", (unsigned long long)size, (const char *)root,
                         (Py_ssize_t)KMB_MERKLE_HASH_SIZE);
}

PyObject *kmb_py_load_checkpoint(kmb_storage_object *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stream_id", NULL};
    PyObject *sid;
    uint64_t stream;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:_load_checkpoint", kwlist, &sid))
        return NULL;
    if (kmb_stream_id(sid, &stream) < 0) return NULL;
    if (kmb_storage_check_open(self) < 0) return NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_load_checkpoint(self->st, stream, &data, &len);
    Py_END_ALLOW_THREADS
    if (kmb_storage_finish(self, rc) < 0) return NULL;
    if (data == NULL) Py_RETURN_NONE;
    PyObject *b = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len);
    free(data);
    return b;
}

/* True when stored; False when the stored bytes were not `expected` (nothing written). */
PyObject *kmb_py_store_checkpoint(kmb_storage_object *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stream_id", "expected", "data", NULL};
    PyObject *sid, *expected;
    Py_buffer data;
    uint64_t stream;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOy*:_store_checkpoint", kwlist, &sid,
                                     &expected, &data))
        return NULL;
    PyObject *result = NULL;
    Py_buffer exp = {0};
    int has_exp = expected != Py_None;
    if (kmb_stream_id(sid, &stream) < 0) goto done;
    if (has_exp && PyObject_GetBuffer(expected, &exp, PyBUF_SIMPLE) < 0) {
        has_exp = 0;
        goto done;
    }
    if (kmb_storage_check_open(self) < 0) goto done;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_storage_store_checkpoint(self->st, stream, has_exp ? exp.buf : NULL,
                                      has_exp ? (size_t)exp.len : 0, data.buf, (size_t)data.len);
    Py_END_ALLOW_THREADS
    if (rc == KMB_EOFFSET) {
        result = Py_NewRef(Py_False);
        goto done;
    }
    if (kmb_storage_finish(self, rc) < 0) goto done;
    result = Py_NewRef(Py_True);
done:
    if (has_exp) PyBuffer_Release(&exp);
    PyBuffer_Release(&data);
    return result;
}
