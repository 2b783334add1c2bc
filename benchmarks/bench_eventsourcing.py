"""kimberlite.eventsourcing against the eventsourcing library's own SQLite module, one run.

    python benchmarks/bench_eventsourcing.py                 # 1M-event reopen, 3 repeats
    python benchmarks/bench_eventsourcing.py --events 200000 --repeat 5

Rows (median of --repeat runs, each in a fresh directory):
- insert 1 / insert 10: events per second through ``insert_events`` with 1 or 10 events of
  one new aggregate per call, durable per call (kimberlite ``KIMBERLITE_FSYNC=y``; SQLite in
  WAL mode with its default ``synchronous``), and without a sync per call for kimberlite
  (``fsync=n``: survives a killed process, not a power cut);
- "no index": kimberlite's encoding and ``append_batch`` alone (what ``insert_events`` does
  minus the index and the checks), the baseline for the index's cost on appends, measured
  interleaved with the indexed inserts in alternating slices (``bench_insert_pair``); both
  timings include closing the store, so the index entries written behind the inserts are
  counted;
- "recorder work, no index": the append with what a recorder does around it even without
  an index (a lock, ``expected_offset``, the notification ids returned), for context;
- select_events: events per second reading whole aggregates of 10 events, in random order;
- select_notifications: events per second reading the application sequence in pages of 500;
- reopen + select: milliseconds to construct the factory and the application recorder on a
  store of --events events (aggregates of 10) and select one aggregate's events.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from eventsourcing.persistence import InfrastructureFactory, StoredEvent  # noqa: E402

from kimberlite.eventsourcing import encode_record  # noqa: E402

STATE = b'{"amount":"10.00","timestamp":"2026-11-29T18:00:00+00:00","note":"x"}'
TOPIC = "bank_accounts.domain:BankAccount.TransactionAppended"


def events_of(agg, n, start=1):
    return [StoredEvent(originator_id=agg, originator_version=v, topic=TOPIC, state=STATE)
            for v in range(start, start + n)]


def make(kind, tmp, fsync=True):
    if kind == "sqlite":
        env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "CREATE_TABLE": "y",
               "SQLITE_DBNAME": os.path.join(tmp, "db.sqlite")}
    else:
        env = {"PERSISTENCE_MODULE": "kimberlite.eventsourcing",
               "KIMBERLITE_PATH": os.path.join(tmp, "data"),
               "KIMBERLITE_FSYNC": "y" if fsync else "n"}
    f = InfrastructureFactory.construct(env)
    return f, f.application_recorder()


def bench_insert(kind, per_call, calls, fsync=True):
    tmp = tempfile.mkdtemp(prefix="bench-es-")
    try:
        f, rec = make(kind, tmp, fsync)
        batches = [events_of(uuid.uuid4(), per_call) for _ in range(calls)]
        t = time.perf_counter()
        for b in batches:
            rec.insert_events(b)
        f.close()  # the index entries still buffered are written here: part of the cost
        dt = time.perf_counter() - t
        return calls * per_call / dt
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_insert_pair(per_call, calls, fsync, slices=20):
    """(kimberlite.eventsourcing, no index, recorder work without the index) events/s,
    measured interleaved.

    The three are open at once and the calls are made in `slices` slices, taking turns
    (in a rotating order), each slice timed, then the closes: they see the same machine
    over the same seconds, which on a shared machine matters more than anything else
    (measuring one whole run after the other gave ratios 30 points apart from one run to
    the next). The third is what a recorder does around the append even without an index
    (a lock, the offset and notification ids kept, `expected_offset`, the ids returned):
    informative only; the target is against the second.
    """
    import threading

    import kimberlite
    tmp = tempfile.mkdtemp(prefix="bench-es-")
    try:
        f, rec = make("kimberlite", tmp, fsync)
        plain = kimberlite.Storage(os.path.join(tmp, "plain"))
        bare = kimberlite.Storage(os.path.join(tmp, "bare"))
        batches = [[events_of(uuid.uuid4(), per_call) for _ in range(calls)]
                   for _ in range(3)]
        state = {"plain": 1, "bare": (1, 0)}
        lock = threading.RLock()

        def run_mine(bs):
            for b in bs:
                rec.insert_events(b)

        def run_plain(bs):
            next_id = state["plain"]
            for b in bs:
                plain.append_batch(1, [encode_record(next_id, b)], fsync=fsync)
                next_id += len(b)
            state["plain"] = next_id

        def run_bare(bs):
            next_id, offset = state["bare"]
            for b in bs:
                with lock:
                    bare.append_batch(1, [encode_record(next_id, b)], expected_offset=offset,
                                      fsync=fsync)
                    n = len(b)
                    ids = list(range(next_id, next_id + n))
                    next_id += n
                    offset += 1
                assert ids
            state["bare"] = (next_id, offset)

        runs = (run_mine, run_plain, run_bare)
        spent = [0.0, 0.0, 0.0]
        step = max(1, calls // slices)
        for k, i in enumerate(range(0, calls, step)):
            for j in range(3):
                who = (j + k) % 3
                t = time.perf_counter()
                runs[who](batches[who][i:i + step])
                spent[who] += time.perf_counter() - t
        for who, closing in enumerate((f.close, plain.close, bare.close)):
            t = time.perf_counter()
            closing()  # (the index entries still buffered are written here)
            spent[who] += time.perf_counter() - t
        return tuple(calls * per_call / x for x in spent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_reads(kind, aggregates):
    tmp = tempfile.mkdtemp(prefix="bench-es-")
    try:
        f, rec = make(kind, tmp, fsync=False)
        ids = [uuid.uuid4() for _ in range(aggregates)]
        for a in ids:  # one aggregate of 10 events per call, as Application.save() does
            rec.insert_events(events_of(a, 10))
        random.Random(1).shuffle(ids)
        t = time.perf_counter()
        for a in ids:
            assert len(rec.select_events(a)) == 10
        sel = aggregates * 10 / (time.perf_counter() - t)
        t = time.perf_counter()
        n, start = 0, 0
        while True:
            page = rec.select_notifications(start, 500, inclusive_of_start=False)
            if not page:
                break
            n += len(page)
            start = page[-1].id
        assert n == aggregates * 10
        notes = n / (time.perf_counter() - t)
        f.close()
        return sel, notes
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_big(kind, tmp, events):
    f, rec = make(kind, tmp, fsync=False)
    probe = None
    per_call = 10 if kind == "kimberlite" else 1000  # SQLite: fewer commits (each syncs)
    for i in range(0, events, per_call):
        batch = []
        for _ in range(per_call // 10):
            a = uuid.uuid4()
            batch += events_of(a, 10)
        if i == events // 2:
            probe = batch[0].originator_id
        rec.insert_events(batch)
    if kind == "kimberlite":
        keys, size = index_memory(f.store)
        print(f"  kimberlite: in-process index after writing {events:,} events: "
              f"{keys:,} keys, {size / 1e6:.1f} MB", flush=True)
    f.close()
    return probe


def keys_memory(keys):
    """Bytes held by a stream's in-memory key map (dict, keys, version sets)."""
    total = sys.getsizeof(keys)
    for k, v in keys.items():
        total += sys.getsizeof(k) + (0 if type(v) is int and v <= 256 else sys.getsizeof(v))
    return total


