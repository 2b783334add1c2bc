"""The extension in sub-interpreters, each with its own GIL (Python 3.12+).

module.c declares Py_mod_multiple_interpreters = Py_MOD_PER_INTERPRETER_GIL_SUPPORTED:
every piece of Python data is per module (state, heap types), and the engine's only
process-wide state (the CRC tables) is built once and read-only after. An isolated
interpreter would refuse to import the module otherwise. Runs in a subprocess.
"""
import os
import subprocess
import sys
import textwrap

import pytest

import kimberlite

PARENT = os.path.dirname(os.path.dirname(os.path.abspath(kimberlite.__file__)))

SCRIPT = textwrap.dedent("""
    import sys, tempfile, textwrap
    try:
        import _interpreters as interpreters          # 3.13
    except ImportError:
        import _xxsubinterpreters as interpreters     # 3.12
    import kimberlite
    d = tempfile.mkdtemp()
    code = textwrap.dedent('''
        import kimberlite
        s = kimberlite.MemoryStorage()
        s.append_batch(1, [b'a', b'b'])
        assert [r.payload for r in s.read_records(1)] == [b'a', b'b']
        with kimberlite.Storage(%r) as t:
            t.append_batch(2, [b'x'])
        try:
            s.append_batch(1, [b'c'], expected_offset=9)
        except kimberlite.OffsetMismatchError as e:
            assert e.actual == 2
        else:
            raise AssertionError('no OffsetMismatchError')
    ''' % d)
    for n in range(3):
        try:
            interp = interpreters.create(isolated=True)
        except TypeError:  # 3.13: a config object; the default is isolated with its own GIL
            interp = interpreters.create()
        interpreters.run_string(interp, code)
        interpreters.destroy(interp)
    with kimberlite.Storage(d, read_only=True) as s:
        assert s.read_from(2) == [b'x'] * 3, s.read_from(2)
    print('ok')
""")


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="per-interpreter GIL and Py_mod_multiple_interpreters are 3.12+")
def test_isolated_subinterpreters_import_and_use_the_extension():
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONPATH=PARENT))
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stdout + p.stderr
