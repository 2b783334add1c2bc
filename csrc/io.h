/*
 * io.h — the disk backend's file operations, in one small layer (internal).
 *
 * Every open, read, write, sync, rename and truncate of the disk backend goes through
 * these wrappers, so that tests can make the Nth call fail on demand (SQLite's test_vfs
 * approach): with an errno, or as a short write, once or from then on. The fault plan
 * lives in a kmb_io owned by one backend instance; there is no global state.
 */
#ifndef KIMBERLITE_IO_H
#define KIMBERLITE_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kimberlite/sys/fault_codes.h"

/* Operation classes a fault plan can target (bit mask): the public KMB_FAULT_* values. */
enum {
    KMB_IO_OPEN = KMB_FAULT_OPEN,
    KMB_IO_READ = KMB_FAULT_READ,
    KMB_IO_WRITE = KMB_FAULT_WRITE,
    KMB_IO_SYNC = KMB_FAULT_SYNC,
    KMB_IO_RENAME = KMB_FAULT_RENAME,
    KMB_IO_TRUNCATE = KMB_FAULT_TRUNCATE,
    KMB_IO_MKDIR = KMB_FAULT_MKDIR,
    KMB_IO_ALL = KMB_FAULT_ALL
};

typedef struct kmb_io {
    unsigned fault_ops;     /* classes counted by the plan; 0 = no plan */
    uint64_t fault_nth;     /* fail the nth counted call (1-based); 0 = count only */
    int fault_errno;        /* errno to fail with (EIO, ENOSPC, …), or KMB_FAULT_CRASH */
    int fault_persistent;   /* keep failing every counted call after the nth */
    int fault_short;        /* writes: write half the bytes, then fail with fault_errno */
    uint64_t calls;         /* counted calls so far */
    uint64_t faults;        /* faults injected so far */
} kmb_io;

/* Reset the plan and counters (no faults). */
void kmb_io_init(kmb_io *io);

/* Install a plan and reset the counters (semantics: kmb_storage_set_fault, sys/faults.h). */
void kmb_io_set_fault(kmb_io *io, unsigned ops, uint64_t nth, int err, int persistent,
                      int short_write);

/* Open a file; -1 with errno on failure. O_CLOEXEC is always added. */
int kmb_io_open(kmb_io *io, const char *path, int flags, mode_t mode);

/*
 * Open a file that must be a regular file: a final symbolic link is not followed, and a
 * FIFO, device, socket or directory is refused without being opened for I/O (never a
 * wait, never a side effect). Flags as for open(2) (O_CLOEXEC, O_NOFOLLOW, O_NONBLOCK and
 * O_NOCTTY are added; O_NONBLOCK is cleared again on the descriptor returned). Returns
 * the descriptor, or -1 with errno. When -1 is because something other than a regular
 * file is there, *found is its type (S_IFIFO, S_IFLNK, S_IFDIR, ...; errno ELOOP for a
 * symbolic link, EISDIR for a directory, EINVAL otherwise); else *found is 0. Counted as
 * an open by the fault plan.
 */
int kmb_io_open_regular(kmb_io *io, const char *path, int flags, mode_t mode, mode_t *found);

/* A file type (st_mode & S_IFMT) in words, for messages: "a FIFO (named pipe)", ... */
const char *kmb_io_kind(mode_t mode);

/* Read up to len bytes at pos, retrying short reads and EINTR; the count read (less than len
 * only at end of file) or -1 with errno. */
ssize_t kmb_io_pread(kmb_io *io, int fd, void *buf, size_t len, uint64_t pos);

/* Write all len bytes at pos, retrying short writes and EINTR; 0 or -1 with errno. */
int kmb_io_pwrite(kmb_io *io, int fd, const void *buf, size_t len, uint64_t pos);

/* fdatasync (fsync where fdatasync is missing); 0 or -1 with errno. */
int kmb_io_sync(kmb_io *io, int fd);

/* Open `path` (a directory) and fsync it, so new names in it survive a power cut. */
int kmb_io_sync_dir(kmb_io *io, const char *path);

int kmb_io_truncate(kmb_io *io, int fd, uint64_t size);
int kmb_io_rename(kmb_io *io, const char *from, const char *to);
/* mkdir; EEXIST is reported like any error (callers decide). */
int kmb_io_mkdir(kmb_io *io, const char *path, mode_t mode);

#endif
