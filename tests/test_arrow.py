"""Arrow, pandas, DuckDB and Polars over a stream (kimberlite/_arrow.py, csrc/columns.c).

Every result is compared with read_from on streams with rotated segments (a small
max_segment_size), empty payloads and arbitrary binary payloads, on both backends.
verify_range and segment_bounds are tested here too; kimberlite.dask in test_dask.py.
"""
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, strategies as st

import kimberlite
from kimberlite import testing as kt

pa = pytest.importorskip("pyarrow", reason="pip install 'kimberlite-storage[arrow]'")
pd = pytest.importorskip("pandas", reason="pip install 'kimberlite-storage[pandas]'")
duckdb = pytest.importorskip("duckdb", reason="pip install 'kimberlite-storage[sql]'")
pl = pytest.importorskip("polars", reason="pip install 'kimberlite-storage[sql]'")

# binary payloads of every byte value, empty ones among them, across several segments
EVENTS = [bytes((i * 7 + j) % 256 for j in range(i % 41)) for i in range(600)]


@pytest.fixture
def filled(backend):
    s = backend.open(max_segment_size=2048)
    for i in range(0, len(EVENTS), 30):
        s.append_batch(1, EVENTS[i:i + 30])
    assert s.segment_count(1) > 3 and b"" in EVENTS
    return s


def hashes(s, sid):
    recs = s.read_records(sid)
    return [r.prev_hash for r in recs], [r.compute_hash() for r in recs]


# ---- to_arrow / to_pandas --------------------------------------------------------------

def test_to_arrow_equals_read_from(filled):
    t = filled.stream(1).to_arrow()
    prev, own = hashes(filled, 1)
    assert t.column_names == ["offset", "size", "payload", "prev_hash", "hash"]
    assert t.schema.field("payload").type == pa.large_binary()
    assert t.column("payload").to_pylist() == filled.read_from(1)
    assert t.column("offset").to_pylist() == list(range(len(EVENTS)))
    assert t.column("size").to_pylist() == [len(e) for e in EVENTS]
    assert t.column("prev_hash").to_pylist() == prev
    assert t.column("hash").to_pylist() == own
    t.validate(full=True)


@pytest.mark.parametrize("start, stop", [(0, 1), (1, 2), (17, 301), (599, 600), (600, 600),
                                         (5, 5), (550, 10**9), (10**9, None)])
def test_to_arrow_ranges(filled, start, stop):
    t = filled.stream(1).to_arrow(start, stop)
    want = EVENTS[start:stop]
    prev, own = hashes(filled, 1)
    assert t.column("payload").to_pylist() == want
    assert t.column("offset").to_pylist() == list(range(start, start + len(want)))
    assert t.column("prev_hash").to_pylist() == prev[start:stop]
    assert t.column("hash").to_pylist() == own[start:stop]
    t.validate(full=True)


def test_columns_projection_and_order(filled):
    t = filled.stream(1).to_arrow(columns=["hash", "payload"])
    assert t.column_names == ["hash", "payload"]
    assert t.column("payload").to_pylist() == EVENTS
    df = filled.stream(1).to_pandas(10, 20, columns=["size"])
    assert list(df.columns) == ["size"] and df["size"].tolist() == [len(e) for e in EVENTS[10:20]]


@pytest.mark.parametrize("columns, error", [
    (["nope"], ValueError), (["payload", "payload"], ValueError), ([], ValueError),
    ("payload", TypeError)])
def test_bad_columns_say_what_is_wrong(filled, columns, error):
    with pytest.raises(error, match="column"):
        filled.stream(1).to_arrow(columns=columns)
    with pytest.raises(error, match="column"):
        filled.stream(1).to_arrow_reader(columns=columns)


@pytest.mark.parametrize("kw, error", [
    (dict(start=-1), ValueError), (dict(start=3, stop=2), ValueError),
    (dict(start="0"), TypeError), (dict(stop=1.5), TypeError)])
