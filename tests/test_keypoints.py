"""Keypoints against geometry computed here: analytic primitive keypoints projected by hand,
visibility from an analytic ray cast against boxes, USD and declared keypoints, and the exports
read by pycocotools' COCOeval and by Ultralytics' own label checker."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from ruamel.yaml import YAML

from sceneforge.floor.errors import UserError
from sceneforge.labels.export import export
from sceneforge.labels.store import DatasetStore
from sceneforge.pipeline import render_dataset, render_specs
from sceneforge.scenes.assets import asset_model
from sceneforge.scenes.recipe import RenderSettings, load_recipe
from sceneforge.scenes.sampling import look_at, sample
from sceneforge.scenes.spec import AssetRef, CameraSpec, LightSpec, MaterialSpec, ObjectSpec, RenderSpec, SceneSpec

from .helpers import run_cli, ultralytics_check, write_recipe

PRIMITIVES_RECIPE = """\
seed: 11
count: 3
render: {resolution: [64, 48], samples: 1}
camera: {fov_deg: 55, look_at: [0, 0, 0.05], distance: {uniform: [0.9, 1.1]}, elevation_deg: {uniform: [30, 50]}, azimuth_deg: {uniform: [0, 360]}}
placement: {area: [0.5, 0.5], min_gap: 0.01}
objects:
  - {category: box, count: 2, asset: {primitive: box, extents: [{uniform: [0.06, 0.12]}, 0.1, {uniform: [0.05, 0.1]}]}}
  - {category: ball, asset: {primitive: sphere, radius: 0.05}}
  - {category: can, asset: {primitive: cylinder, radius: 0.04, height: 0.12}}
  - {category: cone, asset: {primitive: cone, radius: 0.05, height: 0.1}}
  - {category: pill, asset: {primitive: capsule, radius: 0.03, height: 0.12}}
  - {category: ring, asset: {primitive: torus, major_radius: 0.06, minor_radius: 0.02}}
