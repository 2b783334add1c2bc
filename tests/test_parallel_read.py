"""The parallel reader (issue 11): reads and verify checked on a pool of threads report
exactly what the inline reader reports.

Small stores are forced onto the pool's path with the private tuning hook
(``_set_read_tuning``: every read uses the pool, chunks of a few records, threads claiming
one to three records at a time, and with ``helpers_only`` the calling thread leaves every
record to the pool's threads). Each case builds the same stream twice, once read inline
(``read_threads=1``) and once with a pool of 2 to 4 threads, damages both the same way
(bit rot: a CRC failure; tampering: a valid record with another payload, a broken link; a
valid record with another offset) at
the first record, at a chunk or block boundary, at a segment boundary or at the last
record, and runs the same sequence of reads on both: results, exceptions (class, message,
offset, hashes) and the records an iterator yields before it fails must be identical.
"""
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import kimberlite as km
import kimberlite.testing as kt
from helpers import child_env

PAYLOAD = 40               # every event is 40 bytes: a record is 88 bytes
RECORD = PAYLOAD + 48
N = 48                     # events in the stream
SEGMENT = 12 * RECORD + 1  # 13 records per segment (sealed at or above the size)
PER_SEG = 13


def events():
    return [bytes([i % 251]) * PAYLOAD for i in range(N)]


def build(threads, chunk_records, block, helpers_only):
    s = km.MemoryStorage(max_segment_size=SEGMENT, read_threads=threads)
    for ev in events():  # one per batch: segments of exactly PER_SEG records
        s.append_batch(1, [ev])
    if threads > 1:
        s._set_read_tuning(min_bytes=1, chunk_bytes=chunk_records * RECORD, block=block,
                           helpers_only=helpers_only)
    return s


def damage(s, kind, offset):
    if kind == "flip":
        kt.flip_bit(s, 1, offset, byte=44 + PAYLOAD // 2, bit=3)
    elif kind == "tamper":
        kt.replace_payload(s, 1, offset, b"X" * PAYLOAD)
    elif kind == "offset":  # a whole record with a valid CRC but another offset
        segs = kt._Segments(s, 1)
        loc = segs.find(offset)
        data = segs.get(loc.seg)
        _, prev_hash, _ = km._core.decode_record_header(data, loc.pos)
        record = km._core.encode_record(offset + 1000, prev_hash, data[loc.pos + 44:loc.pos + 44 + PAYLOAD])
        segs.put(loc.seg, data[:loc.pos] + record + data[loc.pos + loc.size:])


def outcome(fn):
    """What a call gives: ("ok", value) or ("raise", class, message, offset, hashes)."""
    try:
        return ("ok", fn())
    except km.StorageError as e:
        return ("raise", type(e).__name__, str(e), getattr(e, "offset", None),
                getattr(e, "expected", None), getattr(e, "actual", None))


def iterated(s, chunk):
    """The events iter_from yields before it ends or fails, and how it ends."""
    got = []
    def run():
        for ev in s.iter_from(1, 0, chunk_bytes=chunk):
            got.append(ev)
        return len(got)
    end = outcome(run)
    return got, end


def script(s):
    """The same sequence of calls on either storage; the stream's state carries over."""
    out = []
    out.append(outcome(lambda: s.read_from(1, 5)))
    out.append(outcome(lambda: s.read_records(1, 0, max_bytes=20 * PAYLOAD)))
    out.append(iterated(s, 7 * PAYLOAD))
    out.append(outcome(lambda: s.verify(1)))
    out.append(outcome(lambda: s.read_from(1)))
    out.append(outcome(lambda: s.next_offset(1)))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offset=st.integers(0, N - 1), kind=st.sampled_from(["flip", "tamper", "offset"]),
       threads=st.integers(2, 4), chunk_records=st.integers(1, 5), block=st.integers(1, 3),
       helpers_only=st.booleans())
