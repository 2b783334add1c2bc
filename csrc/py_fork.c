/*
 * py_fork.c — fork() support in the binding: the private methods _fork_prepare,
 * _fork_parent and _fork_child of both storage types, which kimberlite/_fork.py calls from
 * os.register_at_fork for every live storage (the at-fork protocol of storage.h), and the
 * registration of each new storage with that registry. Added to both types at module exec
 * by kmb_fork_methods_add().
 */
#include "py_kimberlite.h"

typedef kmb_storage_object StorageObject;

/* ---- fork() ---------------------------------------------------------------------------
 * The at-fork protocol of storage.h, driven by kimberlite/_fork.py (os.register_at_fork
 * over a WeakSet of live storages, each added by storage_adopt). Private: not for
 * applications.
 */

PyDoc_STRVAR(fork_prepare_doc,
"_fork_prepare($self)\n--\n\n"
"PRIVATE (kimberlite._fork). Before os.fork(): wait for the engine call in progress on\n"
"this storage, then hold its lock until _fork_parent or _fork_child.");

static PyObject *storage_fork_prepare(StorageObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->st == NULL) Py_RETURN_NONE;
    /* Without the GIL: a thread inside the engine may need it (a read hands its chunks to
     * Python under the engine lock) before it can let go of the engine lock. */
    Py_BEGIN_ALLOW_THREADS
    kmb_storage_fork_prepare(self->st);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(fork_parent_doc,
"_fork_parent($self)\n--\n\nPRIVATE (kimberlite._fork). After os.fork(), in the parent.");

static PyObject *storage_fork_parent(StorageObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->st != NULL) kmb_storage_fork_parent(self->st);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(fork_child_doc,
"_fork_child($self)\n--\n\n"
"PRIVATE (kimberlite._fork). After os.fork(), in the child: release the lock, forget the\n"
"parent's hashing thread, and drop an inherited writer's lock descriptor.");

static PyObject *storage_fork_child(StorageObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->st != NULL) kmb_storage_fork_child(self->st);
    Py_RETURN_NONE;
}

/* Add a new storage to the at-fork registry (kimberlite._fork.track). */
int kmb_storage_track_for_fork(StorageObject *self)
{
    PyObject *mod = PyImport_ImportModule("kimberlite._fork");
    if (mod == NULL) return -1;
    PyObject *r = PyObject_CallMethod(mod, "track", "O", (PyObject *)self);
    Py_DECREF(mod);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

static PyMethodDef fork_methods[] = {
    {"_fork_prepare", (PyCFunction)storage_fork_prepare, METH_NOARGS, fork_prepare_doc},
    {"_fork_parent", (PyCFunction)storage_fork_parent, METH_NOARGS, fork_parent_doc},
    {"_fork_child", (PyCFunction)storage_fork_child, METH_NOARGS, fork_child_doc},
    {NULL, NULL, 0, NULL},
};

int kmb_fork_methods_add(PyTypeObject *tp)
{
    return kmb_type_add_methods(tp, fork_methods);
}
