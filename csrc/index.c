/*
 * index.c — the offset index of one segment (index.h) and its .idx file.
 *
 *   "VDXI" | 0x01 | 0 0 0 | N:u64 | N x position:u64 | CRC-32 of everything before it
 *
 * An index file is valid if and only if it has the magic, version 1, zero reserved bytes,
 * exactly 16 + 8*N + 4 bytes and a matching CRC. Index files are caches that anyone (or any
 * bit rot) may have damaged, so every size derived from N is checked against the real
 * length before it is used, and nothing is allocated from N alone: a hostile N of 2**64-1
 * is rejected, not malloc'd.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* O_CLOEXEC, pread */
#endif

#include "kimberlite/index.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kimberlite/crc32.h"
#include "kimberlite/errors.h"
#include "format.h" /* the .idx layout; little-endian helpers */

#define MIN_FILE_SIZE (KMB_INDEX_HEADER_SIZE + KMB_INDEX_TRAILER_SIZE)
#define REBUILD_HINT "the index is a cache: it is rebuilt from its segment"

/*
 * Index buffers carry a 16-byte header (keeping the 16-byte alignment of what follows):
 * the length of the mapping holding them, or 0 when they were malloc'd.
 */
#define BUFFER_HEADER 16
#if defined(__linux__) && defined(MAP_ANONYMOUS) && !defined(MADV_POPULATE_WRITE)
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels refuse it (EINVAL): harmless */
#endif
#define BUFFER_MAP_MIN ((size_t)1 << 20)
#define BUFFER_HUGE ((size_t)2 << 20) /* x86-64 and arm64 (4 KiB pages) huge page */

static void *buffer_alloc(size_t len, int populate)
{
    if (len > SIZE_MAX - BUFFER_HEADER) return NULL;
    size_t total = len + BUFFER_HEADER;
    uint8_t *base = NULL;
    size_t mapped = 0;
#if defined(MAP_ANONYMOUS)
    if (total >= BUFFER_MAP_MIN && total <= SIZE_MAX - 2 * BUFFER_HUGE) {
        /* Rounded to whole huge pages and started on one, so that every page can be huge:
         * map one more, then unmap the ends outside the aligned range. */
        size_t want = (total + BUFFER_HUGE - 1) & ~(BUFFER_HUGE - 1);
        void *m = mmap(NULL, want + BUFFER_HUGE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m != MAP_FAILED) {
            uintptr_t at = (uintptr_t)m;
            uintptr_t start = (at + BUFFER_HUGE - 1) & ~(uintptr_t)(BUFFER_HUGE - 1);
            size_t head = (size_t)(start - at); /* < BUFFER_HUGE */
            if (head) munmap(m, head);
            munmap((void *)(start + want), BUFFER_HUGE - head);
            m = (void *)start;
            base = m;
            mapped = want;
            total = want;
            /* Both are hints: where a kernel lacks them the pages fault in one at a time. */
#if defined(MADV_HUGEPAGE)
            if (populate) (void)madvise(m, total, MADV_HUGEPAGE);
#endif
#if defined(MADV_POPULATE_WRITE)
            if (populate) (void)madvise(m, total, MADV_POPULATE_WRITE);
#endif
        }
    }
#endif
    if (base == NULL) {
        base = malloc(total);
        if (base == NULL) return NULL;
        if (!populate) memset(base, 0, total); /* a mapping is zero; so is this */
    }
    memcpy(base, &mapped, sizeof mapped);
    return base + BUFFER_HEADER;
}

void *kmb_index_buffer_alloc(size_t len) { return buffer_alloc(len, 1); }

void *kmb_index_buffer_reserve(size_t len) { return buffer_alloc(len, 0); }

void kmb_index_buffer_free(void *buf)
{
    if (buf == NULL) return;
    uint8_t *base = (uint8_t *)buf - BUFFER_HEADER;
    size_t mapped;
    memcpy(&mapped, base, sizeof mapped);
#if defined(MAP_ANONYMOUS)
    if (mapped) {
        munmap(base, mapped);
        return;
    }
#endif
    free(base);
}

