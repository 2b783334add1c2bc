"""What `fsync=True` makes durable (SPEC §3, "durable on return"; docs/GUARANTEES.md, "Power
loss"): everything the batch's chain depends on, also when earlier batches (and the files
they created) were appended with fsync=False, in this process or an earlier one. The sync
calls are counted, and failed, through the fault plan; a failing pre-sync writes nothing.
"""
import errno

import pytest

import kimberlite as km


def _syncs_of(s, call):
    """How many sync calls (data and directory fsyncs) `call` makes on disk Storage `s`."""
    s._set_fault("sync", 0, errno.EIO)  # nth=0 only counts
    before = s._io_calls()[0]
    call()
    return s._io_calls()[0] - before


def test_fsync_true_makes_earlier_unsynced_segments_and_names_durable(tmp_path):
    s = km.Storage(tmp_path / "d", max_segment_size=100)
    # fsync=False: creates the stream directory, segment 0, fills it, rotates to segment 1
    s.append_batch(1, [b"x" * 60], fsync=False)
    assert s.completed_segments(1) == [0]
    # the first durable batch syncs segment 0's data, both directories, and its own segment
    first = _syncs_of(s, lambda: s.append_batch(1, [b"y"], fsync=True))
    assert first >= 4
    # nothing is left unsynced: the next durable batch syncs only its segment
    assert _syncs_of(s, lambda: s.append_batch(1, [b"z"], fsync=True)) == 1  # no rotation
    # and fsync=False never syncs
    assert _syncs_of(s, lambda: s.append_batch(1, [b"w"], fsync=False)) == 0
    s.close()


def test_fsync_true_after_reopen_syncs_what_an_earlier_run_left(tmp_path):
    s = km.Storage(tmp_path / "d", max_segment_size=100)
    s.append_batch(1, [b"x" * 60], fsync=False)
    s.close()
    s = km.Storage(tmp_path / "d", max_segment_size=100)
    assert _syncs_of(s, lambda: s.append_batch(1, [b"y"], fsync=True)) >= 4
    assert _syncs_of(s, lambda: s.append_batch(1, [b"y"], fsync=True)) == 1
    s.close()


def test_failing_presync_writes_nothing(tmp_path):
    s = km.Storage(tmp_path / "d", max_segment_size=100)
    s.append_batch(1, [b"x" * 60], fsync=False)
    seg1 = tmp_path / "d" / "1" / "segment_000001.log"
    size = seg1.stat().st_size
    s._set_fault("sync", 1, errno.EIO)
    with pytest.raises(km.StorageIOError) as info:
        s.append_batch(1, [b"y" * 10], fsync=True)
    assert info.value.errno == errno.EIO
    assert s.next_offset(1) == 1 and seg1.stat().st_size == size
    s._set_fault("sync", 0, 0)
    assert s.append_batch(1, [b"y" * 10], fsync=True) == 2
    s.close()
