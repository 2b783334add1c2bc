"""The C half of kimberlite.eventsourcing's insert path (csrc/py_es.c): the encoder and the
index columns give exactly what the Python reference gives (hypothesis), the usual insert
made in C leaves the same records, index and answers as the pure-Python path for any
sequence of calls (hypothesis), declines what it does not handle, and fails cleanly: bad
arguments, duplicates in the store or inside a batch, a failing append (fault hooks), a
closed storage, an exception raised while reading an event."""

from __future__ import annotations

import ast
import errno
import os
import struct
import tempfile
import threading
import uuid
from array import array

import pytest

pytest.importorskip("eventsourcing", reason="pip install 'kimberlite-storage[eventsourcing]'")

from eventsourcing.persistence import (  # noqa: E402
    DataError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
    Tracking,
)
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import kimberlite  # noqa: E402
import kimberlite.eventsourcing as kes  # noqa: E402
from kimberlite import _core  # noqa: E402
from kimberlite.eventsourcing import KimberliteFactory  # noqa: E402


def factory(path, **env):
    return KimberliteFactory({"KIMBERLITE_PATH": str(path), "KIMBERLITE_FSYNC": "n", **env})


def ev(agg, version, topic="t", state=None):
    return StoredEvent(originator_id=agg, originator_version=version, topic=topic,
                       state=state if state is not None else f"{agg}/{version}".encode())


def pure_python(rec):
    """Make `rec` (and its store) take the pure-Python path for every insert."""
    store = rec._store
    store._insert = lambda sid, events: None
    rec._insert = store._insert
    rec.__dict__.pop("insert_events", None)  # the class's method again
    return rec


def counting(rec):
    """Count the calls the C half made (ids returned) vs. declined (None)."""
    made = {"c": 0, "declined": 0}
    real = rec._store.writer.insert

    def insert(sid, events):
        out = real(sid, events)
        made["c" if out is not None else "declined"] += 1
        return out
    rec._store._insert = insert
    rec._insert = insert
    rec.__dict__.pop("insert_events", None)
    return made


# ---- the encoder ---------------------------------------------------------------------------

ids = st.uuids() | st.text(max_size=40)
events_strategy = st.lists(
    st.builds(StoredEvent, originator_id=ids,
              originator_version=st.integers(-2**63, 2**63 - 1),
              topic=st.text(max_size=30), state=st.binary(max_size=60)),
    max_size=8)
tracking_strategy = st.none() | st.builds(
    Tracking, application_name=st.text(max_size=20),
    notification_id=st.integers(-2**63, 2**63 - 1))


@given(first=st.integers(0, 2**64 - 1), events=events_strategy, tracking=tracking_strategy,
       as_tuple=st.booleans())
def test_c_encoder_gives_the_reference_bytes(first, events, tracking, as_tuple):
    batch = tuple(events) if as_tuple else events
    ref = kes._encode(first, batch, tracking)[0]
    got = kes._codec.encode(first, batch, tracking)
    assert got == ref
    assert kes.encode_record(first, batch, tracking) == ref
    assert kes.decode_record(got)[0] == first


class MyUUID(uuid.UUID):
    pass


class MyStr(str):
    pass


@pytest.mark.parametrize("event, ok", [
    (StoredEvent(MyUUID(int=5), 1, "t", b"s"), True),          # a UUID subclass
    (StoredEvent(MyStr("agg"), 1, "t", b"s"), True),           # a str subclass
    (StoredEvent("agg", 1, MyStr("t"), b"s"), True),           # a str subclass topic
    (StoredEvent("agg", 1, "t", bytearray(b"s")), True),       # a bytes-like state
    (StoredEvent("agg", 1, "t", memoryview(b"st")), True),
    (StoredEvent("agg", 2**63, "t", b"s"), False),             # outside int64
    (StoredEvent("agg", -2**63 - 1, "t", b"s"), False),
    (StoredEvent("agg", 1.0, "t", b"s"), False),               # not an int
    (StoredEvent(12345, 1, "t", b"s"), False),                 # neither UUID nor str
    (StoredEvent("agg", 1, "\udc80", b"s"), False),            # not encodable as UTF-8
    (StoredEvent("\ud800", 1, "t", b"s"), False),
    (StoredEvent("agg", 1, b"t", b"s"), False),                # topic not a str
    ("not an event", False),
])
def test_c_encoder_declines_what_is_not_plain(event, ok):
    # The C half says None; encode_record then gives the reference's bytes or DataError.
    batch = [event]
    assert kes._codec.encode(1, batch, None) is None
    if ok:
        assert kes.encode_record(1, batch) == kes._encode(1, batch, None)[0]
    else:
        with pytest.raises(DataError):
            kes.encode_record(1, batch)


