"""Processes and threads (SPEC §3, "Processes and threads").

- One writer per data directory, in any process: a live writer process excludes others
  (LockedError, also in a third process), and the lock goes with the process when it is
  SIGKILLed mid-append.
- read_only readers in other processes follow a live writer: they see every complete
  record with the right content, offsets only grow, the chain verifies, and the writer's
  activity never makes them fail; also a reader opened with another max_segment_size
  (segment accounting is each opener's own, it is not on disk).
- Threads appending to one stream and to separate streams while others read and verify: no
  event lost, duplicated or reordered, batches whole, every chain verifies.
- 10,000 streams in one directory with a bounded number of open files (/proc/self/fd).
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import kimberlite as km
from helpers import codec
from helpers.faults import check_stream, payloads, run_child
from helpers import child_env

TESTS = os.path.dirname(os.path.abspath(__file__))

_WRITER = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
import kimberlite as km
from helpers.faults import payloads
d, seconds, fsync = sys.argv[1], float(sys.argv[3]), sys.argv[4] == "1"
s = km.Storage(d, max_segment_size=4096)
print("ready", flush=True)
n = s.next_offset(1)
end = time.monotonic() + seconds
i = 0
while time.monotonic() < end:
    k = 1 + i % 7
    n = s.append_batch(1, payloads(1, n, k), expected_offset=n, fsync=fsync)
    i += 1
    if i % 25 == 0:
        s.flush_indexes()
s.close()
print("done", n, flush=True)
"""


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


def _writer(d, seconds, fsync=False):
    p = subprocess.Popen([sys.executable, "-c", _WRITER, str(d), TESTS, str(seconds),
                          "1" if fsync else "0"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=child_env())
    line = p.stdout.readline()
    assert line.strip() == "ready", line + p.stderr.read()
    return p


_TRY_LOCK = r"""
import sys
import kimberlite as km
try:
    km.Storage(sys.argv[1])
    print("opened")
except km.LockedError as e:
    print("locked", isinstance(e, km.StorageError))
"""


def test_live_writer_excludes_others_and_lock_dies_with_it(tmp_path):
    d = tmp_path / "d"
    p = _writer(d, 30, fsync=True)
    try:
        for _ in range(3):
            with pytest.raises(km.LockedError):
                km.Storage(d)
            assert run_child(_TRY_LOCK, d).stdout.split() == ["locked", "True"]
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)    # mid-append, most likely
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == -signal.SIGKILL
    with km.Storage(d, max_segment_size=4096) as s:   # at once: the lock went with it
        n = s.next_offset(1)
        assert n > 0
        check_stream(s, 1, n)
        assert s.append_batch(1, payloads(1, n, 2)) == n + 2


_READER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[2])
import kimberlite as km
from helpers.faults import payloads
d, seconds, done_file = sys.argv[1], float(sys.argv[3]), sys.argv[4]
out = {"reads": 0, "seen": [], "errors": [], "verifies": 0}
r = km.Storage(d, read_only=True)
last = 0
end = time.monotonic() + seconds

def writer_final():   # the writer's last next_offset, once the test has written it down
    try:
        with open(done_file) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None

# Read for `seconds`, then on until the reader has caught up with the writer's final offset
# (a loaded machine may leave it behind at the deadline), for at most 60 s more.
while time.monotonic() < end or writer_final() != last:
    if time.monotonic() > end + 60:
        out["errors"].append("did not catch up with the writer within 60 s")
        break
    try:
        n = r.next_offset(1)
        if n < last:
            out["errors"].append("next_offset went back from %d to %d" % (last, n))
        got = r.read_from(1, last)
        if got != payloads(1, last, len(got)):
            out["errors"].append("wrong content after offset %d" % last)
        if len(got) < n - last:
            out["errors"].append("read %d records, next_offset said %d" % (len(got), n - last))
        last += len(got)
        out["reads"] += 1
        if out["reads"] % 20 == 0:
            m, head = r.verify(1)
            out["verifies"] += 1
            if m < last:
                out["errors"].append("verify saw %d records after reading %d" % (m, last))
        if out["reads"] % 50 == 0:      # a fresh reader picks up the stream mid-flight
            r.close()
            r = km.Storage(d, read_only=True)
        if not out["seen"] or out["seen"][-1] != last:
            out["seen"].append(last)
    except Exception as e:
        out["errors"].append("%s: %s" % (type(e).__name__, e))
