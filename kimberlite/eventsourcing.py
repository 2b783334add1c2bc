"""A persistence module for the ``eventsourcing`` library (9.5.x) on a kimberlite store.

Select it the library's usual way::

    PERSISTENCE_MODULE=kimberlite.eventsourcing
    KIMBERLITE_PATH=/var/lib/myapp/events      # or ":memory:" for a MemoryStorage

``InfrastructureFactory.construct(env)`` then returns :class:`KimberliteFactory`, whose
``aggregate_recorder()``, ``application_recorder()``, ``tracking_recorder()`` and
``process_recorder()`` build the recorders. Further variables (each may carry the usual
application-name prefix, e.g. ``BANKACCOUNTS_KIMBERLITE_PATH``):

- ``KIMBERLITE_FSYNC`` (default ``y``): sync every insert before it returns; ``n``: the
  data survives a killed process, not a power cut.
- ``KIMBERLITE_READ_ONLY`` (default ``n``): open without the writer lock and never write;
  the writer's new events are seen (subscriptions poll).
- ``KIMBERLITE_STREAM_ID`` (default ``1``): the stream of the application sequence and of
  tracking records; snapshots go to ``STREAM_ID + 1`` (``KIMBERLITE_SNAPSHOTS_STREAM_ID``,
  and ``KIMBERLITE_<PURPOSE>_STREAM_ID`` for any other ``aggregate_recorder`` purpose;
  unnamed purposes get ``2**32 + crc32(purpose)``).
- ``KIMBERLITE_MAX_SEGMENT_SIZE``, ``KIMBERLITE_MAX_EVENT_SIZE``: the ``Storage`` options.
- ``KIMBERLITE_POLL_INTERVAL`` (default ``0.1``): seconds between checks for new records by
  subscriptions of a read-only store.

Design (docs/EVENTSOURCING.md has the whole story):

* **One record per ``insert_events`` call.** All the call's stored events and its tracking
  record are encoded into one kimberlite record (format below). A record survives a crash
  whole or not at all (a torn tail is quarantined by the engine), so a call is atomic across
  aggregates and with its tracking record, whatever moment the process dies, with no change
  to the engine.
* **Notification ids** are gapless and increasing: each record stores the id of its first
  event (1 + all events before it); inserts are serialised by one lock per store, and the
  lock is held until the index knows the new ids, so a reader never passes over an id that
  appears later. A read-only store in another process sees whole records only.
* **Optimistic concurrency**: a duplicate ``(originator_id, originator_version)``, in the
  store or inside one call, raises ``IntegrityError`` before anything is written. The check
  is made in memory (per stream: each originator's versions, each application's tracking
  id), filled as records are indexed and, after a reopen, from the index on demand.
* **The index** (per aggregate per record: key, version range, count, record offset, byte
  position, the record's first notification id; and the tracking ids) is one file per
  stream in ``KIMBERLITE_PATH/eventsourcing/`` (a directory the engine ignores): blocks of
  packed entries with CRCs, written behind the appends (one ``pwrite`` per 1,000
  records), never synced. It is a cache like ``.idx``: each block carries the offset it
  indexes up to and the chain hash of the record before it; on open these are checked
  against the records, a tail of newer records is indexed incrementally, and a missing,
  stale, torn or corrupt index is cut back or rebuilt from the records. Every entry used
  by a read is confirmed against the record it points to.
* **Tamper evidence**: every recorder has ``.storage``, ``.stream_id``, ``head_hash()`` and
  ``verify(expected_head=...)``; the factory has ``.storage`` too.
* **The usual insert in C**: one aggregate with a UUID id, versions following the
  recorded ones, no tracking record: the recorder's ``insert_events`` is a C callable
  (``_core._EsInsert``, csrc/py_es.c) making the same steps as the Python fast path
  (lock, encoding, duplicate check, append, index entry, ids); it declines anything else,
  which the Python path below then handles.

Record format, version 1 (little-endian; lengths are u32)::

    "KMES" | version u8 = 1 | flags u8 (bit 0: tracking present) | reserved u16 = 0
    | first notification id u64 | event count u32
    [ application name: len + UTF-8 | tracked notification id i64 ]        if bit 0
    event * count:
        kind u8 (0: UUID, 16 bytes follow; 1: str, len + UTF-8 follow)
        | originator_version i64 | topic: len + UTF-8 | state: len + bytes
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import struct
import sys
import threading
import time
import weakref
import zlib
from array import array
from collections import OrderedDict
from contextlib import contextmanager
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Set,
                    Tuple, TypeVar, cast)
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DatabaseError,
    DataError,
    InfrastructureFactory,
    IntegrityError,
    ListenNotifySubscription,
    Notification,
    OperationalError,
    ProcessRecorder,
    ProgrammingError,
    Recorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic, strtobool

import kimberlite as _kerr  # the public API only (SPEC §4) ...
from kimberlite import MemoryStorage, Storage
from kimberlite import _core  # ... and the insert path's C half (csrc/py_es.c)

if TYPE_CHECKING:
    from threading import Event

__all__ = [
    "KimberliteFactory",
    "Factory",
    "KimberliteRecorder",
    "KimberliteAggregateRecorder",
    "KimberliteApplicationRecorder",
    "KimberliteTrackingRecorder",
    "KimberliteProcessRecorder",
    "KimberliteSubscription",
    "encode_record",
    "decode_record",
    "FORMAT_VERSION",
]

_log = logging.getLogger("kimberlite.eventsourcing")
_T = TypeVar("_T")

# ---- record encoding ---------------------------------------------------------------------

FORMAT_VERSION = 1
_MAGIC = b"KMES"
_HEAD = struct.Struct("<4sBBHQI")  # magic, version, flags, reserved, first id, count
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_EV_UUID = struct.Struct("<B16sq")  # kind 0, uuid bytes, version
_EV_STR = struct.Struct("<BI")  # kind 1, id length
_FLAG_TRACKING = 1
_HEAD_SIZE = _HEAD.size

Decoded = Tuple[int, Optional[Tracking], List[StoredEvent]]


def encode_record(first_id: int, stored_events: Sequence[StoredEvent],
                  tracking: Optional[Tracking] = None) -> bytes:
    """Encode one ``insert_events`` call (version 1 of the format in the module docstring).

    Raises ``DataError`` for values the format cannot hold (a version outside int64, an
    originator id that is neither ``UUID`` nor ``str``).
    """
    # The C encoder (csrc/py_es.c) takes the plain values (UUID or str ids, int versions,
    # str topics, bytes states, in a list or tuple) and says None for anything else: the
    # Python encoder below, the reference, then encodes it or raises DataError.
    record = _codec.encode(first_id, stored_events, tracking)
    if record is None:
        record = _encode(first_id, stored_events, tracking)[0]
    return record


_codec = _core._EsWriter(UUID)  # (encodes only: no storage)


def _encode(first_id: int, stored_events: Sequence[StoredEvent],
            tracking: Optional[Tracking], keys: bool = False
            ) -> Tuple[bytes, List[Any], Optional[Tuple[Any, int, int]]]:
    """The record, the byte position of each event in it, and (with ``keys``) a summary.

    With ``keys``, the summary ``(key, first version, last version)`` when every event has
    the same index key and the versions go up by one (what ``Application.save`` of one
    aggregate writes: the insert's fast path); otherwise no summary, and ``(index key,
    version, position)`` of each event instead of its position (what :func:`_scan_record`
    finds when it reads the record back).
    """
    simple = None
    try:
        n = len(stored_events)
        parts = [_HEAD.pack(_MAGIC, FORMAT_VERSION, _FLAG_TRACKING if tracking else 0, 0,
                            first_id, n)]
        pos = _HEAD.size
        if tracking is not None:
            name = tracking.application_name.encode("utf-8")
            parts += [_U32.pack(len(name)), name, _I64.pack(tracking.notification_id)]
            pos += 12 + len(name)
        out: List[Any] = []
        ks: List[Any] = []
        vs: List[int] = []
        many = keys and n > 1
        key: Any
        for s in stored_events:
            oid = s.originator_id
            version = s.originator_version
            if isinstance(oid, UUID):
                key = oid.bytes
                head = _EV_UUID.pack(0, key, version)
            elif isinstance(oid, str):
                b = oid.encode("utf-8")
                head = b"".join((_EV_STR.pack(1, len(b)), b, _I64.pack(version)))
                key = _key(oid) if keys else None
            else:
                raise DataError(f"originator_id must be a UUID or a str, not "
                                f"{type(oid).__name__}: {oid!r}")
            if many:
                ks.append(key)
                vs.append(version)
            out.append(pos)
            topic = s.topic.encode("utf-8")
            state = s.state if type(s.state) is bytes else bytes(s.state)
            parts += [head, _U32.pack(len(topic)), topic, _U32.pack(len(state)), state]
            pos += len(head) + 8 + len(topic) + len(state)
    except (struct.error, AttributeError, TypeError, UnicodeError) as e:
        raise DataError(f"cannot encode stored events for kimberlite: {e}") from e
    if many:
        v0 = vs[0]
        if ks.count(ks[0]) == n and vs == list(range(v0, v0 + n)):
            simple = (ks[0], v0, v0 + n - 1)
        else:
            out = list(zip(ks, vs, out))
    elif keys and n:
        simple = (key, version, version)
    return b"".join(parts), out, simple


def _header(payload: bytes) -> Tuple[int, Optional[Tracking], int, int]:
    """``(first_id, tracking, count, position of the first event)``."""
    magic, version, flags, _, first_id, count = _HEAD.unpack_from(payload, 0)
    if magic != _MAGIC or version != FORMAT_VERSION:
        raise DataError(f"not an eventsourcing record of format version "
                        f"{FORMAT_VERSION} (starts with {bytes(payload[:5])!r})")
    pos = _HEAD.size
    tracking = None
    if flags & _FLAG_TRACKING:
        (n,) = _U32.unpack_from(payload, pos)
        pos += 4
        name = payload[pos:pos + n].decode("utf-8")
        if len(name.encode("utf-8")) != n:
            raise DataError("record ends inside its tracking record")
        pos += n
        (nid,) = _I64.unpack_from(payload, pos)
        pos += 8
        tracking = Tracking(application_name=name, notification_id=nid)
    return first_id, tracking, count, pos


def _event_at(payload: bytes, pos: int) -> Tuple[StoredEvent, int]:
    """The event that starts at byte ``pos`` and the position after it."""
    oid: Any
    if payload[pos] == 0:
        _, raw, ver = _EV_UUID.unpack_from(payload, pos)
        oid = UUID(bytes=raw)
        pos += _EV_UUID.size
    elif payload[pos] == 1:
        _, n = _EV_STR.unpack_from(payload, pos)
        pos += _EV_STR.size
        oid = payload[pos:pos + n].decode("utf-8")
        pos += n
        (ver,) = _I64.unpack_from(payload, pos)
        pos += 8
    else:
        raise DataError(f"unknown originator id kind {payload[pos]}")
    (n,) = _U32.unpack_from(payload, pos)
    pos += 4
    topic = payload[pos:pos + n].decode("utf-8")
    pos += n
    (n,) = _U32.unpack_from(payload, pos)
    pos += 4
    state = payload[pos:pos + n]
    if len(state) != n:
        raise DataError("record ends inside an event's state")
    pos += n
    return StoredEvent(originator_id=oid, originator_version=ver, topic=topic,
                       state=state), pos


def _decoding_errors(e: Exception) -> DataError:
    if isinstance(e, DataError):
        return e
    return DataError(f"malformed eventsourcing record: {e}")


def decode_record(payload: bytes) -> Decoded:
    """Decode a record written by :func:`encode_record`: ``(first_id, tracking, events)``.

    Raises ``DataError`` when the payload is not a well-formed version-1 record.
    """
    try:
        first_id, tracking, count, pos = _header(payload)
        events = []
        for _ in range(count):
            event, pos = _event_at(payload, pos)
            events.append(event)
        if pos != len(payload):
            raise DataError(f"{len(payload) - pos} unexpected bytes after the last event")
    except (struct.error, IndexError, UnicodeError, ValueError) as e:
        raise _decoding_errors(e) from e
    return first_id, tracking, events


def _scan_record(payload: bytes) -> Tuple[int, Optional[Tracking], List[Tuple[Any, int, int]]]:
    """``(first_id, tracking, [(key, version, position)])`` for indexing a record."""
    try:
        first_id, tracking, count, pos = _header(payload)
        rows = []
        for _ in range(count):
            at = pos
            event, pos = _event_at(payload, pos)
            rows.append((_key(event.originator_id), event.originator_version, at))
        if pos != len(payload):
            raise DataError(f"{len(payload) - pos} unexpected bytes after the last event")
    except (struct.error, IndexError, UnicodeError, ValueError) as e:
        raise _decoding_errors(e) from e
    return first_id, tracking, rows


def _key(originator_id: Any) -> bytes:
    """The index key, 16 bytes: a UUID's bytes (also for its canonical string, the same
    originator), else a 128-bit BLAKE2b digest of the text (a collision with another key
    has probability 2**-128: the two originators would share their duplicate checks)."""
    if isinstance(originator_id, UUID):
        return originator_id.bytes
    text = str(originator_id)
    if len(text) == 36:
        try:
            u = UUID(text)
        except ValueError:
            pass
        else:
            if str(u) == text:
                return u.bytes
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16, person=b"kmes-key").digest()


# ---- errors ------------------------------------------------------------------------------


def _mapped(e: BaseException) -> DatabaseError:
    """The library's exception for a kimberlite one, keeping its message (cause chained)."""
    msg = str(e)
    if isinstance(e, (_kerr.LockedError, _kerr.StorageIOError, _kerr.OffsetMismatchError)):
        return OperationalError(msg)
    if isinstance(e, (_kerr.CorruptedRecordError, _kerr.UnexpectedEofError,
                      _kerr.ChainVerificationError)):
        return DataError(msg)
    if isinstance(e, _kerr.StorageError):
        return DatabaseError(msg)
    if isinstance(e, ValueError) and "closed" in msg:
        return ProgrammingError(msg)
    if isinstance(e, ValueError):
        return DataError(msg)
    return DatabaseError(msg)