def test_c_encoder_takes_a_bool_version_as_the_reference_does():
    batch = [StoredEvent("agg", True, "t", b"s")]
    assert kes._codec.encode(1, batch, None) == kes._encode(1, batch, None)[0]


def test_c_encoder_declines_other_containers_and_bad_headers():
    e = [ev(uuid.UUID(int=1), 1)]
    ref = kes._encode(1, e, None)[0]
    for batch in (iter(e), (x for x in e), _Seq(e)):  # not a list or tuple: the reference
        assert kes._codec.encode(1, batch, None) is None
    assert kes.encode_record(1, _Seq(e)) == ref
    for first in (-1, 2**64, 1.5, "1"):  # the header's u64
        assert kes._codec.encode(first, e, None) is None
        with pytest.raises(DataError):
            kes.encode_record(first, e)
    for tracking in (Tracking("up", 2**63), Tracking(7, 1), Tracking("\udc80", 1), "x"):
        assert kes._codec.encode(1, e, tracking) is None
        with pytest.raises(DataError):
            kes.encode_record(1, e, tracking)
    with pytest.raises(TypeError):
        kes._codec.encode(1)
    with pytest.raises(TypeError):
        kes._codec.encode(1, e, None, None)


class _Seq:
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return iter(self.items)


class Exploding:
    """An event whose attribute raises a non-Exception (e.g. a KeyboardInterrupt)."""
    originator_id = uuid.UUID(int=3)
    originator_version = 1
    state = b"s"

    @property
    def topic(self):
        raise KeyboardInterrupt("from an attribute")


def test_c_encoder_lets_non_exceptions_through():
    with pytest.raises(KeyboardInterrupt):
        kes._codec.encode(1, [Exploding()], None)


# ---- the index columns ---------------------------------------------------------------------

entries = st.lists(st.tuples(st.binary(min_size=16, max_size=16),
                             *[st.integers(-2**63, 2**63 - 1)] * 6), max_size=40)


@given(entries=entries)
def test_c_columns_give_the_reference_block(entries):
    flat = [x for e in entries for x in e]
    keys, cols = kes._columns(flat)
    ref_keys, ref_cols = kes._columns_py(flat)
    assert keys == ref_keys and cols == ref_cols
    assert isinstance(cols, array) and cols.typecode == "q"


@pytest.mark.parametrize("flat, exc, match", [
    ((b"k" * 16, 1, 2, 3, 4, 5, 6), TypeError, "must be a list"),
    ([b"k" * 16, 1, 2], ValueError, "not a multiple of 7"),
    ([b"k" * 15, 1, 2, 3, 4, 5, 6], ValueError, "entry 0: the key must be 16 bytes"),
    (["k" * 16, 1, 2, 3, 4, 5, 6], ValueError, "entry 0: the key must be 16 bytes"),
    ([b"k" * 16, 1, 2, 3, 4, 5, 6, b"j" * 16, 1, 2, 3.0, 4, 5, 6], TypeError,
     "entry 1: value 3 is not an int"),
    ([b"k" * 16, 1, 2, 3, 4, 5, 2**63], OverflowError, None),
])
def test_c_columns_reject_malformed_entries(flat, exc, match):
    with pytest.raises(exc, match=match):
        kes._codec.columns(flat)


# ---- the C types' arguments ----------------------------------------------------------------


