#!/usr/bin/env python3
"""Kimberlite benchmarks: kimberlite against its peers, side by side, in one run.

    python benchmarks/bench.py                 # full run (a few minutes)
    python benchmarks/bench.py --quick         # smoke run (~30 s)
    python benchmarks/bench.py --scenarios append,read --sizes 100,16384 --runs 7

Peers, measured in the same run and interleaved round by round (the machine is shared and
noisy, so every figure is a median of several rounds and every ratio is the median of the
per-round ratios of kimberlite to a peer measured right next to it; within a round, append,
read and verify keep the best of --inner measurements, which absorbs the page-allocation
stalls a shared VM adds to writes of new data):

  pure     a pure-Python implementation of the same format (benchmarks/peer_pure.py):
           struct + zlib + hashlib, one file per stream, verified reads
  sqlite3  the standard library's sqlite3: WAL, one transaction per batch, a table of
           (stream, offset, payload) rows with PRIMARY KEY (stream, offset)
  lmdb     py-lmdb, when installed: key = (stream, offset) big-endian, value = payload
  hash     the hashing limit: the SHA-256 chain alone over the same number of events of the
           same size, timed in C (benchmarks/hashlimit.c, compiled here with cc -lcrypto)
  hash_par the parallel hashing limit (reads and verify): the same hashes, each record from
           its stored prev_hash, split over as many threads as kimberlite's read pool has
           (--threads, else its default: one per CPU, at most 8), timed in C the same way
  floor    the append floor (appends only): the chain on one thread while another copies
           the records into 256 KiB pieces and pwrites them to a file, nothing else (no
           CRC, no waiting), timed in C the same way: what these CPUs and this file system
           leave for an append; shown beside the append rows

Pool size: --threads N pins kimberlite's read pool (KIMBERLITE_READ_THREADS=N for every
process of the run) and the parallel limit to N threads; --scaling adds a table of verify
and read_from of 16 KiB events with pools of 1, 2, ... up to the CPUs of the process.

Scenarios (--scenarios, comma separated; default all):

  append   batches of --batch events of each --sizes size, fsync=False
  fsync    the same batch with fsync=True, against (the batch with fsync=False + one
           fdatasync of a plain file of the same size written just before it)
  read     read_from of a whole stream (every record verified by kimberlite and pure)
  verify   verify of a whole stream (kimberlite and pure; lmdb, which has no checks, scans
           every value of the stream through a cursor: its closest equivalent)
  tail     read of the last 10 events of a stream of 1,000 and of --big-n events
  open     open a --big-n event store in a new process and read its tail (timed inside the
           process, import excluded; the whole process's wall time is reported apart). The
           processes run with bytecode caching on (PYTHONDONTWRITEBYTECODE unset, the cache
           under the run's temporary directory, filled by one unmeasured run per peer), as
           an installed package has its .pyc files: a module imported on first use (such
           as kimberlite._fork) is then not compiled from source inside the timed region.
  rss      peak RSS growth of a process appending --big-n events in batches (disk, no fsync)

Writes <out>/bench-<date>.json and <out>/bench-<date>.md and, when matplotlib is installed,
benchmarks/throughput.png. The data directories live in a temporary directory on a real
disk (not tmpfs): --tmpdir chooses it.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import shutil
import sqlite3
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

try:
    import kimberlite
except ImportError:  # running from a checkout with an in-place build
    sys.path.insert(0, REPO)
    import kimberlite

import peer_pure  # noqa: E402

try:
    import lmdb
except ImportError:  # the lmdb peer is optional
    lmdb = None

KIMBERLITE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(kimberlite.__file__)))
ALL_SCENARIOS = ("append", "fsync", "read", "verify", "tail", "open", "rss")
IMPLS = ("kimberlite", "pure", "sqlite3", "lmdb")
LABEL = {
    "kimberlite": "kimberlite",
    "pure": "pure Python",
    "sqlite3": "sqlite3",
    "lmdb": "lmdb",
    "hash": "hash limit",
    "hash_par": "parallel hash limit",
    "floor": "append floor",
}
STREAM = 1
MB = 1e6


# ==================================================================== environment


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def mount_of(path: str):
    """(mount point, fstype, device) of the filesystem holding path, from /proc/mounts."""
    path = os.path.realpath(path)
    best = ("/", "unknown", "unknown")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, fstype = line.split()[:3]
                mnt = mnt.replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(
                    best[0]
                ):
                    best = (mnt, fstype, dev)
    except OSError:
        pass
    return best


def pick_tmpdir(requested: str | None) -> tuple[str, dict]:
    """A parent directory for the data directories, on a real disk (not tmpfs/ramfs)."""
    memory_fs = {"tmpfs", "ramfs", "devtmpfs"}
    candidates = [requested] if requested else [
        tempfile.gettempdir(),
        os.path.join(HERE, "results"),  # git-ignored
        os.getcwd(),
    ]
    for cand in candidates:
        os.makedirs(cand, exist_ok=True)
        mnt, fstype, dev = mount_of(cand)
        if fstype in memory_fs and not requested:
            continue
        info = {"path": os.path.realpath(cand), "mount": mnt, "fstype": fstype, "device": dev}
        if fstype in memory_fs:
            info["warning"] = "in-memory filesystem: fsync figures are meaningless"
        return cand, info
    raise SystemExit("no directory on a real disk found; pass --tmpdir")


def environment(tmp_info: dict) -> dict:
    sqlite_version = sqlite3.sqlite_version
    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "sha_extensions": "sha_ni" in cpu_flags() or "sha2" in cpu_flags(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "openssl": ssl.OPENSSL_VERSION,
        "kimberlite": getattr(kimberlite, "__version__", "unknown"),
        "kimberlite_path": os.path.dirname(os.path.abspath(kimberlite.__file__)),
        "sqlite": sqlite_version,
        "lmdb": getattr(lmdb, "__version__", None) if lmdb else None,
        "lmdb_library": ".".join(map(str, lmdb.version())) if lmdb else None,
        "tmpdir": tmp_info,
        "loadavg_start": os.getloadavg(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "read_threads": kimberlite.MemoryStorage().read_threads,
    }
    return meta


# ==================================================================== timing helpers


@contextlib.contextmanager
def quiet_gc():
    """No garbage collection inside a timed section (as timeit does), for every peer alike."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def paired_ratio(a: list, b: list, higher_is_better: bool):
    """Median over rounds of a[r]/b[r] (throughputs) or b[r]/a[r] (times): >1 = a better."""
    pairs = [(x, y) for x, y in zip(a, b) if x and y]
    if len(pairs) < min(len(a), len(b)) or len(a) != len(b):
        ma, mb = median(a), median(b)
        if not ma or not mb:
            return None
        return ma / mb if higher_is_better else mb / ma
    return statistics.median([(x / y if higher_is_better else y / x) for x, y in pairs])


def make_batches(size: int, count: int, batch: int, seed: int = 0) -> list[list[bytes]]:
    """`count` distinct pseudo-random events of `size` bytes, in batches of `batch`."""
    import random

    rng = random.Random(seed * 1000003 + size)
    out = []
    left = count
    while left > 0:
        k = min(batch, left)
        blob = rng.randbytes(size * k)
        out.append([blob[i * size:(i + 1) * size] for i in range(k)])
        left -= k
    return out