def test_bad_ranges_say_what_is_wrong(filled, kw, error):
    with pytest.raises(error):
        filled.stream(1).to_arrow(**kw)
    with pytest.raises(error):
        filled.stream(1).to_arrow_reader(**kw)


def test_to_pandas_binary_columns_are_arrow_backed(filled):
    df = filled.stream(1).to_pandas()
    assert df["payload"].dtype == pd.ArrowDtype(pa.binary())
    assert df["hash"].dtype == pd.ArrowDtype(pa.binary(32))
    assert df["offset"].dtype == "int64" and df["size"].dtype == "int64"
    assert df["payload"].tolist() == EVENTS
    # pandas' and Dask's string inference leave Arrow binary columns alone
    dd = pytest.importorskip("dask.dataframe", reason="pip install 'kimberlite-storage[dask]'")
    ddf = dd.from_pandas(df, npartitions=3)
    assert ddf["payload"].dtype == pd.ArrowDtype(pa.binary())
    assert ddf.compute()["payload"].tolist() == EVENTS


def test_empty_and_missing_streams(backend):
    s = backend.open()
    for sid in (1, 2):
        if sid == 2:
            s.append_batch(2, [b""])
        t = s.stream(sid).to_arrow(5)
        assert t.num_rows == 0 and t.column_names[2] == "payload"
        assert pa.table(s.stream(sid)).num_rows == (1 if sid == 2 else 0) or sid == 2
    assert s.stream(2).to_arrow().column("payload").to_pylist() == [b""]
    assert s.stream(1).to_pandas().empty


def test_buffers_are_shared_not_copied(filled):
    t = filled.stream(1).to_arrow(columns=["payload", "prev_hash", "hash"])
    payload = t.column("payload").chunks[0]
    assert payload.buffers()[2].size == sum(map(len, EVENTS))  # one buffer, exact size
    # prev_hash and hash are two views of one buffer, one hash apart
    ph, h = t.column("prev_hash").chunks[0].buffers()[1], t.column("hash").chunks[0].buffers()[1]
    assert ph.address == h.address


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=60),
       st.integers(1, 4000), st.integers(0, 70), st.integers(0, 70))
def test_reader_matches_read_from(events, chunk, a, b):
    s = kimberlite.MemoryStorage(max_segment_size=512)
    for i in range(0, len(events), 7):
        s.append_batch(3, events[i:i + 7])
    start, stop = min(a, b), max(a, b)
    batches = list(s.stream(3).to_arrow_reader(start, stop, chunk_bytes=chunk,
                                               columns=["offset", "payload", "prev_hash"]))
    got = [p for bt in batches for p in bt.column("payload").to_pylist()]
    assert got == events[start:stop]
    offs = [o for bt in batches for o in bt.column("offset").to_pylist()]
    assert offs == list(range(start, start + len(got)))
    prev = [r.prev_hash for r in s.read_records(3)][start:stop]
    assert [p for bt in batches for p in bt.column("prev_hash").to_pylist()] == prev
    for bt in batches[:-1]:  # each batch stops at the first event that reaches the budget
        sizes = [len(p) for p in bt.column("payload").to_pylist()]
        assert sum(sizes[:-1]) < chunk


# ---- readers and the PyCapsule stream protocol -------------------------------------------

def test_reader_is_single_use_and_the_stream_is_not(filled):
    r = filled.stream(1).to_arrow_reader(chunk_bytes=500)
    assert r.schema.names == ["offset", "payload"]
    assert r.schema.field("payload").type == pa.binary()
    assert r.read_all().column("payload").to_pylist() == EVENTS
    assert r.read_all().num_rows == 0  # consumed: documented single-use
    stream = filled.stream(1)
    assert pa.table(stream).column("payload").to_pylist() == EVENTS
    assert pa.table(stream).column("payload").to_pylist() == EVENTS  # a new reader each time


