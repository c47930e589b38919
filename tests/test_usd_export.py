"""The USD scene of each frame against the frame's own labels: camera, geometry, ids, Blender."""

from __future__ import annotations

import json
import subprocess
import tarfile
import sys

import numpy as np
import pytest
from pxr import Usd, UsdGeom, UsdShade

from sceneforge.labels.export import export
from sceneforge.pipeline import render_dataset
from sceneforge.scenes.assets import AssetMaterial
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.spec import SceneSpec

from .helpers import write_recipe

# Non-square pixels, an off-centre principal point, two frames of one scene, every light type.
USD_RECIPE = """\
seed: 3
count: 4
render: {resolution: [96, 72], samples: 1}
camera:
  intrinsics: {fx: 90, fy: 110, cx: 44.5, cy: 38.25}
  look_at: [0, 0, 0.05]
  distance: 1.1
  elevation_deg: {uniform: [40, 60]}
  azimuth_deg: {uniform: [0, 360]}
  frames_per_scene: 2
placement: {area: [0.45, 0.45], min_gap: 0.05}
objects:
  - category: box
    asset: {primitive: box, extents: [0.12, {uniform: [0.08, 0.14]}, 0.1]}
  - category: ball
    count: 2
    asset: {primitive: sphere, radius: 0.06}
  - category: ring
    asset: {primitive: torus, major_radius: 0.07, minor_radius: 0.02}
ground: {size: 3}
background: {color: [0.2, 0.3, 0.4], strength: 0.7}
lights:
  - {type: sun, energy: 3, elevation_deg: 60, azimuth_deg: 30}
  - {type: point, energy: 40}
  - {type: area, energy: 30, size: 0.7}
"""
CV_TO_USD = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV camera axes -> USD's (+Y up, looking down -Z)


@pytest.fixture(scope="module")
def usd_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("usd")
    store = render_dataset(load_recipe(write_recipe(folder, USD_RECIPE)), folder / "out", usd=True).store
    return store, store.records()


def open_stage(store, record) -> Usd.Stage:
    stage = Usd.Stage.Open(str(store.path(record, "usd")))
    assert stage is not None
    return stage


def labeled_prims(stage: Usd.Stage) -> dict[int, Usd.Prim]:
    """The prims carrying a SceneForge instance id, by id."""
    found = {}
    for prim in stage.Traverse():
        instance_id = prim.GetCustomDataByKey("sceneforge:instance_id")
        if instance_id is not None:
            assert instance_id not in found
            found[instance_id] = prim
    return found


def usd_camera(stage: Usd.Stage):
    (camera,) = [p for p in stage.Traverse() if p.IsA(UsdGeom.Camera)]
    return UsdGeom.Camera(camera).GetCamera(Usd.TimeCode.Default())


def project(points_world: np.ndarray, gf_camera, width: int, height: int) -> np.ndarray:
    """Pixel-edge coordinates (x right, y down; the image spans [0, W] x [0, H]) through pxr's frustum."""
    world_to_clip = np.array(gf_camera.transform.GetInverse() * gf_camera.frustum.ComputeProjectionMatrix())
    clip = np.c_[points_world, np.ones(len(points_world))] @ world_to_clip  # Gf: row vectors
    ndc = clip[:, :2] / clip[:, 3:]
    return np.stack([(ndc[:, 0] + 1) / 2 * width, (1 - ndc[:, 1]) / 2 * height], axis=-1)


