"""Several threads on one Storage: appends to one stream and to separate streams while
others read. Nothing lost, duplicated or reordered; batches stay whole; the chain verifies."""
import threading

import pytest

from helpers import codec
import kimberlite as km

WRITERS = 4
BATCHES = 60
BATCH = 5


def _event(w, b, i):
    return b"w%d-b%03d-i%d|" % (w, b, i) + b"p" * ((w * 7 + b + i) % 50)


def _parse(e):
    head = e.split(b"|", 1)[0].decode()
    w, b, i = head.split("-")
    return int(w[1:]), int(b[1:]), int(i[1:])


def _run_threads(targets):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
        return run
    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "thread hung"
    if errors:
        raise errors[0]


def _open(kind, tmp_path):
    if kind == "disk":
        return km.Storage(tmp_path / "d", max_segment_size=2000)
    return km.MemoryStorage(max_segment_size=2000)


def _check_prefix_consistent(events):
    """Per writer, batches appear in order, each batch whole and contiguous."""
    last = {}
    i = 0
    while i < len(events):
        w, b, k = _parse(events[i])
        assert k == 0, f"batch split at {i}"
        assert b == last.get(w, -1) + 1, f"writer {w}: batch {b} after {last.get(w)}"
        chunk = events[i:i + BATCH]
        if len(chunk) < BATCH:
            raise AssertionError(f"partial batch visible at {i}")
        assert chunk == [_event(w, b, j) for j in range(BATCH)]
        last[w] = b
        i += BATCH
    return last


@pytest.mark.parametrize("kind", ["disk", "memory"])
def test_threads_append_to_one_stream_while_reading(tmp_path, kind):
    import time
    s = _open(kind, tmp_path)
    done = threading.Event()
    mid_reads = [0]     # reads that saw the stream part-way: truly concurrent with writers
    total = WRITERS * BATCHES * BATCH

    def writer(w):
        def run():
            for b in range(BATCHES):
                n = s.append_batch(1, [_event(w, b, i) for i in range(BATCH)], fsync=(b % 20 == 0))
                assert n % BATCH == 0
                time.sleep(0.0002)   # let the readers in
        return run

    def reader():
        while not done.is_set():
            n = s.next_offset(1)
            got = s.read_from(1)
            assert len(got) >= n
            _check_prefix_consistent(got)
            if got:
                tail = s.read_records(1, len(got) - 1)
                assert tail and tail[0].offset == len(got) - 1
            if 0 < len(got) < total:
                mid_reads[0] += 1

    def writers_then_done():
        try:
            _run_threads([writer(w) for w in range(WRITERS)])
        finally:
            done.set()

    try:
        _run_threads([writers_then_done, reader, reader])
        events = s.read_from(1)
        assert len(events) == WRITERS * BATCHES * BATCH
        assert len(set(events)) == len(events)
        last = _check_prefix_consistent(events)
        assert last == {w: BATCHES - 1 for w in range(WRITERS)}
        assert s.verify(1) == (len(events), codec.head_hash(events))
        assert mid_reads[0] > 0, "no read ran while the writers were appending"
        if kind == "disk":
            s.close()
            with km.Storage(tmp_path / "d", max_segment_size=2000) as again:
                assert again.read_from(1) == events
                assert again.verify(1) == (len(events), codec.head_hash(events))
    finally:
        s.close()