void kmb_index_init(kmb_index *ix) { memset(ix, 0, sizeof *ix); }

void kmb_index_free(kmb_index *ix)
{
    if (ix == NULL) return;
    if (ix->block) kmb_index_buffer_free(ix->block);
    else free(ix->positions);
    memset(ix, 0, sizeof *ix);
}

int kmb_index_reserve(kmb_index *ix, size_t extra)
{
    if (extra <= ix->capacity - ix->count) return KMB_OK;
    if (extra > SIZE_MAX / sizeof(uint64_t) - ix->count) {
        return kmb_error_set(KMB_ENOMEM, 0, "offset index cannot hold %zu more entries", extra);
    }
    size_t need = ix->count + extra;
    /* Grow geometrically so that appending one position at a time stays amortised O(1). */
    size_t cap = ix->capacity < 16 ? 16 : ix->capacity;
    while (cap < need) cap = cap > SIZE_MAX / sizeof(uint64_t) / 2 ? need : cap * 2;
    uint64_t *p;
    if (ix->block) {
        /* Adopted positions sit inside a file image: move them to an array of their own. */
        p = malloc(cap * sizeof(uint64_t));
        if (p != NULL && ix->lo) {
            /* Partial: only the loaded entries are copied (the rest stays unread; zero). */
            memset(p, 0, ix->lo * sizeof(uint64_t));
            p[0] = ix->positions[0];
            memcpy(p + ix->lo, ix->positions + ix->lo, (ix->count - ix->lo) * sizeof(uint64_t));
            kmb_index_buffer_free(ix->block);
            ix->block = NULL;
        } else if (p != NULL) {
            if (ix->count) memcpy(p, ix->positions, ix->count * sizeof(uint64_t));
            kmb_index_buffer_free(ix->block);
            ix->block = NULL;
        }
    } else {
        p = realloc(ix->positions, cap * sizeof(uint64_t));
    }
    if (p == NULL) {
        return kmb_error_set(KMB_ENOMEM, 0, "out of memory growing an offset index to %zu entries",
                             cap);
    }
    ix->positions = p;
    ix->capacity = cap;
    return KMB_OK;
}

int kmb_index_copy(kmb_index *dst, const kmb_index *src)
{
    dst->count = 0;
    dst->lo = 0;
    int rc = kmb_index_reserve(dst, src->count);
    if (rc != KMB_OK) return rc;
    if (src->count) memcpy(dst->positions, src->positions, src->count * sizeof(uint64_t));
    dst->count = src->count;
    dst->lo = src->lo;
    return KMB_OK;
}

int kmb_index_append(kmb_index *ix, uint64_t position)
{
    int rc = kmb_index_reserve(ix, 1);
    if (rc != KMB_OK) return rc;
    ix->positions[ix->count++] = position;
    return KMB_OK;
}

void kmb_index_truncate(kmb_index *ix, size_t count)
{
    if (count < ix->count) ix->count = count;
    if (ix->count <= 1) ix->lo = 0; /* entry 0 is always loaded */
    /* Cut before the loaded window: none of it is left, and entries 1 .. count-1 are not
     * loaded (lo > count would make count - lo wrap where the window is copied). */
    else if (ix->lo > ix->count) ix->lo = ix->count;
}

int kmb_index_lookup(const kmb_index *ix, uint64_t i, uint64_t *out)
{
    if (i >= ix->count || !kmb_index_has(ix, (size_t)i)) return 0;
    *out = ix->positions[i];
    return 1;
}

