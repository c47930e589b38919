"""Executors: where frames are rendered and finished. Both yield finished frame records or
failures, with the same retry rules; the pipeline above them does not care which one runs.

In both, the process that renders a frame also runs the finishing step on it (label derivation
and the writes of its files, ``sceneforge.labelling``) and answers with the typed messages of
``sceneforge.render.messages``; this process is the store's one writer of ``frames.jsonl``.

- ``LocalExecutor``: warm worker processes on this machine (one per GPU, or ``workers`` on the CPU).
- ``RayExecutor``: one warm actor per GPU (or per ``threads`` CPUs) on a Ray cluster, each
  rendering through a local worker process of its own; the store must be on a path every node shares.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

from sceneforge import first_worker
from sceneforge.floor.devices import Device, parse_device
from sceneforge.floor.errors import UserError
from sceneforge.labels.store import DatasetStore
from sceneforge.render import server
from sceneforge.render.messages import FrameDone, FrameFailed, Ready, Recycling, StartFailed, WorkerMessage
from sceneforge.render.server import FinishStep, WorkerOptions
from sceneforge.scenes.spec import SceneSpec

# Frames queued per worker (and calls a Ray actor runs at once): the next scene is already there
# (and being prepared) when a render ends, and renders while the last one is finished.
_IN_FLIGHT = 2

# A Ray that the executor starts itself runs its actors at normal priority, like local workers
# (Ray lowers its workers to nice 15, below its own daemons and any other process on the machine).
_PRIVATE_RAY_CONFIG = {"worker_niceness": 0}


@dataclass(frozen=True)
class ExecutorOptions:
    """Settings shared by the executors (CLI: --device, --workers, --threads, ...)."""

    device: Device | str = Device("auto")  # a string is parsed: cpu, gpu, gpu:N or auto
    workers: int = 1  # CPU workers (on GPUs: workers_per_gpu per GPU)
    workers_per_gpu: int = 1  # several share a GPU: one builds and labels its scene while another renders
    threads: int = 0  # CPU threads per worker, 0 = all
    max_scenes_per_worker: int = 1000
    max_worker_memory_mb: float = 0.0  # 0 = no ceiling
    retries: int = 2  # renders of a failing frame after the first

    def __post_init__(self) -> None:
        if isinstance(self.device, str):
            object.__setattr__(self, "device", parse_device(self.device))

    def for_worker(self, finish: FinishStep, device: str, gpu_index: int) -> WorkerOptions:
        """How one worker renders on ``device`` (cpu, gpu, auto) under these options."""
        return WorkerOptions(finish, device, gpu_index, self.threads, self.max_scenes_per_worker,
                             self.max_worker_memory_mb)


@dataclass(frozen=True)
class Failure:
    """A frame given up after ``attempts`` renders."""

    spec: SceneSpec
    error: str
    attempts: int

    def as_record(self) -> dict:
        camera = {"camera": self.spec.camera.name} if self.spec.camera.name else {}
        return {"index": self.spec.index, **camera, "error": self.error, "attempts": self.attempts}


EventSink = Callable[[str, str], None]  # (kind, message): worker, notice, retry, restart, failed


class _Dispatch:
    """The frames still to render, with their attempt counts; retried frames go first."""

    def __init__(self, specs: Iterable[SceneSpec], retries: int) -> None:
        self._fresh = iter(specs)
        self._again: deque[SceneSpec] = deque()
        self._attempts: dict[tuple[int, str], int] = {}  # by view: (frame index, camera name)
        self._retries = retries

    def take(self) -> SceneSpec | None:
        return self._again.popleft() if self._again else next(self._fresh, None)

    def put_back(self, specs: Iterable[SceneSpec]) -> None:
        """Frames a worker held but never rendered: they go again, no attempt counted."""
        self._again.extendleft(reversed(list(specs)))

    def failed(self, spec: SceneSpec, error: str) -> Failure | None:
        """Count a failed attempt: the frame goes again, or the Failure to report is returned."""
        view = (spec.index, spec.camera.name)
        self._attempts[view] = attempts = self._attempts.get(view, 0) + 1
        if attempts > self._retries:
            return Failure(spec, error, attempts)
        self._again.appendleft(spec)
        return None


class _Worker:
    def __init__(self, name: str, log_dir: Path, options: WorkerOptions,
                 early: first_worker.EarlyWorker | None = None, main_script: bool = True) -> None:
        self.name, self.options, self.early = name, options, early
        self.log = log_dir / f"render-{name}.log"
        if early is None:
            self.conn, self.process = first_worker.spawn_worker(f"sceneforge-{name}", server.serve,
                                                                str(self.log), options, main_script=main_script)
        else:  # started as the command started (``first_worker``): it learns its log and options now
            self.conn, self.process = early.conn, early.process
            with contextlib.suppress(OSError):  # it has left: its StartFailed, or its exit, says why
                self.conn.send((str(self.log), options))
        self.pending: deque[SceneSpec] = deque()
        self.leaving = False  # it could not take a spec: it is recycling or has crashed
        self.ready = False  # it has sent Ready

    def stop(self, at_once: bool = False) -> None:
        """Ask the worker to leave, and hang up so that it never blocks sending frames nobody reads;
        ``at_once``: kill it instead if it has not even started (a run that failed meanwhile)."""
        if at_once and not self.ready:
            self.process.kill()
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.conn.close()
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        if self.early is not None:
            self.early.remove_tmpdir()


class LocalExecutor:
    """Warm Blender worker processes on this machine; use as a context manager."""

    def __init__(self, store: DatasetStore, finish: FinishStep, options: ExecutorOptions = ExecutorOptions(),
                 on_event: EventSink | None = None) -> None:
        self._store = store
        self._finish = finish
        self._options = options
        self._emit = on_event or (lambda kind, message: None)
        self._workers: list[_Worker] = []
        self._fanned_out = options.device.kind == "cpu"  # GPU/auto: more workers once the first reports
        self._log_dir = store.root / "logs"

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring)."""
        return [w.process.pid for w in self._workers]

    def __enter__(self) -> LocalExecutor:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        device = self._options.device
        # Worker-0 may have been started as the command started (``first_worker``).
        first = self._options.for_worker(self._finish, device.kind, device.index or 0)
        self._start("worker-0", first, first_worker.take(first.device, first.gpu_index, first.threads))
        if device.kind == "cpu":
            for n in range(1, self._options.workers):
                self._start(f"worker-{n}", self._options.for_worker(self._finish, "cpu", 0))
        # else the first worker finds the GPUs; the others follow once it reports them
        return self

    def __exit__(self, *exc_info) -> None:
        for w in self._workers:
            w.stop(at_once=exc_info[0] is not None)
        self._workers = []

    def run(self, specs: Iterable[SceneSpec]) -> Iterator[dict | Failure]:
        """Render and store every spec; yields records (and Failures) in completion order."""
        dispatch = _Dispatch(specs, self._options.retries)
        while True:
            for w in self._workers:
                while not w.leaving and len(w.pending) < _IN_FLIGHT and (spec := dispatch.take()) is not None:
                    try:
                        w.conn.send(spec)
                    except OSError:  # its last messages (recycle, or none: a crash) say why
                        dispatch.put_back([spec])
                        w.leaving = True
                        break
                    w.pending.append(spec)
            busy = [w for w in self._workers if w.pending or w.leaving]
            if not busy:
                return
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for w in busy:
                if w.conn in ready or w.process.sentinel in ready:
                    outcome = self._receive(w, dispatch)
                    if outcome is not None:
                        yield outcome

    def _receive(self, w: _Worker, dispatch: _Dispatch) -> dict | Failure | None:
        try:
            message: WorkerMessage = w.conn.recv()
        except (EOFError, OSError):
            w.process.join(timeout=5)
            self._replace(w)
            if not w.pending:
                self._emit("restart", f"{w.name} died idle (exit code {w.process.exitcode}); restarted it")
                return None
            crashed = w.pending.popleft()
            dispatch.put_back(w.pending)
            self._emit("restart", f"{w.name} died (exit code {w.process.exitcode}) rendering frame "
                                  f"{crashed.index}; restarted it (log: {w.log})")
            return dispatch.failed(crashed, f"render worker died (exit code {w.process.exitcode})")
        if isinstance(message, Ready):
            return self._on_ready(w, message)
        if isinstance(message, StartFailed):
            raise UserError(f"--device {self._options.device}: {message.error}")
        if isinstance(message, Recycling):
            dispatch.put_back(w.pending)
            self._emit("restart", f"{w.name} recycled: {message.reason}")
            self._replace(w)
            return None
        spec = w.pending.popleft()
        assert spec.index == message.index, "a worker answers its frames in order"
        return _outcome(self._store, dispatch, spec, message, w.name, self._emit)

    def _on_ready(self, w: _Worker, ready: Ready) -> None:
        w.ready = True
        self._emit("worker", f"{w.name}: ready on {ready.device} (pid {ready.pid})")
        if self._fanned_out:
            return None
        self._fanned_out = True
        device, gpus = self._options.device, ready.gpus
        if not gpus:  # only under auto: a worker asked for a GPU that is not there sent StartFailed
            self._emit("notice", "no GPU found: rendering on the CPU")
            for n in range(1, self._options.workers):
                self._start(f"worker-{n}", self._options.for_worker(self._finish, "cpu", 0))
            return None
        # gpu:N: all on that GPU (a worker without it sent StartFailed); else round robin, worker-0 on GPU 0.
        indices = [device.index] if device.index is not None else list(range(len(gpus)))
        for n in range(1, len(indices) * self._options.workers_per_gpu):
            self._start(f"worker-{n}", self._options.for_worker(self._finish, "gpu", indices[n % len(indices)]))
        return None

    def _start(self, name: str, options: WorkerOptions, early: first_worker.EarlyWorker | None = None) -> None:
        started = _Worker(name, self._log_dir, options, early)
        self._workers.append(started)
        self._emit("worker", f"{name}: starting (pid {started.process.pid})")

    def _replace(self, w: _Worker) -> None:
        w.stop()
        replacement = _Worker(w.name, self._log_dir, w.options)
        self._workers[self._workers.index(w)] = replacement
        self._emit("worker", f"{w.name}: starting (pid {replacement.process.pid})")


