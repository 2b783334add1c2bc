"""An independent pure-Python model of the Kimberlite on-disk format (SPEC.md §2).

Only struct, zlib and hashlib are used, never the package under test, so that the tests
can check the engine's files against a second implementation and feed the engine files it
did not write itself.

    record = [offset:u64][prev_hash:32B][length:u32][payload][crc32:u32]   (little-endian)
    hash_0 = SHA-256(payload_0); hash_n = SHA-256(hash_{n-1} || payload_n)
    .idx   = "VDXI" 01 000000 [N:u64] [pos:u64]*N [crc32:u32]
"""

import hashlib
import os
import struct
import zlib

HEADER_SIZE = 44
RECORD_OVERHEAD = 48
HASH_SIZE = 32
ZERO_HASH = b"\x00" * HASH_SIZE
MAX_OFFSET = 1 << 63
INDEX_MAGIC = b"VDXI"
INDEX_VERSION = 1
INDEX_HEADER_SIZE = 16

_HEADER = struct.Struct("<Q32sI")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class CodecError(ValueError):
    """The bytes do not follow the format (with the byte position of the problem)."""

    def __init__(self, message, position):
        super().__init__(f"{message} at byte {position}")
        self.position = position


# --- primitives -------------------------------------------------------------------------

def crc32(data):
    return zlib.crc32(bytes(data)) & 0xFFFFFFFF


def chain_hash(prev_hash, payload):
    """hash_n = SHA-256(prev || payload); prev None (or zeros for genesis) hashes the payload only."""
    h = hashlib.sha256()
    if prev_hash is not None:
        assert len(prev_hash) == HASH_SIZE
        h.update(prev_hash)
    h.update(bytes(payload))
    return h.digest()


def chain_hashes(payloads):
    """The chain hash of every record of a stream with these payloads (hash_0, hash_1, …)."""
    out = []
    prev = None
    for p in payloads:
        prev = chain_hash(prev, p)
        out.append(prev)
    return out


def head_hash(payloads):
    hashes = chain_hashes(payloads)
    return hashes[-1] if hashes else None


def record_size(payload_len):
    return RECORD_OVERHEAD + payload_len


# --- records ----------------------------------------------------------------------------

def encode_record(offset, prev_hash, payload):
    """Bytes of one record; prev_hash None means 32 zero bytes (genesis)."""
    payload = bytes(payload)
    body = _HEADER.pack(offset, ZERO_HASH if prev_hash is None else bytes(prev_hash), len(payload)) + payload
    return body + _U32.pack(crc32(body))


def decode_record(data, pos=0):
    """Decode the record at data[pos:]: (offset, prev_hash, payload, size). Raises CodecError."""
    if len(data) - pos < HEADER_SIZE:
        raise CodecError("incomplete record header", pos)
    offset, prev, length = _HEADER.unpack_from(data, pos)
    end = pos + HEADER_SIZE + length + 4
    if end > len(data):
        raise CodecError("record extends past the end of the data", pos)
    (stored,) = _U32.unpack_from(data, end - 4)
    if crc32(data[pos:end - 4]) != stored:
        raise CodecError("CRC mismatch", pos)
    if offset >= MAX_OFFSET:
        raise CodecError("offset out of range", pos)
    return offset, bytes(prev), bytes(data[pos + HEADER_SIZE:end - 4]), end - pos


def decode_segment(data, first_offset=None):
    """bytes of a segment -> list of (offset, prev_hash, payload). Strict: the whole input must
    be valid records, back to back, with consecutive offsets (from first_offset if given)."""
    out = []
    pos = 0
    expected = first_offset
    while pos < len(data):
        offset, prev, payload, size = decode_record(data, pos)
        if expected is not None and offset != expected:
            raise CodecError(f"offset {offset}, expected {expected}", pos)
        out.append((offset, prev, payload))
        expected = offset + 1
        pos += size
    return out


def record_positions(data):
    """Start position of every record in a (valid) segment image."""
    positions = []
    pos = 0
    while pos < len(data):
        positions.append(pos)
        pos += decode_record(data, pos)[3]
    return positions


def encode_records(first_offset, prev_hash, payloads):
    """Encode consecutive records; returns (bytes, new head hash)."""
    parts = []
    for i, p in enumerate(payloads):
        parts.append(encode_record(first_offset + i, prev_hash, p))
        prev_hash = chain_hash(prev_hash, p)
    return b"".join(parts), prev_hash


# --- offset index ------------------------------------------------------------------------

def encode_index(positions):
    positions = list(positions)
    body = INDEX_MAGIC + bytes([INDEX_VERSION, 0, 0, 0]) + _U64.pack(len(positions))
    body += b"".join(_U64.pack(p) for p in positions)
    return body + _U32.pack(crc32(body))


