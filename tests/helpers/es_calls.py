"""Calls of the eventsourcing crash test (tests/test_eventsourcing_crash.py), shared with its
child processes: a module without pytest, so that a child starts quickly."""

from __future__ import annotations

import random
import uuid

from eventsourcing.persistence import StoredEvent

NS = uuid.UUID("0b6d6f7e-8c7b-4d0e-9a55-3f1f0e7a2c11")
AGGS = [uuid.uuid5(NS, f"agg{i}") for i in range(13)]


def call_shape(g):
    """The aggregates of call g and how many events each gets: a function of g alone."""
    rng = random.Random(g)
    return [(a, rng.randint(1, 3)) for a in rng.sample(AGGS, rng.randint(2, 4))]


def call_events(g, versions, big):
    events = []
    for a, n in call_shape(g):
        for _ in range(n):
            versions[a] = versions.get(a, 0) + 1
            pad = b"x" * (random.Random(g * 31 + versions[a]).randint(0, 3000) if big else 10)
            events.append(StoredEvent(originator_id=a, originator_version=versions[a],
                                      topic=f"call{g}", state=f"{g}|".encode() + pad))
    return events


def env(path, fsync):
    return {"KIMBERLITE_PATH": path, "KIMBERLITE_FSYNC": "y" if fsync else "n",
            "KIMBERLITE_MAX_SEGMENT_SIZE": "32768"}


