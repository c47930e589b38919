"""Turn one Cycles multilayer EXR into the frame contract's arrays (numpy only, no bpy).

What each pixel means: ``sceneforge.floor.frame`` and docs/formats.md.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import OpenEXR

from sceneforge.floor.colour import linear_to_srgb8, srgb_to_linear
from sceneforge.floor.frame import Passes
from sceneforge.scenes.spec import ExposureSpec, SceneSpec

from .develop import develop

# Cycles writes this depth where a camera ray escapes to the background.
_NO_HIT_DEPTH = 1e9


def decode(spec: SceneSpec, path: Path) -> Passes:
    """The passes of ``spec``'s frame from the EXR that rendering it wrote (with its backdrop, if any)."""
    camera = spec.camera
    backdrop = None if spec.background_image is None else load_backdrop(spec.background_image, camera.width, camera.height)
    return read_multilayer_exr(path, np.asarray(camera.world_from_camera), backdrop, camera.exposure)


def read_multilayer_exr(path: Path, world_from_camera: np.ndarray, backdrop: np.ndarray | None = None,
                        exposure: ExposureSpec = ExposureSpec()) -> Passes:
    """Decode a Cycles multilayer EXR (Combined; Depth, Normal, IndexOB and albedo when rendered).

    ``backdrop`` (linear RGB, H x W x 3) goes behind a render with a transparent film; the colour
    image is developed with ``exposure`` (render/develop.py).
    """
    channels = OpenEXR.File(str(path), separate_channels=True).channels()
    by_pass = {name.split(".", 1)[1]: data.pixels for name, data in channels.items() if "." in name}
    rgb = np.stack([by_pass[f"Combined.{c}"] for c in "RGB"], axis=-1)
    if backdrop is not None:  # Cycles writes premultiplied alpha
        rgb = rgb + (1.0 - by_pass["Combined.A"])[..., None] * backdrop
    normals = instance = albedo = None
    depth = by_pass.get("Depth.Z")
    if depth is not None:
        depth = np.where(depth >= _NO_HIT_DEPTH, np.inf, depth).astype(np.float32)
    if "Normal.X" in by_pass:
        world_normals = np.stack([by_pass[f"Normal.{c}"] for c in "XYZ"], axis=-1)
        normals = world_to_camera_normals(world_normals, world_from_camera)
    if "IndexOB.X" in by_pass:
        instance = np.rint(by_pass["IndexOB.X"]).astype(np.uint16)
    if "albedo.R" in by_pass:
        albedo = linear_to_srgb8(np.stack([by_pass[f"albedo.{c}"] for c in "RGB"], axis=-1))
    developed, ev = develop(rgb, exposure)
    return Passes(rgb=developed, depth=depth, normals=normals, instance=instance, albedo=albedo, exposure_ev=ev)


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