def iou(a: list[float], b: list[float]) -> float:
    """IoU of two [x0, y0, x1, y1] boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


def test_every_frame_lists_a_stage_that_opens(usd_store):
    store, records = usd_store
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    for record in records:
        assert record["files"]["usd"] == f"scenes/{record['index']:06d}.usda"
        stage = open_stage(store, record)
        assert UsdGeom.GetStageMetersPerUnit(stage) == 1.0 and UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.z
        assert stage.GetDefaultPrim().GetPath() == "/World"
    assert not list(store.root.rglob(".*.tmp"))


def test_camera_reconstructs_K_pose_and_clipping(usd_store):
    store, records = usd_store
    for record in records:
        camera = record["camera"]
        width, height = camera["width"], camera["height"]
        gf_camera = usd_camera(open_stage(store, record))
        # pxr's projection maps the image's pixel edges to NDC [-1, 1]; pixel centres sit half a pixel in.
        P = np.array(gf_camera.frustum.ComputeProjectionMatrix())
        fx, fy = width / 2 * P[0, 0], height / 2 * P[1, 1]
        cx, cy = width / 2 * (1 - P[2, 0]) - 0.5, height / 2 * (1 + P[2, 1]) - 0.5
        (kfx, _, kcx), (_, kfy, kcy), _ = camera["K"]
        np.testing.assert_allclose([fx, fy, cx, cy], [kfx, kfy, kcx, kcy], rtol=1e-6)
        world_from_camera = np.array(gf_camera.transform).T @ CV_TO_USD
        np.testing.assert_allclose(world_from_camera, camera["world_from_camera"], atol=1e-9)
        spec = SceneSpec.from_json(store.path(record, "scene").read_text())
        near_far = gf_camera.clippingRange
        assert (near_far.min, near_far.max) == pytest.approx((spec.camera.clip_start, spec.camera.clip_end))
        stage = open_stage(store, record)  # held while its prims are read
        exposure = UsdGeom.Camera(stage.GetPrimAtPath("/World/camera")).GetExposureAttr().Get()
        assert exposure == pytest.approx(record["exposure_ev"], abs=1e-4)  # the EV the image was developed with
    # Frames 0 and 1 show one scene from two poses: the same objects, another camera.
    first, second = (open_stage(store, r) for r in records[:2])
    assert labeled_prims(first).keys() == labeled_prims(second).keys()
    assert not np.allclose(np.array(usd_camera(first).transform), np.array(usd_camera(second).transform))


def test_projected_meshes_land_on_the_labeled_boxes(usd_store):
    store, records = usd_store
    checked = 0
    for record in records:
        stage = open_stage(store, record)
        gf_camera = usd_camera(stage)
        prims = labeled_prims(stage)
        for obj in record["objects"]:
            if obj["visible_pixels"] < 30 or obj["visibility"] < 0.99 or obj["truncation"] > 0:
                continue  # occluded or cut by the border: the mask's box is smaller than the mesh's
            mesh = UsdGeom.Mesh(prims[obj["instance_id"]])
            local = np.array(mesh.GetPointsAttr().Get(), dtype=np.float64)
            to_world = np.array(mesh.ComputeLocalToWorldTransform(Usd.TimeCode.Default()))
            world = np.c_[local, np.ones(len(local))] @ to_world
            uv = project(world[:, :3], gf_camera, record["camera"]["width"], record["camera"]["height"])
            x, y, w, h = obj["bbox_xywh"]
            assert iou([*uv.min(axis=0), *uv.max(axis=0)], [x, y, x + w, y + h]) >= 0.8, (record["index"], obj)
            checked += 1
    assert checked >= 4, "too few unoccluded objects to check"


def test_ids_and_materials_match_the_frame(usd_store):
    store, records = usd_store
    for record in records:
        stage = open_stage(store, record)
        spec = SceneSpec.from_json(store.path(record, "scene").read_text())
        prims = labeled_prims(stage)
        assert sorted(prims) == sorted(o["instance_id"] for o in record["objects"])
        for obj, obj_spec in zip(record["objects"], spec.objects, strict=True):
            prim = prims[obj["instance_id"]]
            assert prim.IsA(UsdGeom.Mesh)
            assert {k: prim.GetCustomDataByKey(f"sceneforge:{k}") for k in ("category_id", "category", "asset")} == {
                "category_id": obj["category_id"], "category": obj["category"], "asset": obj["asset"]}
            material, _ = UsdShade.MaterialBindingAPI(prim).ComputeBoundMaterial()
            shader = material.ComputeSurfaceSource()[0]
            own, change = AssetMaterial(), obj_spec.material  # primitives' own material, where the recipe keeps it
            assert tuple(shader.GetInput("diffuseColor").Get()) == pytest.approx(change.base_color or own.base_color)
            assert shader.GetInput("roughness").Get() == pytest.approx(own.roughness if change.roughness is None else change.roughness)
            assert shader.GetInput("metallic").Get() == pytest.approx(own.metallic if change.metallic is None else change.metallic)
        ground = stage.GetPrimAtPath("/World/ground")
        assert ground.IsA(UsdGeom.Mesh) and not ground.GetCustomDataByKey("sceneforge")


BLENDER_IMPORT = """\
import json, sys
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.context.scene.world = bpy.data.worlds.new("world")  # the importer turns the dome light into it
result = bpy.ops.wm.usd_import(filepath=sys.argv[1])
objects = {o.name: {"type": o.type, "matrix": [list(r) for r in o.matrix_world]} for o in bpy.data.objects}
for o in bpy.data.objects:
    if o.type == "CAMERA":
        objects[o.name].update(lens=o.data.lens, sensor_width=o.data.sensor_width, sensor_fit=o.data.sensor_fit,
                               shift_x=o.data.shift_x, shift_y=o.data.shift_y)
    elif o.type == "LIGHT":
        objects[o.name].update(light=o.data.type, energy=o.data.energy, color=list(o.data.color))
    elif o.type == "MESH":
        objects[o.name].update(vertices=len(o.data.vertices))
