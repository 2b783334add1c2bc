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
  id), filled as records are indexed and, after a reopen, from the index file on demand.
* **The index** (originator id -> one row per record holding its events: version range,
  count, record offset, byte position; first notification id -> record offset; tracking
  ids) is a SQLite file in ``KIMBERLITE_PATH/eventsourcing/`` (a directory the engine
  ignores), written behind the appends in batches. It is a cache like
  ``.idx``: it stores, per stream, the offset it has indexed up to and the chain hash of the
  record before it; on open these are checked against the records, a tail of newer records
  is indexed incrementally, and a missing, stale, truncated or corrupt index is rebuilt from
  the records. Every row used by a read is confirmed against the record it points to.
* **Tamper evidence**: every recorder has ``.storage``, ``.stream_id``, ``head_hash()`` and
  ``verify(expected_head=...)``; the factory has ``.storage`` too.

Record format, version 1 (little-endian; lengths are u32)::

    "KMES" | version u8 = 1 | flags u8 (bit 0: tracking present) | reserved u16 = 0
    | first notification id u64 | event count u32
    [ application name: len + UTF-8 | tracked notification id i64 ]        if bit 0
    event * count:
        kind u8 (0: UUID, 16 bytes follow; 1: str, len + UTF-8 follow)
        | originator_version i64 | topic: len + UTF-8 | state: len + bytes
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
import time
import zlib
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

import kimberlite as _kerr  # the public API only (SPEC §4)
from kimberlite import MemoryStorage, Storage

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

Decoded = Tuple[int, Optional[Tracking], List[StoredEvent]]


def encode_record(first_id: int, stored_events: Sequence[StoredEvent],
                  tracking: Optional[Tracking] = None) -> bytes:
    """Encode one ``insert_events`` call (version 1 of the format in the module docstring).

    Raises ``DataError`` for values the format cannot hold (a version outside int64, an
    originator id that is neither ``UUID`` nor ``str``).
    """
    return _encode(first_id, stored_events, tracking)[0]


def _encode(first_id: int, stored_events: Sequence[StoredEvent],
            tracking: Optional[Tracking], keys: bool = False) -> Tuple[bytes, List[Any]]:
    """The record and the byte position of each event in it.

    With ``keys``, ``(index key, version, position)`` of each event instead of the
    position (what :func:`_scan_record` finds when it reads the record back).
    """
    try:
        parts = [_HEAD.pack(_MAGIC, FORMAT_VERSION, _FLAG_TRACKING if tracking else 0, 0,
                            first_id, len(stored_events))]
        pos = _HEAD.size
        if tracking is not None:
            name = tracking.application_name.encode("utf-8")
            parts += [_U32.pack(len(name)), name, _I64.pack(tracking.notification_id)]
            pos += 12 + len(name)
        out: List[Any] = []
        for s in stored_events:
            oid = s.originator_id
            version = s.originator_version
            if isinstance(oid, UUID):
                key: Any = oid.bytes
                head = _EV_UUID.pack(0, key, version)
            elif isinstance(oid, str):
                b = oid.encode("utf-8")
                head = b"".join((_EV_STR.pack(1, len(b)), b, _I64.pack(version)))
                key = _key(oid) if keys else None
            else:
                raise DataError(f"originator_id must be a UUID or a str, not "
                                f"{type(oid).__name__}: {oid!r}")
            out.append((key, version, pos) if keys else pos)
            topic = s.topic.encode("utf-8")
            state = s.state if type(s.state) is bytes else bytes(s.state)
            parts += [head, _U32.pack(len(topic)), topic, _U32.pack(len(state)), state]
            pos += len(head) + 8 + len(topic) + len(state)
    except (struct.error, AttributeError, TypeError, UnicodeError) as e:
        raise DataError(f"cannot encode stored events for kimberlite: {e}") from e
    return b"".join(parts), out


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


def _key(originator_id: Any) -> Any:
    """The index key: 16 bytes (BLOB) for a UUID or its canonical string, else the text."""
    if isinstance(originator_id, UUID):
        return originator_id.bytes
    if isinstance(originator_id, str) and len(originator_id) == 36:
        try:
            u = UUID(originator_id)
        except ValueError:
            return originator_id
        if str(u) == originator_id:
            return u.bytes
    return str(originator_id)


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


