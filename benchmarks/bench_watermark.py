"""What an fsync=True append costs next to one sync (issue 8: the durable watermark).

Each fsync=True append_batch syncs the segment once and then writes the stream's durable
watermark (docs/FORMAT.md §10) without syncing it. This script measures, in one run and on
the same file system, the median time of:

- `sync`: one `os.write` of a 100-byte record-sized chunk plus `os.fdatasync` of a file,
  which is the floor of any durable append;
- `append`: `Storage.append_batch(1, [100 bytes], fsync=True)`;

and prints their ratio (the issue's bound: an fsync=True batch within 1.5x of one sync).
Medians of several rounds, rounds interleaved so that the machine's noise hits both alike.

    python benchmarks/bench_watermark.py [--dir DIR] [--rounds 7] [--n 300]

DIR defaults to a temporary directory (on this machine's disk; /tmp may be tmpfs, where a
sync costs nothing and the ratio says little: pass a directory on a real disk).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time

import kimberlite


def _sync_round(path: str, n: int) -> float:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        chunk = b"x" * 148
        t = time.perf_counter()
        for _ in range(n):
            os.write(fd, chunk)
            os.fdatasync(fd)
        return (time.perf_counter() - t) / n
    finally:
        os.close(fd)


def _append_round(s: kimberlite.Storage, n: int) -> float:
    event = b"e" * 100
    t = time.perf_counter()
    for _ in range(n):
        s.append_batch(1, [event], fsync=True)
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="where to write (default: a temporary directory)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=300, help="operations per round")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="kmb-wm-", dir=args.dir)
    try:
        syncs, appends = [], []
        with kimberlite.Storage(os.path.join(base, "data")) as s:
            s.append_batch(1, [b"warm-up"], fsync=True)
            for r in range(args.rounds):
                syncs.append(_sync_round(os.path.join(base, f"plain-{r}"), args.n))
                appends.append(_append_round(s, args.n))
        sync, append = statistics.median(syncs), statistics.median(appends)
        result = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": {"cpu": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count(), "python": platform.python_version()},
            "dir": base,
            "sync_us": round(sync * 1e6, 1),
            "append_fsync_us": round(append * 1e6, 1),
            "ratio": round(append / sync, 3),
        }
        print(json.dumps(result, indent=2))
        print(f"fsync=True append / one write+fdatasync = {append / sync:.2f}x "
              f"(bound 1.5x), medians of {args.rounds} rounds of {args.n}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
