"""Storage.checkpoint / latest_checkpoint / read_verified (SPEC §6), both backends."""

import os

import pytest

import kimberlite
from kimberlite import tlog
from kimberlite.testing import replace_payload

from test_tlog_merkle import ref_leaf, ref_mth
from test_tlog_storage import chain_hashes, events_for

SKEY, VKEY = tlog.generate_key("example.com/audit")


@pytest.fixture
def signer():
    return tlog.Signer(SKEY)


def test_checkpoint_signs_the_whole_durable_tree(backend, signer):
    s = backend.open(max_segment_size=700)
    evs = events_for(50)
    s.append_batch(7, evs, fsync=False)
    cp = s.checkpoint(7, signer)
    assert cp.origin == "example.com/audit/7"
    assert cp.tree_size == 50
    assert cp.root_hash == ref_mth([ref_leaf(h) for h in chain_hashes(evs)]) == s.tree_root(7)
    opened = tlog.open_checkpoint(cp.note, tlog.Verifier(VKEY), origin="example.com/audit/7")
    assert opened == cp
    assert s.latest_checkpoint(7) == cp
    assert s.latest_checkpoint(8) is None


def test_checkpoints_extend_and_are_kept_across_reopen(backend, signer):
    s = backend.open(max_segment_size=700)
    s.append_batch(1, events_for(10))
    cp1 = s.checkpoint(1, signer, origin="log.example/one")
    s.append_batch(1, events_for(25)[10:], fsync=False)
    cp2 = s.checkpoint(1, signer, origin="log.example/one")
    assert (cp1.tree_size, cp2.tree_size) == (10, 25)
    tlog.verify_consistency(10, 25, s.consistency_proof(1, 10, 25), cp1.root_hash, cp2.root_hash)
    again = s.checkpoint(1, signer, origin="log.example/one")  # same size: allowed
    assert again.tree_size == 25 and again.root_hash == cp2.root_hash
    assert s.latest_checkpoint(1) == again
    if backend.is_disk:
        s.close()
        d = backend.data_dir / "1"
        assert (d / "checkpoint").is_file()
        assert not (d / "checkpoint.tmp").exists()
        r = kimberlite.Storage(backend.data_dir, read_only=True)
        try:
            assert r.latest_checkpoint(1) == again
            with pytest.raises(kimberlite.StorageError, match="read-only"):
                r.checkpoint(1, signer)
        finally:
            r.close()


def test_rewritten_records_refuse_to_sign(backend, signer):
    s = backend.open(max_segment_size=700)
    s.append_batch(3, events_for(20))
    cp = s.checkpoint(3, signer)
    # The last record rewritten: its CRC is right and no later record links to it, so
    # only the tree (or a kept head) tells.
    replace_payload(s, 3, 19, b"forged")
    s.append_batch(3, [b"more"])
    with pytest.raises(kimberlite.CheckpointMismatchError, match="rewritten"):
        s.checkpoint(3, signer)
    assert s.latest_checkpoint(3) == cp


def test_whole_stream_replaced_refuses_to_sign(backend, signer):
    s = backend.open()
    s.append_batch(4, [b"a", b"b", b"c"])
    s.checkpoint(4, signer)
    other = kimberlite.MemoryStorage()
    other.append_batch(4, [b"x", b"y", b"z", b"w"])
    s._replace_segment_bytes(4, 0, other._segment_bytes(4, 0))
    assert s.next_offset(4) == 4
    with pytest.raises(kimberlite.CheckpointMismatchError) as ei:
        s.checkpoint(4, signer)
    assert isinstance(ei.value, kimberlite.ChainVerificationError)


def test_shorter_stream_and_other_origin_refuse(backend, signer):
    s = backend.open()
    s.append_batch(5, [b"a", b"b", b"c"])
    s.checkpoint(5, signer)
    with pytest.raises(kimberlite.CheckpointMismatchError, match="origin"):
        s.checkpoint(5, signer, origin="elsewhere/5")
    other = kimberlite.MemoryStorage()
    other.append_batch(5, [b"a", b"b"])
    s._replace_segment_bytes(5, 0, other._segment_bytes(5, 0))
    with pytest.raises(kimberlite.CheckpointMismatchError, match="cut back"):
        s.checkpoint(5, signer)


def test_checkpoint_argument_errors(backend, signer):
    s = backend.open()
    with pytest.raises(ValueError, match="no records"):
        s.checkpoint(1, signer)
    s.append_batch(1, [b"a"])
    with pytest.raises(TypeError):
        s.checkpoint(1, SKEY)
    with pytest.raises(TypeError):
        s.checkpoint(1, signer, origin=b"x")
    with pytest.raises(ValueError):
        s.checkpoint(1, signer, origin="two\nlines")
    assert s.latest_checkpoint(1) is None