def _outcome(store: DatasetStore, dispatch: _Dispatch, spec: SceneSpec, message: FrameDone | FrameFailed,
             where: str, emit: EventSink) -> dict | Failure | None:
    """Append a finished frame's record, or count a failed attempt; a failed store write stops the run."""
    if isinstance(message, FrameFailed):
        if message.storage:
            raise store.storage_error(message.error)
        emit("retry", f"frame {spec.index} failed on {where}: {message.error}")
        return dispatch.failed(spec, message.error)
    store.append_record(message.result)
    emit("worker", f"{where}: frame {spec.index} done")
    return message.result


class _RenderActor:
    """A Ray actor that renders through a worker process of its own, a local worker (``_Worker``,
    spawned without Ray's main script): frames render and finish there exactly as they do locally,
    and a worker that recycles itself (``--max-scenes-per-worker``, ``--max-worker-memory``) or
    crashes is replaced without Ray restarting the actor. A threaded actor: ``_IN_FLIGHT`` calls
    wait at once, each for its frame's answer. The new worker gets the frames the old one had not
    answered; the frame a worker died on fails (the conductor retries it), as with the local executor."""

    def __init__(self, name: str, log_dir: str, options: WorkerOptions) -> None:
        self._name, self._log_dir, self._options = name, Path(log_dir), options
        self._lock = threading.Lock()  # the worker, and the frames sent to it
        self._pending: deque[tuple[SceneSpec, Future]] = deque()  # in the order the worker answers
        self._closing = False
        self._start = self._start_worker()
        if isinstance(self._start, Ready):
            threading.Thread(target=self._receive, daemon=True).start()

    def ready(self) -> Ready | StartFailed:
        """What the local workers send first: the session is up, or why it cannot render as asked."""
        return self._start

    def render(self, spec: SceneSpec) -> FrameDone | FrameFailed:
        assert isinstance(self._start, Ready), "an actor that could not start is never sent frames"
        answer: Future = Future()
        with self._lock:
            self._pending.append((spec, answer))
            with contextlib.suppress(OSError):  # it is leaving: its replacement gets the frame
                self._worker.conn.send(spec)
        return answer.result()

    def close(self) -> None:
        """Stop the worker (it removes its scratch and Blender's session folders) before the actor is killed."""
        with self._lock:
            self._closing = True
            self._worker.stop()

    def _start_worker(self) -> Ready | StartFailed:
        self._worker = _Worker(self._name, self._log_dir, self._options, main_script=False)
        try:
            return self._worker.conn.recv()
        except (EOFError, OSError):
            self._worker.process.join(timeout=5)
            return StartFailed(f"the render worker died starting (exit code {self._worker.process.exitcode})")

    def _receive(self) -> None:
        while True:
            try:
                message = self._worker.conn.recv()
            except (EOFError, OSError):
                with self._lock:
                    if self._closing:
                        return
                    self._worker.process.join(timeout=5)
                    died = f"died (exit code {self._worker.process.exitcode})"
                    if self._pending:
                        spec, answer = self._pending.popleft()
                        answer.set_result(FrameFailed(spec.index, f"render worker {died}", ""))
                    self._replace(died)
                continue
            if isinstance(message, Recycling):
                with self._lock:
                    self._replace(f"recycled: {message.reason}")
                continue
            spec, answer = self._pending.popleft()
            answer.set_result(message)

    def _replace(self, why: str) -> None:
        """A fresh worker for one that has left, sent the frames still unanswered; if it cannot
        start, the actor leaves, and Ray restarts it (its frames fail, and are retried)."""
        self._worker.stop()
        with open(self._worker.log, "a") as log:  # the worker's log: the next one writes there too
            log.write(f"sceneforge: {self._name}: the render worker {why}; starting another\n")
        if not isinstance(self._start_worker(), Ready):
            os._exit(1)
        for spec, _ in self._pending:
            self._worker.conn.send(spec)


