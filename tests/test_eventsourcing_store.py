"""kimberlite.eventsourcing beyond the library's cases: the index as a cache, errors mapped to
the library's classes, tamper evidence, read-only readers and subscriptions in another
process, the record format and the factory's environment."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import struct
import textwrap
import time
import uuid
import zlib

import pytest

pytest.importorskip("eventsourcing", reason="pip install 'kimberlite-storage[eventsourcing]'")

from eventsourcing.persistence import (  # noqa: E402
    DataError,
    InfrastructureFactory,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
    Tracking,
)

import kimberlite  # noqa: E402
import kimberlite.testing  # noqa: E402
from kimberlite.eventsourcing import (  # noqa: E402
    KimberliteFactory,
    decode_record,
    encode_record,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS = uuid.UUID("6f1c1c7e-2b8e-4c6b-9b1a-0d4c2a1e5f00")


def factory(path, **env):
    e = {"KIMBERLITE_PATH": str(path), "KIMBERLITE_FSYNC": "n"}
    e.update({k: str(v) for k, v in env.items()})
    return KimberliteFactory(e)


def ev(agg, version, topic="t", state=None):
    return StoredEvent(originator_id=agg, originator_version=version, topic=topic,
                       state=state if state is not None else f"{agg}/{version}".encode())


def fill(rec, calls=60, seed=1):
    """Calls of 1-3 aggregates (several events each) with tracking; returns the aggregates."""
    rng = random.Random(seed)
    aggs = [uuid.uuid5(NS, f"agg{i}") for i in range(8)] + ["text-id", "δ"]
    versions = {a: 0 for a in aggs}
    for call in range(1, calls + 1):
        batch = []
        for a in rng.sample(aggs, rng.randint(1, 3)):
            for _ in range(rng.randint(1, 3)):
                versions[a] += 1
                batch.append(ev(a, versions[a], topic=f"topic{versions[a] % 3}"))
        rec.insert_events(batch, tracking=Tracking("upstream", call))
    return aggs


def snapshot(rec, aggs):
    """Everything a reader can ask, as comparable values."""
    return {
        "events": {str(a): rec.select_events(a) for a in aggs},
        "desc": {str(a): rec.select_events(a, gt=1, lte=4, desc=True, limit=2) for a in aggs},
        "notes": rec.select_notifications(None, 10_000),
        "some": rec.select_notifications(17, 9, stop=40, topics=["topic1", "topic2"],
                                         inclusive_of_start=False),
        "max": rec.max_notification_id(),
        "tracking": rec.max_tracking_id("upstream"),
    }


def index_file(path, stream=1):
    return os.path.join(path, "eventsourcing", f"stream-{stream}.idx")


# ---- the index is a cache ------------------------------------------------------------


def _damage(kind, path, stale_copy, rng):
    f = index_file(path)
    if kind == "deleted":
        shutil.rmtree(os.path.dirname(f))
    elif kind == "truncated":
        os.truncate(f, os.path.getsize(f) // 2)
    elif kind == "truncated-to-zero":
        os.truncate(f, 0)
    elif kind == "garbage":
        with open(f, "wb") as fh:
            fh.write(b"this is not an index file" * 100)
    elif kind == "corrupted":  # runs of random bytes written over the blocks
        size = os.path.getsize(f)
        with open(f, "r+b") as fh:
            for _ in range(3):
                fh.seek(rng.randrange(24, size - 64))
                fh.write(rng.randbytes(64))
    elif kind == "zeroed":  # the middle third zeroed (lost pages after a power cut)
        size = os.path.getsize(f)
        with open(f, "r+b") as fh:
            fh.seek(size // 3)
            fh.write(bytes(size // 3))
    elif kind == "stale":  # a copy taken earlier: the newer tail is indexed incrementally
        shutil.copyfile(stale_copy, f)
    elif kind == "foreign":  # the index of another store that has more records
        other = path + "-other"
        with factory(other) as fo:
            fill(fo.process_recorder(), calls=80, seed=99)
        fo.close()
        shutil.copyfile(index_file(other), f)
    elif kind == "other-version":  # a well-formed header of another format version
        with open(f, "r+b") as fh:
            head = struct.pack("<8sIQ", b"KMESIDX\x00", 77, 1)
            fh.write(head + struct.pack("<I", zlib.crc32(head)))
    elif kind == "other-stream":  # the index of stream 2 under stream 1's name
        with open(f, "r+b") as fh:
            head = struct.pack("<8sIQ", b"KMESIDX\x00", 1, 2)
            fh.write(head + struct.pack("<I", zlib.crc32(head)))
    elif kind == "legacy-sqlite":  # the SQLite index of earlier versions: replaced
        os.remove(f)
        import sqlite3
        db = sqlite3.connect(os.path.join(path, "eventsourcing", "index.sqlite3"))
        db.execute("CREATE TABLE events (stream, key, last, first, count, offset, pos)")
        db.execute("PRAGMA user_version=3")
        db.close()
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["deleted", "truncated", "truncated-to-zero", "garbage",
                                  "corrupted", "zeroed", "stale", "foreign",
                                  "other-version", "other-stream", "legacy-sqlite"])
def test_damaged_index_gives_the_same_results(tmp_path, kind, caplog):
    path = str(tmp_path / "data")
    f = factory(path)
    rec = f.process_recorder()
    aggs = fill(rec, calls=30, seed=3)
    f.flush()
    stale_copy = str(tmp_path / "stale.idx")
    shutil.copyfile(index_file(path), stale_copy)
    rng = random.Random(7)
    versions = {}
    for a in aggs:  # more calls after the stale copy was taken
        got = rec.select_events(a, desc=True, limit=1)
        versions[a] = got[0].originator_version if got else 0
    for call in range(31, 61):
        a = aggs[call % len(aggs)]
        versions[a] += 1
        rec.insert_events([ev(a, versions[a])], tracking=Tracking("upstream", call))
    expected = snapshot(rec, aggs)
    f.close()

    _damage(kind, path, stale_copy, rng)

    caplog.clear()
    f2 = factory(path)
    rec2 = f2.process_recorder()
    assert snapshot(rec2, aggs) == expected
    warned = [r.getMessage() for r in caplog.records if r.name == "kimberlite.eventsourcing"]
    if kind in ("stale", "deleted", "truncated-to-zero", "truncated", "legacy-sqlite"):
        # an older prefix is completed, a torn tail cut, a missing index built quietly
        assert warned == []
    elif kind in ("garbage", "foreign", "other-version", "other-stream", "zeroed"):
        assert warned, "the damage must be noticed"
    assert not os.path.exists(os.path.join(path, "eventsourcing", "index.sqlite3"))
    # the rebuilt index still enforces optimistic concurrency, and ids go on gapless
    with pytest.raises(IntegrityError):
        rec2.insert_events([ev(aggs[0], 1)])
    with pytest.raises(IntegrityError):
        rec2.insert_events([], tracking=Tracking("upstream", 60))
    ids = rec2.insert_events([ev("new", 1), ev("new", 2)], tracking=Tracking("upstream", 61))
    assert ids == [expected["max"] + 1, expected["max"] + 2]
    f2.close()
    # and a clean reopen agrees once more
    f3 = factory(path)
    assert snapshot(f3.process_recorder(), aggs)["events"] == expected["events"]
    f3.close()


def test_index_damaged_while_open_is_rebuilt_on_use(tmp_path, caplog):
    path = str(tmp_path / "data")
    f = factory(path)
    rec = f.process_recorder()
    aggs = fill(rec, calls=40, seed=5)
    expected = snapshot(rec, aggs)
    st = f.store.streams[f.stream_id]
    kes = sys.modules["kimberlite.eventsourcing"]

    def shifted(entry):  # the entry of the next record: not what the record holds
        key, first, last, offset, first_id, count, pos = entry
        return key, first, last, offset + 1, first_id, count, pos

    # entries that no longer match their records: found when used, then rebuilt
    f.flush()
    assert st.runs and not st.pend
    for run in st.runs:
        keys, cols = kes._columns([x for e in run.entries() for x in shifted(e)])
        assert keys == run.keys
        run.cols = cols
    caplog.clear()
    assert snapshot(rec, aggs) == expected
    assert any("rebuilt" in r.getMessage() for r in caplog.records)
    # the same for entries not yet written
    a = uuid.uuid4()
    rec.insert_events([ev(a, 1), ev(a, 2)])
    expected = snapshot(rec, aggs + [a])
    st = f.store.streams[f.stream_id]
    assert st.pend
    n = kes._STRIDE  # (unwritten entries are kept flat: key, columns, key, ...)
    st.pend = [x for i in range(0, len(st.pend), n) for x in shifted(st.pend[i:i + n])]
    caplog.clear()
    assert snapshot(rec, aggs + [a]) == expected
    assert any("rebuilt" in r.getMessage() for r in caplog.records)
    f.close()


def test_tail_written_after_the_last_commit_is_indexed_on_open(tmp_path):
    # the writer commits its index every 1,000 records or second; a killed writer leaves
    # an index behind its records, which the next open completes
    path = str(tmp_path / "data")
    code = textwrap.dedent(f"""
        import os, sys, uuid
        sys.path.insert(0, {ROOT!r})
        from tests.test_eventsourcing_store import factory, fill
        f = factory({path!r})
        fill(f.process_recorder(), calls=50, seed=11)
        os._exit(0)   # no close(): the index transaction is never committed
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    f = factory(path)
    rec = f.process_recorder()
    notes = rec.select_notifications(None, 10_000)
    assert [n.id for n in notes] == list(range(1, len(notes) + 1))
    assert rec.max_tracking_id("upstream") == 50
    for n in notes:
        assert any(e.originator_version == n.originator_version and e.state == n.state
                   for e in rec.select_events(n.originator_id))
    f.close()


