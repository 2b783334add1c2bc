"""Storage.export_tiles (SPEC §6) read back by a tiny C2SP tlog-tiles client written here."""
import hashlib
import os

import pytest

import kimberlite
from kimberlite import tlog

from test_tlog_merkle import ref_leaf, ref_mth, ref_path, ref_subproof
from test_tlog_storage import chain_hashes, events_for

SKEY, VKEY = tlog.generate_key("tiles.example")


def tile_name(n):
    """C2SP tlog-tiles index encoding: three-digit groups, all but the last prefixed with x."""
    s = "%d" % n
    s = "0" * (-len(s) % 3) + s
    groups = [s[i:i + 3] for i in range(0, len(s), 3)]
    return "/".join(["x" + g for g in groups[:-1]] + [groups[-1]])


class TileClient:
    """Fetches from a static tlog-tiles directory; checks everything against the checkpoint."""

    def __init__(self, root, vkey):
        self.root = root
        self.cp = tlog.open_checkpoint(self.get("checkpoint"), vkey)
        self.n = self.cp.tree_size

    def get(self, rel):
        with open(os.path.join(self.root, *rel.split("/")), "rb") as f:
            return f.read()

    def tile(self, level, index, width_of_row):
        """The hashes of tile (level, index): full, or partial of the right width."""
        full = width_of_row // 256
        if index < full:
            name, width = f"tile/{level}/{tile_name(index)}", 256
        else:
            width = width_of_row % 256
            name = f"tile/{level}/{tile_name(index)}.p/{width}"
        data = self.get(name)
        assert len(data) == 32 * width, name
        return [data[i:i + 32] for i in range(0, len(data), 32)]

    def row(self, level):
        w = self.n >> (8 * level)
        out = []
        for t in range((w + 255) // 256):
            out += self.tile(level, t, w)
        return out

    def entries(self):
        out = []
        for t in range((self.n + 255) // 256):
            width = 256 if (t + 1) * 256 <= self.n else self.n % 256
            name = f"tile/entries/{tile_name(t)}" + ("" if width == 256 else f".p/{width}")
            data, pos = self.get(name), 0
            while pos < len(data):
                k = int.from_bytes(data[pos:pos + 2], "big")
                out.append(data[pos + 2:pos + 2 + k])
                pos += 2 + k
        return out

    def leaves(self):
        """Level-0 hashes, each upper tile checked against the level below, the root against
        the checkpoint."""
        leaves = self.row(0)
        below, level = leaves, 1
        while self.n >> (8 * level):
            upper = self.row(level)
            for j, h in enumerate(upper):
                assert h == ref_mth(below[256 * j:256 * j + 256]), (level, j)
            below, level = upper, level + 1
        assert ref_mth(leaves) == self.cp.root_hash
        return leaves


@pytest.mark.parametrize("n", [1, 5, 255, 256, 257, 600])
def test_export_read_back(backend, tmp_path, n):
    s = backend.open(max_segment_size=4096)
    evs = events_for(n + 3)
    s.append_batch(1, evs[:n])
    cp = s.checkpoint(1, tlog.Signer(SKEY))
    s.append_batch(1, evs[n:])  # records after the checkpoint are not exported
    out = tmp_path / "tiles"
    s.export_tiles(1, out, cp)
    c = TileClient(out, VKEY)
    assert c.cp == cp
    hashes = chain_hashes(evs[:n])
    assert c.entries() == hashes
    leaves = c.leaves()
    assert leaves == [ref_leaf(h) for h in hashes]
    for m in {0, n // 2, n - 1}:
        tlog.verify_inclusion(leaves[m], m, n, ref_path(m, leaves), c.cp.root_hash)
        assert ref_path(m, leaves) == s.inclusion_proof(1, m, n)
    if n > 1:
        old = n // 2 or 1
        tlog.verify_consistency(old, n, ref_subproof(old, leaves, True), ref_mth(leaves[:old]),
                                c.cp.root_hash)
    assert not list(out.rglob("*.tmp"))


def test_export_refuses_a_foreign_checkpoint(backend, tmp_path):
    s = backend.open()
    s.append_batch(1, [b"a", b"b"])
    s.append_batch(2, [b"x", b"y"])
    cp = s.checkpoint(1, tlog.Signer(SKEY))
    with pytest.raises(kimberlite.ChainVerificationError):
        s.export_tiles(2, tmp_path / "t", cp)
    big = tlog.Signer(SKEY).sign_checkpoint("o", 3, cp.root_hash)
    with pytest.raises(kimberlite.ChainVerificationError):
        s.export_tiles(1, tmp_path / "t", big)
    with pytest.raises(TypeError):
        s.export_tiles(1, tmp_path / "t", cp.note)
    assert not (tmp_path / "t").exists()


def test_export_with_three_tile_levels(tmp_path):
    n = 65536 + 300  # level 2 has one hash: a partial tile of width 1
    s = kimberlite.MemoryStorage()
    s.append_batch(1, [b"%d" % i for i in range(n)], fsync=False)
    cp = s.checkpoint(1, tlog.Signer(SKEY))
    s.export_tiles(1, tmp_path / "t", cp)
    assert (tmp_path / "t" / "tile" / "2" / "000.p" / "1").stat().st_size == 32
    assert (tmp_path / "t" / "tile" / "1" / "000").stat().st_size == 32 * 256
    c = TileClient(tmp_path / "t", VKEY)
    leaves = c.leaves()
    assert len(leaves) == n
    assert c.row(2) == [ref_mth(leaves[:65536])]
