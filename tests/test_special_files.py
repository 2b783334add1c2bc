"""Data files that are not regular files: symbolic links, FIFOs, devices, sockets, directories.

Issue 8, items 4 and 5 (docs/GUARANTEES.md, "Special files"). Each hostile state is built for
real in a data directory and every operation runs in a child process with a timeout and an
address-space limit, so that a hang (an open that waits on a FIFO forever) or a runaway
allocation fails one test instead of the suite:

- a segment that is not a regular file is always refused with a StorageIOError naming it and
  saying what to do — by writers and read-only readers, for reads, verify, appends with
  fsync False and True, whether the segment is active, sealed or the next one of a rotation;
  it stays listed by streams() (it is not hidden), and nothing is written through it;
- an index that is not a regular file is a cache problem: it is ignored (the records are
  read from the segment, with a warning), and a writer replaces the name itself when it
  writes the index (never what a link points to);
- a lock file that is not a regular file refuses writers (readers need no lock);
- a symbolic link as a stream directory is refused (two stream ids would share one chain);
- the command line's info, read and verify fail fast with one line naming the file.
"""
import json
import os
import resource
import shutil
import socket
import stat
import subprocess
import sys

import pytest

import kimberlite as km
from helpers import child_env

TIMEOUT = 20  # seconds: every case finishes in well under one second
AS_LIMIT = 2 << 30  # bytes of address space for a child (a few hundred MiB are needed)

# Every kind of hostile object. "symlink-file" points to a regular file with the right
# bytes: still refused where a segment is expected (links are never followed), so that
# two names can never share one file.
KINDS = ["symlink-null", "symlink-zero", "symlink-file", "symlink-dangling", "fifo",
         "directory", "socket", "chardev"]

KIND_WORDS = {
    "symlink-null": "a symbolic link (to /dev/null)",
    "symlink-zero": "a symbolic link (to /dev/zero)",
    "symlink-file": "a symbolic link",
    "symlink-dangling": "a symbolic link",
    "fifo": "a FIFO",
    "directory": "a directory",
    "socket": "a socket",
    "chardev": "a character device",
}


def _limit_child():
    # AddressSanitizer reserves terabytes of address space: no limit under it.
    if not os.environ.get("KIMBERLITE_SANITIZED") and "asan" not in os.environ.get("LD_PRELOAD", ""):
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def run_child(code, *args, timeout=TIMEOUT):
    """Run `python -c code args...` with a timeout and an address-space limit."""
    return run_argv([sys.executable, "-c", code, *map(str, args)], timeout=timeout)


def run_argv(argv, timeout=TIMEOUT):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           env=child_env(), preexec_fn=_limit_child)
    except subprocess.TimeoutExpired as e:
        shown = argv[3:] if argv[1] == "-c" else argv[1:]
        pytest.fail(f"{shown} did not finish within {timeout} s (a hang); stderr: {e.stderr!r}")
    return p


