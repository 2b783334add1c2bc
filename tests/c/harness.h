/*
 * harness.h — a tiny test harness for the C library (no external framework).
 *
 * TEST(name) defines a test and registers it before main runs (a constructor, so test
 * files need no central list). CHECK* record a failure with file and line and leave the
 * test; helpers that check things return 0/1 and are wrapped in CHECK. main() runs every
 * test (or those whose name contains argv[1]) and ends with "N passed, M failed".
 */
#ifndef KMB_TEST_HARNESS_H
#define KMB_TEST_HARNESS_H

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct kt_test {
    const char *name;
    const char *file;
    int line;
    void (*fn)(void);
    struct kt_test *next;
} kt_test;

void kt_register(kt_test *t);
/* Record a failure of the running test (printf-style detail). */
void kt_fail(const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* 1 if the running test has failed so far. */
int kt_failed_now(void);

#define TEST(name)                                                                          \
    static void name(void);                                                                 \
    static kt_test kt_test_##name = {#name, __FILE__, __LINE__, name, NULL};                \
    __attribute__((constructor)) static void kt_register_##name(void)                      \
    {                                                                                       \
        kt_register(&kt_test_##name);                                                       \
    }                                                                                       \
    static void name(void)

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            kt_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                                \
            return;                                                                         \
        }                                                                                   \
    } while (0)

/* Like CHECK, with a message explaining the context (loop indices, values). */
#define CHECKF(cond, ...)                                                                   \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            kt_fail(__FILE__, __LINE__, __VA_ARGS__);                                       \
            return;                                                                         \
        }                                                                                   \
    } while (0)

#define CHECK_EQ_U64(a, b)                                                                  \
    do {                                                                                    \
        uint64_t kt_a_ = (uint64_t)(a), kt_b_ = (uint64_t)(b);                              \
        if (kt_a_ != kt_b_) {                                                               \
            kt_fail(__FILE__, __LINE__, "%s == %s: %" PRIu64 " != %" PRIu64, #a, #b, kt_a_, \
                    kt_b_);                                                                 \
            return;                                                                         \
        }                                                                                   \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                  \
    do {                                                                                    \
        long long kt_a_ = (long long)(a), kt_b_ = (long long)(b);                           \
        if (kt_a_ != kt_b_) {                                                               \
            kt_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, kt_a_, kt_b_);    \
            return;                                                                         \
        }                                                                                   \
    } while (0)

/* ---- helpers shared by the test files ---- */

/* Parse a hex string (spaces ignored) into out; returns the number of bytes. */
size_t kt_unhex(uint8_t *out, size_t cap, const char *hex);

/* A fresh empty directory under $TMPDIR (or /tmp); written into buf. 1 on success. */
int kt_make_temp_dir(char *buf, size_t cap);

/* Remove a directory tree (best effort). */
void kt_remove_tree(const char *path);

/* Deterministic pseudo-random bytes (xorshift), so failures reproduce. */
void kt_fill_random(uint8_t *buf, size_t len, uint64_t seed);

/*
 * A forked child's verdict, without its exit: the child reports `code` (0..255) on the
 * write end of a pipe and ends by SIGKILL, the parent reads it (-1 if the child ended
 * without reporting) and reaps the child. Why not _exit(code): under valgrind every
 * process checks for leaks at its exit, and a child forked while other threads held
 * memory finds that memory unreachable (its owners do not exist in the child) and turns
 * its exit status into valgrind's error code. The memory is the parent's, checked there.
 */
void kt_child_report(int fd, int code) __attribute__((noreturn));
int kt_child_result(int fd, pid_t pid);

#endif
