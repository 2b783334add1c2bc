/*
 * test_backend.c — the engine's side of the backend interface (sys/backend.h): the version
 * and required callbacks are checked, a stored index is decoded and checked by the engine
 * for every backend (so a bad index in the memory backend is rebuilt exactly as on disk),
 * and a stored index larger than its segment could need is never read: it is rebuilt.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "kimberlite/errors.h"
#include "kimberlite/index.h"
#include "kimberlite/storage.h"
#include "kimberlite/sys/backend.h"

/* The event callback's messages, joined by newlines. */
static char notes[8192];

static void collect_note(void *ctx, const char *msg)
{
    (void)ctx;
    size_t used = strlen(notes);
    snprintf(notes + used, sizeof notes - used, "%s\n", msg);
}

static int append2(kmb_storage *st)
{
    kmb_slice batch[2] = {{"first", 5}, {"second", 6}};
    return kmb_storage_append(st, 1, batch, 2, NULL, 0, NULL) == KMB_OK;
}

/* Read stream 1 whole and verify it; 1 if it holds exactly its two records. */
static int two_records_intact(kmb_storage *st)
{
    kmb_read_result r;
    memset(&r, 0, sizeof r);
    int ok = kmb_storage_read(st, 1, 0, KMB_NO_LIMIT, &r) == KMB_OK && r.count == 2 &&
             r.records[1].length == 6 && memcmp(r.records[1].payload, "second", 6) == 0;
    kmb_read_result_free(&r);
    uint64_t next = 0;
    uint8_t head[KMB_HASH_SIZE];
    int has = 0;
    return ok && kmb_storage_verify(st, 1, NULL, &next, head, &has) == KMB_OK && next == 2;
}

TEST(backend_of_another_interface_version_is_refused_and_released)
{
    kmb_backend *b = NULL;
    CHECK_EQ_INT(kmb_backend_memory_new(&b), KMB_OK);
    b->version = KMB_BACKEND_VERSION + 1;
    kmb_storage *st = (kmb_storage *)&notes; /* must be reset to NULL */
    /* Ownership passes in every case: the sanitizer's leak check proves b was freed. */
    CHECK_EQ_INT(kmb_storage_open_backend(&st, b, NULL), KMB_EINVAL);
    CHECK(st == NULL);
    CHECKF(strstr(kmb_error_last()->message, "version") != NULL, "message: %s",
           kmb_error_last()->message);
}

TEST(backend_missing_a_required_callback_is_refused_by_name)
{
    kmb_backend *b = NULL;
    CHECK_EQ_INT(kmb_backend_memory_new(&b), KMB_OK);
    b->save_index = NULL;
    kmb_storage *st = NULL;
    CHECK_EQ_INT(kmb_storage_open_backend(&st, b, NULL), KMB_EINVAL);
    CHECK(st == NULL);
    CHECKF(strstr(kmb_error_last()->message, "save_index") != NULL, "message: %s",
           kmb_error_last()->message);
}

TEST(backend_memory_has_no_fault_layer_and_disk_writer_is_process_bound)
{
    kmb_backend *b = NULL;
    CHECK_EQ_INT(kmb_backend_memory_new(&b), KMB_OK);
    CHECK(b->fault_plan == NULL && (b->flags & KMB_BACKEND_PROCESS_BOUND) == 0);
    b->free(b);
    char dir[512];
    CHECK(kt_make_temp_dir(dir, sizeof dir));
    CHECK_EQ_INT(kmb_backend_disk_open(&b, dir, 0), KMB_OK);
    int writer_bound = (b->flags & KMB_BACKEND_PROCESS_BOUND) != 0 && b->fault_plan != NULL;
    b->free(b);
    CHECK_EQ_INT(kmb_backend_disk_open(&b, dir, 1), KMB_OK);
    int reader_bound = (b->flags & KMB_BACKEND_PROCESS_BOUND) != 0;
    b->free(b);
    kt_remove_tree(dir);
    CHECK(writer_bound);
    CHECK(!reader_bound);
}

