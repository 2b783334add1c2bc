/*
 * py_kimberlite.h — internal header of the CPython extension kimberlite._core.
 *
 * Shared by module.c (the module, its state and functions), py_storage.c (Storage,
 * MemoryStorage), py_index.c (OffsetIndex), py_record.c (Record's fields), py_errors.c
 * (engine codes -> exceptions), py_events.c (recovery events -> logging) and py_testing.c
 * (the private hooks of kimberlite.testing and the fault plan). Nothing here is part of
 * the C library's public API.
 *
 * Every piece of per-interpreter data lives in the module state (kmb_module_state), never in
 * C globals: the heap types, the exception classes imported from kimberlite._errors and the
 * Python Record class imported from kimberlite._record, both at exec time.
 */
#ifndef KIMBERLITE_PY_KIMBERLITE_H
#define KIMBERLITE_PY_KIMBERLITE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdint.h>

#include "kimberlite/chain.h"
#include "kimberlite/crc32.h"
#include "kimberlite/errors.h"
#include "kimberlite/index.h"
#include "kimberlite/record.h"
#include "kimberlite/storage.h"

/* Compatibility with Python 3.9 (requires-python >= 3.9). */
#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *Py_NewRef(PyObject *o)
{
    Py_INCREF(o);
    return o;
}
static inline int PyModule_AddObjectRef(PyObject *m, const char *name, PyObject *value)
{
    Py_INCREF(value);
    if (PyModule_AddObject(m, name, value) < 0) {
        Py_DECREF(value);
        return -1;
    }
    return 0;
}
#endif

typedef struct kmb_module_state {
    /* Heap types created at exec time (strong references). */
    PyTypeObject *storage_type;
    PyTypeObject *memory_storage_type;
    PyTypeObject *index_type;
    PyTypeObject *buffer_type; /* _ColumnBuffer (py_arrow.c) */
    PyTypeObject *es_stream_type; /* _EsStream (py_es.c) */
    PyTypeObject *es_writer_type; /* _EsWriter (py_es.c) */
    PyTypeObject *es_insert_type; /* _EsInsert (py_es.c) */

    /* Exception classes from kimberlite._errors (strong references). */
    PyObject *StorageError;
    PyObject *UnexpectedEofError;
    PyObject *CorruptedRecordError;
    PyObject *ChainVerificationError;
    PyObject *OffsetMismatchError;
    PyObject *IndexCorruptedError;
    PyObject *LockedError;
    PyObject *StorageIOError;

    /* _RecordBase (py_record.c), and kimberlite.Record, its subclass in
     * kimberlite/_record.py, imported at exec time (strong references). */
    PyTypeObject *record_base_type;
    PyObject *record_class;
} kmb_module_state;

extern PyModuleDef kmb_module_def;

/* The state of a module object of kmb_module_def. */
static inline kmb_module_state *kmb_state_of_module(PyObject *module)
{
    return (kmb_module_state *)PyModule_GetState(module);
}

/*
 * The module state behind an instance's type, subclasses included (walks the MRO to the
 * type defined by this module). NULL with an exception set if there is none.
 */
kmb_module_state *kmb_state_of_type(PyTypeObject *tp);

/* ---- py_errors.c ----------------------------------------------------------------------- */

/*
 * Raise the exception for an engine status `code`, with the details of kmb_error_last()
 * when they belong to that code. Always returns NULL (for `return kmb_raise(st, rc);`).
 */
PyObject *kmb_raise(kmb_module_state *st, int code);

/*
 * kmb_raise, with the caller's expected_offset (any Python int, borrowed) standing in for
 * the engine's value in an OffsetMismatchError (message and .expected): for values the
 * engine's uint64_t cannot carry (negative, or >= 2**64). NULL: exactly kmb_raise.
 */
PyObject *kmb_raise_expected(kmb_module_state *st, int code, PyObject *expected_offset);

/* ---- records (py_record.c) ------------------------------------------------------------ */

/*
 * A kimberlite.Record for a record the engine has verified (offset below 2**63, prev_hash
 * as stored), made without checking it again. Steals `payload` (bytes; NULL after a failed
 * allocation, then NULL is returned with that error set). New reference, or NULL with an
 * exception.
 */
PyObject *kmb_record_new(kmb_module_state *st, const kmb_record *r, PyObject *payload);

/* ---- shared argument helpers (module.c) ------------------------------------------------ */

/*
 * Convert a Python int to uint64_t.
 *   not an int (bool included as int):           TypeError "`name` must be an int, not X"
 *   negative:                                    ValueError
 *   >= 2**64: clamp ? *out = UINT64_MAX : ValueError
 * Returns 0 on success, -1 with an exception set.
 */
int kmb_int_to_u64(PyObject *obj, const char *name, int clamp, uint64_t *out);

/*
 * Take a read-only, C-contiguous view of a bytes-like object (release it with
 * PyBuffer_Release). A strided buffer (non-contiguous memoryview) is copied. str and other
 * non-buffers: TypeError naming `what`. 0 or -1.
 */
int kmb_get_buffer(PyObject *obj, Py_buffer *view, const char *what);

/* A stream id: an int in [0, 2**64 - 1] (TypeError / ValueError otherwise). */
int kmb_stream_id(PyObject *obj, uint64_t *out);