"""


def analytic_keypoints(asset: dict) -> np.ndarray:
    """The canonical keypoints of a primitive from its dimensions alone (its base centre at the
    origin, +Z up), in the documented order."""
    p, kind = asset["params"], asset["primitive"]
    if kind == "box":
        ex, ey, ez = p["extents"]
        return np.array([[(ex, -ex)[not i & 1] / 2, (ey, -ey)[not i & 2] / 2, ez if i & 4 else 0.0] for i in range(8)])
    if kind == "torus":
        r = p["major_radius"] + p["minor_radius"]
        return np.array([[r, 0, 1], [0, r, 1], [-r, 0, 1], [0, -r, 1]]) * [1, 1, p["minor_radius"]]
    top = {"sphere": 2 * p.get("radius", 0), "cylinder": p.get("height"), "cone": p.get("height"),
           "capsule": p.get("height")}[kind]
    return np.array([[0.0, 0.0, 0.0], [0.0, 0.0, top]])


def project_by_hand(K, world_from_camera, world_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    camera = (world_points - np.asarray(world_from_camera)[:3, 3]) @ np.asarray(world_from_camera)[:3, :3]
    K = np.asarray(K)
    return np.stack([K[0, 0] * camera[:, 0] / camera[:, 2] + K[0, 2], K[1, 1] * camera[:, 1] / camera[:, 2] + K[1, 2]],
                    axis=1), camera[:, 2]


@pytest.fixture(scope="module")
def primitives_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keypoints")
    return render_dataset(load_recipe(write_recipe(folder, PRIMITIVES_RECIPE)), folder / "out").store


def test_keypoints_are_the_primitives_analytic_points_projected(primitives_store):
    store = primitives_store
    names = {c["name"]: c["keypoints"] for c in store.meta["categories"]}
    assert names["box"] == ["x-y-z-", "x+y-z-", "x-y+z-", "x+y+z-", "x-y-z+", "x+y-z+", "x-y+z+", "x+y+z+"]
    assert names["cone"] == ["base", "apex"] and names["ring"] == ["x+", "y+", "x-", "y-"]
    checked = 0
    for record in store.records():
        spec = json.loads(store.path(record, "scene").read_text())
        for obj, described in zip(record["objects"], spec["objects"]):
            points = analytic_keypoints(described["asset"])
            world = points @ np.asarray(obj["world_from_object"])[:3, :3].T + np.asarray(obj["world_from_object"])[:3, 3]
            uv, z = project_by_hand(record["camera"]["K"], record["camera"]["world_from_camera"], world)
            labels = np.array(obj["keypoints"])
            assert len(labels) == len(names[obj["category"]])
            front = z > 0
            assert np.abs(labels[front, :2] - uv[front]).max() <= 1e-4
            checked += int(front.sum())
            # Each canonical keypoint is a vertex of the rendered mesh.
            mesh = asset_model(AssetRef.model_validate(described["asset"])).mesh
            assert max(np.linalg.norm(mesh.vertices - p, axis=1).min() for p in points) < 1e-9
    assert checked >= 30


# --- visibility against an analytic ray cast ------------------------------------------------

W, H = 160, 120
F = (W / 2) / math.tan(math.radians(22))
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1]])
EYE = np.array([0.5, -1.6, 0.9])
WORLD_FROM_CAMERA = look_at(EYE, np.array([0.0, 0.0, 0.1]))
GREY = MaterialSpec(base_color=(0.6, 0.6, 0.6))
# (extents, base centre, yaw in degrees): a near box, a box behind it that it half hides, and a
# box across the right image border.
BOXES = [((0.2, 0.2, 0.2), (0.0, 0.0, 0.0), 20.0), ((0.2, 0.16, 0.3), (-0.12, 0.55, 0.0), -10.0),
         ((0.16, 0.16, 0.16), (0.78, 0.2, 0.0), 35.0)]


def box_pose(centre, yaw_deg) -> np.ndarray:
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    pose = np.eye(4)
    pose[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    pose[:3, 3] = centre
    return pose


def box_scene() -> SceneSpec:
    objects = []
    for i, (extents, centre, yaw) in enumerate(BOXES):
        asset = AssetRef.primitive_asset("box", {"extents": extents})
        objects.append(ObjectSpec(instance_id=i + 1, category_id=1, category="box", asset=asset,
                                  world_from_object=tuple(map(tuple, box_pose(centre, yaw))), material=GREY,
                                  keypoints=asset_model(asset).keypoints.as_dict()))
    camera = CameraSpec(K=tuple(map(tuple, K)), world_from_camera=tuple(map(tuple, WORLD_FROM_CAMERA)),
                        width=W, height=H, clip_start=0.01, clip_end=100.0)
    sun = LightSpec(type="sun", energy=3.0, color=(1, 1, 1), world_from_light=tuple(map(tuple, np.diag([1.0, -1, -1, 1]))),
                    size=0.5)
    settings = RenderSettings(samples=1).model_dump(exclude={"resolution"})
    return SceneSpec(index=0, scene_index=0, seed=0, camera=camera, objects=objects, lights=[sun], ground=None,
                     background_color=(0.1, 0.1, 0.1), background_strength=1.0, render=RenderSpec(**settings, noise_seed=0))


def ray_box_interval(origin, direction, extents, pose) -> tuple[float, float]:
    """Parameters (t_in, t_out) where origin + t direction crosses a box (slab method), or (inf, -inf)."""
    local_origin = (origin - pose[:3, 3]) @ pose[:3, :3] - [0, 0, extents[2] / 2]
    local_direction = direction @ pose[:3, :3]
    half = np.asarray(extents) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-half - local_origin) / local_direction, (half - local_origin) / local_direction
    t_in, t_out = np.nanmax(np.minimum(t1, t2)), np.nanmin(np.maximum(t1, t2))
    return (t_in, t_out) if t_in <= t_out else (np.inf, -np.inf)


def hidden_by(world_point: np.ndarray, boxes) -> bool:
    """Whether the segment from the eye to the point passes through a box before reaching it."""
    direction = world_point - EYE
    for extents, pose in boxes:
        t_in, t_out = ray_box_interval(EYE, direction, extents, pose)
        if t_in < 1 - 1e-6 and t_out - t_in > 1e-6:
            return True
    return False


def test_visibility_is_coco_s_against_an_analytic_ray_cast(tmp_path):
    store = DatasetStore.open_for_writing(tmp_path / "out", recipe={}, recipe_hash="boxes", categories=["box"],
                                          resolution=(W, H), requested=1)
    render_specs(store, [box_scene()])
    (record,) = store.records()
    boxes = [(extents, box_pose(centre, yaw)) for extents, centre, yaw in BOXES]
    camera_from_world = np.linalg.inv(WORLD_FROM_CAMERA)
    seen, behind_another = {0: 0, 1: 0, 2: 0}, 0
    for i, obj in enumerate(record["objects"]):
        extents, pose = boxes[i]
        others = boxes[:i] + boxes[i + 1:]
        corners = analytic_keypoints({"primitive": "box", "params": {"extents": extents}})
        for corner, (u, v, flag) in zip(corners @ pose[:3, :3].T + pose[:3, 3], obj["keypoints"]):
            (truth_uv,), (z,) = project_by_hand(K, WORLD_FROM_CAMERA, corner[None])
            inside = z > 0 and -0.5 <= truth_uv[0] < W - 0.5 and -0.5 <= truth_uv[1] < H - 0.5
            expected = 0 if not inside else 1 if hidden_by(corner, boxes) else 2
            assert flag == expected, (i, corner, flag, expected)
            seen[expected] += 1
            behind_another += expected == 1 and hidden_by(corner, others)
            if inside:
                # The depth pass samples the pixel centre, up to 0.71 px beside the keypoint: the scene
                # keeps every keypoint 1.5 px clear of the other boxes' outlines, where the two agree.
                for du, dv in ((1.5, 0), (-1.5, 0), (0, 1.5), (0, -1.5), (1.1, 1.1), (-1.1, 1.1), (1.1, -1.1), (-1.1, -1.1)):
                    ray = np.linalg.inv(K) @ [truth_uv[0] + du, truth_uv[1] + dv, 1.0]
                    near = np.linalg.inv(camera_from_world) @ np.append(ray * z, 1.0)
                    assert hidden_by(near[:3], others) == hidden_by(corner, others), (i, corner)
    # The scene has keypoints outside the image, visible ones, and hidden ones: by the box in front
    # and by their own box (its far corners).
    assert min(seen.values()) >= 2 and behind_another >= 2 and seen[1] > behind_another, seen


# --- declared and USD keypoints -------------------------------------------------------------

USDA = """\
#usda 1.0
(
    defaultPrim = "Thing"
    metersPerUnit = 0.01
    upAxis = "Y"
)
def Xform "Thing"
{
    def Mesh "body"
    {
        int[] faceVertexCounts = [4, 4, 4, 4, 4, 4]
        int[] faceVertexIndices = [0, 1, 3, 2, 4, 6, 7, 5, 0, 4, 5, 1, 2, 3, 7, 6, 0, 2, 6, 4, 1, 5, 7, 3]
        point3f[] points = [(10, 0, 20), (30, 0, 20), (10, 40, 20), (30, 40, 20), (10, 0, 30), (30, 0, 30), (10, 40, 30), (30, 40, 30)]
    }
    def Scope "keypoints"
    {
        def Xform "tip"
        {
            double3 xformOp:translate = (30, 40, 30)
            uniform token[] xformOpOrder = ["xformOp:translate"]
        }
        def Xform "heel"
        {
            double3 xformOp:translate = (10, 0, 20)
            uniform token[] xformOpOrder = ["xformOp:translate"]
        }
    }
}
"""


def test_usd_keypoints_follow_the_asset_s_normalisation(tmp_path):
    (tmp_path / "thing.usda").write_text(USDA)
    path = write_recipe(tmp_path, """\
        assets:
          - {category: thing, path: thing.usda, scale: 2, skeleton: [[heel, tip]]}
        objects:
          - {category: thing, asset: {library: thing}}
        """)
    recipe = load_recipe(path)
    assert recipe.category_keypoints() == {"thing": (("tip", "heel"), (("heel", "tip"),))}
    (obj,) = sample(recipe, 0).objects
    # By hand: centimetres to metres, +Y up turned to +Z up ((x, y, z) -> (x, -z, y)), the base
    # centre moved to the origin, then scale 2. The mesh spans x 0.1..0.3, y 0..0.4, z 0.2..0.3.
    def normalised(x, y, z):
        x, y, z = 0.01 * x, -0.01 * z, 0.01 * y
        return ((x - 0.2) * 2, (y + 0.25) * 2, (z - 0.0) * 2)
    assert list(obj.keypoints) == ["tip", "heel"]
    assert np.allclose(obj.keypoints["tip"], normalised(30, 40, 30)) and np.allclose(obj.keypoints["heel"], normalised(10, 0, 20))
    mesh = asset_model(obj.asset).mesh
    for point in obj.keypoints.values():
        assert np.linalg.norm(mesh.vertices - point, axis=1).min() < 1e-9  # the corners they mark


def test_declared_keypoints_reach_the_spec_the_store_and_the_usd_export(tmp_path):
    path = write_recipe(tmp_path, """\
        render: {resolution: [48, 36], samples: 1}
        camera: {fov_deg: 50, look_at: [0, 0, 0.05], distance: 0.8, elevation_deg: 40}
        assets:
          - category: cube
            path: thing.usda
            size: 0.1
            keypoints: {top: [0, 0, 0.05], bottom: [0, 0, 0]}
            skeleton: [[bottom, top]]
        objects:
          - {category: cube, asset: {library: cube}}
        """)
    (tmp_path / "thing.usda").write_text(USDA)
    (obj,) = sample(load_recipe(path), 0).objects
    assert obj.keypoints == {"top": (0.0, 0.0, 0.05), "bottom": (0.0, 0.0, 0.0)}  # replacing the file's own
    store = render_dataset(load_recipe(path, {"count": 1}), tmp_path / "out", usd=True).store
    assert store.meta["categories"] == [{"id": 1, "name": "cube", "keypoints": ["top", "bottom"], "skeleton": [[1, 0]]}]
    (record,) = store.records()
    from pxr import Usd

    stage = Usd.Stage.Open(str(store.path(record, "usd")))
    prim = stage.GetPrimAtPath("/World/object_1")
    assert list(prim.GetCustomDataByKey("sceneforge:keypoint_names")) == ["top", "bottom"]
    assert np.allclose(np.array(prim.GetCustomDataByKey("sceneforge:keypoints")), [[0, 0, 0.05], [0, 0, 0]])


# --- exports --------------------------------------------------------------------------------

def test_cocoeval_keypoints_of_the_ground_truth_score_ap_1(primitives_store, tmp_path):
    export(primitives_store, "coco", tmp_path / "coco")
    gt = COCO(str(tmp_path / "coco" / "annotations.json"))
    records = {r["index"]: r for r in primitives_store.records()}
    for annotation in gt.dataset["annotations"]:  # COCO's pixel indices are SceneForge's pixel centres
        obj = next(o for o in records[annotation["image_id"]]["objects"] if o["instance_id"] == annotation["sceneforge"]["instance_id"])
        flat = np.array(annotation["keypoints"], dtype=float).reshape(-1, 3)
        labeled = flat[:, 2] > 0
        assert np.abs(flat[labeled, :2] - np.array(obj["keypoints"])[labeled, :2]).max() <= 1e-3
        assert annotation["num_keypoints"] == int(labeled.sum())
    box = next(c for c in gt.dataset["categories"] if c["name"] == "box")
    assert box["skeleton"][0] == [1, 2] and len(box["skeleton"]) == 12  # 1-based
    predictions = [{"image_id": a["image_id"], "category_id": a["category_id"], "keypoints": a["keypoints"], "score": 1.0}
                   for a in gt.dataset["annotations"]]
    scored = 0
    for category in gt.dataset["categories"]:
        mine = [p for p in predictions if p["category_id"] == category["id"]]
        if not any(a["num_keypoints"] for a in gt.dataset["annotations"] if a["category_id"] == category["id"]):
            continue
        evaluation = COCOeval(gt, gt.loadRes(mine), iouType="keypoints")
        evaluation.params.catIds = [category["id"]]
        evaluation.params.kpt_oks_sigmas = np.full(len(category["keypoints"]), 0.05)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        assert evaluation.stats[0] == pytest.approx(1.0), category["name"]
        scored += 1
    assert scored >= 4


def test_yolo_pose_labels_pass_ultralytics_own_checker_and_hold_the_keypoints(primitives_store, tmp_path):
    export(primitives_store, "yolo", tmp_path / "yolo", task="pose")
    data = YAML(typ="safe", pure=True).load((tmp_path / "yolo" / "data.yaml").read_text())
    slots = max(len(c["keypoints"]) for c in primitives_store.meta["categories"])
    assert data["kpt_shape"] == [slots, 3] and data["flip_idx"] == list(range(slots))
    checked = ultralytics_check(tmp_path / "yolo", "pose", tmp_path)
    records = {Path(r["files"]["rgb"]).stem: r for r in primitives_store.records()}
    assert {Path(image).stem for image in checked} == set(records)
    for image, result in checked.items():
        assert (result["nm"], result["nf"], result["nc"], result["msg"]) == (0, 1, 0, ""), image
        record = records[Path(image).stem]
        width, height = record["camera"]["width"], record["camera"]["height"]
        visible = [o for o in record["objects"] if o["visible_pixels"]]
        assert len(result["keypoints"]) == len(visible)
        for points, obj in zip(np.array(result["keypoints"]), visible):  # as Ultralytics read them
            mine = np.array(obj["keypoints"]).reshape(-1, 3)
            assert np.array_equal(points[:len(mine), 2], mine[:, 2]) and not points[len(mine):].any()
            labeled = mine[:, 2] > 0
            # Normalised in the boxes' frame: a pixel centre u is at u + 0.5.
            assert np.allclose(points[:len(mine)][labeled, 0] * width - 0.5, mine[labeled, 0], atol=1e-4)
            assert np.allclose(points[:len(mine)][labeled, 1] * height - 0.5, mine[labeled, 1], atol=1e-4)


def test_torch_dataset_returns_keypoints(primitives_store):
    from sceneforge.labels.torch import SceneForgeDataset

    data = SceneForgeDataset(primitives_store)
    sample_ = data[0]
    record = primitives_store.records()[0]
    visible = [o for o in record["objects"] if o["visible_pixels"]]
    keypoints = sample_["target"]["keypoints"]
    assert tuple(keypoints.shape) == (len(visible), 8, 3)
    first = np.array(visible[0]["keypoints"])
    labeled = first[:, 2] > 0
    assert np.allclose(keypoints[0, :len(first)][labeled, :2].numpy(), first[labeled, :2] + 0.5, atol=1e-4)


# --- bad input ------------------------------------------------------------------------------

def test_a_skeleton_naming_an_unknown_keypoint_is_refused_at_its_line(tmp_path):
    (tmp_path / "thing.usda").write_text(USDA)
    path = write_recipe(tmp_path, """\
        assets:
          - category: thing
            path: thing.usda
            skeleton: [[tip, toe]]
        objects:
          - {category: thing, asset: {library: thing}}
        """)
    result = run_cli("validate", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{path}:4:16: assets[0].skeleton[0]: no keypoint 'toe'; the asset's keypoints are: tip, heel" in result.stderr


def test_a_category_mixing_keypoint_lists_is_refused_at_its_line(tmp_path):
    path = write_recipe(tmp_path, """\
        objects:
          - {category: thing, asset: {primitive: box}}
          - {category: thing, asset: {primitive: sphere}}
        """)
    with pytest.raises(UserError) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"{path}:3:")
    assert "objects[1].asset.primitive: category 'thing' mixes assets with different keypoints: ['bottom', 'top'] here" in str(info.value)
    assert "at objects[0].asset.primitive" in str(info.value)


def test_pose_export_needs_keypoints(tmp_path):
    path = write_recipe(tmp_path, """\
        render: {resolution: [32, 24], samples: 1}
        camera: {look_at: [0, 0, 0.05], distance: 0.8, elevation_deg: 40}
        assets:
          - {category: cube, path: thing.glb}
        objects:
          - {category: cube, asset: {library: cube}}
        """)
    import trimesh

    (tmp_path / "thing.glb").write_bytes(trimesh.creation.box(extents=(0.1, 0.1, 0.1)).export(file_type="glb"))
    store = render_dataset(load_recipe(path, {"count": 1}), tmp_path / "out").store
    assert store.meta["categories"][0]["keypoints"] == []
    with pytest.raises(UserError, match="has no keypoints"):
        export(store, "yolo", tmp_path / "yolo", task="pose")


def test_preview_draws_the_labeled_keypoints_and_the_skeleton(primitives_store):
    from sceneforge.labels.preview import _draw_keypoints, instance_colour

    skeletons = {c["id"]: c["skeleton"] for c in primitives_store.meta["categories"]}
    scale, drawn, edges = 4, 0, 0
    for record in primitives_store.records():
        width, height = record["camera"]["width"], record["camera"]["height"]
        for obj in record["objects"]:
            if not obj["visible_pixels"]:
                continue
            canvas = np.zeros((height * scale, width * scale, 3), np.uint8)  # one object alone: nothing drawn over
            _draw_keypoints(canvas, {**record, "objects": [obj]}, scale, skeletons)
            colour = instance_colour(obj["instance_id"])
            for u, v, flag in obj["keypoints"]:
                x, y = round((u + 0.5) * scale - 0.5), round((v + 0.5) * scale - 0.5)
                if flag == 2:  # a filled dot at the keypoint's pixel centre, enlarged
                    assert tuple(canvas[y, x]) == colour
                    drawn += 1
            for a, b in skeletons[obj["category_id"]]:
                (ua, va, fa), (ub, vb, fb) = obj["keypoints"][a], obj["keypoints"][b]
                if fa and fb and math.hypot(ua - ub, va - vb) * scale > 10:  # an edge's middle, clear of the dots
                    x, y = round((ua + ub + 1) / 2 * scale - 0.5), round((va + vb + 1) / 2 * scale - 0.5)
                    assert canvas[y - 1:y + 2, x - 1:x + 2].any()
                    edges += 1
    assert drawn >= 10 and edges >= 5
