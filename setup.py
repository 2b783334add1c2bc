"""Build the kimberlite._core extension: the C engine (csrc/) linked with OpenSSL libcrypto.

Metadata lives in pyproject.toml; this file only describes the extension and checks that
the OpenSSL development files are present, with a message that says how to get them.

How libcrypto is linked is chosen by the environment variable KIMBERLITE_OPENSSL (README,
"Packaging"):

    system  (default) the system's shared libcrypto (libcrypto.so.3), found through
            pkg-config or the compiler's default paths; OpenSSL security updates of the
            operating system apply to kimberlite at once.
    static  libcrypto.a linked into the extension (the wheels: tools/build_wheel.sh), so
            that the extension needs no OpenSSL on the target; it then carries its own
            copy of OpenSSL, updated only by a new kimberlite-storage release.
            KIMBERLITE_OPENSSL_LIBCRYPTO=/path/to/libcrypto.a names the archive (default:
            libcrypto.a in pkg-config's libdir, else wherever the compiler finds it).

Either way the extension is built with hidden visibility and a linker version script, so
that it exports PyInit__core and nothing else (a static OpenSSL's symbols must not clash
with another copy of OpenSSL loaded in the same process).
"""
import glob
import os
import shlex
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))

# requires-python in pyproject.toml says the same; this catches `python setup.py ...`.
if sys.version_info < (3, 11):
    raise SystemExit("error: kimberlite-storage needs CPython 3.11 or newer (this is "
                     f"{sys.version.split()[0]}); see CHANGELOG.md for why")

OPENSSL_HELP = """
kimberlite needs the OpenSSL development files (header <openssl/sha.h> and libcrypto).
Install them, then run pip again:
    Debian/Ubuntu:  apt-get install libssl-dev
    Fedora/RHEL:    dnf install openssl-devel
    Alpine:         apk add openssl-dev
    macOS:          brew install openssl@3  (and set CFLAGS/LDFLAGS to its prefix)
"""

STATIC_HELP = """
KIMBERLITE_OPENSSL=static links OpenSSL's static library into the extension, and none was
usable ({why}).
Either install it (Debian/Ubuntu: apt-get install libssl-dev, which ships libcrypto.a;
Fedora/RHEL: dnf install openssl-devel openssl-static), or name one with
KIMBERLITE_OPENSSL_LIBCRYPTO=/path/to/libcrypto.a (it must be built with -fPIC), or build
against the system's shared libcrypto with KIMBERLITE_OPENSSL=system.
"""

OPENSSL_MODES = ("system", "static")

# The only symbol the extension exports (see the module docstring).
VERSION_SCRIPT = "{\n  global: PyInit__core;\n  local: *;\n};\n"


def pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config", *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    return shlex.split(out.stdout)


def openssl_mode():
    mode = os.environ.get("KIMBERLITE_OPENSSL", "").strip().lower() or "system"
    if mode not in OPENSSL_MODES:
        raise SystemExit(f"error: KIMBERLITE_OPENSSL={os.environ['KIMBERLITE_OPENSSL']!r} "
                         f"is not one of {', '.join(OPENSSL_MODES)} (README, \"Packaging\")")
    return mode


def static_libcrypto():
    """Path of the libcrypto.a to link, or SystemExit with STATIC_HELP."""
    named = os.environ.get("KIMBERLITE_OPENSSL_LIBCRYPTO")
    if named:
        if not os.path.isfile(named):
            sys.stderr.write(STATIC_HELP.format(why=f"KIMBERLITE_OPENSSL_LIBCRYPTO={named} "
                                                    "is not a file"))
            raise SystemExit("error: libcrypto.a not found (see above)")
        return os.path.abspath(named)
    candidates = [os.path.join(d, "libcrypto.a")
                  for d in pkg_config("--variable=libdir", "libcrypto")]
    try:
        cc = os.environ.get("CC", "cc").split() or ["cc"]
        out = subprocess.run([*cc, "-print-file-name=libcrypto.a"], capture_output=True,
                             text=True, check=True).stdout.strip()
        if os.path.isabs(out):  # the bare name means "not found"
            candidates.append(out)
    except (OSError, subprocess.CalledProcessError):
        pass
    for path in candidates:
        if os.path.isfile(path):
            return os.path.realpath(path)
    sys.stderr.write(STATIC_HELP.format(why="no libcrypto.a in pkg-config's libdir or the "
                                            "compiler's library path"))
    raise SystemExit("error: libcrypto.a not found (see above)")


class BuildExt(build_ext):
    """build_ext that fails early, and clearly, when OpenSSL's files are missing, and that
    limits the extension's exported symbols to PyInit__core."""

    def build_extensions(self):
        cc = self.compiler
        os.makedirs(self.build_temp, exist_ok=True)
        probe = os.path.join(self.build_temp, "probe_openssl.c")
        with open(probe, "w") as f:
            f.write("#include <openssl/sha.h>\nint main(void) { return 0; }\n")
        include_dirs = [d for ext in self.extensions for d in ext.include_dirs]
        try:
            cc.compile([probe], output_dir=self.build_temp, include_dirs=include_dirs)
        except Exception:
            sys.stderr.write(OPENSSL_HELP)
            raise SystemExit("error: OpenSSL development headers not found (see above)")
        if sys.platform.startswith("linux"):
            script = os.path.join(self.build_temp, "kimberlite_core.map")
            with open(script, "w") as f:
                f.write(VERSION_SCRIPT)
            for ext in self.extensions:
                ext.extra_link_args += [f"-Wl,--version-script={script}",
                                        "-Wl,--exclude-libs,ALL"]
        try:
            super().build_extensions()
        except Exception:
            if openssl_mode() == "static":
                sys.stderr.write(STATIC_HELP.format(why="linking it failed, see the linker's "
                                                        "message above"))
            raise


def extension():
    sources = sorted(glob.glob("csrc/*.c"))
    cflags = ["-std=c11", "-Wall", "-Wextra", "-D_GNU_SOURCE", "-fvisibility=hidden"]
    ldflags = []
    extra = os.environ.get("KIMBERLITE_SANITIZE")  # e.g. "address,undefined" (docs/TESTING.md)
    if extra:
        cflags += [f"-fsanitize={extra}", "-fno-omit-frame-pointer", "-O1", "-g"]
        ldflags += [f"-fsanitize={extra}"]
    inc = [f[2:] for f in pkg_config("--cflags-only-I", "libcrypto") if f.startswith("-I")]
    libdirs, libraries, objects, macros = [], ["pthread"], [], []
    if openssl_mode() == "static":
        objects.append(static_libcrypto())
        macros.append(("KMB_OPENSSL_STATIC", "1"))
        # what libcrypto.a itself needs (dl before glibc 2.34, pthread)
        for flag in pkg_config("--static", "--libs-only-l", "libcrypto") or ["-ldl"]:
            if flag.startswith("-l") and flag[2:] not in ("crypto", *libraries):
                libraries.append(flag[2:])
    else:
        libdirs = [f[2:] for f in pkg_config("--libs-only-L", "libcrypto") if f.startswith("-L")]
        libraries.insert(0, "crypto")
    return Extension(
        "kimberlite._core",
        sources=sources,
        # headers: an edit to one rebuilds the sources (setuptools compares mtimes)
        depends=sorted(glob.glob("include/kimberlite/**/*.h", recursive=True) + glob.glob("csrc/*.h")),
        include_dirs=["include", "csrc", *inc],
        define_macros=macros,
        library_dirs=libdirs,
        libraries=libraries,
        extra_objects=objects,
        extra_compile_args=cflags,
        extra_link_args=ldflags,
    )


setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExt})
