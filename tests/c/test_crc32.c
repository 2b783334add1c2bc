/*
 * test_crc32.c — CRC-32/IEEE equals zlib.crc32 for every implementation this CPU runs.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "crc32_impl.h"
#include "harness.h"
#include "kimberlite/crc32.h"

/* The definition, one bit at a time: slow, obviously right, the reference for the rest. */
static uint32_t crc32_bitwise(uint32_t crc, const uint8_t *p, size_t n)
{
    uint32_t c = ~crc;
    while (n-- > 0) {
        c ^= *p++;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

TEST(crc32_of_check_string_is_cbf43926)
{
    CHECK_EQ_U64(kmb_crc32("123456789", 9), 0xCBF43926u);
    size_t n;
    const kmb_crc32_variant *v = kmb_crc32_variants(&n);
    for (size_t i = 0; i < n; i++) CHECKF(v[i].update(0, "123456789", 9) == 0xCBF43926u, "%s", v[i].name);
}

TEST(crc32_of_empty_input_is_zero_and_leaves_crc_unchanged)
{
    CHECK_EQ_U64(kmb_crc32("", 0), 0);
    CHECK_EQ_U64(kmb_crc32(NULL, 0), 0);
    CHECK_EQ_U64(kmb_crc32_update(0x12345678u, NULL, 0), 0x12345678u);
    size_t n;
    const kmb_crc32_variant *v = kmb_crc32_variants(&n);
    for (size_t i = 0; i < n; i++) CHECKF(v[i].update(0xDEADBEEFu, "", 0) == 0xDEADBEEFu, "%s", v[i].name);
}

TEST(crc32_matches_values_computed_by_python_zlib)
{
    CHECK_EQ_U64(kmb_crc32("a", 1), 0xe8b7be43u);
    CHECK_EQ_U64(kmb_crc32("The quick brown fox jumps over the lazy dog", 43), 0x414fa339u);
    uint8_t *zeros = calloc(1, 1024 * 1024);
    CHECK(zeros != NULL);
    uint32_t z = kmb_crc32(zeros, 1024 * 1024);
    free(zeros);
    CHECK_EQ_U64(z, 0xa738ea1cu);
    uint8_t seq[1024];
    for (size_t i = 0; i < sizeof seq; i++) seq[i] = (uint8_t)i;
    CHECK_EQ_U64(kmb_crc32(seq, sizeof seq), 0xb70b4c26u);
}

TEST(crc32_every_variant_matches_reference_at_every_length_and_alignment)
{
    enum { MAXLEN = 1024, MAXALIGN = 16 };
    uint8_t *buf = malloc(MAXLEN + MAXALIGN);
    CHECK(buf != NULL);
    kt_fill_random(buf, MAXLEN + MAXALIGN, 1);
    size_t nv;
    const kmb_crc32_variant *v = kmb_crc32_variants(&nv);
    int bad = 0;
    for (size_t align = 0; align < MAXALIGN && !bad; align++) {
        for (size_t len = 0; len <= MAXLEN && !bad; len++) {
            const uint8_t *p = buf + align;
            uint32_t want = crc32_bitwise(0, p, len);
            if (kmb_crc32(p, len) != want) {
                kt_fail(__FILE__, __LINE__, "kmb_crc32 len=%zu align=%zu", len, align);
                bad = 1;
            }
            for (size_t i = 0; i < nv && !bad; i++) {
                if (v[i].update(0, p, len) != want) {
                    kt_fail(__FILE__, __LINE__, "%s len=%zu align=%zu", v[i].name, len, align);
                    bad = 1;
                }
            }
        }
    }
    free(buf);
}

TEST(crc32_variants_agree_on_large_buffers_and_nonzero_start)
{
    enum { N = 200000 };
    uint8_t *buf = malloc(N);
    CHECK(buf != NULL);
    kt_fill_random(buf, N, 7);
    size_t nv;
    const kmb_crc32_variant *v = kmb_crc32_variants(&nv);
    /* Around each variant's thresholds: 64 (pclmul), 256 and 128-byte steps (vpclmul). */
    static const size_t lens[] = {63,  64,  65,  79,   80,   127,  128,   129,  255, 256,
                                  257, 383, 384, 385, 1040, 4095, 4096, 65537, N - 3};
    int bad = 0;
    for (size_t l = 0; l < sizeof lens / sizeof lens[0] && !bad; l++) {
        uint32_t want = crc32_bitwise(0xA5A5A5A5u, buf + 3, lens[l]);
        for (size_t i = 0; i < nv && !bad; i++) {
            if (v[i].update(0xA5A5A5A5u, buf + 3, lens[l]) != want) {
                kt_fail(__FILE__, __LINE__, "%s len=%zu", v[i].name, lens[l]);
                bad = 1;
            }
        }
    }
    free(buf);
}

TEST(crc32_fed_in_pieces_equals_crc32_of_whole)
{
    uint8_t buf[700];
    kt_fill_random(buf, sizeof buf, 3);
    uint32_t whole = kmb_crc32(buf, sizeof buf);
    size_t nv;
    const kmb_crc32_variant *v = kmb_crc32_variants(&nv);
    for (size_t cut = 0; cut <= sizeof buf; cut++) {
        uint32_t c = kmb_crc32_update(kmb_crc32(buf, cut), buf + cut, sizeof buf - cut);
        CHECKF(c == whole, "cut=%zu", cut);
        for (size_t i = 0; i < nv; i++) {
            c = v[i].update(v[i].update(0, buf, cut), buf + cut, sizeof buf - cut);
            CHECKF(c == whole, "%s cut=%zu", v[i].name, cut);
        }
    }
}

TEST(crc32_lists_portable_variant_first_and_names_active_one)
{
    size_t nv;
    const kmb_crc32_variant *v = kmb_crc32_variants(&nv);
    CHECK(nv >= 1);
    CHECK(strcmp(v[0].name, "slice8") == 0);
    const char *active = kmb_crc32_active_name();
    int found = 0;
    for (size_t i = 0; i < nv; i++) found |= strcmp(v[i].name, active) == 0;
    CHECK(found);
}

static void *crc_thread(void *arg)
{
    uint8_t buf[4096];
    kt_fill_random(buf, sizeof buf, 11);
    uint32_t *out = arg;
    *out = kmb_crc32(buf, sizeof buf);
    return NULL;
}

TEST(crc32_gives_same_result_from_concurrent_threads)
{
    pthread_t th[4];
    uint32_t res[4];
    for (int i = 0; i < 4; i++) CHECK(pthread_create(&th[i], NULL, crc_thread, &res[i]) == 0);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    uint8_t buf[4096];
    kt_fill_random(buf, sizeof buf, 11);
    uint32_t want = crc32_bitwise(0, buf, sizeof buf);
    for (int i = 0; i < 4; i++) CHECK_EQ_U64(res[i], want);
}

TEST(crc32_combine_equals_crc32_of_concatenation_at_every_split)
{
    uint8_t buf[1100];
    kt_fill_random(buf, sizeof buf, 21);
    uint32_t whole = crc32_bitwise(0, buf, sizeof buf);
    for (size_t cut = 0; cut <= sizeof buf; cut++) {
        uint32_t a = kmb_crc32(buf, cut), b = kmb_crc32(buf + cut, sizeof buf - cut);
        CHECKF(kmb_crc32_combine(a, b, sizeof buf - cut) == whole, "cut=%zu", cut);
        uint32_t op = kmb_crc32_combine_gen(sizeof buf - cut);
        CHECKF(kmb_crc32_combine_op(a, b, op) == whole, "op cut=%zu", cut);
    }
}

TEST(crc32_combine_handles_empty_parts_and_large_lengths)
{
    uint8_t buf[64];
    kt_fill_random(buf, sizeof buf, 22);
    uint32_t c = kmb_crc32(buf, sizeof buf);
    CHECK_EQ_U64(kmb_crc32_combine(c, 0, 0), c);        /* B empty */
    CHECK_EQ_U64(kmb_crc32_combine(0, c, sizeof buf), c); /* A empty */
    /* A record-sized split (44-byte header, 16 KiB and 1 MiB payloads), as the engine uses. */
    size_t sizes[] = {16384, (size_t)1 << 20, 100000, 1};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        uint8_t *big = malloc(44 + n);
        CHECK(big != NULL);
        kt_fill_random(big, 44 + n, 23 + (unsigned)k);
        uint32_t want = kmb_crc32(big, 44 + n);
        uint32_t got = kmb_crc32_combine(kmb_crc32(big, 44), kmb_crc32(big + 44, n), n);
        free(big);
        CHECKF(got == want, "n=%zu", n);
    }
    /* Lengths past 4 GiB: combining is associative, CRC(A||B||C) either way round. */
    uint32_t a = 0x12345678u, b = 0x9abcdef0u, c2 = 0x0f1e2d3cu;
    uint64_t lb = (UINT64_C(5) << 32) + 12345, lc = (UINT64_C(3) << 33) + 77;
    CHECK_EQ_U64(kmb_crc32_combine(kmb_crc32_combine(a, b, lb), c2, lc),
                 kmb_crc32_combine(a, kmb_crc32_combine(b, c2, lc), lb + lc));
}