def test_writer_and_insert_arguments(tmp_path):
    s = kimberlite.MemoryStorage()
    lock = threading.RLock()
    ok = dict(storage=s, lock=lock, fast={}, listeners={}, fsync=False,
              written_behind=print, notify=print)
    _core._EsWriter(uuid.UUID, **ok)
    with pytest.raises(TypeError, match="uuid_type must be a class"):
        _core._EsWriter(uuid.UUID(int=1))
    with pytest.raises(TypeError, match="storage must be a kimberlite Storage"):
        _core._EsWriter(uuid.UUID, **{**ok, "storage": "nope"})
    for missing in ("lock", "fast", "listeners", "written_behind", "notify"):
        with pytest.raises(TypeError, match="with a storage, lock"):
            _core._EsWriter(uuid.UUID, **{**ok, missing: None})
    with pytest.raises(TypeError, match="with a storage, lock"):
        _core._EsWriter(uuid.UUID, **{**ok, "fast": []})
    with pytest.raises(AttributeError):  # a lock without acquire()
        _core._EsWriter(uuid.UUID, **{**ok, "lock": object()})
    encoder = _core._EsWriter(uuid.UUID)
    with pytest.raises(ValueError, match="no storage"):
        encoder.insert(1, [ev(uuid.UUID(int=1), 1)])
    w = _core._EsWriter(uuid.UUID, **ok)
    with pytest.raises(TypeError, match="takes 2 arguments"):
        w.insert(1)
    assert w.insert(1, [ev(uuid.UUID(int=1), 1)]) is None  # no stream in `fast`
    w2 = _core._EsWriter(uuid.UUID, **{**ok, "fast": {1: "not a stream"}})
    with pytest.raises(TypeError, match="_EsStream"):
        w2.insert(1, [ev(uuid.UUID(int=1), 1)])
    assert s.next_offset(1) == 0
    assert not lock._is_owned()  # released after every outcome
    with pytest.raises(TypeError, match="writer must be an _EsWriter"):
        _core._EsInsert("w", 1, print, print, True)
    with pytest.raises(ValueError):
        _core._EsInsert(w, -1, print, print, True)
    with pytest.raises(TypeError, match="callable"):
        _core._EsInsert(w, 1, None, print, True)
    with pytest.raises(TypeError, match="callable"):
        _core._EsInsert(w, 1, print, "x", True)
    s.close()


def test_stream_state_fields():
    stt = _core._EsStream()
    assert stt.keys == {} and stt.pend == [] and stt.next_id == 0 and stt.complete is False
    stt.next_id = 5
    stt.complete = True
    assert (stt.next_id, stt.complete) == (5, True)
    with pytest.raises(TypeError):
        stt.next_id = "5"
    with pytest.raises(TypeError):
        stt.complete = 1
    with pytest.raises(OverflowError):
        stt.indexed = 2**63


# ---- the usual insert in C -----------------------------------------------------------------


def test_usual_calls_are_made_in_c_and_others_declined(tmp_path):
    f = factory(tmp_path / "d")
    rec = f.application_recorder()
    made = counting(rec)
    a = uuid.uuid4()
    assert rec.insert_events([ev(a, 1), ev(a, 2)]) == [1, 2]    # (loads the stream: Python)
    assert rec.insert_events([ev(a, 3)]) == [3]                  # C
    assert rec.insert_events([ev(uuid.uuid4(), 1)]) == [4]       # C: a new key, complete
    assert made == {"c": 2, "declined": 1}
    assert rec.insert_events([ev("text", 1)]) == [5]             # str id: declined
    assert rec.insert_events([ev(a, 5)]) == [6]                  # a gap: declined
    assert rec.insert_events([ev(a, 6), ev(uuid.uuid4(), 1)]) == [7, 8]  # two aggregates
    assert made == {"c": 2, "declined": 4}
    for bad in ([ev(a, 6)], [ev(a, 1)], [ev(a, 7), ev(a, 7)], [ev(a, 7), ev(a, 6)]):
        with pytest.raises(IntegrityError):                      # declined, then refused
            rec.insert_events(bad)
    assert made == {"c": 2, "declined": 8}
    assert rec.max_notification_id() == 8
    assert [e.originator_version for e in rec.select_events(a)] == [1, 2, 3, 5, 6]
    f.close()


