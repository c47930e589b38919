"""Arranged worlds: shelves with a back and sides, objects in rows facing the front on a chosen
board, layers on a pallet, objects taller than a board's gap refused, and the up-axis check.

Expected positions are computed here from the recipe's numbers (board heights, widths, spacing),
never read back from the placer; overlaps are checked by the placement tests' independent test.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import trimesh

from sceneforge.floor.errors import UserError
from sceneforge.scenes.assets import asset_mesh
from sceneforge.scenes.placement import STACK_LIFT
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample
from sceneforge.scenes.upright import up_axis_notes

from .helpers import ROOT, posed_trimesh, run_cli, write_recipe
from .test_placement import deepest_penetration, lowest_z

SHELF = """\
seed: 5
supports:
  - {name: rack, type: shelf, size: [1.0, 0.35, 1.2], boards: 4, position: [0.3, 0.5], yaw_deg: 25}
placement: {min_gap: 0.005}
objects:
  - category: can
    count: 14
    place_on: rack
    board: 1
    asset: {primitive: cylinder, radius: 0.035, height: 0.12}
    arrange: {type: rows, spacing: 0.02, rows: 2, jitter: 0.003, yaw_jitter_deg: 4}
  - category: box
    count: 5
    place_on: rack
    board: 2
    asset: {primitive: box, extents: [0.12, 0.06, 0.2]}
    arrange: rows
  - category: jar
    count: 3
    place_on: rack
    board: 3
    asset: {primitive: cylinder, radius: 0.03, height: 0.1}
"""
YAW = math.radians(25)
WORLD_FROM_SHELF = np.array([[math.cos(YAW), -math.sin(YAW), 0.3], [math.sin(YAW), math.cos(YAW), 0.5], [0, 0, 1]])
BOARD_TOPS = [k * (1.2 - 0.02) / 3 + 0.02 for k in range(4)]  # 2 cm boards evenly from the floor to 1.2 m
FRONT_EDGE = -0.35 / 2  # the boards reach the shelf's front (its -Y side); the back panel is behind them
POLYGON = 0.035 * (1 - math.cos(math.pi / 48))  # how much a turned 48-sided can's width differs from 7 cm


def in_shelf(point: np.ndarray) -> np.ndarray:
    """A world point's (x, y) in the shelf's frame."""
    rotation, origin = WORLD_FROM_SHELF[:2, :2], WORLD_FROM_SHELF[:2, 2]
    return rotation.T @ (np.asarray(point)[:2] - origin)


def test_rows_are_evenly_spaced_face_the_front_and_stand_on_the_chosen_board(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, SHELF))
    front_normal = WORLD_FROM_SHELF[:2, :2] @ [0.0, -1.0]
    for index in range(3):
        spec = sample(recipe, index)
        assert deepest_penetration(spec) < 1e-6
        by_category: dict[str, list] = {}
        for obj in spec.objects:
            by_category.setdefault(obj.category, []).append(obj)
        for category, board, yaw_jitter in (("can", 1, 4.0), ("box", 2, 0.0), ("jar", 3, None)):
            for obj in by_category[category]:
                assert lowest_z(obj) == pytest.approx(BOARD_TOPS[board], abs=1e-6)
                pose = np.asarray(obj.world_from_object)
                if yaw_jitter is not None:  # the object's front (-Y) turned towards the shelf's front
                    angle = math.degrees(math.acos(np.clip(-pose[:2, 1] @ front_normal, -1, 1)))
                    assert angle <= yaw_jitter + 1e-6
                    assert abs(pose[2, 2] - 1) < 1e-12  # upright
        # Cans: 10 fit a row (10 x 0.076 m slots (7 cm + jitter) + 9 x 2 cm gaps <= 0.95 m between the
        # sides, less min_gap), so 14 make a full front row and a row of 4 behind it, each centred.
        cans = np.array([in_shelf(np.asarray(o.world_from_object)[:3, 3]) for o in by_category["can"]])
        front, back = cans[:10], cans[10:]
        assert len(back) == 4
        jitter = 0.003 + POLYGON
        assert np.all(np.abs(front[:, 1] - (FRONT_EDGE + 0.003 + 0.035)) <= jitter)
        assert np.all(np.abs(back[:, 1] - (FRONT_EDGE + 0.076 + 0.02 + 0.003 + 0.035)) <= jitter)
        for row in (front, back):
            pitches = np.diff(np.sort(row[:, 0]))
            assert np.all(np.abs(pitches - (0.076 + 0.02)) <= 2 * jitter)  # equal within the jitter
            assert abs(row[:, 0].mean()) <= jitter  # centred on the board
        # Boxes: no jitter: one row of five exactly 12 cm + 1 cm (the default spacing) apart, centred.
        boxes = np.array([in_shelf(np.asarray(o.world_from_object)[:3, 3]) for o in by_category["box"]])
        assert np.sort(boxes[:, 0]) == pytest.approx([-0.26, -0.13, 0.0, 0.13, 0.26], abs=1e-9)
        assert boxes[:, 1] == pytest.approx([FRONT_EDGE + 0.03] * 5, abs=1e-9)


def test_the_arrangement_draws_from_its_own_stream(tmp_path):
    """Changing an arranged group's jitter moves only that group: scattered groups keep their poses."""
    base = load_recipe(write_recipe(tmp_path, SHELF))
    jittered = load_recipe(write_recipe(tmp_path, SHELF.replace("jitter: 0.003", "jitter: 0.004"), "other.yaml"))
    a, b = sample(base, 1), sample(jittered, 1)
    assert [o.world_from_object for o in a.objects if o.category == "jar"] == \
           [o.world_from_object for o in b.objects if o.category == "jar"]
    assert [o.world_from_object for o in a.objects if o.category == "can"] != \
           [o.world_from_object for o in b.objects if o.category == "can"]
    assert sample(base, 1).to_json() == a.to_json()


