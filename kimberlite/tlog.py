"""Verifiable-log primitives: RFC 9162 Merkle proofs and C2SP signed checkpoints (SPEC §6).

Everything here works without a ``Storage``: an auditor who holds only a verifier key, a
checkpoint and a proof can check them.

    from kimberlite import tlog

    skey, vkey = tlog.generate_key("example.com/audit")    # keep skey secret, publish vkey
    signer = tlog.Signer(skey)
    cp = signer.sign_checkpoint("example.com/audit/7", size, root)   # or Storage.checkpoint
    # ... later, anywhere, with only vkey:
    cp = tlog.open_checkpoint(note_bytes, tlog.Verifier(vkey), origin="example.com/audit/7")
    tlog.verify_inclusion(tlog.record_leaf_hash(prev_hash, payload), offset,
                          cp.tree_size, proof, cp.root_hash)

The tree of a stream of n records has the records' chain hashes as its entries; a leaf is
``SHA-256(0x00 || entry)``, a node ``SHA-256(0x01 || left || right)``. Proofs are lists of
32-byte hashes in RFC 9162 order. Notes are C2SP ``signed-note`` text with Ed25519 keys in Go
``sumdb/note`` form. docs/TLOG.md describes the formats byte by byte.

Errors: a proof that does not verify raises ``InvalidProofError``; a note that is not in the
strict form raises ``MalformedNoteError``; a note without a valid signature by the expected
key, or for another origin, raises ``InvalidSignatureError`` (all three are
``VerificationError``, a ``StorageError``). Arguments of the wrong type raise ``TypeError``;
hashes that are not 32 bytes, negative sizes and malformed key strings raise ``ValueError``.
"""

from __future__ import annotations

from . import _core
from ._errors import (
    InvalidProofError,
    InvalidSignatureError,
    MalformedNoteError,
    VerificationError,
)

__all__ = [
    "leaf_hash",
    "node_hash",
    "record_leaf_hash",
    "verify_inclusion",
    "verify_consistency",
    "generate_key",
    "Signer",
    "Verifier",
    "Checkpoint",
    "open_checkpoint",
    "VerificationError",
    "InvalidProofError",
    "InvalidSignatureError",
    "MalformedNoteError",
]

def leaf_hash(entry: bytes | bytearray | memoryview) -> bytes:
    """Return the RFC 9162 leaf hash ``SHA-256(0x00 || entry)`` of a bytes-like entry."""
    return _core.tlog_leaf_hash(entry)


def node_hash(left: bytes | bytearray | memoryview, right: bytes | bytearray | memoryview) -> bytes:
    """Return the RFC 9162 interior node hash ``SHA-256(0x01 || left || right)``.

    ``left`` and ``right`` must be 32 bytes each (``ValueError`` otherwise).
    """
    return _core.tlog_node_hash(left, right)


def record_leaf_hash(prev_hash: bytes | None, payload: bytes | bytearray | memoryview) -> bytes:
    """Return the leaf hash of a record: ``leaf_hash(chain_hash(prev_hash, payload))``.

    ``prev_hash`` is the previous record's chain hash, or ``None`` for the record at offset 0.
    """
    return _core.tlog_leaf_hash(_core.chain_hash(prev_hash, payload))


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: list[bytes], root: bytes
) -> None:
    """Check an RFC 9162 §2.1.3 inclusion proof; return ``None`` if it holds.

    ``leaf_hash`` is the leaf's hash (``record_leaf_hash`` of the record), ``index`` its
    position, ``tree_size`` and ``root`` the tree's (take both from one checkpoint), ``proof``
    a list of 32-byte hashes. Raises ``InvalidProofError`` when the proof does not hold,
    including ``index >= tree_size`` and a proof of the wrong length.
    """
    _core.tlog_verify_inclusion(leaf_hash, index, tree_size, proof, root)


