"""The distribution name, and detection of the other ``kimberlite`` distribution installed over
this package.

This package is distributed as ``kimberlite-storage`` and imported as ``kimberlite``. The
name ``kimberlite`` on the package index belongs to a different project (the Python SDK of
the Kimberlite database server), whose wheel installs its own top-level ``kimberlite/``
package. pip lets both be installed into one environment, and each overwrites the other's
files in the one ``kimberlite/`` directory: whichever was installed last works partly, and
uninstalling either breaks the other.

``check()`` runs first thing at import. It looks beside this package (in site-packages) for
the other distribution's metadata directory, ``kimberlite-<version>.dist-info``, and, if
one is there, for any of the files its RECORD lists under ``kimberlite/`` in this package's
directory. Finding one raises ImportError with what happened and how to fix it. The normal
cost is one directory listing; only ``os`` is used, to keep ``import kimberlite`` lean.
"""

from __future__ import annotations

import os

DISTRIBUTION = "kimberlite-storage"
_OTHER_PREFIX = "kimberlite-"  # "kimberlite-0.9.1.dist-info"; ours is "kimberlite_storage-…"


def _other_dist_infos(site: str) -> list[str]:
    try:
        names = os.listdir(site)
    except OSError:  # not a directory (a zip), or unreadable: nothing to tell
        return []
    found = []
    for name in names:
        if not (name.endswith(".dist-info") and name.lower().startswith(_OTHER_PREFIX)):
            continue
        version = name[len(_OTHER_PREFIX):-len(".dist-info")]
        if version[:1].isdigit():  # "kimberlite-0.9.1", not "kimberlite-storage-…"
            found.append(name)
    return sorted(found)


def _files_present(site: str, dist_info: str, package_dir: str) -> list[str]:
    """Files of `dist_info`'s RECORD that lie under kimberlite/ and exist in package_dir."""
    try:
        with open(os.path.join(site, dist_info, "RECORD"), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    present = []
    for line in lines:
        path = line.split(",", 1)[0].strip('"').replace("\\", "/")
        if not path.startswith("kimberlite/") or path.endswith(".pyc"):
            continue
        if os.path.exists(os.path.join(package_dir, path[len("kimberlite/"):])):
            present.append(path)
    return present


def check(package_dir: str) -> None:
    """Raise ImportError if another distribution's files share ``package_dir``."""
    site = os.path.dirname(os.path.abspath(package_dir))
    for dist_info in _other_dist_infos(site):
        present = _files_present(site, dist_info, package_dir)
        if not present:
            continue
        version = dist_info[len(_OTHER_PREFIX):-len(".dist-info")]
        shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
        raise ImportError(
            f"cannot import kimberlite: {package_dir} mixes two different projects. This "
            f"package (distribution {DISTRIBUTION!r}) shares the directory with files of the "
            f"'kimberlite' distribution {version} ({shown}; {os.path.join(site, dist_info)}), "
            f"which is the Python SDK of the Kimberlite database server, another project "
            f"that installs the same top-level package. The two cannot be installed in one "
            f"environment. To fix: `python -m pip uninstall kimberlite {DISTRIBUTION}`, then "
            f"`python -m pip install {DISTRIBUTION}`; use separate virtualenvs if you need "
            f"both.",
            name="kimberlite", path=package_dir)
