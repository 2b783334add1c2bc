"""The CI guard for optional packages (a pytest plugin, loaded by tests/conftest.py).

A test that needs an optional package (pandas, pyarrow, nbclient, eventsourcing,
cryptography, PyNaCl, mypy, pdoc, ...) asks for it with `pytest.importorskip`, so that a
partial environment still runs everything else. Under CI=true that is not good enough: the
`test` extra installs every one of those packages, so a skip for a missing module means the
environment is wrong and a test silently did not run. Then each such skip is listed at the
end of the run and the run fails (exit status 1), unless the module is in ALLOWED_MISSING
with the reason it may legitimately be missing in CI.

Skips for the platform (`skipif`: no fork(), no /proc, sub-interpreters before Python 3.12,
no CAP_MKNOD when not root) are not skips for a missing module and stay allowed.

How a skip is recognised: `pytest.importorskip` is wrapped so that its message always starts
with "could not import 'module'" (pytest's own wording when no reason is given), whatever
reason the test passed; any skip, at collection or in a test, whose message starts that way
counts. The wrapper changes nothing else: same module returned, same skip raised.
"""
import os
import re

import pytest

# module -> why CI may lack it (then its skips do not fail the run). Empty: the `test` extra
# installs every optional package the suite imports, on every platform CI runs on.
ALLOWED_MISSING: dict = {}

_PATTERN = re.compile(r"^(?:Skipped: )?could not import '([^']+)'")
_original_importorskip = pytest.importorskip
_missing = []  # (nodeid, module, message) of each skip for a missing module


def _importorskip(modname, *args, **kwargs):
    try:
        return _original_importorskip(modname, *args, **kwargs)
    except pytest.skip.Exception as e:
        if e.msg and not _PATTERN.match(e.msg):
            e.msg = f"could not import {modname!r}: {e.msg}"
        raise


def _active():
    return os.environ.get("CI") == "true"


def _skip_message(report):
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr or "")


def _note(report):
    if not report.skipped:
        return
    message = _skip_message(report)
    m = _PATTERN.match(message)
    if m and m.group(1) not in ALLOWED_MISSING and m.group(1).split(".")[0] not in ALLOWED_MISSING:
        _missing.append((report.nodeid, m.group(1), message))


def pytest_configure(config):
    _missing.clear()
    pytest.importorskip = _importorskip


def pytest_unconfigure(config):
    pytest.importorskip = _original_importorskip


def pytest_collectreport(report):
    _note(report)


def pytest_runtest_logreport(report):
    _note(report)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if _active() and _missing and session.exitstatus in (pytest.ExitCode.OK,
                                                         pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if not _missing:
        return
    tr = terminalreporter
    if _active():
        tr.section("CI guard: skipped for a missing module (CI=true makes this a failure)",
                   red=True, bold=True)
    else:
        tr.section("skipped for a missing module (a failure under CI=true)", yellow=True)
    for nodeid, module, message in _missing:
        tr.line(f"{nodeid}: {message}")
    tr.line("install the test extra: python -m pip install -e '.[test]'; a module that CI may "
            "lack goes into ALLOWED_MISSING of tests/helpers/ci_guard.py, with the reason")
