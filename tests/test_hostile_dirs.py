"""Hostile data directories built for real (issue 8): gaps in a stream's segments, emptied
sealed segments, huge sparse index files, corrupt `length` fields and crafted tails that
would make torn-tail classification quadratic.

The rule checked throughout (FORMAT.md §10, GUARANTEES.md): damage is never mistaken for
the end of a stream. A damaged stream stays listed, `next_offset` never goes back, reads
return exactly what was written and stop with `CorruptedRecordError` at the damage,
`verify` raises, appends are refused with `CorruptedRecordError` and write nothing.
Risky shapes (allocations a header claims, unbounded work) run in a child process with an
address-space limit and a timeout (tests/helpers/sandbox.py).
"""
import os
import struct
import subprocess
import sys

import pytest

import kimberlite as km
from helpers import codec
from helpers.faults import payloads
from helpers import child_env, idx_path, read_bytes, seg_path, stream_dir, write_bytes
from helpers.dirs import assert_unchanged, layout, make_stream, picture, quarantine_files
from helpers.sandbox import GiB, MiB, assert_storage_error, probe


# --- shared checks ----------------------------------------------------------------------

def check_damaged_stream(data_dir, written, readable, *, sid=1):
    """The stream holds damage after its first `readable` records. For a read-only opener
    and for a writer: listed, next_offset not behind what was written, the first `readable`
    records exact, reads through the damage raise CorruptedRecordError, reads past it return
    nothing wrong, verify raises; the writer's append is refused; no file changes."""
    before = picture(data_dir)
    n = len(written)
    for ro in (True, False):
        with km.Storage(data_dir, read_only=ro, max_segment_size=1024) as s:
            what = "read-only" if ro else "writer"
            assert sid in s.streams(), f"{what}: damaged stream not listed"
            try:
                nxt = s.next_offset(sid)
            except km.StorageError:
                pass
            else:
                assert nxt >= n, f"{what}: next_offset went back from {n} to {nxt}"
            for k in range(readable):
                assert s.read_from(sid, k, 1) == [written[k]], f"{what}: record {k}"
            with pytest.raises(km.CorruptedRecordError):
                s.read_from(sid, 0)
            with pytest.raises(km.CorruptedRecordError):
                s.read_from(sid, readable)
            for k in range(readable + 1, n):           # past the damage: right, or an error
                try:
                    got = s.read_from(sid, k)
                except km.StorageError:
                    continue
                assert got == written[k:k + len(got)], f"{what}: wrong records from {k}"
            with pytest.raises(km.StorageError):
                s.verify(sid)
            if not ro:
                for _ in range(2):
                    with pytest.raises(km.CorruptedRecordError):
                        s.append_batch(sid, [b"must not be written"])
                with pytest.raises(km.StorageError):    # Corrupted or OffsetMismatch
                    s.append_batch(sid, [b"x"], expected_offset=0)
        assert_unchanged(before, data_dir, what)


def check_cli_verify_fails(data_dir, sid=1):
    r = subprocess.run([sys.executable, "-m", "kimberlite", "verify", os.fspath(data_dir)],
                       capture_output=True, text=True, env=child_env(), timeout=60)
    assert r.returncode != 0, f"verify exited 0 on a damaged stream:\n{r.stdout}"
    assert f"stream {sid}" in r.stdout + r.stderr, r.stdout + r.stderr


# --- 2. gaps ----------------------------------------------------------------------------

GAPS = ["first-missing", "middle-missing", "first-foreign", "late-start", "two-missing"]


def _make_gap(tmp_path, d, shape, with_index):
    written = make_stream(d, with_index=with_index)
    lay = layout(d)                                    # [(k, first, count, size)]
    assert len(lay) >= 5 and lay[-1][2] > 0
    first = {k: f for k, f, _c, _s in lay}

    def drop(k):
        os.remove(seg_path(d, 1, k))
        if os.path.exists(idx_path(d, 1, k)):
            os.remove(idx_path(d, 1, k))

    if shape == "first-missing":                       # the example
        drop(0)
        return written, 0
    if shape == "middle-missing":
        drop(2)
        return written, first[2]
    if shape == "two-missing":
        drop(1)
        drop(2)
        return written, first[1]
    if shape == "first-foreign":
        # segment 0 replaced by a segment of another stream whose first offset is not 0
        other = tmp_path / "other"
        make_stream(other, sid=2)
        write_bytes(seg_path(d, 1, 0), read_bytes(seg_path(other, 2, 1)))
        if os.path.exists(idx_path(d, 1, 0)):
            os.remove(idx_path(d, 1, 0))
        return written, 0
    if shape == "late-start":
        # segment 2 starts one record after where segment 1 ended
        data = read_bytes(seg_path(d, 1, 2))
        size = codec.decode_record(data)[3]
        write_bytes(seg_path(d, 1, 2), data[size:])
        if os.path.exists(idx_path(d, 1, 2)):
            os.remove(idx_path(d, 1, 2))
        return written, first[2]
    raise AssertionError(shape)


