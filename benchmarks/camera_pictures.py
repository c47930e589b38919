"""Renders the pictures of docs/cameras.md: one PNG per camera or sensor effect, each from a tiny
render of a bundled example recipe (through ``load_recipe`` overrides and ``render_dataset``,
exactly as ``sceneforge run`` would make it), and prints what it wrote.

    python benchmarks/camera_pictures.py [-o docs/images]

- ``lens.png``: one scene through a pinhole, a Brown-Conrady barrel lens and an equidistant fisheye
  (the same pose and focal length; a brick ground so that straight lines show how each lens bends);
  ``lens_fisheye_drone.png``: frame 0 of examples/fisheye_drone.yaml and its instance labels;
- ``stereo.png``: the left and right images and the left disparity of examples/stereo_bin_picking.yaml;
- ``exposure.png``: examples/studio.yaml (a bright HDRI), developed four ways;
- ``keypoints.png``: examples/object_keypoints.yaml's instance tile (keypoints, skeletons);
- ``amodal.png``: crowded objects' instance tile (visible masks, dashed amodal outlines);
- ``sensor_*.png``: frame 0 of examples/tabletop.yaml clean, then each image sensor effect alone,
  exaggerated, applied to the clean image (its 8-bit sRGB taken back to linear);
  ``depth_sensor.png``: the exact depth beside the depth sensor's (holes black).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sceneforge.floor.colour import linear_to_srgb8, srgb_to_linear
from sceneforge.labels.preview import depth_colours, instance_tile
from sceneforge.labels.store import DatasetStore
from sceneforge.pipeline import render_dataset
from sceneforge.render.sensor import apply_sensor, jpeg
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.spec import SceneSpec, SensorSpec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SMALL = {"count": 1, "render.resolution": [256, 192], "render.samples": 32, "render.denoise": True}
NONE = SensorSpec(full_well=None, read_noise=0.0, gain=1.0, blur_sigma_px=0.0, vignetting=0.0,
                  chromatic_aberration_px=0.0, jpeg_quality=None, seed=0)
EFFECTS = {
    "noise": {"full_well": 300.0, "read_noise": 3.0},
    "blur": {"blur_sigma_px": 2.0},
    "vignetting": {"vignetting": 1.0},
    "chromatic_aberration": {"chromatic_aberration_px": 4.0},
    "jpeg": {"jpeg_quality": 10},
}
# The lens scene: tabletop objects on a checkerboard of 25 cm squares (straight lines in every
# direction), seen low so that the ground's far edge makes a horizon.
LENS_SCENE = {"camera.fov_deg": 75, "camera.distance": 1.0, "camera.elevation_deg": 18}
LENSES = {
    "pinhole": None,
    "brown_conrady k1=-0.15": {"model": "brown_conrady", "k1": -0.15},
    "fisheye (equidistant)": {"model": "fisheye"},
}
EXPOSURES = {
    "Standard, EV 0": {"ev": 0},
    "default (clip protection)": None,
    "Filmic, EV 0": {"ev": 0, "view_transform": "filmic"},
    "AgX, auto mean 0.45": {"view_transform": "agx", "auto": {"mean": 0.45}},
}


class Renders:
    """Renders recipes into numbered folders of one temporary directory."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.count = folder, 0

    def __call__(self, recipe: str, overrides: dict[str, Any]) -> tuple[DatasetStore, list[dict]]:
        """Render ``examples/<recipe>`` with ``SMALL`` and ``overrides``; its store and records."""
        self.count += 1
        store = render_dataset(load_recipe(EXAMPLES / recipe, {**SMALL, **overrides}), self.folder / str(self.count)).store
        return store, store.records()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        render = Renders(Path(folder))
        pictures = {**lens_pictures(render), **stereo_picture(render), **exposure_picture(render),
                    **label_pictures(render), **sensor_pictures(render)}
    for name, image in pictures.items():
        path = args.output / f"{name}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
              f"({image.shape[1]}x{image.shape[0]}, {path.stat().st_size // 1024} KB)")
    print(f"{len(pictures)} pictures in {time.perf_counter() - start:.0f} s")


