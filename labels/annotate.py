"""Per-frame labels computed from the rendered passes and the scene that produced them: the
derived passes (distance, semantic) and the frame record (camera, objects, boxes, visibility).

Visibility without a re-render: each object's mesh is ray-cast *alone* (scenes/raycast.py)
along the same pixel-centre rays that Cycles uses for its data passes. The pixels it covers
alone are its unoccluded pixels, kept as its amodal mask; those it covers in the instance map
are its visible pixels. Rays cast past the image border (on a canvas three times the image size)
measure truncation. An object inside the image needs rays only where something nearer may hide
it (``inside_coverage``): elsewhere its instance mask already is its silhouette. With a lens
every ray and projection goes through ``scenes.camera`` (camera_rays, project_points).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sceneforge.floor.colour import clipped_fraction
from sceneforge.floor.frame import Passes
from sceneforge.labels.depth_sensor import depth_sensor_pass
from sceneforge.labels.keypoints import object_keypoints
from sceneforge.labels.motion import flow_passes
from sceneforge.labels.rle import encode_masks
from sceneforge.scenes.assets import asset_mesh, asset_model
from sceneforge.scenes.camera import camera_rays, label_rays, project_points, render_camera
from sceneforge.scenes.raycast import first_hit_depth
from sceneforge.scenes.spec import CameraSpec, ObjectSpec, SceneSpec
from sceneforge.scenes.transparency import see_through

if TYPE_CHECKING:
    from sceneforge.scenes.mesh import Mesh

# Corner i of a 3D box takes the max (1) or min (0) along x, y, z from bits 0, 1, 2 of i.
BOX_CORNER_BITS = np.array([[(i >> axis) & 1 for axis in range(3)] for i in range(8)])
# Metres above an object's lowest point within which a surface point measured by the depth pass
# (float32) counts as the ground or support it stands on: far above the depth's rounding error,
# far below any object's size.
SUPPORT_TOLERANCE = 1e-5


def stored_passes(spec: SceneSpec, passes: Passes) -> dict[str, np.ndarray]:
    """Every pass the store keeps for this frame: the rendered ones and those derived from them."""
    stored = {
        "rgb": passes.rgb,
        "depth": passes.depth,
        "distance": euclidean_distance(passes.depth, spec.camera),
        "normals": passes.normals,
        "instance": passes.instance,
        "semantic": semantic_map(spec, passes.instance),
    }
    if passes.albedo is not None:
        stored["albedo"] = passes.albedo
    clean = passes.rgb if passes.rgb_clean is None else passes.rgb_clean
    if passes.rgb_clean is not None:
        stored["rgb_clean"] = clean
    if spec.camera.depth_sensor is not None:
        stored["depth_sensor"] = depth_sensor_pass(spec, passes.depth, passes.normals, clean, passes.instance)
    if spec.sequence is not None and spec.sequence.flow:
        stored.update(flow_passes(spec, passes.depth, passes.instance))
    if passes.depth_behind is not None:
        stored["depth_behind"], stored["instance_behind"] = passes.depth_behind, passes.instance_behind
    if spec.camera.stereo_baseline is not None:
        stored["disparity"] = disparity_map(passes.depth, spec.camera.K, spec.camera.stereo_baseline)
    return stored


def disparity_map(depth: np.ndarray, K: np.ndarray, baseline: float) -> np.ndarray:
    """Stereo disparity in pixels, ``fx * baseline / depth`` (0 where depth is inf: no hit)."""
    fx = float(np.asarray(K)[0, 0])
    with np.errstate(divide="ignore"):
        disparity = np.where(np.isfinite(depth) & (depth > 0), fx * baseline / depth, 0.0)
    return disparity.astype(np.float32)


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
                   "width": camera.width, "height": camera.height,
                   "lens": None if camera.lens is None else camera.lens.model_dump(mode="json"),
                   **({"name": camera.name} if camera.name else {}),
                   **({"stereo_baseline": camera.stereo_baseline} if camera.stereo_baseline is not None else {})},
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


def euclidean_distance(depth: np.ndarray, camera: CameraSpec) -> np.ndarray:
    """Distance from the camera centre, from planar depth (inf stays inf), along the ray each
    pixel's depth was measured on (``label_rays``: with a lens, its nearest source pixel's)."""
    return (depth * _ray_lengths(camera)).astype(np.float32)


_RAY_LENGTHS: dict[tuple, np.ndarray] = {}  # by the camera's intrinsics (``_ray_lengths``)


def _ray_lengths(camera: CameraSpec) -> np.ndarray:
    """H x W lengths of ``label_rays`` (z = 1), kept for the next frames of the same intrinsics
    (the last few: a rig's cameras take turns)."""
    key = (camera.K, camera.width, camera.height, camera.lens)
    if key not in _RAY_LENGTHS:
        if len(_RAY_LENGTHS) >= 8:
            _RAY_LENGTHS.pop(next(iter(_RAY_LENGTHS)))
        lengths = np.linalg.norm(label_rays(camera), axis=-1)
        lengths.flags.writeable = False
        _RAY_LENGTHS[key] = lengths
    return _RAY_LENGTHS[key]


def object_records(spec: SceneSpec, passes: Passes) -> list[dict]:
    """One record per object: identity, poses, 2D and 3D boxes, visibility, truncation, the
    amodal mask and keypoints.

    ``bbox_xywh`` is ``[x_min, y_min, width, height]`` of the visible mask in whole pixels
    (COCO's convention: pixel ``x`` covers ``[x, x + 1)``), ``None`` when nothing is visible.
    ``amodal_mask`` is the COCO RLE of the in-image pixels whose ray hits the object's mesh,
    whatever is in front; ``unoccluded_pixels`` is its area.
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
        amodal, truncation = inside_coverage(obj, camera, camera_from_object, passes), 0.0
        if amodal is None:  # past the border, or the instance pass cannot tell: the whole silhouette cast
            amodal, truncation = _coverage(obj, camera, camera_from_object)
        unoccluded = int(amodal.sum())
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
            "amodal_mask": encode_masks(amodal[None])[0],
            "depth_range": None if visible == 0 else [float(near[i]), float(far[i])],
            **_box3d(obj, camera, camera_from_object),
            "keypoints": object_keypoints(obj, camera, camera_from_object, depth),
        })
    return records


def inside_coverage(obj: ObjectSpec, camera: CameraSpec, camera_from_object: np.ndarray,
                    passes: Passes) -> np.ndarray | None:
    """The amodal mask of an object that lies wholly inside the image, with rays cast only where
    something may hide it; None when that cannot be decided so (``_coverage`` then casts the rays).

    A pixel of the object's silhouette that it does not show in the instance pass shows something
    nearer than the object's farthest point; so the silhouette is the object's instance mask plus
    those of the pixels within its projected box (a pixel wider) showing something else no
    farther than its box (the depth pass) whose rays hit its mesh. That holds for a pinhole camera
    without depth of field or motion blur (the instance pass then samples each pixel's centre ray,
    like the ray cast), an object whose surfaces are opaque (no cut-outs, blending or
    transmission, which the instance pass looks through) and whose box lies between the clipping
    planes and projects inside the image (no silhouette past its border: truncation 0).
    """
    if camera.lens is not None or camera.fstop is not None or camera.exposure_s > 0 or not _opaque(obj):
        return None
    mesh = asset_mesh(obj.asset)
    corners_object = _box_corners(*mesh.bounds)
    corners = _apply(camera_from_object, corners_object)
    far = corners[:, 2].max()
    if corners[:, 2].min() <= camera.clip_start or far >= camera.clip_end:
        return None
    uv = project_points(camera, corners)
    u0, v0 = np.floor(uv.min(axis=0)).astype(int) - 1
    u1, v1 = np.ceil(uv.max(axis=0)).astype(int) + 1
    if u0 < 0 or v0 < 0 or u1 > camera.width - 1 or v1 > camera.height - 1:
        return None
    amodal = passes.instance == obj.instance_id
    region = (slice(v0, v1 + 1), slice(u0, u1 + 1))
    vs, us = np.nonzero(~amodal[region] & (passes.depth[region] <= far))
    us, vs = us + u0, vs + v0
    rays = camera_rays(camera, us, vs)
    world_from_camera = np.asarray(camera.world_from_camera)
    base = _apply(world_from_camera @ camera_from_object, corners_object)[:, 2].min()
    if len(us) and world_from_camera[2, 3] > base:
        # Seen from above the object's lowest point, no point at or below that height (the ground or
        # the support it stands on) lies between the camera and the object.
        above = _apply(world_from_camera, rays * passes.depth[vs, us, None])[:, 2] > base + SUPPORT_TOLERANCE
        us, vs, rays = us[above], vs[above], rays[above]
    if len(us):
        amodal[vs, us] = np.isfinite(first_hit_depth(mesh, camera_from_object, rays))
    return amodal


def _opaque(obj: ObjectSpec) -> bool:
    """Whether every material of the object is drawn opaque (no cut-out, blending or transmission)."""
    if obj.material.opacity_texture is not None:
        return False
    return all(seen.alpha_mode == "OPAQUE" and seen.transmission == 0
               for seen in (see_through(material, obj.material) for material in asset_model(obj.asset).materials))


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
            "corners_image": _project(_apply(camera_from_object, corners), camera),
        },
        "center_image": _project(_apply(camera_from_object, centre)[None], camera)[0],
    }


def _apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (..., 3) mapped by a 4x4 rigid transform."""
    return points @ transform[:3, :3].T + transform[:3, 3]


def _project(points_camera: np.ndarray, camera: CameraSpec) -> list[list[float] | None]:
    """Pixel coordinates (u, v) of camera-frame points (N x 3), None for those with no projection
    (behind the camera, or beyond the lens's range: ``project_points``)."""
    return [None if np.isnan(uv).any() else [float(uv[0]), float(uv[1])] for uv in project_points(camera, points_camera)]


def _box_corners(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The 8 corners of an axis-aligned box, in BOX_CORNER_BITS order."""
    return np.where(BOX_CORNER_BITS, high, low)


def _coverage(obj: ObjectSpec, camera: CameraSpec, camera_from_object: np.ndarray) -> tuple[np.ndarray, float]:
    """The amodal mask (H x W bool: the image pixels whose ray hits the object's mesh alone), and
    the fraction of the unoccluded silhouette outside the image.

    With a lens the silhouette is cast on the canvas of its wide pinhole render (``render_camera``),
    where rays past the image stay defined: truncation is the share of those silhouette samples
    whose points project (``project_points``) outside the distorted image; the amodal mask is cast
    along the image's own ``camera_rays``.
    """
    mesh = asset_mesh(obj.asset)
    amodal = np.zeros((camera.height, camera.width), bool)
    us, vs, points = canvas_silhouette(mesh, render_camera(camera), camera_from_object)
    if not len(us):
        return amodal, 1.0
    if camera.lens is None:
        inside = (us >= 0) & (us < camera.width) & (vs >= 0) & (vs < camera.height)
        amodal[vs[inside], us[inside]] = True
        return amodal, 1.0 - int(inside.sum()) / len(us)
    uv = project_points(camera, points)
    inside = ((uv[:, 0] >= -0.5) & (uv[:, 0] < camera.width - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < camera.height - 0.5))
    if not inside.any():
        return amodal, 1.0
    truncation = 1.0 - inside.sum() / len(uv)
    # The image pixels around the silhouette's samples (2 px beyond: samples may be coarser than pixels).
    low = np.maximum(np.floor(uv[inside].min(axis=0)).astype(int) - 2, 0)
    high = np.minimum(np.ceil(uv[inside].max(axis=0)).astype(int) + 2, (camera.width - 1, camera.height - 1))
    us, vs = (grid.ravel() for grid in np.meshgrid(np.arange(low[0], high[0] + 1), np.arange(low[1], high[1] + 1)))
    amodal[vs, us] = np.isfinite(first_hit_depth(mesh, camera_from_object, camera_rays(camera, us, vs)))
    return amodal, float(truncation)

def canvas_silhouette(mesh: Mesh, pinhole: CameraSpec,
                      camera_from_object: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The silhouette of ``mesh`` (posed by ``camera_from_object``) alone, on a pinhole camera's
    canvas three times its image's size: the pixel centres (us, vs; integers, negative or beyond
    the image off it) whose ray hits the mesh, and the hit points (N x 3, camera frame)."""
    us, vs = _canvas(pinhole, _apply(camera_from_object, _box_corners(*mesh.bounds)))
    rays = camera_rays(pinhole, us, vs)
    depth = first_hit_depth(mesh, camera_from_object, rays)
    hit = np.isfinite(depth)
    return us[hit], vs[hit], rays[hit] * depth[hit, None]


def _canvas(pinhole: CameraSpec, corners_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres (us, vs) of a pinhole camera's canvas three times its image's size, bounded
    by the projection of a box's corners (N x 3, camera frame) when all are in front."""
    width, height = pinhole.width, pinhole.height
    canvas = (-width, 2 * width - 1, -height, 2 * height - 1)
    if np.all(corners_camera[:, 2] <= 0):  # wholly behind the camera: no forward ray can meet it
        return np.zeros(0), np.zeros(0)
    if np.all(corners_camera[:, 2] > 1e-6):
        uv = project_points(pinhole, corners_camera).T
        u0, u1 = int(np.ceil(uv[0].min())), int(np.floor(uv[0].max()))
        v0, v1 = int(np.ceil(uv[1].min())), int(np.floor(uv[1].max()))
        canvas = (max(u0, canvas[0]), min(u1, canvas[1]), max(v0, canvas[2]), min(v1, canvas[3]))
    if canvas[0] > canvas[1] or canvas[2] > canvas[3]:
        return np.zeros(0), np.zeros(0)
    us, vs = np.meshgrid(np.arange(canvas[0], canvas[1] + 1), np.arange(canvas[2], canvas[3] + 1))
    return us.ravel(), vs.ravel()


def _rows(m: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in m]