# ---- semantics -----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["disk", "memory"])
def test_a_failed_call_writes_nothing(tmp_path, where):
    f = factory(tmp_path / "d" if where == "disk" else ":memory:")
    rec = f.process_recorder()
    a, b = uuid.uuid4(), uuid.uuid4()
    assert rec.insert_events([ev(a, 1), ev(b, 1)], tracking=Tracking("up", 1)) == [1, 2]
    head = rec.head_hash()
    for bad, kw in [([ev(b, 2), ev(a, 1)], {}),                 # duplicate in the store
                    ([ev(b, 2), ev(b, 2)], {}),                 # duplicate in the call
                    ([ev(b, 2)], {"tracking": Tracking("up", 1)}),  # tracking not newer
                    ([ev(b, 2), ev(str(a), 1)], {})]:           # str(uuid) is the same id
        with pytest.raises(IntegrityError):
            rec.insert_events(bad, **kw)
        assert rec.head_hash() == head
        assert rec.storage.next_offset(rec.stream_id) == 1
    for bad in ([ev(b, 2**63)], [ev(b, 2), ev(12345, 1)]):  # values the format cannot hold
        with pytest.raises(DataError):
            rec.insert_events(bad)
    with pytest.raises(DataError):
        rec.insert_events([ev(b, 2)], tracking=Tracking("up", 2**64))
    assert rec.head_hash() == head
    assert rec.insert_events([ev(b, 2)], tracking=Tracking("up", 2)) == [3]
    assert [e.originator_version for e in rec.select_events(b)] == [1, 2]
    f.close()


