"""Crashes with real processes and real SIGKILL (SPEC §3, "After a crash").

A child process appends batches with fsync=True and reports, through a pipe, each batch it
starts ("B sid start n") and each one acknowledged ("A sid next"). The parent kills it with
SIGKILL, then checks with a fresh Storage that:
  - every acknowledged batch is there, whole, with the right content at every offset;
  - of the one unacknowledged batch, at most a prefix of whole records survives;
  - the chain verifies from genesis (and its head is the one recomputed independently);
  - any torn residue (bytes after the last whole record, read with the independent codec
    before reopening) is kept, byte for byte, in a quarantine file;
  - further appends continue the chain (the next round's child appends to the same data).

Two ways to kill: at random moments (many rounds, small segments so rotations and index
writes are frequent), and deterministically at every file operation of a scenario with a
rotation, a new stream and index writes (the fault plan's crash mode: the child SIGKILLs
itself at call k, for writes optionally after writing half the bytes — a torn write).
"""
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

import kimberlite as km
from helpers.faults import check_stream, last_segment_residue, payloads, torn_contents
from helpers import child_env

TESTS = os.path.dirname(os.path.abspath(__file__))
SEG = 2048          # small segments: a rotation (and an index write) every few batches
ROUNDS = int(os.environ.get("KIMBERLITE_CRASH_ROUNDS", "60"))

_CHILD = r"""
import os, random, sys
sys.path.insert(0, sys.argv[2])
import kimberlite as km
from helpers.faults import payloads
d, seed, mode = sys.argv[1], int(sys.argv[3]), sys.argv[4]
rng = random.Random(seed)
s = km.Storage(d, max_segment_size=int(sys.argv[5]))
out = sys.stdout

def append(sid, n):
    start = s.next_offset(sid)
    out.write("B %d %d %d\n" % (sid, start, n)); out.flush()
    nxt = s.append_batch(sid, payloads(sid, start, n), expected_offset=start, fsync=True)
    out.write("A %d %d\n" % (sid, nxt)); out.flush()

if mode == "loop":
    out.write("ready\n"); out.flush()
    while True:
        append(rng.choice((1, 2)), rng.randint(1, 6))
        if rng.random() < 0.1:
            s.flush_indexes()
else:   # "crash OPS K SHORT": SIGKILL at file operation K of the scenario
    ops, k, short = sys.argv[6], int(sys.argv[7]), sys.argv[8] == "1"
    if k:
        s._set_fault(ops, k, crash=True, short=short)
    out.write("ready\n"); out.flush()
    for sid, n in ((1, 2), (2, 2), (1, 5), (1, 1), (3, 1)):
        append(sid, n)
        if sid == 2:
            s.flush_indexes()
    s.close()
    out.write("done\n"); out.flush()
"""


def _parse(lines):
    """acked[sid] = last acknowledged next offset; inflight[sid] = end of the started batch."""
    acked, inflight = {}, {}
    for line in lines:
        parts = line.split()
        if parts and parts[0] == "B":
            sid, start, n = map(int, parts[1:])
            acked.setdefault(sid, start)
            inflight[sid] = start + n
        elif parts and parts[0] == "A":
            sid, nxt = map(int, parts[1:])
            acked[sid] = nxt
            inflight[sid] = nxt
    return acked, inflight


def _check_after_crash(d, lines, before):
    """Reopen d after a kill and check every promise; returns {sid: records now}."""
    acked, inflight = _parse(lines)
    sids = set(before) | set(acked)
    residues = {sid: last_segment_residue(d, sid) for sid in sids if os.path.isdir(d / str(sid))}
    torn_before = {sid: torn_contents(d, sid) for sid in residues}
    now = {}
    with km.Storage(d, max_segment_size=SEG) as s:
        for sid in sorted(sids):
            lo = acked.get(sid, before.get(sid, 0))
            hi = inflight.get(sid, lo)
            n = s.next_offset(sid)
            assert lo <= n <= hi, f"stream {sid}: {n} records, acknowledged {lo}, started {hi}"
            check_stream(s, sid, n)
            now[sid] = n
            name, valid_end, residue = residues.get(sid, (None, 0, b""))
            if residue:
                new = {k: v for k, v in torn_contents(d, sid).items()
                       if k not in torn_before[sid]}
                assert list(new.values()) == [residue], (sid, name, len(residue), new.keys())
                assert os.path.getsize(d / str(sid) / name) == valid_end
            elif sid in residues:
                assert torn_contents(d, sid) == torn_before[sid]
    return now, any(r[2] for r in residues.values())


def _spawn(d, seed, mode, *extra):
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(d), TESTS, str(seed), mode, str(SEG), *map(str, extra)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())


