"""Storage.stream() views, Storage.iter_from(), and the REPL / Jupyter summaries.

Every test runs on both backends (fixture `backend`); memory is checked to stay flat while
iterating a stream far larger than what the iteration may allocate.
"""
import html
import os
import subprocess
import sys
import textwrap
import tracemalloc

import pytest

import kimberlite as km
from kimberlite import _core

EVENTS = [f"event {i}".encode() + b"." * (i % 13) for i in range(200)]


@pytest.fixture
def filled(backend):
    s = backend.open(max_segment_size=1024)
    s.append_batch(1, EVENTS[:120])
    s.append_batch(1, EVENTS[120:])
    return s


def test_types_keep_their_identity(backend):
    s = backend.open()
    base = _core.Storage if backend.is_disk else _core.MemoryStorage
    assert isinstance(s, base)
    assert type(s).__module__ == "kimberlite"
    assert km.Storage.__name__ == "Storage" and km.MemoryStorage.__name__ == "MemoryStorage"
    assert issubclass(km.Storage, _core.Storage) and issubclass(km.MemoryStorage, _core.MemoryStorage)
    assert km.Storage.__doc__ == _core.Storage.__doc__
    assert km.Stream.__module__ == "kimberlite"


def test_len_index_and_negative_index(filled):
    view = filled.stream(1)
    assert len(view) == 200 == filled.next_offset(1)
    assert view[0] == EVENTS[0]
    assert view[137] == EVENTS[137]
    assert view[-1] == EVENTS[-1]
    assert view[-200] == EVENTS[0]
    for bad in (200, -201, 10**30):
        with pytest.raises(IndexError, match="out of range"):
            view[bad]
    with pytest.raises(TypeError):
        view["1"]
    assert view.record(-1) == filled.read_records(1, 199)[0]
    assert view.head == filled.latest_chain_hash(1)
    assert view.segments == filled.segment_count(1) > 1
    assert view.stream_id == 1 and view.storage is filled


@pytest.mark.parametrize("sl", [
    slice(None), slice(10, 20), slice(-5, None), slice(None, -190), slice(190, 500),
    slice(50, 40), slice(None, None, -1), slice(150, 100, -1), slice(3, 150, 7),
    slice(None, None, -13), slice(-1, -10, -3), slice(0, 0), slice(199, 200),
])
def test_slices_behave_like_a_list(filled, sl):
    view = filled.stream(1)
    assert view[sl] == EVENTS[sl]


def test_iteration_and_iter_from(filled):
    view = filled.stream(1)
    assert list(view) == EVENTS
    assert list(filled.iter_from(1)) == EVENTS
    assert list(filled.iter_from(1, 150)) == EVENTS[150:]
    assert list(filled.iter_from(1, 200)) == []
    assert list(filled.iter_from(99)) == []
    recs = list(filled.iter_from(1, 195, records=True))
    assert recs == filled.read_records(1, 195)
    assert all(isinstance(r, km.Record) for r in recs)
    # One event per chunk: the same events, in order.
    assert list(filled.iter_from(1, 0, chunk_bytes=1)) == EVENTS
    assert list(view.records(10, 14)) == filled.read_records(1, 10)[:4]
    assert EVENTS[5] in view and b"nope" not in view
    assert list(reversed(view))[:3] == EVENTS[::-1][:3]


def test_iter_from_checks_arguments_at_once(filled):
    with pytest.raises(TypeError):
        filled.iter_from("1")
    with pytest.raises(ValueError):
        filled.iter_from(1, -1)
    with pytest.raises(ValueError):
        filled.iter_from(1 << 64)
    with pytest.raises(ValueError):
        filled.iter_from(1, chunk_bytes=0)
    with pytest.raises(TypeError):
        filled.iter_from(1, chunk_bytes=1.5)
    with pytest.raises(TypeError):
        filled.stream("1")


def test_view_sees_later_appends_and_large_events(backend):
    s = backend.open()
    view = s.stream(5)
    assert len(view) == 0 and list(view) == [] and view[:] == [] and view.head is None
    big = [os.urandom(3 << 20), b"", os.urandom(5)]  # larger than one chunk
    s.append_batch(5, big)
    assert len(view) == 3
    assert list(view) == big
    assert view[0:2] == big[0:2]


def test_iteration_picks_up_appends_until_the_end(backend):
    s = backend.open()
    s.append_batch(1, [b"a" * 600_000, b"b" * 600_000])
    it = s.iter_from(1, chunk_bytes=500_000)
    assert next(it) == b"a" * 600_000
    s.append_batch(1, [b"c"])
    assert list(it) == [b"b" * 600_000, b"c"]


def test_closed_storage(backend):
    s = backend.open()
    s.append_batch(1, [b"x"])
    view = s.stream(1)
    s.close()
    with pytest.raises(ValueError):
        len(view)
    with pytest.raises(ValueError):
        s.stream(1)
    with pytest.raises(ValueError):
        s.iter_from(1)
    assert "closed=True" in repr(s)
    assert "closed" in s._repr_html_()
    assert repr(view).startswith("<kimberlite.Stream 1 of <kimberlite.")
    assert "closed" in view._repr_html_()