def fresh_dir(parent: str, name: str) -> str:
    path = os.path.join(parent, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def drop(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ==================================================================== the peers


class _SpecApiImpl:
    """A peer with kimberlite's own API (SPEC §4): kimberlite itself, and the pure peer."""

    name = ""

    def __init__(self, log) -> None:
        self.log = log

    def append(self, events, fsync: bool) -> None:
        self.log.append_batch(STREAM, events, fsync=fsync)

    def read_from(self, offset: int = 0) -> list:
        return self.log.read_from(STREAM, offset)

    def verify(self):
        return self.log.verify(STREAM)

    def next_offset(self) -> int:
        return self.log.next_offset(STREAM)

    def close(self) -> None:
        self.log.close()


class KimberliteImpl(_SpecApiImpl):
    name = "kimberlite"

    def __init__(self, path: str):
        super().__init__(kimberlite.Storage(path))


class PureImpl(_SpecApiImpl):
    name = "pure"

    def __init__(self, path: str):
        super().__init__(peer_pure.PureLog(path))


class SqliteImpl:
    """sqlite3 as a user would set it up for an event log: WAL, a transaction per batch."""

    name = "sqlite3"

    def __init__(self, path: str):
        self.db = sqlite3.connect(os.path.join(path, "events.db"), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.sync = None
        self._set_sync(False)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS events (stream INTEGER NOT NULL, offset INTEGER NOT NULL,"
            " payload BLOB NOT NULL, PRIMARY KEY (stream, offset))"
        )
        row = self.db.execute(
            "SELECT max(offset) FROM events WHERE stream = ?", (STREAM,)
        ).fetchone()
        self.next = 0 if row[0] is None else row[0] + 1

    def _set_sync(self, fsync: bool) -> None:
        # fsync=False: the data reaches the OS, no sync (synchronous=OFF);
        # fsync=True: the WAL is synced at every commit (synchronous=FULL).
        if self.sync != fsync:
            self.db.execute("PRAGMA synchronous=" + ("FULL" if fsync else "OFF"))
            self.sync = fsync

    def append(self, events, fsync: bool) -> None:
        self._set_sync(fsync)
        base = self.next
        db = self.db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT INTO events (stream, offset, payload) VALUES (?, ?, ?)",
                [(STREAM, base + i, e) for i, e in enumerate(events)],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.next = base + len(events)

    def read_from(self, offset: int = 0) -> list:
        cur = self.db.execute(
            "SELECT payload FROM events WHERE stream = ? AND offset >= ? ORDER BY offset",
            (STREAM, offset),
        )
        return [p for (p,) in cur]

    def next_offset(self) -> int:
        return self.next

    def close(self) -> None:
        self.db.close()


class LmdbImpl:
    """py-lmdb: one key per event, (stream, offset) as 16 big-endian bytes."""

    name = "lmdb"
    KEY = struct.Struct(">QQ")

    def __init__(self, path: str):
        self.env = lmdb.open(
            path, map_size=1 << 36, sync=False, metasync=False, readahead=False,
            max_dbs=0, lock=True,
        )
        self.next = 0
        with self.env.begin() as txn:
            cur = txn.cursor()
            found = cur.prev() if cur.set_range(self.KEY.pack(STREAM + 1, 0)) else cur.last()
            if found:
                k = cur.key()
                if len(k) == 16:
                    sid, off = self.KEY.unpack(k)
                    if sid == STREAM:
                        self.next = off + 1

    def append(self, events, fsync: bool) -> None:
        base = self.next
        pack = self.KEY.pack
        with self.env.begin(write=True) as txn:
            txn.cursor().putmulti(
                [(pack(STREAM, base + i), e) for i, e in enumerate(events)], append=True
            )
        if fsync:  # a durable commit: sync the data file (fdatasync) after the commit
            self.env.sync(True)
        self.next = base + len(events)

    def read_from(self, offset: int = 0) -> list:
        out = []
        with self.env.begin() as txn:
            cur = txn.cursor()
            if not cur.set_range(self.KEY.pack(STREAM, offset)):
                return out
            end = self.KEY.pack(STREAM + 1, 0)
            for k, v in cur:
                if k >= end:
                    break
                out.append(v)
        return out

    def verify(self):
        """lmdb checks nothing: its closest equivalent is a scan of every value."""
        n = 0
        with self.env.begin(buffers=True) as txn:
            cur = txn.cursor()
            if cur.set_range(self.KEY.pack(STREAM, 0)):
                end = self.KEY.pack(STREAM + 1, 0)
                for k, _v in cur:
                    if bytes(k) >= end:
                        break
                    n += 1
        return (n, None)

    def next_offset(self) -> int:
        return self.next

    def close(self) -> None:
        self.env.close()


VERIFIERS = ("kimberlite", "pure", "lmdb")  # rows of the verify scenario

FACTORIES = {
    "kimberlite": KimberliteImpl,
    "pure": PureImpl,
    "sqlite3": SqliteImpl,
    "lmdb": LmdbImpl,
}


# ==================================================================== hashing limit


class HashLimit:
    """benchmarks/hashlimit.c, compiled once per run into a temporary directory."""

    def __init__(self, workdir: str):
        self.exe = None
        self.error = None
        src = os.path.join(HERE, "hashlimit.c")
        exe = os.path.join(workdir, "hashlimit")
        cc = os.environ.get("CC", "cc")
        cflags, libs = [], ["-lcrypto"]
        try:
            out = subprocess.run(["pkg-config", "--cflags", "--libs", "libcrypto"],
                                 capture_output=True, text=True, check=True).stdout.split()
            cflags = [f for f in out if not f.startswith("-l")]
            libs = [f for f in out if f.startswith("-l")] or libs
        except (OSError, subprocess.CalledProcessError):
            pass
        cmd = [cc, "-O2", *cflags, "-o", exe, src, *libs, "-lpthread"]
        try:
            subprocess.run(cmd, capture_output=True, text=True, check=True)
            self.exe = exe
            self.cmd = " ".join(cmd)
        except (OSError, subprocess.CalledProcessError) as e:
            self.error = getattr(e, "stderr", None) or str(e)
            print(f"warning: cannot build hashlimit.c, no hashing limit: {self.error}",
                  file=sys.stderr)

    def ns_per_event(self, size: int, count: int, reps: int = 3,
                     threads: int = 0) -> float | None:
        """The chain limit; with threads, the parallel limit on that many threads."""
        extra = [str(threads)] if threads else []
        return self._median_ns(size, count, reps, *extra)

    def floor_ns_per_event(self, size: int, count: int, workdir: str) -> float | None:
        """The append floor (hashlimit.c): the chain on one thread while another copies the
        records and pwrites them to a file in workdir, with nothing else; one repetition."""
        return self._median_ns(size, count, 1, "0", workdir)

    def _median_ns(self, size: int, count: int, reps: int, *extra: str) -> float | None:
        """Run hashlimit with these arguments: the median of its ns_per_event lines."""
        if not self.exe:
            return None
        out = subprocess.run([self.exe, str(size), str(count), str(reps), *extra],
                             capture_output=True, text=True, check=True).stdout
        vals = [float(line.split()[1]) for line in out.splitlines()
                if line.startswith("ns_per_event")]
        return statistics.median(vals) if vals else None


# ==================================================================== results


class Results:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, **row) -> dict:
        self.rows.append(row)
        return row

    def find(self, scenario: str, size=None, variant=None):
        for r in self.rows:
            if r["scenario"] == scenario and r.get("size") == size and r.get("variant") == variant:
                return r
        return None


def summarise(values: dict, higher_is_better: bool) -> dict:
    """values: impl -> per-round list. Adds medians and kimberlite-vs-peer ratios."""
    med = {k: median(v) for k, v in values.items() if v}
    ratios = {}
    k = values.get("kimberlite")
    if k:
        for peer, v in values.items():
            if peer != "kimberlite" and v:
                ratios[peer] = paired_ratio(k, v, higher_is_better)
    return {"median": med, "ratios": ratios}


# ==================================================================== scenarios


def order_for(round_no: int, impls: list) -> list:
    """Rotate the order of the peers from round to round (no one always goes first)."""
    k = round_no % len(impls)
    return impls[k:] + impls[:k]


def events_per_run(size: int, args) -> int:
    n = min(args.max_events, max(args.budget_mb * (1 << 20) // max(size, 1), 1))
    batches = max(args.min_batches, -(-n // args.batch))
    return batches * args.batch


def scenario_append(args, tmp, impls, hashlim, results, data):
    for size in args.sizes:
        n = events_per_run(size, args)
        batches = make_batches(size, n, args.batch, seed=1)
        warm = make_batches(size, args.batch, args.batch, seed=2)[0]
        data[size] = (batches, warm)
        ev_s = {i: [] for i in impls}
        ev_s["hash"] = []
        ev_s["floor"] = []
        print(f"  append {size} B x {n} events ({len(batches)} batches)", flush=True)
        for r in range(args.runs):
            for impl in order_for(r, impls):
                best = None
                for _ in range(args.inner):  # best of --inner fresh stores per round
                    path = fresh_dir(tmp, f"append-{impl}")
                    obj = FACTORIES[impl](path)
                    obj.append(warm, False)  # creates the stream: not timed
                    with quiet_gc():
                        t0 = time.perf_counter()
                        for b in batches:
                            obj.append(b, False)
                        dt = time.perf_counter() - t0
                    obj.close()
                    drop(path)
                    best = dt if best is None else min(best, dt)
                ev_s[impl].append(n / best)
            ns = hashlim.ns_per_event(size, n)
            ev_s["hash"].append(1e9 / ns if ns else None)
            ns = hashlim.floor_ns_per_event(size, n, tmp)
            ev_s["floor"].append(1e9 / ns if ns else None)
        for k in ("hash", "floor"):
            if not any(ev_s[k]):
                del ev_s[k]
        summ = summarise(ev_s, True)
        results.add(scenario="append", size=size, variant="fsync=False", metric="events/s",
                    higher_is_better=True, events=n, runs=ev_s, **summ,
                    mb_s={k: v * size / MB for k, v in summ["median"].items()})


def scenario_fsync(args, tmp, impls, hashlim, results, data):
    nb = args.sync_batches
    for size in args.sizes:
        batches = make_batches(size, nb * args.batch, args.batch, seed=3)
        warm = make_batches(size, args.batch, args.batch, seed=4)[0]
        rec_bytes = sum(len(e) + 48 for e in batches[0])
        per = {i: [] for i in impls}  # seconds per fsync=True batch
        k_nosync, plain_sync, baseline, ratio = [], [], [], []
        print(f"  fsync {size} B: {nb} batches of {args.batch} per round", flush=True)
        for r in range(args.runs):
            for impl in order_for(r, impls):
                path = fresh_dir(tmp, f"fsync-{impl}")
                obj = FACTORIES[impl](path)
                obj.append(warm, True)
                if impl == "kimberlite":
                    # the reference: the same batch with fsync=False into another store, and
                    # one fdatasync of a plain file of the batch's size written just before
                    path2 = fresh_dir(tmp, "fsync-kimberlite-nosync")
                    ref = KimberliteImpl(path2)
                    ref.append(warm, False)
                    plain = os.open(os.path.join(path2, "plain.bin"),
                                    os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                    os.write(plain, bytes(rec_bytes))
                    os.fdatasync(plain)
                times, rts = [], []
                for b in batches:
                    os.sync()  # start every synced batch from a clean page cache
                    with quiet_gc():
                        t0 = time.perf_counter()
                        obj.append(b, True)
                        dt = time.perf_counter() - t0
                    times.append(dt)
                    if impl == "kimberlite":
                        blob = b"".join(b)[:rec_bytes].ljust(rec_bytes, b"\0")
                        os.sync()
                        with quiet_gc():
                            t0 = time.perf_counter()
                            ref.append(b, False)
                            t_nosync = time.perf_counter() - t0
                        os.write(plain, blob)  # the plain file, written just before its sync
                        t0 = time.perf_counter()
                        os.fdatasync(plain)
                        t_sync = time.perf_counter() - t0
                        k_nosync.append(t_nosync)
                        plain_sync.append(t_sync)
                        baseline.append(t_nosync + t_sync)
                        ratio.append(dt / (t_nosync + t_sync))
                obj.close()
                drop(path)
                if impl == "kimberlite":
                    os.close(plain)
                    ref.close()
                    drop(path2)
                per[impl].append(statistics.median(times))
        summ = summarise(per, False)
        results.add(scenario="fsync", size=size, variant="fsync=True", metric="s/batch",
                    higher_is_better=False, batch_bytes=rec_bytes, runs=per, **summ,
                    reference={
                        "kimberlite_nosync_s": median(k_nosync),
                        "plain_fdatasync_s": median(plain_sync),
                        "baseline_s": median(baseline),
                        "ratio_to_baseline": median(ratio),
                        "ratio_samples": len(ratio),
                    })


def build_store(impl: str, path: str, batches, warm, fsync=False):
    obj = FACTORIES[impl](path)
    obj.append(warm, fsync)
    for b in batches:
        obj.append(b, fsync)
    return obj


def read_data(size: int, args, data: dict) -> tuple:
    """The batches (and warm-up batch) that read, verify and scaling runs store, made once
    per size and shared through `data`."""
    if size not in data:
        n = events_per_run(size, args)
        data[size] = (make_batches(size, n, args.batch, seed=1),
                      make_batches(size, args.batch, args.batch, seed=2)[0])
    return data[size]


def scenario_read_verify(args, tmp, impls, hashlim, results, data, which):
    for size in args.sizes:
        batches, warm = read_data(size, args, data)
        n = sum(len(b) for b in batches) + len(warm)
        expected_head = None
        objs = {}
        todo = impls if "read" in which else [i for i in impls if i in VERIFIERS]
        for impl in todo:
            path = fresh_dir(tmp, f"read-{impl}")
            build_store(impl, path, batches, warm).close()
            objs[impl] = FACTORIES[impl](path)  # reopened: loads the stream from disk
        # Write back the stores (and earlier scenarios' data) now: otherwise the kernel's
        # flusher threads do it during the timed reads, on the same two CPUs (verify of
        # 16 KiB events measured 130% of the chain limit after the append scenarios, 150%
        # alone).
        os.sync()
        # cross-check: kimberlite reads the pure peer's files, and the heads agree
        if "pure" in objs and "kimberlite" in objs:
            import logging

            logging.getLogger("kimberlite").setLevel(logging.ERROR)  # "index missing" notes
            with kimberlite.Storage(os.path.join(tmp, "read-pure"), read_only=True) as chk:
                head_pure = objs["pure"].log.latest_chain_hash(STREAM)
                if chk.latest_chain_hash(STREAM) != head_pure or \
                        objs["kimberlite"].log.latest_chain_hash(STREAM) != head_pure:
                    raise SystemExit("cross-check failed: pure peer and kimberlite disagree")
                expected_head = head_pure
        for impl, obj in objs.items():  # warm-up: the first read loads the stream
            got = obj.read_from(0)
            assert len(got) == n, (impl, len(got), n)
            del got
        for scen in which:
            if scen == "verify":
                vimpls = [i for i in objs if i in VERIFIERS]
            else:
                vimpls = list(objs)
            if not vimpls:
                continue
            ev_s = {i: [] for i in vimpls}
            ev_s["hash"] = []
            ev_s["hash_par"] = []
            print(f"  {scen} {size} B x {n} events", flush=True)
            for r in range(args.runs):
                for impl in order_for(r, vimpls):
                    obj = objs[impl]
                    best = None
                    for _ in range(args.inner):  # best of --inner calls per round
                        with quiet_gc():
                            t0 = time.perf_counter()
                            if scen == "read":
                                got = obj.read_from(0)
                            else:
                                got = obj.verify()
                            dt = time.perf_counter() - t0
                        if scen == "read":
                            assert len(got) == n
                        else:
                            assert got[0] == n and (expected_head is None or impl == "lmdb"
                                                    or got[1] == expected_head)
                        del got
                        best = dt if best is None else min(best, dt)
                    ev_s[impl].append(n / best)
                ns = hashlim.ns_per_event(size, n)
                ev_s["hash"].append(1e9 / ns if ns else None)
                ns = hashlim.ns_per_event(size, n, threads=args.pool)
                ev_s["hash_par"].append(1e9 / ns if ns else None)
            for k in ("hash", "hash_par"):
                if not any(ev_s[k]):
                    del ev_s[k]
            summ = summarise(ev_s, True)
            results.add(scenario=scen, threads=args.pool, size=size, variant=None, metric="events/s",
                        higher_is_better=True, events=n, runs=ev_s, **summ,
                        mb_s={k: v * size / MB for k, v in summ["median"].items()})
        for impl, obj in objs.items():
            obj.close()
            drop(os.path.join(tmp, f"read-{impl}"))


def scenario_scaling(args, tmp, hashlim, results, data):
    """verify and read_from of 16 KiB events with read pools of 1, 2, ... CPUs."""
    size = 16384
    batches, warm = read_data(size, args, data)
    n = sum(len(b) for b in batches) + len(warm)
    path = fresh_dir(tmp, "scaling")
    build_store("kimberlite", path, batches, warm).close()
    os.sync()  # no writeback during the timed reads (scenario_read_verify)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for threads in range(1, max(cpus, 1) + 1):
        st = kimberlite.Storage(path, read_only=True, read_threads=threads)
        st.read_from(STREAM, 0)  # loads the stream, starts the pool
        ev_s = {"verify": [], "read": [], "hash": [], "hash_par": []}
        print(f"  scaling: {threads} thread(s), 16 KiB x {n} events", flush=True)
        for _ in range(args.runs):
            for what in ("verify", "read"):
                best = None
                for _ in range(args.inner):
                    with quiet_gc():
                        t0 = time.perf_counter()
                        got = st.verify(STREAM) if what == "verify" else st.read_from(STREAM, 0)
                        dt = time.perf_counter() - t0
                    del got
                    best = dt if best is None else min(best, dt)
                ev_s[what].append(n / best)
            ns = hashlim.ns_per_event(size, n)
            ev_s["hash"].append(1e9 / ns if ns else None)
            ns = hashlim.ns_per_event(size, n, threads=threads)
            ev_s["hash_par"].append(1e9 / ns if ns else None)
        st.close()
        med = {k: median(v) for k, v in ev_s.items() if v and all(v)}
        ratios = {}
        for what in ("verify", "read"):
            for lim in ("hash", "hash_par"):
                if lim in med:
                    ratios[f"{what}/{lim}"] = paired_ratio(ev_s[what], ev_s[lim], True)
        results.add(scenario="scaling", size=size, variant=f"{threads}", threads=threads,
                    metric="events/s", higher_is_better=True, events=n, runs=ev_s,
                    median=med, ratios=ratios,
                    mb_s={k: v * size / MB for k, v in med.items()})
    drop(path)


# ---- the big store: built (and RSS measured) in a subprocess per peer

RSS_SCRIPT = r"""
import json, os, sys, time
sys.path[:0] = json.loads(sys.argv[1])
import bench
impl, path, n, batch, size = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])

def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0]) * 1024
    return out

events = bench.make_batches(size, batch, batch, seed=5)[0]  # one batch, appended n/batch times
obj = bench.FACTORIES[impl](path)
reset = False
try:  # reset the peak RSS to the current RSS (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    pass
before = status()
base = before["VmRSS"] if reset else before["VmHWM"]
t0 = time.perf_counter()
for i in range(n // batch):
    obj.append(events, False)
dt = time.perf_counter() - t0
after = status()
obj.close()
print(json.dumps({"rss_before": before["VmRSS"], "hwm_after": after["VmHWM"],
                  "rss_after": after["VmRSS"], "growth": after["VmHWM"] - base,
                  "hwm_reset": reset, "seconds": dt, "events": n}))
"""

OPEN_SCRIPT = r"""
import json, sys, time
sys.path[:0] = json.loads(sys.argv[1])
impl, path, stream = sys.argv[2], sys.argv[3], int(sys.argv[4])
if impl == "kimberlite":
    import kimberlite
    t0 = time.perf_counter()
    s = kimberlite.Storage(path, read_only=True)
    n = s.next_offset(stream)
    tail = s.read_from(stream, n - 10)
    t1 = time.perf_counter()
    s.close()
elif impl == "sqlite3":
    import sqlite3
    t0 = time.perf_counter()
    db = sqlite3.connect("file:" + path + "/events.db?mode=ro", uri=True)
    n = db.execute("SELECT max(offset) FROM events WHERE stream = ?", (stream,)).fetchone()[0] + 1
    tail = [p for (p,) in db.execute(
        "SELECT payload FROM events WHERE stream = ? AND offset >= ? ORDER BY offset",
        (stream, n - 10))]
    t1 = time.perf_counter()
    db.close()
elif impl == "lmdb":
    import lmdb, struct
    K = struct.Struct(">QQ")
    t0 = time.perf_counter()
    env = lmdb.open(path, readonly=True, lock=False, readahead=False)
    with env.begin() as txn:
        cur = txn.cursor()
        if cur.set_range(K.pack(stream + 1, 0)):
            cur.prev()
        else:
            cur.last()
        n = K.unpack(cur.key())[1] + 1
        cur.set_key(K.pack(stream, n - 10))
        tail = [v for _, v in zip(range(10), cur.iternext(keys=False, values=True))]
    t1 = time.perf_counter()
    env.close()
elif impl == "pure":
    import peer_pure
    t0 = time.perf_counter()
    log = peer_pure.PureLog(path)
    n = log.next_offset(stream)
    tail = log.read_from(stream, n - 10)
    t1 = time.perf_counter()
    log.close()
assert len(tail) == 10, len(tail)
print(json.dumps({"inside_s": t1 - t0, "n": n}))
"""


def subprocess_path() -> str:
    return json.dumps([HERE, KIMBERLITE_PARENT])


def scenario_big(args, tmp, impls, results, scens):
    """rss (building the big stores), then tail and open on them."""
    n_big = args.big_n
    size = args.big_size
    stores = {}
    rss = {i: [] for i in impls}
    build = {i: [] for i in impls}
    rss_runs = args.rss_runs if "rss" in scens else 1
    big_impls = [i for i in impls if i in args.big_peers or i == "kimberlite"]
    print(f"  big stores: {n_big} events of {size} B ({rss_runs} build(s) per peer)", flush=True)
    for r in range(rss_runs):
        for impl in order_for(r, big_impls):
            path = fresh_dir(tmp, f"big-{impl}")
            out = subprocess.run(
                [sys.executable, "-c", RSS_SCRIPT, subprocess_path(), impl, path, str(n_big),
                 str(args.batch), str(size)],
                capture_output=True, text=True, cwd=HERE)
            if out.returncode:
                raise SystemExit(f"rss subprocess ({impl}) failed:\n{out.stderr}")
            d = json.loads(out.stdout.strip().splitlines()[-1])
            rss[impl].append(d["growth"])
            build[impl].append(d["events"] / d["seconds"])
            stores[impl] = path
    if "rss" in scens:
        summ = summarise(rss, False)
        results.add(scenario="rss", size=size, variant=None, metric="bytes", events=n_big,
                    higher_is_better=False, runs=rss, **summ)
        summ = summarise(build, True)
        results.add(scenario="build", size=size, variant=None, metric="events/s",
                    events=n_big, higher_is_better=True, runs=build, **summ,
                    mb_s={k: v * size / MB for k, v in summ["median"].items()})

    if "tail" in scens:
        # both streams open side by side; every round measures the small and the big one
        # of each peer back to back, so their ratio is paired
        small_batches = make_batches(size, 1000, args.batch, seed=6)
        handles = {}
        for impl in big_impls:
            path = fresh_dir(tmp, f"small-{impl}")
            build_store(impl, path, small_batches[1:], small_batches[0]).close()
            for label, p, count in (("small", path, 1000), ("big", stores[impl], n_big)):
                obj = FACTORIES[impl](p)
                n = obj.next_offset()
                assert n == count, (impl, n, count)
                assert len(obj.read_from(n - 10)) == 10  # loads the stream: not timed
                handles[impl, label] = (obj, n)
        per = {"small": {i: [] for i in big_impls}, "big": {i: [] for i in big_impls}}
        blocks = 10  # small and big alternate in blocks, so that noise hits both alike
        calls = max(1, args.tail_calls // blocks)
        for r in range(args.runs):
            for impl in order_for(r, big_impls):
                times = {"small": [], "big": []}
                for k in range(blocks):
                    for label in (("small", "big") if (r + k) % 2 == 0 else ("big", "small")):
                        obj, n = handles[impl, label]
                        with quiet_gc():
                            t0 = time.perf_counter()
                            for _ in range(calls):
                                obj.read_from(n - 10)
                            dt = time.perf_counter() - t0
                        times[label].append(dt / calls)
                for label in times:
                    per[label][impl].append(statistics.median(times[label]))
        for (impl, label), (obj, n) in handles.items():
            obj.close()
            if label == "small":
                drop(os.path.join(tmp, f"small-{impl}"))
        for label, count in (("small", 1000), ("big", n_big)):
            summ = summarise(per[label], False)
            results.add(scenario="tail", size=size, variant=f"n={count}", metric="s/call",
                        higher_is_better=False, events=count, runs=per[label], **summ)
        # the ratio that matters: the same read on the big stream vs on the small one
        scale = {impl: paired_ratio(per["big"][impl], per["small"][impl], True)
                 for impl in big_impls}  # big time / small time, per round
        results.add(scenario="tail_scale", size=size, variant=f"{n_big}/1000", metric="ratio",
                    higher_is_better=False, events=n_big, runs={}, median=scale, ratios={})

    if "open" in scens:
        inside = {i: [] for i in big_impls}
        wall = {i: [] for i in big_impls}
        baseline = []
        # Bytecode cached, as for an installed package (see the scenario's description).
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
        for impl in big_impls:  # unmeasured: fills the bytecode cache
            subprocess.run([sys.executable, "-c", OPEN_SCRIPT, subprocess_path(), impl,
                            stores[impl], str(STREAM)], capture_output=True, cwd=HERE, env=env)
        for r in range(args.open_runs):
            # interpreter start-up plus `import kimberlite`, without opening anything
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c",
                            f"import sys, json; sys.path[:0] = json.loads({subprocess_path()!r});"
                            " import kimberlite"], check=True, cwd=HERE, env=env)
            baseline.append(time.perf_counter() - t0)
            for impl in order_for(r, big_impls):
                if impl == "pure" and r >= args.pure_open_runs:
                    continue  # the pure peer scans the whole file to open: few runs
                t0 = time.perf_counter()
                out = subprocess.run(
                    [sys.executable, "-c", OPEN_SCRIPT, subprocess_path(), impl, stores[impl],
                     str(STREAM)], capture_output=True, text=True, cwd=HERE, env=env)
                w = time.perf_counter() - t0
                if out.returncode:
                    raise SystemExit(f"open subprocess ({impl}) failed:\n{out.stderr}")
                d = json.loads(out.stdout.strip().splitlines()[-1])
                assert d["n"] == n_big
                inside[impl].append(d["inside_s"])
                wall[impl].append(w)
        summ = summarise(inside, False)
        results.add(scenario="open", size=size, variant="inside", metric="s", events=n_big,
                    higher_is_better=False, runs=inside, **summ)
        summ = summarise(wall, False)
        results.add(scenario="open", size=size, variant="process", metric="s", events=n_big,
                    higher_is_better=False, runs=wall, **summ,
                    python_import_kimberlite_s=median(baseline))
    for impl, path in stores.items():
        drop(path)


# ==================================================================== targets


def targets(results: Results, args) -> list[dict]:
    """Every target of issue #4, evaluated on this run's medians and paired ratios."""
    out = []

    def add(row_key, what, value, threshold, kind, fmt):
        if value is None:
            out.append({"row": row_key, "target": what, "value": None, "met": None,
                        "shown": "not measured"})
            return
        met = value >= threshold if kind == ">=" else value <= threshold
        out.append({"row": row_key, "target": what, "value": value, "threshold": threshold,
                    "met": met, "shown": fmt(value)})

    x = lambda v: f"{v:.2f}x"  # noqa: E731
    pct = lambda v: f"{100 * v:.0f}%"  # noqa: E731

    a100 = results.find("append", 100, "fsync=False")
    if a100:
        add("append-100", "append 100 B >= 10x pure Python", a100["ratios"].get("pure"), 10, ">=", x)
        add("append-100", "append 100 B >= 5x sqlite3", a100["ratios"].get("sqlite3"), 5, ">=", x)
        add("append-100", "append 100 B >= 50% of the hashing limit",
            a100["ratios"].get("hash"), 0.5, ">=", pct)
    a16 = results.find("append", 16384, "fsync=False")
    if a16:
        add("append-16384", "append 16 KiB >= 80% of the hashing limit",
            a16["ratios"].get("hash"), 0.8, ">=", pct)
    r100 = results.find("read", 100)
    if r100:
        add("read-100", "read_from 100 B >= 10x pure Python", r100["ratios"].get("pure"), 10, ">=", x)
        add("read-100", "read_from 100 B >= 2x sqlite3", r100["ratios"].get("sqlite3"), 2, ">=", x)
    r16 = results.find("read", 16384)
    if r16:
        add("read-16384", "read_from 16 KiB >= 80% of the hashing limit",
            r16["ratios"].get("hash"), 0.8, ">=", pct)
    v16 = results.find("verify", 16384)
    if v16:
        add("verify-16384", "verify 16 KiB >= 80% of the hashing limit",
            v16["ratios"].get("hash"), 0.8, ">=", pct)
    # issue #11
    a1k = results.find("append", 1024, "fsync=False")
    if a100:
        add("append-100", "append 100 B >= 80% of the hashing limit",
            a100["ratios"].get("hash"), 0.8, ">=", pct)
    if a1k:
        add("append-1024", "append 1 KiB >= 95% of the hashing limit",
            a1k["ratios"].get("hash"), 0.95, ">=", pct)
    if a16:
        add("append-16384", "append 16 KiB >= 95% of the hashing limit",
            a16["ratios"].get("hash"), 0.95, ">=", pct)
    r1k = results.find("read", 1024)
    if r16:
        add("read-16384", "read_from 16 KiB >= 0.9x lmdb", r16["ratios"].get("lmdb"), 0.9, ">=", x)
        add("read-16384", "read_from 16 KiB >= 1.3x sqlite3", r16["ratios"].get("sqlite3"), 1.3,
            ">=", x)
    if r1k:
        add("read-1024", "read_from 1 KiB >= 1.0x lmdb", r1k["ratios"].get("lmdb"), 1.0, ">=", x)
    if r100:
        add("read-100", "read_from 100 B >= 2x lmdb", r100["ratios"].get("lmdb"), 2.0, ">=", x)
    if v16:
        add("verify-16384", "verify 16 KiB >= 180% of the single-core chain limit",
            v16["ratios"].get("hash"), 1.8, ">=", pct)
    op11 = results.find("open", args.big_size, "inside")
    if op11:
        add("open-inside", f"open + tail of {args.big_n:,} events <= 2x lmdb's time",
            op11["ratios"].get("lmdb"), 0.5, ">=", lambda v: f"{1 / v:.2f}x lmdb's time")
    ts = results.find("tail_scale", args.big_size, f"{args.big_n}/1000")
    if ts:
        add("tail_scale", f"last-10 read on {args.big_n:,} events <= 2x the same on 1,000",
            ts["median"].get("kimberlite"), 2.0, "<=", x)
    op = results.find("open", args.big_size, "inside")
    if op:
        add("open-inside", f"open + tail of a {args.big_n:,}-event store in a new process < 50 ms",
            op["median"].get("kimberlite"), 0.050, "<=", lambda v: f"{v * 1e3:.1f} ms")
    for size in args.sizes:
        fs = results.find("fsync", size, "fsync=True")
        if fs:
            add(f"fsync-{size}", f"batch of {args.batch} x {fmt_size(size)} with fsync=True "
                "<= 1.5x (fsync=False + one fdatasync of a plain file)",
                fs["reference"]["ratio_to_baseline"], 1.5, "<=", x)
    rs = results.find("rss", args.big_size)
    if rs:
        add("rss", f"peak RSS growth appending {args.big_n:,} events < 64 MiB",
            rs["median"].get("kimberlite"), 64 << 20, "<=", lambda v: f"{v / (1 << 20):.1f} MiB")
    return out


# ==================================================================== report


def fmt_size(size: int) -> str:
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"


def fmt_rate(v):
    if v is None:
        return "—"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M/s"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k/s"
    return f"{v:.0f}/s"


def fmt_time(s):
    if s is None:
        return "—"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


def fmt_cell(row, impl):
    v = row["median"].get(impl)
    if v is None:
        return "—"
    m = row["metric"]
    if m == "events/s":
        mbs = v * row["size"] / MB
        return f"{fmt_rate(v)} · {mbs:,.0f} MB/s" if mbs >= 10 else f"{fmt_rate(v)} · {mbs:.1f} MB/s"
    if m in ("s", "s/call", "s/batch"):
        return fmt_time(v)
    if m == "bytes":
        return f"{v / (1 << 20):.1f} MiB"
    if m == "ratio":
        return f"{v:.2f}x"
    return f"{v:.3g}"


def row_title(row, args) -> str:
    s, size = row["scenario"], row["size"]
    if s == "append":
        return f"append {fmt_size(size)}, batches of {args.batch}, fsync=False (events/s)"
    if s == "fsync":
        return f"append {fmt_size(size)}, batch of {args.batch}, fsync=True (time per batch)"
    if s == "read":
        return f"read_from whole stream, {fmt_size(size)} × {row['events']:,}"
    if s == "verify":
        return f"verify whole stream, {fmt_size(size)} × {row['events']:,}"
    if s == "tail":
        return f"last 10 events of a stream of {row['events']:,} (per call)"
    if s == "tail_scale":
        return f"last-10 read: {row['events']:,} events / 1,000 events (time ratio)"
    if s == "open" and row["variant"] == "inside":
        return f"new process: open + tail of {row['events']:,} events (timed inside)"
    if s == "open":
        return f"new process: whole process wall time, same ({row['events']:,} events)"
    if s == "rss":
        return f"peak RSS growth appending {row['events']:,} × {fmt_size(size)} (disk, fsync=False)"
    if s == "build":
        return f"append {row['events']:,} × {fmt_size(size)} in one process (events/s)"
    return s


def row_key(row) -> str:
    s = row["scenario"]
    if s in ("append", "fsync", "read", "verify"):
        return f"{s}-{row['size']}"
    if s == "open":
        return f"open-{row['variant']}"
    return s


def ratio_cell(row, peer):
    v = row["ratios"].get(peer)
    if v is None:
        return "—"
    if peer in ("hash", "hash_par", "floor"):
        return f"{100 * v:.0f}%"
    return f"{v:.2f}x"


def markdown(meta, results: Results, tgts, args, impls) -> str:
    peers = [p for p in impls if p != "kimberlite"]
    rows = [r for r in results.rows if r["scenario"] != "scaling"]
    has_hash = any("hash" in r["median"] for r in rows)
    has_par = any("hash_par" in r["median"] for r in rows)
    cols = ["scenario", "kimberlite"] + [LABEL[p] for p in peers]
    if has_hash:
        cols.append("hash limit")
    if has_par:
        cols.append(f"parallel limit ({args.pool} threads)")
    cols += [f"vs {LABEL[p]}" for p in peers]
    if has_hash:
        cols.append("% of hash limit")
    if has_par:
        cols.append("% of parallel limit")
    cols.append("target / met?")
    by_row = {}
    for t in tgts:
        by_row.setdefault(t["row"], []).append(t)
    lines = []
    lines.append(f"Kimberlite benchmarks — {meta['date']}")
    lines.append("")
    lines.append(
        f"CPU: {meta['cpu']} ({meta['cpu_count']} CPUs, SHA extensions: "
        f"{'yes' if meta['sha_extensions'] else 'no'}); Python {meta['python']}; "
        f"{meta['openssl']}; kimberlite {meta['kimberlite']}; SQLite {meta['sqlite']}; "
        f"lmdb {meta['lmdb'] or 'not installed'}; data on {meta['tmpdir']['fstype']} "
        f"({meta['tmpdir']['path']})."
    )
    lines.append("")
    lines.append(
        f"Medians of {args.runs} rounds (the new-process open: of {args.open_runs} runs; the "
        f"RSS rows: of {args.rss_runs} builds; peers interleaved in each round; append, read and "
        f"verify keep the best of {args.inner} measurements within a round); ratios are medians "
        "of the per-round ratios, kimberlite ÷ peer for throughputs and peer ÷ kimberlite "
        "for times, so > 1x means kimberlite is faster. Throughput: events/s and payload MB/s."
    )
    lines.append("")
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(cols) - 2) + ["---"]) + "|")
    for row in rows:
        cells = [row_title(row, args), fmt_cell(row, "kimberlite")]
        cells += [fmt_cell(row, p) for p in peers]
        if has_hash:
            cells.append(fmt_cell(row, "hash"))
        if has_par:
            cells.append(fmt_cell(row, "hash_par"))
        if row["scenario"] == "tail_scale":  # each column is that peer's own ratio
            cells += ["—" for p in peers]
        else:
            cells += [ratio_cell(row, p) for p in peers]
        if has_hash:
            cells.append(ratio_cell(row, "hash"))
        if has_par:
            cells.append(ratio_cell(row, "hash_par"))
        ts = by_row.get(row_key(row), [])
        if row["scenario"] == "open" and row.get("python_import_kimberlite_s"):
            extra = (f"`python -c 'import kimberlite'` alone: "
                     f"{fmt_time(row['python_import_kimberlite_s'])}; ")
        elif row["scenario"] == "append" and "floor" in row["median"]:
            extra = (f"append floor {fmt_cell(row, 'floor')}, kimberlite "
                     f"{ratio_cell(row, 'floor')} of it; ")
        elif row["scenario"] == "fsync":
            ref = row["reference"]
            extra = (f"ref: nosync {fmt_time(ref['kimberlite_nosync_s'])} + fdatasync "
                     f"{fmt_time(ref['plain_fdatasync_s'])}; ")
        else:
            extra = ""
        verdicts = [f"{t['target']}: {t['shown']} "
                    f"{'✅' if t['met'] else ('❌' if t['met'] is False else '')}".rstrip()
                    for t in ts]
        cells.append("; ".join([extra.rstrip("; ")] + verdicts if extra else verdicts))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    scaling = [r for r in results.rows if r["scenario"] == "scaling"]
    if scaling:
        lines.append("")
        lines.append(f"Scaling: verify and read_from of 16 KiB × {scaling[0]['events']:,} events "
                     "by read pool size (`--threads`; the caller is one of the threads):")
        lines.append("")
        lines.append("| threads | verify | read_from | chain limit (1 core) | parallel limit | "
                     "verify % of chain limit | verify % of parallel limit | "
                     "read % of parallel limit |")
        lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in scaling:
            med, rat = r["median"], r["ratios"]
            mbs = lambda k: f"{med[k] * 16384 / MB:,.0f} MB/s" if k in med else "—"  # noqa: E731
            pc = lambda k: f"{100 * rat[k]:.0f}%" if rat.get(k) else "—"  # noqa: E731
            lines.append(f"| {r['threads']} | {mbs('verify')} | {mbs('read')} | {mbs('hash')} | "
                         f"{mbs('hash_par')} | {pc('verify/hash')} | {pc('verify/hash_par')} | "
                         f"{pc('read/hash_par')} |")
    lines.append("")
    lines.append("Targets (issues #4 and #11):")
    lines.append("")
    lines.append("| target | measured | met? |")
    lines.append("|---|---:|---|")
    for t in tgts:
        lines.append(f"| {t['target']} | {t['shown']} | "
                     f"{'yes' if t['met'] else ('no' if t['met'] is False else '—')} |")
    met = sum(1 for t in tgts if t["met"])
    lines.append("")
    lines.append(f"{met} of {len(tgts)} targets met.")
    lines.append("")
    lines.append("Notes: sqlite3 and lmdb do not verify anything on read (no CRC, no chain); "
                 "kimberlite and the pure-Python peer check every record returned. The hashing "
                 "limit is the SHA-256 chain alone, in C, over the same number of events: "
                 "appends cannot beat it, since each hash needs the one before. Reads and "
                 "verify know every record's stored prev_hash, so their limit is the parallel "
                 f"one: the same hashes split over {args.pool} threads (kimberlite's read pool "
                 "size in this run). The append floor (benchmarks/hashlimit.c with a directory) "
                 "is the chain on one thread while another only copies the records and "
                 "pwrites them to a file beside the stores, with no CRC and no waiting: what "
                 "an append can reach on these CPUs and this file system. "
                 "lmdb's verify is a scan of every value (it has no checks). "
                 "Reads are from a warm page cache.")
    return "\n".join(lines) + "\n"


def plot(results: Results, impls, path: str, meta: dict | None = None) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series = [i for i in impls] + ["hash", "hash_par"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    style = {"kimberlite": ("o-", 2.5), "pure": ("s--", 1.5), "sqlite3": ("^--", 1.5),
             "lmdb": ("v--", 1.5), "hash": ("k:", 1.5), "hash_par": ("k-.", 1.2)}
    for row_i, scen in enumerate(("append", "read")):
        rows = sorted([r for r in results.rows if r["scenario"] == scen], key=lambda r: r["size"])
        if not rows:
            continue
        for col, unit in enumerate(("MB/s", "events/s")):
            ax = axes[row_i][col]
            for s in series:
                xs, ys = [], []
                for r in rows:
                    v = r["median"].get(s)
                    if v:
                        xs.append(r["size"])
                        ys.append(v * r["size"] / MB if unit == "MB/s" else v)
                if xs:
                    fmt, lw = style.get(s, ("-", 1))
                    ax.plot(xs, ys, fmt, linewidth=lw, label=LABEL[s])
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks([r["size"] for r in rows])
            ax.set_xticklabels([fmt_size(r["size"]) for r in rows])
            ax.set_xlabel("event size")
            what = "append, batches of 1000, fsync=False" if scen == "append" else \
                "read_from of a whole stream (verified: kimberlite, pure)"
            ax.set_title(f"{what}", fontsize=9)
            ax.set_ylabel(unit)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("Kimberlite throughput by event size vs peers (medians, higher is better)")
    if meta:
        fig.text(0.5, 0.005, f"{meta['date'][:10]} · {meta['cpu']} · Python {meta['python']} · "
                 f"{meta['openssl']} · SQLite {meta['sqlite']} · lmdb {meta['lmdb'] or '—'} · "
                 "python benchmarks/bench.py", ha="center", fontsize=7, color="0.4")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ==================================================================== main


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Kimberlite vs peers: append, fsync, read, verify, tail, open, rss.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Scenarios" + __doc__.split("Scenarios", 1)[1].split("Writes", 1)[0].rstrip())
    p.add_argument("--quick", action="store_true", help="a ~30 s smoke run: fewer rounds, "
                   "smaller data, a 200,000-event big store")
    p.add_argument("--out", default=os.path.join(HERE, "results"),
                   help="directory for bench-<date>.json/.md (default benchmarks/results)")
    p.add_argument("--plot", default=os.path.join(HERE, "throughput.png"),
                   help="where to write the PNG (default benchmarks/throughput.png)")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    p.add_argument("--scenarios", default=",".join(ALL_SCENARIOS),
                   help="comma-separated subset of: " + ",".join(ALL_SCENARIOS))
    p.add_argument("--peers", default="pure,sqlite3,lmdb",
                   help="comma-separated peers (pure,sqlite3,lmdb); lmdb is skipped when "
                        "not installed")
    p.add_argument("--sizes", default="100,1024,16384", help="event sizes in bytes")
    p.add_argument("--batch", type=int, default=1000, help="events per batch")
    p.add_argument("--runs", type=int, help="rounds per figure (default 5, quick 3)")
    p.add_argument("--inner", type=int, default=2,
                   help="append/read/verify: measurements per peer per round, the best kept "
                        "(absorbs the page-allocation stalls of a shared VM; default 2)")
    p.add_argument("--budget-mb", type=int, help="payload MiB per append/read run "
                   "(default 32, quick 4)")
    p.add_argument("--max-events", type=int, help="events per append/read run at most "
                   "(default 100000, quick 20000)")
    p.add_argument("--min-batches", type=int, help="batches per append run at least "
                   "(default 4, quick 2)")
    p.add_argument("--sync-batches", type=int, help="fsync=True batches per round "
                   "(default 5, quick 2)")
    p.add_argument("--big-n", type=int, help="events in the big store (default 1000000, "
                   "quick 200000)")
    p.add_argument("--big-size", type=int, default=100, help="event size in the big store")
    p.add_argument("--big-peers", default="pure,sqlite3,lmdb",
                   help="peers that also build a big store (tail/open/rss)")
    p.add_argument("--rss-runs", type=int, help="big-store builds per peer (default 3, quick 1)")
    p.add_argument("--open-runs", type=int, help="new-process open runs (default 7, quick 3)")
    p.add_argument("--pure-open-runs", type=int, default=1,
                   help="new-process open runs for the pure peer (it scans the whole file)")
    p.add_argument("--tail-calls", type=int, default=500,
                   help="last-10 reads per stream per round, in 10 blocks alternating between "
                        "the small and the big stream (a round keeps the median block)")
    p.add_argument("--threads", type=int, help="pin kimberlite's read pool to N threads "
                   "(KIMBERLITE_READ_THREADS=N) and the parallel limit to N threads; default: "
                   "kimberlite's own choice (one per CPU, at most 8)")
    p.add_argument("--scaling", action="store_true", help="add the scaling table: verify and "
                   "read_from of 16 KiB events with pools of 1, 2, ... up to the CPUs")
    p.add_argument("--tmpdir", help="parent directory for data (default: the system temp dir "
                   "if it is on a real disk)")
    p.add_argument("--keep", action="store_true", help="keep the data directories")
    args = p.parse_args(argv)
    q = args.quick
    defaults = dict(runs=(3, 5), budget_mb=(4, 32), max_events=(20000, 100000),
                    min_batches=(2, 4), sync_batches=(2, 5), big_n=(200000, 1000000),
                    rss_runs=(1, 3), open_runs=(3, 7))
    for k, (quick_v, full_v) in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, quick_v if q else full_v)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    bad = set(args.scenarios) - set(ALL_SCENARIOS)
    if bad:
        p.error(f"unknown scenario(s): {', '.join(sorted(bad))}")
    args.peers = [s for s in args.peers.split(",") if s]
    args.big_peers = [s for s in args.big_peers.split(",") if s]
    if args.threads is not None and not 1 <= args.threads <= 64:
        p.error("--threads must be from 1 to 64")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:  # every Storage of the run, subprocesses included
        os.environ["KIMBERLITE_READ_THREADS"] = str(args.threads)
    args.pool = kimberlite.MemoryStorage().read_threads
    impls = ["kimberlite"] + [p for p in args.peers if p in FACTORIES and p != "kimberlite"]
    if "lmdb" in impls and lmdb is None:
        print("note: lmdb is not installed (pip install lmdb): skipping the lmdb peer",
              file=sys.stderr)
        impls.remove("lmdb")
    parent, tmp_info = pick_tmpdir(args.tmpdir)
    meta = environment(tmp_info)
    started = time.perf_counter()
    print(f"kimberlite {meta['kimberlite']} ({meta['kimberlite_path']}); peers: "
          f"{', '.join(impls[1:])}; data in {tmp_info['path']} ({tmp_info['fstype']})", flush=True)
    tmp = tempfile.mkdtemp(prefix="kimberlite-bench-", dir=parent)
    results = Results()
    try:
        hashlim = HashLimit(tmp)
        meta["hashlimit_build"] = getattr(hashlim, "cmd", None) or hashlim.error
        data = {}
        if "append" in args.scenarios:
            scenario_append(args, tmp, impls, hashlim, results, data)
        if "fsync" in args.scenarios:
            scenario_fsync(args, tmp, impls, hashlim, results, data)
        rv = [s for s in ("read", "verify") if s in args.scenarios]
        if rv:
            scenario_read_verify(args, tmp, impls, hashlim, results, data, rv)
        if args.scaling:
            scenario_scaling(args, tmp, hashlim, results, data)
        data.clear()
        big = [s for s in ("rss", "tail", "open") if s in args.scenarios]
        if big:
            scenario_big(args, tmp, impls, results, big)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    meta["loadavg_end"] = os.getloadavg()
    meta["elapsed_s"] = round(time.perf_counter() - started, 1)
    meta["command"] = " ".join(["python", "benchmarks/bench.py", *(argv or sys.argv[1:])])
    tgts = targets(results, args)
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    config = {k: v for k, v in vars(args).items()}
    config["peers_measured"] = impls
    doc = {"meta": meta, "config": config, "results": results.rows, "targets": tgts}
    jpath = os.path.join(args.out, f"bench-{stamp}.json")
    with open(jpath, "w") as f:
        json.dump(doc, f, indent=2, default=str)
    md = markdown(meta, results, tgts, args, impls)
    mpath = os.path.join(args.out, f"bench-{stamp}.md")
    with open(mpath, "w") as f:
        f.write(md)
    print()
    print(md)
    png = None
    if not args.no_plot:
        png = plot(results, impls, args.plot, meta)
        if png is None:
            print("note: matplotlib is not installed (pip install matplotlib): no plot",
                  file=sys.stderr)
    print(f"wrote {jpath}\nwrote {mpath}" + (f"\nwrote {png}" if png else ""))
    print(f"elapsed {meta['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
