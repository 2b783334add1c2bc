/*
 * kimberlite/errors.h — status codes and the thread-local last error.
 *
 * Every fallible function of the library returns an int: KMB_OK (0) on success or one of
 * the negative KMB_E* codes below. The details of the most recent failure on the calling
 * thread (message, errno, file, stream, offset, …) are kept in a thread-local kmb_error that
 * kmb_error_last() returns, in the manner of libgit2's git_error_last().
 */
#ifndef KIMBERLITE_ERRORS_H
#define KIMBERLITE_ERRORS_H

#include <stddef.h>
#include <stdint.h>

/* Longest path the library keeps in messages and error details (bytes, NUL included). */
#define KMB_PATH_MAX 4096

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. Python maps them to the exception classes of SPEC §4. */
typedef enum kmb_status {
    KMB_OK = 0,
    KMB_ERROR = -1,      /* generic failure                                  StorageError */
    KMB_EINVAL = -2,     /* bad argument (empty batch, event too large, …)   ValueError */
    KMB_ENOMEM = -3,     /* out of memory                                    MemoryError */
    KMB_EIO = -4,        /* operating-system I/O error; sys_errno is set     StorageIOError */
    KMB_EEOF = -5,       /* data ends inside a record                        UnexpectedEofError */
    KMB_ECORRUPT = -6,   /* CRC mismatch or malformed record                 CorruptedRecordError */
    KMB_ECHAIN = -7,     /* hash chain or head mismatch                      ChainVerificationError */
    KMB_EOFFSET = -8,    /* expected_offset differs from next offset         OffsetMismatchError */
    KMB_EINDEX = -9,     /* bad magic, version, CRC or size of an index      IndexCorruptedError */
    KMB_ELOCKED = -10,   /* another writer holds the data directory          LockedError */
    KMB_EREADONLY = -11, /* write asked of a read-only storage               StorageError */
    KMB_ECLOSED = -12,   /* storage already closed                           ValueError */
    KMB_ENOTFOUND = -13, /* no such object (internal: e.g. no index file)    StorageError */
    /* Verifiable log (merkle.h, note.h, sign.h): VerificationError and its subclasses. */
    KMB_EPROOF = -14,     /* a Merkle proof that does not verify              InvalidProofError */
    KMB_ESIGNATURE = -15, /* no valid signature by the expected key           InvalidSignatureError */
    KMB_ENOTE = -16       /* a malformed note, checkpoint or key string       MalformedNoteError */
} kmb_status;

/* Details of the last failure on this thread. Fields whose has_* flag is 0 are unset. */
typedef struct kmb_error {
    int code;                    /* a KMB_E* code */
    int sys_errno;               /* errno for KMB_EIO (0 otherwise) */
    char message[512];           /* human-readable: what, where, what to do */
    char path[KMB_PATH_MAX];     /* file involved, "" if none */
    int has_stream;
    uint64_t stream_id;
    int has_offset;
    uint64_t offset;             /* record offset involved */
    int has_position;
    uint64_t position;           /* byte position inside `path` */
    /* KMB_EOFFSET: expected is the value the caller passed, actual the stream's next offset. */
    uint64_t expected_offset;
    uint64_t actual_offset;
    int expected_offset_negative; /* the caller's value was negative (stored as magnitude) */
    /* KMB_ECHAIN: hashes involved; has_* 0 means "None". */
    int has_expected_hash;
    uint8_t expected_hash[32];
    int has_actual_hash;
    uint8_t actual_hash[32];
} kmb_error;

/*
 * The last error recorded on the calling thread. Never NULL: when nothing failed yet the
 * code is KMB_OK and the message empty. The pointer stays valid for the life of the
 * thread; the contents change with the next failing call on this thread.
 */
const kmb_error *kmb_error_last(void);

/* Reset the calling thread's last error to KMB_OK. */
void kmb_error_clear(void);

/* A short static description of a status code ("corrupted record", …). Never NULL. */
const char *kmb_strerror(int code);

/*
 * Record an error for the calling thread (used by the library and by backends). Clears
 * every field, then sets code, errno and message (printf-style). Returns `code` so that
 * callers can write `return kmb_error_set(KMB_EINVAL, 0, "…")`.
 */
int kmb_error_set(int code, int sys_errno, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Mutable access to the calling thread's error, to add context (path, stream, offset). */
kmb_error *kmb_error_mut(void);

/* Set the calling thread's error path (truncated to KMB_PATH_MAX - 1 bytes). */
void kmb_error_set_path(const char *path);

#ifdef __cplusplus
}
#endif
#endif
