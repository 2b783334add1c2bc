"""The long fuzz run, with atheris (coverage-guided libFuzzer for Python; docs/TESTING.md).

    pip install atheris
    python tests/fuzz/run_atheris.py record    -atheris_runs=2000000 tests/fuzz/corpus/record
    python tests/fuzz/run_atheris.py index     -max_total_time=600 tests/fuzz/corpus/index
    python tests/fuzz/run_atheris.py directory -max_total_time=1800 tests/fuzz/corpus/directory

Any exception other than StorageError (or a crash, or a sanitizer report when the extension
is built with KIMBERLITE_SANITIZE) stops the run and writes the input to crash-<sha1>; add
it to the corpus once fixed. Pass a scratch corpus directory first to keep new inputs
apart from the seeds: ... directory /tmp/new-corpus tests/fuzz/corpus/directory
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE), os.path.dirname(os.path.dirname(HERE))]

import atheris  # noqa: E402

with atheris.instrument_imports():
    import harness  # noqa: E402


def main():
    import logging
    logging.getLogger("kimberlite").setLevel(logging.CRITICAL)   # recovery notes by the thousand
    if len(sys.argv) < 2 or sys.argv[1] not in harness.TARGETS:
        raise SystemExit(f"usage: {sys.argv[0]} {{{','.join(harness.TARGETS)}}} [libFuzzer args]")
    name = sys.argv.pop(1)
    target = harness.TARGETS[name]
    scratch = harness.new_scratch()
    if name == "record":
        def one(data):
            target(data)
    else:
        def one(data):
            target(data, scratch)
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
