"""Fuzz targets over hostile bytes, shared by the bounded pass in the test command
(tests/test_fuzz.py: a seeded, plain-Python mutation fuzzer) and the long run with atheris
(tests/fuzz/run_atheris.py; docs/TESTING.md).

Each target feeds arbitrary bytes to one entry point. The contract (SPEC §4): only
StorageError subclasses come out — never another exception, a crash, a hang or an
out-of-bounds read (the ASan run of the suite checks the last). `Rejected` lists what a
target may raise; anything else propagates and is a finding.
"""
import os
import shutil
import struct
import tempfile

import kimberlite as km

Rejected = (km.StorageError,)


def record(data):
    """Record.from_bytes on arbitrary bytes; a decoded record must re-encode identically."""
    try:
        r, used = km.Record.from_bytes(data)
    except Rejected:
        return
    assert 48 <= used <= len(data)
    assert r.to_bytes() == bytes(data[:used])


def index(data, scratch):
    """OffsetIndex.load of a file holding arbitrary bytes; a loaded index must round-trip."""
    path = os.path.join(scratch, "x.idx")
    with open(path, "wb") as f:
        f.write(data)
    try:
        ix = km.OffsetIndex.load(path)
    except Rejected:
        return
    ix.save(path + "2")
    assert km.OffsetIndex.load(path + "2") == ix


def _layout(data):
    """Split fuzz bytes into files of one stream: the first byte picks how many segments
    (1..3, bits 0-1) and which get an index (bits 2-4); then, for each segment, its bytes
    and its index's bytes, each as a u16 length and that many bytes (encode_layout)."""
    if not data:
        return {}
    ctl, rest = data[0], data[1:]
    nseg = 1 + (ctl & 3) % 3
    files = {}
    pieces = []
    # Lengths come from the bytes themselves so the fuzzer can steer them.
    for i in range(nseg * 2):
        if len(rest) < 2:
            pieces.append(b"")
            continue
        (n,) = struct.unpack_from("<H", rest)
        rest = rest[2:]
        n = n % (len(rest) + 1)
        pieces.append(rest[:n])
        rest = rest[n:]
    pieces[-1] += rest
    for i in range(nseg):
        files["segment_%06d.log" % i] = pieces[2 * i]
        if ctl & (4 << i):
            files["segment_%06d.log.idx" % i] = pieces[2 * i + 1]
    return files


def encode_layout(segments, indexes):
    """The fuzz input that _layout splits into these segments and indexes (None: no index)."""
    ctl = len(segments) - 1
    out = b""
    for i, (seg, ix) in enumerate(zip(segments, indexes)):
        if ix is not None:
            ctl |= 4 << i
        for piece in (seg, ix or b""):
            out += struct.pack("<H", len(piece)) + piece
    return bytes([ctl]) + out


def directory(data, scratch, files=None):
    """Open a data directory whose stream 5 has segment and index files of arbitrary bytes,
    as a reader and as a writer, and use every call."""
    root = os.path.join(scratch, "d")
    shutil.rmtree(root, ignore_errors=True)
    sd = os.path.join(root, "5")
    os.makedirs(sd)
    for name, content in (files if files is not None else _layout(data)).items():
        with open(os.path.join(sd, name), "wb") as f:
            f.write(content)
    for read_only in (True, False):
        try:
            s = km.Storage(root, read_only=read_only, max_segment_size=4096)
        except Rejected:
            continue
        with s:
            for call in (lambda: s.streams(), lambda: s.next_offset(5),
                         lambda: s.latest_chain_hash(5), lambda: s.segment_count(5),
                         lambda: s.completed_segments(5), lambda: s.read_from(5),
                         lambda: s.read_records(5, 1, 100), lambda: s.read_from(5, 3),
                         lambda: s.verify(5)):
                try:
                    call()
                except Rejected:
                    pass
            if not read_only:
                try:
                    n = s.append_batch(5, [b"fuzz", b""])
                    assert s.read_from(5, n - 2) == [b"fuzz", b""]
                    s.verify(5)
                except Rejected:
                    pass
                except ValueError as e:   # a stream whose offsets reach 2**63 takes no more
                    assert "2**63" in str(e), e
                try:
                    s.flush_indexes()
                except Rejected:
                    pass


TARGETS = {"record": record, "index": index, "directory": directory}


def new_scratch():
    return tempfile.mkdtemp(prefix="kmb-fuzz-")
