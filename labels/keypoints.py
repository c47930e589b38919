"""Keypoint labels: each object's keypoints projected into the frame, with COCO's visibility flags.

A keypoint is ``[u, v, visibility]``: ``(u, v)`` its pixel position (OpenCV pixel centres at
integers, like ``K``), visibility 0 when it is behind the camera or outside the image
(``-0.5 <= u < W - 0.5``, the same for ``v``), 1 when something nearer hides it, 2 when visible.
Hidden or not is a depth test against the depth pass at the keypoint's pixel: the keypoint is
visible when its depth ``Z`` is at most the pixel's depth plus ``DEPTH_SLACK_PIXELS`` pixel
footprints, ``Z * DEPTH_SLACK_PIXELS / min(fx, fy)``. The slack keeps a keypoint on the object's
own surface visible although the pixel's centre ray meets that surface up to half a pixel beside
it, where a face seen at a slant may be nearer (up to about 70 degrees from head-on); an occluder
must be nearer than that to hide a keypoint. Behind the camera, ``(u, v)`` is ``(0, 0)``.
"""

from __future__ import annotations

import numpy as np

from sceneforge.scenes.camera import project_points
from sceneforge.scenes.spec import CameraSpec, ObjectSpec

DEPTH_SLACK_PIXELS = 2.0
OUTSIDE, OCCLUDED, VISIBLE = 0, 1, 2  # COCO's visibility flags


def object_keypoints(obj: ObjectSpec, camera: CameraSpec, camera_from_object: np.ndarray,
                     depth: np.ndarray) -> list[list[float]]:
    """``[u, v, visibility]`` of each of the object's keypoints, in its category's order."""
    if not obj.keypoints:
        return []
    points = np.array(list(obj.keypoints.values()), dtype=np.float64)
    points_camera = points @ camera_from_object[:3, :3].T + camera_from_object[:3, 3]
    z = points_camera[:, 2]
    in_front = z > 1e-9
    uv = np.zeros((len(points), 2))
    uv[in_front] = project_points(camera, points_camera[in_front])
    projected = in_front & np.isfinite(uv).all(axis=1)  # a lens's map ends before 90 degrees (NaN)
    uv[~projected] = 0.0
    inside = projected & np.all((uv >= -0.5) & (uv < [camera.width - 0.5, camera.height - 0.5]), axis=1)
    flags = np.full(len(points), OUTSIDE)
    pixel = np.floor(uv[inside] + 0.5).astype(np.intp)
    seen = depth[pixel[:, 1], pixel[:, 0]]
    K = np.asarray(camera.K)
    slack = z[inside] * DEPTH_SLACK_PIXELS / min(K[0, 0], K[1, 1])
    flags[inside] = np.where(z[inside] <= seen + slack, VISIBLE, OCCLUDED)
    return [[float(u), float(v), int(flag)] for (u, v), flag in zip(uv, flags)]
