"""fork(): every kind of storage is usable, or refuses cleanly, in a child — never a hang.

Issue 8, items 9 and 10 (docs/GUARANTEES.md, "fork()"; the protocol: include/kimberlite/
storage.h, kimberlite/_fork.py). Each scenario runs in its own Python process with a timeout
and an address-space limit; inside it, children are forked many times while another thread
of the parent is inside a long engine call (a read that hands its chunks to Python under the
engine lock, a verify, a large append that uses the hashing thread). Each child gets an
alarm, so a child that hangs dies and is reported instead of blocking the scenario.

- read-only and memory storages work in the child (reads, verify; memory: appends to the
  child's own copy), with the hashing thread started afresh there for large operations;
- an inherited writer refuses every call in the child and never keeps the directory locked:
  once the parent closes it, a new writer opens at once while the child lives;
- a writer inherited by a child forked from this very process refuses there, closing it in the
  child leaves the parent's lock, and the parent's writer goes on working;
- after a fork nothing is left behind: both processes open, use and close new storages, fork
  again, and the parent's storages go on working.
"""
import os
import resource
import subprocess
import sys

import pytest

import kimberlite as km
from helpers import child_env

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")

TIMEOUT = 120  # seconds for a whole scenario (dozens of forks); a few seconds when idle
AS_LIMIT = 4 << 30


def _limit_child():
    if not os.environ.get("KIMBERLITE_SANITIZED") and "asan" not in os.environ.get("LD_PRELOAD", ""):
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def run_scenario(name, rounds=25):
    try:
        p = subprocess.run([sys.executable, "-c", SCENARIOS, name, str(rounds)],
                           capture_output=True, text=True, timeout=TIMEOUT, env=child_env(),
                           preexec_fn=_limit_child)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"scenario {name} did not finish within {TIMEOUT} s (a hang); "
                    f"output: {e.stdout!r} {e.stderr!r}")
    assert p.returncode == 0, f"scenario {name} failed:\n{p.stdout}\n{p.stderr}"
    assert p.stdout.strip().endswith(f"{name}: {rounds} rounds ok"), p.stdout
    return p