def _raise_mapped(e: BaseException) -> None:
    """Raise the library's exception for kimberlite's ``e`` (for the C half's errors)."""
    raise _mapped(e) from e


@contextmanager
def _engine_errors() -> Iterator[None]:
    try:
        yield
    except DatabaseError:
        raise
    except (_kerr.StorageError, ValueError) as e:
        raise _mapped(e) from e


def _by_version(event: StoredEvent) -> int:
    return event.originator_version


def _groups(rows: List[Tuple[bytes, int, int]]) -> Dict[bytes, List[int]]:
    """The index entries of one record: per key, ``[first version, last version, event
    count, byte position of its first event]`` (one entry per aggregate per record)."""
    groups: Dict[bytes, List[int]] = {}
    for k, v, pos in rows:
        g = groups.get(k)
        if g is None:
            groups[k] = [v, v, 1, pos]
        else:
            g[0] = min(g[0], v)
            g[1] = max(g[1], v)
            g[2] += 1
    return groups


class _IndexMismatch(Exception):
    """The index disagrees with the records, or its file cannot be used: rebuild, retry."""


# ---- the index file ----------------------------------------------------------------------
#
# One file per stream, KIMBERLITE_PATH/eventsourcing/stream-<id>.idx, a cache of what the
# stream's records say (docs/EVENTSOURCING.md, "The index"). A file header, then *blocks*,
# one per write of the buffered entries (a small last block is rewritten, merged with the
# next write). A block covers the records [start, end): its body holds one entry per
# aggregate per record, in record order, in columns: the keys (16 bytes each, searched with
# bytes.find), then six int64 columns (_COLUMNS: the record's first notification id is
# searched with bisect), then the stream's tracking ids after `end` (all of them: name
# length u32, UTF-8 name, id i64). Its header carries the watermark (end, chain hash of record
# end - 1, next notification id) and CRC-32s of the header and the body. The file is never
# synced: a torn or damaged block ends the usable prefix, and a watermark that does not
# match the records discards the file; either way the records after the usable prefix are
# indexed again.
_FILE_MAGIC = b"KMESIDX\x00"
_FILE_VERSION = 1
_FILE_HEAD = struct.Struct("<8sIQ")  # magic, version, stream id; then a CRC-32 of these
_BLOCK_MAGIC = b"KMIB"
# magic, entries, start, end, first id of record start, next id, tracking bytes, head,
# body CRC-32; then a CRC-32 of these
_BLOCK_HEAD = struct.Struct("<4sIQQQQI32sI")
_CRC = struct.Struct("<I")
_BLOCK_HEAD_SIZE = _BLOCK_HEAD.size + _CRC.size
# key, first version, last version, record offset, first notification id of the record,
# event count, byte position of the aggregate's first event in the record
_KEY_SIZE = 16
# The int64 columns of an entry, in this order (an entry, in memory: the key, then these).
_COLUMNS = ("first version", "last version", "record offset",
            "first notification id of the record", "event count",
            "byte position of the aggregate's first event in the record")
_NCOL = len(_COLUMNS)
_ENTRY_SIZE = _KEY_SIZE + 8 * _NCOL
_OFF, _RID = 2, 3  # the record offset and record first id columns
_STRIDE = 1 + _NCOL  # values per entry in a flat list of entries
_TRACK = struct.Struct("<I")  # application name length (the name and an i64 follow)

_FLUSH_RECORDS = 1000  # the index is written when this many records are buffered ...
_COMMIT_SECONDS = 1.0  # ... or at an insert this long after its last write, and on close
_CLOCK_RECORDS = 64  # (the clock is read at every 64th insert, and at the first)
_RUN_ROWS = 1000  # a write while the last block has fewer entries is merged into it
_CATCH_UP_RECORDS = 20000  # opening a stream writes its new tail in steps of this many
_LOAD_ALL_MISSES = 256  # after this many lookups of unknown keys, load all keys at once
_READ_CHUNK = 64 * 1024
_CACHE_BYTES = 8 << 20  # payloads of records read by select_events, least recently used out


def _find_all(keys: Any, key: bytes) -> Iterator[int]:
    """The numbers of the entries whose key is ``key`` in a keys column."""
    i = keys.find(key)
    while i >= 0:
        if i % _KEY_SIZE == 0:
            yield i // _KEY_SIZE
            i = keys.find(key, i + _KEY_SIZE)
        else:  # a match across two keys
            i = keys.find(key, i + 1)


def _int64s(data: Any) -> "array[int]":
    a = array("q")
    a.frombytes(data)
    if sys.byteorder == "big":  # pragma: no cover - the file is little-endian
        a.byteswap()
    return a


