"""Hostile and damaged files: only StorageError subclasses come out, never a crash, a hang
or a wrong answer (SPEC §4; out-of-bounds reads and leaks are the ASan run's job,
docs/TESTING.md).

- A bounded, seeded fuzz pass over Record.from_bytes, OffsetIndex.load and opening a data
  directory whose segment and index files are arbitrary bytes (tests/fuzz/harness.py; the
  long coverage-guided run is tests/fuzz/run_atheris.py). Seeds: tests/fuzz/corpus/.
- The shapes SPEC §3 names, one by one: a length field of 0xFFFFFFFF, wrong offsets, a
  segment whose first record does not continue the previous segment, indexes pointing past
  the end or into the middle of a record, and files that change size while being read.
"""
import glob
import logging
import os
import random
import struct
import sys
import threading
import time

import pytest

import kimberlite as km
from helpers import codec
from helpers.faults import check_stream, payloads
from helpers import idx_path, read_bytes, seg_path, write_bytes

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "fuzz"))
import harness  # noqa: E402
import mutate  # noqa: E402

# Executions per target in the test command (seconds in all); KIMBERLITE_FUZZ_SCALE=10
# multiplies them. The long, coverage-guided run: docs/TESTING.md.
SCALE = float(os.environ.get("KIMBERLITE_FUZZ_SCALE", "1"))
EXECS = {"record": 40000, "index": 4000, "directory": 1200}
SEED = 20261127
EXECUTED = {}


def _corpus(name):
    files = sorted(glob.glob(os.path.join(HERE, "fuzz", "corpus", name, "*")))
    assert len(files) >= 5, f"corpus of {name} missing"
    return [read_bytes(f) for f in files]


@pytest.fixture
def quiet():
    """Recovery warnings are expected by the thousand here; keep them out of the log."""
    log = logging.getLogger("kimberlite")
    level = log.level
    log.setLevel(logging.CRITICAL)
    yield
    log.setLevel(level)


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[pytest.mark.slow] if n == "directory" else []) for n in EXECS])
def test_fuzz_pass(name, tmp_path, quiet):
    target = harness.TARGETS[name]
    scratch = None if name == "record" else str(tmp_path)
    n = int(EXECS[name] * SCALE)
    start = time.monotonic()
    done = mutate.run(target, _corpus(name), n, SEED, scratch)
    EXECUTED[name] = done
    assert done >= n
    # No hang: the whole pass stays far from any timeout.
    assert time.monotonic() - start < 120 * SCALE


def test_corpus_seeds_behave_as_named(tmp_path, quiet):
    """The corpus is not vacuous: its valid seeds load, its hostile ones are rejected."""
    seeds = dict(zip(sorted(os.listdir(os.path.join(HERE, "fuzz", "corpus", "record"))),
                     _corpus("record")))
    assert km.Record.from_bytes(seeds["genesis"])[0].payload == b"event1"
    with pytest.raises(km.StorageError):
        km.Record.from_bytes(seeds["length-ffffffff"])
    with pytest.raises(km.CorruptedRecordError):
        km.Record.from_bytes(seeds["offset-2-63"])
    p = tmp_path / "x.idx"
    ix = dict(zip(sorted(os.listdir(os.path.join(HERE, "fuzz", "corpus", "index"))),
                  _corpus("index")))
    write_bytes(p, ix["three"])
    assert km.OffsetIndex.load(p).positions == [0, 54, 108]
    for bad in ("count-huge", "bad-magic", "version-2", "short"):
        write_bytes(p, ix[bad])
        with pytest.raises(km.IndexCorruptedError):
            km.OffsetIndex.load(p)


# --- the named hostile shapes ----------------------------------------------------------

def _stream(tmp_path, n=6, seg=None):
    d = tmp_path / "d"
    with km.Storage(d, max_segment_size=seg or (1 << 20)) as s:
        s.append_batch(1, payloads(1, 0, n))
    return d


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_length_ffffffff(tmp_path, where):
    """A length field of 0xFFFFFFFF claims 4 GiB: never allocated or read past the file.
    At the last record it is a torn tail (quarantined); before valid records, corruption."""
    d = _stream(tmp_path)
    p = seg_path(d, 1, 0)
    data = bytearray(read_bytes(p))
    pos = codec.record_positions(bytes(data))
    i = {"first": 0, "middle": 3, "last": 5}[where]
    data[pos[i] + 40:pos[i] + 44] = struct.pack("<I", 0xFFFFFFFF)
    write_bytes(p, bytes(data))
    os.remove(idx_path(d, 1, 0))
    with pytest.raises(km.StorageError):
        km.Record.from_bytes(bytes(data[pos[i]:]))
    for ro in (True, False):
        with km.Storage(d, read_only=ro) as s:
            if where == "last":      # a torn tail: not visible, and a writer quarantines it
                check_stream(s, 1, 5)
                if not ro:
                    assert s.append_batch(1, payloads(1, 5, 1)) == 6
                continue
            # what precedes the damage is intact, record by record
            assert [s.read_from(1, k, 1)[0] for k in range(i)] == payloads(1, 0, i)
            with pytest.raises(km.CorruptedRecordError):
                s.read_from(1)
            with pytest.raises(km.StorageError):
                s.verify(1)
            if not ro:
                with pytest.raises(km.CorruptedRecordError):
                    s.append_batch(1, [b"x"])
    if where != "last":
        assert read_bytes(p) == bytes(data)     # corruption: nothing cut or moved


