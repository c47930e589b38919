"""Pictures of each sensor effect for docs/cameras.md: one frame rendered clean, then each effect alone.

    python benchmarks/sensor_pictures.py [--recipe examples/tabletop.yaml] [-o docs/images]

Renders frame 0 of the recipe with a depth sensor, then applies each image sensor effect, exaggerated
so it shows at page size, to the clean image (its 8-bit sRGB taken back to linear), and writes
``sensor_*.png`` and ``depth_sensor.png`` (exact depth beside the depth sensor's; holes black).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from sceneforge.floor.colour import linear_to_srgb8, srgb_to_linear
from sceneforge.labels.preview import depth_colours
from sceneforge.pipeline import render_dataset
from sceneforge.render.sensor import apply_sensor, jpeg
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.spec import SceneSpec, SensorSpec

ROOT = Path(__file__).resolve().parent.parent
NONE = SensorSpec(full_well=None, read_noise=0.0, gain=1.0, blur_sigma_px=0.0, vignetting=0.0,
                  chromatic_aberration_px=0.0, jpeg_quality=None, seed=0)
EFFECTS = {
    "noise": {"full_well": 300.0, "read_noise": 3.0},
    "blur": {"blur_sigma_px": 2.0},
    "vignetting": {"vignetting": 1.0},
    "chromatic_aberration": {"chromatic_aberration_px": 4.0},
    "jpeg": {"jpeg_quality": 10},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=ROOT / "examples" / "tabletop.yaml")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe, {"count": 1, "camera.depth_sensor": {"edge_band_px": 2}})
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        store = render_dataset(recipe, Path(folder) / "out").store
        record = store.records()[0]
        clean = store.read_rgb(record)
        depth, sensed = store.read_depth(record), store.read_depth_sensor(record)
        camera = SceneSpec.from_json(store.path(record, "scene").read_text()).camera
    linear = srgb_to_linear(clean / 255.0).astype(np.float32)
    write(args.output / "sensor_clean.png", clean)
    for name, values in EFFECTS.items():
        sensor = NONE.model_copy(update=values)
        image = linear_to_srgb8(apply_sensor(linear, sensor, camera, np.random.Generator(np.random.PCG64(1))))
        write(args.output / f"sensor_{name}.png", image if sensor.jpeg_quality is None else jpeg(image, sensor.jpeg_quality))
    pair = np.concatenate([depth_colours(depth), depth_colours(np.where(sensed > 0, sensed, np.inf))], axis=1)
    write(args.output / "depth_sensor.png", pair)
    print(f"wrote {len(EFFECTS) + 2} pictures to {args.output}")


def write(path: Path, rgb: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
