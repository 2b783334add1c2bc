"""Hypothesis over directory mutations (issue 8): a stream of several segments, with or
without index files, then a random sequence of deletions, truncations, replacements (random
bytes, another file's bytes), swaps of two files and duplications of a segment under the
next number; then, in a child with a timeout and an address-space limit, a read-only
opener and a writer each list the streams, ask next_offset, read, verify and (the writer)
append.

Invariant: every operation returns data that is exactly what was written (reads: a prefix
of the written events, in order; next_offset and verify: never beyond what was written,
verify's head the head of that prefix) or raises a StorageError subclass — never a hang, a
crash, a MemoryError, or a successful append that rewrites history: the appended record
sits at the offset the append returned minus one, and links to the hash of the written
events before it (checked on the files with the independent codec, tests/helpers/codec.py).
"""
import atexit
import os
import shutil
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import codec
from helpers import read_bytes, stream_dir, write_bytes
from helpers.dirs import make_stream
from helpers.sandbox import GiB, probe

SEG = 1024
_BASES = {}


def _base(with_index):
    """A data directory with stream 1 (36 events, 5 segments), built once per process."""
    if with_index not in _BASES:
        root = tempfile.mkdtemp(prefix="kmb-mutations-")
        atexit.register(shutil.rmtree, root, True)
        d = os.path.join(root, "d")
        written = make_stream(d, max_segment_size=SEG, with_index=with_index)
        _BASES[with_index] = (d, written)
    return _BASES[with_index]


def _files(d):
    sd = stream_dir(d, 1)
    return sorted(n for n in os.listdir(sd) if n.startswith("segment_"))


mutation = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, 99)),
    st.tuples(st.just("truncate"), st.integers(0, 99), st.floats(0, 1)),
    st.tuples(st.just("random"), st.integers(0, 99), st.binary(max_size=3000)),
    st.tuples(st.just("copy"), st.integers(0, 99), st.integers(0, 99)),
    st.tuples(st.just("swap"), st.integers(0, 99), st.integers(0, 99)),
    st.tuples(st.just("duplicate"), st.integers(0, 99)),
)


def _apply(d, m):
    """Apply one mutation to the stream directory; returns a description."""
    sd = stream_dir(d, 1)
    names = _files(d)
    if not names:
        return "no files left"
    pick = lambda i: os.path.join(sd, names[i % len(names)])   # noqa: E731
    op = m[0]
    if op == "delete":
        os.remove(pick(m[1]))
    elif op == "truncate":
        p = pick(m[1])
        os.truncate(p, int(os.path.getsize(p) * m[2]))
    elif op == "random":
        write_bytes(pick(m[1]), m[2])
    elif op == "copy":
        a, b = pick(m[1]), pick(m[2])
        write_bytes(b, read_bytes(a))
    elif op == "swap":
        a, b = pick(m[1]), pick(m[2])
        da, db = read_bytes(a), read_bytes(b)
        write_bytes(a, db)
        write_bytes(b, da)
    elif op == "duplicate":
        segs = [n for n in names if n.endswith(".log")]
        if not segs:
            return "no segment left"
        n = segs[m[1] % len(segs)]
        k = int(n[8:-4])
        write_bytes(os.path.join(sd, codec.segment_name(k + 1)), read_bytes(os.path.join(sd, n)))
    return f"{op} {m[1:]!r}"[:80]


def _appended_record(d, marker):
    """(offset, prev_hash) of the record whose payload is `marker`, found in the stream's
    segment files by the independent codec; None if absent."""
    sd = stream_dir(d, 1)
    found = []
    for n in os.listdir(sd):
        if not (n.startswith("segment_") and n.endswith(".log")):
            continue
        data = read_bytes(os.path.join(sd, n))
        at = data.find(marker)
        while at >= 0:
            try:
                off, prev, payload, _size = codec.decode_record(data, at - codec.HEADER_SIZE)
            except codec.CodecError:
                pass
            else:
                if payload == marker:
                    found.append((off, prev))
            at = data.find(marker, at + 1)
    assert len(found) <= 1, found
    return found[0] if found else None


