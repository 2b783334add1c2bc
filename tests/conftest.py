"""Shared fixtures for the Python test-suite.

- A hypothesis profile ("kimberlite", the default) keeps property tests fast on a small
  machine; KIMBERLITE_HYPOTHESIS_PROFILE=thorough runs many more examples.
- `backend` runs a backend-agnostic test on both Storage (files) and MemoryStorage.
- The repository root goes on sys.path only when an in-place build exists there, so that a
  `pip install .`ed package is tested otherwise; KIMBERLITE_TEST_PATH=dir tests the package
  found in dir instead (run pytest from outside the repository then).
- helpers.ci_guard: under CI=true a test skipped because a module is missing fails the run.
- Markers: `slow` marks the long sweeps; `python -m pytest -m "not slow"` is the inner loop
  (docs/TESTING.md).
"""
import glob
import os
import sys

import pytest
from hypothesis import HealthCheck, settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.environ.get("KIMBERLITE_TEST_PATH"):
    # test another build of the package, e.g. one made with KIMBERLITE_SANITIZE
    sys.path.insert(0, os.environ["KIMBERLITE_TEST_PATH"])
elif glob.glob(os.path.join(ROOT, "kimberlite", "_core*.so")) and ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# A partial offset index's unloaded entry used without its guard aborts the test process
# (docs/DESIGN.md, "Open reads the end of a large index"); subprocesses inherit it.
os.environ.setdefault("KIMBERLITE_INDEX_CHECKS", "1")

_common = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large],
)
settings.register_profile("kimberlite", max_examples=25, **_common)
settings.register_profile("thorough", max_examples=400, **_common)
settings.load_profile(os.environ.get("KIMBERLITE_HYPOTHESIS_PROFILE", "kimberlite"))

from helpers import Backend  # noqa: E402

pytest_plugins = ["helpers.ci_guard"]


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture(params=["disk", "memory"])
def backend(request, tmp_path):
    b = Backend(request.param, tmp_path)
    yield b
    b.close_all()


@pytest.fixture
def disk(tmp_path):
    b = Backend("disk", tmp_path)
    yield b
    b.close_all()