def verify_consistency(
    old_size: int, new_size: int, proof: list[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Check an RFC 9162 §2.1.4 consistency proof; return ``None`` if it holds.

    Proves that the tree (``new_size``, ``new_root``) extends (``old_size``, ``old_root``).
    Raises ``InvalidProofError`` when it does not, and for ``old_size == 0``, sizes out of
    order, a proof of the wrong length, and equal sizes with a non-empty proof or different
    roots.
    """
    _core.tlog_verify_consistency(old_size, new_size, proof, old_root, new_root)


def generate_key(name: str) -> tuple[str, str]:
    """Return a new Ed25519 key pair as ``(signer_key, verifier_key)`` strings.

    The signer key (``PRIVATE+KEY+<name>+<hash>+<base64>``) is secret: store it in a file
    only its owner can read. The verifier key (``<name>+<hash>+<base64>``) is public. The name
    must be non-empty, without spaces, ``+``, newlines or control characters (``ValueError``).
    """
    return _core.tlog_generate_key(name)


class Signer:
    """A note signer from a signer key string (``PRIVATE+KEY+...``).

    Attributes: ``name`` (str), ``key_id`` (4 bytes), ``verifier_key`` (the matching public
    key string). A malformed key, or one whose hash does not match, raises ``ValueError``;
    a non-str ``TypeError``. The seed is kept in C memory only (wiped when the Signer is
    freed): a Signer keeps no reference to the key string, never shows it, and does not
    pickle.
    """

    __slots__ = ("_key", "name", "key_id", "verifier_key")

    _key: object  # the key loaded into C memory, wiped when this Signer is freed
    name: str
    key_id: bytes
    verifier_key: str

    def __init__(self, signer_key: str) -> None:
        key, name, key_id, vkey = _core.tlog_signer_load(signer_key)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "key_id", key_id)
        object.__setattr__(self, "verifier_key", vkey)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Signer is immutable; cannot set {name!r}")

    def __repr__(self) -> str:
        return f"Signer(name={self.name!r}, key_id={self.key_id.hex()!r})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Signer holds a secret key and cannot be pickled; pickle nothing, "
                        "and load the key from its file where it is needed")

    def sign_checkpoint(self, origin: str, tree_size: int, root_hash: bytes) -> Checkpoint:
        """Sign the checkpoint ``(origin, tree_size, root_hash)`` and return it.

        This signs whatever it is given: ``Storage.checkpoint`` is the safe way to sign a
        stream's head (it syncs the records and refuses a head that does not extend the
        last checkpoint). The origin must be one non-empty line of text (``ValueError``).
        """
        note = _core.tlog_sign_checkpoint(self._key, origin, tree_size, root_hash)
        return Checkpoint._make(origin, tree_size, bytes(root_hash), note)


class Verifier:
    """A note verifier from a verifier key string (``<name>+<hash>+<base64>``).

    Attributes: ``name`` (str), ``key_id`` (4 bytes), ``key`` (the key string). Verifiers
    compare equal when their key strings are equal. A malformed key raises ``ValueError``.
    """

    __slots__ = ("key", "name", "key_id")

    key: str
    name: str
    key_id: bytes

    def __init__(self, verifier_key: str) -> None:
        name, key_id = _core.tlog_verifier_info(verifier_key)
        object.__setattr__(self, "key", verifier_key)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "key_id", key_id)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Verifier is immutable; cannot set {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Verifier):
            return NotImplemented
        return self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Verifier({self.key!r})"


_MAKE = object()


class Checkpoint:
    """A signed tree head: ``origin`` (str), ``tree_size`` (int), ``root_hash`` (32 bytes) and
    ``note`` (the signed note, bytes).

    Obtained from ``open_checkpoint`` (verified) or by signing; not constructed directly.
    Immutable; equal when the notes are equal (which implies equal fields).
    """

    __slots__ = ("origin", "tree_size", "root_hash", "note")

    origin: str
    tree_size: int
    root_hash: bytes
    note: bytes

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise TypeError(
            "Checkpoint objects come from tlog.open_checkpoint(note, verifier) or from "
            "signing (Signer.sign_checkpoint, Storage.checkpoint); they are not built directly"
        )

    @classmethod
    def _make(cls, origin: str, tree_size: int, root_hash: bytes, note: bytes) -> Checkpoint:
        self = object.__new__(cls)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "tree_size", tree_size)
        object.__setattr__(self, "root_hash", root_hash)
        object.__setattr__(self, "note", note)
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Checkpoint is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Checkpoint is immutable; cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Checkpoint):
            return NotImplemented
        return self.note == other.note

    def __hash__(self) -> int:
        return hash(self.note)

    def __repr__(self) -> str:
        return (
            f"Checkpoint(origin={self.origin!r}, tree_size={self.tree_size}, "
            f"root_hash={self.root_hash.hex()!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_checkpoint_from_parts, (self.origin, self.tree_size, self.root_hash, self.note))


def _checkpoint_from_parts(origin: str, tree_size: int, root_hash: bytes, note: bytes) -> Checkpoint:
    # Unpickling: the fields are re-derived from the note so that they always agree with it.
    parsed = _core.tlog_parse_checkpoint(note)
    if parsed != (origin, tree_size, root_hash):
        raise MalformedNoteError("pickled checkpoint fields do not match its note")
    return Checkpoint._make(origin, tree_size, root_hash, bytes(note))


def open_checkpoint(
    note: bytes | bytearray | memoryview | str,
    verifier: Verifier | str,
    *,
    origin: str | None = None,
) -> Checkpoint:
    """Parse and verify a signed checkpoint note; return the ``Checkpoint``.

    ``note`` is the note's bytes (a str is encoded as UTF-8); ``verifier`` a ``Verifier`` or
    a verifier key string. The note must be well formed (else ``MalformedNoteError``) and
    carry a valid signature by that key, matched by name and key ID (else
    ``InvalidSignatureError``; signatures by other keys are ignored). With ``origin`` given,
    a checkpoint for another origin raises ``InvalidSignatureError`` too.
    """
    if isinstance(note, str):
        data: bytes | bytearray | memoryview = note.encode("utf-8", "surrogatepass")
    else:
        data = note
    if isinstance(verifier, Verifier):
        vkey = verifier.key
    elif isinstance(verifier, str):
        vkey = verifier
    else:
        raise TypeError(
            f"verifier must be a tlog.Verifier or a verifier key str, not {type(verifier).__name__}"
        )
    o, size, root = _core.tlog_open_checkpoint(data, vkey, origin)
    return Checkpoint._make(o, size, root, bytes(data))


def _tree_root(entries: list[bytes]) -> bytes:
    """The root of the tree whose entries are ``entries`` (32-byte chain hashes).

    O(n): for small trees, tests and the memory backend's fallback; ``Storage.tree_root``
    is the way to get a stream's root.
    """
    return _core.tlog_root(entries)


def _inclusion_proof(entries: list[bytes], index: int, tree_size: int) -> list[bytes]:
    """The inclusion proof of entry ``index`` in the tree of the first ``tree_size`` entries.

    O(n) per proof: for small trees and tests. ``ValueError`` unless
    ``index < tree_size <= len(entries)``.
    """
    return _core.tlog_inclusion_proof(entries, index, tree_size)


def _consistency_proof(entries: list[bytes], old_size: int, new_size: int) -> list[bytes]:
    """The consistency proof between the trees of the first ``old_size`` and ``new_size``
    entries. ``ValueError`` unless ``0 < old_size <= new_size <= len(entries)``."""
    return _core.tlog_consistency_proof(entries, old_size, new_size)


def _tile_path(level: int | None, index: int, width: int = 256) -> str:
    """The C2SP tlog-tiles path of a tile (``level`` None: an entry bundle); width 256 is a
    full tile, 1..255 a partial one."""
    return _core.tlog_tile_path(level, index, width)


def _tile_count(tree_size: int, level: int) -> tuple[int, int]:
    """(full tiles, width of the partial tile or 0) of ``level`` in a tree of ``tree_size``."""
    return _core.tlog_tile_count(tree_size, level)


_PROOF_KINDS = ("inclusion", "consistency")
_HEX = frozenset("0123456789abcdef")


def _canonical_uint(s: str) -> int | None:
    if not s or not s.isascii() or not s.isdigit() or (s[0] == "0" and len(s) > 1):
        return None
    value = int(s)
    return value if value < 2**64 else None


def _format_proof(kind: str, a: int, b: int, proof: list[bytes]) -> str:
    """The text form of a proof (docs/TLOG.md, "Proofs as text"): a header line
    ``inclusion <index> <tree_size>`` or ``consistency <old_size> <new_size>``, then one
    lowercase hex hash per line."""
    if kind not in _PROOF_KINDS:
        raise ValueError(f"kind must be 'inclusion' or 'consistency', not {kind!r}")
    for v in (a, b):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"proof sizes must be ints, not {type(v).__name__}")
        if not 0 <= v < 2**64:
            raise ValueError(f"proof size {v} is not in [0, 2**64)")
    lines = [f"{kind} {a} {b}\n"]
    for h in proof:
        if not isinstance(h, bytes) or len(h) != 32:
            raise ValueError("every proof hash must be 32 bytes")
        lines.append(h.hex() + "\n")
    return "".join(lines)


def _parse_proof(text: str | bytes) -> tuple[str, int, int, list[bytes]]:
    """Parse the text form of a proof strictly: ``(kind, a, b, hashes)``.

    Raises ``InvalidProofError`` for anything but the exact form ``_format_proof`` writes
    (the number of hashes is checked when the proof is verified).
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise InvalidProofError("malformed proof text: not ASCII") from None
    if not isinstance(text, str):
        raise TypeError(f"proof text must be str or bytes, not {type(text).__name__}")
    if not text.endswith("\n") or not text.isascii():
        raise InvalidProofError("malformed proof text: not ASCII lines each ending in a newline")
    lines = text[:-1].split("\n")
    head = lines[0].split(" ")
    if len(head) != 3 or head[0] not in _PROOF_KINDS:
        raise InvalidProofError(
            "malformed proof text: the first line must be 'inclusion <index> <tree_size>' "
            "or 'consistency <old_size> <new_size>'")
    a, b = _canonical_uint(head[1]), _canonical_uint(head[2])
    if a is None or b is None:
        raise InvalidProofError("malformed proof text: sizes must be canonical decimal numbers")
    hashes: list[bytes] = []
    for line in lines[1:]:
        if len(line) != 64 or not _HEX.issuperset(line):
            raise InvalidProofError(
                "malformed proof text: every line after the first must be 64 lowercase hex digits")
        hashes.append(bytes.fromhex(line))
    return head[0], a, b, hashes
