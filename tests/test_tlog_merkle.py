"""kimberlite.tlog's Merkle side (SPEC §6): hashing, roots, inclusion and consistency proofs.

Checked against SPEC's vectors, against an independent RFC 9162 implementation written here
with hashlib (MTH, PATH, SUBPROOF and the §2.1.3.2 / §2.1.4.2 verifiers), and against the
transparency-dev/merkle JSON test vectors. Every tampered proof, size, index and root is
rejected with InvalidProofError; wrong types and hash sizes with TypeError / ValueError.
"""
import base64
import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kimberlite
from kimberlite import tlog
from kimberlite.tlog import InvalidProofError


# ---- an independent RFC 9162 implementation ---------------------------------------------

def H(data):
    return hashlib.sha256(data).digest()


def ref_leaf(entry):
    return H(b"\x00" + entry)


def ref_node(left, right):
    return H(b"\x01" + left + right)


def split(n):
    return 1 << ((n - 1).bit_length() - 1)


def ref_mth(leaves):
    if not leaves:
        return H(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = split(len(leaves))
    return ref_node(ref_mth(leaves[:k]), ref_mth(leaves[k:]))


def ref_path(m, leaves):
    """RFC 9162 §2.1.3.1 PATH(m, D[n])."""
    n = len(leaves)
    if n <= 1:
        return []
    k = split(n)
    if m < k:
        return ref_path(m, leaves[:k]) + [ref_mth(leaves[k:])]
    return ref_path(m - k, leaves[k:]) + [ref_mth(leaves[:k])]


def ref_subproof(m, leaves, b):
    """RFC 9162 §2.1.4.1 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if b else [ref_mth(leaves)]
    k = split(n)
    if m <= k:
        return ref_subproof(m, leaves[:k], b) + [ref_mth(leaves[k:])]
    return ref_subproof(m - k, leaves[k:], False) + [ref_mth(leaves[:k])]


def ref_verify_inclusion(leaf, index, size, proof, root):
    """RFC 9162 §2.1.3.2, word for word. True or False."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = ref_node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = ref_node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def ref_verify_consistency(m, n, proof, r1, r2):
    """RFC 9162 §2.1.4.2, with SPEC §6's rules for size 0 and equal sizes."""
    if m == 0 or m > n:
        return False
    if m == n:
        return not proof and r1 == r2
    if not proof:
        return False
    path = list(proof)
    if m & (m - 1) == 0:
        path = [r1] + path
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = ref_node(c, fr)
            sr = ref_node(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = ref_node(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == r1 and sr == r2 and sn == 0


# ---- a stream's entries: chain hashes computed with hashlib --------------------------------

def chain(payloads):
    out, prev = [], b""
    for p in payloads:
        prev = H(prev + p)
        out.append(prev)
    return out


ENTRIES = chain([b"event-%d" % i for i in range(301)])
LEAVES = [ref_leaf(e) for e in ENTRIES]
ROOTS = [ref_mth(LEAVES[:n]) for n in range(len(LEAVES) + 1)]


# ---- SPEC §6 vectors ------------------------------------------------------------------------

SPEC = {
    "leaf0": "5be5e2dc53091c14c5db48c3ace1b79d9e6586b470cfc40bd1cf11d479b16003",
    "leaf1": "fc5f28ed108ed9bab385e83cba6f70e7603ba2b08758b3b00b681aa27e3623cf",
    "leaf2": "5a779d72c6abdf44cebc6afb01203752714899534420c9b8f1ea2e17d30f383d",
    "root2": "21796c878398dd34f9c799bde6e2d1557a65b83f45f25376f16bae0257b901ae",
    "root3": "39f1336fb10972e633b68d2acec163fe94b31b2bdec6d5475960942d0e1585ed",
}


def test_spec_vectors():
    v = {k: bytes.fromhex(h) for k, h in SPEC.items()}
    h0 = kimberlite.chain_hash(None, b"event1")
    h1 = kimberlite.chain_hash(h0, b"event2")
    h2 = kimberlite.chain_hash(h1, b"event3")
    assert tlog.leaf_hash(h0) == tlog.record_leaf_hash(None, b"event1") == v["leaf0"]
    assert tlog.record_leaf_hash(h0, b"event2") == v["leaf1"]
    assert tlog.record_leaf_hash(h1, b"event3") == v["leaf2"]
    assert tlog._tree_root([h0]) == v["leaf0"]
    assert tlog._tree_root([h0, h1]) == v["root2"] == tlog.node_hash(v["leaf0"], v["leaf1"])
    assert tlog._tree_root([h0, h1, h2]) == v["root3"]
    assert tlog._inclusion_proof([h0, h1, h2], 2, 3) == [v["root2"]]
    assert tlog._inclusion_proof([h0, h1, h2], 0, 2) == [v["leaf1"]]
    assert tlog._consistency_proof([h0, h1, h2], 1, 3) == [v["leaf1"], v["leaf2"]]
    tlog.verify_inclusion(v["leaf2"], 2, 3, [v["root2"]], v["root3"])
    tlog.verify_inclusion(v["leaf0"], 0, 2, [v["leaf1"]], v["root2"])
    tlog.verify_consistency(1, 3, [v["leaf1"], v["leaf2"]], v["root3"][:0] + v["leaf0"], v["root3"])


def test_empty_tree_root_is_sha256_of_nothing():
    assert tlog._tree_root([]) == hashlib.sha256(b"").digest()


def test_leaf_and_node_hash_match_hashlib_for_any_input():
    for data in (b"", b"x", bytes(range(256)) * 40):  # the last releases the GIL
        assert tlog.leaf_hash(data) == H(b"\x00" + data)
        assert tlog.leaf_hash(bytearray(data)) == tlog.leaf_hash(memoryview(data))
    a, b = H(b"a"), H(b"b")
    assert tlog.node_hash(a, b) == H(b"\x01" + a + b)
    strided = memoryview(bytes(64))[::2]
    assert tlog.node_hash(strided, b) == ref_node(bytes(32), b)


# ---- every root, a dense sample of proofs, against the reference ---------------------------

def test_every_root_up_to_300():
    for n in range(0, 301):
        assert tlog._tree_root(ENTRIES[:n]) == ROOTS[n], n


def _indices(n):
    if n <= 64:
        return range(n)
    rng = random.Random(n)
    return sorted({0, 1, n // 3, n // 2, n - 2, n - 1, *rng.sample(range(n), 10)})


@pytest.mark.slow
def test_inclusion_proofs_match_the_reference_and_verify_both_ways():
    for n in range(1, 301):
        for i in _indices(n):
            proof = tlog._inclusion_proof(ENTRIES, i, n)
            assert proof == ref_path(i, LEAVES[:n]), (i, n)
            tlog.verify_inclusion(LEAVES[i], i, n, proof, ROOTS[n])
            assert ref_verify_inclusion(LEAVES[i], i, n, proof, ROOTS[n])


@pytest.mark.slow
def test_consistency_proofs_match_the_reference_and_verify_both_ways():
    for n in range(1, 301):
        olds = range(1, n + 1) if n <= 48 else sorted(
            {1, 2, n // 2, n - 1, n, *random.Random(n).sample(range(1, n + 1), 8)})
        for m in olds:
            proof = tlog._consistency_proof(ENTRIES, m, n)
            assert proof == ref_subproof(m, LEAVES[:n], True), (m, n)
            tlog.verify_consistency(m, n, proof, ROOTS[m], ROOTS[n])
            assert ref_verify_consistency(m, n, proof, ROOTS[m], ROOTS[n])


def test_proofs_never_verify_against_another_tree():
    for n in (2, 3, 7, 8, 9, 100, 255, 256, 257):
        for i in list(_indices(n))[:6]:
            proof = tlog._inclusion_proof(ENTRIES, i, n)
            with pytest.raises(InvalidProofError):
                tlog.verify_inclusion(LEAVES[i], i, n, proof, ROOTS[n - 1])
            with pytest.raises(InvalidProofError):
                tlog.verify_inclusion(LEAVES[(i + 1) % n], i, n, proof, ROOTS[n])
            with pytest.raises(InvalidProofError):
                tlog.verify_inclusion(LEAVES[i], i, n + 1, proof, ROOTS[n + 1])


# ---- transparency-dev/merkle test vectors ------------------------------------------------
# Source: github.com/transparency-dev/merkle, testdata/inclusion/{0..4}/happy-path.json,
# testdata/consistency/{0..4}/happy-path.json, and the failing cases named below. The tree is
# testonly's RFC 6962 test tree (LeafInputs); hashes are base64 as in the JSON files. The
# upstream failing files are mutations of the happy paths; the mutations are re-derived here
# by the same rules (bit flips, truncation, garbage before/after, index and size changes,
# wrong and swapped roots) rather than copied file by file.

def b64(s):
    return base64.b64decode(s)


TD_ROOT8 = "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg="
TD_ROOT5 = "Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ="
TD_ROOT6 = "duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8="
TD_ROOT7 = "3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw="
TD_ROOT3 = "rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc="
TD_LEAF0 = "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0="
TD_LEAF1 = "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c="
TD_ROOT2 = "+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="

TD_INCLUSION = [  # (leafIdx, treeSize, root, leafHash, proof)
    (0, 1, TD_LEAF0, TD_LEAF0, []),  # inclusion/0
    (0, 8, TD_ROOT8, TD_LEAF0, [TD_LEAF1, "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
                                "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),  # inclusion/1
    (5, 8, TD_ROOT8, "QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
     ["vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=", "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
      "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),  # inclusion/2
    (2, 3, TD_ROOT3, "ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=", [TD_ROOT2]),  # inclusion/3
    (1, 5, TD_ROOT5, TD_LEAF1, [TD_LEAF0, "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
                                "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),  # inclusion/4
]

TD_CONSISTENCY = [  # (size1, size2, root1, root2, proof)
    (1, 1, TD_LEAF0, TD_LEAF0, []),  # consistency/0
    (1, 8, TD_LEAF0, TD_ROOT8, [TD_LEAF1, "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
                                "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="]),  # consistency/1
    (6, 8, TD_ROOT6, TD_ROOT8, ["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
                                "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
                                "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),  # consistency/2
    (2, 5, TD_ROOT2, TD_ROOT5, ["Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
                                "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms="]),  # consistency/3
    (6, 7, TD_ROOT6, TD_ROOT7, ["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
                                "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
                                "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="]),  # consistency/4
]


def _inclusion_mutations(idx, size, root, leaf, proof):
    """The upstream generator's mutations of one happy path (all must fail)."""
    other = H(b"random root")
    yield "wrong-leaf", (idx, size, root, H(b"WrongLeaf"), proof)
    yield "random-root", (idx, size, other, leaf, proof)
    yield "leafIdx+1", (idx + 1, size, root, leaf, proof)
    if idx > 0:
        yield "leafIdx-1", (idx - 1, size, root, leaf, proof)
    yield "leafIdx^2", (idx ^ 2, size, root, leaf, proof)
    yield "treeSize*2", (idx, size * 2, root, leaf, proof)
    yield "treeSize/2", (idx, size // 2, root, leaf, proof)
    yield "trailing-garbage", (idx, size, root, leaf, proof + [H(b"garbage")])
    yield "preceding-garbage", (idx, size, root, leaf, [H(b"garbage")] + proof)
    yield "trailing-root", (idx, size, root, leaf, proof + [root])
    yield "preceding-root", (idx, size, root, leaf, [root] + proof)
    if proof:
        yield "removed-component", (idx, size, root, leaf, proof[:-1])
        yield "inserted-component", (idx, size, root, leaf, proof[:1] + [H(b"x")] + proof[1:])
    for j in range(len(proof)):
        p = list(proof)
        p[j] = bytes([p[j][0] ^ 8]) + p[j][1:]
        yield f"modified-proof[{j}]-bit-3", (idx, size, root, leaf, p)


def _consistency_mutations(s1, s2, r1, r2, proof):
    garbage = H(b"garbage")
    yield "wrong-root1", (s1, s2, H(b"WrongRoot"), r2, proof)
    yield "wrong-root2", (s1, s2, r1, H(b"WrongRoot"), proof)
    if r1 != r2:
        yield "swapped-roots", (s1, s2, r2, r1, proof)
    yield "size1+1", (s1 + 1, s2, r1, r2, proof)
    yield "size1-1", (s1 - 1, s2, r1, r2, proof)
    yield "size1^2", (s1 ^ 2, s2, r1, r2, proof)
    yield "size2*2", (s1, s2 * 2, r1, r2, proof)
    yield "size2/2", (s1, s2 // 2, r1, r2, proof)
    yield "trailing-garbage", (s1, s2, r1, r2, proof + [garbage])
    yield "preceding-garbage", (s1, s2, r1, r2, [garbage] + proof)
    yield "trailing-root1", (s1, s2, r1, r2, proof + [r1])
    yield "trailing-root2", (s1, s2, r1, r2, proof + [r2])
    yield "preceding-root1", (s1, s2, r1, r2, [r1] + proof)
    yield "preceding-root2", (s1, s2, r1, r2, [r2] + proof)
    if proof:
        yield "truncated-proof", (s1, s2, r1, r2, proof[:-1])
        yield "empty-proof", (s1, s2, r1, r2, [])
    for j in range(len(proof)):
        p = list(proof)
        p[j] = bytes([p[j][0] ^ 16]) + p[j][1:]
        yield f"modified-proof[{j}]-bit-4", (s1, s2, r1, r2, p)


@pytest.mark.parametrize("case", TD_INCLUSION, ids=lambda c: f"{c[0]}-{c[1]}")
def test_transparency_dev_inclusion_vectors(case):
    idx, size, root, leaf, proof = case
    root, leaf, proof = b64(root), b64(leaf), [b64(p) for p in proof]
    tlog.verify_inclusion(leaf, idx, size, proof, root)
    count = 0
    for name, (i, n, r, lf, p) in _inclusion_mutations(idx, size, root, leaf, proof):
        with pytest.raises(InvalidProofError):
            tlog.verify_inclusion(lf, i, n, p, r)
        assert not ref_verify_inclusion(lf, i, n, p, r), name
        count += 1
    assert count >= 10


@pytest.mark.parametrize("case", TD_CONSISTENCY, ids=lambda c: f"{c[0]}-{c[1]}")
def test_transparency_dev_consistency_vectors(case):
    s1, s2, r1, r2, proof = case
    r1, r2, proof = b64(r1), b64(r2), [b64(p) for p in proof]
    tlog.verify_consistency(s1, s2, proof, r1, r2)
    for name, (m, n, a, b, p) in _consistency_mutations(s1, s2, r1, r2, proof):
        with pytest.raises(InvalidProofError):
            tlog.verify_consistency(m, n, p, a, b)


def test_transparency_dev_failing_files():
    # consistency/1/size1-XOR-@2.json: the size-1 proof presented as a proof from size 3.
    with pytest.raises(InvalidProofError):
        tlog.verify_consistency(3, 8, [b64(TD_LEAF1), b64("Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4="),
                                       b64("a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=")],
                                b64(TD_LEAF0), b64(TD_ROOT8))
    # consistency/additional/consistency-check-on-empty-tree-(size1-is-zero)-is-useless.json
    empty = b64("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
    with pytest.raises(InvalidProofError):
        tlog.verify_consistency(0, 1, [empty], empty, empty)
    # consistency/additional/sizes-are-equal-and-proof-is-empty-where-both-sizes-are-zero.json
    # has wantErr false upstream (and 12-byte "roots"); SPEC §6 makes old_size == 0 an error,
    # and the hashes are not 32 bytes.
    junk = b64("ZG9uJ3QgY2FyZSAx")
    with pytest.raises(ValueError):
        tlog.verify_consistency(0, 0, [], junk, junk)
    with pytest.raises(InvalidProofError):
        tlog.verify_consistency(0, 0, [], empty, empty)
    # inclusion/single-entry/empty-leaf.json: an empty leaf hash.
    with pytest.raises(ValueError):
        tlog.verify_inclusion(b"", 0, 1, [], b64("DTrtAjFI/9KiWfvQzcf7PPl1ZYdg03dbgq9vkKrMLfw="))


# ---- pinned rejections ------------------------------------------------------------------

def test_inclusion_rejections_are_invalid_proof_errors():
    proof = tlog._inclusion_proof(ENTRIES, 3, 10)
    with pytest.raises(InvalidProofError, match="below the tree size"):
        tlog.verify_inclusion(LEAVES[3], 10, 10, proof, ROOTS[10])
    with pytest.raises(InvalidProofError, match="exactly"):
        tlog.verify_inclusion(LEAVES[3], 3, 10, proof[:-1], ROOTS[10])
    with pytest.raises(InvalidProofError, match="exactly"):
        tlog.verify_inclusion(LEAVES[3], 3, 10, proof + [ROOTS[10]], ROOTS[10])
    with pytest.raises(InvalidProofError):
        tlog.verify_inclusion(LEAVES[3], 0, 0, [], ROOTS[0])
    with pytest.raises(InvalidProofError, match="no tree"):
        tlog.verify_inclusion(LEAVES[3], 3, 10, [ROOTS[1]] * 65, ROOTS[10])
    assert issubclass(InvalidProofError, kimberlite.VerificationError)
    assert issubclass(kimberlite.VerificationError, kimberlite.StorageError)


def test_consistency_rejections_are_invalid_proof_errors():
    proof = tlog._consistency_proof(ENTRIES, 5, 9)
    with pytest.raises(InvalidProofError, match="size 0"):
        tlog.verify_consistency(0, 9, proof, ROOTS[0], ROOTS[9])
    with pytest.raises(InvalidProofError, match="out of order"):
        tlog.verify_consistency(9, 5, proof, ROOTS[9], ROOTS[5])
    with pytest.raises(InvalidProofError, match="exactly"):
        tlog.verify_consistency(5, 9, proof[:-1], ROOTS[5], ROOTS[9])
    with pytest.raises(InvalidProofError, match="must be empty"):
        tlog.verify_consistency(9, 9, [ROOTS[9]], ROOTS[9], ROOTS[9])
    with pytest.raises(InvalidProofError, match="forked"):
        tlog.verify_consistency(9, 9, [], ROOTS[9], ROOTS[8])
    tlog.verify_consistency(9, 9, [], ROOTS[9], ROOTS[9])
    with pytest.raises(InvalidProofError, match="new root"):
        tlog.verify_consistency(5, 9, proof, ROOTS[5], ROOTS[8])
    with pytest.raises(InvalidProofError, match="no trees"):
        tlog.verify_consistency(5, 9, [ROOTS[1]] * 129, ROOTS[5], ROOTS[9])


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 300), data=st.data())
def test_any_bit_flip_or_truncation_of_an_inclusion_proof_is_rejected(n, data):
    i = data.draw(st.integers(0, n - 1))
    proof = tlog._inclusion_proof(ENTRIES, i, n)
    blob = b"".join([LEAVES[i]] + proof + [ROOTS[n]])
    choice = data.draw(st.sampled_from(["flip", "cut", "index", "size"]))
    if choice == "flip":
        bit = data.draw(st.integers(0, len(blob) * 8 - 1))
        blob = bytearray(blob)
        blob[bit // 8] ^= 1 << (bit % 8)
        parts = [bytes(blob[k:k + 32]) for k in range(0, len(blob), 32)]
        args = (parts[0], i, n, parts[1:-1], parts[-1])
    elif choice == "cut":
        if not proof:
            return
        keep = data.draw(st.integers(0, len(proof) - 1))
        args = (LEAVES[i], i, n, proof[:keep], ROOTS[n])
    elif choice == "index":
        j = data.draw(st.integers(0, 1000).filter(lambda j: j != i))
        args = (LEAVES[i], j, n, proof, ROOTS[n])
    else:
        # Another tree: its size with its own root. (A size alone, with this tree's root, is
        # not a tree: sizes and roots come together from one signed checkpoint, and a proof
        # may well fold to this root under a neighbouring size.)
        m = data.draw(st.integers(1, 300).filter(lambda m: m != n))
        args = (LEAVES[i], i, m, proof, ROOTS[m])
    with pytest.raises(InvalidProofError):
        tlog.verify_inclusion(*args)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(2, 300), data=st.data())
def test_any_bit_flip_or_truncation_of_a_consistency_proof_is_rejected(n, data):
    m = data.draw(st.integers(1, n - 1))
    proof = tlog._consistency_proof(ENTRIES, m, n)
    choice = data.draw(st.sampled_from(["flip", "cut", "old", "new"]))
    if choice == "flip":
        blob = bytearray(b"".join([ROOTS[m]] + proof + [ROOTS[n]]))
        bit = data.draw(st.integers(0, len(blob) * 8 - 1))
        blob[bit // 8] ^= 1 << (bit % 8)
        parts = [bytes(blob[k:k + 32]) for k in range(0, len(blob), 32)]
        args = (m, n, parts[1:-1], parts[0], parts[-1])
    elif choice == "cut":
        keep = data.draw(st.integers(0, len(proof) - 1))
        args = (m, n, proof[:keep], ROOTS[m], ROOTS[n])
    elif choice == "old":
        m2 = data.draw(st.integers(0, 300).filter(lambda x: x != m))
        args = (m2, n, proof, ROOTS[m2], ROOTS[n])
    else:
        n2 = data.draw(st.integers(0, 300).filter(lambda x: x != n))
        args = (m, n2, proof, ROOTS[m], ROOTS[n2])
    with pytest.raises(InvalidProofError):
        tlog.verify_consistency(*args)


def test_a_size_is_only_meaningful_with_its_own_root():
    # The proof of leaf 0 in the tree of 3 folds to root(3) also under size 4 (same path
    # shape): what it cannot do is match root(4). Verifiers must take (size, root) from one
    # signed checkpoint, never a size from one place and a root from another.
    proof = tlog._inclusion_proof(ENTRIES, 0, 3)
    tlog.verify_inclusion(LEAVES[0], 0, 4, proof, ROOTS[3])
    with pytest.raises(InvalidProofError):
        tlog.verify_inclusion(LEAVES[0], 0, 4, proof, ROOTS[4])


# ---- argument types ---------------------------------------------------------------------

def test_wrong_types_and_sizes():
    proof = tlog._inclusion_proof(ENTRIES, 1, 4)
    with pytest.raises(TypeError, match="list"):
        tlog.verify_inclusion(LEAVES[1], 1, 4, tuple(proof), ROOTS[4])
    with pytest.raises(TypeError, match="list"):
        tlog.verify_inclusion(LEAVES[1], 1, 4, b"".join(proof), ROOTS[4])
    with pytest.raises(TypeError):
        tlog.verify_inclusion(LEAVES[1], 1, 4, [proof[0], "x" * 32], ROOTS[4])
    with pytest.raises(ValueError, match="32 bytes"):
        tlog.verify_inclusion(LEAVES[1], 1, 4, [proof[0], proof[1][:31]], ROOTS[4])
    with pytest.raises(ValueError, match="32 bytes"):
        tlog.verify_inclusion(LEAVES[1][:31], 1, 4, proof, ROOTS[4])
    with pytest.raises(ValueError, match="32 bytes"):
        tlog.verify_inclusion(LEAVES[1], 1, 4, proof, ROOTS[4] + b"\0")
    with pytest.raises(TypeError):
        tlog.verify_inclusion(LEAVES[1], "1", 4, proof, ROOTS[4])
    with pytest.raises(TypeError):
        tlog.verify_inclusion(LEAVES[1], 1, 4.0, proof, ROOTS[4])
    with pytest.raises(ValueError, match="negative"):
        tlog.verify_inclusion(LEAVES[1], -1, 4, proof, ROOTS[4])
    with pytest.raises(ValueError, match="2\\*\\*64"):
        tlog.verify_inclusion(LEAVES[1], 1, 2**64, proof, ROOTS[4])
    with pytest.raises(TypeError, match="list"):
        tlog.verify_consistency(1, 4, None, ROOTS[1], ROOTS[4])
    with pytest.raises(ValueError, match="negative"):
        tlog.verify_consistency(-1, 4, [], ROOTS[1], ROOTS[4])
    with pytest.raises(TypeError, match="str"):
        tlog.leaf_hash("text")
    with pytest.raises(TypeError):
        tlog.node_hash(LEAVES[0], None)
    with pytest.raises(ValueError):
        tlog.node_hash(LEAVES[0], b"short")
    with pytest.raises(ValueError):
        tlog.record_leaf_hash(b"short", b"payload")


def test_list_helpers_check_their_ranges():
    with pytest.raises(ValueError):
        tlog._inclusion_proof(ENTRIES[:4], 4, 4)
    with pytest.raises(ValueError):
        tlog._inclusion_proof(ENTRIES[:4], 0, 5)
    with pytest.raises(ValueError):
        tlog._consistency_proof(ENTRIES[:4], 0, 4)
    with pytest.raises(ValueError):
        tlog._consistency_proof(ENTRIES[:4], 3, 2)
    with pytest.raises(ValueError):
        tlog._consistency_proof(ENTRIES[:4], 2, 5)
    with pytest.raises(ValueError):
        tlog._tree_root([b"short"])
    assert tlog._consistency_proof(ENTRIES[:4], 4, 4) == []


def test_tile_helpers_follow_tlog_tiles():
    # c2sp.org/tlog-tiles: the tree of 70,000 leaves.
    assert tlog._tile_count(70000, 0) == (273, 112)
    assert tlog._tile_count(70000, 1) == (1, 17)
    assert tlog._tile_count(70000, 2) == (0, 1)
    assert tlog._tile_count(70000, 3) == (0, 0)
    assert tlog._tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tlog._tile_path(1, 0, 17) == "tile/1/000.p/17"
    assert tlog._tile_path(None, 273, 112) == "tile/entries/273.p/112"
    with pytest.raises(ValueError):
        tlog._tile_path(0, 0, 257)
    with pytest.raises(ValueError):
        tlog._tile_path(64, 0)


# ---- the text form of proofs (docs/TLOG.md) --------------------------------------------

def test_proof_text_round_trip_and_spec_example():
    text = tlog._format_proof("inclusion", 2, 3, [bytes.fromhex(SPEC["root2"])])
    assert text == "inclusion 2 3\n" + SPEC["root2"] + "\n"
    assert tlog._parse_proof(text) == ("inclusion", 2, 3, [bytes.fromhex(SPEC["root2"])])
    assert tlog._parse_proof(text.encode()) == tlog._parse_proof(text)
    proof = tlog._consistency_proof(ENTRIES, 5, 300)
    kind, m, n, parsed = tlog._parse_proof(tlog._format_proof("consistency", 5, 300, proof))
    assert (kind, m, n, parsed) == ("consistency", 5, 300, proof)
    tlog.verify_consistency(m, n, parsed, ROOTS[5], ROOTS[300])
    assert tlog._parse_proof("consistency 4 4\n") == ("consistency", 4, 4, [])


@pytest.mark.parametrize("text", [
    "", "\n", "inclusion 2 3", "inclusion 2 3\n\n", "inclusion  2 3\n", "inclusion 02 3\n",
    "inclusion 2 +3\n", "inclusion 2 3 4\n", "Inclusion 2 3\n", "proof 2 3\n",
    "inclusion 2 18446744073709551616\n", "inclusion 2 3\r\n",
    "inclusion 2 3\n" + SPEC["root2"].upper() + "\n",
    "inclusion 2 3\n" + SPEC["root2"][:-1] + "\n",
    "inclusion 2 3\n" + SPEC["root2"] + " \n",
    "inclusion 2 3\n" + SPEC["root2"],
    "inclusion 2 3\n" + SPEC["root2"] + "\n\n",
    "inclusion \u0662 3\n",
    b"inclusion 2 3\n\xff\n",
])
def test_malformed_proof_text_is_rejected(text):
    with pytest.raises(InvalidProofError, match="malformed proof text"):
        tlog._parse_proof(text)


def test_format_proof_checks_its_arguments():
    with pytest.raises(ValueError):
        tlog._format_proof("audit", 1, 2, [])
    with pytest.raises(ValueError):
        tlog._format_proof("inclusion", -1, 2, [])
    with pytest.raises(TypeError):
        tlog._format_proof("inclusion", True, 2, [])
    with pytest.raises(ValueError):
        tlog._format_proof("inclusion", 1, 2, [b"short"])
    with pytest.raises(TypeError):
        tlog._parse_proof(None)