def ray_hits(meshes: list[trimesh.Trimesh], origin: np.ndarray, direction: np.ndarray) -> list[float]:
    """Distances along the ray to every mesh it hits."""
    found = []
    for mesh in meshes:
        locations, _, _ = mesh.ray.intersects_location([origin], [direction])
        found += [float(np.linalg.norm(p - origin)) for p in locations]
    return sorted(found)


@pytest.mark.parametrize("back, sides", [(True, True), (False, True), (True, False)])
def test_a_ray_from_behind_hits_the_back_panel_and_one_from_the_side_the_side_panel(tmp_path, back, sides):
    text = SHELF.replace("yaw_deg: 25}", f"yaw_deg: 25, back: {str(back).lower()}, sides: {str(sides).lower()}}}")
    spec = sample(load_recipe(write_recipe(tmp_path, text)), 0)
    props = [posed_trimesh(asset_mesh(p.asset), p.world_from_object) for p in spec.props]
    rotation = np.eye(3)
    rotation[:2, :2] = WORLD_FROM_SHELF[:2, :2]
    origin_of = lambda x, y, z: np.append(WORLD_FROM_SHELF @ [x, y, 1.0], 0.0)[:2].tolist() + [z]  # noqa: E731
    between_boards = (BOARD_TOPS[0] + BOARD_TOPS[1] - 0.02) / 2
    # From 1 m behind the shelf (+Y), looking towards its front, between two boards.
    hits = ray_hits(props, np.array(origin_of(0.05, 0.35 / 2 + 1.0, between_boards)), rotation @ [0.0, -1.0, 0.0])
    if back:
        assert hits[0] == pytest.approx(1.0, abs=1e-9)  # the back panel's outer face is the shelf's back
    else:
        assert hits == []  # nothing between the boards from the back to the front
    # From 1 m beside the shelf (+X), between two boards.
    hits = ray_hits(props, np.array(origin_of(1.0 / 2 + 1.0, -0.05, between_boards)), rotation @ [-1.0, 0.0, 0.0])
    if sides:
        assert hits[0] == pytest.approx(1.0, abs=1e-9)
    else:
        assert hits == []
    # The boards stand in front of the back panel, flush with the shelf's front.
    boards = [m for m in props if m.extents[2] == pytest.approx(0.02)]
    assert len(boards) == 4
    for board in boards:
        ys = np.array([in_shelf(v)[1] for v in board.vertices])
        assert ys.min() == pytest.approx(FRONT_EDGE, abs=1e-9)
        assert ys.max() == pytest.approx(0.35 / 2 - 0.02 * back, abs=1e-9)


