/*
 * layout.c — the segment file naming scheme (kimberlite/layout.h), written once.
 */
#include "kimberlite/layout.h"

#include <stdio.h>
#include <string.h>

int kmb_segment_name(char *out, size_t cap, uint32_t seg)
{
    int n = snprintf(out, cap, KMB_SEGMENT_NAME_FORMAT, seg);
    return (n < 0 || (size_t)n >= cap) ? -1 : n;
}

int kmb_segment_name_parse(const char *name, uint32_t *seg)
{
    if (strncmp(name, "segment_", 8) != 0) return 0;
    const char *p = name + 8;
    uint64_t v = 0;
    size_t digits = 0;
    while (p[digits] >= '0' && p[digits] <= '9') {
        v = v * 10 + (uint64_t)(p[digits] - '0');
        if (v > UINT32_MAX) return 0;
        digits++;
    }
    if (digits < 6 || strcmp(p + digits, ".log") != 0) return 0;
    /* Only the canonical spelling: "segment_0000001.log" is not segment 1's file. */
    char canon[KMB_SEGMENT_NAME_MAX];
    if (kmb_segment_name(canon, sizeof canon, (uint32_t)v) < 0 || strcmp(canon, name) != 0)
        return 0;
    *seg = (uint32_t)v;
    return 1;
}