TEST(backend_memory_bad_stored_index_is_rebuilt_like_on_disk)
{
    kmb_backend *b = NULL;
    kmb_storage *st = NULL;
    CHECK_EQ_INT(kmb_backend_memory_new(&b), KMB_OK);
    CHECK_EQ_INT(kmb_storage_open_backend(&st, b, NULL), KMB_OK);
    notes[0] = '\0';
    kmb_storage_set_event_callback(st, collect_note, NULL);
    int ok = append2(st) && kmb_storage_flush_indexes(st) == KMB_OK;
    /* Damage the stored bytes behind the engine's back (calls are serialised: one thread). */
    static const uint8_t garbage[24] = "VDXI\x01 not an index....";
    ok = ok && b->save_index(b, 1, 0, garbage, sizeof garbage) == KMB_OK;
    /* Make the engine load the stream again, as a reopen would. */
    uint8_t *bytes = NULL;
    size_t len = 0;
    ok = ok && kmb_storage_segment_bytes(st, 1, 0, &bytes, &len) == KMB_OK &&
         kmb_storage_replace_segment_bytes(st, 1, 0, bytes, len) == KMB_OK;
    free(bytes);
    ok = ok && two_records_intact(st);
    kmb_storage_free(st);
    CHECK(ok);
    CHECKF(strstr(notes, "index of memory:1/segment_000000.log is damaged; rebuilding it"),
           "notes: %s", notes);
}

/* Write `len` bytes to path (replacing it); 1 on success. */
static int write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) return 0;
    int ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

/*
 * A directory whose stream 1 holds two records and a clean index, then `damage` applied to
 * that .idx; reopened, the stream must read whole, the note must say the index was not
 * used, and close must have rewritten the index at its true size.
 */
static void check_index_rebuilt(int (*damage)(const char *idx))
{
    char dir[512], idx[600];
    CHECK(kt_make_temp_dir(dir, sizeof dir));
    snprintf(idx, sizeof idx, "%s/1/segment_000000.log.idx", dir);
    kmb_storage *st = NULL;
    int ok = kmb_storage_open(&st, dir, NULL) == KMB_OK && append2(st);
    kmb_storage_free(st);
    st = NULL;
    ok = ok && damage(idx);
    notes[0] = '\0';
    ok = ok && kmb_storage_open(&st, dir, NULL) == KMB_OK;
    if (st) kmb_storage_set_event_callback(st, collect_note, NULL);
    ok = ok && two_records_intact(st);
    kmb_storage_free(st);
    struct stat sb;
    int rebuilt = stat(idx, &sb) == 0 && (uint64_t)sb.st_size == kmb_index_encoded_size(2);
    kt_remove_tree(dir);
    CHECK(ok);
    CHECKF(strstr(notes, "segment_000000.log is damaged; rebuilding it") != NULL, "notes: %s",
           notes);
    CHECK(rebuilt);
}

static int make_sparse_64g(const char *idx) { return truncate(idx, (off_t)64 << 30) == 0; }

static int claim_2_pow_60_entries(const char *idx)
{
    uint8_t hdr[KMB_INDEX_HEADER_SIZE + KMB_INDEX_TRAILER_SIZE] = "VDXI\x01";
    uint64_t n = (uint64_t)1 << 60;
    for (int i = 0; i < 8; i++) hdr[8 + i] = (uint8_t)(n >> (8 * i));
    return write_file(idx, hdr, sizeof hdr);
}

TEST(backend_disk_huge_sparse_index_is_not_read_but_rebuilt)
{
    check_index_rebuilt(make_sparse_64g);
}

TEST(backend_disk_index_claiming_2_pow_60_entries_is_rebuilt)
{
    check_index_rebuilt(claim_2_pow_60_entries);
}
