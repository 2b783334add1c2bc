"""Damage that leaves nothing valid after it, and tampering, both stop the chain growing.

SPEC §3: reads that reach corruption raise CorruptedRecordError, and appends to that stream
raise too, so that the chain is never extended past damage. These cover the two edge cases
where that is easy to get wrong: damage with no readable record after it (the stream's
known length stops at the damage) and a broken chain link with valid CRCs (tampering).
"""
import pytest

import kimberlite as km
import kimberlite.testing as kt


def _sealed_first_segment(backend):
    """Stream 1: segment 0 sealed with offsets 0-2, then an empty active segment."""
    s = backend.open(max_segment_size=100)
    s.append_batch(1, [b"a" * 20, b"b" * 20, b"c" * 20])
    assert s.completed_segments(1) == [0]
    return s


def test_damaged_first_record_of_sealed_segment_is_not_an_empty_stream(backend):
    s = _sealed_first_segment(backend)
    kt.flip_bit(s, 1, 0)
    with pytest.raises(km.CorruptedRecordError) as info:
        s.read_from(1)
    assert info.value.stream_id == 1 and info.value.offset == 0
    with pytest.raises(km.CorruptedRecordError):
        s.read_records(1, 0, max_bytes=1)
    with pytest.raises(km.CorruptedRecordError):
        s.verify(1)
    with pytest.raises(km.CorruptedRecordError):
        s.append_batch(1, [b"more"])


def test_reads_stop_before_damage_that_ends_the_stream(backend):
    s = backend.open()
    s.append_batch(1, [b"x" * 10 for _ in range(5)])
    kt.flip_bit(s, 1, 2)  # followed by valid records: corruption, nothing cut
    assert s.read_from(1, 0, max_bytes=1) == [b"x" * 10]
    assert s.read_from(1, 0, max_bytes=11) == [b"x" * 10, b"x" * 10]
    for start in (0, 1, 2):
        with pytest.raises(km.CorruptedRecordError):
            s.read_from(1, start)


def test_append_refused_after_a_read_finds_a_broken_link(backend):
    s = backend.open()
    s.append_batch(1, [b"one", b"two", b"three"])
    kt.replace_payload(s, 1, 1, b"TWO")  # CRC recomputed: only the chain can tell
    before = s.next_offset(1)
    with pytest.raises(km.ChainVerificationError) as info:
        s.read_from(1)
    assert info.value.offset == 2
    with pytest.raises(km.ChainVerificationError):
        s.append_batch(1, [b"four"])
    assert s.next_offset(1) == before
    # other streams are unaffected
    assert s.append_batch(2, [b"fine"]) == 1
    assert s.verify(2)[0] == 1


def test_append_refused_after_verify_finds_a_broken_link(backend):
    s = backend.open()
    s.append_batch(1, [b"one", b"two", b"three"])
    kt.replace_payload(s, 1, 0, b"ONE")
    with pytest.raises(km.ChainVerificationError):
        s.verify(1)
    with pytest.raises(km.ChainVerificationError):
        s.append_batch(1, [b"four"])


def test_head_mismatch_alone_does_not_block_appends(backend):
    """A wrong trusted head is the caller's claim, not damage found in the stream."""
    s = backend.open()
    s.append_batch(1, [b"one"])
    with pytest.raises(km.ChainVerificationError):
        s.verify(1, expected_head=b"\x01" * 32)
    assert s.append_batch(1, [b"two"]) == 2


@pytest.mark.parametrize("records", [False, True])
def test_iteration_yields_the_intact_events_before_damage_then_raises(backend, records):
    s = backend.open()
    s.append_batch(1, [b"e%d" % i for i in range(10)])
    kt.flip_bit(s, 1, 6)
    got = []
    with pytest.raises(km.CorruptedRecordError) as info:
        for ev in s.iter_from(1, records=records):
            got.append(ev.payload if records else ev)
    assert got == [b"e%d" % i for i in range(6)]
    assert info.value.offset == 6


def test_iteration_stops_before_a_broken_link(backend):
    s = backend.open()
    s.append_batch(1, [b"e%d" % i for i in range(10)])
    kt.replace_payload(s, 1, 3, b"forged")  # record 4's link breaks
    got = []
    with pytest.raises(km.ChainVerificationError):
        for ev in s.iter_from(1, 1):
            got.append(ev)
    # record 3 itself passes its own checks; only its successor's link tells
    assert got == [b"e1", b"e2", b"forged"]


def test_cli_read_prints_the_intact_events_before_damage(tmp_path):
    import subprocess
    import sys
    d = tmp_path / "d"
    s = km.Storage(d)
    s.append_batch(1, [b"line%d" % i for i in range(5)])
    s.close()
    kt.flip_bit(str(d), 1, 3)
    p = subprocess.run([sys.executable, "-m", "kimberlite", "read", str(d), "1"],
                       capture_output=True)
    assert p.returncode == 1
    assert p.stdout == b"line0\nline1\nline2\n"
    assert b"offset 3" in p.stderr and b"Traceback" not in p.stderr
