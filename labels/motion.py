"""Motion labels of sequences: optical flow with its validity, and point tracks.

Flow is geometric, not Blender's vector pass: the surface point seen at a pixel centre (its
rendered depth along that pixel's ray) is carried by the rigid motion of the body it lies on to
the other frame's time and projected through that frame's camera. Whether it is seen there is
a ray cast from the other camera towards the moved point against the whole scene at that time
(scenes/raycast.py's Embree meshes): hidden when something lies in front of it. Background
pixels (no surface) move as directions at infinity, by the camera's rotation alone. Rays and
projections go through the camera's lens (``scenes.camera``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from sceneforge.floor.frame import BACKWARD_VALID, FORWARD_VALID
from sceneforge.scenes.assets import asset_mesh, ground_model
from sceneforge.scenes.camera import camera_rays, label_rays, project_points
from sceneforge.scenes.mesh import Mesh
from sceneforge.scenes.spec import MotionState, SceneSpec


HIDDEN_TOLERANCE = 1e-3  # a surface this much nearer (relative) than the moved point hides it
# Under motion blur each label pixel is sampled at some instant of the exposure, so its point lies
# off its surface by up to the motion in half the exposure: its own body hides it only when this
# much nearer (relative).
BLURRED_SELF_TOLERANCE = 0.03


@dataclass(frozen=True)
class _Posed:
    """The scene's meshes at one instant, as one mesh (face -> body) for ray casting."""

    mesh: Mesh | None
    body_of_face: np.ndarray

    def first_hits(self, origin: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ray parameter (in units of each direction's length; inf = miss) and body index (-1) of
        each ray's first hit."""
        along, body = np.full(len(directions), np.inf), np.full(len(directions), -1)
        if self.mesh is None or not len(directions):
            return along, body
        origins = np.broadcast_to(origin, directions.shape)
        locations, rays, faces = self.mesh.first_hits(origins, directions)
        along[rays] = np.linalg.norm(locations - origins[rays], axis=1) / np.linalg.norm(directions[rays], axis=1)
        body[rays] = self.body_of_face[faces]
        return along, body


def body_meshes(spec: SceneSpec) -> list[Mesh]:
    """The meshes of the spec's bodies: objects, then props, then the ground (if any)."""
    meshes = [asset_mesh(o.asset) for o in spec.objects] + [asset_mesh(p.asset) for p in spec.props]
    return meshes + ([_ground_mesh(spec.ground.size)] if spec.ground is not None else [])


@lru_cache(maxsize=4)
def _ground_mesh(size: float) -> Mesh:
    """The ground's mesh, one object per size (posed scenes are kept by their meshes' identity)."""
    return ground_model(size).mesh


def body_poses(spec: SceneSpec, state: MotionState | None = None) -> np.ndarray:
    """world_from_body (B, 4, 4) of the spec's bodies, at the spec's time or at ``state``'s."""
    objects = [o.world_from_object for o in spec.objects] if state is None else state.objects
    props = [p.world_from_object for p in spec.props] if state is None else state.props
    poses = [np.asarray(p, float) for p in (*objects, *props)]
    return np.array(poses + ([np.eye(4)] if spec.ground is not None else [])).reshape(-1, 4, 4)


_POSED: OrderedDict[tuple, tuple[list[Mesh], _Posed]] = OrderedDict()
_POSED_KEPT = 3  # a frame's scene serves its neighbours' backward and forward flow


def posed_scene(meshes: list[Mesh], poses: np.ndarray) -> _Posed:
    """The bodies at ``poses`` as one mesh for ray casting (the last few are kept, with their
    acceleration structures: a sequence's frames are labeled in order)."""
    key = (tuple(id(m) for m in meshes), np.ascontiguousarray(poses).tobytes())
    if key in _POSED:
        _POSED.move_to_end(key)
        return _POSED[key][1]
    posed = _posed_scene(meshes, poses)
    _POSED[key] = (meshes, posed)  # the meshes stay alive while their ids are in the key
    while len(_POSED) > _POSED_KEPT:
        _POSED.popitem(last=False)
    return posed


def _posed_scene(meshes: list[Mesh], poses: np.ndarray) -> _Posed:
    if not meshes:
        return _Posed(None, np.zeros(0, int))
    vertices = [m.vertices @ p[:3, :3].T + p[:3, 3] for m, p in zip(meshes, poses)]
    offsets = np.cumsum([0] + [len(v) for v in vertices])
    faces = np.concatenate([m.faces + offsets[i] for i, m in enumerate(meshes)])
    bodies = np.concatenate([np.full(len(m.faces), i) for i, m in enumerate(meshes)])
    return _Posed(Mesh(np.concatenate(vertices), faces), bodies)


def optical_flow(spec: SceneSpec, depth: np.ndarray, instance: np.ndarray, towards: MotionState,
                 meshes: list[Mesh] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Flow (H x W x 2 float32, pixels: where the point seen at each pixel centre is at
    ``towards``'s time, minus the pixel) and its validity (H x W bool: the point is in front of
    the other camera, inside its image and not hidden there)."""
    meshes = body_meshes(spec) if meshes is None else meshes
    camera = spec.camera
    height, width = camera.height, camera.width
    vs, us = np.mgrid[0:height, 0:width]
    rays = label_rays(camera).reshape(-1, 3)  # along which each pixel's depth was measured
    world_from_camera = np.asarray(camera.world_from_camera)
    other_camera = np.asarray(towards.world_from_camera)
    camera_from_world = np.linalg.inv(other_camera)
    now, then = body_poses(spec), body_poses(spec, towards)
    moves = then @ np.linalg.inv(now) if len(now) else np.zeros((0, 4, 4))  # world at t -> world at the other time
    depth, ids = depth.ravel().astype(np.float64), instance.ravel()
    surface = np.isfinite(depth)
    body = np.full(len(depth), -1)
    labeled = surface & (ids > 0)
    object_of_id = np.full(max((o.instance_id for o in spec.objects), default=0) + 1, -1)
    object_of_id[[o.instance_id for o in spec.objects]] = np.arange(len(spec.objects))
    labeled &= ids < len(object_of_id)
    body[labeled] = object_of_id[ids[labeled]]
    points = (rays * np.where(surface, depth, 0.0)[:, None]) @ world_from_camera[:3, :3].T + world_from_camera[:3, 3]
    unlabeled = surface & (ids == 0)
    moving = [b for b in range(len(spec.objects), len(meshes)) if not np.allclose(moves[b], np.eye(4))]
    if moving and unlabeled.any():  # which prop an unlabeled pixel shows, by a ray cast at this time
        along, hit = posed_scene(meshes, now).first_hits(world_from_camera[:3, 3], rays[unlabeled] @ world_from_camera[:3, :3].T)
        agrees = np.abs(along - depth[unlabeled]) <= HIDDEN_TOLERANCE * depth[unlabeled]
        body[np.flatnonzero(unlabeled)] = np.where(agrees, hit, -1)
    moved = points.copy()
    for b in np.unique(body[body >= 0]):
        at = body == b
        moved[at] = points[at] @ moves[b][:3, :3].T + moves[b][:3, 3]
    in_camera = moved @ camera_from_world[:3, :3].T + camera_from_world[:3, 3]
    # Background: a direction at infinity, turned by the cameras' rotations only.
    directions = camera_rays(camera, us, vs) @ (camera_from_world[:3, :3] @ world_from_camera[:3, :3]).T
    in_camera[~surface] = directions[~surface]
    z = in_camera[:, 2]
    projected = project_points(camera, in_camera)  # NaN: behind the camera or beyond its lens's range
    ahead = np.where(surface, z > camera.clip_start, z > 0) & np.isfinite(projected).all(axis=1)
    flow = np.where(ahead[:, None], projected - np.stack([us.ravel(), vs.ravel()], axis=-1), 0.0)
    inside = ahead & _in_image(projected, width, height)
    valid = inside.copy()
    candidates = np.flatnonzero(inside)
    if len(candidates):
        eye = other_camera[:3, 3]
        targets = np.where(surface[candidates, None], moved[candidates] - eye,
                           (other_camera[:3, :3] @ in_camera[candidates].T).T)
        along, hit = posed_scene(meshes, then).first_hits(eye, targets)
        own = (hit == body[candidates]) | ((body[candidates] == -1) & (hit >= len(spec.objects))
                                          & ~np.isin(hit, moving))
        self_tolerance = BLURRED_SELF_TOLERANCE if camera.exposure_s > 0 else HIDDEN_TOLERANCE
        seen = (along >= 1.0 - HIDDEN_TOLERANCE) | (own & (along >= 1.0 - self_tolerance))
        valid[candidates] = np.where(surface[candidates], seen, ~np.isfinite(along))
    return flow.reshape(height, width, 2).astype(np.float32), valid.reshape(height, width)


def _in_image(uv: np.ndarray, width: int, height: int) -> np.ndarray:
    """Whether pixel positions (N x 2, OpenCV pixel centres) fall inside a width x height image."""
    return (uv[:, 0] >= -0.5) & (uv[:, 0] < width - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < height - 0.5)


def flow_passes(spec: SceneSpec, depth: np.ndarray, instance: np.ndarray) -> dict[str, np.ndarray]:
    """The stored flow passes of a sequence frame: forward and backward flow (zero where the other
    frame does not exist) and the validity bits (FORWARD_VALID, BACKWARD_VALID)."""
    meshes = body_meshes(spec)
    sequence, height, width = spec.sequence, *depth.shape
    valid = np.zeros((height, width), np.uint8)
    passes = {}
    # Backward first: frames labeled in order then find both other instants' scenes already posed.
    for name, state, bit in (("flow_backward", sequence.previous, BACKWARD_VALID), ("flow_forward", sequence.next, FORWARD_VALID)):
        if state is None:
            passes[name] = np.zeros((height, width, 2), np.float32)
            continue
        passes[name], seen = optical_flow(spec, depth, instance, state, meshes)
        valid |= np.where(seen, bit, 0).astype(np.uint8)
    return {**passes, "flow_valid": valid}


def point_tracks(specs: list[SceneSpec], count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """TAP-style tracks of up to ``count`` surface points through a sequence's frames (in order).

    Query points are drawn uniformly over frames and image positions among rays that hit a
    surface; each is followed on its body's rigid motion. Returns ``query_points`` (N x 3: frame,
    y, x), ``tracks`` (N x T x 2: x, y pixels, OpenCV: integers are pixel centres), ``occluded``
    (N x T: behind the camera, outside the image or hidden by nearer geometry) and
    ``instance_id`` (N: the object's id, 0 for unlabeled geometry).
    """
    first = specs[0]
    meshes, frames = body_meshes(first), len(specs)
    width, height = first.camera.width, first.camera.height
    poses = np.array([body_poses(spec) for spec in specs])  # T x B x 4 x 4
    posed = [posed_scene(meshes, p) for p in poses]
    candidates = 4 * count
    query_frames = rng.integers(frames, size=candidates)
    us, vs = rng.uniform(-0.5, width - 0.5, candidates), rng.uniform(-0.5, height - 0.5, candidates)
    local = np.zeros((candidates, 3))
    body = np.full(candidates, -1)
    for t in np.unique(query_frames):
        at = np.flatnonzero(query_frames == t)
        camera = np.asarray(specs[t].camera.world_from_camera)
        rays = camera_rays(specs[t].camera, us[at], vs[at]) @ camera[:3, :3].T
        along, hit = posed[t].first_hits(camera[:3, 3], rays)
        found = np.isfinite(along)
        world = camera[:3, 3] + rays[found] * along[found, None]
        hits, bodies = at[found], hit[found]
        body[hits] = bodies
        local[hits] = np.einsum("nji,nj->ni", poses[t, bodies, :3, :3], world - poses[t, bodies, :3, 3])
    keep = np.flatnonzero(body >= 0)[:count]
    body, local = body[keep], local[keep]
    tracks = np.zeros((len(keep), frames, 2))
    occluded = np.ones((len(keep), frames), bool)
    for t, spec in enumerate(specs):
        camera = np.asarray(spec.camera.world_from_camera)
        world = np.einsum("nij,nj->ni", poses[t, body, :3, :3], local) + poses[t, body, :3, 3]
        in_camera = (world - camera[:3, 3]) @ camera[:3, :3]
        uv = project_points(spec.camera, in_camera)
        ahead = (in_camera[:, 2] > spec.camera.clip_start) & np.isfinite(uv).all(axis=1)
        tracks[:, t] = np.where(ahead[:, None], uv, 0.0)  # (0, 0) where there is no projection: occluded
        inside = ahead & _in_image(uv, width, height)
        along, _ = posed[t].first_hits(camera[:3, 3], world - camera[:3, 3])
        occluded[:, t] = ~(inside & (along >= 1.0 - HIDDEN_TOLERANCE))
    ids = np.array([o.instance_id for o in first.objects] + [0] * (len(meshes) - len(first.objects)), dtype=np.int32)
    instance = ids[body] if len(body) else np.zeros(0, np.int32)
    return {
        "query_points": np.stack([query_frames[keep], vs[keep], us[keep]], axis=-1).astype(np.float32),
        "tracks": tracks.astype(np.float32),
        "occluded": occluded,
        "instance_id": instance,
    }
