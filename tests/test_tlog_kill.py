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


def test_kill_rounds(tmp_path):
    d = tmp_path / "d"
    rng = random.Random(7)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    last = None
    for rnd in range(6):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(d), SKEY], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert p.stdout.readline() == b"ready\n", p.stderr.read()
            time.sleep(rng.uniform(0.05, 0.4))
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
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
            nxt = s.checkpoint(1, tlog.Signer(SKEY))
            assert nxt.tree_size == n
            last = nxt
        # a killed writer's leftover temporary file is replaced by the next checkpoint
        assert not (d / "1" / "checkpoint.tmp").exists()
