/*
 * test_index.c — the offset index in memory and its .idx file: exact layout, round trips,
 * and rejection of every kind of damage (bit flips, truncation, hostile entry counts).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "kimberlite/crc32.h"
#include "kimberlite/errors.h"
#include "kimberlite/index.h"
#include "kimberlite/record.h"

/* An index of n entries at positions 0, 54, 108, … (54-byte records). */
static int make_index(kmb_index *ix, size_t n)
{
    kmb_index_init(ix);
    for (size_t i = 0; i < n; i++) {
        if (kmb_index_append(ix, 54 * (uint64_t)i) != KMB_OK) return 0;
    }
    return 1;
}

/* Re-seal a hand-edited image with a correct CRC, so only the intended damage remains. */
static void reseal(uint8_t *buf, size_t len)
{
    kmb_store_u32le(buf + len - 4, kmb_crc32(buf, len - 4));
}

TEST(index_append_lookup_and_truncate)
{
    kmb_index ix;
    CHECK(make_index(&ix, 100));
    uint64_t pos = 0;
    CHECK_EQ_U64(ix.count, 100);
    CHECK(kmb_index_lookup(&ix, 99, &pos) == 1 && pos == 54 * 99);
    CHECK(kmb_index_lookup(&ix, 100, &pos) == 0);
    CHECK(kmb_index_lookup(&ix, UINT64_MAX, &pos) == 0);
    kmb_index_truncate(&ix, 500); /* past the end: no-op */
    CHECK_EQ_U64(ix.count, 100);
    kmb_index_truncate(&ix, 10);
    CHECK_EQ_U64(ix.count, 10);
    CHECK(kmb_index_lookup(&ix, 10, &pos) == 0);
    kmb_index_free(&ix);
    CHECK(ix.positions == NULL && ix.count == 0 && ix.capacity == 0);
    kmb_index_free(&ix); /* reusable and idempotent */
    kmb_index_free(NULL);
    CHECK_EQ_INT(kmb_index_append(&ix, 7), KMB_OK);
    CHECK(kmb_index_lookup(&ix, 0, &pos) == 1 && pos == 7);
    kmb_index_free(&ix);
}

TEST(index_copy_replaces_the_destination_and_keeps_the_source)
{
    kmb_index src, dst;
    CHECK(make_index(&src, 40));
    CHECK(make_index(&dst, 100)); /* longer than src: every old entry must go */
    CHECK_EQ_INT(kmb_index_copy(&dst, &src), KMB_OK);
    CHECK_EQ_U64(dst.count, 40);
    CHECK_EQ_U64(src.count, 40);
    CHECK(memcmp(dst.positions, src.positions, 40 * sizeof(uint64_t)) == 0);
    kmb_index empty;
    kmb_index_init(&empty);
    CHECK_EQ_INT(kmb_index_copy(&dst, &empty), KMB_OK);
    CHECK_EQ_U64(dst.count, 0);
    kmb_index_free(&src);
    kmb_index_free(&dst);
}

TEST(index_reserve_of_impossible_size_is_enomem_and_leaves_index_unchanged)
{
    kmb_index ix;
    CHECK(make_index(&ix, 3));
    uint64_t *before = ix.positions;
    size_t cap = ix.capacity;
    CHECK_EQ_INT(kmb_index_reserve(&ix, SIZE_MAX), KMB_ENOMEM);
    CHECK_EQ_INT(kmb_index_reserve(&ix, SIZE_MAX / 8), KMB_ENOMEM);
    CHECK(ix.positions == before && ix.capacity == cap && ix.count == 3);
    CHECK_EQ_INT(kmb_index_reserve(&ix, 1000), KMB_OK);
    CHECK(ix.capacity >= 1003 && ix.count == 3);
    kmb_index_free(&ix);
}