def make_hostile(path, kind, good_copy=None):
    """Put an object of `kind` at `path` (which must not exist)."""
    if kind == "symlink-null":
        os.symlink("/dev/null", path)
    elif kind == "symlink-zero":
        os.symlink("/dev/zero", path)
    elif kind == "symlink-file":
        os.symlink(good_copy, path)
    elif kind == "symlink-dangling":
        os.symlink(str(path) + ".nowhere", path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        os.mkdir(path)
    elif kind == "socket":
        # AF_UNIX paths are short: bind a relative name from inside the directory.
        here = os.getcwd()
        os.chdir(os.path.dirname(path))
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(os.path.basename(path))
            sock.close()  # the socket file stays
        finally:
            os.chdir(here)
    elif kind == "chardev":
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # like /dev/null
        except PermissionError:
            pytest.skip("creating a device node needs CAP_MKNOD (run as root to cover it)")
    else:
        raise AssertionError(kind)


def kind_of(path):
    """The type of what is at path, without following a final link."""
    return stat.S_IFMT(os.lstat(path).st_mode)


# The operations, run by a child on a data directory; one JSON line per operation.
OPS_CHILD = r"""
import json, logging, sys
import kimberlite as km
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
path, role, ops = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
def run(name, fn):
    try:
        value = fn()
        out = {"op": name, "ok": True, "value": value}
    except km.StorageError as e:
        out = {"op": name, "ok": False, "type": type(e).__name__, "msg": str(e),
               "filename": getattr(e, "filename", None)}
    print(json.dumps(out), flush=True)
try:
    s = km.Storage(path, read_only=(role == "reader"), max_segment_size=1000)
except km.StorageError as e:
    print(json.dumps({"op": "open", "ok": False, "type": type(e).__name__, "msg": str(e),
                      "filename": getattr(e, "filename", None)}))
    sys.exit(0)
table = {
    "streams": lambda: s.streams(),
    "next_offset": lambda: s.next_offset(1),
    "read": lambda: [e.decode() for e in s.read_from(1)],
    "read_last": lambda: [e.decode() for e in s.read_from(1, max(s.next_offset(1) - 1, 0))],
    "verify": lambda: s.verify(1)[0],
    "head": lambda: (s.latest_chain_hash(1) or b"").hex(),
    "segments": lambda: s.segment_count(1),
    "append_nosync": lambda: s.append_batch(1, [b"new-nosync"], fsync=False),
    "append_sync": lambda: s.append_batch(1, [b"new-sync"], fsync=True),
    "append_big": lambda: s.append_batch(1, [b"x" * 600] * 3, fsync=False),
    "read_2": lambda: [e.decode() for e in s.read_from(2)],
    "append_2": lambda: s.append_batch(2, [b"two-more"], fsync=False),
    "close": lambda: s.close(),
}
for name in ops:
    run(name, table[name])
s.close()
"""

READ_OPS = ["streams", "next_offset", "read", "read_last", "verify", "head", "segments"]
WRITE_OPS = READ_OPS + ["append_nosync", "append_sync", "append_big"]


def run_ops(path, role, ops):
    p = run_child(OPS_CHILD, path, role, ",".join(ops))
    assert p.returncode == 0, p.stderr
    results = [json.loads(line) for line in p.stdout.splitlines()]
    return {r["op"]: r for r in results}, p.stderr


def events(n, start=0):
    return [f"event-{i}" for i in range(start, start + n)]


def build_stream(data_dir, sealed):
    """Stream 1: one active segment (3 events), or a sealed segment then an active one."""
    with km.Storage(data_dir, max_segment_size=1000) as s:
        s.append_batch(1, [e.encode() for e in events(3)])
        if sealed:
            s.append_batch(1, [b"y" * 1000])  # fills segment 0: rotation
            s.append_batch(1, [b"after"])
        assert s.segment_count(1) == (2 if sealed else 1)


def snapshot_files(root):
    """Every regular file under root with its bytes (symlinks and special files by kind)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            mode = os.lstat(p).st_mode
            if stat.S_ISREG(mode):
                with open(p, "rb") as f:
                    out[p] = f.read()
            elif stat.S_ISLNK(mode):
                out[p] = ("link", os.readlink(p))
            else:
                out[p] = ("kind", stat.S_IFMT(mode))
    return out


def assert_refused(result, path, kind):
    assert not result["ok"], f"{result['op']} succeeded on {kind}: {result}"
    assert result["type"] == "StorageIOError", result
    assert result["filename"] == str(path), result
    msg = result["msg"]
    assert str(path) in msg and "not a regular file" in msg, msg
    assert KIND_WORDS[kind] in msg, msg
    assert "in its place" in msg  # what to do


# ---- segments ------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("role", ["writer", "reader"])
@pytest.mark.parametrize("where", ["active", "sealed"])
def test_segment_that_is_not_a_regular_file_is_refused(tmp_path, kind, role, where):
    d = tmp_path / "d"
    build_stream(d, sealed=(where == "sealed"))
    seg = d / "1" / "segment_000000.log"
    if where == "sealed":
        assert os.path.exists(d / "1" / "segment_000001.log")
    good = tmp_path / "good-copy.log"
    shutil.move(seg, good)
    good_bytes = good.read_bytes()
    make_hostile(seg, kind, good_copy=good)
    before = snapshot_files(tmp_path)

    ops = WRITE_OPS if role == "writer" else READ_OPS
    results, _ = run_ops(d, role, ops)
    assert results["streams"] == {"op": "streams", "ok": True, "value": [1]}  # still listed
    for name in ops[1:]:
        assert_refused(results[name], seg, kind)

    # Nothing was written anywhere: not through the link, not beside it.
    assert snapshot_files(tmp_path) == before
    assert good.read_bytes() == good_bytes
    # Once the real segment is back, everything is there and appends work.
    os.unlink(seg) if kind != "directory" else os.rmdir(seg)
    shutil.move(good, seg)
    with km.Storage(d, max_segment_size=1000) as s:
        n = 5 if where == "sealed" else 3
        assert s.verify(1)[0] == n
        assert s.read_from(1, 0, 1) == [b"event-0"]
        assert s.append_batch(1, [b"ok"]) == n + 1


@pytest.mark.parametrize("kind", ["fifo", "symlink-null", "directory", "socket"])
def test_next_segment_name_taken_by_a_special_file_refuses_the_stream(tmp_path, kind):
    """The name a rotation would create is taken: the stream is refused, never a wait."""
    d = tmp_path / "d"
    build_stream(d, sealed=False)
    nxt = d / "1" / "segment_000001.log"
    make_hostile(nxt, kind)
    before = snapshot_files(tmp_path)
    results, _ = run_ops(d, "writer", ["next_offset", "append_big", "append_nosync",
                                      "append_sync", "read"])
    for name in ("next_offset", "append_big", "append_nosync", "append_sync", "read"):
        assert_refused(results[name], nxt, kind)
    assert snapshot_files(tmp_path) == before


@pytest.mark.parametrize("kind", ["fifo", "symlink-null", "directory"])
def test_special_file_appearing_where_a_rotation_creates_its_segment(tmp_path, kind):
    """A writer has the stream loaded; then the next segment's name is taken behind its back."""
    d = tmp_path / "d"
    build_stream(d, sealed=False)
    code = r"""
import json, os, stat, sys
sys.path.insert(0, sys.argv[3])
import kimberlite as km
from test_special_files import make_hostile
d, kind = sys.argv[1], sys.argv[2]
s = km.Storage(d, max_segment_size=1000)
assert s.next_offset(1) == 3
nxt = os.path.join(d, "1", "segment_000001.log")
make_hostile(nxt, kind)
out = []
for events, fsync in (([b"x" * 1000], False), ([b"y"], True), ([b"z"], False)):
    try:
        out.append(["ok", s.append_batch(1, events, fsync=fsync)])
    except km.StorageError as e:
        out.append([type(e).__name__, str(e)])
out.append(["next", s.next_offset(1)])
s.close()
print(json.dumps(out))
"""
    p = run_child(code, d, kind, os.path.dirname(__file__))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    # The batch that fills segment 0 is written (durable in segment 0); creating the next
    # segment is refused, and every later append raises before writing anything.
    assert out[0] == ["ok", 4] or out[0][0] == "StorageIOError"
    for status, msg in out[1:3]:
        assert status == "StorageIOError" and "segment_000001.log" in msg
        assert "not a regular file" in msg
    assert out[3] == ["next", 4]
    assert kind_of(d / "1" / "segment_000001.log") != stat.S_IFREG
    # Once the name is freed, the acknowledged records are all there, and nothing else.
    (d / "1" / "segment_000001.log").rmdir() if kind == "directory" else os.unlink(
        d / "1" / "segment_000001.log")
    with km.Storage(d, max_segment_size=1000) as s:
        assert s.verify(1)[0] == 4
        assert s.append_batch(1, [b"next"]) == 5


@pytest.mark.parametrize("role", ["writer", "reader"])
def test_directory_named_like_a_later_segment_refuses_the_stream(tmp_path, role):
    d = tmp_path / "d"
    build_stream(d, sealed=True)
    os.mkdir(d / "1" / "segment_000002.log")
    results, _ = run_ops(d, role, ["streams", "next_offset", "read", "verify"])
    assert results["streams"]["value"] == [1]
    for name in ("next_offset", "read", "verify"):
        assert_refused(results[name], d / "1" / "segment_000002.log", "directory")


def test_other_streams_are_unaffected(tmp_path):
    d = tmp_path / "d"
    build_stream(d, sealed=False)
    with km.Storage(d) as s:
        s.append_batch(2, [b"two"])
    os.unlink(d / "1" / "segment_000000.log")
    os.mkfifo(d / "1" / "segment_000000.log")
    results, _ = run_ops(d, "writer", ["streams", "read", "read_2", "append_2", "append_nosync"])
    assert results["streams"]["value"] == [1, 2]
    assert results["read_2"]["value"] == ["two"]
    assert results["append_2"]["value"] == 2
    assert_refused(results["read"], d / "1" / "segment_000000.log", "fifo")
    assert_refused(results["append_nosync"], d / "1" / "segment_000000.log", "fifo")


# ---- indexes -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("role", ["writer", "reader"])
def test_index_that_is_not_a_regular_file_is_ignored(tmp_path, kind, role):
    d = tmp_path / "d"
    build_stream(d, sealed=True)  # segment 0 sealed, with an index written at the seal
    idx = d / "1" / "segment_000000.log.idx"
    good = tmp_path / "good.idx"
    shutil.move(idx, good)
    good_bytes = good.read_bytes()
    make_hostile(idx, kind, good_copy=good)

    ops = (WRITE_OPS if role == "writer" else READ_OPS) + ["close"]
    results, stderr = run_ops(d, role, ops)
    expected = events(3) + ["y" * 1000, "after"]
    assert results["read"]["value"] == expected
    assert results["verify"]["value"] == 5
    assert results["read_last"]["value"] == ["after"]
    assert results["segments"]["value"] == 2
    # The index is reported, as a damaged one is, and rebuilt from the segment.
    assert f"index of {d / '1' / 'segment_000000.log'} is" in stderr and "rebuilding" in stderr
    if role == "reader":
        assert results["close"]["ok"]
        assert kind_of(idx) == {"symlink-null": stat.S_IFLNK, "symlink-zero": stat.S_IFLNK,
                                "symlink-file": stat.S_IFLNK, "symlink-dangling": stat.S_IFLNK,
                                "fifo": stat.S_IFIFO, "directory": stat.S_IFDIR,
                                "socket": stat.S_IFSOCK, "chardev": stat.S_IFCHR}[kind]
    else:
        for name in ("append_nosync", "append_sync", "append_big"):
            assert results[name]["ok"], results[name]
        if kind == "directory":
            # A directory cannot be replaced by a file: writing the index fails, loudly,
            # and nothing of the records is lost.
            assert not results["close"]["ok"]
            assert results["close"]["type"] == "StorageIOError"
            assert str(idx) in results["close"]["msg"]
            assert kind_of(idx) == stat.S_IFDIR
        else:
            assert results["close"]["ok"], results["close"]
            # The name itself was replaced by a real index; a link's target is untouched.
            assert kind_of(idx) == stat.S_IFREG
            assert km.OffsetIndex.load(idx).positions[0] == 0
    assert good.read_bytes() == good_bytes
    assert not os.path.exists(str(idx) + ".tmp")
    with km.Storage(d, read_only=True, max_segment_size=1000) as r:
        n = 5 + (0 if role == "reader" else 5)
        assert r.verify(1)[0] == n


@pytest.mark.parametrize("kind", ["fifo", "symlink-file", "directory"])
def test_index_temporary_name_taken_by_a_special_file(tmp_path, kind):
    """The writer's own temporary index name (…idx.tmp) is taken: never a wait, never a
    write through a link."""
    d = tmp_path / "d"
    build_stream(d, sealed=False)
    tmp = d / "1" / "segment_000000.log.idx.tmp"
    victim = tmp_path / "victim"
    victim.write_bytes(b"not yours")
    make_hostile(tmp, kind, good_copy=victim)
    results, _ = run_ops(d, "writer", ["append_nosync", "close"])
    assert results["append_nosync"]["value"] == 4
    if kind == "directory":
        assert not results["close"]["ok"] and str(tmp) in results["close"]["msg"]
    else:
        assert results["close"]["ok"], results["close"]
        assert not os.path.lexists(tmp)
        assert kind_of(d / "1" / "segment_000000.log.idx") == stat.S_IFREG
    assert victim.read_bytes() == b"not yours"


def test_quarantine_name_taken_by_a_fifo(tmp_path):
    """A torn tail is quarantined under the next free name; a FIFO there is skipped."""
    d = tmp_path / "d"
    build_stream(d, sealed=False)
    seg = d / "1" / "segment_000000.log"
    with open(seg, "ab") as f:
        f.write(b"\x07" * 30)  # a torn tail
    os.mkfifo(str(seg) + ".torn-1")
    results, stderr = run_ops(d, "writer", ["read", "append_nosync"])
    assert results["read"]["value"] == events(3)
    assert results["append_nosync"]["value"] == 4
    assert kind_of(str(seg) + ".torn-1") == stat.S_IFIFO
    with open(str(seg) + ".torn-2", "rb") as f:
        assert f.read() == b"\x07" * 30


# ---- the lock file -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_lock_file_that_is_not_a_regular_file(tmp_path, kind):
    d = tmp_path / "d"
    build_stream(d, sealed=False)
    lock = d / "kimberlite.lock"
    os.unlink(lock)
    target = tmp_path / "target"
    target.write_bytes(b"")
    make_hostile(lock, kind, good_copy=target)
    results, _ = run_ops(d, "writer", ["read"])
    r = results["open"]
    assert not r["ok"] and r["type"] == "StorageIOError"
    assert r["filename"] == str(lock)
    assert str(lock) in r["msg"] and KIND_WORDS[kind] in r["msg"]
    assert "not a regular file" in r["msg"] and "remove it" in r["msg"]
    # Readers take no lock: they work.
    results, _ = run_ops(d, "reader", ["read"])
    assert results["read"]["value"] == events(3)
    # As the message says: remove it, and a writer opens.
    os.rmdir(lock) if kind == "directory" else os.unlink(lock)
    results, _ = run_ops(d, "writer", ["append_sync"])
    assert results["append_sync"]["value"] == 4
    assert kind_of(lock) == stat.S_IFREG


# ---- stream directories --------------------------------------------------------------------

@pytest.mark.parametrize("role", ["writer", "reader"])
def test_symlinked_stream_directory_is_refused(tmp_path, role):
    d = tmp_path / "d"
    build_stream(d, sealed=False)
    os.symlink("1", d / "2")  # stream 2 would share stream 1's chain
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(d / "1", elsewhere)
    os.symlink(elsewhere, d / "3")
    os.symlink(tmp_path / "nowhere", d / "4")  # dangling
    before = snapshot_files(tmp_path)
    code = r"""
import json, sys
import kimberlite as km
s = km.Storage(sys.argv[1], read_only=sys.argv[2] == "reader")
out = {"streams": s.streams(), "read_1": len(s.read_from(1))}
calls = [("next_offset", lambda sid: s.next_offset(sid)), ("read", lambda sid: s.read_from(sid)),
         ("verify", lambda sid: s.verify(sid))]
if sys.argv[2] == "writer":
    calls.append(("append", lambda sid: s.append_batch(sid, [b"x"], fsync=False)))
for sid in (2, 3, 4):
    for name, fn in calls:
        try:
            out[f"{name}_{sid}"] = ["ok", repr(fn(sid))]
        except km.StorageError as e:
            out[f"{name}_{sid}"] = [type(e).__name__, str(e), e.filename]
print(json.dumps(out))
"""
    p = run_child(code, d, role)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["streams"] == [1, 2, 3]  # listed (they hold segments), not hidden
    assert out["read_1"] == 3
    for sid in (2, 3, 4):
        for name in ("next_offset", "read", "verify") + (("append",) if role == "writer" else ()):
            status, msg, filename = out[f"{name}_{sid}"]
            assert status == "StorageIOError", (name, sid, out[f"{name}_{sid}"])
            assert filename == str(d / str(sid))
            assert "symbolic link" in msg and "not a directory" in msg
            assert "real directory in its place" in msg
    assert snapshot_files(tmp_path) == before


# ---- the command line ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "symlink-zero", "symlink-null", "directory"])
@pytest.mark.parametrize("command", ["info", "read", "verify"])
def test_cli_fails_fast_on_a_special_segment(tmp_path, kind, command):
    d = tmp_path / "d"
    build_stream(d, sealed=False)
    seg = d / "1" / "segment_000000.log"
    os.unlink(seg)
    make_hostile(seg, kind)
    argv = [sys.executable, "-m", "kimberlite", command, str(d)]
    if command == "read":
        argv.append("1")
    p = run_argv(argv)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    text = p.stdout + p.stderr
    lines = [line for line in text.splitlines() if str(seg) in line]
    assert len(lines) == 1, text  # one line names the file and says what is wrong
    assert "not a regular file" in lines[0]


@pytest.mark.parametrize("kind", ["fifo", "symlink-zero", "directory"])
@pytest.mark.parametrize("command", ["info", "read", "verify"])
def test_cli_works_around_a_special_index(tmp_path, kind, command):
    d = tmp_path / "d"
    build_stream(d, sealed=True)
    idx = d / "1" / "segment_000000.log.idx"
    os.unlink(idx)
    make_hostile(idx, kind)
    argv = [sys.executable, "-m", "kimberlite", command, str(d)]
    if command == "read":
        argv.append("1")
    p = run_argv(argv)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    if command == "read":
        assert p.stdout.splitlines()[:3] == events(3)
    assert kind_of(idx) != stat.S_IFREG  # read-only commands change nothing


# ---- OffsetIndex.load / save on a path the caller gives ----------------------------------

@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink-null", "socket", "chardev"])
def test_offset_index_load_of_a_special_file_fails_fast(tmp_path, kind):
    path = tmp_path / "x.idx"
    make_hostile(path, kind)
    code = r"""
import sys, kimberlite as km
try:
    km.OffsetIndex.load(sys.argv[1])
    print("loaded")
except km.StorageError as e:
    print(type(e).__name__, e.filename == sys.argv[1], "not a regular file" in str(e))
"""
    p = run_child(code, path)
    assert p.returncode == 0, p.stderr
    # (opening a socket fails in the OS already, ENXIO: that message is the OS's)
    assert p.stdout.split() == ["StorageIOError", "True", "True" if kind != "socket" else "False"]


def test_offset_index_save_beside_a_fifo_fails_fast(tmp_path):
    """save() writes path + ".tmp" first: a FIFO there is an error at once, not a wait."""
    path = tmp_path / "x.idx"
    os.mkfifo(str(path) + ".tmp")
    code = r"""
import sys, kimberlite as km
try:
    km.OffsetIndex([0, 60]).save(sys.argv[1])
    print("saved")
except km.StorageError as e:
    print(type(e).__name__)
"""
    p = run_child(code, path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["StorageIOError"]
    assert not os.path.exists(path)
