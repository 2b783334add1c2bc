"""Memory stays flat over many calls (reference leaks, buffers, error paths).

RSS is read from /proc/self/statm after a warm-up; the growth allowed is a few MiB, far
below what a leak of the data moved through the loop would cost."""
import gc
import sys

import pytest

import kimberlite as km
from helpers import codec
from helpers import rss_bytes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/statm")

LIMIT = 3 * 1024 * 1024
EVENT = b"L" * 2000
SMALL = [b"v%d" % i for i in range(20)]
HEAD = codec.head_hash(SMALL)


def _round(s, sid, i):
    n = s.append_batch(sid, [EVENT, bytearray(EVENT), memoryview(EVENT)], fsync=False)
    got = s.read_from(sid, max(0, n - 30))
    assert len(got) == min(30, n)
    recs = s.read_records(sid, max(0, n - 30), max_bytes=10**9)
    assert recs[-1].payload == EVENT and recs[-1].compute_hash() == s.latest_chain_hash(sid)
    assert s.verify(sid + 1) == (20, HEAD)     # a fixed-size stream: constant cost per round
    s.next_offset(sid)
    s.segment_count(sid)
    s.completed_segments(sid)
    s.streams()
    # error paths too
    _expect(ValueError, lambda: s.append_batch(sid, []))
    _expect(TypeError, lambda: s.append_batch(sid, ["str"]))
    _expect(TypeError, lambda: s.append_batch(sid, [b"ok", 7]))
    e = _expect(km.OffsetMismatchError, lambda: s.append_batch(sid, [b"x"], expected_offset=10**6))
    assert e.actual == n
    _expect(km.ChainVerificationError, lambda: s.verify(sid + 1, expected_head=b"\x00" * 32))
    _expect(ValueError, lambda: s.read_from(sid, -1))
    assert s.next_offset(sid) == n


def _expect(exc, fn):
    try:
        fn()
    except exc as e:
        return e
    raise AssertionError(f"{exc.__name__} not raised")


def _measure(fn, warmup, rounds):
    for i in range(warmup):
        fn(i)
    gc.collect()
    before = rss_bytes()
    for i in range(rounds):
        fn(i)
    gc.collect()
    return rss_bytes() - before


@pytest.mark.parametrize("kind", ["disk", "memory"])
def test_append_read_verify_loop_keeps_memory_flat(tmp_path, kind):
    if kind == "disk":
        s = km.Storage(tmp_path / "d", max_segment_size=256 * 1024)
    else:
        s = km.MemoryStorage(max_segment_size=256 * 1024)   # holds the appended data itself
    rounds = 1000 if kind == "disk" else 300
    try:
        s.append_batch(2, SMALL)
        growth = _measure(lambda i: _round(s, 1, i), warmup=50, rounds=rounds)
    finally:
        s.close()
    allowed = LIMIT
    if kind == "memory":
        # the appended data itself is legitimately retained (with its records' overhead)
        allowed += rounds * 3 * (2000 + 48) * 2
    print(f"RSS growth over {rounds} rounds: {growth / 2**20:.2f} MiB")
    assert growth < allowed, f"RSS grew by {growth / 2**20:.1f} MiB"


def test_memory_storage_create_and_drop_keeps_memory_flat():
    def once(i):
        m = km.MemoryStorage(max_segment_size=64 * 1024)
        for sid in range(4):
            m.append_batch(sid, [b"M" * 10000] * 10, fsync=False)  # 400 KB per storage
        assert len(m.read_from(3)) == 10
        if i % 2:
            m.close()
        del m
    growth = _measure(once, warmup=20, rounds=200)  # a leak would hold 80 MB
    assert growth < LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB"


def test_storage_open_close_keeps_memory_flat(tmp_path):
    with km.Storage(tmp_path / "d") as s:
        s.append_batch(1, [b"x" * 1000] * 50)

    def once(i):
        with km.Storage(tmp_path / "d", read_only=bool(i % 2)) as s:
            assert len(s.read_from(1)) == 50
            s.verify(1)
    growth = _measure(once, warmup=20, rounds=300)
    assert growth < LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB"


def test_records_and_index_objects_keep_memory_flat(tmp_path):
    p = tmp_path / "i.idx"

    def once(i):
        r = km.Record(i, b"\x01" * 32, b"P" * 5000)
        back, _ = km.Record.from_bytes(r.to_bytes())
        assert back == r and back.compute_hash() == r.compute_hash()
        km.chain_hash(None, b"P" * 5000)
        km.crc32(b"P" * 5000)
        ix = km.OffsetIndex(range(0, 50000, 100))
        ix.append(50000)
        ix.save(p)
        assert len(km.OffsetIndex.load(p)) == 501
        _expect(km.UnexpectedEofError, lambda: km.Record.from_bytes(b"short"))
    growth = _measure(once, warmup=30, rounds=400)
    assert growth < LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB"


def test_read_paths_and_error_mapping_keep_memory_flat(tmp_path):
    # both read paths on big chunks (copied without the GIL) and small ones, the damage
    # errors they raise, every exception class's construction, and the C Record
    import kimberlite.testing as kt

    big = [bytes([i]) * 100_000 for i in range(6)]
    s = km.MemoryStorage(max_segment_size=4096)
    s.append_batch(1, big)
    s.append_batch(2, [b"e%d" % i for i in range(60)])
    kt.flip_bit(s, 2, 3)
    s.append_batch(3, [b"t%d" % i for i in range(60)])
    kt.replace_payload(s, 3, 10, b"T")
    missing = tmp_path / "missing"

    def once(i):
        assert s.read_from(1) == big
        assert [r.payload for r in s.read_records(1)] == big
        _expect(km.CorruptedRecordError, lambda: s.read_records(2))
        _expect(km.CorruptedRecordError, lambda: s.read_from(2))
        _expect(km.ChainVerificationError, lambda: s.read_records(3))
        _expect(km.OffsetMismatchError, lambda: s.append_batch(1, [b"x"], expected_offset=2**64))
        _expect(km.OffsetMismatchError, lambda: s.append_batch(1, [b"x"], expected_offset=-5))
        _expect(km.StorageIOError, lambda: km.Storage(missing, read_only=True))
        _expect(ValueError, lambda: km.Record(1, b"short", b"x"))
        _expect(TypeError, lambda: km.Record(1, None, "text"))
        assert km._core.decode_record_header(km.Record(i, None, b"h").to_bytes())[0] == i
        _expect(km.UnexpectedEofError, lambda: km._core.decode_record_header(b"x" * 43))
        assert km._core.parse_segment_file_name(km._core.segment_file_name(i)) == i
    growth = _measure(once, warmup=10, rounds=150)   # a leak would hold 180 MB
    assert growth < LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB"