TEST(index_encoding_of_empty_index_is_exact)
{
    kmb_index ix;
    kmb_index_init(&ix);
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_EQ_INT(kmb_index_encode(&ix, &buf, &len), KMB_OK);
    uint8_t want[20] = {'V', 'D', 'X', 'I', 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    reseal(want, 20);
    int same = len == 20 && memcmp(buf, want, 20) == 0;
    free(buf);
    CHECK(same);
    CHECK_EQ_U64(kmb_index_encoded_size(0), 20);
    CHECK_EQ_U64(kmb_index_encoded_size(3), 44);
}

TEST(index_encoding_lays_out_count_positions_and_crc)
{
    kmb_index ix;
    CHECK(make_index(&ix, 3));
    ix.positions[2] = 0x0102030405060708u;
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_EQ_INT(kmb_index_encode(&ix, &buf, &len), KMB_OK);
    kmb_index_free(&ix);
    int ok = len == 44 && memcmp(buf, "VDXI\x01\0\0\0", 8) == 0 && kmb_load_u64le(buf + 8) == 3 &&
             kmb_load_u64le(buf + 16) == 0 && kmb_load_u64le(buf + 24) == 54 &&
             kmb_load_u64le(buf + 32) == 0x0102030405060708u &&
             kmb_load_u32le(buf + 40) == kmb_crc32(buf, 40);
    free(buf);
    CHECK(ok);
}

TEST(index_round_trips_through_encode_and_decode)
{
    static const size_t sizes[] = {0, 1, 2, 1000};
    for (size_t s = 0; s < 4; s++) {
        kmb_index ix, back;
        CHECK(make_index(&ix, sizes[s]));
        uint8_t *buf = NULL;
        size_t len = 0;
        CHECK_EQ_INT(kmb_index_encode(&ix, &buf, &len), KMB_OK);
        CHECK(make_index(&back, 5)); /* previous entries are replaced */
        int rc = kmb_index_decode(&back, buf, len);
        int same = rc == KMB_OK && back.count == ix.count &&
                   (ix.count == 0 || memcmp(back.positions, ix.positions, 8 * ix.count) == 0);
        free(buf);
        kmb_index_free(&ix);
        kmb_index_free(&back);
        CHECKF(same, "size %zu rc=%d", sizes[s], rc);
    }
}

TEST(index_decode_rejects_every_single_bit_flip)
{
    kmb_index ix, out;
    CHECK(make_index(&ix, 40));
    kmb_index_init(&out);
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_EQ_INT(kmb_index_encode(&ix, &buf, &len), KMB_OK);
    kmb_index_free(&ix);
    int bad = 0;
    for (size_t bit = 0; bit < len * 8 && !bad; bit++) {
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        CHECK(make_index(&out, 2));
        int rc = kmb_index_decode(&out, buf, len);
        if (rc != KMB_EINDEX || out.count != 0) {
            kt_fail(__FILE__, __LINE__, "bit %zu: rc=%d count=%zu", bit, rc, out.count);
            bad = 1;
        }
        kmb_index_free(&out);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    CHECK_EQ_INT(kmb_index_decode(&out, buf, len), KMB_OK); /* intact again */
    kmb_index_free(&out);
    free(buf);
}

TEST(index_adopt_matches_decode_takes_the_buffer_and_rejects_bit_flips)
{
    static const size_t sizes[] = {0, 1, 3, 1000};
    for (size_t s = 0; s < 4; s++) {
        kmb_index ix, back;
        CHECK(make_index(&ix, sizes[s]));
        uint8_t *buf = NULL;
        size_t len = 0;
        CHECK_EQ_INT(kmb_index_encode(&ix, &buf, &len), KMB_OK);
        uint8_t *owned = kmb_index_buffer_alloc(len);
        CHECK(owned != NULL);
        memcpy(owned, buf, len);
        free(buf);
        CHECK(make_index(&back, 5)); /* previous entries are replaced */
        int rc = kmb_index_adopt(&back, owned, len); /* owns it now */
        int same = rc == KMB_OK && back.count == ix.count &&
                   (ix.count == 0 || memcmp(back.positions, ix.positions, 8 * ix.count) == 0);
        /* the adopted index grows like any other */
        same = same && kmb_index_append(&back, 1u << 30) == KMB_OK && back.count == ix.count + 1;
        kmb_index_free(&ix);
        kmb_index_free(&back);
        CHECKF(same, "size %zu rc=%d", sizes[s], rc);
    }
    kmb_index ix, out;
    CHECK(make_index(&ix, 12));
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_EQ_INT(kmb_index_encode(&ix, &buf, &len), KMB_OK);
    kmb_index_free(&ix);
    int bad = 0;
    for (size_t bit = 0; bit < len * 8 && !bad; bit++) {
        uint8_t *copy = kmb_index_buffer_alloc(len);
        CHECK(copy != NULL);
        memcpy(copy, buf, len);
        copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        CHECK(make_index(&out, 2));
        int rc = kmb_index_adopt(&out, copy, len); /* frees copy on error */
        if (rc != KMB_EINDEX || out.count != 0) {
            kt_fail(__FILE__, __LINE__, "bit %zu: rc=%d count=%zu", bit, rc, out.count);
            bad = 1;
        }
        kmb_index_free(&out);
    }
    free(buf);
}

TEST(index_adopt_of_a_large_mapped_buffer_decodes_grows_and_rejects_damage)
{
    /* 200000 entries: 1.6 MB, past the size at which index buffers are mappings */
    kmb_index ix, back;
    CHECK(make_index(&ix, 200000));
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_EQ_INT(kmb_index_encode(&ix, &buf, &len), KMB_OK);
    for (int flip = 0; flip < 2; flip++) {
        uint8_t *owned = kmb_index_buffer_alloc(len);
        CHECK(owned != NULL);
        memcpy(owned, buf, len);
        if (flip) owned[len / 2] ^= 0x10; /* a bit in the middle of the entries */
        CHECK(make_index(&back, 3));
        int rc = kmb_index_adopt(&back, owned, len);
        if (flip) {
            CHECK_EQ_INT(rc, KMB_EINDEX);
            CHECK_EQ_U64(back.count, 0);
        } else {
            CHECK_EQ_INT(rc, KMB_OK);
            CHECK_EQ_U64(back.count, ix.count);
            CHECK(memcmp(back.positions, ix.positions, 8 * ix.count) == 0);
            /* growing moves the entries out of the file image, intact */
            CHECK_EQ_INT(kmb_index_append(&back, (uint64_t)1 << 40), KMB_OK);
            CHECK_EQ_U64(back.count, ix.count + 1);
            CHECK(back.block == NULL);
            CHECK(memcmp(back.positions, ix.positions, 8 * ix.count) == 0);
            CHECK(back.positions[ix.count] == (uint64_t)1 << 40);
        }
        kmb_index_free(&back);
    }
    kmb_index_buffer_free(NULL); /* ignored */
    kmb_index_free(&ix);
    free(buf);
}

TEST(index_decode_rejects_every_truncation_and_extension)
{
    kmb_index ix, out;
    CHECK(make_index(&ix, 10));
    kmb_index_init(&out);
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_EQ_INT(kmb_index_encode(&ix, &buf, &len), KMB_OK);
    kmb_index_free(&ix);
    int bad = 0;
    for (size_t cut = 0; cut < len && !bad; cut++) {
        uint8_t *p = malloc(cut ? cut : 1); /* exact size: ASan sees any over-read */
        if (p == NULL) break;
        memcpy(p, buf, cut);
        int rc = kmb_index_decode(&out, p, cut);
        free(p);
        if (rc != KMB_EINDEX) {
            kt_fail(__FILE__, __LINE__, "cut %zu: rc=%d", cut, rc);
            bad = 1;
        }
    }
    uint8_t *longer = calloc(1, len + 8);
    if (longer != NULL) {
        memcpy(longer, buf, len);
        for (size_t extra = 1; extra <= 8 && !bad; extra++) {
            if (kmb_index_decode(&out, longer, len + extra) != KMB_EINDEX) {
                kt_fail(__FILE__, __LINE__, "extended by %zu accepted", extra);
                bad = 1;
            }
        }
    }
    free(longer);
    free(buf);
    kmb_index_free(&out);
}

TEST(index_decode_rejects_huge_entry_count_without_allocating_it)
{
    static const uint64_t counts[] = {UINT64_MAX, UINT64_MAX / 8, UINT64_MAX / 8 + 1,
                                      (UINT64_C(1) << 61), (UINT64_C(1) << 61) + 1, 1, 3};
    uint8_t img[36] = {'V', 'D', 'X', 'I', 1}; /* room for exactly 2 entries */
    kmb_index out;
    kmb_index_init(&out);
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        kmb_store_u64le(img + 8, counts[i]);
        reseal(img, sizeof img); /* only the count is wrong */
        CHECKF(kmb_index_decode(&out, img, sizeof img) == KMB_EINDEX, "N=%" PRIu64, counts[i]);
        CHECK(strstr(kmb_error_last()->message, "size") != NULL);
        CHECK(out.positions == NULL); /* nothing was allocated */
    }
    kmb_store_u64le(img + 8, 2);
    reseal(img, sizeof img);
    CHECK_EQ_INT(kmb_index_decode(&out, img, sizeof img), KMB_OK);
    CHECK_EQ_U64(out.count, 2);
    kmb_index_free(&out);
}

TEST(index_decode_names_each_kind_of_damage)
{
    uint8_t img[28] = {'V', 'D', 'X', 'I', 1, 0, 0, 0, 1};
    kmb_index out;
    kmb_index_init(&out);
    struct {
        size_t at;
        uint8_t value;
        const char *word;
    } cases[] = {{0, 'X', "magic"}, {4, 2, "version"}, {4, 0, "version"},
                 {5, 1, "reserved"}, {7, 0x80, "reserved"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t copy[28];
        memcpy(copy, img, sizeof copy);
        copy[cases[i].at] = cases[i].value;
        reseal(copy, sizeof copy); /* a well-sealed file that is still wrong */
        CHECK_EQ_INT(kmb_index_decode(&out, copy, sizeof copy), KMB_EINDEX);
        CHECKF(strstr(kmb_error_last()->message, cases[i].word) != NULL, "case %zu: %s", i,
               kmb_error_last()->message);
    }
    uint8_t copy[28];
    memcpy(copy, img, sizeof copy);
    reseal(copy, sizeof copy);
    copy[27] ^= 1;
    CHECK_EQ_INT(kmb_index_decode(&out, copy, sizeof copy), KMB_EINDEX);
    CHECK(strstr(kmb_error_last()->message, "CRC") != NULL);
    CHECK_EQ_INT(kmb_index_decode(&out, copy, 19), KMB_EINDEX);
    CHECK(strstr(kmb_error_last()->message, "short") != NULL);
    kmb_index_free(&out);
}

TEST(index_save_then_load_round_trips_and_leaves_no_temp_file)
{
    char dir[512], path[600], tmp[620];
    CHECK(kt_make_temp_dir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/segment_000000.log.idx", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    kmb_index ix, back;
    kmb_index_init(&back);
    int ok = make_index(&ix, 500);
    ok = ok && kmb_index_save(&ix, path) == KMB_OK;
    ok = ok && kmb_index_load(&back, path) == KMB_OK;
    ok = ok && back.count == 500 && memcmp(back.positions, ix.positions, 8 * 500) == 0;
    ok = ok && access(tmp, F_OK) != 0;
    /* Saving again replaces the file. */
    kmb_index_truncate(&ix, 3);
    ok = ok && kmb_index_save(&ix, path) == KMB_OK && kmb_index_load(&back, path) == KMB_OK &&
         back.count == 3;
    kmb_index_free(&ix);
    kmb_index_free(&back);
    kt_remove_tree(dir);
    CHECK(ok);
}

TEST(index_load_of_missing_file_is_eio_with_enoent_and_path)
{
    char dir[512], path[600];
    CHECK(kt_make_temp_dir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/absent.idx", dir);
    kmb_index out;
    kmb_index_init(&out);
    int rc = kmb_index_load(&out, path);
    const kmb_error *e = kmb_error_last();
    int ok = rc == KMB_EIO && e->code == KMB_EIO && e->sys_errno == ENOENT &&
             strcmp(e->path, path) == 0 && strstr(e->message, path) != NULL;
    kt_remove_tree(dir);
    CHECK(ok);
}

TEST(index_load_of_damaged_file_is_eindex_with_path)
{
    char dir[512], path[600];
    CHECK(kt_make_temp_dir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/bad.idx", dir);
    kmb_index ix, out;
    kmb_index_init(&out);
    int ok = make_index(&ix, 4) && kmb_index_save(&ix, path) == KMB_OK;
    kmb_index_free(&ix);
    /* Flip one position bit on disk. */
    FILE *f = fopen(path, "r+b");
    ok = ok && f != NULL && fseek(f, 20, SEEK_SET) == 0 && fputc(0x40, f) != EOF;
    if (f) fclose(f);
    int rc = kmb_index_load(&out, path);
    const kmb_error *e = kmb_error_last();
    ok = ok && rc == KMB_EINDEX && strcmp(e->path, path) == 0 && strstr(e->message, path) &&
         out.count == 0;
    /* A file shorter than a header, and one whose count claims far more than it holds. */
    f = fopen(path, "wb");
    ok = ok && f != NULL && fwrite("VDXI\x01\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff\0\0\0\0", 1,
                                   20, f) == 20;
    if (f) fclose(f);
    ok = ok && kmb_index_load(&out, path) == KMB_EINDEX;
    f = fopen(path, "wb");
    ok = ok && f != NULL && fwrite("VDXI", 1, 4, f) == 4;
    if (f) fclose(f);
    ok = ok && kmb_index_load(&out, path) == KMB_EINDEX;
    kmb_index_free(&out);
    kt_remove_tree(dir);
    CHECK(ok);
}

TEST(index_save_into_missing_directory_is_eio)
{
    char dir[512], path[600];
    CHECK(kt_make_temp_dir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/no/such/dir.idx", dir);
    kmb_index ix;
    int ok = make_index(&ix, 2);
    int rc = kmb_index_save(&ix, path);
    kmb_index_free(&ix);
    const kmb_error *e = kmb_error_last();
    ok = ok && rc == KMB_EIO && e->sys_errno == ENOENT && e->path[0] != '\0';
    kt_remove_tree(dir);
    CHECK(ok);
}

/* ---------------------------------------------------------------- partial indexes */

/* The .idx image of make_index(n) (malloc'd, *len bytes). */
static uint8_t *image_of(size_t n, size_t *len)
{
    kmb_index ix;
    uint8_t *buf = NULL;
    if (!make_index(&ix, n)) return NULL;
    if (kmb_index_encode(&ix, &buf, len) != KMB_OK) buf = NULL;
    kmb_index_free(&ix);
    return buf;
}

/* What a partial load reads of `img`: the first 24 bytes and entries lo.. (and the CRC). */
static uint8_t *partial_buffer(const uint8_t *img, size_t len, size_t lo)
{
    uint8_t *p = kmb_index_buffer_reserve(len);
    if (!p) return NULL;
    for (size_t i = 0; i < len; i++) {
        if (p[i] != 0) return NULL; /* reserved buffers are zero */
    }
    memcpy(p, img, 24);
    size_t at = KMB_INDEX_HEADER_SIZE + 8 * lo;
    memcpy(p + at, img + at, len - at);
    return p;
}

/* make_index(n)'s image (returned, *len bytes; NULL on failure), partly adopted into *ix
 * (entries lo.. loaded), as a lazy open loads it. */
static uint8_t *partial_of(kmb_index *ix, size_t n, size_t lo, size_t *len)
{
    size_t good = 0;
    uint8_t *img = image_of(n, len);
    kmb_index_init(ix);
    if (img != NULL && kmb_index_adopt_partial(ix, partial_buffer(img, *len, lo), *len, lo, 54,
                                               54, &good) == KMB_OK)
        return img;
    free(img);
    return NULL;
}

/* A whole-image buffer for kmb_index_complete. */
static uint8_t *whole_buffer(const uint8_t *img, size_t len)
{
    uint8_t *p = kmb_index_buffer_alloc(len);
    if (p) memcpy(p, img, len);
    return p;
}

TEST(index_partial_adopt_loads_entry_zero_and_the_window_only)
{
    static const size_t sizes[] = {10, 5000, 200000}; /* 200000: a mapped buffer */
    for (size_t s = 0; s < 3; s++) {
        size_t n = sizes[s], len = 0, lo = n - 4, good = 0;
        uint8_t *img = image_of(n, &len);
        CHECK(img != NULL);
        kmb_index ix;
        CHECK(make_index(&ix, 3)); /* replaced */
        CHECK_EQ_INT(kmb_index_adopt_partial(&ix, partial_buffer(img, len, lo), len, lo, 54, 54,
                                             &good),
                     KMB_OK);
        CHECK_EQ_U64(ix.count, n);
        CHECK_EQ_U64(ix.lo, lo);
        CHECK_EQ_U64(good, n);
        uint64_t pos = 1;
        CHECK(kmb_index_has(&ix, 0) && kmb_index_lookup(&ix, 0, &pos) == 1 && pos == 0);
        CHECK(!kmb_index_has(&ix, 1) && kmb_index_lookup(&ix, 1, &pos) == 0);
        CHECK(!kmb_index_has(&ix, lo - 1) && kmb_index_has(&ix, lo));
        CHECK(kmb_index_lookup(&ix, n - 1, &pos) == 1 && pos == 54 * (uint64_t)(n - 1));
        CHECK(ix.positions[1] == 0); /* unread entries are zero: no record starts there */
        /* a partial index cannot be saved */
        uint8_t *enc = NULL;
        size_t elen = 0;
        CHECK_EQ_INT(kmb_index_encode(&ix, &enc, &elen), KMB_EINVAL);
        /* completed by the whole image: whole, the same as a full load */
        CHECK_EQ_INT(kmb_index_complete(&ix, n, whole_buffer(img, len), len, 54, 54), KMB_OK);
        CHECK_EQ_U64(ix.lo, 0);
        CHECK_EQ_U64(ix.count, n);
        int same = 1;
        for (size_t i = 0; i < n; i++) same = same && ix.positions[i] == 54 * (uint64_t)i;
        CHECK(same);
        kmb_index_free(&ix);
        free(img);
    }
}

TEST(index_partial_adopt_checks_the_header_the_window_and_lo)
{
    size_t n = 100, len = 0, good = 0;
    uint8_t *img = image_of(n, &len);
    CHECK(img != NULL);
    kmb_index ix;
    kmb_index_init(&ix);
    /* lo out of range: 0 and n */
    CHECK_EQ_INT(kmb_index_adopt_partial(&ix, partial_buffer(img, len, 1), len, 0, 54, 54, &good),
                 KMB_EINVAL);
    CHECK_EQ_INT(kmb_index_adopt_partial(&ix, partial_buffer(img, len, 1), len, n, 54, 54, &good),
                 KMB_EINVAL);
    CHECK(ix.count == 0 && ix.lo == 0 && good == 0);
    /* a length that does not match the header */
    CHECK_EQ_INT(kmb_index_adopt_partial(&ix, partial_buffer(img, len, 90), len - 8, 90, 54, 54,
                                         &good),
                 KMB_EINDEX);
    /* bad magic */
    uint8_t *p = partial_buffer(img, len, 90);
    p[0] ^= 1;
    CHECK_EQ_INT(kmb_index_adopt_partial(&ix, p, len, 90, 54, 54, &good), KMB_EINDEX);
    /* a bad gap inside the window: *good says where; one before it is not looked at */
    p = partial_buffer(img, len, 90);
    kmb_store_u64le(p + KMB_INDEX_HEADER_SIZE + 8 * 95, 54 * 95 + 1);
    CHECK_EQ_INT(kmb_index_adopt_partial(&ix, p, len, 90, 54, 54, &good), KMB_OK);
    CHECK_EQ_U64(good, 95);
    p = partial_buffer(img, len, 90);
    kmb_store_u64le(p + KMB_INDEX_HEADER_SIZE + 8 * 50, 7); /* unread anyway */
    CHECK_EQ_INT(kmb_index_adopt_partial(&ix, p, len, 90, 54, 54, &good), KMB_OK);
    CHECK_EQ_U64(good, n);
    kmb_index_free(&ix);
    free(img);
}

TEST(index_complete_refuses_an_image_that_disagrees_and_keeps_the_partial_index)
{
    size_t n = 300, len = 0, lo = 200;
    kmb_index ix;
    uint8_t *img = partial_of(&ix, n, lo, &len);
    CHECK(img != NULL);
    uint8_t *bad = whole_buffer(img, len);
    bad[KMB_INDEX_HEADER_SIZE + 8 * 10] ^= 1; /* an early entry: the CRC fails */
    CHECK_EQ_INT(kmb_index_complete(&ix, n, bad, len, 54, 54), KMB_EINDEX);
    CHECK(strstr(kmb_error_last()->message, "CRC") != NULL);
    bad = whole_buffer(img, len);
    kmb_store_u64le(bad + KMB_INDEX_HEADER_SIZE + 8 * 10, 54 * 10 + 1); /* CRC ok, gap not */
    reseal(bad, len);
    CHECK_EQ_INT(kmb_index_complete(&ix, n, bad, len, 54, 54), KMB_EINDEX);
    CHECK(strstr(kmb_error_last()->message, "out of order") != NULL);
    /* a valid image whose loaded entries differ (another segment's index, say) */
    kmb_index other;
    kmb_index_init(&other);
    for (size_t i = 0; i < n; i++) CHECK_EQ_INT(kmb_index_append(&other, 60 * i), KMB_OK);
    uint8_t *enc = NULL;
    size_t elen = 0;
    CHECK_EQ_INT(kmb_index_encode(&other, &enc, &elen), KMB_OK);
    CHECK_EQ_INT(kmb_index_complete(&ix, n, whole_buffer(enc, elen), elen, 54, 60), KMB_EINDEX);
    CHECK(strstr(kmb_error_last()->message, "differ") != NULL);
    free(enc);
    kmb_index_free(&other);
    /* shorter than what was used */
    size_t slen = 0;
    uint8_t *shorter = image_of(n - 1, &slen);
    CHECK_EQ_INT(kmb_index_complete(&ix, n, whole_buffer(shorter, slen), slen, 54, 54),
                 KMB_EINDEX);
    free(shorter);
    /* still partial and intact after every refusal */
    CHECK_EQ_U64(ix.lo, lo);
    CHECK_EQ_U64(ix.count, n);
    CHECK(ix.positions[lo] == 54 * (uint64_t)lo && ix.positions[1] == 0);
    /* longer (a writer saved more since): accepted, the index keeps its own count */
    size_t llen = 0;
    uint8_t *longer = image_of(n + 50, &llen);
    CHECK_EQ_INT(kmb_index_complete(&ix, n, whole_buffer(longer, llen), llen, 54, 54), KMB_OK);
    CHECK(ix.lo == 0 && ix.count == n && ix.positions[1] == 54);
    free(longer);
    /* a whole index: nothing to do, the buffer is taken */
    CHECK_EQ_INT(kmb_index_complete(&ix, n, whole_buffer(img, len), len, 54, 54), KMB_OK);
    kmb_index_free(&ix);
    free(img);
}

TEST(index_partial_grows_and_truncates_and_completes_with_its_new_entries)
{
    size_t n = 300, len = 0, lo = 250, good = 0;
    kmb_index ix;
    uint8_t *img = partial_of(&ix, n, lo, &len);
    CHECK(img != NULL);
    /* entries found by a scan past the stored ones: the array moves, still partial */
    CHECK_EQ_INT(kmb_index_append(&ix, 54 * 300), KMB_OK);
    CHECK_EQ_INT(kmb_index_append(&ix, 54 * 301), KMB_OK);
    CHECK(ix.block == NULL && ix.lo == lo && ix.count == n + 2 && ix.positions[1] == 0);
    CHECK(ix.positions[0] == 0 && ix.positions[lo] == 54 * (uint64_t)lo);
    CHECK_EQ_INT(kmb_index_complete(&ix, n, whole_buffer(img, len), len, 54, 54), KMB_OK);
    int same = ix.lo == 0 && ix.count == n + 2;
    for (size_t i = 0; same && i < n + 2; i++) same = ix.positions[i] == 54 * (uint64_t)i;
    CHECK(same);
    kmb_index_free(&ix);
    /* truncated inside the window (a watermark), then scanned entries written in place:
     * only the entries used from the file are compared */
    CHECK_EQ_INT(kmb_index_adopt_partial(&ix, partial_buffer(img, len, lo), len, lo, 54, 54,
                                         &good),
                 KMB_OK);
    kmb_index_truncate(&ix, 260);
    CHECK_EQ_U64(ix.lo, lo);
    CHECK_EQ_INT(kmb_index_append(&ix, 54 * 260 + 5), KMB_OK); /* differs from the file */
    CHECK(ix.block != NULL);
    CHECK_EQ_INT(kmb_index_complete(&ix, 260, whole_buffer(img, len), len, 54, 54), KMB_OK);
    CHECK(ix.lo == 0 && ix.count == 261 && ix.positions[260] == 54 * 260 + 5);
    CHECK(ix.positions[100] == 54 * 100);
    /* truncating to one entry or none makes an index whole */
    kmb_index_free(&ix);
    CHECK_EQ_INT(kmb_index_adopt_partial(&ix, partial_buffer(img, len, lo), len, lo, 54, 54,
                                         &good),
                 KMB_OK);
    kmb_index_truncate(&ix, 1);
    CHECK(ix.lo == 0 && ix.count == 1);
    CHECK_EQ_INT(kmb_index_append(&ix, 54), KMB_OK);
    kmb_index_free(&ix);
    free(img);
}

TEST(index_partial_truncated_below_its_window_then_grown_and_completed)
{
    /* Truncated before lo (but to more than one entry): none of the window is left. The
     * index stays partial (entries 1 .. count-1 not loaded); growing it must not copy a
     * window of (count - lo) entries, which wrapped to a huge size. */
    size_t n = 5000, len = 0, lo = 4990;
    kmb_index ix;
    uint8_t *img = partial_of(&ix, n, lo, &len);
    CHECK(img != NULL);
    kmb_index_truncate(&ix, 100);
    CHECK(ix.count == 100 && ix.lo >= 1 && ix.lo <= 100);
    uint64_t pos = 1;
    CHECK(!kmb_index_lookup(&ix, 50, &pos)); /* not loaded */
    for (size_t i = 100; i < n + 10; i++) /* grows past the image: the array moves */
        CHECK_EQ_INT(kmb_index_append(&ix, 54 * (uint64_t)i), KMB_OK);
    CHECK(ix.block == NULL && ix.count == n + 10 && ix.positions[0] == 0);
    CHECK(!kmb_index_lookup(&ix, 50, &pos) && kmb_index_lookup(&ix, 120, &pos) && pos == 54 * 120);
    CHECK_EQ_INT(kmb_index_complete(&ix, 100, whole_buffer(img, len), len, 54, 54), KMB_OK);
    int same = ix.lo == 0 && ix.count == n + 10;
    for (size_t i = 0; same && i < n + 10; i++) same = ix.positions[i] == 54 * (uint64_t)i;
    CHECK(same);
    kmb_index_free(&ix);
    free(img);
}