background = bpy.context.scene.world.node_tree.nodes["Background"].inputs
print("RESULT" + json.dumps({"result": sorted(result), "objects": objects,
                             "background": [list(background["Color"].default_value)[:3], background["Strength"].default_value]}))
"""


def test_blender_reimports_the_frame(usd_store):
    store, records = usd_store
    record = records[1]
    spec = SceneSpec.from_json(store.path(record, "scene").read_text())
    done = subprocess.run([sys.executable, "-c", BLENDER_IMPORT, str(store.path(record, "usd"))],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    imported = json.loads(line.removeprefix("RESULT"))
    assert imported["result"] == ["FINISHED"]
    objects = imported["objects"]
    meshes = {name for name, o in objects.items() if o["type"] == "MESH"}
    assert meshes == {f"object_{o['instance_id']}" for o in record["objects"]} | {"ground"}
    (camera,) = [o for o in objects.values() if o["type"] == "CAMERA"]
    np.testing.assert_allclose(camera["matrix"], np.asarray(record["camera"]["world_from_camera"]) @ CV_TO_USD, atol=1e-5)
    # Blender's view plane as the render worker sets it up for K (its pixel aspect, fy / fx, is a
    # render setting that USD cannot carry).
    (fx, _, cx), (_, fy, cy), _ = record["camera"]["K"]
    width, height = record["camera"]["width"], record["camera"]["height"]
    assert camera["sensor_fit"] == "HORIZONTAL" and camera["lens"] / camera["sensor_width"] * width == pytest.approx(fx)
    assert camera["shift_x"] == pytest.approx(((width - 1) / 2 - cx) / width, abs=1e-6)
    assert camera["shift_y"] == pytest.approx((cy - (height - 1) / 2) * fx / fy / width, abs=1e-6)
    for obj in record["objects"]:
        np.testing.assert_allclose(objects[f"object_{obj['instance_id']}"]["matrix"], obj["world_from_object"], atol=1e-6)
    lights = [objects[f"light_{i}"] for i in range(len(spec.lights))]
    assert [(o["light"], o["energy"]) for o in lights] == [(s.type.upper(), pytest.approx(s.energy)) for s in spec.lights]
    for light, light_spec in zip(lights, spec.lights):
        spec_pose, blender_pose = np.asarray(light_spec.world_from_light), np.asarray(light["matrix"])
        # Blender lights shine along local -Z with +Y up; SceneSpec lights along +Z with +Y down.
        np.testing.assert_allclose(blender_pose[:, [0, 3]], spec_pose[:, [0, 3]], atol=1e-6)
        np.testing.assert_allclose(blender_pose[:, [1, 2]], -spec_pose[:, [1, 2]], atol=1e-6)
    assert imported["background"] == [pytest.approx(spec.background_color), pytest.approx(spec.background_strength)]


def test_webdataset_samples_leave_the_usd_scene_out(usd_store, tmp_path):
    store, _ = usd_store
    dest = export(store, "webdataset", tmp_path / "shards")
    names = [n for shard in sorted(dest.glob("*.tar")) for n in tarfile.open(shard).getnames()]
    assert "000000.depth.npy" in names and not [n for n in names if n.endswith(".usda")]
