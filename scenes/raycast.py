"""Ray casting against the scene's meshes (Embree, ``Mesh.first_hits``), shared by sampling and labels.

Rays go through pixel centres (OpenCV convention, the same rays Cycles uses for its data passes),
through the camera's lens (``scenes.camera.camera_rays``), and are scaled so that their
camera-frame z is 1: the ray parameter of a hit is its planar depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .assets import asset_mesh
from .camera import camera_rays
from .spec import CameraSpec, ObjectSpec, PropSpec

if TYPE_CHECKING:
    from .mesh import Mesh


def first_hit_depth(mesh: Mesh, camera_from_object: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """Planar depth of each camera-frame ray's first hit on ``mesh`` (posed by camera_from_object); inf = miss."""
    # Rays in the object's frame, so the mesh's cached acceleration structure is reused.
    object_from_camera = np.linalg.inv(camera_from_object)
    directions = rays @ object_from_camera[:3, :3].T
    origins = np.broadcast_to(object_from_camera[:3, 3], directions.shape)
    depth = np.full(len(rays), np.inf)
    if len(rays):
        locations, index_ray, _ = mesh.first_hits(origins, directions)
        # Rigid motions keep lengths, and the rays have camera z = 1.
        depth[index_ray] = np.linalg.norm(locations - origins[index_ray], axis=1) / np.linalg.norm(directions[index_ray], axis=1)
    return depth


def visible_fractions(camera: CameraSpec, objects: list[ObjectSpec], occluders: Sequence[PropSpec] = (),
                      long_side: int = 64) -> list[float | None]:
    """Each object's visible / unoccluded share of the image, estimated on a grid of at most
    ``long_side`` rays across (objects and ``occluders`` hide objects; the ground is ignored).
    None: not in view."""
    scale = min(1.0, long_side / max(camera.width, camera.height))
    columns, rows = max(1, round(camera.width * scale)), max(1, round(camera.height * scale))
    # Grid cells' centres, in full-resolution pixel coordinates.
    us, vs = np.meshgrid((np.arange(columns) + 0.5) * camera.width / columns - 0.5,
                         (np.arange(rows) + 0.5) * camera.height / rows - 0.5)
    rays = camera_rays(camera, us, vs)
    camera_from_world = np.linalg.inv(np.asarray(camera.world_from_camera))
    bodies = [*objects, *occluders]
    depths = np.array([
        first_hit_depth(asset_mesh(body.asset), camera_from_world @ np.asarray(body.world_from_object), rays)
        for body in bodies
    ]).reshape(len(bodies), len(rays))
    unoccluded = np.isfinite(depths[:len(objects)]).sum(axis=1)
    hit = np.isfinite(depths).any(axis=0)
    visible = np.bincount(depths.argmin(axis=0)[hit], minlength=len(bodies))[:len(objects)]
    return [None if total == 0 else float(seen / total) for seen, total in zip(visible, unoccluded)]
