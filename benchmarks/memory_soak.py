"""One render worker's resident memory over many tiny scenes: does Blender leak?

    python benchmarks/memory_soak.py [--scenes 500]

Renders distinct scenes of the default recipe at 32x24 with 1 sample in one Blender session
(what a warm worker does between recycles) and prints its RSS after warm-up and at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sceneforge.render.blender_scene import Renderer
from sceneforge.render.server import console_silenced, resident_mb
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "examples" / "tabletop.yaml"
WARM_UP = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--scenes", type=int, default=500)
    args = parser.parse_args()
    recipe = load_recipe(args.recipe, {"render.resolution": [32, 24], "render.samples": 1})
    renderer = Renderer()
    checkpoints = {}
    with console_silenced():
        for index in range(args.scenes):
            renderer.render(sample(recipe, index))
            if index + 1 in (WARM_UP, args.scenes) or (index + 1) % 100 == 0:
                checkpoints[index + 1] = resident_mb()
    renderer.close()
    print(f"resident memory of one worker over {args.scenes} scenes (32x24, 1 sample)")
    for scenes, mb in checkpoints.items():
        print(f"  after {scenes:5d} scenes  {mb:8.1f} MB")
    growth = 100 * (checkpoints[args.scenes] / checkpoints[WARM_UP] - 1)
    print(f"  growth after warm-up ({WARM_UP} scenes)  {growth:+.1f} %  (goal <= 10 %)")


if __name__ == "__main__":
    main()