@pytest.mark.parametrize("with_index", [True, False], ids=["idx", "no-idx"])
@pytest.mark.parametrize("shape", GAPS)
def test_gap_in_segments_is_damage_not_a_new_stream(tmp_path, shape, with_index):
    """A missing first segment, a missing middle segment, a first segment that does not
    start at offset 0, a segment that does not start where the previous one ended: the
    stream is listed, reads stop at the gap, verify raises, appends write nothing (no new
    genesis segment beside the old ones)."""
    d = tmp_path / "d"
    written, readable = _make_gap(tmp_path, d, shape, with_index)
    check_damaged_stream(d, written, readable)
    assert not (shape in ("first-missing",) and os.path.exists(seg_path(d, 1, 0)))
    check_cli_verify_fails(d)


# --- 3. empty sealed segments -----------------------------------------------------------

EMPTIED = ["last-sealed", "last-sealed-before-empty-active", "first-sealed", "middle-sealed"]


@pytest.mark.parametrize("with_index", [True, False], ids=["idx", "no-idx"])
@pytest.mark.parametrize("which", EMPTIED)
def test_emptied_sealed_segment_is_damage(tmp_path, which, with_index):
    """FORMAT.md §7: a sealed segment is never empty. One truncated to 0 bytes (the last
    sealed one, with the active segment holding records or empty, or an earlier one) is
    damage: verify raises, next_offset does not go back, appends are refused, nothing is
    rewritten."""
    d = tmp_path / "d"
    written = make_stream(d, with_index=with_index)
    if which == "last-sealed-before-empty-active":
        big = b"z" * 1500                            # fills the active segment: rotation
        with km.Storage(d, max_segment_size=1024) as s:
            s.append_batch(1, [big])
        written = written + [big]
        if not with_index:
            for n in os.listdir(stream_dir(d, 1)):
                if n.endswith(".idx"):
                    os.remove(os.path.join(stream_dir(d, 1), n))
    lay = layout(d)
    if which == "last-sealed-before-empty-active":
        assert lay[-1][3] == 0, lay                   # the active segment's file, empty
        k = lay[-2][0]
    elif which == "last-sealed":
        assert lay[-1][2] > 0, lay
        k = lay[-2][0]
    else:
        k = {"first-sealed": 0, "middle-sealed": 2}[which]
    first = {kk: f for kk, f, _c, _s in lay}
    os.truncate(seg_path(d, 1, k), 0)
    check_damaged_stream(d, written, first[k])
    check_cli_verify_fails(d)


# --- 6. huge index files ----------------------------------------------------------------

def _two_record_stream(d):
    with km.Storage(d) as s:
        s.append_batch(1, [b"first", b"second"])
    assert os.path.exists(idx_path(d, 1, 0))


READ_OPS = [["open", {"read_only": True}], ["read_from", 1, 0, None], ["verify", 1],
            ["open", {}], ["read_from", 1, 0, None], ["verify", 1], ["append", 1, [b"third"]],
            ["read_from", 1, 0, None]]


@pytest.mark.parametrize("shape", ["sparse-64G", "claims-2**60", "sparse-64G-consistent-count"])
def test_huge_index_is_ignored_without_reading_it(tmp_path, shape):
    """An index far larger than its segment could need (a 64 GiB sparse file, a header
    claiming 2**60 entries) is ignored and rebuilt: reads return the two records, in a child
    limited to 1 GiB of address space and 20 s."""
    d = tmp_path / "d"
    _two_record_stream(d)
    ix = idx_path(d, 1, 0)
    if shape == "sparse-64G":
        os.truncate(ix, 64 * GiB)
    elif shape == "claims-2**60":
        data = bytearray(read_bytes(ix))
        data[8:16] = struct.pack("<Q", 2 ** 60)
        write_bytes(ix, bytes(data))
    else:   # a header whose entry count matches the (sparse) file size exactly
        n = (64 * GiB - 20) // 8
        with open(ix, "r+b") as f:
            f.seek(8)
            f.write(struct.pack("<Q", n))
        os.truncate(ix, 20 + 8 * n)
    got = probe(d, READ_OPS, timeout=20, as_limit=1 * GiB)
    for i in (1, 4):
        assert got[i].ok, got[i]
        assert got[i].value == [b"first", b"second"]
    for i in (2, 5):
        assert got[i].ok and got[i].value[0] == 2, got[i]
    assert got[6].ok and got[6].value == 3, got[6]
    assert got[7].value == [b"first", b"second", b"third"]