def test_errors_keep_kimberlite_messages(tmp_path):
    path = str(tmp_path / "data")
    # another writer holds the directory
    holder = kimberlite.Storage(path)
    with pytest.raises(OperationalError) as ei:
        factory(path)
    assert isinstance(ei.value.__cause__, kimberlite.LockedError)
    assert str(ei.value) == str(ei.value.__cause__)
    holder.close()
    # an insert larger than the engine's max_event_size: DataError, nothing written
    f = factory(path, KIMBERLITE_MAX_EVENT_SIZE=200)
    rec = f.application_recorder()
    with pytest.raises(DataError) as ei:
        rec.insert_events([ev("x", 1, state=b"z" * 300)])
    assert "max_event_size" in str(ei.value) or "larger" in str(ei.value)
    assert rec.max_notification_id() is None
    assert rec.select_events("x") == []
    # a closed factory
    f.close()
    f.close()  # idempotent
    with pytest.raises(ProgrammingError):
        rec.select_events("x")
    with pytest.raises(ProgrammingError):
        f.application_recorder()
    # read-only: readable, not writable
    w = factory(path)
    w.application_recorder().insert_events([ev("x", 1)])
    w.close()
    r = factory(path, KIMBERLITE_READ_ONLY="y")
    rrec = r.application_recorder()
    assert rrec.select_events("x")[0].state == b"x/1"
    with pytest.raises(OperationalError, match="read-only"):
        rrec.insert_events([ev("x", 2)])
    r.close()


