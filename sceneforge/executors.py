"""Executors: where render workers run. The local executor keeps warm worker processes here."""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

from sceneforge.errors import RenderFailure
from sceneforge.render import worker
from sceneforge.render.passes import Passes
from sceneforge.scenes.spec import SceneSpec

# Specs queued per worker: the next scene is already waiting when a render ends.
_IN_FLIGHT = 2


@dataclass(frozen=True)
class RenderedFrame:
    spec: SceneSpec
    passes: Passes
    render_seconds: float


class _Worker:
    def __init__(self, context, number: int, log_dir: Path, threads: int) -> None:
        self.log = log_dir / f"render-worker-{number}.log"
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=worker.serve, args=(child, str(self.log), threads), name=f"sceneforge-render-{number}", daemon=True
        )
        self.process.start()
        child.close()
        self.pending: deque[SceneSpec] = deque()


class LocalExecutor:
    """Warm Blender worker processes on this machine; use as a context manager."""

    def __init__(self, log_dir: Path, workers: int = 1, threads: int = 0) -> None:
        self._log_dir = log_dir
        self._count = workers
        self._threads = threads
        self._workers: list[_Worker] = []

    def __enter__(self) -> LocalExecutor:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        context = multiprocessing.get_context("spawn")  # bpy must start in a fresh interpreter
        self._workers = [_Worker(context, n, self._log_dir, self._threads) for n in range(self._count)]
        return self

    def __exit__(self, *exc_info) -> None:
        for w in self._workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in self._workers:
            w.process.join(timeout=10)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()

    def render(self, specs: Iterable[SceneSpec]) -> Iterator[RenderedFrame]:
        """Render every spec; frames come back in completion order."""
        queue = iter(specs)
        exhausted = False
        while True:
            for w in self._workers:
                while not exhausted and len(w.pending) < _IN_FLIGHT:
                    spec = next(queue, None)
                    if spec is None:
                        exhausted = True
                        break
                    w.conn.send(spec)
                    w.pending.append(spec)
            busy = [w for w in self._workers if w.pending]
            if not busy:
                return
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for w in busy:
                if w.conn in ready or w.process.sentinel in ready:
                    yield self._receive(w)

    def _receive(self, w: _Worker) -> RenderedFrame:
        try:
            status, index, *payload = w.conn.recv()
        except (EOFError, OSError):
            w.process.join(timeout=5)
            raise RenderFailure(
                f"render worker {w.process.name} died (exit code {w.process.exitcode}) while "
                f"rendering frame {w.pending[0].index}; see {w.log}"
            ) from None
        spec = w.pending.popleft()
        assert spec.index == index, "a worker answers its specs in order"
        if status == "error":
            last_line = payload[0].strip().splitlines()[-1]
            raise RenderFailure(f"frame {index} failed to render: {last_line} (traceback in {w.log})")
        passes, seconds = payload
        return RenderedFrame(spec=spec, passes=passes, render_seconds=seconds)
