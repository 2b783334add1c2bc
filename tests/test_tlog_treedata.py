"""The tree data (docs/FORMAT.md §12) is a cache: deleted, truncated, corrupted (a bit flip in
every region), zero-filled, stale (records appended after it was written; records rewritten
under it; a longer stream's data) or a special file, it gives the same roots and proofs as a
fresh rebuild, never an error, and it is rewritten valid by the next writer. On disk and on
the memory backend (through the private _tree_data/_replace_tree_data hooks); under the fault
plan every I/O call of a tree catch-up and save fails in turn without a wrong answer."""
import errno
import hashlib
import os
import shutil
import struct
import textwrap

import pytest

import kimberlite as km
from kimberlite import tlog

from helpers.sandbox import run_python
from test_tlog_merkle import ref_leaf, ref_mth

HEADER, TILE, FOOTER = 16, 8208, 16
N = 9000  # 35 level-0 tiles, one level-5 tile (ordinal 32), a frontier on levels 0, 5, 10


def events(n, tag=b"e"):
    return [tag + b"-%d" % i for i in range(n)]


def leaves(evs):
    out, prev = [], b""
    for e in evs:
        prev = hashlib.sha256(prev + e).digest()
        out.append(ref_leaf(prev))
    return out


LEAVES = leaves(events(N))
SIZES = [1, 2, 255, 256, 257, 300, 4096, 8191, 8192, 8193, 8500, N]
ROOTS = {n: ref_mth(LEAVES[:n]) for n in SIZES}
INCL = [(0, N), (255, N), (4095, N), (8191, N), (8999, N), (300, 8500), (8192, 8193)]
CONS = [(1, N), (256, N), (8192, N), (300, 8500), (8191, 8192)]


def frontier_nodes(n):
    return sum((n >> L) & 255 for L in range(0, 64, 5))


def tiles(n):
    return sum(n >> (L + 8) for L in range(0, 56, 5))


def file_len(n):
    return HEADER + tiles(n) * TILE + 32 + 32 * frontier_nodes(n) + FOOTER


def write(s, evs):
    for i in range(0, len(evs), 1000):
        s.append_batch(1, evs[i:i + 1000], fsync=False)


def check(s, n=N):
    """Every root and proof right (roots against the hashlib reference, proofs verified)."""
    for size in SIZES:
        if size <= n:
            assert s.tree_root(1, size) == ROOTS[size], size
    for i, size in INCL:
        if size <= n:
            tlog.verify_inclusion(LEAVES[i], i, size, s.inclusion_proof(1, i, size), ROOTS[size])
    for a, b in CONS:
        if b <= n:
            tlog.verify_consistency(a, b, s.consistency_proof(1, a, b), ROOTS[a], ROOTS[b])


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    d = tmp_path_factory.mktemp("treedata") / "t"
    with km.Storage(d, max_segment_size=64 * 1024) as s:
        write(s, events(N))
        assert s.tree_root(1) == ROOTS[N]
    data = (d / "1" / "tree").read_bytes()
    assert len(data) == file_len(N)
    assert data[:8] == b"KMBTREE\0" and data[-4:] == b"KMBF"
    assert struct.unpack_from("<Q", data, len(data) - 16)[0] == N
    return d, data


def damaged_copy(tmp_path, template, data):
    d = tmp_path / "d"
    shutil.copytree(template[0], d)
    p = d / "1" / "tree"
    if data is None:
        p.unlink()
    else:
        p.write_bytes(data)
    return d


def assert_rewritten(d, n=N):
    data = (d / "1" / "tree").read_bytes()
    assert len(data) == file_len(n) and data[:8] == b"KMBTREE\0"
    assert struct.unpack_from("<Q", data, len(data) - 16)[0] == n


def flip(data, pos):
    b = bytearray(data)
    b[pos] ^= 0x10
    return bytes(b)


