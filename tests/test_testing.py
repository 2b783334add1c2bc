"""kimberlite.testing: each kind of damage, on both backends, is noticed the same way."""
import os

import pytest

import kimberlite as km
import kimberlite.testing as kt

EVENTS = [f"event {i:02d}".encode() + b"." * 40 for i in range(9)]  # records of 96 bytes
SEG = 500  # max_segment_size: two batches of three events fill a segment


def _fill(backend, batches=3):
    """Stream 1 with `batches` batches of 3 events; returns (storage, trusted head)."""
    s = backend.open(max_segment_size=SEG)
    for b in range(batches):
        s.append_batch(1, EVENTS[3 * b:3 * b + 3])
    return s, s.latest_chain_hash(1)


def _outcome(s, head):
    """What an application sees: next offset, read, verify with the head, append."""
    out = {"next": s.next_offset(1)}
    for name, call in [("read", lambda: len(s.read_from(1))),
                       ("verify", lambda: s.verify(1, expected_head=head)[0]),
                       ("append", lambda: s.append_batch(1, [b"after"]))]:
        try:
            out[name] = call()
        except km.StorageError as e:
            out[name] = type(e).__name__
    return out


OUTCOMES = {}


@pytest.mark.parametrize("case, expected", [
    # bit rot followed by valid records: the CRC catches it everywhere
    ("flip_middle", {"next": 9, "read": "CorruptedRecordError",
                     "verify": "CorruptedRecordError", "append": "CorruptedRecordError"}),
    # bit rot in a sealed segment's last record
    ("flip_sealed", {"next": 9, "read": "CorruptedRecordError",
                     "verify": "CorruptedRecordError", "append": "CorruptedRecordError"}),
    # the active segment's last record: indistinguishable from a torn write (quarantined);
    # only the trusted head tells
    ("flip_last", {"next": 8, "read": 8, "verify": "ChainVerificationError", "append": 9}),
    # tampering: CRC recomputed, the next record's link breaks; once a read has seen the
    # break, appends refuse to extend a chain that no longer verifies
    ("replace_middle", {"next": 9, "read": "ChainVerificationError",
                        "verify": "ChainVerificationError", "append": "ChainVerificationError"}),
    ("replace_longer", {"next": 9, "read": "ChainVerificationError",
                        "verify": "ChainVerificationError", "append": "ChainVerificationError"}),
    # tampering with the last record: only the trusted head tells
    ("replace_last", {"next": 9, "read": 9, "verify": "ChainVerificationError", "append": 10}),
    # a torn write: the last record cut short, quarantined, one record fewer
    ("tear", {"next": 8, "read": 8, "verify": "ChainVerificationError", "append": 9}),
])
def test_damage_is_noticed(backend, case, expected):
    s, head = _fill(backend)  # segment 0 (sealed): offsets 0-5; segment 1 (active): 6-8
    assert s.segment_count(1) == 2 and s.completed_segments(1) == [0]
    if case == "flip_middle":
        kt.flip_bit(s, 1, 2)
    elif case == "flip_sealed":
        kt.flip_bit(s, 1, 5, byte=60, bit=7)
    elif case == "flip_last":
        kt.flip_bit(s, 1, -1)
    elif case == "replace_middle":
        kt.replace_payload(s, 1, 4, b"event 04" + b"!" * 40)
    elif case == "replace_longer":
        kt.replace_payload(s, 1, 2, b"a much longer payload than before" * 3)
    elif case == "replace_last":
        kt.replace_payload(s, 1, 8, b"tampered")
    elif case == "tear":
        kt.tear_tail(s, 1)
    got = _outcome(s, head)
    assert got == expected
    OUTCOMES.setdefault(case, {})[backend.kind] = got


def test_both_backends_agree():
    """Run after test_damage_is_noticed: memory and disk gave identical outcomes."""
    for case, by_kind in OUTCOMES.items():
        if len(by_kind) == 2:
            assert by_kind["disk"] == by_kind["memory"], case


