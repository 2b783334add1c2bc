#!/usr/bin/env python3
"""Benchmarks of kimberlite.tlog's pure parts (no Storage): proof verification, checkpoint
signing and opening, leaf hashing. The Storage-side figures of issue 10 (catch-up, tree_root
in a new process, proof generation from tile files) need the Storage integration and are not
measured here.

    python benchmarks/bench_tlog.py            # default: 1,000,000-leaf tree shapes
    python benchmarks/bench_tlog.py --size 65536 --rounds 7

Each figure is the median over --rounds rounds of the mean per-call time of a batch of
calls, with the Python call overhead included (that is what a user pays). The proofs are
made for a tree of --size leaves whose leaves are random 32-byte hashes; their verification
cost depends only on the shape (log2 size hashes), so the proofs are computed once with the
reference recursion below, not with the library.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time

from kimberlite import tlog




def timed(fn, n: int, rounds: int) -> float:
    """Median over rounds of the mean seconds per call."""
    per = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        per.append((time.perf_counter() - t) / n)
    return statistics.median(per)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=2000)
    a = ap.parse_args()

    # A tree of --size random entries; proofs via the list helper are O(n) per call, so
    # build a smaller tree of the same depth pattern for proof shapes when size is large.
    n = a.size
    entries = [hashlib.sha256(i.to_bytes(8, "little")).digest() for i in range(n)]
    t0 = time.perf_counter()
    root = tlog._tree_root(entries)
    t_root = time.perf_counter() - t0
    i = n // 3
    t0 = time.perf_counter()
    proof = tlog._inclusion_proof(entries, i, n)
    t_incl_list = time.perf_counter() - t0
    leaf = tlog.leaf_hash(entries[i])
    old = n // 2 + 1
    cproof = tlog._consistency_proof(entries, old, n)
    old_root = tlog._tree_root(entries[:old])

    skey, vkey = tlog.generate_key("bench.example/log")
    signer = tlog.Signer(skey)
    verifier = tlog.Verifier(vkey)
    cp = signer.sign_checkpoint("bench.example/log/1", n, root)

    rows = [
        ("verify_inclusion", f"{len(proof)} hashes",
         timed(lambda: tlog.verify_inclusion(leaf, i, n, proof, root), a.calls, a.rounds)),
        ("verify_consistency", f"{len(cproof)} hashes",
         timed(lambda: tlog.verify_consistency(old, n, cproof, old_root, root), a.calls, a.rounds)),
        ("Signer.sign_checkpoint", "format + Ed25519 sign (EVP key load per call)",
         timed(lambda: signer.sign_checkpoint("bench.example/log/1", n, root), a.calls // 4, a.rounds)),
        ("open_checkpoint", "parse + Ed25519 verify",
         timed(lambda: tlog.open_checkpoint(cp.note, verifier), a.calls // 4, a.rounds)),
        ("leaf_hash", "32-byte entry",
         timed(lambda: tlog.leaf_hash(entries[0]), a.calls * 10, a.rounds)),
        ("_tree_root (list helper)", f"{n} entries, once", t_root),
        ("_inclusion_proof (list helper)", f"{n} entries, once, O(n)", t_incl_list),
    ]
    try:  # the same machine's Ed25519 cost through another library, for scale
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError:  # pragma: no cover
        pass
    else:
        k = Ed25519PrivateKey.generate()
        pub, msg = k.public_key(), cp.note.split(b"\n\n")[0] + b"\n"
        sig = k.sign(msg)
        rows.append(("(cryptography) Ed25519 sign", "reference",
                     timed(lambda: k.sign(msg), a.calls // 4, a.rounds)))
        rows.append(("(cryptography) Ed25519 verify", "reference",
                     timed(lambda: pub.verify(sig, msg), a.calls // 4, a.rounds)))
    print(f"kimberlite.tlog, tree of {n} leaves, median of {a.rounds} rounds "
          f"({os.cpu_count()} CPUs)\n")
    print(f"| operation | what | time per call |\n|---|---|---|")
    for name, what, sec in rows:
        print(f"| {name} | {what} | {sec * 1e6:,.1f} µs |")


if __name__ == "__main__":
    main()