def test_damage_is_raised_while_iterating(backend):
    import kimberlite.testing as kt

    s = backend.open(max_segment_size=1024)
    s.append_batch(1, EVENTS)
    kt.flip_bit(s, 1, 100)
    it = s.iter_from(1, chunk_bytes=256)
    got = []
    with pytest.raises(km.CorruptedRecordError):
        for ev in it:
            got.append(ev)
    assert got == EVENTS[:len(got)] and len(got) <= 100


# ---- memory stays flat --------------------------------------------------------------------

def test_iteration_memory_is_flat_in_process(backend):
    """Python allocations while iterating 24 MiB stay around one chunk."""
    s = backend.open()
    event = b"m" * 65536
    for _ in range(6):
        s.append_batch(3, [event] * 64, fsync=False)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        n = total = 0
        for ev in s.iter_from(3):
            n += 1
            total += len(ev)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 384 and total == 24 << 20
    assert peak < 4 << 20, peak


def test_reading_a_large_stream_keeps_rss_flat(tmp_path):
    """In a fresh process: iterating a 192 MiB stream raises peak RSS by far less than it."""
    data = tmp_path / "big"
    with km.Storage(data) as s:
        event = b"r" * 65536
        for _ in range(48):
            s.append_batch(1, [event] * 64, fsync=False)
    script = textwrap.dedent("""
        import sys
        import kimberlite

        def hwm():
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024

        with kimberlite.Storage(sys.argv[1], read_only=True) as s:
            s.next_offset(1)
            before = hwm()
            n = sum(len(ev) for ev in s.stream(1))
            print(n, hwm() - before)
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", script, str(data)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    total, growth = int(out[0]), int(out[1])
    assert total == 192 << 20
    assert growth < 32 << 20, f"peak RSS grew by {growth} bytes"


# ---- data frames ----------------------------------------------------------------------------

def test_to_pandas(filled):
    pd = pytest.importorskip("pandas", reason="pip install 'kimberlite-storage[pandas]'")
    df = filled.stream(1).to_pandas()
    assert list(df.columns) == ["offset", "size", "payload", "prev_hash", "hash"]
    assert len(df) == 200
    assert df["offset"].tolist() == list(range(200))
    assert df["size"].tolist() == [len(e) for e in EVENTS]
    assert df["payload"].tolist() == EVENTS
    assert df["prev_hash"][0] is pd.NA  # Arrow-backed: null, not None (genesis)
    assert df["prev_hash"].tolist()[1:] == df["hash"].tolist()[:-1]
    assert df["hash"].iloc[-1] == filled.latest_chain_hash(1)
    part = filled.stream(1).to_pandas(10, 20)
    assert part["offset"].tolist() == list(range(10, 20))


def test_to_arrow(filled):
    pa = pytest.importorskip("pyarrow", reason="pip install 'kimberlite-storage[arrow]'")

    t = filled.stream(1).to_arrow()
    assert t.column_names == ["offset", "size", "payload", "prev_hash", "hash"]
    assert t.schema.field("offset").type == pa.uint64()
    assert t.schema.field("hash").type == pa.binary(32)
    assert t.num_rows == 200
    assert t.column("payload").to_pylist() == EVENTS
    assert t.column("prev_hash").null_count == 1
    assert t.column("hash").to_pylist()[-1] == filled.latest_chain_hash(1)


@pytest.mark.parametrize("method, module, extra", [
    ("to_pandas", "pandas", "pandas"), ("to_arrow", "pyarrow", "arrow")])
def test_missing_extra_says_what_to_install(filled, monkeypatch, method, module, extra):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=rf"pip install 'kimberlite-storage\[{extra}\]'"):
        getattr(filled.stream(1), method)()


# ---- summaries --------------------------------------------------------------------------------

def test_reprs(backend):
    s = backend.open()
    s.append_batch(1, [b"event1", b"event2"])
    r = repr(s)
    assert r.startswith(f"<kimberlite.{type(s).__name__} ") and "streams=1" in r
    if backend.is_disk:
        assert f"path={s.path!r}" in r
    v = repr(s.stream(1))
    assert "2 events" in v and "c0351898aed9916d" in v
    rec = s.read_records(1)[1]
    assert repr(rec).startswith("Record(offset=1, prev_hash='29663b9a32ee32c2...'")


def test_html_summaries_are_small_and_escaped(backend):
    s = backend.open()
    for sid in range(30):
        s.append_batch(sid, [b"<script>alert(1)</script>"] * 3)
    s.append_batch(100, [b"x" * 1000] * 1000)
    h = s._repr_html_()
    assert "31 streams" in h and "and 11 more streams" in h
    assert h.count("<tr>") == 1 + 20 + 1
    sv = s.stream(0)._repr_html_()
    assert "<script>" not in sv and html.escape("<script>") in sv
    big = s.stream(100)._repr_html_()
    assert "1000 events" in big
    assert big.count("<tr>") == 1 + 5 + 1 + 5  # header, first five, "⋮", last five
    assert len(big) < 10_000
    rec = s.read_records(0)[0]._repr_html_()
    assert "genesis" in rec and rec.count("<tr>") == 5 and "<script>" not in rec
    assert s.read_records(0)[0].compute_hash().hex() in rec
