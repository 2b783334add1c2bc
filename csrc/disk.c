/*
 * disk.c — the disk backend: segments and indexes as files under a data directory.
 *
 *   data_dir/kimberlite.lock                the writer's flock
 *   data_dir/{stream}/segment_%06u.log      records
 *   data_dir/{stream}/segment_%06u.log.idx  offset index (a cache)
 *   data_dir/{stream}/segment_%06u.log.torn-K   quarantined torn tails
 *   data_dir/{stream}/durable               the durable watermark (a hint; watermark.c)
 *   data_dir/{stream}/checkpoint            the latest signed checkpoint (tree.c)
 *   data_dir/{stream}/tree                  the tree data, a cache (tree.c, treedata.h)
 *
 * Open descriptors are bounded: segment files are kept in a small LRU cache of
 * KMB_DISK_MAX_FDS descriptors, plus the lock file. All file operations go through io.c.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"
#include "kimberlite/errors.h"
#include "kimberlite/sys/backend.h"
#include "kimberlite/index.h"
#include "kimberlite/layout.h"

#define KMB_DISK_MAX_FDS 8
#define KMB_LOCK_NAME "kimberlite.lock"
#define KMB_WATERMARK_NAME "durable"

typedef struct fd_slot {
    int fd; /* -1: free */
    uint64_t stream;
    uint32_t seg;
    uint64_t used; /* LRU tick */
} fd_slot;

typedef struct disk_backend {
    kmb_backend base;
    char *root;
    int lock_fd;
    pid_t pid; /* the process that opened it (and took the lock) */
    kmb_io io;
    fd_slot slots[KMB_DISK_MAX_FDS];
    uint64_t tick;
    int tree_fd;          /* the tree data tree_size last opened (-1: none), for load_tree */
    uint64_t tree_stream; /* ... and its stream */
} disk_backend;

static disk_backend *D(kmb_backend *b) { return (disk_backend *)b; }

/* Record an OS error with its path: "what failed: strerror (path)". */
static int io_error(int err, const char *path, const char *what)
{
    kmb_error_set(KMB_EIO, err, "%s: %s (%s)", what, strerror(err), path);
    kmb_error_set_path(path);
    return KMB_EIO;
}

/*
 * Refuse a data file that is not a regular file (io.c: kmb_io_open_regular): a symbolic
 * link (to /dev/null, say, where an fsync=False append would "succeed" and vanish), a
 * FIFO (an open would wait forever), a device, a socket, a directory.
 */
static int not_regular(int err, mode_t found, const char *path, const char *what,
                       const char *todo)
{
    char target[256] = "";
    if (found == S_IFLNK) {
        char link[200];
        ssize_t n = readlink(path, link, sizeof(link) - 1);
        if (n > 0) {
            link[n] = '\0';
            snprintf(target, sizeof(target), " (to %s)", link);
        }
    }
    kmb_error_set(KMB_EIO, err, "%s %s is %s%s, not a regular file (kimberlite never follows "
                  "a symbolic link or opens a special file in a data directory); %s",
                  what, path, kmb_io_kind(found), target, todo);
    kmb_error_set_path(path);
    return KMB_EIO;
}

static int path_too_long(const char *root)
{
    return io_error(ENAMETOOLONG, root, "path too long");
}

static int stream_dir(disk_backend *d, uint64_t stream, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%" PRIu64, d->root, stream);
    return (n < 0 || (size_t)n >= cap) ? path_too_long(d->root) : KMB_OK;
}

static int segment_path(disk_backend *d, uint64_t stream, uint32_t seg, const char *suffix,
                        char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%" PRIu64 "/" KMB_SEGMENT_NAME_FORMAT "%s", d->root, stream,
                     seg, suffix);
    return (n < 0 || (size_t)n >= cap) ? path_too_long(d->root) : KMB_OK;
}

/* Parse a canonical decimal u64 ("0", "17"; no sign, no leading zero). 1 on success. */
static int parse_u64(const char *s, uint64_t *out)
{
    if (*s == '\0' || (s[0] == '0' && s[1] != '\0')) return 0;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return 0;
        unsigned digit = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - digit) / 10) return 0;
        v = v * 10 + digit;
    }
    *out = v;
    return 1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Release the descriptor cached for (stream, seg), if any (its file is going away). */
static void drop_fd(disk_backend *d, uint64_t stream, uint32_t seg)
{
    for (int i = 0; i < KMB_DISK_MAX_FDS; i++) {
        if (d->slots[i].fd >= 0 && d->slots[i].stream == stream && d->slots[i].seg == seg) {
            close(d->slots[i].fd);
            d->slots[i].fd = -1;
        }
    }
}

/*
 * A descriptor for a segment, from the cache or newly opened (evicting the least recently
 * used). create: O_CREAT. The descriptor stays owned by the cache.
 */
