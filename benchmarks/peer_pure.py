"""The pure-Python peer of the Kimberlite benchmarks: what a user would otherwise write.

The same record format, byte for byte (SPEC.md §2, docs/FORMAT.md), with nothing but the
standard library (struct, zlib, hashlib, os), one file per stream, and the same guarantees
on read as kimberlite: every record returned has its CRC, its offset and its chain link
checked, starting from the hash of the record before the first one returned.

It is written the way a competent user would write it, not as a strawman:
  - one write per batch (the batch is encoded into a list of chunks, joined once);
  - precompiled struct.Struct objects, the CRC computed incrementally over header and
    payload (no concatenation of the payload), SHA-256 over prev_hash and payload;
  - an in-memory list of record positions (array of u64), kept up to date on append and
    rebuilt by one verifying scan when a stream is opened, so random access is O(1);
  - reads with os.pread of the whole range, then parsing memoryview slices.

It does not do what the benchmarks do not measure: segments and rotation, the .idx files,
torn-tail recovery, locking. A file per stream is `<root>/<stream>/segment_000000.log`, the
same path as kimberlite's first segment, so `kimberlite.Storage(root)` reads what this
writes (bench.py checks that once, as a cross-check of both).
"""
from __future__ import annotations

import hashlib
import os
import struct
import zlib
from array import array

HEADER = struct.Struct("<Q32sI")  # offset, prev_hash, length: 44 bytes
CRC = struct.Struct("<I")
U32 = struct.Struct("<I")
HEADER_SIZE = 44
RECORD_OVERHEAD = 48
ZERO_HASH = bytes(32)


class CorruptedRecord(Exception):
    pass


class ChainBroken(Exception):
    pass


class _Stream:
    __slots__ = ("fd", "path", "positions", "size", "head")

    def __init__(self, fd: int, path: str):
        self.fd = fd
        self.path = path
        self.positions = array("Q")  # byte position of each record
        self.size = 0  # end of the last record
        self.head = None  # hash of the last record, or None when empty


