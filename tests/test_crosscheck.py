"""Both directions between the engine and the independent codec (tests/helpers/codec.py):
files the engine writes decode with helpers.codec, and directories it writes are read (and
extended, and re-indexed) by the engine."""
import os
import random

import pytest

import kimberlite as km
from helpers import codec
from helpers import dir_files, idx_path, read_bytes, seg_path, segment_files, stream_dir

MAX_SEG = 300


def make_batches(seed, n_batches=12, max_events=5, max_len=90):
    rng = random.Random(seed)
    batches = []
    for b in range(n_batches):
        batch = []
        for e in range(rng.randint(1, max_events)):
            n = rng.choice([0, 1, 5, rng.randint(0, max_len)])
            batch.append(bytes([(seed + b + e + i) % 256 for i in range(n)]))
        batches.append(batch)
    # one batch bigger than a whole segment: it must go whole into one segment
    batches.append([b"B" * 200, b"C" * 200])
    batches.append([b"tail"])
    return batches


def check_engine_dir(data_dir, sid, model, *, indexes_required):
    """The engine's files for one stream equal the model's, byte for byte."""
    d = stream_dir(data_dir, sid)
    images, records = codec.read_stream_dir(d)
    expected = model.segment_images()
    # SPEC: the empty active segment left by eager rotation "may be created at once".
    if len(images) == len(expected) - 1 and expected[-1] == b"":
        expected = expected[:-1]
    assert images == expected
    assert [r[2] for r in records] == model.payloads
    assert [r[0] for r in records] == list(range(model.next_offset))
    hashes = model.hashes
    assert [r[1] for r in records] == [codec.ZERO_HASH] + hashes[:-1]
    for n, img in enumerate(images):
        p = idx_path(data_dir, sid, n)
        if img == b"" and not os.path.exists(p):
            continue
        if not indexes_required and not os.path.exists(p):
            continue
        assert os.path.exists(p), f"missing index {p}"
        assert codec.decode_index(read_bytes(p)) == codec.record_positions(img)
        assert read_bytes(p) == codec.encode_index(codec.record_positions(img))


# --- engine -> codec --------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_engine_files_decode_with_codec(data_dir, seed):
    batches = make_batches(seed)
    model = codec.StreamModel(MAX_SEG)
    with km.Storage(data_dir, max_segment_size=MAX_SEG) as s:
        for b in batches:
            assert s.append_batch(7, b) == model.append_batch(b)
        assert s.segment_count(7) == model.segment_count
        assert s.completed_segments(7) == model.completed_segments
        assert s.latest_chain_hash(7) == model.head
    assert model.segment_count >= 4  # the scenario really rotates
    check_engine_dir(data_dir, 7, model, indexes_required=True)


def test_sealed_segment_index_is_written_when_sealed(data_dir):
    # DESIGN.md: indexes are written when a segment is sealed (and on flush/close).
    model = codec.StreamModel(100)
    s = km.Storage(data_dir, max_segment_size=100)
    try:
        for b in ([b"a" * 10], [b"b" * 10], [b"c" * 3, b"d"], [b"e"]):
            s.append_batch(3, b)
            model.append_batch(b)
        assert model.completed_segments == [0, 1]
        for n in model.completed_segments:
            img = model.segment_images()[n]
            assert read_bytes(idx_path(data_dir, 3, n)) == codec.encode_index(codec.record_positions(img))
    finally:
        s.close()


def test_flush_indexes_writes_active_segment_index(data_dir):
    model = codec.StreamModel(1 << 20)
    s = km.Storage(data_dir, max_segment_size=1 << 20)
    try:
        for b in ([b"one", b"two"], [b""], [b"three" * 9]):
            s.append_batch(5, b)
            model.append_batch(b)
        s.flush_indexes()
        img = model.segment_images()[0]
        assert read_bytes(seg_path(data_dir, 5, 0)) == img
        assert codec.record_positions(img) == [0, 51, 102, 150]
        assert read_bytes(idx_path(data_dir, 5, 0)) == codec.encode_index([0, 51, 102, 150])
        # more appends, flush again: the index follows
        s.append_batch(5, [b"four"])
        model.append_batch([b"four"])
        s.flush_indexes()
        img = model.segment_images()[0]
        assert read_bytes(idx_path(data_dir, 5, 0)) == codec.encode_index(codec.record_positions(img))
    finally:
        s.close()


