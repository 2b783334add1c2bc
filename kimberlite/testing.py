"""kimberlite.testing: damage a stream on purpose, to test that your code notices.

Three kinds of damage, each the work of one function, on either backend:

- :func:`flip_bit` — bit rot: one bit of one record changes. Its CRC no longer matches.
- :func:`replace_payload` — tampering: a record's payload is replaced and its CRC
  recomputed, so the record itself looks fine; only the hash chain can tell (the next
  record's ``prev_hash``, or, for the last record, ``verify(expected_head=...)`` with a head
  hash kept from before).
- :func:`tear_tail` — a torn write: the end of the stream is cut short, as a crash in the
  middle of an append leaves it.

Each function takes ``storage``, one of:

- an open ``kimberlite.MemoryStorage``: its segments are rewritten in memory;
- an open ``kimberlite.Storage`` (a writer): its segment files are rewritten;
- a data directory (``str`` or ``os.PathLike``) that no writer has open: its files are
  rewritten; open a Storage on it afterwards.

With an open storage, the engine forgets what it had cached about the stream, so the next
call that uses the stream loads it again exactly as a fresh ``Storage(path)`` would: recovery
runs (a torn tail is quarantined, a damaged stream is reported, an index that no longer
matches is rebuilt, each logged as a WARNING on the ``kimberlite`` logger) and reads and
``verify`` find the damage. There is no need to close and reopen. (A read-only Storage cannot
be damaged through; damage the directory, then open a new reader.)

What the engine makes of the damage follows docs/FORMAT.md §10. In particular, damage to
the *last* record of the active segment cannot be told apart from a torn write: a writer
quarantines that record as a torn tail, and only ``verify(stream_id, expected_head=head)``
with a head hash kept from before reveals that a record is missing. Damage followed by valid
records, or in a sealed segment, makes reads that reach it, ``verify`` and appends raise
``CorruptedRecordError`` (``ChainVerificationError`` for a broken link).

Example (pytest, with the fixture of kimberlite's pytest plugin)::

    def test_my_app_notices_tampering(kimberlite_memory):
        s = kimberlite_memory
        s.append_batch(1, [b"deposit 100", b"withdraw 30"])
        head = s.latest_chain_hash(1)
        kimberlite.testing.replace_payload(s, 1, 0, b"deposit 900")
        with pytest.raises(kimberlite.ChainVerificationError):
            s.verify(1, expected_head=head)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Union

from . import _core
from ._core import HEADER_SIZE, RECORD_OVERHEAD
from ._record import Record

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["flip_bit", "replace_payload", "tear_tail", "StorageOrPath"]

StorageOrPath = Union["_core.Storage", "_core.MemoryStorage", str, "os.PathLike[str]"]
"""What the damage functions accept: an open Storage or MemoryStorage, or a data directory."""

# The format's facts come from the engine: segment file names (_core.segment_file_name and
# parse_segment_file_name), the record header (_core.decode_record_header) and the record
# encoder (_core.encode_record).
_TORN_PAYLOAD = bytes(32)          # payload of the record an interrupted append leaves torn


class _Loc(NamedTuple):
    seg: int      # segment number
    pos: int      # byte position of the record in the segment
    offset: int   # the record's offset field
    size: int     # the record's size in bytes (48 + payload length)


class _Segments:
    """Read and rewrite a stream's segments, in memory or on disk, through one interface."""

    def __init__(self, storage: StorageOrPath, stream_id: int) -> None:
        if isinstance(stream_id, bool) or not isinstance(stream_id, int):
            raise TypeError(f"stream_id must be an int, not {type(stream_id).__name__}")
        if not 0 <= stream_id < 1 << 64:
            raise ValueError(f"stream_id must be in [0, 2**64 - 1], got {stream_id}")
        self.stream_id = stream_id
        self.engine: Optional[Union[_core.Storage, _core.MemoryStorage]] = None
        self.dir: Optional[str] = None
        if isinstance(storage, (_core.Storage, _core.MemoryStorage)):
            if storage.closed:
                raise ValueError("the storage is closed; pass its data directory instead")
            if storage.read_only:
                raise ValueError("cannot damage a stream through a read-only Storage; pass "
                                 "its data directory, then open a new reader")
            self.engine = storage
            if storage.path is not None:
                self.dir = os.path.join(storage.path, str(stream_id))
        elif isinstance(storage, (str, os.PathLike)):
            self.dir = os.path.join(os.fspath(storage), str(stream_id))
        else:
            raise TypeError("storage must be a Storage, a MemoryStorage or a data directory, "
                            f"not {type(storage).__name__}")

    def numbers(self) -> List[int]:
        """The stream's segment numbers, ascending."""
        if self.dir is None:
            assert self.engine is not None
            return list(range(self.engine.segment_count(self.stream_id)))
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        nums = [_core.parse_segment_file_name(name) for name in names]
        return sorted(n for n in nums if n is not None)

    def _file(self, seg: int) -> str:
        assert self.dir is not None
        return os.path.join(self.dir, _core.segment_file_name(seg))

    def get(self, seg: int) -> bytes:
        if self.engine is not None:
            return self.engine._segment_bytes(self.stream_id, seg)
        with open(self._file(seg), "rb") as f:
            return f.read()

    def put(self, seg: int, data: bytes) -> None:
        """Replace a segment's bytes; an open engine then reloads the stream on next use."""
        if self.engine is not None:
            self.engine._replace_segment_bytes(self.stream_id, seg, data)
            return
        with open(self._file(seg), "r+b") as f:
            f.write(data)
            f.truncate(len(data))

    def records(self) -> List[_Loc]:
        """Where each record of the stream lies, by structure (CRCs are not checked)."""
        out = []
        for seg in self.numbers():
            data = self.get(seg)
            pos = 0
            while pos + RECORD_OVERHEAD <= len(data):
                offset, _, length = _core.decode_record_header(data, pos)
                size = RECORD_OVERHEAD + length
                if pos + size > len(data):
                    break
                out.append(_Loc(seg, pos, offset, size))
                pos += size
        return out

    def find(self, offset: int) -> _Loc:
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError(f"offset must be an int, not {type(offset).__name__}")
        locs = self.records()
        if offset < 0:
            offset += len(locs)
        for loc in locs:
            if loc.offset == offset:
                return loc
        raise ValueError(f"stream {self.stream_id} has no record at offset {offset} "
                         f"({len(locs)} records found)")


