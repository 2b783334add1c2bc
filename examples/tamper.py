"""Damage a stream on purpose with kimberlite.testing, and watch the checks catch it.

Run: python examples/tamper.py
"""
from __future__ import annotations

import kimberlite
import kimberlite.testing


def main() -> None:
    with kimberlite.MemoryStorage() as storage:
        storage.append_batch(1, [b"deposit 100", b"withdraw 30", b"deposit 5"])
        head = storage.latest_chain_hash(1)

        # Tampering: a payload replaced, its CRC recomputed. Only the hash chain tells.
        kimberlite.testing.replace_payload(storage, 1, 0, b"deposit 900")
        try:
            storage.verify(1, expected_head=head)
        except kimberlite.ChainVerificationError as e:
            print("tampering detected at offset", e.offset)

    with kimberlite.MemoryStorage() as storage:
        storage.append_batch(1, [b"a", b"b", b"c"])
        # Bit rot: the CRC catches it on the next read that reaches the record.
        kimberlite.testing.flip_bit(storage, 1, 1)
        try:
            storage.read_from(1)
        except kimberlite.CorruptedRecordError as e:
            print("corruption detected at offset", e.offset)


if __name__ == "__main__":
    main()
