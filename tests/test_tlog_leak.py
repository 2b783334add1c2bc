"""kimberlite.tlog keeps memory flat over many calls, error paths included (reference leaks,
buffers, note allocations, loaded signer keys). Method and limit as tests/test_leak.py."""
import gc
import hashlib
import sys

import pytest

from helpers import rss_bytes
from kimberlite import tlog

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/statm")

LIMIT = 3 * 1024 * 1024
ENTRIES = [hashlib.sha256(b"%d" % i).digest() for i in range(200)]
ROOT = tlog._tree_root(ENTRIES)
SKEY, VKEY = tlog.generate_key("leak.example/log")


def _expect(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc:
        return
    raise AssertionError(f"{exc.__name__} not raised")


def _round(i):
    n = 100 + i % 100
    root = tlog._tree_root(ENTRIES[:n])
    proof = tlog._inclusion_proof(ENTRIES, i % n, n)
    leaf = tlog.leaf_hash(ENTRIES[i % n])
    tlog.verify_inclusion(leaf, i % n, n, proof, root)
    _expect(tlog.InvalidProofError, tlog.verify_inclusion, leaf, i % n, n, proof[:-1], root)
    _expect(ValueError, tlog.verify_inclusion, leaf, i % n, n, proof + [b"x"], root)
    _expect(TypeError, tlog.verify_inclusion, leaf, i % n, n, tuple(proof), root)
    cproof = tlog._consistency_proof(ENTRIES, 50, n)
    tlog.verify_consistency(50, n, cproof, tlog._tree_root(ENTRIES[:50]), root)
    _expect(tlog.InvalidProofError, tlog.verify_consistency, 0, n, cproof, root, root)
    signer = tlog.Signer(SKEY)  # loaded and freed every round: the capsule must not leak
    cp = signer.sign_checkpoint("leak.example/log/1", n, root)
    assert tlog.open_checkpoint(cp.note, VKEY) == cp
    _expect(tlog.MalformedNoteError, tlog.open_checkpoint, cp.note[:-1], VKEY)
    _expect(tlog.InvalidSignatureError, tlog.open_checkpoint, cp.note, VKEY, origin="other")
    _expect(ValueError, tlog.Signer, SKEY[:-2])
    _expect(ValueError, tlog.generate_key, "bad name")
    tlog.Verifier(VKEY)
    tlog._parse_proof(tlog._format_proof("inclusion", i % n, n, proof))


@pytest.mark.slow
def test_tlog_calls_keep_memory_flat():
    for i in range(300):
        _round(i)
    gc.collect()
    before = rss_bytes()
    for i in range(3000):
        _round(i)
    gc.collect()
    grown = rss_bytes() - before
    assert grown < LIMIT, f"RSS grew by {grown} bytes over 3000 rounds"
