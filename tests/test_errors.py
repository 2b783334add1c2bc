"""Every error path of SPEC §4 (and DESIGN.md's choices), on both backends where it applies.
Each error case also checks that nothing was written."""
import errno
import os

import pytest

import kimberlite as km
from helpers import codec
from helpers import read_bytes, seg_path, write_bytes

SID = 5
BATCHES = [[b"alpha", b"beta"], [b""], [b"gamma" * 20], [b"delta", b"epsilon"]]

STREAM_METHODS = [
    ("append_batch", lambda s, sid: s.append_batch(sid, [b"x"])),
    ("read_from", lambda s, sid: s.read_from(sid)),
    ("read_records", lambda s, sid: s.read_records(sid)),
    ("next_offset", lambda s, sid: s.next_offset(sid)),
    ("latest_chain_hash", lambda s, sid: s.latest_chain_hash(sid)),
    ("verify", lambda s, sid: s.verify(sid)),
    ("segment_count", lambda s, sid: s.segment_count(sid)),
    ("completed_segments", lambda s, sid: s.completed_segments(sid)),
]


@pytest.fixture
def populated(backend):
    s = backend.open(max_segment_size=200, max_event_size=1000)
    for b in BATCHES:
        s.append_batch(SID, b)
    assert s.segment_count(SID) >= 2
    return backend, s


def assert_nothing_written(backend, s, before):
    assert backend.snapshot(s) == before


# --- stream ids -------------------------------------------------------------------------

@pytest.mark.parametrize("name,call", STREAM_METHODS, ids=[m[0] for m in STREAM_METHODS])
@pytest.mark.parametrize("bad", [1.0, "1", None, b"1", [1]], ids=["float", "str", "None", "bytes", "list"])
def test_stream_id_wrong_type_is_type_error(populated, name, call, bad):
    backend, s = populated
    before = backend.snapshot(s)
    with pytest.raises(TypeError):
        call(s, bad)
    assert_nothing_written(backend, s, before)


@pytest.mark.parametrize("name,call", STREAM_METHODS, ids=[m[0] for m in STREAM_METHODS])
@pytest.mark.parametrize("bad", [-1, 2**64, 2**70, -(2**64)], ids=["-1", "2**64", "2**70", "-2**64"])
def test_stream_id_out_of_range_is_value_error(populated, name, call, bad):
    backend, s = populated
    before = backend.snapshot(s)
    with pytest.raises(ValueError):
        call(s, bad)
    assert_nothing_written(backend, s, before)


# --- events -----------------------------------------------------------------------------

def _raising_gen():
    yield b"fine"
    raise RuntimeError("boom from the iterable")


BAD_EVENTS_TYPE = {  # factories: a generator can be consumed once only
    "str": lambda: "abc",
    "bytes-itself": lambda: b"abc",          # an iterable of ints
    "list-with-str": lambda: [b"ok", "text"],
    "list-with-int": lambda: [b"ok", 7],
    "list-with-None": lambda: [b"ok", None],
    "None": lambda: None,
    "int": lambda: 5,
    "str-only-list": lambda: ["a"],
    "gen-with-str": lambda: (x for x in [b"ok", "text"]),
}


@pytest.mark.parametrize("sid", [SID, 77], ids=["existing", "new-stream"])
@pytest.mark.parametrize("key", list(BAD_EVENTS_TYPE))
def test_events_wrong_type_is_type_error(populated, key, sid):
    backend, s = populated
    events = BAD_EVENTS_TYPE[key]()
    before = backend.snapshot(s)
    with pytest.raises(TypeError):
        s.append_batch(sid, events)
    assert_nothing_written(backend, s, before)


@pytest.mark.parametrize("sid", [SID, 77], ids=["existing", "new-stream"])
@pytest.mark.parametrize("make", [list, tuple, lambda: iter([]), lambda: (x for x in [])],
                         ids=["list", "tuple", "iter", "gen"])
def test_empty_batch_is_value_error(populated, sid, make):
    backend, s = populated
    events = make()
    before = backend.snapshot(s)
    with pytest.raises(ValueError):
        s.append_batch(sid, events)
    assert_nothing_written(backend, s, before)