def _int64_bytes(a: "array[int]") -> bytes:
    if sys.byteorder == "big":  # pragma: no cover
        a = array("q", a)
        a.byteswap()
    return a.tobytes()


class _Run:
    """One block of the index, in memory: ``keys``, ``cols`` (the int64 columns, one
    after the other, ``n`` values each), ``ids`` (the record first id column, for
    bisect); ``pos`` and ``size``: where the block is in the file."""

    __slots__ = ("start", "end", "first_id", "keys", "cols", "n", "ids", "pos", "size")

    def __init__(self, start: int, end: int, first_id: int, keys: bytes,
                 cols: "array[int]", pos: int, size: int) -> None:
        self.start, self.end, self.first_id = start, end, first_id
        self.keys, self.cols, self.n = keys, cols, len(keys) // _KEY_SIZE
        self.ids = cols[_RID * self.n:(_RID + 1) * self.n]
        self.pos, self.size = pos, size

    def entry(self, i: int) -> Tuple[Any, ...]:
        """Entry ``i``: the key, then the columns."""
        n, c = self.n, self.cols
        return (self.keys[i * _KEY_SIZE:(i + 1) * _KEY_SIZE],) + tuple(
            c[j * n + i] for j in range(_NCOL))

    def entries(self) -> Iterator[Tuple[Any, ...]]:
        n, c = self.n, self.cols
        keys = [self.keys[i:i + _KEY_SIZE] for i in range(0, n * _KEY_SIZE, _KEY_SIZE)]
        return zip(keys, *(c[j * n:(j + 1) * n] for j in range(_NCOL)))


def _columns(flat: List[Any]) -> Tuple[bytes, "array[int]"]:
    """The keys and int64 columns of entries given flat (the key, then the columns, then
    the next entry's key...), by the C half (csrc/py_es.c: one pass over the list)."""
    keys, ints = _codec.columns(flat)
    return keys, _int64s(ints)


def _columns_py(flat: List[Any]) -> Tuple[bytes, "array[int]"]:
    """:func:`_columns` in Python (the reference the tests compare it with)."""
    n = len(flat) // _STRIDE
    pack = struct.Struct(f"<{n}q").pack
    return b"".join(flat[0::_STRIDE]), _int64s(
        b"".join([pack(*flat[j::_STRIDE]) for j in range(1, _STRIDE)]))


def _merge_columns(a: "array[int]", na: int, b: "array[int]", nb: int) -> "array[int]":
    """Two blocks' int64 columns as one block's (each column of ``a``, then of ``b``)."""
    out = array("q")
    for j in range(_NCOL):
        out.extend(a[j * na:(j + 1) * na])
        out.extend(b[j * nb:(j + 1) * nb])
    return out


def _file_header(sid: int) -> bytes:
    head = _FILE_HEAD.pack(_FILE_MAGIC, _FILE_VERSION, sid)
    return head + _CRC.pack(zlib.crc32(head))


def _encode_block(start: int, end: int, first_id: int, next_id: int, head: bytes,
                  keys: bytes, cols: "array[int]", tracking: Dict[str, int]) -> bytes:
    track = b"".join(_TRACK.pack(len(b)) + b + _I64.pack(nid)
                     for b, nid in ((app.encode("utf-8"), nid)
                                    for app, nid in sorted(tracking.items())))
    ints = _int64_bytes(cols)
    crc = zlib.crc32(track, zlib.crc32(ints, zlib.crc32(keys)))
    hdr = _BLOCK_HEAD.pack(_BLOCK_MAGIC, len(keys) // _KEY_SIZE, start, end, first_id,
                           next_id, len(track), head, crc)
    return b"".join((hdr, _CRC.pack(zlib.crc32(hdr)), keys, ints, track))


class _ParsedIndex:
    """What an index file holds: its usable blocks and the watermark of the last one."""

    def __init__(self) -> None:
        self.runs: List[_Run] = []
        self.tracking: Dict[str, int] = {}
        self.end = 0  # records covered
        self.head = b""
        self.next_id = 1
        self.size = _FILE_HEAD.size + _CRC.size  # bytes of the usable prefix
        self.damage: Optional[str] = None  # why a block was not usable (a short one: None)


def _parse_index(data: bytes, sid: int) -> _ParsedIndex:
    """Parse an index file; raises ``_IndexMismatch`` if it is not one of stream ``sid``.

    The usable prefix ends at the first block that is short (a torn tail: quiet) or
    malformed (``damage`` says why).
    """
    out = _ParsedIndex()
    if len(data) < out.size:  # (created, and the writer killed before its header)
        return out
    magic, version, stream = _FILE_HEAD.unpack_from(data, 0)
    if magic != _FILE_MAGIC or _CRC.unpack_from(data, _FILE_HEAD.size)[0] != zlib.crc32(
            data[:_FILE_HEAD.size]):
        raise _IndexMismatch("not a kimberlite.eventsourcing index file")
    if version != _FILE_VERSION:
        raise _IndexMismatch(f"index format version {version}, expected {_FILE_VERSION}")
    if stream != sid:
        raise _IndexMismatch(f"the index of stream {stream}, not {sid}")
    pos = out.size
    while len(data) - pos >= _BLOCK_HEAD_SIZE:  # (less: a torn tail)
        why = None
        magic, n, start, end, first_id, next_id, tlen, head, body_crc = \
            _BLOCK_HEAD.unpack_from(data, pos)
        (crc,) = _CRC.unpack_from(data, pos + _BLOCK_HEAD.size)
        body_at = pos + _BLOCK_HEAD_SIZE
        track_at = body_at + n * _ENTRY_SIZE
        size = _BLOCK_HEAD_SIZE + n * _ENTRY_SIZE + tlen
        if magic != _BLOCK_MAGIC or crc != zlib.crc32(data[pos:pos + _BLOCK_HEAD.size]):
            why = f"block at byte {pos}: bad header"
        elif start != out.end or end <= start or first_id != out.next_id or next_id < first_id:
            why = f"block at byte {pos}: records {start}..{end} do not follow the previous"
        elif pos + size > len(data):
            break  # torn
        elif zlib.crc32(data[body_at:pos + size]) != body_crc:
            why = f"block at byte {pos}: bad checksum"
        tracking: Dict[str, int] = {}
        if why is None:
            t, t_end = track_at, pos + size
            try:
                while t < t_end:
                    (k,) = _TRACK.unpack_from(data, t)
                    app = data[t + 4:t + 4 + k].decode("utf-8")
                    (tracking[app],) = _I64.unpack_from(data, t + 4 + k)
                    t += 12 + k
            except (struct.error, UnicodeError):
                t = -1
            if t != t_end:
                why = f"block at byte {pos}: malformed tracking ids"
        if why is not None:
            out.damage = why  # (a killed writer leaves a short block, not a bad one)
            break
        ints_at = body_at + n * _KEY_SIZE
        out.runs.append(_Run(start, end, first_id, data[body_at:ints_at],
                             _int64s(data[ints_at:track_at]), pos, size))
        out.tracking = tracking
        out.end, out.head, out.next_id = end, head, next_id
        pos += size
        out.size = pos
    return out


def _has_version(known: Any, v: int) -> bool:
    """Whether ``v`` is among ``known``: an int n (exactly 1..n), a set, or ``None``."""
    if type(known) is int:
        return 1 <= v <= known
    return known is not None and v in known


def _add_version(known: Any, v: int) -> Any:
    """``known`` with ``v`` added, as compact as possible (see :func:`_has_version`)."""
    if known is None:
        return 1 if v == 1 else {v}
    if type(known) is int:
        if v == known + 1:
            return v
        known = set(range(1, known + 1))
    known.add(v)
    return known


class _StreamState(_core._EsStream):
    """What this process knows of one stream: authoritative, in memory.

    ``next_id``, ``indexed``, ``flush_at``, ``complete``, ``keys`` and ``pend`` are fields
    of the C base (csrc/py_es.c), which the insert path in C reads and updates directly.

    ``keys`` maps an index key to its versions (see :func:`_has_version`) for every key
    whose versions have been looked at since the stream was loaded: it always holds all of
    that key's versions in records before ``indexed``. When ``complete`` it holds every key
    of the stream (the stream was new or rebuilt here, or all keys were loaded), so an
    absent key has no events; otherwise an absent key is looked up in ``runs``.

    ``runs`` are the blocks of the index file (read at open, appended by :meth:`_Store.
    flush`), covering the records before ``flushed``; the entries of records ``flushed`` ..
    ``indexed`` - 1 are in ``pend``. ``tracking`` holds every application's tracking id
    (complete: the blocks carry all of them).
    """

    __slots__ = ("stream_id", "error", "misses", "flushed", "flushed_id", "runs", "run_ids",
                 "tracking", "fd", "file_size")

    def __init__(self, stream_id: int, indexed: int, next_id: int, complete: bool) -> None:
        self.error: Optional[str] = None  # the stream holds a record this module cannot use
        self.stream_id = stream_id
        self.indexed = indexed  # offset of the first record not yet indexed (in memory)
        self.next_id = next_id  # notification id of the next event
        self.keys: Dict[bytes, Any] = {}
        self.complete = complete
        self.misses = 0
        self.flushed = indexed  # the index file covers the records before this offset
        self.flushed_id = next_id  # the notification id at `flushed`
        self.flush_at = indexed  # see _Store._written_behind
        # The entries of records flushed .. indexed - 1, flat (the key, then the columns,
        # then the next entry's key...): extending a list is the cheapest way to keep
        # them, and _columns() turns many into a block at once.
        self.pend: List[Any] = []
        self.runs: List[_Run] = []
        self.run_ids: List[int] = []  # first notification id of each run
        self.tracking: Dict[str, int] = {}
        self.fd: Optional[int] = None  # the index file, open for writing (writers only)
        self.file_size = 0  # bytes of the index file in use