def test_replace_payload_is_only_seen_by_the_chain(backend):
    s, head = _fill(backend, 1)
    kt.replace_payload(s, 1, 0, b"forged")
    # The forged record passes its own checks...
    assert s.read_from(1, 0, max_bytes=1) == [b"forged"]
    # ... but not the link of the next one.
    with pytest.raises(km.ChainVerificationError) as e:
        s.verify(1)
    assert e.value.offset == 1


def test_tear_tail_when_the_active_segment_is_empty(backend):
    s = backend.open(max_segment_size=150)
    s.append_batch(1, EVENTS[:3])  # 3 * 96 bytes >= 150: rotated, segment 1 empty
    assert s.segment_count(1) == 2
    head = s.latest_chain_hash(1)
    kt.tear_tail(s, 1)
    # The torn record was never acknowledged: nothing stored is lost.
    assert s.next_offset(1) == 3
    assert s.verify(1, expected_head=head) == (3, head)
    assert s.append_batch(1, [b"next"]) == 4
    if backend.is_disk:
        assert os.path.exists(os.path.join(s.path, "1", "segment_000001.log.torn-1"))


def test_tear_tail_nbytes(backend):
    s, head = _fill(backend)
    kt.tear_tail(s, 1, nbytes=1)
    assert s.next_offset(1) == 8
    with pytest.raises(ValueError, match="nbytes"):
        kt.tear_tail(s, 1, nbytes=10**6)
    with pytest.raises(TypeError):
        kt.tear_tail(s, 1, nbytes="1")


def test_damage_a_directory_then_reopen(tmp_path):
    data = tmp_path / "data"
    with km.Storage(data, max_segment_size=SEG) as s:
        for b in range(3):
            s.append_batch(1, EVENTS[3 * b:3 * b + 3])
        head = s.latest_chain_hash(1)
    kt.replace_payload(data, 1, 0, b"forged")
    kt.flip_bit(str(data), 1, 6)
    with km.Storage(data, read_only=True) as r:
        with pytest.raises(km.ChainVerificationError):
            r.read_from(1, 0, max_bytes=100)
        with pytest.raises(km.StorageError):
            r.verify(1, expected_head=head)


def test_argument_errors(backend, tmp_path):
    s, _ = _fill(backend, 1)
    with pytest.raises(ValueError, match="no record at offset 7"):
        kt.flip_bit(s, 1, 7)
    with pytest.raises(ValueError, match="no record"):
        kt.flip_bit(s, 2, 0)
    with pytest.raises(ValueError, match="bit"):
        kt.flip_bit(s, 1, 0, bit=8)
    with pytest.raises(ValueError, match="byte"):
        kt.flip_bit(s, 1, 0, byte=10**6)
    with pytest.raises(ValueError, match="no records"):
        kt.tear_tail(s, 3)
    with pytest.raises(TypeError):
        kt.replace_payload(s, 1, 0, "text")
    with pytest.raises(TypeError):
        kt.flip_bit(s, "1", 0)
    with pytest.raises(ValueError):
        kt.flip_bit(s, -1, 0)
    with pytest.raises(TypeError):
        kt.flip_bit(42, 1, 0)
    if backend.is_disk:
        with km.Storage(s.path, read_only=True) as r:
            with pytest.raises(ValueError, match="read-only"):
                kt.flip_bit(r, 1, 0)
    s.close()
    with pytest.raises(ValueError, match="closed"):
        kt.flip_bit(s, 1, 0)


def test_private_hooks(backend):
    s, _ = _fill(backend, 1)
    data = s._segment_bytes(1, 0)
    assert len(data) == 3 * 96 and data[44:52] == b"event 00"
    with pytest.raises(km.StorageError):
        s._segment_bytes(1, 5)
    with pytest.raises(km.StorageError):
        s._replace_segment_bytes(1, 5, b"")
    with pytest.raises(ValueError):
        s._segment_bytes(1, -1)
    s._replace_segment_bytes(1, 0, data[:96])  # two whole records dropped: not a torn tail
    assert s.next_offset(1) == 1
    assert s._segment_bytes(1, 0) == data[:96]