def test_reader_stop_is_fixed_when_made(filled):
    r = filled.stream(1).to_arrow_reader(chunk_bytes=100)
    filled.append_batch(1, [b"later"])
    assert r.read_all().num_rows == len(EVENTS)
    assert pa.table(filled.stream(1)).num_rows == len(EVENTS) + 1


def test_large_budget_uses_large_binary(filled):
    r = filled.stream(1).to_arrow_reader(chunk_bytes=3 << 30)
    assert r.schema.field("payload").type == pa.large_binary()
    assert r.read_all().column("payload").to_pylist() == EVENTS


def test_duckdb_reads_the_stream(filled):
    stream = filled.stream(1)  # noqa: F841 - found by name by DuckDB's replacement scan
    got = duckdb.sql('select "offset", payload from stream order by "offset"').fetchall()
    assert got == [(i, e) for i, e in enumerate(EVENTS)]
    n, total, empty = duckdb.sql(
        "select count(*), sum(octet_length(payload)), count(*) filter (octet_length(payload) = 0) "
        "from stream").fetchall()[0]
    assert (n, total, empty) == (len(EVENTS), sum(map(len, EVENTS)), EVENTS.count(b""))
    reader = filled.stream(1).to_arrow_reader(columns=["offset", "prev_hash"])  # noqa: F841
    prev, _ = hashes(filled, 1)
    assert [r[0] for r in duckdb.sql('select prev_hash from reader order by "offset"')
            .fetchall()] == prev


def test_polars_reads_the_stream(filled):
    stream = filled.stream(1)
    lazy = pl.scan_arrow_c_stream(stream).filter(pl.col("offset") >= 100).collect()
    assert lazy["payload"].to_list() == EVENTS[100:]
    df = pl.from_arrow(stream.to_arrow_reader(columns=["offset", "size", "payload"]))
    assert df.columns == ["offset", "size", "payload"]
    assert df["payload"].to_list() == EVENTS
    assert pl.DataFrame(stream.to_arrow(columns=["payload"]))["payload"].to_list() == EVENTS


def test_requested_schema_is_honoured(filled):
    want = pa.schema([pa.field("offset", pa.uint64(), False),
                      pa.field("payload", pa.large_binary(), False)])
    capsule = filled.stream(1).__arrow_c_stream__(want.__arrow_c_schema__())
    t = pa.RecordBatchReader._import_from_c_capsule(capsule).read_all()
    assert t.schema.field("payload").type == pa.large_binary()
    assert t.column("payload").to_pylist() == EVENTS


# ---- errors: a damaged or altered record is never returned ----------------------------------

def test_tampering_is_raised_by_every_consumer(disk):
    s = disk.open(max_segment_size=2048)
    for i in range(0, len(EVENTS), 30):
        s.append_batch(1, EVENTS[i:i + 30])
    s.close()
    kt.replace_payload(disk.data_dir, 1, 250, b"forged")
    s = disk.open(read_only=True)
    with pytest.raises(kimberlite.ChainVerificationError) as e:
        s.stream(1).to_arrow()
    assert e.value.offset == 251
    assert s.stream(1).to_arrow(0, 251).column("payload").to_pylist()[-1] == b"forged"
    with pytest.raises(kimberlite.ChainVerificationError):
        s.stream(1).to_pandas(200)
    with pytest.raises(kimberlite.ChainVerificationError):  # a reader raises as it is
        s.stream(1).to_arrow_reader().read_all()
    # through the C stream interface the consumer raises its own error, with the message
    with pytest.raises(pa.ArrowInvalid, match="hash chain broken at offset 251"):
        pa.table(s.stream(1))
    stream = s.stream(1)  # noqa: F841
    with pytest.raises(Exception, match="hash chain broken at offset 251"):
        duckdb.sql("select count(*) from stream").fetchall()


