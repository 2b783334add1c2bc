/*
 * kimberlite/crypto.h — one-time set-up of OpenSSL libcrypto, which the engine uses for
 * SHA-256 (and the extension for Ed25519 and random bytes).
 *
 * Why it exists: OpenSSL picks its SHA-256 code (SHA-NI, AVX2, SSSE3 or plain C) from the
 * CPU-capability vector OPENSSL_ia32cap_P, filled by OPENSSL_cpuid_setup(). The shared
 * libcrypto.so runs that from a constructor when it is loaded; a libcrypto linked
 * statically (the wheels, see README "Packaging") has no such constructor in the final
 * object, and the low-level SHA256_* calls the engine makes never trigger OpenSSL's lazy
 * initialisation. Without this call SHA-256 silently runs the generic code, about five
 * times slower. tests/test_build.py checks the speed of the built extension.
 */
#ifndef KIMBERLITE_CRYPTO_H
#define KIMBERLITE_CRYPTO_H

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Initialise libcrypto for this process: OpenSSL's base set-up, which includes the CPU
 * feature detection. Call it once before hashing (the Python extension calls it when its
 * module is executed; a C program linking libcrypto statically must call it too). Further
 * calls, from any thread, do nothing more and are cheap: OpenSSL runs the set-up once.
 *
 * Built with KMB_OPENSSL_STATIC (a private, statically linked libcrypto) it also tells
 * OpenSSL not to read openssl.cnf (a system configuration may name modules built for the
 * system's libcrypto, not this copy) and not to register an atexit clean-up (a worker
 * thread may still be hashing when the process exits). Against a shared, system libcrypto
 * it asks for nothing beyond the base set-up, so other users of that library in the
 * process see OpenSSL's defaults unchanged.
 *
 * Owns nothing and keeps no state of its own (the state is OpenSSL's).
 * Returns KMB_OK, or KMB_ERROR (message in kmb_error_last()) if OpenSSL's set-up failed,
 * which happens only when it cannot allocate its locks.
 */
int kmb_crypto_init(void);

#ifdef __cplusplus
}
#endif

#endif
