/*
 * hashlimit.c — the hashing limit of the Kimberlite benchmarks (benchmarks/bench.py).
 *
 * Kimberlite hashes every event it writes or reads into the stream's chain:
 *
 *     hash_0 = SHA-256(payload_0),  hash_n = SHA-256(hash_{n-1} || payload_n)
 *
 * so no append, read_from or verify can beat the cost of that chain. This program times
 * exactly the chain, with OpenSSL's low-level SHA256_Init/Update/Final on a stack context
 * (what csrc/chain.c calls), over N distinct events of S bytes, and prints the time per
 * event. Nothing else is timed: no CRC, no copy, no I/O, no Python.
 *
 *     cc -O2 -o hashlimit hashlimit.c -lcrypto -lpthread
 *     ./hashlimit SIZE COUNT [REPS [THREADS]]
 *
 * With THREADS, the *parallel* limit instead: what verified reads and verify can reach on
 * THREADS cores. A reader knows each record's stored prev_hash, so record i's hash
 * SHA-256(prev_hash_i || payload_i) does not wait for record i-1's: the COUNT events are
 * split into THREADS equal ranges, each hashed by its own thread (this one included), and
 * the wall time from a common start to the last thread's end is what is reported.
 *
 * With THREADS 0 and a directory WRITEDIR, the *append floor* instead: the chain as above
 * on a second thread while this thread does the least any append must also do, with a
 * perfect pipeline and nothing else: copy each event behind a 48-byte header into 256 KiB
 * pieces and pwrite them to a fresh file in WRITEDIR (removed afterwards). No CRC, no
 * index, no waiting between the two: the wall time of both together bounds what an append
 * can reach on this machine's CPUs and file system (each line also gives each side alone).
 *
 *     ./hashlimit SIZE COUNT REPS 0 WRITEDIR
 *
 * Output: one line per repetition, "ns_per_event <float>", then "head <hex>" (the head hash,
 * so the work cannot be optimised away and can be cross-checked against the engine's).
 * Payload bytes are a fixed pseudo-random pattern; COUNT events of SIZE bytes are laid out
 * back to back in memory (capped at 256 MiB; beyond it events reuse the buffer cyclically).
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BUFFER_CAP ((size_t)256 << 20)
#define PIECE ((size_t)256 << 10) /* an append's write size (csrc/engine.h WRITE_CHUNK) */
#define HEADER 48                 /* a record's header (SPEC §2) */

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* One thread's range of the parallel limit: records [i0, i1), each with its own prev. */
typedef struct range {
    const uint8_t *buf;
    size_t size, slots, i0, i1;
    uint8_t last[SHA256_DIGEST_LENGTH];
    pthread_barrier_t *start;
} range;

static void *hash_range(void *arg)
{
    range *r = arg;
    pthread_barrier_wait(r->start);
    uint8_t prev[SHA256_DIGEST_LENGTH] = {0};
    for (size_t i = r->i0; i < r->i1; i++) {
        const uint8_t *p = r->buf + (i % r->slots) * r->size;
        prev[i % SHA256_DIGEST_LENGTH] ^= (uint8_t)i; /* a distinct stored prev_hash each */
        SHA256_CTX ctx;
        SHA256_Init(&ctx);
        SHA256_Update(&ctx, prev, sizeof(prev));
        if (r->size > 0) SHA256_Update(&ctx, p, r->size);
        SHA256_Final(r->last, &ctx);
    }
    return NULL;
}

/* The parallel limit: ns per event with `threads` threads. */
static double parallel_ns(const uint8_t *buf, size_t size, size_t slots, size_t count,
                          int threads, uint8_t head[SHA256_DIGEST_LENGTH])
{
    range rs[64];
    pthread_t tid[64];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    for (int t = 0; t < threads; t++) {
        rs[t] = (range){buf, size, slots, count * (size_t)t / (size_t)threads,
                        count * (size_t)(t + 1) / (size_t)threads, {0}, &start};
        if (t > 0) pthread_create(&tid[t], NULL, hash_range, &rs[t]);
    }
    double t0 = now_ns(); /* the others wait at the barrier for this thread */
    hash_range(&rs[0]);
    for (int t = 1; t < threads; t++) pthread_join(tid[t], NULL);
    double t1 = now_ns();
    pthread_barrier_destroy(&start);
    memcpy(head, rs[threads - 1].last, SHA256_DIGEST_LENGTH);
    return (t1 - t0) / (double)count;
}

/* The single-core chain over all events; the append floor runs it on its own thread. */
typedef struct chain {
    const uint8_t *buf;
    size_t size, slots, count;
    uint8_t head[SHA256_DIGEST_LENGTH];
    pthread_barrier_t *start;
    double t_end;
} chain;