_MISSING = object()


class _Store:
    """A data directory (or a MemoryStorage) with its index, shared by the recorders.

    ``lock`` (an RLock) serialises the recorders' calls and every use of the index.
    """

    def __init__(self, path: str, *, read_only: bool, fsync: bool,
                 storage_kwargs: Dict[str, int], poll_interval: float) -> None:
        self.path = path
        self.memory = path == ":memory:"
        self.read_only = read_only
        self.fsync = fsync
        self.poll_interval = poll_interval
        self.lock = threading.RLock()
        self.refs = 0
        self.closed = False
        self.streams: Dict[int, _StreamState] = {}
        self.listeners: Dict[Event, int] = {}
        self._poller: Optional[threading.Thread] = None
        self._last_write = time.monotonic()
        self._flush_time = self._last_write + _COMMIT_SECONDS  # flush at an insert after it
        # The streams an insert may take the fast path on (loaded, writable, no error).
        self._fast: Dict[int, _StreamState] = {}
        self._payloads: OrderedDict[Tuple[int, int], bytes] = OrderedDict()
        self._cached_bytes = 0
        with _engine_errors():
            if self.memory:
                self.storage: Any = MemoryStorage(**storage_kwargs)
            else:
                self.storage = Storage(path, read_only=read_only, **storage_kwargs)
        self._append = self.storage.append_batch
        # The usual insert in C: the whole call under the lock (csrc/py_es.c); None when
        # the call is not the usual one (insert_events then takes the Python path).
        # (its callbacks reach the store through a weak reference: no reference cycle,
        # so a store dropped without close() is freed at once, as before the C half)
        this = weakref.ref(self)

        def written_behind(st: _StreamState) -> None:
            store = this()
            if store is not None:
                store._written_behind(st)

        def notify(sid: int) -> None:
            store = this()
            if store is not None:
                store.notify(sid)
        self.writer = _core._EsWriter(UUID, self.storage, self.lock, self._fast,
                                      self.listeners, self.fsync, written_behind, notify)
        self._insert = self.writer.insert
        self.index_dir = None if self.memory else os.path.join(path, "eventsourcing")
        if self.index_dir is not None and not read_only:
            try:
                os.makedirs(self.index_dir, exist_ok=True)
                # The SQLite index of earlier versions: replaced by the files of this one.
                for name in ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm",
                             "index.sqlite3-journal"):
                    if os.path.exists(os.path.join(self.index_dir, name)):
                        os.remove(os.path.join(self.index_dir, name))
            except OSError as e:
                self.storage.close()
                raise OperationalError(f"cannot create the index directory "
                                       f"{self.index_dir!r}: {e}") from e
        _live_stores.add(self)

    def _after_fork_in_child(self) -> None:
        """In a child of os.fork(). If another thread of the parent held the lock at the
        fork (an insert in progress, across its append), the child would wait for it
        forever: the lock is made new and the in-memory state, which may be half-updated,
        dropped (the streams are loaded again from the records on next use, as after
        _reset_index, without touching the index files: the parent's). A lock that was
        free (or held by the forking thread, which goes on in the child) keeps it all."""
        if self.lock.acquire(blocking=False):
            self.lock.release()
            return
        self.lock._at_fork_reinit()  # type: ignore[attr-defined]
        self._poller = None  # (the parent's thread: not in the child)
        for st in self.streams.values():
            if st.fd is not None:
                try:
                    os.close(st.fd)  # (the child's copy only)
                except OSError:
                    pass
                st.fd = None
        self._payloads.clear()
        self._cached_bytes = 0
        self.streams.clear()
        self._fast.clear()

    # -- index files ----------------------------------------------------------------------

    def _index_file(self, sid: int) -> str:
        assert self.index_dir is not None
        return os.path.join(self.index_dir, f"stream-{sid}.idx")

    def _close_files(self) -> None:
        for st in self.streams.values():
            if st.fd is not None:
                try:
                    os.close(st.fd)
                except OSError:
                    pass
                st.fd = None

    def _reset_index(self, why: BaseException) -> None:
        """Throw the whole index away (it is a cache) and start again from the records."""
        _log.warning("kimberlite.eventsourcing index of %s dropped and rebuilt: %s",
                     self.path, why)
        with self.lock:
            self._close_files()
            if self.index_dir is not None and not self.read_only:
                for sid in self.streams:
                    try:
                        os.remove(self._index_file(sid))
                    except OSError:
                        pass
            self._payloads.clear()
            self._cached_bytes = 0
            self.streams.clear()
            self._fast.clear()

    def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Call ``fn`` under the lock; if the index proves bad, rebuild it and call again."""
        with self.lock:
            if self.closed:
                self._check_open()
            try:
                return fn(*args)
            except _IndexMismatch as e:
                self._reset_index(e)
            try:
                return fn(*args)
            except _IndexMismatch as e:
                self._reset_index(e)
                raise DatabaseError(f"kimberlite index keeps failing: {e}") from e

    # -- writing the index behind ---------------------------------------------------------

    def flush(self) -> None:
        """Write the buffered index entries of every stream (caller: ``lock``).

        A stream's entries become one block with its watermark, appended to its file or,
        when the file's last block has fewer than _RUN_ROWS entries, merged with that
        block and written over it (a torn write there only shortens the usable prefix).
        The in-memory state moves on only once the write succeeded.
        """
        self._last_write = time.monotonic()
        self._flush_time = self._last_write + _COMMIT_SECONDS
        for st in self.streams.values():
            if st.indexed > st.flushed:
                self._flush_stream(st)

    commit = flush

    def _flush_stream(self, st: _StreamState) -> None:
        sid = st.stream_id
        with _engine_errors():
            if self.storage.next_offset(sid) == st.indexed:
                head = self.storage.latest_chain_hash(sid)
            else:  # part of a tail being indexed
                head = self.storage.read_records(sid, st.indexed - 1, 1)[0].compute_hash()
        start, first_id = st.flushed, st.flushed_id
        keys, cols = _columns(st.pend)
        last = st.runs[-1] if st.runs else None
        merge = last is not None and last.n < _RUN_ROWS
        if last is not None and merge:
            cols = _merge_columns(last.cols, last.n, cols, len(st.pend) // _STRIDE)
            start, first_id, keys, pos = last.start, last.first_id, last.keys + keys, last.pos
        else:
            pos = st.file_size
        block = _encode_block(start, st.indexed, first_id, st.next_id, head, keys, cols,
                              st.tracking)
        if st.fd is not None:
            try:
                written = os.pwrite(st.fd, block, pos)
                if written != len(block):
                    raise OSError(f"short write ({written} of {len(block)} bytes)")
            except OSError as e:
                raise _IndexMismatch(f"cannot write the index of stream {sid}: {e}") from e
        elif self.index_dir is not None and not self.read_only:
            raise _IndexMismatch(f"the index file of stream {sid} is not open")
        run = _Run(start, st.indexed, first_id, keys, cols, pos, len(block))
        if merge:
            st.runs[-1] = run
        else:
            st.runs.append(run)
            st.run_ids.append(first_id)
        st.file_size = pos + len(block)
        st.flushed = st.indexed
        st.flushed_id = st.next_id
        st.flush_at = st.indexed + _CLOCK_RECORDS - 1
        st.pend = []

    def _check_open(self) -> None:
        if self.closed:
            raise ProgrammingError(f"the kimberlite store {self.path!r} is closed "
                                   "(its factory was closed); construct a new one")

    # -- streams ------------------------------------------------------------------------

    def stream(self, sid: int) -> _StreamState:
        """The state of stream ``sid``, its index checked and brought up to its records."""
        st = self.streams.get(sid)
        if st is None:
            st = self._load(sid)
        elif st.error is not None:
            raise DataError(st.error)
        elif self.read_only:
            self._catch_up(st)
        return st

    def _read_index(self, sid: int, n: int) -> Optional[_ParsedIndex]:
        """The stream's index file, if it is usable for a stream of ``n`` records."""
        if self.index_dir is None:
            return None
        name = self._index_file(sid)
        try:
            with open(name, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            _log.warning("kimberlite.eventsourcing index %s unreadable (%s); rebuilding it",
                         name, e)
            return None
        try:
            found = _parse_index(data, sid)
        except _IndexMismatch as e:
            _log.warning("kimberlite.eventsourcing index %s unusable (%s); rebuilding it",
                         name, e)
            return None
        if found.damage is not None:
            _log.warning("kimberlite.eventsourcing index %s damaged (%s); using the blocks "
                         "before it and indexing the records after them", name, found.damage)
        why = None
        if found.end > n:
            why = f"it covers {found.end} records, the stream has {n}"
        elif found.end > 0:
            with _engine_errors():
                rec = self.storage.read_records(sid, found.end - 1, 1)[0]
            if rec.compute_hash() != found.head:
                why = f"the chain hash of record {found.end - 1} differs"
            else:
                # The next notification id comes from the index: a wrong one would hand
                # out ids already used. It must follow the last covered record's events.
                try:
                    first_id, tracking, rows = _scan_record(rec.payload)
                except DataError as e:
                    first_id, tracking, rows = -1, None, []
                    why = f"record {found.end - 1} cannot be decoded ({e})"
                if why is None and first_id + len(rows) != found.next_id:
                    why = (f"its next notification id {found.next_id} does not follow "
                           f"record {found.end - 1} (ids {first_id}.."
                           f"{first_id + len(rows) - 1})")
                elif why is None and tracking is not None and found.tracking.get(
                        tracking.application_name) != tracking.notification_id:
                    why = (f"its tracking id of {tracking.application_name!r} differs "
                           f"from record {found.end - 1}'s")
        if why is not None:
            _log.warning("kimberlite.eventsourcing index %s is stale (%s); rebuilding it",
                         name, why)
            return None
        return found

    def _load(self, sid: int) -> _StreamState:
        with _engine_errors():
            n = self.storage.next_offset(sid)
        found = self._read_index(sid, n)
        if found is None:
            found = _ParsedIndex()
        st = _StreamState(sid, found.end, found.next_id, complete=found.next_id == 1)
        st.runs = found.runs
        st.run_ids = [r.first_id for r in found.runs]
        st.tracking = found.tracking
        st.file_size = found.size
        if self.index_dir is not None and not self.read_only:
            name = self._index_file(sid)
            try:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                             0o644)
                try:
                    # Drop what is not usable (a torn tail, a damaged block, a stale file).
                    os.ftruncate(fd, found.size)
                    os.pwrite(fd, _file_header(sid), 0)
                except BaseException:
                    os.close(fd)
                    raise
            except OSError as e:
                raise OperationalError(f"cannot open the index file {name!r}: {e}") from e
            st.fd = fd
        self.streams[sid] = st
        if not self.read_only:
            self._fast[sid] = st
        self._catch_up(st)
        return st

    def _catch_up(self, st: _StreamState) -> None:
        """Index the records after ``st.indexed`` (a new tail, or a rebuild from 0)."""
        with _engine_errors():
            if self.storage.next_offset(st.stream_id) <= st.indexed:
                return
            records = self.storage.iter_from(st.stream_id, st.indexed, records=True,
                                             chunk_bytes=1 << 20)
            for rec in records:
                try:
                    first_id, tracking, rows = _scan_record(rec.payload)
                    if first_id != st.next_id:
                        raise DataError(f"it starts at notification id {first_id}, "
                                        f"expected {st.next_id}")
                except DataError as e:
                    # Nothing after this record can be indexed or appended: say so each time.
                    self._fast.pop(st.stream_id, None)
                    st.error = (f"record {rec.offset} of stream {st.stream_id} in "
                                f"{self.path!r} is not usable by kimberlite.eventsourcing "
                                f"({e}); the events before it stay readable by kimberlite")
                    raise DataError(st.error) from e
                for k, v, _ in rows:
                    if _has_version(self._versions(st, k), v):
                        raise _IndexMismatch(f"record {rec.offset} of stream "
                                             f"{st.stream_id} repeats an indexed event")
                assert rec.offset == st.indexed
                self._add_rows(st, rows, tracking)
                if st.indexed - st.flushed >= _CATCH_UP_RECORDS:
                    self.flush()
        if st.indexed > st.flush_at or time.monotonic() >= self._flush_time:
            self.flush()  # (a tail indexed at open: written at once)

    # -- lookups in the index -------------------------------------------------------------

    def _rows_of(self, st: _StreamState, key: bytes, buffered: bool = True
                 ) -> List[Tuple[int, int, int, int, int]]:
        """``(first, last, count, offset, pos)`` of every index entry of ``key``, in record
        order: the blocks, then (with ``buffered``) the entries not yet written."""
        out = []
        for run in st.runs:
            for i in _find_all(run.keys, key):
                _, first, last, offset, _, count, pos = run.entry(i)
                if not run.start <= offset < run.end:
                    raise _IndexMismatch(f"an entry of the block of records {run.start}.."
                                         f"{run.end} points at record {offset}")
                out.append((first, last, count, offset, pos))
        if buffered and st.pend:
            pend = st.pend
            keys = pend[0::_STRIDE]
            i = -1
            while True:
                try:
                    i = keys.index(key, i + 1)
                except ValueError:
                    break
                _, first, last, offset, _, count, pos = pend[i * _STRIDE:(i + 1) * _STRIDE]
                out.append((first, last, count, offset, pos))
        return out

    def _record_for(self, st: _StreamState, nid: int) -> Tuple[int, int]:
        """``(offset, first id)`` of the record that holds notification id ``nid``: the
        record of the last entry whose record starts at or before ``nid``."""
        pend = st.pend
        if pend and pend[1 + _RID] <= nid:
            ids = pend[1 + _RID::_STRIDE]
            i = bisect.bisect_right(ids, nid) - 1
            return pend[i * _STRIDE + 1 + _OFF], ids[i]
        j = bisect.bisect_right(st.run_ids, nid) - 1
        while j >= 0 and not st.runs[j].n:
            j -= 1  # (a block of records without events)
        if j < 0:
            raise _IndexMismatch(f"no record indexed for notification id {nid}")
        run = st.runs[j]
        i = bisect.bisect_right(run.ids, nid) - 1
        if i < 0:
            raise _IndexMismatch(f"no record indexed for notification id {nid}")
        return run.cols[_OFF * run.n + i], run.ids[i]

    def _versions(self, st: _StreamState, key: bytes) -> Any:
        """The known versions of ``key`` (``None``: none), looked up in the file if needed."""
        known = st.keys.get(key, _MISSING)
        if known is not _MISSING:
            return known
        if st.complete:
            return None
        st.misses += 1
        if st.misses > _LOAD_ALL_MISSES:
            self._load_all_keys(st)
            return st.keys.get(key)
        known = None
        # Not in memory: the key has no entries among the buffered (newer) records.
        rows = self._rows_of(st, key, buffered=False)
        rows.sort(key=lambda r: r[1])
        for first, last, count, offset, _ in rows:
            known = self._add_row_versions(st, key, known, last, first, count, offset)
        st.keys[key] = known
        return known

    def _add_row_versions(self, st: _StreamState, key: bytes, known: Any, last: int,
                          first: int, count: int, offset: int) -> Any:
        """``known`` with the versions of one entry of the index file added."""
        if count == last - first + 1:  # contiguous: no need to read the record
            if known is None and first == 1:
                return last
            if type(known) is int and first == known + 1:
                return last
            versions: Sequence[int] = range(first, last + 1)
        else:
            try:
                rows = _scan_record(self._read_payload(st.stream_id, offset))[2]
            except DataError as e:
                raise _IndexMismatch(f"record {offset} of stream {st.stream_id}: {e}") from e
            versions = [v for k, v, _ in rows if k == key]
            if len(versions) != count or min(versions) != first or max(versions) != last:
                raise _IndexMismatch(f"record {offset} does not hold the indexed events")
        for v in versions:
            known = _add_version(known, v)
        return known

    def _load_all_keys(self, st: _StreamState) -> None:
        """Make ``st.keys`` complete: one pass over the stream's blocks.

        Keys already known are kept (they are complete and may hold versions the file
        does not have yet); every other key has all its versions in the file.
        """
        keys = st.keys
        loaded: Dict[bytes, Any] = {}
        get = loaded.get
        for run in st.runs:
            n, cols = run.n, run.cols
            if n and not (run.start <= min(cols[_OFF * n:(_OFF + 1) * n])
                          and max(cols[_OFF * n:(_OFF + 1) * n]) < run.end):
                raise _IndexMismatch(f"an entry of the block of records {run.start}.."
                                     f"{run.end} points outside it")
            # In record order, which is version order for almost every aggregate (the
            # versions stay one int); any other order gives a set of the same versions.
            for k, first, last, offset, _, count, _ in run.entries():
                if k in keys:
                    continue
                known = get(k)
                if count == last - first + 1 and (
                        first == 1 if known is None else
                        type(known) is int and first == known + 1):
                    loaded[k] = last
                else:
                    loaded[k] = self._add_row_versions(st, k, known, last, first, count,
                                                       offset)
        loaded.update(keys)
        st.keys = loaded
        st.complete = True

    def _add_rows(self, st: _StreamState, rows: List[Tuple[bytes, int, int]],
                  tracking: Optional[Tracking]) -> None:
        """Account for record ``st.indexed`` in memory (``rows``: its events' keys,
        versions and positions); its index entries are buffered for :meth:`flush`."""
        if rows:
            offset, first_id = st.indexed, st.next_id
            for k, (first, last, count, pos) in _groups(rows).items():
                st.pend += (k, first, last, offset, first_id, count, pos)
            keys = st.keys
            for k, v, _ in rows:
                known = keys.get(k)
                if known is None and v == 1:
                    keys[k] = 1
                elif type(known) is int and v == known + 1:
                    keys[k] = v
                else:
                    keys[k] = _add_version(known, v)
            st.next_id += len(rows)
        if tracking is not None:
            st.tracking[tracking.application_name] = tracking.notification_id
        st.indexed += 1


    # -- writes -------------------------------------------------------------------------

    @staticmethod
    def _duplicate(sid: int, stored_events: Sequence[StoredEvent], key: bytes) -> IntegrityError:
        oid = next((e.originator_id for e in stored_events
                    if _key(e.originator_id) == key), UUID(bytes=key))
        versions = [e.originator_version for e in stored_events
                    if _key(e.originator_id) == key]
        return IntegrityError(
            f"stored event already recorded, or twice in one call: originator_id {oid}, "
            f"versions {versions} (stream {sid}); nothing of this call was written")

    def insert_events(self, sid: int, stored_events: Sequence[StoredEvent],
                      tracking: Optional[Tracking]) -> List[int]:
        """What the recorders call (the application and aggregate recorders inline its
        first step): :meth:`insert`, with the usual call made by the C half.

        The usual call (a loaded, writable stream; one aggregate with a UUID id whose
        versions go up by one, all new; no tracking record) is made whole in C
        (``_EsWriter.insert``, csrc/py_es.c: the lock, the encoding, the duplicate check,
        the append with the GIL released, the index entry and the ids), with exactly the
        steps of :meth:`insert_python`'s fast path. Anything else: :meth:`insert_python`.
        """
        if tracking is None:
            try:
                ids = self._insert(sid, stored_events)
            except (_kerr.StorageError, ValueError) as e:
                raise _mapped(e) from e
            if ids is not None:
                return ids
        return self.insert_python(sid, stored_events, tracking)

    def insert_python(self, sid: int, stored_events: Sequence[StoredEvent],
                      tracking: Optional[Tracking]) -> List[int]:
        """:meth:`insert_events` when the C half says the call is not the usual one.

        The same usual call with a str originator id is made here with as little Python
        as possible: the index costs a dictionary lookup and update and seven values
        added to a list. Anything else goes through :meth:`run` and :meth:`insert`, with
        the encoding already done.
        """
        with self.lock:
            st = self._fast.get(sid)
            if st is None or tracking is not None or not stored_events:
                return self.run(self.insert, sid, stored_events, tracking, None)
            first = st.next_id
            payload, rows, simple = _encode(first, stored_events, None, True)
            if simple is not None:
                key, v0, v1 = simple
                keys = st.keys
                known = keys.get(key)
                if (v0 == 1 and (st.complete or key in keys)) if known is None else (
                        type(known) is int and v0 == known + 1):
                    offset = st.indexed
                    try:
                        self._append(sid, [payload], expected_offset=offset, fsync=self.fsync)
                    except (_kerr.StorageError, ValueError) as e:
                        raise _mapped(e) from e
                    # Stored: from here on nothing may report failure to the caller.
                    keys[key] = v1
                    st.next_id = nid = first + v1 - v0 + 1
                    st.indexed = offset + 1
                    # (the first event of a record without tracking is at _HEAD.size)
                    st.pend += (key, v0, v1, offset, first, nid - first, _HEAD_SIZE)
                    if offset >= st.flush_at:
                        self._written_behind(st)
                    if self.listeners:
                        self.notify(sid)
                    return [first] if v0 == v1 else list(range(first, nid))
            # Several aggregates, a key to look up in the index, versions not simply
            # following the recorded ones, or a duplicate: the general path.
            return self.run(self.insert, sid, stored_events, None,
                            (payload, rows, simple, first))

    def _written_behind(self, st: _StreamState) -> None:
        """Called when ``st.indexed`` passes ``st.flush_at``: write the buffered entries
        if there are _FLUSH_RECORDS of them or the last write is _COMMIT_SECONDS old,
        else look again _CLOCK_RECORDS records later (reading the clock at every insert
        would cost the appends more than the rest of the index)."""
        if (st.indexed - st.flushed >= _FLUSH_RECORDS
                or time.monotonic() >= self._flush_time):
            self._flush_after_insert()
        else:
            st.flush_at = min(st.indexed + _CLOCK_RECORDS, st.flushed + _FLUSH_RECORDS) - 1

    def _flush_after_insert(self) -> None:
        try:
            self.flush()
        except (_IndexMismatch, DatabaseError) as e:
            self._reset_index(e)  # the index only: rebuilt from the records on next use

    def insert(self, sid: int, stored_events: Sequence[StoredEvent],
               tracking: Optional[Tracking], pre: Optional[Tuple[Any, ...]]) -> List[int]:
        """Record one call (caller: ``lock``, through :meth:`run`); ``pre``: its encoding
        by :meth:`insert_events` (used if the stream has not moved since)."""
        if self.read_only:
            raise OperationalError(f"the kimberlite store {self.path!r} was opened read-only "
                                   "(KIMBERLITE_READ_ONLY); it cannot record events")
        if not stored_events and tracking is None:
            return []
        st = self.streams.get(sid)
        if st is None or st.error is not None:
            st = self.stream(sid)
        first, offset = st.next_id, st.indexed
        # Encoding checks the values (DataError first) and yields the index keys.
        if pre is None or pre[3] != first:
            pre = _encode(first, stored_events, tracking, True) + (first,)
        payload, rows, simple, _ = pre
        if simple is not None:  # the encoding gave a summary, not the events' keys
            rows = _scan_record(payload)[2]
        # Optimistic concurrency, checked in memory before anything is written.
        keys = st.keys
        seen: Set[Tuple[bytes, int]] = set()
        for key, v, _ in rows:
            known = keys.get(key, _MISSING)
            if known is _MISSING:
                known = self._versions(st, key)
            if (known is not None and (1 <= v <= known if type(known) is int
                                       else v in known)) or (key, v) in seen:
                raise self._duplicate(sid, stored_events, key)
            seen.add((key, v))
        if tracking is not None:
            recorded = st.tracking.get(tracking.application_name)
            if recorded is not None and recorded >= tracking.notification_id:
                raise IntegrityError(
                    f"tracking notification id {tracking.notification_id} for "
                    f"{tracking.application_name!r} is not greater than the recorded "
                    f"{recorded}; nothing of this call was written")
        try:
            self.storage.append_batch(sid, [payload], expected_offset=offset,
                                      fsync=self.fsync)
        except (_kerr.StorageError, ValueError) as e:
            raise _mapped(e) from e
        # The record is stored: from here on nothing may report failure to the caller.
        self._add_rows(st, rows, tracking)
        if st.indexed > st.flush_at:
            self._written_behind(st)
        if self.listeners:
            self.notify(sid)
        return list(range(first, first + len(stored_events)))

    # -- reads --------------------------------------------------------------------------

    def _read_payload(self, sid: int, offset: int) -> bytes:
        """One record's payload, through a small cache (records never change)."""
        cache = self._payloads
        payload = cache.get((sid, offset))
        if payload is not None:
            cache.move_to_end((sid, offset))
            return payload
        if offset >= self.streams[sid].indexed:
            raise _IndexMismatch(f"the index points at record {offset} of stream {sid}, "
                                 "past the records it has indexed")
        with _engine_errors():
            recs = self.storage.read_records(sid, offset, 1)
        if not recs:
            raise _IndexMismatch(f"the index points at record {offset} of stream {sid}, "
                                 "which does not exist")
        payload = cast(bytes, recs[0].payload)
        if len(payload) <= _CACHE_BYTES // 16:
            cache[(sid, offset)] = payload
            self._cached_bytes += len(payload)
            while self._cached_bytes > _CACHE_BYTES:
                self._cached_bytes -= len(cache.popitem(last=False)[1])
        return payload

    def select_events(self, sid: int, originator_id: Any, gt: Optional[int],
                      lte: Optional[int], desc: bool, limit: Optional[int]
                      ) -> List[StoredEvent]:
        st = self.stream(sid)
        key = _key(originator_id)
        if st.complete and key not in st.keys:
            return []  # no such aggregate
        if limit is not None and limit == 0:
            return []
        if limit is not None and limit < 0:
            limit = None  # as SQL's LIMIT -1, which the index used to pass on
        # Entries whose version range meets (gt, lte], in the order events are returned:
        # every entry after the current one holds versions beyond its bound (`first` going
        # up, or `last` going down), which says when `limit` events are certainly found.
        rows = [r for r in self._rows_of(st, key)
                if (gt is None or r[1] > gt) and (lte is None or r[0] <= lte)]
        if desc:
            rows.sort(key=lambda r: r[1], reverse=True)
        else:
            rows.sort()
        out: List[StoredEvent] = []
        for first, last, count, offset, pos in rows:
            if limit is not None and len(out) >= limit:
                out.sort(key=_by_version, reverse=desc)
                edge = out[limit - 1].originator_version
                if (edge > last) if desc else (edge < first):
                    break
            out += self._events_of(sid, key, first, last, count, offset, pos, gt, lte)
        out.sort(key=_by_version, reverse=desc)
        return out if limit is None else out[:limit]

    def _events_of(self, sid: int, key: Any, first: int, last: int, count: int,
                   offset: int, pos: int, gt: Optional[int], lte: Optional[int]
                   ) -> List[StoredEvent]:
        """The events of one index row, confirmed against the record, within (gt, lte]."""
        payload = self._read_payload(sid, offset)
        found = []
        try:
            head = True
            while pos < len(payload):
                ev, pos = _event_at(payload, pos)
                if _key(ev.originator_id) == key:
                    found.append(ev)
                elif head:
                    break
                head = False
        except (DataError, struct.error, IndexError, UnicodeError, ValueError) as e:
            raise _IndexMismatch(f"no event at byte {pos} of record {offset}: {e}") from e
        versions = [e.originator_version for e in found]
        if (len(found) != count or min(versions, default=None) != first
                or max(versions, default=None) != last):
            raise _IndexMismatch(f"record {offset} does not hold the indexed events")
        return [e for e in found if (gt is None or e.originator_version > gt)
                and (lte is None or e.originator_version <= lte)]

    def select_notifications(self, sid: int, start: Optional[int], limit: int,
                             stop: Optional[int], topics: Sequence[str],
                             inclusive_of_start: bool) -> List[Notification]:
        st = self.stream(sid)
        if start is None:
            start, inclusive_of_start = 1, True
        first = max(start if inclusive_of_start else start + 1, 1)
        last = st.next_id - 1 if stop is None else min(stop, st.next_id - 1)
        if first > last or limit <= 0:
            return []
        offset, expect_first = self._record_for(st, first)
        wanted = set(topics)
        out: List[Notification] = []
        with _engine_errors():
            records = self.storage.iter_from(sid, offset, records=True,
                                             chunk_bytes=_READ_CHUNK)
            for rec in records:
                first_id, _, events = decode_record(rec.payload)
                if rec.offset == offset and (first_id != expect_first or first_id > first):
                    # (a record starting after ``first`` would skip the ids before it)
                    raise _IndexMismatch(f"record {offset} starts at id {first_id}, "
                                         f"the index says {expect_first}, for id {first}")
                for i, ev in enumerate(events):
                    nid = first_id + i
                    if nid < first:
                        continue
                    if nid > last:
                        return out
                    if wanted and ev.topic not in wanted:
                        continue
                    out.append(Notification(id=nid, originator_id=ev.originator_id,
                                            originator_version=ev.originator_version,
                                            topic=ev.topic, state=ev.state))
                    if len(out) >= limit:
                        return out
                if rec.offset + 1 >= st.indexed:
                    break
        return out

    def max_notification_id(self, sid: int) -> Optional[int]:
        st = self.stream(sid)
        return st.next_id - 1 if st.next_id > 1 else None

    def max_tracking_id(self, sid: int, app: str) -> Optional[int]:
        return self.stream(sid).tracking.get(app)

    # -- subscriptions ------------------------------------------------------------------

    def listen(self, event: Event, sid: int) -> None:
        with self.lock:
            self.listeners[event] = sid
            if self.read_only and self._poller is None and not self.closed:
                self._poller = threading.Thread(target=self._poll, daemon=True,
                                                name=f"kimberlite-poll {self.path}")
                self._poller.start()

    def unlisten(self, event: Event) -> None:
        with self.lock:
            self.listeners.pop(event, None)

    def notify(self, sid: int) -> None:
        for event, s in list(self.listeners.items()):
            if s == sid:
                event.set()

    def _poll(self) -> None:
        """Read-only stores: wake subscribers when the writer (another process) appends."""
        seen: Dict[int, int] = {}
        while True:
            with self.lock:
                if self.closed or not self.listeners:
                    self._poller = None
                    return
                sids = set(self.listeners.values())
            for sid in sids:
                try:
                    n = self.storage.next_offset(sid)
                except (_kerr.StorageError, ValueError):
                    continue
                if n != seen.get(sid):
                    seen[sid] = n
                    self.notify(sid)
            time.sleep(self.poll_interval)

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self._fast.clear()
            for event in list(self.listeners):
                event.set()
            try:
                if not self.read_only:
                    try:
                        self.flush()
                    except (_IndexMismatch, DatabaseError) as e:
                        _log.warning("kimberlite.eventsourcing index not saved: %s", e)
                self._close_files()
            finally:
                with _engine_errors():
                    self.storage.close()