static int get_fd(disk_backend *d, uint64_t stream, uint32_t seg, int create, int *out)
{
    int victim = 0;
    for (int i = 0; i < KMB_DISK_MAX_FDS; i++) {
        fd_slot *s = &d->slots[i];
        if (s->fd >= 0 && s->stream == stream && s->seg == seg) {
            s->used = ++d->tick;
            *out = s->fd;
            return KMB_OK;
        }
        if (s->fd < 0 || (d->slots[victim].fd >= 0 && s->used < d->slots[victim].used))
            victim = i;
    }
    char path[PATH_MAX];
    int rc = segment_path(d, stream, seg, "", path, sizeof(path));
    if (rc) return rc;
    int flags = d->base.read_only ? O_RDONLY : O_RDWR;
    if (create) flags |= O_CREAT;
    mode_t found;
    int fd = kmb_io_open_regular(&d->io, path, flags, 0644, &found);
    if (fd < 0 && found)
        return not_regular(errno, found, path, "segment",
                           "put the segment file itself in its place, or move the stream "
                           "directory away");
    if (fd < 0) return io_error(errno, path, create ? "cannot create segment" : "cannot open segment");
    fd_slot *s = &d->slots[victim];
    if (s->fd >= 0) close(s->fd);
    s->fd = fd;
    s->stream = stream;
    s->seg = seg;
    s->used = ++d->tick;
    *out = fd;
    return KMB_OK;
}

/* Append one item of `size` bytes to a growing array (a directory listing). */
static int list_push(void **items, size_t *n, size_t *cap, size_t size, const void *item)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        void *p = realloc(*items, ncap * size);
        if (!p) return kmb_error_set(KMB_ENOMEM, 0, "out of memory listing a directory");
        *items = p;
        *cap = ncap;
    }
    memcpy((char *)*items + *n * size, item, size);
    (*n)++;
    return KMB_OK;
}

/* End a listing: on rc, free the items and return rc; else sort them in place. */
static int list_finish(void *items, size_t n, size_t size, int (*cmp)(const void *, const void *),
                       int rc)
{
    if (rc) {
        free(items);
        return rc;
    }
    if (n) qsort(items, n, size, cmp);
    return KMB_OK;
}

/* Whether the directory `name` of the data directory holds any segment file. */
static int holds_segment(disk_backend *d, const char *name)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/%s", d->root, name);
    if (n < 0 || (size_t)n >= sizeof(path)) return 0;
    DIR *dir = opendir(path);
    if (!dir) return 0;
    int found = 0;
    struct dirent *ent;
    uint32_t seg;
    while (!found && (ent = readdir(dir)) != NULL) found = kmb_segment_name_parse(ent->d_name, &seg);
    closedir(dir);
    return found;
}

static int disk_list_streams(kmb_backend *b, uint64_t **out, size_t *count)
{
    disk_backend *d = D(b);
    *out = NULL;
    *count = 0;
    DIR *dir = opendir(d->root);
    if (!dir) return io_error(errno, d->root, "cannot list data directory");
    void *ids = NULL;
    size_t n = 0, cap = 0;
    int rc = KMB_OK;
    struct dirent *ent;
    char path[PATH_MAX];
    while ((ent = readdir(dir)) != NULL) {
        uint64_t id;
        if (!parse_u64(ent->d_name, &id)) continue;
        /*
         * A stream is a directory holding a segment. Whatever has a segment's name counts
         * (lstat): a segment that is not a regular file is refused when the stream is used,
         * rather than hidden from the listing; and a stream whose first segment is missing
         * is listed (its reads and appends report the damage).
         */
        int n2 = snprintf(path, sizeof(path), "%s/%s/segment_000000.log", d->root, ent->d_name);
        struct stat st;
        if (n2 < 0 || (size_t)n2 >= sizeof(path)) continue;
        if (lstat(path, &st) != 0 && !holds_segment(d, ent->d_name)) continue;
        rc = list_push(&ids, &n, &cap, sizeof(id), &id);
        if (rc) break;
    }
    closedir(dir);
    rc = list_finish(ids, n, sizeof(uint64_t), cmp_u64, rc);
    if (rc) return rc;
    *out = ids;
    *count = n;
    return KMB_OK;
}

static int disk_list_segments(kmb_backend *b, uint64_t stream, uint32_t **out, size_t *count)
{
    disk_backend *d = D(b);
    *out = NULL;
    *count = 0;
    char path[PATH_MAX];
    int rc = stream_dir(d, stream, path, sizeof(path));
    if (rc) return rc;
    /* O_NOFOLLOW: a stream directory must be a directory, not a link to one elsewhere
     * (two stream ids would then share, and rewrite, one chain). */
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *dir = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!dir) {
        int err = errno;
        if (dfd >= 0) close(dfd);
        if (err == ENOENT) return KMB_OK;
        struct stat st;
        if ((err == ELOOP || err == ENOTDIR) && lstat(path, &st) == 0 && !S_ISDIR(st.st_mode)) {
            kmb_error_set(KMB_EIO, err, "stream directory %s is %s, not a directory (kimberlite "
                          "never follows a symbolic link in a data directory); put the "
                          "stream's real directory in its place", path,
                          kmb_io_kind(st.st_mode));
            kmb_error_set_path(path);
            return KMB_EIO;
        }
        return io_error(err, path, "cannot list stream directory");
    }
    void *segs = NULL;
    size_t n = 0, cap = 0;
    struct dirent *ent;
    while ((ent = readdir(dir)) != NULL) {
        uint32_t seg;
        if (!kmb_segment_name_parse(ent->d_name, &seg)) continue;
        rc = list_push(&segs, &n, &cap, sizeof(seg), &seg);
        if (rc) break;
    }
    closedir(dir);
    rc = list_finish(segs, n, sizeof(uint32_t), cmp_u32, rc);
    if (rc) return rc;
    *out = segs;
    *count = n;
    return KMB_OK;
}