def test_closed_storage(filled):
    stream = filled.stream(1)
    filled.close()
    for call in (stream.to_arrow, stream.to_arrow_reader, lambda: filled.verify_range(1),
                 lambda: filled.segment_bounds(1)):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_missing_pyarrow_names_the_extra(filled, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    for method in ("to_arrow", "to_arrow_reader", "__arrow_c_stream__"):
        with pytest.raises(ImportError, match=r"pip install 'kimberlite-storage\[arrow\]'"):
            getattr(filled.stream(1), method)()


# ---- verify_range and segment_bounds ---------------------------------------------------------

def test_segment_bounds(filled):
    bounds = filled.segment_bounds(1)
    assert len(bounds) == filled.segment_count(1)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(EVENTS)
    for (a0, b0, _), (a1, _, _) in zip(bounds, bounds[1:]):
        assert b0 == a1 and a0 <= b0
    sizes = [sum(len(e) + kimberlite.RECORD_OVERHEAD for e in EVENTS[a:b]) for a, b, _ in bounds]
    assert [n for _, _, n in bounds] == sizes
    assert filled.segment_bounds(99) == []
    with pytest.raises(ValueError):
        filled.segment_bounds(-1)


def test_verify_range_chains_into_verify(filled):
    n, head = filled.verify(1)
    prev, own = hashes(filled, 1)
    assert filled.verify_range(1) == (n, None, head)
    assert filled.verify_range(1, 0, 10**12) == (n, None, head)
    cuts = [0, 1, 77, 300, 301, 599, 600]
    for a, b in zip(cuts, cuts[1:]):
        count, first, last = filled.verify_range(1, a, b)
        assert count == b - a
        assert first == prev[a] and last == own[b - 1]
    assert filled.verify_range(1, 600) == (0, None, None)
    assert filled.verify_range(1, 5, 5) == (0, None, None)
    assert filled.verify_range(42) == (0, None, None)
    with pytest.raises(ValueError, match="stop"):
        filled.verify_range(1, 5, 4)
    with pytest.raises(TypeError):
        filled.verify_range(1, "0")


@pytest.mark.parametrize("where, bad", [(100, 101), (599, None)])
def test_verify_range_finds_tampering(disk, where, bad):
    s = disk.open(max_segment_size=2048)
    for i in range(0, len(EVENTS), 30):
        s.append_batch(1, EVENTS[i:i + 30])
    head = s.latest_chain_hash(1)
    s.close()
    kt.replace_payload(disk.data_dir, 1, where, b"forged")
    s = disk.open(read_only=True)
    if bad is None:  # the last record: only the trusted head tells
        assert s.verify_range(1)[2] != head
        return
    with pytest.raises(kimberlite.ChainVerificationError) as e:
        s.verify_range(1, 50, 200)
    assert e.value.offset == bad
    assert s.verify_range(1, 0, where + 1)[0] == where + 1  # up to the forged one: intact
    assert s.verify_range(1, bad + 1)[0] == len(EVENTS) - bad - 1


def test_verify_range_finds_bit_rot(disk):
    s = disk.open(max_segment_size=2048)
    for i in range(0, len(EVENTS), 30):
        s.append_batch(1, EVENTS[i:i + 30])
    s.close()
    kt.flip_bit(disk.data_dir, 1, 333)
    s = disk.open(read_only=True)
    with pytest.raises(kimberlite.CorruptedRecordError) as e:
        s.verify_range(1, 300, 400)
    assert e.value.offset == 333


# ---- memory: a stream through DuckDB in bounded memory ----------------------------------------

CHILD = textwrap.dedent("""
    import os, sys
    import duckdb, pyarrow, kimberlite
    s = kimberlite.Storage(sys.argv[1], read_only=True)
    stream = s.stream(1)
    duckdb.execute("set enable_progress_bar = false")
    def status(key):  # kB in /proc/self/status
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith(key + ":"))
    # The peak of this process's memory (VmHWM), reset to the current RSS first; ru_maxrss
    # would include the parent's RSS at fork time (Linux carries it across exec).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS")
    n, total = duckdb.sql("select count(*), sum(octet_length(payload)) from stream").fetchall()[0]
    peak = status("VmHWM")
    print(n, total, peak - base)
""")


def test_duckdb_streams_in_bounded_memory(tmp_path):
    """A 192 MiB stream through DuckDB: peak RSS stays far below the stream's size (the
    reader hands over 4 MiB batches; the whole stream is never in memory). The stream is
    written here and read in a fresh process, whose peak RSS (VmHWM) is reset before the
    query."""
    s = kimberlite.Storage(tmp_path / "d")
    ev = os.urandom(4096)
    for _ in range(24):
        s.append_batch(1, [ev] * 2048, fsync=False)  # 24 x 8 MiB = 192 MiB
    s.close()
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "d")], check=True,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    n, total, growth = map(int, out.stdout.split()[-3:])
    assert (n, total) == (24 * 2048, 24 * 2048 * 4096)
    assert growth < 64 << 20, f"peak RSS grew by {growth >> 20} MiB"


