/*
 * test_storage.c — the engine through storage.h, on the memory backend and on a temp dir:
 * append and read, the SPEC's exact segment bytes, rotation, reopen, verify, recovery of a
 * torn tail and detection of damage. Built only when csrc/storage.c exists (see Makefile).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include "harness.h"
#include "kimberlite/errors.h"
#include "kimberlite/storage.h"

#define HASH0 "29663b9a32ee32c2ca5a645117696ce0888c84b39f8fd91c0ec4ebcd09025df4"
#define HASH1 "c0351898aed9916debcc05905fb10161c329785aaa559dbc85fc1571516b6f6e"

/* Outputs of verify calls whose head the test doesn't inspect (they may not be NULL). */
static uint8_t vhead[32];
static int vhas;
static uint64_t vnext;

static kmb_slice ev(const char *s) { return (kmb_slice){s, strlen(s)}; }

/* Read a whole file into a malloc'd buffer; NULL on failure. */
static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    uint8_t *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, 1 << 20, f) : 0;
    fclose(f);
    *len = n;
    return buf;
}

static int flip_byte(const char *path, long at)
{
    FILE *f = fopen(path, "r+b");
    if (f == NULL) return 0;
    int ok = fseek(f, at, SEEK_SET) == 0;
    int c = ok ? fgetc(f) : EOF;
    ok = ok && c != EOF && fseek(f, at, SEEK_SET) == 0 && fputc(c ^ 0x01, f) != EOF;
    fclose(f);
    return ok;
}

/* Append events "e0", "e1", … one batch each; 1 if all succeed. */
static int append_n(kmb_storage *st, uint64_t stream, int n, int fsync)
{
    for (int i = 0; i < n; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "e%d", i);
        kmb_slice s = ev(buf);
        if (kmb_storage_append(st, stream, &s, 1, NULL, fsync, NULL) != KMB_OK) return 0;
    }
    return 1;
}

/* Shared by both backends: the SPEC vectors, reads, chain links, argument errors. */
static void check_basic_behaviour(kmb_storage *st)
{
    uint8_t h0[32], h1[32], head[32];
    kt_unhex(h0, 32, HASH0);
    kt_unhex(h1, 32, HASH1);
    kmb_slice batch[2] = {ev("event1"), ev("event2")};
    uint64_t next = 0;
    int has = 1;

    CHECK_EQ_INT(kmb_storage_next_offset(st, 1, &next), KMB_OK);
    CHECK_EQ_U64(next, 0);
    CHECK_EQ_INT(kmb_storage_head(st, 1, head, &has), KMB_OK);
    CHECK_EQ_INT(has, 0);
    CHECK_EQ_INT(kmb_storage_append(st, 1, batch, 2, NULL, 1, &next), KMB_OK);
    CHECK_EQ_U64(next, 2);
    CHECK_EQ_INT(kmb_storage_head(st, 1, head, &has), KMB_OK);
    CHECK(has && memcmp(head, h1, 32) == 0);

    kmb_read_result rr;
    memset(&rr, 0, sizeof rr);
    CHECK_EQ_INT(kmb_storage_read(st, 1, 0, KMB_NO_LIMIT, &rr), KMB_OK);
    int ok = rr.count == 2 && rr.records[0].offset == 0 && rr.records[1].offset == 1 &&
             rr.records[0].length == 6 && memcmp(rr.records[0].payload, "event1", 6) == 0 &&
             memcmp(rr.records[1].payload, "event2", 6) == 0 &&
             kmb_hash_is_zero(rr.records[0].prev_hash) &&
             memcmp(rr.records[1].prev_hash, h0, 32) == 0 && rr.payload_bytes == 12;
    /* max_bytes: the event that crosses the limit is included; 0 returns nothing. */
    ok = ok && kmb_storage_read(st, 1, 0, 1, &rr) == KMB_OK && rr.count == 1;
    ok = ok && kmb_storage_read(st, 1, 0, 0, &rr) == KMB_OK && rr.count == 0;
    ok = ok && kmb_storage_read(st, 1, 1, KMB_NO_LIMIT, &rr) == KMB_OK && rr.count == 1 &&
         rr.records[0].offset == 1;
    ok = ok && kmb_storage_read(st, 1, 2, KMB_NO_LIMIT, &rr) == KMB_OK && rr.count == 0;
    ok = ok && kmb_storage_read(st, 99, 0, KMB_NO_LIMIT, &rr) == KMB_OK && rr.count == 0;
    kmb_read_result_free(&rr);
    CHECK(ok);

    /* Nothing is written on a bad batch. */
    uint64_t wrong = 5, right = 2;
    kmb_slice one = ev("x");
    CHECK_EQ_INT(kmb_storage_append(st, 1, &one, 0, NULL, 0, NULL), KMB_EINVAL);
    CHECK_EQ_INT(kmb_storage_append(st, 1, &one, 1, &wrong, 0, NULL), KMB_EOFFSET);
    CHECK_EQ_U64(kmb_error_last()->expected_offset, 5);
    CHECK_EQ_U64(kmb_error_last()->actual_offset, 2);
    CHECK_EQ_INT(kmb_storage_append(st, 1, &one, 1, &right, 0, &next), KMB_OK);
    CHECK_EQ_U64(next, 3);

    uint8_t got[32];
    CHECK_EQ_INT(kmb_storage_verify(st, 1, NULL, &next, got, &has), KMB_OK);
    CHECK(next == 3 && has);
    CHECK_EQ_INT(kmb_storage_verify(st, 1, got, &next, head, &has), KMB_OK);
    CHECK_EQ_INT(kmb_storage_verify(st, 1, h1, &next, head, &has), KMB_ECHAIN);

    uint64_t *streams = NULL;
    size_t nstreams = 0;
    CHECK_EQ_INT(kmb_storage_streams(st, &streams, &nstreams), KMB_OK);
    ok = nstreams == 1 && streams[0] == 1;
    free(streams);
    CHECK(ok);
}