def decode_index(data):
    """.idx bytes -> list of positions. Raises CodecError on any defect."""
    data = bytes(data)
    if len(data) < INDEX_HEADER_SIZE + 4:
        raise CodecError("index too short", 0)
    if data[:4] != INDEX_MAGIC:
        raise CodecError("bad magic", 0)
    if data[4] != INDEX_VERSION:
        raise CodecError("bad version", 4)
    if data[5:8] != b"\x00\x00\x00":
        raise CodecError("reserved bytes not zero", 5)
    (n,) = _U64.unpack_from(data, 8)
    if len(data) != INDEX_HEADER_SIZE + 8 * n + 4:
        raise CodecError("size does not match the entry count", 8)
    (stored,) = _U32.unpack_from(data, len(data) - 4)
    if crc32(data[:-4]) != stored:
        raise CodecError("CRC mismatch", len(data) - 4)
    return [_U64.unpack_from(data, INDEX_HEADER_SIZE + 8 * i)[0] for i in range(n)]


# --- whole streams -------------------------------------------------------------------------

def segment_name(n):
    return "segment_%06d.log" % n


class StreamModel:
    """The expected state of one stream after a sequence of appended batches.

    Follows SPEC's eager rotation: after a batch, if the active segment is at or above
    max_segment_size bytes a new, empty segment becomes active. A batch never straddles.
    """

    def __init__(self, max_segment_size):
        self.max_segment_size = max_segment_size
        self.payloads = []
        self.hashes = []
        self.segments = [bytearray()]      # segment images; the last one is active
        self.segment_first = [0]           # first offset of each segment
        self.batches = []

    def append_batch(self, batch):
        batch = [bytes(e) for e in batch]
        assert batch, "SPEC: an empty batch is an error"
        prev = self.hashes[-1] if self.hashes else None
        data, _ = encode_records(len(self.payloads), prev, batch)
        self.segments[-1] += data
        for p in batch:
            prev = chain_hash(prev, p)
            self.payloads.append(p)
            self.hashes.append(prev)
        self.batches.append(batch)
        if len(self.segments[-1]) >= self.max_segment_size:
            self.segments.append(bytearray())
            self.segment_first.append(len(self.payloads))
        return len(self.payloads)

    @property
    def next_offset(self):
        return len(self.payloads)

    @property
    def head(self):
        return self.hashes[-1] if self.hashes else None

    @property
    def segment_count(self):
        return len(self.segments) if self.payloads else 0

    @property
    def completed_segments(self):
        return list(range(len(self.segments) - 1)) if self.payloads else []

    def segment_images(self):
        return [bytes(s) for s in self.segments]

    def read(self, from_offset=0, max_bytes=None):
        return read_model(self.payloads, from_offset, max_bytes)


def read_model(payloads, from_offset=0, max_bytes=None):
    """SPEC §4 max_bytes: include events while the sum returned so far is below max_bytes."""
    out = []
    total = 0
    for p in payloads[from_offset:]:
        if max_bytes is not None and total >= max_bytes:
            break
        out.append(p)
        total += len(p)
    return out


def build_stream(batches, max_segment_size):
    m = StreamModel(max_segment_size)
    for b in batches:
        m.append_batch(b)
    return m


def write_stream_dir(data_dir, stream_id, batches, max_segment_size, *, with_index=False,
                     create_active=True):
    """Write data_dir/{stream_id}/segment_*.log (and .idx if with_index) as the engine would.

    create_active: also create the file of an empty active segment left by eager rotation.
    Returns the StreamModel.
    """
    model = build_stream(batches, max_segment_size)
    d = os.path.join(os.fspath(data_dir), str(stream_id))
    os.makedirs(d, exist_ok=True)
    images = model.segment_images()
    for n, img in enumerate(images):
        if not img and n == len(images) - 1 and not create_active:
            continue
        with open(os.path.join(d, segment_name(n)), "wb") as f:
            f.write(img)
        if with_index:
            with open(os.path.join(d, segment_name(n) + ".idx"), "wb") as f:
                f.write(encode_index(record_positions(img)))
    return model


def read_stream_dir(stream_dir):
    """Decode every segment file of a stream directory, strictly.

    Returns (segment images in order, list of (offset, prev_hash, payload) for the stream).
    Checks that segments are numbered 0..k without gaps, offsets continue across segments and
    every prev_hash links to its predecessor.
    """
    names = sorted(n for n in os.listdir(stream_dir)
                   if n.startswith("segment_") and n.endswith(".log"))
    assert names == [segment_name(i) for i in range(len(names))], names
    images = []
    records = []
    prev = None
    for n in names:
        with open(os.path.join(stream_dir, n), "rb") as f:
            img = f.read()
        images.append(img)
        for off, ph, payload in decode_segment(img, first_offset=len(records)):
            assert ph == (ZERO_HASH if prev is None else prev), f"broken link at offset {off}"
            prev = chain_hash(prev, payload)
            records.append((off, ph, payload))
    return images, records