@pytest.mark.parametrize("kind", ["aggregate", "application", "process"])
def test_recorders_insert_events_through_c(tmp_path, kind):
    f = factory(tmp_path / "d")
    rec = getattr(f, f"{kind}_recorder")()
    assert isinstance(rec.__dict__["insert_events"], _core._EsInsert)
    a = uuid.uuid4()
    out = [rec.insert_events([ev(a, v)]) for v in (1, 2, 3)]
    assert out == ([None] * 3 if kind == "aggregate" else [[1], [2], [3]])
    if kind == "process":  # keywords go to the method
        assert rec.insert_events([ev(a, 4)], tracking=Tracking("up", 9)) == [4]
        assert rec.max_tracking_id("up") == 9
        assert rec.insert_events([ev(a, 5)], tracking=None) == [5]
    with pytest.raises(IntegrityError):
        rec.insert_events([ev(a, 2)])
    assert [e.originator_version for e in rec.select_events(a)][:3] == [1, 2, 3]
    f.close()


def test_a_subclass_with_its_own_insert_events_keeps_it(tmp_path):
    seen = []

    class Mine(kes.KimberliteApplicationRecorder):
        def insert_events(self, stored_events, **kwargs):
            seen.append(len(stored_events))
            return super().insert_events(stored_events, **kwargs)
    f = factory(tmp_path / "d")
    rec = Mine(f.store, 1)
    assert "insert_events" not in rec.__dict__
    assert rec.insert_events([ev(uuid.uuid4(), 1)]) == [1]
    assert seen == [1]
    f.close()


@pytest.mark.parametrize("where", ["disk", "memory"])
def test_a_failing_append_in_c_writes_nothing(tmp_path, where):
    f = factory(tmp_path / "d" if where == "disk" else ":memory:")
    rec = f.application_recorder()
    made = counting(rec)
    a = uuid.uuid4()
    assert rec.insert_events([ev(a, 1)]) == [1]
    assert rec.insert_events([ev(a, 2)]) == [2]
    assert made["c"] == 1
    if where == "memory":
        with pytest.raises(ValueError):  # MemoryStorage has no fault plan
            rec.storage._set_fault("write", 1)
        rec.storage.close()  # the engine's ValueError for a closed storage
        with pytest.raises(ProgrammingError) as ei:
            rec.insert_events([ev(a, 3)])
        assert "closed" in str(ei.value) and str(ei.value) == str(ei.value.__cause__)
        assert isinstance(ei.value.__cause__, ValueError)
        return
    st_before = f.store.streams[1]
    state = (st_before.next_id, st_before.indexed, dict(st_before.keys), list(st_before.pend))
    rec.storage._set_fault("write", 1, errno=errno.EIO, persistent=True)
    for _ in range(2):
        with pytest.raises(OperationalError) as ei:
            rec.insert_events([ev(a, 3)])
        assert isinstance(ei.value.__cause__, kimberlite.StorageIOError)
        assert str(ei.value) == str(ei.value.__cause__)
    assert made["c"] == 1  # (the failures were raised by the C half)
    assert (st_before.next_id, st_before.indexed, dict(st_before.keys),
            list(st_before.pend)) == state
    assert not f.store.lock._is_owned()
    rec.storage._set_fault("", 0)
    assert rec.storage.next_offset(1) == 2
    assert rec.insert_events([ev(a, 3)]) == [3]  # the same call again: the next ids
    assert made["c"] == 2
    f.close()
    f = factory(tmp_path / "d")
    rec = f.application_recorder()
    assert [e.originator_version for e in rec.select_events(a)] == [1, 2, 3]
    assert [n.id for n in rec.select_notifications(1, 10)] == [1, 2, 3]
    f.close()


def test_an_oversized_record_in_c_is_a_data_error(tmp_path):
    f = factory(tmp_path / "d", KIMBERLITE_MAX_EVENT_SIZE="200")
    rec = f.application_recorder()
    a = uuid.uuid4()
    assert rec.insert_events([ev(a, 1)]) == [1]
    with pytest.raises(DataError) as ei:
        rec.insert_events([ev(a, 2, state=b"z" * 300)])
    assert isinstance(ei.value.__cause__, ValueError)
    assert rec.insert_events([ev(a, 2)]) == [2]
    f.close()


