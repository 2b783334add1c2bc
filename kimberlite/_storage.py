"""kimberlite.Storage and kimberlite.MemoryStorage: the C types plus Python conveniences.

The engine's types live in the extension (``kimberlite._core.Storage`` and
``kimberlite._core.MemoryStorage``, csrc/py_storage.c). The classes here subclass them and add
what is easier to write, and to read, in Python: a sequence view of a stream
(:meth:`stream`), iteration in bounded memory (:meth:`iter_from`) and summaries for the REPL
and Jupyter (``__repr__``, ``_repr_html_``). Every method of SPEC §4 is the C one, unchanged;
``isinstance(s, kimberlite._core.Storage)`` holds.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)

from . import _core
from ._errors import (
    ChainVerificationError,
    CheckpointMismatchError,
    CorruptedRecordError,
    InvalidProofError,
    MalformedNoteError,
    StorageError,
)
from ._stream import DEFAULT_CHUNK_BYTES, Stream, iter_chunks

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, List, Literal, Optional, Union, cast, overload

    from . import tlog
    from ._record import Record
    from ._stream import _StorageLike
else:
    List = Optional = None

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
    # ---- the verifiable log (SPEC §6) ---------------------------------------------------

    def checkpoint(self, stream_id: int, signer: tlog.Signer, *,
                   origin: Optional[str] = None) -> tlog.Checkpoint:
        """Sign the stream's whole tree and store the note as its latest checkpoint.

        The stream is synced first, so only durable records are signed (appends made while
        this runs are left for the next checkpoint). ``origin`` defaults to
        ``f"{signer.name}/{stream_id}"``. The new head must extend the stream's last stored
        checkpoint: same origin, a size not smaller, and a consistency proof from the old
        root to the new one that verifies; otherwise ``CheckpointMismatchError`` is raised
        and nothing is signed (the records were rewritten, or cut back, under the old
        checkpoint). A stream without records raises ``ValueError``; a read-only Storage
        ``StorageError``. The note is stored atomically and durably (disk: the file
        ``checkpoint`` in the stream's directory) with the signer's verifier key.
        """
        from . import tlog

        if not isinstance(signer, tlog.Signer):
            raise TypeError(f"signer must be a kimberlite.tlog.Signer, not {type(signer).__name__}")
        if origin is None:
            origin = f"{signer.name}/{stream_id}"
        elif not isinstance(origin, str):
            raise TypeError(f"origin must be a str or None, not {type(origin).__name__}")
        core = cast("Any", self)
        old_blob = core._load_checkpoint(stream_id)
        old = _decode_stored_checkpoint(stream_id, old_blob) if old_blob is not None else None
        size, root = core._durable_root(stream_id)
        if size == 0:
            raise ValueError(f"stream {stream_id} has no records: there is nothing to sign")
        if old is not None:
            _check_extends(core, stream_id, old, origin, size, root)
        cp = signer.sign_checkpoint(origin, size, root)
        blob = _encode_stored_checkpoint(signer.verifier_key, cp.note)
        if not core._store_checkpoint(stream_id, old_blob, blob):
            raise CheckpointMismatchError(
                f"stream {stream_id}: another checkpoint was stored while this one was being "
                "signed; call checkpoint() again")
        return cp

    def latest_checkpoint(self, stream_id: int) -> Optional[tlog.Checkpoint]:
        """Return the stream's last stored checkpoint, or None if it never had one.

        The stored note is re-opened with the verifier key stored beside it: its form and its
        signature are checked (``MalformedNoteError`` / ``InvalidSignatureError`` for a
        damaged file). That proves the note is intact, not who signed it: compare
        ``tlog.open_checkpoint(cp.note, your_verifier)`` when that matters. Whether the
        records still match it is what ``checkpoint()`` and ``read_verified()`` check.
        """
        blob = cast("Any", self)._load_checkpoint(stream_id)
        if blob is None:
            return None
        return _decode_stored_checkpoint(stream_id, blob)

    def read_verified(self, stream_id: int, from_offset: int = 0,
                      max_bytes: Optional[int] = None, *,
                      checkpoint: tlog.Checkpoint) -> List[bytes]:
        """Return what ``read_from`` would, limited to offsets below ``checkpoint.tree_size``,
        after checking the records against the checkpoint's root.

        Checks: the stream's tree at ``checkpoint.tree_size`` has ``checkpoint.root_hash`` as
        its root (a checkpoint of another stream, or of records since rewritten, fails); the
        origin equals that of the stream's stored checkpoint, if any; every returned record
        links to the one before it (chain hashes recomputed here); and the last returned
        record's chain hash is proven in the checkpoint's tree by an inclusion proof. Any
        failure raises ``ChainVerificationError`` and returns nothing. The signature is not
        checked here: the caller got ``checkpoint`` from ``tlog.open_checkpoint`` or from
        signing. Arguments as ``read_from``; ``checkpoint`` must be a ``tlog.Checkpoint``.
        """
        from . import tlog

        if not isinstance(checkpoint, tlog.Checkpoint):
            raise TypeError("checkpoint must be a kimberlite.tlog.Checkpoint, not "
                            f"{type(checkpoint).__name__}")
        if max_bytes is not None:
            if not isinstance(max_bytes, int) or isinstance(max_bytes, bool):
                raise TypeError(f"max_bytes must be an int or None, not {type(max_bytes).__name__}")
            if max_bytes < 0:
                raise ValueError(f"max_bytes must be >= 0 or None, got {max_bytes}")
        core = cast("Any", self)
        n = checkpoint.tree_size
        have = _next_offset_if_known(core, stream_id)
        if have is not None and n > have:
            raise ChainVerificationError(
                f"stream {stream_id}: the checkpoint is of a tree of {n} records but the stream "
                f"has {have}: it is not a checkpoint of this stream, or records were lost",
                expected=checkpoint.root_hash)
        root = core.tree_root(stream_id, n)
        if root != checkpoint.root_hash:
            raise ChainVerificationError(
                f"stream {stream_id}: the stream's tree of {n} records does not have the "
                "checkpoint's root: it is a checkpoint of another stream, or the records were "
                "rewritten since it was signed",
                offset=n - 1 if n else None, expected=checkpoint.root_hash, actual=root)
        stored = self.latest_checkpoint(stream_id)
        if stored is not None and stored.origin != checkpoint.origin:
            raise ChainVerificationError(
                f"stream {stream_id}: the checkpoint's origin {checkpoint.origin!r} is not the "
                f"stream's ({stored.origin!r})")
        out: List[Record] = []
        total = 0
        if max_bytes != 0:
            for rec in self.iter_from(stream_id, from_offset, records=True):
                if rec.offset >= n or (max_bytes is not None and total >= max_bytes):
                    break
                out.append(rec)
                total += len(rec.payload)
                if rec.offset == n - 1:
                    break  # never read past the checkpoint (damage after it is not ours)
        elif from_offset < 0:
            raise ValueError(f"from_offset must be >= 0, got {from_offset}")
        if not out:
            return []
        prev = out[0].compute_hash()
        for rec in out[1:]:
            if rec.prev_hash != prev:
                raise ChainVerificationError(
                    f"stream {stream_id}: hash chain broken at offset {rec.offset}",
                    offset=rec.offset, expected=prev, actual=rec.prev_hash)
            prev = rec.compute_hash()
        last = out[-1].offset
        try:
            tlog.verify_inclusion(tlog.leaf_hash(prev), last, n,
                                  core.inclusion_proof(stream_id, last, n), checkpoint.root_hash)
        except InvalidProofError as e:
            raise ChainVerificationError(
                f"stream {stream_id}: the record at offset {last} is not in the checkpoint's "
                f"tree ({e})", offset=last, expected=checkpoint.root_hash) from None
        return [r.payload for r in out]

    def export_tiles(self, stream_id: int, directory: Union[str, os.PathLike[str]],
                     checkpoint: tlog.Checkpoint) -> None:
        """Write a static C2SP ``tlog-tiles`` directory for the checkpoint's tree.

        ``directory`` (created if needed) gets ``checkpoint`` (the note), the hash tiles
        ``tile/<L>/<N>`` (partial ones ``tile/<L>/<N>.p/<W>``) and the entry bundles
        ``tile/entries/<N>[.p/<W>]``, whose entries are the records' 32-byte chain hashes,
        each after its big-endian u16 length. Any tlog-tiles client can then check inclusion
        and consistency against the checkpoint. The records are read and checked, and their
        tree must have the checkpoint's root (else ``ChainVerificationError``, nothing
        written); existing files of the same names are replaced, ``checkpoint`` last. Memory:
        about 64 bytes per record of the checkpoint's tree, while it runs.
        """
        from . import tlog

        import hashlib

        if not isinstance(checkpoint, tlog.Checkpoint):
            raise TypeError("checkpoint must be a kimberlite.tlog.Checkpoint, not "
                            f"{type(checkpoint).__name__}")
        core = cast("Any", self)
        n = checkpoint.tree_size
        have = _next_offset_if_known(core, stream_id)
        if (n == 0 or (have is not None and n > have)
                or core.tree_root(stream_id, n) != checkpoint.root_hash):
            raise ChainVerificationError(
                f"stream {stream_id}: the stream has no tree of {n} records with the "
                "checkpoint's root: it is a checkpoint of another stream, or the records were "
                "rewritten since it was signed", expected=checkpoint.root_hash)
        entries: List[bytes] = []
        last = None
        for rec in self.iter_from(stream_id, 0, records=True):
            if rec.offset > 0:
                entries.append(cast("bytes", rec.prev_hash))
            if rec.offset == n - 1:
                last = rec.compute_hash()
                break
        if last is None or len(entries) != n - 1:
            raise ChainVerificationError(f"stream {stream_id}: fewer than {n} records were read")
        entries.append(last)
        if tlog._tree_root(entries) != checkpoint.root_hash:
            raise ChainVerificationError(
                f"stream {stream_id}: the records read do not have the checkpoint's root",
                expected=checkpoint.root_hash)

        sha256 = hashlib.sha256

        def subtree(hashes: List[bytes]) -> bytes:  # a perfect subtree of 256 hashes
            while len(hashes) > 1:
                hashes = [sha256(b"\x01" + hashes[i] + hashes[i + 1]).digest()
                          for i in range(0, len(hashes), 2)]
            return hashes[0]

        def write(rel: str, data: bytes) -> None:
            path = os.path.join(os.fspath(directory), *rel.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)

        def tiles(level: Optional[int], items: List[bytes]) -> None:
            full, partial = tlog._tile_count(n, level if level is not None else 0)
            for t in range(full + (1 if partial else 0)):
                width = 256 if t < full else partial
                chunk = items[t * 256:t * 256 + width]
                if level is None:
                    data = b"".join(len(e).to_bytes(2, "big") + e for e in chunk)
                else:
                    data = b"".join(chunk)
                write(tlog._tile_path(level, t, width), data)

        tiles(None, entries)
        row = [sha256(b"\x00" + e).digest() for e in entries]
        del entries
        level = 0
        while row:
            tiles(level, row)
            row = [subtree(row[i:i + 256]) for i in range(0, len(row) - 255, 256)]
            level += 1
        write("checkpoint", checkpoint.note)

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


# ---- the stored checkpoint (docs/TLOG.md, "The stored checkpoint") ------------------------

_STORED_MAGIC = b"kimberlite-checkpoint 1\n"


def _encode_stored_checkpoint(verifier_key: str, note: bytes) -> bytes:
    return _STORED_MAGIC + verifier_key.encode("ascii") + b"\n" + note


def _next_offset_if_known(core: Any, stream_id: int) -> Optional[int]:
    """The stream's next offset, or None when damage hides where it ends (the tree still
    answers sizes within the intact prefix; larger ones raise the damage)."""
    try:
        return cast(int, core.next_offset(stream_id))
    except (CorruptedRecordError, ChainVerificationError):
        return None


def _decode_stored_checkpoint(stream_id: int, blob: bytes) -> tlog.Checkpoint:
    """The stored checkpoint, re-opened (form and signature) with the key stored beside it."""
    from . import tlog

    head, sep, rest = blob.partition(b"\n")
    vkey, sep2, note = rest.partition(b"\n")
    if head + sep != _STORED_MAGIC or not sep2:
        raise MalformedNoteError(
            f"stream {stream_id}: the stored checkpoint is not in the form Kimberlite writes; "
            "move the stream's checkpoint file away (it is re-created by the next checkpoint)")
    try:
        key = vkey.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedNoteError(f"stream {stream_id}: the stored checkpoint's key is not ASCII") from None
    return tlog.open_checkpoint(note, key)


def _check_extends(core: Any, stream_id: int, old: tlog.Checkpoint, origin: str, size: int,
                   root: bytes) -> None:
    """CheckpointMismatchError unless (origin, size, root) extends the stored checkpoint."""
    from . import tlog

    if origin != old.origin:
        raise CheckpointMismatchError(
            f"stream {stream_id}: the stream's last checkpoint has origin {old.origin!r}, not "
            f"{origin!r}; pass origin={old.origin!r} (nothing was signed)")
    if size < old.tree_size:
        raise CheckpointMismatchError(
            f"stream {stream_id}: the stream has {size} durable records but its last checkpoint "
            f"signed {old.tree_size}: records were lost or cut back under it (nothing was "
            "signed)", offset=size, expected=old.root_hash)
    proof = core.consistency_proof(stream_id, old.tree_size, size)
    old_root_now = core.tree_root(stream_id, old.tree_size)
    try:
        tlog.verify_consistency(old.tree_size, size, proof, old.root_hash, root)
    except InvalidProofError:
        raise CheckpointMismatchError(
            f"stream {stream_id}: the stream's first {old.tree_size} records no longer have the "
            "root its last checkpoint signed: they were rewritten under it (nothing was signed); "
            "restore the stream from a trusted copy",
            offset=old.tree_size - 1, expected=old.root_hash, actual=old_root_now) from None
