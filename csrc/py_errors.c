/*
 * py_errors.c — the one place where engine status codes become Python exceptions.
 *
 * The engine returns a KMB_E* code and keeps the details (message, errno, path, stream,
 * offset, hashes) in the calling thread's kmb_error_last(). kmb_raise() maps the code to the
 * exception class of SPEC §4 and copies the details into the exception's attributes. The
 * engine's messages already say what happened, where, and what the user can do, so they are
 * used as they are.
 */
#include "py_kimberlite.h"

#include <string.h>

/* Call cls(*args, **kwargs) and raise the result. Steals args and kwargs (either may be
 * NULL after a failed allocation, in which case the allocation error stays set). */
static PyObject *raise_instance(PyObject *cls, PyObject *args, PyObject *kwargs)
{
    if (args != NULL && !PyErr_Occurred()) {
        PyObject *exc = PyObject_Call(cls, args, kwargs);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
    }
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    return NULL;
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

PyObject *kmb_raise_offset_mismatch(kmb_module_state *st, uint64_t stream, PyObject *expected,
                                    uint64_t actual)
{
    PyObject *msg = PyUnicode_FromFormat(
        "stream %llu: expected_offset %R does not match the stream's next offset %llu; nothing "
        "was written (call next_offset() to see where the stream stands, or pass "
        "expected_offset=None to append at the end)",
        (unsigned long long)stream, expected, (unsigned long long)actual);
    if (msg == NULL) return NULL;
    PyObject *args = PyTuple_Pack(1, msg);
    Py_DECREF(msg);
    PyObject *kwargs = PyDict_New();
    if (args == NULL || kwargs == NULL) goto fail;
    Py_INCREF(expected);
    if (set_kw(kwargs, "expected", expected) < 0) goto fail;
    if (set_kw(kwargs, "actual", PyLong_FromUnsignedLongLong(actual)) < 0) goto fail;
    return raise_instance(st->OffsetMismatchError, args, kwargs);
fail:
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    return NULL;
}

PyObject *kmb_raise(kmb_module_state *st, int code)
{
    const kmb_error *e = kmb_error_last();
    /* The details belong to this failure only if the thread's last error has its code. */
    int mine = e->code == code && e->message[0] != '\0';
    const char *text = mine ? e->message : kmb_strerror(code);
    PyObject *msg = NULL, *args = NULL, *kwargs = NULL, *cls = NULL;

    switch (code) {
    case KMB_EINVAL:
    case KMB_ECLOSED:
        PyErr_SetString(PyExc_ValueError, text);
        return NULL;
    case KMB_ENOMEM:
        PyErr_SetString(PyExc_MemoryError, text);
        return NULL;
    case KMB_EIO: {
        /* StorageIOError(errno, strerror, filename): OSError's own constructor fills
         * .errno, .strerror and .filename. */
        /* strerror is the OS's own text; the engine's message (what, where, what to do)
         * becomes .detail, which str() shows. */
        msg = (mine && e->sys_errno) ? PyUnicode_DecodeLocale(strerror(e->sys_errno), NULL)
                                     : PyUnicode_DecodeFSDefault(text);
        if (msg == NULL) return NULL;
        PyObject *kw = Py_BuildValue("{s:N}", "detail", PyUnicode_DecodeFSDefault(text));
        if (kw == NULL) {
            Py_DECREF(msg);
            return NULL;
        }
        PyObject *err = Py_None;
        if (mine && e->sys_errno) err = PyLong_FromLong(e->sys_errno);
        else Py_INCREF(err);
        if (err == NULL) {
            Py_DECREF(msg);
            Py_DECREF(kw);
            return NULL;
        }
        if (mine && e->path[0] != '\0') {
            PyObject *fn = PyUnicode_DecodeFSDefault(e->path);
            args = fn ? PyTuple_Pack(3, err, msg, fn) : NULL;
            Py_XDECREF(fn);
        } else {
            args = PyTuple_Pack(2, err, msg);
        }
        Py_DECREF(err);
        Py_DECREF(msg);
        return raise_instance(st->StorageIOError, args, kw);
    }
    case KMB_EEOF:
        cls = st->UnexpectedEofError;
        break;
    case KMB_ECORRUPT:
        cls = st->CorruptedRecordError;
        break;
    case KMB_ECHAIN:
        cls = st->ChainVerificationError;
        break;
    case KMB_EOFFSET:
        cls = st->OffsetMismatchError;
        break;
    case KMB_EINDEX:
        cls = st->IndexCorruptedError;
        break;
    case KMB_ELOCKED:
        cls = st->LockedError;
        break;
    case KMB_EREADONLY:
    case KMB_ENOTFOUND:
    case KMB_ERROR:
    default:
        cls = st->StorageError;
        break;
    }

    msg = PyUnicode_DecodeFSDefault(text);
    if (msg == NULL) return NULL;
    args = PyTuple_Pack(1, msg);
    Py_DECREF(msg);
    if (args == NULL) return NULL;
    if (!mine) return raise_instance(cls, args, NULL);

    kwargs = PyDict_New();
    if (kwargs == NULL) goto fail;
    switch (code) {
    case KMB_ECORRUPT:
        if (set_kw(kwargs, "stream_id", u64_or_none(e->has_stream, e->stream_id)) < 0 ||
            set_kw(kwargs, "offset", u64_or_none(e->has_offset, e->offset)) < 0 ||
            set_kw(kwargs, "position", u64_or_none(e->has_position, e->position)) < 0)
            goto fail;
        break;
    case KMB_ECHAIN:
        if (set_kw(kwargs, "offset", u64_or_none(e->has_offset, e->offset)) < 0 ||
            set_kw(kwargs, "expected",
                   kmb_hash_to_py(e->expected_hash, e->has_expected_hash)) < 0 ||
            set_kw(kwargs, "actual", kmb_hash_to_py(e->actual_hash, e->has_actual_hash)) < 0)
            goto fail;
        break;
    case KMB_EOFFSET: {
        PyObject *expected = PyLong_FromUnsignedLongLong(e->expected_offset);
        if (expected != NULL && e->expected_offset_negative) Py_SETREF(expected, PyNumber_Negative(expected));
        if (set_kw(kwargs, "expected", expected) < 0 ||
            set_kw(kwargs, "actual", PyLong_FromUnsignedLongLong(e->actual_offset)) < 0)
            goto fail;
        break;
    }
    default:
        break;
    }
    return raise_instance(cls, args, kwargs);
fail:
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    return NULL;
}
