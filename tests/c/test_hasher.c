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

/* ---- kmb_hasher_wait measures stalls, not waits ---------------------------------------- */

#include <pthread.h>
#include <time.h>

typedef struct feeder {
    kmb_hasher *w;
    size_t steps;     /* publish progress this many times, */
    long step_us;     /* this far apart, */
    long first_us;    /* after this long */
} feeder;

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Stands in for the pool's thread: publishes progress as worker_progress does. */
static void *feed(void *arg)
{
    feeder *f = arg;
    sleep_us(f->first_us);
    for (size_t i = 1; i <= f->steps; i++) {
        if (i > 1) sleep_us(f->step_us);
        atomic_store(&f->w->done, i);
        pthread_mutex_lock(&f->w->mu);
        pthread_cond_broadcast(&f->w->cv_done);
        pthread_mutex_unlock(&f->w->mu);
    }
    return NULL;
}

static uint64_t wait_fed(kmb_hasher *w, feeder *f, uint64_t *elapsed)
{
    atomic_store(&w->done, 0);
    atomic_store(&w->has_job, 1); /* a job in progress, as far as the waiter knows */
    pthread_t t;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (pthread_create(&t, NULL, feed, f) != 0) return UINT64_MAX;
    uint64_t still = kmb_hasher_wait(w, f->steps);
    pthread_join(t, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    atomic_store(&w->has_job, 0);
    *elapsed = (uint64_t)(b.tv_sec - a.tv_sec) * 1000000000u + (uint64_t)b.tv_nsec -
               (uint64_t)a.tv_nsec;
    return still;
}

TEST(hasher_wait_reports_the_longest_time_without_progress)
{
    kmb_hasher w;
    memset(&w, 0, sizeof(w));
    kmb_hasher_configure(&w, 1, 1);
    CHECK_EQ_INT(kmb_hasher_ready(&w), 1); /* the mutex and condition variables */
    uint64_t elapsed = 0;
    /* nothing for 5 ms, then everything: a stall of at least 5 ms */
    feeder stall = {&w, 1, 0, 5000};
    uint64_t still = wait_fed(&w, &stall, &elapsed);
    CHECKF(still >= 5000000u && still <= elapsed, "still %llu elapsed %llu",
           (unsigned long long)still, (unsigned long long)elapsed);
    /* steady progress every 1 ms for 30 ms: a long wait, but no stall of its length */
    feeder steady = {&w, 30, 1000, 0};
    still = wait_fed(&w, &steady, &elapsed);
    CHECKF(elapsed >= 29000000u && still < elapsed / 2, "still %llu elapsed %llu",
           (unsigned long long)still, (unsigned long long)elapsed);
    kmb_hasher_stop(&w);
}
