"""Durability after fsync=False appends, readers with another segment size, fork, OS errors.

Each test names a promise of SPEC §3/§4 that an earlier version broke in a corner:
- fsync=True is "durable on return" for everything the batch's chain depends on, also when
  earlier batches (and the files they created) were appended with fsync=False;
- a read_only reader "sees every record that was complete when the call began", whatever
  max_segment_size it was opened with;
- one writer per data directory, also across fork();
- StorageIOError keeps errno, strerror and filename as the operating system gave them.
"""
import errno
import os

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


def test_reader_with_smaller_segment_size_keeps_following_the_writer(tmp_path):
    w = km.Storage(tmp_path / "d", max_segment_size=10**6)
    w.append_batch(1, [b"r" * 100] * 20)
    r = km.Storage(tmp_path / "d", read_only=True, max_segment_size=1000)
    assert r.next_offset(1) == 20
    w.append_batch(1, [b"s" * 100] * 20)
    assert r.next_offset(1) == 40
    assert len(r.read_from(1)) == 40
    # segment accounting follows each opener's own max_segment_size (it is not on disk)
    assert w.segment_count(1) == 1 and r.segment_count(1) == 2
    w.append_batch(1, [b"t" * 100])
    assert r.read_from(1, 40) == [b"t" * 100]
    assert r.verify(1) == w.verify(1)
    r.close()
    w.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_writer_inherited_across_fork_refuses_in_the_child(tmp_path):
    s = km.Storage(tmp_path / "d")
    s.append_batch(1, [b"parent"])
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: every call refuses, and closing leaves the parent's lock
        code = 0
        for call in (lambda: s.append_batch(1, [b"child"]), lambda: s.read_from(1),
                     s.flush_indexes):
            try:
                call()
                code = 1
            except km.StorageError as e:
                code = code or (0 if "fork" in str(e) else 2)
        s.close()
        os.write(wfd, bytes([code]))
        os._exit(0)
    os.close(wfd)
    _, status = os.waitpid(pid, 0)
    assert os.read(rfd, 1) == b"\x00" and status == 0
    os.close(rfd)
    # the parent's writer still works and still holds the lock
    assert s.append_batch(1, [b"after"]) == 2
    with pytest.raises(km.LockedError):
        km.Storage(tmp_path / "d")
    s.close()
    assert km.Storage(tmp_path / "d").read_from(1) == [b"parent", b"after"]


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