r.close()
print(json.dumps(out))
"""


@pytest.mark.slow
def test_readers_in_other_processes_follow_a_live_writer(tmp_path):
    d = tmp_path / "d"
    with km.Storage(d) as s:
        s.append_batch(1, payloads(1, 0, 3))
    w = _writer(d, 2.5)
    done = tmp_path / "writer-final"
    readers = [subprocess.Popen([sys.executable, "-c", _READER, str(d), TESTS, "3.0", str(done)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=child_env()) for _ in range(2)]
    wo, we = w.communicate(timeout=120)
    assert w.returncode == 0, we
    final = int(wo.split()[-1])
    tmp = tmp_path / "writer-final.tmp"
    tmp.write_text(str(final))
    os.replace(tmp, done)
    outs = []
    for r in readers:
        o, e = r.communicate(timeout=120)
        assert r.returncode == 0, e
        outs.append(json.loads(o.strip().splitlines()[-1]))
    for out in outs:
        assert out["errors"] == [], out["errors"][:5]
        assert out["verifies"] > 0
        assert len(out["seen"]) > 5, "the reader did not see the stream grow"
        assert out["seen"][-1] == final, "the reader did not catch up with the writer"
    with km.Storage(d, max_segment_size=4096) as s:
        check_stream(s, 1, final)
        assert s.segment_count(1) > 3


def _run_threads(targets, timeout=120):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)
        return run
    ts = [threading.Thread(target=wrap(t)) for t in targets]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)
        assert not t.is_alive(), "a thread hung"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("kind", ["disk", "memory"])
def test_threads_shared_and_separate_streams_with_verifying_readers(tmp_path, kind):
    d = tmp_path / "d"
    s = km.Storage(d, max_segment_size=3000) if kind == "disk" else \
        km.MemoryStorage(max_segment_size=3000)
    shared, writers, batches, per = 1, 4, 40, 3
    stop = threading.Event()

    def shared_writer(w):
        def run():
            for b in range(batches):
                s.append_batch(shared, [b"%d:%d:%d" % (w, b, i) for i in range(per)],
                               fsync=(b % 10 == 0))
        return run

    def own_writer(w):
        def run():
            sid = 100 + w
            for b in range(batches):
                n = b * 2
                assert s.append_batch(sid, payloads(sid, n, 2), expected_offset=n) == n + 2
        return run

    def reader():
        seen = 0
        while not stop.is_set() or seen < writers * batches * per:
            got = s.read_from(shared, seen)
            seen += len(got)
            for sid in range(100, 100 + writers):
                n = s.next_offset(sid)
                got = s.read_from(sid)
                assert len(got) >= n and got == payloads(sid, 0, len(got))
            s.verify(shared)
            if stop.is_set() and seen >= writers * batches * per:
                break

    ro = []
    if kind == "disk":
        def ro_reader():
            with km.Storage(d, read_only=True) as r:
                last = 0
                while not stop.is_set():
                    n = r.next_offset(shared)
                    assert n >= last
                    assert len(r.read_from(shared, last)) >= n - last
                    last = n
                    r.verify(shared)
        ro = [ro_reader]

    def writers_then_stop():
        _run_threads([shared_writer(w) for w in range(writers)] +
                     [own_writer(w) for w in range(writers)])
        stop.set()

    _run_threads([writers_then_stop, reader, reader] + ro)
    events = s.read_from(shared)
    assert len(events) == writers * batches * per
    assert len(set(events)) == len(events), "duplicated events"
    nxt = {}
    i = 0
    while i < len(events):          # batches whole and contiguous, each writer in order
        w, b, k = map(int, events[i].split(b":"))
        assert k == 0 and b == nxt.get(w, 0), f"event {i}: {events[i]!r}"
        assert events[i:i + per] == [b"%d:%d:%d" % (w, b, j) for j in range(per)]
        nxt[w] = b + 1
        i += per
    assert nxt == {w: batches for w in range(writers)}
    head = codec.head_hash(events)
    assert s.verify(shared, expected_head=head) == (len(events), head)
    for w in range(writers):
        check_stream(s, 100 + w, batches * 2)
    s.close()


@pytest.mark.slow
def test_ten_thousand_streams_with_bounded_open_files(tmp_path):
    d = tmp_path / "many"
    n = 10_000
    base = _open_fds()
    peak = base
    with km.Storage(d) as s:
        for sid in range(n):
            s.append_batch(sid, [b"e%d" % sid], fsync=False)
            if sid % 500 == 0:
                peak = max(peak, _open_fds())
        peak = max(peak, _open_fds())
    assert peak - base <= 12, f"{peak - base} descriptors open for {n} streams"
    assert _open_fds() == base, "descriptors left open after close"
    with km.Storage(d) as s, km.Storage(d, read_only=True) as r:
        assert s.streams() == list(range(n))
        assert r.streams() == list(range(n))
        for sid in range(0, n, 1):
            assert s.read_from(sid) == [b"e%d" % sid]
            if sid % 7 == 0:
                assert r.read_from(sid) == [b"e%d" % sid]
            if sid % 500 == 0:
                peak = max(peak, _open_fds())
        for sid in range(0, n, 97):
            s.append_batch(sid, [b"more"])
            assert s.verify(sid)[0] == 2
        peak = max(peak, _open_fds())
    # two storages open: each keeps at most a small fixed number of descriptors
    assert peak - base <= 24, f"{peak - base} descriptors open"
    assert _open_fds() == base


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
