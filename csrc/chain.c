/*
 * chain.c — the SHA-256 hash chain (chain.h): hash_n = SHA-256(hash_{n-1} || payload_n).
 *
 * OpenSSL's low-level SHA256_* calls run on a stack context: no EVP digest fetch and no
 * heap allocation per record, which matters because the engine hashes every record it
 * writes or reads and most records are small. They are deprecated in OpenSSL 3 but remain
 * supported; OPENSSL_SUPPRESS_DEPRECATED keeps the build warning-free.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include "kimberlite/chain.h"

#include <openssl/sha.h>

void kmb_chain_hash(uint8_t out[KMB_HASH_SIZE], const uint8_t *prev, const void *data,
                    size_t len)
{
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    if (prev != NULL) {
        /* Consumed before `out` is written, so `out` may alias `prev`. */
        SHA256_Update(&ctx, prev, KMB_HASH_SIZE);
    }
    if (len > 0) {
        SHA256_Update(&ctx, data, len);
    }
    SHA256_Final(out, &ctx);
}

int kmb_hash_is_zero(const uint8_t h[KMB_HASH_SIZE])
{
    uint8_t acc = 0;
    for (size_t i = 0; i < KMB_HASH_SIZE; i++) acc |= h[i];
    return acc == 0;
}
