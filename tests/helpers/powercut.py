"""A power-loss simulator for the disk backend, in Python (issue 8, "After a power cut").

A real disk keeps what was synced; of what was written and not synced it may keep any
subset of the pages, in any order, and a file's size may be the old one or the new one; a
file created without a directory sync may vanish. The simulator reproduces that on a real
data directory:

1. `durable()` records the image of every file after an acknowledged `fsync=True` batch
   (segment data and created files are synced by then: SPEC §3).
2. The caller appends a batch with `fsync=False` and does not count it (the "batch in
   flight"), then closes the storage (which may write index files: they are a cache).
3. `crash_image()` builds what the disk holds after the cut: for each segment or
   quarantine file, its durable image plus, for each 4 KiB page past the durable content,
   at random either the new content or the old (zeros past the old size), and a size
   either old or new; a file that did not exist at the last sync is kept or dropped.
   Index files are, at random, the latest written, the one of the last sync (stale), or
   missing.
4. `apply(image)` replaces the directory's contents with that image.

Payloads are a pure function of the offset (`payload`), so after reopening a test can tell
which records are there and whether each is right.
"""
import hashlib
import os

PAGE = 4096


def payload(k):
    """Event at offset k: 8..~1000 bytes, tied to k (several records per page, batches of
    several pages)."""
    h = hashlib.sha256(b"pc:%d" % k).digest()
    return b"%d|" % k + h * (h[0] % 31)


def payloads(start, n):
    return [payload(k) for k in range(start, start + n)]


def is_index(name):
    return name.endswith(".idx") or name.endswith(".idx.tmp")


def read_tree(root):
    """{relative path: bytes} of every file under root, the lock file excepted."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for n in files:
            full = os.path.join(dirpath, n)
            rel = os.path.relpath(full, root)
            if rel == "kimberlite.lock":
                continue
            with open(full, "rb") as f:
                out[rel] = f.read()
    return out


class PowerCut:
    def __init__(self, root, rng):
        self.root = os.fspath(root)
        self.rng = rng
        self._durable = {}

    def durable(self):
        """Call after each acknowledged fsync=True batch."""
        self._durable = read_tree(self.root)

    def crash_image(self):
        """The directory as a power cut could leave it, given the files now and at the last
        acknowledged sync. Returns {relative path: bytes}."""
        rng = self.rng
        now = read_tree(self.root)
        old = self._durable
        image = {}
        for name in sorted(set(now) | set(old)):
            if is_index(name):
                choice = rng.randrange(3)
                if choice == 0 and name in now:
                    image[name] = now[name]
                elif choice == 1 and name in old:
                    image[name] = old[name]
                continue
            new = now.get(name)
            prev = old.get(name)
            if new is None:                 # deleted since the sync: keep the durable file
                image[name] = prev
                continue
            if prev is None:                # created since the sync: may be gone
                if rng.random() < 0.3:
                    continue
                prev = b""
            image[name] = self._mix(prev, new)
        return image

    def _mix(self, old, new):
        """Durable bytes of `old`; then, per page, new content or old (zeros past old's size);
        the size is old's or new's."""
        rng = self.rng
        keep = min(len(old), len(new))
        # bytes up to the old size that the new content shares are durable; a file only
        # grows by appends (a cut-back is synced), so old is a prefix of new here
        size = len(new) if rng.random() < 0.6 else len(old)
        out = bytearray(size)
        out[:min(keep, size)] = old[:min(keep, size)]
        page = (keep // PAGE) * PAGE
        while page < size:
            lo, hi = max(page, keep), min(page + PAGE, size)
            if rng.random() < 0.5:
                out[lo:hi] = new[lo:hi].ljust(hi - lo, b"\0")
            else:
                out[lo:hi] = old[lo:hi].ljust(hi - lo, b"\0")
            page += PAGE
        return bytes(out)

    def apply(self, image):
        """Make the directory hold exactly `image` (plus directories and the lock file)."""
        for name in list(read_tree(self.root)):
            if name not in image:
                os.remove(os.path.join(self.root, name))
        for name, data in image.items():
            path = os.path.join(self.root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