# One store per data directory in a process: a directory has one writer (the engine's lock),
# so factories of this process that name the same directory share it (reference counted).
_stores: Dict[Tuple[str, bool], _Store] = {}
_stores_lock = threading.Lock()
# A factory's __del__ runs whenever the garbage collector does, at any allocation: also
# while this thread holds _stores_lock (inside _acquire_store) or is inside a call on the
# very store (holding its RLock). Releasing there would deadlock, or close a store under a
# call. So a finalizer only queues its store here; the queue is worked off at once when
# that cannot block this thread, else at the next safe point (any _acquire_store or
# _release_store, by whichever thread holds the lock then).
_released_late: List[_Store] = []  # one reference each, not yet given back
_closing_late: List[_Store] = []   # no reference left, not closed yet
_live_stores: "weakref.WeakSet[_Store]" = weakref.WeakSet()  # every open store, memory too


def _after_fork_in_child() -> None:
    # A thread of the parent may have held these at the fork (an insert in progress): the
    # child would wait for it forever (kimberlite._fork does the same for the engine).
    global _stores_lock
    _stores_lock = threading.Lock()
    _released_late.clear()  # a parent's queue: its stores are the parent's to release
    _closing_late.clear()
    for store in list(_live_stores):
        store._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _acquire_store(path: str, *, read_only: bool, fsync: bool, storage_kwargs: Dict[str, int],
                   poll_interval: float) -> _Store:
    if path == ":memory:":
        store = _Store(path, read_only=False, fsync=fsync, storage_kwargs=storage_kwargs,
                       poll_interval=poll_interval)
        store.refs = 1
        return store
    key = (os.path.realpath(path), read_only)
    with _stores_lock:
        found = _stores.get(key)
        if found is None or found.closed:
            found = _Store(path, read_only=read_only, fsync=fsync,
                           storage_kwargs=storage_kwargs, poll_interval=poll_interval)
            _stores[key] = found
        found.refs += 1
    _release_late_stores()
    return found


