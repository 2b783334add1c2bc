"""kimberlite's pytest plugin: fixtures for tests of code that uses Kimberlite.

Installed with the package and loaded by pytest automatically (entry point ``pytest11``,
name ``kimberlite``); ``-p no:kimberlite`` turns it off. Fixtures:

- ``kimberlite_storage``: a :class:`kimberlite.Storage` (a writer) on a fresh directory
  under the test's ``tmp_path``, closed after the test.
- ``kimberlite_memory``: a fresh :class:`kimberlite.MemoryStorage`, closed after the test.

Both honour the marker ``@pytest.mark.kimberlite(max_segment_size=..., max_event_size=...)``
to open the storage with other options (a small ``max_segment_size`` makes rotation happen
in small tests). :mod:`kimberlite.testing` damages streams on purpose, to test that your
code notices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from . import MemoryStorage, Storage

__all__ = ["kimberlite_storage", "kimberlite_memory"]

_MARKER = "kimberlite"
_OPTIONS = ("max_segment_size", "max_event_size")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kimberlite(max_segment_size=None, max_event_size=None): options of the storage "
        "opened by the kimberlite_storage and kimberlite_memory fixtures",
    )


def _options(request: pytest.FixtureRequest) -> Dict[str, Any]:
    marker = request.node.get_closest_marker(_MARKER)
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError("@pytest.mark.kimberlite takes keyword arguments only")
    unknown = sorted(set(marker.kwargs) - set(_OPTIONS))
    if unknown:
        raise pytest.UsageError(f"@pytest.mark.kimberlite: unknown option(s) {unknown}; "
                                f"known: {list(_OPTIONS)}")
    return {k: v for k, v in marker.kwargs.items() if v is not None}


@pytest.fixture
def kimberlite_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """A kimberlite.Storage (writer) on ``tmp_path / "kimberlite"``, closed after the test."""
    storage = Storage(tmp_path / "kimberlite", **_options(request))
    try:
        yield storage
    finally:
        storage.close()


@pytest.fixture
def kimberlite_memory(request: pytest.FixtureRequest) -> Iterator[MemoryStorage]:
    """A fresh kimberlite.MemoryStorage, closed after the test."""
    storage = MemoryStorage(**_options(request))
    try:
        yield storage
    finally:
        storage.close()