static int disk_segment_exists(kmb_backend *b, uint64_t stream, uint32_t seg, int *exists)
{
    char path[PATH_MAX];
    int rc = segment_path(D(b), stream, seg, "", path, sizeof(path));
    if (rc) return rc;
    struct stat st;
    if (lstat(path, &st) == 0) { /* whatever it is: opening it refuses anything irregular */
        *exists = 1;
        return KMB_OK;
    }
    if (errno == ENOENT) {
        *exists = 0;
        return KMB_OK;
    }
    return io_error(errno, path, "cannot stat segment");
}

static int disk_segment_size(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t *out)
{
    disk_backend *d = D(b);
    int fd, rc = get_fd(d, stream, seg, 0, &fd);
    if (rc) return rc;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        char path[PATH_MAX];
        segment_path(d, stream, seg, "", path, sizeof(path));
        return io_error(errno, path, "cannot stat segment");
    }
    *out = (uint64_t)st.st_size;
    return KMB_OK;
}

static int disk_read(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t pos, void *buf,
                     size_t len, size_t *nread)
{
    disk_backend *d = D(b);
    int fd, rc = get_fd(d, stream, seg, 0, &fd);
    if (rc) return rc;
    ssize_t n = kmb_io_pread(&d->io, fd, buf, len, pos);
    if (n < 0) {
        char path[PATH_MAX];
        segment_path(d, stream, seg, "", path, sizeof(path));
        return io_error(errno, path, "cannot read segment");
    }
    *nread = (size_t)n;
    return KMB_OK;
}

static int disk_write(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t pos,
                      const void *buf, size_t len)
{
    disk_backend *d = D(b);
    int fd, rc = get_fd(d, stream, seg, 0, &fd);
    if (rc) return rc;
    if (kmb_io_pwrite(&d->io, fd, buf, len, pos) != 0) {
        char path[PATH_MAX];
        int err = errno;
        segment_path(d, stream, seg, "", path, sizeof(path));
        return io_error(err, path, "cannot write segment");
    }
    return KMB_OK;
}

static int disk_truncate(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t size)
{
    disk_backend *d = D(b);
    int fd, rc = get_fd(d, stream, seg, 0, &fd);
    if (rc) return rc;
    if (kmb_io_truncate(&d->io, fd, size) != 0) {
        char path[PATH_MAX];
        int err = errno;
        segment_path(d, stream, seg, "", path, sizeof(path));
        return io_error(err, path, "cannot truncate segment");
    }
    return KMB_OK;
}

static int disk_sync(kmb_backend *b, uint64_t stream, uint32_t seg)
{
    disk_backend *d = D(b);
    int fd, rc = get_fd(d, stream, seg, 0, &fd);
    if (rc) return rc;
    if (kmb_io_sync(&d->io, fd) != 0) {
        char path[PATH_MAX];
        int err = errno;
        segment_path(d, stream, seg, "", path, sizeof(path));
        return io_error(err, path, "cannot sync segment");
    }
    return KMB_OK;
}

static int disk_create_segment(kmb_backend *b, uint64_t stream, uint32_t seg, int durable)
{
    disk_backend *d = D(b);
    char dir[PATH_MAX];
    int rc = stream_dir(d, stream, dir, sizeof(dir));
    if (rc) return rc;
    int new_dir = 0;
    if (kmb_io_mkdir(&d->io, dir, 0755) == 0) {
        new_dir = 1;
    } else if (errno != EEXIST) {
        return io_error(errno, dir, "cannot create stream directory");
    }
    if (new_dir && durable && kmb_io_sync_dir(&d->io, d->root) != 0)
        return io_error(errno, d->root, "cannot sync data directory");
    int fd;
    rc = get_fd(d, stream, seg, 1, &fd);
    if (rc) return rc;
    if (durable && kmb_io_sync_dir(&d->io, dir) != 0)
        return io_error(errno, dir, "cannot sync stream directory");
    return KMB_OK;
}

static int disk_sync_dir(kmb_backend *b, uint64_t stream)
{
    disk_backend *d = D(b);
    char dir[PATH_MAX];
    int rc = stream_dir(d, stream, dir, sizeof(dir));
    if (rc) return rc;
    if (kmb_io_sync_dir(&d->io, dir) != 0) return io_error(errno, dir, "cannot sync stream directory");
    if (kmb_io_sync_dir(&d->io, d->root) != 0)
        return io_error(errno, d->root, "cannot sync data directory");
    return KMB_OK;
}

