"""Property tests (hypothesis): record round trips, single-bit flips always detected, and
Storage, MemoryStorage and the independent model agreeing on random operation sequences."""
import os
import shutil
import tempfile

import pytest
from hypothesis import given, settings, strategies as st

import kimberlite as km
from helpers import codec
from helpers import read_bytes, flip_bit, remove_indexes, stream_dir

# scaled from the loaded profile (tests/conftest.py): the file-level properties get more examples
MANY = settings.default.max_examples * 4

hashes = st.one_of(st.none(), st.binary(min_size=32, max_size=32))
payloads = st.binary(max_size=300)


# --- records and indexes ----------------------------------------------------------------------

@given(offset=st.integers(0, 2**63 - 1), prev=hashes, payload=payloads,
       trailing=st.binary(max_size=20))
def test_record_round_trip(offset, prev, payload, trailing):
    r = km.Record(offset, prev, payload)
    raw = r.to_bytes()
    assert raw == codec.encode_record(offset, prev, payload)
    assert len(raw) == km.RECORD_OVERHEAD + len(payload)
    back, used = km.Record.from_bytes(raw + trailing)
    assert used == len(raw)
    assert back == r and hash(back) == hash(r)
    # genesis is decided by the offset (docs/FORMAT.md §5): zeros and None are one value,
    # None at offset 0 and 32 zero bytes anywhere else
    if offset == 0:
        norm = None if prev in (None, codec.ZERO_HASH) else prev
    else:
        norm = codec.ZERO_HASH if prev is None else prev
    assert (back.offset, back.prev_hash, back.payload) == (offset, norm, payload)
    linked = None if offset == 0 else norm
    assert r.compute_hash() == km.chain_hash(linked, payload) == codec.chain_hash(linked, payload)


@given(offset=st.integers(0, 2**63 - 1), prev=hashes, payload=st.binary(max_size=64), data=st.data())
def test_record_any_bit_flip_is_rejected(offset, prev, payload, data):
    raw = bytearray(codec.encode_record(offset, prev, payload))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    try:
        r, used = km.Record.from_bytes(bytes(raw))
    except (km.CorruptedRecordError, km.UnexpectedEofError):
        return
    raise AssertionError(f"flipped record accepted: {r!r} ({used} bytes)")


@given(st.lists(st.integers(0, 2**64 - 1), max_size=50))
def test_offset_index_round_trip(positions):
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.idx")
        ix = km.OffsetIndex(positions)
        assert ix.positions == positions
        assert [ix.lookup(i) for i in range(len(positions) + 1)] == positions + [None]
        ix.save(p)
        assert read_bytes(p) == codec.encode_index(positions)
        assert km.OffsetIndex.load(p).positions == positions


@given(st.binary(max_size=2000))
def test_crc32_matches_zlib(data):
    assert km.crc32(data) == codec.crc32(data)


# --- single-bit flips are detected -----------------------------------------------------------

batches_st = st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=4), min_size=1, max_size=8)


def _prefix_or_raise(s, sid, payloads):
    try:
        got = s.read_from(sid, 0)
    except km.StorageError:
        return
    assert got == payloads[:len(got)], "read_from returned altered data"


@pytest.mark.slow
@settings(max_examples=MANY)
@given(batches=batches_st, max_seg=st.integers(60, 400), keep_index=st.booleans(), data=st.data())
def test_any_single_bit_flip_is_detected(batches, max_seg, keep_index, data):
    with tempfile.TemporaryDirectory() as root:
        d = os.path.join(root, "data")
        with km.Storage(d, max_segment_size=max_seg) as s:
            for b in batches:
                s.append_batch(3, b, fsync=False)
            s.append_batch(4, [b"bystander"], fsync=False)
            n, head = s.verify(3)
        payloads = [e for b in batches for e in b]
        assert n == len(payloads)
        if not keep_index:
            remove_indexes(d, 3)
        sd = stream_dir(d, 3)
        segs = sorted(f for f in os.listdir(sd) if f.endswith(".log") and os.path.getsize(os.path.join(sd, f)))
        seg = data.draw(st.sampled_from(segs))
        size = os.path.getsize(os.path.join(sd, seg))
        bit = data.draw(st.integers(0, size * 8 - 1))
        flip_bit(os.path.join(sd, seg), bit)
        copies = []
        for i in range(2):
            c = os.path.join(root, f"copy{i}")
            shutil.copytree(d, c)
            copies.append(c)
        # a reader never writes: check it first, on the damaged original
        with km.Storage(d, max_segment_size=max_seg, read_only=True) as r:
            _prefix_or_raise(r, 3, payloads)
            try:
                r.verify(3, expected_head=head)
            except km.StorageError:
                pass
            else:
                raise AssertionError(f"read-only verify missed flip of bit {bit} in {seg}")
            assert r.read_from(4) == [b"bystander"]
        # a fresh writer: verify with the trusted head detects the flip
        with km.Storage(copies[0], max_segment_size=max_seg) as w:
            try:
                w.verify(3, expected_head=head)
            except km.StorageError:
                pass
            else:
                raise AssertionError(f"verify missed flip of bit {bit} in {seg}")
            assert w.read_from(4) == [b"bystander"]
        # a fresh writer: a read never returns altered data
        with km.Storage(copies[1], max_segment_size=max_seg) as w:
            _prefix_or_raise(w, 3, payloads)
            _prefix_or_raise(w, 3, payloads)   # and again, after load-time recovery
            try:
                w.verify(3, expected_head=head)
            except km.StorageError:
                pass
            else:
                raise AssertionError(f"verify after read missed flip of bit {bit} in {seg}")