def _drop_ref(store: _Store) -> bool:
    """Give back one reference (with _stores_lock held); True: the store is to be closed."""
    store.refs -= 1
    if store.refs > 0:
        return False
    for key, s in list(_stores.items()):
        if s is store:
            del _stores[key]
    return True


def _release_store(store: _Store, *, late: bool = False) -> None:
    """Give back a factory's reference; late: from a finalizer (queued, never blocks)."""
    if late:
        _released_late.append(store)  # atomic under the GIL
    else:
        with _stores_lock:
            closing = _drop_ref(store)
        if closing:
            store.close()
    _release_late_stores()


def _owned(lock: Any) -> bool:
    is_owned = getattr(lock, "_is_owned", None)  # RLock: held by this thread
    return bool(is_owned()) if is_owned is not None else False


def _release_late_stores() -> None:
    """Work off what finalizers queued, as far as that cannot block this thread."""
    while _released_late or _closing_late:
        if not _stores_lock.acquire(blocking=False):
            return  # its holder (maybe this thread, further up) calls this after it
        try:
            while _released_late:
                store = _released_late.pop()
                if _drop_ref(store):
                    _closing_late.append(store)
            todo = [s for s in _closing_late if not _owned(s.lock)]
            _closing_late[:] = [s for s in _closing_late if _owned(s.lock)]
        finally:
            _stores_lock.release()
        for store in todo:
            store.close()
        if not todo:
            return  # only stores in use further up this thread's stack are left


