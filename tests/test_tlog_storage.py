"""Storage.tree_root / inclusion_proof / consistency_proof (SPEC §6) against the independent
hashlib RFC 9162 reference of test_tlog_merkle.py, on both backends and rotated segments."""

import hashlib
import random

import pytest

import kimberlite
from kimberlite import tlog

from test_tlog_merkle import ref_leaf, ref_mth, ref_path, ref_subproof

N = 300


def chain_hashes(events):
    out, prev = [], None
    for e in events:
        prev = hashlib.sha256((prev or b"") + e).digest()
        out.append(prev)
    return out


def events_for(n):
    return [b"event-%d-" % i + b"x" * (i % 17) for i in range(n)]


@pytest.fixture(params=["disk", "memory"])
def big(request, tmp_path):
    """A 300-record stream over many small segments, appended in uneven batches."""
    from helpers import Backend
    b = Backend(request.param, tmp_path)
    s = b.open(max_segment_size=1024)
    evs = events_for(N)
    i, rng = 0, random.Random(5)
    while i < N:
        k = rng.randint(1, 9)
        s.append_batch(7, evs[i:i + k], fsync=False)
        i += k
    assert s.segment_count(7) > 10
    yield s, [ref_leaf(h) for h in chain_hashes(evs)]
    b.close_all()