def test_damaged_stored_checkpoint_is_reported(disk, signer):
    s = disk.open()
    s.append_batch(1, [b"a"])
    s.checkpoint(1, signer)
    path = disk.data_dir / "1" / "checkpoint"
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(tlog.VerificationError):
        s.latest_checkpoint(1)
    path.write_bytes(b"junk")
    with pytest.raises(tlog.MalformedNoteError):
        s.latest_checkpoint(1)


# ---- read_verified -------------------------------------------------------------------------

def test_read_verified_happy_paths(backend, signer):
    s = backend.open(max_segment_size=600)
    evs = events_for(40)
    s.append_batch(2, evs[:30])
    cp = s.checkpoint(2, signer)
    s.append_batch(2, evs[30:])
    assert s.read_verified(2, checkpoint=cp) == evs[:30]
    assert s.read_verified(2, 12, checkpoint=cp) == evs[12:30]
    assert s.read_verified(2, 5, 30, checkpoint=cp) == s.read_from(2, 5, 30)
    assert s.read_verified(2, 29, checkpoint=cp) == [evs[29]]
    assert s.read_verified(2, 30, checkpoint=cp) == []
    assert s.read_verified(2, 0, 0, checkpoint=cp) == []
    opened = tlog.open_checkpoint(cp.note, VKEY)
    assert s.read_verified(2, checkpoint=opened) == evs[:30]


def test_read_verified_argument_errors(backend, signer):
    s = backend.open()
    s.append_batch(2, [b"a"])
    cp = s.checkpoint(2, signer)
    with pytest.raises(TypeError):
        s.read_verified(2, checkpoint=cp.note)
    with pytest.raises(ValueError):
        s.read_verified(2, -1, checkpoint=cp)
    with pytest.raises(ValueError):
        s.read_verified(2, 0, -1, checkpoint=cp)
    with pytest.raises(TypeError):
        s.read_verified(2)


def test_read_verified_checkpoint_of_another_stream(backend, signer):
    s = backend.open()
    s.append_batch(1, [b"a", b"b", b"c"])
    s.append_batch(2, [b"x", b"y", b"z", b"w"])
    cp1 = s.checkpoint(1, signer)
    with pytest.raises(kimberlite.ChainVerificationError):
        s.read_verified(2, checkpoint=cp1)
    big = s.checkpoint(2, signer)
    with pytest.raises(kimberlite.ChainVerificationError, match="has 3"):
        s.read_verified(1, checkpoint=big)
    # same records, another origin than the stream's stored checkpoint
    s.append_batch(3, [b"a", b"b", b"c"])
    s.checkpoint(3, signer)
    with pytest.raises(kimberlite.ChainVerificationError, match="origin"):
        s.read_verified(3, checkpoint=cp1)


def test_read_verified_forged_root(backend, signer):
    s = backend.open()
    s.append_batch(1, [b"a", b"b", b"c"])
    forged = signer.sign_checkpoint("example.com/audit/1", 3, b"\x07" * 32)
    with pytest.raises(kimberlite.ChainVerificationError, match="root"):
        s.read_verified(1, checkpoint=forged)


def test_read_verified_tampered_records(backend, signer):
    s = backend.open(max_segment_size=600)
    evs = events_for(30)
    s.append_batch(6, evs)
    cp = s.checkpoint(6, signer)
    replace_payload(s, 6, 29, b"forged")  # the last: only the tree can tell
    with pytest.raises(kimberlite.ChainVerificationError):
        s.read_verified(6, 20, checkpoint=cp)
    s.append_batch(7, evs)
    cp7 = s.checkpoint(7, signer)
    replace_payload(s, 7, 10, b"forged")  # in the middle: the chain breaks
    with pytest.raises(kimberlite.ChainVerificationError):
        s.read_verified(7, 0, checkpoint=cp7)
    with pytest.raises(kimberlite.ChainVerificationError):
        s.read_verified(7, 11, checkpoint=cp7)


def test_readme_publishing_example_runs(tmp_path, monkeypatch):
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    section = readme.split("## Publishing and proving", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    scope["s"].close()
    assert (tmp_path / "public" / "log7" / "checkpoint").read_bytes() == scope["cp2"].note
    assert (tmp_path / "cp1.note").read_bytes() == scope["cp1"].note
