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
 *     cc -O2 -o hashlimit hashlimit.c -lcrypto
 *     ./hashlimit SIZE COUNT [REPS]
 *
 * Output: one line per repetition, "ns_per_event <float>", then "head <hex>" (the head hash,
 * so the work cannot be optimised away and can be cross-checked against the engine's).
 * Payload bytes are a fixed pseudo-random pattern; COUNT events of SIZE bytes are laid out
 * back to back in memory (capped at 256 MiB; beyond it events reuse the buffer cyclically).
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#define _POSIX_C_SOURCE 200809L

#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUFFER_CAP ((size_t)256 << 20)

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s SIZE COUNT [REPS]\n", argv[0]);
        return 2;
    }
    size_t size = strtoull(argv[1], NULL, 10);
    size_t count = strtoull(argv[2], NULL, 10);
    int reps = argc > 3 ? atoi(argv[3]) : 3;
    if (count == 0 || reps <= 0) {
        fprintf(stderr, "COUNT and REPS must be positive\n");
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
    for (int r = 0; r < reps; r++) {
        double t0 = now_ns();
        for (size_t i = 0; i < count; i++) {
            const uint8_t *p = buf + (i % slots) * size;
            SHA256_CTX ctx;
            SHA256_Init(&ctx);
            if (i > 0) SHA256_Update(&ctx, head, sizeof(head));
            if (size > 0) SHA256_Update(&ctx, p, size);
            SHA256_Final(head, &ctx);
        }
        double t1 = now_ns();
        printf("ns_per_event %.3f\n", (t1 - t0) / (double)count);
    }
    printf("head ");
    for (size_t i = 0; i < sizeof(head); i++) printf("%02x", head[i]);
    printf("\n");
    free(buf);
    return 0;
}