@pytest.mark.parametrize("sid", [SID, 77], ids=["existing", "new-stream"])
@pytest.mark.parametrize("where", ["only", "last", "first"])
def test_event_over_max_event_size_is_value_error(populated, sid, where):
    backend, s = populated
    big = b"z" * 1001
    events = {"only": [big], "last": [b"a", b"b" * 1000, big], "first": [big, b"a"]}[where]
    before = backend.snapshot(s)
    with pytest.raises(ValueError):
        s.append_batch(sid, events)
    assert_nothing_written(backend, s, before)
    # the limit is inclusive: exactly max_event_size is fine
    n = s.next_offset(sid)
    assert s.append_batch(sid, [b"b" * 1000]) == n + 1


def test_iterable_raising_propagates_and_writes_nothing(populated):
    backend, s = populated
    before = backend.snapshot(s)
    with pytest.raises(RuntimeError, match="boom"):
        s.append_batch(SID, _raising_gen())
    assert_nothing_written(backend, s, before)


# --- expected_offset --------------------------------------------------------------------

@pytest.mark.parametrize("delta", [-1, 1, 100, "negative"])
def test_expected_offset_mismatch(populated, delta):
    backend, s = populated
    actual = s.next_offset(SID)
    expected = -1 if delta == "negative" else actual + delta
    before = backend.snapshot(s)
    with pytest.raises(km.OffsetMismatchError) as ei:
        s.append_batch(SID, [b"nope"], expected_offset=expected)
    assert ei.value.expected == expected
    assert ei.value.actual == actual
    assert isinstance(ei.value, km.StorageError)
    assert_nothing_written(backend, s, before)
    assert s.append_batch(SID, [b"yes"], expected_offset=actual) == actual + 1


def test_expected_offset_on_new_stream(populated):
    backend, s = populated
    before = backend.snapshot(s)
    with pytest.raises(km.OffsetMismatchError) as ei:
        s.append_batch(99, [b"x"], expected_offset=1)
    assert (ei.value.expected, ei.value.actual) == (1, 0)
    assert_nothing_written(backend, s, before)
    assert 99 not in s.streams()
    assert s.append_batch(99, [b"x"], expected_offset=0) == 1


@pytest.mark.parametrize("bad", ["0", 1.0, b"0"], ids=["str", "float", "bytes"])
def test_expected_offset_wrong_type(populated, bad):
    backend, s = populated
    before = backend.snapshot(s)
    with pytest.raises(TypeError):
        s.append_batch(SID, [b"x"], expected_offset=bad)
    assert_nothing_written(backend, s, before)


# --- from_offset and max_bytes ------------------------------------------------------------

@pytest.mark.parametrize("method", ["read_from", "read_records"])
def test_negative_from_offset_is_value_error(populated, method):
    backend, s = populated
    before = backend.snapshot(s)
    with pytest.raises(ValueError):
        getattr(s, method)(SID, -1)
    with pytest.raises(ValueError):
        getattr(s, method)(SID, from_offset=-(2**70))
    assert_nothing_written(backend, s, before)


@pytest.mark.parametrize("method", ["read_from", "read_records"])
def test_negative_max_bytes_is_value_error(populated, method):
    backend, s = populated
    before = backend.snapshot(s)
    with pytest.raises(ValueError):
        getattr(s, method)(SID, 0, max_bytes=-1)
    with pytest.raises(ValueError):
        getattr(s, method)(SID, 0, -(2**100))
    assert_nothing_written(backend, s, before)


@pytest.mark.parametrize("method", ["read_from", "read_records"])
def test_wrong_types_for_offsets(populated, method):
    backend, s = populated
    with pytest.raises(TypeError):
        getattr(s, method)(SID, "0")
    with pytest.raises(TypeError):
        getattr(s, method)(SID, 0.0)
    with pytest.raises(TypeError):
        getattr(s, method)(SID, 0, max_bytes="10")
    with pytest.raises(TypeError):
        getattr(s, method)(SID, 0, max_bytes=10.0)


# --- read-only, closed, locks ---------------------------------------------------------------

