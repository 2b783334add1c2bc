"""Checks of the built package itself, whatever built it (an in-place build, an editable
install, or the wheel from tools/build_wheel.sh): OpenSSL's SHA-256 runs at hardware speed,
the extension exports PyInit__core only, the distribution is named kimberlite-storage, the
other `kimberlite` project's files are detected at import, and setup.py says clearly what
is missing when it cannot build."""
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import time

import pytest

import kimberlite as km

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.dirname(os.path.abspath(km.__file__))
DISTRIBUTION = "kimberlite-storage"


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "KIMBERLITE_TEST_PATH", "KIMBERLITE_OPENSSL",
                        "KIMBERLITE_OPENSSL_LIBCRYPTO", "CFLAGS", "CPPFLAGS")}
    env.update(extra)
    return env


# ---- OpenSSL's CPU detection --------------------------------------------------------------

def test_chain_hash_runs_at_the_speed_of_hashlib_sha256():
    # Not a benchmark: a statically linked OpenSSL whose CPU-feature detection never ran
    # hashes with its generic code, about 5x slower than the hashlib of the same process
    # (which uses the system's libcrypto). Interleaved rounds, best of each, so that another
    # process taking the CPU for a while does not decide the outcome.
    data = os.urandom(64 * 1024)
    assert km.chain_hash(None, data) == hashlib.sha256(data).digest()

    def best_rate(fn, rounds=7, n=40):
        best = float("inf")
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(n):
                fn(data)
            best = min(best, time.perf_counter() - t)
        return n * len(data) / best

    ours = theirs = 0.0
    for _ in range(3):
        ours = max(ours, best_rate(lambda d: km.chain_hash(None, d)))
        theirs = max(theirs, best_rate(lambda d: hashlib.sha256(d).digest()))
    ratio = ours / theirs
    assert ratio >= 0.7, (
        f"kimberlite.chain_hash hashes {ours / 1e6:.0f} MB/s, hashlib.sha256 "
        f"{theirs / 1e6:.0f} MB/s ({ratio:.2f}x): OpenSSL's CPU detection did not run in this "
        f"build of {km._core.__file__} (see include/kimberlite/crypto.h)")


# ---- exported symbols ---------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("nm") is None, reason="nm (binutils) is not installed")
def test_extension_exports_only_its_init_function():
    out = subprocess.run(["nm", "-D", "--defined-only", km._core.__file__],
                         capture_output=True, text=True, check=True).stdout
    names = sorted(line.split()[-1] for line in out.splitlines() if line.strip())
    assert names == ["PyInit__core"], names


# ---- the distribution's name --------------------------------------------------------------

def _installed_distribution():
    """The installed distribution whose files include the kimberlite package under test
    (a wheel install), or None (an in-place build, or an editable install)."""
    target = os.path.realpath(km.__file__)
    for dist in importlib.metadata.distributions():
        for f in dist.files or ():
            if str(f).replace("\\", "/") == "kimberlite/__init__.py":
                if os.path.realpath(str(dist.locate_file(f))) == target:
                    return dist
    return None


def test_distribution_name_is_kimberlite_storage(tmp_path):
    dist = _installed_distribution()
    if dist is not None:
        metadata = dist.metadata
    else:
        # from a source tree: the metadata the build backend writes into a wheel
        assert os.path.isfile(os.path.join(ROOT, "setup.py")), "no installed package, no source"
        subprocess.run([sys.executable, "setup.py", "-q", "dist_info", "--output-dir",
                        str(tmp_path)], cwd=ROOT, check=True, capture_output=True,
                       env=_clean_env())
        (info,) = tmp_path.glob("*.dist-info")
        assert info.name.startswith("kimberlite_storage-")
        metadata = importlib.metadata.PathDistribution(info).metadata
    assert metadata["Name"] == DISTRIBUTION
    assert metadata["Version"] == km.__version__
    assert metadata["Requires-Python"] == ">=3.11"


def test_version_output_names_the_distribution():
    p = subprocess.run([sys.executable, "-m", "kimberlite", "--version"], capture_output=True,
                       text=True, cwd=os.path.dirname(PACKAGE_DIR))
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"kimberlite ({DISTRIBUTION}) {km.__version__}\n"


# ---- the other `kimberlite` project installed over this one -------------------------------

def _site_with_package(tmp_path):
    """A copy of the package under test in a fresh directory, as in site-packages."""
    site = tmp_path / "site"
    shutil.copytree(PACKAGE_DIR, site / "kimberlite",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return site


def _fake_other_distribution(site, name, files, create=True):
    info = site / name
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kimberlite\nVersion: 0.9.1\n")
    (info / "RECORD").write_text("".join(f"{f},sha256=AAAA,10\n" for f in files)
                                 + f"{name}/RECORD,,\n")
    if create:
        for f in files:
            path = site / f
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_text("# the other project's module\n")


def _import_from(site):
    code = "import kimberlite; print(kimberlite.__file__)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(site.parent), env=_clean_env(PYTHONPATH=str(site)),
                          timeout=60)


