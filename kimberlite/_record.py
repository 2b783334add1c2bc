"""kimberlite.Record: one record of a stream, as an immutable value.

On disk a record is ``[offset:u64][prev_hash:32B][length:u32][payload][crc32:u32]``
(little-endian, SPEC §2). ``prev_hash`` is None for genesis: thirty-two zero bytes, which is
what genesis stores on disk, are normalised to None, so that
``Record.from_bytes(r.to_bytes())[0] == r`` always holds (docs/DESIGN.md).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Optional, Tuple, Type, TypeVar

from . import _core

if TYPE_CHECKING:
    from typing_extensions import Buffer as _BytesLike

__all__ = ["Record"]

_HASH_SIZE = 32
_ZERO_HASH = bytes(_HASH_SIZE)
_MAX_OFFSET = 1 << 63
_REPR_PAYLOAD = 32  # payload bytes shown by repr()

_R = TypeVar("_R", bound="Record")


class Record:
    """A record of a stream: ``Record(offset, prev_hash, payload)``.

    offset: an int in [0, 2**63). prev_hash: the chain hash of the previous record
    (32 bytes), or None for genesis. payload: the event (any bytes-like object; kept as
    bytes). Records are immutable, hashable and compare by value.
    """

    __slots__ = ("_offset", "_prev_hash", "_payload")
    __module__ = "kimberlite"

    _offset: int
    _prev_hash: Optional[bytes]
    _payload: bytes

    def __init__(self, offset: int, prev_hash: Optional[_BytesLike], payload: _BytesLike) -> None:
        if not isinstance(offset, int):
            raise TypeError(f"offset must be an int, not {type(offset).__name__}")
        if not 0 <= offset < _MAX_OFFSET:
            raise ValueError(f"offset must be in [0, 2**63), got {offset}")
        if prev_hash is not None:
            if isinstance(prev_hash, str):
                raise TypeError("prev_hash must be 32 bytes or None, not str")
            prev_hash = memoryview(prev_hash).tobytes()
            if len(prev_hash) != _HASH_SIZE:
                raise ValueError(f"prev_hash must be 32 bytes or None, got {len(prev_hash)} bytes")
            if prev_hash == _ZERO_HASH:
                prev_hash = None
        if isinstance(payload, str):
            raise TypeError("payload must be a bytes-like object, not str (encode it first)")
        payload = payload if type(payload) is bytes else memoryview(payload).tobytes()
        object.__setattr__(self, "_offset", offset)
        object.__setattr__(self, "_prev_hash", prev_hash)
        object.__setattr__(self, "_payload", payload)

    @property
    def offset(self) -> int:
        """The record's position in its stream (0, 1, 2, ...)."""
        return self._offset

    @property
    def prev_hash(self) -> Optional[bytes]:
        """The chain hash of the previous record (32 bytes), or None for genesis."""
        return self._prev_hash

    @property
    def payload(self) -> bytes:
        """The event's bytes."""
        return self._payload

    def compute_hash(self) -> bytes:
        """Return this record's chain hash: ``chain_hash(prev_hash, payload)``."""
        return _core.chain_hash(self._prev_hash, self._payload)

    def to_bytes(self) -> bytes:
        """Return the record's on-disk bytes (48 + len(payload) bytes, CRC included)."""
        return _core.encode_record(self._offset, self._prev_hash, self._payload)

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
            self._offset == other._offset
            and self._prev_hash == other._prev_hash
            and self._payload == other._payload
        )

    def __hash__(self) -> int:
        return hash((self._offset, self._prev_hash, self._payload))

    def __repr__(self) -> str:
        prev = "None" if self._prev_hash is None else f"'{self._prev_hash.hex()[:16]}...'"
        payload = self._payload
        if len(payload) > _REPR_PAYLOAD:
            shown = f"{payload[:_REPR_PAYLOAD]!r}... ({len(payload)} bytes)"
        else:
            shown = repr(payload)
        return f"{type(self).__name__}(offset={self._offset}, prev_hash={prev}, payload={shown})"

    def _repr_html_(self) -> str:
        """A small HTML table for Jupyter: offset, hashes, size and a payload preview."""
        esc = html.escape
        payload = self._payload
        shown = repr(payload[:_REPR_PAYLOAD]) + ("…" if len(payload) > _REPR_PAYLOAD else "")
        prev = "None (genesis)" if self._prev_hash is None else self._prev_hash.hex()
        rows = [
            ("offset", str(self._offset)),
            ("prev_hash", f"<code>{prev}</code>"),
            ("hash", f"<code>{self.compute_hash().hex()}</code>"),
            ("size", f"{len(payload)} bytes"),
            ("payload", f"<code>{esc(shown)}</code>"),
        ]
        body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
        return f"<div><b>kimberlite.Record</b><table>{body}</table></div>"

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self._offset, self._prev_hash, self._payload))
