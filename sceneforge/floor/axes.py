"""Axis conventions, written once.

The world is right-handed, +Z up, in metres. Every posed entity of a SceneSpec (camera, lights)
uses the OpenCV camera convention for its local frame: +X right, +Y down, +Z forward (a camera
looks, a light shines, along its +Z). Renderers and formats that use the OpenGL convention
(+X right, +Y up, +Z backward: Blender, USD) convert with the matrix below.
"""

from __future__ import annotations

import numpy as np

# world_from_x (OpenCV axes) @ OPENGL_FROM_OPENCV = world_from_x (OpenGL axes); it is its own inverse.
OPENGL_FROM_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
OPENGL_FROM_OPENCV.flags.writeable = False


def opengl_pose(world_from_opencv: np.ndarray) -> np.ndarray:
    """The same pose with OpenGL local axes (looks/shines along -Z, +Y up)."""
    return np.asarray(world_from_opencv, dtype=np.float64) @ OPENGL_FROM_OPENCV
