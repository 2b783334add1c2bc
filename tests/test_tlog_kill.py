"""Kill rounds during integration and checkpointing: a writer appends and checkpoints in a
loop and is killed (SIGKILL) at a random moment; after each kill the stored checkpoint is
intact, covers only records that exist, has their root, and the next checkpoint extends it."""
import os
import random
import signal
import subprocess
import sys
import time

import kimberlite as km
from kimberlite import tlog

SKEY, VKEY = tlog.generate_key("kill.example")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WRITER = r"""
import sys
import kimberlite as km
from kimberlite import tlog
signer = tlog.Signer(sys.argv[2])
with km.Storage(sys.argv[1], max_segment_size=2048) as s:
    i = s.next_offset(1)
    print("ready", flush=True)
    while True:
        s.append_batch(1, [b"ev-%d" % (i + j) for j in range(5)], fsync=(i % 2 == 0))
        i += 5
        s.checkpoint(1, signer)
"""



def _kill_when_ready(p, delay):
    """SIGKILL the child `delay` seconds after it printed "ready"."""
    try:
        assert p.stdout.readline() == b"ready\n", p.stderr.read()
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()

def test_kill_rounds(tmp_path):
    d = tmp_path / "d"
    rng = random.Random(7)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    last = None
    for rnd in range(6):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(d), SKEY], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _kill_when_ready(p, rng.uniform(0.05, 0.4))
        with km.Storage(d) as s:
            cp = s.latest_checkpoint(1)
            assert cp is not None, f"round {rnd}: no checkpoint"
            tlog.open_checkpoint(cp.note, VKEY, origin="kill.example/1")
            n = s.next_offset(1)
            assert cp.tree_size <= n
            assert s.tree_root(1, cp.tree_size) == cp.root_hash
            if last is not None:
                assert cp.tree_size >= last.tree_size
                tlog.verify_consistency(last.tree_size, cp.tree_size,
                                        s.consistency_proof(1, last.tree_size, cp.tree_size),
                                        last.root_hash, cp.root_hash)
            assert s.read_verified(1, checkpoint=cp)[-1] == b"ev-%d" % (cp.tree_size - 1)
            # whatever tree data the kill left, the roots are those of the records
            assert s.tree_root(1) == _reference_root(s)
            nxt = s.checkpoint(1, tlog.Signer(SKEY))
            assert nxt.tree_size == n
            last = nxt
        # a killed writer's leftover temporary file is replaced by the next checkpoint
        assert not (d / "1" / "checkpoint.tmp").exists()


def _reference_root(s, size=None):
    """The root of the stream's first `size` records (all: None), from hashlib alone (RFC
    9162 over chain hashes)."""
    import hashlib
    hs, prev = [], b""
    for p in s.read_from(1)[:size]:
        prev = hashlib.sha256(prev + p).digest()
        hs.append(hashlib.sha256(b"\x00" + prev).digest())

    def mth(x):
        if len(x) == 1:
            return x[0]
        k = 1 << ((len(x) - 1).bit_length() - 1)
        return hashlib.sha256(b"\x01" + mth(x[:k]) + mth(x[k:])).digest()
    return mth(hs)


BUILDER = r"""
import os, sys
import kimberlite as km
d = sys.argv[1]
with km.Storage(d) as s:
    i = s.next_offset(1)
    print("ready", flush=True)
    while True:
        try:
            os.unlink(os.path.join(d, "1", "tree"))  # a full catch-up and whole save each time
        except FileNotFoundError:
            pass
        s._replace_tree_data(1, b"")
        s.tree_root(1)
        s.append_batch(1, [b"more-%d" % (i + j) for j in range(300)], fsync=False)
        i += 300
        s.inclusion_proof(1, i // 2)
        s.flush_indexes()
"""


def test_kill_rounds_while_building_and_saving_tree_data(tmp_path):
    """SIGKILL during large catch-ups (builder thread) and whole saves of the tree data: the
    next process gets the records' roots, never a root from torn tree data."""
    d = tmp_path / "big"
    with km.Storage(d) as s:
        for k in range(10):
            s.append_batch(1, [b"b-%d" % (k * 10000 + j) for j in range(10000)], fsync=False)
    rng = random.Random(11)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for rnd in range(5):
        p = subprocess.Popen([sys.executable, "-c", BUILDER, str(d)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _kill_when_ready(p, rng.uniform(0.02, 0.5))
        with km.Storage(d) as s:
            want = _reference_root(s)
            assert s.tree_root(1) == want, f"round {rnd}"
            n = s.next_offset(1)
            assert s.tree_root(1, n // 3) == _reference_root(s, n // 3)
        with km.Storage(d, read_only=True) as r:  # from the tree data just written
            assert r.tree_root(1) == want
