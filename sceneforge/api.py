"""SceneForge's Python API: recipes, sampling, rendering, stores, exports and notebook previews.

Everything here is also reachable as ``sceneforge.NAME`` (imported on first use, so that
``import sceneforge`` stays cheap). The ``sceneforge`` command line is a thin layer over these
functions: it parses options and prints. See docs/python.md.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager, nullcontext
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sceneforge.floor.errors import UserError
from sceneforge.refine.extra import require_refine_extra
from sceneforge.scenes.recipe import Recipe, load_recipe, recipe_from_dict
from sceneforge.scenes.recipe import override_recipe as override
from sceneforge.scenes.sampling import sample, sample_views
from sceneforge.scenes.spec import SceneSpec

if TYPE_CHECKING:  # annotations only: numpy and the label stage load on first use
    import numpy as np

    from sceneforge.executors import EventSink
    from sceneforge.labels.store import DatasetStore
    from sceneforge.pipeline import RenderReport

__all__ = [
    "Frame", "Image", "Recipe", "RunResult", "SceneSpec", "Store", "engine_overrides", "load_recipe", "open_store", "override",
    "recipe_from_dict", "render", "run", "sample", "sample_specs", "sample_views",
]

RecipeLike = Recipe | str | Path
Refiner = Callable[["DatasetStore", Path, int, str, dict], object]  # (store, checkpoint, batch, device, thresholds)


def _recipe(recipe: RecipeLike) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else load_recipe(recipe)


def engine_overrides(count: int | None = None, seed: int | None = None,
                     resolution: tuple[int, int] | str | None = None, samples: int | None = None) -> dict[str, Any]:
    """The recipe fields the dedicated options set (``count``, ``seed``, ``resolution`` as
    (W, H) or ``"WxH"``, ``samples``), as dotted overrides; None leaves a field as it is."""
    overrides: dict[str, Any] = {}
    if count is not None:
        overrides["count"] = count
    if seed is not None:
        overrides["seed"] = seed
    if resolution is not None:
        if isinstance(resolution, str):
            match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", resolution)
            if not match:
                raise UserError(f"--resolution: expected WxH such as 640x480, got {resolution!r}")
            resolution = (int(match[1]), int(match[2]))
        overrides["render.resolution"] = [int(v) for v in resolution]
    if samples is not None:
        overrides["render.samples"] = samples
    return overrides


def sample_specs(recipe: RecipeLike, count: int, start: int = 0) -> Iterator[SceneSpec]:
    """The SceneSpecs of frames ``start .. start + count - 1`` (every view of each), without rendering."""
    loaded = _recipe(recipe)
    for index in range(start, start + count):
        yield from sample_views(loaded, index)


def render(recipe: RecipeLike, out: str | Path, *, workers: int = 1, device: str = "auto", threads: int = 0,
           workers_per_gpu: int = 1, retries: int = 2, max_scenes_per_worker: int = 1000, max_worker_memory_mb: float = 0.0,
           executor: str = "local", address: str | None = None, usd: bool = False,
           count: int | None = None, seed: int | None = None, resolution: tuple[int, int] | str | None = None,
           samples: int | None = None, on_start: Callable[[int, int], None] | None = None,
           on_frame: Callable[[dict], None] | None = None, on_event: EventSink | None = None) -> RenderReport:
    """Render ``recipe`` (a Recipe or a YAML path) into the store ``out``, resuming what it holds:
    ``sceneforge render``. The engine options are the CLI's (``--workers``, ``--device``, ...);
    ``count``, ``seed``, ``resolution`` and ``samples`` override the recipe. The callbacks are
    ``pipeline.render_dataset``'s. Failed views are in the report, not raised."""
    from sceneforge.executors import ExecutorOptions
    from sceneforge.pipeline import EXECUTORS, render_dataset

    if executor not in EXECUTORS:
        raise UserError(f"--executor: expected local or ray, got {executor!r}")
    loaded = _recipe(recipe)
    if overrides := engine_overrides(count, seed, resolution, samples):
        loaded = override(loaded, overrides)
    options = ExecutorOptions(device=device, workers=workers, workers_per_gpu=workers_per_gpu, threads=threads,
                              retries=retries,
                              max_scenes_per_worker=max_scenes_per_worker, max_worker_memory_mb=max_worker_memory_mb)
    return render_dataset(loaded, Path(out), executor=executor, address=address, options=options,
                          on_start=on_start, on_frame=on_frame, on_event=on_event, usd=usd)