def test_an_exception_while_reading_an_event_releases_the_lock(tmp_path):
    f = factory(tmp_path / "d")
    rec = f.application_recorder()
    assert rec.insert_events([ev(uuid.uuid4(), 1)]) == [1]
    with pytest.raises(KeyboardInterrupt):
        rec.insert_events([Exploding()])
    assert not f.store.lock._is_owned()
    assert rec.insert_events([ev(uuid.uuid4(), 1)]) == [2]
    f.close()


def test_index_written_behind_and_subscribers_woken_by_c(tmp_path, monkeypatch):
    monkeypatch.setattr(kes, "_FLUSH_RECORDS", 50)
    monkeypatch.setattr(kes, "_CLOCK_RECORDS", 8)
    f = factory(tmp_path / "d")
    rec = f.application_recorder()
    made = counting(rec)
    rec.insert_events([ev(uuid.uuid4(), 1)])
    woken = threading.Event()
    f.store.listen(woken, 1)
    for _ in range(120):
        rec.insert_events([ev(uuid.uuid4(), 1)])
    assert made["c"] == 120 and woken.is_set()
    st_ = f.store.streams[1]
    assert st_.flushed >= 100 and len(st_.pend) == 7 * (st_.indexed - st_.flushed)
    size = os.path.getsize(tmp_path / "d" / "eventsourcing" / "stream-1.idx")
    assert size > 100 * 64  # the blocks of >= 100 records are in the file before close
    f.close()


def test_threads_inserting_through_c_get_gapless_ids(tmp_path):
    f = factory(tmp_path / "d")
    rec = f.application_recorder()
    rec.insert_events([ev(uuid.uuid4(), 1)])
    got, errors = [], []

    def work():
        try:
            for _ in range(200):
                got.extend(rec.insert_events([ev(uuid.uuid4(), 1), ev(uuid.uuid4(), 1)][:1]))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(got) == list(range(2, 802))
    f.close()


# ---- the C path against the pure-Python path ------------------------------------------------

AGGS = [uuid.UUID(int=7), uuid.UUID(int=8), "text-id"]
calls_strategy = st.lists(  # calls of one or more aggregates; many are the usual call
    st.one_of(
        st.tuples(st.integers(0, 1), st.integers(-1, 6), st.integers(1, 3)).map(
            lambda t: [(t[0], v) for v in range(t[1], t[1] + t[2])]),
        st.lists(st.tuples(st.integers(0, 2), st.integers(-1, 6)), min_size=1, max_size=4)),
    min_size=1, max_size=30)


def run_calls(rec, calls):
    out = []
    for call in calls:
        try:
            out.append(rec.insert_events([ev(AGGS[a], v) for a, v in call]))
        except IntegrityError:
            out.append("IntegrityError")
    return out


@settings(max_examples=40, deadline=None)
@given(calls=calls_strategy, reopen_at=st.integers(0, 30))
def test_c_path_and_python_path_agree(calls, reopen_at):
    with tempfile.TemporaryDirectory() as tmp:
        results, records, indexes = [], [], []
        for path_kind in ("c", "python"):
            path = os.path.join(tmp, path_kind)
            f = factory(path)
            rec = f.application_recorder()
            if path_kind == "python":
                pure_python(rec)
            out = run_calls(rec, calls[:reopen_at])
            f.close()
            f = factory(path)  # reopened: keys known from the index file, not complete
            rec = f.application_recorder()
            if path_kind == "python":
                pure_python(rec)
            out += run_calls(rec, calls[reopen_at:])
            for a in AGGS:
                out.append([(e.originator_version, e.state) for e in rec.select_events(a)])
            out.append([(n.id, n.originator_version) for n in rec.select_notifications(1, 500)])
            results.append(out)
            records.append([r.payload for r in rec.storage.read_records(1, 0, 10**6)])
            f.close()
            with open(os.path.join(path, "eventsourcing", "stream-1.idx"), "rb") as fh:
                indexes.append(fh.read())
        assert results[0] == results[1]
        assert records[0] == records[1]  # byte for byte
        assert indexes[0] == indexes[1]


