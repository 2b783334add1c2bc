"""kimberlite.Record and Storage.read_records.

read_records is read_from's data path with Record objects (issue 9): the same events, the
same errors, on both backends; Record follows the engine's genesis rule, which goes by the
offset (docs/FORMAT.md §5, docs/DESIGN.md); the engine owns the format facts that
kimberlite.testing and the command line use (record encoder and header, segment names).
"""
import hashlib
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kimberlite as km
import kimberlite.testing as kt

ZERO = bytes(32)


def sha256(*parts):
    return hashlib.sha256(b"".join(parts)).digest()


def fill(s, sid, payloads, batch=7):
    for i in range(0, len(payloads), batch):
        s.append_batch(sid, payloads[i:i + batch], fsync=False)


def assert_records_match(s, sid, from_offset=0, max_bytes=None):
    events = s.read_from(sid, from_offset, max_bytes)
    records = s.read_records(sid, from_offset, max_bytes)
    assert [r.payload for r in records] == events
    assert all(type(r) is km.Record for r in records)
    assert [r.offset for r in records] == list(range(from_offset, from_offset + len(events)))
    # each record links to the one before it, as the engine stored it
    for a, b in zip(records, records[1:]):
        assert b.prev_hash == a.compute_hash()
    if records and records[0].offset == 0:
        assert records[0].prev_hash is None
    if records and records[-1].offset == s.next_offset(sid) - 1:
        assert records[-1].compute_hash() == s.latest_chain_hash(sid)
    return records


# ---- read_records is read_from with records -------------------------------------------------

def test_read_records_equals_read_from_across_segments(backend):
    s = backend.open(max_segment_size=700)
    payloads = [bytes([i % 251]) * (i * 13 % 200) for i in range(120)]
    fill(s, 1, payloads)
    assert s.segment_count(1) > 5
    for start in (0, 1, 17, 119, 120, 500):
        for limit in (None, 0, 1, 150, 10_000):
            assert_records_match(s, 1, start, limit)
    assert s.read_records(2) == []  # absent stream


def test_read_records_of_large_events(backend):
    # chunks of large payloads are copied without the GIL: the same bytes must arrive
    s = backend.open()
    payloads = [bytes([i]) * (70_000 + i) for i in range(12)] + [b""] * 3
    fill(s, 1, payloads, batch=5)
    records = assert_records_match(s, 1)
    assert [r.payload for r in records] == payloads


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=40),
       start=st.integers(0, 45), limit=st.one_of(st.none(), st.integers(0, 20_000)))
def test_read_records_equivalence_property(sizes, start, limit):
    s = km.MemoryStorage(max_segment_size=4096)
    fill(s, 3, [bytes([n % 256]) * n for n in sizes], batch=6)
    assert_records_match(s, 3, start, limit)


def _same_error(s, sid, from_offset=0):
    with pytest.raises(km.StorageError) as a:
        s.read_from(sid, from_offset)
    with pytest.raises(km.StorageError) as b:
        s.read_records(sid, from_offset)
    assert type(a.value) is type(b.value)
    assert str(a.value) == str(b.value)
    for attr in ("stream_id", "offset", "position", "expected", "actual"):
        assert getattr(a.value, attr, None) == getattr(b.value, attr, None), attr
    return a.value


def test_read_records_raises_what_read_from_raises_on_bit_rot(backend):
    s = backend.open(max_segment_size=300)
    fill(s, 1, [b"event %d" % i for i in range(40)])
    kt.flip_bit(s, 1, 5)  # in a sealed segment: corruption, not a torn tail
    e = _same_error(s, 1)
    assert isinstance(e, km.CorruptedRecordError) and e.stream_id == 1
    # the records before the damage still read, as records too
    assert_records_match(s, 1, 0, 1)


def test_read_records_raises_what_read_from_raises_on_tampering(backend):
    s = backend.open(max_segment_size=300)
    fill(s, 1, [b"event %d" % i for i in range(40)])
    kt.replace_payload(s, 1, 10, b"EVENT 10")
    e = _same_error(s, 1, 3)
    assert isinstance(e, km.ChainVerificationError) and e.offset == 11


def test_read_records_on_a_closed_storage(backend):
    s = backend.open()
    s.close()
    with pytest.raises(ValueError):
        s.read_records(1)


@pytest.mark.parametrize("bad", ["1", 1.5, None])
def test_read_records_argument_errors(backend, bad):
    s = backend.open()
    with pytest.raises(TypeError):
        s.read_records(bad)
    with pytest.raises(ValueError):
        s.read_records(1, -1)


# ---- Record follows the engine's genesis rule --------------------------------------------

def test_compute_hash_goes_by_offset():
    p = b"payload"
    # offset > 0: 32 zero bytes are a prev_hash like any other
    r = km.Record(5, ZERO, p)
    assert r.prev_hash == ZERO
    assert r.compute_hash() == sha256(ZERO, p) != sha256(p)
    # None at offset > 0 is stored as zeros, and reads back as them
    assert km.Record(5, None, p) == r and km.Record(5, None, p).prev_hash == ZERO
    # offset 0: genesis, SHA-256(payload), zeros and None are one value
    g = km.Record(0, ZERO, p)
    assert g.prev_hash is None and g == km.Record(0, None, p)
    assert g.compute_hash() == sha256(p) == km.chain_hash(None, p)
    # a non-zero prev_hash at offset 0 is kept (a broken genesis), and hashes as genesis
    h = km.Record(0, b"\x01" * 32, p)
    assert h.prev_hash == b"\x01" * 32 and h.compute_hash() == sha256(p)


