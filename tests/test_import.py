"""`import kimberlite` stays lean: no typing, re, enum or html at runtime (issue 9).

Each check runs a fresh interpreter with -S (no site: some .pth files import typing on their
own), with the directory of the kimberlite under test first on its path, wherever that is
(the source tree or an installed wheel).
"""
import os
import subprocess
import sys

import kimberlite

HEAVY = ("typing", "re", "enum", "html")
PARENT = os.path.dirname(os.path.dirname(os.path.abspath(kimberlite.__file__)))


def _modules_after(code):
    script = ("import sys; before = set(sys.modules)\n" + code +
              "\nnew = sorted(set(sys.modules) - before)\nprint(' '.join(new))")
    p = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, PYTHONPATH=PARENT))
    assert p.returncode == 0, p.stderr
    return set(p.stdout.splitlines()[-1].split())


def test_import_kimberlite_imports_no_typing_re_enum_or_html():
    new = _modules_after("import kimberlite; assert kimberlite.__file__.startswith(%r)"
                         % PARENT)
    assert "kimberlite._core" in new
    assert not new & set(HEAVY), sorted(new & set(HEAVY))


def test_everyday_use_stays_lean():
    # a storage, a stream view, records, reprs and iteration need none of them either
    new = _modules_after(
        "import kimberlite\n"
        "s = kimberlite.MemoryStorage()\n"
        "s.append_batch(1, [b'a', b'b'])\n"
        "v = s.stream(1)\n"
        "assert list(v) == [b'a', b'b'] and v[-1] == b'b' and v.index(b'b') == 1\n"
        "repr(s); repr(v); repr(s.read_records(1)[0])\n"
        "assert [r.payload for r in s.iter_from(1, records=True)] == [b'a', b'b']\n")
    assert not new & set(HEAVY), sorted(new & set(HEAVY))


def test_html_is_imported_only_for_html_reprs():
    new = _modules_after(
        "import kimberlite\n"
        "s = kimberlite.MemoryStorage()\n"
        "s.append_batch(1, [b'<a>'])\n"
        "assert '&lt;a&gt;' in s.stream(1)._repr_html_()\n")
    assert "html" in new
