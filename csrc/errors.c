/*
 * errors.c — the thread-local last error (errors.h) and the status-code descriptions.
 *
 * Each thread has its own kmb_error, so concurrent callers never see each other's
 * failures (the libgit2 model). This is the library's only mutable state apart from the
 * once-initialised CRC tables; it needs no locking because no other thread can reach it.
 */
#include "kimberlite/errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Zero-initialised per thread: code KMB_OK, empty message, no has_* flags. */
static _Thread_local kmb_error tls_error;

const kmb_error *kmb_error_last(void) { return &tls_error; }

kmb_error *kmb_error_mut(void) { return &tls_error; }

void kmb_error_clear(void) { memset(&tls_error, 0, sizeof tls_error); }

int kmb_error_set(int code, int sys_errno, const char *fmt, ...)
{
    kmb_error *e = &tls_error;
    memset(e, 0, sizeof *e);
    e->code = code;
    e->sys_errno = sys_errno;
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        /* Truncation is acceptable: the message is for humans and stays NUL-terminated. */
        vsnprintf(e->message, sizeof e->message, fmt, ap);
        va_end(ap);
    }
    if (e->message[0] == '\0') {
        /* Never leave a failure without words. */
        snprintf(e->message, sizeof e->message, "%s", kmb_strerror(code));
    }
    return code;
}

void kmb_error_set_path(const char *path)
{
    /* memcpy rather than snprintf: a long path is cut, silently and safely. */
    size_t n = path ? strnlen(path, sizeof tls_error.path - 1) : 0;
    if (n) memcpy(tls_error.path, path, n);
    tls_error.path[n] = '\0';
}

const char *kmb_strerror(int code)
{
    switch (code) {
    case KMB_OK: return "success";
    case KMB_ERROR: return "storage error";
    case KMB_EINVAL: return "invalid argument";
    case KMB_ENOMEM: return "out of memory";
    case KMB_EIO: return "I/O error";
    case KMB_EEOF: return "unexpected end of data inside a record";
    case KMB_ECORRUPT: return "corrupted record";
    case KMB_ECHAIN: return "hash chain verification failed";
    case KMB_EOFFSET: return "offset mismatch";
    case KMB_EINDEX: return "corrupted offset index";
    case KMB_ELOCKED: return "data directory locked by another writer";
    case KMB_EREADONLY: return "storage is read-only";
    case KMB_ECLOSED: return "storage is closed";
    case KMB_ENOTFOUND: return "not found";
    case KMB_EPROOF: return "invalid Merkle proof";
    case KMB_ESIGNATURE: return "invalid or missing signature";
    case KMB_ENOTE: return "malformed note";
    default: return "unknown error";
    }
}