@example(offset=0, kind="flip", threads=2, chunk_records=3, block=1, helpers_only=True)
@example(offset=0, kind="tamper", threads=3, chunk_records=3, block=1, helpers_only=True)
@example(offset=3, kind="tamper", threads=2, chunk_records=3, block=1, helpers_only=True)  # first of chunk 2
@example(offset=2, kind="flip", threads=4, chunk_records=3, block=2, helpers_only=False)   # last of chunk 1
@example(offset=PER_SEG, kind="tamper", threads=2, chunk_records=4, block=1, helpers_only=True)
@example(offset=PER_SEG - 1, kind="flip", threads=3, chunk_records=4, block=3, helpers_only=True)
@example(offset=N - 1, kind="tamper", threads=2, chunk_records=2, block=1, helpers_only=True)
@example(offset=N - 1, kind="flip", threads=4, chunk_records=2, block=1, helpers_only=False)
@example(offset=2 * PER_SEG, kind="offset", threads=3, chunk_records=5, block=2, helpers_only=True)
@example(offset=3 * PER_SEG - 1, kind="tamper", threads=2, chunk_records=1, block=1, helpers_only=True)
def test_damage_is_reported_as_the_inline_reader_reports_it(offset, kind, threads,
                                                              chunk_records, block, helpers_only):
    inline = build(1, chunk_records, block, helpers_only)
    pooled = build(threads, chunk_records, block, helpers_only)
    try:
        damage(inline, kind, offset)
        damage(pooled, kind, offset)
        assert inline.segment_count(1) == pooled.segment_count(1) == 4
        assert script(pooled) == script(inline)
    finally:
        inline.close()
        pooled.close()


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_the_pool_checks_the_records_when_forced_and_results_match(threads):
    inline = build(1, 3, 1, False)
    pooled = build(threads, 3, 1, True)
    try:
        assert pooled.read_threads == threads
        assert pooled.read_from(1) == inline.read_from(1) == events()
        assert pooled.verify(1) == inline.verify(1)
        helped, in_force = pooled._read_stats()
        # helpers_only: every record of the read (and of verify's segments) went to the pool
        assert helped >= 2 * N
        assert in_force == threads
        assert inline._read_stats() == (0, 1)
    finally:
        inline.close()
        pooled.close()


def test_clean_reads_match_across_pool_sizes_and_tunings():
    ref = build(1, 1, 1, False)
    want = ref.read_records(1)
    for threads in (2, 3, 4):
        for chunk_records, block in ((1, 1), (2, 3), (7, 2)):
            s = build(threads, chunk_records, block, False)
            assert s.read_records(1) == want
            assert [r.offset for r in s.read_records(1, 17, max_bytes=9 * PAYLOAD)] == \
                list(range(17, 26))
            s.close()
    ref.close()


# ---------------------------------------------------------------- the option

def test_read_threads_option_is_checked():
    for bad in (0, -1, 65, 10**30):
        with pytest.raises(ValueError, match="read_threads must be an int from 1 to 64"):
            km.MemoryStorage(read_threads=bad)
    with pytest.raises(TypeError):
        km.MemoryStorage(read_threads="2")
    assert km.MemoryStorage(read_threads=None).read_threads >= 1
    assert km.MemoryStorage(read_threads=64).read_threads == 64


def test_read_threads_from_the_environment(tmp_path):
    code = textwrap.dedent("""
        import kimberlite as km, os, sys
        try:
            s = km.Storage(sys.argv[1])
        except ValueError as e:
            print("ValueError:", e)
        else:
            print(s.read_threads, km.Storage(sys.argv[1] + "2", read_threads=2).read_threads)
    """)

    def run(value):
        env = child_env()
        env.pop("KIMBERLITE_READ_THREADS", None)
        if value is not None:
            env["KIMBERLITE_READ_THREADS"] = value
        p = subprocess.run([sys.executable, "-c", code, str(tmp_path / value.strip() if value
                                                             else tmp_path / "none")],
                           capture_output=True, text=True, timeout=60, env=env)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    assert run("3") == "3 2"  # the option wins over the variable
    assert run("1") == "1 2"
    auto = run(None).split()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    assert auto == [str(min(cpus, 8)), "2"]
    for bad in ("0", "x", "65", "-2"):
        out = run(bad)
        assert out.startswith("ValueError:") and "KIMBERLITE_READ_THREADS" in out, out
        assert "from 1 to 64" in out


