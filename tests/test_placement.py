"""Placement: no two meshes share volume, objects stand on their surface, supports, stacking,
physics settle, distractors, and clear errors for impossible requests.

Interpenetration is checked independently of the placer (FCL): points on each mesh's surface
(its vertices and random surface samples) must not lie inside any other mesh (ray parity test).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import trimesh

from sceneforge.errors import UserError
from sceneforge.pipeline import render_dataset
from sceneforge.scenes.assets import asset_mesh
from sceneforge.scenes.placement import STACK_LIFT
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample
from sceneforge.scenes.spec import SceneSpec

from .helpers import ROOT, TINY_RECIPE, run_cli, write_recipe

SHELF_AND_STACKS = """\
seed: 3
supports:
  - {name: shelf, type: shelf, size: [0.6, 0.25, 0.6], boards: 3, position: [0, 0.4], yaw_deg: {uniform: [-20, 20]}}
  - {name: bin, type: bin, size: [0.5, 0.3, 0.1], position: [0, -0.35]}
placement: {area: [1.2, 0.3], rotation: ROTATION, min_gap: 0.005}
objects:
  - category: crate
    count: {randint: [2, 3]}
    asset: {primitive: box, extents: [0.12, 0.1, {uniform: [0.05, 0.1]}]}
  - category: ball
    count: {randint: [1, 3]}
    on: crate
    asset: {primitive: sphere, radius: {uniform: [0.02, 0.04]}}
  - category: jar
    count: {randint: [2, 4]}
    on: shelf
    asset: {primitive: cylinder, radius: 0.03, height: {uniform: [0.06, 0.14]}}
  - category: ring
    count: 2
    on: bin
    asset: {primitive: torus, major_radius: 0.05, minor_radius: 0.015}
  - category: cone
    count: 2
    distractor: true
    on: ground
    asset: {primitive: cone, radius: 0.04, height: 0.1}
"""


def world_meshes(spec: SceneSpec) -> list[tuple[str, trimesh.Trimesh]]:
    """(name, mesh in world coordinates) of every object and prop of a scene."""
    named = [(o.category, o.asset, o.world_from_object) for o in spec.objects]
    named += [(p.name, p.asset, p.world_from_object) for p in spec.props]
    return [(name, asset_mesh(asset).copy().apply_transform(np.asarray(pose))) for name, asset, pose in named]


def deepest_penetration(spec: SceneSpec) -> float:
    """How deep any surface point of one mesh lies inside another (0 when none does)."""
    meshes = world_meshes(spec)
    deepest = 0.0
    for i, (_, a) in enumerate(meshes):
        points = np.concatenate([a.vertices, trimesh.sample.sample_surface(a, 400, seed=i)[0]])
        for j, (_, b) in enumerate(meshes):
            low, high = b.bounds
            near = points[np.all((points > low) & (points < high), axis=1)]
            if i == j or len(near) == 0:
                continue
            inside = near[b.contains(near)]
            if len(inside):
                deepest = max(deepest, depth_bound(b, inside))
    return deepest


def depth_bound(mesh: trimesh.Trimesh, points: np.ndarray) -> float:
    """An upper bound of how deep points inside ``mesh`` are: the shortest way out along 26 directions."""
    directions = np.array([d for d in np.ndindex(3, 3, 3) if d != (1, 1, 1)], dtype=float) - 1
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    origins = np.repeat(points, len(directions), axis=0)
    rays = np.tile(directions, (len(points), 1))
    locations, index, _ = mesh.ray.intersects_location(origins, rays, multiple_hits=False)
    exits = np.full(len(origins), np.inf)
    np.minimum.at(exits, index, np.linalg.norm(locations - origins[index], axis=1))
    return float(exits.reshape(len(points), -1).min(axis=1).max())


def stands_on(mesh: trimesh.Trimesh, supports: list[trimesh.Trimesh], within: float) -> bool:
    """Whether ``mesh`` lowered by ``within`` would sink into one of ``supports``."""
    lowered = mesh.vertices - [0.0, 0.0, within]
    return any(support.contains(lowered).any() or mesh.contains(support.vertices + [0.0, 0.0, within]).any()
               for support in supports)


def lowest_z(spec_object) -> float:
    pose = np.asarray(spec_object.world_from_object)
    return float((asset_mesh(spec_object.asset).vertices @ pose[:3, :3].T + pose[:3, 3])[:, 2].min())


@pytest.mark.parametrize("rotation", ["yaw", "so3"])
def test_no_two_meshes_intersect_and_objects_stand_on_their_surface(tmp_path, rotation):
    recipe = load_recipe(write_recipe(tmp_path, SHELF_AND_STACKS.replace("ROTATION", rotation)))
    board_tops = {0.02, 0.31, 0.6}  # three 2 cm boards from the floor to 0.6 m
    for index in range(12):
        spec = sample(recipe, index)
        assert deepest_penetration(spec) < 1e-6, index  # touching (a wall on its floor) is not sharing volume
        crates = [asset_mesh(o.asset).copy().apply_transform(np.asarray(o.world_from_object))
                  for o in spec.objects if o.category == "crate"]
        for obj in spec.objects:
            z = lowest_z(obj)
            if obj.category == "crate":
                assert z == pytest.approx(0.0, abs=1e-9)
            elif obj.category == "jar":
                assert min(abs(z - top) for top in board_tops) < 1e-9
            elif obj.category == "ring":
                assert z == pytest.approx(0.02, abs=1e-9)  # on the floor of the bin (2 cm boards)
            else:  # a ball stands on a crate: lowered by a little more than the lift, it sinks into one
                ball = asset_mesh(obj.asset).copy().apply_transform(np.asarray(obj.world_from_object))
                assert stands_on(ball, crates, STACK_LIFT + 1e-3)
        assert [p.name for p in spec.props].count("cone") == 2
        assert {o.category for o in spec.objects} <= {"crate", "ball", "jar", "ring"}
