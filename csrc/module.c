/*
 * module.c — kimberlite._core: the CPython extension module over the C engine.
 *
 * Multi-phase initialisation (PEP 489) with all data in the module state: the heap types
 * (py_storage.c, py_index.c), the exception classes imported from kimberlite._errors, and the
 * kimberlite.Record class that kimberlite/__init__.py registers with _set_record_class().
 * This file also holds the module-level functions (crc32, chain_hash, the record helpers
 * behind kimberlite.Record) and the argument converters the types share.
 */
#include "py_kimberlite.h"
#include "py_tlog.h"

#include <string.h>

/* Below this many bytes a checksum or hash is cheaper than releasing the GIL. */
#define KMB_GIL_THRESHOLD 4096

/* ---- shared helpers --------------------------------------------------------------------- */

kmb_module_state *kmb_state_of_type(PyTypeObject *tp)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *m = PyType_GetModuleByDef(tp, &kmb_module_def);
    return m ? kmb_state_of_module(m) : NULL;
#else
    PyObject *mro = tp->tp_mro;
    if (mro != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
            PyTypeObject *t = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
            if (!(t->tp_flags & Py_TPFLAGS_HEAPTYPE)) continue;
            PyObject *m = PyType_GetModule(t);
            if (m == NULL) {
                PyErr_Clear();
                continue;
            }
            if (PyModule_GetDef(m) == &kmb_module_def) return kmb_state_of_module(m);
        }
    }
    PyErr_Format(PyExc_TypeError, "%s is not a kimberlite._core type", tp->tp_name);
    return NULL;
#endif
}

int kmb_int_to_u64(PyObject *obj, const char *name, int clamp, uint64_t *out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", name,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow < 0 || (overflow == 0 && v < 0)) {
        PyErr_Format(PyExc_ValueError, "%s must be a non-negative int, got %R", name, obj);
        return -1;
    }
    if (overflow == 0) {
        *out = (uint64_t)v;
        return 0;
    }
    unsigned long long u = PyLong_AsUnsignedLongLong(obj);
    if (u == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        PyErr_Clear();
        if (!clamp) {
            PyErr_Format(PyExc_ValueError, "%s must be in [0, 2**64 - 1], got %R", name, obj);
            return -1;
        }
        u = UINT64_MAX;
    }
    *out = (uint64_t)u;
    return 0;
}

int kmb_stream_id(PyObject *obj, uint64_t *out)
{
    return kmb_int_to_u64(obj, "stream_id", 0, out);
}

int kmb_get_buffer(PyObject *obj, Py_buffer *view, const char *what)
{
    if (PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a bytes-like object, not str (encode it first)",
                     what);
        return -1;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) == 0) return 0;
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a bytes-like object, not %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    /* A buffer that is not C-contiguous (a strided memoryview): take a contiguous copy. The
     * view keeps the copy alive until PyBuffer_Release. */
    PyErr_Clear();
    PyObject *copy = PyMemoryView_GetContiguous(obj, PyBUF_READ, 'C');
    if (copy == NULL) return -1;
    int rc = PyObject_GetBuffer(copy, view, PyBUF_SIMPLE);
    Py_DECREF(copy);
    return rc;
}

int kmb_hash_arg(PyObject *obj, const char *name, uint8_t out[KMB_HASH_SIZE], int *has)
{
    if (obj == Py_None) {
        *has = 0;
        return 0;
    }
    Py_buffer view;
    if (kmb_get_buffer(obj, &view, name) < 0) return -1;
    if (view.len != KMB_HASH_SIZE) {
        PyErr_Format(PyExc_ValueError, "%s must be %d bytes or None, got %zd bytes", name,
                     KMB_HASH_SIZE, view.len);
        PyBuffer_Release(&view);
        return -1;
    }
    memcpy(out, view.buf, KMB_HASH_SIZE);
    PyBuffer_Release(&view);
    *has = 1;
    return 0;
}

PyObject *kmb_hash_to_py(const uint8_t h[KMB_HASH_SIZE], int has)
{
    if (!has) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)h, KMB_HASH_SIZE);
}

