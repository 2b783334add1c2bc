"""Builders of real data directories for the hostile-directory tests: a stream written by the
engine itself (several segments, with or without index files), what the independent codec
(tests/helpers/codec.py) says each segment holds, and before/after pictures of a directory."""
import os

from . import codec
from .faults import payloads

from . import dir_files, dir_listing, read_bytes, seg_path, stream_dir


def make_stream(data_dir, sid=1, *, batches=12, per_batch=3, max_segment_size=1024,
                with_index=True, fsync=False):
    """Append `batches` batches of `per_batch` deterministic events (helpers.faults.payloads)
    to stream sid through the engine; return the list of payloads written (offset order).
    with_index=False removes the stream's .idx files afterwards."""
    import kimberlite as km
    with km.Storage(data_dir, max_segment_size=max_segment_size) as s:
        for b in range(batches):
            s.append_batch(sid, payloads(sid, b * per_batch, per_batch), fsync=fsync)
    if not with_index:
        d = stream_dir(data_dir, sid)
        for n in os.listdir(d):
            if n.endswith(".idx"):
                os.remove(os.path.join(d, n))
    return payloads(sid, 0, batches * per_batch)


def layout(data_dir, sid=1):
    """[(segment number, first offset, record count, size)] of the stream's segment files,
    decoded strictly by the independent codec (the files must be undamaged)."""
    out = []
    d = stream_dir(data_dir, sid)
    nums = sorted(int(n[8:-4]) for n in os.listdir(d)
                  if n.startswith("segment_") and n.endswith(".log"))
    for k in nums:
        data = read_bytes(seg_path(data_dir, sid, k))
        recs = codec.decode_segment(data)
        out.append((k, recs[0][0] if recs else None, len(recs), len(data)))
    return out


def _not_index(name):
    return not (name.endswith(".idx") or name.endswith(".idx.tmp"))


def picture(data_dir):
    """(listing, {file: bytes}) of a data directory, the lock file and the index files
    excepted: compare two to show that no segment or quarantine file was created, deleted or
    changed. Index files are a cache (FORMAT.md §8) that a writer may write at any time."""
    return ([n for n in dir_listing(data_dir) if _not_index(n)],
            {n: b for n, b in dir_files(data_dir).items() if _not_index(n)})


def assert_unchanged(before, data_dir, what=""):
    """No segment or quarantine file created, deleted or changed since `before` (picture)."""
    listing, files = picture(data_dir)
    assert listing == before[0], f"{what}: files created or deleted: " \
        f"{sorted(set(listing) ^ set(before[0]))}"
    changed = [n for n in files if files[n] != before[1].get(n)]
    assert not changed, f"{what}: files changed: {changed}"


def quarantine_files(data_dir, sid=1):
    """{name: bytes} of the stream's quarantine files (names containing 'torn')."""
    d = stream_dir(data_dir, sid)
    return {n: read_bytes(os.path.join(d, n)) for n in sorted(os.listdir(d)) if "torn" in n}
