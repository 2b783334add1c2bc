"""Arrow tables and record-batch readers built on the engine's column reads.

The engine reads a range of records through its verified reader (CRC, offset, chain link,
as every read) straight into column buffers (``Storage._read_columns``, csrc/columns.c):
all payloads back to back in one buffer plus an offsets array — the layout of Arrow's
``binary`` / ``large_binary`` arrays — the record offsets as uint64, and the chain hashes.
``pyarrow.py_buffer`` wraps those buffers without a copy (they expose the buffer protocol
and are freed with the last Arrow array that uses them), so no Python object is made per
event and a table takes about its payload size in memory.

Columns (pick any with ``columns=``, in any order):

=============  ==========================  ==================================================
``offset``     uint64                      the record's offset in the stream
``size``       uint32                      payload bytes
``payload``    binary or large_binary      the event
``prev_hash``  fixed_size_binary(32)       the stored prev_hash; null for genesis (offset 0)
``hash``       fixed_size_binary(32)       the record's chain hash
=============  ==========================  ==================================================

``prev_hash`` and ``hash`` share one buffer: the chain was checked, so the hash of record i
is the prev_hash of record i + 1.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (as _stream.py)
if TYPE_CHECKING:
    from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

__all__ = ["ALL_COLUMNS", "READER_COLUMNS", "DEFAULT_ARROW_CHUNK_BYTES"]

ALL_COLUMNS: Tuple[str, ...] = ("offset", "size", "payload", "prev_hash", "hash")
READER_COLUMNS: Tuple[str, ...] = ("offset", "payload")  # to_arrow_reader's default
DEFAULT_ARROW_CHUNK_BYTES = 4 << 20  # payload bytes per record batch of a reader

_PAYLOAD, _OFFSET, _HASHES, _LARGE = 1, 2, 4, 8
_INT32_MAX = (1 << 31) - 1


def check_columns(columns: Optional[Sequence[str]], default: Tuple[str, ...]) -> List[str]:
    """The columns asked for, checked: a sequence of known, distinct names."""
    if columns is None:
        return list(default)
    if isinstance(columns, (str, bytes)):
        raise TypeError(f"columns must be a list of column names, not a single "
                        f"{type(columns).__name__}: pass columns=[{columns!r}]")
    cols = list(columns)
    for c in cols:
        if c not in ALL_COLUMNS:
            raise ValueError(f"unknown column {c!r}: the columns are "
                             f"{', '.join(ALL_COLUMNS)}")
    if len(set(cols)) != len(cols):
        raise ValueError(f"columns {cols!r} names a column twice")
    if not cols:
        raise ValueError("columns must name at least one column")
    return cols


def check_chunk_bytes(chunk_bytes: Any) -> int:
    if not isinstance(chunk_bytes, int) or isinstance(chunk_bytes, bool):
        raise TypeError(f"chunk_bytes must be an int, not {type(chunk_bytes).__name__}")
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    return chunk_bytes


def check_range(start: Any, stop: Any, length: Callable[[], int]) -> Tuple[int, int]:
    """start/stop as offsets (non-negative ints). stop None: the end, ``length()`` (called
    only then). A given stop is left as it is: the engine clamps it to the end, so a range
    that stops before known damage reads without asking where the stream ends (which
    raises once damage is known)."""
    for name, v in (("start", start), ("stop", stop)):
        if v is None and name == "stop":
            continue
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{name} must be an int offset, not {type(v).__name__}")
        if v < 0:
            raise ValueError(f"{name} must be a non-negative offset, got {v}")
    if stop is not None and stop < start:
        raise ValueError(f"stop ({stop}) must not be before start ({start})")
    end = length() if stop is None else stop
    return start, max(start, end)  # start past the end: an empty range


def schema(pa: Any, columns: Sequence[str], large: bool) -> Any:
    types = {
        "offset": pa.uint64(),
        "size": pa.uint32(),
        "payload": pa.large_binary() if large else pa.binary(),
        "prev_hash": pa.binary(32),
        "hash": pa.binary(32),
    }
    return pa.schema([pa.field(c, types[c], nullable=(c == "prev_hash")) for c in columns])


def read_batch(pa: Any, storage: Any, stream_id: int, start: int, stop: int,
               max_bytes: Optional[int], sch: Any, large: bool,
               auto: bool = False) -> Tuple[int, Any]:
    """One verified column read of [start, stop) (within max_bytes) as a RecordBatch.
    auto: binary when the payloads fit in 2 GiB, else large_binary (sch's payload type
    then follows)."""
    columns = sch.names
    flags = 0
    if "payload" in columns or "size" in columns:
        flags |= _PAYLOAD
    if "offset" in columns:
        flags |= _OFFSET
    if "prev_hash" in columns or "hash" in columns:
        flags |= _HASHES
    if large:
        flags |= _LARGE
    n, payload, po, got_large, offsets, hashes = storage._read_columns(
        stream_id, start, stop, max_bytes, flags)
    if n == 0:  # nothing read (an empty range, or a stream that does not exist)
        return 0, pa.RecordBatch.from_pylist([], schema=sch)
    arrays = []
    payload_arr = None
    if flags & _PAYLOAD:
        if got_large != large:
            if not auto:  # a reader's batch over 2 GiB in a binary schema: cannot happen
                raise ValueError("payloads too large for a binary column; use large_binary")
            sch = schema(pa, columns, got_large)
        payload_arr = pa.Array.from_buffers(
            pa.large_binary() if got_large else pa.binary(),
            n, [None, pa.py_buffer(po), pa.py_buffer(payload)], null_count=0)
    hbuf = pa.py_buffer(hashes) if hashes is not None else None
    for c in columns:
        if c == "offset":
            arrays.append(pa.Array.from_buffers(pa.uint64(), n, [None, pa.py_buffer(offsets)],
                                                null_count=0))
        elif c == "size":
            import importlib

            pc = importlib.import_module("pyarrow.compute")
            arrays.append(pc.binary_length(payload_arr).cast(pa.uint32()))
        elif c == "payload":
            arrays.append(payload_arr)
        elif c == "prev_hash":
            validity, nulls = None, 0
            if start == 0 and n > 0:  # genesis: stored as zeros, shown as null
                bits = bytearray(b"\xff" * ((n + 7) // 8))
                bits[0] &= 0xFE
                validity, nulls = pa.py_buffer(bytes(bits)), 1
            arrays.append(pa.Array.from_buffers(pa.binary(32), n, [validity, hbuf],
                                                null_count=nulls))
        else:  # hash: the same buffer, one hash on
            arrays.append(pa.Array.from_buffers(pa.binary(32), n, [None, hbuf], null_count=0,
                                                offset=1))
    return n, pa.RecordBatch.from_arrays(arrays, schema=sch)


def table(pa: Any, storage: Any, stream_id: int, start: int, stop: int,
          columns: Sequence[str], large: Optional[bool]) -> Any:
    """The records [start, stop) as a one-chunk pyarrow.Table (one read). large None:
    binary payloads when they fit in 2 GiB, else large_binary."""
    sch = schema(pa, columns, bool(large))
    _, batch = read_batch(pa, storage, stream_id, start, stop, None, sch, bool(large),
                          auto=large is None)
    return pa.Table.from_batches([batch])


def reader(pa: Any, storage: Any, stream_id: int, start: int, stop: int, chunk_bytes: int,
           columns: Sequence[str]) -> Any:
    """A pyarrow.RecordBatchReader over [start, stop), about chunk_bytes per batch."""
    # A batch holds under chunk_bytes plus one event (the read_from rule): binary offsets
    # (int32) unless that could pass 2 GiB.
    max_event = getattr(storage, "max_event_size", 64 << 20)
    large = chunk_bytes + max_event > _INT32_MAX
    sch = schema(pa, columns, large)

    def batches() -> Iterator[Any]:
        pos = start
        while pos < stop:
            n, batch = read_batch(pa, storage, stream_id, pos, stop, chunk_bytes, sch, large)
            if n == 0:  # the stream shrank (recovery of an unacknowledged tail)
                return
            pos += n
            yield batch

    return pa.RecordBatchReader.from_batches(sch, batches())


def to_pandas(pd: Any, t: Any) -> Any:
    """A pandas.DataFrame of a table of ALL_COLUMNS' types: integers as int64, binary
    columns Arrow-backed (pd.ArrowDtype), so that no string inference touches them."""
    data = {}
    for name in t.column_names:
        col = t.column(name)
        if name in ("offset", "size"):
            data[name] = pd.Series(col.to_numpy(), dtype="int64")
        else:
            data[name] = pd.Series(pd.arrays.ArrowExtensionArray(col))
    return pd.DataFrame(data)
