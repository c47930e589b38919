"""What an HDRI's importance map costs per scene: at the map's own resolution (what the renderer
sets) against Cycles' "automatic" (a 4096 x 2048 map whatever the HDRI's size).

    python benchmarks/hdri_importance.py [--recipe examples/materials.yaml] [--scenes 3]

Builds each scene once in one Blender session, then renders it alternately with each setting
(A-B-B-A) and prints the median of Blender's own render time per setting.
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=ROOT / "examples" / "materials.yaml")
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--resolution", default="128x96")
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    width, height = map(int, args.resolution.split("x"))
    recipe = load_recipe(args.recipe, {"render.resolution": [width, height], "render.samples": args.samples})
    renderer = Renderer()
    world = renderer._scene.world.cycles  # noqa: SLF001 - the benchmark flips the one setting it measures
    seconds: dict[str, list[float]] = {"map's own": [], "automatic": []}
    with console_silenced():
        for index in range(args.scenes):
            spec = sample(recipe, index)
            renderer.render(spec)  # builds the scene (the map's own resolution); later renders reuse it
            own = world.sample_map_resolution
            for setting in ("map's own", "automatic", "automatic", "map's own"):
                world.sampling_method = "AUTOMATIC" if setting == "automatic" else "MANUAL"
                world.sample_map_resolution = own
                seconds[setting].append(renderer.render(spec)[1])
    renderer.close()
    print(f"{args.recipe.name}, {args.scenes} scenes, {args.resolution}, {args.samples} samples: "
          "Blender render time per frame (median)")
    for setting, times in seconds.items():
        print(f"  importance map at {setting:10s} resolution  {statistics.median(times):6.2f} s")


if __name__ == "__main__":
    main()
