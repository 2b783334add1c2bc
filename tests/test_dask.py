"""kimberlite.dask on a real distributed.LocalCluster (2 worker processes, 1 thread each).

One cluster for the module (about 3 s to start). Every task opens the data directory
read-only in a worker process, so these tests also show that workers need no writer lock.
"""
import importlib
import sys
import threading

import pytest

import kimberlite
from kimberlite import testing as kt

pd = pytest.importorskip("pandas", reason="pip install 'kimberlite-storage[dask]'")
pa = pytest.importorskip("pyarrow", reason="pip install 'kimberlite-storage[dask]'")
distributed = pytest.importorskip("distributed", reason="pip install 'kimberlite-storage[dask]'")
kd = pytest.importorskip("kimberlite.dask", reason="pip install 'kimberlite-storage[dask]'")

EVENTS = [bytes((i * 5 + j) % 256 for j in range(i % 53)) for i in range(900)]
PART = 4000  # partition_bytes: about 4 KB of records, several ranges per segment


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, worker_dashboard_address=None) as c:
        with distributed.Client(c) as cl:
            yield cl


def fill(path, n=len(EVENTS), sid=1):
    s = kimberlite.Storage(path, max_segment_size=8192)
    for i in range(0, n, 45):
        s.append_batch(sid, EVENTS[i:min(i + 45, n)])
    return s


@pytest.fixture
def data(tmp_path):
    s = fill(tmp_path / "d")
    s.append_batch(2, [b"", b"two", b"\x00\xff"])
    s.close()
    return tmp_path / "d"


def test_ranges_cover_the_stream(data):
    s = kimberlite.Storage(data, read_only=True)
    rs = kd.ranges(s, 1, PART)
    assert rs[0][0] == 0 and rs[-1][1] == len(EVENTS)
    assert all(a < b for a, b in rs) and all(b == c for (_, b), (c, _) in zip(rs, rs[1:]))
    assert len(rs) > s.segment_count(1)  # segments are split, not one partition each
    assert kd.ranges(s, 1, 1 << 30) == [(0, len(EVENTS))]  # small segments are merged
    assert kd.ranges(s, 7, PART) == []


def test_read_stream_equals_the_stream(client, data):
    df = kd.read_stream(data, 1, partition_bytes=PART)
    assert df.npartitions > 3 and df.known_divisions
    got = df.compute()
    assert got.index.tolist() == list(range(len(EVENTS)))
    assert got["payload"].tolist() == EVENTS
    assert got["payload"].dtype == pd.ArrowDtype(pa.binary())
    # the tasks ran in the worker processes
    assert client.run(lambda: "kimberlite.dask" in sys.modules) != {}


def test_columns_projection(client, data):
    df = kd.read_stream(data, 1, columns=["size", "hash"], partition_bytes=PART)
    got = df.compute()
    assert list(got.columns) == ["size", "hash"]
    assert got["size"].tolist() == [len(e) for e in EVENTS]
    s = kimberlite.Storage(data, read_only=True)
    assert got["hash"].tolist() == [r.compute_hash() for r in s.read_records(1)]
    with pytest.raises(ValueError, match="index"):
        kd.read_stream(data, 1, columns=["offset"])
    with pytest.raises(ValueError, match="unknown column"):
        kd.read_stream(data, 1, columns=["nope"])


def test_loc_prunes_partitions(client, data):
    df = kd.read_stream(data, 1, partition_bytes=PART)
    a, b = df.divisions[2] + 1, df.divisions[3] - 1  # inside the third partition
    sub = df.loc[a:b].optimize()
    assert sub.npartitions == 1 and len(sub.__dask_graph__()) == 1
    assert sub.compute()["payload"].tolist() == EVENTS[a:b + 1]
    two = df.loc[df.divisions[2]:df.divisions[3]].optimize()
    assert two.npartitions == 2 and len(two.__dask_graph__()) == 2


def test_read_streams_adds_stream_id(client, data):
    got = kd.read_streams(data, partition_bytes=PART).compute()
    assert got.columns[0] == "stream_id"
    assert got.groupby("stream_id").size().to_dict() == {1: len(EVENTS), 2: 3}
    two = got[got["stream_id"] == 2]
    assert two["payload"].tolist() == [b"", b"two", b"\x00\xff"]
    assert kd.read_streams(data, [2]).compute().index.tolist() == [0, 1, 2]


def test_empty_and_missing_streams(client, tmp_path):
    kimberlite.Storage(tmp_path / "e").close()
    df = kd.read_stream(tmp_path / "e", 5)
    assert len(df.compute()) == 0 and list(df.columns) == ["payload"]
    assert len(kd.read_streams(tmp_path / "e").compute()) == 0
    assert kd.verify(tmp_path / "e") == {}


