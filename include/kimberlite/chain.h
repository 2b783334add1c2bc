/*
 * kimberlite/chain.h — the SHA-256 hash chain.
 *
 *   hash_0 = SHA-256(payload_0)
 *   hash_n = SHA-256(hash_{n-1} || payload_n)      n >= 1
 *
 * Uses OpenSSL libcrypto's SHA-256 with no per-call digest lookup or context allocation.
 */
#ifndef KIMBERLITE_CHAIN_H
#define KIMBERLITE_CHAIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KMB_HASH_SIZE 32

/*
 * out = SHA-256(prev || data), or SHA-256(data) when prev is NULL (genesis).
 * `out` may alias `prev`. `data` may be NULL when len is 0. Cannot fail; thread-safe.
 */
void kmb_chain_hash(uint8_t out[KMB_HASH_SIZE], const uint8_t *prev, const void *data,
                    size_t len);

/* 1 if all KMB_HASH_SIZE bytes at h are zero (the stored prev_hash of genesis), else 0. */
int kmb_hash_is_zero(const uint8_t h[KMB_HASH_SIZE]);

#ifdef __cplusplus
}
#endif
#endif