# ---- recorders ---------------------------------------------------------------------------


class KimberliteRecorder(Recorder):
    """Base of the recorders: one stream of one store; tamper evidence surfaced."""

    def __init__(self, store: _Store, stream_id: int, owner: object = None) -> None:
        self._store = store
        self.stream_id = stream_id
        self._insert = store._insert  # the usual insert, in C (see _Store.insert_events)
        method = getattr(type(self), "insert_events", None)
        if method in _C_INSERTS:
            # insert_events without a Python frame: the usual call made by the C half, any
            # other (keywords such as tracking=, or what the C half declines) by the method
            # (csrc/py_es.c, _EsInsert). Not for subclasses that define their own.
            # The fallback is what the method does after the C half declined, without a
            # reference to the recorder (which would make a cycle, and a recorder dropped
            # right after `.insert_events` is looked up must still work).
            tracked = method is KimberliteProcessRecorder.insert_events
            returns_ids = method is not KimberliteAggregateRecorder.insert_events

            def fallback(stored_events: Sequence[StoredEvent], **kwargs: Any
                         ) -> Optional[Sequence[int]]:
                if kwargs:  # (not tried in C)
                    ids = store.insert_events(
                        stream_id, stored_events,
                        cast(Optional[Tracking], kwargs.get("tracking")) if tracked else None)
                else:
                    ids = store.insert_python(stream_id, stored_events, None)
                return ids if returns_ids else None
            setattr(self, "insert_events", _core._EsInsert(
                store.writer, stream_id, fallback, _raise_mapped, returns_ids))
        self._owner = owner  # the factory: it closes the store when collected, not before

    @property
    def storage(self) -> Any:
        """The kimberlite ``Storage`` (or ``MemoryStorage``) holding this recorder's stream."""
        return self._store.storage

    def head_hash(self) -> Optional[bytes]:
        """The chain hash of the stream's last record (``None`` while it is empty).

        Keep it somewhere an attacker cannot write; :meth:`verify` checks the store
        against it later.
        """
        with self._store.lock:
            self._store._check_open()
            with _engine_errors():
                return cast(Optional[bytes], self.storage.latest_chain_hash(self.stream_id))

    def verify(self, expected_head: Optional[bytes] = None) -> Tuple[int, Optional[bytes]]:
        """Check the stream's whole hash chain from genesis (and against ``expected_head``).

        Returns ``(records, head hash)``. Raises ``DataError`` whose ``__cause__`` is
        kimberlite's ``ChainVerificationError`` or ``CorruptedRecordError`` when the stream
        was altered, truncated or reordered.
        """
        with self._store.lock:
            self._store._check_open()
        with _engine_errors():
            return cast(Tuple[int, Optional[bytes]],
                        self.storage.verify(self.stream_id, expected_head=expected_head))