def test_verify_equals_storage_verify(client, data):
    s = kimberlite.Storage(data, read_only=True)
    got = kd.verify(data, partition_bytes=PART)
    assert set(got) == {1, 2}
    for sid, r in got.items():
        assert r.ok and (r.next_offset, r.head) == s.verify(sid)
    heads = {1: s.latest_chain_hash(1), 2: s.latest_chain_hash(2)}
    assert all(r.ok for r in kd.verify(data, expected_heads=heads).values())
    bad = kd.verify(data, [1], expected_heads={1: b"\x00" * 32})[1]
    assert not bad.ok and bad.error == "ChainVerificationError" and bad.offset == len(EVENTS) - 1
    assert "trusted head" in bad.message


def _storage_error_offset(path, sid):
    with pytest.raises(kimberlite.StorageError) as e:
        kimberlite.Storage(path, read_only=True).verify(sid)
    return type(e.value).__name__, e.value.offset


@pytest.mark.parametrize("where", ["inside a range", "last of a range", "first of a range",
                                   "segment boundary"])
def test_verify_finds_forged_records(client, tmp_path, where):
    path = tmp_path / "d"
    s = fill(path)
    rs = kd.ranges(s, 1, PART)
    bounds = s.segment_bounds(1)
    s.close()
    a, b = rs[3]
    offset = {"inside a range": (a + b) // 2, "last of a range": b - 1,
              "first of a range": b, "segment boundary": bounds[2][1] - 1}[where]
    kt.replace_payload(path, 1, offset, b"forged")
    got = kd.verify(path, partition_bytes=PART)[1]
    assert not got.ok and got.next_offset is None
    assert (got.error, got.offset) == _storage_error_offset(path, 1) == (
        "ChainVerificationError", offset + 1)
    assert f"offset {offset + 1}" in got.message


def test_verify_finds_bit_rot(client, tmp_path):
    path = tmp_path / "d"
    fill(path).close()
    kt.flip_bit(path, 1, 500)
    got = kd.verify(path, partition_bytes=PART)[1]
    assert (got.error, got.offset) == _storage_error_offset(path, 1) == (
        "CorruptedRecordError", 500)


def test_workers_read_beside_a_live_writer(client, tmp_path):
    path = tmp_path / "d"
    w = fill(path, n=450)  # the writer stays open, holding the lock
    stop = threading.Event()

    def append():
        i = 450
        while not stop.is_set() and i < len(EVENTS):
            w.append_batch(1, EVENTS[i:i + 5], fsync=False)
            i += 5

    t = threading.Thread(target=append)
    t.start()
    try:
        for _ in range(3):
            df = kd.read_stream(path, 1, partition_bytes=PART)
            n = df.divisions[-1] + 1
            got = df.compute()
            assert got["payload"].tolist() == EVENTS[:n]
            r = kd.verify(path, partition_bytes=PART)[1]
            assert r.ok and r.next_offset >= n
    finally:
        stop.set()
        t.join()
    w.close()


@pytest.mark.parametrize("missing", ["dask", "dask.dataframe"])
def test_missing_dask_names_the_extra(monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)
    monkeypatch.delitem(sys.modules, "kimberlite.dask")
    with pytest.raises(ImportError, match=r"pip install 'kimberlite-storage\[dask\]'"):
        importlib.import_module("kimberlite.dask")


def test_bad_arguments(data):
    with pytest.raises(ValueError, match="partition_bytes"):
        kd.read_stream(data, 1, partition_bytes=0)
    with pytest.raises(TypeError, match="partition_bytes"):
        kd.verify(data, partition_bytes="1")
    with pytest.raises(ValueError):
        kd.read_stream(data, -1)
    with pytest.raises(kimberlite.StorageError):
        kd.read_stream(data.parent / "missing", 1)


def test_open_cache_never_closes_a_storage_in_use(tmp_path, monkeypatch):
    # a task on another thread still holds the storage the cache drops: it must stay open
    monkeypatch.setattr(kd, "_opened", {})
    monkeypatch.setattr(kd, "_OPENED_MAX", 2)
    paths = []
    for k in range(4):
        fill(tmp_path / str(k), n=20).close()
        paths.append(str(tmp_path / str(k)))
    held = kd._open(paths[0])
    start, done, errors = threading.Event(), threading.Event(), []

    def task():
        start.wait()
        try:
            assert held.stream(1).to_arrow(0, 20).num_rows == 20
        except Exception as e:  # reported to the test thread
            errors.append(e)
        done.set()

    t = threading.Thread(target=task)
    t.start()
    for p in paths[1:]:  # evicts paths[0]
        kd._open(p)
    assert paths[0] not in kd._opened and not held.closed
    start.set()
    t.join(30)
    assert done.is_set() and not errors
    assert kd._open(paths[0]) is not held  # a fresh open once dropped
