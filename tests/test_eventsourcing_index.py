"""kimberlite.eventsourcing's in-memory view and its index written behind: duplicate checks
and select_events agree with a plain model for any versions (irregular ones included),
before and after a reopen, on the slow path (keys looked up in the index file) and after
all keys are loaded; the index file never holds rows beyond its watermark."""

from __future__ import annotations

import os
import tempfile
import time
import uuid

import pytest

pytest.importorskip("eventsourcing", reason="pip install 'kimberlite-storage[eventsourcing]'")

from eventsourcing.persistence import IntegrityError, StoredEvent  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import kimberlite.eventsourcing as kes  # noqa: E402
from kimberlite.eventsourcing import KimberliteFactory  # noqa: E402

AGGS = [uuid.UUID(int=7), "text-id", str(uuid.UUID(int=9))]


def factory(path):
    return KimberliteFactory({"KIMBERLITE_PATH": str(path), "KIMBERLITE_FSYNC": "n"})


def ev(agg, version):
    return StoredEvent(originator_id=agg, originator_version=version, topic="t",
                       state=f"{agg}/{version}".encode())


def check_against_model(rec, model, queries):
    for agg in AGGS:
        assert [e.originator_version for e in rec.select_events(agg)] == sorted(model[agg])
        assert all(e.state == f"{agg}/{e.originator_version}".encode()
                   for e in rec.select_events(agg))
    for agg, gt, lte, desc, limit in queries:
        want = sorted((v for v in model[AGGS[agg]] if (gt is None or v > gt)
                       and (lte is None or v <= lte)), reverse=desc)
        if limit is not None:
            want = want[:limit]
        got = rec.select_events(AGGS[agg], gt=gt, lte=lte, desc=desc, limit=limit)
        assert [e.originator_version for e in got] == want


calls_strategy = st.lists(  # calls of (aggregate, version) pairs; clashes are expected
    st.lists(st.tuples(st.integers(0, 2), st.integers(-2, 25)), min_size=1, max_size=6),
    min_size=1, max_size=25)
queries_strategy = st.lists(
    st.tuples(st.integers(0, 2), st.none() | st.integers(-3, 26),
              st.none() | st.integers(-3, 26), st.booleans(), st.none() | st.integers(0, 5)),
    max_size=12)


@given(calls=calls_strategy, queries=queries_strategy, load_all=st.booleans())
def test_duplicates_and_selects_agree_with_a_model(calls, queries, load_all, monkeypatch):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data")
        model = {a: set() for a in AGGS}
        f = factory(path)
        rec = f.application_recorder()
        for call in calls:
            pairs = [(AGGS[a], v) for a, v in call]
            clash = len(set(pairs)) < len(pairs) or any(v in model[a] for a, v in pairs)
            if clash:
                with pytest.raises(IntegrityError):
                    rec.insert_events([ev(a, v) for a, v in pairs])
            else:
                rec.insert_events([ev(a, v) for a, v in pairs])
                for a, v in pairs:
                    model[a].add(v)
        check_against_model(rec, model, queries)
        f.close()
        # Reopened: nothing is in memory yet; keys are looked up in the index file one by
        # one, or all loaded at the first lookup.
        monkeypatch.setattr(kes, "_LOAD_ALL_MISSES", 0 if load_all else 10**9)
        f = factory(path)
        rec = f.application_recorder()
        assert not f.store.stream(f.stream_id).complete or not any(model.values())
        for a in AGGS:
            for v in model[a]:
                with pytest.raises(IntegrityError):
                    rec.insert_events([ev(a, v)])
        check_against_model(rec, model, queries)
        new = {a: max(model[a], default=0) + 1 for a in AGGS}
        rec.insert_events([ev(a, v) for a, v in new.items()])
        for a, v in new.items():
            model[a].add(v)
        check_against_model(rec, model, queries)
        f.close()


def test_reopened_store_loads_all_keys_after_enough_lookups(tmp_path, monkeypatch):
    monkeypatch.setattr(kes, "_LOAD_ALL_MISSES", 5)
    f = factory(tmp_path / "d")
    rec = f.application_recorder()
    old = [uuid.uuid4() for _ in range(20)]
    for a in old:
        rec.insert_events([ev(a, 1), ev(a, 2), ev(a, 4)])  # not contiguous: record read
    f.close()
    f = factory(tmp_path / "d")
    rec = f.application_recorder()
    state = f.store.stream(f.stream_id)
    for i in range(5):
        rec.insert_events([ev(uuid.uuid4(), 1)])
        assert not state.complete
    rec.insert_events([ev(uuid.uuid4(), 1)])  # the 6th unknown key: all keys loaded
    assert state.complete and len(state.keys) == 26
    for a in old:
        for v in (1, 2, 4):
            with pytest.raises(IntegrityError):
                rec.insert_events([ev(a, v)])
        rec.insert_events([ev(a, 3)])
        assert [e.originator_version for e in rec.select_events(a)] == [1, 2, 3, 4]
    f.close()


