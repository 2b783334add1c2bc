/*
 * test_errors.c — the last error is per thread, set and cleared as errors.h promises.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "kimberlite/errors.h"

TEST(error_set_fills_code_errno_message_and_returns_code)
{
    kmb_error *m = kmb_error_mut();
    m->has_stream = 1;
    m->stream_id = 9;
    CHECK_EQ_INT(kmb_error_set(KMB_EIO, 2, "cannot open %s", "x.log"), KMB_EIO);
    const kmb_error *e = kmb_error_last();
    CHECK_EQ_INT(e->code, KMB_EIO);
    CHECK_EQ_INT(e->sys_errno, 2);
    CHECK(strcmp(e->message, "cannot open x.log") == 0);
    CHECK(e->has_stream == 0 && e->stream_id == 0); /* every field was cleared first */
    kmb_error_clear();
    CHECK_EQ_INT(kmb_error_last()->code, KMB_OK);
    CHECK(kmb_error_last()->message[0] == '\0');
}

TEST(error_message_longer_than_buffer_is_truncated_safely)
{
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    kmb_error_set(KMB_ERROR, 0, "%s", big);
    const kmb_error *e = kmb_error_last();
    CHECK_EQ_U64(strlen(e->message), sizeof e->message - 1);
}

TEST(strerror_describes_every_code)
{
    for (int c = KMB_OK; c >= KMB_ENOTFOUND; c--) {
        const char *s = kmb_strerror(c);
        CHECKF(s != NULL && s[0] != '\0' && strcmp(s, "unknown error") != 0, "code %d", c);
    }
    CHECK(strcmp(kmb_strerror(12345), "unknown error") == 0);
    CHECK(strstr(kmb_strerror(KMB_ECORRUPT), "corrupt") != NULL);
}

static pthread_barrier_t barrier;

struct thread_result {
    int code;
    int seen_code;
    char seen_message[64];
};

static void *set_and_read(void *arg)
{
    struct thread_result *r = arg;
    kmb_error_set(r->code, 0, "thread %d", r->code);
    /* Both threads have written their error before either reads. */
    pthread_barrier_wait(&barrier);
    r->seen_code = kmb_error_last()->code;
    snprintf(r->seen_message, sizeof r->seen_message, "%.63s", kmb_error_last()->message);
    return NULL;
}

TEST(errors_are_thread_local)
{
    kmb_error_set(KMB_ECHAIN, 0, "main");
    struct thread_result a = {KMB_EINVAL, 0, {0}}, b = {KMB_ECORRUPT, 0, {0}};
    pthread_t ta, tb;
    CHECK(pthread_barrier_init(&barrier, NULL, 2) == 0);
    CHECK(pthread_create(&ta, NULL, set_and_read, &a) == 0);
    CHECK(pthread_create(&tb, NULL, set_and_read, &b) == 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_barrier_destroy(&barrier);
    CHECK_EQ_INT(a.seen_code, KMB_EINVAL);
    CHECK(strcmp(a.seen_message, "thread -2") == 0);
    CHECK_EQ_INT(b.seen_code, KMB_ECORRUPT);
    CHECK(strcmp(b.seen_message, "thread -6") == 0);
    CHECK_EQ_INT(kmb_error_last()->code, KMB_ECHAIN); /* untouched by the threads */
    CHECK(strcmp(kmb_error_last()->message, "main") == 0);
}

static void *read_fresh(void *arg)
{
    *(int *)arg = kmb_error_last()->code == KMB_OK && kmb_error_last()->message[0] == '\0';
    return NULL;
}

TEST(new_thread_starts_with_no_error)
{
    kmb_error_set(KMB_EIO, 5, "main failed");
    int fresh = 0;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, read_fresh, &fresh) == 0);
    pthread_join(t, NULL);
    CHECK(fresh);
}
