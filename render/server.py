"""The render worker process: imports bpy once, then renders SceneSpec after SceneSpec.

Each rendered frame is handed to a *finishing step* chosen by the conductor (label derivation
and the store writes run here, beside the renderer, while the next frame renders); render knows
it only as a callable ``(spec, passes, render_seconds) -> result`` with a ``prepare()`` that
imports what it needs before the worker's threads start (``FinishStep``).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any, Protocol

from sceneforge.floor.errors import StorageError, UserError
from sceneforge.floor.frame import Passes
from sceneforge.scenes.assets import asset_model, texture_image
from sceneforge.scenes.spec import SceneSpec

from .blender_scene import Renderer
from .decode import decode
from .messages import FrameDone, FrameFailed, Ready, Recycling, StartFailed


class FinishStep(Protocol):
    """What the worker does with each rendered frame (picklable: the worker process is spawned)."""

    def __call__(self, spec: SceneSpec, passes: Passes, render_seconds: float) -> Any:
        """Finish one frame; the result goes back to the conductor in its FrameDone."""

    def prepare(self) -> None:
        """Import the libraries finishing needs; the worker calls it once, before its other threads start."""


@dataclass(frozen=True)
class WorkerOptions:
    """How one worker renders, what it does with each frame, and when it recycles itself."""

    finish: FinishStep  # picklable: the worker process is spawned
    device: str = "cpu"  # "cpu", "gpu" (fail without one) or "auto" (a GPU if there is one)
    gpu_index: int = 0  # which of the GPUs Cycles lists
    threads: int = 0  # CPU render threads, 0 = all cores
    max_scenes: int = 0  # recycle after this many scenes, 0 = never
    max_rss_mb: float = 0.0  # recycle above this resident memory, 0 = never


def _finish_frame(spec: SceneSpec, exr: Path, seconds: float, finish: FinishStep) -> FrameDone | FrameFailed:
    """Decode a rendered EXR and run the finishing step on it; any failure becomes a FrameFailed."""
    try:
        return FrameDone(spec.index, finish(spec, decode(spec, exr), seconds), seconds)
    except Exception as exc:  # a damaged render or a failed write: reported with its frame
        return _frame_failed(spec.index, exc)
    finally:
        exr.unlink(missing_ok=True)


def _frame_failed(index: int, exc: Exception) -> FrameFailed:
    """The message for frame ``index`` failing with ``exc`` (being handled)."""
    text, storage = traceback.format_exc(), isinstance(exc, StorageError)
    return FrameFailed(index, str(exc) if storage else text.strip().splitlines()[-1], text, storage)


def serve(conn: Connection, log_path: str, options: WorkerOptions) -> None:
    """Worker-process entry: render the SceneSpecs that arrive on ``conn`` until ``None`` does.

    Sends ``Ready`` first (or ``StartFailed``, and leaves, when it cannot render as asked), then a
    ``FrameDone`` or ``FrameFailed`` per frame, in order, and ``Recycling`` before leaving to be
    replaced. Three threads keep Blender busy (Cycles releases
    the GIL while it renders): one takes the next specs off the pipe and loads their assets, the
    main one renders, and one decodes, finishes and reports each frame while the next renders.
    Blender's console output goes to ``log_path``.
    """
    _output_to(log_path)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the conductor stops its workers itself
    _serve_frames(conn, _open_session(conn, options.device, options.gpu_index, options.threads), options)


def serve_early(conn: Connection, device: str, gpu_index: int, threads: int) -> None:
    """Entry of a worker started before its run was set up (``sceneforge.first_worker``): it opens
    its Blender session at once and sends ``Ready`` (or ``StartFailed``), then serves as ``serve``
    with the log path and options that come first on ``conn`` (``None`` instead: it is not needed,
    and leaves)."""
    early_output = tempfile.TemporaryFile()  # Blender's output until the log's path is known
    os.dup2(early_output.fileno(), 1)
    os.dup2(early_output.fileno(), 2)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the conductor stops its workers itself
    renderer = _open_session(conn, device, gpu_index, threads)
    _send_ready(conn, renderer)  # its session is open: from now on it leaves cleanly when told
    try:
        told = conn.recv()
    except (EOFError, OSError):
        told = None
    if told is None:
        renderer.close()
        os._exit(0)
    log_path, options = told
    _output_to(log_path, early_output)
    _serve_frames(conn, renderer, options, ready_sent=True)


def _output_to(log_path: str, earlier: IO[bytes] | None = None) -> None:
    """Send this process's output (Blender's console) to ``log_path`` (appended to), after what
    went to ``earlier``."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    if earlier is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        earlier.seek(0)
        os.write(log, earlier.read())
    os.dup2(log, 1)
    os.dup2(log, 2)


