/*
 * py_errors.c — the one place where engine status codes become Python exceptions.
 *
 * The engine returns a KMB_E* code and keeps the details (message, errno, path, stream,
 * offset, hashes) in the calling thread's kmb_error_last(). As in CPython's
 * Modules/_sqlite/util.c, the work is split into small pieces with one path through them:
 *
 *   exception_class()   code -> the exception class of SPEC §4 (or ValueError/MemoryError)
 *   exception_args()    the positional arguments: (message,), or for StorageIOError the
 *                       OSError triple (errno, strerror, filename)
 *   exception_kwargs()  the keyword attributes (stream_id, offset, hashes, detail, ...)
 *   raise_instance()    cls(*args, **kwargs), raised
 *
 * The engine's messages already say what happened, where, and what the user can do, so they
 * are used as they are.
 */
#include "py_kimberlite.h"

#include <string.h>

/* The details of kmb_error_last() belong to a failure only if they carry its code. */
static const kmb_error *details_for(int code)
{
    const kmb_error *e = kmb_error_last();
    return (e->code == code && e->message[0] != '\0') ? e : NULL;
}

/* The class raised for `code` (borrowed). */
static PyObject *exception_class(kmb_module_state *st, int code)
{
    switch (code) {
    case KMB_EINVAL:
    case KMB_ECLOSED:
        return PyExc_ValueError;
    case KMB_ENOMEM:
        return PyExc_MemoryError;
    case KMB_EIO:
        return st->StorageIOError;
    case KMB_EEOF:
        return st->UnexpectedEofError;
    case KMB_ECORRUPT:
        return st->CorruptedRecordError;
    case KMB_ECHAIN:
        return st->ChainVerificationError;
    case KMB_EOFFSET:
        return st->OffsetMismatchError;
    case KMB_EINDEX:
        return st->IndexCorruptedError;
    case KMB_ELOCKED:
        return st->LockedError;
    default: /* KMB_EREADONLY, KMB_ENOTFOUND, KMB_ERROR, unknown codes */
        return st->StorageError;
    }
}

/* The engine's message, or for an expected_offset the engine could not carry (negative or
 * >= 2**64: the binding passed UINT64_MAX) the same sentence with the caller's value. */
static PyObject *exception_message(int code, const kmb_error *e, PyObject *expected)
{
    if (code == KMB_EOFFSET && e != NULL && expected != NULL)
        return PyUnicode_FromFormat(
            "stream %llu: expected offset %R but the stream's next offset is %llu; nothing "
            "was written (call next_offset() to see where the stream stands, or pass "
            "expected_offset=None to append at the end)",
            (unsigned long long)e->stream_id, expected, (unsigned long long)e->actual_offset);
    return PyUnicode_DecodeFSDefault(e != NULL ? e->message : kmb_strerror(code));
}

/*
 * StorageIOError(errno, strerror, filename): OSError's own constructor fills .errno,
 * .strerror and .filename. strerror is the OS's text; the engine's message (what, where,
 * what to do) goes to .detail through the keyword arguments. Steals `msg`.
 */
static PyObject *os_error_args(const kmb_error *e, PyObject *msg)
{
    PyObject *err = NULL, *strerr = NULL, *fn = NULL, *args = NULL;
    if (e != NULL && e->sys_errno != 0) {
        err = PyLong_FromLong(e->sys_errno);
        strerr = PyUnicode_DecodeLocale(strerror(e->sys_errno), NULL);
    } else {
        err = Py_NewRef(Py_None);
        strerr = Py_NewRef(msg);
    }
    if (err == NULL || strerr == NULL) goto out;
    if (e != NULL && e->path[0] != '\0') {
        fn = PyUnicode_DecodeFSDefault(e->path);
        if (fn != NULL) args = PyTuple_Pack(3, err, strerr, fn);
    } else {
        args = PyTuple_Pack(2, err, strerr);
    }
out:
    Py_XDECREF(err);
    Py_XDECREF(strerr);
    Py_XDECREF(fn);
    Py_DECREF(msg);
    return args;
}

