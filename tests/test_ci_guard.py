"""The CI guard of tests/helpers/ci_guard.py: under CI=true a test skipped because a module is
missing fails the run; platform skips, allowed modules and runs without CI=true do not.

Each case runs pytest in a subprocess on a tiny test directory, with the guard loaded as the
suite loads it and fake module names that no environment has."""
import os
import subprocess
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))

MISSING_IN_TEST = """
import pytest

def test_needs_a_fake_package():
    pytest.importorskip("kimberlite_no_such_module_a", reason="pip install it")

def test_runs():
    pass
"""

MISSING_AT_MODULE_LEVEL = """
import pytest

pytest.importorskip("kimberlite_no_such_module_b")

def test_never_collected():
    pass
"""

PLATFORM_SKIP = """
import sys
import pytest

@pytest.mark.skipif(sys.version_info < (99,), reason="needs Python 99")
def test_platform():
    pass

def test_skip_inside():
    pytest.skip("creating a device node needs CAP_MKNOD")
"""

PRESENT = """
import json
import pytest

def test_present_module_is_returned():
    assert pytest.importorskip("json") is json
"""


def run_pytest(tmp_path, files, ci, conftest=""):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["helpers.ci_guard"]\n' + conftest)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = TESTS + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the guard: a quicker start
    if ci is not None:
        env["CI"] = ci
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs",
                        str(tmp_path)], cwd=str(tmp_path), env=env, capture_output=True,
                       text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


def test_missing_module_fails_the_run_under_ci(tmp_path):
    rc, out = run_pytest(tmp_path, {"test_a.py": MISSING_IN_TEST,
                                    "test_b.py": MISSING_AT_MODULE_LEVEL}, ci="true")
    assert rc == 1, out
    assert "CI guard: skipped for a missing module" in out
    assert "test_a.py::test_needs_a_fake_package: Skipped: could not import " \
           "'kimberlite_no_such_module_a': pip install it" in out
    assert "test_b.py: Skipped: could not import 'kimberlite_no_such_module_b'" in out
    assert "1 passed, 2 skipped" in out  # the other tests still ran


@pytest.mark.parametrize("ci", [None, "1"])  # only CI=true arms the guard
def test_missing_module_is_only_a_skip_without_ci_true(tmp_path, ci):
    rc, out = run_pytest(tmp_path, {"test_a.py": MISSING_IN_TEST,
                                    "test_b.py": MISSING_AT_MODULE_LEVEL}, ci=ci)
    assert rc == 0, out
    assert "skipped for a missing module (a failure under CI=true)" in out
    assert "1 passed, 2 skipped" in out


def test_platform_skips_and_allowed_modules_pass_under_ci(tmp_path):
    allow = ('import helpers.ci_guard\n'
             'helpers.ci_guard.ALLOWED_MISSING["kimberlite_no_such_module_a"] = "a reason"\n')
    rc, out = run_pytest(tmp_path, {"test_p.py": PLATFORM_SKIP, "test_a.py": MISSING_IN_TEST,
                                    "test_ok.py": PRESENT}, ci="true", conftest=allow)
    assert rc == 0, out
    assert "2 passed, 3 skipped" in out and "missing module" not in out


def test_wrapper_returns_the_module_and_keeps_real_failures(tmp_path):
    rc, out = run_pytest(tmp_path, {"test_ok.py": PRESENT,
                                    "test_f.py": "def test_fails():\n    assert False\n"},
                         ci="true")
    assert rc == 1 and "1 failed, 1 passed" in out, out
