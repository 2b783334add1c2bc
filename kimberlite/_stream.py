"""kimberlite.Stream: a read-only sequence view of one stream, and chunked iteration.

A Stream holds no data: ``len(view)`` asks the engine for the stream's next offset,
``view[i]`` and ``view[a:b]`` read just what they return, and iteration reads about
``chunk_bytes`` (1 MiB) of payload at a time through ``read_from(..., max_bytes=...)``, so
memory stays flat however large the stream. Every record read is checked by the engine
(CRC, offset, chain link); a chunk's first record is linked to the record before it, so
iterating from offset 0 to the end checks the whole chain as it goes.

Everything here is written against the SPEC §4 methods (``read_from``, ``read_records``,
``next_offset`` …), so it works the same on Storage and MemoryStorage.
"""

from __future__ import annotations

import html
import importlib
from typing import (
    TYPE_CHECKING,
    Any,
    Iterator,
    List,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
    overload,
)

from ._errors import ChainVerificationError, CorruptedRecordError, StorageError
from ._record import Record

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["Stream", "DEFAULT_CHUNK_BYTES"]

DEFAULT_CHUNK_BYTES = 1 << 20  # payload bytes per read while iterating
_PREVIEW_ROWS = 5              # rows shown at each end by Stream._repr_html_
_PREVIEW_BYTES = 40            # payload bytes shown per row


