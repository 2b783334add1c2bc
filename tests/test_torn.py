"""Torn writes at every byte boundary of a batch (SPEC §3, "Open and recovery").

A stream's last batch is cut at every length from "none of it" to "all of it" — as a
power cut or a crash can leave it — and a fresh writer opens the directory. Each cut must
yield exactly the whole records before the cut (content and chain checked), the cut-off
bytes of the partial record moved, byte for byte, into a quarantine file, the segment cut
back to its last whole record, and an append that continues the chain.

Two batches: one in the middle of an active segment that already holds records, and one
that is the first of a segment opened by a rotation. Each is cut with the active segment's
index missing and with a stale index that covers the whole batch (pointing past the cut).
"""
import os
import shutil

import pytest

import kimberlite as km
from helpers import codec
from helpers.faults import check_stream, payloads, torn_contents
from helpers import read_bytes, seg_path, write_bytes

SID = 7
SEG = 1500
CUTS = {"checked": 0}


def _build(tmp_path, where):
    """A data dir whose stream's last batch is the one to cut; returns (dir, seg, start,
    first offset of the batch, records in the batch)."""
    d = tmp_path / f"tpl-{where}"
    with km.Storage(d, max_segment_size=SEG) as s:
        n = 0
        while True:
            n = s.append_batch(SID, payloads(SID, n, 2))
            segs = s.segment_count(SID)
            size = os.path.getsize(seg_path(d, SID, segs - 1))
            need = sum(48 + len(p) for p in payloads(SID, n, 3))
            if where == "mid-segment" and segs >= 2 and 0 < size and size + need < SEG:
                break
            if where == "new-segment" and segs == 3:
                # the active segment (2) is empty: the next batch opens it
                break
        seg = s.segment_count(SID) - 1
        start = os.path.getsize(seg_path(d, SID, seg))
        batch = 3
        assert s.append_batch(SID, payloads(SID, n, batch)) == n + batch
        assert s.segment_count(SID) == seg + 1, "the batch must stay in the active segment"
    if where == "new-segment":
        assert start == 0
    else:
        assert start > 0
    return d, seg, start, n, batch


@pytest.mark.slow
@pytest.mark.parametrize("where", ["mid-segment", "new-segment"])
@pytest.mark.parametrize("index", ["no-index", "stale-index"])
def test_torn_write_at_every_byte(tmp_path, where, index):
    tpl, seg, start, first, batch = _build(tmp_path, where)
    full = read_bytes(seg_path(tpl, SID, seg))
    idx = seg_path(tpl, SID, seg) + ".idx"
    idx_bytes = read_bytes(idx)
    # Record boundaries of the batch, from the independent codec.
    ends = [start]
    for _ in range(batch):
        ends.append(ends[-1] + codec.decode_record(full, ends[-1])[3])
    assert ends[-1] == len(full)
    work = tmp_path / "work"
    shutil.copytree(tpl, work)
    wseg = seg_path(work, SID, seg)
    for cut in range(start, len(full) + 1):
        # Reset the working copy: the segment cut at `cut`, the index as the variant says.
        for name in os.listdir(work / str(SID)):
            if "torn" in name:
                os.remove(work / str(SID) / name)
        write_bytes(wseg, full[:cut])
        if index == "stale-index":
            write_bytes(wseg + ".idx", idx_bytes)
        elif os.path.exists(wseg + ".idx"):
            os.remove(wseg + ".idx")
        whole = sum(1 for e in ends[1:] if e <= cut)
        boundary = ends[whole]
        with km.Storage(work, max_segment_size=SEG) as s:
            check_stream(s, SID, first + whole)
            torn = torn_contents(work, SID)
            if cut > boundary:
                assert list(torn.values()) == [full[boundary:cut]], cut
            else:
                assert torn == {}, cut
            assert os.path.getsize(wseg) == boundary, cut
            n = first + whole
            assert s.append_batch(SID, payloads(SID, n, 1)) == n + 1
            check_stream(s, SID, n + 1)
        CUTS["checked"] += 1
        # The append may have rotated: drop what it made past the cut segment.
        later = codec.segment_name(seg + 1)
        for name in os.listdir(work / str(SID)):
            if name.startswith(later):
                os.remove(work / str(SID) / name)
    assert CUTS["checked"] >= len(full) - start + 1