int kmb_index_encode(const kmb_index *ix, uint8_t **out, size_t *len)
{
    if (ix->lo)
        return kmb_error_set(KMB_EINVAL, 0, "a partially loaded offset index cannot be "
                             "encoded: complete it first (an engine bug)");
    /* count entries already sit in memory, so 8*count cannot overflow a size_t. */
    size_t size = (size_t)kmb_index_encoded_size(ix->count);
    uint8_t *buf = malloc(size);
    if (buf == NULL) {
        return kmb_error_set(KMB_ENOMEM, 0, "out of memory encoding an offset index (%zu bytes)",
                             size);
    }
    memcpy(buf + KMB_IDX_MAGIC_AT, KMB_INDEX_MAGIC, KMB_IDX_MAGIC_SIZE);
    buf[KMB_IDX_VERSION_AT] = KMB_INDEX_VERSION;
    memset(buf + KMB_IDX_RESERVED_AT, 0, KMB_IDX_RESERVED_SIZE);
    kmb_store_u64le(buf + KMB_IDX_COUNT_AT, (uint64_t)ix->count);
    for (size_t i = 0; i < ix->count; i++) {
        kmb_store_u64le(buf + kmb_idx_entry_at(i), ix->positions[i]);
    }
    size_t body = size - KMB_INDEX_TRAILER_SIZE;
    kmb_store_u32le(buf + body, kmb_crc32(buf, body));
    *out = buf;
    *len = size;
    return KMB_OK;
}

/*
 * Check everything the first 16 bytes can tell, given the file's total length: used by
 * decode, and by load before it allocates a buffer for the whole file. `hdr` holds
 * min(total, 16) bytes. On success *count is N.
 */
static int check_header(const uint8_t *hdr, uint64_t total, uint64_t *count)
{
    if (total < MIN_FILE_SIZE) {
        return kmb_error_set(KMB_EINDEX, 0,
                             "offset index too short: %" PRIu64 " bytes, at least %d needed (%s)",
                             total, MIN_FILE_SIZE, REBUILD_HINT);
    }
    if (memcmp(hdr + KMB_IDX_MAGIC_AT, KMB_INDEX_MAGIC, KMB_IDX_MAGIC_SIZE) != 0) {
        return kmb_error_set(KMB_EINDEX, 0,
                             "bad offset index magic %02x %02x %02x %02x, expected \"VDXI\" (%s)",
                             hdr[0], hdr[1], hdr[2], hdr[3], REBUILD_HINT);
    }
    if (hdr[KMB_IDX_VERSION_AT] != KMB_INDEX_VERSION) {
        return kmb_error_set(KMB_EINDEX, 0, "unsupported offset index version %u, expected %d (%s)",
                             hdr[KMB_IDX_VERSION_AT], KMB_INDEX_VERSION, REBUILD_HINT);
    }
    const uint8_t *rsv = hdr + KMB_IDX_RESERVED_AT;
    if (rsv[0] != 0 || rsv[1] != 0 || rsv[2] != 0) {
        return kmb_error_set(KMB_EINDEX, 0,
                             "offset index reserved bytes are not zero (%02x %02x %02x) (%s)",
                             rsv[0], rsv[1], rsv[2], REBUILD_HINT);
    }
    uint64_t n = kmb_load_u64le(hdr + KMB_IDX_COUNT_AT);
    /* Compare N with the room the file has, rather than computing 16 + 8*N (may wrap). */
    uint64_t room = total - MIN_FILE_SIZE;
    if (room % KMB_IDX_ENTRY_SIZE != 0 || n != room / KMB_IDX_ENTRY_SIZE) {
        return kmb_error_set(KMB_EINDEX, 0,
                             "offset index size mismatch: header says %" PRIu64
                             " entries, the file has %" PRIu64 " bytes (%s)",
                             n, total, REBUILD_HINT);
    }
    *count = n;
    return KMB_OK;
}

int kmb_index_decode(kmb_index *out, const void *data, size_t len)
{
    const uint8_t *p = (const uint8_t *)data;
    uint64_t n = 0;
    int rc;

    kmb_index_truncate(out, 0);
    rc = check_header(p, (uint64_t)len, &n);
    if (rc != KMB_OK) return rc;
    size_t body = len - KMB_INDEX_TRAILER_SIZE;
    uint32_t stored = kmb_load_u32le(p + body);
    uint32_t actual = kmb_crc32(p, body);
    if (stored != actual) {
        return kmb_error_set(KMB_EINDEX, 0,
                             "offset index CRC mismatch: stored 0x%08" PRIx32
                             ", computed 0x%08" PRIx32 " (%s)",
                             stored, actual, REBUILD_HINT);
    }
    /* n <= len / 8 now, so it fits a size_t and the allocation is bounded by the input. */
    rc = kmb_index_reserve(out, (size_t)n);
    if (rc != KMB_OK) return rc;
    for (size_t i = 0; i < (size_t)n; i++) {
        out->positions[i] = kmb_load_u64le(p + kmb_idx_entry_at(i));
    }
    out->count = (size_t)n;
    return KMB_OK;
}

