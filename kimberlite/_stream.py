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

import operator
from collections.abc import Iterator, Sequence
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)

from . import _arrow
from ._errors import ChainVerificationError, CorruptedRecordError, StorageError
from ._record import Record
from ._words import plural, short_hash

if TYPE_CHECKING:
    from typing import Any, List, Optional, Protocol, Tuple, Union, overload

    from typing_extensions import Buffer

    class _StorageLike(Protocol):
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
else:
    def overload(func):  # typing.overload without importing typing: only checkers read it
        return func

__all__ = ["Stream", "DEFAULT_CHUNK_BYTES"]

DEFAULT_CHUNK_BYTES = 1 << 20  # payload bytes per read while iterating


def _check_chunk(chunk_bytes: int) -> None:
    if not isinstance(chunk_bytes, int) or isinstance(chunk_bytes, bool):
        raise TypeError(f"chunk_bytes must be an int, not {type(chunk_bytes).__name__}")
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")


def iter_chunks(
    storage: _StorageLike,
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
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{what} needs {module}, which is not installed; install it with "
            f"pip install 'kimberlite-storage[{extra}]'",
            name=module,
        ) from e


class Stream(Sequence[bytes]):  # collections.abc.Sequence
    """A read-only sequence view of one stream of a Storage or MemoryStorage.

    Made by ``storage.stream(stream_id)``. ``len()`` is the stream's next offset at the time
    of the call; ``stream[i]`` (negative ``i`` counts from the end, ``IndexError`` out of
    range) and ``stream[a:b:c]`` (a ``list`` of ``bytes``) read only what they return;
    iteration reads in chunks of about 1 MiB. The view holds no data: it sees events appended
    after it was made, and every read is checked by the engine like ``read_from``.
    """

    __slots__ = ("_storage", "_stream_id")
    __module__ = "kimberlite"

    def __init__(self, storage: _StorageLike, stream_id: int) -> None:
        try:  # TypeError/ValueError for a bad id, closed storage
            storage.next_offset(stream_id)
        except CorruptedRecordError:
            pass  # damage hides where the stream ends: its intact prefix is still readable
        self._storage = storage
        self._stream_id = stream_id

    @property
    def storage(self) -> _StorageLike:
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
                             f"({plural(n, 'event')})")
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
        try:
            i = operator.index(index)  # bool included, as for a list (docs/DESIGN.md)
        except TypeError:
            raise TypeError(f"stream indices must be integers or slices, "
                            f"not {type(index).__name__}") from None
        j = self._index(i, len(self))
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
        # iter_chunks' own generator, without a second layer around it
        return iter_chunks(self._storage, self._stream_id, 0)  # type: ignore[return-value]

    def index(self, value: Any, start: int = 0, stop: Optional[int] = None) -> int:
        """The first offset in [start, stop) whose event equals ``value`` (``ValueError``
        when none does): one chunked pass, as iteration reads, not one read per event."""
        n = len(self)
        if start < 0:
            start = max(n + start, 0)
        if stop is not None and stop < 0:
            stop += n
        end = n if stop is None else min(stop, n)
        if start < end:
            for i, ev in enumerate(iter_chunks(self._storage, self._stream_id, start), start):
                if i >= end:
                    break
                if ev == value:
                    return i
        raise ValueError(f"{value!r} is not in stream {self._stream_id}")

    # count() and ``in`` are Sequence's, over __iter__: one chunked pass as well.

    def verify(self, expected_head: Optional[Buffer] = None) -> Tuple[int, Optional[bytes]]:
        """``storage.verify(stream_id, expected_head)``: check the whole stream from genesis."""
        return self._storage.verify(self._stream_id, expected_head)

    # ---- data frames --------------------------------------------------------------------

    def to_arrow(self, start: int = 0, stop: Optional[int] = None, *,
                 columns: Optional[Sequence[str]] = None) -> Any:
        """Return the records from ``start`` to ``stop`` as a ``pyarrow.Table``.

        Columns (``columns=`` picks any of them, in any order): ``offset`` (uint64),
        ``size`` (uint32), ``payload`` (large_binary), ``prev_hash`` (fixed_size_binary(32),
        null for genesis) and ``hash`` (the record's chain hash). The engine reads and
        verifies the records straight into Arrow buffers: one contiguous payload buffer,
        no Python object per event. Needs the ``arrow`` extra
        (``pip install 'kimberlite-storage[arrow]'``).
        """
        pa = _require("pyarrow", "arrow", "Stream.to_arrow()")

        cols = _arrow.check_columns(columns, _arrow.ALL_COLUMNS)
        a, b = _arrow.check_range(start, stop, self.__len__)
        return _arrow.table(pa, self._storage, self._stream_id, a, b, cols, large=True)

    def to_arrow_reader(self, start: int = 0, stop: Optional[int] = None, *,
                        chunk_bytes: int = _arrow.DEFAULT_ARROW_CHUNK_BYTES,
                        columns: Optional[Sequence[str]] = None) -> Any:
        """Return a ``pyarrow.RecordBatchReader`` over the records ``start`` .. ``stop``.

        Each batch holds about ``chunk_bytes`` of payload (default 4 MiB) (the event that crosses the budget
        is included), read and verified when the consumer asks for it, so memory stays flat
        however large the stream. ``stop=None`` means the end when the reader is made: events
        appended later are not read (a given ``stop`` past the end reads up to it whatever
        is there when each batch is read). Columns: ``offset`` and ``payload`` by default
        (``binary``; ``large_binary`` when a batch could pass 2 GiB), or any of
        :meth:`to_arrow`'s. The reader is single-use, as every ``RecordBatchReader``: once
        consumed it is empty; ask the stream for a new one (``pa.table(stream)``, DuckDB and
        Polars do, through ``__arrow_c_stream__``).
        """
        pa = _require("pyarrow", "arrow", "Stream.to_arrow_reader()")

        cols = _arrow.check_columns(columns, _arrow.READER_COLUMNS)
        _arrow.check_chunk_bytes(chunk_bytes)
        a, b = _arrow.check_range(start, stop, self.__len__)
        return _arrow.reader(pa, self._storage, self._stream_id, a, b, chunk_bytes, cols)

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        """The Arrow PyCapsule stream protocol: a fresh :meth:`to_arrow_reader` of the whole
        stream (columns ``offset`` and ``payload``) each call, so ``pa.table(stream)``,
        ``duckdb.sql("select * from stream")`` and ``polars.DataFrame(stream)`` read it in
        batches without copies through Python. The stream itself can be read again."""
        return self.to_arrow_reader().__arrow_c_stream__(requested_schema)

    def to_pandas(self, start: int = 0, stop: Optional[int] = None, *,
                  columns: Optional[Sequence[str]] = None) -> Any:
        """Return the records from ``start`` to ``stop`` as a ``pandas.DataFrame``.

        Columns as :meth:`to_arrow`: ``offset`` and ``size`` as int64, ``payload`` as
        ``pd.ArrowDtype(pa.binary())`` (``large_binary`` past 2 GiB), ``prev_hash`` and
        ``hash`` as ``pd.ArrowDtype(pa.binary(32))`` (``prev_hash`` is ``<NA>`` for
        genesis). Arrow-backed binary columns keep pandas and Dask string inference away
        from the payloads (an object column of bytes would be turned into strings). The
        frame holds every row in memory. Needs the ``pandas`` and ``arrow`` extras.
        """
        pd = _require("pandas", "pandas", "Stream.to_pandas()")
        pa = _require("pyarrow", "arrow", "Stream.to_pandas()")
        cols = _arrow.check_columns(columns, _arrow.ALL_COLUMNS)
        a, b = _arrow.check_range(start, stop, self.__len__)
        t = _arrow.table(pa, self._storage, self._stream_id, a, b, cols, large=None)
        return _arrow.to_pandas(pd, t)

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
        return f"{where}: {plural(n, 'event')}, head {short_hash(head)}>"

    def _repr_html_(self) -> str:
        """A small HTML summary for Jupyter: counts, head, the first and last few events."""
        from ._display import stream_html

        return stream_html(self)
