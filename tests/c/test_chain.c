/*
 * test_chain.c — the SHA-256 chain hash against SPEC §2's test vectors.
 */
#include <string.h>

#include "harness.h"
#include "kimberlite/chain.h"

#define HASH0 "29663b9a32ee32c2ca5a645117696ce0888c84b39f8fd91c0ec4ebcd09025df4"
#define HASH1 "c0351898aed9916debcc05905fb10161c329785aaa559dbc85fc1571516b6f6e"

TEST(chain_hash_matches_spec_vectors)
{
    uint8_t want0[32], want1[32], h0[32], h1[32];
    kt_unhex(want0, 32, HASH0);
    kt_unhex(want1, 32, HASH1);
    kmb_chain_hash(h0, NULL, "event1", 6);
    CHECK(memcmp(h0, want0, 32) == 0);
    kmb_chain_hash(h1, h0, "event2", 6);
    CHECK(memcmp(h1, want1, 32) == 0);
}

TEST(chain_hash_output_may_alias_previous_hash)
{
    uint8_t h[32], want1[32];
    kt_unhex(want1, 32, HASH1);
    kmb_chain_hash(h, NULL, "event1", 6);
    kmb_chain_hash(h, h, "event2", 6);
    CHECK(memcmp(h, want1, 32) == 0);
}

TEST(chain_hash_of_empty_genesis_payload_is_sha256_of_nothing)
{
    uint8_t h[32], want[32];
    kt_unhex(want, 32, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    kmb_chain_hash(h, NULL, NULL, 0);
    CHECK(memcmp(h, want, 32) == 0);
}

TEST(hash_is_zero_only_for_all_zero_bytes)
{
    uint8_t h[32] = {0};
    CHECK(kmb_hash_is_zero(h) == 1);
    for (int i = 0; i < 32; i++) {
        h[i] = 0x80;
        CHECKF(kmb_hash_is_zero(h) == 0, "byte %d", i);
        h[i] = 0;
    }
}