def index_memory(store):
    """(keys known, bytes) of kimberlite.eventsourcing's in-process index of a store: the
    key map of the duplicate checks and the index blocks held in memory."""
    keys = sum(len(st.keys) for st in store.streams.values())
    size = sum(keys_memory(st.keys) for st in store.streams.values())
    blocks = sum(len(r.keys) + r.cols.itemsize * len(r.cols) + r.ids.itemsize * len(r.ids)
                 for st in store.streams.values() for r in st.runs)
    return keys, size + blocks


def bench_after_reopen(tmp, inserts=300):
    """ms for the first `inserts` calls after a reopen (the key map is loaded on the way)."""
    f, rec = make("kimberlite", tmp, fsync=False)
    rec.max_notification_id()
    batches = [events_of(uuid.uuid4(), 1) for _ in range(inserts)]
    t = time.perf_counter()
    for b in batches:
        rec.insert_events(b)
    ms = (time.perf_counter() - t) * 1000
    keys, size = index_memory(f.store)
    f.close()
    return ms, keys, size


def bench_reopen(kind, tmp, probe, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f, rec = make(kind, tmp, fsync=False)
        got = rec.select_events(probe)
        times.append((time.perf_counter() - t) * 1000)
        assert len(got) == 10
        f.close()
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--parts", default="insert,read,reopen",
                    help="comma-separated subset of insert, read, reopen")
    args = ap.parse_args()
    med = statistics.median
    r = args.repeat
    rows = []

    def row(name, k, s):
        rows.append((name, k, s))
        print(f"{name:<44} {k:>14} {s:>14}", flush=True)

    print(f"{'measure (median of ' + str(r) + ')':<44} {'kimberlite':>14} {'sqlite':>14}")
    parts = set(args.parts.split(","))
    for per in (1, 10) if "insert" in parts else ():
        calls = args.calls if per == 1 else args.calls // 2
        # Each repeat measures the pair interleaved (bench_insert_pair), so that both see
        # the same machine (the ratio is the median of the per-repeat ratios).
        durable = [bench_insert_pair(per, calls, True) + (bench_insert("sqlite", per, calls),)
                   for _ in range(r)]  # (kimberlite, no index, recorder work, sqlite)
        # Enough calls that the index is written several times (every 1,000 records).
        fast = [bench_insert_pair(per, calls * 25, False) for _ in range(r)]
        for name, ds, sq in (("durable", durable, f"{med(d[3] for d in durable):,.0f}"),
                             ("fsync=n", fast, "")):
            row(f"insert {per}/call, {name} (events/s)", f"{med(d[0] for d in ds):,.0f}", sq)
            row(f"  no index, {name} (events/s; ratio)",
                f"{med(d[1] for d in ds):,.0f} ({med(d[0] / d[1] for d in ds):.0%})", "")
            row("  recorder work, no index (ev/s; ratio)",
                f"{med(d[2] for d in ds):,.0f} ({med(d[0] / d[2] for d in ds):.0%})", "")
    if "read" not in parts:
        kr = sr = [(0.0, 0.0)]
    else:
        kr = [bench_reads("kimberlite", 2000) for _ in range(r)]
        sr = [bench_reads("sqlite", 2000) for _ in range(r)]
    if "read" in parts:
        row("select_events, aggregates of 10 (events/s)", f"{med(x[0] for x in kr):,.0f}",
            f"{med(x[0] for x in sr):,.0f}")
        row("select_notifications, pages of 500 (ev/s)", f"{med(x[1] for x in kr):,.0f}",
            f"{med(x[1] for x in sr):,.0f}")
    for kind in ("kimberlite", "sqlite") if "reopen" in parts else ():
        tmp = tempfile.mkdtemp(prefix="bench-es-big-")
        try:
            t = time.perf_counter()
            probe = build_big(kind, tmp, args.events)
            build = time.perf_counter() - t
            ms = bench_reopen(kind, tmp, probe, max(r, 5))
            if kind == "kimberlite":
                first, keys, size = bench_after_reopen(tmp)
                print(f"  kimberlite: first 300 inserts after reopening: {first:.0f} ms "
                      f"(all keys loaded on the way: {keys:,} keys, {size / 1e6:.1f} MB)",
                      flush=True)
            size = sum(os.path.getsize(os.path.join(d, x))
                       for d, _, fs in os.walk(tmp) for x in fs) / 1e6
            print(f"  {kind}: built {args.events:,} events in {build:.1f} s, {size:.0f} MB",
                  flush=True)
            rows.append((kind, ms))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if "reopen" not in parts:
        return
    # The worst case for memory: one event per aggregate (the same structure, filled here).
    synthetic = {uuid.uuid4().bytes: 1 for _ in range(args.events)}
    print(f"  in-process key map for {args.events:,} aggregates of 1 event: "
          f"{keys_memory(synthetic) / 1e6:.1f} MB", flush=True)
    del synthetic
    k_ms = [ms for kind, *rest in rows if kind == "kimberlite" for ms in rest]
    s_ms = [ms for kind, *rest in rows if kind == "sqlite" for ms in rest]
    print(f"{'reopen + select one aggregate, ' + format(args.events, ',') + ' events (ms)':<44}"
          f" {k_ms[0]:>14.1f} {s_ms[0]:>14.1f}")


if __name__ == "__main__":
    main()
