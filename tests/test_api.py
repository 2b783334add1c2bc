"""Every item of the SPEC §4 Python API, on both backends where it applies."""
import array
import os
import pathlib

import pytest

import kimberlite as km
from helpers import codec
from helpers import dir_listing, read_bytes, seg_path, stream_dir


# --- append / read basics -----------------------------------------------------------------

def test_append_returns_new_next_offset(backend):
    s = backend.open()
    assert s.next_offset(1) == 0
    assert s.append_batch(1, [b"a"]) == 1
    assert s.append_batch(1, [b"b", b"c"]) == 3
    assert s.append_batch(1, [b"d"], expected_offset=3) == 4
    assert s.append_batch(1, [b"e"], fsync=False) == 5
    assert s.append_batch(1, [b"f"], expected_offset=5, fsync=True) == 6
    assert s.next_offset(1) == 6
    assert s.read_from(1) == [b"a", b"b", b"c", b"d", b"e", b"f"]


def test_read_from_defaults_and_types(backend):
    s = backend.open()
    s.append_batch(2, [b"x", bytearray(b"y"), b""])
    out = s.read_from(2)
    assert out == [b"x", b"y", b""]
    assert type(out) is list
    assert all(type(e) is bytes for e in out)
    assert s.read_from(2, 1) == [b"y", b""]
    assert s.read_from(2, from_offset=2) == [b""]
    assert s.read_from(2, 0, None) == [b"x", b"y", b""]


def test_read_records(backend):
    s = backend.open()
    events = [b"r0", b"", b"r2" * 50]
    s.append_batch(3, events)
    recs = s.read_records(3)
    assert type(recs) is list
    assert all(isinstance(r, km.Record) for r in recs)
    hashes = codec.chain_hashes(events)
    assert [r.offset for r in recs] == [0, 1, 2]
    assert [r.prev_hash for r in recs] == [None, hashes[0], hashes[1]]
    assert [r.payload for r in recs] == events
    assert [r.compute_hash() for r in recs] == hashes
    assert [r.offset for r in s.read_records(3, 1)] == [1, 2]
    assert [r.payload for r in s.read_records(3, 0, max_bytes=1)] == [b"r0"]
    assert s.read_records(3, 3) == []


def test_latest_chain_hash_and_verify(backend):
    s = backend.open()
    assert s.latest_chain_hash(4) is None
    assert s.verify(4) == (0, None)
    events = []
    for i in range(5):
        batch = [b"e%d" % i] * (i + 1)
        s.append_batch(4, batch)
        events += batch
        head = codec.head_hash(events)
        assert s.latest_chain_hash(4) == head
        res = s.verify(4)
        assert type(res) is tuple
        assert res == (len(events), head)
        assert s.verify(4, expected_head=head) == (len(events), head)
        assert s.verify(4, head) == (len(events), head)


def test_unknown_stream_reads_are_empty_and_create_nothing(backend):
    s = backend.open()
    s.append_batch(1, [b"x"])
    assert s.read_from(42) == []
    assert s.read_records(42, 5) == []
    assert s.next_offset(42) == 0
    assert s.latest_chain_hash(42) is None
    assert s.segment_count(42) == 0
    assert s.completed_segments(42) == []
    assert s.verify(42) == (0, None)
    assert s.streams() == [1]
    if backend.is_disk:
        assert not os.path.exists(stream_dir(backend.data_dir, 42))


@pytest.mark.parametrize("sid", [0, 1, 2**32, 2**63, 2**64 - 1])
def test_stream_id_range(backend, sid):
    s = backend.open()
    assert s.append_batch(sid, [b"edge"]) == 1
    assert s.read_from(sid) == [b"edge"]
    assert s.streams() == [sid]
    if backend.is_disk:
        assert os.path.isfile(seg_path(backend.data_dir, sid, 0))
        assert str(sid) in os.listdir(backend.data_dir)