def test_struct_layout_of_a_c_record():
    # The header and one UUID event, by hand (the module docstring's format).
    a = uuid.UUID(int=0x0102)
    got = kes._codec.encode(5, [ev(a, 3, topic="tp", state=b"xyz")], Tracking("ap", 9))
    want = (b"KMES" + bytes([1, 1, 0, 0]) + struct.pack("<QI", 5, 1)
            + struct.pack("<I", 2) + b"ap" + struct.pack("<q", 9)
            + b"\x00" + a.bytes + struct.pack("<q", 3)
            + struct.pack("<I", 2) + b"tp" + struct.pack("<I", 3) + b"xyz")
    assert got == want


def test_dropped_recorders_and_factory_are_freed_without_the_cycle_collector(tmp_path):
    # The C half makes no reference cycle: a factory and its recorders dropped without
    # close() are freed at once (the factory's __del__ closes the store, releasing the
    # directory's lock), as before it.
    import gc
    import weakref
    path = str(tmp_path / "d")
    gc.collect()
    gc.disable()
    try:
        f = factory(path)
        recs = [f.application_recorder(), f.aggregate_recorder(), f.process_recorder()]
        recs[0].insert_events([ev(uuid.uuid4(), 1)])
        refs = [weakref.ref(x) for x in (f, f.store, *recs)]
        del f, recs
        assert [r() for r in refs] == [None] * len(refs)
        kimberlite.Storage(path).close()  # not locked any more
    finally:
        gc.enable()


@pytest.mark.parametrize("kind", ["aggregate", "application", "process"])
def test_a_recorder_dropped_before_its_call_runs_still_inserts(tmp_path, kind):
    # `factory.x_recorder().insert_events(...)`: the recorder may be freed once the bound
    # attribute is looked up; the calls the C half declines still go through.
    import gc
    f = factory(tmp_path / "d")
    gc.disable()
    try:
        make = getattr(f, f"{kind}_recorder")
        want = None if kind == "aggregate" else [1, 2]
        assert make().insert_events([ev("text-id", 1), ev("text-id", 2)]) == want  # declined
        want = None if kind == "aggregate" else [3]
        assert make().insert_events([ev(uuid.uuid4(), 1)]) == want
        if kind == "process":
            assert make().insert_events([ev("text-id", 3)], tracking=Tracking("up", 1)) == [4]
            assert make().insert_events([ev("text-id", 4)], tracking=None) == [5]
        with pytest.raises(IntegrityError):
            make().insert_events([ev("text-id", 1)])
    finally:
        gc.enable()
    assert [e.originator_version for e in f.application_recorder().select_events("text-id")
            ][:2] == [1, 2]
    f.close()


def test_insert_callable_without_vectorcall(tmp_path):
    # (callers that go through tp_call, e.g. the slot wrapper, reach the same path)
    f = factory(tmp_path / "d")
    rec = f.application_recorder()
    call = rec.__dict__["insert_events"]
    a = uuid.uuid4()
    assert type(call).__call__(call, [ev(a, 1)]) == [1]
    assert type(call).__call__(call, [ev(a, 2)]) == [2]
    assert type(call).__call__(call, stored_events=[ev(a, 3)]) == [3]  # keywords: the method
    with pytest.raises(TypeError):
        call()
    with pytest.raises(IntegrityError):
        type(call).__call__(call, [ev(a, 3)])
    f.close()


