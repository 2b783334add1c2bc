/*
 * crc32_impl.h — internal view of the CRC-32 implementations, for tests and benchmarks.
 *
 * crc32.c carries several implementations of the same function (portable slice-by-8 and,
 * where the CPU has them, carry-less-multiply folding on x86_64 or the ARMv8 CRC32
 * instructions) and picks one at first use. Tests run every variant this machine supports
 * against a bitwise reference, so a hardware path cannot silently disagree with zlib.
 * Not part of the public API: nothing under include/ exposes it.
 */
#ifndef KIMBERLITE_CRC32_IMPL_H
#define KIMBERLITE_CRC32_IMPL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One implementation. `update` has kmb_crc32_update's semantics (zlib's crc32()). */
typedef struct kmb_crc32_variant {
    const char *name; /* "slice8", "pclmul", "armv8" */
    uint32_t (*update)(uint32_t crc, const void *data, size_t len);
} kmb_crc32_variant;

/*
 * The variants usable on this CPU, the portable one first; *count receives their number
 * (at least 1). The array is static and valid for the life of the process.
 */
const kmb_crc32_variant *kmb_crc32_variants(size_t *count);

/* The name of the variant kmb_crc32_update dispatches to. */
const char *kmb_crc32_active_name(void);

#ifdef __cplusplus
}
#endif
#endif
