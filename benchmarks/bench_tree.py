#!/usr/bin/env python3
"""Storage-side tree figures of issue 10: catch-up, proofs from the in-memory tree, signing.

    python benchmarks/bench_tree.py                 # 1,000,000 records of 100 bytes
    python benchmarks/bench_tree.py --records 200000 --disk /tmp/kmb-bench

Measures, on a MemoryStorage (or a Storage under --disk):
- catch-up: the first tree_root() over a stream nobody asked about yet (the tree is built
  from the records, each read and checked), and the same in a new Storage (= a new process:
  the tree is not persisted);
- tree_root of the whole stream once caught up; an inclusion proof; a consistency proof
  (median of the mean per-call time over rounds, Python call overhead included);
- checkpoint() after one more append (one sync + catch-up of one record + one signature).
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import kimberlite
from kimberlite import tlog


def timed(fn, n: int, rounds: int) -> float:
    results = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        results.append((time.perf_counter() - t) / n)
    return statistics.median(results)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=100, help="payload bytes")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--disk", help="a data directory to use instead of memory (emptied first)")
    a = ap.parse_args()

    def open_storage():
        return kimberlite.Storage(a.disk) if a.disk else kimberlite.MemoryStorage()

    if a.disk:
        import shutil
        shutil.rmtree(a.disk, ignore_errors=True)
    s = open_storage()
    payload = b"x" * a.size
    batch = [payload] * 10_000
    for i in range(0, a.records, len(batch)):
        s.append_batch(1, batch[: min(len(batch), a.records - i)], fsync=False)
    n = s.next_offset(1)

    t = time.perf_counter()
    s.tree_root(1)
    first = time.perf_counter() - t
    print(f"catch-up of {n:,} records of {a.size} B (first tree_root): {first * 1e3:.0f} ms")
    if a.disk:
        s.close()
        s = open_storage()
        t = time.perf_counter()
        s.tree_root(1)
        print(f"tree_root in a new Storage (tree rebuilt): {(time.perf_counter() - t) * 1e3:.0f} ms")

    rng = random.Random(1)
    print(f"tree_root, caught up: {timed(lambda: s.tree_root(1), 2000, a.rounds) * 1e6:.1f} µs")
    print(f"tree_root(size n-12345): "
          f"{timed(lambda: s.tree_root(1, n - 12345), 2000, a.rounds) * 1e6:.1f} µs")
    idx = [rng.randrange(n) for _ in range(1000)]
    it = iter(idx * 1000)
    print(f"inclusion_proof: {timed(lambda: s.inclusion_proof(1, next(it)), 1000, a.rounds) * 1e6:.1f} µs")
    olds = iter([rng.randint(1, n) for _ in range(1000)] * 1000)
    print(f"consistency_proof: "
          f"{timed(lambda: s.consistency_proof(1, next(olds)), 1000, a.rounds) * 1e6:.1f} µs")
    signer = tlog.Signer(tlog.generate_key("bench.example")[0])
    s.checkpoint(1, signer)
    times = []
    for _ in range(a.rounds):
        s.append_batch(1, [payload], fsync=False)
        t = time.perf_counter()
        s.checkpoint(1, signer)
        times.append(time.perf_counter() - t)
    print(f"checkpoint after one append: {statistics.median(times) * 1e3:.2f} ms")
    print(f"tree memory: ≈{34 * n / 2**20:.0f} MiB (34 B per record, computed, not measured)")
    s.close()


if __name__ == "__main__":
    main()
