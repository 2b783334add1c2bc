"""Run the C library's own test suite (tests/c, under ASan and UBSan) as part of pytest.

The C tests cover what the Python tests can't reach directly: every CRC implementation the
CPU offers, byte-exact record encoding, decoding of every truncation and bit flip, the
.idx format's rejection of hostile files, and the engine through storage.h. Nothing here is
skipped: a machine without `make` or a C compiler fails with a message saying what to install.
"""
import os
import re
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
C_TESTS = os.path.join(HERE, "c")
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.MULTILINE)


def _make():
    make = shutil.which("make")
    cc = os.environ.get("CC", "cc")
    if make is None:
        pytest.fail("`make` is not installed; the C tests need it (Debian: apt-get install make)")
    if shutil.which(cc) is None:
        pytest.fail(f"C compiler {cc!r} not found; install one (Debian: apt-get install gcc)")
    return make


def test_each_public_header_compiles_on_its_own():
    """Every header under include/kimberlite/ (sys/ included) compiles alone, as the only
    include of a file, with -std=c11 -pedantic -Wall -Wextra -Werror and no feature macros."""
    headers = [
        os.path.relpath(os.path.join(d, f), os.path.join(HERE, "..", "include"))
        for d, _, files in os.walk(os.path.join(HERE, "..", "include", "kimberlite"))
        for f in files
        if f.endswith(".h")
    ]
    proc = subprocess.run(
        [_make(), "-s", "-C", C_TESTS, "headers"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"`make -C tests/c headers` failed:\n{proc.stdout}"
    assert f"{len(headers)} public headers compile on their own" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_c_library_suite_passes_under_sanitizers():
    make = _make()
    try:
        proc = subprocess.run(
            [make, "-C", C_TESTS, "-j2", "check"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`make -C tests/c check` timed out:\n{exc.output or ''}")
    output = proc.stdout
    assert proc.returncode == 0, f"`make -C tests/c check` failed (exit {proc.returncode}):\n{output}"
    m = SUMMARY.search(output)
    assert m, f"no 'N passed, M failed' summary in the output:\n{output}"
    passed, failed = int(m.group(1)), int(m.group(2))
    assert failed == 0 and passed > 0, output
