"""A small, seeded, plain-Python mutation fuzzer (the bounded pass of the test command).

Deterministic for a given seed: each execution takes a corpus entry and applies 1-4
mutations — bit flips, random bytes, inserted and deleted runs, truncation, splicing with
another entry, and "interesting" integers written where the format keeps its length
(bytes 40..44 of a record), offset (0..8) and index count (8..16) fields.
"""
import random
import struct

U32 = [0, 1, 43, 44, 47, 48, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]
U64 = [0, 1, 2, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 32]
FIELDS = [(40, "<I", U32), (0, "<Q", U64), (8, "<Q", U64), (16, "<Q", U64)]


def mutate(rng, data, corpus):
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        if op == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2:
            i = rng.randrange(len(b) + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 3 and b:
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 64)]
        elif op == 4 and b:
            del b[rng.randrange(len(b)):]
        elif op == 5:
            other = rng.choice(corpus)
            i = rng.randrange(len(b) + 1)
            j = rng.randrange(len(other) + 1)
            b = b[:i] + bytearray(other[j:])
        elif op in (6, 7):
            # An interesting integer at a field position, of this record or a later one.
            at, fmt, values = rng.choice(FIELDS)
            stride = rng.choice([0, 0, 54, 48 + rng.randrange(200)])
            pos = at + stride * rng.randrange(4)
            size = struct.calcsize(fmt)
            if pos + size <= len(b):
                b[pos:pos + size] = struct.pack(fmt, rng.choice(values))
        elif op == 8 and len(b) > 8:
            i = rng.randrange(len(b) - 4)
            j = min(len(b), i + rng.randint(4, 64))
            b[i:i] = b[i:j]   # a duplicated run (stale copies of records)
    return bytes(b)


def run(target, corpus, execs, seed, scratch=None):
    """Run `execs` executions of target over mutations of corpus; returns the count."""
    rng = random.Random(seed)
    corpus = list(corpus)
    done = 0
    for data in corpus:             # the seeds themselves first
        target(data) if scratch is None else target(data, scratch)
        done += 1
    while done < execs:
        data = mutate(rng, rng.choice(corpus), corpus)
        target(data) if scratch is None else target(data, scratch)
        done += 1
    return done
