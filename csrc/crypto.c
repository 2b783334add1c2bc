/*
 * crypto.c — kmb_crypto_init (kimberlite/crypto.h): OpenSSL's one-time set-up, run
 * explicitly so that a statically linked libcrypto detects the CPU's SHA-256 instructions.
 *
 * OPENSSL_init_crypto() runs OpenSSL's base initialisation once per process, and that calls
 * OPENSSL_cpuid_setup() (crypto/init.c, ossl_init_base). That function is not in OpenSSL's
 * public headers; OPENSSL_init_crypto is, and is thread-safe and idempotent.
 */
#include "kimberlite/crypto.h"

#include <openssl/crypto.h>

#include "kimberlite/errors.h"

int kmb_crypto_init(void)
{
#ifdef KMB_OPENSSL_STATIC
    const uint64_t opts = OPENSSL_INIT_NO_LOAD_CONFIG | OPENSSL_INIT_NO_ATEXIT;
#else
    const uint64_t opts = 0;
#endif
    if (OPENSSL_init_crypto(opts, NULL) != 1) {
        return kmb_error_set(KMB_ERROR, 0,
                             "OpenSSL libcrypto failed to initialise (OPENSSL_init_crypto); "
                             "the process is probably out of memory");
    }
    return KMB_OK;
}
