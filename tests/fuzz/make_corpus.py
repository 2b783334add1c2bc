"""Write the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/). Run from the
repository root: python tests/fuzz/make_corpus.py. The seeds are valid files and the
hostile shapes SPEC §3 names: absurd lengths, wrong offsets, a segment that does not
continue the previous one, indexes past the end or into the middle of a record, torn tails.
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))   # an in-place build
from helpers import codec  # noqa: E402
from harness import encode_layout  # noqa: E402

P = [b"event1", b"event2", b"", b"x" * 100, b"payload-5"]


def seg(first, payloads, prev=None):
    return codec.encode_records(first, prev, payloads)[0]


def with_length(rec, length):
    return rec[:40] + struct.pack("<I", length) + rec[44:]


def main():
    out = {"record": {}, "index": {}, "directory": {}}
    r0 = codec.encode_record(0, None, b"event1")
    r1 = codec.encode_record(1, codec.chain_hash(None, b"event1"), b"event2")
    rec = out["record"]
    rec["genesis"] = r0
    rec["second"] = r1
    rec["empty-payload"] = codec.encode_record(7, b"\x11" * 32, b"")
    rec["length-ffffffff"] = with_length(r0, 0xFFFFFFFF)
    rec["length-too-short"] = with_length(r0, 2)
    rec["offset-2-63"] = codec.encode_record(1 << 63, None, b"a")
    rec["truncated"] = r1[:50]
    rec["two-records"] = r0 + r1

    ix = out["index"]
    ix["three"] = codec.encode_index([0, 54, 108])
    ix["empty"] = codec.encode_index([])
    bad = bytearray(codec.encode_index([0, 54]))
    bad[8:16] = struct.pack("<Q", (1 << 64) - 1)
    ix["count-huge"] = bytes(bad)
    ix["bad-magic"] = b"XXXX" + codec.encode_index([0])[4:]
    ix["version-2"] = codec.encode_index([0])[:4] + b"\x02" + codec.encode_index([0])[5:]
    ix["short"] = codec.encode_index([0, 1, 2])[:20]

    d = out["directory"]
    s0 = seg(0, P[:3])
    h3 = codec.head_hash(P[:3])
    s1 = seg(3, P[3:], h3)
    pos0 = codec.record_positions(s0)
    d["valid-two-segments"] = encode_layout([s0, s1], [codec.encode_index(pos0), None])
    d["second-does-not-continue"] = encode_layout([s0, seg(9, P[3:], h3)], [None, None])
    d["second-restarts-at-zero"] = encode_layout([s0, seg(0, P[3:])], [None, None])
    d["index-past-end"] = encode_layout([s0], [codec.encode_index(pos0 + [len(s0) + 100])])
    d["index-mid-record"] = encode_layout([s0], [codec.encode_index([0, 10, 60])])
    d["length-ffffffff-mid"] = encode_layout([s0[:pos0[1]] + with_length(s0[pos0[1]:], 0xFFFFFFFF)], [None])
    d["wrong-offsets"] = encode_layout([seg(0, P[:1]) + seg(5, P[1:3])], [None])
    d["torn-tail"] = encode_layout([s0 + s1[:30]], [None])
    d["junk"] = encode_layout([bytes(range(256)) * 3], [b"VDXI\x01\x00\x00\x00" + b"\xff" * 12])
    d["three-segments"] = encode_layout(
        [seg(0, P[:1]), seg(1, P[1:2], codec.head_hash(P[:1])), seg(2, P[2:3], codec.head_hash(P[:2]))],
        [None, b"", None])
    for target, seeds in out.items():
        td = os.path.join(HERE, "corpus", target)
        os.makedirs(td, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(td, name), "wb") as f:
                f.write(data)
    print("corpus written:", {t: len(s) for t, s in out.items()})


if __name__ == "__main__":
    main()
