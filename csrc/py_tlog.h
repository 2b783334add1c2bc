/*
 * py_tlog.h — the verifiable-log functions of kimberlite._core (py_tlog.c): Merkle hashing,
 * proofs, tile paths, keys and checkpoints, used by kimberlite/tlog.py. Internal.
 */
#ifndef KIMBERLITE_PY_TLOG_H
#define KIMBERLITE_PY_TLOG_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Add the tlog_* functions to the module (from its exec slot). 0, or -1 with an exception. */
int kmb_tlog_init(PyObject *module);

#endif
