"""The depth sensor model: what a structured-light or stereo depth camera would measure of a frame,
derived from its exact depth (numpy only; docs/cameras.md, "Depth sensor").

In this order: holes (value ``HOLE``) where the sensor gets no measurement (depth
discontinuities, dark surfaces, grazing incidence, metallic objects), Gaussian noise of standard
deviation ``noise * z^2`` on the rest, quantisation to whole disparity steps (disparity
``d = fx * baseline / z`` rounded to multiples of ``disparity_step_px``), and holes outside
``[min_m, max_m]``. Every draw comes from the frame's ``depth_sensor.seed``.
"""

from __future__ import annotations

import cv2
import numpy as np

from sceneforge.floor.colour import srgb_to_linear
from sceneforge.scenes.camera import camera_rays
from sceneforge.scenes.spec import CameraSpec, DepthSensorSpec, SceneSpec

HOLE = 0.0  # the depth_sensor value of a pixel without a measurement (as depth cameras write it)
_LUMINANCE = np.array([0.2126, 0.7152, 0.0722])  # Rec. 709 / sRGB primaries


def depth_sensor_pass(spec: SceneSpec, depth: np.ndarray, normals: np.ndarray, clean_rgb: np.ndarray,
                      instance: np.ndarray) -> np.ndarray:
    """The ``depth_sensor`` pass of a frame (H x W float32 metres, ``HOLE`` = no measurement) from
    its exact planar depth, camera-frame normals, clean 8-bit sRGB image and instance map."""
    camera, sensor = spec.camera, spec.camera.depth_sensor
    specular = np.zeros(depth.shape, bool)
    if sensor.specular_metallic is not None:
        shiny = [o.instance_id for o in spec.objects
                 if o.material.metallic is not None and o.material.metallic >= sensor.specular_metallic]
        specular = np.isin(instance, shiny)
    luminance = srgb_to_linear(clean_rgb / 255.0) @ _LUMINANCE
    holes = hole_mask(depth, camera, sensor, normals=normals, luminance=luminance, specular=specular)
    return measured_depth(depth, np.asarray(camera.K), sensor, holes, np.random.Generator(np.random.PCG64(sensor.seed)))


def hole_mask(depth: np.ndarray, camera: CameraSpec, sensor: DepthSensorSpec, *, normals: np.ndarray | None = None,
              luminance: np.ndarray | None = None, specular: np.ndarray | None = None) -> np.ndarray:
    """Where the sensor measures nothing (bool H x W): no hit; within ``edge_band_px`` pixels of
    a discontinuity, 4-neighbours whose disparities ``fx * baseline_m / depth`` differ by more
    than ``edge_threshold_px`` (the pixels on both sides of the jump are at distance 1); linear ``luminance`` below ``dark_threshold``; the angle
    between the view ray and the ``normals`` above ``grazing_deg``; ``specular`` pixels."""
    holes = ~np.isfinite(depth)
    if sensor.edge_band_px > 0:
        disparity = float(camera.K[0][0]) * sensor.baseline_m / depth  # 0 where nothing is hit
        holes |= _near_jumps(disparity, sensor.edge_threshold_px, sensor.edge_band_px)
    if luminance is not None and sensor.dark_threshold > 0:
        holes |= luminance < sensor.dark_threshold
    if normals is not None and sensor.grazing_deg is not None:
        us, vs = np.meshgrid(np.arange(camera.width), np.arange(camera.height))
        rays = camera_rays(camera, us, vs).reshape(*us.shape, 3)
        facing = -np.einsum("hwc,hwc->hw", normals.astype(np.float64), rays) / np.linalg.norm(rays, axis=-1)
        holes |= facing < np.cos(np.radians(sensor.grazing_deg))
    if specular is not None:
        holes |= specular
    return holes


def _near_jumps(disparity: np.ndarray, threshold: float, band: int) -> np.ndarray:
    """Pixels within ``band`` pixels (Chebyshev) of a 4-neighbour pair whose disparities differ by
    more than ``threshold``.

    Disparity, not depth: on a plane disparity is affine in the pixel coordinates, changing by at
    most ``baseline / (the plane's distance from the camera)`` pixels per pixel whatever the
    resolution, so slanted planes (a ground seen at a low angle) make no false edges, while an
    object's silhouette jumps by ``fx * baseline * (1/z_near - 1/z_far)``.
    """
    dx = np.abs(np.diff(disparity, axis=1)) > threshold
    dy = np.abs(np.diff(disparity, axis=0)) > threshold
    jump = np.zeros(disparity.shape, bool)
    jump[:, 1:] |= dx
    jump[:, :-1] |= dx
    jump[1:, :] |= dy
    jump[:-1, :] |= dy
    if band > 1:
        jump = cv2.dilate(jump.astype(np.uint8), np.ones((2 * band - 1, 2 * band - 1), np.uint8)) > 0
    return jump


def measured_depth(depth: np.ndarray, K: np.ndarray, sensor: DepthSensorSpec, holes: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Depth with noise (standard deviation ``noise * z^2``) and disparity quantisation
    (``z_q = f B / (step * round(f B / (z step)))`` with ``f = fx``, ``B = baseline_m``), ``HOLE`` at
    ``holes`` and outside ``[min_m, max_m]`` (float32 metres)."""
    z = np.where(holes, np.nan, depth.astype(np.float64))
    z = z + rng.standard_normal(z.shape) * sensor.noise * np.nan_to_num(z) ** 2
    if sensor.disparity_step_px is not None:
        focal_baseline = float(K[0][0]) * sensor.baseline_m
        with np.errstate(divide="ignore", invalid="ignore"):
            steps = np.rint(focal_baseline / (z * sensor.disparity_step_px))
            z = np.where(steps > 0, focal_baseline / (steps * sensor.disparity_step_px), np.nan)
    with np.errstate(invalid="ignore"):
        measured = np.isfinite(z) & (z >= sensor.min_m) & (z <= sensor.max_m)
    return np.where(measured, z, HOLE).astype(np.float32)