class StorageLike(Protocol):
    """The part of the Storage / MemoryStorage API that this module uses."""

    @property
    def path(self) -> Optional[str]: ...
    @property
    def read_only(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    def read_from(
        self, stream_id: int, from_offset: int = 0, max_bytes: Optional[int] = None
    ) -> List[bytes]: ...
    def read_records(
        self, stream_id: int, from_offset: int = 0, max_bytes: Optional[int] = None
    ) -> List[Record]: ...
    def next_offset(self, stream_id: int) -> int: ...
    def latest_chain_hash(self, stream_id: int) -> Optional[bytes]: ...
    def verify(
        self, stream_id: int, expected_head: Optional[Buffer] = None
    ) -> Tuple[int, Optional[bytes]]: ...
    def streams(self) -> List[int]: ...
    def segment_count(self, stream_id: int) -> int: ...


def _short_hash(h: Optional[bytes]) -> str:
    return "—" if h is None else h.hex()[:16] + "…"


def _preview(payload: bytes) -> str:
    shown = repr(payload[:_PREVIEW_BYTES])
    return shown + ("…" if len(payload) > _PREVIEW_BYTES else "")


def _check_chunk(chunk_bytes: int) -> None:
    if not isinstance(chunk_bytes, int) or isinstance(chunk_bytes, bool):
        raise TypeError(f"chunk_bytes must be an int, not {type(chunk_bytes).__name__}")
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")


def iter_chunks(
    storage: StorageLike,
    stream_id: int,
    from_offset: int = 0,
    *,
    records: bool = False,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Union[Iterator[bytes], Iterator[Record]]:
    """Storage.iter_from: check the arguments now (one first read), then yield lazily."""
    _check_chunk(chunk_bytes)
    read: Any = storage.read_records if records else storage.read_from
    first = _read_to_damage(read, stream_id, from_offset, chunk_bytes)  # validates arguments

    def generate() -> Iterator[Any]:
        batch, damage = first
        pos = from_offset
        while batch:
            pos += len(batch)
            yield from batch
            if damage is not None:
                raise damage
            batch, damage = _read_to_damage(read, stream_id, pos, chunk_bytes)
        if damage is not None:
            raise damage

    return generate()


def _read_to_damage(read: Any, stream_id: int, pos: int,
                    chunk_bytes: int) -> Tuple[List[Any], Optional[StorageError]]:
    """One chunk; if damage stops it part-way, the intact events before the damage and the
    error to raise once they are yielded (a read is all or nothing, an iterator need not be).
    """
    try:
        return read(stream_id, pos, chunk_bytes), None
    except (CorruptedRecordError, ChainVerificationError) as e:
        bad = e.offset
        if bad is None or bad <= pos:
            raise
        intact: List[Any] = []
        try:  # rare: one event at a time up to the damage
            while pos + len(intact) < bad:
                got = read(stream_id, pos + len(intact), 1)
                if not got:
                    break
                intact += got[: bad - pos - len(intact)]
        except StorageError:
            pass
        return intact, e


def _require(module: str, extra: str, what: str) -> Any:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{what} needs {module}, which is not installed; install it with "
            f"pip install 'kimberlite[{extra}]'",
            name=module,
        ) from e


class Stream(Sequence[bytes]):
    """A read-only sequence view of one stream of a Storage or MemoryStorage.

    Made by ``storage.stream(stream_id)``. ``len()`` is the stream's next offset at the time
    of the call; ``stream[i]`` (negative ``i`` counts from the end, ``IndexError`` out of
    range) and ``stream[a:b:c]`` (a ``list`` of ``bytes``) read only what they return;
    iteration reads in chunks of about 1 MiB. The view holds no data: it sees events appended
    after it was made, and every read is checked by the engine like ``read_from``.
    """

    __slots__ = ("_storage", "_stream_id")
    __module__ = "kimberlite"

    def __init__(self, storage: StorageLike, stream_id: int) -> None:
        storage.next_offset(stream_id)  # TypeError/ValueError for a bad id, closed storage
        self._storage = storage
        self._stream_id = stream_id

    @property
    def storage(self) -> StorageLike:
        """The Storage or MemoryStorage this view reads from."""
        return self._storage

    @property
    def stream_id(self) -> int:
        """The stream's id."""
        return self._stream_id

    @property
    def head(self) -> Optional[bytes]:
        """The stream's head hash (``latest_chain_hash``), or None when empty."""
        return self._storage.latest_chain_hash(self._stream_id)

    @property
    def segments(self) -> int:
        """The number of segments of the stream (``segment_count``)."""
        return self._storage.segment_count(self._stream_id)

    def __len__(self) -> int:
        return self._storage.next_offset(self._stream_id)

    def _index(self, i: int, n: int) -> int:
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError(f"stream {self._stream_id}: index {i} out of range "
                             f"({n} event{'s' if n != 1 else ''})")
        return j

    def _read_range(self, start: int, stop: int, records: bool) -> List[Any]:
        """Events (or records) start .. stop, read in chunks; at most one chunk extra."""
        read: Any = self._storage.read_records if records else self._storage.read_from
        out: List[Any] = []
        pos = start
        while pos < stop:
            batch = read(self._stream_id, pos, DEFAULT_CHUNK_BYTES)
            if not batch:
                break
            del batch[stop - pos:]
            out.extend(batch)
            pos += len(batch)
        return out

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> List[bytes]: ...

    def __getitem__(self, index: Union[int, slice]) -> Union[bytes, List[bytes]]:
        if isinstance(index, slice):
            return self._slice(index, records=False)
        return self._one(index, records=False)  # type: ignore[no-any-return]

    def _one(self, index: int, records: bool) -> Any:
        if not hasattr(index, "__index__") or isinstance(index, bool):
            raise TypeError(f"stream indices must be integers or slices, "
                            f"not {type(index).__name__}")
        j = self._index(index.__index__(), len(self))
        read: Any = self._storage.read_records if records else self._storage.read_from
        got = read(self._stream_id, j, 1)
        if not got:  # the stream shrank under us (recovery): out of range now
            raise IndexError(f"stream {self._stream_id}: index {index} out of range")
        return got[0]

    def _slice(self, index: slice, records: bool) -> List[Any]:
        r = range(*index.indices(len(self)))
        if not r:
            return []
        if r.step == 1:
            return self._read_range(r.start, r.stop, records)
        if r.step == -1:
            return self._read_range(r.stop + 1, r.start + 1, records)[::-1]
        return [self._one(i, records) for i in r]

    def record(self, index: int) -> Record:
        """The :class:`Record` at ``index`` (negative counts from the end)."""
        return self._one(index, records=True)  # type: ignore[no-any-return]

    def records(self, start: int = 0, stop: Optional[int] = None) -> Iterator[Record]:
        """Iterate over the records from offset ``start`` (to ``stop``, excluded), in chunks."""
        it: Iterator[Any] = iter_chunks(self._storage, self._stream_id, start, records=True)
        for r in it:
            if stop is not None and r.offset >= stop:
                break
            assert isinstance(r, Record)
            yield r

    def __iter__(self) -> Iterator[bytes]:
        it = iter_chunks(self._storage, self._stream_id, 0)
        for ev in it:
            assert isinstance(ev, bytes)
            yield ev

    def verify(self, expected_head: Optional[Buffer] = None) -> Tuple[int, Optional[bytes]]:
        """``storage.verify(stream_id, expected_head)``: check the whole stream from genesis."""
        return self._storage.verify(self._stream_id, expected_head)

    # ---- data frames --------------------------------------------------------------------

    def _columns(self, start: int, stop: Optional[int]) -> Tuple[List[int], List[int],
                                                                  List[bytes],
                                                                  List[Optional[bytes]],
                                                                  List[bytes]]:
        offsets: List[int] = []
        sizes: List[int] = []
        payloads: List[bytes] = []
        prevs: List[Optional[bytes]] = []
        hashes: List[bytes] = []
        for r in self.records(start, stop):
            offsets.append(r.offset)
            sizes.append(len(r.payload))
            payloads.append(r.payload)
            prevs.append(r.prev_hash)
            hashes.append(r.compute_hash())
        return offsets, sizes, payloads, prevs, hashes

    def to_pandas(self, start: int = 0, stop: Optional[int] = None) -> Any:
        """Return the records from ``start`` to ``stop`` as a ``pandas.DataFrame``.

        Columns: ``offset`` (int64), ``size`` (payload bytes, int64), ``payload`` (bytes),
        ``prev_hash`` (32 bytes, None for genesis) and ``hash`` (the record's chain hash).
        The frame holds every row in memory. Needs the ``pandas`` extra
        (``pip install 'kimberlite[pandas]'``).
        """
        pd = _require("pandas", "pandas", "Stream.to_pandas()")
        offsets, sizes, payloads, prevs, hashes = self._columns(start, stop)
        return pd.DataFrame({
            "offset": pd.Series(offsets, dtype="int64"),
            "size": pd.Series(sizes, dtype="int64"),
            "payload": pd.Series(payloads, dtype="object"),
            "prev_hash": pd.Series(prevs, dtype="object"),
            "hash": pd.Series(hashes, dtype="object"),
        })

    def to_arrow(self, start: int = 0, stop: Optional[int] = None) -> Any:
        """Return the records from ``start`` to ``stop`` as a ``pyarrow.Table``.

        The columns of :meth:`to_pandas`, typed ``uint64``, ``uint32``, ``large_binary``
        and ``binary(32)`` (``prev_hash`` null for genesis). Needs the ``arrow`` extra
        (``pip install 'kimberlite[arrow]'``).
        """
        pa = _require("pyarrow", "arrow", "Stream.to_arrow()")
        offsets, sizes, payloads, prevs, hashes = self._columns(start, stop)
        return pa.table({
            "offset": pa.array(offsets, type=pa.uint64()),
            "size": pa.array(sizes, type=pa.uint32()),
            "payload": pa.array(payloads, type=pa.large_binary()),
            "prev_hash": pa.array(prevs, type=pa.binary(32)),
            "hash": pa.array(hashes, type=pa.binary(32)),
        })

    # ---- summaries ----------------------------------------------------------------------

    def _storage_repr(self) -> str:
        s = self._storage
        where = f"path={s.path!r}" if s.path is not None else "in memory"
        return f"<kimberlite.{type(s).__qualname__} {where}>"

    def __repr__(self) -> str:
        """``<kimberlite.Stream 1 of <kimberlite.Storage ...>: 42 events, head c0351898…>``."""
        where = f"<kimberlite.Stream {self._stream_id} of {self._storage_repr()}"
        if self._storage.closed:
            return where + ">"
        try:
            n = len(self)
            head = self.head
        except Exception as e:  # a summary must not raise: say what went wrong instead
            return f"{where}: {type(e).__name__}: {e}>"
        return f"{where}: {n} event{'s' if n != 1 else ''}, head {_short_hash(head)}>"

    def _repr_html_(self) -> str:
        """A small HTML summary for Jupyter: counts, head, the first and last few events."""
        esc = html.escape
        title = f"<b>kimberlite.Stream {self._stream_id}</b>"
        if self._storage.closed:
            return f"<div>{title}: storage closed</div>"
        try:
            n = len(self)
            head = self.head
            segments = self.segments
            k = _PREVIEW_ROWS
            first = list(range(min(n, k)))
            last = list(range(max(k, n - k), n))
            rows = [self._html_row(self.record(i)) for i in first]
            if last and last[0] > k:
                rows.append("<tr><td colspan=4>⋮</td></tr>")
            rows += [self._html_row(self.record(i)) for i in last]
        except Exception as e:  # show the error, as read_from would raise it
            return f"<div>{title}: <i>{esc(type(e).__name__)}: {esc(str(e))}</i></div>"
        table = ("<table><tr><th>offset</th><th>size</th><th>payload</th><th>hash</th></tr>"
                 + "".join(rows) + "</table>") if rows else ""
        return (f"<div>{title}: {n} event{'s' if n != 1 else ''}, {segments} segment"
                f"{'s' if segments != 1 else ''}, head <code>{_short_hash(head)}</code>"
                f"{table}</div>")

    @staticmethod
    def _html_row(r: Record) -> str:
        esc = html.escape
        return (f"<tr><td>{r.offset}</td><td>{len(r.payload)}</td>"
                f"<td><code>{esc(_preview(r.payload))}</code></td>"
                f"<td><code>{_short_hash(r.compute_hash())}</code></td></tr>")
