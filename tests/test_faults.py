"""Failing disks: every file operation of a scenario fails in turn (SQLite's test_vfs
approach), and real write failures (file size limit, read-only directory, a full filesystem).

SPEC §3: append_batch is all or nothing when it fails — the call raises StorageIOError with
the errno, nothing of the batch is visible then or after reopening, and the stream works
again once the cause is gone. The fault plan is Storage._set_fault (include/kimberlite/
sys/faults.h): first the scenario runs with nth=0 to count its calls N, then once per
k = 1..N with call k failing.
"""
import errno
import os
import shutil

import pytest

import kimberlite as km
from helpers.faults import check_stream, payloads, run_child, torn_contents
from helpers import read_bytes, seg_path, write_bytes

# (name, errno, persistent, short write)
KINDS = [
    ("eio-once", errno.EIO, False, False),
    ("enospc-once-short", errno.ENOSPC, False, True),
    ("enospc-persistent", errno.ENOSPC, True, False),
    ("eio-persistent-short", errno.EIO, True, True),
]

# The scenario: appends to an existing stream (1), a new stream (2, mkdir + create), a
# batch that crosses max_segment_size (rotation: index write + new segment), an append into
# the new segment, flush_indexes, and a lazily loaded stream (3).
STEPS = [("append", 1, 2), ("append", 2, 2), ("append", 1, 4), ("append", 1, 1),
         ("flush", None, 0), ("append", 3, 1)]
BASE = {1: 3, 3: 1}


def _segment_limit():
    # Stream 1 holds 3 records, then 2 (step 1); step 3's 4 records cross the limit.
    sizes = [48 + len(p) for p in payloads(1, 0, 9)]
    return sum(sizes[:5]) + 1


def _template(tmp_path):
    d = tmp_path / "template"
    with km.Storage(d, max_segment_size=_segment_limit()) as s:
        for sid, n in BASE.items():
            s.append_batch(sid, payloads(sid, 0, n))
    return d


def _run_steps(s, model, err, persistent):
    """Run STEPS on s; update model with what succeeded. Returns the number that raised."""
    failures = 0
    for op, sid, n in STEPS:
        try:
            if op == "append":
                start = model.get(sid, 0)
                assert s.append_batch(sid, payloads(sid, start, n), fsync=True) == start + n
                model[sid] = start + n
            else:
                s.flush_indexes()
        except km.StorageIOError as e:
            assert e.errno == err, (op, sid, e)
            assert isinstance(e, OSError) and e.filename, e
            failures += 1
    return failures


def _count_calls(tmp_path, template):
    d = tmp_path / "count"
    shutil.copytree(template, d)
    with km.Storage(d, max_segment_size=_segment_limit()) as s:
        s._set_fault("all", 0)
        model = dict(BASE)
        assert _run_steps(s, model, None, False) == 0
        calls, faults = s._io_calls()
    assert faults == 0
    return calls


def _watermark_calls():
    """The scenario's I/O calls on the durable watermark file, whose single failure must
    change nothing visible (each run of the loop above checks that): an open and a write
    after each fsync=True append, an open when a stream is first loaded."""
    fsync_appends = sum(1 for op, _, _ in STEPS if op == "append")
    loads = len({sid for op, sid, _ in STEPS if op == "append"})
    return 2 * fsync_appends + loads


def _check_all(s, model):
    for sid in (1, 2, 3):
        check_stream(s, sid, model.get(sid, 0))
    # A stream whose first batch failed may be listed (its empty segment file exists) but
    # holds nothing.
    assert set(s.streams()) >= {sid for sid, n in model.items() if n}