# --- Storage == MemoryStorage == model --------------------------------------------------------

SIDS = [0, 1, 2**64 - 1]
MAX_EVENT = 100
sid_st = st.sampled_from(SIDS)
event_st = st.one_of(st.binary(max_size=60), st.just(b""), st.binary(min_size=90, max_size=MAX_EVENT))

op_st = st.one_of(
    st.tuples(st.just("append"), sid_st, st.lists(event_st, max_size=6),
              st.sampled_from(["none", "none", "right", "wrong"]), st.booleans()),
    st.tuples(st.just("read"), sid_st, st.integers(0, 30), st.one_of(st.none(), st.integers(0, 400))),
    st.tuples(st.just("records"), sid_st, st.integers(0, 30), st.one_of(st.none(), st.integers(0, 400))),
    st.tuples(st.just("verify"), sid_st, st.booleans()),
    st.tuples(st.just("info"), sid_st),
    st.tuples(st.just("bad"), sid_st, st.sampled_from(["str", "int-in-list", "too-big", "neg-from"])),
)


def _run(s, op, model_for):
    kind, sid = op[0], op[1]
    try:
        if kind == "append":
            _, _, events, exp, fsync = op
            exp = exp if events else "none"   # which error wins for an empty batch is unpinned
            m = model_for(sid)
            expected = {"none": None, "right": m.next_offset, "wrong": m.next_offset + 1}[exp]
            return ("ok", s.append_batch(sid, list(events), expected_offset=expected, fsync=fsync))
        if kind == "read":
            return ("ok", s.read_from(sid, op[2], op[3]))
        if kind == "records":
            return ("ok", [(r.offset, r.prev_hash, r.payload) for r in s.read_records(sid, op[2], op[3])])
        if kind == "verify":
            head = model_for(sid).head if op[2] else None
            return ("ok", s.verify(sid, expected_head=head))
        if kind == "info":
            return ("ok", (s.next_offset(sid), s.latest_chain_hash(sid), s.segment_count(sid),
                           s.completed_segments(sid), s.streams()))
        if kind == "bad":
            what = op[2]
            if what == "str":
                s.append_batch(sid, [b"ok", "str"])
            elif what == "int-in-list":
                s.append_batch(sid, [b"ok", 5])
            elif what == "too-big":
                s.append_batch(sid, [b"ok", b"x" * (MAX_EVENT + 1)])
            else:
                s.read_from(sid, -1)
            return ("ok", None)
    except Exception as e:  # noqa: BLE001 - the exception type is the observable result
        return ("err", type(e))
    raise AssertionError(op)


def _model_result(models, op):
    kind, sid = op[0], op[1]
    m = models.setdefault(sid, codec.StreamModel(models["max_seg"]))
    if kind == "append":
        _, _, events, exp, _ = op
        exp = exp if events else "none"
        if not events:
            return ("err", ValueError)
        if exp == "wrong":
            return ("err", km.OffsetMismatchError)
        return ("ok", m.append_batch(events))
    if kind == "read":
        return ("ok", m.read(op[2], op[3]))
    if kind == "records":
        got = m.read(op[2], op[3])
        return ("ok", [(i, m.hashes[i - 1] if i else None, p) for i, p in enumerate(got, op[2])])
    if kind == "verify":
        return ("ok", (m.next_offset, m.head))
    if kind == "info":
        streams = sorted(k for k, v in models.items() if k != "max_seg" and v.next_offset)
        return ("ok", (m.next_offset, m.head, m.segment_count, m.completed_segments, streams))
    if kind == "bad":
        return ("err", {"str": TypeError, "int-in-list": TypeError, "too-big": ValueError,
                        "neg-from": ValueError}[op[2]])
    raise AssertionError(op)


