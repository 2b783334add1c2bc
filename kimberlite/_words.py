"""Small text helpers shared by the reprs, the HTML summaries and the command line."""

from __future__ import annotations


def plural(n: int, noun: str) -> str:
    """``0 events``, ``1 event``, ``2 events``: the one place that decides the plural."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def short_hash(h: bytes | None) -> str:
    """The first 16 hex digits of a hash and an ellipsis; a dash for None."""
    return "—" if h is None else h.hex()[:16] + "…"