def test_foreign_records_in_the_stream_are_a_data_error(tmp_path):
    path = str(tmp_path / "data")
    with kimberlite.Storage(path) as s:
        s.append_batch(1, [b"not an eventsourcing record"])
    f = factory(path)
    rec = f.application_recorder()
    for _ in range(2):  # every later call says so too, and nothing is appended after it
        with pytest.raises(DataError, match="format version"):
            rec.max_notification_id()
        with pytest.raises(DataError, match="record 0 of stream 1"):
            rec.insert_events([ev("a", 1)])
    assert f.storage.next_offset(1) == 1
    f.close()


@pytest.mark.parametrize("env, match", [
    ({}, "KIMBERLITE_PATH"),
    ({"KIMBERLITE_PATH": "x", "KIMBERLITE_FSYNC": "maybe"}, "KIMBERLITE_FSYNC"),
    ({"KIMBERLITE_PATH": "x", "KIMBERLITE_STREAM_ID": "-1"}, "KIMBERLITE_STREAM_ID"),
    ({"KIMBERLITE_PATH": "x", "KIMBERLITE_MAX_EVENT_SIZE": "big"}, "MAX_EVENT_SIZE"),
    ({"KIMBERLITE_PATH": "x", "KIMBERLITE_POLL_INTERVAL": "0"}, "POLL_INTERVAL"),
])
def test_bad_environment(tmp_path, monkeypatch, env, match):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError, match=match):
        KimberliteFactory(env)
    assert not os.path.exists(tmp_path / "x")


def test_streams_prefixes_and_sharing(tmp_path):
    path = str(tmp_path / "data")
    env = {"PERSISTENCE_MODULE": "kimberlite.eventsourcing", "BANK_KIMBERLITE_PATH": path,
           "BANK_KIMBERLITE_STREAM_ID": "10", "KIMBERLITE_FSYNC": "n"}
    from eventsourcing.utils import Environment
    f = InfrastructureFactory.construct(Environment("bank", env))
    assert isinstance(f, KimberliteFactory)
    assert f.application_recorder().stream_id == 10
    assert f.aggregate_recorder("snapshots").stream_id == 11
    assert f.aggregate_recorder("other").stream_id == 2**32 + __import__("zlib").crc32(b"other")
    # a second factory of this process on the same directory shares the store
    g = factory(path, KIMBERLITE_STREAM_ID=20)
    assert g.storage is f.storage
    g.application_recorder().insert_events([ev("a", 1)])
    f.close()
    assert g.application_recorder().select_events("a")[0].state == b"a/1"
    g.close()
    with pytest.raises(ProgrammingError):
        g.storage


# ---- tamper evidence ------------------------------------------------------------------


def test_head_hash_and_verify(tmp_path):
    path = str(tmp_path / "data")
    f = factory(path)
    rec = f.application_recorder()
    aggs = [uuid.uuid4() for _ in range(3)]
    for v in range(1, 4):
        rec.insert_events([ev(a, v) for a in aggs])
    head = rec.head_hash()
    assert head == f.storage.latest_chain_hash(rec.stream_id)
    assert rec.verify(expected_head=head) == (3, head)
    f.close()
    # tampering: a record's payload rewritten with a valid CRC
    forged = encode_record(4, [ev(aggs[0], 2, state=b"forged"), ev(aggs[1], 2), ev(aggs[2], 2)])
    kimberlite.testing.replace_payload(path, 1, 1, forged)
    f = factory(path)
    rec = f.application_recorder()
    with pytest.raises(DataError) as ei:
        rec.verify(expected_head=head)
    assert isinstance(ei.value.__cause__, kimberlite.ChainVerificationError)
    f.close()


# ---- another process: read-only reader and subscription --------------------------------


READER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from kimberlite.eventsourcing import KimberliteFactory
    f = KimberliteFactory({"KIMBERLITE_PATH": sys.argv[2], "KIMBERLITE_READ_ONLY": "y",
                           "KIMBERLITE_POLL_INTERVAL": "0.02"})
    rec = f.application_recorder()
    want = int(sys.argv[3])
    print("ready", flush=True)
    got = []
    with rec.subscribe(gt=None) as sub:
        for n in sub:
            got.append([n.id, str(n.originator_id), n.originator_version, n.state.decode()])
            if len(got) == want:
                break
    agg = rec.select_events(got[-1][1])
    print(json.dumps({"got": got, "last_agg": len(agg), "max": rec.max_notification_id()}))
    f.close()
