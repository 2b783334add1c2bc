"""Typing and generated docs: mypy --strict on examples/ and the package, mypy.stubtest on the
compiled module, and the pdoc API reference (README, "API reference"). Each in a subprocess."""
import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    path = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=path, MYPYPATH=ROOT)


def _run(args, tmp_path):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_examples_pass_mypy_strict(tmp_path):
    pytest.importorskip("mypy", reason="pip install 'mypy>=1.18'")
    examples = sorted(glob.glob(os.path.join(ROOT, "examples", "*.py")))
    assert len(examples) >= 3
    cache = ["--cache-dir", str(tmp_path / "cache")]
    p = _run(["-m", "mypy", "--strict", *cache, *examples], tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    # and the package itself, wherever the tested one is (source tree or installed wheel)
    p = _run(["-m", "mypy", "--strict", *cache, "-p", "kimberlite"], tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.slow
def test_stubs_match_the_compiled_module(tmp_path):
    pytest.importorskip("mypy.stubtest", reason="pip install 'mypy>=1.18'")
    p = _run(["-m", "mypy.stubtest", "kimberlite", "--mypy-config-file", os.devnull], tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Success" in p.stdout


def test_examples_run(tmp_path):
    for path in sorted(glob.glob(os.path.join(ROOT, "examples", "*.py"))):
        p = _run([path], tmp_path)
        assert p.returncode == 0, (path, p.stdout, p.stderr)


def test_api_reference_builds(tmp_path):
    pytest.importorskip("pdoc", reason="pip install 'kimberlite-storage[docs]'")
    out = tmp_path / "api"
    p = _run(["-m", "pdoc", "kimberlite", "kimberlite.testing", "kimberlite.pytest_plugin",
              "kimberlite.dask", "-o", str(out)], tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    page = (out / "kimberlite.html").read_text()
    for name in ("Storage", "MemoryStorage", "Stream", "iter_from", "to_pandas", "Record",
                 "ChainVerificationError"):
        assert name in page, name
    assert (out / "kimberlite" / "testing.html").exists()
    dask_page = (out / "kimberlite" / "dask.html").read_text()
    for name in ("read_stream", "read_streams", "verify", "StreamVerification"):
        assert name in dask_page, name
