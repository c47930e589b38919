"""What a clean image costs: render time and image noise by sample count, with and without denoising.

    python benchmarks/image_quality.py [--recipe examples/tabletop.yaml] [--frames 2] [--resolution 160x120]
                                       [--samples 1,4,16,64,256] [--reference 1024]

Renders the first frames of a recipe at each sample count with and without OpenImageDenoise (the
recipe's other render settings kept, adaptive sampling included), and a reference of each frame at
``--reference`` samples without adaptive sampling or denoising. Every image is developed at the EV
the auto-exposure chose for its reference, so that only the noise differs. Prints Blender's render
seconds per frame and the noise: RMSE of the 8-bit image against the reference (in 8-bit levels,
averaged over channels and frames) and the PSNR that gives.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sceneforge.render.blender_scene import Renderer
from sceneforge.render.decode import read_multilayer_exr
from sceneforge.render.server import console_silenced
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample
from sceneforge.scenes.spec import SceneSpec

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "examples" / "tabletop.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--resolution", default="160x120")
    parser.add_argument("--samples", default="1,4,16,64,256")
    parser.add_argument("--reference", type=int, default=1024)
    args = parser.parse_args()
    width, height = (int(v) for v in args.resolution.lower().split("x"))
    recipe = load_recipe(args.recipe, {"render.resolution": [width, height]})
    counts = [int(v) for v in args.samples.split(",")]
    print(f"recipe {args.recipe.name}: {args.frames} frame(s) at {width}x{height}, CPU, reference {args.reference} "
          f"samples (adaptive_threshold {recipe.render.adaptive_threshold:g} otherwise)")
    renderer = Renderer()
    try:
        specs = [sample(recipe, i) for i in range(args.frames)]
        references = []
        for spec in specs:
            image, ev, _ = _develop(renderer, _with(spec, args.reference, False, adaptive_threshold=0.0), None)
            references.append((image, ev))
        print(f"{'samples':>7s} {'denoise':>7s} {'s/frame':>8s} {'RMSE (levels)':>14s} {'PSNR (dB)':>10s}")
        for count in counts:
            for denoise in (False, True):
                errors, seconds = [], []
                for spec, (reference, ev) in zip(specs, references):
                    image, _, took = _develop(renderer, _with(spec, count, denoise), ev)
                    errors.append(np.mean((image - reference) ** 2))
                    seconds.append(took)
                rmse = float(np.sqrt(np.mean(errors)))
                print(f"{count:7d} {'yes' if denoise else 'no':>7s} {np.mean(seconds):8.2f} {rmse:14.2f} "
                      f"{20 * np.log10(255 / max(rmse, 1e-9)):10.1f}", flush=True)
    finally:
        renderer.close()


def _with(spec: SceneSpec, samples: int, denoise: bool, **render) -> SceneSpec:
    """``spec`` rendered with other sampling settings."""
    return spec.model_copy(update={"render": spec.render.model_copy(update={"samples": samples, "denoise": denoise, **render})})


def _develop(renderer: Renderer, spec: SceneSpec, ev: float | None) -> tuple[np.ndarray, float, float]:
    """The frame's 8-bit image (as float), the EV it was developed with (``ev``, or the spec's
    exposure's choice when None) and Blender's render seconds."""
    with console_silenced():
        path, seconds = renderer.render_to_file(spec, label_passes=False)
    exposure = spec.camera.exposure if ev is None else spec.camera.exposure.model_copy(update={"auto": None, "ev": ev})
    passes = read_multilayer_exr(path, np.asarray(spec.camera.world_from_camera), exposure=exposure)
    path.unlink()
    return passes.rgb.astype(np.float64), passes.exposure_ev, seconds


if __name__ == "__main__":
    main()
