"""Kimberlite: an embedded, append-only, tamper-evident event log.

Events (byte strings) are appended to numbered streams. Every record carries a CRC-32
(detects accidental corruption) and the SHA-256 hash of its predecessor (a hash chain:
detects tampering, given a trusted head hash). Records live in segment files that rotate at
a size limit; a per-segment offset index gives O(1) random access.

    import kimberlite

    with kimberlite.Storage("data") as s:
        s.append_batch(1, [b"event1", b"event2"])
        s.read_from(1)                 # [b'event1', b'event2']
        head = s.latest_chain_hash(1)  # keep it somewhere safe
        s.verify(1, expected_head=head)

``MemoryStorage`` has the same API without files, for tests.

Beyond that API: ``s.stream(1)`` is a sequence view of a stream (``len``, ``view[-1]``,
``view[10:20]``, iteration in bounded memory, ``to_pandas()``, ``to_arrow()``);
``s.iter_from(1)`` iterates in chunks; ``kimberlite.testing`` damages streams on purpose so
that tests can check that an application notices; the ``kimberlite`` command line and a
pytest plugin (fixtures ``kimberlite_storage`` and ``kimberlite_memory``) come with the
package. ``kimberlite.tlog`` (imported on first use) verifies RFC 9162 Merkle proofs and
signs and opens C2SP checkpoints (docs/TLOG.md).
"""

from __future__ import annotations

from . import _distribution

_distribution.check(__path__[0])  # the other `kimberlite` project's files here: ImportError

from . import _core  # noqa: E402
from ._core import (
    DEFAULT_MAX_SEGMENT_SIZE,
    HEADER_SIZE,
    RECORD_OVERHEAD,
    OffsetIndex,
    chain_hash,
    crc32,
)
from ._errors import (
    ChainVerificationError,
    CheckpointMismatchError,
    CorruptedRecordError,
    IndexCorruptedError,
    InvalidProofError,
    InvalidSignatureError,
    LockedError,
    MalformedNoteError,
    OffsetMismatchError,
    StorageError,
    StorageIOError,
    UnexpectedEofError,
    VerificationError,
)
from ._record import Record
from ._storage import MemoryStorage, RepairReport, Storage
from ._stream import Stream


# A literal, not importlib.metadata (which costs ~13 ms at import); it must equal the
# version in pyproject.toml, which tests/test_version.py checks.
__version__: str = "0.1.0"

__all__ = [
    "Storage",
    "MemoryStorage",
    "RepairReport",
    "Stream",
    "Record",
    "OffsetIndex",
    "crc32",
    "chain_hash",
    "RECORD_OVERHEAD",
    "HEADER_SIZE",
    "DEFAULT_MAX_SEGMENT_SIZE",
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
    "__version__",
]


def __getattr__(name: str) -> object:
    # kimberlite.tlog is imported on first use, so that `import kimberlite` stays cheap.
    if name == "tlog":
        __import__(__name__ + ".tlog")  # binds the submodule as globals()["tlog"]
        return globals()["tlog"]
    raise AttributeError(f"module 'kimberlite' has no attribute {name!r}")
