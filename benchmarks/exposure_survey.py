"""How well exposed the examples and the docs' HDRI snippets come out, before and after exposure control.

    python benchmarks/exposure_survey.py [--frames 3] [--resolution 128x96] [--samples 16]

Renders the first frames of every ``examples/*.yaml`` and of recipes built from the HDRI snippet of
docs/recipes.md (``background``) once each, and develops each linear render twice: "before" as
SceneForge did without exposure control (Standard view, EV 0) and "after" with the recipe's own
``camera.exposure`` (the default: Standard, darkened just enough that at most 1 % of the pixels
clip). Prints, per recipe, the clipped-pixel fraction (mean and worst frame) and the mean
luminance of the 8-bit images, and the EVs the auto-exposure chose.
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from sceneforge.floor.colour import clipped_fraction, mean_luminance
from sceneforge.render.blender_scene import Renderer
from sceneforge.render.decode import load_backdrop, read_multilayer_exr
from sceneforge.render.server import console_silenced
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample
from sceneforge.scenes.spec import ExposureSpec

ROOT = Path(__file__).resolve().parent.parent
# The docs' HDRI snippet (docs/recipes.md, `background`) with the default lights, on the
# tabletop's objects, as a new user would first write it; and with the HDRI alone.
DOCS_HDRI = """\
    objects:
      - {category: cube, count: 3, asset: {primitive: box, extents: [0.2, 0.2, 0.2]}, material: {color: [0.8, 0.8, 0.8]}}
      - {category: ball, count: 2, asset: {primitive: sphere, radius: 0.1}, material: {color: [0.9, 0.3, 0.2]}}
    background:
      hdri: assets/hdri/studio_small_03_256.hdr
      rotation_deg: {uniform: [0, 360]}
      strength: {uniform: [0.5, 1.5]}
    """
DOCS_RECIPES = {"docs: HDRI + default sun": DOCS_HDRI, "docs: HDRI only": DOCS_HDRI + "lights: []\n"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--resolution", default="128x96")
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    width, height = (int(v) for v in args.resolution.lower().split("x"))
    overrides = {"count": args.frames, "render.resolution": [width, height], "render.samples": args.samples}
    print(f"{args.frames} frames per recipe at {width}x{height}, {args.samples} samples; clipped = share of pixels "
          f"with a channel at 255, mean = mean Rec. 709 luminance / 255")
    print(f"{'recipe':28s} {'clipped before':>15s} {'worst':>6s} {'mean':>5s}   {'clipped after':>14s} {'worst':>6s} "
          f"{'mean':>5s}   EV chosen")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {path.stem: path for path in sorted((ROOT / "examples").glob("*.yaml"))}
        for name, text in DOCS_RECIPES.items():
            paths[name] = Path(tmp) / f"{len(paths)}.yaml"
            paths[name].write_text(textwrap.dedent(text).replace("assets/", f"{ROOT}/examples/assets/"))
        recipes = {name: load_recipe(path, overrides) for name, path in paths.items()}
        renderer = Renderer()
        try:
            for name, recipe in recipes.items():
                _survey(name, recipe, renderer, args.frames)
        finally:
            renderer.close()


def _survey(name: str, recipe, renderer: Renderer, frames: int) -> None:
    """Print one row: the recipe's frames developed before and after exposure control."""
    rows = []
    for index in range(frames):
        spec = sample(recipe, index)
        camera = spec.camera
        backdrop = None if spec.background_image is None else load_backdrop(spec.background_image, camera.width, camera.height)
        with console_silenced():
            exr, _ = renderer.render_to_file(spec)
        pose = np.asarray(camera.world_from_camera)
        before = read_multilayer_exr(exr, pose, backdrop, ExposureSpec())
        after = read_multilayer_exr(exr, pose, backdrop, camera.exposure)
        exr.unlink()
        rows.append([clipped_fraction(before.rgb), mean_luminance(before.rgb),
                     clipped_fraction(after.rgb), mean_luminance(after.rgb), after.exposure_ev])
    c0, m0, c1, m1, ev = np.array(rows).T
    print(f"{name:28s} {c0.mean():15.1%} {c0.max():6.1%} {m0.mean():5.2f}   {c1.mean():14.1%} {c1.max():6.1%} "
          f"{m1.mean():5.2f}   {ev.min():+.2f} .. {ev.max():+.2f}", flush=True)


if __name__ == "__main__":
    main()