def test_every_root_and_a_dense_sample_of_proofs(big):
    s, leaves = big
    rng = random.Random(1)
    assert s.tree_root(7, 0) == hashlib.sha256(b"").digest()
    for n in range(1, N + 1):
        assert s.tree_root(7, n) == ref_mth(leaves[:n]), n
        for m in {0, n - 1, n // 2, rng.randrange(n)}:
            assert s.inclusion_proof(7, m, n) == ref_path(m, leaves[:n]), (m, n)
        for m in {1, n, (n + 1) // 2, rng.randint(1, n)}:
            want = [] if m == n else ref_subproof(m, leaves[:n], True)
            assert s.consistency_proof(7, m, n) == want, (m, n)
    assert s.tree_root(7) == ref_mth(leaves)
    assert s.inclusion_proof(7, 5) == ref_path(5, leaves)
    assert s.consistency_proof(7, 9) == ref_subproof(9, leaves, True)


def test_proofs_verify_with_tlog(big):
    s, leaves = big
    root = s.tree_root(7)
    for m in range(0, N, 7):
        tlog.verify_inclusion(leaves[m], m, N, s.inclusion_proof(7, m), root)
    for m in range(1, N, 11):
        tlog.verify_consistency(m, N, s.consistency_proof(7, m), s.tree_root(7, m), root)


def test_lazy_catch_up_follows_appends(backend):
    s = backend.open(max_segment_size=512)
    evs = events_for(60)
    for i in range(0, 60, 6):
        s.append_batch(1, evs[i:i + 6])
        leaves = [ref_leaf(h) for h in chain_hashes(evs[:i + 6])]
        assert s.tree_root(1) == ref_mth(leaves)
        assert s.inclusion_proof(1, i) == ref_path(i, leaves)


def test_tree_rebuilt_in_a_new_process_state(tmp_path):
    evs = events_for(40)
    with kimberlite.Storage(tmp_path / "d", max_segment_size=600) as s:
        s.append_batch(3, evs)
        root = s.tree_root(3)
    with kimberlite.Storage(tmp_path / "d", read_only=True) as r:
        assert r.tree_root(3) == root == ref_mth([ref_leaf(h) for h in chain_hashes(evs)])


def test_spec_vectors(backend):
    s = backend.open()
    s.append_batch(0, [b"event1", b"event2", b"event3"])
    leaf = [bytes.fromhex(h) for h in (
        "5be5e2dc53091c14c5db48c3ace1b79d9e6586b470cfc40bd1cf11d479b16003",
        "fc5f28ed108ed9bab385e83cba6f70e7603ba2b08758b3b00b681aa27e3623cf",
        "5a779d72c6abdf44cebc6afb01203752714899534420c9b8f1ea2e17d30f383d")]
    root2 = bytes.fromhex("21796c878398dd34f9c799bde6e2d1557a65b83f45f25376f16bae0257b901ae")
    root3 = bytes.fromhex("39f1336fb10972e633b68d2acec163fe94b31b2bdec6d5475960942d0e1585ed")
    assert s.tree_root(0, 1) == leaf[0]
    assert s.tree_root(0, 2) == root2
    assert s.tree_root(0) == s.tree_root(0, 3) == root3
    assert s.inclusion_proof(0, 2, 3) == [root2]
    assert s.inclusion_proof(0, 0, 2) == [leaf[1]]
    assert s.consistency_proof(0, 1, 3) == [leaf[1], leaf[2]]


def test_absent_stream(backend):
    s = backend.open()
    assert s.tree_root(9) == s.tree_root(9, 0) == hashlib.sha256(b"").digest()
    with pytest.raises(ValueError, match="tree_size"):
        s.inclusion_proof(9, 0)
    with pytest.raises(ValueError):
        s.consistency_proof(9, 1)


@pytest.mark.parametrize("call", [
    lambda s: s.tree_root(1, 6),
    lambda s: s.tree_root(1, -1),
    lambda s: s.tree_root(1, 2**64),
    lambda s: s.inclusion_proof(1, 5),
    lambda s: s.inclusion_proof(1, 3, 3),
    lambda s: s.inclusion_proof(1, 0, 0),
    lambda s: s.inclusion_proof(1, 0, 6),
    lambda s: s.inclusion_proof(1, -1),
    lambda s: s.consistency_proof(1, 0),
    lambda s: s.consistency_proof(1, 0, 3),
    lambda s: s.consistency_proof(1, 4, 3),
    lambda s: s.consistency_proof(1, 1, 6),
    lambda s: s.consistency_proof(1, 2**63),
])
def test_out_of_range_is_value_error(backend, call):
    s = backend.open()
    s.append_batch(1, [b"a", b"b", b"c", b"d", b"e"])
    with pytest.raises(ValueError):
        call(s)
    assert s.tree_root(1) == ref_mth([ref_leaf(h) for h in chain_hashes(
        [b"a", b"b", b"c", b"d", b"e"])])


@pytest.mark.parametrize("call", [
    lambda s: s.tree_root(1, 1.0),
    lambda s: s.tree_root("1"),
    lambda s: s.inclusion_proof(1, "0"),
    lambda s: s.consistency_proof(1, None),
])
def test_wrong_types_are_type_errors(backend, call):
    s = backend.open()
    s.append_batch(1, [b"a"])
    with pytest.raises(TypeError):
        call(s)


def test_closed_storage(backend):
    s = backend.open()
    s.close()
    with pytest.raises(ValueError):
        s.tree_root(1)


def test_tampered_records_raise(disk):
    from kimberlite.testing import replace_payload
    s = disk.open(max_segment_size=400)
    s.append_batch(2, events_for(30))
    s.close()
    replace_payload(disk.data_dir, 2, 10, b"forged")
    s = disk.open()
    with pytest.raises(kimberlite.ChainVerificationError):
        s.tree_root(2)
    # The link of record 11 is broken (record 10 was forged): sizes up to 10 — the records
    # whose hashes the links confirm — are answered, larger ones raise.
    with pytest.raises(kimberlite.ChainVerificationError):
        s.inclusion_proof(2, 0, 11)
    with pytest.raises(kimberlite.ChainVerificationError):
        s.tree_root(2, 11)
    want = [ref_leaf(h) for h in chain_hashes(events_for(30))]
    assert s.tree_root(2, 10) == ref_mth(want[:10])
    tlog.verify_inclusion(want[3], 3, 10, s.inclusion_proof(2, 3, 10), ref_mth(want[:10]))


def test_reader_tree_notices_records_rewritten_under_it(tmp_path):
    """A long-lived reader's tree is rebuilt when new records do not link to its last entry
    (the records under it were rewritten by another writer), never mixed with them."""
    from kimberlite.testing import replace_payload
    d = tmp_path / "d"
    with kimberlite.Storage(d) as w:
        w.append_batch(1, [b"r0", b"r1", b"r2", b"r3", b"r4"])
    r = kimberlite.Storage(d, read_only=True)
    try:
        before = r.tree_root(1)
        replace_payload(d, 1, 4, b"XX")  # same length: the segment's size is unchanged
        with kimberlite.Storage(d) as w2:
            w2.append_batch(1, [b"r5", b"r6", b"r7"])
            fresh = w2.tree_root(1)
            old_prefix = w2.tree_root(1, 5)
        assert old_prefix != before
        assert r.tree_root(1) == fresh == ref_mth(
            [ref_leaf(h) for h in chain_hashes([b"r0", b"r1", b"r2", b"r3", b"XX", b"r5", b"r6", b"r7"])])
    finally:
        r.close()


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=6), min_size=1,
                        max_size=12),
       seg=st.integers(min_value=60, max_value=600), data=st.data())
def test_tree_matches_reference_for_any_batches(batches, seg, data):
    """Random batches and segment sizes, tree calls interleaved with appends at random."""
    s = kimberlite.MemoryStorage(max_segment_size=seg)
    evs = []
    for batch in batches:
        s.append_batch(1, batch, fsync=False)
        evs += batch
        if data.draw(st.booleans()):
            n = data.draw(st.integers(min_value=1, max_value=len(evs)))
            leaves = [ref_leaf(h) for h in chain_hashes(evs[:n])]
            assert s.tree_root(1, n) == ref_mth(leaves)
            m = data.draw(st.integers(min_value=0, max_value=n - 1))
            assert s.inclusion_proof(1, m, n) == ref_path(m, leaves)
            old = data.draw(st.integers(min_value=1, max_value=n))
            assert s.consistency_proof(1, old, n) == ([] if old == n else
                                                      ref_subproof(old, leaves, True))
    assert s.tree_root(1) == ref_mth([ref_leaf(h) for h in chain_hashes(evs)])
