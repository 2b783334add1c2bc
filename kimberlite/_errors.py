"""The exception tree of Kimberlite (SPEC §4).

Every error the engine reports is a StorageError. The C extension imports this module when
it initialises and raises these classes, filling the keyword attributes from the engine's
error details. All classes pickle and unpickle with their attributes.
"""

from __future__ import annotations

__all__ = [
    "StorageError",
    "UnexpectedEofError",
    "CorruptedRecordError",
    "ChainVerificationError",
    "OffsetMismatchError",
    "IndexCorruptedError",
    "LockedError",
    "StorageIOError",
    "CheckpointMismatchError",
    "VerificationError",
    "InvalidProofError",
    "InvalidSignatureError",
    "MalformedNoteError",
]


class StorageError(Exception):
    """Base class of every Kimberlite error."""

    __module__ = "kimberlite"


class UnexpectedEofError(StorageError):
    """The data ends inside a record (a truncated record image)."""

    __module__ = "kimberlite"


class CorruptedRecordError(StorageError):
    """A record's CRC does not match, or the record is malformed.

    Attributes (None when unknown): ``stream_id``, ``offset`` (the record offset expected
    at the damaged place) and ``position`` (byte position inside the segment file).
    """

    __module__ = "kimberlite"

    stream_id: int | None
    offset: int | None
    position: int | None

    def __init__(
        self,
        message: str,
        *,
        stream_id: int | None = None,
        offset: int | None = None,
        position: int | None = None,
    ) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.offset = offset
        self.position = position


class ChainVerificationError(StorageError):
    """The hash chain is broken, or a stream's head differs from the trusted head.

    Attributes: ``offset`` (the record whose link is wrong, or the head record; None for an
    empty stream), ``expected`` and ``actual`` (32-byte hashes, or None).
    """

    __module__ = "kimberlite"

    offset: int | None
    expected: bytes | None
    actual: bytes | None

    def __init__(
        self,
        message: str,
        *,
        offset: int | None = None,
        expected: bytes | None = None,
        actual: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.offset = offset
        self.expected = expected
        self.actual = actual


class OffsetMismatchError(StorageError):
    """``expected_offset`` differs from the stream's next offset; nothing was written.

    Attributes: ``expected`` (the value passed) and ``actual`` (the stream's next offset).
    """

    __module__ = "kimberlite"

    expected: int | None
    actual: int | None

    def __init__(
        self,
        message: str,
        *,
        expected: int | None = None,
        actual: int | None = None,
    ) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class IndexCorruptedError(StorageError):
    """An offset index file has a bad magic, version, CRC or size."""

    __module__ = "kimberlite"


class LockedError(StorageError):
    """Another writer (in this or another process) holds the data directory."""

    __module__ = "kimberlite"


class StorageIOError(StorageError, OSError):
    """An operating-system error; ``errno``, ``strerror`` and ``filename`` are kept.

    Constructed like OSError: ``StorageIOError(errno, strerror, filename)``. ``strerror``
    is the operating system's text; ``detail`` (also what ``str()`` shows) says what the
    engine was doing, where, and what to do.
    """

    __module__ = "kimberlite"

    def __init__(self, *args: object, detail: str | None = None) -> None:
        super().__init__(*args)
        self.detail = detail

    def __str__(self) -> str:
        return self.detail if self.detail else OSError.__str__(self)


class CheckpointMismatchError(ChainVerificationError):
    """A new head does not extend the stream's last stored checkpoint; nothing was signed.

    Raised when the records were rewritten under a checkpoint (another root at its size), the
    stream is shorter than it, or the origin differs. Attributes as ChainVerificationError.
    """

    __module__ = "kimberlite"


class VerificationError(StorageError):
    """A proof, note or signature that does not verify (kimberlite.tlog)."""

    __module__ = "kimberlite"


class InvalidProofError(VerificationError):
    """An inclusion or consistency proof does not hold for the given sizes and roots."""

    __module__ = "kimberlite"


class InvalidSignatureError(VerificationError):
    """A note carries no valid signature by the expected key, or names another origin."""

    __module__ = "kimberlite"


class MalformedNoteError(VerificationError):
    """A signed note or checkpoint is not in the strict C2SP form."""

    __module__ = "kimberlite"