TEST(storage_memory_appends_reads_and_verifies)
{
    kmb_storage *st = NULL;
    CHECK_EQ_INT(kmb_storage_open_memory(&st, NULL), KMB_OK);
    check_basic_behaviour(st);
    kmb_storage_free(st);
}

TEST(storage_disk_appends_reads_and_verifies)
{
    char dir[512];
    CHECK(kt_make_temp_dir(dir, sizeof dir));
    kmb_storage *st = NULL;
    if (kmb_storage_open(&st, dir, NULL) == KMB_OK) {
        check_basic_behaviour(st);
        kmb_storage_free(st);
    } else {
        kt_fail(__FILE__, __LINE__, "open %s", dir);
    }
    kt_remove_tree(dir);
}

TEST(storage_disk_segment_file_is_exactly_the_spec_bytes)
{
    char dir[512], path[640];
    CHECK(kt_make_temp_dir(dir, sizeof dir));
    kmb_storage *st = NULL;
    kmb_slice batch[2] = {ev("event1"), ev("event2")};
    int ok = kmb_storage_open(&st, dir, NULL) == KMB_OK &&
             kmb_storage_append(st, 7, batch, 2, NULL, 1, NULL) == KMB_OK &&
             kmb_storage_close(st) == KMB_OK;
    kmb_storage_free(st);
    snprintf(path, sizeof path, "%s/7/segment_000000.log", dir);
    size_t len = 0;
    uint8_t *got = slurp(path, &len);
    uint8_t want[108];
    kt_unhex(want, 54,
             "0000000000000000 0000000000000000000000000000000000000000000000000000000000000000"
             " 06000000 6576656e7431 0cda0e68");
    kt_unhex(want + 54, 54, "0100000000000000 " HASH0 " 06000000 6576656e7432 6114639d");
    ok = ok && got != NULL && len == 108 && memcmp(got, want, 108) == 0;
    free(got);
    kt_remove_tree(dir);
    CHECK(ok);
}

