"""What motion labels cost, and what a sequence saves over separate scenes.

    python benchmarks/motion_overhead.py [--frames 24] [--resolution 256x256] [--samples 32] [--rounds 2]

Runs the real pipeline (`render_dataset`, one warm CPU worker) on examples/movi_like.yaml, one
sequence of ``--frames`` frames, three ways, alternating A-B-C-C-B-A per round so that drift on
a noisy machine cancels:

- A: the sequence with optical flow and point tracks (the recipe as it is),
- B: the same sequence without them (`sequence.flow: false`, `point_tracks: 0`),
- C: ``--frames`` separate still scenes of the same recipe (no `sequence`, no motion, no
  settling).

Goals (issue 12): A costs at most 10 % more than B; B costs less than C.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from sceneforge.executors import ExecutorOptions
from sceneforge.pipeline import render_dataset
from sceneforge.scenes.recipe import Recipe, load_recipe

RECIPE = Path(__file__).resolve().parent.parent / "examples" / "movi_like.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--resolution", default="256x256")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    width, height = (int(v) for v in args.resolution.lower().split("x"))
    common = {"count": args.frames, "render.resolution": [width, height], "render.samples": args.samples,
              "sequence.frames": args.frames}
    with_labels = load_recipe(RECIPE, common)
    without = load_recipe(RECIPE, {**common, "sequence.flow": False, "sequence.point_tracks": 0})
    stills = _stills(with_labels)
    print(f"{RECIPE.name}: {args.frames} frames at {width}x{height}, {args.samples} samples, one CPU worker, "
          f"{args.rounds} round(s)")
    runs = {"A": with_labels, "B": without, "C": stills}
    wall = {name: 0.0 for name in runs}
    render = {name: 0.0 for name in runs}
    for _ in range(args.rounds):
        for name in "ABCCBA":
            with tempfile.TemporaryDirectory() as tmp:
                report = render_dataset(runs[name], Path(tmp) / "out", options=ExecutorOptions(device="cpu"))
            wall[name] += report.wall_seconds / 2
            render[name] += report.render_seconds / 2
    for name, title in (("A", "sequence, flow + point tracks"), ("B", "sequence, no flow or tracks"),
                        ("C", f"{args.frames} separate scenes")):
        print(f"  {name} {title:34s} wall {wall[name] / args.rounds:7.2f} s   Blender {render[name] / args.rounds:7.2f} s")
    print(f"  flow + tracks cost        {100 * (wall['A'] / wall['B'] - 1):+7.2f} %  (goal <= +10 %)")
    print(f"  sequence vs separate      {wall['B'] / wall['C']:7.3f} x  (goal < 1)")


def _stills(recipe: Recipe) -> Recipe:
    """The recipe's scenes as separate stills: no sequence, nothing moving, objects placed at rest
    (no settling simulation, so that the stills pay for no physics the sequence does not)."""
    objects = [group.model_copy(update={"motion": None}) for group in recipe.objects]
    camera = recipe.camera.model_copy(update={"trajectory": None})
    placement = recipe.placement.model_copy(update={"physics": None})
    return recipe.model_copy(update={"sequence": None, "objects": objects, "camera": camera, "placement": placement})


if __name__ == "__main__":
    main()