/* The number of leading entries of pos[0..n) whose successive gaps all lie in [lo, hi]. */
static size_t gaps_good(const uint64_t *pos, size_t from, size_t n, uint64_t lo, uint64_t hi)
{
    for (size_t i = from < 1 ? 1 : from; i < n; i++) {
        uint64_t gap = pos[i] - pos[i - 1];
        if (pos[i] < pos[i - 1] || gap < lo || gap > hi) return i;
    }
    return n;
}

/* Entries per step of the fused CRC + gap pass: 64 KiB, which stays in a core's cache. */
#define FUSED_STEP 8192

int kmb_index_adopt_checked(kmb_index *out, uint8_t *data, size_t len, uint64_t min_gap,
                            uint64_t max_gap, size_t *good)
{
    const uint16_t probe = 1;
    int little = *(const uint8_t *)&probe == 1;
    uint64_t n = 0;
    if (good) *good = 0;
    kmb_index_truncate(out, 0);
    if (!little || data == NULL || check_header(data, (uint64_t)len, &n) != KMB_OK || n == 0) {
        int rc = kmb_index_decode(out, data, len); /* reports the error, or decodes */
        kmb_index_buffer_free(data);
        if (rc == KMB_OK && good)
            *good = gaps_good(out->positions, 1, out->count, min_gap, max_gap);
        return rc;
    }
    /* The entries are u64 little-endian, as the host's, and 8-aligned in the (16-aligned)
     * buffer: they are used where they are. The CRC and the gap check run over the same
     * cache-sized steps, so the image crosses the memory bus once. */
    const uint64_t *pos = (const uint64_t *)(const void *)(data + kmb_idx_entry_at(0));
    size_t count = (size_t)n, found = count;
    uint64_t span = max_gap >= min_gap ? max_gap - min_gap : 0;
    uint32_t crc = kmb_crc32_update(0, data, KMB_INDEX_HEADER_SIZE);
    for (size_t e0 = 0; e0 < count; e0 += FUSED_STEP) {
        size_t e1 = count - e0 < FUSED_STEP ? count : e0 + FUSED_STEP;
        crc = kmb_crc32_update(crc, pos + e0, (e1 - e0) * sizeof(uint64_t));
        if (good == NULL || found < count) continue;
        /* One unsigned comparison per gap and no branch (vectorisable): a decreasing entry
         * or a gap below min_gap wraps to a huge (gap - min_gap). */
        int bad = 0;
        for (size_t i = e0 < 1 ? 1 : e0; i < e1; i++) bad |= pos[i] - pos[i - 1] - min_gap > span;
        if (bad) found = gaps_good(pos, e0, e1, min_gap, max_gap);
    }
    uint32_t stored = kmb_load_u32le(data + len - KMB_INDEX_TRAILER_SIZE);
    if (stored != crc) {
        kmb_index_buffer_free(data);
        return kmb_error_set(KMB_EINDEX, 0,
                             "offset index CRC mismatch: stored 0x%08" PRIx32
                             ", computed 0x%08" PRIx32 " (%s)",
                             stored, crc, REBUILD_HINT);
    }
    kmb_index_free(out);
    out->block = data;
    out->positions = (uint64_t *)(void *)(data + kmb_idx_entry_at(0));
    out->count = count;
    out->capacity = count; /* the trailer follows: appending reallocates */
    if (good) *good = found;
    return KMB_OK;
}

