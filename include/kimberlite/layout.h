/*
 * kimberlite/layout.h — the names of a stream's files (docs/FORMAT.md, "Files").
 *
 *   data_dir/{stream_id}/segment_%06u.log        records
 *   data_dir/{stream_id}/segment_%06u.log.idx    its offset index (a cache)
 *
 * The one owner of the segment naming scheme: the disk backend, the memory backend's
 * display names, and (through the extension) kimberlite.testing and the command line all
 * use these, so the scheme is written once.
 */
#ifndef KIMBERLITE_LAYOUT_H
#define KIMBERLITE_LAYOUT_H

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* printf format of a segment file name; takes one uint32_t, the segment number. */
#define KMB_SEGMENT_NAME_FORMAT "segment_%06" PRIu32 ".log"

/* Longest segment file name ("segment_4294967295.log"), terminating NUL included. */
#define KMB_SEGMENT_NAME_MAX 23

/*
 * Write the file name of segment `seg` into `out` (`cap` bytes, NUL-terminated; at least
 * KMB_SEGMENT_NAME_MAX always suffices). Returns the name's length, or -1 when `cap` is too
 * small (then `out` holds a truncated, terminated name when cap > 0). Never fails otherwise.
 */
int kmb_segment_name(char *out, size_t cap, uint32_t seg);

/*
 * Parse a file name exactly as kmb_segment_name writes it: "segment_" then at least six
 * decimal digits, without extra leading zeros beyond six, then ".log", the number within
 * uint32_t. Returns 1 and sets *seg for a segment name; 0 for any other name (index and
 * quarantine files included), leaving *seg unchanged. `name` must be NUL-terminated.
 */
int kmb_segment_name_parse(const char *name, uint32_t *seg);

#ifdef __cplusplus
}
#endif

#endif
