"""A stored index is never trusted for its size: one larger than its segment could need is
not read at all, and a header claiming more entries than the file holds allocates nothing.
Either way the index is rebuilt from the segment, and the stream reads whole.

Each case runs in a child process with an address-space limit (1 GiB) and a timeout, so a
regression that reads or allocates the claimed size fails quickly instead of exhausting the
machine. (Under the sanitizer run, whose runtime reserves terabytes of shadow memory, the
limit is left off; an allocation of the claimed size still fails there, and so the test.)
"""
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import kimberlite as km

INDEX_HEADER = struct.Struct("<4sB3sQ")  # magic, version, reserved, count (docs/FORMAT.md)
ADDRESS_SPACE = 1 << 30
TIMEOUT = 120

CHILD = textwrap.dedent(
    """
    import json, os, resource, sys
    path, limit = sys.argv[1], int(sys.argv[2])
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import kimberlite as km
    with km.Storage(path) as s:
        records = s.read_from(1, 0)
        count, head = s.verify(1)
    print(json.dumps({"payloads": [r.decode() for r in records], "count": count,
                      "head": head.hex()}))
    """
)


def _make_stream(path):
    with km.Storage(path) as s:
        s.append_batch(1, [b"first", b"second"])
        return s.verify(1)[1]


def _reopen_in_limited_child(path):
    limit = 0 if os.environ.get("KIMBERLITE_SANITIZED") else ADDRESS_SPACE
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(limit)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )
    assert proc.returncode == 0, f"child failed (exit {proc.returncode}):\n{proc.stderr}"
    return json.loads(proc.stdout), proc.stderr


def _check_rebuilt(path, idx, head):
    out, log = _reopen_in_limited_child(path)
    # Refused as a bad index (KMB_EINDEX), not merely found not to match the segment.
    assert "segment_000000.log is damaged; rebuilding it" in log, log
    assert out["payloads"] == ["first", "second"]
    assert out["count"] == 2
    assert out["head"] == head.hex()
    # The writer's close wrote the rebuilt index back at its true size: 16 + 2*8 + 4 bytes.
    assert os.path.getsize(idx) == INDEX_HEADER.size + 2 * 8 + 4
    with open(idx, "rb") as f:
        magic, version, _, count = INDEX_HEADER.unpack(f.read(INDEX_HEADER.size))
    assert (magic, version, count) == (b"VDXI", 1, 2)


def test_huge_sparse_index_is_not_read_and_is_rebuilt(tmp_path):
    path = tmp_path / "data"
    head = _make_stream(path)
    idx = path / "1" / "segment_000000.log.idx"
    assert idx.exists()
    os.truncate(idx, 64 << 30)  # 64 GiB of holes: costs nothing on disk
    _check_rebuilt(path, idx, head)


def test_index_header_claiming_2_pow_60_entries_is_rebuilt(tmp_path):
    path = tmp_path / "data"
    head = _make_stream(path)
    idx = path / "1" / "segment_000000.log.idx"
    idx.write_bytes(INDEX_HEADER.pack(b"VDXI", 1, b"\0\0\0", 2**60) + b"\0" * 4)
    _check_rebuilt(path, idx, head)


def test_index_larger_than_its_segment_could_need_is_rebuilt_even_if_well_formed(tmp_path):
    # A valid .idx (right magic, count and CRC) with more entries than the segment's bytes
    # could hold records: refused from its size, before it is read.
    path = tmp_path / "data"
    head = _make_stream(path)
    idx = path / "1" / "segment_000000.log.idx"
    seg_size = os.path.getsize(path / "1" / "segment_000000.log")
    n = seg_size // 48 + 1
    body = INDEX_HEADER.pack(b"VDXI", 1, b"\0\0\0", n) + struct.pack(f"<{n}Q", *range(n))
    idx.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    _check_rebuilt(path, idx, head)
