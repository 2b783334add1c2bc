/*
 * py_tlog.c — kimberlite._core's verifiable-log functions over merkle.h, tile.h, note.h and
 * sign.h. kimberlite/tlog.py is the public face; these tlog_* functions check argument types
 * and sizes, release the GIL around hashing, proof work and Ed25519, and raise the classes
 * of kimberlite._errors (InvalidProofError, InvalidSignatureError, MalformedNoteError) for
 * the engine's KMB_EPROOF, KMB_ESIGNATURE and KMB_ENOTE.
 *
 * Self-contained on purpose: it needs no module state (the exception classes are looked up
 * in kimberlite._errors when one is raised, which is rare) and only kmb_tlog_init is called
 * from module.c.
 */
#include "py_tlog.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "kimberlite/errors.h"
#include "kimberlite/merkle.h"
#include "kimberlite/note.h"
#include "kimberlite/sign.h"
#include "kimberlite/tile.h"
#include "py_kimberlite.h" /* kmb_get_buffer */

#define HS KMB_MERKLE_HASH_SIZE

/* Below this many input bytes hashing is cheaper than releasing the GIL. */
#define TLOG_GIL_THRESHOLD 4096

/* Trees above this many entries are refused by the list-based helpers (meant for small trees). */
#define TLOG_LIST_MAX (1u << 24)

/* ---- errors ---------------------------------------------------------------------------- */

static PyObject *raise_named(const char *cls_name, const char *msg)
{
    PyObject *errors = PyImport_ImportModule("kimberlite._errors");
    if (errors == NULL) return NULL;
    PyObject *cls = PyObject_GetAttrString(errors, cls_name);
    Py_DECREF(errors);
    if (cls == NULL) return NULL;
    PyErr_SetString(cls, msg);
    Py_DECREF(cls);
    return NULL;
}

/* Raise the exception for engine status `rc` with kmb_error_last()'s message. NULL. */
static PyObject *tlog_raise(int rc)
{
    const char *msg = kmb_error_last()->message;
    if (msg[0] == '\0') msg = kmb_strerror(rc);
    switch (rc) {
    case KMB_EPROOF: return raise_named("InvalidProofError", msg);
    case KMB_ESIGNATURE: return raise_named("InvalidSignatureError", msg);
    case KMB_ENOTE: return raise_named("MalformedNoteError", msg);
    case KMB_EINVAL: PyErr_SetString(PyExc_ValueError, msg); return NULL;
    case KMB_ENOMEM: return PyErr_NoMemory();
    default: return raise_named("StorageError", msg);
    }
}

/* ---- argument helpers --------------------------------------------------------------------- */

/* A 32-byte hash: TypeError for a non-buffer, ValueError for another length. */
static int get_hash(PyObject *obj, uint8_t out[HS], const char *what)
{
    Py_buffer v;
    if (kmb_get_buffer(obj, &v, what) < 0) return -1;
    if (v.len != HS) {
        PyErr_Format(PyExc_ValueError, "%s must be %d bytes, got %zd", what, HS, v.len);
        PyBuffer_Release(&v);
        return -1;
    }
    memcpy(out, v.buf, HS);
    PyBuffer_Release(&v);
    return 0;
}