def lens_pictures(render: Renders) -> dict[str, np.ndarray]:
    """The same scene through each of ``LENSES``; the fisheye drone's frame beside its labels."""
    checker = render.folder / "checker"
    checker.mkdir()
    squares = np.kron((np.indices((2, 2)).sum(axis=0) % 2) * 150 + 60, np.ones((32, 32))).astype(np.uint8)
    cv2.imwrite(str(checker / "checker.png"), squares)
    ground = {"texture_folder": str(checker), "texture_size": 0.5, "roughness": 0.8}
    views = []
    for caption, lens in LENSES.items():
        store, (record,) = render("tabletop.yaml", {**LENS_SCENE, "ground.material": ground, "camera.lens": lens})
        views.append(captioned(store.read_rgb(record), caption))
    store, (record,) = render("fisheye_drone.yaml", {})
    drone = [captioned(store.read_rgb(record), "fisheye_drone"), captioned(instance_tile(store, record), "instances")]
    return {"lens": side_by_side(views), "lens_fisheye_drone": side_by_side(drone)}


def stereo_picture(render: Renders) -> dict[str, np.ndarray]:
    """Left, right and the left view's disparity (turbo colours of 1 / d, as the preview: near red)."""
    store, records = render("stereo_bin_picking.yaml", {"camera.depth_sensor": None})
    left, right = sorted(records, key=lambda r: r["camera"]["name"] != "left")
    disparity = store.read_disparity(left)
    return {"stereo": side_by_side([
        captioned(store.read_rgb(left), "left"), captioned(store.read_rgb(right), "right"),
        captioned(depth_colours(np.where(disparity > 0, 1 / disparity, np.inf)),
                  f"left disparity {disparity[disparity > 0].min():.0f}..{disparity.max():.0f} px")])}


def exposure_picture(render: Renders) -> dict[str, np.ndarray]:
    """The studio's bright HDRI developed each way of ``EXPOSURES``, with the EV and clipped share."""
    views = []
    for caption, exposure in EXPOSURES.items():
        store, (record,) = render("studio.yaml", {} if exposure is None else {"camera.exposure": exposure})
        views.append(captioned(store.read_rgb(record), caption,
                               f"EV {record['exposure_ev']:+.2f}, clipped {record['clipped_fraction']:.0%}"))
    return {"exposure": side_by_side(views)}


def label_pictures(render: Renders) -> dict[str, np.ndarray]:
    """Instance tiles, enlarged twice (nearest) so that dots and dashes show: the keypoint example's
    frame seen close, and crowded objects seen low so that they hide each other."""
    store, (record,) = render("object_keypoints.yaml", {"render.resolution": [320, 240], "camera.distance": 0.6})
    keypoints = instance_tile(store, record)
    store, (record,) = render("tabletop.yaml", {"render.resolution": [320, 240], "placement.area": [0.4, 0.4],
                                                "placement.min_gap": 0.0, "camera.elevation_deg": 15,
                                                "camera.distance": 0.7})
    return {name: cv2.resize(tile, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
            for name, tile in (("keypoints", keypoints), ("amodal", instance_tile(store, record)))}


def sensor_pictures(render: Renders) -> dict[str, np.ndarray]:
    """The clean tabletop frame, each sensor effect alone, and exact depth beside the depth sensor's."""
    store, (record,) = render("tabletop.yaml", {"render.denoise": False, "camera.depth_sensor": {"edge_band_px": 2}})
    clean = store.read_rgb(record)
    depth, sensed = store.read_depth(record), store.read_depth_sensor(record)
    camera = SceneSpec.from_json(store.path(record, "scene").read_text()).camera
    linear = srgb_to_linear(clean / 255.0).astype(np.float32)
    pictures = {"sensor_clean": clean}
    for name, values in EFFECTS.items():
        sensor = NONE.model_copy(update=values)
        image = linear_to_srgb8(apply_sensor(linear, sensor, camera, np.random.Generator(np.random.PCG64(1))))
        pictures[f"sensor_{name}"] = image if sensor.jpeg_quality is None else jpeg(image, sensor.jpeg_quality)
    pictures["depth_sensor"] = side_by_side([depth_colours(depth), depth_colours(np.where(sensed > 0, sensed, np.inf))])
    return pictures


def captioned(image: np.ndarray, *lines: str) -> np.ndarray:
    """A copy of ``image`` with ``lines`` written at its top left, white on a dark outline."""
    image = image.copy()
    for row, line in enumerate(lines):
        at = (5, 16 + 16 * row)
        cv2.putText(image, line, at, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, line, at, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def side_by_side(images: list[np.ndarray]) -> np.ndarray:
    """Images of one height in a row, 4 white pixels apart."""
    gap = np.full((images[0].shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([part for image in images for part in (gap, image)][1:], axis=1)


if __name__ == "__main__":
    main()