@pytest.mark.parametrize("kind", KINDS, ids=[k[0] for k in KINDS])
def test_every_io_call_fails_in_turn(tmp_path, kind):
    name, err, persistent, short = kind
    template = _template(tmp_path)
    n_calls = _count_calls(tmp_path, template)
    assert n_calls >= 30, n_calls   # open, read, write, sync, rename, mkdir all take part
    raised_at = 0
    for k in range(1, n_calls + 1):
        d = tmp_path / f"run{k}"
        shutil.copytree(template, d)
        model = dict(BASE)
        s = km.Storage(d, max_segment_size=_segment_limit())
        s._set_fault("all", k, errno=err, persistent=persistent, short=short)
        failures = _run_steps(s, model, err, persistent)
        calls, faults = s._io_calls()
        assert faults >= 1, f"call {k} of {n_calls} was never made"
        if not persistent:
            assert failures <= 1, f"a single fault at call {k} failed {failures} steps"
        raised_at += failures > 0
        # The cause goes away ("space returns"): the state is the model, then every
        # stream takes new appends that continue its chain.
        s._set_fault("", 0)
        _check_all(s, model)
        s.close()
        with km.Storage(d, max_segment_size=_segment_limit()) as s2:
            _check_all(s2, model)
            for sid in (1, 2, 3):
                start = model.get(sid, 0)
                assert s2.append_batch(sid, payloads(sid, start, 2)) == start + 2
                model[sid] = start + 2
            _check_all(s2, model)
        with km.Storage(d, read_only=True) as r:
            _check_all(r, model)
        leftovers = [n for n in os.listdir(d / "1") if n.endswith(".tmp")]
        assert not leftovers, leftovers
        shutil.rmtree(d)
    # Most calls are on the path of some append: their failure must surface. The durable
    # watermark's calls (an open and a write after each fsync=True append, an open when a
    # stream is loaded) are best effort by design and surface nothing (backend.h).
    assert raised_at >= (n_calls - _watermark_calls()) // 2, (raised_at, n_calls)


