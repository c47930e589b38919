"""The plain-bpy floor: the frames SceneForge would render, rendered with nothing around them.

    python benchmarks/floor.py RECIPE OUT [--count N] [--resolution WxH] [--samples S]
                               [--frames-per-scene K] [--threads T]

Samples the recipe's SceneSpecs exactly as ``sceneforge run`` does (``scenes.sampling.sample_views``
for frames 0..N-1) and renders each view in one Blender session in this process, on the CPU, with
the same Cycles settings and one multilayer EXR per view (RGB, depth, normals, object index, as
SceneForge's worker writes) moved into OUT, and nothing else: no worker processes, no decoding, no
labels, no store, no USD, no export. ``benchmarks/render_overhead.py`` times it against
``sceneforge run`` from whole-command wall time.

The scene is built by ``render.blender_scene.Renderer`` and rendered by its ``render_to_file``,
which is one ``bpy.ops.render.render(write_still=True)`` into a multilayer EXR after building the
scene once per SceneSpec content (later frames of a scene only move the camera and the bodies).
A second scene builder here would be a copy of that one (meshes, materials, textures, world,
lights, camera, motion keys), and a copy drifts: the floor must render the very scene SceneForge
renders, so that the gap it measures is SceneForge's machinery around the render, not a different
scene. It therefore cannot tell whether the scene itself is heavier than it needs to be.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from sceneforge.render.blender_scene import Renderer
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample_views


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=None, help="frames (default: the recipe's count)")
    parser.add_argument("--resolution", default=None, help="WxH (default: the recipe's)")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--frames-per-scene", type=int, default=None)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads, 0 = all")
    args = parser.parse_args()
    overrides: dict[str, object] = {}
    if args.count is not None:
        overrides["count"] = args.count
    if args.resolution is not None:
        overrides["render.resolution"] = [int(v) for v in args.resolution.lower().split("x")]
    if args.samples is not None:
        overrides["render.samples"] = args.samples
    if args.frames_per_scene is not None:
        overrides["camera.frames_per_scene"] = args.frames_per_scene
    recipe = load_recipe(args.recipe, overrides)
    args.out.mkdir(parents=True, exist_ok=True)

    renderer = Renderer("cpu", threads=args.threads)
    render_seconds, views = 0.0, 0
    try:
        for index in range(recipe.count):
            for spec in sample_views(recipe, index):
                path, seconds = renderer.render_to_file(spec)
                shutil.move(path, args.out / path.name)
                render_seconds += seconds
                views += 1
    finally:
        renderer.close()
    wall = time.perf_counter() - started
    print(f"floor: {views} views in {wall:.2f} s, Blender render time {render_seconds:.2f} s")


if __name__ == "__main__":
    main()
