"""Per-frame labels computed from the rendered passes and the scene that produced them: the
derived passes (distance, semantic) and the frame record (camera, objects, boxes, visibility).

Visibility without a re-render: each object's mesh is ray-cast *alone* (scenes/raycast.py)
along the same pixel-centre rays that Cycles uses for its data passes. The pixels it covers
alone are its unoccluded pixels; those it covers in the instance map are its visible pixels.
Rays cast past the image border (on a canvas three times the image size) measure truncation.
"""

from __future__ import annotations

import numpy as np

from sceneforge.floor.colour import clipped_fraction
from sceneforge.floor.frame import Passes
from sceneforge.labels.motion import flow_passes
from sceneforge.scenes.assets import asset_mesh
from sceneforge.scenes.raycast import first_hit_depth, pixel_rays
from sceneforge.scenes.spec import CameraSpec, ObjectSpec, SceneSpec

# Corner i of a 3D box takes the max (1) or min (0) along x, y, z from bits 0, 1, 2 of i.
BOX_CORNER_BITS = np.array([[(i >> axis) & 1 for axis in range(3)] for i in range(8)])


def stored_passes(spec: SceneSpec, passes: Passes) -> dict[str, np.ndarray]:
    """Every pass the store keeps for this frame: the rendered ones and those derived from them."""
    stored = {
        "rgb": passes.rgb,
        "depth": passes.depth,
        "distance": euclidean_distance(passes.depth, spec.camera.K),
        "normals": passes.normals,
        "instance": passes.instance,
        "semantic": semantic_map(spec, passes.instance),
    }
    if passes.albedo is not None:
        stored["albedo"] = passes.albedo
    if spec.sequence is not None and spec.sequence.flow:
        stored.update(flow_passes(spec, passes.depth, passes.instance))
    return stored


def frame_record(spec: SceneSpec, passes: Passes, files: dict[str, str], checks: dict[str, dict],
                 render_seconds: float) -> dict:
    """The frame's line of frames.jsonl (docs/formats.md): seed, files and their checks, camera
    and object records."""
    camera, sequence = spec.camera, spec.sequence
    record = {
        "index": spec.index,
        "seed": spec.seed,
        "files": files,
        "checks": checks,
        "camera": {"K": camera.K, "world_from_camera": camera.world_from_camera,
                   "width": camera.width, "height": camera.height},
        "exposure_ev": round(passes.exposure_ev, 4),
        "view_transform": camera.exposure.view_transform,
        "clipped_fraction": round(clipped_fraction(passes.rgb), 6),
        "objects": object_records(spec, passes),
        "render_seconds": round(render_seconds, 4),
    }
    if sequence is not None:
        record["sequence"] = {"scene_index": spec.scene_index, "frame": sequence.frame, "frames": sequence.frames,
                              "fps": sequence.fps, "time_s": sequence.time_s}
    return record


def semantic_map(spec: SceneSpec, instance: np.ndarray) -> np.ndarray:
    """uint16 category ids: each instance pixel mapped to its object's category (0 stays 0)."""
    lookup = np.zeros(max((o.instance_id for o in spec.objects), default=0) + 1, dtype=np.uint16)
    for obj in spec.objects:
        lookup[obj.instance_id] = obj.category_id
    return lookup[instance]