/* The positional arguments of the exception. Steals `msg`. */
static PyObject *exception_args(int code, const kmb_error *e, PyObject *msg)
{
    if (code == KMB_EIO) return os_error_args(e, msg);
    PyObject *args = PyTuple_Pack(1, msg);
    Py_DECREF(msg);
    return args;
}

/* kwargs[key] = value (a new reference, stolen; NULL leaves the error set). 0 or -1. */
static int set_kw(PyObject *kwargs, const char *key, PyObject *value)
{
    if (value == NULL) return -1;
    int rc = PyDict_SetItemString(kwargs, key, value);
    Py_DECREF(value);
    return rc;
}

static PyObject *u64_or_none(int has, uint64_t v)
{
    if (!has) Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong((unsigned long long)v);
}

static PyObject *offset_expected(const kmb_error *e, PyObject *expected)
{
    if (expected != NULL) return Py_NewRef(expected);
    PyObject *v = PyLong_FromUnsignedLongLong(e->expected_offset);
    if (v != NULL && e->expected_offset_negative) Py_SETREF(v, PyNumber_Negative(v));
    return v;
}

/* Fill `kwargs` with the attributes that `code` carries. 0 or -1. */
static int fill_kwargs(PyObject *kwargs, int code, const kmb_error *e, PyObject *expected)
{
    switch (code) {
    case KMB_EIO:
        return set_kw(kwargs, "detail", PyUnicode_DecodeFSDefault(e->message));
    case KMB_ECORRUPT:
        if (set_kw(kwargs, "stream_id", u64_or_none(e->has_stream, e->stream_id)) < 0 ||
            set_kw(kwargs, "offset", u64_or_none(e->has_offset, e->offset)) < 0)
            return -1;
        return set_kw(kwargs, "position", u64_or_none(e->has_position, e->position));
    case KMB_ECHAIN:
        if (set_kw(kwargs, "offset", u64_or_none(e->has_offset, e->offset)) < 0 ||
            set_kw(kwargs, "expected", kmb_hash_to_py(e->expected_hash, e->has_expected_hash)) < 0)
            return -1;
        return set_kw(kwargs, "actual", kmb_hash_to_py(e->actual_hash, e->has_actual_hash));
    case KMB_EOFFSET:
        if (set_kw(kwargs, "expected", offset_expected(e, expected)) < 0) return -1;
        return set_kw(kwargs, "actual", PyLong_FromUnsignedLongLong(e->actual_offset));
    default:
        return 0;
    }
}

/*
 * The keyword arguments of the exception: a new dict, or NULL without an exception when the
 * class takes none (no details, or a code without attributes: ValueError and MemoryError
 * take no keywords). NULL with an exception on failure.
 */
static PyObject *exception_kwargs(int code, const kmb_error *e, PyObject *expected)
{
    if (e == NULL) return NULL;
    switch (code) {
    case KMB_EIO:
    case KMB_ECORRUPT:
    case KMB_ECHAIN:
    case KMB_EOFFSET:
        break;
    default:
        return NULL;
    }
    PyObject *kwargs = PyDict_New();
    if (kwargs != NULL && fill_kwargs(kwargs, code, e, expected) < 0) Py_CLEAR(kwargs);
    return kwargs;
}

/* Raise cls(*args, **kwargs). Steals args and kwargs (kwargs may be NULL). */
static PyObject *raise_instance(PyObject *cls, PyObject *args, PyObject *kwargs)
{
    PyObject *exc = PyObject_Call(cls, args, kwargs);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    Py_DECREF(args);
    Py_XDECREF(kwargs);
    return NULL;
}

PyObject *kmb_raise_expected(kmb_module_state *st, int code, PyObject *expected_offset)
{
    const kmb_error *e = details_for(code);
    PyObject *msg = exception_message(code, e, expected_offset);
    if (msg == NULL) return NULL;
    PyObject *args = exception_args(code, e, msg);
    if (args == NULL) return NULL;
    PyObject *kwargs = exception_kwargs(code, e, expected_offset);
    if (kwargs == NULL && PyErr_Occurred()) {
        Py_DECREF(args);
        return NULL;
    }
    return raise_instance(exception_class(st, code), args, kwargs);
}

PyObject *kmb_raise(kmb_module_state *st, int code)
{
    return kmb_raise_expected(st, code, NULL);
}
