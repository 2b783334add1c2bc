/*
 * harness.c — registration, running and reporting for harness.h, plus shared helpers.
 */
#include "harness.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kimberlite/errors.h"

static kt_test *kt_head;
static int kt_current_failed;
static const char *kt_current_name;

void kt_register(kt_test *t)
{
    t->next = kt_head;
    kt_head = t;
}

void kt_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    kt_current_failed = 1;
    fprintf(stderr, "FAIL %s (%s:%d): ", kt_current_name ? kt_current_name : "?", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    const kmb_error *e = kmb_error_last();
    if (e->code != KMB_OK) fprintf(stderr, "  [last error %d: %s]", e->code, e->message);
    fputc('\n', stderr);
}

int kt_failed_now(void) { return kt_current_failed; }

/* Order tests by file then line, so runs are reproducible whatever the constructor order. */
static int cmp_tests(const void *a, const void *b)
{
    const kt_test *x = *(const kt_test *const *)a, *y = *(const kt_test *const *)b;
    int c = strcmp(x->file, y->file);
    return c != 0 ? c : (x->line > y->line) - (x->line < y->line);
}

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    int verbose = getenv("KT_VERBOSE") != NULL;
    size_t n = 0;
    for (kt_test *t = kt_head; t != NULL; t = t->next) n++;
    kt_test **all = calloc(n ? n : 1, sizeof *all);
    if (all == NULL) return 2;
    n = 0;
    for (kt_test *t = kt_head; t != NULL; t = t->next) all[n++] = t;
    qsort(all, n, sizeof *all, cmp_tests);

    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (filter != NULL && strstr(all[i]->name, filter) == NULL) continue;
        kt_current_name = all[i]->name;
        kt_current_failed = 0;
        kmb_error_clear();
        all[i]->fn();
        if (kt_current_failed) {
            failed++;
        } else {
            passed++;
            if (verbose) printf("ok   %s\n", all[i]->name);
        }
    }
    free(all);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}

size_t kt_unhex(uint8_t *out, size_t cap, const char *hex)
{
    size_t n = 0;
    int hi = -1;
    for (const char *p = hex; *p; p++) {
        int v;
        if (*p >= '0' && *p <= '9') v = *p - '0';
        else if (*p >= 'a' && *p <= 'f') v = *p - 'a' + 10;
        else if (*p >= 'A' && *p <= 'F') v = *p - 'A' + 10;
        else continue;
        if (hi < 0) {
            hi = v;
        } else {
            if (n < cap) out[n] = (uint8_t)(hi << 4 | v);
            n++;
            hi = -1;
        }
    }
    return n;
}

int kt_make_temp_dir(char *buf, size_t cap)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0') base = "/tmp";
    int w = snprintf(buf, cap, "%s/kmb-ctest-XXXXXX", base);
    if (w < 0 || (size_t)w >= cap) return 0;
    return mkdtemp(buf) != NULL;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void kt_remove_tree(const char *path) { nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

void kt_fill_random(uint8_t *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15u + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)(x >> 24);
    }
}

void kt_child_report(int fd, int code)
{
    unsigned char c = (unsigned char)code;
    if (write(fd, &c, 1) != 1) c = 0; /* the parent then sees no verdict: a failure */
    for (;;) kill(getpid(), SIGKILL);
}

int kt_child_result(int fd, pid_t pid)
{
    unsigned char c;
    ssize_t n;
    do n = read(fd, &c, 1);
    while (n < 0 && errno == EINTR);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) continue;
    return n == 1 ? c : -1;
}
