"""kimberlite's pytest plugin (entry point pytest11), tested with pytester."""
import importlib.metadata
import os

import pytest

pytest_plugins = ["pytester"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _installed():
    eps = importlib.metadata.entry_points()
    group = eps.select(group="pytest11") if hasattr(eps, "select") else eps.get("pytest11", [])
    return any(ep.value == "kimberlite.pytest_plugin" for ep in group)


def _args():
    # Installed (pip install -e .): pytest loads the plugin by itself, through its entry
    # point. Run from an in-place build only: name it.
    return [] if _installed() else ["-p", "kimberlite.pytest_plugin"]


def test_entry_point_is_declared():
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        text = f.read()
    assert '[project.entry-points.pytest11]\nkimberlite = "kimberlite.pytest_plugin"' in text


def test_fixtures(pytester):
    pytester.makepyfile(
        """
        import os
        import pytest
        import kimberlite
        import kimberlite.testing

        seen = []

        def test_storage(kimberlite_storage, tmp_path):
            s = kimberlite_storage
            assert isinstance(s, kimberlite.Storage) and not s.read_only
            assert os.path.dirname(s.path) == str(tmp_path)
            assert s.append_batch(1, [b"event1", b"event2"]) == 2
            seen.append(s)

        def test_memory(kimberlite_memory):
            s = kimberlite_memory
            assert isinstance(s, kimberlite.MemoryStorage)
            s.append_batch(1, [b"a", b"b", b"c"])
            head = s.latest_chain_hash(1)
            kimberlite.testing.replace_payload(s, 1, 0, b"forged")
            with pytest.raises(kimberlite.ChainVerificationError):
                s.verify(1, expected_head=head)
            seen.append(s)

        @pytest.mark.kimberlite(max_segment_size=100)
        def test_marker(kimberlite_storage, kimberlite_memory):
            for s in (kimberlite_storage, kimberlite_memory):
                assert s.max_segment_size == 100
                s.append_batch(1, [b"x" * 60])
                s.append_batch(1, [b"y" * 60])
                assert s.segment_count(1) == 3

        def test_closed_after_each_test():
            assert len(seen) == 2 and all(s.closed for s in seen)
        """
    )
    result = pytester.runpytest(*_args())
    result.assert_outcomes(passed=4)


def test_fixtures_are_listed(pytester):
    result = pytester.runpytest("--fixtures", *_args())
    result.stdout.fnmatch_lines(["*kimberlite_storage*", "*kimberlite_memory*"])
    assert result.ret == 0


def test_bad_marker_is_a_usage_error(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.kimberlite(segment_size=1)
        def test_x(kimberlite_memory):
            pass
        """
    )
    result = pytester.runpytest(*_args())
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*unknown option*segment_size*"])
