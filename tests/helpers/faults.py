"""Helpers of the fault, crash and concurrency tests (test_faults*, test_crash*, test_torn*,
test_concurrency*): deterministic payloads, a model of what a stream must hold, and checks
of a reopened data directory against it.

Payloads are a pure function of (stream, offset), so any process can tell whether the record
at an offset is the right one, whichever process wrote it and however many crashes happened
in between.
"""
import hashlib
import os
import subprocess
import sys

from . import codec
from . import child_env, seg_path, segment_files, stream_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def payload(sid, k):
    """The event at offset k of stream sid: 0..~230 bytes, content tied to (sid, k)."""
    h = hashlib.sha256(b"%d:%d" % (sid, k)).digest()
    return b"%d:%d|" % (sid, k) + h * (h[0] % 7)


def payloads(sid, start, n):
    return [payload(sid, k) for k in range(start, start + n)]


def check_stream(s, sid, n):
    """s holds exactly n records in sid, each with the right content, and the chain verifies
    from genesis (verify checks every CRC, offset and link, and the head recomputed here)."""
    assert s.next_offset(sid) == n
    got = s.read_from(sid)
    want = payloads(sid, 0, n)
    assert got == want, _first_difference(got, want)
    head = codec.head_hash(want) if n else None
    assert s.latest_chain_hash(sid) == head
    assert s.verify(sid, expected_head=head) == (n, head)


def _first_difference(got, want):
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return f"record {i} differs: {a[:40]!r} != {b[:40]!r}"
    return f"lengths differ: {len(got)} records != {len(want)}"


def last_segment_residue(data_dir, sid):
    """(name, valid_end, residue): what the independent codec says about the stream's last
    segment file: where its last whole valid record ends and the bytes after it."""
    names = segment_files(data_dir, sid)
    if not names:
        return None, 0, b""
    name = names[-1]
    with open(os.path.join(stream_dir(data_dir, sid), name), "rb") as f:
        data = f.read()
    end = 0
    for _off, _prev, pl in _iter_valid(data):
        end += codec.record_size(len(pl))
    return name, end, data[end:]


def _iter_valid(data):
    pos = 0
    expected = None
    while pos < len(data):
        try:
            offset, prev, pl, size = codec.decode_record(data, pos)
        except codec.CodecError:
            return
        if expected is not None and offset != expected:
            return
        expected = offset + 1
        yield offset, prev, pl
        pos += size


def torn_contents(data_dir, sid):
    """{name: bytes} of the stream's quarantine files."""
    d = stream_dir(data_dir, sid)
    out = {}
    for n in sorted(os.listdir(d)):
        if "torn" in n:
            with open(os.path.join(d, n), "rb") as f:
                out[n] = f.read()
    return out


def run_child(code, *args, timeout=60, check=True, **kw):
    """Run `code` in a fresh interpreter that imports the same kimberlite and tests/."""
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                       text=True, env=child_env(), timeout=timeout, **kw)
    if check:
        assert r.returncode == 0, r.stderr
    return r


__all__ = ["payload", "payloads", "check_stream", "last_segment_residue", "torn_contents",
           "run_child", "seg_path", "segment_files", "stream_dir"]
