/*
 * module.c — kimberlite._core: the CPython extension module over the C engine.
 *
 * Multi-phase initialisation (PEP 489) with all data in the module state: the heap types
 * (py_storage.c, py_index.c), the exception classes imported from kimberlite._errors and the
 * kimberlite.Record class imported from kimberlite._record, both at exec time. This file
 * also holds the module-level functions (crc32, chain_hash, the record codec behind
 * kimberlite.Record and kimberlite.testing, the segment file naming) and the argument
 * converters the types share.
 */
#include "py_kimberlite.h"
#include "py_tlog.h"

#include "kimberlite/crypto.h"

#include <string.h>

#include "kimberlite/layout.h"

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

int kmb_type_add_methods(PyTypeObject *tp, PyMethodDef *defs)
{
    for (PyMethodDef *def = defs; def->ml_name != NULL; def++) {
        PyObject *descr = PyDescr_NewMethod(tp, def);
        if (descr == NULL) return -1;
        int rc = PyObject_SetAttrString((PyObject *)tp, def->ml_name, descr);
        Py_DECREF(descr);
        if (rc < 0) return -1;
    }
    return 0;
}

int kmb_add_type(PyObject *module, PyType_Spec *spec, PyTypeObject **slot)
{
    PyObject *tp = PyType_FromModuleAndSpec(module, spec, NULL);
    if (tp == NULL) return -1;
    Py_XSETREF(*slot, (PyTypeObject *)tp); /* the state owns the new reference */
    return PyModule_AddObjectRef(module, strrchr(spec->name, '.') + 1, tp);
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
"Return the on-disk bytes of one record (the engine's encoder, behind\n"
"kimberlite.Record.to_bytes and kimberlite.testing):\n"
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
"prev_hash is None for a record at offset 0 storing 32 zero bytes (genesis), else the\n"
"stored 32 bytes; consumed is the record's size.\n\n"
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
    /* None only for a genesis record storing zeros: the Record rule (kimberlite/_record.py). */
    PyObject *prev = kmb_hash_to_py(rec.prev_hash,
                                    rec.offset != 0 || !kmb_hash_is_zero(rec.prev_hash));
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

PyDoc_STRVAR(decode_record_header_doc,
"decode_record_header(data, pos=0, /)\n--\n\n"
"Return (offset, prev_hash, length) of the record header at data[pos:pos + 44], without\n"
"any check of the record (kimberlite.testing reads damaged segments with it): prev_hash\n"
"is the 32 bytes stored. UnexpectedEofError when fewer than 44 bytes remain.");

static PyObject *kmb_py_decode_record_header(PyObject *module, PyObject *const *args,
                                             Py_ssize_t nargs)
{
    kmb_module_state *st = kmb_state_of_module(module);
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "decode_record_header() takes 1 or 2 arguments (%zd "
                     "given)", nargs);
        return NULL;
    }
    uint64_t pos = 0;
    if (nargs == 2 && kmb_int_to_u64(args[1], "pos", 1, &pos) < 0) return NULL;
    Py_buffer view;
    if (kmb_get_buffer(args[0], &view, "data") < 0) return NULL;
    PyObject *result = NULL;
    if (pos > (uint64_t)view.len || (uint64_t)view.len - pos < KMB_HEADER_SIZE) {
        kmb_error_set(KMB_EEOF, 0, "data ends inside a record header: %d bytes needed at "
                      "position %llu, %llu present", KMB_HEADER_SIZE, (unsigned long long)pos,
                      (unsigned long long)(pos > (uint64_t)view.len ? 0 : (uint64_t)view.len - pos));
        kmb_raise(st, KMB_EEOF);
    } else {
        const uint8_t *h = (const uint8_t *)view.buf + pos;
        /* the header is [offset:u64][prev_hash:32B][length:u32] (record.h) */
        result = Py_BuildValue("(Ky#k)", (unsigned long long)kmb_load_u64le(h),
                               (const char *)h + 8, (Py_ssize_t)KMB_HASH_SIZE,
                               (unsigned long)kmb_load_u32le(h + 8 + KMB_HASH_SIZE));
    }
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(segment_file_name_doc,
"segment_file_name(seg, /)\n--\n\n"
"Return the file name of segment number seg (an int in [0, 2**32 - 1]):\n"
"'segment_000042.log' (docs/FORMAT.md, Files). The engine's own naming, for\n"
"kimberlite.testing and the command line.");

static PyObject *kmb_py_segment_file_name(PyObject *module, PyObject *arg)
{
    (void)module;
    uint64_t seg;
    if (kmb_int_to_u64(arg, "seg", 0, &seg) < 0) return NULL;
    if (seg > UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "seg must be in [0, 2**32 - 1], got %R", arg);
        return NULL;
    }
    char name[KMB_SEGMENT_NAME_MAX];
    int n = kmb_segment_name(name, sizeof name, (uint32_t)seg);
    return PyUnicode_FromStringAndSize(name, n);
}

PyDoc_STRVAR(parse_segment_file_name_doc,
"parse_segment_file_name(name, /)\n--\n\n"
"Return the segment number of a segment file name exactly as the engine writes it\n"
"('segment_000042.log' -> 42), or None for any other name (index and quarantine files,\n"
"non-canonical spellings).");

static PyObject *kmb_py_parse_segment_file_name(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "name must be a str, not %.100s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    Py_ssize_t len;
    const char *name = PyUnicode_AsUTF8AndSize(arg, &len);
    if (name == NULL) {
        PyErr_Clear(); /* not encodable (lone surrogates): not a segment name */
        Py_RETURN_NONE;
    }
    uint32_t seg;
    if ((size_t)len != strlen(name) || !kmb_segment_name_parse(name, &seg)) Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(seg);
}