def test_boxes_stack_in_layers_on_the_pallet(tmp_path):
    recipe = load_recipe(ROOT / "examples" / "pallet.yaml", {"objects.0.count": 22})
    spec = sample(recipe, 0)
    assert deepest_penetration(spec) < 1e-6
    deck = 0.144  # the pallet's top deck
    boxes = [(np.asarray(o.world_from_object), lowest_z(o)) for o in spec.objects]
    layers = [[(pose, z) for pose, z in boxes if abs(z - (deck + k * (0.2 + STACK_LIFT))) < 1e-6] for k in range(3)]
    assert [len(layer) for layer in layers] == [9, 9, 4]  # 3 x 3 boxes of 34 x 23 cm fit a 1.2 x 0.8 m deck
    for lower, upper in zip(layers, layers[1:]):
        for (pose, _), (below, _) in zip(upper, lower):  # each box over the one below it, within the jitter
            assert np.linalg.norm(pose[:2, 3] - below[:2, 3]) <= 2 * math.sqrt(2) * 0.005 + 1e-9


TOO_TALL = """\
supports:
  - {name: rack, type: shelf, size: [1.0, 0.35, 1.2], boards: 4}
objects:
  - category: can
    count: 2
    place_on: rack
    asset: {primitive: cylinder, radius: 0.03, height: 0.1}
  - category: bottle
    count: 2
    place_on: rack
    asset: {primitive: cylinder, radius: 0.03, height: HEIGHT}
"""


@pytest.mark.parametrize("height, said", [
    ("0.4", "'bottle' objects are 0.4 m tall"),
    ("{uniform: [0.2, 0.45]}", "'bottle' objects can be 0.45 m tall (the largest size their distributions can draw)"),
])
def test_an_object_taller_than_the_gap_between_boards_is_refused_with_the_numbers(tmp_path, height, said):
    path = write_recipe(tmp_path, TOO_TALL.replace("HEIGHT", height))
    result = run_cli("validate", path)
    assert result.returncode == 2, result.stdout
    gap = (1.2 - 0.02) / 3 - 0.02  # from a board's top to the next board's underside
    assert re.search(rf"{re.escape(str(path))}:8:5: objects\[1\]: {re.escape(said)}; the gap above board 0 of "
                     rf"shelf 'rack' \(supports\[0\]\), from its top at 0\.02 m to board 1's underside at "
                     rf"{(1.2 - 0.02) / 3:.4g} m, is {gap:.4g} m", result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    # On the top board nothing is above it: the same bottles fit.
    top = write_recipe(tmp_path, TOO_TALL.replace("HEIGHT", height) + "    board: 3\n", "top.yaml")
    spec = sample(load_recipe(top), 0)
    assert all(lowest_z(o) == pytest.approx(1.2) for o in spec.objects if o.category == "bottle")


@pytest.mark.parametrize("change, error", [
    ({"place_on: rack\n    asset: {primitive: cylinder, radius: 0.03, height: 0.1}": "asset: {primitive: cylinder, radius: 0.03, height: 0.1}\n    board: 1"},
     r"recipe.yaml:7:12: objects\[0\].board: 'ground' is not a shelf"),
    ({"height: 0.1}": "height: 0.1}\n    board: 4"}, r"recipe.yaml:8:12: objects\[0\].board: shelf 'rack' has 4 board\(s\), numbered 0"),
    ({"category: bottle\n    count: 2\n    place_on: rack": "category: bottle\n    count: 2\n    place_on: can\n    arrange: rows"},
     r"recipe.yaml:11:14: objects\[1\].arrange: rows stand on a surface"),
    ({"height: 0.1}": "height: 0.1}\n    arrange: {type: rows, spacing: {uniform: [0.0, 0.02]}}"},
     r"recipe.yaml:8:14: objects\[0\].arrange: spacing can be 0 m, less than placement.min_gap \(0.01 m\)"),
    ({"height: 0.1}": "height: 0.1}\n    arrange: {type: rows, layers: 2}"},
     r"recipe.yaml:8:35: objects\[0\].arrange.layers: layers stack up to the board above"),
    ({"boards: 4}": "boards: 4, back: false, sides: false}"}, r"recipe.yaml:2:5: supports\[0\]: a shelf needs its sides or its back"),
    ({"height: 0.1}": "height: 0.1}\n    arrange: {type: columns}"}, r"recipe.yaml:8:21: objects\[0\].arrange.type: expected 'rows', got 'columns'"),
])
def test_bad_boards_and_arrangements_are_located(tmp_path, change, error):
    text = TOO_TALL.replace("HEIGHT", "0.1")
    for old, new in change.items():
        assert old.replace("HEIGHT", "0.1") in text
        text = text.replace(old.replace("HEIGHT", "0.1"), new, 1)
    with pytest.raises(UserError, match=error):
        load_recipe(write_recipe(tmp_path, text))


def box_obj(path, extents: tuple[float, float, float]) -> None:
    """An OBJ file of a box with the given sizes along the file's x, y, z."""
    box = trimesh.creation.box(extents=extents)
    path.write_text("".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in box.vertices)
                    + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in box.faces))


