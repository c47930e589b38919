"""What the behind pass (``render.behind``) costs: the same glass scenes rendered with and without it.

    python benchmarks/behind_pass.py [--scenes 3] [--resolution 160x120] [--samples 16]

Renders the first scenes of examples/glass_bin.yaml in one Blender session (CPU) with the
behind view layer and without it, alternating A-B-A-B per scene (each render builds its scene
afresh, as the setting is part of the scene's identity), and prints Blender's median render time of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from sceneforge.render.blender_scene import Renderer
from sceneforge.render.server import console_silenced
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    """Time the glass example's scenes with and without the behind pass and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--resolution", default="160x120")
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    width, height = (int(v) for v in args.resolution.split("x"))
    times: dict[bool, list[float]] = {False: [], True: []}
    with console_silenced():
        renderer = Renderer("cpu")
        for index in range(args.scenes):
            for behind in (False, True, False, True):
                recipe = load_recipe(ROOT / "examples" / "glass_bin.yaml", {
                    "render.resolution": [width, height], "render.samples": args.samples, "render.behind": behind})
                spec = sample(recipe, index)
                path, seconds = renderer.render_to_file(spec)
                path.unlink()
                times[behind].append(seconds)
        renderer.close()
    without, with_behind = statistics.median(times[False]), statistics.median(times[True])
    print(f"glass_bin, {args.scenes} scenes, {width}x{height}, {args.samples} samples, CPU")
    print(f"without behind pass: median {without:.2f} s per frame")
    print(f"with behind pass:    median {with_behind:.2f} s per frame ({with_behind / without - 1:+.0%})")


if __name__ == "__main__":
    main()
