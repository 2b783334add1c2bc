"""Small helpers shared by the tests: opening either backend, snapshots, file damage."""
import os

from . import codec

LOCK_NAME = "kimberlite.lock"


def km():
    import kimberlite
    return kimberlite


class Backend:
    """Opens Storage (kind "disk", on root/data) or MemoryStorage (kind "memory")."""

    def __init__(self, kind, root):
        self.kind = kind
        self.root = root
        self.data_dir = root / "data"
        self._opened = []

    @property
    def is_disk(self):
        return self.kind == "disk"

    def open(self, **kw):
        k = km()
        if self.is_disk:
            s = k.Storage(self.data_dir, **kw)
        else:
            kw.pop("read_only", None)
            s = k.MemoryStorage(**kw)
        self._opened.append(s)
        return s

    def close_all(self):
        for s in self._opened:
            try:
                s.close()
            except Exception:
                pass
        self._opened.clear()

    def snapshot(self, s):
        return snapshot(s, self.data_dir if self.is_disk else None)


def dir_files(path):
    """{relative path: bytes} of every file under path, the lock file excepted."""
    out = {}
    if path is None or not os.path.exists(path):
        return out
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, path)
            if rel == LOCK_NAME:
                continue
            with open(full, "rb") as f:
                out[rel] = f.read()
    return out


def dir_listing(path):
    """Sorted relative paths of every file and directory under path (lock file excepted)."""
    out = []
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            rel = os.path.relpath(os.path.join(dirpath, name), path)
            if rel != LOCK_NAME:
                out.append(rel)
    return sorted(out)


def stream_state(s, sid):
    return (s.next_offset(sid), s.latest_chain_hash(sid), s.segment_count(sid),
            list(s.completed_segments(sid)), list(s.read_from(sid, 0)))


def snapshot(s, data_dir=None):
    """Everything observable about a storage: per-stream state and, on disk, every file."""
    streams = list(s.streams())
    return {
        "streams": streams,
        "state": {sid: stream_state(s, sid) for sid in streams},
        "files": dir_files(data_dir),
        "listing": dir_listing(data_dir) if data_dir is not None and os.path.exists(data_dir) else [],
    }


def stream_dir(data_dir, sid):
    return os.path.join(os.fspath(data_dir), str(sid))


def seg_path(data_dir, sid, n):
    return os.path.join(stream_dir(data_dir, sid), codec.segment_name(n))


def idx_path(data_dir, sid, n):
    return seg_path(data_dir, sid, n) + ".idx"


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def flip_bit(path, bit):
    data = bytearray(read_bytes(path))
    data[bit // 8] ^= 1 << (bit % 8)
    write_bytes(path, bytes(data))


def remove_indexes(data_dir, sid=None):
    """Delete the .idx files of one stream (or of every stream)."""
    root = os.fspath(data_dir)
    dirs = [stream_dir(root, sid)] if sid is not None else [
        os.path.join(root, d) for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))]
    for d in dirs:
        for n in os.listdir(d):
            if n.endswith(".idx"):
                os.remove(os.path.join(d, n))


def segment_files(data_dir, sid):
    d = stream_dir(data_dir, sid)
    return sorted(n for n in os.listdir(d) if n.startswith("segment_") and n.endswith(".log"))


def torn_files(data_dir, sid):
    d = stream_dir(data_dir, sid)
    return sorted(n for n in os.listdir(d) if "torn" in n)


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child_env():
    """Environment for a child Python that imports the same kimberlite and tests/ helpers."""
    import sys
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env
