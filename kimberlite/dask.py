"""kimberlite.dask: read and verify streams in parallel with Dask.

Install with ``pip install 'kimberlite-storage[dask]'`` (dask[dataframe] and distributed).

* :func:`read_stream` — one stream as a Dask DataFrame indexed by ``offset``, partitioned
  into offset ranges of about ``partition_bytes`` of records, with known divisions:
  ``df.loc[a:b]`` reads only the partitions that hold offsets a to b.
* :func:`read_streams` — several streams in one frame, with a ``stream_id`` column.
* :func:`verify` — the whole-chain verification of :meth:`Storage.verify`, split into
  per-range tasks (``Storage.verify_range``) whose results are stitched at the range
  boundaries: each range returns its record count, its first record's ``prev_hash`` and its
  last record's hash, and each range's first ``prev_hash`` must equal the previous range's
  last hash. Tampering in any range, or at any boundary, is reported with its stream and
  offset.

Every task opens the data directory with ``Storage(path, read_only=True)``: no writer lock
is taken, so the tasks run beside a live writer (they see the records that were complete
when each read began). A worker process keeps a few such read-only opens for reuse
(:func:`_open`); a read-only Storage picks up new appends on every call. The path must be
reachable from every worker (a local directory for a LocalCluster, a shared file system
otherwise).

Records are read and verified by the engine exactly as ``read_from`` does (CRC, offset and
chain link of every record, the first one linked to the record before it), straight into
Arrow buffers (:meth:`Stream.to_pandas`).
"""

from __future__ import annotations

import importlib
import threading
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from . import _arrow
from ._errors import StorageError


def _import_dask() -> Tuple[Any, Any]:
    try:  # through importlib: dask's API is untyped (mypy --strict)
        return importlib.import_module("dask"), importlib.import_module("dask.dataframe")
    except ImportError as e:
        raise ImportError(
            "kimberlite.dask needs dask[dataframe] (and distributed for a cluster), which is "
            "not installed; install it with pip install 'kimberlite-storage[dask]'",
            name=e.name,
        ) from e


dask, dd = _import_dask()

__all__ = ["read_stream", "read_streams", "verify", "StreamVerification",
           "DEFAULT_PARTITION_BYTES"]

DEFAULT_PARTITION_BYTES = 64 << 20  # bytes of records per partition / verification task
_COLUMNS = tuple(c for c in _arrow.ALL_COLUMNS if c != "offset")


_opened: Dict[str, Any] = {}  # path -> read-only Storage, shared by this process's tasks
_opened_lock = threading.Lock()
_OPENED_MAX = 8


def _open(path: str) -> Any:
    """A read-only Storage of `path`, shared by the tasks of this process (at most
    _OPENED_MAX paths are kept; the oldest is dropped first). A dropped Storage is not
    closed here: a task on another thread may still be reading through it. It closes
    when the last task holding it lets it go (Storage closes itself when collected)."""
    from ._storage import Storage

    with _opened_lock:
        s = _opened.get(path)
        if s is None or s.closed:
            _opened.pop(path, None)
            while len(_opened) >= _OPENED_MAX:
                del _opened[next(iter(_opened))]
            s = _opened[path] = Storage(path, read_only=True)
        return s


def _check_partition_bytes(partition_bytes: Any) -> int:
    if not isinstance(partition_bytes, int) or isinstance(partition_bytes, bool):
        raise TypeError(f"partition_bytes must be an int, not "
                        f"{type(partition_bytes).__name__}")
    if partition_bytes <= 0:
        raise ValueError(f"partition_bytes must be positive, got {partition_bytes}")
    return partition_bytes


def _columns(columns: Optional[Sequence[str]]) -> List[str]:
    if columns is not None and not isinstance(columns, (str, bytes)) and "offset" in columns:
        raise ValueError("offset is the index of the frame, not a column: leave it out of "
                         "columns")
    return _arrow.check_columns(columns, ("payload",))


