"""Quickstart: append, read back, keep the head hash, verify against it.

Run: python examples/quickstart.py
"""
from __future__ import annotations

import tempfile

import kimberlite


def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir, kimberlite.Storage(data_dir) as storage:
        new_offset: int = storage.append_batch(1, [b"event1", b"event2"], expected_offset=0)
        assert new_offset == 2
        events: list[bytes] = storage.read_from(1, from_offset=0, max_bytes=1024)
        assert events == [b"event1", b"event2"]

        head = storage.latest_chain_hash(1)
        assert head is not None
        print("head", head.hex())
        count, verified_head = storage.verify(1, expected_head=head)
        assert (count, verified_head) == (2, head)

        try:
            storage.append_batch(1, [b"event3"], expected_offset=0)
        except kimberlite.OffsetMismatchError as e:
            print("stale expected_offset:", e.expected, "stream is at", e.actual)


if __name__ == "__main__":
    main()