class KimberliteAggregateRecorder(KimberliteRecorder, AggregateRecorder):
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any
                      ) -> Optional[Sequence[int]]:
        # (_Store.insert_events, with its first step inline: one Python frame less per call)
        try:
            ids = self._insert(self.stream_id, stored_events)
        except (_kerr.StorageError, ValueError) as e:
            raise _mapped(e) from e
        if ids is None:
            self._store.insert_python(self.stream_id, stored_events, None)
        return None

    def select_events(self, originator_id: Any, *, gt: Optional[int] = None,
                      lte: Optional[int] = None, desc: bool = False,
                      limit: Optional[int] = None) -> Sequence[StoredEvent]:
        return self._store.run(self._store.select_events, self.stream_id, originator_id,
                               gt, lte, desc, limit)


class KimberliteApplicationRecorder(KimberliteAggregateRecorder, ApplicationRecorder):
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any
                      ) -> Optional[Sequence[int]]:
        # (_Store.insert_events, with its first step inline: one Python frame less per call)
        try:
            ids = self._insert(self.stream_id, stored_events)
        except (_kerr.StorageError, ValueError) as e:
            raise _mapped(e) from e
        if ids is None:
            return self._store.insert_python(self.stream_id, stored_events, None)
        return ids

    def select_notifications(self, start: Optional[int], limit: int,
                             stop: Optional[int] = None, topics: Sequence[str] = (), *,
                             inclusive_of_start: bool = True) -> Sequence[Notification]:
        return self._store.run(self._store.select_notifications, self.stream_id, start,
                               limit, stop, topics, inclusive_of_start)

    def max_notification_id(self) -> Optional[int]:
        return self._store.run(self._store.max_notification_id, self.stream_id)

    def subscribe(self, gt: Optional[int] = None, topics: Sequence[str] = ()
                  ) -> Subscription[ApplicationRecorder]:
        """New events are pushed at once by writes of this process; a read-only store
        polls every ``KIMBERLITE_POLL_INTERVAL`` seconds (default 0.1)."""
        return KimberliteSubscription(recorder=self, gt=gt, topics=topics)


class KimberliteSubscription(ListenNotifySubscription[KimberliteApplicationRecorder]):
    def __init__(self, recorder: KimberliteApplicationRecorder, gt: Optional[int] = None,
                 topics: Sequence[str] = ()) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        recorder._store.listen(self._has_been_notified, recorder.stream_id)
        # Events recorded between the first pull and listen() are fetched by one more pull.
        self._has_been_notified.set()

    def stop(self) -> None:
        super().stop()
        self._recorder._store.unlisten(self._has_been_notified)


class KimberliteTrackingRecorder(KimberliteRecorder, TrackingRecorder):
    def insert_tracking(self, tracking: Tracking) -> None:
        self._store.insert_events(self.stream_id, [], tracking)

    def max_tracking_id(self, application_name: str) -> Optional[int]:
        return self._store.run(self._store.max_tracking_id, self.stream_id,
                               application_name)


class KimberliteProcessRecorder(KimberliteTrackingRecorder, KimberliteApplicationRecorder,
                                ProcessRecorder):
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any
                      ) -> Optional[Sequence[int]]:
        tracking: Optional[Tracking] = kwargs.get("tracking")
        return self._store.insert_events(self.stream_id, stored_events, tracking)


# The recorders' insert_events that _EsInsert stands in for (KimberliteRecorder.__init__).
_C_INSERTS = (KimberliteAggregateRecorder.insert_events,
              KimberliteApplicationRecorder.insert_events,
              KimberliteProcessRecorder.insert_events)


# ---- factory -----------------------------------------------------------------------------


class KimberliteFactory(InfrastructureFactory[KimberliteTrackingRecorder]):
    """Builds recorders over one kimberlite data directory (see the module docstring)."""

    KIMBERLITE_PATH = "KIMBERLITE_PATH"
    KIMBERLITE_FSYNC = "KIMBERLITE_FSYNC"
    KIMBERLITE_READ_ONLY = "KIMBERLITE_READ_ONLY"
    KIMBERLITE_STREAM_ID = "KIMBERLITE_STREAM_ID"
    KIMBERLITE_MAX_SEGMENT_SIZE = "KIMBERLITE_MAX_SEGMENT_SIZE"
    KIMBERLITE_MAX_EVENT_SIZE = "KIMBERLITE_MAX_EVENT_SIZE"
    KIMBERLITE_POLL_INTERVAL = "KIMBERLITE_POLL_INTERVAL"

    aggregate_recorder_class = KimberliteAggregateRecorder
    application_recorder_class = KimberliteApplicationRecorder
    tracking_recorder_class = KimberliteTrackingRecorder
    process_recorder_class = KimberliteProcessRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        self._store: Optional[_Store] = None
        path = self.env.get(self.KIMBERLITE_PATH)
        if not path:
            raise OSError("kimberlite data directory not found in environment with keys: "
                          f"{', '.join(self.env.create_keys(self.KIMBERLITE_PATH))} "
                          "(a directory path, or ':memory:')")
        fsync = self._bool(self.KIMBERLITE_FSYNC, "y")
        read_only = self._bool(self.KIMBERLITE_READ_ONLY, "n")
        self.stream_id = self._int(self.KIMBERLITE_STREAM_ID, 1, 0, 2**64 - 1)
        kwargs = {}
        for name, arg in ((self.KIMBERLITE_MAX_SEGMENT_SIZE, "max_segment_size"),
                          (self.KIMBERLITE_MAX_EVENT_SIZE, "max_event_size")):
            if (self.env.get(name) or "").strip():
                kwargs[arg] = self._int(name, 0, 1, 2**63)
        poll = self.env.get(self.KIMBERLITE_POLL_INTERVAL, "0.1")
        try:
            poll_interval = float(poll)
            if not poll_interval > 0:
                raise ValueError
        except ValueError:
            raise OSError(f"{self.KIMBERLITE_POLL_INTERVAL} must be a positive number of "
                          f"seconds, not {poll!r}") from None
        self._store = _acquire_store(path, read_only=read_only, fsync=fsync,
                                     storage_kwargs=kwargs, poll_interval=poll_interval)

    def _bool(self, name: str, default: str) -> bool:
        value = self.env.get(name, default) or default
        try:
            return bool(strtobool(value))
        except ValueError:
            raise OSError(f"{name} must be a yes/no value (y, n, true, false, 1, 0), "
                          f"not {value!r}") from None

    def _int(self, name: str, default: int, low: int, high: int) -> int:
        value = (self.env.get(name) or "").strip()
        if not value:
            return default
        try:
            n = int(value)
        except ValueError:
            n = low - 1
        if not low <= n <= high:
            raise OSError(f"{name} must be an integer in [{low}, {high}], not {value!r}")
        return n

    @property
    def store(self) -> _Store:
        if self._store is None or self._store.closed:
            raise ProgrammingError("this KimberliteFactory is closed")
        return self._store

    @property
    def storage(self) -> Any:
        """The kimberlite ``Storage`` (``MemoryStorage`` for ``:memory:``) of this factory."""
        return self.store.storage

    def stream_for(self, purpose: str) -> int:
        """The stream id of an aggregate recorder's purpose ("events", "snapshots", ...)."""
        if purpose == "events":
            return self.stream_id
        override = self.env.get(f"KIMBERLITE_{purpose.upper()}_STREAM_ID")
        if override:
            return self._int(f"KIMBERLITE_{purpose.upper()}_STREAM_ID", 0, 0, 2**64 - 1)
        if purpose == "snapshots":
            return (self.stream_id + 1) % 2**64
        return 2**32 + zlib.crc32(purpose.encode("utf-8"))

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        return self.aggregate_recorder_class(self.store, self.stream_for(purpose), self)

    def application_recorder(self) -> ApplicationRecorder:
        topic = self.env.get(self.APPLICATION_RECORDER_TOPIC)
        cls = resolve_topic(topic) if topic else self.application_recorder_class
        assert issubclass(cls, KimberliteApplicationRecorder), cls
        return cls(self.store, self.stream_id, self)

    def tracking_recorder(self, tracking_recorder_class: Optional[
            type[KimberliteTrackingRecorder]] = None) -> KimberliteTrackingRecorder:
        cls = tracking_recorder_class
        if cls is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            cls = resolve_topic(topic) if topic else self.tracking_recorder_class
        assert cls is not None and issubclass(cls, KimberliteTrackingRecorder), cls
        return cls(self.store, self.stream_id, self)

    def process_recorder(self) -> ProcessRecorder:
        topic = self.env.get(self.PROCESS_RECORDER_TOPIC)
        cls = resolve_topic(topic) if topic else self.process_recorder_class
        assert issubclass(cls, KimberliteProcessRecorder), cls
        return cls(self.store, self.stream_id, self)

    def flush(self) -> None:
        """Commit the index now (it is otherwise committed every 1,000 records or second)."""
        with self.store.lock:
            self.store.run(self.store.commit)

    def close(self) -> None:
        """Release the store (closed with the last factory using it); idempotent."""
        store, self._store = self._store, None
        if store is not None:
            _release_store(store)

    def __del__(self) -> None:
        store, self._store = getattr(self, "_store", None), None
        if store is None:
            return
        try:
            _release_store(store, late=True)  # never blocks: see _released_late
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


Factory = KimberliteFactory
