"""The pipeline: recipe -> scenes -> render -> store, resumable; the CLI and tests drive it."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from sceneforge.executors import EventSink, ExecutorOptions, Failure, LocalExecutor, RayExecutor
from sceneforge.labelling import LabelAndStore
from sceneforge.labels.motion import point_tracks
from sceneforge.labels.store import DatasetStore, one_writer, view_key
from sceneforge.scenes.recipe import Recipe
from sceneforge.scenes.sampling import sample, sample_views, scene_stream
from sceneforge.scenes.spec import SceneSpec

EXECUTORS = ("local", "ray")
WORKER_MEMORY_MB = 800  # what one CPU render worker may need (resident 690-750 MB over the memory soak's mixed scenes)


@dataclass(frozen=True)
class RenderReport:
    """What one render run did."""

    store: DatasetStore
    requested: int
    already_done: int
    rendered: int
    render_seconds: float  # Blender's own render time, summed over this run's frames
    wall_seconds: float
    failures: list[Failure] = field(default_factory=list)

    @property
    def overhead(self) -> float:
        """Wall time beyond Blender's own render time, as a fraction of the latter."""
        return (self.wall_seconds - self.render_seconds) / self.render_seconds if self.render_seconds else 0.0


def render_dataset(
    recipe: Recipe,
    out: Path,
    *,
    executor: str = "local",
    address: str | None = None,
    options: ExecutorOptions = ExecutorOptions(),
    on_start: Callable[[int, int], None] | None = None,
    on_frame: Callable[[dict], None] | None = None,
    on_event: EventSink | None = None,
    usd: bool = False,
) -> RenderReport:
    """Render every view of every frame of ``recipe`` that ``out`` does not hold yet, as its one writer
    (counts are of views: one per frame, or one per rig camera and frame).

    With ``usd``, each frame's scene is also written as ``scenes/NNNNNN.usda``.
    ``on_start(total, already_done)`` is called once, ``on_frame(record)`` after each frame,
    ``on_event(kind, message)`` on worker events (also logged to ``out/logs/run.jsonl``).
    """
    start = time.perf_counter()
    cameras = recipe.camera_names
    with one_writer(out):
        store = DatasetStore.open_for_writing(
            out,
            recipe=recipe.model_dump(mode="json"),
            recipe_hash=recipe.content_hash(),
            categories=recipe.categories,
            keypoints=recipe.category_keypoints(),
            resolution=recipe.render.resolution,
            requested=recipe.count * len(cameras),
            albedo=recipe.render.albedo,
            flow=recipe.sequence is not None and recipe.sequence.flow,
            sensor=recipe.camera.sensor is not None,
            depth_sensor=recipe.camera.depth_sensor is not None,
            behind=recipe.render.behind,
            cameras=tuple(cameras),
            stereo_pairs=tuple(recipe.stereo_pairs),
        )
        # One render per view; resuming renders exactly the views that are missing or damaged.
        done = {view_key(record) for record in store.records()}
        todo = [(i, name) for i in range(recipe.count) for name in cameras if (i, name) not in done]
        requested = recipe.count * len(cameras)
        if on_start:
            on_start(requested, requested - len(todo))
        render_seconds, failures = 0.0, []
        if todo:
            missing: dict[int, set[str]] = {}
            for i, name in todo:
                missing.setdefault(i, set()).add(name)
            # Sampled as the workers ask for them: scene 0 is sampled while the workers start (a
            # recipe that cannot be sampled fails then, and the workers are stopped).
            views = (spec for i, names in missing.items() for spec in sample_views(recipe, i) if spec.camera.name in names)
            options = _bounded_workers(options, len(todo), on_event)
            render_seconds, failures = render_specs(
                store, views, executor=executor, address=address, options=options,
                on_frame=on_frame, on_event=on_event, usd=usd,
            )
        if recipe.sequence is not None:
            write_point_tracks(recipe, store)
        return RenderReport(
            store=store, requested=requested, already_done=requested - len(todo),
            rendered=len(todo) - len(failures), render_seconds=render_seconds,
            wall_seconds=time.perf_counter() - start, failures=failures,
        )