# ---------------------------------------------------------------- threads and fork()

def test_fork_with_a_live_pool_and_no_thread_outlives_close(tmp_path):
    """A parent with pool threads running forks: the child reads and verifies (starting its
    own pool), the parent goes on; after close() the process has no thread of the pool."""
    code = textwrap.dedent(r"""
        import os, sys, signal
        import kimberlite as km

        def threads():
            return len(os.listdir("/proc/self/task"))

        path = sys.argv[1]
        base = threads()
        w = km.Storage(path, max_segment_size=4096)
        evs = [bytes([i % 256]) * (i % 90) for i in range(3000)]
        w.append_batch(7, evs, fsync=False)
        w.close()
        base = threads()
        s = km.Storage(path, read_only=True, read_threads=4)
        s._set_read_tuning(min_bytes=1, chunk_bytes=2000, block=2, helpers_only=True)
        assert s.read_from(7) == evs
        assert s._read_stats()[0] >= len(evs)
        assert threads() == base + 3, (threads(), base)   # the pool is alive
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                signal.alarm(30)
                ok = (s.read_from(7) == evs and s.verify(7)[0] == len(evs)
                      and s._read_stats()[0] >= len(evs) and threads() == 4)
                s.close()
                ok = ok and threads() == 1
                os._exit(0 if ok else 3)
            _, status = os.waitpid(pid, 0)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
            assert s.read_from(7, 100) == evs[100:]
        s.close()
        assert threads() == base, (threads(), base)
        print("ok")
    """)
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")], capture_output=True,
                       text=True, timeout=120, env=child_env())
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == "ok"


# ---------------------------------------------------------------- memory

BUILD_GIB = r"""
import sys, kimberlite as km
s = km.Storage(sys.argv[1])
ev = bytes(range(256)) * 256                      # 64 KiB
for i in range(64):                               # 64 batches of 256 events: 1 GiB
    s.append_batch(1, [ev] * 256, fsync=False)
s.close()
"""

READ_GIB = r"""
import sys, kimberlite as km
s = km.Storage(sys.argv[1], read_only=True, read_threads=int(sys.argv[2]))
n = s.next_offset(1)
list(s.read_from(1, n - 2))                        # loads the stream; starts nothing big
# the resident size now (not the peak so far, which an import may have raised); the peak
# is reset to it where the kernel allows (clear_refs 5), else it only overstates the growth
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
with open("/proc/self/status") as f:
    base = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
count = total = 0
for ev in s.iter_from(1):
    count += 1
    total += len(ev)
# VmHWM, this process's own peak: ru_maxrss carries the parent's peak across fork+exec
# (pytest's RSS, hundreds of MiB late in a run, would be read as growth).
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(count, total, (peak - base) * 1024)
"""


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 3])
def test_iterating_a_gib_stream_keeps_peak_rss_growth_under_32_mib(tmp_path, threads):
    """Issue 11: peak RSS growth reading 1 GiB with iter_from < 32 MiB (VmHWM at the
    end against the resident size before), inline and with a pool. No timing is asserted."""
    path = str(tmp_path / "gib")
    if not os.path.exists(path):
        p = subprocess.run([sys.executable, "-c", BUILD_GIB, path], capture_output=True,
                           text=True, timeout=600, env=child_env())
        assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, "-c", READ_GIB, path, str(threads)],
                       capture_output=True, text=True, timeout=600, env=child_env())
    assert p.returncode == 0, p.stderr
    count, total, growth = map(int, p.stdout.split())
    assert (count, total) == (64 * 256, 1 << 30)
    assert growth < 32 << 20, f"peak RSS grew by {growth / (1 << 20):.1f} MiB"
