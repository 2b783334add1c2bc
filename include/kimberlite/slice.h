/*
 * kimberlite/slice.h — borrowed bytes: one event handed to an append. A leaf header.
 */
#ifndef KIMBERLITE_SLICE_H
#define KIMBERLITE_SLICE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One event to append: `len` bytes at `data`, borrowed for the duration of the call. */
typedef struct kmb_slice {
    const void *data;
    size_t len;
} kmb_slice;

#ifdef __cplusplus
}
#endif
#endif
