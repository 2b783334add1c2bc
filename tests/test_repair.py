"""The explicit salvage path (issue 8): `Storage.repair(stream_id)` and
`kimberlite repair DIR STREAM`.

Repair is asked for, never automatic: it moves everything after the last valid record of
the stream (the rest of a damaged segment, whole later segments after a gap) into
quarantine files, deletes nothing, and returns a `kimberlite.RepairReport`
(`.stream_id`, `.next_offset` after repair, `.quarantined` — `(path or name, size)` per
quarantine file made — and `.bytes_moved`). Afterwards verify passes and appends continue
the chain from the last valid record. A stream with nothing to repair is left untouched;
a read-only Storage refuses.
"""
import json
import os
import re
import subprocess
import sys

import pytest

import kimberlite as km
from helpers import codec
from helpers import child_env, dir_files, idx_path, read_bytes, seg_path, stream_dir, write_bytes
from helpers.dirs import assert_unchanged, layout, make_stream, picture


def _data_bytes(d):
    """{name: bytes} of the segment and quarantine files of stream 1."""
    return {n: b for n, b in dir_files(stream_dir(d, 1)).items()
            if not (n.endswith(".idx") or n.endswith(".idx.tmp"))}


def _new_quarantine(before, after):
    """{name: bytes} of the files in `after` that are new and not segment files (a repair
    may also create the empty file of the new active segment)."""
    return {n: b for n, b in after.items()
            if n not in before and not re.fullmatch(r"segment_\d+\.log", n)}


def _damage(d, kind):
    """Build stream 1 and damage it; return (payloads written, offset of the last valid
    record + 1)."""
    written = make_stream(d)
    lay = layout(d)
    first = {k: f for k, f, _c, _s in lay}
    if kind == "gap":                               # a missing middle segment
        os.remove(seg_path(d, 1, 2))
        os.remove(idx_path(d, 1, 2))
        return written, first[2]
    if kind == "emptied-sealed":                    # the last sealed segment emptied
        k = lay[-2][0]
        os.truncate(seg_path(d, 1, k), 0)
        return written, first[k]
    if kind == "mid-file":                          # a flipped byte, records after it
        k = lay[-1][0]
        data = bytearray(read_bytes(seg_path(d, 1, k)))
        pos = codec.record_positions(bytes(data))
        data[pos[1] + 50] ^= 0x40
        write_bytes(seg_path(d, 1, k), bytes(data))
        return written, first[k] + 1
    if kind == "sealed-mid-file":                   # a flipped byte in a sealed segment
        data = bytearray(read_bytes(seg_path(d, 1, 1)))
        pos = codec.record_positions(bytes(data))
        data[pos[2] + 10] ^= 0x01
        write_bytes(seg_path(d, 1, 1), bytes(data))
        return written, first[1] + 2
    raise AssertionError(kind)


def _check_report(r, d, before, kept):
    """The report matches the directory: the files it names exist with those sizes, they are
    exactly the new quarantine files, bytes_moved is their total, nothing was deleted."""
    assert isinstance(r, km.RepairReport)
    assert r.stream_id == 1
    assert r.next_offset == kept
    after = _data_bytes(d)
    new = _new_quarantine(before, after)
    named = {}
    for name, size in r.quarantined:
        assert isinstance(name, str) and isinstance(size, int)
        base = os.path.basename(name)
        assert base in after, f"reported quarantine file {name} does not exist"
        assert len(after[base]) == size
        assert base.startswith("segment_") and not re.fullmatch(r"segment_\d+\.log", base)
        named[base] = size
    assert set(named) == set(new), (named, list(new))
    assert r.bytes_moved == sum(named.values())
    assert sum(map(len, after.values())) == sum(map(len, before.values())), "bytes deleted"
    # every byte removed from a segment is in the quarantine
    for n, b in before.items():
        assert after.get(n, b"") == b[:len(after.get(n, b""))], f"{n} rewritten, not cut"


@pytest.mark.parametrize("kind", ["gap", "emptied-sealed", "mid-file", "sealed-mid-file"])
def test_repair_quarantines_everything_after_the_last_valid_record(tmp_path, kind):
    d = tmp_path / "d"
    written, kept = _damage(d, kind)
    before = _data_bytes(d)
    with km.Storage(d, max_segment_size=1024) as s:
        with pytest.raises(km.StorageError):
            s.verify(1)
        with pytest.raises(km.CorruptedRecordError):
            s.append_batch(1, [b"refused"])
        assert _data_bytes(d) == before, "damage was moved before repair was asked for"
        r = s.repair(1)
        _check_report(r, d, before, kept)
        head = codec.head_hash(written[:kept])
        assert s.verify(1) == (kept, head)
        assert s.read_from(1) == written[:kept]
        assert s.next_offset(1) == kept
        assert s.append_batch(1, [b"after-repair"]) == kept + 1
    with km.Storage(d, max_segment_size=1024) as s:
        assert s.verify(1)[0] == kept + 1
        assert s.read_from(1) == written[:kept] + [b"after-repair"]
        again = s.repair(1)                          # nothing left to repair
        assert again.quarantined == [] and again.bytes_moved == 0
        assert again.next_offset == kept + 1


