#!/usr/bin/env python3
"""Stream.to_arrow against pa.array(read_from(...)), and DuckDB's peak memory over a stream.

    python benchmarks/bench_arrow.py                    # 1,000,000 events of 100 B, 5 runs
    python benchmarks/bench_arrow.py --n 200000 --runs 3 --duckdb-mib 256

1. Speed. One stream of --n events of --size bytes is read whole, interleaved within each
   run so that a noisy shared machine affects all alike:
     - peer:    pa.array(s.read_from(1), type=pa.binary())  (a bytes object per event);
     - payload: stream.to_arrow(columns=["payload"])        (the same column, engine-built);
     - default: stream.to_arrow()                           (all five columns);
     - floor:   s.verify_range(1)  (the engine's verified read alone: CRC, SHA-256 chain
                link of every record, no output). Both sides pay it; the "beyond the
                verified read" ratio compares what each adds to it.
   Each figure is the median over --runs of the best of --inner measurements; the ratio is
   the median of the per-run ratios. Issue 13 asks for at least 5x. The memory line gives
   the Arrow bytes allocated by each result (pa.total_allocated_bytes() does not see the
   engine's buffers, so it is measured as the table's own buffer sizes).
2. Memory. A stream of --duckdb-mib MiB (1 KiB events) is scanned by DuckDB in a fresh
   process (``select count(*), sum(octet_length(payload)) from stream``); the figure is the
   peak RSS (VmHWM, reset just before the query) minus the RSS then (duckdb, pyarrow and
   kimberlite already imported, storage open). Issue 13 asks for under 64 MiB above the
   baseline for a 1 GiB stream.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import pyarrow as pa

import kimberlite


def best(fn, inner: int) -> float:
    t = float("inf")
    for _ in range(inner):
        start = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - start)
    return t


def table_bytes(t: pa.Table) -> int:
    return sum(b.size for col in t.columns for ch in col.chunks for b in ch.buffers()
               if b is not None)


def speed(n: int, size: int, runs: int, inner: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        s = kimberlite.Storage(d)
        ev = os.urandom(size)
        for i in range(0, n, 10_000):
            s.append_batch(1, [ev] * min(10_000, n - i), fsync=False)
        stream = s.stream(1)
        peer_t, pay_t, def_t, r_pay, r_def, floor_t, r_beyond = [], [], [], [], [], [], []
        for _ in range(runs):
            a = best(lambda: pa.array(s.read_from(1), type=pa.binary()), inner)
            b = best(lambda: stream.to_arrow(columns=["payload"]), inner)
            c = best(lambda: stream.to_arrow(), inner)
            f = best(lambda: s.verify_range(1), inner)
            peer_t.append(a)
            pay_t.append(b)
            def_t.append(c)
            floor_t.append(f)
            r_pay.append(a / b)
            r_def.append(a / c)
            r_beyond.append((a - f) / max(b - f, 1e-6))
        m = statistics.median
        print(f"{n:,} events of {size} B ({n * size / 2**20:.0f} MiB of payload)")
        print(f"  pa.array(read_from)          {m(peer_t) * 1e3:8.1f} ms")
        print(f"  to_arrow(columns=[payload])  {m(pay_t) * 1e3:8.1f} ms   "
              f"{m(r_pay):.1f}x faster")
        print(f"  to_arrow() (5 columns)       {m(def_t) * 1e3:8.1f} ms   "
              f"{m(r_def):.1f}x faster")
        extra = m(pay_t) - m(floor_t)
        if extra > 0:
            beyond = f"adds {extra * 1e3:.1f} ms, the peer " \
                     f"{(m(peer_t) - m(floor_t)) * 1e3:.1f} ms ({m(r_beyond):.1f}x less)"
        else:  # the floor's own rounds were slower: nothing measurable beyond it
            beyond = f"adds nothing measurable ({extra * 1e3:.1f} ms), the peer " \
                     f"{(m(peer_t) - m(floor_t)) * 1e3:.1f} ms"
        print(f"  verify_range (the floor)     {m(floor_t) * 1e3:8.1f} ms   beyond it, "
              f"to_arrow(columns=[payload]) {beyond}")
        t1 = stream.to_arrow(columns=["payload"])
        t5 = stream.to_arrow()
        print(f"  memory: payload column {table_bytes(t1) / 2**20:.1f} MiB "
              f"(payload {n * size / 2**20:.1f} MiB + offsets), "
              f"5 columns {table_bytes(t5) / 2**20:.1f} MiB")
        s.close()


DUCKDB_CHILD = r"""
import sys
import duckdb, pyarrow, kimberlite
s = kimberlite.Storage(sys.argv[1], read_only=True)
stream = s.stream(1)
def status(key):  # kB in /proc/self/status
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith(key + ":"))
duckdb.execute("set enable_progress_bar = false")
# the peak of this process's own memory (VmHWM), reset to the current RSS: ru_maxrss would
# include the parent's RSS at fork time (Linux carries it across exec)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS")
got = duckdb.sql("select count(*), sum(octet_length(payload)) from stream").fetchall()
peak = status("VmHWM")
print("RESULT", got[0][0], got[0][1], base, peak)
"""


def duckdb_memory(mib: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        s = kimberlite.Storage(d)
        ev = os.urandom(1024)
        n = mib * 1024
        for i in range(0, n, 16_384):
            s.append_batch(1, [ev] * min(16_384, n - i), fsync=False)
        s.close()
        out = subprocess.run([sys.executable, "-c", DUCKDB_CHILD, d], check=True,
                             capture_output=True, text=True).stdout
        out = next(line for line in out.splitlines() if line.startswith("RESULT")).split()[1:]
        count, total, base, peak = map(int, out)
        assert count == n and total == n * 1024, out
        print(f"DuckDB over a {mib} MiB stream ({n:,} events of 1 KiB): peak RSS "
              f"{(peak - base) / 2**20:.1f} MiB above the baseline "
              f"({base / 2**20:.0f} MiB before the query)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--inner", type=int, default=3)
    p.add_argument("--duckdb-mib", type=int, default=1024)
    a = p.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, pyarrow {pa.__version__}")
    speed(a.n, a.size, a.runs, a.inner)
    if a.duckdb_mib:
        duckdb_memory(a.duckdb_mib)


if __name__ == "__main__":
    main()
