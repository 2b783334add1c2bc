/*
 * sign.c — Ed25519 through OpenSSL EVP (sign.h).
 *
 * EVP_PKEY_new_raw_private_key takes the 32-byte seed; signing is the one-shot
 * EVP_DigestSign with a NULL digest, as Ed25519 requires. Errors from OpenSSL are drained
 * from its thread-local queue so that they never leak into an unrelated later call.
 */
#include "kimberlite/sign.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "kimberlite/errors.h"

static int ssl_fail(const char *what)
{
    unsigned long e = ERR_get_error();
    char detail[256] = "no detail";
    if (e != 0) ERR_error_string_n(e, detail, sizeof detail);
    ERR_clear_error();
    return kmb_error_set(KMB_ERROR, 0, "OpenSSL failed to %s (%s)", what, detail);
}

int kmb_ed25519_public(uint8_t pub[KMB_ED25519_PUBLIC_SIZE],
                       const uint8_t seed[KMB_ED25519_SEED_SIZE])
{
    EVP_PKEY *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed,
                                                KMB_ED25519_SEED_SIZE);
    if (pk == NULL) return ssl_fail("load an Ed25519 private key");
    size_t len = KMB_ED25519_PUBLIC_SIZE;
    int ok = EVP_PKEY_get_raw_public_key(pk, pub, &len) == 1 && len == KMB_ED25519_PUBLIC_SIZE;
    EVP_PKEY_free(pk);
    return ok ? KMB_OK : ssl_fail("derive an Ed25519 public key");
}

int kmb_ed25519_generate(uint8_t seed[KMB_ED25519_SEED_SIZE],
                         uint8_t pub[KMB_ED25519_PUBLIC_SIZE])
{
    uint8_t s[KMB_ED25519_SEED_SIZE], p[KMB_ED25519_PUBLIC_SIZE];
    int rc;
    if (RAND_bytes(s, sizeof s) != 1) {
        rc = ssl_fail("gather randomness for a key");
    } else {
        rc = kmb_ed25519_public(p, s);
        if (rc == KMB_OK) {
            memcpy(seed, s, sizeof s);
            memcpy(pub, p, sizeof p);
        }
    }
    OPENSSL_cleanse(s, sizeof s);
    return rc;
}

int kmb_ed25519_sign(uint8_t sig[KMB_ED25519_SIGNATURE_SIZE],
                     const uint8_t seed[KMB_ED25519_SEED_SIZE], const void *msg, size_t len)
{
    static const unsigned char empty = 0;
    EVP_PKEY *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed,
                                                KMB_ED25519_SEED_SIZE);
    if (pk == NULL) return ssl_fail("load an Ed25519 private key");
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t siglen = KMB_ED25519_SIGNATURE_SIZE;
    int ok = ctx != NULL && EVP_DigestSignInit(ctx, NULL, NULL, NULL, pk) == 1 &&
             EVP_DigestSign(ctx, sig, &siglen, len ? msg : &empty, len) == 1 &&
             siglen == KMB_ED25519_SIGNATURE_SIZE;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pk); /* OpenSSL clears the private key material it frees */
    return ok ? KMB_OK : ssl_fail("sign with Ed25519");
}

int kmb_ed25519_verify(const uint8_t pub[KMB_ED25519_PUBLIC_SIZE], const uint8_t *sig,
                       size_t sig_len, const void *msg, size_t len)
{
    static const unsigned char empty = 0;
    if (sig_len != KMB_ED25519_SIGNATURE_SIZE)
        return kmb_error_set(KMB_ESIGNATURE, 0,
                             "an Ed25519 signature is %d bytes, this one is %zu",
                             KMB_ED25519_SIGNATURE_SIZE, sig_len);
    EVP_PKEY *pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub,
                                               KMB_ED25519_PUBLIC_SIZE);
    if (pk == NULL) {
        /* OpenSSL 3 loads any 32 bytes; a failure here is not the signature's fault. */
        return ssl_fail("load an Ed25519 public key");
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc;
    if (ctx == NULL || EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pk) != 1) {
        rc = ssl_fail("start an Ed25519 verification");
    } else if (EVP_DigestVerify(ctx, sig, sig_len, len ? msg : &empty, len) == 1) {
        rc = KMB_OK;
    } else {
        ERR_clear_error();
        rc = kmb_error_set(KMB_ESIGNATURE, 0, "the Ed25519 signature does not verify");
    }
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pk);
    return rc;
}
