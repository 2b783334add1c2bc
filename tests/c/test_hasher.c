/*
 * test_hasher.c — the pool's fallback rules (hasher.h): when a stalled or slow pool makes
 * the caller work alone, and for how long. The rules are state, not timing, so they are
 * checked on the kmb_hasher's fields; only the last test starts real threads.
 */
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "hasher.h"

TEST(hasher_a_short_wait_is_no_stall_and_a_long_one_backs_off_for_a_time)
{
    kmb_hasher w;
    memset(&w, 0, sizeof(w));
    CHECK_EQ_INT(kmb_hasher_stalled(&w, 1000), 0);
    CHECK_EQ_U64(w.backoff_until, 0);
    CHECK_EQ_INT(kmb_hasher_stalled(&w, 10u * 1000 * 1000), 1);
    CHECK(w.backoff_until != 0);
    CHECK_EQ_U64(w.backoff_ns, 2 * (uint64_t)KMB_HASHER_BACKOFF_MIN_NS); /* the next one */
    CHECK_EQ_INT(kmb_hasher_ready(&w), 0); /* backing off: no thread started */
    CHECK_EQ_INT(w.nthreads, 0);
}

TEST(hasher_backoffs_double_while_trouble_repeats_up_to_the_cap)
{
    kmb_hasher w;
    memset(&w, 0, sizeof(w));
    uint64_t want = KMB_HASHER_BACKOFF_MIN_NS;
    for (int i = 0; i < 40; i++) {
        kmb_hasher_backoff(&w);
        want = want * 2 > KMB_HASHER_BACKOFF_MAX_NS ? KMB_HASHER_BACKOFF_MAX_NS : want * 2;
        CHECK_EQ_U64(w.backoff_ns, want);
    }
    CHECK_EQ_U64(w.backoff_ns, KMB_HASHER_BACKOFF_MAX_NS);
}

TEST(hasher_one_slow_chunk_is_forgiven_the_second_backs_off)
{
    kmb_hasher w;
    memset(&w, 0, sizeof(w));
    CHECK_EQ_INT(kmb_hasher_slow(&w), 0); /* a quiet machine's single hiccup */
    CHECK_EQ_U64(w.backoff_until, 0);
    CHECK_EQ_INT(kmb_hasher_slow(&w), 1);
    CHECK(w.backoff_until != 0);
    /* after a good streak the count starts again */
    memset(&w, 0, sizeof(w));
    CHECK_EQ_INT(kmb_hasher_slow(&w), 0);
    for (int i = 0; i < KMB_HASHER_GOOD_STREAK; i++) kmb_hasher_recovered(&w);
    CHECK_EQ_INT(kmb_hasher_slow(&w), 0);
    CHECK_EQ_U64(w.backoff_until, 0);
    /* a streak broken by a slow chunk does not count */
    memset(&w, 0, sizeof(w));
    CHECK_EQ_INT(kmb_hasher_slow(&w), 0);
    for (int i = 0; i < KMB_HASHER_GOOD_STREAK - 1; i++) kmb_hasher_recovered(&w);
    CHECK_EQ_INT(kmb_hasher_slow(&w), 1);
}

TEST(hasher_good_streaks_halve_the_next_backoff_down_to_none)
{
    kmb_hasher w;
    memset(&w, 0, sizeof(w));
    for (int i = 0; i < 3; i++) kmb_hasher_backoff(&w);
    uint64_t len = w.backoff_ns; /* 8 ms * 2^3 */
    CHECK_EQ_U64(len, 8 * (uint64_t)KMB_HASHER_BACKOFF_MIN_NS);
    for (int i = 0; i < KMB_HASHER_GOOD_STREAK - 1; i++) kmb_hasher_recovered(&w);
    CHECK_EQ_U64(w.backoff_ns, len); /* not a whole streak yet */
    kmb_hasher_recovered(&w);
    CHECK_EQ_U64(w.backoff_ns, len / 2);
    for (int i = 0; i < 3 * KMB_HASHER_GOOD_STREAK; i++) kmb_hasher_recovered(&w);
    CHECK_EQ_U64(w.backoff_ns, 0); /* below the shortest: back to none */
}

TEST(hasher_is_ready_again_once_the_backoff_is_over)
{
    kmb_hasher w;
    memset(&w, 0, sizeof(w));
    kmb_hasher_configure(&w, 2, 1);
    w.backoff_until = UINT64_MAX; /* backing off for ever */
    CHECK_EQ_INT(kmb_hasher_ready(&w), 0);
    CHECK_EQ_INT(w.nthreads, 0);
    w.backoff_until = 1; /* long over */
    CHECK_EQ_INT(kmb_hasher_ready(&w), 1);
    CHECK_EQ_U64(w.backoff_until, 0);
    CHECK_EQ_INT(w.nthreads, 2);
    kmb_hasher_stop(&w);
    CHECK_EQ_INT(w.nthreads, 0);
}
