"""Run risky storage operations in a child interpreter with a timeout and an address-space
limit, so that a hang, a crash or a huge allocation fails one test instead of the suite.

`probe(data_dir, ops)` opens the directory in a fresh interpreter (RLIMIT_AS applied before
`import kimberlite`), runs the operations one by one and returns one `Outcome` per operation:
either the value returned or the exception raised (its class name, whether it is a
`StorageError` and a `CorruptedRecordError`, and its message). A timeout, a death by signal,
or anything the child could not report is a test failure with the child's stderr.

Operations (lists, JSON-encoded for the child):
    ["open", {kwargs of Storage}]        open (or reopen) the directory; closes the previous one
    ["close"]
    ["streams"]
    ["next_offset", sid]
    ["read_from", sid, from_offset, max_bytes]   -> list of payloads (bytes)
    ["read_each", sid, start, stop]      read_from(sid, k, 1) for k in range(start, stop)
    ["verify", sid]                      -> [next_offset, head (bytes or None)]
    ["append", sid, [payload, ...]]      -> new next offset
    ["repair", sid]                      -> the RepairReport's fields as a dict
Payloads travel as hex in the JSON and come back as bytes.
"""
import json
import os
import resource
import subprocess
import sys

import pytest

from . import child_env

GiB = 1 << 30
MiB = 1 << 20

_CHILD = r'''
import json, sys
ops = json.loads(sys.stdin.read())
import kimberlite as km

def enc(v):
    if isinstance(v, (bytes, bytearray)):
        return {"b": bytes(v).hex()}
    if isinstance(v, (list, tuple)):
        return [enc(x) for x in v]
    if isinstance(v, dict):
        return {k: enc(x) for k, x in v.items()}
    return v

def dec_payloads(xs):
    return [bytes.fromhex(x) for x in xs]

s = None
path = ops[0]
for op in ops[1:]:
    name, args = op[0], op[1:]
    try:
        if name == "open":
            if s is not None:
                s.close()
            s = None
            s = km.Storage(path, **args[0])
            value = None
        elif name == "close":
            s.close()
            s = None
            value = None
        elif name == "streams":
            value = list(s.streams())
        elif name == "next_offset":
            value = s.next_offset(args[0])
        elif name == "read_from":
            value = s.read_from(args[0], args[1], args[2])
        elif name == "read_each":
            value = [s.read_from(args[0], k, 1) for k in range(args[1], args[2])]
        elif name == "verify":
            value = list(s.verify(args[0]))
        elif name == "append":
            value = s.append_batch(args[0], dec_payloads(args[1]))
        elif name == "repair":
            r = s.repair(args[0])
            value = {"stream_id": r.stream_id, "next_offset": r.next_offset,
                     "quarantined": [list(q) for q in r.quarantined],
                     "bytes_moved": r.bytes_moved}
        else:
            raise SystemExit("unknown op %r" % (name,))
        out = {"op": name, "ok": True, "value": enc(value)}
    except BaseException as e:
        if isinstance(e, SystemExit):
            raise
        out = {"op": name, "ok": False, "exc": type(e).__name__,
               "storage_error": isinstance(e, km.StorageError),
               "corrupted": isinstance(e, km.CorruptedRecordError),
               "msg": str(e)[:500]}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
if s is not None:
    s.close()
sys.stdout.write("DONE\n")
'''


def _dec(v):
    if isinstance(v, dict) and set(v) == {"b"}:
        return bytes.fromhex(v["b"])
    if isinstance(v, list):
        return [_dec(x) for x in v]
    if isinstance(v, dict):
        return {k: _dec(x) for k, x in v.items()}
    return v


class Outcome:
    """What one operation did in the child: `.ok` and `.value`, or `.exc` (class name),
    `.storage_error`, `.corrupted` and `.msg`."""

    def __init__(self, d):
        self.op = d["op"]
        self.ok = d["ok"]
        self.value = _dec(d.get("value"))
        self.exc = d.get("exc")
        self.storage_error = d.get("storage_error", False)
        self.corrupted = d.get("corrupted", False)
        self.msg = d.get("msg", "")

    def __repr__(self):
        if self.ok:
            v = self.value
            if isinstance(v, list) and len(v) > 4:
                v = f"[{len(v)} items]"
            return f"<{self.op}: ok {v!r}>"
        return f"<{self.op}: {self.exc}: {self.msg[:200]}>"


def limit_as(nbytes):
    """preexec_fn setting RLIMIT_AS (soft and hard) to nbytes. Not under ASan
    (tests/run_sanitized.sh), whose runtime reserves terabytes of shadow address space at
    start and aborts under any such limit (as in test_fork.py and test_special_files.py)."""
    sanitized = (os.environ.get("KIMBERLITE_SANITIZED")
                 or "asan" in os.environ.get("LD_PRELOAD", ""))

    def apply():
        if not sanitized:
            resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
    return apply


def run_python(code, *, stdin="", timeout=20, as_limit=1 * GiB, args=()):
    """Run `code` in a fresh interpreter (same kimberlite, tests/ on the path) under RLIMIT_AS
    and a timeout. A timeout or a death by signal fails the calling test."""
    try:
        r = subprocess.run([sys.executable, "-c", code, *map(str, args)], input=stdin,
                           capture_output=True, text=True, env=child_env(), timeout=timeout,
                           preexec_fn=limit_as(as_limit))
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"child did not finish within {timeout} s (a hang or unbounded work); "
                    f"stderr: {(e.stderr or b'')[-2000:]!r}")
    if r.returncode < 0:
        pytest.fail(f"child killed by signal {-r.returncode}; stderr:\n{r.stderr[-3000:]}")
    return r


def probe(data_dir, ops, *, timeout=20, as_limit=1 * GiB):
    """Run `ops` (see the module docstring) against data_dir in a limited child; return the
    list of Outcome, one per operation."""
    wire = []
    for op in ops:
        if op[0] == "append":
            op = [op[0], op[1], [bytes(p).hex() for p in op[2]]]
        wire.append(op)
    r = run_python(_CHILD, stdin=json.dumps([os.fspath(data_dir)] + wire), timeout=timeout,
                   as_limit=as_limit)
    lines = r.stdout.splitlines()
    if r.returncode != 0 or not lines or lines[-1] != "DONE":
        pytest.fail(f"child failed (exit {r.returncode}) after {len(lines)} operations:\n"
                    f"{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    out = [Outcome(json.loads(line)) for line in lines[:-1]]
    assert len(out) == len(ops)
    return out


def assert_storage_error(o, corrupted=False):
    """o raised a StorageError subclass (a CorruptedRecordError if corrupted), not a
    MemoryError or anything else."""
    assert not o.ok, f"{o.op} succeeded ({o!r}) where an error was required"
    assert o.storage_error, f"{o.op} raised {o.exc} (not a StorageError): {o.msg}"
    if corrupted:
        assert o.corrupted, f"{o.op} raised {o.exc}, not CorruptedRecordError: {o.msg}"
