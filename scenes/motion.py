"""Motion over a sequence: camera trajectories and kinematic object motion, as poses at given times.

Every function is pure: the same arguments (random draws come from the generator passed in)
give the same poses, so any frame of a sequence can be sampled alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

# scipy's Rotation is imported in the functions that turn poses: importing scipy.spatial costs
# about 0.3 s, which the commands that only read a recipe or a store should not pay.

Poses = np.ndarray  # (T, 4, 4) world_from_* at each time


def held(pose: np.ndarray, times: np.ndarray) -> Poses:
    """A pose (4x4) kept at every one of ``times``."""
    return np.repeat(np.asarray(pose, float)[None], len(times), axis=0)


def catmull_rom(points: np.ndarray, times: np.ndarray, span: float) -> np.ndarray:
    """Positions (T, 3) on the uniform Catmull-Rom spline through ``points`` (n >= 2), the first
    reached at time 0 and the last at ``span``, evenly spaced; it passes through every point."""
    points = np.asarray(points, float)
    n = len(points)
    padded = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    u = np.clip(np.asarray(times, float) / span, 0.0, 1.0) * (n - 1)
    segment = np.minimum(u.astype(int), n - 2)
    s = (u - segment)[:, None]
    p0, p1, p2, p3 = (padded[segment + k] for k in range(4))
    return 0.5 * (2 * p1 + (p2 - p0) * s + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s**2 + (3 * p1 - p0 - 3 * p2 + p3) * s**3)


def kinematic_poses(start: np.ndarray, centre: np.ndarray, times: np.ndarray, velocity: np.ndarray,
                    angular_velocity_deg: np.ndarray) -> Poses:
    """A body moving straight at ``velocity`` (m/s) while spinning at ``angular_velocity_deg``
    (deg/s, world axes) about its point ``centre`` (world, at time 0)."""
    from scipy.spatial.transform import Rotation
    turns = Rotation.from_rotvec(np.radians(angular_velocity_deg)[None, :] * np.asarray(times)[:, None]).as_matrix()
    poses = held(start, times)
    poses[:, :3, :3] = turns @ start[:3, :3]
    poses[:, :3, 3] = centre + np.asarray(times)[:, None] * velocity + (turns @ (start[:3, 3] - centre))
    return poses


def path_poses(start: np.ndarray, offsets: np.ndarray, times: np.ndarray, span: float) -> Poses:
    """A body translated smoothly through ``offsets`` (world, from its start position) over ``span`` seconds."""
    poses = held(start, times)
    poses[:, :3, 3] += catmull_rom(offsets, times, span)
    return poses


def shake(times: np.ndarray, amplitude: float, frequency_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth seeded wobble (T, 3), each component within +-``amplitude``: two sines per component,
    at the frequency and at 2.3 times it, with random phases."""
    phases = rng.uniform(0.0, 2 * math.pi, size=(2, 3))
    t = np.asarray(times)[:, None] * 2 * math.pi * frequency_hz
    return amplitude * (np.sin(t + phases[0]) + 0.5 * np.sin(2.3 * t + phases[1])) / 1.5


def orbit_eyes(target: np.ndarray, eye: np.ndarray, times: np.ndarray, degrees_per_second: float,
               elevation_deg_per_second: float) -> tuple[np.ndarray, np.ndarray]:
    """Eye positions (T, 3) circling ``target`` from ``eye`` at a constant distance, and the elevation (deg) of each."""
    offset = eye - target
    distance = float(np.linalg.norm(offset))
    elevation = math.degrees(math.asin(np.clip(offset[2] / distance, -1.0, 1.0))) + elevation_deg_per_second * times
    azimuth = math.degrees(math.atan2(offset[1], offset[0])) + degrees_per_second * times
    el, az = np.radians(elevation), np.radians(azimuth)
    eyes = target + distance * np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)
    return eyes, elevation


def camera_track(eyes: np.ndarray, looks: np.ndarray | None, start_rotation: np.ndarray, roll: np.ndarray,
                 look_at: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Poses:
    """world_from_camera at each time: at ``eyes``, looking at ``looks`` (None: the start rotation
    throughout), turned by ``roll`` (3x3, camera frame) after the look."""
    poses = np.repeat(np.eye(4)[None], len(eyes), axis=0)
    for k, eye in enumerate(eyes):
        rotation = start_rotation if looks is None else look_at(eye, looks[k])[:3, :3] @ roll
        poses[k, :3, :3], poses[k, :3, 3] = rotation, eye
    return poses


def shaken(poses: Poses, turn_deg: np.ndarray, offset_m: np.ndarray) -> Poses:
    """Poses turned by small angles (T, 3; degrees about the camera's own axes) and moved by
    offsets (T, 3; metres, camera axes)."""
    from scipy.spatial.transform import Rotation
    shaken_poses = poses.copy()
    turns = Rotation.from_euler("xyz", turn_deg, degrees=True).as_matrix()
    shaken_poses[:, :3, :3] = poses[:, :3, :3] @ turns
    shaken_poses[:, :3, 3] += np.einsum("kij,kj->ki", poses[:, :3, :3], offset_m)
    return shaken_poses


def interpolate(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
    """The rigid pose a fraction of the way from ``a`` to ``b`` (4x4): translation straight,
    rotation along the shortest arc."""
    from scipy.spatial.transform import Rotation
    pose = np.eye(4)
    pose[:3, 3] = (1 - fraction) * a[:3, 3] + fraction * b[:3, 3]
    relative = Rotation.from_matrix(b[:3, :3] @ a[:3, :3].T)
    pose[:3, :3] = Rotation.from_rotvec(relative.as_rotvec() * fraction).as_matrix() @ a[:3, :3]
    return pose