int kmb_add_type(PyObject *module, PyType_Spec *spec, PyTypeObject **slot)
{
    PyObject *tp = PyType_FromModuleAndSpec(module, spec, NULL);
    if (tp == NULL) return -1;
    Py_INCREF(tp);
    if (PyModule_AddObject(module, strrchr(spec->name, '.') + 1, tp) < 0) {
        Py_DECREF(tp);
        Py_DECREF(tp);
        return -1;
    }
    Py_XSETREF(*slot, (PyTypeObject *)tp);
    return 0;
}

/* ---- module functions ------------------------------------------------------------------- */

PyDoc_STRVAR(crc32_doc,
"crc32(data, /)\n--\n\n"
"Return the CRC-32/IEEE checksum of a bytes-like object as an unsigned int.\n\n"
"The same function as zlib.crc32(data): reflected polynomial 0xEDB88320, initial value\n"
"and final xor 0xFFFFFFFF. Every record and index file of Kimberlite carries one.");

static PyObject *kmb_py_crc32(PyObject *module, PyObject *data)
{
    (void)module;
    Py_buffer view;
    if (kmb_get_buffer(data, &view, "data") < 0) return NULL;
    uint32_t crc;
    if (view.len > KMB_GIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        crc = kmb_crc32(view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    } else {
        crc = kmb_crc32(view.buf, (size_t)view.len);
    }
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(crc);
}

PyDoc_STRVAR(chain_hash_doc,
"chain_hash(prev_hash_or_None, data, /)\n--\n\n"
"Return the 32-byte chain hash of a record: SHA-256(prev_hash || data), or SHA-256(data)\n"
"when prev_hash is None (the genesis record at offset 0).\n\n"
"prev_hash must be None or a bytes-like object of exactly 32 bytes (ValueError\n"
"otherwise); data any bytes-like object.");

static PyObject *kmb_py_chain_hash(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "chain_hash() takes exactly 2 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    uint8_t prev[KMB_HASH_SIZE], out[KMB_HASH_SIZE];
    int has_prev;
    if (kmb_hash_arg(args[0], "prev_hash", prev, &has_prev) < 0) return NULL;
    Py_buffer view;
    if (kmb_get_buffer(args[1], &view, "data") < 0) return NULL;
    if (view.len > KMB_GIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        kmb_chain_hash(out, has_prev ? prev : NULL, view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    } else {
        kmb_chain_hash(out, has_prev ? prev : NULL, view.buf, (size_t)view.len);
    }
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)out, KMB_HASH_SIZE);
}

PyDoc_STRVAR(encode_record_doc,
"encode_record(offset, prev_hash_or_None, payload, /)\n--\n\n"
"Return the on-disk bytes of one record (internal helper of kimberlite.Record.to_bytes):\n"
"[offset:u64][prev_hash:32B][length:u32][payload][crc32:u32], little-endian.\n\n"
"offset must be in [0, 2**63); prev_hash None (written as 32 zero bytes) or 32 bytes;\n"
"payload at most 2**32 - 1 bytes.");

static PyObject *kmb_py_encode_record(PyObject *module, PyObject *const *args,
                                      Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "encode_record() takes exactly 3 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    uint64_t offset;
    if (kmb_int_to_u64(args[0], "offset", 0, &offset) < 0) return NULL;
    if (offset >= KMB_MAX_OFFSET) {
        PyErr_Format(PyExc_ValueError, "offset must be below 2**63, got %R", args[0]);
        return NULL;
    }
    uint8_t prev[KMB_HASH_SIZE];
    int has_prev;
    if (kmb_hash_arg(args[1], "prev_hash", prev, &has_prev) < 0) return NULL;
    Py_buffer view;
    if (kmb_get_buffer(args[2], &view, "payload") < 0) return NULL;
    PyObject *result = NULL;
    if ((uint64_t)view.len > UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "payload is %zd bytes; a record holds at most %lu",
                     view.len, (unsigned long)UINT32_MAX);
        goto cleanup;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)kmb_record_size((uint64_t)view.len));
    if (result == NULL) goto cleanup;
    if (view.len > KMB_GIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        kmb_record_encode((uint8_t *)PyBytes_AS_STRING(result), offset, has_prev ? prev : NULL,
                          view.buf, (uint32_t)view.len);
        Py_END_ALLOW_THREADS
    } else {
        kmb_record_encode((uint8_t *)PyBytes_AS_STRING(result), offset, has_prev ? prev : NULL,
                          view.buf, (uint32_t)view.len);
    }