static void check_rotation(kmb_storage *st)
{
    /* "eN" events make 50-byte records; a 100-byte limit seals a segment every 2 batches. */
    CHECK(append_n(st, 3, 7, 0));
    uint64_t segs = 0, next = 0;
    CHECK_EQ_INT(kmb_storage_segment_count(st, 3, &segs), KMB_OK);
    CHECK_EQ_U64(segs, 4); /* 0,1,2 sealed (2 records each), 3 active with 1 record */
    uint32_t *sealed = NULL;
    size_t nsealed = 0;
    CHECK_EQ_INT(kmb_storage_completed_segments(st, 3, &sealed, &nsealed), KMB_OK);
    int ok = nsealed == 3 && sealed[0] == 0 && sealed[1] == 1 && sealed[2] == 2;
    free(sealed);
    CHECK(ok);
    /* A read crossing segments keeps offsets and chain continuous. */
    kmb_read_result rr;
    memset(&rr, 0, sizeof rr);
    CHECK_EQ_INT(kmb_storage_read(st, 3, 1, KMB_NO_LIMIT, &rr), KMB_OK);
    ok = rr.count == 6;
    for (size_t i = 0; ok && i < rr.count; i++) {
        char want[32];
        snprintf(want, sizeof want, "e%zu", i + 1);
        ok = rr.records[i].offset == i + 1 && memcmp(rr.records[i].payload, want, 2) == 0;
        if (ok && i > 0) {
            uint8_t h[32];
            kmb_record_hash(h, &rr.records[i - 1]);
            ok = memcmp(rr.records[i].prev_hash, h, 32) == 0;
        }
    }
    kmb_read_result_free(&rr);
    CHECK(ok);
    CHECK_EQ_INT(kmb_storage_verify(st, 3, NULL, &next, vhead, &vhas), KMB_OK);
    CHECK_EQ_U64(next, 7);
}

TEST(storage_memory_rotates_at_max_segment_size)
{
    kmb_options o;
    kmb_options_init(&o);
    o.max_segment_size = 100;
    kmb_storage *st = NULL;
    CHECK_EQ_INT(kmb_storage_open_memory(&st, &o), KMB_OK);
    check_rotation(st);
    kmb_storage_free(st);
}

TEST(storage_disk_rotates_then_reopens_with_records_and_chain_intact)
{
    char dir[512];
    CHECK(kt_make_temp_dir(dir, sizeof dir));
    kmb_options o;
    kmb_options_init(&o);
    o.max_segment_size = 100;
    kmb_storage *st = NULL;
    if (kmb_storage_open(&st, dir, &o) != KMB_OK) {
        kt_fail(__FILE__, __LINE__, "open");
        kt_remove_tree(dir);
        return;
    }
    check_rotation(st);
    uint8_t head[32], head2[32];
    int has = 0;
    int ok = kmb_storage_head(st, 3, head, &has) == KMB_OK && has;
    kmb_storage_free(st);
    st = NULL;

    uint64_t next = 0, segs = 0;
    ok = ok && kmb_storage_open(&st, dir, &o) == KMB_OK;
    ok = ok && kmb_storage_next_offset(st, 3, &next) == KMB_OK && next == 7;
    ok = ok && kmb_storage_segment_count(st, 3, &segs) == KMB_OK && segs == 4;
    ok = ok && kmb_storage_verify(st, 3, head, &next, head2, &has) == KMB_OK && next == 7 &&
         memcmp(head, head2, 32) == 0;
    kmb_slice one = ev("after");
    ok = ok && kmb_storage_append(st, 3, &one, 1, NULL, 1, &next) == KMB_OK && next == 8;
    ok = ok && kmb_storage_verify(st, 3, NULL, &next, vhead, &vhas) == KMB_OK && next == 8;
    kmb_storage_free(st);
    kt_remove_tree(dir);
    CHECK(ok);
}

TEST(storage_second_writer_is_locked_out_and_readers_are_not)
{
    char dir[512];
    CHECK(kt_make_temp_dir(dir, sizeof dir));
    kmb_storage *a = NULL, *b = NULL, *r = NULL;
    kmb_options ro;
    kmb_options_init(&ro);
    ro.read_only = 1;
    int ok = kmb_storage_open(&a, dir, NULL) == KMB_OK && append_n(a, 1, 2, 0);
    ok = ok && kmb_storage_open(&b, dir, NULL) == KMB_ELOCKED && b == NULL;
    uint64_t next = 0;
    ok = ok && kmb_storage_open(&r, dir, &ro) == KMB_OK &&
         kmb_storage_next_offset(r, 1, &next) == KMB_OK && next == 2;
    kmb_slice one = ev("no");
    ok = ok && kmb_storage_append(r, 1, &one, 1, NULL, 0, NULL) == KMB_EREADONLY;
    kmb_storage_free(r);
    kmb_storage_free(b);
    kmb_storage_free(a);
    kt_remove_tree(dir);
    CHECK(ok);
}

