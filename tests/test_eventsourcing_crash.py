"""Crash atomicity of kimberlite.eventsourcing: child processes SIGKILLed at random moments
during multi-aggregate inserts with tracking records. After each kill every call is all or
nothing, notification ids are gapless, tracking matches the last whole call, and the index
agrees with the records (decoded here independently of it)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("eventsourcing", reason="pip install 'kimberlite-storage[eventsourcing]'")

from eventsourcing.persistence import Tracking  # noqa: E402

import kimberlite  # noqa: E402
import kimberlite.testing  # noqa: E402
from kimberlite.eventsourcing import KimberliteFactory, decode_record  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from helpers.es_calls import AGGS, call_events, call_shape, env  # noqa: E402

CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, sys.argv[1] + "/tests")
    from helpers.es_calls import AGGS, call_events, env
    from kimberlite.eventsourcing import KimberliteFactory
    from eventsourcing.persistence import Tracking
    path, g, fsync = sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
    rec = KimberliteFactory(env(path, fsync)).process_recorder()
    versions = {}
    for a in AGGS:
        last = rec.select_events(a, desc=True, limit=1)
        versions[a] = last[0].originator_version if last else 0
    out = sys.stdout
    out.write("ready\\n"); out.flush()
    while True:
        events = call_events(g, versions, True)
        out.write(f"S {g}\\n"); out.flush()
        rec.insert_events(events, tracking=Tracking("upstream", g))
        out.write(f"A {g}\\n"); out.flush()
        g += 1
""")


def check_store(path, acked, started, fsync):
    """The store after a kill: returns the number of the last call stored."""
    # Independent of the index: decode every record of the stream.
    with kimberlite.Storage(path, max_segment_size=32768) as s:
        records = [r.payload for r in s.iter_from(1, records=True)]
    calls = []
    next_id = 1
    for payload in records:
        first_id, tracking, events = decode_record(payload)
        assert first_id == next_id  # gapless ids, in record order
        next_id += len(events)
        g = tracking.notification_id
        assert {e.state.split(b"|")[0] for e in events} == {str(g).encode()}
        assert sorted((e.originator_id, 1) for e in events) == sorted(
            (a, 1) for a, n in call_shape(g) for _ in range(n))  # whole: every event of g
        calls.append((g, events))
    gs = [g for g, _ in calls]
    assert gs == list(range(1, len(gs) + 1))
    last = gs[-1] if gs else 0
    assert acked <= last <= started
    # Through the recorder (the index, checked and completed by the open)
    f = KimberliteFactory(env(path, fsync))
    rec = f.process_recorder()
    assert rec.max_tracking_id("upstream") == (last or None)
    assert rec.max_notification_id() == (next_id - 1 or None)
    notes = rec.select_notifications(None, 10**6)
    flat = [e for _, events in calls for e in events]
    assert [(n.originator_id, n.originator_version, n.state) for n in notes] == [
        (e.originator_id, e.originator_version, e.state) for e in flat]
    assert [n.id for n in notes] == list(range(1, len(flat) + 1))
    for a in AGGS:
        mine = [e for e in flat if e.originator_id == a]
        assert rec.select_events(a) == mine
        assert [e.originator_version for e in mine] == list(range(1, len(mine) + 1))
    f.close()
    return last


def run_rounds(tmp_path, rounds, seed):
    path = str(tmp_path / "data")
    rng = random.Random(seed)
    last = 0
    torn = 0
    for r in range(rounds):
        fsync = r % 2 == 1
        p = subprocess.Popen([sys.executable, "-c", CHILD, ROOT, path, str(last + 1),
                              "1" if fsync else "0"],
                             stdout=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.12))
            os.kill(p.pid, signal.SIGKILL)
            out = p.stdout.read()
        finally:
            p.kill()
            p.wait()
        lines = out.split()
        acked = max([int(v) for k, v in zip(lines[::2], lines[1::2]) if k == "A"] or [last])
        started = max([int(v) for k, v in zip(lines[::2], lines[1::2]) if k == "S"] or [last])
        before = sum(len(files) for _, _, files in os.walk(path)
                     if any("torn" in x for x in files))
        last = check_store(path, acked, started, fsync)
        after = sum(1 for _, _, files in os.walk(path) for x in files if "torn" in x)
        torn += after > before
    return last, torn


@pytest.mark.slow
def test_sigkill_during_multi_aggregate_inserts(tmp_path):
    last, _ = run_rounds(tmp_path, int(os.environ.get("KIMBERLITE_ES_CRASH_ROUNDS", "10")),
                         seed=1)
    assert last > 0


@pytest.mark.slow
def test_sigkill_sweep(tmp_path):
    for i in range(6):  # 60 kills, a fresh directory every 10 (checks read whole stores)
        assert run_rounds(tmp_path / str(i), 10, seed=2 + i)[0] > 0


@pytest.mark.parametrize("cut", ["1", "header", "half", "all-but-1"])
def test_torn_last_record_loses_the_whole_call(tmp_path, cut):
    # A crash in the middle of the append: the record reached the file only in part.
    path = str(tmp_path / "data")
    f = KimberliteFactory(env(path, False))
    rec = f.process_recorder()
    versions = {}
    for g in (1, 2):
        rec.insert_events(call_events(g, versions, False), tracking=Tracking("upstream", g))
    f.close()
    with kimberlite.Storage(path) as s:
        size = len(s.read_records(1, 1)[0].payload) + kimberlite.RECORD_OVERHEAD
        assert s.segment_count(1) == 1
    nbytes = {"1": 1, "header": size - 44, "half": size // 2, "all-but-1": size - 1}[cut]
    kimberlite.testing.tear_tail(path, 1, nbytes)
    assert check_store(path, 1, 2, False) == 1
    # the next call takes the lost call's place; ids stay gapless
    f = KimberliteFactory(env(path, False))
    rec = f.process_recorder()
    n1 = rec.max_notification_id()
    versions = {}
    for a in AGGS:
        last = rec.select_events(a, desc=True, limit=1)
        versions[a] = last[0].originator_version if last else 0
    ids = rec.insert_events(call_events(2, versions, False), tracking=Tracking("upstream", 2))
    assert ids[0] == n1 + 1
    f.close()
    assert check_store(path, 2, 2, False) == 2
