/*
 * kimberlite/sys/faults.h — fault injection into a storage's file operations. FOR TESTS ONLY.
 *
 * Like libgit2's include/git2/sys/, this directory holds interfaces that are public but not
 * meant for applications: a test harness uses them to prove what SPEC.md §3 promises under
 * failing disks and crashes (docs/GUARANTEES.md, docs/TESTING.md).
 *
 * Every open, read, write, sync (data and directory), rename, truncate and mkdir of the disk
 * backend goes through one small layer (csrc/io.c). A fault plan, owned by one storage and
 * never shared, tells that layer to fail the Nth call of chosen classes — SQLite's test_vfs
 * approach: first count the calls a scenario makes (nth = 0), then replay the scenario
 * failing call 1, 2, …, N in turn and check recovery after each.
 *
 * Only storages whose backend has a fault_plan callback (sys/backend.h) have such a layer:
 * the disk backend does; on any other backend (the memory backend, a custom backend
 * without it) both functions return KMB_EINVAL. Calls are serialised with
 * the storage's other calls; the plan lives until it is replaced or the storage closes.
 */
#ifndef KIMBERLITE_SYS_FAULTS_H
#define KIMBERLITE_SYS_FAULTS_H

#include <stdint.h>

#include "../storage.h"
#include "fault_codes.h" /* KMB_FAULT_*, KMB_FAULT_CRASH */

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Install a fault plan on st, resetting its counters.
 *   ops        classes of calls to count (KMB_FAULT_*); 0 removes the plan.
 *   nth        fail the nth counted call (1-based); 0 only counts, never fails.
 *   err        errno of the failure (EIO, ENOSPC, EFBIG, …; 0 means EIO), or KMB_FAULT_CRASH.
 *   persistent 0: only the nth call fails; 1: the nth and every later counted call fail.
 *   short_write  a failing write first writes half of its bytes (as a full disk does), then
 *              fails; other operations fail without side effects.
 * Returns KMB_OK, KMB_EINVAL (not a disk storage, or err < KMB_FAULT_CRASH) or KMB_ECLOSED.
 */
int kmb_storage_set_fault(kmb_storage *st, unsigned ops, uint64_t nth, int err, int persistent,
                          int short_write);

/*
 * The plan's counters since it was installed: *calls counted calls, *faults faults injected
 * (each output may be NULL). Returns KMB_OK, KMB_EINVAL (not a disk storage) or KMB_ECLOSED.
 */
int kmb_storage_fault_counts(kmb_storage *st, uint64_t *calls, uint64_t *faults);

#ifdef __cplusplus
}
#endif
#endif