def test_read_only_append_is_storage_error(disk):
    w = disk.open()
    w.append_batch(1, [b"a", b"b"])
    w.close()
    before = _files(disk.data_dir)
    r = disk.open(read_only=True)
    assert r.read_only is True
    for sid in (1, 2):
        with pytest.raises(km.StorageError):
            r.append_batch(sid, [b"c"])
    assert r.next_offset(1) == 2
    assert r.streams() == [1]
    r.close()
    assert _files(disk.data_dir) == before


def _files(path):
    from helpers import dir_files, dir_listing
    return dir_listing(path), dir_files(path)


CLOSED_CALLS = STREAM_METHODS + [
    ("streams", lambda s, sid: s.streams()),
    ("flush_indexes", lambda s, sid: s.flush_indexes()),
    ("append_batch-bad-args", lambda s, sid: s.append_batch(sid, [b"x"], expected_offset=123)),
]


@pytest.mark.parametrize("name,call", CLOSED_CALLS, ids=[m[0] for m in CLOSED_CALLS])
def test_closed_storage_raises_value_error(populated, name, call):
    backend, s = populated
    s.close()
    before = _files(backend.data_dir) if backend.is_disk else None
    with pytest.raises(ValueError):
        call(s, SID)
    assert s.closed is True
    # attributes still work
    assert s.max_segment_size == 200
    assert s.read_only is False
    s.close()  # idempotent
    if backend.is_disk:
        assert _files(backend.data_dir) == before


def test_second_writer_is_locked(disk):
    a = disk.open()
    a.append_batch(1, [b"x"])
    with pytest.raises(km.LockedError):
        km.Storage(disk.data_dir)
    # the first writer is unaffected; a reader may coexist
    assert a.append_batch(1, [b"y"]) == 2
    r = disk.open(read_only=True)
    assert r.read_from(1) == [b"x", b"y"]
    a.close()
    b = disk.open()
    assert b.append_batch(1, [b"z"]) == 3


def test_locked_error_is_storage_error_not_oserror(disk):
    disk.open()
    with pytest.raises(km.LockedError) as ei:
        km.Storage(disk.data_dir)
    assert isinstance(ei.value, km.StorageError)
    assert str(ei.value)


def test_read_only_missing_directory_is_enoent(tmp_path):
    missing = tmp_path / "does" / "not" / "exist"
    with pytest.raises(km.StorageIOError) as ei:
        km.Storage(missing, read_only=True)
    e = ei.value
    assert isinstance(e, OSError)
    assert isinstance(e, km.StorageError)
    assert e.errno == errno.ENOENT
    assert e.strerror
    assert not missing.exists()
    assert not (tmp_path / "does").exists()


def test_writer_creates_missing_directory_and_parents(tmp_path):
    p = tmp_path / "a" / "b" / "c"
    with km.Storage(p) as s:
        s.append_batch(1, [b"x"])
    assert (p / "1" / "segment_000000.log").exists()


def test_storage_on_a_regular_file_is_storage_io_error(tmp_path):
    f = tmp_path / "plainfile"
    f.write_bytes(b"not a directory")
    for ro in (False, True):
        with pytest.raises(km.StorageIOError) as ei:
            km.Storage(f, read_only=ro)
        assert isinstance(ei.value, OSError) and ei.value.errno
    assert f.read_bytes() == b"not a directory"


# --- exception hierarchy ----------------------------------------------------------------------

CHILDREN = ["UnexpectedEofError", "CorruptedRecordError", "ChainVerificationError",
            "OffsetMismatchError", "IndexCorruptedError", "LockedError", "StorageIOError"]


def test_exception_hierarchy():
    assert issubclass(km.StorageError, Exception)
    assert km.StorageError.__bases__ == (Exception,)
    for name in CHILDREN:
        cls = getattr(km, name)
        assert km.StorageError in cls.__bases__, name
        for other in CHILDREN:
            if other != name:
                assert not issubclass(cls, getattr(km, other)), (name, other)
        assert issubclass(cls, OSError) == (name == "StorageIOError"), name
    assert km.StorageIOError.__bases__ == (km.StorageError, OSError)
    assert not issubclass(km.StorageError, OSError)


# --- verify -----------------------------------------------------------------------------