cleanup:
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(decode_record_doc,
"decode_record(data, /)\n--\n\n"
"Decode the record at the start of a bytes-like object (internal helper of\n"
"kimberlite.Record.from_bytes). Return (offset, prev_hash_or_None, payload, consumed):\n"
"prev_hash is None when the stored hash is 32 zero bytes, consumed the record's size.\n\n"
"Raises UnexpectedEofError when data ends inside the record and CorruptedRecordError on\n"
"a CRC mismatch or an offset >= 2**63.");

static PyObject *kmb_py_decode_record(PyObject *module, PyObject *data)
{
    kmb_module_state *st = kmb_state_of_module(module);
    Py_buffer view;
    if (kmb_get_buffer(data, &view, "data") < 0) return NULL;
    PyObject *result = NULL;
    kmb_record rec;
    size_t consumed = 0;
    int rc;
    if (view.len > KMB_GIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        rc = kmb_record_decode(&rec, &consumed, view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    } else {
        rc = kmb_record_decode(&rec, &consumed, view.buf, (size_t)view.len);
    }
    if (rc != KMB_OK) {
        kmb_raise(st, rc);
        goto cleanup;
    }
    PyObject *prev = kmb_hash_to_py(rec.prev_hash, !kmb_hash_is_zero(rec.prev_hash));
    PyObject *payload = prev ? PyBytes_FromStringAndSize((const char *)rec.payload, rec.length)
                             : NULL;
    if (payload != NULL)
        result = Py_BuildValue("(KOOn)", (unsigned long long)rec.offset, prev, payload,
                               (Py_ssize_t)consumed);
    Py_XDECREF(prev);
    Py_XDECREF(payload);
cleanup:
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(set_record_class_doc,
"_set_record_class(cls, /)\n--\n\n"
"Register the class that Storage.read_records() instantiates (kimberlite.Record).\n"
"Called once by kimberlite/__init__.py; not part of the public API.");

static PyObject *kmb_py_set_record_class(PyObject *module, PyObject *cls)
{
    kmb_module_state *st = kmb_state_of_module(module);
    if (!PyType_Check(cls)) {
        PyErr_Format(PyExc_TypeError, "expected a class, not %.100s", Py_TYPE(cls)->tp_name);
        return NULL;
    }
    Py_INCREF(cls);
    Py_XSETREF(st->record_class, cls);
    Py_RETURN_NONE;
}

static PyMethodDef kmb_module_methods[] = {
    {"crc32", (PyCFunction)kmb_py_crc32, METH_O, crc32_doc},
    {"chain_hash", (PyCFunction)(void (*)(void))kmb_py_chain_hash, METH_FASTCALL, chain_hash_doc},
    {"encode_record", (PyCFunction)(void (*)(void))kmb_py_encode_record, METH_FASTCALL,
     encode_record_doc},
    {"decode_record", (PyCFunction)kmb_py_decode_record, METH_O, decode_record_doc},
    {"_set_record_class", (PyCFunction)kmb_py_set_record_class, METH_O, set_record_class_doc},
    {NULL, NULL, 0, NULL},
};

/* ---- module state and initialisation ---------------------------------------------------- */

static int kmb_module_traverse(PyObject *module, visitproc visit, void *arg)
{
    kmb_module_state *st = kmb_state_of_module(module);
    if (st == NULL) return 0;
    Py_VISIT(st->storage_type);
    Py_VISIT(st->memory_storage_type);
    Py_VISIT(st->index_type);
    Py_VISIT(st->StorageError);
    Py_VISIT(st->UnexpectedEofError);
    Py_VISIT(st->CorruptedRecordError);
    Py_VISIT(st->ChainVerificationError);
    Py_VISIT(st->OffsetMismatchError);
    Py_VISIT(st->IndexCorruptedError);
    Py_VISIT(st->LockedError);
    Py_VISIT(st->StorageIOError);
    Py_VISIT(st->record_class);
    return 0;
}

static int kmb_module_clear(PyObject *module)
{
    kmb_module_state *st = kmb_state_of_module(module);
    if (st == NULL) return 0;
    Py_CLEAR(st->storage_type);
    Py_CLEAR(st->memory_storage_type);
    Py_CLEAR(st->index_type);
    Py_CLEAR(st->StorageError);
    Py_CLEAR(st->UnexpectedEofError);
    Py_CLEAR(st->CorruptedRecordError);
    Py_CLEAR(st->ChainVerificationError);
    Py_CLEAR(st->OffsetMismatchError);
    Py_CLEAR(st->IndexCorruptedError);
    Py_CLEAR(st->LockedError);
    Py_CLEAR(st->StorageIOError);
    Py_CLEAR(st->record_class);
    return 0;
}

static void kmb_module_free(void *module)
{
    kmb_module_clear((PyObject *)module);
}

/* Fetch kimberlite._errors.<name> into *slot (a new reference). */
static int import_exception(PyObject *errors, const char *name, PyObject **slot)
{
    PyObject *cls = PyObject_GetAttrString(errors, name);
    if (cls == NULL) return -1;
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls,
                                                (PyTypeObject *)PyExc_Exception)) {
        PyErr_Format(PyExc_TypeError, "kimberlite._errors.%s is not an exception class", name);
        Py_DECREF(cls);
        return -1;
    }
    Py_XSETREF(*slot, cls);
    return 0;
}