def regions(data):
    """One position in every field of the format, named."""
    t = lambda k: HEADER + k * TILE  # noqa: E731
    front = HEADER + tiles(N) * TILE
    lv0 = front + 32
    lv5 = lv0 + 32 * (N & 255)
    lv10 = lv5 + 32 * ((N >> 5) & 255)
    foot = len(data) - FOOTER
    return {
        "magic": 0, "magic-nul": 7, "version": 8, "step": 9, "tile_log": 10, "hdr-zero": 11,
        "hdr-crc": 13,
        "tile0-level": t(0), "tile0-zero": t(0) + 2, "tile0-index": t(0) + 4,
        "tile0-node0": t(0) + 12, "tile0-node255": t(0) + 12 + 255 * 32 + 31,
        "tile0-crc": t(0) + TILE - 1,
        "tile-l5-level": t(32), "tile-l5-node": t(32) + 12 + 100 * 32, "tile-l5-crc": t(32) + TILE - 4,
        "last-tile-node": t(34) + 12 + 7, "last-tile-index": t(34) + 4,
        "front-last": front, "front-l0": lv0 + 5, "front-l5": lv5 + 31, "front-l10": lv10,
        "foot-n": foot, "foot-n-high": foot + 7, "foot-crc": foot + 8, "foot-magic": foot + 12,
        "foot-end": len(data) - 1,
    }


