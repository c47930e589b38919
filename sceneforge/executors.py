"""Executors: where frames are rendered and written. Both yield finished frame records or
failures, with the same retry rules; the pipeline above them does not care which one runs.

- ``LocalExecutor``: warm worker processes on this machine (one per GPU, or ``workers`` on the
  CPU); workers return arrays and this process writes them into the store while they render on.
- ``RayExecutor``: one warm actor per GPU (or per ``threads`` CPUs) on a Ray cluster; actors write
  the pass files into the store on a path every node shares, and the driver appends the records.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

from sceneforge.errors import UserError
from sceneforge.labels.store import DatasetStore
from sceneforge.render import worker
from sceneforge.render.worker import WorkerOptions
from sceneforge.scenes.spec import SceneSpec

# Frames queued per worker: the next scene is already there (and being prepared) when a render ends.
_IN_FLIGHT = 2


@dataclass(frozen=True)
class ExecutorOptions:
    """Settings shared by the executors (CLI: --device, --workers, --threads, ...)."""

    device: str = "auto"  # cpu | gpu | auto
    workers: int = 1  # CPU workers (on GPUs: one worker per GPU)
    threads: int = 0  # CPU threads per worker, 0 = all
    max_scenes_per_worker: int = 1000
    max_worker_memory_mb: float = 0.0  # 0 = no ceiling
    retries: int = 2  # renders of a failing frame after the first


@dataclass(frozen=True)
class Failure:
    """A frame given up after ``attempts`` renders."""

    spec: SceneSpec
    error: str
    attempts: int

    def as_record(self) -> dict:
        return {"index": self.spec.index, "error": self.error, "attempts": self.attempts}


EventSink = Callable[[str, str], None]  # (kind, message): worker, notice, retry, restart


class _Dispatch:
    """The frames still to render, with their attempt counts; retried frames go first."""

    def __init__(self, specs: Iterable[SceneSpec], retries: int) -> None:
        self._fresh = iter(specs)
        self._again: deque[SceneSpec] = deque()
        self._attempts: dict[int, int] = {}
        self._retries = retries

    def take(self) -> SceneSpec | None:
        return self._again.popleft() if self._again else next(self._fresh, None)

    def put_back(self, specs: Iterable[SceneSpec]) -> None:
        """Frames a worker held but never rendered: they go again, no attempt counted."""
        self._again.extendleft(reversed(list(specs)))

    def failed(self, spec: SceneSpec, error: str) -> Failure | None:
        """Count a failed attempt: the frame goes again, or the Failure to report is returned."""
        self._attempts[spec.index] = attempts = self._attempts.get(spec.index, 0) + 1
        if attempts > self._retries:
            return Failure(spec, error, attempts)
        self._again.appendleft(spec)
        return None


class _Worker:
    def __init__(self, context, name: str, log_dir: Path, options: WorkerOptions) -> None:
        self.name, self.options = name, options
        self.log = log_dir / f"render-{name}.log"
        self.conn, child = context.Pipe()
        self.process = context.Process(target=worker.serve, args=(child, str(self.log), options),
                                       name=f"sceneforge-{name}", daemon=True)
        self.process.start()
        child.close()
        self.pending: deque[SceneSpec] = deque()
        self.leaving = False  # it could not take a spec: it is recycling or has crashed

    def stop(self) -> None:
        """Ask the worker to leave, and hang up so that it never blocks sending frames nobody reads."""
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.conn.close()
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class LocalExecutor:
    """Warm Blender worker processes on this machine; use as a context manager."""

    def __init__(self, store: DatasetStore, options: ExecutorOptions = ExecutorOptions(),
                 on_event: EventSink | None = None) -> None:
        self._store = store
        self._options = options
        self._emit = on_event or (lambda kind, message: None)
        self._context = multiprocessing.get_context("spawn")  # bpy must start in a fresh interpreter
        self._workers: list[_Worker] = []
        self._fanned_out = options.device == "cpu"  # GPU/auto: more workers once the first reports
        self._log_dir = store.root / "logs"

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring)."""
        return [w.process.pid for w in self._workers]

    def __enter__(self) -> LocalExecutor:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        if self._options.device == "cpu":
            for n in range(self._options.workers):
                self._start(f"worker-{n}", WorkerOptions("cpu", 0, *self._limits()))
        else:  # the first worker finds the GPUs; the others follow once it reports them
            self._start("worker-0", WorkerOptions(self._options.device, 0, *self._limits()))
        return self

    def __exit__(self, *exc_info) -> None:
        for w in self._workers:
            w.stop()
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
            kind, *payload = w.conn.recv()
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
        if kind == "ready":
            return self._on_ready(w, payload[0])
        if kind == "recycle":
            dispatch.put_back(w.pending)
            self._emit("restart", f"{w.name} recycled: {payload[0]}")
            self._replace(w)
            return None
        index = payload[0]
        spec = w.pending.popleft()
        assert spec.index == index, "a worker answers its frames in order"
        if kind == "error":
            last_line = payload[1].strip().splitlines()[-1]
            self._emit("retry", f"frame {index} failed on {w.name}: {last_line}")
            return dispatch.failed(spec, last_line)
        passes, seconds = payload[1:]
        self._emit("worker", f"{w.name}: frame {index} done")
        return self._store.write_frame(spec, passes, seconds)

    def _on_ready(self, w: _Worker, info: dict) -> None:
        self._emit("worker", f"{w.name}: ready on {info['device']} (pid {info['pid']})")
        if self._fanned_out:
            return None
        self._fanned_out = True
        gpus = info["gpus"]
        if not gpus:
            if self._options.device == "gpu":
                raise UserError("--device gpu: Cycles finds no GPU here (OptiX, CUDA, HIP, Metal, oneAPI); "
                                "use --device cpu or auto")
            self._emit("notice", "no GPU found: rendering on the CPU")
            for n in range(1, self._options.workers):
                self._start(f"worker-{n}", WorkerOptions("cpu", 0, *self._limits()))
        for n in range(1, len(gpus)):
            self._start(f"worker-{n}", WorkerOptions("gpu", n, *self._limits()))
        return None

    def _start(self, name: str, options: WorkerOptions) -> None:
        started = _Worker(self._context, name, self._log_dir, options)
        self._workers.append(started)
        self._emit("worker", f"{name}: starting (pid {started.process.pid})")

    def _replace(self, w: _Worker) -> None:
        w.stop()
        replacement = _Worker(self._context, w.name, self._log_dir, w.options)
        self._workers[self._workers.index(w)] = replacement
        self._emit("worker", f"{w.name}: starting (pid {replacement.process.pid})")

    def _limits(self) -> tuple[int, int, float]:
        o = self._options
        return o.threads, o.max_scenes_per_worker, o.max_worker_memory_mb


