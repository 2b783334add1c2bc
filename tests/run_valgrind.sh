#!/usr/bin/env bash
# valgrind memcheck over a representative subset of the pytest suite (docs/TESTING.md):
# record and index codecs, every API call on both backends, fault injection with
# recovery, torn tails and hostile files. Uses the normal in-place build (built with -g).
#
#   tests/run_valgrind.sh                  # the default subset (a few minutes)
#   tests/run_valgrind.sh tests/test_api.py  # or any pytest arguments
#
# Fails on any memory error and on any "definitely lost" block. PYTHONMALLOC=malloc routes
# CPython's allocations through malloc so that valgrind sees them; possible/indirect
# leaks of the interpreter itself are not errors. Child processes are not traced.
# tests/valgrind-python.supp silences CPython's own false positives (see its comments).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PYTHON="$("${PYTHON:-python}" -c "import sys; print(sys.executable)")"   # not a shim script
if [ "$#" -eq 0 ]; then
    set -- tests/test_vectors.py tests/test_api.py tests/test_errors.py tests/test_torn.py \
        "tests/test_faults.py::test_every_io_call_fails_in_turn[eio-persistent-short]" \
        "tests/test_faults.py::test_every_io_call_of_a_quarantine_fails_in_turn" \
        -k "not another_process and not fsize and not read_only_directory and not full_small"
fi
PYTHONMALLOC=malloc KIMBERLITE_FUZZ_SCALE="${KIMBERLITE_FUZZ_SCALE:-0.05}" \
valgrind -q --tool=memcheck --error-exitcode=99 --leak-check=full \
    --show-leak-kinds=definite --errors-for-leak-kinds=definite \
    --trace-children=no --num-callers=30 --suppressions=tests/valgrind-python.supp \
    "$PYTHON" -m pytest -q -p no:cacheprovider "$@"