/* Remove an emptied last segment and its index (repair; sys/backend.h). */
static int disk_remove_segment(kmb_backend *b, uint64_t stream, uint32_t seg)
{
    disk_backend *d = D(b);
    uint64_t size = 0;
    int rc = b->segment_size(b, stream, seg, &size);
    if (rc) return rc;
    char path[PATH_MAX], idx[PATH_MAX], dir[PATH_MAX];
    rc = segment_path(d, stream, seg, "", path, sizeof(path));
    if (rc == KMB_OK) rc = segment_path(d, stream, seg, ".idx", idx, sizeof(idx));
    if (rc == KMB_OK) rc = stream_dir(d, stream, dir, sizeof(dir));
    if (rc) return rc;
    if (size != 0) return kmb_error_set(KMB_EINVAL, 0, "%s is not empty; not removed", path);
    drop_fd(d, stream, seg);
    if (unlink(idx) != 0 && errno != ENOENT) return io_error(errno, idx, "cannot remove index");
    if (unlink(path) != 0) return io_error(errno, path, "cannot remove emptied segment");
    if (kmb_io_sync_dir(&d->io, dir) != 0) return io_error(errno, dir, "cannot sync stream directory");
    return KMB_OK;
}

static int watermark_path(disk_backend *d, uint64_t stream, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%" PRIu64 "/" KMB_WATERMARK_NAME, d->root, stream);
    return (n < 0 || (size_t)n >= cap) ? path_too_long(d->root) : KMB_OK;
}

/* One small write, never synced (see sys/backend.h for why that is enough). */
static int disk_save_watermark(kmb_backend *b, uint64_t stream, const void *data, size_t len)
{
    disk_backend *d = D(b);
    char path[PATH_MAX];
    int rc = watermark_path(d, stream, path, sizeof(path));
    if (rc) return rc;
    int fd = kmb_io_open(&d->io, path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
                         0644);
    if (fd < 0) return io_error(errno, path, "cannot open durable watermark");
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) rc = io_error(EINVAL, path, "not a regular file");
    if (rc == KMB_OK && kmb_io_pwrite(&d->io, fd, data, len, 0) != 0)
        rc = io_error(errno, path, "cannot write durable watermark");
    close(fd);
    return rc;
}

static int disk_load_watermark(kmb_backend *b, uint64_t stream, void *buf, size_t cap,
                               size_t *len)
{
    disk_backend *d = D(b);
    char path[PATH_MAX];
    int rc = watermark_path(d, stream, path, sizeof(path));
    if (rc) return rc;
    int fd = kmb_io_open(&d->io, path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0);
    if (fd < 0) return kmb_error_set(KMB_ENOTFOUND, 0, "no durable watermark");
    struct stat st;
    ssize_t n = -1;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size <= cap)
        n = kmb_io_pread(&d->io, fd, buf, (size_t)st.st_size, 0);
    close(fd);
    if (n < 0) return kmb_error_set(KMB_ENOTFOUND, 0, "no usable durable watermark");
    *len = (size_t)n;
    return KMB_OK;
}

/* A temporary file, synced, renamed to {stream}/checkpoint, the directory synced. */
static int disk_save_checkpoint(kmb_backend *b, uint64_t stream, const uint8_t *data, size_t len)
{
    disk_backend *d = D(b);
    char dir[PATH_MAX], path[PATH_MAX], tmp[PATH_MAX];
    int rc = stream_dir(d, stream, dir, sizeof(dir));
    if (rc) return rc;
    int n = snprintf(path, sizeof(path), "%s/checkpoint", dir);
    int m = snprintf(tmp, sizeof(tmp), "%s/checkpoint.tmp", dir);
    if (n < 0 || (size_t)n >= sizeof(path) || m < 0 || (size_t)m >= sizeof(tmp))
        return path_too_long(d->root);
    if (unlink(tmp) != 0 && errno != ENOENT) return io_error(errno, tmp, "cannot replace checkpoint");
    int fd = kmb_io_open(&d->io, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) return io_error(errno, tmp, "cannot create checkpoint");
    if (kmb_io_pwrite(&d->io, fd, data, len, 0) != 0) rc = io_error(errno, tmp, "cannot write checkpoint");
    if (rc == KMB_OK && kmb_io_sync(&d->io, fd) != 0) rc = io_error(errno, tmp, "cannot sync checkpoint");
    close(fd);
    if (rc == KMB_OK && kmb_io_rename(&d->io, tmp, path) != 0)
        rc = io_error(errno, path, "cannot rename checkpoint into place");
    if (rc) {
        unlink(tmp);
        return rc;
    }
    if (kmb_io_sync_dir(&d->io, dir) != 0) return io_error(errno, dir, "cannot sync stream directory");
    return KMB_OK;
}

static int disk_load_checkpoint(kmb_backend *b, uint64_t stream, uint64_t max_len, uint8_t **out,
                                size_t *len)
{
    disk_backend *d = D(b);
    char dir[PATH_MAX], path[PATH_MAX];
    *out = NULL;
    *len = 0;
    int rc = stream_dir(d, stream, dir, sizeof(dir));
    if (rc) return rc;
    int n = snprintf(path, sizeof(path), "%s/checkpoint", dir);
    if (n < 0 || (size_t)n >= sizeof(path)) return path_too_long(d->root);
    int fd = kmb_io_open(&d->io, path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0);
    if (fd < 0) {
        if (errno == ENOENT) return kmb_error_set(KMB_ENOTFOUND, 0, "no checkpoint");
        return io_error(errno, path, "cannot open checkpoint");
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > max_len) {
        close(fd);
        return kmb_error_set(KMB_ECORRUPT, 0, "%s is not a regular file of at most %" PRIu64
                             " bytes: not a checkpoint Kimberlite wrote; move it away", path,
                             max_len);
    }
    uint8_t *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
    if (!buf) {
        close(fd);
        return kmb_error_set(KMB_ENOMEM, 0, "out of memory");
    }
    ssize_t got = kmb_io_pread(&d->io, fd, buf, (size_t)st.st_size, 0);
    int err = errno;
    close(fd);
    if (got < 0 || (size_t)got != (size_t)st.st_size) {
        free(buf);
        return io_error(got < 0 ? err : EIO, path, "cannot read checkpoint");
    }
    *out = buf;
    *len = (size_t)got;
    return KMB_OK;
}