@contextmanager
def _engine_errors() -> Iterator[None]:
    try:
        yield
    except DatabaseError:
        raise
    except (_kerr.StorageError, ValueError) as e:
        raise _mapped(e) from e


def _row_order(row: Tuple[Any, ...]) -> Tuple[int, bool, Any, int]:
    return row[0], isinstance(row[1], str), row[1], row[2]


def _by_version(event: StoredEvent) -> int:
    return event.originator_version


def _table_rows(sid: int, offset: int, evrows: List[Tuple[Any, int, int]]
                ) -> List[Tuple[Any, ...]]:
    """The index rows of one record: one per aggregate, ``(stream, key, last version,
    first version, event count, record offset, byte position of its first event)``."""
    if len(evrows) == 1:
        k, v, pos = evrows[0]
        return [(sid, k, v, v, 1, offset, pos)]
    groups: Dict[Any, List[int]] = {}
    for k, v, pos in evrows:
        g = groups.get(k)
        if g is None:
            groups[k] = [v, v, 1, pos]
        else:
            g[0] = max(g[0], v)
            g[1] = min(g[1], v)
            g[2] += 1
    return [(sid, k, g[0], g[1], g[2], offset, g[3]) for k, g in groups.items()]


class _IndexMismatch(Exception):
    """A row of the index does not agree with the record it points to: rebuild and retry."""


# ---- the store: one Storage, one index, one lock -----------------------------------------

_SCHEMA_VERSION = 3
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (stream INTEGER PRIMARY KEY, next_offset INTEGER,"
    " head BLOB, next_id INTEGER, rows INTEGER)",
    # One row per aggregate per record (see _table_rows): 1 B-tree insert per call of
    # one aggregate, however many events it has.
    "CREATE TABLE IF NOT EXISTS events (stream INTEGER, key, last INTEGER, first INTEGER,"
    " count INTEGER, offset INTEGER, pos INTEGER, PRIMARY KEY (stream, key, last))"
    " WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS recs (stream INTEGER, first_id INTEGER, offset INTEGER,"
    " PRIMARY KEY (stream, first_id)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS tracking (stream INTEGER, app TEXT, id INTEGER,"
    " PRIMARY KEY (stream, app)) WITHOUT ROWID",
]
_FLUSH_RECORDS = 1000  # the index writer wakes when this many records are buffered ...
_COMMIT_SECONDS = 1.0  # ... or this long after its last write, and on close
_CATCH_UP_RECORDS = 20000  # opening a stream writes its new tail in steps of this many
_LOAD_ALL_MISSES = 256  # after this many lookups of unknown keys, load all keys at once
_DB_CACHE_KIB = 16 * 1024  # SQLite page cache of the writer: random B-tree inserts
_READ_CHUNK = 64 * 1024
_CACHE_BYTES = 8 << 20  # payloads of records read by select_events, least recently used out


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


class _StreamState:
    """What this process knows of one stream: authoritative, in memory.

    ``keys`` maps an index key to its versions (see :func:`_has_version`) for every key
    whose versions have been looked at since the stream was loaded: it always holds all of
    that key's versions in records before ``indexed``. When ``complete`` it holds every key
    of the stream (the stream was new or rebuilt here, or all keys were loaded), so an
    absent key has no events; otherwise an absent key is looked up in the index file.
    """

    __slots__ = ("stream_id", "indexed", "next_id", "rows", "error", "keys", "complete",
                 "misses")

    def __init__(self, stream_id: int, indexed: int, next_id: int, rows: int,
                 complete: bool) -> None:
        self.error: Optional[str] = None  # the stream holds a record this module cannot use
        self.stream_id = stream_id
        self.indexed = indexed  # offset of the first record not yet indexed (in memory)
        self.next_id = next_id  # notification id of the next event
        self.rows = rows  # events of the stream in records before `indexed`
        self.keys: Dict[Any, Any] = {}
        self.complete = complete
        self.misses = 0


_MISSING = object()


