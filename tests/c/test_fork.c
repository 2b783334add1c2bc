/*
 * test_fork.c — the at-fork protocol of storage.h (kmb_storage_fork_prepare/_parent/_child),
 * without Python: a child forked while another thread is inside the engine can use a
 * memory storage (large operations start a new hashing thread there); a disk writer's
 * child refuses and never keeps the lock.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "kimberlite/errors.h"
#include "kimberlite/storage.h"

#define BIG_EVENTS 16
#define BIG_LEN 40000 /* 16 x 40 KB: large enough for the hashing thread */

static uint8_t big[BIG_EVENTS][BIG_LEN];

static void fill_big(kmb_slice *v)
{
    for (int i = 0; i < BIG_EVENTS; i++) {
        memset(big[i], 'a' + i, BIG_LEN);
        v[i].data = big[i];
        v[i].len = BIG_LEN;
    }
}

typedef struct busy {
    kmb_storage *st;
    atomic_int stop;
    atomic_int calls;
} busy;

static void *busy_main(void *arg)
{
    busy *b = arg;
    kmb_read_result r;
    memset(&r, 0, sizeof r);
    while (!atomic_load(&b->stop)) {
        kmb_storage_read(b->st, 1, 0, KMB_NO_LIMIT, &r);
        kmb_storage_verify(b->st, 1, NULL, NULL, NULL, NULL);
        atomic_fetch_add(&b->calls, 1);
    }
    kmb_read_result_free(&r);
    return NULL;
}

/* In the child: read and verify all, append a large batch, read it back. 0 if all held. */
static int child_work(kmb_storage *st, const kmb_slice *v)
{
    kmb_read_result r;
    memset(&r, 0, sizeof r);
    if (kmb_storage_read(st, 1, 0, KMB_NO_LIMIT, &r) != KMB_OK || r.count != BIG_EVENTS) return 2;
    for (size_t i = 0; i < r.count; i++)
        if (r.records[i].length != BIG_LEN || memcmp(r.records[i].payload, big[i], BIG_LEN) != 0)
            return 3;
    uint64_t next = 0;
    if (kmb_storage_append(st, 1, v, BIG_EVENTS, NULL, 0, &next) != KMB_OK || next != 2 * BIG_EVENTS)
        return 4;
    if (kmb_storage_verify(st, 1, NULL, &next, NULL, NULL) != KMB_OK || next != 2 * BIG_EVENTS)
        return 5;
    kmb_read_result_free(&r);
    kmb_storage_free(st);
    return 0;
}

TEST(fork_child_uses_a_memory_storage_busy_in_another_thread)
{
    kmb_slice v[BIG_EVENTS];
    fill_big(v);
    kmb_storage *st = NULL;
    CHECK_EQ_INT(kmb_storage_open_memory(&st, NULL), KMB_OK);
    CHECK_EQ_INT(kmb_storage_append(st, 1, v, BIG_EVENTS, NULL, 0, NULL), KMB_OK);
    busy b = {st, 0, 0};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, busy_main, &b) == 0);
    while (atomic_load(&b.calls) == 0) usleep(100);
    int failures = 0;
    for (int round = 0; round < 20; round++) {
        usleep(500 + 300 * (unsigned)(round % 5));
        int verdict[2];
        if (pipe(verdict) != 0) {
            failures++;
            break;
        }
        kmb_storage_fork_prepare(st);
        pid_t pid = fork();
        if (pid == 0) {
            kmb_storage_fork_child(st);
            close(verdict[0]);
            alarm(20); /* a hang dies of SIGALRM, without a verdict */
            kt_child_report(verdict[1], child_work(st, v));
        }
        kmb_storage_fork_parent(st);
        close(verdict[1]);
        if (kt_child_result(verdict[0], pid) != 0) failures++;
        close(verdict[0]);
    }
    atomic_store(&b.stop, 1);
    pthread_join(t, NULL);
    CHECK_EQ_INT(failures, 0);
    uint64_t next = 0;
    CHECK_EQ_INT(kmb_storage_next_offset(st, 1, &next), KMB_OK);
    CHECK_EQ_U64(next, BIG_EVENTS); /* the children's appends were their own */
    kmb_storage_free(st);
}

TEST(fork_child_of_a_writer_refuses_and_never_keeps_the_lock)
{
    char dir[512];
    CHECK(kt_make_temp_dir(dir, sizeof dir));
    kmb_storage *st = NULL;
    kmb_slice ev = {"parent", 6};
    CHECK_EQ_INT(kmb_storage_open(&st, dir, NULL), KMB_OK);
    CHECK_EQ_INT(kmb_storage_append(st, 1, &ev, 1, NULL, 1, NULL), KMB_OK);
    int go[2], done[2], verdict[2];
    CHECK(pipe(go) == 0 && pipe(done) == 0 && pipe(verdict) == 0);
    kmb_storage_fork_prepare(st);
    pid_t pid = fork();
    if (pid == 0) {
        kmb_storage_fork_child(st);
        alarm(20);
        char c;
        int code = 0;
        if (kmb_storage_append(st, 1, &ev, 1, NULL, 0, NULL) != KMB_ERROR) code = 1;
        if (strstr(kmb_error_last()->message, "fork") == NULL) code = 2;
        /* Keep the inherited writer open while the parent closes and reopens. */
        if (write(done[1], "x", 1) != 1 || read(go[0], &c, 1) != 1) code = 3;
        kmb_storage_free(st); /* releases nothing of the parent's */
        kt_child_report(verdict[1], code);
    }
    kmb_storage_fork_parent(st);
    close(verdict[1]);
    char c;
    CHECK(read(done[0], &c, 1) == 1); /* the child has run its part */
    kmb_storage *again = NULL;
    CHECK_EQ_INT(kmb_storage_open(&again, dir, NULL), KMB_ELOCKED); /* the parent holds it */
    CHECK_EQ_INT(kmb_storage_append(st, 1, &ev, 1, NULL, 1, NULL), KMB_OK);
    kmb_storage_free(st);
    /* The child lives on (blocked on the pipe): the directory is free all the same. */
    CHECK_EQ_INT(kmb_storage_open(&again, dir, NULL), KMB_OK);
    uint64_t next = 0;
    CHECK_EQ_INT(kmb_storage_next_offset(again, 1, &next), KMB_OK);
    CHECK_EQ_U64(next, 2);
    CHECK(write(go[1], "x", 1) == 1);
    CHECK_EQ_INT(kt_child_result(verdict[0], pid), 0);
    kmb_storage_free(again);
    close(go[0]), close(go[1]), close(done[0]), close(done[1]), close(verdict[0]);
    kt_remove_tree(dir);
}