static PyMethodDef kmb_module_methods[] = {
    {"crc32", (PyCFunction)kmb_py_crc32, METH_O, crc32_doc},
    {"chain_hash", (PyCFunction)(void (*)(void))kmb_py_chain_hash, METH_FASTCALL, chain_hash_doc},
    {"encode_record", (PyCFunction)(void (*)(void))kmb_py_encode_record, METH_FASTCALL,
     encode_record_doc},
    {"decode_record", (PyCFunction)kmb_py_decode_record, METH_O, decode_record_doc},
    {"decode_record_header", (PyCFunction)(void (*)(void))kmb_py_decode_record_header,
     METH_FASTCALL, decode_record_header_doc},
    {"segment_file_name", (PyCFunction)kmb_py_segment_file_name, METH_O, segment_file_name_doc},
    {"parse_segment_file_name", (PyCFunction)kmb_py_parse_segment_file_name, METH_O,
     parse_segment_file_name_doc},
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
    Py_VISIT(st->buffer_type);
    Py_VISIT(st->es_stream_type);
    Py_VISIT(st->es_writer_type);
    Py_VISIT(st->es_insert_type);
    Py_VISIT(st->StorageError);
    Py_VISIT(st->UnexpectedEofError);
    Py_VISIT(st->CorruptedRecordError);
    Py_VISIT(st->ChainVerificationError);
    Py_VISIT(st->OffsetMismatchError);
    Py_VISIT(st->IndexCorruptedError);
    Py_VISIT(st->LockedError);
    Py_VISIT(st->StorageIOError);
    Py_VISIT(st->record_base_type);
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
    Py_CLEAR(st->buffer_type);
    Py_CLEAR(st->es_stream_type);
    Py_CLEAR(st->es_writer_type);
    Py_CLEAR(st->es_insert_type);
    Py_CLEAR(st->StorageError);
    Py_CLEAR(st->UnexpectedEofError);
    Py_CLEAR(st->CorruptedRecordError);
    Py_CLEAR(st->ChainVerificationError);
    Py_CLEAR(st->OffsetMismatchError);
    Py_CLEAR(st->IndexCorruptedError);
    Py_CLEAR(st->LockedError);
    Py_CLEAR(st->StorageIOError);
    Py_CLEAR(st->record_base_type);
    Py_CLEAR(st->record_class);
    return 0;
}

static void kmb_module_free(void *module)
{
    kmb_module_clear((PyObject *)module);
}

/* Import kimberlite._record.Record (as _errors is imported): the class read_records makes.
 * It must subclass _RecordBase, whose fields kmb_record_new fills. */
static int import_record_class(kmb_module_state *st)
{
    PyObject *mod = PyImport_ImportModule("kimberlite._record");
    if (mod == NULL) return -1;
    PyObject *cls = PyObject_GetAttrString(mod, "Record");
    Py_DECREF(mod);
    if (cls == NULL) return -1;
    if (!PyType_Check(cls) ||
        !PyType_IsSubtype((PyTypeObject *)cls, st->record_base_type)) {
        PyErr_SetString(PyExc_TypeError,
                        "kimberlite._record.Record is not a subclass of _core._RecordBase");
        Py_DECREF(cls);
        return -1;
    }
    Py_XSETREF(st->record_class, cls);
    return 0;
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

static int add_u64(PyObject *module, const char *name, uint64_t v)
{
    PyObject *obj = PyLong_FromUnsignedLongLong(v);
    if (obj == NULL) return -1;
    int rc = PyModule_AddObjectRef(module, name, obj);
    Py_DECREF(obj);
    return rc;
}

static int kmb_module_exec(PyObject *module)
{
    /* OpenSSL's CPU detection: needed by a statically linked libcrypto (crypto.h). */
    if (kmb_crypto_init() != KMB_OK) {
        PyErr_SetString(PyExc_ImportError, kmb_error_last()->message);
        return -1;
    }
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

    if (kmb_record_type_init(module, st) < 0) goto done;
    /* Before kimberlite._record runs: it subclasses _core._RecordBase. */
    if (import_record_class(st) < 0) goto done;
    if (kmb_storage_types_init(module, st) < 0) goto done;
    if (kmb_index_type_init(module, st) < 0) goto done;
    if (kmb_es_types_init(module, st) < 0) goto done;
    if (kmb_tlog_init(module) < 0) goto done;

    if (PyModule_AddIntConstant(module, "RECORD_OVERHEAD", KMB_RECORD_OVERHEAD) < 0) goto done;
    if (PyModule_AddIntConstant(module, "HEADER_SIZE", KMB_HEADER_SIZE) < 0) goto done;
    if (add_u64(module, "DEFAULT_MAX_SEGMENT_SIZE", KMB_DEFAULT_MAX_SEGMENT_SIZE) < 0) goto done;
    if (add_u64(module, "DEFAULT_MAX_EVENT_SIZE", KMB_DEFAULT_MAX_EVENT_SIZE) < 0) goto done;
    rc = 0;
done:
    Py_DECREF(errors);
    return rc;
}

/*
 * Sub-interpreters (3.12+): every piece of Python data is in the module state, the types are
 * heap types, and the engine's only process-wide state is the CRC-32 tables, built once
 * under pthread_once and read-only after; a storage's engine thread never touches Python.
 * So each interpreter, even one with its own GIL, can load the module.
 */
static PyModuleDef_Slot kmb_module_slots[] = {
    {Py_mod_exec, (void *)kmb_module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
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
