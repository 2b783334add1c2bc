"""Buffers changed by another thread while `append_batch` is storing them (issue 8, class 1).

Whatever the caller does to its buffers, each stored record must be self-consistent: its
CRC, its payload and the chain hash computed over the same bytes. The content stored may
be any state the buffer went through (here every byte of it is one of the fill values the
mutating thread wrote). Afterwards `verify()` passes and every later append succeeds.

Shapes: a `bytearray` of 60–100 KB and a `memoryview` of it; one event per batch (hashed
inline) and batches of several such events above 256 KiB (hashed on the worker threads);
the disk backend, checked again with an independent decoder (tests/helpers/codec.py) on the files,
and MemoryStorage.
"""
import random
import threading

import pytest

import kimberlite as km
from helpers import codec
from helpers import stream_dir

FILLS = bytes(range(0x41, 0x41 + 16))        # the byte values the mutator writes
ROUNDS = {"inline": 400, "worker": 60}     # batches per test (~1 s each on a small machine)


class Mutator:
    """Keeps rewriting random slices of the buffers with one of FILLS until stopped."""

    def __init__(self, bufs, seed):
        self.bufs = bufs
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.changes = 0

    def run(self):
        rng = self.rng
        pages = {v: bytes([v]) * max(len(b) for b in self.bufs) for v in FILLS}
        while not self.stop.is_set():
            b = self.bufs[rng.randrange(len(self.bufs))]
            a = rng.randrange(len(b))
            z = rng.randrange(a, len(b) + 1) if rng.random() < 0.7 else len(b)
            b[a:z] = pages[rng.choice(FILLS)][:z - a]
            self.changes += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _check_self_consistent(records):
    """records: [(offset, prev_hash, payload)]: offsets 0.., every prev_hash the chain hash
    of the payloads stored before it, every payload made of fill values or the later
    events' known bytes."""
    prev = None
    for i, (off, ph, payload) in enumerate(records):
        assert off == i
        assert ph == (codec.ZERO_HASH if prev is None else prev), f"broken link at {off}"
        prev = codec.chain_hash(prev, payload)
    return prev


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["inline", "worker"])
@pytest.mark.parametrize("form", ["bytearray", "memoryview"])
def test_buffer_mutated_during_append(backend, form, shape, tmp_path):
    rng = random.Random(f"{backend.kind}-{form}-{shape}")
    n_bufs = 1 if shape == "inline" else 5            # 5 x 60-100 KB >= 256 KiB
    bufs = [bytearray(bytes([FILLS[0]]) * rng.randrange(60_000, 100_001)) for _ in range(n_bufs)]
    if shape == "worker":
        while sum(map(len, bufs)) < 256 * 1024:
            bufs.append(bytearray(bytes([FILLS[0]]) * 80_000))
    events = bufs if form == "bytearray" else [memoryview(b) for b in bufs]
    s = backend.open(max_segment_size=1 << 20)
    n = 0
    with Mutator(bufs, seed=rng.random()) as m:
        for _ in range(ROUNDS[shape]):
            n = s.append_batch(1, events, fsync=False)
    assert m.changes > ROUNDS[shape], "the buffers were hardly changed: the race was not exercised"
    assert n == ROUNDS[shape] * len(bufs)
    assert s.verify(1)[0] == n
    recs = s.read_records(1)
    stored = [(r.offset, r.prev_hash or codec.ZERO_HASH, r.payload) for r in recs]
    head = _check_self_consistent(stored)
    assert s.latest_chain_hash(1) == head
    for i, (_o, _p, payload) in enumerate(stored):
        assert len(payload) == len(bufs[i % len(bufs)])
        assert set(payload) <= set(FILLS), f"record {i}: bytes the buffer never held"
    for k in range(3):                                  # the stream still takes appends
        assert s.append_batch(1, [b"after-%d" % k]) == n + k + 1
    assert s.verify(1)[0] == n + 3
    if backend.is_disk:
        s.close()
        _images, recs = codec.read_stream_dir(stream_dir(backend.data_dir, 1))
        assert [p for _o, _h, p in recs] == [p for _o, _h, p in stored] + \
            [b"after-%d" % k for k in range(3)]
        with km.Storage(backend.data_dir) as s2:
            assert s2.verify(1)[0] == n + 3
            assert s2.append_batch(1, [b"reopened"]) == n + 4