def test_verify_expected_head_mismatch(populated):
    backend, s = populated
    n, head = s.verify(SID)
    wrong = bytes(32)
    before = backend.snapshot(s)
    with pytest.raises(km.ChainVerificationError) as ei:
        s.verify(SID, expected_head=b"\x01" * 32)
    e = ei.value
    assert e.offset == n - 1
    assert e.expected == b"\x01" * 32
    assert e.actual == head
    assert isinstance(e, km.StorageError)
    with pytest.raises(km.ChainVerificationError):
        s.verify(SID, expected_head=wrong)
    assert_nothing_written(backend, s, before)
    assert s.verify(SID, expected_head=head) == (n, head)


def test_verify_expected_head_on_missing_stream(populated):
    backend, s = populated
    with pytest.raises(km.ChainVerificationError) as ei:
        s.verify(12345, expected_head=b"\x02" * 32)
    assert ei.value.offset is None
    assert ei.value.actual is None
    assert ei.value.expected == b"\x02" * 32
    assert s.verify(12345) == (0, None)


@pytest.mark.parametrize("keep_index", [False, True], ids=["no-idx", "idx-ahead"])
def test_verify_detects_records_missing_at_the_end(disk, keep_index):
    s = disk.open()
    events = [b"r%d" % i for i in range(6)]
    s.append_batch(1, events)
    n, head = s.verify(1)
    s.close()
    # drop the last two whole records: the segment is still a valid, shorter chain
    path = seg_path(disk.data_dir, 1, 0)
    img = read_bytes(path)
    cut = codec.record_positions(img)[4]
    write_bytes(path, img[:cut])
    if not keep_index:
        os.remove(path + ".idx")
    s = disk.open()
    assert s.next_offset(1) == 4
    with pytest.raises(km.ChainVerificationError) as ei:
        s.verify(1, expected_head=head)
    assert ei.value.expected == head
    assert ei.value.actual == codec.head_hash(events[:4])
    assert ei.value.offset == 3
    assert s.verify(1) == (4, codec.head_hash(events[:4]))


# --- options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("opt", ["max_segment_size", "max_event_size"])
def test_bad_options(backend, opt):
    for bad in (0, -1):
        with pytest.raises(ValueError):
            backend.open(**{opt: bad})
    for bad in ("10", 1.5, None):
        with pytest.raises(TypeError):
            backend.open(**{opt: bad})
    if backend.is_disk:
        # a failed open leaves no lock behind
        with km.Storage(backend.data_dir) as s:
            s.append_batch(1, [b"ok"])


def test_positional_options_rejected(tmp_path):
    with pytest.raises(TypeError):
        km.Storage(tmp_path / "d", 1024)
    with pytest.raises(TypeError):
        km.MemoryStorage(1024)


# --- records ---------------------------------------------------------------------------------

def test_record_from_bytes_truncated_is_unexpected_eof():
    raw = codec.encode_record(3, b"\x07" * 32, b"payload")
    for cut in (0, 1, 43, 44, 47, len(raw) - 1):
        with pytest.raises(km.UnexpectedEofError):
            km.Record.from_bytes(raw[:cut])


@pytest.mark.parametrize("byte", [0, 8, 40, 44, 50, -1])
def test_record_from_bytes_bad_crc_is_corrupted(byte):
    raw = bytearray(codec.encode_record(3, b"\x07" * 32, b"payload"))
    raw[byte] ^= 0x10
    with pytest.raises((km.CorruptedRecordError, km.UnexpectedEofError)) as ei:
        km.Record.from_bytes(bytes(raw))
    if byte not in (40, 41, 42, 43):  # a flipped length may make the data look short
        assert isinstance(ei.value, km.CorruptedRecordError)


def test_record_from_bytes_offset_out_of_range_is_corrupted():
    raw = codec.encode_record(2**63, None, b"x")  # valid CRC, but offsets stay below 2**63
    with pytest.raises(km.CorruptedRecordError):
        km.Record.from_bytes(raw)


def test_record_bad_prev_hash():
    with pytest.raises(ValueError):
        km.Record(1, b"\x01" * 31, b"x")
    with pytest.raises(ValueError):
        km.Record(1, b"\x01" * 33, b"x")
    with pytest.raises(TypeError):
        km.Record(1, "x" * 32, b"x")
    with pytest.raises(TypeError):
        km.Record(1, None, "text")