def ranges(storage: Any, stream_id: int, partition_bytes: int) -> List[Tuple[int, int]]:
    """Split a stream into offset ranges [start, stop) of about partition_bytes of records
    each, from its segment bounds (records are assumed evenly sized inside a segment).
    Small segments are merged, large ones split; [] for an empty stream."""
    out: List[Tuple[int, int]] = []
    cur: Optional[int] = None
    acc = 0.0
    pos = 0
    for first, nxt, size in storage.segment_bounds(stream_id):
        if nxt <= first:
            continue
        per = size / (nxt - first)  # bytes per record in this segment
        pos = first
        while pos < nxt:
            if cur is None:
                cur, acc = pos, 0.0
            room = partition_bytes - acc
            take = nxt - pos if per == 0 else max(1, min(nxt - pos, -int(-room // per)))
            pos += take
            acc += take * per
            if acc >= partition_bytes:
                out.append((cur, pos))
                cur = None
    if cur is not None and cur < pos:
        out.append((cur, pos))
    return out


def _read_partition(rng: Tuple[int, int, int], path: str, columns: List[str],
                    with_stream: bool) -> Any:
    stream_id, start, stop = rng
    s = _open(path)
    df = s.stream(stream_id).to_pandas(start, stop, columns=["offset"] + columns)
    if len(df) != stop - start:
        raise StorageError(f"stream {stream_id}: offsets {start} to {stop} were expected, "
                           f"{len(df)} records read; the stream shrank (recovery of an "
                           f"unacknowledged tail?): build the frame again")
    df = df.set_index("offset")
    if with_stream:
        df.insert(0, "stream_id", stream_id)
        df["stream_id"] = df["stream_id"].astype("uint64")
    return df


def _meta(columns: List[str], with_stream: bool) -> Any:
    from ._storage import MemoryStorage

    m = MemoryStorage()
    df = m.stream(0).to_pandas(0, 0, columns=["offset"] + columns).set_index("offset")
    if with_stream:
        df.insert(0, "stream_id", df.index.to_numpy().astype("uint64"))
    return df


def read_stream(path: Any, stream_id: int, *, columns: Optional[Sequence[str]] = None,
                partition_bytes: int = DEFAULT_PARTITION_BYTES) -> Any:
    """Return stream ``stream_id`` of the data directory ``path`` as a Dask DataFrame.

    The index is ``offset`` (int64) with known divisions; the columns are ``payload``
    (``pd.ArrowDtype(pa.binary())``) by default, or any of ``size``, ``payload``,
    ``prev_hash`` and ``hash`` (see :meth:`Stream.to_pandas`). Each partition is an offset
    range of about ``partition_bytes`` of records (default 64 MiB), read by a task that
    opens ``path`` read-only and verifies what it reads. The ranges are fixed now: events
    appended later are not in the frame.
    """
    cols = _columns(columns)
    _check_partition_bytes(partition_bytes)
    path = str(path)
    s = _open(path)
    rs = ranges(s, stream_id, partition_bytes)
    if not rs:
        s.next_offset(stream_id)  # TypeError / ValueError for a bad id
        return dd.from_pandas(_meta(cols, False), npartitions=1, sort=True)
    divisions = tuple(a for a, _ in rs) + (rs[-1][1] - 1,)
    return dd.from_map(_read_partition, [(stream_id, a, b) for a, b in rs], path=path,
                       columns=cols, with_stream=False, meta=_meta(cols, False),
                       divisions=divisions, label=f"kimberlite-stream-{stream_id}",
                       enforce_metadata=False)


def read_streams(path: Any, streams: Optional[Iterable[int]] = None, *,
                 columns: Optional[Sequence[str]] = None,
                 partition_bytes: int = DEFAULT_PARTITION_BYTES) -> Any:
    """Several streams (default: all) in one Dask DataFrame, with a ``stream_id`` column
    (uint64) before the others; the index is each record's ``offset`` in its stream, so
    the divisions are unknown. Partitions as :func:`read_stream`, stream after stream.
    """
    cols = _columns(columns)
    _check_partition_bytes(partition_bytes)
    path = str(path)
    s = _open(path)
    ids = s.streams() if streams is None else list(streams)
    parts = [(sid, a, b) for sid in ids for a, b in ranges(s, sid, partition_bytes)]
    meta = _meta(cols, True)
    if not parts:
        return dd.from_pandas(meta, npartitions=1, sort=False)
    return dd.from_map(_read_partition, parts, path=path, columns=cols, with_stream=True,
                       meta=meta, label="kimberlite-streams", enforce_metadata=False)


# ---- verify ---------------------------------------------------------------------------------

class StreamVerification(NamedTuple):
    """The outcome of :func:`verify` for one stream.

    ``ok``: nothing wrong. Then ``next_offset`` and ``head`` are what
    :meth:`Storage.verify` returns. Otherwise ``offset`` is the first record found damaged
    or altered (as the ``.offset`` of the error Storage.verify raises), ``error`` the
    exception class name and ``message`` what happened and what to do.
    """

    stream_id: int
    ok: bool
    next_offset: Optional[int]
    head: Optional[bytes]
    offset: Optional[int] = None
    error: Optional[str] = None
    message: Optional[str] = None


def _verify_range(path: str, stream_id: int, start: int, stop: int) -> Tuple[Any, ...]:
    """A task: ("ok", count, first_prev_hash, last_hash) or ("error", class, offset, msg)
    (an exception's attributes do not all survive pickling: plain values do)."""
    try:
        return ("ok",) + tuple(_open(path).verify_range(stream_id, start, stop))
    except StorageError as e:
        return ("error", type(e).__name__, getattr(e, "offset", None), str(e))


def _stitch(stream_id: int, rs: List[Tuple[int, int]], results: List[Tuple[Any, ...]],
            expected: Optional[bytes]) -> StreamVerification:
    prev_last: Optional[bytes] = None
    pos = 0
    for (a, b), r in zip(rs, results):
        if r[0] == "error":
            return StreamVerification(stream_id, False, None, None, r[2], r[1], r[3])
        count, first_prev, last = r[1], r[2], r[3]
        if a != pos or count != b - a:
            bad = a + count if a == pos else pos
            return StreamVerification(
                stream_id, False, None, None, bad, "CorruptedRecordError",
                f"stream {stream_id}: records missing at offset {bad} (a range of "
                f"{b - a} records read {count}); the stream changed or lost records")
        if count and first_prev != prev_last:
            return StreamVerification(
                stream_id, False, None, None, a, "ChainVerificationError",
                f"stream {stream_id}: hash chain broken at offset {a}: its prev_hash does "
                f"not match the hash of the record before it, so the log was altered; "
                f"restore it from a trusted copy")
        if count:
            prev_last = last
        pos = b
    if expected is not None and bytes(expected) != prev_last:
        return StreamVerification(
            stream_id, False, None, None, pos - 1 if pos else None, "ChainVerificationError",
            f"stream {stream_id}: head hash does not match the trusted head ({pos} records); "
            f"records were altered, removed or added since that head was recorded")
    return StreamVerification(stream_id, True, pos, prev_last)


def verify(path: Any, streams: Optional[Iterable[int]] = None,
           expected_heads: Optional[Mapping[int, Any]] = None, *,
           partition_bytes: int = DEFAULT_PARTITION_BYTES) -> Dict[int, StreamVerification]:
    """Verify streams of ``path`` (default: all) from genesis in parallel tasks.

    Each stream is split into ranges of about ``partition_bytes``; one task per range runs
    ``Storage.verify_range`` on a read-only open (dask.delayed, on the current scheduler:
    a ``distributed.Client`` when one is active). The results are stitched in order and
    each stream's head is compared with ``expected_heads[stream_id]`` when given (a stream
    named there but absent, or empty, has head None and fails). Returns
    ``{stream_id: StreamVerification}``; nothing is raised for damage or tampering: check
    ``.ok``, and ``.offset`` / ``.message`` for the first problem of each stream. For an
    intact stream, ``(next_offset, head)`` equals ``Storage.verify(stream_id)``.
    """
    _check_partition_bytes(partition_bytes)
    path = str(path)
    s = _open(path)
    expected = dict(expected_heads or {})
    ids = s.streams() if streams is None else list(streams)
    for sid in expected:
        if sid not in ids and streams is None:
            ids.append(sid)
    plans = {sid: ranges(s, sid, partition_bytes) for sid in ids}
    tasks = {sid: [dask.delayed(_verify_range, pure=False)(path, sid, a, b) for a, b in rs]
             for sid, rs in plans.items()}
    (computed,) = dask.compute(tasks)
    return {sid: _stitch(sid, plans[sid], computed[sid], expected.get(sid)) for sid in ids}
