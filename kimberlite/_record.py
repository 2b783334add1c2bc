"""kimberlite.Record: one record of a stream, as an immutable value.

On disk a record is ``[offset:u64][prev_hash:32B][length:u32][payload][crc32:u32]``
(little-endian, SPEC §2). Genesis is decided by the offset, as in the engine
(docs/FORMAT.md §5): at offset 0, ``prev_hash`` None and thirty-two zero bytes (what genesis
stores on disk) are the same thing and read back as None, and the hash is SHA-256(payload);
at any other offset ``prev_hash`` is the 32 bytes stored (None is stored, and read back, as
thirty-two zero bytes) and the hash is SHA-256(prev_hash || payload). So
``Record.from_bytes(r.to_bytes())[0] == r`` always holds, and ``compute_hash()`` is the hash
the engine computes for the same record (docs/DESIGN.md).

The fields live in the extension's ``_core._RecordBase`` (csrc/py_record.c), which checks
the arguments; ``read_records`` fills them directly for records the engine has verified.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)

from . import _core

if TYPE_CHECKING:
    from typing import Any, Tuple, Type, TypeVar

    from typing_extensions import Buffer as _BytesLike

    _R = TypeVar("_R", bound="Record")

__all__ = ["Record"]

_REPR_PAYLOAD = 32  # payload bytes shown by repr()


class Record(_core._RecordBase):
    """A record of a stream: ``Record(offset, prev_hash, payload)``.

    offset: an int in [0, 2**63). prev_hash: the chain hash of the previous record
    (32 bytes), or None for genesis (offset 0). payload: the event (any bytes-like object;
    kept as bytes). Records are immutable, hashable and compare by value.

    Genesis is decided by the offset: at offset 0 thirty-two zero bytes read back as None;
    at any other offset None reads back as thirty-two zero bytes (what the record stores).
    """

    __slots__ = ()
    __module__ = "kimberlite"

    def compute_hash(self) -> bytes:
        """Return this record's chain hash, as the engine computes it.

        SHA-256(payload) at offset 0 (genesis is decided by the offset), else
        SHA-256(prev_hash || payload): ``chain_hash(None if offset == 0 else prev_hash,
        payload)``.
        """
        return _core.chain_hash(None if self.offset == 0 else self.prev_hash, self.payload)

    def to_bytes(self) -> bytes:
        """Return the record's on-disk bytes (48 + len(payload) bytes, CRC included)."""
        return _core.encode_record(self.offset, self.prev_hash, self.payload)

    @classmethod
    def from_bytes(cls: Type[_R], data: _BytesLike) -> Tuple[_R, int]:
        """Decode the record at the start of ``data``; return ``(record, bytes consumed)``.

        Raises UnexpectedEofError when data ends inside the record, CorruptedRecordError on
        a CRC mismatch.
        """
        offset, prev_hash, payload, consumed = _core.decode_record(data)
        return cls(offset, prev_hash, payload), consumed

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (
            self.offset == other.offset
            and self.prev_hash == other.prev_hash
            and self.payload == other.payload
        )

    def __hash__(self) -> int:
        return hash((self.offset, self.prev_hash, self.payload))

    def __repr__(self) -> str:
        prev_hash = self.prev_hash
        prev = "None" if prev_hash is None else f"'{prev_hash.hex()[:16]}...'"
        payload = self.payload
        if len(payload) > _REPR_PAYLOAD:
            shown = f"{payload[:_REPR_PAYLOAD]!r}... ({len(payload)} bytes)"
        else:
            shown = repr(payload)
        return f"{type(self).__name__}(offset={self.offset}, prev_hash={prev}, payload={shown})"

    def _repr_html_(self) -> str:
        """A small HTML table for Jupyter: offset, hashes, size and a payload preview."""
        from ._display import record_html

        return record_html(self)

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.offset, self.prev_hash, self.payload))