def _torn_template(tmp_path):
    """Stream 1 with 4 records and the first half of a fifth record: a torn tail."""
    d = tmp_path / "torn-template"
    with km.Storage(d) as s:
        s.append_batch(1, payloads(1, 0, 4))
    p = seg_path(d, 1, 0)
    from helpers import codec
    tail = codec.encode_records(4, codec.head_hash(payloads(1, 0, 4)), payloads(1, 4, 1))[0]
    tail = tail[:len(tail) // 2 + 3]
    write_bytes(p, read_bytes(p) + tail)
    for n in os.listdir(d / "1"):
        if n.endswith(".idx"):
            os.remove(d / "1" / n)
    return d, tail


@pytest.mark.parametrize("kind", KINDS, ids=[k[0] for k in KINDS])
def test_every_io_call_of_a_quarantine_fails_in_turn(tmp_path, kind):
    """Recovery itself under faults: whatever call fails while the torn tail is being moved
    to quarantine, no record is lost, the residue is never deleted, and the next open
    finishes the job."""
    name, err, persistent, short = kind
    template, residue = _torn_template(tmp_path)
    d = tmp_path / "count"
    shutil.copytree(template, d)
    with km.Storage(d) as s:
        s._set_fault("all", 0)
        check_stream(s, 1, 4)
        n_calls = s._io_calls()[0]
    assert list(torn_contents(d, 1).values()) == [residue]
    for k in range(1, n_calls + 1):
        d = tmp_path / f"q{k}"
        shutil.copytree(template, d)
        s = km.Storage(d)
        s._set_fault("all", k, errno=err, persistent=persistent, short=short)
        try:
            check_stream(s, 1, 4)
        except km.StorageIOError as e:
            assert e.errno == err
        s._set_fault("", 0)
        s.close()
        # Nothing lost: the segment still holds the 4 records, and the residue is either
        # still at its end or, whole, in a quarantine file.
        seg = read_bytes(seg_path(d, 1, 0))
        copies = [v for v in torn_contents(d, 1).values() if v == residue]
        assert seg.endswith(residue) or copies, k
        with km.Storage(d) as s2:
            check_stream(s2, 1, 4)
            assert s2.append_batch(1, payloads(1, 4, 1)) == 5
            check_stream(s2, 1, 5)
        assert residue in torn_contents(d, 1).values()
        shutil.rmtree(d)


def test_cut_back_failure_never_exposes_the_failed_batch(tmp_path):
    """The write lands in full, the sync fails, and cutting the batch back fails as well
    (the disk refuses everything): the batch must stay invisible in this process, must not
    be extended, and the stream must recover once the disk works again."""
    d = tmp_path / "d"
    s = km.Storage(d)
    s.append_batch(1, payloads(1, 0, 2))
    s._set_fault("sync,truncate", 1, errno=errno.EIO, persistent=True)
    with pytest.raises(km.StorageIOError) as ei:
        s.append_batch(1, payloads(1, 2, 3), fsync=True)
    assert ei.value.errno == errno.EIO
    # Still failing: appends refuse (they would have to cut first), reads show 2 records.
    with pytest.raises(km.StorageIOError):
        s.append_batch(1, [b"other"], fsync=True)
    s._set_fault("", 0)
    check_stream(s, 1, 2)
    assert s.append_batch(1, payloads(1, 2, 1)) == 3
    check_stream(s, 1, 3)
    s.close()
    with km.Storage(d) as s2:
        check_stream(s2, 1, 3)


def test_cut_back_failure_then_close_keeps_the_batch_out(tmp_path):
    """As above, but the storage is closed while the disk still refuses to cut: the next
    open must not resurrect whole records of the failed batch."""
    d = tmp_path / "d"
    s = km.Storage(d)
    s.append_batch(1, payloads(1, 0, 2))
    s._set_fault("sync,truncate", 1, errno=errno.EIO, persistent=True)
    with pytest.raises(km.StorageIOError):
        s.append_batch(1, payloads(1, 2, 3), fsync=True)
    s._set_fault("", 0)   # the disk works again by the time the storage is closed
    s.close()
    with km.Storage(d) as s2:
        check_stream(s2, 1, 2)


def test_short_write_of_whole_records_with_failing_cut(tmp_path):
    """A short write that happens to end on a record boundary leaves whole, valid records of
    the failed batch on disk; if the cut-back fails too they must still never be shown."""
    d = tmp_path / "d"
    s = km.Storage(d)
    s.append_batch(1, [b"a" * 10])
    # Two records of equal size: half the batch is exactly one whole record.
    s._set_fault("write,truncate", 1, errno=errno.ENOSPC, persistent=True, short=True)
    with pytest.raises(km.StorageIOError) as ei:
        s.append_batch(1, [b"b" * 20, b"c" * 20])
    assert ei.value.errno == errno.ENOSPC
    assert len(read_bytes(seg_path(d, 1, 0))) == 58 + 68   # the half write is on disk
    s._set_fault("", 0)
    assert s.read_from(1) == [b"a" * 10]
    assert s.next_offset(1) == 1
    assert s.append_batch(1, [b"d"]) == 2
    assert s.read_from(1) == [b"a" * 10, b"d"]
    s.close()
    with km.Storage(d) as s2:
        assert s2.read_from(1) == [b"a" * 10, b"d"]
        s2.verify(1)


def test_memory_storage_has_no_fault_layer():
    with pytest.raises(ValueError):
        km.MemoryStorage()._set_fault("write", 1)
    with pytest.raises(ValueError):
        km.MemoryStorage()._io_calls()


def test_set_fault_arguments(tmp_path):
    with km.Storage(tmp_path / "d") as s:
        with pytest.raises(ValueError):
            s._set_fault("scribble", 1)
        with pytest.raises(TypeError):
            s._set_fault(1.5, 1)
        with pytest.raises(ValueError):
            s._set_fault("write", 1, errno=-3)
        s.append_batch(1, [b"x"], fsync=True)
        s._set_fault("write|sync", 0)
        s.append_batch(1, [b"y"], fsync=True)
        # one write and one sync per batch, then the durable watermark's write (never synced)
        assert s._io_calls() == (3, 0)
        s._set_fault("write|sync", 0)
        s.append_batch(2, [b"z"], fsync=True)
        assert s._io_calls() == (5, 0)     # a new stream: its directory and the data dir too


# --- real write failures ------------------------------------------------------------------

_FSIZE = r"""
import json, os, resource, signal, sys
import kimberlite as km
sys.path.insert(0, sys.argv[2])
from helpers.faults import payloads
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
d = sys.argv[1]
out = []
s = km.Storage(d, max_segment_size=3000)
n = 0
for limit in range(200, 7000, 211):
    seg = os.path.join(d, "1", sorted(x for x in os.listdir(os.path.join(d, "1"))
                                       if x.endswith(".log"))[-1]) if n else None
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    batch = payloads(1, n, 4)
    try:
        n = s.append_batch(1, batch, fsync=True)
        out.append(["ok", limit, n])
    except km.StorageIOError as e:
        out.append(["err", limit, e.errno, s.next_offset(1), s.read_from(1) == payloads(1, 0, n)])
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    n = s.append_batch(1, payloads(1, n, 1), fsync=True)    # works again at once
s.close()
print(json.dumps({"steps": out, "n": n}))
"""


def test_file_size_limit_fails_batches_part_way(tmp_path):
    """RLIMIT_FSIZE (SIGXFSZ ignored) makes write return EFBIG part-way through batches, in
    the first segment and in later ones; each failed batch leaves no trace and the next
    append works."""
    import json
    d = tmp_path / "fsize"
    r = run_child(_FSIZE, d, os.path.dirname(os.path.abspath(__file__)), timeout=120)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    errs = [x for x in out["steps"] if x[0] == "err"]
    assert len(errs) >= 5, out
    for _, _limit, e, _next, intact in errs:
        assert e == errno.EFBIG
        assert intact
    with km.Storage(d, max_segment_size=3000) as s:
        check_stream(s, 1, out["n"])
        assert s.segment_count(1) >= 2
    assert not torn_contents(d, 1)


_READONLY_DIR = r"""
import errno, json, logging, os, sys
d = sys.argv[1]
import kimberlite as km
sys.path.insert(0, sys.argv[2])
from helpers.faults import payloads
if os.getuid() == 0:            # root ignores permission bits: act as nobody (imports done)
    os.setgid(65534); os.setuid(65534)
out = {}
s = km.Storage(d, max_segment_size=600)
s.append_batch(1, payloads(1, 0, 2))
os.chmod(d, 0o555)                     # no new stream directory
try:
    s.append_batch(2, [b"x"])
except km.StorageIOError as e:
    out["new_stream"] = e.errno
out["streams"] = s.streams()
os.chmod(os.path.join(d, "1"), 0o555)  # no new segment: rotation cannot make its file
n = 2
failed = None
while failed is None and n < 60:
    try:
        n = s.append_batch(1, payloads(1, n, 3))
    except km.StorageIOError as e:
        failed = e.errno
out["rotation"] = failed
out["next"] = s.next_offset(1)
out["intact"] = s.read_from(1) == payloads(1, 0, n)
os.chmod(d, 0o755); os.chmod(os.path.join(d, "1"), 0o755)
out["after"] = s.append_batch(1, payloads(1, n, 1))
out["new_stream_after"] = s.append_batch(2, [b"x"])
s.close()
print(json.dumps(out))
"""


@pytest.fixture
def world_dir():
    """A directory that an unprivileged child can own (pytest's own tmp dirs are 0700)."""
    import pathlib
    import tempfile
    top = pathlib.Path(tempfile.mkdtemp(prefix="kmb-ro-"))
    os.chmod(top, 0o755)
    yield top
    for dirpath, dirs, _files in os.walk(top):
        for x in dirs:
            os.chmod(os.path.join(dirpath, x), 0o755)
    shutil.rmtree(top)


def test_read_only_directory(world_dir):
    """Permission denied (EACCES) on the data directory (no new stream) and on the stream
    directory (rotation cannot create the next segment): nothing is lost or half-written,
    and appends work again once the permission returns."""
    import json
    d = world_dir / "ro"
    d.mkdir()
    if os.getuid() == 0:
        os.chown(d, 65534, 65534)
    r = run_child(_READONLY_DIR, d, os.path.dirname(os.path.abspath(__file__)))
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["new_stream"] == errno.EACCES
    assert out["streams"] == [1]
    assert out["rotation"] == errno.EACCES
    assert out["intact"]
    n = out["next"]
    assert out["after"] == n + 1
    assert out["new_stream_after"] == 1
    os.chmod(d, 0o755)
    with km.Storage(d, max_segment_size=600) as s:
        check_stream(s, 1, n + 1)
        assert s.read_from(2) == [b"x"]


def _mount_tmpfs(path, size):
    import subprocess
    if os.getuid() != 0:
        return "not root: mounting a small tmpfs needs root"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return f"mount -t tmpfs failed here: {r.stderr.strip() or r.returncode}"
    return None


def test_full_small_filesystem(tmp_path):
    """A real full disk: a 256 KiB tmpfs filled up. The append that meets ENOSPC part-way
    raises it, leaves nothing, and the stream works once space is freed."""
    import subprocess
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    why = _mount_tmpfs(mnt, "256k")
    if why:
        pytest.skip(f"full-filesystem case needs a small filesystem: {why} "
                    "(disk-full is still covered by RLIMIT_FSIZE and the ENOSPC fault plan)")
    s = None
    try:
        d = mnt / "data"
        s = km.Storage(d, max_segment_size=1 << 20)
        n = s.append_batch(1, payloads(1, 0, 3))
        # Fill the filesystem, leaving about one page free.
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
        finally:
            os.close(fd)
        os.truncate(mnt / "filler", os.path.getsize(mnt / "filler") - 4096)
        failures = 0
        for _ in range(40):
            try:
                n = s.append_batch(1, payloads(1, n, 20), fsync=True)
            except km.StorageIOError as e:
                assert e.errno == errno.ENOSPC
                failures += 1
                assert s.next_offset(1) == n
                assert s.read_from(1) == payloads(1, 0, n)
                break
        assert failures == 1, "the filesystem never filled up"
        os.remove(mnt / "filler")        # space returns
        n = s.append_batch(1, payloads(1, n, 5), fsync=True)
        s.close()
        with km.Storage(d, max_segment_size=1 << 20) as s2:
            check_stream(s2, 1, n)
    finally:
        if s is not None:
            s.close()
        if subprocess.run(["umount", str(mnt)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