/* A non-negative int below 2**64: TypeError / ValueError otherwise. */
static int get_u64(PyObject *obj, uint64_t *out, const char *what)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    int neg = PyObject_RichCompareBool(obj, Py_False, Py_LT); /* obj < 0 */
    if (neg < 0) return -1;
    if (neg) {
        PyErr_Format(PyExc_ValueError, "%s must not be negative, got %R", what, obj);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be below 2**64, got %R", what, obj);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

/* A list of 32-byte hashes, copied to a new array (*out, free()d by the caller). */
static int get_hash_list(PyObject *obj, uint8_t (**out)[HS], size_t *n, size_t max,
                         const char *what)
{
    *out = NULL;
    if (!PyList_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a list of 32-byte hashes, not %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    Py_ssize_t len = PyList_GET_SIZE(obj);
    if ((size_t)len > max) {
        *n = (size_t)len;
        return 1; /* the caller decides what too long means */
    }
    uint8_t(*arr)[HS] = malloc(((size_t)len ? (size_t)len : 1) * HS);
    if (arr == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        /* Re-read the size: a buffer's __buffer__ could shrink the list under us. */
        if (i >= PyList_GET_SIZE(obj)) {
            PyErr_Format(PyExc_RuntimeError, "%s changed size during the call", what);
            free(arr);
            return -1;
        }
        PyObject *item = PyList_GET_ITEM(obj, i);
        Py_INCREF(item);
        int rc = get_hash(item, arr[i], what);
        Py_DECREF(item);
        if (rc < 0) {
            free(arr);
            return -1;
        }
    }
    *out = arr;
    *n = (size_t)len;
    return 0;
}

static PyObject *hash_list_to_py(uint8_t (*h)[HS], unsigned n)
{
    PyObject *list = PyList_New(n);
    if (list == NULL) return NULL;
    for (unsigned i = 0; i < n; i++) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)h[i], HS);
        if (b == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, b);
    }
    return list;
}

static int check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t want)
{
    if (nargs == want) return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)", name, want,
                 nargs);
    return -1;
}

/* A str argument as UTF-8 (borrowed from the object). */
static const char *get_str(PyObject *obj, Py_ssize_t *len, const char *what)
{
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a str, not %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return PyUnicode_AsUTF8AndSize(obj, len);
}

/* ---- hashing ----------------------------------------------------------------------------- */

static PyObject *tlog_leaf_hash(PyObject *module, PyObject *data)
{
    (void)module;
    Py_buffer v;
    if (kmb_get_buffer(data, &v, "entry") < 0) return NULL;
    uint8_t out[HS];
    if (v.len > TLOG_GIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        kmb_merkle_leaf_hash(out, v.buf, (size_t)v.len);
        Py_END_ALLOW_THREADS
    } else {
        kmb_merkle_leaf_hash(out, v.buf, (size_t)v.len);
    }
    PyBuffer_Release(&v);
    return PyBytes_FromStringAndSize((const char *)out, HS);
}

static PyObject *tlog_node_hash(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    uint8_t l[HS], r[HS], out[HS];
    if (check_nargs("node_hash", nargs, 2) < 0 || get_hash(args[0], l, "left") < 0 ||
        get_hash(args[1], r, "right") < 0)
        return NULL;
    kmb_merkle_node_hash(out, l, r);
    return PyBytes_FromStringAndSize((const char *)out, HS);
}

/* ---- verification ------------------------------------------------------------------------ */