def test_extreme_stream_directories(disk):
    s = disk.open()
    s.append_batch(0, [b"zero"])
    s.append_batch(2**64 - 1, [b"max"])
    names = sorted(n for n in os.listdir(disk.data_dir) if os.path.isdir(os.path.join(disk.data_dir, n)))
    assert names == ["0", "18446744073709551615"]


def test_streams_ascending(backend):
    s = backend.open()
    ids = [500, 3, 2**64 - 1, 0, 77, 2**40, 9]
    for sid in ids:
        s.append_batch(sid, [b"x"])
    assert s.streams() == sorted(ids)
    assert type(s.streams()) is list


# --- events of every bytes-like kind --------------------------------------------------------

def test_events_bytes_like(backend):
    s = backend.open()
    base = b"abcdef"
    a = array.array("H", [1, 2, 0xFFFF])
    events = [
        b"bytes",
        bytearray(b"bytearray"),
        memoryview(b"memoryview"),
        memoryview(base)[1:4],          # a contiguous slice
        memoryview(base)[::2],          # non-contiguous
        memoryview(a),                  # itemsize 2
        b"",
        memoryview(bytearray(b"rw")),
    ]
    expected = [b"bytes", b"bytearray", b"memoryview", b"bcd", b"ace", a.tobytes(), b"", b"rw"]
    assert s.append_batch(1, events) == len(events)
    assert s.read_from(1) == expected


def test_events_any_iterable(backend):
    s = backend.open()
    assert s.append_batch(1, (b"t%d" % i for i in range(3))) == 3
    assert s.append_batch(1, (b"tuple", b"two")) == 5
    assert s.append_batch(1, iter([b"iter"])) == 6
    assert s.append_batch(1, map(bytes, [b"m1", b"m2"])) == 8

    class Seq:
        def __iter__(self):
            return iter([b"custom"])
    assert s.append_batch(1, Seq()) == 9
    assert s.read_from(1) == [b"t0", b"t1", b"t2", b"tuple", b"two", b"iter", b"m1", b"m2", b"custom"]


def test_empty_events_allowed(backend):
    s = backend.open()
    assert s.append_batch(1, [b""]) == 1
    assert s.append_batch(1, [b"", b"", b"x", b""]) == 5
    assert s.read_from(1) == [b"", b"", b"", b"x", b""]
    assert s.verify(1) == (5, codec.head_hash([b"", b"", b"", b"x", b""]))


def test_events_are_copied(backend):
    s = backend.open()
    buf = bytearray(b"before")
    s.append_batch(1, [buf])
    buf[:] = b"AFTER!"
    assert s.read_from(1) == [b"before"]


def test_large_batch(backend):
    s = backend.open()
    events = [b"%06d" % i for i in range(5000)]
    assert s.append_batch(1, events) == 5000
    assert s.read_from(1, 4990) == events[4990:]
    assert s.read_from(1) == events
    assert s.verify(1) == (5000, codec.head_hash(events))


# --- from_offset / max_bytes ----------------------------------------------------------------

MB_EVENTS = [b"aaaa", b"", b"bb", b"cccccc", b"", b"", b"d", b"eeeeeeeeee"]


@pytest.mark.parametrize("method", ["read_from", "read_records"])
def test_max_bytes_semantics(backend, method):
    s = backend.open(max_segment_size=120)
    s.append_batch(1, MB_EVENTS[:3])
    s.append_batch(1, MB_EVENTS[3:])
    assert s.segment_count(1) > 1
    total = sum(map(len, MB_EVENTS))
    for f in range(len(MB_EVENTS) + 2):
        for mb in list(range(0, total + 3)) + [None, 2**62, 2**64, 2**100]:
            got = getattr(s, method)(1, f, mb)
            if method == "read_records":
                assert [r.offset for r in got] == list(range(f, f + len(got)))
                got = [r.payload for r in got]
            assert got == codec.read_model(MB_EVENTS, f, mb), (f, mb)