/*
 * A hash argument: None (*has = 0), or a bytes-like object of exactly 32 bytes copied to
 * out (*has = 1). TypeError / ValueError otherwise.
 */
int kmb_hash_arg(PyObject *obj, const char *name, uint8_t out[KMB_HASH_SIZE], int *has);

/* bytes of a 32-byte hash, or None when has == 0. New reference. */
PyObject *kmb_hash_to_py(const uint8_t h[KMB_HASH_SIZE], int has);

/* ---- type initialisation (called from the module's exec slot) ------------------------- */

/* Create a heap type from `spec` bound to `module`, add it to the module under the last
 * component of spec->name and keep a strong reference in *slot. 0 or -1. */
int kmb_add_type(PyObject *module, PyType_Spec *spec, PyTypeObject **slot);

/* Add methods to a (heap) type after it was made: the private methods kept in their own
 * files (py_testing.c, py_fork.c). 0, or -1 with an exception set. */
int kmb_type_add_methods(PyTypeObject *tp, PyMethodDef *defs);

int kmb_storage_types_init(PyObject *module, kmb_module_state *st);
int kmb_index_type_init(PyObject *module, kmb_module_state *st);
int kmb_record_type_init(PyObject *module, kmb_module_state *st);
/* _EsStream, _EsWriter and _EsInsert, the insert path of kimberlite.eventsourcing (py_es.c). */
int kmb_es_types_init(PyObject *module, kmb_module_state *st);

/* ---- the shared Storage object (py_storage.c), for py_testing.c ---------------------- */

typedef struct kmb_event_node kmb_event_node;

typedef struct {
    PyObject_HEAD
    kmb_storage *st;    /* NULL until __init__ succeeds; freed in dealloc only */
    int closed;         /* close() was called (guarded by the GIL) */
    int is_memory;
    int read_only;
    uint64_t max_segment_size;
    uint64_t max_event_size;
    unsigned read_threads; /* in force (kmb_options.read_threads after open) */
    PyObject *path;     /* str, or None for MemoryStorage */
    pthread_mutex_t events_mu;
    kmb_event_node *events_head;
    kmb_event_node *events_tail;
    PyObject *weakreflist;
} kmb_storage_object;

/* ValueError unless the storage is initialised and open. 0 or -1. */
int kmb_storage_check_open(kmb_storage_object *self);

/* After an engine call (GIL held): raise for a failure (see kmb_raise), then log the
 * engine's recovery events. 0 for KMB_OK, -1 with an exception set. */
int kmb_storage_finish(kmb_storage_object *self, int rc);

/* ---- py_tree.c: the verifiable-log methods of Storage (METH_VARARGS | METH_KEYWORDS) ---- */

PyObject *kmb_py_tree_root(kmb_storage_object *self, PyObject *args, PyObject *kwds);
PyObject *kmb_py_inclusion_proof(kmb_storage_object *self, PyObject *args, PyObject *kwds);
PyObject *kmb_py_consistency_proof(kmb_storage_object *self, PyObject *args, PyObject *kwds);
PyObject *kmb_py_sync(kmb_storage_object *self, PyObject *args, PyObject *kwds);
PyObject *kmb_py_durable_root(kmb_storage_object *self, PyObject *args, PyObject *kwds);
PyObject *kmb_py_load_checkpoint(kmb_storage_object *self, PyObject *args, PyObject *kwds);
PyObject *kmb_py_store_checkpoint(kmb_storage_object *self, PyObject *args, PyObject *kwds);

/* ---- py_events.c: the engine's recovery events ------------------------------------- */

/* The engine's event callback (kmb_storage_set_event_callback; ctx is the Storage object):
 * queues the message. Runs without the GIL, with the engine mutex held. */
void kmb_events_push(void *ctx, const char *message);

/* Log the queued messages as warnings on logging.getLogger("kimberlite") (GIL held). An
 * exception already set (the caller's error) is kept; a failure of logging itself is
 * reported as unraisable. */
void kmb_events_drain(kmb_storage_object *self);

/* Drop the queued messages unlogged (dealloc). */
void kmb_events_discard(kmb_storage_object *self);

/* ---- py_testing.c: private methods of Storage and MemoryStorage --------------------- */

/* Add the private testing methods (_segment_bytes, _replace_segment_bytes, _set_fault,
 * _io_calls) to a Storage type, as method descriptors. 0 or -1. */
int kmb_testing_methods_add(PyTypeObject *tp);

/* ---- py_arrow.c: column reads (Arrow), verify_range, segment_bounds ------------------- */

/* Create the _ColumnBuffer type (module state buffer_type). 0 or -1. */
int kmb_arrow_init(PyObject *module, kmb_module_state *st);
/* Add the column methods to a storage type. 0 or -1. */
int kmb_arrow_methods_add(PyTypeObject *tp);

/* py_fork.c: add _fork_prepare/_fork_parent/_fork_child to a storage type; enter a new
 * storage in kimberlite._fork's registry (0, or -1 with an exception set). */
int kmb_fork_methods_add(PyTypeObject *tp);
int kmb_storage_track_for_fork(kmb_storage_object *self);

#endif