def test_versions_at_the_ends_of_int64(tmp_path):
    # (no overflow in the C half's checks; what it declines the Python path records)
    f = factory(tmp_path / "d")
    rec = f.application_recorder()
    made = counting(rec)
    a, b = uuid.uuid4(), uuid.uuid4()
    top = 2**63 - 1
    assert rec.insert_events([ev(a, 1)]) == [1]
    assert rec.insert_events([ev(a, top), ev(a, top - 1)]) == [2, 3]     # declined
    assert rec.insert_events([ev(b, -2**63), ev(b, -2**63 + 1)]) == [4, 5]  # declined
    assert rec.insert_events([ev(uuid.uuid4(), 1), ev(uuid.uuid4(), 1)][:1]) == [6]
    with pytest.raises(IntegrityError):
        rec.insert_events([ev(a, top)])
    assert made["c"] == 1
    assert [e.originator_version for e in rec.select_events(a)] == [1, top - 1, top]
    f.close()


_MEDDLE = r"""
import sys, threading, time, uuid
from eventsourcing.persistence import StoredEvent
import kimberlite
from kimberlite import _core
storage = kimberlite.Storage(sys.argv[1])
st = _core._EsStream()
st.next_id, st.indexed, st.complete = 1, 0, True
w = _core._EsWriter(uuid.UUID, storage, threading.RLock(), {1: st}, {}, False,
                    lambda s: None, lambda sid: None)
stop = False
def meddle():
    while not stop:
        del st.pend, st.keys
        time.sleep(0.00005)
        st.pend, st.keys = [], {}
        time.sleep(0.0003)
t = threading.Thread(target=meddle)
t.start()
sys.setswitchinterval(1e-6)
a, v, made = uuid.uuid4(), 1, 0
deadline = time.monotonic() + 1.5
try:
    while time.monotonic() < deadline:
        ids = w.insert(1, [StoredEvent(originator_id=a, originator_version=v, topic="t",
                                       state=b"y" * 4000)])
        if ids is not None:
            v, made = v + 1, made + 1
finally:
    stop = True
    t.join()
print(made)
"""


def test_keys_and_pend_replaced_by_another_thread_during_the_append(tmp_path):
    # keys and pend are writable attributes of _EsStream: a thread deleting or replacing
    # them while the GIL is released around the append must not crash the C half (it used
    # the fields again after the append: a NULL dereference once deleted).
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", _MEDDLE, str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert int(r.stdout) > 0


_FORK = r"""
import faulthandler, os, sys, threading, uuid
from eventsourcing.persistence import StoredEvent
from kimberlite.eventsourcing import KimberliteFactory
f = KimberliteFactory({"KIMBERLITE_PATH": sys.argv[1], "KIMBERLITE_FSYNC": "n"})
rec = f.application_recorder()
a = uuid.uuid4()
rec.insert_events([StoredEvent(originator_id=a, originator_version=1, topic="t", state=b"")])
stop = False
def write():
    v = 2
    while not stop and v < 5000:
        rec.insert_events([StoredEvent(originator_id=a, originator_version=v, topic="t",
                                       state=b"y" * 1000)])
        v += 1
t = threading.Thread(target=write)
t.start()
codes = []
for _ in range(10):
    pid = os.fork()
    if pid == 0:
        faulthandler.dump_traceback_later(15, exit=True)  # (a hang: exit code 1)
        try:
            ns = rec.select_notifications(1, 10**6)
            vs = [e.originator_version for e in rec.select_events(a)]
            ok = [n.id for n in ns] == list(range(1, len(ns) + 1)) == vs
            os._exit(0 if ok else 3)
        except Exception as e:
            os._exit(2 if "inherited across fork" in str(e) else 4)
    _, status = os.waitpid(pid, 0)
    codes.append(os.waitstatus_to_exitcode(status))
stop = True
t.join()
f.close()
print(codes)
"""


@pytest.mark.parametrize("where", ["disk", "memory"])
def test_fork_while_another_thread_inserts(tmp_path, where):
    # The store's lock is held across the append: a fork() then left the child a lock held
    # by a thread that does not exist there, and any call waited forever. Now the child
    # works on a memory store (gapless ids, the events of whole calls) and gets the
    # engine's clear error for its parent's writer on disk.
    import subprocess
    import sys
    path = str(tmp_path / "d") if where == "disk" else ":memory:"
    r = subprocess.run([sys.executable, "-c", _FORK, path], capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert ast.literal_eval(r.stdout) == [2 if where == "disk" else 0] * 10, r.stderr[-2000:]
