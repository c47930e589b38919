"""Placement geometry: objects stand on surfaces without touching, by real mesh collision.

Collision and clearance are exact triangle-mesh tests (FCL through ``python-fcl``), plus a
containment test, since two surfaces that never cross may still be one inside the other. The
optional settle drops the placed objects in a rigid-body simulation (pybullet, headless and
deterministic) and keeps the poses they come to rest in.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from .motion import interpolate

if TYPE_CHECKING:  # fcl is imported where a scene is placed, trimesh where one settles
    import fcl
    import trimesh

    from .mesh import Mesh

# Objects stacked on another object stand this far above the contact found by vertical rays, so
# that a contact between two edges (which the rays cannot see) never counts as a collision.
STACK_LIFT = 1e-4
SIM_STEP = 1 / 240  # seconds; Bullet's default step
SIM_CHECK = 24  # steps between two checks for rest
AT_REST = (0.005, 0.05)  # m/s, rad/s: below both, a body is at rest
DENSITY = 500.0  # kg/m^3, for masses in the simulation (only their ratios matter)
MAX_TRAVEL = 1000.0  # metres from the origin: a body beyond has left the scene (the simulation blew up)


@dataclass(frozen=True)
class Region:
    """A footprint a settled object must stay above: a rectangle of half size ``half`` centred on
    ``world_from_region`` (a yaw-only pose)."""

    world_from_region: np.ndarray
    half: tuple[float, float]

    def holds(self, point: np.ndarray) -> bool:
        """Whether ``point`` (world) lies above the rectangle."""
        local = np.linalg.inv(self.world_from_region) @ np.append(point, 1.0)
        return abs(local[0]) <= self.half[0] and abs(local[1]) <= self.half[1]


@dataclass(frozen=True)
class Rect:
    """A flat horizontal surface: a rectangle of half size ``half`` centred on
    ``world_from_rect`` (yaw only; its z is the surface height). Objects stand wholly on it, or
    when not ``whole`` (the ground's area) only the point under their origin must be on it.
    ``part`` is the body whose top it is (objects standing on it touch that body); ``region`` is
    where they must stay after a settle."""

    world_from_rect: np.ndarray
    half: tuple[float, float]
    whole: bool = True
    part: int | None = None
    region: Region | None = None


@dataclass
class Body:
    """A mesh in the layout; fixed bodies (supports) never move, the others may settle."""

    mesh: Mesh
    pose: np.ndarray
    fixed: bool
    region: Region | None = None  # the support it stands in or on, if any
    bounds: np.ndarray = field(init=False)  # world axis-aligned bounds, (2, 3)
    _collision: fcl.CollisionObject | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.move(self.pose)

    def move(self, pose: np.ndarray) -> None:
        """Set the pose (world_from_object)."""
        self.pose = pose
        vertices = _apply(pose, self.mesh.vertices)
        self.bounds = np.array([vertices.min(axis=0), vertices.max(axis=0)])
        if self._collision is not None:
            import fcl

            self._collision.setTransform(fcl.Transform(pose[:3, :3], pose[:3, 3]))

    @property
    def collision(self) -> fcl.CollisionObject:
        """The FCL object, built on first use: most pairs are told apart by their bounds alone."""
        if self._collision is None:
            import fcl

            self._collision = fcl.CollisionObject(self.mesh.bvh)
            self.move(self.pose)
        return self._collision


class Layout:
    """The meshes of one scene; new ones are placed only where they touch nothing."""

    def __init__(self, min_gap: float) -> None:
        self.min_gap = min_gap
        self.bodies: list[Body] = []

    def add_fixed(self, parts: list[tuple[Mesh, np.ndarray]]) -> bool:
        """Add the parts (mesh, pose) of one support, unless one of them intersects a body
        already there (its own parts may touch each other); returns whether they were added."""
        bodies = [Body(mesh, pose, fixed=True) for mesh, pose in parts]
        if any(_intersect(body, other) for body in bodies for other in self.bodies):
            return False
        self.bodies += bodies
        return True

    def clear_loose(self) -> None:
        """Remove every body that is not fixed (to place a scene's objects again)."""
        self.bodies = [body for body in self.bodies if body.fixed]

    def try_place(
        self, body: Body, rotation: np.ndarray, surface: Rect | int, rng: np.random.Generator, drop_height: float,
    ) -> tuple[int | None, str]:
        """One attempt at standing a new loose ``body`` (turned by ``rotation``) on ``surface``: a
        flat rectangle, or the top of the body with that index. Returns (index of the body, "") or
        (None, why the attempt failed); the same body may try again."""
        if isinstance(surface, Rect):
            # The object's footprint (or its origin), in the rectangle's axes, must lie on the rectangle.
            turned = body.mesh.vertices @ rotation.T
            footprint = turned[:, :2] @ surface.world_from_rect[:2, :2] if surface.whole else np.zeros((1, 2))
            low, high = -np.asarray(surface.half) - footprint.min(axis=0), np.asarray(surface.half) - footprint.max(axis=0)
            if np.any(low > high):
                return None, "did not fit on the surface"
            xy = (surface.world_from_rect @ np.append(rng.uniform(low, high), [0.0, 1.0]))[:2]
        else:
            low, high = self.bodies[surface].bounds
            xy = rng.uniform(low[:2], high[:2])
        return self.place(body, rotation, xy, surface, rng.uniform(0.0, drop_height) if drop_height > 0 else 0.0)

    def place(self, body: Body, rotation: np.ndarray, xy: np.ndarray, surface: Rect | int,
              lift: float = 0.0, flat: bool = False) -> tuple[int | None, str]:
        """Stand a new loose ``body`` (turned by ``rotation``, its origin over the world point
        ``xy``) on ``surface`` (a rectangle's plane, or the top of the body with that index), raised
        by ``lift``, unless it hits something there. Returns (index of the body, "") or (None, why not).

        On a body, the new one stands where vertical rays first find contact, or with ``flat`` on
        the body's highest point (exact on flat tops such as a box's, where two boxes turned a
        little apart touch edge on edge, which the rays cannot see)."""
        mesh = body.mesh
        turned = mesh.vertices @ rotation.T
        pose = np.eye(4)
        pose[:3, :3] = rotation
        pose[:2, 3] = xy
        if isinstance(surface, Rect):
            pose[2, 3] = surface.world_from_rect[2, 3] - turned[:, 2].min()
            # Standing on the top face of a part, the object is wholly above that part.
            ignored, touching, region = surface.part, None, surface.region
        else:
            base = self.bodies[surface]
            height = base.bounds[1, 2] - turned[:, 2].min() if flat else _drop_height(base, mesh, rotation, pose[:2, 3])
            if height is None:
                return None, "missed the objects below"
            pose[2, 3] = height + STACK_LIFT
            ignored, touching, region = None, surface, base.region
        pose[2, 3] += lift
        if (turned[:, 2].min() + pose[2, 3]) < -1e-9:
            return None, "reached below the ground"
        body.move(pose)
        body.region = region
        for i, other in enumerate(self.bodies):
            if i == ignored:
                continue
            if _intersect(body, other):
                return None, "hit a support" if other.fixed else "hit another object"
            if i != touching and self.min_gap > 0 and _distance(body, other, self.min_gap) < self.min_gap:
                return None, "came closer than placement.min_gap"
        self.bodies.append(body)
        return len(self.bodies) - 1, ""

    def settle(self, seconds: float) -> tuple[int, str] | None:
        """Simulate the loose bodies falling to rest (supports and the ground z = 0 hold still)
        and move them to where they stop. Returns (a body's index, why the scene did not settle)
        or None when every loose body rests, on its support if it was placed on one."""
        with _World(self.bodies) as world:
            moving = world.loose
            for _ in range(math.ceil(seconds / SIM_STEP / SIM_CHECK)):
                world.step(SIM_CHECK)
                moving = [entry for entry in world.loose if not _at_rest(*world.velocity(entry[0]))]
                if not moving:
                    break
            for sim_id, index, centre in world.loose:
                self.bodies[index].move(world.pose(sim_id, centre))
        if moving:
            return moving[0][1], f"was still moving after {seconds:g} s"
        for index, body in enumerate(self.bodies):
            if body.region is not None and not body.region.holds(body.bounds.mean(axis=0)):
                return index, "fell off its support"
        return None

    def simulate(self, times: np.ndarray, velocities: dict[int, tuple[np.ndarray, np.ndarray]]
                 ) -> tuple[dict[int, np.ndarray], tuple[int, str] | None]:
        """Simulate the loose bodies from their poses, thrown with ``velocities`` (body index ->
        (m/s, rad/s), world frame), and sample them at ``times`` (seconds from 0, ascending).

        The simulation steps at SIM_STEP; a sample between two steps is interpolated (straight
        translation, shortest-arc rotation). Returns (body index -> poses (T, 4, 4), None), or a
        problem (body index, what went wrong) when a state stops being finite or flies apart.
        """
        samples: dict[int, list[np.ndarray]] = {}
        with _World(self.bodies) as world:
            for sim_id, index, centre in world.loose:
                linear, angular = velocities.get(index, (np.zeros(3), np.zeros(3)))
                world.throw(sim_id, centre, self.bodies[index], linear, angular)
            step = 0
            before = after = {sim_id: world.pose(sim_id, centre) for sim_id, _, centre in world.loose}
            for time in times:
                while step < math.ceil(time / SIM_STEP - 1e-9):
                    world.step(1)
                    step += 1
                    before, after = after, {sim_id: world.pose(sim_id, centre) for sim_id, _, centre in world.loose}
                    for sim_id, index, _ in world.loose:
                        if not np.all(np.isfinite(after[sim_id])) or np.abs(after[sim_id][:3, 3]).max() > MAX_TRAVEL:
                            return {}, (index, f"left the simulation {step * SIM_STEP:.3f} s in (at "
                                               f"{np.round(after[sim_id][:3, 3], 3).tolist()})")
                fraction = 1.0 if step == 0 else float(np.clip(time / SIM_STEP - (step - 1), 0.0, 1.0))
                for sim_id, index, _ in world.loose:
                    samples.setdefault(index, []).append(interpolate(before[sim_id], after[sim_id], fraction))
        return {index: np.array(poses) for index, poses in samples.items()}, None


class _World:
    """A pybullet world of a layout's bodies: the ground plane z = 0, fixed supports (mass 0) and
    loose bodies, each collided as its convex hull; use as a context manager."""

    def __init__(self, bodies: list[Body]) -> None:
        self._bodies = bodies
        self.loose: list[tuple[int, int, np.ndarray]] = []  # (simulation id, body index, centre of mass in the object frame)

    def __enter__(self) -> _World:
        pybullet = self._pybullet = _pybullet()
        self._client = pybullet.connect(pybullet.DIRECT)
        sim = self._sim = {"physicsClientId": self._client}
        pybullet.setPhysicsEngineParameter(fixedTimeStep=SIM_STEP, deterministicOverlappingPairs=1, **sim)
        pybullet.setGravity(0.0, 0.0, -9.81, **sim)
        pybullet.createMultiBody(0, pybullet.createCollisionShape(pybullet.GEOM_PLANE, **sim), **sim)
        for index, body in enumerate(self._bodies):
            # Bullet collides moving meshes as their convex hull: a hull holds its mesh, so hulls
            # that do not overlap keep the meshes apart too.
            hull = _convex_hull(body.mesh)
            centre = hull.center_mass
            shape = pybullet.createCollisionShape(pybullet.GEOM_MESH, vertices=(hull.vertices - centre).tolist(), **sim)
            start = body.pose @ _translation(centre)
            sim_id = pybullet.createMultiBody(
                0.0 if body.fixed else max(hull.volume * DENSITY, 1e-3), shape,
                basePosition=start[:3, 3].tolist(), baseOrientation=_quaternion(start), **sim,
            )
            pybullet.changeDynamics(sim_id, -1, lateralFriction=0.6, rollingFriction=1e-3, spinningFriction=1e-3, collisionMargin=2e-4, **sim)
            if not body.fixed:
                self.loose.append((sim_id, index, centre))
        return self

    def __exit__(self, *exc_info) -> None:
        self._pybullet.disconnect(self._client)

    def step(self, steps: int) -> None:
        for _ in range(steps):
            self._pybullet.stepSimulation(**self._sim)

    def velocity(self, sim_id: int) -> tuple[tuple, tuple]:
        return self._pybullet.getBaseVelocity(sim_id, **self._sim)

    def throw(self, sim_id: int, centre: np.ndarray, body: Body, linear: np.ndarray, angular: np.ndarray) -> None:
        """Start a body at ``linear`` m/s (the velocity of its box's centre) and ``angular`` rad/s."""
        # Bullet's linear velocity is the centre of mass's: add the spin's share between the two.
        rotation = body.pose[:3, :3]
        at_mass = np.asarray(linear) + np.cross(angular, rotation @ (centre - body.mesh.bounds.mean(axis=0)))
        self._pybullet.resetBaseVelocity(sim_id, at_mass.tolist(), [float(w) for w in angular], **self._sim)

    def pose(self, sim_id: int, centre: np.ndarray) -> np.ndarray:
        """world_from_object of a body (from its centre of mass's pose)."""
        position, quaternion = self._pybullet.getBasePositionAndOrientation(sim_id, **self._sim)
        pose = np.eye(4)
        pose[:3, :3] = np.reshape(self._pybullet.getMatrixFromQuaternion(quaternion), (3, 3))
        pose[:3, 3] = position
        return pose @ _translation(-centre)


def _intersect(a: Body, b: Body) -> bool:
    """Whether two meshes share any volume: crossing surfaces, or one inside the other."""
    (a_low, a_high), (b_low, b_high) = a.bounds, b.bounds
    if np.any(a_low > b_high) or np.any(b_low > a_high):
        return False
    import fcl

    if fcl.collide(a.collision, b.collision, fcl.CollisionRequest(), fcl.CollisionResult()):
        return True
    # Surfaces that do not cross: either apart, or one holds the other whole (one vertex tells).
    return _contains(a, b.pose, b.mesh.vertices[0]) or _contains(b, a.pose, a.mesh.vertices[0])


def _contains(body: Body, pose: np.ndarray, point: np.ndarray) -> bool:
    """Whether ``body`` holds the point (given in the frame of ``pose``); never for a mesh that
    is not closed, which has no inside."""
    local = np.linalg.inv(body.pose) @ pose @ np.append(point, 1.0)
    return bool(body.mesh.is_watertight and body.mesh.contains(local[None, :3])[0])


def _distance(a: Body, b: Body, limit: float) -> float:
    """Distance between two meshes that do not intersect; ``limit`` or more when their bounds are that far apart."""
    (a_low, a_high), (b_low, b_high) = a.bounds, b.bounds
    apart = np.maximum(np.maximum(a_low - b_high, b_low - a_high), 0.0)
    if np.linalg.norm(apart) >= limit:
        return limit
    import fcl

    return float(fcl.distance(a.collision, b.collision, fcl.DistanceRequest(), fcl.DistanceResult()))


def _drop_height(base: Body, mesh: Mesh, rotation: np.ndarray, xy: np.ndarray) -> float | None:
    """The z translation at which ``mesh`` (turned, over ``xy``), lowered from above, first
    touches ``base``: rays down from its vertices and up from the base's vertices. None: it misses."""
    base_world = _apply(base.pose, base.mesh.vertices)
    falling = np.eye(4)
    falling[:3, :3] = rotation
    falling[:3, 3] = (xy[0], xy[1], base.bounds[1, 2] - (mesh.vertices @ rotation.T)[:, 2].min() + 1.0)  # clear above
    hits = np.concatenate([
        _ray_distances(base.mesh, np.linalg.inv(base.pose), _apply(falling, mesh.vertices), np.array([0.0, 0.0, -1.0])),
        _ray_distances(mesh, np.linalg.inv(falling), base_world, np.array([0.0, 0.0, 1.0])),
    ])
    return None if hits.size == 0 else falling[2, 3] - float(hits.min())


def _apply(pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ pose[:3, :3].T + pose[:3, 3]


def _ray_distances(mesh: Mesh, frame_from_world: np.ndarray, origins: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Distances along ``direction`` (world) from world ``origins`` to their first hit on ``mesh``
    (the rays are cast in the mesh's frame, so its cached acceleration structure is reused)."""
    local_origins = _apply(frame_from_world, origins)
    local_direction = frame_from_world[:3, :3] @ direction
    locations, rays, _ = mesh.first_hits(local_origins, np.broadcast_to(local_direction, local_origins.shape))
    return np.linalg.norm(locations - local_origins[rays], axis=1)


@cache
def _pybullet() -> ModuleType:
    """pybullet, imported when a scene is first settled, without the build date that its import
    prints on file descriptor 2."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import pybullet
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return pybullet


def _at_rest(linear: tuple, angular: tuple) -> bool:
    return bool(np.linalg.norm(linear) < AT_REST[0] and np.linalg.norm(angular) < AT_REST[1])


def _translation(offset: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def _convex_hull(mesh: Mesh) -> trimesh.Trimesh:
    """The convex hull of a mesh, with its volume and centre of mass (trimesh, with scipy's qhull:
    only a settle needs it)."""
    import trimesh

    return trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).convex_hull


def _quaternion(pose: np.ndarray) -> list[float]:
    """Bullet's (x, y, z, w) quaternion of the rotation of a 4x4 pose."""
    import trimesh

    w, x, y, z = trimesh.transformations.quaternion_from_matrix(pose)
    return [float(x), float(y), float(z), float(w)]
