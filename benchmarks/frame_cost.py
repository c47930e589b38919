"""Where a frame's CPU time goes in a render worker: Blender's render against each finishing step.

    python benchmarks/frame_cost.py [--recipe R] [--frames 6] [--resolution 256x256] [--samples 16]
                                    [--frames-per-scene 1] [--no-usd] [--keep DIR | --reuse DIR]

Renders the recipe's frames in one Blender session in this process and runs, one after the other
(not beside the render, so that each is timed alone), every step a worker runs on a rendered frame:
decoding the EXR, the derived passes, the USD stage, the store's writes and the frame record
(its object records: amodal masks and truncation, boxes, keypoints). Prints CPU milliseconds per frame
(``time.process_time``: far less sensitive to other load on the machine than wall time) beside
the CPU time of Blender's render itself. On a machine whose cores Cycles keeps busy, the label
steps' CPU share is what they add to each frame's wall time when they run beside the next render.

``--keep DIR`` keeps the rendered frames; ``--reuse DIR`` then finishes them again without
rendering, so that two source trees can be timed on the same frames, alternately:
``PYTHONPATH=TREE python benchmarks/frame_cost.py --reuse DIR``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sceneforge.labels.annotate import frame_record, stored_passes
from sceneforge.labels.store import DOCUMENTS, DatasetStore, view_stem
from sceneforge.render.blender_scene import Renderer
from sceneforge.render.decode import decode
from sceneforge.render.server import console_silenced
from sceneforge.scenes.assets import asset_model
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample_views
from sceneforge.scenes.spec import SceneSpec

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "examples" / "tabletop.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--resolution", default="256x256")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--frames-per-scene", type=int, default=1)
    parser.add_argument("--no-usd", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep each rendered EXR and its SceneSpec in this folder")
    parser.add_argument("--reuse", type=Path, help="render nothing: finish the frames a --keep run left here "
                        "(run it with PYTHONPATH=TREE to time another source tree on the same frames)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.resolution.lower().split("x"))
    recipe = load_recipe(args.recipe, {"count": args.frames, "render.resolution": [width, height],
                                       "render.samples": args.samples,
                                       "camera.frames_per_scene": args.frames_per_scene})
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    store = DatasetStore.open_for_writing(
        Path(tempfile.mkdtemp()) / "out", recipe=recipe.model_dump(mode="json"), recipe_hash=recipe.content_hash(),
        categories=recipe.categories, keypoints=recipe.category_keypoints(), resolution=recipe.render.resolution,
        requested=recipe.count)
    if not args.no_usd:
        from sceneforge.labels.usd_scene import scene_usda  # imported once, as a worker does before its first frame
    cpu: dict[str, float] = {}

    def timed(name: str, step: Callable):
        start = time.process_time()
        result = step()
        cpu[name] = cpu.get(name, 0.0) + time.process_time() - start
        return result

    def finish(spec: SceneSpec, path: Path, seconds: float) -> None:
        passes = timed("decode the EXR", lambda: decode(spec, path))
        stored = timed("derived passes (distance, semantic)", lambda: stored_passes(spec, passes))
        documents = {"scene": spec.to_json()}
        if not args.no_usd:
            documents["usd"] = timed("USD stage", lambda: scene_usda(
                spec, passes.exposure_ev, (store.root / DOCUMENTS["usd"]).parent))
        files, checks = timed("store writes (PNG, EXR, JSON)", lambda: store.write_frame_files(
            spec.index, stored, documents, spec.camera.name))
        timed("frame record (amodal masks, truncation, boxes, keypoints)",
              lambda: frame_record(spec, passes, files, checks, seconds))

    blender_wall, frames = 0.0, 0
    if args.reuse:  # the frames another run kept: finishing only, as a worker does once its intake loaded the assets
        kept = [SceneSpec.from_json(path.read_text()) for path in sorted(args.reuse.glob("*.json"))]
        for spec in kept:
            for body in [*spec.objects, *spec.props]:
                asset_model(body.asset)
        for spec in kept:
            finish(spec, args.reuse / f"{view_stem(spec.index, spec.camera.name)}.exr", 0.0)
            frames += 1
    else:
        renderer = Renderer("cpu")
        with console_silenced():
            for index in range(recipe.count):
                for spec in sample_views(recipe, index):
                    path, seconds = timed("Blender: build and render (all threads)", lambda: renderer.render_to_file(spec))
                    blender_wall += seconds
                    finish(spec, path, seconds)
                    if args.keep:
                        stem = view_stem(spec.index, spec.camera.name)
                        shutil.move(path, args.keep / f"{stem}.exr")
                        (args.keep / f"{stem}.json").write_text(spec.to_json())
                    else:
                        path.unlink()
                    frames += 1
        renderer.close()
    render = "Blender: build and render (all threads)"
    render_cpu = cpu.get(render, 0.0)
    labels = sum(cpu.values()) - render_cpu
    print(f"{args.recipe.name}: {frames} frames at {width}x{height}, {args.samples} samples, "
          f"{args.frames_per_scene} frame(s) per scene{', kept frames reused' if args.reuse else ''}; "
          f"CPU ms per frame; load average {os.getloadavg()[0]:.1f}")
    print("| step | CPU ms per frame | share of the render's CPU |\n|---|---|---|")
    for name, seconds in [*cpu.items(), ("finishing a frame in all", labels)]:
        share = f"{100 * seconds / render_cpu:.2f} %" if render_cpu else "-"
        print(f"| {name} | {1000 * seconds / frames:.1f} | {share} |")
    if not args.reuse:
        print(f"Blender's own render time {blender_wall / frames:.2f} s per frame (wall, load-sensitive)")

if __name__ == "__main__":
    main()