def test_entries_are_written_behind_with_their_watermark(tmp_path):
    # Read the index file while entries are written behind the inserts: every state of
    # the file covers exactly the records below its watermark.
    path = tmp_path / "d"
    f = factory(path)
    rec = f.application_recorder()
    name = os.path.join(path, "eventsourcing", "stream-1.idx")
    seen = set()
    total = 3 * kes._FLUSH_RECORDS
    for i in range(total):
        rec.insert_events([ev(uuid.uuid4(), 1), ev(uuid.uuid4(), 1)])
        if i % 250 == 0 or i == total - 1:
            with open(name, "rb") as fh:
                found = kes._parse_index(fh.read(), 1)
            assert found.damage is None
            entries = [e for run in found.runs for e in run.entries()]
            assert len(entries) == 2 * found.end and found.next_id == 2 * found.end + 1
            assert sorted({e[3] for e in entries}) == list(range(found.end))
            assert all(e[4] == 2 * e[3] + 1 for e in entries)  # the record's first id
            seen.add(found.end)
    assert len(seen) >= 3 and max(seen) >= 2 * kes._FLUSH_RECORDS  # written behind
    assert len(found.runs) >= 2
    f.close()


def test_an_index_write_failing_after_the_append_still_reports_success(tmp_path,
                                                                      monkeypatch, caplog):
    # The record is stored before the index is written: a failing index write must not
    # turn a stored call into an error; the index is rebuilt from the records instead.
    f = factory(tmp_path / "d")
    rec = f.application_recorder()
    a = uuid.uuid4()
    assert rec.insert_events([ev(a, 1)]) == [1]
    real = os.pwrite

    def failing(fd, data, offset):
        raise OSError(5, "disk I/O error (injected)")

    monkeypatch.setattr(os, "pwrite", failing)
    monkeypatch.setattr(kes, "_FLUSH_RECORDS", 1)
    f.store.streams[f.stream_id].flush_at = 0  # the next insert writes the index
    assert rec.insert_events([ev(a, 2)]) == [2]
    assert any("injected" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(os, "pwrite", real)
    assert [e.originator_version for e in rec.select_events(a)] == [1, 2]
    with pytest.raises(IntegrityError):
        rec.insert_events([ev(a, 2)])
    assert rec.insert_events([ev(a, 3)]) == [3]
    f.close()


def test_notifications_found_across_blocks_and_records_without_events(tmp_path,
                                                                     monkeypatch):
    # Each write its own block (no merging), records of tracking only in between, some
    # entries still unwritten: every start id finds its record, before and after a reopen.
    monkeypatch.setattr(kes, "_RUN_ROWS", 1)
    from eventsourcing.persistence import Tracking
    f = factory(tmp_path / "d")
    rec = f.process_recorder()
    expected = []
    for call in range(1, 33):
        if call % 4 == 0:
            rec.insert_tracking(Tracking("up", call))
        else:
            a = uuid.uuid4()
            events = [ev(a, v) for v in range(1, 1 + call % 3 + 1)]
            ids = rec.insert_events(events, tracking=Tracking("up", call))
            expected += [(i, e.originator_version) for i, e in zip(ids, events)]
        if call % 5 == 0:
            f.flush()
    st = f.store.streams[f.stream_id]
    assert len(st.runs) >= 5 and st.pend  # several blocks, and entries not yet written

    def check(rec):
        for start in range(0, len(expected) + 2):
            got = rec.select_notifications(start, 3, inclusive_of_start=False)
            assert [(n.id, n.originator_version) for n in got] == [
                x for x in expected if x[0] > start][:3]

    check(rec)
    f.close()
    f = factory(tmp_path / "d")
    check(f.process_recorder())
    assert f.process_recorder().max_tracking_id("up") == 32
    f.close()


def _forge_last_block(path, sid=1, **change):
    """Rewrite the last block of the index file of stream ``sid`` with ``change`` applied
    to its watermark, keys, columns or tracking ids, CRCs recomputed (a valid block)."""
    name = os.path.join(path, "eventsourcing", f"stream-{sid}.idx")
    with open(name, "rb") as fh:
        data = fh.read()
    found = kes._parse_index(data, sid)
    assert found.damage is None and found.runs
    run = found.runs[-1]
    fields = dict(start=run.start, end=run.end, first_id=run.first_id,
                  next_id=found.next_id, head=found.head, keys=run.keys,
                  cols=run.cols, tracking=found.tracking)
    fields.update(change)
    block = kes._encode_block(**fields)
    with open(name, "r+b") as fh:
        fh.truncate(run.pos)
        fh.seek(run.pos)
        fh.write(block)
    found = kes._parse_index(data[:run.pos] + block, sid)
    assert found.damage is None and len(found.runs) == len(kes._parse_index(data, sid).runs)
    return found


def test_a_forged_next_id_is_not_trusted(tmp_path, caplog):
    # A valid block (CRCs recomputed) whose next notification id is 2 although ids 1..5
    # are used: the next insert must not be handed id 2 again.
    f = factory(tmp_path / "d")
    rec = f.application_recorder()
    a = uuid.uuid4()
    assert rec.insert_events([ev(a, v) for v in range(1, 6)]) == [1, 2, 3, 4, 5]
    f.close()
    forged = _forge_last_block(tmp_path / "d", next_id=2)
    assert forged.runs[-1].first_id == 1 and forged.next_id == 2
    f = factory(tmp_path / "d")
    rec = f.application_recorder()
    assert rec.max_notification_id() == 5
    assert rec.insert_events([ev(uuid.uuid4(), 1)]) == [6]
    assert [n.id for n in rec.select_notifications(1, 10)] == [1, 2, 3, 4, 5, 6]
    assert any("next notification id 2" in r.getMessage() for r in caplog.records)
    f.close()


def test_a_forged_tracking_id_of_the_last_record_is_not_trusted(tmp_path, caplog):
    from eventsourcing.persistence import Tracking
    f = factory(tmp_path / "d")
    rec = f.process_recorder()
    rec.insert_events([ev(uuid.uuid4(), 1)], tracking=Tracking("up", 7))
    f.close()
    _forge_last_block(tmp_path / "d", tracking={"up": 3})
    f = factory(tmp_path / "d")
    assert f.process_recorder().max_tracking_id("up") == 7
    assert any("tracking id of 'up'" in r.getMessage() for r in caplog.records)
    f.close()


def test_forged_unsorted_record_ids_never_drop_notifications(tmp_path):
    # A valid block whose entries' record first ids (and offsets, kept consistent with
    # genuine records) are out of order: bisect may land on any entry at or before the
    # start id (never after: bisect_right's result is <= it for any list), and the record
    # read is checked to start at the entry's id, so every notification is still returned.
    f = factory(tmp_path / "d")
    rec = f.application_recorder()
    expected = []
    for v in range(1, 9):  # records 0..7, ids 1..8, one aggregate each
        a = uuid.uuid4()
        expected += list(zip(rec.insert_events([ev(a, 1)]), [a]))
    f.close()
    name = os.path.join(tmp_path / "d", "eventsourcing", "stream-1.idx")
    with open(name, "rb") as fh:
        run = kes._parse_index(fh.read(), 1).runs[-1]
    n = run.n
    assert n == 8 and list(run.ids) == list(range(1, 9))
    order = [4, 0, 7, 2, 6, 1, 5, 3]  # entries moved whole: each still names its record
    keys = b"".join(run.keys[i * 16:(i + 1) * 16] for i in order)
    cols = kes.array("q", [run.cols[j * n + i] for j in range(kes._NCOL) for i in order])
    _forge_last_block(tmp_path / "d", keys=keys, cols=cols)
    for start in range(0, 10):
        f = factory(tmp_path / "d")
        rec = f.application_recorder()
        got = rec.select_notifications(start, 20, inclusive_of_start=False)
        assert [(x.id, x.originator_id) for x in got] == [e for e in expected if e[0] > start]
        f.close()


def test_a_record_past_the_start_id_is_a_mismatch(tmp_path, monkeypatch, caplog):
    # The guard behind the bisect: had the index pointed at a record starting after the
    # start id (its own id consistent), the ids before it would be skipped; it rebuilds.
    f = factory(tmp_path / "d")
    rec = f.application_recorder()
    for _ in range(4):
        rec.insert_events([ev(uuid.uuid4(), 1)])
    st = f.store.stream(f.stream_id)
    real = kes._Store._record_for
    calls = []

    def later(self, state, nid):
        calls.append(nid)
        return (2, 3) if len(calls) == 1 else real(self, state, nid)

    monkeypatch.setattr(kes._Store, "_record_for", later)
    assert [x.id for x in rec.select_notifications(1, 10)] == [1, 2, 3, 4]
    assert len(calls) == 2 and st is not f.store.streams[f.stream_id]  # rebuilt
    assert any("for id 1" in r.getMessage() for r in caplog.records)
    f.close()
