"""Placement: no two meshes share volume, objects stand on their surface, supports, stacking,
physics settle, distractors, and clear errors for impossible requests.

Interpenetration is checked independently of the placer (FCL): points on each mesh's surface
(its vertices and random surface samples) must not lie inside any other mesh (ray parity test).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import trimesh

from sceneforge.floor.errors import UserError
from sceneforge.pipeline import render_dataset
from sceneforge.scenes.assets import asset_mesh
from sceneforge.scenes.placement import STACK_LIFT
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample
from sceneforge.scenes.spec import SceneSpec

from .helpers import ROOT, TINY_RECIPE, posed_trimesh, run_cli, write_recipe

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
    place_on: crate
    asset: {primitive: sphere, radius: {uniform: [0.02, 0.04]}}
  - category: jar
    count: {randint: [2, 4]}
    place_on: shelf
    asset: {primitive: cylinder, radius: 0.03, height: {uniform: [0.06, 0.14]}}
  - category: ring
    count: 2
    place_on: bin
    asset: {primitive: torus, major_radius: 0.05, minor_radius: 0.015}
  - category: cone
    count: 2
    distractor: true
    place_on: ground
    asset: {primitive: cone, radius: 0.04, height: 0.1}
"""


def world_meshes(spec: SceneSpec) -> list[tuple[str, trimesh.Trimesh]]:
    """(name, mesh in world coordinates) of every object and prop of a scene."""
    named = [(o.category, o.asset, o.world_from_object) for o in spec.objects]
    named += [(p.name, p.asset, p.world_from_object) for p in spec.props]
    return [(name, posed_trimesh(asset_mesh(asset), pose)) for name, asset, pose in named]


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
        crates = [posed_trimesh(asset_mesh(o.asset), o.world_from_object)
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
                ball = posed_trimesh(asset_mesh(obj.asset), obj.world_from_object)
                assert stands_on(ball, crates, STACK_LIFT + 1e-3)
        assert [p.name for p in spec.props].count("cone") == 2
        assert {o.category for o in spec.objects} <= {"crate", "ball", "jar", "ring"}


def test_bin_picking_example_settles_inside_the_bin_and_renders(tmp_path):
    recipe = load_recipe(ROOT / "examples" / "bin_picking.yaml",
                         {"count": 2, "render.resolution": [48, 36], "render.samples": 1})
    bin_ = recipe.supports[0]
    inner = (bin_.size[0] / 2 - bin_.thickness, bin_.size[1] / 2 - bin_.thickness)
    specs = [sample(recipe, index) for index in range(4)]
    assert sample(recipe, 2).to_json() == specs[2].to_json()  # the simulation is deterministic
    for spec in specs:
        assert deepest_penetration(spec) < 1e-6
        assert {o.category for o in spec.objects} <= {"can", "box", "pill"}
        assert {p.name for p in spec.props} == {"bin", "foam"}
        loose = [(o.asset, o.world_from_object) for o in spec.objects] + [(p.asset, p.world_from_object) for p in spec.props if p.name == "foam"]
        for asset, pose in loose:
            world = asset_mesh(asset).vertices @ np.asarray(pose)[:3, :3].T + np.asarray(pose)[:3, 3]
            centre = world.mean(axis=0)
            assert abs(centre[0]) < inner[0] and abs(centre[1]) < inner[1]
            assert world[:, 2].min() > bin_.thickness - 1e-3  # on the floor or on other parts, never in it
        # Dropped from up to 15 cm, they fell: some now lie on the floor (within Bullet's margin).
        assert min(lowest_z(o) for o in spec.objects) == pytest.approx(bin_.thickness, abs=1e-3)

    store = render_dataset(recipe, tmp_path / "out").store
    records = store.records()
    assert [r["index"] for r in records] == [0, 1]
    for record, spec in zip(records, specs):
        assert [o["world_from_object"] for o in record["objects"]] == [list(map(list, o.world_from_object)) for o in spec.objects]
        assert set(np.unique(store.read_instance(record))) <= set(range(len(spec.objects) + 1))
    assert [c["name"] for c in store.meta["categories"]] == ["can", "box", "pill"]


def test_a_distractor_hides_the_object_under_it_but_is_never_labeled(tmp_path):
    text = """\
    seed: 2
    count: 1
    render: {resolution: [64, 64], samples: 1}
    camera: {fov_deg: 40, look_at: [0, 0, 0], distance: 1.0, elevation_deg: 90}
    ground: null
    placement: {area: [0.43, 0.43], min_gap: 0}
    objects:
      - {category: plate, asset: {primitive: box, extents: [0.3, 0.3, 0.02]}}
      - {category: ball, distractor: true, place_on: plate, asset: {primitive: sphere, radius: 0.05}}
    """
    recipe = load_recipe(write_recipe(tmp_path, text))
    spec = sample(recipe, 0)
    (ball,) = spec.props
    centre = np.asarray(ball.world_from_object)[:3, 3] + [0.0, 0.0, 0.05]
    assert centre[2] == pytest.approx(0.02 + 0.05, abs=1e-3)  # standing on the plate
    store = render_dataset(recipe, tmp_path / "out").store
    (record,) = store.records()
    (plate,) = record["objects"]
    assert plate["category"] == "plate" and plate["instance_id"] == 1
    assert plate["visible_pixels"] < plate["unoccluded_pixels"]  # the ball hides part of it
    camera_from_world = np.linalg.inv(np.asarray(spec.camera.world_from_camera))
    u, v, w = np.asarray(spec.camera.K) @ (camera_from_world @ np.append(centre, 1.0))[:3]
    row, col = round(v / w), round(u / w)
    assert store.read_instance(record)[row, col] == 0 and store.read_semantic(record)[row, col] == 0
    assert store.read_depth(record)[row, col] == pytest.approx(1.0 - (0.02 + 0.1), abs=0.01)  # the ball's top
    instance = store.read_instance(record)
    assert (instance == 1).sum() == plate["visible_pixels"]


def test_stacking_needs_something_to_stand_on(tmp_path):
    text = TINY_RECIPE.replace("    count: {randint: [1, 2]}\n", "    count: 0\n").replace(
        "  - category: ball\n    count: 2\n", "  - category: ball\n    count: 2\n    place_on: box\n")
    recipe = load_recipe(write_recipe(tmp_path, text))
    with pytest.raises(UserError, match=r"recipe.yaml:\d+:\d+: objects\[1\].place_on: scene 0: there is no 'box' object to stand on"):
        sample(recipe, 0)


def test_physics_that_cannot_settle_names_the_physics_field(tmp_path):
    text = TINY_RECIPE.replace("placement: {area: [0.5, 0.5], min_gap: 0.01}",
                               "placement: {area: [0.5, 0.5], physics: {drop_height: 0.5, seconds: 0.05, attempts: 2}}")
    recipe = load_recipe(write_recipe(tmp_path, text))
    with pytest.raises(UserError, match=r"recipe.yaml:5:\d+: placement\.physics: scene 0: in each of 2 drops an object "
                                        r"did not come to rest .* was still moving after 0\.05 s"):
        sample(recipe, 0)


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        ({"placement: {area: [0.5, 0.5], min_gap: 0.01}": "placement: {area: [0.3, 0.3], max_tries: 20}"},
         r"recipe.yaml:\d+:\d+: objects\[\d\]\.count: scene 0: no room for '\w+' \d of \d on ground after 20 tries \(placement\.max_tries\): \d+ hit another object"),
        ({"    count: 2\n": "    count: 2\n    place_on: bin\n", "lights:": "supports: [{name: bin, type: bin, size: [0.1, 0.1, 0.05], thickness: 0.01}]\nlights:"},
         r"recipe.yaml:12:12: objects\[1\]\.count: scene 0: no room for 'ball' 1 of 2 on bin after 200 tries \(placement\.max_tries\): 200 did not fit on the surface"),
        ({"    count: 2\n": "    count: 2\n    place_on: shelf\n"},
         r"recipe.yaml:13:15: objects\[1\].place_on: 'shelf' is not ground, a support or an earlier group's category; expected one of: ground, box$"),
        ({"lights:": "supports: [{name: bin, type: bin, size: [0.03, 0.3, 0.1]}]\nlights:"},
         r"recipe.yaml:16:41: supports\[0\]\.size: scene 0: drew \[0\.03, 0\.3, 0\.1\]; too small for boards 0\.02 m thick"),
        ({"lights:": "supports: [{name: ball, type: bin}]\nlights:"},
         r"recipe.yaml:\d+:19: supports\[0\]\.name: 'ball' is also an object category"),
        ({"lights:": "supports: [{name: a, type: bin}, {name: b, type: shelf}]\nlights:"},
         r"recipe.yaml:\d+:\d+: supports\[1\]: scene 0: 'b' overlaps another support"),
        ({"  - category: ring\n": "  - category: ball\n    distractor: true\n    asset: {primitive: sphere}\n  - category: ring\n"},
         r"recipe.yaml:14:15: objects\[2\]\.category: 'ball' is a labeled category; distractors need their own name"),
    ],
)
def test_impossible_or_inconsistent_placement_exits_2_naming_file_line_and_field(tmp_path, edits, expected):
    text = TINY_RECIPE
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    path = write_recipe(tmp_path, text)
    result = run_cli("validate", path)
    assert result.returncode == 2, result.stderr
    assert re.search(expected, result.stderr.strip()), result.stderr
    assert "Traceback" not in result.stderr