def test_max_bytes_examples(backend):
    s = backend.open()
    s.append_batch(1, [b"12345", b"678", b"9"])
    assert s.read_from(1, 0, 0) == []
    assert s.read_from(1, 0, 1) == [b"12345"]          # the crossing event is included
    assert s.read_from(1, 0, 5) == [b"12345"]          # 5 is not below 5
    assert s.read_from(1, 0, 6) == [b"12345", b"678"]
    assert s.read_from(1, 0, 9) == [b"12345", b"678", b"9"]
    assert s.read_from(1, 0, 2**100) == [b"12345", b"678", b"9"]
    assert s.read_from(1, 2, max_bytes=1) == [b"9"]
    s.append_batch(2, [b"", b"", b"x"])
    assert s.read_from(2, 0, 0) == []
    assert s.read_from(2, 0, 1) == [b"", b"", b"x"]


def test_from_offset_at_or_past_end(backend):
    s = backend.open()
    s.append_batch(1, [b"a", b"b"])
    for f in (2, 3, 1000, 2**63, 2**64, 2**100):
        assert s.read_from(1, f) == []
        assert s.read_records(1, f) == []
        assert s.read_from(1, f, 10) == []


# --- segments ---------------------------------------------------------------------------------

def test_segment_count_and_completed_segments(backend):
    s = backend.open(max_segment_size=100)
    assert s.segment_count(1) == 0 and s.completed_segments(1) == []
    s.append_batch(1, [b"x"])          # 49 bytes
    assert (s.segment_count(1), s.completed_segments(1)) == (1, [])
    s.append_batch(1, [b"y" * 3])      # 49 + 51 = 100 >= 100: eager rotation
    assert (s.segment_count(1), s.completed_segments(1)) == (2, [0])
    s.append_batch(1, [b"z" * 200])    # bigger than a segment: whole, then rotation
    assert (s.segment_count(1), s.completed_segments(1)) == (3, [0, 1])
    s.append_batch(1, [b"w"])
    assert (s.segment_count(1), s.completed_segments(1)) == (3, [0, 1])
    assert type(s.completed_segments(1)) is list
    assert s.read_from(1) == [b"x", b"yyy", b"z" * 200, b"w"]


# --- attributes, close, context manager -------------------------------------------------------

def test_storage_attributes(tmp_path):
    p = tmp_path / "d"
    s = km.Storage(p, max_segment_size=4096)
    try:
        assert s.path == os.fspath(p)
        assert isinstance(s.path, str)
        assert s.read_only is False
        assert s.max_segment_size == 4096
        assert s.closed is False
    finally:
        s.close()
    assert s.closed is True
    assert s.path == os.fspath(p)
    s2 = km.Storage(str(p), read_only=True)
    assert s2.path == str(p) and s2.read_only is True
    assert s2.max_segment_size == km.DEFAULT_MAX_SEGMENT_SIZE
    s2.close()


def test_memory_storage_attributes():
    m = km.MemoryStorage(max_segment_size=777)
    assert m.path is None
    assert m.read_only is False
    assert m.max_segment_size == 777
    assert m.closed is False
    m.close()
    assert m.closed is True
    assert km.MemoryStorage().max_segment_size == km.DEFAULT_MAX_SEGMENT_SIZE


def test_path_like_accepted(tmp_path):
    class P:
        def __fspath__(self):
            return str(tmp_path / "pl")
    with km.Storage(P()) as s:
        s.append_batch(1, [b"x"])
        assert s.path == str(tmp_path / "pl")
    with km.Storage(pathlib.Path(tmp_path / "pl")) as s:
        assert s.read_from(1) == [b"x"]


def test_close_idempotent(backend):
    s = backend.open()
    s.append_batch(1, [b"x"])
    assert s.close() is None
    assert s.close() is None
    assert s.closed is True


def test_context_manager(backend):
    s0 = backend.open()
    with s0 as s:
        assert s is s0
        s.append_batch(1, [b"x"])
    assert s0.closed
    with pytest.raises(ValueError):
        s0.next_offset(1)


def test_context_manager_closes_on_exception(disk):
    with pytest.raises(KeyError):
        with km.Storage(disk.data_dir) as s:
            s.append_batch(1, [b"x"])
            raise KeyError("x")
    assert s.closed
    # the lock was released: a new writer can open
    with km.Storage(disk.data_dir) as s2:
        assert s2.read_from(1) == [b"x"]