def euclidean_distance(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Distance from the camera centre along each pixel's ray, from planar depth (inf stays inf)."""
    height, width = depth.shape
    us, vs = np.meshgrid(np.arange(width), np.arange(height))
    return (depth * np.linalg.norm(pixel_rays(np.asarray(K), us, vs), axis=-1)).astype(np.float32)


def object_records(spec: SceneSpec, passes: Passes) -> list[dict]:
    """One record per object: identity, poses, 2D and 3D boxes, visibility and truncation.

    ``bbox_xywh`` is ``[x_min, y_min, width, height]`` of the visible mask in whole pixels
    (COCO's convention: pixel ``x`` covers ``[x, x + 1)``), ``None`` when nothing is visible.
    """
    instance, depth = passes.instance, passes.depth
    size = max((o.instance_id for o in spec.objects), default=0) + 1
    ys, xs = np.nonzero(instance)
    ids = instance[ys, xs].astype(np.intp)
    keep = ids < size  # ids the spec does not know are ignored rather than crashing the writer
    ys, xs, ids = ys[keep], xs[keep], ids[keep]
    counts = np.bincount(ids, minlength=size)
    lo_x, lo_y = np.full(size, instance.shape[1]), np.full(size, instance.shape[0])
    hi_x, hi_y = np.full(size, -1), np.full(size, -1)
    near, far = np.full(size, np.inf), np.full(size, -np.inf)
    for low, high, values in ((lo_x, hi_x, xs), (lo_y, hi_y, ys), (near, far, depth[ys, xs])):
        np.minimum.at(low, ids, values)
        np.maximum.at(high, ids, values)
    camera = spec.camera
    camera_from_world = np.linalg.inv(np.asarray(camera.world_from_camera))
    records = []
    for obj in spec.objects:
        i = obj.instance_id
        visible = int(counts[i])
        camera_from_object = camera_from_world @ np.asarray(obj.world_from_object)
        unoccluded, truncation = _coverage(obj, camera, camera_from_object)
        records.append({
            "instance_id": i,
            "category_id": obj.category_id,
            "category": obj.category,
            "asset": obj.asset.hash,
            "world_from_object": obj.world_from_object,
            "camera_from_object": _rows(camera_from_object),
            "bbox_xywh": None if visible == 0 else [
                int(lo_x[i]), int(lo_y[i]), int(hi_x[i] - lo_x[i] + 1), int(hi_y[i] - lo_y[i] + 1)
            ],
            "visible_pixels": visible,
            "unoccluded_pixels": unoccluded,
            "visibility": None if unoccluded == 0 else min(1.0, visible / unoccluded),
            "truncation": truncation,
            "depth_range": None if visible == 0 else [float(near[i]), float(far[i])],
            **_box3d(obj, camera, camera_from_object),
        })
    return records


def _box3d(obj: ObjectSpec, camera: CameraSpec, camera_from_object: np.ndarray) -> dict:
    """The object's box (its mesh's axis-aligned bounds in the object frame), in 3D and projected."""
    low, high = asset_mesh(obj.asset).bounds
    corners = _box_corners(low, high)
    centre = (low + high) / 2
    return {
        "bbox3d": {
            "size": [float(v) for v in high - low],
            "center_object": [float(v) for v in centre],
            "corners_world": _rows(_apply(np.asarray(obj.world_from_object), corners)),
            "corners_image": [_project(p, camera) for p in _apply(camera_from_object, corners)],
        },
        "center_image": _project(_apply(camera_from_object, centre), camera),
    }


def _apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (..., 3) mapped by a 4x4 rigid transform."""
    return points @ transform[:3, :3].T + transform[:3, 3]


def _project(point_camera: np.ndarray, camera: CameraSpec) -> list[float] | None:
    """Pixel coordinates (u, v) of a camera-frame point, None behind the camera."""
    if point_camera[2] <= 1e-9:
        return None
    uvw = np.asarray(camera.K) @ point_camera
    return [float(uvw[0] / uvw[2]), float(uvw[1] / uvw[2])]


def _box_corners(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The 8 corners of an axis-aligned box, in BOX_CORNER_BITS order."""
    return np.where(BOX_CORNER_BITS, high, low)


def _coverage(obj: ObjectSpec, camera: CameraSpec, camera_from_object: np.ndarray) -> tuple[int, float]:
    """Unoccluded pixels in the image, and the fraction of the unoccluded silhouette outside it."""
    mesh = asset_mesh(obj.asset)
    width, height = camera.width, camera.height
    corners_camera = _apply(camera_from_object, _box_corners(*mesh.bounds)).T
    canvas = (-width, 2 * width - 1, -height, 2 * height - 1)
    if np.all(corners_camera[2] > 1e-6):
        uv = (np.asarray(camera.K) @ corners_camera)[:2] / corners_camera[2]
        u0, u1 = int(np.ceil(uv[0].min())), int(np.floor(uv[0].max()))
        v0, v1 = int(np.ceil(uv[1].min())), int(np.floor(uv[1].max()))
        canvas = (max(u0, canvas[0]), min(u1, canvas[1]), max(v0, canvas[2]), min(v1, canvas[3]))
    if canvas[0] > canvas[1] or canvas[2] > canvas[3]:
        return 0, 1.0
    us, vs = np.meshgrid(np.arange(canvas[0], canvas[1] + 1), np.arange(canvas[2], canvas[3] + 1))
    us, vs = us.ravel(), vs.ravel()
    hit = np.isfinite(first_hit_depth(mesh, camera_from_object, pixel_rays(np.asarray(camera.K), us, vs)))
    inside = (us >= 0) & (us < width) & (vs >= 0) & (vs < height)
    total, in_image = int(hit.sum()), int((hit & inside).sum())
    return in_image, (1.0 - in_image / total) if total else 1.0


def _rows(m: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in m]
