"""File writes that readers never see half done, and the one-writer lock of a folder."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` and rename ``tmp`` to ``path``: readers see the old file or the whole new one.

    The temporary name (``.NAME.PID.tmp`` beside ``path``) is removed if writing fails.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (a copy across file systems)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


class LockHeld(Exception):
    """Another process holds the lock; ``holder`` is what it wrote about itself (may be empty)."""

    def __init__(self, path: Path, holder: dict) -> None:
        super().__init__(f"{path}: held by {holder or 'another process'}")
        self.path, self.holder = path, holder


_held: dict[Path, int] = {}  # locks this process holds, with how many blocks hold each


@contextlib.contextmanager
def folder_lock(folder: Path, holder: dict) -> Iterator[None]:
    """Hold the exclusive lock of ``folder`` (the file ``.NAME.lock`` beside it) for the block.

    The OS releases it when this process ends, however it ends, so no stale lock outlives a
    kill -9. ``holder`` (JSON) is written into the lock file for whoever finds it held; the same
    process may nest blocks on one folder. Raises LockHeld if another process holds it.
    """
    folder = folder.resolve()  # "." and "out/../out" name their real folder
    path = folder.parent / f".{folder.name}.lock"
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(folder, _read_holder(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def _read_holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}
