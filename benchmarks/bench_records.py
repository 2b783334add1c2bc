#!/usr/bin/env python3
"""read_records against read_from, per record, on both backends.

    python benchmarks/bench_records.py                  # 200,000 records of 100 B, 7 runs
    python benchmarks/bench_records.py --n 50000 --size 1000 --runs 5

The same stream is read whole with read_from (a list of bytes) and read_records (a list of
kimberlite.Record); the two are interleaved within each run so that a noisy shared machine
affects both alike. Each figure is the median over --runs of the best of --inner
measurements; the ratio is the median of the per-run ratios. Issue 9 asks for read_records
within 2x of read_from per record.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import kimberlite


def best(fn, inner: int) -> float:
    t = float("inf")
    for _ in range(inner):
        start = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - start)
    return t


def measure(s, n: int, runs: int, inner: int) -> tuple[float, float, float]:
    ratios, t_from, t_records = [], [], []
    for _ in range(runs):
        a = best(lambda: s.read_from(1), inner)
        b = best(lambda: s.read_records(1), inner)
        t_from.append(a)
        t_records.append(b)
        ratios.append(b / a)
    return (statistics.median(t_from) / n * 1e6, statistics.median(t_records) / n * 1e6,
            statistics.median(ratios))


def fill(s, n: int, size: int) -> None:
    batch = [b"x" * size] * 1000
    for done in range(0, n, len(batch)):
        s.append_batch(1, batch[: n - done], fsync=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="records (default 200000)")
    ap.add_argument("--size", type=int, default=100, help="payload bytes (default 100)")
    ap.add_argument("--runs", type=int, default=7, help="runs (default 7)")
    ap.add_argument("--inner", type=int, default=3, help="measurements per run (default 3)")
    args = ap.parse_args()
    print(f"{args.n:,} records of {args.size} B, median of {args.runs} runs "
          f"(best of {args.inner} each)")
    print(f"{'backend':<8} {'read_from':>14} {'read_records':>14} {'ratio':>7}")
    with tempfile.TemporaryDirectory(prefix="kmb-bench-records-") as d:
        for name, s in (("memory", kimberlite.MemoryStorage()), ("disk", kimberlite.Storage(d))):
            with s:
                fill(s, args.n, args.size)
                assert s.read_records(1) and len(s.read_from(1)) == args.n
                per_from, per_records, ratio = measure(s, args.n, args.runs, args.inner)
            print(f"{name:<8} {per_from:>11.3f} µs {per_records:>11.3f} µs {ratio:>6.2f}x")


if __name__ == "__main__":
    main()