@pytest.mark.parametrize("kind", ["disk", "memory"])
def test_threads_append_to_separate_streams(tmp_path, kind):
    s = _open(kind, tmp_path)
    done = threading.Event()

    def writer(w):
        def run():
            for b in range(BATCHES):
                batch = [_event(w, b, i) for i in range(BATCH)]
                assert s.append_batch(100 + w, batch, expected_offset=b * BATCH, fsync=False) == (b + 1) * BATCH
        return run

    def reader():
        while not done.is_set():
            for w in range(WRITERS):
                got = s.read_from(100 + w)
                assert got == [_event(w, b, i) for b in range(len(got) // BATCH) for i in range(BATCH)]
                s.verify(100 + w)

    def writers_then_done():
        try:
            _run_threads([writer(w) for w in range(WRITERS)])
        finally:
            done.set()

    try:
        _run_threads([writers_then_done, reader])
        assert s.streams() == [100 + w for w in range(WRITERS)]
        for w in range(WRITERS):
            expected = [_event(w, b, i) for b in range(BATCHES) for i in range(BATCH)]
            assert s.read_from(100 + w) == expected
            assert s.verify(100 + w) == (len(expected), codec.head_hash(expected))
            assert s.segment_count(100 + w) > 1
    finally:
        s.close()


def test_reader_storage_in_thread_while_writer_appends(tmp_path):
    """A read-only Storage polled from another thread sees whole batches only."""
    w = km.Storage(tmp_path / "d", max_segment_size=3000)
    w.append_batch(1, [_event(0, 0, i) for i in range(BATCH)])
    r = km.Storage(tmp_path / "d", read_only=True, max_segment_size=3000)
    done = threading.Event()

    def write():
        try:
            for b in range(1, 150):
                w.append_batch(1, [_event(0, b, i) for i in range(BATCH)], fsync=False)
        finally:
            done.set()

    def read():
        while not done.is_set():
            got = r.read_from(1)
            # a reader may see a batch's records arrive one by one (no batch frame), but
            # only whole records, in order, with the right contents
            assert got == [_event(0, k // BATCH, k % BATCH) for k in range(len(got))]

    try:
        _run_threads([write, read])
        assert r.next_offset(1) == 150 * BATCH
        assert r.verify(1)[0] == 150 * BATCH
    finally:
        w.close()
        r.close()


def test_close_while_other_threads_use_storage(tmp_path):
    """Closing under concurrent use raises ValueError in the others, never crashes."""
    s = km.Storage(tmp_path / "d")
    s.append_batch(1, [b"seed"])
    stop = threading.Event()
    outcomes = []

    def user():
        while not stop.is_set():
            try:
                s.append_batch(1, [b"x"], fsync=False)
                s.read_from(1, max(0, s.next_offset(1) - 3))
            except ValueError:
                outcomes.append("closed")
                return

    def closer():
        import time
        time.sleep(0.05)
        s.close()
        stop.set()

    _run_threads([user, user, closer])
    assert s.closed
    with km.Storage(tmp_path / "d") as again:
        n, head = again.verify(1)
        assert n >= 1


def _max_gap_while(fn):
    """Run fn in a thread; return (largest pause of this thread's Python loop, fn's duration)."""
    import time
    done = threading.Event()
    t_run = [0.0]

    def work():
        t0 = time.perf_counter()
        fn()
        t_run[0] = time.perf_counter() - t0
        done.set()
    t = threading.Thread(target=work)
    last = time.perf_counter()
    gap = 0.0
    t.start()
    while not done.is_set():
        now = time.perf_counter()
        gap = max(gap, now - last)
        last = now
    t.join()
    return gap, t_run[0]


@pytest.mark.parametrize("op", ["chain_hash", "verify", "read_from", "append"])
def test_gil_released_during_long_operations(tmp_path, op):
    """SPEC §3: the GIL is released during file I/O, syncing, hashing and checksumming, so
    another Python thread keeps running while a long call is in C."""
    big = b"g" * (48 << 20)
    s = km.Storage(tmp_path / "gil")
    try:
        if op in ("verify", "read_from"):
            for _ in range(48):
                s.append_batch(1, [b"y" * (1 << 20)], fsync=False)
        calls = {
            "chain_hash": lambda: km.chain_hash(None, big),
            "verify": lambda: s.verify(1),
            "read_from": lambda: s.read_from(1),
            "append": lambda: s.append_batch(2, [big], fsync=True),
        }
        # best of three: a busy machine may pause this thread once, but a call that holds
        # the GIL pauses it for its whole duration every time
        results = []
        for _ in range(3):
            gap, took = _max_gap_while(calls[op])
            assert took > 0.02, "operation too short to measure"
            results.append((gap, took))
            if gap < took / 2:
                break
        else:
            raise AssertionError(f"the calling thread held the GIL: (pause, duration) = {results}")
    finally:
        s.close()


@pytest.mark.parametrize("kind", ["disk", "memory"])
def test_events_iterable_may_call_back_into_storage(tmp_path, kind):
    """The events iterable runs before any lock is taken: a generator that reads the same
    Storage neither deadlocks nor sees a half-written batch."""
    s = _open(kind, tmp_path)
    s.append_batch(1, [b"x"])
    seen = []

    def gen():
        yield b"a"
        seen.append((s.next_offset(1), s.read_from(1)))
        yield b"b"
    result = []
    t = threading.Thread(target=lambda: result.append(s.append_batch(1, gen())), daemon=True)
    t.start()
    t.join(10)
    try:
        assert not t.is_alive(), "append_batch deadlocked on a re-entrant events iterable"
        assert result == [3]
        assert seen == [(1, [b"x"])]
        assert s.read_from(1) == [b"x", b"a", b"b"]
    finally:
        if not t.is_alive():
            s.close()