/* ---------------------------------------------------------------- tree data */

static int tree_path(disk_backend *d, uint64_t stream, const char *suffix, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%" PRIu64 "/tree%s", d->root, stream, suffix);
    return (n < 0 || (size_t)n >= cap) ? path_too_long(d->root) : KMB_OK;
}

/* The tree data's descriptor for reading or rewriting in place; never follows a link or waits
 * on a FIFO; anything but a regular file is KMB_ENOTFOUND (the engine rebuilds and a save
 * at 0 replaces the name). */
static int open_tree(disk_backend *d, uint64_t stream, int flags, int *fd, uint64_t *len)
{
    char path[PATH_MAX];
    int rc = tree_path(d, stream, "", path, sizeof(path));
    if (rc) return rc;
    *fd = kmb_io_open(&d->io, path, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0);
    if (*fd < 0) {
        if (errno == ENOENT || errno == ELOOP) return kmb_error_set(KMB_ENOTFOUND, 0, "no tree data");
        return io_error(errno, path, "cannot open tree data");
    }
    struct stat st;
    if (fstat(*fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(*fd);
        *fd = -1;
        return kmb_error_set(KMB_ENOTFOUND, 0, "%s is not a regular file; ignored", path);
    }
    *len = (uint64_t)st.st_size;
    return KMB_OK;
}

static void tree_forget(disk_backend *d)
{
    if (d->tree_fd >= 0) close(d->tree_fd);
    d->tree_fd = -1;
}

/*
 * tree_size opens the tree data and keeps the descriptor for the load_tree calls that
 * follow (the engine asks the size first, then reads the header, frontier and, on demand,
 * tiles): they read the very file whose size was taken, even if a writer renames a new one
 * into place meanwhile, and a proof's tiles cost a pread each, not an open each. A save
 * forgets it (the next reads open the name again).
 */
static int disk_tree_size(kmb_backend *b, uint64_t stream, uint64_t *len)
{
    disk_backend *d = D(b);
    int fd;
    int rc = open_tree(d, stream, O_RDONLY, &fd, len);
    if (rc == KMB_OK || d->tree_stream == stream) tree_forget(d);
    if (rc) return rc;
    d->tree_fd = fd;
    d->tree_stream = stream;
    return KMB_OK;
}

static int disk_load_tree(kmb_backend *b, uint64_t stream, uint64_t pos, void *buf, size_t len)
{
    disk_backend *d = D(b);
    int fd = d->tree_fd >= 0 && d->tree_stream == stream ? d->tree_fd : -1;
    int own = fd < 0;
    uint64_t size;
    if (own) {
        int rc = open_tree(d, stream, O_RDONLY, &fd, &size);
        if (rc) return rc;
    }
    ssize_t got = kmb_io_pread(&d->io, fd, buf, len, pos);
    int err = errno;
    if (own) close(fd);
    if (got < 0) return kmb_error_set(KMB_EIO, err, "cannot read tree data");
    if ((size_t)got != len) return kmb_error_set(KMB_ECORRUPT, 0, "tree data is too short");
    return KMB_OK;
}

/* pos 0: a temporary file renamed into place (a crash leaves the old data or the new);
 * pos > 0: written in place after the kept bytes, then cut to its end (append-only). */
static int disk_save_tree(kmb_backend *b, uint64_t stream, uint64_t pos, const void *data,
                          size_t len)
{
    disk_backend *d = D(b);
    int fd, rc;
    uint64_t size;
    if (d->tree_stream == stream) tree_forget(d);
    if (pos > 0) {
        rc = open_tree(d, stream, O_WRONLY, &fd, &size);
        if (rc) return rc;
        if (pos > size) rc = kmb_error_set(KMB_EINVAL, 0, "tree data: write past its end");
        if (rc == KMB_OK && kmb_io_pwrite(&d->io, fd, data, len, pos) != 0)
            rc = kmb_error_set(KMB_EIO, errno, "cannot write tree data");
        if (rc == KMB_OK && size > pos + len && kmb_io_truncate(&d->io, fd, pos + len) != 0)
            rc = kmb_error_set(KMB_EIO, errno, "cannot truncate tree data");
        close(fd);
        return rc;
    }
    char path[PATH_MAX], tmp[PATH_MAX];
    rc = tree_path(d, stream, "", path, sizeof(path));
    if (rc == KMB_OK) rc = tree_path(d, stream, ".tmp", tmp, sizeof(tmp));
    if (rc) return rc;
    if (unlink(tmp) != 0 && errno != ENOENT) return io_error(errno, tmp, "cannot replace tree data");
    fd = kmb_io_open(&d->io, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) return io_error(errno, tmp, "cannot create tree data");
    if (kmb_io_pwrite(&d->io, fd, data, len, 0) != 0) rc = io_error(errno, tmp, "cannot write tree data");
    close(fd);
    if (rc == KMB_OK && kmb_io_rename(&d->io, tmp, path) != 0)
        rc = io_error(errno, path, "cannot rename tree data into place");
    if (rc) unlink(tmp);
    return rc;
}

static int disk_quarantine(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t from,
                           char *name_out, size_t name_cap)
{
    disk_backend *d = D(b);
    char seg_path[PATH_MAX], qpath[PATH_MAX], dir[PATH_MAX];
    int rc = segment_path(d, stream, seg, "", seg_path, sizeof(seg_path));
    if (rc) return rc;
    rc = stream_dir(d, stream, dir, sizeof(dir));
    if (rc) return rc;
    int src;
    rc = get_fd(d, stream, seg, 0, &src);
    if (rc) return rc;

    /* The first free name: segment_NNNNNN.log.torn-K. O_EXCL makes "free" race-proof. */
    int qfd = -1;
    for (unsigned k = 1; k < 100000; k++) {
        int n = snprintf(qpath, sizeof(qpath), "%s.torn-%u", seg_path, k);
        if (n < 0 || (size_t)n >= sizeof(qpath)) return path_too_long(d->root);
        qfd = kmb_io_open(&d->io, qpath, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (qfd >= 0 || errno != EEXIST) break;
    }
    if (qfd < 0) return io_error(errno, qpath, "cannot create quarantine file");

    uint8_t buf[65536];
    uint64_t pos = from, out_pos = 0;
    for (;;) {
        ssize_t n = kmb_io_pread(&d->io, src, buf, sizeof(buf), pos);
        if (n < 0) {
            rc = io_error(errno, seg_path, "cannot read torn tail");
            goto fail;
        }
        if (n == 0) break;
        if (kmb_io_pwrite(&d->io, qfd, buf, (size_t)n, out_pos) != 0) {
            rc = io_error(errno, qpath, "cannot write quarantine file");
            goto fail;
        }
        pos += (uint64_t)n;
        out_pos += (uint64_t)n;
    }
    /* The copy must be durable before the segment loses those bytes. */
    if (kmb_io_sync(&d->io, qfd) != 0) {
        rc = io_error(errno, qpath, "cannot sync quarantine file");
        goto fail;
    }
    close(qfd);
    qfd = -1;
    if (kmb_io_sync_dir(&d->io, dir) != 0) return io_error(errno, dir, "cannot sync stream directory");
    if (kmb_io_truncate(&d->io, src, from) != 0) return io_error(errno, seg_path, "cannot cut torn tail");
    if (kmb_io_sync(&d->io, src) != 0) return io_error(errno, seg_path, "cannot sync segment");
    if (name_out && name_cap) snprintf(name_out, name_cap, "%s", qpath);
    return KMB_OK;
fail:
    close(qfd);
    unlink(qpath); /* only our own partial copy; the segment is untouched */
    return rc;
}

/*
 * The index bytes, never more than max_len: a larger file (a sparse 64 GiB one, say) is
 * refused from its size alone, before anything is allocated or read.
 */
/*
 * Open a segment's index file for reading and check its size against max_len: *fd and
 * *size on KMB_OK (the caller closes *fd), path filled in either way.
 */
static int open_index(disk_backend *d, uint64_t stream, uint32_t seg, uint64_t max_len,
                      char *path, size_t path_cap, int *fd_out, uint64_t *size)
{
    *fd_out = -1;
    int rc = segment_path(d, stream, seg, ".idx", path, path_cap);
    if (rc) return rc;
    mode_t found;
    int fd = kmb_io_open_regular(&d->io, path, O_RDONLY, 0, &found);
    if (fd < 0) {
        if (errno == ENOENT) return kmb_error_set(KMB_ENOTFOUND, 0, "no index file %s", path);
        /* An index is a cache: one that is not a regular file is ignored (the engine
         * rebuilds the index from the segment), and a writer's next save replaces the
         * name itself (never what a link points to). */
        if (found) {
            kmb_error_set(KMB_EINDEX, 0, "index %s is %s, not a regular file; ignored",
                          path, kmb_io_kind(found));
            kmb_error_set_path(path);
            return KMB_EINDEX;
        }
        return io_error(errno, path, "cannot open index");
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = io_error(errno, path, "cannot stat index");
        close(fd);
        return rc;
    }
    if ((uint64_t)st.st_size > max_len || (uint64_t)st.st_size > SIZE_MAX - 1) {
        rc = kmb_error_set(KMB_EINDEX, 0,
                           "index file %s is %" PRIu64 " bytes, more than its segment could "
                           "need (%" PRIu64 "): not read; it is rebuilt from the segment",
                           path, (uint64_t)st.st_size, max_len);
        kmb_error_set_path(path);
        close(fd);
        return rc;
    }
    *fd_out = fd;
    *size = (uint64_t)st.st_size;
    return KMB_OK;
}

static int disk_load_index(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t max_len,
                           uint8_t **out, size_t *len)
{
    disk_backend *d = D(b);
    *out = NULL;
    *len = 0;
    char path[PATH_MAX];
    int fd;
    uint64_t size = 0;
    int rc = open_index(d, stream, seg, max_len, path, sizeof(path), &fd, &size);
    if (rc) return rc;
    uint8_t *data = kmb_index_buffer_alloc(size ? (size_t)size : 1);
    if (!data) {
        rc = kmb_error_set(KMB_ENOMEM, 0, "out of memory reading index %s", path);
        goto done;
    }
    ssize_t n = kmb_io_pread(&d->io, fd, data, (size_t)size, 0);
    if (n < 0) {
        rc = io_error(errno, path, "cannot read index");
        goto done;
    }
    *out = data;
    *len = (size_t)n;
    data = NULL;
done:
    kmb_index_buffer_free(data);
    close(fd);
    return rc;
}

/* Both ends of a large index from one open file (see backend.h). */
static int disk_load_index_ends(kmb_backend *b, uint64_t stream, uint32_t seg, uint64_t max_len,
                                uint64_t min_size, uint8_t *head, size_t head_len, uint8_t *tail,
                                size_t tail_len, uint64_t *size)
{
    disk_backend *d = D(b);
    char path[PATH_MAX];
    int fd;
    *size = 0;
    int rc = open_index(d, stream, seg, max_len, path, sizeof(path), &fd, size);
    if (rc) return rc;
    if (*size >= min_size && *size >= (uint64_t)head_len + tail_len) {
        ssize_t n = kmb_io_pread(&d->io, fd, head, head_len, 0);
        ssize_t m = n < 0 || (size_t)n < head_len
                        ? -1
                        : kmb_io_pread(&d->io, fd, tail, tail_len, *size - tail_len);
        if (n < 0 || m < 0) rc = io_error(errno, path, "cannot read index");
        else if ((size_t)m < tail_len)
            rc = kmb_error_set(KMB_EINDEX, 0, "index file %s became shorter while read", path);
    }
    close(fd);
    return rc;
}

/* As kmb_index_save: a temporary file renamed into place, but through io.c (fault plans). */
static int disk_save_index(kmb_backend *b, uint64_t stream, uint32_t seg, const uint8_t *data,
                           size_t len)
{
    disk_backend *d = D(b);
    char path[PATH_MAX], tmp[PATH_MAX];
    int rc = segment_path(d, stream, seg, ".idx", path, sizeof(path));
    if (rc) return rc;
    rc = segment_path(d, stream, seg, ".idx.tmp", tmp, sizeof(tmp));
    if (rc) return rc;
    /* Our own temporary name (only the lock holder writes indexes): whatever is left
     * there (a crash's leftover, a FIFO, a link) goes, and O_EXCL creates a new file
     * without following or waiting on anything. */
    if (unlink(tmp) != 0 && errno != ENOENT) return io_error(errno, tmp, "cannot replace index");
    int fd = kmb_io_open(&d->io, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0644);
    if (fd < 0) return io_error(errno, tmp, "cannot create index");
    if (kmb_io_pwrite(&d->io, fd, data, len, 0) != 0) rc = io_error(errno, tmp, "cannot write index");
    close(fd);
    if (rc == KMB_OK && kmb_io_rename(&d->io, tmp, path) != 0)
        rc = io_error(errno, path, "cannot rename index into place");
    if (rc) unlink(tmp);
    return rc;
}

/* sys/backend.h's after_fork_child: our copy of the lock descriptor only; the parent's
 * descriptor keeps the lock until the parent closes. */
static void disk_after_fork_child(kmb_backend *b)
{
    disk_backend *d = D(b);
    if (d->lock_fd < 0) return;
    close(d->lock_fd);
    d->lock_fd = -1;
}

/* sys/backend.h's fault_plan: the plan of this backend's file layer (io.c). */
static int disk_fault_plan(kmb_backend *b, const kmb_fault_plan *plan, uint64_t *calls,
                           uint64_t *faults)
{
    kmb_io *io = &D(b)->io;
    if (plan) kmb_io_set_fault(io, plan->ops, plan->nth, plan->err, plan->persistent, plan->short_write);
    if (calls) *calls = io->calls;
    if (faults) *faults = io->faults;
    return KMB_OK;
}

static void disk_describe(kmb_backend *b, uint64_t stream, uint32_t seg, char *out, size_t cap)
{
    if (segment_path(D(b), stream, seg, "", out, cap) != KMB_OK && cap) out[0] = '\0';
}

static void disk_free(kmb_backend *b)
{
    disk_backend *d = D(b);
    if (!d) return;
    for (int i = 0; i < KMB_DISK_MAX_FDS; i++)
        if (d->slots[i].fd >= 0) close(d->slots[i].fd);
    tree_forget(d);
    if (d->lock_fd >= 0) {
        /*
         * Unlock explicitly, then close: a child forked from this process may still hold a
         * copy of the descriptor (it closes it right after fork, but it may not have run
         * yet), and the flock belongs to the open file description they share. A child
         * closing an inherited writer must not unlock its parent's lock.
         */
        if (getpid() == d->pid) flock(d->lock_fd, LOCK_UN);
        close(d->lock_fd);
    }
    free(d->root);
    free(d);
}

/* mkdir -p: create `path` and its missing parents. */
static int make_dirs(kmb_io *io, const char *path)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(buf)) return io_error(ENAMETOOLONG, path, "bad data directory path");
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (kmb_io_mkdir(io, buf, 0755) == 0) {
            /* A new directory's name must survive a power cut too: sync its parent. */
            char *slash = strrchr(buf, '/');
            const char *parent = ".";
            if (slash == buf) parent = "/";
            else if (slash) *slash = '\0', parent = buf;
            int failed = kmb_io_sync_dir(io, parent) != 0;
            int err = errno;
            if (slash && slash != buf) *slash = '/';
            if (failed) return io_error(err, buf, "cannot sync the parent of the data directory");
        } else if (errno != EEXIST) {
            return io_error(errno, buf, "cannot create data directory");
        }
        buf[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) != 0) return io_error(errno, path, "cannot open data directory");
    if (!S_ISDIR(st.st_mode)) return io_error(ENOTDIR, path, "data directory is not a directory");
    return KMB_OK;
}

