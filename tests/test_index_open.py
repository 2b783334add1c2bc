"""Opening a stream whose stored index is large (over 1 MiB: the engine reads it into a
mapped buffer and checks its CRC and the gaps between entries in one pass of 64 KiB steps,
csrc/index.c kmb_index_adopt_checked): an intact index is used as is; one whose gaps are
impossible (too small, decreasing, in any step, at a step boundary) or whose bytes are
damaged is rebuilt from the segment; and only the part before the durable watermark has to
be sound (the rest is scanned anyway, docs/FORMAT.md §10). In every case the stream reads
whole and the same.
"""
import logging
import os
import struct
import zlib

import pytest

import kimberlite as km

N = 140_000  # entries: 16 + 8 * N + 4 bytes > 1 MiB, the mapped-buffer path
STEP = 8192  # entries per step of the fused CRC + gap pass (csrc/index.c FUSED_STEP)
DURABLE = 30_000  # records made durable: the watermark ends inside the fourth step
MAX_EVENT = 64 * 1024 * 1024  # the default max_event_size
HEADER = 16
DAMAGED = "is damaged; rebuilding it"
MISMATCH = "does not match the segment; rebuilding it"


def _payload(i):
    return b"%d" % i


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A stream of N small events, the first DURABLE of them durable (the watermark)."""
    path = tmp_path_factory.mktemp("idxopen") / "data"
    with km.Storage(path) as s:
        assert s.max_event_size == MAX_EVENT
        s.append_batch(1, [_payload(i) for i in range(DURABLE)], fsync=True)
        s.append_batch(1, [_payload(i) for i in range(DURABLE, N)], fsync=False)
    idx = path / "1" / "segment_000000.log.idx"
    assert os.path.getsize(idx) == HEADER + 8 * N + 4
    return path, idx.read_bytes()


def _positions(image):
    return list(struct.unpack_from(f"<{N}Q", image, HEADER))


def _image(positions):
    body = struct.pack("<4sB3sQ", b"VDXI", 1, b"\0\0\0", len(positions))
    body += struct.pack(f"<{len(positions)}Q", *positions)
    return body + struct.pack("<I", zlib.crc32(body))


def _reopen_and_check(path, caplog, read_only):
    """Reopen, read, close; the engine's notes (the "kimberlite" logger) meanwhile."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kimberlite"), km.Storage(
        path, read_only=read_only
    ) as s:
        assert s.next_offset(1) == N
        assert list(s.read_from(1, N - 10)) == [_payload(i) for i in range(N - 10, N)]
        for k in (0, STEP - 1, STEP, 100_000, N - 1):
            assert s.read_from(1, k, max_bytes=1) == [_payload(k)]
    return caplog.text


@pytest.fixture
def copy(store, tmp_path):
    """A fresh copy of the store, and a function writing its index."""
    src, image = store
    dst = tmp_path / "data"
    for root, _dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        os.makedirs(dst / rel, exist_ok=True)
        for f in files:
            with open(os.path.join(root, f), "rb") as a, open(dst / rel / f, "wb") as b:
                b.write(a.read())
    idx = dst / "1" / "segment_000000.log.idx"

    def write(data):
        idx.write_bytes(data)

    return dst, image, idx, write


@pytest.mark.parametrize("read_only", [True, False])
def test_an_intact_large_index_is_used_as_is(copy, caplog, read_only):
    path, image, idx, _ = copy
    err = _reopen_and_check(path, caplog, read_only)
    assert "rebuilding" not in err, err
    assert idx.read_bytes() == image  # not rewritten: it was right


@pytest.mark.parametrize(
    "k, how, rebuilt",
    [
        (600, "wide", True),  # wider than any record this storage accepts
        (STEP, "decreasing", True),  # the gap that crosses from one step to the next
        (STEP * 3 + 17, "short", True),  # in a later step
        (DURABLE - 1, "short", True),  # the last entry before the watermark
        # Past the durable watermark the index is not trusted anyway: what is kept before it
        # is sound, the rest is scanned, and nothing is rebuilt. The prefix found sound must
        # be exact (not rounded down to its step), or these would be rebuilt too.
        (DURABLE, "wide", False),
        (DURABLE + 1, "wide", False),
        (N - 1, "short", False),
    ],
)
def test_an_impossible_gap_is_judged_where_the_index_is_trusted(copy, caplog, k, how, rebuilt):
    path, image, idx, write = copy
    pos = _positions(image)
    if how == "short":
        pos[k] = pos[k - 1] + 47  # one byte less than a record's overhead
    elif how == "decreasing":
        pos[k] = pos[k - 1] - 1
    else:
        pos[k] = pos[k - 1] + MAX_EVENT + 49
    write(_image(pos))
    err = _reopen_and_check(path, caplog, read_only=False)
    if rebuilt:
        assert MISMATCH in err, err
    else:
        assert "rebuilding" not in err, err
    assert idx.read_bytes() == image  # the writer saved the right index back


def test_a_bit_flip_in_a_later_step_is_caught_by_the_crc(copy, caplog):
    path, image, idx, write = copy
    damaged = bytearray(image)
    damaged[HEADER + 8 * 130_000 + 2] ^= 0x04
    write(bytes(damaged))
    err = _reopen_and_check(path, caplog, read_only=False)
    assert DAMAGED in err, err
    assert idx.read_bytes() == image


@pytest.mark.parametrize("cut", [1, 4, 8 * 1000, 8 * (N - STEP)])
def test_a_truncated_large_index_is_rebuilt(copy, caplog, cut):
    path, image, idx, write = copy
    write(image[:-cut])
    err = _reopen_and_check(path, caplog, read_only=False)
    assert DAMAGED in err, err
    assert idx.read_bytes() == image
