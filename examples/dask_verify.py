"""Read and verify a log in parallel on a Dask cluster (here a LocalCluster on this machine).

Run: python examples/dask_verify.py        (needs pip install 'kimberlite-storage[dask]')

The workers open the data directory read-only, so this works beside a live writer.
"""
from __future__ import annotations

import tempfile

import distributed

import kimberlite
import kimberlite.dask
import kimberlite.testing


def main() -> None:
    with tempfile.TemporaryDirectory() as path:
        with kimberlite.Storage(path, max_segment_size=1 << 20) as storage:
            for day in range(10):
                orders = [f"day {day} order {i}".encode() for i in range(5000)]
                storage.append_batch(1, orders)
                storage.append_batch(2, orders[:500])
            trusted = {1: storage.latest_chain_hash(1), 2: storage.latest_chain_hash(2)}
        # Someone rewrites an order of stream 2 (its CRC recomputed: only the chain tells).
        kimberlite.testing.replace_payload(path, 2, 1234, b"day 2 order 999")

        with distributed.LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
                distributed.Client(cluster):  # type: ignore[no-untyped-call]
            # A Dask DataFrame indexed by offset, one partition per ~256 KiB of records.
            df = kimberlite.dask.read_stream(path, 1, partition_bytes=256 << 10)
            print(f"stream 1: {df.npartitions} partitions over {len(df)} events")
            print("events 20000-20002:", df.loc[20000:20002, "payload"].compute().tolist())

            # Verify every stream from genesis: one task per range, stitched at the
            # boundaries, each head compared with the trusted one.
            report = kimberlite.dask.verify(path, expected_heads=trusted,
                                            partition_bytes=256 << 10)
            for r in report.values():
                if r.ok:
                    print(f"stream {r.stream_id}: intact, {r.next_offset} events")
                else:
                    print(f"stream {r.stream_id}: tampering detected: {r.error} "
                          f"at offset {r.offset}")


if __name__ == "__main__":
    main()