@pytest.mark.parametrize("offset", [0, 1, 5, 2**63 - 1])
@pytest.mark.parametrize("prev", [None, ZERO, b"\x07" * 32])
def test_round_trip_equality_and_hash_agree(offset, prev):
    r = km.Record(offset, prev, b"abc")
    back, used = km.Record.from_bytes(r.to_bytes())
    assert used == km.RECORD_OVERHEAD + 3
    assert back == r and hash(back) == hash(r)
    assert back.compute_hash() == r.compute_hash()
    assert pickle.loads(pickle.dumps(r)) == r
    assert r.to_bytes()[8:40] == (r.prev_hash or ZERO)


def test_compute_hash_is_the_engines_hash(backend):
    # a record at offset > 0 that stores zeros as prev_hash: the engine hashes the zeros
    s = backend.open()
    s.append_batch(1, [b"a", b"b", b"c"])
    records = s.read_records(1)
    assert records[2].compute_hash() == s.latest_chain_hash(1)
    forged = km.Record(1, ZERO, b"b")
    assert forged.compute_hash() == km.chain_hash(ZERO, b"b")
    assert forged.compute_hash() != records[1].compute_hash()


def test_records_are_immutable_values():
    r = km.Record(3, b"\x02" * 32, bytearray(b"xy"))
    assert type(r.payload) is bytes and r.payload == b"xy"
    for name in ("offset", "prev_hash", "payload", "other"):
        with pytest.raises(AttributeError):
            setattr(r, name, 1)
        with pytest.raises(AttributeError):
            delattr(r, name)
    assert isinstance(r, km.Record) and r.__module__ == "kimberlite"
    assert {r, km.Record(3, b"\x02" * 32, b"xy")} == {r}


# ---- format facts owned by the engine ---------------------------------------------------

def test_segment_file_names_come_from_the_engine(tmp_path):
    core = km._core
    assert core.segment_file_name(0) == "segment_000000.log"
    assert core.segment_file_name(42) == "segment_000042.log"
    assert core.segment_file_name(2**32 - 1) == "segment_4294967295.log"
    for n in (0, 7, 999_999, 1_000_000, 2**32 - 1):
        assert core.parse_segment_file_name(core.segment_file_name(n)) == n
    for name in ("segment_00001.log", "segment_0000001.log", "segment_000001.log.idx",
                 "segment_000001.log.torn-1", "segment_4294967296.log", "segment_+00001.log",
                 "xsegment_000001.log", "segment_000001.lo", "", "segment_000001.log\0"):
        assert core.parse_segment_file_name(name) is None, name
    with pytest.raises(ValueError):
        core.segment_file_name(2**32)
    with pytest.raises(ValueError):
        core.segment_file_name(-1)
    with pytest.raises(TypeError):
        core.parse_segment_file_name(b"segment_000001.log")
    # the names the disk backend writes are the ones parsed
    with km.Storage(tmp_path / "d", max_segment_size=100) as s:
        fill(s, 1, [b"x" * 60] * 5, batch=1)
        segs = s.segment_count(1)
    names = sorted((tmp_path / "d" / "1").iterdir())
    nums = sorted(n for n in (core.parse_segment_file_name(p.name) for p in names)
                  if n is not None)
    assert nums == list(range(len(nums))) and len(nums) >= segs - 1


def test_record_header_and_encoder_come_from_the_engine():
    core = km._core
    raw = core.encode_record(9, b"\x05" * 32, b"hello")
    assert raw == km.Record(9, b"\x05" * 32, b"hello").to_bytes()
    assert core.decode_record_header(raw) == (9, b"\x05" * 32, 5)
    assert core.decode_record_header(b"xyz" + raw, 3) == (9, b"\x05" * 32, 5)
    # no check beyond the header: a record with a bad CRC still shows its header
    bad = raw[:-1] + bytes([raw[-1] ^ 1])
    assert core.decode_record_header(bad)[0] == 9
    for data, pos in ((raw[:43], 0), (raw, len(raw) - 43), (raw, len(raw) + 1)):
        with pytest.raises(km.UnexpectedEofError):
            core.decode_record_header(data, pos)


def test_offset_mismatch_names_an_offset_the_engine_cannot_carry(backend):
    s = backend.open()
    s.append_batch(1, [b"a"])
    for expected in (2**64, 2**70, -(2**64)):
        with pytest.raises(km.OffsetMismatchError) as ei:
            s.append_batch(1, [b"b"], expected_offset=expected)
        assert (ei.value.expected, ei.value.actual) == (expected, 1)
        assert str(expected) in str(ei.value) and "next offset is 1" in str(ei.value)
    # a batch error still comes first, as for any expected_offset
    with pytest.raises(TypeError):
        s.append_batch(1, ["text"], expected_offset=2**64)
    assert s.read_from(1) == [b"a"]