class PureLog:
    """An append-only, hash-chained event log in pure Python (kimberlite's format)."""

    def __init__(self, root: str):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self._streams: dict[int, _Stream] = {}

    # ---------------------------------------------------------------- streams

    def _stream(self, stream_id: int, create: bool) -> _Stream | None:
        s = self._streams.get(stream_id)
        if s is not None:
            return s
        d = os.path.join(self.root, str(stream_id))
        path = os.path.join(d, "segment_000000.log")
        if not os.path.exists(path):
            if not create:
                return None
            os.makedirs(d, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        s = _Stream(fd, path)
        end = os.fstat(fd).st_size
        if end:
            self._load(s, end)
        self._streams[stream_id] = s
        return s

    def _load(self, s: _Stream, end: int) -> None:
        """Rebuild the positions by one verifying scan (CRC, offsets, chain)."""
        data = os.pread(s.fd, end, 0)
        positions, head, stop = _check(memoryview(data), 0, 0, None, None)
        s.positions = positions
        s.head = head
        s.size = stop

    def close(self) -> None:
        for s in self._streams.values():
            os.close(s.fd)
        self._streams.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- append

    def append_batch(self, stream_id: int, events, fsync: bool = True) -> int:
        s = self._stream(stream_id, create=True)
        positions = s.positions
        offset = len(positions)
        head = s.head
        pos = s.size
        chunks = []
        add = chunks.append
        pack_header = HEADER.pack
        pack_crc = CRC.pack
        crc32 = zlib.crc32
        sha256 = hashlib.sha256
        new_positions = array("Q")
        for ev in events:
            n = len(ev)
            hdr = pack_header(offset, head or ZERO_HASH, n)
            add(hdr)
            add(ev)
            add(pack_crc(crc32(ev, crc32(hdr))))
            if head is None:
                head = sha256(ev).digest()
            else:
                h = sha256(head)
                h.update(ev)
                head = h.digest()
            new_positions.append(pos)
            pos += RECORD_OVERHEAD + n
            offset += 1
        if not new_positions:
            raise ValueError("empty batch")
        data = b"".join(chunks)
        written = os.pwrite(s.fd, data, s.size)
        if written != len(data):  # a short write: cut back, all or nothing
            os.ftruncate(s.fd, s.size)
            raise OSError("short write")
        if fsync:
            os.fdatasync(s.fd)
        positions.extend(new_positions)
        s.size = pos
        s.head = head
        return offset

    # ---------------------------------------------------------------- read

    def next_offset(self, stream_id: int) -> int:
        s = self._stream(stream_id, create=False)
        return 0 if s is None else len(s.positions)

    def latest_chain_hash(self, stream_id: int):
        s = self._stream(stream_id, create=False)
        return None if s is None else s.head

    def _hash_before(self, s: _Stream, offset: int):
        """The hash of the record before `offset` (None at genesis), its CRC checked."""
        if offset == 0:
            return None
        pos = s.positions[offset - 1]
        end = s.positions[offset] if offset < len(s.positions) else s.size
        rec = memoryview(os.pread(s.fd, end - pos, pos))
        off, prev, n = HEADER.unpack_from(rec)
        body = HEADER_SIZE + n
        if (off != offset - 1 or len(rec) != body + 4
                or crc32_of(rec[:body]) != CRC.unpack_from(rec, body)[0]):
            raise CorruptedRecord(f"record {offset - 1} fails its check at byte {pos}")
        payload = rec[HEADER_SIZE:body]
        if off == 0:
            return hashlib.sha256(payload).digest()
        h = hashlib.sha256(prev)
        h.update(payload)
        return h.digest()

    def read_from(self, stream_id: int, from_offset: int = 0) -> list[bytes]:
        """Every event from from_offset on, each record checked (CRC, offset, chain)."""
        s = self._stream(stream_id, create=False)
        if s is None or from_offset >= len(s.positions):
            return []
        running = self._hash_before(s, from_offset)
        start = s.positions[from_offset]
        data = os.pread(s.fd, s.size - start, start)
        out: list[bytes] = []
        _, _, stop = _check(memoryview(data), from_offset, start, running, out)
        if stop != s.size:
            raise CorruptedRecord(f"stream {stream_id}: damage at byte {stop}")
        return out

    def verify(self, stream_id: int, chunk: int = 8 << 20):
        """Check the whole stream from genesis; (next_offset, head hash)."""
        s = self._stream(stream_id, create=False)
        if s is None:
            return 0, None
        offset, running, pos = 0, None, 0
        while pos < s.size:
            data = memoryview(os.pread(s.fd, min(chunk, s.size - pos), pos))
            positions, running, stop = _check(data, offset, pos, running, None, partial=True)
            if not positions:  # one record larger than the chunk
                n = U32.unpack_from(os.pread(s.fd, HEADER_SIZE, pos), 40)[0]
                data = memoryview(os.pread(s.fd, RECORD_OVERHEAD + n, pos))
                positions, running, stop = _check(data, offset, pos, running, None)
                if not positions:
                    raise CorruptedRecord(f"damage at byte {pos}")
            offset += len(positions)
            pos = stop
        if offset != len(s.positions):
            raise CorruptedRecord("records missing")
        return offset, running


def crc32_of(mv) -> int:
    return zlib.crc32(mv)


def _check(data: memoryview, offset: int, base: int, running, out, partial: bool = False):
    """Check the records in `data` (which starts at byte `base` and at record `offset`).

    Returns (positions, head, stop): the positions of the valid records, the hash of the
    last one (or `running` when none) and the byte where checking stopped. Payloads are
    appended to `out` when it is a list. Raises on a bad CRC, offset or chain link, except
    at an incomplete record at the end when `partial` is true (verify reads in chunks).
    """
    positions = array("Q")
    unpack = HEADER.unpack_from
    unpack_crc = CRC.unpack_from
    crc32 = zlib.crc32
    sha256 = hashlib.sha256
    end = len(data)
    p = 0
    while p < end:
        if end - p < RECORD_OVERHEAD:
            if partial:
                break
            raise CorruptedRecord(f"incomplete record at byte {base + p}")
        off, prev, n = unpack(data, p)
        body = p + HEADER_SIZE + n
        if body + 4 > end:
            if partial:
                break
            raise CorruptedRecord(f"incomplete record at byte {base + p}")
        if crc32(data[p:body]) != unpack_crc(data, body)[0]:
            raise CorruptedRecord(f"CRC mismatch at byte {base + p}")
        if off != offset:
            raise CorruptedRecord(f"record at byte {base + p} has offset {off}, not {offset}")
        payload = data[p + HEADER_SIZE:body]
        if offset == 0:
            if prev != ZERO_HASH:
                raise ChainBroken("genesis record with a non-zero prev_hash")
            running = sha256(payload).digest()
        else:
            if prev != running:
                raise ChainBroken(f"hash chain broken at offset {offset}")
            h = sha256(prev)
            h.update(payload)
            running = h.digest()
        if out is not None:
            out.append(payload.tobytes())
        positions.append(base + p)
        p = body + 4
        offset += 1
    return positions, running, base + p
