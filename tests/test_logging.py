"""Recovery actions are reported on logging.getLogger("kimberlite") at WARNING, naming files."""
import logging
import os

import pytest

import kimberlite as km
import kimberlite.testing as kt

EVENTS = [f"event {i:02d}".encode() + b"." * 40 for i in range(9)]  # records of 96 bytes


def _fill(s):
    for b in range(3):  # segment 0 (sealed): offsets 0-5; segment 1 (active): 6-8
        s.append_batch(1, EVENTS[3 * b:3 * b + 3])


def _segment(backend, s, seg):
    name = f"segment_{seg:06d}.log"
    return os.path.join(s.path, "1", name) if backend.is_disk else f"memory:1/{name}"


def _warnings(caplog):
    recs = [r for r in caplog.records if r.name == "kimberlite"]
    assert all(r.levelno == logging.WARNING for r in recs)
    return [r.getMessage() for r in recs]


def test_quarantine_of_a_torn_tail_is_logged(backend, caplog):
    s = backend.open(max_segment_size=500)
    _fill(s)
    kt.tear_tail(s, 1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kimberlite"):
        assert s.next_offset(1) == 8
    seg = _segment(backend, s, 1)
    torn = [m for m in _warnings(caplog) if "torn tail" in m]
    assert len(torn) == 1, _warnings(caplog)
    assert f"of {seg} " in torn[0] and f"moved to {seg}.torn-1" in torn[0]
    if backend.is_disk:
        assert os.path.getsize(seg + ".torn-1") == 48  # half of a 96-byte record


def test_quarantine_on_reopen_is_logged(tmp_path, caplog):
    data = tmp_path / "data"
    with km.Storage(data) as s:
        s.append_batch(1, [b"one", b"two"])
    seg = os.path.join(str(data), "1", "segment_000000.log")
    with open(seg, "ab") as f:
        f.write(b"\x02\x00\x00")  # the start of a record that was never finished
    with caplog.at_level(logging.WARNING, logger="kimberlite"):
        with km.Storage(data) as s:
            assert s.read_from(1) == [b"one", b"two"]
    msgs = _warnings(caplog)
    assert any("torn tail of 3 bytes" in m and seg in m and seg + ".torn-1" in m for m in msgs), msgs


@pytest.mark.parametrize("how", ["missing", "damaged"])
def test_index_rebuild_is_logged(tmp_path, caplog, how):
    data = tmp_path / "data"
    with km.Storage(data, max_segment_size=500) as s:
        _fill(s)
    idx = os.path.join(str(data), "1", "segment_000000.log.idx")
    assert os.path.exists(idx)
    if how == "missing":
        os.remove(idx)
    else:
        with open(idx, "r+b") as f:
            f.write(b"XXXX")
    with caplog.at_level(logging.WARNING, logger="kimberlite"):
        with km.Storage(data, max_segment_size=500) as s:
            assert s.read_from(1) == EVENTS
    msgs = _warnings(caplog)
    seg = os.path.join(str(data), "1", "segment_000000.log")
    assert any(f"index of {seg} is {how}; rebuilding it" in m for m in msgs), msgs


def test_index_rebuild_in_memory_is_logged(caplog):
    s = km.MemoryStorage(max_segment_size=500)
    _fill(s)
    kt.replace_payload(s, 1, 1, b"longer than the original payload" * 4)  # stale index
    with caplog.at_level(logging.WARNING, logger="kimberlite"):
        with pytest.raises(km.ChainVerificationError):
            s.read_from(1)
    msgs = _warnings(caplog)
    assert any("index of memory:1/segment_000000.log" in m and "rebuil" in m for m in msgs), msgs


def test_damaged_stream_is_logged(backend, caplog):
    s = backend.open(max_segment_size=500)
    _fill(s)
    kt.flip_bit(s, 1, 2)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kimberlite"):
        with pytest.raises(km.CorruptedRecordError):
            s.read_from(1)
    msgs = _warnings(caplog)
    seg = _segment(backend, s, 0)
    damage = [m for m in msgs if "corrupted record" in m]
    assert len(damage) == 1, msgs
    assert f"of {seg} " in damage[0] and "stream 1" in damage[0] and "offset 2" in damage[0]


def test_nothing_is_logged_when_nothing_happens(backend, caplog):
    s = backend.open(max_segment_size=500)
    with caplog.at_level(logging.DEBUG, logger="kimberlite"):
        _fill(s)
        assert s.read_from(1) == EVENTS
        s.verify(1)
    assert _warnings(caplog) == []