def test_wrong_offsets_inside_a_segment(tmp_path):
    """A record whose offset skips ahead (valid CRC) is not the record expected there."""
    d = tmp_path / "d"
    (d / "1").mkdir(parents=True)
    good, head = codec.encode_records(0, None, payloads(1, 0, 3))
    bad, _ = codec.encode_records(5, head, payloads(1, 3, 2))   # offsets 5, 6 after 2
    tail, _ = codec.encode_records(7, codec.head_hash(payloads(1, 0, 5)), payloads(1, 5, 1))
    write_bytes(seg_path(d, 1, 0), good + bad + tail)
    with km.Storage(d) as s:
        assert s.read_from(1, 0, 1) == payloads(1, 0, 1)
        with pytest.raises(km.CorruptedRecordError):
            s.read_from(1)
        with pytest.raises(km.CorruptedRecordError):
            s.append_batch(1, [b"x"])
    assert read_bytes(seg_path(d, 1, 0)) == good + bad + tail    # nothing cut or moved


@pytest.mark.parametrize("case", ["gap", "overlap", "restart"])
def test_segment_that_does_not_continue_the_previous_one(tmp_path, case):
    """The active segment starts at the wrong offset: records that could continue the
    stream (offset 5 after 0..2: a gap; 2, 3 after 0..2: an overlap reaching 3) or whole
    records with an older offset (0, 1 after 0..2: a restart). A torn write never leaves a
    whole record with the wrong offset where the next one belongs, so each is corruption:
    reads stop there, appends are refused, nothing is moved (issue 8: a segment that does
    not start where the previous one ended is damage)."""
    d = tmp_path / "d"
    (d / "1").mkdir(parents=True)
    s0, h = codec.encode_records(0, None, payloads(1, 0, 3))
    first = {"gap": 5, "restart": 0, "overlap": 2}[case]
    s1, _ = codec.encode_records(first, h, payloads(1, 3, 2))
    write_bytes(seg_path(d, 1, 0), s0)
    write_bytes(seg_path(d, 1, 1), s1)
    for ro in (True, False):
        with km.Storage(d, read_only=ro) as s:
            assert s.read_from(1, 0, 1) == payloads(1, 0, 1)
            with pytest.raises(km.CorruptedRecordError):
                s.verify(1)
            with pytest.raises(km.CorruptedRecordError):
                s.read_from(1)
            if not ro:
                with pytest.raises(km.CorruptedRecordError):
                    s.append_batch(1, [b"x"])
    assert read_bytes(seg_path(d, 1, 1)) == s1      # nothing cut or moved
    assert not [n for n in os.listdir(d / "1") if "torn" in n]


@pytest.mark.parametrize("shape", ["past-end", "mid-record", "far-past-end", "descending"])
def test_index_pointing_at_the_wrong_place_is_rebuilt(tmp_path, shape):
    """An index is a cache: one that points past the end of the segment or into the middle
    of a record is never trusted; results are those of the segment alone."""
    d = _stream(tmp_path)
    seg = read_bytes(seg_path(d, 1, 0))
    pos = codec.record_positions(seg)
    bad = {"past-end": pos + [len(seg) + 48],
           "mid-record": pos[:3] + [pos[3] + 10] + pos[4:],
           "far-past-end": [0, (1 << 64) - 1],
           "descending": list(reversed(pos))}[shape]
    write_bytes(idx_path(d, 1, 0), codec.encode_index(bad))
    for ro in (True, False):
        with km.Storage(d, read_only=ro) as s:
            check_stream(s, 1, 6)
            assert s.read_from(1, 3) == payloads(1, 3, 3)
    assert read_bytes(seg_path(d, 1, 0)) == seg
    assert km.OffsetIndex.load(idx_path(d, 1, 0)).positions == pos    # rewritten right


def test_files_that_change_size_while_being_read(tmp_path, quiet):
    """Another program truncates, extends and rewrites a segment while readers use it:
    every call either returns records that are right or raises a StorageError."""
    d = _stream(tmp_path, n=40)
    p = seg_path(d, 1, 0)
    good = read_bytes(p)
    os.remove(idx_path(d, 1, 0))
    stop = threading.Event()
    rng = random.Random(7)
    errors = []

    def vandal():
        while not stop.is_set():
            k = rng.randrange(4)
            if k == 0:
                os.truncate(p, rng.randrange(len(good)))
            elif k == 1:
                with open(p, "ab") as f:
                    f.write(os.urandom(rng.randrange(1, 300)))
            elif k == 2:
                write_bytes(p, good)
            else:
                os.truncate(p, len(good) + rng.randrange(4096))   # a sparse hole of zeros
            time.sleep(0.0005)

    def reader(ro):
        calls = 0
        while not stop.is_set():
            try:
                with km.Storage(d, read_only=ro) as s:
                    for _ in range(20):
                        f = rng.randrange(40)
                        got = s.read_from(1, f)
                        assert got == payloads(1, f, len(got))
                        s.verify(1)
                        calls += 1
            except km.StorageError:
                calls += 1
            except Exception as e:  # noqa: BLE001 - the finding
                errors.append(e)
                return

    ts = [threading.Thread(target=vandal), threading.Thread(target=reader, args=(True,)),
          threading.Thread(target=reader, args=(True,)), threading.Thread(target=reader, args=(False,))]
    for t in ts:
        t.start()
    time.sleep(1.5)
    stop.set()
    for t in ts:
        t.join(60)
        assert not t.is_alive(), "hang"
    assert not errors, errors[0]
    write_bytes(p, good)
    with km.Storage(d) as s:
        check_stream(s, 1, 40)