def _finish(p):
    # Not communicate(): it reads the raw descriptors and would lose what readline()
    # already buffered. The child is dead or about to exit, so reading in turn is safe.
    out = p.stdout.read()
    err = p.stderr.read()
    p.wait(60)
    return out, err


@pytest.mark.slow
def test_sigkill_at_random_moments(tmp_path):
    d = tmp_path / "data"
    rng = random.Random(20261127)
    model = {}
    acked_batches = 0
    for rnd in range(ROUNDS):
        p = _spawn(d, rng.randrange(1 << 30), "loop")
        try:
            first = p.stdout.readline()
            assert first.strip() == "ready", first + p.stderr.read()
            # Let 0-3 batches be acknowledged first, then kill at a random moment: the
            # count, not a fixed sleep, keeps the test meaningful on a loaded machine.
            seen, want, t0 = [], rng.randrange(4), time.monotonic()
            while sum(x.startswith("A ") for x in seen) < want and time.monotonic() - t0 < 30:
                line = p.stdout.readline()
                if not line:
                    break
                seen.append(line)
            time.sleep(rng.uniform(0.0, 0.06))
            os.kill(p.pid, signal.SIGKILL)
            out, err = _finish(p)
            out = "".join(seen) + out
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode == -signal.SIGKILL, err
        lines = out.splitlines()
        acked_batches += sum(1 for x in lines if x.startswith("A "))
        model, _ = _check_after_crash(d, lines, model)
    assert acked_batches > ROUNDS, "the child hardly appended anything before the kills"
    with km.Storage(d, max_segment_size=SEG) as s:
        assert s.segment_count(1) > 3 and s.segment_count(2) > 3      # rotations happened
        for sid in (1, 2):
            n = s.next_offset(sid)
            assert s.append_batch(sid, payloads(sid, n, 3), expected_offset=n) == n + 3
            check_stream(s, sid, n + 3)


def _template(tmp_path, torn=False):
    d = tmp_path / ("template-torn" if torn else "template")
    with km.Storage(d, max_segment_size=SEG) as s:
        s.append_batch(1, payloads(1, 0, 6))
        s.append_batch(3, payloads(3, 0, 2))
    if torn:   # a torn tail for the first open to quarantine
        from helpers import codec
        seg = d / "1" / "segment_000000.log"
        tail = codec.encode_records(6, codec.head_hash(payloads(1, 0, 6)), payloads(1, 6, 1))[0]
        with open(seg, "ab") as f:
            f.write(tail[:len(tail) // 2 + 3])
    return d


SWEEPS = [
    # (ops counted, torn write?, template with a torn tail?)
    ("open,write,sync,rename,truncate,mkdir", False, False),
    ("write", True, False),
    ("open,write,sync,rename,truncate,mkdir", False, True),
]


@pytest.mark.slow
@pytest.mark.parametrize("ops,short,torn", SWEEPS, ids=["every-call", "torn-writes", "recovery"])
def test_sigkill_at_every_file_operation(tmp_path, ops, short, torn):
    template = _template(tmp_path, torn)
    before = {1: 6, 3: 2}
    # Count the scenario's calls: run it in process with a counting plan.
    d = tmp_path / "count"
    shutil.copytree(template, d)
    s = km.Storage(d, max_segment_size=SEG)
    s._set_fault(ops, 0)
    for sid, n in ((1, 2), (2, 2), (1, 5), (1, 1), (3, 1)):
        start = s.next_offset(sid)
        s.append_batch(sid, payloads(sid, start, n), fsync=True)
        if sid == 2:
            s.flush_indexes()
    n_calls = s._io_calls()[0]
    s.close()
    assert n_calls >= (6 if short else 20), n_calls
    with_residue = 0
    for k in range(1, n_calls + 1):
        d = tmp_path / f"k{k}"
        shutil.copytree(template, d)
        p = _spawn(d, 0, "crash", ops, k, int(short))
        out, err = _finish(p)
        assert p.returncode == -signal.SIGKILL, f"call {k} of {n_calls}: no crash\n{err}"
        model, residue = _check_after_crash(d, out.splitlines(), before)
        with_residue += residue
        with km.Storage(d, max_segment_size=SEG) as s:   # the chain continues
            for sid in (1, 2, 3):
                n = s.next_offset(sid)
                assert s.append_batch(sid, payloads(sid, n, 2)) == n + 2
                check_stream(s, sid, n + 2)
        shutil.rmtree(d)
    if short:      # most writes are segment writes: cut in half, they leave torn residue
        assert with_residue >= 3, (with_residue, n_calls)
    if torn:       # the template's torn tail is quarantined whichever call the crash hits
        assert with_residue >= 1
