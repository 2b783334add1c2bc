/*
 * record.c — encode, decode and hash one record (record.h, SPEC §2).
 *
 *   [offset:u64][prev_hash:32B][length:u32][payload:length bytes][crc32:u32]
 *
 * A record is valid if and only if all its bytes are present, its CRC matches and its
 * offset is below 2**63. decode and probe share one check (record_check) so the reader that
 * reports errors and the scanner that only asks "is there a record here?" can never
 * disagree. Sizes are computed in uint64_t: `length` comes from untrusted bytes and may be
 * 0xFFFFFFFF, which must read as "truncated", never wrap around.
 */
#include "kimberlite/record.h"

#include <inttypes.h>
#include <string.h>

#include "format.h"
#include "kimberlite/crc32.h"
#include "kimberlite/errors.h"

size_t kmb_record_encode(uint8_t *out, uint64_t offset, const uint8_t *prev_hash,
                         const void *payload, uint32_t length)
{
    size_t size = kmb_rec_put_body(out, offset, payload, length);
    kmb_rec_put_prev_hash(out, prev_hash);
    kmb_rec_put_crc(out, length, kmb_crc32(out, kmb_rec_crc_at(length)));
    return size;
}

/* Why a buffer does not start with a valid record. */
typedef enum {
    CHECK_OK,
    CHECK_SHORT_HEADER, /* fewer than KMB_HEADER_SIZE bytes */
    CHECK_SHORT_BODY,   /* header present, payload or CRC cut off */
    CHECK_BAD_CRC,
    CHECK_BAD_OFFSET /* offset >= 2**63 */
} check_result;

typedef struct {
    uint64_t need;   /* bytes the record would take (when the header was readable) */
    uint32_t stored; /* CRC found in the record */
    uint32_t actual; /* CRC computed over the record */
} check_detail;

static check_result record_check(kmb_record *out, size_t *consumed, const uint8_t *p,
                                 size_t len, check_detail *d)
{
    if (len < KMB_HEADER_SIZE) return CHECK_SHORT_HEADER;
    uint32_t length = kmb_load_u32le(p + KMB_REC_LENGTH_AT);
    uint64_t need = kmb_record_size(length); /* at most 2**32 + 47: no overflow */
    d->need = need;
    if ((uint64_t)len < need) return CHECK_SHORT_BODY;
    size_t body = kmb_rec_crc_at(length); /* fits: it is below len */
    d->stored = kmb_rec_crc_of(p, length);
    d->actual = kmb_crc32(p, body);
    if (d->stored != d->actual) return CHECK_BAD_CRC;
    uint64_t offset = kmb_rec_offset_of(p);
    if (offset >= KMB_MAX_OFFSET) return CHECK_BAD_OFFSET;
    out->offset = offset;
    memcpy(out->prev_hash, p + KMB_REC_PREV_HASH_AT, KMB_HASH_SIZE);
    out->length = length;
    out->payload = p + KMB_REC_PAYLOAD_AT;
    *consumed = (size_t)need;
    return CHECK_OK;
}

int kmb_record_probe(kmb_record *out, size_t *consumed, const void *data, size_t len)
{
    check_detail d = {0, 0, 0};
    return record_check(out, consumed, (const uint8_t *)data, len, &d) == CHECK_OK;
}

int kmb_record_decode(kmb_record *out, size_t *consumed, const void *data, size_t len)
{
    const uint8_t *p = (const uint8_t *)data;
    check_detail d = {0, 0, 0};
    check_result r = record_check(out, consumed, p, len, &d);
    if (r == CHECK_OK) return KMB_OK;

    int code = KMB_ECORRUPT;
    /* The offset field is only worth quoting when all 8 bytes of it are present. */
    int has_offset = len >= KMB_REC_OFFSET_AT + 8;
    uint64_t offset = has_offset ? kmb_rec_offset_of(p) : 0;
    switch (r) {
    case CHECK_SHORT_HEADER:
        code = kmb_error_set(KMB_EEOF, 0,
                             "data ends inside a record header: %d bytes needed, %zu present "
                             "(a truncated or torn record)",
                             KMB_HEADER_SIZE, len);
        break;
    case CHECK_SHORT_BODY:
        code = kmb_error_set(KMB_EEOF, 0,
                             "data ends inside the record at offset %" PRIu64
                             ": its payload length %" PRIu32 " needs %" PRIu64
                             " bytes, %zu present (a truncated or torn record)",
                             offset, kmb_load_u32le(p + KMB_REC_LENGTH_AT), d.need, len);
        break;
    case CHECK_BAD_CRC:
        code = kmb_error_set(KMB_ECORRUPT, 0,
                             "CRC mismatch in the record claiming offset %" PRIu64
                             ": stored 0x%08" PRIx32 ", computed 0x%08" PRIx32
                             " over %" PRIu64 " bytes (the record is damaged)",
                             offset, d.stored, d.actual, d.need - KMB_REC_CRC_SIZE);
        break;
    case CHECK_BAD_OFFSET:
        code = kmb_error_set(KMB_ECORRUPT, 0,
                             "record offset %" PRIu64
                             " is out of range: offsets must be below 2**63 (the record is "
                             "malformed)",
                             offset);
        break;
    case CHECK_OK:
        break;
    }
    kmb_error *e = kmb_error_mut();
    e->has_position = 1;
    e->position = 0;
    e->has_offset = has_offset;
    e->offset = offset;
    return code;
}

void kmb_record_hash(uint8_t out[KMB_HASH_SIZE], const kmb_record *r)
{
    kmb_chain_hash(out, r->offset == 0 ? NULL : r->prev_hash, r->payload, r->length);
}