def render_specs(
    store: DatasetStore,
    specs: Iterable[SceneSpec],
    *,
    executor: str = "local",
    address: str | None = None,
    options: ExecutorOptions = ExecutorOptions(),
    on_frame: Callable[[dict], None] | None = None,
    on_event: EventSink | None = None,
    usd: bool = False,
) -> tuple[float, list[Failure]]:
    """Render scenes into an open store; returns Blender's summed render time and the failures.

    Each frame is labeled and written by ``LabelAndStore`` where it was rendered (with ``usd``,
    its USD stage too). This run's failures replace ``failed.jsonl`` (removed when there are none).
    """
    with one_writer(store.root):
        log = _RunLog(store.root / "logs" / "run.jsonl", on_event)
        finish = LabelAndStore(str(store.root.resolve()), usd)
        chosen = (RayExecutor(store, finish, options, address, log.event) if executor == "ray"
                  else LocalExecutor(store, finish, options, log.event))
        render_seconds, failures = 0.0, []
        log.event("start", f"{executor} executor, {options}")
        try:
            with chosen as running:
                for outcome in running.run(specs):
                    if isinstance(outcome, Failure):
                        failures.append(outcome)
                        log.write({"event": "failed", **outcome.as_record()})
                        if on_event:
                            view = f"{outcome.spec.index} {outcome.spec.camera.name}".strip()
                            last_line = (outcome.error.strip().splitlines() or ["?"])[-1]
                            on_event("failed", f"{view} after {outcome.attempts} attempt(s): {last_line}")
                        continue
                    render_seconds += outcome["render_seconds"]
                    log.write({"event": "frame", "index": outcome["index"], "render_seconds": outcome["render_seconds"]})
                    if on_frame:
                        on_frame(outcome)
        finally:
            store.write_failures([f.as_record() for f in failures])
            store.save_metadata()
            log.event("end", f"{len(failures)} failed")
        return render_seconds, failures


def write_point_tracks(recipe: Recipe, store: DatasetStore) -> int:
    """Write the point tracks of every (sequence, camera) whose frames are all finished and whose
    tracks are not written yet; returns how many were written. Each is a pure function of the
    recipe and the scene (its query points are drawn from the scene seed; every camera of a rig
    gets its own queries, from its own stream)."""
    frames = recipe.frames_per_scene
    done = {view_key(record) for record in store.records()}
    written = {(record["scene_index"], record.get("camera", "")) for record in store.sequence_records()}
    count = 0
    for scene_index in range(-(-recipe.count // frames)):
        indices = list(range(scene_index * frames, min((scene_index + 1) * frames, recipe.count)))
        for position, name in enumerate(recipe.camera_names):
            if (scene_index, name) in written or not done.issuperset((i, name) for i in indices):
                continue
            specs = [sample(recipe, i, name or None) for i in indices]
            key = (9,) if not name else (9, position)
            tracks = point_tracks(specs, recipe.sequence.point_tracks, scene_stream(specs[0].seed, key))
            store.write_sequence(scene_index, indices, recipe.sequence.fps, tracks, name)
            count += 1
    return count


def _bounded_workers(options: ExecutorOptions, frames: int, on_event: EventSink | None) -> ExecutorOptions:
    """At most one CPU worker per frame to render, per core, and per WORKER_MEMORY_MB of available memory."""
    limits = {"frames to render": frames, "CPU cores": os.cpu_count() or 1}
    if (available := _available_memory_mb()) is not None:
        limits["available memory"] = max(1, int(available // WORKER_MEMORY_MB))
    reason, most = min(limits.items(), key=lambda item: item[1])
    if options.workers <= most:
        return options
    if on_event:
        on_event("notice", f"--workers {options.workers}: starting {most}, the most that the {reason} allow")
    return replace(options, workers=most)


def _available_memory_mb() -> float | None:
    """MemAvailable of /proc/meminfo in MB (None where there is none)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class _RunLog:
    """Structured log of a run: one JSON object per line, with a UTC timestamp."""

    def __init__(self, path: Path, forward: EventSink | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path, self._forward = path, forward

    def event(self, kind: str, message: str) -> None:
        self.write({"event": kind, "message": message})
        if self._forward and kind not in ("start", "end"):
            self._forward(kind, message)

    def write(self, entry: dict) -> None:
        line = json.dumps({"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **entry})
        with open(self._path, "a") as log:
            log.write(line + "\n")