TEST(storage_read_only_open_of_missing_directory_is_eio_enoent)
{
    char dir[512], path[600];
    CHECK(kt_make_temp_dir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/absent", dir);
    kmb_options ro;
    kmb_options_init(&ro);
    ro.read_only = 1;
    kmb_storage *st = NULL;
    int rc = kmb_storage_open(&st, path, &ro);
    int err = kmb_error_last()->sys_errno;
    kmb_storage_free(st);
    kt_remove_tree(dir);
    CHECK_EQ_INT(rc, KMB_EIO);
    CHECK_EQ_INT(err, ENOENT);
}

/* 1 if a file whose name contains "torn" exists in dir. */
static int has_torn_file(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) return 0;
    int found = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) found |= strstr(e->d_name, "torn") != NULL;
    closedir(d);
    return found;
}

TEST(storage_torn_tail_is_quarantined_and_stream_stays_usable)
{
    char dir[512], seg[640], sdir[600];
    CHECK(kt_make_temp_dir(dir, sizeof dir));
    kmb_storage *st = NULL;
    int ok = kmb_storage_open(&st, dir, NULL) == KMB_OK && append_n(st, 5, 3, 1);
    kmb_storage_free(st);
    st = NULL;
    snprintf(sdir, sizeof sdir, "%s/5", dir);
    snprintf(seg, sizeof seg, "%s/segment_000000.log", sdir);
    /* Half a record at the end: an append that never returned. */
    FILE *f = fopen(seg, "ab");
    ok = ok && f != NULL && fwrite("\x03\0\0\0\0\0\0\0garbage", 1, 15, f) == 15;
    if (f) fclose(f);
    uint64_t next = 0;
    ok = ok && kmb_storage_open(&st, dir, NULL) == KMB_OK;
    kmb_slice one = ev("e3");
    ok = ok && kmb_storage_append(st, 5, &one, 1, NULL, 1, &next) == KMB_OK && next == 4;
    ok = ok && kmb_storage_verify(st, 5, NULL, &next, vhead, &vhas) == KMB_OK && next == 4;
    kmb_storage_free(st);
    ok = ok && has_torn_file(sdir);
    kt_remove_tree(dir);
    CHECK(ok);
}

TEST(storage_damage_in_sealed_segment_is_corruption_on_read_and_append)
{
    char dir[512], seg[640];
    CHECK(kt_make_temp_dir(dir, sizeof dir));
    kmb_options o;
    kmb_options_init(&o);
    o.max_segment_size = 100;
    kmb_storage *st = NULL;
    int ok = kmb_storage_open(&st, dir, &o) == KMB_OK && append_n(st, 2, 5, 0);
    kmb_storage_free(st);
    st = NULL;
    snprintf(seg, sizeof seg, "%s/2/segment_000000.log", dir);
    ok = ok && flip_byte(seg, 45); /* a payload byte of record 0 */
    kmb_read_result rr;
    memset(&rr, 0, sizeof rr);
    ok = ok && kmb_storage_open(&st, dir, &o) == KMB_OK;
    int rc_read = ok ? kmb_storage_read(st, 2, 0, KMB_NO_LIMIT, &rr) : 0;
    int rc_verify = ok ? kmb_storage_verify(st, 2, NULL, &vnext, vhead, &vhas) : 0;
    kmb_slice one = ev("x");
    int rc_append = ok ? kmb_storage_append(st, 2, &one, 1, NULL, 0, NULL) : 0;
    /* Reads that don't reach the damage still work. */
    int rc_later = ok ? kmb_storage_read(st, 2, 3, KMB_NO_LIMIT, &rr) : -1;
    size_t later = rr.count;
    kmb_read_result_free(&rr);
    kmb_storage_free(st);
    kt_remove_tree(dir);
    CHECK(ok);
    CHECK_EQ_INT(rc_read, KMB_ECORRUPT);
    CHECK_EQ_INT(rc_verify, KMB_ECORRUPT);
    CHECK_EQ_INT(rc_append, KMB_ECORRUPT);
    CHECK_EQ_INT(rc_later, KMB_OK);
    CHECK_EQ_U64(later, 2);
}

TEST(storage_closed_storage_refuses_calls_and_close_is_idempotent)
{
    kmb_storage *st = NULL;
    CHECK_EQ_INT(kmb_storage_open_memory(&st, NULL), KMB_OK);
    CHECK_EQ_INT(kmb_storage_close(st), KMB_OK);
    CHECK_EQ_INT(kmb_storage_close(st), KMB_OK);
    CHECK(kmb_storage_is_closed(st));
    uint64_t next;
    int rc = kmb_storage_next_offset(st, 1, &next);
    kmb_storage_free(st);
    CHECK_EQ_INT(rc, KMB_ECLOSED);
}