/* The disk backend's function table (sys/backend.h). */
static void fill_table(kmb_backend *b, int read_only)
{
    b->version = KMB_BACKEND_VERSION;
    b->flags = read_only ? 0 : KMB_BACKEND_PROCESS_BOUND; /* the writer's flock */
    b->read_only = read_only ? 1 : 0;
    b->list_streams = disk_list_streams;
    b->list_segments = disk_list_segments;
    b->segment_exists = disk_segment_exists;
    b->segment_size = disk_segment_size;
    b->read = disk_read;
    b->write = disk_write;
    b->truncate = disk_truncate;
    b->sync = disk_sync;
    b->create_segment = disk_create_segment;
    b->quarantine = disk_quarantine;
    b->load_index = disk_load_index;
    b->load_index_ends = disk_load_index_ends;
    b->save_index = disk_save_index;
    b->describe = disk_describe;
    b->free = disk_free;
    b->sync_dir = disk_sync_dir;
    b->fault_plan = disk_fault_plan;
    b->after_fork_child = disk_after_fork_child;
    b->remove_segment = disk_remove_segment;
    b->save_watermark = disk_save_watermark;
    b->load_watermark = disk_load_watermark;
    b->save_checkpoint = disk_save_checkpoint;
    b->load_checkpoint = disk_load_checkpoint;
    b->tree_size = disk_tree_size;
    b->load_tree = disk_load_tree;
    b->save_tree = disk_save_tree;
}

