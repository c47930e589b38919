"""The frame contract: the passes render produces and labels consume, and how each is stored.

What each pixel means is written once here and in docs/formats.md:

- ``rgb``: 8-bit sRGB display values of the linear render developed with the camera's exposure:
  scaled by ``2 ** ev`` (``exposure_ev``, chosen by auto-exposure when asked), then through the
  view transform (Standard: the sRGB curve clipped to [0, 1]; Filmic or AgX: Blender's views);
  with a sensor model (``camera.sensor``) the image that sensor saw (blur, vignetting, chromatic
  aberration, noise, JPEG).
- ``rgb_clean`` (with a sensor model): the same frame developed alike, without the sensor model.
- ``depth_sensor`` (with a depth sensor model): float32 metres, what a depth sensor measures:
  planar depth with noise and quantisation, ``0`` = a hole (no measurement).
- ``depth``: float32 planar Z in metres along the camera axis; ``inf`` where the ray hit nothing.
- ``distance``: float32 Euclidean distance from the camera centre in metres; ``inf`` = no hit.
- ``normals``: float32 unit surface normals in the OpenCV camera frame; (0, 0, 0) = no hit.
- ``instance``: uint16 instance id of the object seen (0 = background or unlabeled geometry).
- ``semantic``: uint16 category id of the object seen (0 = background).
- ``albedo`` (optional): 8-bit sRGB of the surface base colour, averaged over samples.
- ``depth_behind``, ``instance_behind`` (optional, ``render.behind``): ``depth`` and ``instance``
  of the same pixel-centre ray with every glass (transmission > 0) and blended (alpha mode BLEND)
  body left out: what those surfaces hide; equal to ``depth`` and ``instance`` elsewhere.
- ``rgb_refined`` (after ``refine apply``): the refiner's 8-bit sRGB image of the frame.
- ``flow_forward``, ``flow_backward`` (sequences): float32 (dx, dy) in pixels from each pixel
  centre to where the surface point seen there is in the next / previous frame (+x right, +y
  down); 0 where that frame does not exist.
- ``disparity`` (stereo views): float32 ``fx * B / depth`` in pixels (B: the pair's baseline in
  metres, fx of this view's K), >= 0; 0 where depth is inf. In the left view the surface point
  seen at (u, v) is at (u - d, v) in the right view; in the right view it is at (u + d, v) in the left.
- ``flow_valid`` (sequences): uint8 bits, 1 = the forward flow's point is seen in the next frame
  (in front of its camera, inside its image, not hidden), 2 = the same for backward flow.

Depth and instance come from one camera ray per pixel (Cycles writes data passes on the first
sample), so they are never blends of two surfaces; normals are averaged over all samples and
renormalised. Every label pass takes the first surface that is not wholly transparent: holes of
an alpha-masked (MASK) surface, and BLEND pixels of alpha 0, label what is seen through them;
glass (transmission) and partly transparent BLEND surfaces are surfaces like any other
(docs/formats.md, "Glass and cut-outs"). With a lens every label pass takes, per pixel, the wide
render's pixel nearest its source, and colour is resampled bilinearly (docs/formats.md, "Lenses").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Passes:
    """The arrays one render of a frame yields, all H x W (render -> labels)."""

    rgb: np.ndarray  # uint8, H x W x 3, sRGB
    depth: np.ndarray | None  # float32 metres, planar Z; inf = no hit
    normals: np.ndarray | None  # float32 H x W x 3, camera frame (OpenCV)
    instance: np.ndarray | None  # uint16
    albedo: np.ndarray | None = None  # uint8, H x W x 3, sRGB
    rgb_clean: np.ndarray | None = None  # uint8, H x W x 3, sRGB without the sensor model (when rgb has one)
    exposure_ev: float = 0.0  # the EV rgb was developed with (stops: linear values times 2 ** ev)
    depth_behind: np.ndarray | None = None  # float32 metres, planar Z without glass and blended bodies
    instance_behind: np.ndarray | None = None  # uint16, the same ray's ids


@dataclass(frozen=True)
class StoredPass:
    """How a pass is kept in the store: ``NAME/NNNNNN.SUFFIX`` holding ``channels`` of ``dtype``."""

    suffix: str
    dtype: str
    channels: str  # "RGB" for colour images, "Z" for one float channel, "XYZ" for vectors, "" for ids


# Every pass a store can hold, in the order of dataset.json's "passes".
STORED_PASSES: dict[str, StoredPass] = {
    "rgb": StoredPass(".png", "uint8", "RGB"),
    "depth": StoredPass(".exr", "float32", "Z"),
    "distance": StoredPass(".exr", "float32", "Z"),
    "normals": StoredPass(".exr", "float32", "XYZ"),
    "instance": StoredPass(".png", "uint16", ""),
    "semantic": StoredPass(".png", "uint16", ""),
    "albedo": StoredPass(".png", "uint8", "RGB"),
    "rgb_refined": StoredPass(".png", "uint8", "RGB"),
    "rgb_clean": StoredPass(".png", "uint8", "RGB"),
    "depth_sensor": StoredPass(".exr", "float32", "Z"),
    "flow_forward": StoredPass(".exr", "float32", "XY"),
    "flow_backward": StoredPass(".exr", "float32", "XY"),
    "flow_valid": StoredPass(".png", "uint8", ""),
    "disparity": StoredPass(".exr", "float32", "Z"),
    "depth_behind": StoredPass(".exr", "float32", "Z"),
    "instance_behind": StoredPass(".png", "uint16", ""),
}
# Written for every frame; albedo only when the recipe asks for it, the flow passes for sequences
# with flow, disparity for the views of a stereo pair, rgb_clean with a sensor model, depth_sensor
# with a depth sensor model, rgb_refined by the refiner, the behind passes with render.behind.
FRAME_PASSES = ("rgb", "depth", "distance", "normals", "instance", "semantic")
FLOW_PASSES = ("flow_forward", "flow_backward", "flow_valid")
STEREO_PASSES = ("disparity",)
BEHIND_PASSES = ("depth_behind", "instance_behind")
FORWARD_VALID, BACKWARD_VALID = 1, 2  # the bits of flow_valid


def instance_boundaries(instance: np.ndarray) -> np.ndarray:
    """True where a pixel's id differs from a 4-neighbour's (both sides of each boundary).

    ``instance``: (..., H, W) integer ids; the result has the same shape, dtype bool.
    """
    instance = np.asarray(instance)
    edge = np.zeros(instance.shape, bool)
    dx = instance[..., :, 1:] != instance[..., :, :-1]
    dy = instance[..., 1:, :] != instance[..., :-1, :]
    edge[..., :, 1:] |= dx
    edge[..., :, :-1] |= dx
    edge[..., 1:, :] |= dy
    edge[..., :-1, :] |= dy
    return edge
