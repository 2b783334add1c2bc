/*
 * io.c — the disk backend's file operations, with an optional fault plan for tests.
 *
 * No call here may block indefinitely: the EINTR loops below retry only calls that finish
 * on their own (reads and writes of regular files, syncs, truncation), so that a signal
 * (Ctrl-C) is never swallowed by a call that waits forever. Opening a FIFO would block
 * until the other end appears, so the engine's data files are opened with
 * kmb_io_open_regular, which refuses anything that is not a regular file without waiting.
 */
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void kmb_io_init(kmb_io *io) { memset(io, 0, sizeof(*io)); }

void kmb_io_set_fault(kmb_io *io, unsigned ops, uint64_t nth, int err, int persistent,
                      int short_write)
{
    kmb_io_init(io);
    io->fault_ops = ops & KMB_IO_ALL;
    io->fault_nth = nth;
    io->fault_errno = err;
    io->fault_persistent = persistent ? 1 : 0;
    io->fault_short = short_write ? 1 : 0;
}

/* A crash test's "power cut" at this call: the process dies at once, as under SIGKILL. */
static void crash_now(void)
{
    raise(SIGKILL);
    _exit(137); /* not reached */
}

/*
 * Count a call of class `op` against the plan; 1 if it must fail (errno is set). A plan
 * whose errno is KMB_FAULT_CRASH kills the process instead (writes: after the short write).
 */
static int inject(kmb_io *io, unsigned op)
{
    if (io == NULL || !(io->fault_ops & op)) return 0;
    io->calls++;
    if (io->fault_nth == 0) return 0; /* counting only */
    if (io->calls == io->fault_nth || (io->fault_persistent && io->calls > io->fault_nth)) {
        io->faults++;
        if (io->fault_errno == KMB_FAULT_CRASH && !(op == KMB_IO_WRITE && io->fault_short))
            crash_now();
        errno = io->fault_errno > 0 ? io->fault_errno : EIO;
        return 1;
    }
    return 0;
}

int kmb_io_open(kmb_io *io, const char *path, int flags, mode_t mode)
{
    if (inject(io, KMB_IO_OPEN)) return -1;
    int fd;
    do {
        fd = open(path, flags | O_CLOEXEC, mode);
    } while (fd < 0 && errno == EINTR);
    return fd;
}

/* What a mode is, for messages ("a FIFO", "a directory", ...). */
const char *kmb_io_kind(mode_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG: return "a regular file";
    case S_IFDIR: return "a directory";
    case S_IFLNK: return "a symbolic link";
    case S_IFIFO: return "a FIFO (named pipe)";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFSOCK: return "a socket";
    default: return "not a regular file";
    }
}

int kmb_io_open_regular(kmb_io *io, const char *path, int flags, mode_t mode, mode_t *found)
{
    *found = 0;
    if (inject(io, KMB_IO_OPEN)) return -1;
    /*
     * Look before opening: opening a device can have side effects (a tape rewinds, a
     * terminal becomes the controlling one), and a FIFO would block. lstat does not follow
     * a final symbolic link; O_NOFOLLOW and the fstat below close the race with a name
     * that changes between the two calls.
     */
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISREG(st.st_mode)) {
            *found = st.st_mode & S_IFMT;
            errno = S_ISDIR(st.st_mode) ? EISDIR : S_ISLNK(st.st_mode) ? ELOOP : EINVAL;
            return -1;
        }
    } else if (errno != ENOENT || !(flags & O_CREAT)) {
        return -1;
    }
    int fd;
    do {
        fd = open(path, flags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, mode);
    } while (fd < 0 && errno == EINTR); /* O_NONBLOCK: an open that returns */
    if (fd < 0) {
        if (errno == ELOOP) *found = S_IFLNK; /* became a symbolic link meanwhile */
        return -1;
    }
    int err = 0;
    if (fstat(fd, &st) != 0) {
        err = errno;
    } else if (!S_ISREG(st.st_mode)) {
        *found = st.st_mode & S_IFMT;
        err = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
    }
    if (err) {
        close(fd);
        errno = err;
        return -1;
    }
    /* Regular files ignore O_NONBLOCK on Linux, but not every file system promises it. */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_NONBLOCK)) (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

ssize_t kmb_io_pread(kmb_io *io, int fd, void *buf, size_t len, uint64_t pos)
{
    if (inject(io, KMB_IO_READ)) return -1;
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(pos + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

int kmb_io_pwrite(kmb_io *io, int fd, const void *buf, size_t len, uint64_t pos)
{
    size_t done = 0;
    if (inject(io, KMB_IO_WRITE)) {
        if (!io->fault_short) return -1;
        int saved = errno;
        /* A short write: half the bytes land, then the failure (as a full disk does). */
        ssize_t n = len >= 2 ? pwrite(fd, buf, len / 2, (off_t)pos) : 0;
        (void)n;
        if (io->fault_errno == KMB_FAULT_CRASH) crash_now(); /* a torn write */
        errno = saved;
        return -1;
    }
    while (done < len) {
        ssize_t n = pwrite(fd, (const char *)buf + done, len - done, (off_t)(pos + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

int kmb_io_sync(kmb_io *io, int fd)
{
    if (inject(io, KMB_IO_SYNC)) return -1;
    int rc;
    do {
#if defined(__linux__)
        rc = fdatasync(fd);
#else
        rc = fsync(fd);
#endif
    } while (rc < 0 && errno == EINTR);
    return rc;
}

int kmb_io_sync_dir(kmb_io *io, const char *path)
{
    if (inject(io, KMB_IO_SYNC)) return -1;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc;
    do {
        rc = fsync(fd);
    } while (rc < 0 && errno == EINTR);
    int saved = errno;
    close(fd);
    errno = saved;
    /* Some filesystems refuse fsync on directories; that is not a data-loss error. */
    if (rc < 0 && (errno == EINVAL || errno == EBADF)) rc = 0;
    return rc;
}

int kmb_io_truncate(kmb_io *io, int fd, uint64_t size)
{
    if (inject(io, KMB_IO_TRUNCATE)) return -1;
    int rc;
    do {
        rc = ftruncate(fd, (off_t)size);
    } while (rc < 0 && errno == EINTR);
    return rc;
}

int kmb_io_rename(kmb_io *io, const char *from, const char *to)
{
    if (inject(io, KMB_IO_RENAME)) return -1;
    return rename(from, to);
}

int kmb_io_mkdir(kmb_io *io, const char *path, mode_t mode)
{
    if (inject(io, KMB_IO_MKDIR)) return -1;
    return mkdir(path, mode);
}
