/*
 * kimberlite/sign.h — Ed25519 (RFC 8032) key generation, signing and verification through
 * OpenSSL libcrypto's EVP interface (EVP_PKEY_ED25519, one-shot EVP_DigestSign /
 * EVP_DigestVerify, RAND_bytes). No global state; thread-safe.
 *
 * Keys are raw bytes: a 32-byte seed (the private key of RFC 8032) and a 32-byte public
 * key. Every function that handles a seed wipes its own copies (OPENSSL_cleanse) and frees
 * the EVP key before it returns; the caller owns its buffers and wipes them when done.
 *
 * Verification is OpenSSL's: a signature of the wrong length, an S not below the group
 * order, or a non-canonical point encoding fails.
 */
#ifndef KIMBERLITE_SIGN_H
#define KIMBERLITE_SIGN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KMB_ED25519_SEED_SIZE 32
#define KMB_ED25519_PUBLIC_SIZE 32
#define KMB_ED25519_SIGNATURE_SIZE 64

/*
 * Generate a key pair from the operating system's randomness (RAND_bytes).
 * Errors: KMB_ERROR when OpenSSL fails (no randomness, no Ed25519); nothing is written then.
 */
int kmb_ed25519_generate(uint8_t seed[KMB_ED25519_SEED_SIZE],
                         uint8_t pub[KMB_ED25519_PUBLIC_SIZE]);

/* pub = the public key of `seed`. Errors: KMB_ERROR when OpenSSL fails. */
int kmb_ed25519_public(uint8_t pub[KMB_ED25519_PUBLIC_SIZE],
                       const uint8_t seed[KMB_ED25519_SEED_SIZE]);

/*
 * sig = the Ed25519 signature of msg[0:len] by `seed` (deterministic: the same inputs give
 * the same signature). `msg` may be NULL when len is 0. Errors: KMB_ERROR when OpenSSL fails.
 */
int kmb_ed25519_sign(uint8_t sig[KMB_ED25519_SIGNATURE_SIZE],
                     const uint8_t seed[KMB_ED25519_SEED_SIZE], const void *msg, size_t len);

/*
 * KMB_OK if sig[0:sig_len] is a valid signature of msg[0:len] by `pub`; KMB_ESIGNATURE if
 * not (wrong length included); KMB_ERROR when OpenSSL cannot run the check at all.
 */
int kmb_ed25519_verify(const uint8_t pub[KMB_ED25519_PUBLIC_SIZE], const uint8_t *sig,
                       size_t sig_len, const void *msg, size_t len);

#ifdef __cplusplus
}
#endif
#endif