# The scenarios, run by `python -c SCENARIOS name rounds`. fork_child(fn) forks, runs fn in
# the child under an alarm and returns fn's exit status to the parent (0 = every check held).
SCENARIOS = r"""
import hashlib, os, signal, sys, tempfile, threading, time
import kimberlite as km

name, rounds = sys.argv[1], int(sys.argv[2])
CHILD_ALARM = 20

def head_of(events):
    h = None
    for e in events:
        h = hashlib.sha256((h or b"") + e).digest()
    return h

def fork_child(fn):
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            signal.alarm(CHILD_ALARM)  # a hung child dies of SIGALRM
            code = fn()
        except BaseException as e:
            print("child:", type(e).__name__, e, file=sys.stderr, flush=True)
            code = 98
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        raise SystemExit(f"{name}: child killed by signal {sig} (SIGALRM = a hang)")
    return os.WEXITSTATUS(status)

class Busy:
    # Another parent thread calling `work` in a loop; forks happen while it is inside.
    def __init__(self, work):
        self.work, self.stop, self.calls, self.error = work, False, 0, None
        self.t = threading.Thread(target=self.run)
    def run(self):
        try:
            while not self.stop:
                self.work()
                self.calls += 1
        except BaseException as e:
            self.error = e
    def __enter__(self):
        self.t.start()
        while self.calls == 0 and self.error is None:  # it is really working
            time.sleep(0.001)
        return self
    def __exit__(self, *exc):
        self.stop = True
        self.t.join()
        if self.error is not None:
            raise self.error

def pause():
    time.sleep(0.002 + (os.getpid() % 7) / 1000)  # fork at varying points of the work

BIG = [bytes([i % 251]) * 40000 + os.urandom(64) for i in range(48)]  # ~1.9 MB a read

def filled(path, streams=(1,)):
    with km.Storage(path, max_segment_size=1 << 20) as w:
        for sid in streams:
            for k in range(0, len(BIG), 8):
                w.append_batch(sid, BIG[k:k + 8], fsync=False)
    return BIG

def check_reads(s, sid, events):
    # A full read (large: hashed with the worker), a ranged one, verify against the head.
    if s.read_from(sid) != events[:s.next_offset(sid)]:
        return 10
    n = s.next_offset(sid)
    if n < len(events) or s.read_from(sid, n - 1) != [events[n - 1]]:
        return 11
    if s.verify(sid, expected_head=head_of(events[:n])) != (n, head_of(events[:n])):
        return 12
    return 0

if name == "read_only":
    d = tempfile.mkdtemp()
    events = filled(d)
    r = km.Storage(d, read_only=True, max_segment_size=1 << 20)
    r.read_from(1)  # the hashing thread runs in the parent before any fork
    def work():
        r.read_from(1); r.verify(1); r.read_records(1, 3)
    with Busy(work) as busy:
        for i in range(rounds):
            pause()
            rc = fork_child(lambda: check_reads(r, 1, events) or (0 if r.streams() == [1] else 13))
            assert rc == 0, f"round {i}: child status {rc}"
    assert check_reads(r, 1, events) == 0 and busy.calls > 0
    r.close()

elif name == "memory":
    m = km.MemoryStorage(max_segment_size=1 << 20)
    for k in range(0, len(BIG), 8):
        m.append_batch(1, BIG[k:k + 8])
    lock = threading.Lock()
    appended = list(BIG)
    def work():
        m.read_from(1); m.verify(1)
        with lock:
            m.append_batch(2, BIG[:8])  # a large append: the chain on the hashing thread
    def child():
        # The child's copy: stream 1 whole, stream 2 a whole number of batches, and it
        # takes appends of its own (large ones too).
        if check_reads(m, 1, BIG):
            return 20
        n2 = m.next_offset(2)
        if n2 % 8 or m.verify(2) != (n2, head_of((BIG[:8] * (n2 // 8)))):
            return 21
        m.append_batch(1, BIG[:16])
        return check_reads(m, 1, BIG + BIG[:16])
    with Busy(work):
        for i in range(rounds):
            pause()
            rc = fork_child(child)
            assert rc == 0, f"round {i}: child status {rc}"
    assert check_reads(m, 1, BIG) == 0

elif name == "writer":
    d = tempfile.mkdtemp()
    events = filled(d, streams=(1,))
    w = km.Storage(d, max_segment_size=1 << 20)
    mine = []
    def work():
        w.read_from(1, 0, 1 << 20); w.verify(1)
        w.append_batch(2, BIG[:8], fsync=False)
        mine.extend(BIG[:8])
    def child():
        # The inherited writer refuses everything, at once, and says why.
        for call in (lambda: w.append_batch(1, [b"child"], fsync=False),
                     lambda: w.append_batch(1, [b"child"], fsync=True),
                     lambda: w.read_from(1), lambda: w.verify(1), lambda: w.next_offset(1),
                     lambda: w.streams(), w.flush_indexes):
            try:
                call()
                return 30
            except km.StorageError as e:
                if "fork" not in str(e):
                    return 31
        try:
            km.Storage(d)
            return 32  # the parent's writer still holds the directory
        except km.LockedError:
            pass
        r = km.Storage(d, read_only=True, max_segment_size=1 << 20)  # a reader works
        rc = check_reads(r, 1, events)
        r.close()
        w.close()  # releases nothing of the parent's
        return rc
    with Busy(work):
        for i in range(rounds):
            pause()
            rc = fork_child(child)
            assert rc == 0, f"round {i}: child status {rc}"
    # The parent's writer is whole and still holds the lock.
    assert check_reads(w, 1, events) == 0
    assert w.read_from(2) == mine and w.verify(2)[0] == len(mine)
    try:
        km.Storage(d)
        raise AssertionError("the lock was lost")
    except km.LockedError:
        pass
    w.close()

elif name == "writer_lock":
    # Item 10: a child forked from a writer never keeps the directory locked.
    for i in range(rounds):
        d = tempfile.mkdtemp()
        w = km.Storage(d)
        w.append_batch(1, [b"parent"])
        go_r, go_w = os.pipe()
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                signal.alarm(CHILD_ALARM)
                os.close(go_w)
                os.read(go_r, 1)  # the parent has closed its writer and opened a new one
                try:
                    w.append_batch(1, [b"child"])
                    code = 40
                except km.StorageError:
                    try:
                        km.Storage(d)
                        code = 41  # the parent's new writer must hold it
                    except km.LockedError:
                        code = 0
                w.close()
                os.write(done_w, b"x")
                os.read(go_r, 1)  # the parent's new writer closed: now this child may write
                with km.Storage(d) as mine:
                    mine.append_batch(1, [b"child"])
            except BaseException as e:
                print("child:", type(e).__name__, e, file=sys.stderr, flush=True)
                code = 98
            finally:
                os._exit(code)
        os.close(go_r)
        w.close()
        # The child lives (blocked on the pipe) and holds a copy of every descriptor.
        t = km.Storage(d)  # at once: no LockedError
        assert t.append_batch(1, [b"reopened"]) == 2
        os.write(go_w, b"x")
        os.read(done_r, 1)
        t.close()
        os.write(go_w, b"x")
        _, status = os.waitpid(pid, 0)
        assert status == 0, f"round {i}: child status {status}"
        with km.Storage(d, read_only=True) as r:
            assert r.read_from(1) == [b"parent", b"reopened", b"child"]
        for fd in (go_w, done_r, done_w):
            os.close(fd)

elif name == "hasher":
    # The hashing thread after fork: started in the parent, absent in the child, started
    # afresh there on need; also in a grandchild.
    m = km.MemoryStorage(max_segment_size=8 << 20)
    m.append_batch(1, BIG)  # large: the parent's hashing thread starts
    d = tempfile.mkdtemp()
    events = filled(d)
    r = km.Storage(d, read_only=True, max_segment_size=1 << 20)
    assert check_reads(r, 1, events) == 0
    def child(depth):
        for _ in range(3):
            if check_reads(m, 1, BIG) or check_reads(r, 1, events):
                return 50
            m.append_batch(2, BIG)  # a large append in the child
            if m.verify(2) != (m.next_offset(2), head_of(BIG * (m.next_offset(2) // len(BIG)))):
                return 51
        if depth:
            return fork_child(lambda: child(depth - 1))
        return 0
    for i in range(rounds):
        rc = fork_child(lambda: child(1))
        assert rc == 0, f"round {i}: child status {rc}"
    assert check_reads(m, 1, BIG) == 0 and m.next_offset(2) == 0

elif name == "no_leftovers":
    # After a fork both processes open, use and close new storages (the at-fork registry
    # lock is free again), fork again, and the parent's storages keep working.
    d = tempfile.mkdtemp()
    w = km.Storage(d)
    w.append_batch(1, [b"a"])
    m = km.MemoryStorage()
    m.append_batch(1, [b"m"])
    r = km.Storage(d, read_only=True)
    def child():
        other = tempfile.mkdtemp()
        with km.Storage(other) as own:  # its own writer on another directory
            own.append_batch(7, [b"x"] * 3)
            own.append_batch(7, BIG[:8])
            if own.verify(7)[0] != 11:
                return 60
        with km.Storage(other, read_only=True) as check:
            if check.read_from(7, 3) != BIG[:8]:
                return 61
        if r.read_from(1, 0, 1) != [b"a"] or m.read_from(1) != [b"m"]:
            return 62
        new_mem = km.MemoryStorage()
        new_mem.append_batch(1, [b"n"])
        return fork_child(lambda: 0 if new_mem.read_from(1) == [b"n"] else 63)
    # Storages open and close on another thread while the forks happen.
    def work():
        t = km.MemoryStorage()
        t.append_batch(1, [b"t"] * 10)
        t.read_from(1)
        t.close()
    with Busy(work):
        for i in range(rounds):
            pause()
            rc = fork_child(child)
            assert rc == 0, f"round {i}: child status {rc}"
            assert w.append_batch(1, [b"b"], fsync=False) == i + 2
    assert r.next_offset(1) == rounds + 1 and w.verify(1)[0] == rounds + 1
    import kimberlite._fork as f
    assert not f._held and not f._lock.locked()
    w.close(); r.close(); m.close()

else:
    raise SystemExit(f"unknown scenario {name}")
print(f"{name}: {rounds} rounds ok", flush=True)
"""


