#!/usr/bin/env python3
"""Storage-side tree figures of issue 10 (§6), with the targets they are held to.

    python benchmarks/bench_tree.py                    # 1,000,000 records of 100 bytes
    python benchmarks/bench_tree.py --records 200000 --rounds 3 --dir /tmp/kmb-bench-tree

On a Storage in --dir (emptied first), medians of --rounds rounds:
- catch-up: tree_root() over a stream whose tree nobody built (the tree data removed; the
  stream itself already loaded), against verify() of the same stream in the same round (the
  peer: one checked pass over the records, the least a catch-up must do);
- a new process (python -c, timed inside): loading the stream (the engine's, not the
  tree's), then tree_root() from the stored tree data, then the first inclusion proof
  (reads its tiles) and the next ones;
- in the process that built the tree: tree_root, an inclusion proof, its verification
  (kimberlite.tlog, what an auditor runs), a consistency proof;
- the tree data's bytes per record;
- appends with the tree in use (tree_root every --every records) against appends without:
  the time spent inside append_batch only (the target: appends do nothing for the tree), and
  the total with the catch-ups (reported, not a target);
- checkpoint() after one append (a sync, a catch-up of one record, one Ed25519 signature).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time

import kimberlite
from bench import cpu_model  # benchmarks/bench.py, beside this script
from kimberlite import tlog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NEW_PROCESS = r"""
import sys, time
t0 = time.perf_counter()
import kimberlite
s = kimberlite.Storage(sys.argv[1], read_only=True)
t1 = time.perf_counter(); s.next_offset(1); t2 = time.perf_counter()
s.tree_root(1); t3 = time.perf_counter()
n = s.next_offset(1)
s.inclusion_proof(1, n // 3); t4 = time.perf_counter()
k = 200
for i in range(k):
    s.inclusion_proof(1, (i * 7919) % n)
t5 = time.perf_counter()
print(t2 - t1, t3 - t2, t4 - t3, (t5 - t4) / k)
"""



def per_call(fn, n: int, rounds: int) -> float:
    results = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        results.append((time.perf_counter() - t) / n)
    return statistics.median(results)


def fill(s, n: int, payload: bytes) -> None:
    batch = [payload] * 10_000
    for i in range(0, n, len(batch)):
        s.append_batch(1, batch[: min(len(batch), n - i)], fsync=False)


def append_run(path: str, n: int, payload: bytes, every: int, with_tree: bool):
    """Rates (records/s) of one run: wall time inside append_batch, CPU time (all threads of
    this process) inside append_batch — steadier on a shared machine — and the whole loop."""
    shutil.rmtree(path, ignore_errors=True)
    s = kimberlite.Storage(path)
    batch = [payload] * 1000
    in_append = in_cpu = 0.0
    t0 = time.perf_counter()
    for i in range(0, n, len(batch)):
        t, c = time.perf_counter(), time.process_time()
        s.append_batch(1, batch, fsync=False)
        in_cpu += time.process_time() - c
        in_append += time.perf_counter() - t
        if with_tree and (i + len(batch)) % every == 0:
            s.tree_root(1)
    total = time.perf_counter() - t0
    s.close()
    return n / in_append, n / max(in_cpu, 1e-9), n / total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=100, help="payload bytes")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default="/tmp/kmb-bench-tree")
    ap.add_argument("--every", type=int, default=10_000,
                    help="records between tree_root() calls in the append comparison")
    ap.add_argument("--append-records", type=int, default=200_000)
    a = ap.parse_args()
    print(f"# bench_tree.py — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{cpu_model()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
          f"Python {platform.python_version()}, {a.records:,} records of {a.size} B, "
          f"medians of {a.rounds}")
    data = os.path.join(a.dir, "data")
    shutil.rmtree(a.dir, ignore_errors=True)
    payload = b"x" * a.size
    s = kimberlite.Storage(data)
    fill(s, a.records, payload)
    n = s.next_offset(1)
    tree_file = os.path.join(data, "1", "tree")

    catch, verify = [], []
    for _ in range(a.rounds):
        s._replace_tree_data(1, b"")  # the stream's state is dropped with it: reload it first
        s.next_offset(1)
        t = time.perf_counter()
        s.verify(1)
        verify.append(time.perf_counter() - t)
        t = time.perf_counter()
        s.tree_root(1)
        catch.append(time.perf_counter() - t)
    c, v = statistics.median(catch), statistics.median(verify)
    rows = [("tree catch-up, {:,} × {} B (first tree_root, no tree data)".format(n, a.size),
             f"{c * 1e3:.0f} ms", "< 500 ms", c < 0.5),
            ("  peer: verify() of the same stream, same rounds", f"{v * 1e3:.0f} ms", "—", None),
            ("  catch-up / verify", f"{c / v:.2f}x", "—", None)]
    s.close()
    size = os.path.getsize(tree_file)
    rows.append(("tree data size", f"{size / n:.2f} B/record", "< 34 B/record", size / n < 34))

    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    new = []
    for _ in range(a.rounds):
        out = subprocess.run([sys.executable, "-c", NEW_PROCESS, data], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        new.append([float(x) for x in out])
    med = [statistics.median(col) for col in zip(*new)]
    rows += [("new process: loading the stream (engine, before any tree call)",
              f"{med[0] * 1e3:.1f} ms", "—", None),
             ("new process: tree_root (from the stored tree data)", f"{med[1] * 1e3:.2f} ms",
              "< 20 ms", med[1] < 0.02),
             ("new process: tree_root including the stream's loading",
              f"{(med[0] + med[1]) * 1e3:.1f} ms", "(< 20 ms)", med[0] + med[1] < 0.02),
             ("new process: first inclusion proof (reads its tiles)", f"{med[2] * 1e6:.0f} µs",
              "< 100 µs", med[2] < 1e-4),
             ("new process: next inclusion proofs (tiles read on demand)",
              f"{med[3] * 1e6:.1f} µs", "< 100 µs", med[3] < 1e-4)]

    s = kimberlite.Storage(data)
    s.tree_root(1)
    rng = random.Random(1)
    idx = iter([rng.randrange(n) for _ in range(1000)] * 1000)
    olds = iter([rng.randint(1, n) for _ in range(1000)] * 1000)
    root = s.tree_root(1)
    proofs = [(i, s.inclusion_proof(1, i)) for i in (rng.randrange(n) for _ in range(100))]
    leaves = {i: tlog.leaf_hash(_entry(s, i)) for i, _ in proofs}
    pit = iter(proofs * 10000)

    def verify_one():
        i, p = next(pit)
        tlog.verify_inclusion(leaves[i], i, n, p, root)

    t_root = per_call(lambda: s.tree_root(1), 2000, a.rounds)
    t_incl = per_call(lambda: s.inclusion_proof(1, next(idx)), 1000, a.rounds)
    t_ver = per_call(verify_one, 1000, a.rounds)
    t_cons = per_call(lambda: s.consistency_proof(1, next(olds)), 1000, a.rounds)
    rows += [("tree_root, caught up (per call)", f"{t_root * 1e6:.1f} µs", "—", None),
             ("inclusion proof (per call)", f"{t_incl * 1e6:.1f} µs", "< 100 µs", t_incl < 1e-4),
             ("inclusion proof verification (tlog.verify_inclusion)", f"{t_ver * 1e6:.1f} µs",
              "< 50 µs", t_ver < 5e-5),
             ("consistency proof (per call)", f"{t_cons * 1e6:.1f} µs", "< 200 µs",
              t_cons < 2e-4)]
    signer = tlog.Signer(tlog.generate_key("bench.example")[0])
    s.checkpoint(1, signer)
    times = []
    for _ in range(a.rounds):
        s.append_batch(1, [payload], fsync=False)
        t = time.perf_counter()
        s.checkpoint(1, signer)
        times.append(time.perf_counter() - t)
    rows.append(("checkpoint() after one append", f"{statistics.median(times) * 1e3:.2f} ms",
                 "one sync + one signature", None))
    s.close()

    ap_dir = os.path.join(a.dir, "append")
    runs = {False: [], True: []}
    for r in range(2 * a.rounds):  # alternate (and swap the order), same machine for both
        for with_tree in ((False, True) if r % 2 else (True, False)):
            runs[with_tree].append(append_run(ap_dir, a.append_records, payload, a.every,
                                              with_tree))
    wall = statistics.median(t[0] / p[0] for t, p in zip(runs[True], runs[False]))
    cpu = statistics.median(t[1] / p[1] for t, p in zip(runs[True], runs[False]))
    med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in runs.items()}
    rows += [(f"append {a.size} B in batches of 1000, no tree: inside append_batch, wall / CPU",
              f"{med[False][0] / 1e6:.2f} / {med[False][1] / 1e6:.2f} M/s", "—", None),
             (f"  same, tree_root every {a.every:,} records: wall / CPU",
              f"{med[True][0] / 1e6:.2f} / {med[True][1] / 1e6:.2f} M/s", "—", None),
             ("  with tree / without, inside append_batch (CPU time; wall time)",
              f"{cpu:.1%} ({wall:.1%})", "≥ 95%", cpu >= 0.95),
             ("  whole loop including the catch-ups, no tree / tree (wall)",
              f"{med[False][2] / 1e6:.2f} / {med[True][2] / 1e6:.2f} M/s", "—", None)]
    shutil.rmtree(a.dir, ignore_errors=True)

    print("| measure | figure | target | met |")
    print("|---|---:|---|---|")
    for name, fig, target, met in rows:
        print(f"| {name} | {fig} | {target} | {'' if met is None else ('yes' if met else 'no')} |")


def _entry(s, i: int) -> bytes:
    """Entry i of the tree: record i's chain hash (the prev_hash of record i + 1, or the head)."""
    n = s.next_offset(1)
    if i + 1 < n:
        return s.read_records(1, i + 1, 1)[0].prev_hash
    return s.latest_chain_hash(1)


if __name__ == "__main__":
    main()
