"""The pipeline: recipe -> scenes -> render -> store, resumable; then export."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sceneforge.executors import LocalExecutor
from sceneforge.labels.store import DatasetStore
from sceneforge.scenes.recipe import Recipe
from sceneforge.scenes.sampling import sample
from sceneforge.scenes.spec import SceneSpec


@dataclass(frozen=True)
class RenderReport:
    """What one render run did."""

    store: DatasetStore
    requested: int
    already_done: int
    rendered: int
    render_seconds: float  # Blender's own render time, summed over this run's frames
    wall_seconds: float

    @property
    def overhead(self) -> float:
        """Wall time beyond Blender's own render time, as a fraction of the latter."""
        return (self.wall_seconds - self.render_seconds) / self.render_seconds if self.render_seconds else 0.0


def render_dataset(
    recipe: Recipe,
    out: Path,
    *,
    on_start: Callable[[int, int], None] | None = None,
    on_frame: Callable[[dict], None] | None = None,
) -> RenderReport:
    """Render every frame of ``recipe`` that ``out`` does not hold yet.

    ``on_start(total, already_done)`` is called once, ``on_frame(record)`` after each frame.
    """
    start = time.perf_counter()
    store = DatasetStore.open_for_writing(
        out,
        recipe=recipe.model_dump(mode="json"),
        recipe_hash=recipe.content_hash(),
        categories=recipe.categories,
        resolution=recipe.render.resolution,
        requested=recipe.count,
        albedo=recipe.render.albedo,
    )
    done = {record["index"] for record in store.records()}
    todo = [i for i in range(recipe.count) if i not in done]
    if on_start:
        on_start(recipe.count, recipe.count - len(todo))
    render_seconds = 0.0
    if todo:
        sample(recipe, todo[0])  # a recipe that cannot be sampled fails before any worker starts
        render_seconds = render_specs(store, (sample(recipe, i) for i in todo), on_frame)
    return RenderReport(
        store=store, requested=recipe.count, already_done=recipe.count - len(todo), rendered=len(todo),
        render_seconds=render_seconds, wall_seconds=time.perf_counter() - start,
    )


def render_specs(
    store: DatasetStore, specs: Iterable[SceneSpec], on_frame: Callable[[dict], None] | None = None
) -> float:
    """Render scenes into an open store; returns the summed Blender render time in seconds."""
    render_seconds = 0.0
    with LocalExecutor(store.root / "logs") as executor:
        try:
            for frame in executor.render(specs):
                record = store.write_frame(frame.spec, frame.passes, frame.render_seconds)
                render_seconds += frame.render_seconds
                if on_frame:
                    on_frame(record)
        finally:
            store.save_metadata()
    return render_seconds
