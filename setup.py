"""Build the kimberlite._core extension: the C engine (csrc/) linked with OpenSSL libcrypto.

Metadata lives in pyproject.toml; this file only describes the extension and checks that
the OpenSSL development headers are present, with a message that says how to get them.
"""
import glob
import os
import shlex
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))

OPENSSL_HELP = """
kimberlite needs the OpenSSL development files (header <openssl/sha.h> and libcrypto).
Install them, then run pip again:
    Debian/Ubuntu:  apt-get install libssl-dev
    Fedora/RHEL:    dnf install openssl-devel
    Alpine:         apk add openssl-dev
    macOS:          brew install openssl@3  (and set CFLAGS/LDFLAGS to its prefix)
"""


def pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config", *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    return shlex.split(out.stdout)


class BuildExt(build_ext):
    """build_ext that fails early, and clearly, when OpenSSL's headers are missing."""

    def build_extensions(self):
        cc = self.compiler
        probe = os.path.join(self.build_temp, "probe_openssl.c")
        os.makedirs(self.build_temp, exist_ok=True)
        with open(probe, "w") as f:
            f.write("#include <openssl/sha.h>\nint main(void) { return 0; }\n")
        include_dirs = [d for ext in self.extensions for d in ext.include_dirs]
        try:
            cc.compile([probe], output_dir=self.build_temp, include_dirs=include_dirs)
        except Exception:
            sys.stderr.write(OPENSSL_HELP)
            raise SystemExit("error: OpenSSL development headers not found (see above)")
        super().build_extensions()


def extension():
    sources = sorted(glob.glob("csrc/*.c"))
    cflags = ["-std=c11", "-Wall", "-Wextra", "-D_GNU_SOURCE"]
    ldflags = []
    extra = os.environ.get("KIMBERLITE_SANITIZE")  # e.g. "address,undefined" (docs/TESTING.md)
    if extra:
        cflags += [f"-fsanitize={extra}", "-fno-omit-frame-pointer", "-O1", "-g"]
        ldflags += [f"-fsanitize={extra}"]
    inc = [f[2:] for f in pkg_config("--cflags-only-I", "libcrypto") if f.startswith("-I")]
    libdirs = [f[2:] for f in pkg_config("--libs-only-L", "libcrypto") if f.startswith("-L")]
    return Extension(
        "kimberlite._core",
        sources=sources,
        # headers: an edit to one rebuilds the sources (setuptools compares mtimes)
        depends=sorted(glob.glob("include/kimberlite/**/*.h", recursive=True) + glob.glob("csrc/*.h")),
        include_dirs=["include", "csrc", *inc],
        library_dirs=libdirs,
        libraries=["crypto", "pthread"],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
    )


setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExt})
