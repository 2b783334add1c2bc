"""kimberlite.__version__ is a literal (importing importlib.metadata would slow every import
down); it must stay equal to the version pyproject.toml declares."""
import pathlib
import re

import kimberlite as km

PYPROJECT = pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml"


def _project_version() -> str:
    text = PYPROJECT.read_text(encoding="utf-8")
    try:
        import tomllib
    except ImportError:  # Python < 3.11: the [project] table's version line
        section = text.split("[project]", 1)[1].split("\n[", 1)[0]
        return re.search(r'^version\s*=\s*"([^"]+)"', section, re.M).group(1)
    return tomllib.loads(text)["project"]["version"]


def test_version_matches_pyproject():
    assert km.__version__ == _project_version()


def test_import_does_not_load_importlib_metadata():
    import subprocess
    import sys

    # (a site hook may have loaded it already: then there is nothing to tell)
    code = ("import sys; before = 'importlib.metadata' in sys.modules; import kimberlite; "
            "print(not before and 'importlib.metadata' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(PYPROJECT.parent), check=True).stdout.strip()
    assert out == "False"