# --- offset index ------------------------------------------------------------------------------

def _idx_damages():
    good = codec.encode_index([0, 54, 108])
    body = bytearray(good[:-4])
    out = {}
    b = bytearray(good); b[0] ^= 1; out["magic"] = bytes(b)
    b = bytearray(good); b[4] = 2; out["version"] = bytes(b)
    b = bytearray(good); b[-1] ^= 0x80; out["crc"] = bytes(b)
    b = bytearray(good); b[20] ^= 4; out["entry-bitflip"] = bytes(b)
    out["truncated"] = good[:-1]
    out["truncated-header"] = good[:10]
    out["empty"] = b""
    out["extra-byte"] = good + b"\x00"
    # count says 4 but 3 entries present, CRC recomputed: a size error
    bb = bytearray(body); bb[8] = 4
    out["count-too-big"] = bytes(bb) + codec.crc32(bytes(bb)).to_bytes(4, "little")
    # bad magic / version with a valid CRC: still refused
    bb = bytearray(body); bb[0:4] = b"XDXI"
    out["magic-valid-crc"] = bytes(bb) + codec.crc32(bytes(bb)).to_bytes(4, "little")
    bb = bytearray(body); bb[4] = 0
    out["version-valid-crc"] = bytes(bb) + codec.crc32(bytes(bb)).to_bytes(4, "little")
    bb = bytearray(body); bb[6] = 1
    out["reserved-valid-crc"] = bytes(bb) + codec.crc32(bytes(bb)).to_bytes(4, "little")
    out["garbage"] = bytes(range(200))
    return out


IDX_DAMAGES = _idx_damages()


@pytest.mark.parametrize("kind", list(IDX_DAMAGES))
def test_offset_index_load_damaged_is_index_corrupted(tmp_path, kind):
    p = tmp_path / "seg.idx"
    p.write_bytes(IDX_DAMAGES[kind])
    with pytest.raises(km.IndexCorruptedError) as ei:
        km.OffsetIndex.load(p)
    assert isinstance(ei.value, km.StorageError)
    assert p.read_bytes() == IDX_DAMAGES[kind]


def test_offset_index_load_missing_is_enoent(tmp_path):
    with pytest.raises(km.StorageIOError) as ei:
        km.OffsetIndex.load(tmp_path / "none.idx")
    assert ei.value.errno == errno.ENOENT


def test_offset_index_save_to_missing_directory(tmp_path):
    with pytest.raises(km.StorageIOError) as ei:
        km.OffsetIndex([0]).save(tmp_path / "nodir" / "x.idx")
    assert ei.value.errno == errno.ENOENT


# --- more error paths: messages, other processes, write failures ----------------------------