""")


def test_read_only_subscriber_in_another_process(tmp_path):
    path = str(tmp_path / "data")
    f = factory(path)
    rec = f.application_recorder()
    rec.insert_events([ev("a", 1), ev("b", 1)])
    f.flush()
    rec.insert_events([ev("a", 2)])  # not yet in the committed index: the reader's tail
    total = 3 + 40 * 3
    p = subprocess.Popen([sys.executable, "-c", READER, ROOT, path, str(total)],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        for i in range(40):
            rec.insert_events([ev("a", 3 + i), ev(f"c{i}", 1), ev("b", 2 + i)])
            time.sleep(0.002)
        out, _ = p.communicate(timeout=60)
    finally:
        p.kill()
    result = json.loads(out)
    ids = [g[0] for g in result["got"]]
    assert ids == list(range(1, total + 1))  # gapless, in order, nothing passed over
    notes = rec.select_notifications(None, total)
    assert [[n.id, str(n.originator_id), n.originator_version, n.state.decode()]
            for n in notes] == result["got"]
    assert result["max"] == total
    f.close()


def test_subscription_in_process_gets_new_events(tmp_path):
    f = factory(tmp_path / "d")
    rec = f.application_recorder()
    rec.insert_events([ev("a", 1)])
    import threading
    got = []
    with rec.subscribe(gt=None, topics=["keep"]) as sub:
        def write():
            for i in range(2, 30):
                rec.insert_events([ev("a", i, topic="keep" if i % 2 else "skip")])
        t = threading.Thread(target=write)
        t.start()
        for n in sub:
            got.append(n.originator_version)
            if n.originator_version == 29:
                break
        t.join()
    assert got == list(range(3, 30, 2))
    f.close()


# ---- format ---------------------------------------------------------------------------


def test_record_format_round_trip_and_rejects_garbage():
    evs = [ev(uuid.UUID(int=5), -3, topic="", state=b""), ev("π" * 3, 2**63 - 1)]
    payload = encode_record(42, evs, Tracking("app", 7))
    assert payload[:6] == b"KMES\x01\x01"
    assert decode_record(payload) == (42, Tracking("app", 7), evs)
    assert decode_record(encode_record(1, [])) == (1, None, [])
    for bad in (b"", b"KMES", payload[:-1], payload + b"x", b"XXXX" + payload[4:],
                payload[:4] + b"\x02" + payload[5:]):
        with pytest.raises(DataError):
            decode_record(bad)
    with pytest.raises(DataError):
        encode_record(1, [ev("a", 2**63)])
    with pytest.raises(DataError):
        encode_record(1, [ev(12, 1)])


# ---- finalizers never block ------------------------------------------------------------

FINALIZER_SCRIPT = r"""
import gc, sys
import kimberlite
import kimberlite.eventsourcing as es

def factory(path):
    return es.KimberliteFactory({"KIMBERLITE_PATH": path, "KIMBERLITE_FSYNC": "n"})

def in_a_cycle(path):
    f = factory(path)
    f.application_recorder()
    f.cycle = [f]  # only the cycle collector frees it: at any allocation, anywhere
    store = f.store
    return store

def locked(path):  # the directory's writer lock is held by this process
    try:
        kimberlite.Storage(path).close()
    except kimberlite.LockedError:
        return True
    return False

a, b = sys.argv[1], sys.argv[2]
gc.disable()
# 1. the collector runs a factory's __del__ while this thread holds _stores_lock (what
#    happened inside _acquire_store): it used to wait for itself for ever
store = in_a_cycle(a)
with es._stores_lock:
    gc.collect()
    assert not store.closed and locked(a)  # queued, not released under the lock
es._release_late_stores()  # the next safe point
assert store.closed and not locked(a)

# 2. ... while this thread is inside a call on the very store (holding its lock): the store
#    must not be closed under the call, and is closed at the next safe point after it
store = in_a_cycle(b)
with store.lock:
    gc.collect()
    es._release_late_stores()  # a safe point inside the call: still in use
    assert not store.closed and locked(b)
f = factory(a)  # any later factory is a safe point
assert store.closed and not locked(b)
f.close()
assert not locked(a)

# 3. a factory dropped outside any lock is still released at once
f = factory(a)
assert locked(a)
del f
assert not locked(a)
print("ok")
"""


def test_a_factory_finalized_under_a_lock_is_released_later_never_deadlocks(tmp_path):
    from helpers import child_env

    p = subprocess.run([sys.executable, "-c", FINALIZER_SCRIPT, str(tmp_path / "a"),
                        str(tmp_path / "b")], capture_output=True, text=True, timeout=120,
                       env=child_env())
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == "ok"
