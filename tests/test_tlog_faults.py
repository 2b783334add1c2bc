"""Storage.checkpoint under the fault plan: each I/O call of a checkpoint fails in turn. A
failed checkpoint leaves a stored checkpoint that is intact: the old one, or — when only the
final directory sync failed, after the rename — the new one, which extends it (the error is
raised all the same: its durability is unknown). Once the cause is gone the next checkpoint
extends what is stored, and every record is there."""
import errno
import shutil

import pytest

import kimberlite as km
from kimberlite import tlog

SKEY, VKEY = tlog.generate_key("faults.example")


def _template(tmp_path):
    d = tmp_path / "template"
    with km.Storage(d, max_segment_size=300) as s:
        s.append_batch(1, [b"a%d" % i for i in range(10)])
        s.checkpoint(1, tlog.Signer(SKEY))
        for i in range(4):
            s.append_batch(1, [b"b%d-%d" % (i, j) for j in range(3)], fsync=False)
    return d


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
def test_every_checkpoint_io_call_fails_in_turn(tmp_path, err):
    template = _template(tmp_path)
    signer = tlog.Signer(SKEY)
    d = tmp_path / "count"
    shutil.copytree(template, d)
    with km.Storage(d) as s:
        s.next_offset(1)  # load the stream first: only the checkpoint's calls are counted
        s._set_fault("all", 0)
        s.checkpoint(1, signer)
        calls, _ = s._io_calls()
    assert calls >= 5, calls  # syncs, the checkpoint file's open, write, sync, rename, dir
    for k in range(1, calls + 1):
        d = tmp_path / f"run{k}"
        shutil.copytree(template, d)
        s = km.Storage(d)
        old = s.latest_checkpoint(1)
        assert old.tree_size == 10
        s.next_offset(1)
        s._set_fault("all", k, errno=err)
        try:
            cp = s.checkpoint(1, signer)
        except km.StorageIOError as e:
            assert e.errno == err
            cp = None
        s._set_fault("", 0)
        stored = s.latest_checkpoint(1)
        if cp is None:
            assert stored == old or (stored.tree_size == 22 and k == calls), k
            if stored != old:  # the last call (the directory sync) failed after the rename
                tlog.verify_consistency(10, 22, s.consistency_proof(1, 10, 22), old.root_hash,
                                        stored.root_hash)
        else:
            assert stored == cp and cp.tree_size == 22
        again = s.checkpoint(1, signer)
        assert again.tree_size == 22
        tlog.open_checkpoint(again.note, VKEY)
        s.close()
        with km.Storage(d, read_only=True) as r:
            assert r.latest_checkpoint(1) == again
            assert r.next_offset(1) == 22 and r.tree_root(1) == again.root_hash
            assert r.read_verified(1, checkpoint=again)[-1] == b"b3-2"