def test_storage_io_error_fields(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(km.StorageIOError) as ei:
        km.Storage(missing, read_only=True)
    assert ei.value.filename is not None and os.fspath(missing) in os.fspath(ei.value.filename)
    assert os.strerror(errno.ENOENT) in ei.value.strerror or ei.value.strerror


def test_offset_mismatch_message_says_where(backend):
    s = backend.open()
    s.append_batch(31, [b"a"])
    with pytest.raises(km.OffsetMismatchError) as ei:
        s.append_batch(31, [b"b"], expected_offset=9)
    msg = str(ei.value)
    assert "31" in msg and "9" in msg   # the stream and the offset passed


def test_bad_options_create_nothing(tmp_path):
    d = tmp_path / "never"
    for kw in ({"max_segment_size": 0}, {"max_event_size": -5}, {"max_segment_size": "big"}):
        with pytest.raises((ValueError, TypeError)):
            km.Storage(d, **kw)
    assert not d.exists()


def test_locked_error_leaves_first_writer_data_unchanged(disk):
    a = disk.open()
    a.append_batch(1, [b"x", b"y"])
    a.flush_indexes()
    from helpers import dir_files
    before = dir_files(disk.data_dir)
    with pytest.raises(km.LockedError):
        km.Storage(disk.data_dir, max_segment_size=10)
    assert dir_files(disk.data_dir) == before
    assert a.read_from(1) == [b"x", b"y"]


_HOLDER = r"""
import sys, kimberlite as km
s = km.Storage(sys.argv[1])
s.append_batch(1, [b"child"])
print("ready", flush=True)
sys.stdin.readline()
s.close()
print("closed", flush=True)
"""


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_second_writer_in_another_process_is_locked(tmp_path, how):
    import subprocess
    import sys
    from helpers import child_env
    d = tmp_path / "shared"
    p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(d)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert p.stdout.readline().strip() == "ready"
        with pytest.raises(km.LockedError):
            km.Storage(d)
        # a reader is fine meanwhile
        with km.Storage(d, read_only=True) as r:
            assert r.read_from(1) == [b"child"]
        if how == "exit":
            p.stdin.write("\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == "closed"
        else:
            p.kill()
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(30)
    with km.Storage(d) as s:       # the lock went with the process
        assert s.append_batch(1, [b"parent"]) == 2


_FSIZE = r"""
import json, os, resource, signal, sys
import kimberlite as km
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
d = sys.argv[1]
s = km.Storage(d, max_segment_size=1 << 20)
s.append_batch(1, [b"a" * 100])
seg = os.path.join(d, "1", "segment_000000.log")
size0 = os.path.getsize(seg)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
out = {"size0": size0}
try:
    s.append_batch(1, [b"b" * 300, b"c" * 300, b"d" * 300])
    out["error"] = None
except Exception as e:
    out["error"] = type(e).__name__
    out["errno"] = getattr(e, "errno", None)
    out["is_storage_error"] = isinstance(e, km.StorageError)
out["size_after_error"] = os.path.getsize(seg)
out["next_after_error"] = s.next_offset(1)
out["next_after_retry"] = s.append_batch(1, [b"e" * 10])
out["read"] = [e.decode() for e in s.read_from(1)]
out["verify"] = s.verify(1)[0]
s.close()
print(json.dumps(out))
"""


def test_write_error_cuts_the_segment_back(tmp_path):
    """SPEC §3: on a write error (file size limit) the batch is cut back and the stream stays usable."""
    import json
    import subprocess
    import sys
    from helpers import child_env
    d = tmp_path / "fsize"
    r = subprocess.run([sys.executable, "-c", _FSIZE, str(d)], capture_output=True, text=True,
                       env=child_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["error"] == "StorageIOError", out
    assert out["errno"] == errno.EFBIG
    assert out["is_storage_error"]
    assert out["size_after_error"] == out["size0"] == 148
    assert out["next_after_error"] == 1
    assert out["next_after_retry"] == 2
    assert out["read"] == ["a" * 100, "e" * 10]
    assert out["verify"] == 2
    img = read_bytes(seg_path(d, 1, 0))
    assert [p for _, _, p in codec.decode_segment(img)] == [b"a" * 100, b"e" * 10]
    assert not [n for n in os.listdir(d / "1") if "torn" in n]


def test_verify_expected_head_bad_type_or_length(populated):
    backend, s = populated
    before = backend.snapshot(s)
    with pytest.raises(TypeError):
        s.verify(SID, expected_head="0" * 32)
    with pytest.raises(TypeError):
        s.verify(SID, expected_head=5)
    with pytest.raises(ValueError):
        s.verify(SID, expected_head=b"\x01" * 31)
    assert_nothing_written(backend, s, before)


@pytest.mark.parametrize("offset", [-1, 2**63, 2**64])
def test_record_offset_out_of_range(offset):
    # SPEC §2: offsets stay below 2**63
    with pytest.raises(ValueError):
        km.Record(offset, None, b"x")


@pytest.mark.parametrize("pos", [-1, 2**64])
def test_offset_index_append_out_of_range(pos):
    ix = km.OffsetIndex([5])
    with pytest.raises((ValueError, OverflowError)):
        ix.append(pos)
    assert ix.positions == [5]


def test_storage_io_error_keeps_the_os_strerror(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(km.StorageIOError) as info:
        km.Storage(missing, read_only=True)
    e = info.value
    assert e.errno == errno.ENOENT
    assert e.strerror == os.strerror(errno.ENOENT)
    assert e.filename == str(missing)
    assert str(missing) in str(e) and "read-only" in str(e)
    # constructed by hand it is a plain OSError
    assert str(km.StorageIOError(errno.EIO, "boom", "f")) == "[Errno 5] boom: 'f'"