def test_read_only_storage_in_children_forked_during_long_reads():
    run_scenario("read_only")


@pytest.mark.slow
def test_memory_storage_in_children_forked_during_reads_and_appends():
    run_scenario("memory")


def test_inherited_writer_refuses_in_children_forked_during_appends():
    run_scenario("writer")


def test_child_forked_from_a_writer_never_keeps_the_lock():
    run_scenario("writer_lock", rounds=10)


@pytest.mark.slow
def test_hashing_thread_after_fork_in_children_and_grandchildren():
    run_scenario("hasher", rounds=6)


def test_no_leftovers_after_fork():
    run_scenario("no_leftovers", rounds=15)


KILLED_PARENT = r"""
import os, sys, time
import kimberlite as km
d = sys.argv[1]
w = km.Storage(d)
w.append_batch(1, [b"parent"])
r, wr = os.pipe()
pid = os.fork()
if pid == 0:  # lives on, doing nothing, after its parent is killed
    os.write(wr, b"%d\n" % os.getpid())
    time.sleep(60)
    os._exit(0)
print(os.read(r, 32).decode().strip(), flush=True)
time.sleep(60)
"""


def test_lock_dies_with_a_killed_writer_even_while_its_child_lives(tmp_path):
    """SIGKILL the writer process: its forked child, still alive, does not keep the lock."""
    import signal
    import kimberlite as km
    d = tmp_path / "d"
    p = subprocess.Popen([sys.executable, "-c", KILLED_PARENT, str(d)], stdout=subprocess.PIPE,
                         text=True, env=child_env(), preexec_fn=_limit_child)
    child = None
    try:
        child = int(p.stdout.readline())
        with pytest.raises(km.LockedError):
            km.Storage(d)
        p.kill()
        p.wait(TIMEOUT)
        os.kill(child, 0)  # the child is alive
        with km.Storage(d) as s:  # and the directory is free
            assert s.append_batch(1, [b"next"]) == 2
    finally:
        p.kill()
        p.wait(TIMEOUT)
        if child is not None:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


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