@pytest.mark.parametrize("segment", [0, 2, 4], ids=["first", "sealed", "active"])
def test_huge_index_of_one_segment_among_several(tmp_path, segment):
    """The same for one segment of a five-segment stream: its 64 GiB sparse index is ignored,
    every record is returned and verified, appends continue (child: 1 GiB, 20 s)."""
    d = tmp_path / "d"
    written = make_stream(d)
    os.truncate(idx_path(d, 1, segment), 64 * GiB)
    n = len(written)
    out = probe(d, [["open", {"read_only": True, "max_segment_size": 1024}],
                    ["read_from", 1, 0, None], ["verify", 1],
                    ["open", {"max_segment_size": 1024}], ["read_from", 1, 0, None],
                    ["verify", 1], ["append", 1, [b"more"]]], timeout=20, as_limit=1 * GiB)
    for i in (1, 4):
        assert out[i].ok and out[i].value == written, out[i]
    for i in (2, 5):
        assert out[i].ok and out[i].value[0] == n, out[i]
    assert out[6].ok and out[6].value == n + 1, out[6]


# --- 7. corrupt length fields -----------------------------------------------------------

def _length_stream(d, with_index, max_event):
    """Stream 1: segment 0 sealed (5 records), segment 1 active (5 records)."""
    written = payloads(1, 0, 10)
    with km.Storage(d, max_segment_size=sum(48 + len(p) for p in written[:5]),
                    max_event_size=max_event) as s:
        s.append_batch(1, written[:5])
        s.append_batch(1, written[5:])
    lay = layout(d)
    assert [(c) for _k, _f, c, _s in lay][:2] == [5, 5], lay
    if not with_index:
        for k in (0, 1):
            if os.path.exists(idx_path(d, 1, k)):
                os.remove(idx_path(d, 1, k))
    return written


LENGTHS = [("0xFFFFFFF0", "max_event=1MiB"), ("0xFFFFFFF0", "max_event=4GiB"),
           ("max_event_size+1", "max_event=1MiB"), ("past-end+1", "max_event=1MiB"),
           ("past-end+1", "max_event=4GiB")]


@pytest.mark.slow
@pytest.mark.parametrize("with_index", [True, False], ids=["idx", "no-idx"])
@pytest.mark.parametrize("where", ["active-last", "active-middle", "sealed-middle", "sealed-last"])
@pytest.mark.parametrize("value,opener", LENGTHS, ids=["-".join(v) for v in LENGTHS])
def test_corrupt_length_allocates_nothing_it_does_not_have(tmp_path, value, opener, where,
                                                           with_index):
    """A `length` field claiming more than the file holds is never allocated, whatever
    max_event_size allows (1 MiB, or 4 GiB - 1 where only the bytes present bound it): child
    with RLIMIT_AS 512 MiB, 20 s. In the last record of the active segment it is a torn tail:
    quarantined byte for byte into segment_NNNNNN.log.torn-K, nothing deleted. Anywhere else
    it is corruption: reads raise CorruptedRecordError there, appends are refused, nothing
    is cut."""
    d = tmp_path / "d"
    max_event = {"max_event=1MiB": 1 * MiB, "max_event=4GiB": 2 ** 32 - 1}[opener]
    written = _length_stream(d, with_index, max_event)
    seg, rec = {"active-last": (1, 4), "active-middle": (1, 2),
                "sealed-middle": (0, 2), "sealed-last": (0, 4)}[where]
    path = seg_path(d, 1, seg)
    data = bytearray(read_bytes(path))
    pos = codec.record_positions(bytes(data))[rec]
    length = {"0xFFFFFFF0": 0xFFFFFFF0, "max_event_size+1": max_event + 1,
              "past-end+1": len(data) - pos - 48 + 1}[value]
    data[pos + 40:pos + 44] = struct.pack("<I", length)
    write_bytes(path, bytes(data))
    before = picture(d)
    bad = seg * 5 + rec                                # offset of the damaged record
    ops = [["open", {"read_only": True, "max_event_size": max_event}],
           ["read_each", 1, 0, bad], ["read_from", 1, 0, None], ["verify", 1],
           ["open", {"max_event_size": max_event}],
           ["read_each", 1, 0, bad], ["read_from", 1, 0, None], ["verify", 1],
           ["append", 1, [b"after"]], ["read_from", 1, 0, None]]
    out = probe(d, ops, timeout=20, as_limit=512 * MiB)
    for o in out:
        assert o.ok or o.storage_error, f"{o!r}: only StorageError subclasses may come out"
    for i in (1, 5):
        assert out[i].ok and out[i].value == [[p] for p in written[:bad]], out[i]
    if where == "active-last":                         # a torn tail
        assert out[2].ok and out[2].value == written[:bad], out[2]
        assert out[3].ok and out[3].value[0] == bad, out[3]
        assert out[6].ok and out[6].value == written[:bad]
        assert out[8].ok and out[8].value == bad + 1, out[8]
        assert out[9].value == written[:bad] + [b"after"]
        q = quarantine_files(d)
        assert list(q.values()) == [bytes(data[pos:])], list(q)
        assert all(n.startswith("segment_000001.log.torn-") for n in q)
        assert read_bytes(path)[:pos] == bytes(data[:pos])
    else:
        for i in (2, 3, 6, 7):
            assert_storage_error(out[i], corrupted=i in (2, 6))
        assert_storage_error(out[8], corrupted=True)
        assert_storage_error(out[9], corrupted=True)
        assert_unchanged(before, d, "corruption")