static PyObject *tlog_verify_inclusion(PyObject *module, PyObject *const *args,
                                       Py_ssize_t nargs)
{
    (void)module;
    uint8_t leaf[HS], root[HS];
    uint64_t index, size;
    if (check_nargs("verify_inclusion", nargs, 5) < 0 || get_hash(args[0], leaf, "leaf_hash") < 0 ||
        get_u64(args[1], &index, "index") < 0 || get_u64(args[2], &size, "tree_size") < 0)
        return NULL;
    uint8_t(*proof)[HS];
    size_t n;
    int lrc = get_hash_list(args[3], &proof, &n, KMB_MERKLE_MAX_INCLUSION, "proof");
    if (lrc < 0) return NULL;
    if (lrc > 0) {
        kmb_error_set(KMB_EPROOF, 0,
                      "inclusion proof has %zu hashes; no tree below 2**64 needs more than %d", n,
                      KMB_MERKLE_MAX_INCLUSION);
        return tlog_raise(KMB_EPROOF);
    }
    if (get_hash(args[4], root, "root") < 0) {
        free(proof);
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_merkle_verify_inclusion(leaf, index, size, (const uint8_t(*)[HS])proof, n, root);
    Py_END_ALLOW_THREADS
    free(proof);
    if (rc != KMB_OK) return tlog_raise(rc);
    Py_RETURN_NONE;
}

static PyObject *tlog_verify_consistency(PyObject *module, PyObject *const *args,
                                         Py_ssize_t nargs)
{
    (void)module;
    uint64_t old_size, new_size;
    uint8_t old_root[HS], new_root[HS];
    if (check_nargs("verify_consistency", nargs, 5) < 0 ||
        get_u64(args[0], &old_size, "old_size") < 0 || get_u64(args[1], &new_size, "new_size") < 0)
        return NULL;
    uint8_t(*proof)[HS];
    size_t n;
    int lrc = get_hash_list(args[2], &proof, &n, KMB_MERKLE_MAX_CONSISTENCY, "proof");
    if (lrc < 0) return NULL;
    if (lrc > 0) {
        kmb_error_set(KMB_EPROOF, 0,
                      "consistency proof has %zu hashes; no trees below 2**64 need more than %d",
                      n, KMB_MERKLE_MAX_CONSISTENCY);
        return tlog_raise(KMB_EPROOF);
    }
    if (get_hash(args[3], old_root, "old_root") < 0 || get_hash(args[4], new_root, "new_root") < 0) {
        free(proof);
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_merkle_verify_consistency(old_size, new_size, (const uint8_t(*)[HS])proof, n,
                                       old_root, new_root);
    Py_END_ALLOW_THREADS
    free(proof);
    if (rc != KMB_OK) return tlog_raise(rc);
    Py_RETURN_NONE;
}

/* ---- roots and proofs over a list of entries ------------------------------------------- */

/* The entries (32-byte chain hashes) of a list, leaf-hashed: *out free()d by the caller. */
static int entry_leaves(PyObject *obj, uint8_t (**out)[HS], size_t *n)
{
    int rc = get_hash_list(obj, out, n, TLOG_LIST_MAX, "entries");
    if (rc > 0) {
        PyErr_Format(PyExc_ValueError, "entries has %zu items; this helper is for trees of at "
                     "most %u entries", *n, TLOG_LIST_MAX);
        return -1;
    }
    if (rc < 0) return -1;
    uint8_t(*leaves)[HS] = *out;
    size_t count = *n;
    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; i < count; i++) kmb_merkle_leaf_hash(leaves[i], leaves[i], HS);
    Py_END_ALLOW_THREADS
    return 0;
}

static PyObject *tlog_root(PyObject *module, PyObject *entries)
{
    (void)module;
    uint8_t(*leaves)[HS];
    size_t n;
    if (entry_leaves(entries, &leaves, &n) < 0) return NULL;
    uint8_t out[HS];
    Py_BEGIN_ALLOW_THREADS
    kmb_merkle_root(out, (const uint8_t(*)[HS])leaves, n);
    Py_END_ALLOW_THREADS
    free(leaves);
    return PyBytes_FromStringAndSize((const char *)out, HS);
}

static PyObject *tlog_inclusion_proof(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    uint64_t index, size;
    if (check_nargs("inclusion_proof", nargs, 3) < 0 || get_u64(args[1], &index, "index") < 0 ||
        get_u64(args[2], &size, "tree_size") < 0)
        return NULL;
    uint8_t(*leaves)[HS];
    size_t n;
    if (entry_leaves(args[0], &leaves, &n) < 0) return NULL;
    if (size > n || index >= size) {
        free(leaves);
        PyErr_Format(PyExc_ValueError,
                     "need index < tree_size <= len(entries), got index %llu, tree_size %llu, "
                     "%zu entries",
                     (unsigned long long)index, (unsigned long long)size, n);
        return NULL;
    }
    kmb_merkle_leaves t = {(const uint8_t(*)[HS])leaves, n};
    uint8_t out[KMB_MERKLE_MAX_INCLUSION][HS];
    unsigned len = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_merkle_inclusion_proof(out, &len, kmb_merkle_leaves_node, &t, index, size);
    Py_END_ALLOW_THREADS
    free(leaves);
    if (rc != KMB_OK) return tlog_raise(rc);
    return hash_list_to_py(out, len);
}

static PyObject *tlog_consistency_proof(PyObject *module, PyObject *const *args,
                                        Py_ssize_t nargs)
{
    (void)module;
    uint64_t old_size, new_size;
    if (check_nargs("consistency_proof", nargs, 3) < 0 ||
        get_u64(args[1], &old_size, "old_size") < 0 || get_u64(args[2], &new_size, "new_size") < 0)
        return NULL;
    uint8_t(*leaves)[HS];
    size_t n;
    if (entry_leaves(args[0], &leaves, &n) < 0) return NULL;
    if (old_size == 0 || old_size > new_size || new_size > n) {
        free(leaves);
        PyErr_Format(PyExc_ValueError,
                     "need 0 < old_size <= new_size <= len(entries), got %llu, %llu, %zu entries",
                     (unsigned long long)old_size, (unsigned long long)new_size, n);
        return NULL;
    }
    kmb_merkle_leaves t = {(const uint8_t(*)[HS])leaves, n};
    uint8_t out[KMB_MERKLE_MAX_CONSISTENCY][HS];
    unsigned len = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_merkle_consistency_proof(out, &len, kmb_merkle_leaves_node, &t, old_size, new_size);
    Py_END_ALLOW_THREADS
    free(leaves);
    if (rc != KMB_OK) return tlog_raise(rc);
    return hash_list_to_py(out, len);
}

/* ---- tiles ------------------------------------------------------------------------------- */

static PyObject *tlog_tile_path(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (check_nargs("tile_path", nargs, 3) < 0) return NULL;
    int level;
    if (args[0] == Py_None) {
        level = KMB_TILE_ENTRIES;
    } else {
        uint64_t l;
        if (get_u64(args[0], &l, "level") < 0) return NULL;
        level = l > 63 ? 64 : (int)l;
    }
    uint64_t index, width;
    if (get_u64(args[1], &index, "index") < 0 || get_u64(args[2], &width, "width") < 0) return NULL;
    char buf[KMB_TILE_PATH_MAX];
    int n = kmb_tile_path(buf, sizeof buf, level, index, width > 1000 ? 1000u : (unsigned)width);
    if (n < 0) return tlog_raise(n);
    return PyUnicode_FromStringAndSize(buf, n);
}

static PyObject *tlog_tile_count(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    uint64_t size, level;
    if (check_nargs("tile_count", nargs, 2) < 0 || get_u64(args[0], &size, "tree_size") < 0 ||
        get_u64(args[1], &level, "level") < 0)
        return NULL;
    uint64_t full = 0;
    unsigned partial = 0;
    if (level < 64) kmb_tile_count(size, (unsigned)level, &full, &partial);
    return Py_BuildValue("(KI)", (unsigned long long)full, partial);
}

/* ---- keys -------------------------------------------------------------------------------- */

static PyObject *key_id_bytes(uint32_t id)
{
    uint8_t b[4] = {(uint8_t)(id >> 24), (uint8_t)(id >> 16), (uint8_t)(id >> 8), (uint8_t)id};
    return PyBytes_FromStringAndSize((const char *)b, 4);
}

static PyObject *tlog_generate_key(PyObject *module, PyObject *name_obj)
{
    (void)module;
    Py_ssize_t len;
    const char *name = get_str(name_obj, &len, "name");
    if (name == NULL) return NULL;
    kmb_note_signer s;
    int rc = kmb_note_signer_generate(&s, name, (size_t)len);
    if (rc != KMB_OK) return tlog_raise(rc);
    kmb_note_verifier v;
    kmb_note_signer_verifier(&v, &s);
    char skey[KMB_NOTE_KEY_MAX], vkey[KMB_NOTE_KEY_MAX];
    int sn = kmb_note_signer_format(skey, sizeof skey, &s);
    int vn = kmb_note_verifier_format(vkey, sizeof vkey, &v);
    kmb_note_signer_wipe(&s);
    PyObject *result = NULL;
    if (sn >= 0 && vn >= 0) result = Py_BuildValue("(s#s#)", skey, (Py_ssize_t)sn, vkey, (Py_ssize_t)vn);
    else tlog_raise(sn < 0 ? sn : vn);
    OPENSSL_cleanse(skey, sizeof skey);
    return result;
}

static int parse_signer(PyObject *obj, kmb_note_signer *s)
{
    Py_ssize_t len;
    const char *skey = get_str(obj, &len, "signer_key");
    if (skey == NULL) return -1;
    int rc = kmb_note_signer_parse(s, skey, (size_t)len);
    if (rc != KMB_OK) {
        tlog_raise(rc);
        return -1;
    }
    return 0;
}

static int parse_verifier(PyObject *obj, kmb_note_verifier *v)
{
    Py_ssize_t len;
    const char *vkey = get_str(obj, &len, "verifier_key");
    if (vkey == NULL) return -1;
    int rc = kmb_note_verifier_parse(v, vkey, (size_t)len);
    if (rc != KMB_OK) {
        tlog_raise(rc);
        return -1;
    }
    return 0;
}

#define SIGNER_CAPSULE "kimberlite._core.tlog_signer"

/* A loaded signer key lives in C memory only, and is wiped when its capsule is freed. */
static void signer_capsule_free(PyObject *capsule)
{
    kmb_note_signer *s = PyCapsule_GetPointer(capsule, SIGNER_CAPSULE);
    if (s != NULL) {
        kmb_note_signer_wipe(s);
        free(s);
    }
}

static PyObject *tlog_signer_load(PyObject *module, PyObject *skey)
{
    (void)module;
    kmb_note_signer *s = malloc(sizeof *s);
    if (s == NULL) return PyErr_NoMemory();
    if (parse_signer(skey, s) < 0) {
        kmb_note_signer_wipe(s);
        free(s);
        return NULL;
    }
    kmb_note_verifier v;
    kmb_note_signer_verifier(&v, s);
    PyObject *capsule = PyCapsule_New(s, SIGNER_CAPSULE, signer_capsule_free);
    if (capsule == NULL) {
        kmb_note_signer_wipe(s);
        free(s);
        return NULL;
    }
    char vkey[KMB_NOTE_KEY_MAX];
    int vn = kmb_note_verifier_format(vkey, sizeof vkey, &v);
    if (vn < 0) {
        Py_DECREF(capsule);
        return tlog_raise(vn);
    }
    PyObject *id = key_id_bytes(v.key_id);
    if (id == NULL) {
        Py_DECREF(capsule);
        return NULL;
    }
    return Py_BuildValue("(NsNs#)", capsule, v.name, id, vkey, (Py_ssize_t)vn);
}

static PyObject *tlog_verifier_info(PyObject *module, PyObject *vkey)
{
    (void)module;
    kmb_note_verifier v;
    if (parse_verifier(vkey, &v) < 0) return NULL;
    PyObject *id = key_id_bytes(v.key_id);
    if (id == NULL) return NULL;
    return Py_BuildValue("(sN)", v.name, id);
}

/* ---- checkpoints ------------------------------------------------------------------------- */

static PyObject *tlog_sign_checkpoint(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (check_nargs("sign_checkpoint", nargs, 4) < 0) return NULL;
    Py_ssize_t olen;
    const char *origin = get_str(args[1], &olen, "origin");
    uint64_t size;
    uint8_t root[HS];
    if (origin == NULL || get_u64(args[2], &size, "tree_size") < 0 ||
        get_hash(args[3], root, "root_hash") < 0)
        return NULL;
    if ((size_t)olen > KMB_CHECKPOINT_ORIGIN_MAX || !kmb_checkpoint_origin_valid(origin, (size_t)olen)) {
        PyErr_Format(PyExc_ValueError,
                     "invalid origin %R: it must be non-empty, one line of text without control "
                     "characters, at most %d bytes",
                     args[1], KMB_CHECKPOINT_ORIGIN_MAX);
        return NULL;
    }
    const kmb_note_signer *s = PyCapsule_IsValid(args[0], SIGNER_CAPSULE)
                                   ? PyCapsule_GetPointer(args[0], SIGNER_CAPSULE)
                                   : NULL;
    if (s == NULL) {
        PyErr_SetString(PyExc_TypeError, "sign_checkpoint() needs a signer from tlog_signer_load()");
        return NULL;
    }
    size_t cap = (size_t)olen + 80;
    char *body = malloc(cap);
    if (body == NULL) return PyErr_NoMemory();
    int bl = kmb_checkpoint_format(body, cap, origin, (size_t)olen, size, root);
    char *note = NULL;
    size_t nlen = 0;
    int rc = bl < 0 ? bl : KMB_OK;
    if (rc == KMB_OK) {
        Py_BEGIN_ALLOW_THREADS
        rc = kmb_note_sign(&note, &nlen, body, (size_t)bl, s);
        Py_END_ALLOW_THREADS
    }
    free(body);
    if (rc != KMB_OK) return tlog_raise(rc);
    PyObject *r = PyBytes_FromStringAndSize(note, (Py_ssize_t)nlen);
    free(note);
    return r;
}

static PyObject *tlog_open_checkpoint(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (check_nargs("open_checkpoint", nargs, 3) < 0) return NULL;
    kmb_note_verifier v;
    if (parse_verifier(args[1], &v) < 0) return NULL;
    Py_ssize_t want_len = 0;
    const char *want_origin = NULL;
    if (args[2] != Py_None) {
        want_origin = get_str(args[2], &want_len, "origin");
        if (want_origin == NULL) return NULL;
    }
    Py_buffer view;
    if (kmb_get_buffer(args[0], &view, "note") < 0) return NULL;
    PyObject *result = NULL;
    kmb_note *n = NULL;
    kmb_checkpoint cp;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = kmb_note_parse(&n, view.buf, (size_t)view.len);
    if (rc == KMB_OK) rc = kmb_checkpoint_parse(&cp, n->text, n->body_len);
    if (rc == KMB_OK) rc = kmb_note_verify(n, &v);
    /* The origin is compared only once the signature holds (trust no unsigned text). */
    if (rc == KMB_OK && want_origin != NULL &&
        (cp.origin_len != (size_t)want_len || memcmp(cp.origin, want_origin, cp.origin_len) != 0))
        rc = kmb_error_set(KMB_ESIGNATURE, 0,
                           "the checkpoint is signed for origin \"%.*s\", not the expected "
                           "origin \"%.*s\": it belongs to another log",
                           (int)(cp.origin_len > 200 ? 200 : cp.origin_len), cp.origin,
                           (int)(want_len > 200 ? 200 : want_len), want_origin);
    Py_END_ALLOW_THREADS
    if (rc != KMB_OK) {
        tlog_raise(rc);
    } else {
        result = Py_BuildValue("(s#Ky#)", cp.origin, (Py_ssize_t)cp.origin_len,
                               (unsigned long long)cp.tree_size, (const char *)cp.root,
                               (Py_ssize_t)HS);
    }
    kmb_note_free(n);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *tlog_parse_checkpoint(PyObject *module, PyObject *note)
{
    (void)module;
    Py_buffer view;
    if (kmb_get_buffer(note, &view, "note") < 0) return NULL;
    kmb_note *n = NULL;
    kmb_checkpoint cp;
    int rc = kmb_note_parse(&n, view.buf, (size_t)view.len);
    if (rc == KMB_OK) rc = kmb_checkpoint_parse(&cp, n->text, n->body_len);
    PyObject *result = NULL;
    if (rc != KMB_OK)
        tlog_raise(rc);
    else
        result = Py_BuildValue("(s#Ky#)", cp.origin, (Py_ssize_t)cp.origin_len,
                               (unsigned long long)cp.tree_size, (const char *)cp.root,
                               (Py_ssize_t)HS);
    kmb_note_free(n);
    PyBuffer_Release(&view);
    return result;
}

/* ---- registration ------------------------------------------------------------------------ */

#define FASTCALL(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL

static PyMethodDef tlog_methods[] = {
    {"tlog_leaf_hash", (PyCFunction)tlog_leaf_hash, METH_O,
     "tlog_leaf_hash(entry, /)\n--\n\nSHA-256(0x00 || entry) (kimberlite.tlog.leaf_hash)."},
    {"tlog_node_hash", FASTCALL(tlog_node_hash),
     "tlog_node_hash(left, right, /)\n--\n\nSHA-256(0x01 || left || right)."},
    {"tlog_verify_inclusion", FASTCALL(tlog_verify_inclusion),
     "tlog_verify_inclusion(leaf_hash, index, tree_size, proof, root, /)\n--\n\n"
     "RFC 9162 2.1.3.2; None or InvalidProofError."},
    {"tlog_verify_consistency", FASTCALL(tlog_verify_consistency),
     "tlog_verify_consistency(old_size, new_size, proof, old_root, new_root, /)\n--\n\n"
     "RFC 9162 2.1.4.2; None or InvalidProofError."},
    {"tlog_root", (PyCFunction)tlog_root, METH_O,
     "tlog_root(entries, /)\n--\n\nThe root of the tree whose entries are the list's 32-byte "
     "hashes."},
    {"tlog_inclusion_proof", FASTCALL(tlog_inclusion_proof),
     "tlog_inclusion_proof(entries, index, tree_size, /)\n--\n\nRFC 9162 PATH over a list."},
    {"tlog_consistency_proof", FASTCALL(tlog_consistency_proof),
     "tlog_consistency_proof(entries, old_size, new_size, /)\n--\n\nRFC 9162 PROOF over a list."},
    {"tlog_tile_path", FASTCALL(tlog_tile_path),
     "tlog_tile_path(level_or_None, index, width, /)\n--\n\nA tlog-tiles resource path."},
    {"tlog_tile_count", FASTCALL(tlog_tile_count),
     "tlog_tile_count(tree_size, level, /)\n--\n\n(full tiles, partial width) of a level."},
    {"tlog_generate_key", (PyCFunction)tlog_generate_key, METH_O,
     "tlog_generate_key(name, /)\n--\n\nA new Ed25519 key: (signer key, verifier key)."},
    {"tlog_signer_load", (PyCFunction)tlog_signer_load, METH_O,
     "tlog_signer_load(signer_key, /)\n--\n\n(signer, name, key ID, verifier key): the key "
     "loaded into C memory (a capsule, wiped when freed) and its public parts."},
    {"tlog_verifier_info", (PyCFunction)tlog_verifier_info, METH_O,
     "tlog_verifier_info(verifier_key, /)\n--\n\n(name, key ID) of a verifier key."},
    {"tlog_sign_checkpoint", FASTCALL(tlog_sign_checkpoint),
     "tlog_sign_checkpoint(signer, origin, tree_size, root_hash, /)\n--\n\n"
     "The signed checkpoint note (bytes)."},
    {"tlog_open_checkpoint", FASTCALL(tlog_open_checkpoint),
     "tlog_open_checkpoint(note, verifier_key, origin_or_None, /)\n--\n\n"
     "(origin, tree size, root) of a checkpoint signed by that key."},
    {"tlog_parse_checkpoint", (PyCFunction)tlog_parse_checkpoint, METH_O,
     "tlog_parse_checkpoint(note, /)\n--\n\n(origin, tree size, root) of a well-formed "
     "checkpoint note, signatures NOT verified."},
    {NULL, NULL, 0, NULL},
};

int kmb_tlog_init(PyObject *module)
{
    return PyModule_AddFunctions(module, tlog_methods);
}
