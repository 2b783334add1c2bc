/*
 * kimberlite/sys/fault_codes.h — the vocabulary of fault injection: operation classes, the
 * crash value and a fault plan. FOR TESTS ONLY. A leaf header (it includes nothing of the
 * library), shared by sys/faults.h (the storage's entry points), sys/backend.h (the
 * optional fault_plan callback) and the disk backend's file layer.
 */
#ifndef KIMBERLITE_SYS_FAULT_CODES_H
#define KIMBERLITE_SYS_FAULT_CODES_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Classes of file operations a plan counts and fails (a bit mask). */
enum {
    KMB_FAULT_OPEN = 1u << 0,     /* open(2) of segments, indexes, quarantine and lock files */
    KMB_FAULT_READ = 1u << 1,     /* pread(2) */
    KMB_FAULT_WRITE = 1u << 2,    /* pwrite(2) of segments, indexes and quarantine files */
    KMB_FAULT_SYNC = 1u << 3,     /* fdatasync(2) of a file, fsync(2) of a directory */
    KMB_FAULT_RENAME = 1u << 4,   /* rename(2): an index put into place */
    KMB_FAULT_TRUNCATE = 1u << 5, /* ftruncate(2): a failed batch cut back, a torn tail cut */
    KMB_FAULT_MKDIR = 1u << 6,    /* mkdir(2) of a stream directory */
    KMB_FAULT_ALL = (1u << 7) - 1
};

/*
 * `err` value meaning "crash here": instead of failing, the process kills itself with
 * SIGKILL at the chosen call (after writing half the bytes when short_write is set, which
 * leaves a torn write on disk). For crash tests run in a child process.
 */
#define KMB_FAULT_CRASH (-1)

/* A fault plan (semantics: kmb_storage_set_fault in sys/faults.h). */
typedef struct kmb_fault_plan {
    unsigned ops;    /* classes of calls to count (KMB_FAULT_*); 0: no plan */
    uint64_t nth;    /* fail the nth counted call (1-based); 0: only count */
    int err;         /* errno of the failure (0 means EIO), or KMB_FAULT_CRASH */
    int persistent;  /* 1: the nth and every later counted call fail */
    int short_write; /* a failing write first writes half of its bytes */
} kmb_fault_plan;

#ifdef __cplusplus
}
#endif
#endif
