#!/usr/bin/env bash
# Run the whole pytest suite against the extension built with AddressSanitizer and
# UndefinedBehaviorSanitizer (docs/TESTING.md). The build happens in a private copy of the
# repository, so the normal in-place build is left untouched.
#
#   tests/run_sanitized.sh                 # every test
#   tests/run_sanitized.sh -k crash        # extra arguments go to pytest
#
# ASan's leak checker is off (detect_leaks=0): CPython itself does not free everything at
# exit. Leaks are checked by tests/c (make check, LeakSanitizer on) and by valgrind.
#
# Left out here, and only here (the normal test command runs them):
#  - tests/test_leak.py, tests/test_tlog_leak.py,
#    test_stream.py::test_reading_a_large_stream_keeps_rss_flat and
#    test_arrow.py::test_duckdb_streams_in_bounded_memory measure RSS, which ASan
#    inflates by design (freed memory sits in its quarantine);
#  - tests/test_c_library.py builds and runs the C suite under ASan itself; with the
#    runtime preloaded into every child, ASan would report bugs in `make`, not in ours;
#  - tests/test_typing.py runs mypy, stubtest and pdoc over the Python sources and stubs:
#    nothing of the engine that ASan could check, only minutes of an instrumented mypy.
#
# CI (.ci/run) passes -m "not slow": the slow sweeps run once, in the normal test command.
#
# PYCRYPTODOME_DISABLE_DEEPBIND=1: pycryptodome (imported by the eventsourcing library's
# test cases) dlopens its libraries with RTLD_DEEPBIND, which the sanitizer runtime refuses
# by aborting the process (google/sanitizers#611); the variable makes it use plain dlopen.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
WORK="$(mktemp -d /tmp/kimberlite-asan.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

tar -C "$REPO" --exclude=./.git --exclude=./build --exclude=./tests/c/build \
    --exclude='*.so' --exclude='__pycache__' -cf - . | tar -C "$WORK" -xf -
cd "$WORK"
KIMBERLITE_SANITIZE=address,undefined "$PYTHON" setup.py -q build_ext --inplace \
    --build-temp "$WORK/build-temp" >/dev/null

LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
KIMBERLITE_SANITIZED=1 \
PYCRYPTODOME_DISABLE_DEEPBIND=1 \
    "$PYTHON" -m pytest -q -p no:cacheprovider tests \
        --ignore=tests/test_leak.py --ignore=tests/test_tlog_leak.py \
        --ignore=tests/test_c_library.py --ignore=tests/test_typing.py \
        --deselect tests/test_stream.py::test_reading_a_large_stream_keeps_rss_flat \
        --deselect tests/test_arrow.py::test_duckdb_streams_in_bounded_memory "$@"
