"""Compare two builds of kimberlite._core on appends and reads, interleaved in one run.

Made for the stable-ABI question (README, "Packaging"): a build for one CPython version
against a build with Py_LIMITED_API (abi3), which must stay within 3% on appends and reads
to be worth shipping. Any two builds can be compared: each argument is a directory that
holds a `kimberlite/` package with its extension built in place.

    python benchmarks/abi3.py DIR_PER_VERSION DIR_ABI3 [--rounds 7]

Each round runs every build once, in a fresh subprocess (the two extensions share a module
name), alternating which goes first; inside it each workload runs 5 times and keeps its
best rate (a busy machine only ever slows a run down), and the figures printed are the
medians over the rounds. Rates are per second of CPU time of the process (all threads)
by default: on a machine shared with other work, wall time measures mostly the scheduler;
--clock perf_counter measures wall time. Workloads (events of 100 bytes; MemoryStorage isolates the
binding, Storage adds the files, fsync=False):
  append   append_batch of 100 events, 500 times into a fresh storage (events/s)
  read     read_from of the whole stream, 50,000 events (events/s)
  records  read_records of the whole stream (events/s)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r"""
import json, sys, tempfile, time
import kimberlite as km
N, BATCH, SIZE, REPS = 50_000, 100, 100, 5
events = [bytes([i % 251]) * SIZE for i in range(BATCH)]
out = {"core": km._core.__file__}
CLOCK = getattr(time, sys.argv[1])
def best(fn):
    rate = 0.0
    for _ in range(REPS):
        t = CLOCK(); n = fn()
        rate = max(rate, n / (CLOCK() - t))
    return rate
def run(kind, make):
    def append():
        with make() as s:
            for _ in range(N // BATCH):
                s.append_batch(1, events, fsync=False)
        return N
    out[kind + " append"] = best(append)
    with make() as s:
        for _ in range(N // BATCH):
            s.append_batch(1, events, fsync=False)
        out[kind + " read"] = best(lambda: len(s.read_from(1)))
        out[kind + " records"] = best(lambda: len(s.read_records(1)))
def disk():
    return km.Storage(tempfile.mkdtemp(dir=root))
run("memory", km.MemoryStorage)
with tempfile.TemporaryDirectory() as root:
    run("disk", disk)
print(json.dumps(out))
"""


def measure(directory, clock):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(directory))
    env.pop("KIMBERLITE_TEST_PATH", None)
    out = subprocess.run([sys.executable, "-c", WORKER, clock], env=env, cwd="/", check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("builds", nargs=2, metavar="DIR")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--clock", choices=["process_time", "perf_counter"], default="process_time",
                    help="CPU time of the process, all threads (default: what the builds "
                         "change, steady on a shared machine), or wall time")
    args = ap.parse_args()
    results = {b: [] for b in args.builds}
    for r in range(args.rounds):
        order = args.builds if r % 2 == 0 else args.builds[::-1]
        for b in order:
            results[b].append(measure(b, args.clock))
    a, b = args.builds
    print(f"A = {results[a][0]['core']}\nB = {results[b][0]['core']}\n"
          f"clock: {args.clock}, {args.rounds} rounds")
    print(f"{'workload':<16}{'A events/s':>14}{'B events/s':>14}{'B/A':>8}")
    keys = [k for k in results[a][0] if k != "core"]
    for k in keys:
        ma = statistics.median(x[k] for x in results[a])
        mb = statistics.median(x[k] for x in results[b])
        print(f"{k:<16}{ma:>14,.0f}{mb:>14,.0f}{mb / ma:>8.3f}")


if __name__ == "__main__":
    main()
