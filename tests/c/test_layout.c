/*
 * test_layout.c — segment file names (kimberlite/layout.h): written as FORMAT.md says, and
 * only the canonical spelling parses back, so that no other file is taken for a segment.
 */
#include <string.h>

#include "harness.h"
#include "kimberlite/layout.h"

TEST(segment_names_are_written_as_the_format_says)
{
    char name[KMB_SEGMENT_NAME_MAX];
    CHECK_EQ_INT(kmb_segment_name(name, sizeof name, 0), 18);
    CHECK(strcmp(name, "segment_000000.log") == 0);
    CHECK_EQ_INT(kmb_segment_name(name, sizeof name, 42), 18);
    CHECK(strcmp(name, "segment_000042.log") == 0);
    CHECK_EQ_INT(kmb_segment_name(name, sizeof name, 1234567), 19);
    CHECK(strcmp(name, "segment_1234567.log") == 0);
    CHECK_EQ_INT(kmb_segment_name(name, sizeof name, UINT32_MAX), 22);
    CHECK(strcmp(name, "segment_4294967295.log") == 0);
}

TEST(segment_name_into_a_short_buffer_fails_and_stays_terminated)
{
    char name[10];
    CHECK_EQ_INT(kmb_segment_name(name, sizeof name, 1), -1);
    CHECK(strlen(name) == 9);
    CHECK_EQ_INT(kmb_segment_name(name, 0, 1), -1);
}

TEST(segment_names_parse_back)
{
    const uint32_t nums[] = {0, 1, 999999, 1000000, 4294967295u};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        char name[KMB_SEGMENT_NAME_MAX];
        uint32_t seg = 7;
        CHECK(kmb_segment_name(name, sizeof name, nums[i]) > 0);
        CHECK_EQ_INT(kmb_segment_name_parse(name, &seg), 1);
        CHECK_EQ_U64(seg, nums[i]);
    }
}

TEST(other_names_are_not_segments)
{
    const char *names[] = {
        "segment_00001.log",     "segment_0000001.log",   "segment_000001.log.idx",
        "segment_000001.log.torn-1", "segment_4294967296.log", "segment_99999999999.log",
        "segment_+00001.log",    "segment_ 00001.log",    "xsegment_000001.log",
        "segment_000001.lo",     "segment_.log",          "",
        "kimberlite.lock",       "SEGMENT_000001.log",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        uint32_t seg = 7;
        CHECK_EQ_INT(kmb_segment_name_parse(names[i], &seg), 0);
        CHECK_EQ_U64(seg, 7); /* untouched */
    }
}