int kmb_index_adopt_partial(kmb_index *out, uint8_t *data, size_t len, size_t lo,
                            uint64_t min_gap, uint64_t max_gap, size_t *good)
{
    const uint16_t probe = 1;
    uint64_t n = 0;
    if (good) *good = 0;
    kmb_index_free(out);
    int rc = KMB_OK;
    if (*(const uint8_t *)&probe != 1) {
        rc = kmb_error_set(KMB_EINVAL, 0, "partial offset index loads need a little-endian "
                           "host");
    } else if (data == NULL) {
        rc = kmb_error_set(KMB_EINVAL, 0, "no offset index image");
    } else {
        rc = check_header(data, (uint64_t)len, &n);
        if (rc == KMB_OK && (lo < 1 || lo >= n))
            rc = kmb_error_set(KMB_EINVAL, 0, "partial offset index window from entry %zu "
                               "of %" PRIu64 ": it must start in 1 .. N-1", lo, n);
    }
    if (rc != KMB_OK) {
        kmb_index_buffer_free(data);
        return rc;
    }
    out->block = data;
    out->positions = (uint64_t *)(void *)(data + kmb_idx_entry_at(0));
    out->count = (size_t)n;
    out->capacity = (size_t)n;
    out->lo = lo;
    if (good) *good = gaps_good(out->positions, lo + 1, (size_t)n, min_gap, max_gap);
    return KMB_OK;
}

int kmb_index_complete(kmb_index *ix, size_t used, uint8_t *data, size_t len, uint64_t min_gap,
                       uint64_t max_gap)
{
    if (ix->lo == 0) {
        kmb_index_buffer_free(data);
        return KMB_OK;
    }
    kmb_index whole;
    size_t good = 0;
    kmb_index_init(&whole);
    int rc = kmb_index_adopt_checked(&whole, data, len, min_gap, max_gap, &good);
    if (rc != KMB_OK) return rc; /* data freed */
    size_t lo = ix->lo, count = ix->count;
    if (used > count) used = count;
    const char *why = NULL;
    if (whole.count < used) why = "it has fewer entries than were used";
    else if (good < used) why = "an entry is out of order or too far from the one before it";
    else if (whole.positions[0] != ix->positions[0]) why = "entry 0 differs";
    else if (used > lo && memcmp(whole.positions + lo, ix->positions + lo,
                                 (used - lo) * sizeof(uint64_t)) != 0)
        why = "entries already used differ";
    if (why) {
        kmb_index_free(&whole);
        return kmb_error_set(KMB_EINDEX, 0, "offset index changed or damaged since it was "
                             "partly loaded: %s (%s)", why, REBUILD_HINT);
    }
    if (ix->block && count <= whole.count) {
        /* Still the partial image: take the whole one, with what was added since. */
        if (count > used)
            memcpy(whole.positions + used, ix->positions + used, (count - used) * sizeof(uint64_t));
        kmb_index_free(ix);
        *ix = whole;
        ix->count = count;
    } else {
        /* The array (or the partial image) has room for entries 1 .. lo-1: fill them in. */
        memcpy(ix->positions + 1, whole.positions + 1, (lo - 1) * sizeof(uint64_t));
        kmb_index_free(&whole);
    }
    ix->lo = 0;
    return KMB_OK;
}

int kmb_index_adopt(kmb_index *out, uint8_t *data, size_t len)
{
    return kmb_index_adopt_checked(out, data, len, 0, UINT64_MAX, NULL);
}

/* Record an I/O failure on `path` (errno preserved for StorageIOError). */
static int io_error(int err, const char *what, const char *path)
{
    kmb_error_set(KMB_EIO, err, "cannot %s offset index file %s: %s", what, path, strerror(err));
    snprintf(kmb_error_mut()->path, sizeof kmb_error_mut()->path, "%s", path);
    return KMB_EIO;
}