def test_other_kimberlite_project_in_the_same_directory_is_reported(tmp_path):
    site = _site_with_package(tmp_path)
    _fake_other_distribution(site, "kimberlite-0.9.1.dist-info",
                             ["kimberlite/__init__.py", "kimberlite/client.py",
                              "kimberlite/_ffi/libkimberlite_ffi.so", "kimberlite_sdk.pth"])
    p = _import_from(site)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: cannot import kimberlite: ")
    assert str(site / "kimberlite") in last
    for part in ("'kimberlite' distribution 0.9.1", "kimberlite/client.py",
                 "Kimberlite database server", "cannot be installed in one environment",
                 "pip uninstall kimberlite kimberlite-storage",
                 "pip install kimberlite-storage"):
        assert part in last, part
    assert "kimberlite_sdk.pth" not in last  # not a file of the kimberlite/ directory


@pytest.mark.parametrize("case", ["metadata-only", "our-own-metadata", "files-elsewhere"])
def test_no_false_alarm(tmp_path, case):
    site = _site_with_package(tmp_path)
    if case == "metadata-only":  # the other project's files are gone, its metadata is not
        _fake_other_distribution(site, "kimberlite-0.9.1.dist-info", ["kimberlite/client.py"],
                                 create=False)
    elif case == "our-own-metadata":  # ours, in both spellings of the name
        _fake_other_distribution(site, "kimberlite_storage-0.1.0.dist-info",
                                 ["kimberlite/__init__.py"])
        _fake_other_distribution(site, "kimberlite-storage-0.1.0.dist-info",
                                 ["kimberlite/__init__.py"])
    else:  # a distribution named kimberlite whose files are not in kimberlite/
        _fake_other_distribution(site, "kimberlite-2.0.dist-info", ["kimberlite2/x.py"])
    p = _import_from(site)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(site / "kimberlite" / "__init__.py")


# ---- setup.py's messages when it cannot build ---------------------------------------------

def _source_copy(tmp_path):
    """The files setup.py needs, copied (the checkout, or the unpacked sdist, stays clean)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        if os.path.exists(os.path.join(ROOT, name)):
            shutil.copy2(os.path.join(ROOT, name), src / name)
    # (CI runs the suite from an sdist whose kimberlite/ is removed in favour of the
    # installed wheel: the package under test stands in for it)
    package = os.path.join(ROOT, "kimberlite")
    for tree, origin in (("csrc", os.path.join(ROOT, "csrc")),
                         ("include", os.path.join(ROOT, "include")),
                         ("kimberlite", package if os.path.isdir(package) else PACKAGE_DIR)):
        shutil.copytree(origin, src / tree,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.o"))
    return src


def _build(src, **env):
    return subprocess.run([sys.executable, "setup.py", "build_ext", "--build-temp",
                           str(src / "bt"), "--build-lib", str(src / "bl")],
                          cwd=str(src), capture_output=True, text=True, timeout=300,
                          env=_clean_env(**env))


@pytest.fixture
def source(tmp_path):
    pytest.importorskip("setuptools", reason="the build backend (extra 'test' installs it)")
    if not os.path.isfile(os.path.join(ROOT, "setup.py")):
        pytest.fail(f"no setup.py beside the tests ({ROOT}): run them from a checkout or sdist")
    return _source_copy(tmp_path)


def test_missing_openssl_headers_are_explained(source):
    # -nostdinc: the compiler no longer searches /usr/include, as on a machine without
    # libssl-dev; the probe fails before any real compilation.
    p = _build(source, CFLAGS="-nostdinc")
    assert p.returncode != 0
    assert "OpenSSL development headers not found" in p.stderr
    assert "apt-get install libssl-dev" in p.stderr
    assert not list(source.glob("bl/**/*.so"))


def test_missing_static_libcrypto_is_explained(source):
    p = _build(source, KIMBERLITE_OPENSSL="static",
               KIMBERLITE_OPENSSL_LIBCRYPTO=str(source / "no" / "libcrypto.a"))
    assert p.returncode != 0
    assert "libcrypto.a not found" in p.stderr
    assert "KIMBERLITE_OPENSSL_LIBCRYPTO=" + str(source / "no" / "libcrypto.a") in p.stderr
    assert "KIMBERLITE_OPENSSL=system" in p.stderr


def test_unknown_openssl_mode_is_explained(source):
    p = _build(source, KIMBERLITE_OPENSSL="shared")
    assert p.returncode != 0
    assert "KIMBERLITE_OPENSSL='shared' is not one of system, static" in p.stderr
