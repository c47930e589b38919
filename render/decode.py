"""Turn one Cycles multilayer EXR into the frame contract's arrays (numpy only, no bpy).

What each pixel means: ``sceneforge.floor.frame`` and docs/formats.md. A camera with a lens is
rendered as the wide pinhole view of ``scenes.camera.render_camera`` and every pass is warped here
to the distorted image (``warp_channels``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import OpenEXR

from sceneforge.floor.colour import linear_to_srgb8, srgb_to_linear
from sceneforge.floor.frame import Passes
from sceneforge.scenes.camera import render_camera, source_pixels, warp_maps
from sceneforge.scenes.spec import CameraSpec, SceneSpec

from .develop import choose_ev, expose, view_transform
from .sensor import sensed_image

# Cycles writes this depth where a camera ray escapes to the background.
_NO_HIT_DEPTH = 1e9
# The view layer of the optional behind pass (render/blender_scene.py); the main layer is the other one.
BEHIND_LAYER = "behind"


def decode(spec: SceneSpec, path: Path) -> Passes:
    """The passes of ``spec``'s frame from the EXR that rendering it wrote (with its backdrop, if any)."""
    camera = spec.camera
    backdrop = None if spec.background_image is None else load_backdrop(spec.background_image, camera.width, camera.height)
    return read_multilayer_exr(path, camera, backdrop)


def read_multilayer_exr(path: Path, camera: CameraSpec, backdrop: np.ndarray | None = None) -> Passes:
    """Decode a Cycles multilayer EXR (Combined; Depth, Normal, IndexOB and albedo when rendered;
    the behind layer's Depth and IndexOB when it has one) of a frame seen by ``camera`` (its pose turns the normals, its exposure and sensor model make
    the image: render/develop.py, render/sensor.py).

    ``backdrop`` (linear RGB, H x W x 3) goes behind a render with a transparent film.
    With a lens the EXR is ``render_camera(camera)``'s view; every pass is warped to the camera's
    image first (the backdrop stays an undistorted picture behind the warped render).
    """
    channels = OpenEXR.File(str(path), separate_channels=True).channels()
    layers: dict[str, dict[str, np.ndarray]] = {}
    for name, data in channels.items():
        if "." in name:
            layer, channel = name.split(".", 1)
            layers.setdefault(layer, {})[channel] = data.pixels
    behind = layers.pop(BEHIND_LAYER, None)
    (by_pass,) = layers.values()
    if camera.lens is not None:
        by_pass = warp_channels(by_pass, camera)
        behind = None if behind is None else warp_channels(behind, camera)
    rgb = np.stack([by_pass[f"Combined.{c}"] for c in "RGB"], axis=-1)
    if backdrop is not None:  # Cycles writes premultiplied alpha
        rgb = rgb + (1.0 - by_pass["Combined.A"])[..., None] * backdrop
    normals = instance = albedo = None
    depth = _depth(by_pass.get("Depth.Z"))
    if "Normal.X" in by_pass:
        world_normals = np.stack([by_pass[f"Normal.{c}"] for c in "XYZ"], axis=-1)
        normals = world_to_camera_normals(world_normals, np.asarray(camera.world_from_camera))
    if "IndexOB.X" in by_pass:
        instance = _ids(by_pass["IndexOB.X"])
    if "albedo.R" in by_pass:
        albedo = linear_to_srgb8(np.stack([by_pass[f"albedo.{c}"] for c in "RGB"], axis=-1))
    # The one place the linear image becomes the stored 8-bit one (the clean and the sensed image):
    # exposed at the EV metered on the clean render, the sensor model between exposure and tone.
    exposure = camera.exposure
    ev = choose_ev(rgb, exposure)
    image, clean = sensed_image(expose(rgb, ev), camera, lambda linear: view_transform(linear, exposure.view_transform))
    return Passes(rgb=image, depth=depth, normals=normals, instance=instance, albedo=albedo, rgb_clean=clean,
                  exposure_ev=ev, depth_behind=None if behind is None else _depth(behind["Depth.Z"]),
                  instance_behind=None if behind is None else _ids(behind["IndexOB.X"]))


def _depth(channel: np.ndarray | None) -> np.ndarray | None:
    """Cycles' Z channel as planar depth, inf where the ray hit nothing."""
    return None if channel is None else np.where(channel >= _NO_HIT_DEPTH, np.inf, channel).astype(np.float32)


def _ids(channel: np.ndarray) -> np.ndarray:
    """Cycles' object index channel as uint16 ids."""
    return np.rint(channel).astype(np.uint16)


# Colour channels, resampled; every other channel (depth, normals, object index) is a label.
_COLOUR_CHANNELS = ("Combined.", "albedo.")


def warp_channels(channels: dict[str, np.ndarray], camera: CameraSpec) -> dict[str, np.ndarray]:
    """The render's channels (``render_camera(camera)``'s image) warped to ``camera``'s distorted image.

    Colour (linear radiance and albedo, before any 8-bit conversion) is resampled bilinearly: its
    weights are non-negative, so it cannot ring into negative or overshooting values around bright
    HDR highlights as cubic or Lanczos kernels do, and the render has at least one pixel per image
    pixel near the centre, already filtered by Cycles' own pixel filter. Label channels (depth,
    normals, object index) all take the value of the same nearest source pixel, so a pixel's id,
    depth, normal and (from that pixel's ray, ``scenes.camera.label_rays``) distance describe one
    surface point and ids are never blended.
    """
    wide = render_camera(camera)
    maps = warp_maps(camera).astype(np.float32)
    nearest = source_pixels(camera)
    columns, rows = nearest[..., 0], nearest[..., 1]
    # render_camera leaves a margin around every source: falling outside is impossible by construction.
    assert columns.min() >= 0 and rows.min() >= 0 and columns.max() < wide.width and rows.max() < wide.height
    warped = {}
    for name, data in channels.items():
        assert data.shape == (wide.height, wide.width), f"{name}: {data.shape} is not the render's size"
        if name.startswith(_COLOUR_CHANNELS):
            warped[name] = cv2.remap(data.astype(np.float32), maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE)
        else:
            warped[name] = data[rows, columns]
    return warped


def world_to_camera_normals(world_normals: np.ndarray, world_from_camera: np.ndarray) -> np.ndarray:
    """Rotate world-space normals into the OpenCV camera frame and renormalise them."""
    rotation = np.asarray(world_from_camera, dtype=np.float64)[:3, :3]
    cam = world_normals.astype(np.float64) @ rotation  # row vectors: n_cam = R^T n_world
    length = np.linalg.norm(cam, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = np.where(length > 1e-6, cam / length, 0.0)
    return unit.astype(np.float32)


@lru_cache(maxsize=4)
def load_backdrop(path: str, width: int, height: int) -> np.ndarray:
    """A backdrop image as linear RGB, stretched to width x height (read-only, cached)."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not a readable image")
    srgb = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)[..., ::-1] / 255.0
    linear = srgb_to_linear(srgb).astype(np.float32)
    linear.flags.writeable = False
    return linear