class _RenderActor:
    """A warm Blender session in a Ray worker process that writes its frames' files itself."""

    def __init__(self, store_root: str, usd: bool, device: str, threads: int) -> None:
        # Ray pins a GPU actor with CUDA_VISIBLE_DEVICES, so its GPU is always the first one seen.
        self._renderer = worker.Renderer(device, 0, threads)
        self._store = DatasetStore(store_root, usd=usd)

    def device(self) -> str:
        return self._renderer.device

    def render(self, spec: SceneSpec) -> dict:
        passes, seconds = self._renderer.render(spec)
        return self._store.write_frame_files(spec, passes, seconds)


class RayExecutor:
    """Warm render actors on a Ray cluster; the store must be on a path every node shares."""

    def __init__(self, store: DatasetStore, options: ExecutorOptions = ExecutorOptions(),
                 address: str | None = None, on_event: EventSink | None = None) -> None:
        self._store = store
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
                ray.init(address=self._address, log_to_driver=False, include_dashboard=False)
            except ConnectionError as exc:
                raise UserError(f"--address {self._address}: cannot reach the Ray cluster ({exc})") from None
            self._started_ray = True
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if self._options.device == "gpu" and not gpus:
            raise UserError("--device gpu: the Ray cluster has no GPU; use --device cpu or auto")
        if self._options.device == "auto" and not gpus:
            self._emit("notice", "no GPU in the Ray cluster: rendering on CPUs")
        on_gpu = gpus > 0 and self._options.device != "cpu"
        actor = ray.remote(_RenderActor).options(
            num_gpus=1 if on_gpu else 0, num_cpus=max(1, self._options.threads) if not on_gpu else 1,
            max_restarts=-1, max_task_retries=0,
        )
        count = gpus if on_gpu else self._options.workers
        self._actors = [actor.remote(str(self._store.root.resolve()), self._store.usd, "gpu" if on_gpu else "cpu",
                                     self._options.threads)
                        for _ in range(count)]
        for n, device in enumerate(ray.get([a.device.remote() for a in self._actors])):
            self._emit("worker", f"actor-{n}: ready on {device}")
        return self

    def __exit__(self, *exc_info) -> None:
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._started_ray:
            ray.shutdown()

    def run(self, specs: Iterable[SceneSpec]) -> Iterator[dict | Failure]:
        """Render and store every spec; yields records (and Failures) in completion order."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

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
                record = ray.get(done)
            except (RayTaskError, RayActorError) as exc:
                message = str(exc).strip().splitlines()[-1]
                self._emit("retry", f"frame {spec.index} failed on actor-{n}: {message}")
                failure = dispatch.failed(spec, message)
                if failure is not None:
                    yield failure
                continue
            self._store.append_record(record)
            self._emit("worker", f"actor-{n}: frame {spec.index} done")
            yield record