@dataclass(frozen=True)
class RunResult:
    """What ``run`` did: the render report, the recipe it rendered and the export folders it wrote."""

    report: RenderReport
    recipe: Recipe
    exports: list[Path] = field(default_factory=list)

    @property
    def store(self) -> Store:
        """The dataset store, opened for reading."""
        return Store(self.report.store.root)


def run(recipe: RecipeLike, out: str | Path, *, usd: bool = True, refiner: Refiner | None = None,
        during_render: AbstractContextManager | None = None, **engine: Any) -> RunResult:
    """Render, refine (when the recipe names a refiner) and export COCO into ``out/coco``:
    ``sceneforge run``. ``engine`` takes ``render``'s keyword arguments. A run with failed views
    exports nothing (rerunning renders them). ``refiner(store, checkpoint, batch, device, thresholds)``
    (``thresholds``: the recipe's acceptance thresholds, ``Acceptance``'s arguments)
    refines the store (default: quietly); ``during_render`` is entered while rendering only
    (the CLI's progress display)."""
    from sceneforge.labels.export import export
    from sceneforge.labels.store import one_writer

    loaded = _recipe(recipe)
    if overrides := engine_overrides(*(engine.pop(k, None) for k in ("count", "seed", "resolution", "samples"))):
        loaded = override(loaded, overrides)
    checkpoint = None
    if loaded.refine is not None:
        checkpoint = loaded._base_dir / loaded.refine.checkpoint
        if not checkpoint.exists():
            raise UserError(f"{loaded.where('refine', 'checkpoint')}: no refiner checkpoint at {checkpoint}")
        require_refine_extra()  # before rendering: the refine step would fail after it
    out = Path(out)
    exports = []
    with one_writer(out):  # render, refine and export as one writer
        with during_render or nullcontext():
            report = render(loaded, out, usd=usd, **engine)
        if not report.failures:
            if checkpoint is not None:
                (refiner or _refine_quietly)(report.store, checkpoint, loaded.refine.batch, loaded.refine.device,
                                             loaded.refine.acceptance())
            exports.append(export(report.store, "coco", out / "coco", overwrite=True,
                                  rgb="original" if checkpoint is None else "refined"))
    return RunResult(report, loaded, exports)


def _refine_quietly(store: DatasetStore, checkpoint: Path, batch: int, device: str, thresholds: dict) -> None:
    from sceneforge.refine.acceptance import Acceptance
    from sceneforge.refine.apply import Refiner as Model
    from sceneforge.refine.apply import refine_store

    refine_store(store, Model(checkpoint, device=device, batch=batch), acceptance=Acceptance(**thresholds))


