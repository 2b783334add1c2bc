"""SPEC.md §2 test vectors, byte for byte, and the format constants and primitives."""
import hashlib
import os
import random
import zlib

import pytest

import kimberlite as km
from helpers import codec
from helpers import read_bytes, seg_path, stream_dir

EVENTS = [b"event1", b"event2"]
HASH_0 = bytes.fromhex("29663b9a32ee32c2ca5a645117696ce0888c84b39f8fd91c0ec4ebcd09025df4")
HASH_1 = bytes.fromhex("c0351898aed9916debcc05905fb10161c329785aaa559dbc85fc1571516b6f6e")
RECORD_0 = bytes.fromhex("0000000000000000" + "00" * 32 + "06000000" + "6576656e7431" + "0cda0e68")
RECORD_1 = bytes.fromhex("0100000000000000" + HASH_0.hex() + "06000000" + "6576656e7432" + "6114639d")


def test_vector_lengths_are_54_bytes():
    assert len(RECORD_0) == len(RECORD_1) == 54


def test_constants():
    assert km.RECORD_OVERHEAD == 48
    assert km.HEADER_SIZE == 44
    assert km.DEFAULT_MAX_SEGMENT_SIZE == 256 * 1024 * 1024
    assert isinstance(km.__version__, str) and km.__version__


def test_chain_hash_vectors():
    assert km.chain_hash(None, b"event1") == HASH_0
    assert km.chain_hash(HASH_0, b"event2") == HASH_1
    assert isinstance(km.chain_hash(None, b"event1"), bytes)


def test_codec_agrees_with_vectors():
    # The independent model must itself reproduce SPEC's vectors, or the cross-checks mean nothing.
    assert codec.chain_hashes(EVENTS) == [HASH_0, HASH_1]
    assert codec.encode_record(0, None, b"event1") == RECORD_0
    assert codec.encode_record(1, HASH_0, b"event2") == RECORD_1
    assert codec.build_stream([EVENTS], 1 << 20).segment_images()[0] == RECORD_0 + RECORD_1


def test_record_to_bytes_vectors():
    assert km.Record(0, None, b"event1").to_bytes() == RECORD_0
    assert km.Record(1, HASH_0, b"event2").to_bytes() == RECORD_1
    # 32 zero bytes are the genesis prev_hash too.
    assert km.Record(0, b"\x00" * 32, b"event1").to_bytes() == RECORD_0


def test_record_from_bytes_vectors():
    r0, n0 = km.Record.from_bytes(RECORD_0)
    assert n0 == 54
    assert (r0.offset, r0.prev_hash, r0.payload) == (0, None, b"event1")
    r1, n1 = km.Record.from_bytes(RECORD_1 + b"trailing bytes are not consumed")
    assert n1 == 54
    assert (r1.offset, r1.prev_hash, r1.payload) == (1, HASH_0, b"event2")
    assert isinstance(r1.payload, bytes) and isinstance(r1.prev_hash, bytes)


def test_record_compute_hash_vectors():
    assert km.Record(0, None, b"event1").compute_hash() == HASH_0
    assert km.Record(1, HASH_0, b"event2").compute_hash() == HASH_1


def test_storage_writes_exactly_the_108_byte_segment(data_dir):
    with km.Storage(data_dir) as s:
        assert s.append_batch(1, EVENTS) == 2
        assert s.latest_chain_hash(1) == HASH_1
        assert s.verify(1) == (2, HASH_1)
    data = read_bytes(seg_path(data_dir, 1, 0))
    assert len(data) == 108
    assert data == RECORD_0 + RECORD_1
    assert [n for n in os.listdir(stream_dir(data_dir, 1)) if n.endswith(".log")] == ["segment_000000.log"]


def test_memory_storage_vectors():
    with km.MemoryStorage() as m:
        assert m.append_batch(1, EVENTS) == 2
        assert m.latest_chain_hash(1) == HASH_1
        recs = m.read_records(1)
        assert [r.to_bytes() for r in recs] == [RECORD_0, RECORD_1]
        assert [r.compute_hash() for r in recs] == [HASH_0, HASH_1]


def test_read_records_vectors(data_dir):
    with km.Storage(data_dir) as s:
        s.append_batch(1, EVENTS)
        recs = s.read_records(1)
    assert [r.offset for r in recs] == [0, 1]
    assert recs[0].prev_hash is None
    assert recs[1].prev_hash == HASH_0
    assert [r.payload for r in recs] == EVENTS
    assert b"".join(r.to_bytes() for r in recs) == RECORD_0 + RECORD_1


def _crc_inputs():
    rng = random.Random(1234)
    inputs = [b"", b"\x00", b"\xff", b"a", b"123456789", b"event1", RECORD_0[:-4], RECORD_1[:-4],
              b"\x00" * 1000, b"\xff" * 4096, bytes(range(256)) * 7]
    for n in list(range(1, 70)) + [255, 256, 257, 1023, 1024, 1025, 4095, 65537]:
        inputs.append(bytes(rng.getrandbits(8) for _ in range(n)))
    return inputs


def test_crc32_equals_zlib_for_many_inputs():
    for data in _crc_inputs():
        assert km.crc32(data) == zlib.crc32(data), data[:16]


def test_crc32_check_value_and_bytes_like():
    assert km.crc32(b"123456789") == 0xCBF43926
    assert km.crc32(b"") == 0
    assert km.crc32(bytearray(b"123456789")) == 0xCBF43926
    assert km.crc32(memoryview(b"xx123456789")[2:]) == 0xCBF43926


def test_crc32_of_record_body_is_stored_crc():
    assert km.crc32(RECORD_0[:-4]).to_bytes(4, "little") == RECORD_0[-4:]
    assert km.crc32(RECORD_1[:-4]).to_bytes(4, "little") == RECORD_1[-4:]


@pytest.mark.parametrize("payload", [b"", b"x", b"event1", bytes(range(256)) * 40])
def test_chain_hash_is_sha256(payload):
    assert km.chain_hash(None, payload) == hashlib.sha256(payload).digest()
    assert km.chain_hash(HASH_1, payload) == hashlib.sha256(HASH_1 + payload).digest()


def test_chain_hash_accepts_bytes_like():
    assert km.chain_hash(bytearray(HASH_0), bytearray(b"event2")) == HASH_1
    assert km.chain_hash(memoryview(HASH_0), memoryview(b"event2")) == HASH_1


def test_chain_hash_rejects_wrong_length_prev():
    with pytest.raises(ValueError):
        km.chain_hash(b"\x01" * 31, b"x")
    with pytest.raises(ValueError):
        km.chain_hash(b"\x01" * 33, b"x")


def test_chain_hash_rejects_non_buffers():
    with pytest.raises(TypeError):
        km.chain_hash(None, "event1")
    with pytest.raises(TypeError):
        km.crc32("event1")
