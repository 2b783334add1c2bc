"""fork() safety: the at-fork protocol of include/kimberlite/storage.h for every live storage.

Every ``Storage`` and ``MemoryStorage`` enters a registry of weak references when it opens
(``storage_adopt`` in csrc/py_storage.c calls :func:`track`). Around ``os.fork()`` (which
``multiprocessing`` uses too), handlers registered with ``os.register_at_fork``:

- before: take the registry lock, then each live storage's engine lock, waiting (without
  the GIL) for a call in progress on another thread to end — so that no thread is inside
  the engine at the moment of the fork, and the child never inherits a lock held by a
  thread that does not exist there;
- after, in the parent: release them all;
- after, in the child: release them, forget the parent's hashing threads (new ones start
  on need), and make each inherited writer close its copy of the lock file descriptor, so
  that the parent's ``close()`` releases the directory even while the child lives. An
  inherited writer still refuses every call in the child; read-only and memory storages
  work there.

The registry lock makes a storage that opens during the "before" handler wait until the fork
is over, so no storage escapes the protocol. A fork made by C code without
``PyOS_BeforeFork`` (not ``os.fork``) does not run these handlers.

Imported on first use by the extension, not by ``import kimberlite``.
"""

from __future__ import annotations

import os
import _thread
from _weakrefset import WeakSet

__all__ = ["track"]

_live: "WeakSet[object]" = WeakSet()
_lock = _thread.allocate_lock()
_held: "list[object]" = []  # the storages whose engine lock is held across the fork (strong references)


def track(storage: object) -> None:
    """Enter a newly opened storage in the registry (called by the extension)."""
    with _lock:
        _live.add(storage)


def _before() -> None:
    _lock.acquire()
    for s in list(_live):
        s._fork_prepare()  # type: ignore[attr-defined]
        _held.append(s)


def _after_in_parent() -> None:
    try:
        for s in reversed(_held):
            s._fork_parent()  # type: ignore[attr-defined]
    finally:
        _held.clear()
        _lock.release()


def _after_in_child() -> None:
    try:
        for s in reversed(_held):
            s._fork_child()  # type: ignore[attr-defined]
    finally:
        _held.clear()
        _lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before, after_in_parent=_after_in_parent,
                        after_in_child=_after_in_child)