def damages(data):
    out = {"deleted": None, "empty": b"", "zero-filled": bytes(len(data)),
           "zero-header": bytes(HEADER) + data[HEADER:],
           "ones": b"\xff" * len(data), "garbage-appended": data + b"x" * 100,
           "tile-appended": data + data[HEADER:HEADER + TILE]}
    for cut in (1, HEADER - 1, HEADER, HEADER + 1, HEADER + TILE, HEADER + TILE + 5,
                len(data) // 2, len(data) - FOOTER, len(data) - 1):
        out[f"truncated-{cut}"] = data[:cut]
    for name, pos in regions(data).items():
        out[f"flip-{name}"] = flip(data, pos)
    # Two tiles swapped (each intact, at the other's place).
    a, b = HEADER, HEADER + TILE
    out["tiles-swapped"] = data[:a] + data[b:b + TILE] + data[a:b] + data[b + TILE:]
    return out


def test_intact_tree_data_is_used(template):
    """A new process reads only the frontier for the root, and proofs from tiles (no rebuild:
    the file is left as it was)."""
    d, data = template
    with km.Storage(d, read_only=True) as r:
        check(r)
    assert (d / "1" / "tree").read_bytes() == data


@pytest.mark.parametrize("name", sorted(damages(b"\0" * file_len(N))))
def test_damaged_tree_data_on_disk(tmp_path, template, name):
    d = damaged_copy(tmp_path, template, damages(template[1])[name])
    with km.Storage(d, read_only=True) as r:  # a reader: rebuilds in memory, writes nothing
        check(r)
    with km.Storage(d) as s:
        check(s)
        s.append_batch(1, [b"after"])
        assert s.next_offset(1) == N + 1
        s.tree_root(1)
    assert_rewritten(d, N + 1)
    with km.Storage(d) as s:
        check(s, N)
        assert s.tree_root(1) == ref_mth(leaves(events(N) + [b"after"]))


def test_every_single_byte_flip_of_header_frontier_and_footer(tmp_path, template):
    """Dense: every byte of the header, the footer and the frontier's first two hashes, and
    every 16th byte of the rest of the frontier, flipped in turn (in memory: cheap)."""
    d, data = template
    front = HEADER + tiles(N) * TILE
    s = km.MemoryStorage()
    write(s, events(N))
    positions = (list(range(HEADER)) + list(range(front, front + 64)) +
                 list(range(front + 64, len(data) - FOOTER, 16)) +
                 list(range(len(data) - FOOTER, len(data))))
    for pos in positions:
        s._replace_tree_data(1, flip(data, pos))
        assert s.tree_root(1) == ROOTS[N], pos
        assert s.tree_root(1, 8500) == ROOTS[8500], pos
        tlog.verify_inclusion(LEAVES[8999], 8999, N, s.inclusion_proof(1, 8999), ROOTS[N])


def test_stale_records_appended_after_the_tree_data(tmp_path, template):
    d = damaged_copy(tmp_path, template, template[1])
    extra = [b"more-%d" % i for i in range(700)]
    with km.Storage(d) as s:  # appends without asking for the tree: the data stays at N
        write(s, extra)
    assert struct.unpack_from("<Q", (d / "1" / "tree").read_bytes(), file_len(N) - 16)[0] == N
    want = leaves(events(N) + extra)
    with km.Storage(d) as s:
        check(s)
        assert s.tree_root(1) == ref_mth(want)
        i = N + 650
        tlog.verify_inclusion(want[i], i, N + 700, s.inclusion_proof(1, i), ref_mth(want))
    assert_rewritten(d, N + 700)


@pytest.mark.parametrize("count,shared", [(N, 0), (N, 8500), (N, N - 1), (8000, 8000),
                                          (N + 300, 0), (N + 300, 4000)])
def test_stale_records_rewritten_under_the_tree_data(tmp_path, template, count, shared):
    """Another history under the same tree data: a stream of `count` records whose first
    `shared` are the template's. Its own roots, never the template's."""
    evs = events(count)[:shared] + events(count, b"other")[shared:]
    d = tmp_path / "other"
    with km.Storage(d, max_segment_size=64 * 1024) as s:
        write(s, evs)
    (d / "1" / "tree").write_bytes(template[1])
    want = leaves(evs)
    with km.Storage(d) as s:
        assert s.tree_root(1) == ref_mth(want)
        for size in (1, 257, 7999, count):
            assert s.tree_root(1, size) == ref_mth(want[:size]), size
        for i in (0, 4095, count - 1):
            tlog.verify_inclusion(want[i], i, count, s.inclusion_proof(1, i), ref_mth(want))
    assert_rewritten(d, count)


def test_memory_backend_damage(template):
    data = template[1]
    s = km.MemoryStorage()
    write(s, events(N))
    assert s.tree_root(1) == ROOTS[N]
    assert s._tree_data(1) == data  # the same bytes as on disk
    assert s._tree_data(2) is None
    for name, bad in damages(data).items():
        s._replace_tree_data(1, b"" if bad is None else bad)
        check(s)
        s.append_batch(1, [b"x"])
        s.tree_root(1)
        assert s._tree_data(1)[-4:] == b"KMBF"
        fixed = s._tree_data(1)
        assert len(fixed) == file_len(s.next_offset(1)), name
        # back to N records for the next case: a new storage with the template's records
        s = km.MemoryStorage()
        write(s, events(N))
        s.tree_root(1)


def test_memory_backend_stale(template):
    s = km.MemoryStorage()
    write(s, events(N, b"other"))
    s._replace_tree_data(1, template[1])  # another history's tree data
    want = leaves(events(N, b"other"))
    assert s.tree_root(1) == ref_mth(want)
    assert s.tree_root(1, 300) == ref_mth(want[:300])
    s._replace_tree_data(1, template[1][:-1])
    assert s.tree_root(1, 8192) == ref_mth(want[:8192])


def test_replace_tree_data_hook_errors(tmp_path, template):
    with km.Storage(template[0], read_only=True) as r:
        with pytest.raises(km.StorageError, match="read-only"):
            r._replace_tree_data(1, b"")
        assert r._tree_data(1) == template[1]
    s = km.MemoryStorage()
    s.close()
    with pytest.raises(ValueError):
        s._tree_data(1)


SPECIAL = textwrap.dedent("""
    import os, sys, kimberlite as km
    d, kind, want = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
    p = os.path.join(d, "1", "tree")
    os.unlink(p)
    if kind == "symlink":
        os.symlink("/dev/zero", p)
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "directory":
        os.mkdir(p)
    with km.Storage(d, read_only=True) as r:
        assert r.tree_root(1) == want and r.tree_root(1, 8193) and r.inclusion_proof(1, 3)
    with km.Storage(d) as s:
        assert s.tree_root(1) == want and s.inclusion_proof(1, 8000)
    with km.Storage(d) as s:
        assert s.tree_root(1) == want and s.tree_root(1, 9) and s.consistency_proof(1, 5)
    print("kind", "file" if os.path.isfile(p) and not os.path.islink(p) else "other")
""")


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_special_files(tmp_path, template, kind):
    d = damaged_copy(tmp_path, template, template[1])
    r = run_python(SPECIAL, args=(d, kind, ROOTS[N].hex()), timeout=60)
    assert r.returncode == 0, r.stderr
    # a symlink or FIFO is replaced by a regular file; a directory cannot be (left alone)
    assert r.stdout.split()[-1] == ("other" if kind == "directory" else "file")
    if kind != "directory":
        assert_rewritten(d)


def _fault_scenario(s):
    out = [s.tree_root(1), s.tree_root(1, 8500), s.inclusion_proof(1, 8999),
           s.inclusion_proof(1, 17, 8500), s.consistency_proof(1, 300, N)]
    s.flush_indexes()
    return out


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
def test_every_tree_io_call_fails_in_turn(tmp_path, template, err):
    """The tree data is 8500 entries behind nothing: open a copy whose data stops at 8500
    (made by a writer that stopped there), then catch up, prove and save, failing call k."""
    base = tmp_path / "base"
    with km.Storage(base, max_segment_size=64 * 1024) as s:
        write(s, events(8500))
        s.tree_root(1)
        write(s, events(N)[8500:])
    d = tmp_path / "count"
    shutil.copytree(base, d)
    with km.Storage(d) as s:
        s.next_offset(1)
        s._set_fault("all", 0)
        want = _fault_scenario(s)
        calls, _ = s._io_calls()
    assert want[0] == ROOTS[N] and want[1] == ROOTS[8500]
    assert calls >= 6, calls
    for persistent in (False, True):
        for k in range(1, calls + 1):
            d = tmp_path / f"run{k}-{persistent}"
            shutil.copytree(base, d)
            s = km.Storage(d)
            s.next_offset(1)
            s._set_fault("all", k, errno=err, persistent=persistent)
            try:
                got = _fault_scenario(s)
            except km.StorageIOError as e:  # a read of the records failed: said so
                assert e.errno == err
            else:
                assert got == want, k
            s._set_fault("", 0)
            assert _fault_scenario(s) == want
            s.close()
            with km.Storage(d) as s:
                assert _fault_scenario(s) == want
            assert_rewritten(d)
            shutil.rmtree(d)


def test_new_process_root_reads_the_frontier_not_the_records(tmp_path, template):
    """With intact tree data, the first root of a new process costs a few calls (header and
    frontier); a proof reads one tile per stored level it needs. Without it, the records."""
    d = damaged_copy(tmp_path, template, template[1])
    with km.Storage(d) as s:
        s.next_offset(1)  # the stream's own loading is not counted
        s._set_fault("all", 0)
        assert s.tree_root(1) == ROOTS[N]
        with_data, _ = s._io_calls()
        s._set_fault("all", 0)
        tlog.verify_inclusion(LEAVES[5], 5, N, s.inclusion_proof(1, 5), ROOTS[N])
        proof_calls, _ = s._io_calls()
    (d / "1" / "tree").unlink()
    with km.Storage(d) as s:
        s.next_offset(1)
        s._set_fault("all", 0)
        assert s.tree_root(1) == ROOTS[N]
        without, _ = s._io_calls()
    assert with_data <= 8, with_data
    assert proof_calls <= 2 * 3, proof_calls  # open + read per tile, levels 0 and 5 (+10)
    assert without > with_data


@pytest.mark.parametrize("batches", [[1, 7, 1000], [40000, 30000, 5], [70000], [3, 65533, 1]])
def test_parked_appends_integrate_without_reading(tmp_path, batches):
    """Once a stream's tree is in use, appends park their chain hashes (up to 65,536): the
    next catch-up reads no record. Past the bound, the rest is read back. Same roots."""
    evs = events(N)
    with km.Storage(tmp_path / "d") as s:
        write(s, evs[:300])
        s.tree_root(1)
        i = 300
        for k in batches:
            more = [b"p-%d" % j for j in range(i, i + k)]
            s.append_batch(1, more, fsync=False)
            evs = evs[:i] + more
            i += k
        s._set_fault("read", 0)
        root = s.tree_root(1)
        reads, _ = s._io_calls()
        want = leaves(evs[:i])
        assert root == ref_mth(want)
        tlog.verify_inclusion(want[i - 1], i - 1, i, s.inclusion_proof(1, i - 1), root)
        if sum(batches) <= 65536:
            assert reads == 0, reads
        else:
            assert reads > 0


@pytest.mark.parametrize("kind", ["disk", "memory"])
@pytest.mark.parametrize("where", [0, 130, 298])
def test_damaged_stream_answers_within_its_intact_prefix(tmp_path, kind, where):
    """A damaged stream (SPEC §3: reads reaching the damage raise, the rest work): roots and
    proofs of sizes up to the damage are answered from the records before it; the whole
    stream, larger sizes and checkpoint() (SPEC §6: whole stream, signed) raise the damage."""
    from kimberlite import testing
    evs = events(300)
    want = leaves(evs)
    if kind == "disk":
        with km.Storage(tmp_path / "d", max_segment_size=2048) as s:
            s.append_batch(1, evs[:150])
            s.tree_root(1)  # tree data for 150 entries, stale once damage is found
            s.append_batch(1, evs[150:])
        testing.flip_bit(tmp_path / "d", 1, where)
        s = km.Storage(tmp_path / "d")
    else:
        s = km.MemoryStorage(max_segment_size=2048)
        s.append_batch(1, evs)
        assert s.tree_root(1) == ref_mth(want)
        testing.flip_bit(s, 1, where)
    with pytest.raises(km.CorruptedRecordError):
        s.verify(1)
    for size in sorted({x for x in (1, where // 2, where) if 0 < x <= where}):
        assert s.tree_root(1, size) == ref_mth(want[:size]), size
        tlog.verify_inclusion(want[size - 1], size - 1, size,
                              s.inclusion_proof(1, size - 1, size), ref_mth(want[:size]))
        if size > 1:
            tlog.verify_consistency(1, size, s.consistency_proof(1, 1, size),
                                    ref_mth(want[:1]), ref_mth(want[:size]))
    signer = tlog.Signer(tlog.generate_key("dmg.example")[0])
    for call in (lambda: s.tree_root(1), lambda: s.tree_root(1, where + 1),
                 lambda: s.inclusion_proof(1, 0), lambda: s.consistency_proof(1, 1)):
        with pytest.raises(km.CorruptedRecordError):
            call()
    # checkpoint() signs the whole stream or nothing: the damage, even at offset 0 (where the
    # stream shows no records, it is still not "nothing to sign")
    with pytest.raises(km.CorruptedRecordError):
        s.checkpoint(1, signer)
    assert s.tree_root(1, 0) == hashlib.sha256(b"").digest()
    s.close()


def forge_frontier_node(data, index_from_end=0):
    """The tree data with one frontier node replaced and every CRC recomputed: what someone
    who can write the directory can do (the CRCs catch accidents, not forgery)."""
    import zlib
    b = bytearray(data)
    foot = len(b) - FOOTER
    front = foot - 32 - 32 * frontier_nodes(N)
    pos = foot - 32 * (index_from_end + 1)        # the last frontier nodes: the top levels'
    b[pos:pos + 32] = hashlib.sha256(b"forged node").digest()
    crc = zlib.crc32(bytes(b[foot:foot + 8]), zlib.crc32(bytes(b[front:foot])))
    struct.pack_into("<I", b, foot + 8, crc)
    return bytes(b)


@pytest.mark.parametrize("stored_checkpoint", [False, True])
def test_checkpoint_signs_the_records_root_never_forged_tree_data(tmp_path, template,
                                                                  stored_checkpoint):
    signer = tlog.Signer(tlog.generate_key("forge.example")[0])
    verifier = tlog.Verifier(signer.verifier_key)
    d = tmp_path / "d"
    shutil.copytree(template[0], d)
    if stored_checkpoint:       # an older checkpoint the forged root would have to extend
        with km.Storage(d) as s:
            assert s.checkpoint(1, signer).root_hash == ROOTS[N]
    forged = forge_frontier_node(template[1])
    (d / "1" / "tree").write_bytes(forged)
    with km.Storage(d, read_only=True) as r:   # the forgery passes every CRC check ...
        assert r._tree_data(1) == forged
        forged_root = r.tree_root(1)
    assert forged_root != ROOTS[N]              # ... so a root read from it is wrong
    with km.Storage(d) as s:                    # a new process signing: from the records
        cp = s.checkpoint(1, signer)
        assert (cp.tree_size, cp.root_hash) == (N, ROOTS[N])
        assert tlog.open_checkpoint(cp.note, verifier).root_hash == ROOTS[N]
        check(s)                                # the rebuilt tree answers everything
    assert (d / "1" / "tree").read_bytes() == template[1]   # and replaced the forgery


@pytest.mark.parametrize("read_only", [True, False])
def test_damage_found_by_the_first_tree_call_answers_the_intact_prefix_at_once(tmp_path,
                                                                              read_only):
    import kimberlite.testing as kt
    evs = events(100)
    d = tmp_path / "d"
    with km.Storage(d) as s:
        write(s, evs)
    with km.Storage(d) as s:
        kt.flip_bit(s, 1, 50, byte=44 + 2, bit=3)     # a payload bit of record 50
    with km.Storage(d, read_only=read_only) as s:     # the damage is not known yet
        assert s.tree_root(1, 10) == ref_mth(leaves(evs)[:10])      # the first call answers
        assert s.tree_root(1, 10) == ref_mth(leaves(evs)[:10])
        with pytest.raises(km.CorruptedRecordError) as e:
            s.tree_root(1)
        assert e.value.offset == 50


@pytest.mark.parametrize("kind", ["disk", "memory"])
def test_checkpoint_of_a_stream_damaged_at_offset_0_raises_the_damage(tmp_path, kind):
    """Not ValueError("no records"): damage at offset 0 hides every record, it adds none."""
    import kimberlite.testing as kt
    signer = tlog.Signer(tlog.generate_key("damage.example")[0])
    s = km.Storage(tmp_path / "d") if kind == "disk" else km.MemoryStorage()
    with s:
        s.append_batch(1, [b"a" * 10, b"b" * 10])
        kt.flip_bit(s, 1, 0, byte=44 + 2, bit=1)
        with pytest.raises(km.CorruptedRecordError) as e:
            s.checkpoint(1, signer)
        assert e.value.offset == 0
        assert s.latest_checkpoint(1) is None


@pytest.mark.parametrize("kind", ["disk", "memory"])
@pytest.mark.parametrize("damage_at", [50, 51, 70])
def test_read_verified_against_a_checkpoint_before_the_damage(tmp_path, kind, damage_at):
    """A checkpoint of the first 50 records still verifies their reads, and exports its
    tiles, once damage appears at or after record 50; nothing past it is read."""
    import kimberlite.testing as kt
    signer = tlog.Signer(tlog.generate_key("before.example")[0])
    evs = events(100)
    s = km.Storage(tmp_path / "d") if kind == "disk" else km.MemoryStorage()
    with s:
        s.append_batch(1, evs[:50])
        cp = s.checkpoint(1, signer)
        s.append_batch(1, evs[50:])
        kt.flip_bit(s, 1, damage_at, byte=44 + 2, bit=1)
        with pytest.raises(km.CorruptedRecordError):
            s.verify(1)
        assert s.read_verified(1, checkpoint=cp) == evs[:50]
        assert s.read_verified(1, 20, checkpoint=cp) == evs[20:50]
        out = tmp_path / "tiles"
        s.export_tiles(1, out, cp)
        assert (out / "checkpoint").read_bytes() == cp.note


def test_tree_data_replaced_under_a_reader(tmp_path, template):
    """A writer renames other tree data into place (here: garbage) after a reader checked
    the header and frontier: the reader's tiles on demand (from the file it checked, whose
    descriptor the disk backend keeps) give right proofs; a reader opened after ignores the
    garbage and rebuilds."""
    d = tmp_path / "d"
    shutil.copytree(template[0], d)
    with km.Storage(d, read_only=True) as r:
        assert r.tree_root(1) == ROOTS[N]              # header + frontier: descriptor kept
        tmp = d / "1" / "tree.new"
        tmp.write_bytes(b"\xff" * len(template[1]))
        os.replace(tmp, d / "1" / "tree")             # what a writer's whole save does
        check(r)                                       # tiles on demand, from the old file
    with km.Storage(d, read_only=True) as r:          # the garbage: ignored, rebuilt
        check(r)
