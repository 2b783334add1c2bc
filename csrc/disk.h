/*
 * disk.h — internal hooks of the disk backend (not part of the public API).
 */
#ifndef KIMBERLITE_DISK_INTERNAL_H
#define KIMBERLITE_DISK_INTERNAL_H

#include <stdint.h>

#include "io.h"
#include "kimberlite/backend.h"

/* The fault plan of a disk backend (tests only: kimberlite/sys/faults.h); NULL when `b` is
 * not a disk backend (kmb_backend_disk_open). */
kmb_io *kmb_backend_disk_io(kmb_backend *b);

/* Close the cached descriptor of a segment, if any. */
void kmb_backend_disk_drop_fd(kmb_backend *b, uint64_t stream, uint32_t seg);

/*
 * In the child of a fork(): close the child's copy of the writer's lock descriptor, if any,
 * so that the child never keeps the parent's lock alive (the lock belongs to the open file
 * description; the parent's descriptor still holds it until the parent closes).
 */
void kmb_backend_disk_forget_lock(kmb_backend *b);

#endif
