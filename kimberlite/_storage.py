"""kimberlite.Storage and kimberlite.MemoryStorage: the C types plus Python conveniences.

The engine's types live in the extension (``kimberlite._core.Storage`` and
``kimberlite._core.MemoryStorage``, csrc/py_storage.c). The classes here subclass them and add
what is easier to write, and to read, in Python: a sequence view of a stream
(:meth:`stream`), iteration in bounded memory (:meth:`iter_from`) and summaries for the REPL
and Jupyter (``__repr__``, ``_repr_html_``). Every method of SPEC §4 is the C one, unchanged;
``isinstance(s, kimberlite._core.Storage)`` holds.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)

from . import _core
from ._errors import StorageError
from ._stream import DEFAULT_CHUNK_BYTES, Stream, iter_chunks

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, Literal, Union, cast, overload

    from ._record import Record
    from ._stream import _StorageLike
else:
    def overload(func):  # typing.overload without importing typing: only checkers read it
        return func

    def cast(_type, value):  # typing.cast, likewise
        return value

__all__ = ["Storage", "MemoryStorage", "RepairReport"]


class RepairReport:
    """What :meth:`Storage.repair` did to a stream.

    ``stream_id``; ``next_offset``, the stream's next offset after the repair;
    ``quarantined``, one ``(path, size)`` per quarantine file made (on disk the file's path,
    ``segment_NNNNNN.log.torn-K`` beside its segment; in memory its name), in the order they
    were made; ``bytes_moved``, their total size. A repair that found nothing to do has an
    empty ``quarantined`` and changed nothing.
    """

    __slots__ = ("stream_id", "next_offset", "quarantined", "bytes_moved")
    __module__ = "kimberlite"

    def __init__(self, stream_id: int, next_offset: int,
                 quarantined: list[tuple[str, int]], bytes_moved: int) -> None:
        self.stream_id = stream_id
        self.next_offset = next_offset
        self.quarantined = quarantined
        self.bytes_moved = bytes_moved

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RepairReport):
            return NotImplemented
        return (self.stream_id, self.next_offset, self.quarantined, self.bytes_moved) == (
            other.stream_id, other.next_offset, other.quarantined, other.bytes_moved)

    __hash__ = None  # type: ignore[assignment]  # mutable list inside: not hashable

    def __repr__(self) -> str:
        return (f"RepairReport(stream_id={self.stream_id}, next_offset={self.next_offset}, "
                f"quarantined={self.quarantined!r}, bytes_moved={self.bytes_moved})")


class _StorageMixin:
    """Methods shared by Storage and MemoryStorage (written against the SPEC §4 API only)."""

    __slots__ = ()

    def stream(self, stream_id: int) -> Stream:
        """Return a :class:`Stream`: a read-only sequence view of one stream.

        ``len(view)`` is the stream's next offset at the time of the call; ``view[i]`` (negative
        ``i`` counts from the end) and ``view[a:b]`` read only what they return; iterating
        reads in chunks of about 1 MiB, so memory stays flat however long the stream. The view
        holds no data and sees appends made after it was created.
        """
        return Stream(cast("_StorageLike", self), stream_id)

    @overload
    def iter_from(
        self,
        stream_id: int,
        from_offset: int = 0,
        *,
        records: Literal[False] = False,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> Iterator[bytes]: ...

    @overload
    def iter_from(
        self,
        stream_id: int,
        from_offset: int = 0,
        *,
        records: Literal[True],
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> Iterator[Record]: ...

    @overload
    def iter_from(
        self,
        stream_id: int,
        from_offset: int = 0,
        *,
        records: bool,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> Union[Iterator[bytes], Iterator[Record]]: ...

    def iter_from(
        self,
        stream_id: int,
        from_offset: int = 0,
        *,
        records: bool = False,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> Union[Iterator[bytes], Iterator[Record]]:
        """Yield the events of a stream from ``from_offset`` to its end, in bounded memory.

        A generator over :meth:`read_from` (``records=True``: :meth:`read_records`, yielding
        :class:`Record` objects) called with ``max_bytes=chunk_bytes``: it holds one chunk at a
        time (about ``chunk_bytes`` of payload, or one event if an event is larger), whatever
        the size of the stream. Every record is checked as it is read (CRC, offset, chain
        link, each chunk linked to the one before), and errors are raised where the damage
        is reached. Events appended while iterating are yielded too, until the generator
        finds the end. Arguments are checked when the generator is created.
        """
        return iter_chunks(cast("_StorageLike", self), stream_id, from_offset, records=records,
                           chunk_bytes=chunk_bytes)

    def repair(self, stream_id: int) -> RepairReport:
        """Cut a damaged stream back to its last valid record, explicitly.

        Reads and appends refuse to pass damage that is not a torn tail (SPEC §3), and
        nothing is cut automatically. When the records after the damage cannot be restored
        from a copy, ``repair`` makes the stream usable again: it rescans every segment and
        checks every chain link from genesis, then moves everything after the last valid
        record -- the rest of its segment and every later segment, whole -- into quarantine
        files beside the segments. Nothing is deleted. A stream with nothing to repair is not
        changed. Afterwards ``verify`` passes and appends continue the chain. Needs the
        writer (a read-only storage raises :class:`StorageError`); costs a full verify.
        """
        next_offset, quarantined, moved = cast("Any", self)._repair(stream_id)
        return RepairReport(stream_id, next_offset, quarantined, moved)

    # ---- summaries ----------------------------------------------------------------------

    def __repr__(self) -> str:
        """``<kimberlite.Storage path='data' read_only=False closed=False streams=2>``.

        Cheap: the stream count is one directory listing; no stream is loaded.
        """
        s = cast("_StorageLike", self)
        parts = [f"<kimberlite.{type(self).__qualname__}"]
        if s.path is not None:
            parts += [f"path={s.path!r}", f"read_only={s.read_only}"]
        else:
            parts.append(f"max_segment_size={cast('Any', self).max_segment_size}")
        parts.append(f"closed={s.closed}")
        if not s.closed:
            try:
                parts.append(f"streams={len(s.streams())}")
            except (StorageError, OSError):
                pass
        return " ".join(parts) + ">"

    def _repr_html_(self) -> str:
        """A small HTML table for Jupyter: one row per stream (at most 20), never the data."""
        from ._display import storage_html

        return storage_html(cast("_StorageLike", self), type(self).__name__)


class Storage(_StorageMixin, _core.Storage):
    __doc__ = _core.Storage.__doc__
    __module__ = "kimberlite"
    __slots__ = ()


class MemoryStorage(_StorageMixin, _core.MemoryStorage):
    __doc__ = _core.MemoryStorage.__doc__
    __module__ = "kimberlite"
    __slots__ = ()