def _records_at_or_after(d, first, marker):
    """Offsets >= first of the valid records (CRC passes) other than `marker` found at any
    byte position of the stream's segment files."""
    sd = stream_dir(d, 1)
    found = []
    for n in os.listdir(sd):
        if not (n.startswith("segment_") and n.endswith(".log")):
            continue
        data = read_bytes(os.path.join(sd, n))
        for p in range(0, len(data) - codec.RECORD_OVERHEAD + 1):
            try:
                off, _prev, payload, _size = codec.decode_record(data, p)
            except codec.CodecError:
                continue
            if off >= first and payload != marker:
                found.append((n, p, off))
    return found


def _check(out, written, what):
    n = len(written)
    for o in out:
        assert o.ok or o.storage_error, f"{what}: {o!r}: only StorageError subclasses may come out"
    for o in out:
        if not o.ok:
            continue
        if o.op == "next_offset":
            assert 0 <= o.value <= n, f"{what}: next_offset {o.value} beyond the {n} written"
        elif o.op == "read_from":
            assert o.value == written[:len(o.value)], f"{what}: read returned other data"
        elif o.op == "verify":
            k, head = o.value
            assert k <= n and head == codec.head_hash(written[:k]), f"{what}: verify {k}"


@pytest.mark.slow
@settings(max_examples=settings.default.max_examples)
@given(with_index=st.booleans(), mutations=st.lists(mutation, min_size=1, max_size=4),
       marker_seed=st.integers(0, 2 ** 32))
def test_mutated_directory_never_returns_wrong_data_or_rewrites_history(with_index, mutations,
                                                                        marker_seed):
    base, written = _base(with_index)
    root = tempfile.mkdtemp(prefix="kmb-mutated-")
    try:
        d = os.path.join(root, "d")
        shutil.copytree(base, d)
        what = "; ".join(_apply(d, m) for m in mutations)
        marker = b"appended-after-mutation-%d" % marker_seed
        ops = [["open", {"read_only": True, "max_segment_size": SEG}], ["streams"],
               ["next_offset", 1], ["read_from", 1, 0, None], ["verify", 1],
               ["open", {"max_segment_size": SEG}], ["streams"], ["next_offset", 1],
               ["read_from", 1, 0, None], ["verify", 1], ["append", 1, [marker]],
               ["read_from", 1, 0, None]]
        out = probe(d, ops, timeout=20, as_limit=1 * GiB)
        _check(out[:10], written, what)
        app, after = out[10], out[11]
        assert app.ok or app.storage_error, f"{what}: {app!r}"
        if app.ok:
            m = app.value
            assert 1 <= m <= len(written) + 1, f"{what}: append returned {m}"
            rec = _appended_record(d, marker)
            assert rec is not None, f"{what}: the acknowledged append is not in the files"
            off, prev = rec
            assert off == m - 1, f"{what}: appended at offset {off}, returned {m}"
            want = codec.head_hash(written[:m - 1]) if m > 1 else codec.ZERO_HASH
            assert prev == want, f"{what}: the append at offset {off} does not extend " \
                                 f"the written history (it rewrites it)"
            forked = _records_at_or_after(d, m - 1, marker)
            assert not forked, f"{what}: the append at offset {off} stands beside written " \
                               f"records at the same or later offsets (a second history): " \
                               f"{forked[:5]}"
            assert after.ok or after.storage_error, f"{what}: {after!r}"
            if after.ok:
                assert after.value == written[:m - 1] + [marker], \
                    f"{what}: read after the append returned other data"
        else:
            assert _appended_record(d, marker) is None, f"{what}: a refused append was written"
    finally:
        shutil.rmtree(root, ignore_errors=True)