def _open_session(conn: Connection, device: str, gpu_index: int, threads: int) -> Renderer:
    """This worker's Blender session; when it cannot render as asked, sends StartFailed and leaves."""
    try:
        return Renderer(device, gpu_index, threads)
    except UserError as exc:
        conn.send(StartFailed(str(exc)))
        os._exit(2)


def _send_ready(conn: Connection, renderer: Renderer) -> None:
    conn.send(Ready(os.getpid(), renderer.device, [g[2] for g in renderer.gpus]))


def _serve_frames(conn: Connection, renderer: Renderer, options: WorkerOptions, ready_sent: bool = False) -> None:
    """``serve`` once its Blender session is open: Ready (unless sent), then frames until ``None``; never returns."""
    # Before the threads start: pxr's libraries take the GIL while they load, so importing USD in
    # one thread while another loads a compiled module (trimesh's scipy) deadlocks.
    options.finish.prepare()
    if not ready_sent:
        _send_ready(conn, renderer)
    inbox: queue.Queue = queue.Queue()
    outbox: queue.Queue = queue.Queue(maxsize=1)  # at most one rendered frame waits to be finished
    threading.Thread(target=_prepare_incoming, args=(conn, inbox), daemon=True).start()
    sender = threading.Thread(target=_finish_and_send, args=(conn, outbox, options.finish, renderer.device == "CPU"))
    sender.start()
    rendered, exit_code = 0, 0
    try:
        while (spec := inbox.get()) is not None:
            try:
                outbox.put((spec, *renderer.render_to_file(spec)))
            except Exception as exc:  # reported to the conductor with the frame it belongs to
                print(traceback.format_exc(), flush=True)
                outbox.put(_frame_failed(spec.index, exc))
            rendered += 1
            if options.max_scenes and rendered >= options.max_scenes:
                outbox.put(Recycling(f"rendered {rendered} frames"))
                break
            if options.max_rss_mb and (resident := resident_mb()) > options.max_rss_mb:
                outbox.put(Recycling(f"resident memory {resident:.0f} MB > {options.max_rss_mb:.0f} MB"))
                break
    except BaseException:  # a bug outside any one frame: leave its traceback in the log, exit non-zero
        traceback.print_exc()
        exit_code = 1
    finally:
        outbox.put(None)
        sender.join()
        renderer.close()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)  # skips Blender's interpreter teardown, a noticeable fraction of a second


def _finish_and_send(conn: Connection, outbox: queue.Queue, finish: FinishStep, on_cpu: bool) -> None:
    if on_cpu:
        _lowest_priority()
    hung_up = False
    while (item := outbox.get()) is not None:
        message = _finish_frame(*item, finish) if isinstance(item, tuple) else item
        if hung_up:
            continue  # keep draining so that the renderer never blocks on a full outbox
        try:
            conn.send(message)
        except (EOFError, OSError):
            hung_up = True  # the conductor is gone or stopping


def _lowest_priority() -> None:
    """Lowest priority for this thread alone, on Linux (which gives each thread its own nice value):
    label work on a CPU worker fills the cores Cycles leaves idle (scene sync, the EXR write) rather
    than taking them from its render threads; in an interleaved test Blender's render time fell by 8 %."""
    if sys.platform.startswith("linux"):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _prepare_incoming(conn: Connection, inbox: queue.Queue) -> None:
    try:
        while (spec := conn.recv()) is not None:
            try:
                for obj in [*spec.objects, *spec.props]:  # parsed and decoded now, while the previous frame renders
                    asset_model(obj.asset)
                    if obj.material.texture is not None:
                        texture_image(obj.material.texture)
            except Exception:  # noqa: BLE001 - the render reports it, attributed to its frame
                pass
            inbox.put(spec)
    except (EOFError, OSError):
        pass  # the conductor is gone: stop
    inbox.put(None)


@contextlib.contextmanager
def console_silenced() -> Iterator[None]:
    """Blender prints its render progress on file descriptor 1: send it to /dev/null meanwhile."""
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def resident_mb() -> float:
    """This process's resident memory in MB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