# --- 8. torn-tail classification is linear ----------------------------------------------

TAIL = 16 * MiB


def _crafted_tail(kind, next_offset):
    """16 MiB that contain no valid record continuing the stream, shaped so that a scanner
    which, at each candidate position, checks a whole claimed record or follows a chain of
    records does quadratic work."""
    out = bytearray()
    if kind == "headers-to-the-end":
        # every 64 bytes a header with the expected offset whose length reaches exactly the
        # end of the tail: each candidate's CRC covers everything after it, and fails
        step = 64
        for q in range(0, TAIL, step):
            length = TAIL - q - 48
            out += struct.pack("<Q", next_offset) + bytes(32) + struct.pack("<I", length)
            out += b"\xa5" * (step - 44)
    elif kind == "stale-chain":
        # 1 stray byte, then back-to-back valid records with a stale offset (a copy of
        # record 0): each one is whole and passes its CRC, each length points at the next
        rec = codec.encode_record(0, None, b"s" * 16)
        out += b"\x01"
        while len(out) + len(rec) <= TAIL:
            out += rec
    elif kind == "lengths-point-at-each-other":
        # headers with continuing offsets whose lengths lead from one to the next, with
        # a wrong CRC on each: following them from any start walks to the end
        step = 256
        off = next_offset
        while len(out) + step <= TAIL:
            out += struct.pack("<Q", off) + bytes(32) + struct.pack("<I", step - 48)
            out += b"\x5a" * (step - 48) + b"\0\0\0\0"
            off += 1
    else:
        raise AssertionError(kind)
    out += b"\xee" * (TAIL - len(out))
    return bytes(out)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["headers-to-the-end", "stale-chain",
                                  "lengths-point-at-each-other"])
def test_crafted_16MiB_tail_is_classified_in_linear_time(tmp_path, kind):
    """A 16 MiB tail after the last valid record of the active segment, crafted so that a
    quadratic classification takes hours, is recognised as a torn tail (no valid record
    continuing the stream follows) within a 30 s child: a reader shows the records, a writer
    quarantines the tail byte for byte and appends."""
    d = tmp_path / "d"
    written = payloads(1, 0, 4)
    with km.Storage(d) as s:
        s.append_batch(1, written)
    os.remove(idx_path(d, 1, 0))
    tail = _crafted_tail(kind, 4)
    with open(seg_path(d, 1, 0), "ab") as f:
        f.write(tail)
    ops = [["open", {"read_only": True}], ["read_from", 1, 0, None],
           ["open", {}], ["read_from", 1, 0, None], ["append", 1, [b"after"]]]
    out = probe(d, ops, timeout=30, as_limit=1 * GiB)
    assert out[1].ok and out[1].value == written, out[1]
    assert out[3].ok and out[3].value == written, out[3]
    assert out[4].ok and out[4].value == 5, out[4]
    assert list(quarantine_files(d).values()) == [tail]