static int kmb_module_exec(PyObject *module)
{
    kmb_module_state *st = kmb_state_of_module(module);
    PyObject *errors = PyImport_ImportModule("kimberlite._errors");
    if (errors == NULL) return -1;
    int rc = -1;
    if (import_exception(errors, "StorageError", &st->StorageError) < 0 ||
        import_exception(errors, "UnexpectedEofError", &st->UnexpectedEofError) < 0 ||
        import_exception(errors, "CorruptedRecordError", &st->CorruptedRecordError) < 0 ||
        import_exception(errors, "ChainVerificationError", &st->ChainVerificationError) < 0 ||
        import_exception(errors, "OffsetMismatchError", &st->OffsetMismatchError) < 0 ||
        import_exception(errors, "IndexCorruptedError", &st->IndexCorruptedError) < 0 ||
        import_exception(errors, "LockedError", &st->LockedError) < 0 ||
        import_exception(errors, "StorageIOError", &st->StorageIOError) < 0)
        goto done;

    if (kmb_storage_types_init(module, st) < 0) goto done;
    if (kmb_index_type_init(module, st) < 0) goto done;
    if (kmb_tlog_init(module) < 0) goto done;

    if (PyModule_AddIntConstant(module, "RECORD_OVERHEAD", KMB_RECORD_OVERHEAD) < 0) goto done;
    if (PyModule_AddIntConstant(module, "HEADER_SIZE", KMB_HEADER_SIZE) < 0) goto done;
    PyObject *dflt = PyLong_FromUnsignedLongLong(KMB_DEFAULT_MAX_SEGMENT_SIZE);
    if (dflt == NULL) goto done;
    if (PyModule_AddObject(module, "DEFAULT_MAX_SEGMENT_SIZE", dflt) < 0) {
        Py_DECREF(dflt);
        goto done;
    }
    dflt = PyLong_FromUnsignedLongLong(KMB_DEFAULT_MAX_EVENT_SIZE);
    if (dflt == NULL) goto done;
    if (PyModule_AddObject(module, "DEFAULT_MAX_EVENT_SIZE", dflt) < 0) {
        Py_DECREF(dflt);
        goto done;
    }
    rc = 0;
done:
    Py_DECREF(errors);
    return rc;
}

static PyModuleDef_Slot kmb_module_slots[] = {
    {Py_mod_exec, (void *)kmb_module_exec},
    {0, NULL},
};

PyDoc_STRVAR(kmb_module_doc,
"kimberlite._core: the C engine of Kimberlite, an embedded, append-only, tamper-evident\n"
"event log. Use it through the kimberlite package, which re-exports these names.");

PyModuleDef kmb_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "kimberlite._core",
    .m_doc = kmb_module_doc,
    .m_size = sizeof(kmb_module_state),
    .m_methods = kmb_module_methods,
    .m_slots = kmb_module_slots,
    .m_traverse = kmb_module_traverse,
    .m_clear = kmb_module_clear,
    .m_free = kmb_module_free,
};

PyMODINIT_FUNC PyInit__core(void)
{
    return PyModuleDef_Init(&kmb_module_def);
}
