"""The offset index read in part at open (docs/DESIGN.md, "Open reads the end of a large
index"): a new process reads only the header, entry 0 and the last entries of a large .idx;
whatever needs an earlier entry first reads the whole file, checks it (CRC, gaps) and checks
that it agrees with what was already used. Damage anywhere in the unread part, or a file
changed between the two reads, gives what a fresh rebuild gives, never an exception.

KIMBERLITE_INDEX_LAZY="1000,256" makes indexes of 1000 entries or more partial (the last 256
entries loaded), so that the stores stay small; KIMBERLITE_INDEX_CHECKS=1 aborts the process
on any use of an entry that was not loaded (a missed guard fails loudly).
"""
import logging
import os
import shutil
import struct
import zlib

import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kimberlite as km

N = 3000  # records of stream 1, one segment
WINDOW = 256
LO = N - WINDOW  # the first entry loaded at open
LAZY = f"1000,{WINDOW}"
SEG = 70_000  # max_segment_size of stream 2: several segments of over 1000 records
HEADER = 16
IDX = os.path.join("1", "segment_000000.log.idx")


def _payload(sid, i):
    return b"%d:%d" % (sid, i)


@pytest.fixture(autouse=True)
def lazy(monkeypatch):
    monkeypatch.setenv("KIMBERLITE_INDEX_LAZY", LAZY)
    monkeypatch.setenv("KIMBERLITE_INDEX_CHECKS", "1")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Stream 1: N records in one segment; stream 2: 5000 records over several segments.
    fsync=False: no durable watermark, which would need the whole index (see below)."""
    path = tmp_path_factory.mktemp("lazy") / "data"
    with km.Storage(path) as s:
        s.append_batch(1, [_payload(1, i) for i in range(N)])
    with km.Storage(path, max_segment_size=SEG) as s:
        for k in range(0, 5000, 1000):
            s.append_batch(2, [_payload(2, i) for i in range(k, k + 1000)])
    return path


@pytest.fixture
def store(template, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(template, dst)
    return dst


def _open(path, read_only=True, eager=False):
    if eager:
        os.environ["KIMBERLITE_INDEX_LAZY"] = "0"
    try:
        return km.Storage(path, read_only=read_only)
    finally:
        os.environ["KIMBERLITE_INDEX_LAZY"] = LAZY


def _positions(image):
    n = struct.unpack_from("<Q", image, 8)[0]
    return list(struct.unpack_from(f"<{n}Q", image, HEADER))


def _image(positions):
    body = struct.pack("<4sB3sQ", b"VDXI", 1, b"\0\0\0", len(positions))
    body += struct.pack(f"<{len(positions)}Q", *positions)
    return body + struct.pack("<I", zlib.crc32(body))


def test_open_reads_only_the_end_and_a_tail_read_stays_there(store, caplog):
    with caplog.at_level(logging.INFO, logger="kimberlite"), _open(store) as s:
        assert s._index_window(1) == [LO]
        assert s.next_offset(1) == N
        assert s.read_from(1, N - 10) == [_payload(1, i) for i in range(N - 10, N)]
        # a read from LO + 1 checks its link with record LO: both in the window
        assert s.read_from(1, LO + 1) == [_payload(1, i) for i in range(LO + 1, N)]
        assert s._index_window(1) == [LO]
        # stream 2: every sealed segment over 1000 records is partial too
        window = s._index_window(2)
        assert len(window) > 2 and window[0] > 0
        assert s.read_from(2, 4990) == [_payload(2, i) for i in range(4990, 5000)]
    assert "rebuil" not in caplog.text


def test_a_read_below_the_window_completes_the_index(store, caplog):
    with caplog.at_level(logging.INFO, logger="kimberlite"), _open(store) as s:
        # LO itself links to LO - 1, which is not loaded
        assert s.read_from(1, LO, max_bytes=1) == [_payload(1, LO)]
        assert s._index_window(1) == [0]
        assert s.read_from(1) == [_payload(1, i) for i in range(N)]
    assert "rebuil" not in caplog.text


# Every public operation, first thing after a partial open, against an eager open.
READS = {
    "read_from_0": lambda s: s.read_from(1),
    "read_from_mid": lambda s: s.read_from(1, 1234, max_bytes=50),
    "read_from_edge": lambda s: [s.read_from(1, k, max_bytes=1) for k in (LO - 1, LO, LO + 1)],
    "read_records": lambda s: [(r.offset, r.prev_hash, r.payload) for r in s.read_records(1, 7)],
    "iter_from": lambda s: list(s.iter_from(1, 3)),
    "stream_view": lambda s: (s.stream(1)[5], s.stream(1)[-1], len(s.stream(1))),
    "verify": lambda s: s.verify(1),
    "verify_2": lambda s: s.verify(2),
    "verify_range": lambda s: (s.verify_range(1, 10, 20), s.verify_range(1, N - 5)),
    "tree_root": lambda s: (s.tree_root(1), s.tree_root(1, 100)),
    "proofs": lambda s: (s.inclusion_proof(1, 3), s.inclusion_proof(1, N - 2, N),
                         s.consistency_proof(1, 10, N)),
    "segment_bounds": lambda s: (s.segment_bounds(1), s.segment_bounds(2)),
    "read_across_segments": lambda s: s.read_from(2, 1500, max_bytes=20000),
    "latest": lambda s: (s.latest_chain_hash(1), s.latest_chain_hash(2), s.next_offset(2)),
}
WRITES = {
    "append": lambda s: (s.append_batch(1, [b"x", b"y"]), s.read_from(1, N - 2)),
    "append_2": lambda s: (s.append_batch(2, [b"x"] * 3), s.verify(2)),
    "repair": lambda s: (s.repair(1).next_offset, s.verify(1)),
    "flush": lambda s: (s.flush_indexes(), s.read_from(1, 0, max_bytes=3)),
}


@pytest.mark.parametrize("name", sorted(READS))
@pytest.mark.parametrize("read_only", [True, False], ids=["reader", "writer"])
def test_each_read_first_thing_after_a_partial_open(template, tmp_path, name, read_only, caplog):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(template, a)
    shutil.copytree(template, b)
    op = READS[name]
    with caplog.at_level(logging.INFO, logger="kimberlite"):
        with _open(a, read_only) as s:
            assert s._index_window(1)[0] == LO
            got = op(s)
        with _open(b, read_only, eager=True) as s:
            assert s._index_window(1) == [0]
            want = op(s)
    assert got == want
    assert "rebuil" not in caplog.text


@pytest.mark.parametrize("name", sorted(WRITES))
def test_each_write_first_thing_after_a_partial_open(template, tmp_path, name, caplog):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(template, a)
    shutil.copytree(template, b)
    op = WRITES[name]
    with caplog.at_level(logging.INFO, logger="kimberlite"):
        with _open(a, read_only=False) as s:
            assert s._index_window(1)[0] == LO
            got = op(s)
        with _open(b, read_only=False, eager=True) as s:
            want = op(s)
        # reopened (partially again): the same streams, the saved indexes intact
        seen = []
        for d in (a, b):
            with _open(d) as s:
                seen.append((s.read_from(1), s.read_from(2), s.verify(1), s.verify(2)))
        assert seen[0] == seen[1]
    assert got == want
    assert "rebuil" not in caplog.text
    for name_ in os.listdir(a / "1"):
        assert not name_.endswith(".tmp")


def _flip(image, at):
    b = bytearray(image)
    b[at] ^= 0x10
    return bytes(b)


def _damage(kind, image):
    pos = _positions(image)
    if kind == "early_entry_bit":
        return _flip(image, HEADER + 8 * 5 + 1)
    if kind == "crc":
        return _flip(image, len(image) - 2)
    if kind == "zero_middle":
        return image[:HEADER + 8] + bytes(8 * (LO - 1)) + image[HEADER + 8 * LO:]
    if kind == "decreasing_valid_crc":
        pos[7], pos[8] = pos[8], pos[7]
        return _image(pos)
    if kind == "wrong_record_valid_crc":
        # a plausible gap (>= a record's overhead) that points inside a record: the CRC and
        # the gap check pass; the record check at read time catches it
        pos[9] = pos[8] + km.RECORD_OVERHEAD
        return _image(pos)
    if kind == "entry_zero":
        return _image([48] + pos[1:])
    raise AssertionError(kind)


UNREAD = ["early_entry_bit", "crc", "zero_middle", "sparse_middle", "decreasing_valid_crc",
          "wrong_record_valid_crc"]


@pytest.mark.parametrize("kind", UNREAD)
@pytest.mark.parametrize("read_only", [True, False], ids=["reader", "writer"])
def test_damage_in_the_unread_part_is_found_when_needed(store, kind, read_only, caplog):
    idx = store / IDX
    image = idx.read_bytes()
    if kind == "sparse_middle":  # a hole between what a partial load reads
        tail = HEADER + 8 * LO
        with open(idx, "wb") as f:
            f.write(image[:HEADER + 8])
            f.seek(tail)
            f.write(image[tail:])
    else:
        idx.write_bytes(_damage(kind, image))
    want = [_payload(1, i) for i in range(N)]
    with caplog.at_level(logging.INFO, logger="kimberlite"), _open(store, read_only) as s:
        assert s._index_window(1) == [LO]  # the damage is not seen at open
        assert s.read_from(1, N - 3) == want[-3:]
        assert s.read_from(1) == want
        assert s.verify(1)[0] == N
        assert s._index_window(1) == [0]
    assert "rebuilt it by scanning" in caplog.text
    if not read_only:  # the writer saved the rebuilt index: it opens clean
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="kimberlite"), _open(store) as s:
            assert s.read_from(1) == want
        assert "rebuil" not in caplog.text


@pytest.mark.parametrize("kind", ["truncated", "sparse", "header_zero", "entry_zero"])
def test_damage_seen_at_open_rebuilds_at_open(store, kind, caplog):
    idx = store / IDX
    image = idx.read_bytes()
    if kind == "truncated":
        idx.write_bytes(image[:-8])
    elif kind == "sparse":
        with open(idx, "wb") as f:  # a hole where the entries were: zeros, header too
            f.truncate(len(image))
    elif kind == "header_zero":
        idx.write_bytes(bytes(HEADER) + image[HEADER:])
    else:
        idx.write_bytes(_damage(kind, image))
    want = [_payload(1, i) for i in range(N)]
    with caplog.at_level(logging.INFO, logger="kimberlite"), _open(store) as s:
        assert s._index_window(1) == [0]
        assert s.read_from(1) == want
        assert s.verify(1)[0] == N
    assert "rebuilding it" in caplog.text


@pytest.mark.parametrize("k", [LO + 1, N - 2, N - 1])
def test_damage_in_the_window_is_caught_at_open(store, k, caplog):
    """The gaps inside the window are checked at open, as the eager load checks all of
    them. (The gap before entry LO is not: entry LO-1 is not read. A bad entry LO is found
    when a read uses it, or at completion: test_a_bad_first_window_entry_is_found_at_use.)"""
    idx = store / IDX
    pos = _positions(idx.read_bytes())
    pos[k] = pos[k - 1] + 47  # one byte less than a record's overhead: an impossible gap
    idx.write_bytes(_image(pos))
    with caplog.at_level(logging.INFO, logger="kimberlite"), _open(store) as s:
        assert s._index_window(1) == [0]
        assert s.read_from(1) == [_payload(1, i) for i in range(N)]
    assert "does not match the segment; rebuilding it" in caplog.text


@pytest.mark.parametrize("how", ["rewritten_bad", "removed", "truncated", "shorter_valid",
                                 "longer_valid", "same_valid"])
def test_index_replaced_between_open_and_completion(store, how, caplog):
    idx = store / IDX
    image = idx.read_bytes()
    pos = _positions(image)
    want = [_payload(1, i) for i in range(N)]
    with caplog.at_level(logging.INFO, logger="kimberlite"), _open(store) as s:
        assert s.read_from(1, N - 1) == want[-1:]
        assert s._index_window(1) == [LO]
        tmp = idx.with_suffix(".idx.tmp")
        if how == "rewritten_bad":
            tmp.write_bytes(_damage("early_entry_bit", image))
        elif how == "removed":
            pass
        elif how == "truncated":
            tmp.write_bytes(image[: len(image) // 2])
        elif how == "shorter_valid":  # a valid index of fewer entries than were used
            tmp.write_bytes(_image(pos[: N - 10]))
        elif how == "longer_valid":  # as a writer's next save: more entries, same prefix
            tmp.write_bytes(_image(pos + [pos[-1] + 100, pos[-1] + 200]))
        else:
            tmp.write_bytes(image)
        if how == "removed":
            os.remove(idx)
        else:
            os.replace(tmp, idx)  # as a writer saves: a new file renamed over the name
        assert s.read_from(1) == want
        assert s.verify(1)[0] == N
        assert s._index_window(1) == [0]
    rebuilt = "changed or was damaged since open" in caplog.text
    assert rebuilt == (how not in ("longer_valid", "same_valid")), caplog.text


def test_appends_after_a_partial_open_then_reopen(store):
    more = [b"m%d" % i for i in range(50)]
    with _open(store, read_only=False) as s:
        assert s._index_window(1) == [LO]
        assert s.append_batch(1, more) == N + 50
        assert s._index_window(1) == [0]  # the active segment's index is made whole
        assert s._index_window(2)[0] > 0  # other streams' are not touched
    want = [_payload(1, i) for i in range(N)] + more
    with _open(store) as s:
        assert s._index_window(1) == [N + 50 - WINDOW]
        assert s.read_from(1, N) == more
        assert s.read_from(1) == want
        assert s.verify(1)[0] == N + 50
    with _open(store, eager=True) as s:
        assert s.read_from(1) == want


def test_a_reader_beside_a_writer_that_rewrites_the_index(store):
    with _open(store) as r:
        assert r.read_from(1, N - 1) == [_payload(1, N - 1)]
        with _open(store, read_only=False) as w:
            w.append_batch(1, [b"late%d" % i for i in range(20)])
            w.flush_indexes()  # a new .idx renamed over the one the reader read in part
        want = [_payload(1, i) for i in range(N)] + [b"late%d" % i for i in range(20)]
        assert r.next_offset(1) == N + 20
        assert r.read_from(1) == want
        assert r.verify(1)[0] == N + 20


@pytest.mark.parametrize("read_only", [True, False], ids=["reader", "writer"])
def test_a_bad_first_window_entry_is_found_at_use(store, read_only, caplog):
    idx = store / IDX
    pos = _positions(idx.read_bytes())
    pos[LO] = pos[LO - 1] + 47
    idx.write_bytes(_image(pos))
    want = [_payload(1, i) for i in range(N)]
    with caplog.at_level(logging.INFO, logger="kimberlite"), _open(store, read_only) as s:
        assert s.read_from(1, LO + 1) == want[LO + 1:]  # the link check reads record LO
        assert s.read_from(1) == want
        assert s.verify(1)[0] == N
    assert "rebuilt it by scanning" in caplog.text


def _watermark(end, batch=0, seg=0):
    body = struct.pack("<4sB3sIQIQ", b"KMBW", 1, b"\0\0\0", seg, end, seg, batch)
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("at", [100, LO, LO + 1, N - 1])
def test_the_durable_watermark_and_the_window(store, at, caplog):
    """Past the watermark the index is not trusted (docs/FORMAT.md §10): the bisection
    for it runs in the window when the watermark lies past its first entry, else the index
    is loaded whole at open, as before."""
    pos = _positions((store / IDX).read_bytes())
    (store / "1" / "durable").write_bytes(_watermark(pos[at]))
    with caplog.at_level(logging.INFO, logger="kimberlite"), _open(store) as s:
        assert s._index_window(1) == ([LO] if pos[at] > pos[LO] else [0])
        assert s.read_from(1) == [_payload(1, i) for i in range(N)]
        assert s.verify(1)[0] == N
    assert "rebuil" not in caplog.text


def test_small_indexes_and_memory_storage_are_loaded_whole(tmp_path):
    path = tmp_path / "small"
    with km.Storage(path) as s:
        s.append_batch(1, [b"e"] * 999)
    with _open(path) as s:
        assert s._index_window(1) == [0]
    with km.MemoryStorage() as m:
        m.append_batch(1, [b"e"] * 2000)
        assert m._index_window(1) == [0]


@pytest.mark.parametrize("value", ["x", "-1", "10,0", "10,", "1,2,3", "10,99999999999"])
def test_a_bad_knob_is_refused(tmp_path, monkeypatch, value):
    monkeypatch.setenv("KIMBERLITE_INDEX_LAZY", value)
    with pytest.raises(ValueError, match="KIMBERLITE_INDEX_LAZY"):
        km.Storage(tmp_path / "d")
    assert not (tmp_path / "d").exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(at=st.integers(min_value=0, max_value=HEADER + 8 * N + 3), xor=st.integers(1, 255),
       read_only=st.booleans())
def test_any_damaged_byte_reads_as_an_eager_open_does(template, at, xor, read_only):
    """One damaged byte anywhere in the .idx: a partial open (reading the tail, then
    everything, then verifying) gives exactly what an eager open of the same bytes gives,
    and never raises."""
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for eager in (False, True):
            d = os.path.join(tmp, "e" if eager else "p")
            shutil.copytree(template, d)
            idx = os.path.join(d, IDX)
            with open(idx, "r+b") as f:
                f.seek(at)
                b = f.read(1)
                f.seek(at)
                f.write(bytes([b[0] ^ xor]))
            with _open(d, read_only, eager=eager) as s:
                results.append((s.read_from(1, N - 2), s.read_from(1), s.verify(1),
                                s.latest_chain_hash(1)))
        assert results[0] == results[1]
        assert results[0][1] == [_payload(1, i) for i in range(N)]


_HOSTILE = r"""
import os, resource, struct, sys, zlib
import kimberlite as km
path, how, n, window = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
idx = os.path.join(path, "1", "segment_000000.log.idx")
image = open(idx, "rb").read()
# (not under ASan, whose runtime reserves terabytes of address space: helpers/sandbox.py)
if not (os.environ.get("KIMBERLITE_SANITIZED") or "asan" in os.environ.get("LD_PRELOAD", "")):
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
with km.Storage(path, read_only=True) as s:
    assert s.read_from(1, n - 1) == [b"1:%d" % (n - 1)]
    assert s._index_window(1) == [n - window]
    os.remove(idx)
    if how == "fifo":
        os.mkfifo(idx)
    elif how == "directory":
        os.mkdir(idx)
    elif how == "symlink_to_dev_zero":
        os.symlink("/dev/zero", idx)
    elif how == "symlink_to_the_same_index":  # (links are not followed: rebuilt)
        with open(idx + ".real", "wb") as f:
            f.write(image)
        os.symlink(idx + ".real", idx)
    elif how == "sparse_1TiB":
        with open(idx, "wb") as f:
            f.truncate(1 << 40)
    elif how == "header_count_2_60":  # CRC right, count not the file's
        b = bytearray(image)
        struct.pack_into("<Q", b, 8, 1 << 60)
        b[-4:] = struct.pack("<I", zlib.crc32(bytes(b[:-4])))
        with open(idx, "wb") as f:
            f.write(b)
    assert s.read_from(1) == [b"1:%d" % i for i in range(n)]
    assert s._index_window(1) == [0]
print("ok")
"""


@pytest.mark.parametrize("how", ["fifo", "directory", "symlink_to_dev_zero",
                                 "symlink_to_the_same_index", "sparse_1TiB",
                                 "header_count_2_60"])
def test_hostile_index_swapped_in_between_open_and_completion(store, how):
    # (a subprocess: a FIFO could block an open, a huge claimed size could allocate)
    import subprocess
    import sys
    env = dict(os.environ, KIMBERLITE_INDEX_LAZY=LAZY, KIMBERLITE_INDEX_CHECKS="1")
    r = subprocess.run([sys.executable, "-c", _HOSTILE, str(store), how, str(N), str(WINDOW)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert (r.returncode, r.stdout.strip()) == (0, "ok"), r.stderr[-2000:]