class RayExecutor:
    """Warm render actors on a Ray cluster; the store must be on a path every node shares."""

    def __init__(self, store: DatasetStore, finish: FinishStep, options: ExecutorOptions = ExecutorOptions(),
                 address: str | None = None, on_event: EventSink | None = None) -> None:
        self._store = store
        self._finish = finish
        self._options = options
        self._address = address
        self._emit = on_event or (lambda kind, message: None)
        self._actors: list = []
        self._started_ray = False

    def __enter__(self) -> RayExecutor:
        try:
            import ray
        except ImportError:
            raise UserError("--executor ray needs Ray: pip install 'sceneforge[ray]'") from None
        if not ray.is_initialized():
            try:
                # Without an address, a private Ray on this machine, as documented (not one RAY_ADDRESS names).
                ray.init(address=self._address or "local", log_to_driver=False, include_dashboard=False,
                         _system_config=None if self._address else _PRIVATE_RAY_CONFIG)
            except ConnectionError as exc:
                raise UserError(f"--address {self._address}: cannot reach the Ray cluster ({exc})") from None
            self._started_ray = True
        device = self._options.device
        if device.index is not None:
            raise UserError(f"--device {device}: with --executor ray every actor gets a GPU of its own; use --device gpu")
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if device.kind == "gpu" and not gpus:
            raise UserError("--device gpu: the Ray cluster has no GPU; use --device cpu or auto")
        if device.kind == "auto" and not gpus:
            self._emit("notice", "no GPU in the Ray cluster: rendering on CPUs")
        on_gpu = gpus > 0 and device.kind != "cpu"
        per_gpu = self._options.workers_per_gpu
        actor = ray.remote(_RenderActor).options(
            num_gpus=1 / per_gpu if on_gpu else 0, num_cpus=max(1, self._options.threads) if not on_gpu else 1,
            max_restarts=-1, max_task_retries=0, max_concurrency=_IN_FLIGHT,
        )
        count = gpus * per_gpu if on_gpu else self._options.workers
        logs = self._store.root.resolve() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        # Ray pins a GPU actor with CUDA_VISIBLE_DEVICES, which its worker inherits: its GPU is the first one seen.
        worker = self._options.for_worker(self._finish, "gpu" if on_gpu else "cpu", 0)
        self._actors = [actor.remote(f"actor-{n}", str(logs), worker) for n in range(count)]
        for n, ready in enumerate(ray.get([a.ready.remote() for a in self._actors])):
            if isinstance(ready, StartFailed):
                raise UserError(f"--device {device}: actor-{n}: {ready.error}")
            self._emit("worker", f"actor-{n}: ready on {ready.device}")
        return self

    def __exit__(self, *exc_info) -> None:
        import ray

        if exc_info[0] is None:  # a clean end: the actors remove their folders (ray.kill skips any teardown)
            ray.wait([actor.close.remote() for actor in self._actors], num_returns=len(self._actors), timeout=30)
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._started_ray:
            ray.shutdown()

    def run(self, specs: Iterable[SceneSpec]) -> Iterator[dict | Failure]:
        """Render and store every spec; yields records (and Failures) in completion order."""
        import ray
        from ray.exceptions import RayActorError

        dispatch = _Dispatch(specs, self._options.retries)
        in_flight: dict = {}  # object ref -> (actor number, spec)
        load = [0] * len(self._actors)
        while True:
            for n, actor in enumerate(self._actors):
                while load[n] < _IN_FLIGHT and (spec := dispatch.take()) is not None:
                    in_flight[actor.render.remote(spec)] = (n, spec)
                    load[n] += 1
            if not in_flight:
                return
            (done,), _ = ray.wait(list(in_flight), num_returns=1)
            n, spec = in_flight.pop(done)
            load[n] -= 1
            try:
                message = ray.get(done)
            except RayActorError as exc:  # the actor died; Ray restarts it
                message = FrameFailed(spec.index, str(exc).strip().splitlines()[-1], str(exc))
            outcome = _outcome(self._store, dispatch, spec, message, f"actor-{n}", self._emit)
            if outcome is not None:
                yield outcome