def test_flush_indexes_returns_none(backend):
    s = backend.open()
    assert s.flush_indexes() is None
    s.append_batch(1, [b"x"])
    assert s.flush_indexes() is None


# --- disk: reopen, read-only, lock, stream directories --------------------------------------

def test_reopen_preserves_everything(disk):
    s = disk.open(max_segment_size=150)
    for i in range(10):
        s.append_batch(i % 3, [b"ev%d" % i] * (i % 4 + 1))
    state = {sid: (s.next_offset(sid), s.latest_chain_hash(sid), s.segment_count(sid),
                   s.completed_segments(sid), s.read_from(sid)) for sid in s.streams()}
    s.close()
    s = disk.open(max_segment_size=150)
    assert s.streams() == [0, 1, 2]
    for sid, st in state.items():
        assert (s.next_offset(sid), s.latest_chain_hash(sid), s.segment_count(sid),
                s.completed_segments(sid), s.read_from(sid)) == st
        assert s.verify(sid) == (st[0], st[1])


def test_read_only_sees_later_appends(disk):
    w = disk.open(max_segment_size=200)
    w.append_batch(1, [b"first"])
    r = disk.open(read_only=True, max_segment_size=200)
    assert r.read_from(1) == [b"first"]
    assert r.streams() == [1]
    events = [b"first"]
    for i in range(8):
        batch = [b"more%d" % i, b"x" * 30]
        w.append_batch(1, batch, fsync=False)
        events += batch
        assert r.next_offset(1) == len(events)
        assert r.read_from(1) == events
        assert r.latest_chain_hash(1) == codec.head_hash(events)
        assert r.segment_count(1) == w.segment_count(1)
        assert r.completed_segments(1) == w.completed_segments(1)
    assert w.segment_count(1) > 2
    w.append_batch(2, [b"new stream"])
    assert r.streams() == [1, 2]
    assert r.read_from(2) == [b"new stream"]
    assert r.verify(1) == (len(events), codec.head_hash(events))


def test_read_only_never_sees_a_partial_record(disk):
    w = disk.open()
    w.append_batch(1, [b"whole"])
    w.close()
    path = seg_path(disk.data_dir, 1, 0)
    full = read_bytes(path)
    partial = codec.encode_record(1, codec.chain_hash(None, b"whole"), b"partial!")[:30]
    with open(path, "ab") as f:
        f.write(partial)
    before = dir_listing(disk.data_dir)
    r = disk.open(read_only=True)
    assert r.read_from(1) == [b"whole"]
    assert r.next_offset(1) == 1
    assert r.verify(1) == (1, codec.chain_hash(None, b"whole"))
    r.close()
    assert read_bytes(path) == full + partial  # read-only: nothing cut, nothing moved
    assert dir_listing(disk.data_dir) == before


def test_non_canonical_directories_are_not_streams(disk):
    s = disk.open()
    s.append_batch(7, [b"x"])
    s.close()
    for name in ("007", "abc", "-1", "+5", "18446744073709551616", " 8", "1e3", "00"):
        os.makedirs(os.path.join(disk.data_dir, name), exist_ok=True)
    with open(os.path.join(disk.data_dir, "12"), "w") as f:  # a file, not a directory
        f.write("x")
    s = disk.open()
    assert s.streams() == [7]
    assert s.read_from(7) == [b"x"]


def test_lock_file_inside_data_dir(disk):
    s = disk.open()
    assert os.path.exists(os.path.join(disk.data_dir, "kimberlite.lock"))
    s.close()


# --- Record -------------------------------------------------------------------------------------

