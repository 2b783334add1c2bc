"""Disk behaviour: rotation, reopening, index damage, torn tails and corruption (SPEC §2, §3)."""
import os
import random
import shutil
import zlib

import pytest

import kimberlite as km
from helpers import codec
from helpers import (dir_files, idx_path, read_bytes, remove_indexes, seg_path, stream_dir,
                     torn_files, write_bytes)


def batches_for(seed, n=15):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append([bytes([65 + (i + j) % 26]) * rng.choice([0, 1, 7, 20, 60])
                    for j in range(rng.randint(1, 4))])
    return out


def engine_files_match(data_dir, sid, model):
    images, _ = codec.read_stream_dir(stream_dir(data_dir, sid))
    expected = model.segment_images()
    if len(images) == len(expected) - 1 and expected[-1] == b"":
        expected = expected[:-1]
    assert images == expected


def observe(s, sid):
    n = s.next_offset(sid)
    return {
        "next": n,
        "head": s.latest_chain_hash(sid),
        "verify": s.verify(sid),
        "segments": s.segment_count(sid),
        "completed": s.completed_segments(sid),
        "all": s.read_from(sid),
        "each": [s.read_from(sid, f, max_bytes=25) for f in range(n + 1)],
        "records": [(r.offset, r.prev_hash, r.payload) for r in s.read_records(sid, n // 2)],
    }


def expected_observation(model):
    n = model.next_offset
    return {
        "next": n,
        "head": model.head,
        "verify": (n, model.head),
        "segments": model.segment_count,
        "completed": model.completed_segments,
        "all": model.payloads,
        "each": [model.read(f, 25) for f in range(n + 1)],
        "records": [(i, model.hashes[i - 1] if i else None, model.payloads[i])
                    for i in range(n // 2, n)],
    }


# --- rotation -------------------------------------------------------------------------------

@pytest.mark.parametrize("max_seg", [1, 49, 100, 150, 333])
def test_rotation_matches_model(disk, max_seg):
    batches = batches_for(max_seg)
    model = codec.StreamModel(max_seg)
    s = disk.open(max_segment_size=max_seg)
    for b in batches:
        assert s.append_batch(1, b) == model.append_batch(b)
        assert s.segment_count(1) == model.segment_count
        assert s.completed_segments(1) == model.completed_segments
    assert s.segment_count(1) > 2
    assert observe(s, 1) == expected_observation(model)
    engine_files_match(disk.data_dir, 1, model)
    # every segment file holds whole batches, never a part of one
    images = model.segment_images()
    starts = set()
    off = 0
    for b in model.batches:
        starts.add(off)
        off += len(b)
    for first, img in zip(model.segment_first, images):
        if img:
            assert first in starts


def test_eager_rotation_exact_boundary(disk):
    s = disk.open(max_segment_size=108)
    s.append_batch(1, [b"event1"])
    assert s.segment_count(1) == 1
    s.append_batch(1, [b"event2"])            # exactly 108 bytes: at the limit -> rotate
    assert s.segment_count(1) == 2
    assert s.completed_segments(1) == [0]
    s.append_batch(1, [b"event3"])
    s.close()
    assert len(read_bytes(seg_path(disk.data_dir, 1, 0))) == 108
    assert len(read_bytes(seg_path(disk.data_dir, 1, 1))) == 54


def test_batch_larger_than_segment_goes_whole(disk):
    s = disk.open(max_segment_size=100)
    s.append_batch(1, [b"a"])
    big = [b"x" * 80, b"y" * 80, b"z" * 80]
    s.append_batch(1, big)
    assert s.segment_count(1) == 2
    s.append_batch(1, [b"after"])
    s.close()
    seg0 = codec.decode_segment(read_bytes(seg_path(disk.data_dir, 1, 0)))
    assert [p for _, _, p in seg0] == [b"a"] + big
    seg1 = codec.decode_segment(read_bytes(seg_path(disk.data_dir, 1, 1)), first_offset=4)
    assert [p for _, _, p in seg1] == [b"after"]


def test_reads_across_segment_boundaries(backend):
    s = backend.open(max_segment_size=120)
    model = codec.StreamModel(120)
    for b in batches_for(3, n=20):
        s.append_batch(9, b)
        model.append_batch(b)
    assert model.segment_count > 5
    n = model.next_offset
    for f in range(n + 2):
        assert s.read_from(9, f) == model.payloads[f:]
        for mb in (1, 30, 61, 200):
            assert s.read_from(9, f, mb) == model.read(f, mb)
        recs = s.read_records(9, f, 100)
        assert [r.payload for r in recs] == model.read(f, 100)
        assert [r.prev_hash for r in recs] == [model.hashes[i - 1] if i else None
                                               for i in range(f, f + len(recs))]


def test_reopen_continues_stream(disk):
    batches = batches_for(11, n=20)
    model = codec.StreamModel(200)
    for round_ in range(4):
        s = disk.open(max_segment_size=200)
        assert observe(s, 3) == expected_observation(model)
        for b in batches[round_ * 5:(round_ + 1) * 5]:
            assert s.append_batch(3, b, expected_offset=model.next_offset) == model.append_batch(b)
        s.close()
    engine_files_match(disk.data_dir, 3, model)


def test_open_file_descriptors_stay_bounded(disk):
    def nfds():
        return len(os.listdir("/proc/self/fd"))
    s = disk.open(max_segment_size=50)
    s.append_batch(0, [b"warm"])
    base = nfds()
    for sid in range(1, 60):
        for i in range(4):
            s.append_batch(sid, [b"e%d" % i])     # every append rotates: 4+ segments per stream
    for sid in range(1, 60):
        assert s.read_from(sid) == [b"e0", b"e1", b"e2", b"e3"]
        assert s.verify(sid)[0] == 4
    assert s.segment_count(59) == 5
    assert nfds() - base <= 8


# --- indexes ----------------------------------------------------------------------------

def _build_with_history(disk, sid=1, max_seg=250):
    """Append batches, snapshotting the .idx files after each flush. Returns (model, history)."""
    batches = batches_for(21, n=18)
    model = codec.StreamModel(max_seg)
    history = []
    s = disk.open(max_segment_size=max_seg)
    for b in batches:
        s.append_batch(sid, b)
        model.append_batch(b)
        s.flush_indexes()
        d = stream_dir(disk.data_dir, sid)
        history.append({n: read_bytes(os.path.join(d, n)) for n in os.listdir(d) if n.endswith(".idx")})
    s.close()
    assert model.segment_count >= 4
    return model, history


IDX_DAMAGE = ["deleted", "bitflip", "truncated", "garbage", "empty", "lagging", "forged",
              "forged-middle", "zero-entries"]


@pytest.mark.parametrize("which", ["all", "active", "sealed"])
@pytest.mark.parametrize("damage", IDX_DAMAGE)
def test_damaged_index_gives_identical_results(disk, damage, which):
    model, history = _build_with_history(disk)
    d = stream_dir(disk.data_dir, 1)
    images = model.segment_images()
    active = len(images) - 1 if images[-1] else len(images) - 2  # last non-empty segment
    targets = {"all": [n for n in range(len(images)) if images[n]],
               "active": [active], "sealed": [0, 1]}[which]
    pristine = dir_files(disk.data_dir)
    rng = random.Random(zlib.crc32(f"{damage}/{which}".encode()))
    for n in targets:
        p = idx_path(disk.data_dir, 1, n)
        good = read_bytes(p)
        if damage == "deleted":
            os.remove(p)
        elif damage == "bitflip":
            b = bytearray(good)
            bit = rng.randrange(len(b) * 8)
            b[bit // 8] ^= 1 << (bit % 8)
            write_bytes(p, bytes(b))
        elif damage == "truncated":
            write_bytes(p, good[:len(good) // 2])
        elif damage == "garbage":
            write_bytes(p, bytes(rng.getrandbits(8) for _ in range(64)))
        elif damage == "empty":
            write_bytes(p, b"")
        elif damage == "lagging":
            name = codec.segment_name(n) + ".idx"
            older = [h[name] for h in history if name in h and h[name] != good]
            if older:
                write_bytes(p, older[0])
            else:
                write_bytes(p, codec.encode_index(codec.record_positions(images[n])[:-1]))
            assert codec.decode_index(read_bytes(p)) != codec.decode_index(good)
        elif damage == "forged":
            # a valid file whose positions do not match the segment
            pos = codec.record_positions(images[n])
            write_bytes(p, codec.encode_index([0] + [x + 1 for x in pos[1:]] + [len(images[n]) + 7]))
        elif damage == "forged-middle":
            # a valid file, first and last entries right, one middle entry a byte off
            pos = codec.record_positions(images[n])
            k = len(pos) // 2 if len(pos) >= 3 else len(pos) - 1
            pos[k] += 1
            write_bytes(p, codec.encode_index(pos))
        elif damage == "zero-entries":
            write_bytes(p, codec.encode_index([]))
    segs_before = {k: v for k, v in pristine.items() if k.endswith(".log")}
    s = disk.open(max_segment_size=250)
    assert observe(s, 1) == expected_observation(model)
    # segment files untouched by loading with a bad index
    assert {k: v for k, v in dir_files(disk.data_dir).items() if k.endswith(".log")} == segs_before
    assert not torn_files(disk.data_dir, 1)
    for b in ([b"more"], [b"and", b"more" * 30]):
        assert s.append_batch(1, b) == model.append_batch(b)
    assert observe(s, 1) == expected_observation(model)
    s.close()
    engine_files_match(disk.data_dir, 1, model)
    for n, img in enumerate(model.segment_images()):
        p = idx_path(disk.data_dir, 1, n)
        if img or os.path.exists(p):
            assert read_bytes(p) == codec.encode_index(codec.record_positions(img)), n
    s = disk.open(max_segment_size=250)
    assert observe(s, 1) == expected_observation(model)


# --- torn tails ---------------------------------------------------------------------------------

def _write_stream(disk, sid, batches, max_seg):
    model = codec.StreamModel(max_seg)
    s = disk.open(max_segment_size=max_seg)
    for b in batches:
        s.append_batch(sid, b)
        model.append_batch(b)
    s.close()
    return model


TORN_BATCHES = [[b"one", b"two" * 10], [b"three"], [b"four" * 5, b"five"], [b"six" * 7]]


@pytest.mark.parametrize("keep_index", [True, False], ids=["idx", "no-idx"])
@pytest.mark.parametrize("keep", [1, 8, 43, 44, 47, 60, -1], ids=lambda k: f"keep{k}")
def test_torn_last_record_is_quarantined(disk, keep, keep_index):
    model = _write_stream(disk, 1, TORN_BATCHES, 1 << 20)
    path = seg_path(disk.data_dir, 1, 0)
    img = read_bytes(path)
    last = codec.record_positions(img)[-1]
    rec_len = len(img) - last
    keep = rec_len - 1 if keep == -1 else keep
    assert 0 < keep < rec_len
    write_bytes(path, img[:last + keep])
    if not keep_index:
        os.remove(path + ".idx")
    torn = img[last:last + keep]
    _check_torn_recovery(disk, 1, 0, img[:last], torn, model.payloads[:-1], model)


def _check_torn_recovery(disk, sid, seg, kept, torn, expected_payloads, model, max_seg=1 << 20):
    s = disk.open(max_segment_size=max_seg)
    assert s.next_offset(sid) == len(expected_payloads)
    assert s.read_from(sid) == expected_payloads
    head = codec.head_hash(expected_payloads)
    assert s.latest_chain_hash(sid) == head
    assert s.verify(sid, expected_head=head) == (len(expected_payloads), head)
    seg_name = codec.segment_name(seg)
    assert read_bytes(seg_path(disk.data_dir, sid, seg)) == kept
    tf = torn_files(disk.data_dir, sid)
    assert len(tf) == 1, tf
    assert tf[0].startswith(seg_name) and tf[0] != seg_name and "torn" in tf[0]
    assert read_bytes(os.path.join(stream_dir(disk.data_dir, sid), tf[0])) == torn
    assert read_bytes(seg_path(disk.data_dir, sid, seg)) == kept
    # appends continue the chain
    assert s.append_batch(sid, [b"after-1", b"after-2"]) == len(expected_payloads) + 2
    payloads = expected_payloads + [b"after-1", b"after-2"]
    new_head = codec.head_hash(payloads)
    assert s.verify(sid, expected_head=new_head) == (len(payloads), new_head)
    assert s.read_from(sid) == payloads
    s.close()
    _, recs = codec.read_stream_dir(stream_dir(disk.data_dir, sid))
    assert [r[2] for r in recs] == payloads
    # reopening again changes nothing more
    s = disk.open(max_segment_size=max_seg)
    assert s.read_from(sid) == payloads
    assert torn_files(disk.data_dir, sid) == tf
    s.close()


JUNK = {
    "zeros": b"\x00" * 10,
    "ff-long": b"\xff" * 60,
    "random": bytes(random.Random(5).getrandbits(8) for _ in range(100)),
    "one-byte": b"\x01",
    "header-only": codec.encode_record(5, b"\x11" * 32, b"payload")[:44],
}


@pytest.mark.parametrize("keep_index", [True, False], ids=["idx", "no-idx"])
@pytest.mark.parametrize("junk", list(JUNK))
def test_junk_after_last_record_is_quarantined(disk, junk, keep_index):
    model = _write_stream(disk, 2, TORN_BATCHES, 1 << 20)
    path = seg_path(disk.data_dir, 2, 0)
    img = read_bytes(path)
    write_bytes(path, img + JUNK[junk])
    if not keep_index:
        os.remove(path + ".idx")
    _check_torn_recovery(disk, 2, 0, img, JUNK[junk], model.payloads, model)


@pytest.mark.parametrize("keep_index", [True, False], ids=["idx", "no-idx"])
def test_whole_stale_record_after_last_record_is_damage(disk, keep_index):
    """A whole record with a valid CRC but an older offset (a copy of record 0) where the
    next record belongs is not what a torn write leaves (a torn write leaves a partial
    record, or records with the right offsets): it is damage, nothing is cut or moved."""
    model = _write_stream(disk, 2, TORN_BATCHES, 1 << 20)
    path = seg_path(disk.data_dir, 2, 0)
    img = read_bytes(path) + codec.encode_record(0, None, b"one")
    write_bytes(path, img)
    if not keep_index:
        os.remove(path + ".idx")
    s = disk.open(max_segment_size=1 << 20)
    n = len(model.payloads)
    assert s.read_from(2, 0, max_bytes=1) == model.payloads[:1]
    with pytest.raises(km.CorruptedRecordError) as info:
        s.read_from(2)
    assert info.value.offset == n
    with pytest.raises(km.CorruptedRecordError):
        s.append_batch(2, [b"more"])
    s.close()
    assert read_bytes(path) == img
    assert not torn_files(disk.data_dir, 2)


@pytest.mark.parametrize("seed", [8, 9, 10, 12])
def test_torn_tail_in_later_active_segment(disk, seed):
    model = _write_stream(disk, 3, batches_for(seed), 150)
    images = model.segment_images()
    n = len(images) - 1            # the active segment (possibly empty after a rotation)
    assert n >= 2
    path = seg_path(disk.data_dir, 3, n)
    img = images[n]
    partial = codec.encode_record(model.next_offset, model.head, b"never acknowledged")[:50]
    write_bytes(path, img + partial)
    _check_torn_recovery(disk, 3, n, img, partial, model.payloads, model, max_seg=150)


def test_two_torn_tails_get_distinct_quarantine_files(disk):
    _write_stream(disk, 1, [[b"a"]], 1 << 20)
    path = seg_path(disk.data_dir, 1, 0)
    with open(path, "ab") as f:
        f.write(b"first-junk")
    s = disk.open()
    assert s.read_from(1) == [b"a"]
    s.close()
    with open(path, "ab") as f:
        f.write(b"second-junk")
    s = disk.open()
    assert s.read_from(1) == [b"a"]
    s.close()
    tf = torn_files(disk.data_dir, 1)
    assert len(tf) == 2
    contents = sorted(read_bytes(os.path.join(stream_dir(disk.data_dir, 1), t)) for t in tf)
    assert contents == [b"first-junk", b"second-junk"]
    assert all(t.startswith("segment_000000.log") for t in tf)


def test_torn_file_is_not_a_segment(disk):
    """A quarantine file never counts as a segment, nor is read as records."""
    model = _write_stream(disk, 1, [[b"a", b"b"]], 1 << 20)
    with open(seg_path(disk.data_dir, 1, 0), "ab") as f:
        f.write(b"junk")
    s = disk.open()
    assert s.segment_count(1) == 1
    s.close()
    s = disk.open()
    assert s.segment_count(1) == 1
    assert s.read_from(1) == model.payloads
    assert s.streams() == [1]


# --- corruption: damage followed by valid records, sealed segments -----------------------------

FIELD_BYTES = {"offset": 2, "prev_hash": 20, "length": 40, "payload": 46, "crc": -2}


def _damaged_stream(disk, sid, field, record_index, batches, max_seg, drop_index):
    model = _write_stream(disk, sid, batches, max_seg)
    _write_stream(disk, sid + 1, [[b"other"], [b"stream"]], max_seg)
    # locate the record
    seg = max(i for i, first in enumerate(model.segment_first) if first <= record_index
              and model.segment_images()[i])
    path = seg_path(disk.data_dir, sid, seg)
    img = bytearray(read_bytes(path))
    pos = codec.record_positions(bytes(img))
    start = pos[record_index - model.segment_first[seg]]
    end = start + codec.record_size(len(model.payloads[record_index]))
    at = FIELD_BYTES[field]
    at = end + at if at < 0 else start + at
    img[at] ^= 0x04
    write_bytes(path, bytes(img))
    if drop_index:
        remove_indexes(disk.data_dir, sid)
    return model, seg, start


CORRUPT_BATCHES = [[b"rec0" * 3], [b"rec1" * 3], [b"rec2" * 3, b"rec3" * 3], [b"rec4" * 3]]


@pytest.mark.parametrize("field", list(FIELD_BYTES))
def test_damage_followed_by_valid_records_is_corruption(disk, field):
    model, seg, start = _damaged_stream(disk, 1, field, 1, CORRUPT_BATCHES, 1 << 20, drop_index=True)
    before = dir_files(disk.data_dir)
    s = disk.open()
    # the loader scans (no index): appends must refuse to extend the chain past the damage
    with pytest.raises(km.CorruptedRecordError) as ei:
        s.append_batch(1, [b"must not be written"])
    assert ei.value.stream_id == 1
    for f in (0, 1, 2):
        with pytest.raises(km.CorruptedRecordError) as ei:
            s.read_from(1, f)
        if field != "offset":
            assert ei.value.offset == 1
        assert ei.value.stream_id == 1
        assert ei.value.position == start
    with pytest.raises(km.CorruptedRecordError):
        s.read_records(1, 0)
    with pytest.raises(km.StorageError):
        s.verify(1)
    # reads that stop before the damage still work
    assert s.read_from(1, 0, max_bytes=1) == [model.payloads[0]]
    # other streams unaffected
    assert s.read_from(2) == [b"other", b"stream"]
    assert s.append_batch(2, [b"fine"]) == 3
    assert s.verify(2)[0] == 3
    with pytest.raises(km.CorruptedRecordError):
        s.append_batch(1, [b"still refused"])
    s.close()
    after = dir_files(disk.data_dir)
    logs = [k for k in before if k.startswith("1" + os.sep) and k.endswith(".log")]
    assert logs
    for k in logs:
        assert after[k] == before[k], k           # nothing cut
    assert [k for k in after if k.startswith("1" + os.sep) and k.endswith(".log")] == logs
    assert not torn_files(disk.data_dir, 1)        # nothing moved


def test_damage_in_indexed_region_found_by_read_then_appends_refused(disk):
    model, seg, start = _damaged_stream(disk, 1, "payload", 1, CORRUPT_BATCHES, 1 << 20, drop_index=False)
    seg_before = read_bytes(seg_path(disk.data_dir, 1, 0))
    s = disk.open()
    with pytest.raises(km.CorruptedRecordError):
        s.read_from(1, 0)
    with pytest.raises(km.CorruptedRecordError):
        s.append_batch(1, [b"must not be written"])
    with pytest.raises(km.StorageError):
        s.verify(1)
    assert s.read_from(2) == [b"other", b"stream"]
    s.close()
    assert read_bytes(seg_path(disk.data_dir, 1, 0)) == seg_before
    assert not torn_files(disk.data_dir, 1)


@pytest.mark.parametrize("drop_index", [True, False], ids=["no-idx", "idx"])
@pytest.mark.parametrize("which", ["first", "last"])
@pytest.mark.parametrize("field", ["payload", "crc", "length"])
def test_damage_in_sealed_segment_is_corruption(disk, drop_index, which, field):
    batches = [[b"s%d" % i * 10] for i in range(9)]
    model = codec.build_stream(batches, 130)
    sealed0 = [i for i in range(model.next_offset) if model.segment_first[1] > i]
    assert len(sealed0) >= 2 and model.segment_count >= 3
    rec = sealed0[0] if which == "first" else sealed0[-1]
    model, seg, start = _damaged_stream(disk, 1, field, rec, batches, 130, drop_index=drop_index)
    assert seg == 0
    before = {k: v for k, v in dir_files(disk.data_dir).items() if k.endswith(".log")}
    s = disk.open(max_segment_size=130)
    with pytest.raises(km.CorruptedRecordError):
        s.read_from(1, 0)
    with pytest.raises(km.CorruptedRecordError):
        s.read_from(1, rec)
    with pytest.raises(km.StorageError):
        s.verify(1)
    with pytest.raises(km.CorruptedRecordError):
        s.append_batch(1, [b"must not be written"])
    # reads that start after the damage and need nothing from it still work
    later = model.segment_first[1] + 1
    assert s.read_from(1, later) == model.payloads[later:]
    assert s.read_from(2) == [b"other", b"stream"]
    assert s.append_batch(2, [b"ok"]) == 3
    s.close()
    after = {k: v for k, v in dir_files(disk.data_dir).items() if k.endswith(".log")}
    for k, v in before.items():
        if k.startswith("1" + os.sep):
            assert after[k] == v, k
    assert not torn_files(disk.data_dir, 1)


def test_damage_in_last_record_of_active_segment_is_a_torn_tail(disk):
    """SPEC §3: indistinguishable from a torn write; verify(expected_head) detects it."""
    model = _write_stream(disk, 1, CORRUPT_BATCHES, 1 << 20)
    head = model.head
    path = seg_path(disk.data_dir, 1, 0)
    img = bytearray(read_bytes(path))
    img[-3] ^= 0x40
    write_bytes(path, bytes(img))
    s = disk.open()
    with pytest.raises(km.ChainVerificationError):
        s.verify(1, expected_head=head)
    assert s.read_from(1) == model.payloads[:-1]
    s.close()
    assert len(torn_files(disk.data_dir, 1)) == 1


def test_copy_of_directory_reads_identically(disk, tmp_path):
    """The segment files are the only source of truth: a copy without index or lock works."""
    model = _write_stream(disk, 6, batches_for(30), 200)
    copy = tmp_path / "copy"
    shutil.copytree(disk.data_dir, copy)
    remove_indexes(copy)
    if (copy / "kimberlite.lock").exists():
        os.remove(copy / "kimberlite.lock")
    with km.Storage(copy, max_segment_size=200, read_only=True) as r:
        assert observe(r, 6) == expected_observation(model)
    with km.Storage(copy, max_segment_size=200) as w:
        assert observe(w, 6) == expected_observation(model)


# --- tampering with valid CRCs: the hash chain catches it ----------------------------------------

def _rewrite_record(path, index, *, payload=None, prev_hash=None, offset=None):
    """Re-encode record `index` of a segment with new fields and a valid CRC (an attacker)."""
    img = read_bytes(path)
    recs = codec.decode_segment(img)
    pos = codec.record_positions(img)
    off, ph, pl = recs[index]
    new = codec.encode_record(off if offset is None else offset,
                               ph if prev_hash is None else prev_hash,
                               pl if payload is None else payload)
    old_len = codec.record_size(len(pl))
    write_bytes(path, img[:pos[index]] + new + img[pos[index] + old_len:])


@pytest.mark.parametrize("drop_index", [False, True], ids=["idx", "no-idx"])
def test_tampered_prev_hash_with_valid_crc_breaks_the_chain(disk, drop_index):
    events = [b"t%d" % i for i in range(6)]
    model = _write_stream(disk, 1, [events], 1 << 20)
    path = seg_path(disk.data_dir, 1, 0)
    _rewrite_record(path, 3, prev_hash=b"\x66" * 32)
    if drop_index:
        os.remove(path + ".idx")
    s = disk.open()
    with pytest.raises(km.ChainVerificationError) as ei:
        s.verify(1)
    e = ei.value
    assert e.offset == 3
    assert e.expected == model.hashes[2]     # computed from its predecessor
    assert e.actual == b"\x66" * 32          # what record 3 stores
    for f in (0, 2, 3):
        with pytest.raises(km.ChainVerificationError):
            s.read_from(1, f)
    assert s.read_from(1, 0, max_bytes=1) == [b"t0"]
    # record 3's hash is computed from what it stores, so the link 3 -> 4 is broken too
    with pytest.raises(km.ChainVerificationError):
        s.read_from(1, 4)
    assert s.read_from(1, 5) == events[5:]   # the link 4 -> 5 is intact


@pytest.mark.parametrize("index", [0, 2, 4])
def test_tampered_payload_with_valid_crc_breaks_the_chain(disk, index):
    events = [b"p%d" % i for i in range(6)]
    model = _write_stream(disk, 1, [events], 1 << 20)
    path = seg_path(disk.data_dir, 1, 0)
    _rewrite_record(path, index, payload=b"P%d" % index)   # same length
    s = disk.open()
    with pytest.raises(km.ChainVerificationError) as ei:
        s.verify(1)
    assert ei.value.offset == index + 1
    assert ei.value.actual == model.hashes[index]
    assert ei.value.expected == codec.chain_hash(model.hashes[index - 1] if index else None, b"P%d" % index)
    with pytest.raises(km.ChainVerificationError):
        s.read_from(1, 0)
    with pytest.raises(km.ChainVerificationError):
        s.read_from(1, index + 1)   # the first record's link is checked against its predecessor
    with pytest.raises(km.ChainVerificationError):
        s.verify(1, expected_head=model.head)


def test_tampered_last_record_needs_the_trusted_head(disk):
    events = [b"q%d" % i for i in range(4)]
    model = _write_stream(disk, 1, [events], 1 << 20)
    path = seg_path(disk.data_dir, 1, 0)
    _rewrite_record(path, 3, payload=b"Q3")
    s = disk.open()
    forged = codec.head_hash(events[:3] + [b"Q3"])
    assert s.verify(1) == (4, forged)                  # a consistent chain, rewritten
    with pytest.raises(km.ChainVerificationError) as ei:
        s.verify(1, expected_head=model.head)
    assert (ei.value.offset, ei.value.expected, ei.value.actual) == (3, model.head, forged)


@pytest.mark.parametrize("drop_index", [False, True], ids=["idx", "no-idx"])
def test_swapped_records_are_corruption(disk, drop_index):
    events = [b"s%d" % i for i in range(6)]          # equal sizes: swapping keeps the framing
    _write_stream(disk, 1, [events], 1 << 20)
    path = seg_path(disk.data_dir, 1, 0)
    img = read_bytes(path)
    pos = codec.record_positions(img)
    size = pos[1]
    swapped = img[:pos[1]] + img[pos[2]:pos[2] + size] + img[pos[1]:pos[1] + size] + img[pos[3]:]
    write_bytes(path, swapped)
    if drop_index:
        os.remove(path + ".idx")
    s = disk.open()
    with pytest.raises(km.CorruptedRecordError):
        s.read_from(1, 0)
    with pytest.raises(km.CorruptedRecordError):
        s.read_from(1, 1)
    with pytest.raises(km.StorageError):
        s.verify(1)
    with pytest.raises(km.CorruptedRecordError):
        s.append_batch(1, [b"no"])
    s.close()
    assert read_bytes(path) == swapped
    assert not torn_files(disk.data_dir, 1)


def test_corruption_message_names_stream_offset_and_file(disk):
    _write_stream(disk, 12, [[b"m0", b"m1", b"m2"]], 1 << 20)
    path = seg_path(disk.data_dir, 12, 0)
    img = bytearray(read_bytes(path))
    img[50 + 44] ^= 1                          # payload of record 1
    write_bytes(path, bytes(img))
    s = disk.open()
    with pytest.raises(km.CorruptedRecordError) as ei:
        s.read_from(12)
    msg = str(ei.value)
    assert "12" in msg and "segment_000000.log" in msg
    assert (ei.value.stream_id, ei.value.offset, ei.value.position) == (12, 1, 50)


# --- a killed writer loses no acknowledged batch ------------------------------------------------

_KILLED_WRITER = r"""
import sys, kimberlite as km
s = km.Storage(sys.argv[1], max_segment_size=4096)
k = s.next_offset(1)
while True:
    batch = [b"e%d|" % j + b"x" * (j % 97) for j in range(k, k + 3)]
    k = s.append_batch(1, batch, fsync=False)
    print(k, flush=True)
"""


def _killed_payload(k):
    return b"e%d|" % k + b"x" * (k % 97)


def test_process_kill_keeps_every_acknowledged_batch(tmp_path):
    import subprocess
    import sys
    import time
    from helpers import child_env
    d = tmp_path / "killed"
    acked = 0
    for _round in range(3):
        p = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(d)],
                             stdout=subprocess.PIPE, text=True, env=child_env())
        t0 = time.time()
        lines = 0
        # Killed at a moment that depends on the machine's speed, but only after at least
        # 30 batches per round (about 4.5 KiB), so rotation is reached however loaded the
        # machine is (a slow ASan child in a busy CI run wrote less than a segment in 0.3 s).
        while lines < 3000 and (time.time() - t0 < 0.3 or lines < 30) and time.time() - t0 < 60:
            line = p.stdout.readline()
            if not line:
                break
            acked = int(line)
            lines += 1
        p.kill()
        p.wait(30)
        assert lines > 0, "the child wrote nothing"
        with km.Storage(d, max_segment_size=4096) as s:
            n = s.next_offset(1)
            assert n >= acked                         # every acknowledged batch survived
            events = s.read_from(1)
            assert events == [_killed_payload(k) for k in range(n)]
            assert s.verify(1) == (n, codec.head_hash(events))
            assert s.segment_count(1) > 1
        acked = n


def test_streams_load_lazily(disk):
    """SPEC §3: opening does not scan data; a stream is loaded (and recovered) on first use."""
    _write_stream(disk, 1, [[b"a", b"b"]], 1 << 20)
    _write_stream(disk, 2, [[b"c"]], 1 << 20)
    path = seg_path(disk.data_dir, 1, 0)
    damaged = read_bytes(path) + b"torn tail of stream 1"
    write_bytes(path, damaged)
    s = disk.open()
    assert s.append_batch(2, [b"d"]) == 2
    assert s.read_from(2) == [b"c", b"d"]
    s.close()
    assert read_bytes(path) == damaged          # stream 1 was never loaded, so never recovered
    assert not torn_files(disk.data_dir, 1)
    s = disk.open()
    assert s.read_from(1) == [b"a", b"b"]       # first use: recovered now
    assert len(torn_files(disk.data_dir, 1)) == 1


def test_torn_only_record_of_a_stream(disk):
    _write_stream(disk, 1, [[b"lonely"]], 1 << 20)
    path = seg_path(disk.data_dir, 1, 0)
    img = read_bytes(path)
    write_bytes(path, img[:30])
    os.remove(path + ".idx")
    s = disk.open()
    assert s.next_offset(1) == 0
    assert s.read_from(1) == []
    assert s.verify(1) == (0, None)
    assert s.latest_chain_hash(1) is None
    tf = torn_files(disk.data_dir, 1)
    assert len(tf) == 1 and read_bytes(os.path.join(stream_dir(disk.data_dir, 1), tf[0])) == img[:30]
    assert s.append_batch(1, [b"again"]) == 1
    s.close()
    assert read_bytes(path) == codec.encode_record(0, None, b"again")


@pytest.mark.parametrize("call", ["verify", "read_from-0", "read_records-0"])
def test_wrong_index_entry_in_later_segment_is_rebuilt_not_corruption(disk, call):
    """SPEC §2: an index is never trusted beyond what the segment confirms. A CRC-valid
    index whose middle entry is one byte off describes intact data: the index is rebuilt and
    the call succeeds (no CorruptedRecordError for a cache defect)."""
    batches = [[b"a%d" % i for i in range(4)], [b"c%d" % i for i in range(4)], [b"d"]]
    model = codec.write_stream_dir(disk.data_dir, 1, batches, 200, with_index=True)
    assert model.segment_count == 3
    for n in (0, 1):
        pos = codec.record_positions(model.segment_images()[n])
        pos[2] += 1
        write_bytes(idx_path(disk.data_dir, 1, n), codec.encode_index(pos))
    s = disk.open(max_segment_size=200)
    if call == "verify":
        assert s.verify(1) == (model.next_offset, model.head)
    elif call == "read_from-0":
        assert s.read_from(1, 0) == model.payloads
    else:
        assert [r.payload for r in s.read_records(1, 0)] == model.payloads


# (the whole stale record is left out: whether it is a torn tail is the writer test's question)
@pytest.mark.parametrize("junk", [k for k in JUNK if k != "stale-record"])
def test_read_only_shows_intact_records_before_a_torn_tail(disk, junk):
    """SPEC §3: for damage the recovery rules treat as a torn tail, a read shows only the
    intact records before it; a reader never cuts or moves anything."""
    model = _write_stream(disk, 2, TORN_BATCHES, 1 << 20)
    path = seg_path(disk.data_dir, 2, 0)
    img = read_bytes(path)
    write_bytes(path, img + JUNK[junk])
    os.remove(path + ".idx")
    r = disk.open(read_only=True)
    assert r.read_from(2) == model.payloads
    assert r.next_offset(2) == model.next_offset
    assert r.read_from(2, model.next_offset - 1) == model.payloads[-1:]
    assert r.verify(2, expected_head=model.head) == (model.next_offset, model.head)
    r.close()
    assert read_bytes(path) == img + JUNK[junk]
    assert not torn_files(disk.data_dir, 2)


def test_reader_follows_writer_recovery_and_new_appends(disk):
    """A reader that saw a stream with a torn tail keeps working after a writer cuts the tail
    and appends new records in its place."""
    model = _write_stream(disk, 1, TORN_BATCHES, 1 << 20)
    path = seg_path(disk.data_dir, 1, 0)
    img = read_bytes(path)
    write_bytes(path, img + codec.encode_record(model.next_offset, model.head, b"X" * 200)[:100])
    r = disk.open(read_only=True)
    assert r.read_from(1) == model.payloads
    w = disk.open()
    assert w.append_batch(1, [b"new-1", b"new-2"]) == model.next_offset + 2
    assert len(torn_files(disk.data_dir, 1)) == 1
    expected = model.payloads + [b"new-1", b"new-2"]
    assert r.read_from(1) == expected
    assert r.next_offset(1) == len(expected)
    assert r.verify(1, expected_head=codec.head_hash(expected)) == (len(expected), codec.head_hash(expected))