int kmb_backend_disk_open(kmb_backend **out, const char *path, int read_only)
{
    *out = NULL;
    if (path == NULL || *path == '\0')
        return kmb_error_set(KMB_EINVAL, 0, "the data directory path is empty");
    disk_backend *d = calloc(1, sizeof(*d));
    if (!d) return kmb_error_set(KMB_ENOMEM, 0, "out of memory opening %s", path);
    d->lock_fd = -1;
    d->tree_fd = -1;
    d->pid = getpid();
    for (int i = 0; i < KMB_DISK_MAX_FDS; i++) d->slots[i].fd = -1;
    kmb_io_init(&d->io);
    /* Strip trailing slashes so that messages show clean paths. */
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;
    d->root = malloc(len + 1);
    if (!d->root) {
        free(d);
        return kmb_error_set(KMB_ENOMEM, 0, "out of memory opening %s", path);
    }
    memcpy(d->root, path, len);
    d->root[len] = '\0';

    kmb_backend *b = &d->base;
    fill_table(b, read_only);

    int rc;
    if (read_only) {
        struct stat st;
        if (stat(d->root, &st) != 0) {
            rc = io_error(errno, d->root, "cannot open data directory read-only");
            goto fail;
        }
        if (!S_ISDIR(st.st_mode)) {
            rc = io_error(ENOTDIR, d->root, "data directory is not a directory");
            goto fail;
        }
    } else {
        rc = make_dirs(&d->io, d->root);
        if (rc) goto fail;
        char lock[PATH_MAX];
        int n = snprintf(lock, sizeof(lock), "%s/%s", d->root, KMB_LOCK_NAME);
        if (n < 0 || (size_t)n >= sizeof(lock)) {
            rc = path_too_long(d->root);
            goto fail;
        }
        mode_t found;
        d->lock_fd = kmb_io_open_regular(&d->io, lock, O_RDWR | O_CREAT, 0644, &found);
        if (d->lock_fd < 0) {
            rc = found ? not_regular(errno, found, lock, "lock file",
                                     "remove it (a writer creates its lock file) and open again")
                       : io_error(errno, lock, "cannot open lock file");
            goto fail;
        }
        if (flock(d->lock_fd, LOCK_EX | LOCK_NB) != 0) {
            if (errno == EWOULDBLOCK) {
                rc = kmb_error_set(KMB_ELOCKED, 0,
                                   "another writer holds %s; close it first, or open this "
                                   "directory with read_only=True",
                                   lock);
                kmb_error_set_path(lock);
            } else {
                rc = io_error(errno, lock, "cannot lock data directory");
            }
            goto fail;
        }
    }
    /* Keep working on the directory we opened even if the process changes directory. */
    char *abs = realpath(d->root, NULL);
    if (!abs) {
        rc = io_error(errno, d->root, "cannot resolve data directory");
        goto fail;
    }
    free(d->root);
    d->root = abs;
    *out = b;
    return KMB_OK;
fail:
    disk_free(b);
    return rc;
}
