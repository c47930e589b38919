"""The structural sim-to-real fixture of docs/refiner.md ("A structural fixture"): two recipes
in ``examples/fixtures/structural`` that share their categories but differ in textures,
materials, lighting, camera statistics, seeds and sensor. The tests render it tiny and
``benchmarks/refine_quality.py`` bigger; it needs a checkout (the recipes live in examples/)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sceneforge.floor.errors import UserError
from sceneforge.labels.store import DatasetStore
from sceneforge.pipeline import render_dataset
from sceneforge.scenes.recipe import load_recipe

RECIPES = Path(__file__).resolve().parent.parent / "examples" / "fixtures" / "structural"


@dataclass(frozen=True)
class StructuralFixture:
    """``sim``: the store a refiner trains on (and refines); ``real``: the "real" domain as a
    labelled store, for evaluation only; ``photos``: the real store's RGB alone, the unlabelled
    images a refiner may train on."""

    sim: DatasetStore
    real: DatasetStore
    photos: Path


def build_structural_fixture(out: Path, *, frames: int = 48, real_frames: int | None = None, size: int = 64,
                             samples: int = 4) -> StructuralFixture:
    """Render (or resume) both sides of the fixture into ``out/sim`` and ``out/real`` at ``size``
    x ``size`` pixels with ``samples`` samples, and copy the real RGB into ``out/photos``."""
    if not RECIPES.is_dir():
        raise UserError(f"{RECIPES}: the fixture's recipes are not here (they ship with a checkout, not a wheel)")
    sides = {}
    for name, count in (("sim", frames), ("real", real_frames or frames)):
        recipe = load_recipe(RECIPES / f"{name}.yaml",
                             {"count": count, "render.resolution": [size, size], "render.samples": samples})
        sides[name] = render_dataset(recipe, out / name).store
    photos = out / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for record in sides["real"].records():
        source = sides["real"].path(record, "rgb")
        shutil.copyfile(source, photos / f"{record['index']:06d}{source.suffix}")
    return StructuralFixture(sides["sim"], sides["real"], photos)
