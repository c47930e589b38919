"""The first local render worker, started as a ``run`` or ``render`` command starts.

A worker spends about a second on its imports (the render server, bpy) and its Blender session
before it can render; started here, from the CLI's options alone, that time overlaps the
conductor's own start-up (the recipe schema, loading and checking the recipe, the store, sampling
scene 0) instead of following it. This module imports only the standard library and the device
vocabulary, so that the worker is spawned before anything heavy is loaded. ``LocalExecutor``
takes the worker over (``take``) and sends it its log path and options; a worker nobody took
is stopped when the command ends. Every other local worker is spawned the same way
(``spawn_worker``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import sys
import tempfile
import types
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from sceneforge.floor.devices import parse_device
from sceneforge.floor.errors import UserError

# Set for a spawned worker unless the user set it: its numpy work is small-matrix algebra beside
# Cycles, where a second OpenBLAS thread only wakes and spins (numpy.linalg.inv of a 4x4 wakes it),
# at normal priority, on the cores Cycles renders with; one thread saved 10-20 % of the finishing
# step's CPU on a busy machine (docs/performance.md).
WORKER_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1"}


@contextlib.contextmanager
def worker_environment() -> Iterator[None]:
    """``WORKER_ENVIRONMENT``, less the variables the user has set, in this process's environment
    while a worker is spawned (it inherits it)."""
    added = {key: value for key, value in WORKER_ENVIRONMENT.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def spawn_worker(name: str, target: Callable[..., None], *args: object,
                 main_script: bool = True) -> tuple[Connection, BaseProcess]:
    """Start ``target(conn, *args)`` in a worker process of a fresh interpreter (bpy must start in
    one) with ``WORKER_ENVIRONMENT``; returns the conductor's end of the pipe and the process.
    Spawn runs this process's main script again in the worker (where things pickled from it are
    found); not with ``main_script=False`` (a Ray worker's is Ray's own: 0.5 s and 55 MB of imports)."""
    context = multiprocessing.get_context("spawn")
    conn, child = context.Pipe()
    process = context.Process(target=target, args=(child, *args), name=name, daemon=True)
    with worker_environment(), contextlib.nullcontext() if main_script else _bare_main_module():
        process.start()
    child.close()
    return conn, process


@contextlib.contextmanager
def _bare_main_module() -> Iterator[None]:
    """An empty ``__main__`` meanwhile: spawn then gives the child no main script to run."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class EarlyWorker:
    """A spawned worker process opening a Blender session on (device, gpu_index, threads); it waits
    for its log path and options (``render.server.serve_early``), having sent ``Ready`` once its
    session is open. Its temporary folder (``tmpdir``: Blender's session folder goes there) is its
    own, so that it can be killed while it starts and leave nothing behind; whoever stops it
    removes the folder (``remove_tmpdir``)."""

    def __init__(self, device: str, gpu_index: int, threads: int) -> None:
        self.session = (device, gpu_index, threads)
        self.tmpdir = tempfile.mkdtemp(prefix="sceneforge-worker-")
        self.conn, self.process = spawn_worker("sceneforge-worker-0", _serve_early,
                                               self.tmpdir, device, gpu_index, threads)

    def stop(self) -> None:
        """Stop it unused: one that has reported (its session is open, and it waits for its
        options) closes its session and leaves when told; one still starting is killed."""
        if not self.conn.poll():
            self.process.kill()
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.conn.close()
        self.process.join()
        self.remove_tmpdir()

    def remove_tmpdir(self) -> None:
        """Remove its temporary folder (once it has left)."""
        shutil.rmtree(self.tmpdir, ignore_errors=True)


_waiting: EarlyWorker | None = None  # started, not yet taken by an executor


@contextlib.contextmanager
def first_worker(device: str, threads: int) -> Iterator[None]:
    """Start worker-0 of a local run on ``device`` (the CLI's --device) with ``threads`` now; one
    that no executor took by the end is stopped."""
    global _waiting
    try:
        parsed = parse_device(device)
    except UserError:  # reported where the run parses its options
        yield
        return
    # The session LocalExecutor opens for worker-0: the CPU, or the GPU asked for (the first under gpu and auto).
    _waiting = EarlyWorker(parsed.kind, 0 if parsed.kind == "cpu" else parsed.index or 0, threads)
    try:
        yield
    finally:
        left, _waiting = _waiting, None
        if left is not None:
            left.stop()


def take(device: str, gpu_index: int, threads: int) -> EarlyWorker | None:
    """The worker started for this session, now the caller's; None when there is none (one started
    for another session is stopped)."""
    global _waiting
    started, _waiting = _waiting, None
    if started is not None and started.session != (device, gpu_index, threads):
        started.stop()
        return None
    return started


def _serve_early(conn, tmpdir: str, device: str, gpu_index: int, threads: int) -> None:
    """The worker process's entry (here, so that spawning it imports nothing heavy in the conductor)."""
    os.environ["TMPDIR"] = tmpdir  # before bpy is imported: Blender makes its session folder there
    tempfile.tempdir = None
    from sceneforge.render import server

    server.serve_early(conn, device, gpu_index, threads)