def test_record_api():
    h = codec.chain_hash(None, b"p0")
    r = km.Record(1, h, b"p1")
    assert (r.offset, r.prev_hash, r.payload) == (1, h, b"p1")
    assert r.compute_hash() == codec.chain_hash(h, b"p1")
    raw = r.to_bytes()
    assert isinstance(raw, bytes) and len(raw) == km.RECORD_OVERHEAD + 2
    back, used = km.Record.from_bytes(raw)
    assert back == r and used == len(raw)
    assert km.Record(1, h, b"p1") == r
    assert km.Record(1, h, b"p2") != r
    assert km.Record(2, h, b"p1") != r
    g = km.Record(0, None, b"genesis")
    assert g.prev_hash is None
    assert km.Record(0, b"\x00" * 32, b"genesis").prev_hash is None
    assert km.Record.from_bytes(g.to_bytes())[0] == g
    assert km.Record(0, None, bytearray(b"ba")).payload == b"ba"
    assert type(km.Record(0, None, bytearray(b"ba")).payload) is bytes


def test_record_from_bytes_accepts_buffers():
    raw = codec.encode_record(9, b"\x05" * 32, b"zz")
    for data in (bytearray(raw), memoryview(raw), memoryview(b"??" + raw)[2:]):
        r, n = km.Record.from_bytes(data)
        assert (r.offset, r.prev_hash, r.payload, n) == (9, b"\x05" * 32, b"zz", len(raw))


# --- OffsetIndex ------------------------------------------------------------------------------

def test_offset_index_api(tmp_path):
    ix = km.OffsetIndex()
    assert len(ix) == 0
    assert ix.positions == []
    assert ix.lookup(0) is None
    for p in (0, 54, 108, 2**40):
        assert ix.append(p) is None
    assert len(ix) == 4
    assert ix.positions == [0, 54, 108, 2**40]
    assert type(ix.positions) is list
    assert [ix.lookup(i) for i in range(5)] == [0, 54, 108, 2**40, None]
    p = tmp_path / "a.idx"
    assert ix.save(p) is None
    assert read_bytes(p) == codec.encode_index([0, 54, 108, 2**40])
    back = km.OffsetIndex.load(p)
    assert isinstance(back, km.OffsetIndex)
    assert back.positions == ix.positions
    assert km.OffsetIndex(positions=[3, 4]).positions == [3, 4]
    assert km.OffsetIndex((x for x in [1, 2])).positions == [1, 2]
    assert km.OffsetIndex.load(str(p)).positions == ix.positions


def test_offset_index_positions_is_a_copy():
    ix = km.OffsetIndex([1, 2])
    pos = ix.positions
    pos.append(3)
    assert ix.positions == [1, 2]


def test_offset_index_save_overwrites(tmp_path):
    p = tmp_path / "o.idx"
    km.OffsetIndex([1, 2, 3]).save(p)
    km.OffsetIndex([9]).save(p)
    assert read_bytes(p) == codec.encode_index([9])
    assert sorted(os.listdir(tmp_path)) == ["o.idx"]  # no temporary file left behind


def test_large_option_values_accepted(backend):
    s = backend.open(max_segment_size=2**63, max_event_size=2**40)
    assert s.max_segment_size == 2**63
    assert s.append_batch(1, [b"x" * 1000]) == 1
    assert s.segment_count(1) == 1


def test_int_subclass_stream_id(backend):
    import enum

    class Stream(enum.IntEnum):
        ORDERS = 3
    s = backend.open()
    assert s.append_batch(Stream.ORDERS, [b"x"]) == 1
    assert s.read_from(3) == [b"x"]
    assert s.streams() == [3]
    assert type(s.streams()[0]) is int


def test_relative_path_survives_chdir(tmp_path, monkeypatch):
    """A Storage opened on a relative path keeps using that directory after os.chdir (as an
    open file would): new streams are not created relative to the new working directory."""
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.chdir(a)
    s = km.Storage("data")
    try:
        s.append_batch(1, [b"first"])
        monkeypatch.chdir(b)
        s.append_batch(1, [b"second"])
        s.append_batch(2, [b"new stream"])
        assert s.read_from(1) == [b"first", b"second"]
        assert s.streams() == [1, 2]
    finally:
        s.close()
    assert sorted(os.listdir(a / "data" / "2")) and not (b / "data").exists()
    with km.Storage(a / "data") as again:
        assert again.read_from(2) == [b"new stream"]
