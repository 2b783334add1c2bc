"""Streams as sequences: len(), indexing, slicing and iteration in bounded memory.

Run: python examples/iterate.py
"""
from __future__ import annotations

from typing import Iterator

import kimberlite


def sensor_readings(n: int) -> Iterator[bytes]:
    for i in range(n):
        yield f"reading {i}: {20 + i % 7} C".encode()


def main() -> None:
    with kimberlite.MemoryStorage(max_segment_size=4096) as storage:
        storage.append_batch(7, list(sensor_readings(1000)))

        view: kimberlite.Stream = storage.stream(7)
        print(len(view), "events in", view.segments, "segments")
        last: bytes = view[-1]
        window: list[bytes] = view[10:15]
        print("last:", last, "| 10..14:", window)

        # Iteration reads about 1 MiB at a time, whatever the size of the stream.
        total = sum(len(event) for event in view)
        print("payload bytes:", total)

        for record in storage.iter_from(7, 995, records=True):
            r: kimberlite.Record = record
            print(r.offset, r.payload, r.compute_hash().hex()[:16])


if __name__ == "__main__":
    main()