class _Store:
    """A data directory (or a MemoryStorage) with its index, shared by the recorders.

    ``lock`` (an RLock) serialises the recorders' calls and every use of the SQLite
    connection.
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
        # Rows of new records, not yet in the index file (written behind, in one
        # transaction with the watermark of the streams they belong to).
        self._buf_events: List[Tuple[Any, ...]] = []
        self._buf_recs: List[Tuple[int, int, int]] = []
        self._buf_tracking: Dict[Tuple[int, str], int] = {}
        self._buf_records = 0
        self._dirty: Set[int] = set()  # streams whose watermark moved since the last write
        self._tracking: Dict[Tuple[int, str], Optional[int]] = {}  # known tracking ids
        self._payloads: OrderedDict[Tuple[int, int], bytes] = OrderedDict()
        self._cached_bytes = 0
        with _engine_errors():
            if self.memory:
                self.storage: Any = MemoryStorage(**storage_kwargs)
            else:
                self.storage = Storage(path, read_only=read_only, **storage_kwargs)
        self.index_path = (None if self.memory
                           else os.path.join(path, "eventsourcing", "index.sqlite3"))
        try:
            self.db = self._open_index()
        except BaseException:
            self.storage.close()
            raise

    # -- index file ---------------------------------------------------------------------

    def _open_index(self) -> sqlite3.Connection:
        if self.index_path is None:
            db = self._connect(":memory:")
        elif self.read_only:
            db = self._connect(":memory:")
            if os.path.exists(self.index_path):
                # A private copy of the writer's committed index; the tail is indexed here.
                try:
                    src = sqlite3.connect(f"file:{self.index_path}?mode=ro", uri=True)
                    try:
                        src.backup(db)
                    finally:
                        src.close()
                except sqlite3.Error as e:
                    _log.warning("index %s unusable (%s); indexing in memory",
                                 self.index_path, e)
                    db.close()
                    db = self._connect(":memory:")
        else:
            os.makedirs(os.path.dirname(self.index_path), exist_ok=True)
            db = self._connect(self.index_path)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(f"PRAGMA cache_size=-{_DB_CACHE_KIB}")
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, _SCHEMA_VERSION):
                    raise sqlite3.DatabaseError(f"schema version {version}, expected "
                                                f"{_SCHEMA_VERSION}")
            except sqlite3.DatabaseError as e:
                _log.warning("index %s unreadable (%s); rebuilding it", self.index_path, e)
                db.close()
                self._remove_index_files()
                db = self._connect(self.index_path)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(f"PRAGMA cache_size=-{_DB_CACHE_KIB}")
        for stmt in _SCHEMA:
            db.execute(stmt)
        db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        return db

    @staticmethod
    def _connect(name: str) -> sqlite3.Connection:
        return sqlite3.connect(name, check_same_thread=False, isolation_level=None)

    def _remove_index_files(self) -> None:
        assert self.index_path is not None
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.remove(self.index_path + suffix)
            except FileNotFoundError:
                pass

    def _reset_index(self, why: BaseException) -> None:
        """Throw the whole index away (it is a cache) and start again from the records."""
        _log.warning("kimberlite.eventsourcing index of %s dropped and rebuilt: %s",
                     self.path, why)
        with self.lock:
            try:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            try:
                self.db.close()
            except sqlite3.Error:
                pass
            self._clear_buffers()
            self._tracking.clear()
            self._payloads.clear()
            self._cached_bytes = 0
            self.streams.clear()
            if self.index_path is not None and not self.read_only:
                self._remove_index_files()
            self.db = self._open_index()

    def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Call ``fn`` under the lock; if the index proves bad, rebuild it and call again."""
        with self.lock:
            if self.closed:
                self._check_open()
            try:
                return fn(*args)
            except (sqlite3.DatabaseError, _IndexMismatch) as e:
                self._reset_index(e)
            try:
                return fn(*args)
            except (sqlite3.DatabaseError, _IndexMismatch) as e:
                self._reset_index(e)
                raise DatabaseError(f"kimberlite index keeps failing: {e}") from e

    def _query(self, sql: str, params: Sequence[Any]) -> List[Any]:
        """One read of the index file (caller: ``lock``)."""
        return self.db.execute(sql, params).fetchall()

    def _clear_buffers(self) -> None:
        self._buf_events = []
        self._buf_recs = []
        self._buf_tracking = {}
        self._buf_records = 0
        self._dirty = set()

    # -- writing the index behind ---------------------------------------------------------

    def _take(self) -> Optional[Tuple[Any, ...]]:
        """The buffered rows and the watermarks they bring the index to (caller: ``lock``).

        A watermark is ``(stream, indexed, chain hash of record indexed - 1, next id,
        rows)``: written in the same transaction as the rows, so that the index file is
        never ahead of what it holds.
        """
        if not self._dirty:
            return None
        metas = []
        with _engine_errors():
            for sid in self._dirty:
                st = self.streams.get(sid)
                if st is None:
                    continue
                head = None
                if st.indexed:
                    if self.storage.next_offset(sid) == st.indexed:
                        head = self.storage.latest_chain_hash(sid)
                    else:  # part of a tail being indexed
                        head = self.storage.read_records(sid, st.indexed - 1,
                                                         1)[0].compute_hash()
                metas.append((sid, st.indexed, head, st.next_id, st.rows))
        batch = (self._buf_events, self._buf_recs, self._buf_tracking, metas)
        self._clear_buffers()
        return batch

    def _write(self, batch: Tuple[Any, ...]) -> None:
        """Write one batch and its watermarks in one transaction (caller: ``lock``)."""
        events, recs, tracking, metas = batch
        db = self.db
        db.execute("BEGIN")
        try:
            # In key order, a batch of B-tree inserts touches each page once, not at random.
            try:
                events.sort()
            except TypeError:  # UUID and text keys: bytes and str do not compare
                events.sort(key=_row_order)
            db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?)", events)
            db.executemany("INSERT INTO recs VALUES (?,?,?)", recs)
            db.executemany("INSERT OR REPLACE INTO tracking VALUES (?,?,?)",
                           [(sid, app, nid) for (sid, app), nid in tracking.items()])
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?,?,?,?,?)", metas)
            db.execute("COMMIT")
        except BaseException as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(e, sqlite3.IntegrityError):  # rows the index should not hold
                raise _IndexMismatch(f"index rows conflict with new records: {e}") from e
            raise

    def flush(self) -> None:
        """Write everything buffered into the index file now (caller: ``lock``)."""
        batch = self._take()
        self._last_write = time.monotonic()
        if batch is not None:
            self._write(batch)

    commit = flush

    def _written_behind(self) -> None:
        """Rows were buffered: write them when there are enough, or a second has passed.

        Synchronously, under the lock: a writer thread was tried and measured no faster
        (SQLite's B-tree inserts need the CPU the appends use, and the thread's GIL
        hand-offs cost the insert path more than they saved; docs/EVENTSOURCING.md).
        """
        if self._buf_records >= _FLUSH_RECORDS or (
                time.monotonic() - self._last_write >= _COMMIT_SECONDS):
            self.flush()

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

    def _load(self, sid: int) -> _StreamState:
        with _engine_errors():
            n = self.storage.next_offset(sid)
        found = self._query("SELECT next_offset, head, next_id, rows FROM meta"
                            " WHERE stream=?", (sid,))
        st: Optional[_StreamState] = None
        if found:
            off, head, next_id, rows = found[0]
            why = None
            if off > n:
                why = f"it covers {off} records, the stream has {n}"
            elif off > 0:
                with _engine_errors():
                    rec = self.storage.read_records(sid, off - 1, 1)[0]
                if rec.compute_hash() != head:
                    why = f"the chain hash of record {off - 1} differs"
            if why is None:
                st = _StreamState(sid, off, next_id, rows, complete=rows == 0)
            else:
                _log.warning("kimberlite.eventsourcing index of stream %d in %s is stale "
                             "(%s); rebuilding it", sid, self.path, why)
        if st is None:
            self.db.execute("BEGIN")
            for table in ("meta", "events", "recs", "tracking"):
                self.db.execute(f"DELETE FROM {table} WHERE stream=?", (sid,))
            self.db.execute("COMMIT")
            st = _StreamState(sid, 0, 1, 0, complete=True)
        self.streams[sid] = st
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
                if self._buf_records >= _CATCH_UP_RECORDS:
                    self.flush()
        self._written_behind()

    def _versions(self, st: _StreamState, key: Any) -> Any:
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
        for row in self._query("SELECT last, first, count, offset FROM events"
                               " WHERE stream=? AND key=? ORDER BY last",
                               (st.stream_id, key)):
            known = self._add_row_versions(st, key, known, *row)
        st.keys[key] = known
        return known

    def _add_row_versions(self, st: _StreamState, key: Any, known: Any, last: int,
                          first: int, count: int, offset: int) -> Any:
        """``known`` with the versions of one row of the index file added."""
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
        """Make ``st.keys`` complete: one pass over the stream's rows in the index file.

        Keys already known are kept (they are complete and may hold versions the file
        does not have yet); every other key has all its versions in the file.
        """
        keys = st.keys
        loaded: Dict[Any, Any] = {}
        rows = self.db.execute("SELECT key, last, first, count, offset FROM events"
                               " WHERE stream=? ORDER BY key, last",
                               (st.stream_id,)).fetchall()
        for k, last, first, count, offset in rows:
            if k not in keys:
                loaded[k] = self._add_row_versions(st, k, loaded.get(k), last, first, count,
                                                   offset)
        loaded.update(keys)
        st.keys = loaded
        st.complete = True

    def _add_rows(self, st: _StreamState, rows: List[Tuple[Any, int, int]],
                  tracking: Optional[Tracking]) -> None:
        """Account for record ``st.indexed`` in memory (``rows``: its events' keys,
        versions and positions); its index rows are buffered for the writer."""
        sid = st.stream_id
        if rows:
            self._buf_events += _table_rows(sid, st.indexed, rows)
            self._buf_recs.append((sid, st.next_id, st.indexed))
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
            st.rows += len(rows)
        if tracking is not None:
            key = (sid, tracking.application_name)
            self._buf_tracking[key] = self._tracking[key] = tracking.notification_id
        st.indexed += 1
        self._buf_records += 1
        self._dirty.add(sid)

    def _tracking_id(self, sid: int, app: str) -> Optional[int]:
        key = (sid, app)
        nid = self._tracking.get(key, _MISSING)
        if nid is _MISSING:
            found = self._query("SELECT id FROM tracking WHERE stream=? AND app=?",
                                (sid, app))
            nid = self._tracking[key] = None if not found else int(found[0][0])
        return cast(Optional[int], nid)

    # -- writes -------------------------------------------------------------------------

    def insert(self, sid: int, stored_events: Sequence[StoredEvent],
               tracking: Optional[Tracking]) -> List[int]:
        if self.read_only:
            raise OperationalError(f"the kimberlite store {self.path!r} was opened read-only "
                                   "(KIMBERLITE_READ_ONLY); it cannot record events")
        if not stored_events and tracking is None:
            return []
        st = self.streams.get(sid)
        if st is None or st.error is not None:
            st = self.stream(sid)
        first, offset = st.next_id, st.indexed
        # Encoding checks the values (DataError first) and yields the index rows.
        payload, rows = _encode(first, stored_events, tracking, True)
        # Optimistic concurrency, checked in memory before anything is written.
        keys = st.keys
        seen: Optional[Set[Tuple[Any, int]]] = set() if len(rows) > 1 else None
        for key, v, _ in rows:
            known = keys.get(key, _MISSING)
            if known is _MISSING:
                known = self._versions(st, key)
            clash = known is not None and (1 <= v <= known if type(known) is int
                                           else v in known)
            if seen is not None:
                clash = clash or (key, v) in seen
                seen.add((key, v))
            if clash:
                versions = [r[1] for r in rows if r[0] == key]
                raise IntegrityError(
                    f"stored event already recorded, or twice in one call: originator_id "
                    f"{key if isinstance(key, str) else UUID(bytes=key)}, versions "
                    f"{versions} (stream {sid}); nothing of this call was written")
        if tracking is not None:
            recorded = self._tracking_id(sid, tracking.application_name)
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
        try:
            self._written_behind()
        except (sqlite3.Error, _IndexMismatch, DatabaseError) as e:
            self._reset_index(e)  # the index only: rebuilt from the records on next use
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
            return []  # no such aggregate: no need to write the buffered rows first
        if limit is not None and limit == 0:
            return []
        if limit is not None and limit < 0:
            limit = None  # as SQL's LIMIT -1, which the index used to pass on
        self.flush()
        # Rows whose version range meets (gt, lte], in the order events are returned:
        # every row after the current one holds versions beyond its bound (`first` going
        # up, or `last` going down), which says when `limit` events are certainly found.
        sql = "SELECT first, last, count, offset, pos FROM events WHERE stream=? AND key=?"
        params: List[Any] = [sid, key]
        if gt is not None:
            sql += " AND last>?"
            params.append(gt)
        if lte is not None:
            sql += " AND first<=?"
            params.append(lte)
        sql += " ORDER BY last DESC" if desc else " ORDER BY first"
        out: List[StoredEvent] = []
        for first, last, count, offset, pos in self._query(sql, params):
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
        self.flush()
        if start is None:
            start, inclusive_of_start = 1, True
        first = max(start if inclusive_of_start else start + 1, 1)
        last = st.next_id - 1 if stop is None else min(stop, st.next_id - 1)
        if first > last or limit <= 0:
            return []
        found = self._query("SELECT offset, first_id FROM recs WHERE stream=? AND"
                            " first_id<=? ORDER BY first_id DESC LIMIT 1", (sid, first))
        row = found[0] if found else None
        if row is None:
            raise _IndexMismatch(f"no record indexed for notification id {first}")
        offset, expect_first = row
        wanted = set(topics)
        out: List[Notification] = []
        with _engine_errors():
            records = self.storage.iter_from(sid, offset, records=True,
                                             chunk_bytes=_READ_CHUNK)
            for rec in records:
                first_id, _, events = decode_record(rec.payload)
                if rec.offset == offset and first_id != expect_first:
                    raise _IndexMismatch(f"record {offset} starts at id {first_id}, "
                                         f"the index says {expect_first}")
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
        self.stream(sid)
        return self._tracking_id(sid, app)

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
            for event in list(self.listeners):
                event.set()
            try:
                if not self.read_only:
                    try:
                        self.flush()
                    except (sqlite3.Error, _IndexMismatch, DatabaseError) as e:
                        _log.warning("kimberlite.eventsourcing index not saved: %s", e)
                self.db.close()
            finally:
                with _engine_errors():
                    self.storage.close()