UPRIGHT = """\
assets: [{category: bottle, path: tall.obj, UP}]
objects: [{category: bottle, count: 1, asset: {library: bottle}}]
"""


def test_validate_reports_the_up_axis_and_warns_when_a_tall_asset_would_lie_down(tmp_path):
    box_obj(tmp_path / "tall.obj", (0.1, 0.08, 0.5))  # a bottle exported Z up: tall along the file's z
    lying = write_recipe(tmp_path, UPRIGHT.replace(", UP", ""))
    result = run_cli("validate", lying)
    assert result.returncode == 0, result.stderr
    assert f"{lying}:1:35: assets[0].path: up axis: tall.obj: Y up (the default, glTF's +Y up)" in result.stdout
    assert re.search(rf"warning: {re.escape(str(lying))}:1:35: assets\[0\]\.path: tall\.obj loaded Y up .* stands 0\.08 m "
                     r"tall with its longest side \(0\.5 m\) lying flat; loaded Z up it would stand upright\. If it "
                     r"should stand, set up_axis: Z", result.stderr), result.stderr
    placed = sample(load_recipe(lying), 0).objects[0]
    assert asset_mesh(placed.asset).extents[2] == pytest.approx(0.08)  # indeed lying down

    declared = load_recipe(write_recipe(tmp_path, UPRIGHT.replace("UP", "up_axis: Z"), "declared.yaml"))
    [note] = up_axis_notes(declared)
    assert (note.up_axis, note.source, note.warning) == ("Z", "declared", None)
    assert asset_mesh(sample(declared, 0).objects[0].asset).extents[2] == pytest.approx(0.5)

    # Exported Y up (tall along the file's y), read with glTF's default: upright, nothing to warn about.
    box_obj(tmp_path / "upright.obj", (0.1, 0.5, 0.08))
    [note] = up_axis_notes(load_recipe(write_recipe(tmp_path, UPRIGHT.replace("tall.obj, UP", "upright.obj"), "y.yaml")))
    assert (note.up_axis, note.warning) == ("Y", None)
    # Turned at random (so3), nothing stands upright: no warning either.
    so3 = UPRIGHT.replace(", UP", "") + "placement: {rotation: so3}\n"
    assert [n.warning for n in up_axis_notes(load_recipe(write_recipe(tmp_path, so3, "so3.yaml")))] == [None]