def test_engine_files_for_extreme_stream_ids(data_dir):
    ids = [0, 1, 2**63, 2**64 - 1]
    models = {}
    with km.Storage(data_dir, max_segment_size=200) as s:
        for i, sid in enumerate(ids):
            models[sid] = codec.StreamModel(200)
            for b in make_batches(i, n_batches=4):
                s.append_batch(sid, b)
                models[sid].append_batch(b)
        assert s.streams() == sorted(ids)
    assert sorted(d for d in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, d))) == \
        sorted(str(i) for i in ids)
    for sid in ids:
        check_engine_dir(data_dir, sid, models[sid], indexes_required=True)


def test_memory_records_equal_codec_records():
    batches = make_batches(9)
    model = codec.build_stream(batches, MAX_SEG)
    with km.MemoryStorage(max_segment_size=MAX_SEG) as m:
        for b in batches:
            m.append_batch(11, b)
        recs = m.read_records(11)
        assert m.segment_count(11) == model.segment_count
        assert m.completed_segments(11) == model.completed_segments
    image = b"".join(model.segment_images())
    assert b"".join(r.to_bytes() for r in recs) == image


# --- codec -> engine --------------------------------------------------------------------

def check_engine_reads(s, sid, model):
    n = model.next_offset
    assert s.next_offset(sid) == n
    assert s.latest_chain_hash(sid) == model.head
    assert s.verify(sid) == (n, model.head)
    assert s.verify(sid, expected_head=model.head) == (n, model.head)
    assert s.segment_count(sid) == model.segment_count
    assert s.completed_segments(sid) == model.completed_segments
    for f in range(n + 2):
        assert s.read_from(sid, f) == model.payloads[f:], f
    recs = s.read_records(sid, 0)
    assert [(r.offset, r.prev_hash, r.payload) for r in recs] == [
        (i, model.hashes[i - 1] if i else None, p) for i, p in enumerate(model.payloads)]
    for f in (0, 1, n // 2, n - 1):
        for mb in (0, 1, 50, 300, 10**6):
            assert s.read_from(sid, f, max_bytes=mb) == model.read(f, mb), (f, mb)


@pytest.mark.parametrize("with_index", [False, True], ids=["no-idx", "idx"])
@pytest.mark.parametrize("create_active", [True, False], ids=["active-file", "no-active-file"])
@pytest.mark.parametrize("read_only", [False, True], ids=["writer", "reader"])
def test_engine_reads_codec_directory(data_dir, with_index, create_active, read_only):
    batches = make_batches(4)
    cuts = {0: 6, 1: 7, 2: len(batches), 3: len(batches) - 1}  # stream 3 ends on the big batch
    models = {sid: codec.write_stream_dir(data_dir, sid, batches[:cut], MAX_SEG,
                                           with_index=with_index, create_active=create_active)
              for sid, cut in cuts.items()}
    # stream 3 ends on a full segment: the empty active segment (file or not) is exercised
    assert models[3].segment_images()[-1] == b""
    before = dir_files(data_dir)
    with km.Storage(data_dir, max_segment_size=MAX_SEG, read_only=read_only) as s:
        assert s.streams() == [0, 1, 2, 3]
        for sid, m in models.items():
            check_engine_reads(s, sid, m)
    if read_only:
        assert dir_files(data_dir) == before, "a read-only Storage wrote to the directory"


def test_codec_directory_ending_on_full_segment_without_active_file(data_dir):
    """A full last segment with no file for the next one: the engine still counts the empty
    active segment (eager rotation) and never writes the sealed one again."""
    batches = [[b"x" * 60], [b"y" * 60]]   # 108 + 108 bytes with max 200: rotation after batch 2
    model = codec.write_stream_dir(data_dir, 4, batches, 200, create_active=False)
    assert model.segment_images()[-1] == b"" and model.segment_count == 2
    assert segment_files(data_dir, 4) == ["segment_000000.log"]
    with km.Storage(data_dir, max_segment_size=200) as s:
        assert s.segment_count(4) == 2
        assert s.completed_segments(4) == [0]
        assert s.append_batch(4, [b"z"]) == 3
        model.append_batch([b"z"])
    check_engine_dir(data_dir, 4, model, indexes_required=False)
    assert read_bytes(seg_path(data_dir, 4, 0)) == model.segment_images()[0]


@pytest.mark.parametrize("with_index", [False, True], ids=["no-idx", "idx"])
@pytest.mark.parametrize("create_active", [True, False], ids=["active-file", "no-active-file"])
def test_engine_extends_codec_directory(data_dir, with_index, create_active):
    batches = make_batches(5)
    model = codec.write_stream_dir(data_dir, 9, batches[:8], MAX_SEG,
                                    with_index=with_index, create_active=create_active)
    with km.Storage(data_dir, max_segment_size=MAX_SEG) as s:
        for b in batches[8:]:
            assert s.append_batch(9, b, expected_offset=model.next_offset) == model.append_batch(b)
        check_engine_reads(s, 9, model)
    check_engine_dir(data_dir, 9, model, indexes_required=True)


def test_engine_rebuilds_missing_indexes(data_dir):
    batches = make_batches(6)
    model = codec.write_stream_dir(data_dir, 2, batches, MAX_SEG, with_index=False)
    assert not [n for n in os.listdir(stream_dir(data_dir, 2)) if n.endswith(".idx")]
    images = model.segment_images()
    s = km.Storage(data_dir, max_segment_size=MAX_SEG)
    try:
        # touch every segment through random access (index needed), then flush
        for n, first in enumerate(model.segment_first):
            if images[n]:
                assert s.read_from(2, first + 1, max_bytes=1) == model.read(first + 1, 1)
        check_engine_reads(s, 2, model)
        s.flush_indexes()
        for n, img in enumerate(images):
            if img:
                assert read_bytes(idx_path(data_dir, 2, n)) == \
                    codec.encode_index(codec.record_positions(img)), n
    finally:
        s.close()
    check_engine_dir(data_dir, 2, model, indexes_required=True)
    assert [read_bytes(seg_path(data_dir, 2, n)) for n in range(len(images)) if images[n]] == \
        [img for img in images if img]


def test_engine_rebuilds_missing_index_on_close(data_dir):
    batches = make_batches(8, n_batches=5)
    model = codec.write_stream_dir(data_dir, 1, batches, 1 << 20, with_index=False)
    with km.Storage(data_dir, max_segment_size=1 << 20) as s:
        assert s.read_from(1, 3, max_bytes=1) == model.read(3, 1)
    img = model.segment_images()[0]
    assert read_bytes(idx_path(data_dir, 1, 0)) == codec.encode_index(codec.record_positions(img))


def test_read_only_on_codec_directory_writes_nothing(data_dir):
    model = codec.write_stream_dir(data_dir, 3, make_batches(10), MAX_SEG, with_index=False)
    before = sorted(os.listdir(data_dir)), dir_files(data_dir)
    with km.Storage(data_dir, max_segment_size=MAX_SEG, read_only=True) as s:
        check_engine_reads(s, 3, model)
        s.flush_indexes()  # a no-op when read-only
    assert (sorted(os.listdir(data_dir)), dir_files(data_dir)) == before
    assert not os.path.exists(os.path.join(data_dir, "kimberlite.lock"))


# --- records and indexes ----------------------------------------------------------------

def test_record_bytes_cross_codec():
    rng = random.Random(77)
    prev = None
    for off in range(60):
        payload = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 33, 300])))
        r = km.Record(off, prev, payload)
        raw = codec.encode_record(off, prev, payload)
        assert r.to_bytes() == raw
        back, used = km.Record.from_bytes(raw + b"\x00junk")
        assert used == len(raw)
        assert (back.offset, back.prev_hash, back.payload) == (off, prev, payload)
        assert r.compute_hash() == codec.chain_hash(prev, payload)
        prev = r.compute_hash()


@pytest.mark.parametrize("positions", [[], [0], [0, 54, 108], [0, 2**40, 2**64 - 1]])
def test_offset_index_file_cross_codec(tmp_path, positions):
    p = tmp_path / "x.idx"
    km.OffsetIndex(positions).save(p)
    assert read_bytes(p) == codec.encode_index(positions)
    q = tmp_path / "y.idx"
    q.write_bytes(codec.encode_index(positions))
    ix = km.OffsetIndex.load(q)
    assert ix.positions == positions
    assert len(ix) == len(positions)