def test_repair_after_a_torn_batch(tmp_path):
    """The issue's power-cut reproduction: whether the load already quarantined the torn
    batch or repair does it, afterwards the acknowledged records are there, the torn bytes
    are in quarantine byte for byte and the stream takes appends."""
    d = str(tmp_path / "d")
    with km.Storage(d) as s:
        s.append_batch(1, [b"acked-%d" % i for i in range(3)])
    seg = seg_path(d, 1, 0)
    acked = os.path.getsize(seg)
    with km.Storage(d) as s:
        s.append_batch(1, [b"x" * 1000] * 8)
    with open(seg, "r+b") as f:
        f.seek(acked)
        f.write(b"\0" * (4096 - acked))
    os.remove(seg + ".idx")
    crash = read_bytes(seg)
    with km.Storage(d) as s:
        r = s.repair(1)
        assert r.stream_id == 1 and r.next_offset == 3
        assert s.verify(1)[0] == 3
        assert s.append_batch(1, [b"next"]) == 4
    q = sorted((n for n in os.listdir(stream_dir(d, 1))
                if n.startswith("segment_000000.log.torn-")),
               key=lambda n: int(n.rsplit("-", 1)[1]))
    assert b"".join(read_bytes(os.path.join(stream_dir(d, 1), n)) for n in q) == crash[acked:]


def test_repair_of_a_healthy_stream_changes_nothing(backend):
    s = backend.open(max_segment_size=1024)
    for b in range(8):
        s.append_batch(1, [b"event-%d-%d" % (b, i) for i in range(5)])
    if backend.is_disk:
        s.close()
        before = picture(backend.data_dir)
        s = backend.open(max_segment_size=1024)
    r = s.repair(1)
    assert isinstance(r, km.RepairReport)
    assert (r.stream_id, r.next_offset, list(r.quarantined), r.bytes_moved) == (1, 40, [], 0)
    assert s.verify(1)[0] == 40
    if backend.is_disk:
        assert_unchanged(before, backend.data_dir, "repair of a healthy stream")
    assert s.append_batch(1, [b"more"]) == 41


def test_repair_needs_a_writer(tmp_path):
    d = tmp_path / "d"
    _damage(d, "gap")
    before = picture(d)
    with km.Storage(d, read_only=True) as s:
        with pytest.raises(km.StorageError):
            s.repair(1)
    assert_unchanged(before, d, "read-only repair")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "kimberlite", *map(os.fspath, args)],
                          capture_output=True, text=True, env=child_env(), timeout=60)


def test_cli_repair_prints_what_it_moved(tmp_path):
    d = tmp_path / "d"
    written, kept = _damage(d, "gap")
    before = _data_bytes(d)
    assert _cli("verify", d).returncode != 0
    r = _cli("repair", d, "1")
    assert r.returncode == 0, r.stderr
    moved = sorted(_new_quarantine(before, _data_bytes(d)))
    assert moved, "nothing was quarantined"
    lines = r.stdout.strip().splitlines()
    assert len(lines) >= len(moved) + 1, r.stdout       # one line per file and a summary
    for n in moved:
        assert any(n in line for line in lines), (n, r.stdout)
    assert _cli("verify", d).returncode == 0
    with km.Storage(d, read_only=True) as s:
        assert s.read_from(1) == written[:kept]


def test_cli_repair_json(tmp_path):
    d = tmp_path / "d"
    _written, kept = _damage(d, "mid-file")
    before = _data_bytes(d)
    r = _cli("repair", "--json", d, "1")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["stream_id"] == 1 and rep["next_offset"] == kept
    moved = _new_quarantine(before, _data_bytes(d))
    assert sorted(os.path.basename(q[0]) for q in rep["quarantined"]) == sorted(moved)
    assert rep["bytes_moved"] == sum(map(len, moved.values())) > 0
    r2 = _cli("repair", d, "1", "--json")
    assert r2.returncode == 0
    assert json.loads(r2.stdout)["quarantined"] == []


def test_repair_in_memory_matches_disk(backend):
    """MemoryStorage repairs exactly as Storage: damage in a sealed segment followed by more
    segments; the report names the quarantine objects, the stream continues the chain."""
    import kimberlite.testing as kt

    s = backend.open(max_segment_size=300)
    events = [b"event-%02d" % i + b"." * 40 for i in range(20)]
    for i in range(0, 20, 2):
        s.append_batch(1, events[i:i + 2])
    assert len(s.completed_segments(1)) >= 3
    kt.flip_bit(s, 1, 7)
    with pytest.raises(km.StorageError):
        s.verify(1)
    r = s.repair(1)
    assert r.next_offset == 7 and r.bytes_moved > 0 and r.quarantined
    assert all(".torn-" in os.path.basename(name) for name, _ in r.quarantined)
    assert r.bytes_moved == sum(size for _, size in r.quarantined)
    head = codec.head_hash(events[:7])
    assert s.verify(1) == (7, head)
    assert s.append_batch(1, [b"after"]) == 8
    assert s.read_from(1) == events[:7] + [b"after"]
    assert s.repair(1) == km.RepairReport(1, 8, [], 0)