# One store per data directory in a process: a directory has one writer (the engine's lock),
# so factories of this process that name the same directory share it (reference counted).
_stores: Dict[Tuple[str, bool], _Store] = {}
_stores_lock = threading.Lock()


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
        return found


def _release_store(store: _Store) -> None:
    with _stores_lock:
        store.refs -= 1
        if store.refs > 0:
            return
        for key, s in list(_stores.items()):
            if s is store:
                del _stores[key]
    store.close()


# ---- recorders ---------------------------------------------------------------------------


class KimberliteRecorder(Recorder):
    """Base of the recorders: one stream of one store; tamper evidence surfaced."""

    def __init__(self, store: _Store, stream_id: int, owner: object = None) -> None:
        self._store = store
        self.stream_id = stream_id
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
        self._store.run(self._store.insert, self.stream_id, stored_events, None)
        return None

    def select_events(self, originator_id: Any, *, gt: Optional[int] = None,
                      lte: Optional[int] = None, desc: bool = False,
                      limit: Optional[int] = None) -> Sequence[StoredEvent]:
        return self._store.run(self._store.select_events, self.stream_id, originator_id,
                               gt, lte, desc, limit)


class KimberliteApplicationRecorder(KimberliteAggregateRecorder, ApplicationRecorder):
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any
                      ) -> Optional[Sequence[int]]:
        return self._store.run(self._store.insert, self.stream_id, stored_events, None)

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
        self._store.run(self._store.insert, self.stream_id, [], tracking)

    def max_tracking_id(self, application_name: str) -> Optional[int]:
        return self._store.run(self._store.max_tracking_id, self.stream_id,
                               application_name)


class KimberliteProcessRecorder(KimberliteTrackingRecorder, KimberliteApplicationRecorder,
                                ProcessRecorder):
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any
                      ) -> Optional[Sequence[int]]:
        tracking: Optional[Tracking] = kwargs.get("tracking")
        return self._store.run(self._store.insert, self.stream_id, stored_events, tracking)


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
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


Factory = KimberliteFactory