@settings(max_examples=MANY)
@given(max_seg=st.integers(1, 300), ops=st.lists(op_st, min_size=1, max_size=30))
def test_disk_memory_and_model_agree(max_seg, ops):
    models = {"max_seg": max_seg}

    def model_for(sid):
        return models.setdefault(sid, codec.StreamModel(max_seg))

    with tempfile.TemporaryDirectory() as root:
        d = os.path.join(root, "data")
        with km.Storage(d, max_segment_size=max_seg, max_event_size=MAX_EVENT) as disk, \
                km.MemoryStorage(max_segment_size=max_seg, max_event_size=MAX_EVENT) as mem:
            for op in ops:
                r_disk = _run(disk, op, model_for)
                r_mem = _run(mem, op, model_for)
                r_model = _model_result(models, op)
                assert r_disk == r_mem, (op, r_disk, r_mem)
                assert r_disk == r_model, (op, r_disk, r_model)
        # the files are exactly what the model writes, and a reopened Storage sees the same
        with km.Storage(d, max_segment_size=max_seg, max_event_size=MAX_EVENT) as again:
            for sid in SIDS:
                m = model_for(sid)
                if not m.next_offset:
                    assert not os.path.exists(stream_dir(d, sid))
                    continue
                images, _ = codec.read_stream_dir(stream_dir(d, sid))
                expected = m.segment_images()
                if len(images) == len(expected) - 1 and expected[-1] == b"":
                    expected = expected[:-1]
                assert images == expected
                assert again.read_from(sid) == m.payloads
                assert again.verify(sid) == (m.next_offset, m.head)
                assert again.segment_count(sid) == m.segment_count
                assert again.completed_segments(sid) == m.completed_segments


# --- any index content, even with a valid CRC, never changes what reads return ---------------

def _mutate_positions(draw, pos, size):
    # "shift" of an inner entry passes every cheap check (CRC, order, first and last entry)
    kind = draw(st.sampled_from(["shift"] * 5 + ["drop", "dup", "random", "truncate", "extend", "zero"]))
    pos = list(pos)
    if kind == "shift" and pos:
        i = draw(st.integers(1, len(pos) - 2) if len(pos) >= 3 else st.integers(0, len(pos) - 1))
        pos[i] += draw(st.sampled_from([-49, -48, -1, 1, 2, 48, 49]))
        pos[i] = max(0, pos[i])
    elif kind == "drop" and pos:
        del pos[draw(st.integers(0, len(pos) - 1))]
    elif kind == "dup" and pos:
        i = draw(st.integers(0, len(pos) - 1))
        pos.insert(i, pos[i])
    elif kind == "random":
        pos = draw(st.lists(st.integers(0, size + 100), max_size=8))
    elif kind == "truncate":
        pos = pos[:draw(st.integers(0, len(pos)))]
    elif kind == "extend":
        pos = pos + [size + draw(st.integers(0, 100))]
    elif kind == "zero":
        pos = [0] * len(pos)
    return pos


@settings(max_examples=MANY)
@given(batches=batches_st, max_seg=st.integers(60, 300), data=st.data())
def test_index_contents_never_change_results(batches, max_seg, data):
    """SPEC §2: an index is a cache, never trusted beyond what the segment confirms."""
    with tempfile.TemporaryDirectory() as root:
        d = os.path.join(root, "data")
        model = codec.write_stream_dir(d, 1, batches, max_seg, with_index=True)
        images = model.segment_images()
        for n, img in enumerate(images):
            if img and data.draw(st.booleans()):
                pos = _mutate_positions(data.draw, codec.record_positions(img), len(img))
                with open(os.path.join(stream_dir(d, 1), codec.segment_name(n) + ".idx"), "wb") as f:
                    f.write(codec.encode_index(pos))
        before = {n: read_bytes(os.path.join(stream_dir(d, 1), n))
                  for n in os.listdir(stream_dir(d, 1)) if n.endswith(".log")}
        with km.Storage(d, max_segment_size=max_seg) as s:
            first = data.draw(st.sampled_from(["verify", "read0", "readmid", "append"]))
            if first == "readmid":
                f = data.draw(st.integers(0, model.next_offset))
                assert s.read_from(1, f) == model.payloads[f:]
            elif first == "append":
                assert s.append_batch(1, [b"new"]) == model.next_offset + 1
                model.append_batch([b"new"])
            assert s.verify(1) == (model.next_offset, model.head)
            assert s.read_from(1, 0) == model.payloads
            for f in range(model.next_offset + 1):
                assert s.read_from(1, f, max_bytes=1) == model.read(f, 1)
            assert s.segment_count(1) == model.segment_count
        if first != "append":
            after = {n: read_bytes(os.path.join(stream_dir(d, 1), n))
                     for n in os.listdir(stream_dir(d, 1)) if n.endswith(".log")}
            assert after == before