/* Prefix the current error message with the file it concerns and set its path. */
static void add_path_context(const char *path)
{
    kmb_error *e = kmb_error_mut();
    char msg[sizeof e->message];
    memcpy(msg, e->message, sizeof msg);
    /* Truncating a long message is fine: it stays NUL-terminated and the path is in ->path. */
    if (snprintf(e->message, sizeof e->message, "%s: %s", path, msg) < 0) e->message[0] = '\0';
    snprintf(e->path, sizeof e->path, "%s", path);
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int kmb_index_save(const kmb_index *ix, const char *path)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    char *tmp = NULL;
    int fd = -1;
    int rc = kmb_index_encode(ix, &buf, &len);
    if (rc != KMB_OK) goto cleanup;

    size_t plen = strlen(path);
    tmp = malloc(plen + sizeof ".tmp");
    if (tmp == NULL) {
        rc = kmb_error_set(KMB_ENOMEM, 0, "out of memory saving offset index %s", path);
        goto cleanup;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", sizeof ".tmp");

    /* O_NONBLOCK: a FIFO there fails at once (ENXIO) instead of waiting for a reader. */
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NONBLOCK, 0644);
    if (fd < 0) {
        rc = io_error(errno, "create", tmp);
        goto cleanup;
    }
    if (write_all(fd, buf, len) != 0) {
        rc = io_error(errno, "write", tmp);
        goto cleanup;
    }
    int fd_to_close = fd;
    fd = -1;
    if (close(fd_to_close) != 0) {
        rc = io_error(errno, "write", tmp);
        goto cleanup;
    }
    /* rename is atomic: a reader sees the previous index or this one, never a mixture. */
    if (rename(tmp, path) != 0) {
        rc = io_error(errno, "replace", path);
        goto cleanup;
    }
    rc = KMB_OK;

cleanup:
    if (fd >= 0) close(fd);
    if (rc != KMB_OK && tmp != NULL) unlink(tmp); /* best effort: don't leave debris */
    free(tmp);
    free(buf);
    return rc;
}

/* Read up to n bytes at pos; *got < n only at end of file. */
static int read_at(int fd, uint8_t *buf, size_t n, uint64_t pos, size_t *got)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, buf + done, n - done, (off_t)(pos + done));
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) break;
        done += (size_t)r;
    }
    *got = done;
    return 0;
}

int kmb_index_load(kmb_index *out, const char *path)
{
    uint8_t hdr[KMB_INDEX_HEADER_SIZE];
    uint8_t *buf = NULL;
    uint64_t n = 0;
    size_t got = 0;
    struct stat stbuf;
    int rc;

    kmb_index_truncate(out, 0);
    /* O_NONBLOCK: opening a FIFO must not wait for a writer; only regular files are read. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return io_error(errno, "open", path);
    if (fstat(fd, &stbuf) != 0) {
        rc = io_error(errno, "stat", path);
        goto cleanup;
    }
    if (!S_ISREG(stbuf.st_mode)) {
        int err = S_ISDIR(stbuf.st_mode) ? EISDIR : EINVAL;
        kmb_error_set(KMB_EIO, err, "cannot load offset index file %s: it is not a regular file "
                      "(a FIFO, device, socket or directory); give the path of an index file",
                      path);
        snprintf(kmb_error_mut()->path, sizeof kmb_error_mut()->path, "%s", path);
        rc = KMB_EIO;
        goto cleanup;
    }
    /* Validate the header against the real size before allocating anything for it. */
    uint64_t size = (uint64_t)stbuf.st_size;
    if (read_at(fd, hdr, sizeof hdr, 0, &got) != 0) {
        rc = io_error(errno, "read", path);
        goto cleanup;
    }
    rc = check_header(hdr, got < sizeof hdr ? got : size, &n);
    if (rc != KMB_OK) {
        add_path_context(path);
        goto cleanup;
    }
    if (size > SIZE_MAX) {
        rc = kmb_error_set(KMB_ENOMEM, 0, "offset index file %s is too large to load", path);
        goto cleanup;
    }
    buf = malloc((size_t)size);
    if (buf == NULL) {
        rc = kmb_error_set(KMB_ENOMEM, 0, "out of memory loading offset index %s", path);
        goto cleanup;
    }
    /* The file may shrink meanwhile; decode then reports the size it really has. */
    if (read_at(fd, buf, (size_t)size, 0, &got) != 0) {
        rc = io_error(errno, "read", path);
        goto cleanup;
    }
    rc = kmb_index_decode(out, buf, got);
    if (rc == KMB_EINDEX) add_path_context(path);

cleanup:
    close(fd);
    free(buf);
    return rc;
}