class Image:
    """An RGB image (H x W x 3 uint8) that Jupyter shows (``_repr_png_``)."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels

    def png(self) -> bytes:
        """The image as PNG bytes."""
        import cv2

        ok, data = cv2.imencode(".png", cv2.cvtColor(self.pixels, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError("OpenCV could not encode the image as PNG")
        return data.tobytes()

    def save(self, path: str | Path) -> Path:
        """Write the image as a PNG file (atomically)."""
        from sceneforge.floor.files import atomic_write

        data = self.png()
        atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))
        return Path(path)

    def _repr_png_(self) -> bytes:
        return self.png()


class Frame:
    """One view of one frame of a store: its record and its passes, each read on first use."""

    def __init__(self, store: DatasetStore, record: dict) -> None:
        self._store = store
        self.record = record

    @property
    def index(self) -> int:
        """The frame index."""
        return self.record["index"]

    @property
    def camera(self) -> str:
        """The view's camera name ("" for the single camera of a plain recipe)."""
        from sceneforge.labels.store import view_name

        return view_name(self.record)

    @property
    def objects(self) -> list[dict]:
        """The view's object labels (docs/formats.md: category, instance_id, bbox, visibility, ...)."""
        return self.record["objects"]

    @property
    def passes(self) -> list[str]:
        """The names of the passes stored for this view."""
        return list(self.record["files"])

    def read(self, name: str) -> np.ndarray:
        """Any stored pass by name (``labels.store.STORED_PASSES``), as its dtype."""
        if name not in self.record["files"]:
            raise UserError(f"frame {self.index}{' ' + self.camera if self.camera else ''} has no {name!r} pass; "
                            f"it has: {', '.join(self.passes)}")
        return self._store.read_pass(self.record, name)

    @cached_property
    def rgb(self) -> np.ndarray:
        """H x W x 3 uint8 RGB."""
        return self._store.read_rgb(self.record)

    @cached_property
    def depth(self) -> np.ndarray:
        """H x W float32 planar depth in metres (inf = no hit)."""
        return self._store.read_depth(self.record)

    @cached_property
    def instance(self) -> np.ndarray:
        """H x W uint16 instance ids (0 = background)."""
        return self._store.read_instance(self.record)

    @cached_property
    def semantic(self) -> np.ndarray:
        """H x W uint16 category ids (0 = background)."""
        return self._store.read_semantic(self.record)

    @cached_property
    def normals(self) -> np.ndarray:
        """H x W x 3 float32 unit normals in the OpenCV camera frame (0 = no hit)."""
        return self._store.read_normals(self.record)

    def image(self) -> Image:
        """The RGB with each object's box, class name and keypoints drawn (enlarged when small)."""
        from sceneforge.labels.preview import instance_tile

        return Image(instance_tile(self._store, self.record))

    def _repr_png_(self) -> bytes:
        return self.image().png()

    def __repr__(self) -> str:
        camera = f" camera={self.camera!r}" if self.camera else ""
        return f"<Frame {self.index}{camera}: {len(self.objects)} objects>"


class Store:
    """A dataset store opened for reading: its views as ``Frame`` objects, exports, contact sheets."""

    def __init__(self, root: str | Path) -> None:
        from sceneforge.labels.store import DatasetStore

        self.dataset = DatasetStore(root)

    @property
    def root(self) -> Path:
        return self.dataset.root

    @property
    def meta(self) -> dict:
        """``dataset.json``: the recipe, categories, resolution, cameras, ..."""
        return self.dataset.meta

    @property
    def categories(self) -> list[str]:
        """Category names; category id = position + 1."""
        return [c["name"] for c in self.meta["categories"]]

    def frames(self) -> list[Frame]:
        """Every finished view, in frame order (the views of a frame in rig order)."""
        return [Frame(self.dataset, record) for record in self.dataset.records()]

    def frame(self, index: int, camera: str = "") -> Frame:
        """The view of frame ``index`` seen by ``camera``."""
        from sceneforge.labels.store import view_key

        for record in self.dataset.records():
            if view_key(record) == (index, camera):
                return Frame(self.dataset, record)
        raise UserError(f"{self.root}: no finished frame {index}{' camera ' + repr(camera) if camera else ''}")

    def __iter__(self) -> Iterator[Frame]:
        return iter(self.frames())

    def __len__(self) -> int:
        return len(self.dataset.records())

    def __getitem__(self, position: int) -> Frame:
        return self.frames()[position]

    def export(self, format: str, dest: str | Path, **options: Any) -> Path:
        """Export as ``format`` (coco, yolo, webdataset, mot, bop) into ``dest``: ``labels.export.export``'s
        options (``overwrite``, ``rgb``, ``splits``, ``objects``, ``masks``, ``layout``, ``task``, ...)."""
        from sceneforge.labels.export import export

        return export(self.dataset, format, Path(dest), **options)

    def contact_sheet(self, indices: Sequence[int] | None = None, count: int = 6,
                      clipped_threshold: float | None = None) -> Image:
        """``sceneforge preview``'s sheet: a row per view of the chosen frames (the first ``count``)."""
        from sceneforge.labels.preview import contact_sheet
        from sceneforge.labels.stats import CLIPPED_WARNING

        threshold = CLIPPED_WARNING if clipped_threshold is None else clipped_threshold
        return Image(contact_sheet(self.dataset, None if indices is None else list(indices), count, threshold))

    def _repr_png_(self) -> bytes:
        return self.contact_sheet()._repr_png_()

    def __repr__(self) -> str:
        return f"<Store {self.root}: {len(self)} views>"


def open_store(out: str | Path) -> Store:
    """Open the dataset store ``out`` (written by ``render``/``run``) for reading."""
    return Store(out)