# ---- ranges stop at stop, and read beside known damage -------------------------------------

def test_range_ending_in_an_empty_record_stops_at_stop(disk):
    # bit rot in record 2, right after an empty record 1: [0, 2) is intact and reads
    s = disk.open()
    s.append_batch(1, [b"a" * 10, b"", b"b" * 10, b"c" * 10, b"d" * 10])
    s.close()
    kt.flip_bit(disk.data_dir, 1, 2)
    s = disk.open(read_only=True)
    assert s.verify_range(1, 0, 2)[0] == 2
    assert s.verify_range(1, 1, 2)[0] == 1
    assert s.stream(1).to_arrow(0, 2).column("payload").to_pylist() == [b"a" * 10, b""]
    assert s.stream(1).to_arrow_reader(1, 2).read_all().column("payload").to_pylist() == [b""]
    with pytest.raises(kimberlite.CorruptedRecordError) as e:
        s.verify_range(1, 0, 3)
    assert e.value.offset == 2
    assert s.verify_range(1, 0, 2)[0] == 2  # and still once the damage is known


def test_intact_prefix_reads_once_damage_is_known(disk):
    s = disk.open()  # one segment: damage hides where the stream ends
    for i in range(0, len(EVENTS), 30):
        s.append_batch(1, EVENTS[i:i + 30])
    s.close()
    kt.flip_bit(disk.data_dir, 1, 50)
    s = disk.open(read_only=True)
    early = s.stream(1)  # made before the damage is known
    with pytest.raises(kimberlite.CorruptedRecordError):
        s.verify_range(1)
    with pytest.raises(kimberlite.CorruptedRecordError):  # where the stream ends is unknown
        len(early)
    assert early.to_arrow(0, 3).num_rows == 3
    stream = s.stream(1)  # and made after
    assert s.verify_range(1, 0, 10)[0] == 10
    for a, b in [(0, 10), (5, 50)]:
        want = EVENTS[a:b]
        assert stream.to_arrow(a, b).column("payload").to_pylist() == want
        assert stream.to_arrow_reader(a, b, chunk_bytes=64).read_all() \
            .column("payload").to_pylist() == want
        assert [bytes(p) for p in stream.to_pandas(a, b)["payload"]] == want
    for a, b in [(0, 51), (40, 1000), (0, None)]:  # ranges that reach the damage raise it
        with pytest.raises(kimberlite.CorruptedRecordError) as e:
            stream.to_arrow(a, b)
        assert e.value.offset == 50
        with pytest.raises(kimberlite.CorruptedRecordError):
            stream.to_arrow_reader(a, b).read_all()
        with pytest.raises(kimberlite.CorruptedRecordError):
            stream.to_pandas(a, b)