def flip_bit(storage: StorageOrPath, stream_id: int, offset: int, *,
             byte: int = HEADER_SIZE, bit: int = 0) -> None:
    """Flip one bit of the record at ``offset`` (negative counts from the end): bit rot.

    ``byte`` is the position inside the record, from 0 to ``48 + len(payload) - 1``; the
    default, 44, is the first payload byte (the CRC's first byte for an empty payload).
    ``bit`` is 0 (least significant) to 7. The record's CRC no longer matches: reads that
    reach it and ``verify`` raise ``CorruptedRecordError``, unless it is the last record
    of the active segment, which a writer takes for a torn tail and quarantines (then only
    ``verify(expected_head=...)`` tells).
    """
    if not 0 <= bit <= 7:
        raise ValueError(f"bit must be in [0, 7], got {bit}")
    segs = _Segments(storage, stream_id)
    loc = segs.find(offset)
    if not 0 <= byte < loc.size:
        raise ValueError(f"byte must be in [0, {loc.size - 1}] for this record, got {byte}")
    data = bytearray(segs.get(loc.seg))
    data[loc.pos + byte] ^= 1 << bit
    segs.put(loc.seg, bytes(data))


def replace_payload(storage: StorageOrPath, stream_id: int, offset: int,
                    payload: Buffer) -> None:
    """Replace the payload of the record at ``offset`` and recompute its CRC: tampering.

    The record keeps its offset and ``prev_hash`` and gets a valid CRC, so it passes every
    check of its own; the payload may have another length (later records of the segment
    move, and the segment's index no longer matches: it is rebuilt). Only the hash chain
    tells: reading or verifying past the record raises ``ChainVerificationError`` (the
    next record's ``prev_hash`` no longer matches), and for the stream's last record only
    ``verify(stream_id, expected_head=head)`` with a head kept from before does.
    """
    if isinstance(payload, str):
        raise TypeError("payload must be a bytes-like object, not str")
    new_payload = memoryview(payload).tobytes()
    segs = _Segments(storage, stream_id)
    loc = segs.find(offset)
    data = segs.get(loc.seg)
    rec_offset, prev_hash, _ = _core.decode_record_header(data, loc.pos)
    record = _core.encode_record(rec_offset, prev_hash, new_payload)
    segs.put(loc.seg, data[:loc.pos] + record + data[loc.pos + loc.size:])


def tear_tail(storage: StorageOrPath, stream_id: int, nbytes: Optional[int] = None) -> None:
    """Cut the end of the stream short, as a crash in the middle of an append leaves it.

    The record torn is the last record of the active segment: ``nbytes`` bytes are cut
    from the end of the segment (default: half of that record, so a partial record is
    left). If the active segment is empty (the last append filled the previous segment,
    which is sealed and never written again), the record torn is the one an interrupted
    next append was writing there: the start of it is left, ``nbytes`` short (default:
    half), and no stored record is lost.

    A writer then finds a torn tail: it moves the partial record into a quarantine file
    (``segment_NNNNNN.log.torn-K``; in memory, a quarantine buffer), logs a WARNING and
    carries on from the last whole record. ``nbytes`` larger than the last record cuts
    whole records too, as a torn multi-record batch would.
    """
    if nbytes is not None and (isinstance(nbytes, bool) or not isinstance(nbytes, int)):
        raise TypeError(f"nbytes must be an int or None, not {type(nbytes).__name__}")
    segs = _Segments(storage, stream_id)
    numbers = segs.numbers()
    locs = segs.records()
    if not numbers or not locs:
        raise ValueError(f"stream {stream_id} has no records to tear")
    active = numbers[-1]
    data = segs.get(active)
    in_active = [loc for loc in locs if loc.seg == active]
    if in_active:
        last = in_active[-1]
        cut = last.size // 2 if nbytes is None else nbytes
        if not 1 <= cut <= len(data):
            raise ValueError(f"nbytes must be in [1, {len(data)}] (the active segment's "
                             f"size), got {cut}")
        segs.put(active, data[:len(data) - cut])
        return
    # The active segment is empty: tear the record the next append was writing.
    last = locs[-1]
    prev = segs.get(last.seg)[last.pos:last.pos + last.size]
    offset, prev_hash, length = _core.decode_record_header(prev)
    head = Record(offset, prev_hash, prev[HEADER_SIZE:HEADER_SIZE + length]).compute_hash()
    torn = _core.encode_record(offset + 1, head, _TORN_PAYLOAD)
    cut = len(torn) // 2 if nbytes is None else nbytes
    if not 1 <= cut < len(torn):
        raise ValueError(f"nbytes must be in [1, {len(torn) - 1}] when the active segment is "
                         f"empty, got {cut}")
    segs.put(active, data + torn[:len(torn) - cut])