static void *hash_chain(void *arg)
{
    chain *c = arg;
    if (c->start) pthread_barrier_wait(c->start);
    for (size_t i = 0; i < c->count; i++) {
        const uint8_t *p = c->buf + (i % c->slots) * c->size;
        SHA256_CTX ctx;
        SHA256_Init(&ctx);
        if (i > 0) SHA256_Update(&ctx, c->head, sizeof(c->head));
        if (c->size > 0) SHA256_Update(&ctx, p, c->size);
        SHA256_Final(c->head, &ctx);
    }
    c->t_end = now_ns();
    return NULL;
}

/*
 * The append floor: ns per event for the chain (another thread) and the copy + pwrite of
 * the records (this one) together; *writer_ns, *chain_ns: each side's own time.
 */
static int floor_ns(const uint8_t *buf, size_t size, size_t slots, size_t count,
                    const char *dir, uint8_t head[SHA256_DIGEST_LENGTH], double out[3])
{
    char path[4096];
    snprintf(path, sizeof path, "%s/hashlimit-floor.%ld", dir, (long)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    size_t rec = HEADER + size, cap = rec > PIECE ? rec : PIECE;
    uint8_t *piece = malloc(cap);
    if (fd < 0 || !piece) {
        perror(path);
        free(piece);
        if (fd >= 0) close(fd);
        return -1;
    }
    memset(piece, 0, cap);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    chain c = {buf, size, slots, count, {0}, &start, 0};
    pthread_t tid;
    pthread_create(&tid, NULL, hash_chain, &c);
    pthread_barrier_wait(&start);
    double t0 = now_ns();
    size_t used = 0;
    off_t off = 0;
    int rc = 0;
    for (size_t i = 0; i < count && rc == 0; i++) {
        if (used + rec > cap) {
            if (pwrite(fd, piece, used, off) != (ssize_t)used) rc = -1;
            off += (off_t)used;
            used = 0;
        }
        memcpy(piece + used, &i, sizeof i); /* a header that differs per record */
        memcpy(piece + used + HEADER, buf + (i % slots) * size, size);
        used += rec;
    }
    if (rc == 0 && used && pwrite(fd, piece, used, off) != (ssize_t)used) rc = -1;
    double t_writer = now_ns();
    pthread_join(tid, NULL);
    double t1 = t_writer > c.t_end ? t_writer : c.t_end;
    if (rc) perror("pwrite");
    pthread_barrier_destroy(&start);
    close(fd);
    unlink(path);
    free(piece);
    memcpy(head, c.head, SHA256_DIGEST_LENGTH);
    out[0] = (t1 - t0) / (double)count;
    out[1] = (t_writer - t0) / (double)count;
    out[2] = (c.t_end - t0) / (double)count;
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s SIZE COUNT [REPS [THREADS [WRITEDIR]]]\n", argv[0]);
        return 2;
    }
    size_t size = strtoull(argv[1], NULL, 10);
    size_t count = strtoull(argv[2], NULL, 10);
    int reps = argc > 3 ? atoi(argv[3]) : 3;
    int threads = argc > 4 ? atoi(argv[4]) : 0;
    const char *writedir = argc > 5 ? argv[5] : NULL;
    if (count == 0 || reps <= 0 || threads < 0 || threads > 64 || (writedir && threads)) {
        fprintf(stderr, "COUNT and REPS must be positive, THREADS from 1 to 64 (0 with WRITEDIR)\n");
        return 2;
    }
    size_t slots = count;
    if (size > 0 && slots > BUFFER_CAP / size) slots = BUFFER_CAP / size;
    if (slots == 0) slots = 1;
    size_t bytes = slots * size;
    uint8_t *buf = malloc(bytes ? bytes : 1);
    if (!buf) {
        perror("malloc");
        return 1;
    }
    uint64_t x = 0x9E3779B97F4A7C15ull; /* xorshift64: a fixed pseudo-random payload */
    for (size_t i = 0; i < bytes; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
    uint8_t head[SHA256_DIGEST_LENGTH];
    for (int r = 0; threads > 0 && r < reps; r++)
        printf("ns_per_event %.3f\n", parallel_ns(buf, size, slots, count, threads, head));
    for (int r = 0; writedir && r < reps; r++) {
        double ns[3];
        if (floor_ns(buf, size, slots, count, writedir, head, ns)) return 1;
        printf("ns_per_event %.3f writer %.3f chain %.3f\n", ns[0], ns[1], ns[2]);
    }
    for (int r = 0; threads == 0 && !writedir && r < reps; r++) {
        chain c = {buf, size, slots, count, {0}, NULL, 0};
        double t0 = now_ns();
        hash_chain(&c);
        memcpy(head, c.head, sizeof(head));
        printf("ns_per_event %.3f\n", (c.t_end - t0) / (double)count);
    }
    printf("head ");
    for (size_t i = 0; i < sizeof(head); i++) printf("%02x", head[i]);
    printf("\n");
    free(buf);
    return 0;
}
