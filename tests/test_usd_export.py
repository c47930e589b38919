"""The USD scene of each frame against the frame's own labels: camera, geometry, ids, Blender."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import tarfile
import sys

import numpy as np
import pytest
from PIL import Image
from pxr import Usd, UsdGeom, UsdLux, UsdShade

from sceneforge.labels import usd_scene
from sceneforge.labels.export import export
from sceneforge.labels.usd_scene import scene_usda
from sceneforge.pipeline import render_dataset
from sceneforge.scenes.assets import AssetMaterial, AssetModel, TextureTransform
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample
from sceneforge.scenes.spec import SceneSpec

from .helpers import ROOT, write_recipe

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
    material: {texture_folder: photos, texture_size: 0.1}
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
    write_texture_folder(folder / "photos")
    store = render_dataset(load_recipe(write_recipe(folder, USD_RECIPE)), folder / "out", usd=True).store
    return store, store.records()


def write_texture_folder(folder) -> None:
    """Two small photos (non-square, so that a transposed map would show) for a texture_folder."""
    folder.mkdir()
    rng = np.random.default_rng(7)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)).save(folder / name)


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


def wired(shader: UsdShade.Shader, name: str) -> tuple[UsdShade.Shader, str]:
    """The shader and output an input of ``shader`` is connected to."""
    (source,), _ = shader.GetInput(name).GetConnectedSources()
    return UsdShade.Shader(source.source.GetPrim()), source.sourceName


def decoded(texture: UsdShade.Shader) -> np.ndarray:
    """A UsdUVTexture's image file, read back as RGBA."""
    path = texture.GetInput("file").Get().resolvedPath
    assert path, texture.GetInput("file").Get()
    return np.asarray(Image.open(path).convert("RGBA"))


def rgba(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGBA"))


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
            if change.texture is not None:  # the scene's photo from the texture folder, box-projected
                texture, output = wired(shader, "diffuseColor")
                assert output == "rgb" and texture.GetInput("sourceColorSpace").Get() == "sRGB"
                np.testing.assert_array_equal(decoded(texture), rgba(change.texture))
                assert tuple(texture.GetInput("scale").Get())[:3] == pytest.approx(change.base_color or (1, 1, 1))
                st = UsdGeom.PrimvarsAPI(prim).GetPrimvar("st")
                assert st.GetInterpolation() == UsdGeom.Tokens.faceVarying
                assert len(st.Get()) == 3 * len(UsdGeom.Mesh(prim).GetFaceVertexCountsAttr().Get())
            else:
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
        images = [bpy.path.abspath(n.image.filepath) for m in o.data.materials for n in m.node_tree.nodes
                  if n.type == "TEX_IMAGE" and n.image]
        objects[o.name].update(vertices=len(o.data.vertices), images=images)
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
    assert any(o.material.texture for o in spec.objects)  # the box's photo
    for obj, obj_spec in zip(record["objects"], spec.objects, strict=True):
        imported_object = objects[f"object_{obj['instance_id']}"]
        np.testing.assert_allclose(imported_object["matrix"], obj["world_from_object"], atol=1e-6)
        # The texture-folder photo comes back as the material's image, read from beside the stage.
        photos = [rgba(path) for path in imported_object["images"]]
        if obj_spec.material.texture is None:
            assert not photos
        else:
            assert [p.shape for p in photos] == [(6, 10, 4)] and np.array_equal(photos[0], rgba(obj_spec.material.texture))
            assert all(path.startswith(str(store.root / "scenes" / "textures")) for path in imported_object["images"])
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


# --- Materials with their maps, smooth normals and the HDRI, read back with pxr -------------------

CARDS = """\
seed: 1
count: 1
render: {resolution: [32, 24], samples: 1}
camera: {fov_deg: 50, look_at: [0, 0, 0], distance: 1}
placement: {area: [0.6, 0.6], min_gap: 0.01}
objects:
  - category: card
    count: 2
    asset: {primitive: box, extents: [0.1, 0.1, 0.1]}
"""


def image(seed: int, alpha: bool = False) -> np.ndarray:
    """A small non-square RGBA map with distinct texels (opaque unless ``alpha``)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (4, 6, 4), dtype=np.uint8)
    if not alpha:
        pixels[..., 3] = 255
    return pixels


def two_quads(materials: tuple[AssetMaterial, ...], face_materials: list[int]) -> AssetModel:
    """Two unit squares side by side (4 triangles) with UVs, v up."""
    import trimesh
    vertices = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0], [1, 1, 0], [2, 1, 0]], dtype=float)
    mesh = trimesh.Trimesh(vertices, [[0, 1, 4], [0, 4, 3], [1, 2, 5], [1, 5, 4]], process=False)
    return AssetModel(mesh, materials, np.array(face_materials, dtype=np.int32), vertices[:, :2] / 2, None)


def cards_stage(tmp_path, monkeypatch, model: AssetModel) -> tuple[Usd.Stage, SceneSpec]:
    """Two objects showing ``model``, written with their maps into tmp_path/scene and opened from there."""
    monkeypatch.setattr(usd_scene, "asset_model", lambda asset: model)
    spec = sample(load_recipe(write_recipe(tmp_path, CARDS)), 0)
    folder = tmp_path / "scene"
    folder.mkdir()
    (folder / "000000.usda").write_text(scene_usda(spec, 0.0, folder))
    return Usd.Stage.Open(str(folder / "000000.usda")), spec


def surface_of(prim: Usd.Prim) -> UsdShade.Shader:
    material, _ = UsdShade.MaterialBindingAPI(prim).ComputeBoundMaterial()
    return material.ComputeSurfaceSource()[0]


def texel_value(texture: UsdShade.Shader, output: str, texel: np.ndarray) -> np.ndarray:
    """What UsdUVTexture gives on ``output`` for a raw (linear) texel: texel * scale + bias."""
    value = texel / 255 * np.array(texture.GetInput("scale").Get()) + np.array(texture.GetInput("bias").Get())
    return value[{"rgb": slice(0, 3), "r": 0, "g": 1, "b": 2, "a": 3}[output]]


def test_every_map_is_a_texture_file_wired_to_its_input(tmp_path, monkeypatch):
    maps = {name: image(seed, alpha=name == "texture") for seed, name in enumerate(
        ("texture", "metallic_roughness_texture", "normal_texture", "occlusion_texture", "emissive_texture",
         "opacity_texture", "bump_texture"))}
    transform = TextureTransform(offset=(0.1, 0.2), rotation=0.3, scale=(2.0, 3.0))
    full = AssetMaterial(base_color=(0.5, 0.6, 0.7), roughness=0.3, metallic=0.9, normal_scale=0.5, emissive=(1.0, 0.5, 0.0),
                         emissive_strength=2.0, alpha=0.8, alpha_mode="MASK", alpha_cutoff=0.4, ior=1.45, clearcoat=0.6,
                         clearcoat_roughness=0.2, bump_distance=0.002, uv_transform=transform, thickness=0.02,
                         attenuation_color=(0.9, 0.5, 0.2), attenuation_distance=0.3, **maps)
    red = AssetMaterial(base_color=(1.0, 0.0, 0.0), texture=maps["texture"])  # shares the base map
    stage, spec = cards_stage(tmp_path, monkeypatch, two_quads((full, red), [0, 0, 0, 1]))
    prim = stage.GetPrimAtPath(f"/World/object_{spec.objects[0].instance_id}")
    surface = surface_of(prim)
    texel = (2, 3)

    def check(name: str, key: str, output: str, colour_space: str) -> UsdShade.Shader:
        texture, wired_output = wired(surface, name)
        assert texture.GetIdAttr().Get() == "UsdUVTexture" and wired_output == output, name
        assert texture.GetInput("sourceColorSpace").Get() == colour_space, name
        assert texture.GetInput("file").Get().path.startswith("./textures/"), name  # relative: the folder moves
        np.testing.assert_array_equal(decoded(texture), maps[key])
        return texture

    base = check("diffuseColor", "texture", "rgb", "sRGB")
    assert tuple(base.GetInput("scale").Get())[:3] == pytest.approx(full.base_color)  # linear factors after decoding
    packed = check("roughness", "metallic_roughness_texture", "g", "raw")
    metallic, output = wired(surface, "metallic")
    assert (metallic.GetPath(), output) == (packed.GetPath(), "b")
    g, b = maps["metallic_roughness_texture"][texel][1:3] / 255
    assert texel_value(packed, "g", maps["metallic_roughness_texture"][texel]) == pytest.approx(g * 0.3)
    assert texel_value(packed, "b", maps["metallic_roughness_texture"][texel]) == pytest.approx(b * 0.9)
    normal = check("normal", "normal_texture", "rgb", "raw")
    r, g, b = maps["normal_texture"][texel][:3] / 255
    np.testing.assert_allclose(texel_value(normal, "rgb", maps["normal_texture"][texel]),
                               [(2 * r - 1) * 0.5, (2 * g - 1) * 0.5, 2 * b - 1], atol=1e-6)
    occlusion = check("occlusion", "occlusion_texture", "r", "raw")
    assert texel_value(occlusion, "r", maps["occlusion_texture"][texel]) == pytest.approx(maps["occlusion_texture"][texel][0] / 255)
    emissive = check("emissiveColor", "emissive_texture", "rgb", "sRGB")
    assert tuple(emissive.GetInput("scale").Get())[:3] == pytest.approx((2.0, 1.0, 0.0))
    opacity = check("opacity", "opacity_texture", "r", "raw")  # MASK: opacity map x alpha against the cutoff
    assert texel_value(opacity, "r", maps["opacity_texture"][texel]) == pytest.approx(maps["opacity_texture"][texel][0] / 255 * 0.8)
    assert surface.GetInput("opacityThreshold").Get() == pytest.approx(0.4)
    assert surface.GetInput("ior").Get() == pytest.approx(1.45)
    assert (surface.GetInput("clearcoat").Get(), surface.GetInput("clearcoatRoughness").Get()) == pytest.approx((0.6, 0.2))
    material = UsdShade.MaterialBindingAPI(prim).ComputeBoundMaterial()[0].GetPrim()
    bump = material.GetCustomDataByKey("sceneforge:bump_texture")
    np.testing.assert_array_equal(rgba(str(tmp_path / "scene" / bump)), maps["bump_texture"])
    assert material.GetCustomDataByKey("sceneforge:bump_distance") == pytest.approx(0.002)
    # KHR_materials_volume's medium, which UsdPreviewSurface cannot say.
    assert material.GetCustomDataByKey("sceneforge:thickness") == pytest.approx(0.02)
    assert tuple(material.GetCustomDataByKey("sceneforge:attenuation_color")) == pytest.approx((0.9, 0.5, 0.2))
    assert material.GetCustomDataByKey("sceneforge:attenuation_distance") == pytest.approx(0.3)

    # Every map reads the mesh's st through glTF's texture transform (v down), here in st's v up.
    uv_transform, _ = wired(base, "st")
    assert uv_transform.GetIdAttr().Get() == "UsdTransform2d"
    reader, _ = wired(uv_transform, "in")
    assert reader.GetIdAttr().Get() == "UsdPrimvarReader_float2" and reader.GetInput("varname").Get() == "st"
    assert all(wired(t, "st")[0].GetPath() == uv_transform.GetPath() for t in (packed, normal, occlusion, emissive, opacity))
    st = np.array([0.3, 0.6])
    turn = math.radians(uv_transform.GetInput("rotation").Get())
    scaled = st * np.array(uv_transform.GetInput("scale").Get())
    usd = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]]) @ scaled + np.array(
        uv_transform.GetInput("translation").Get())
    c, s = math.cos(0.3), math.sin(0.3)  # KHR_texture_transform: offset + rotation [[c, s], [-s, c]] @ scale @ uv
    gltf = np.array([0.1, 0.2]) + np.array([[c, s], [-s, c]]) @ (np.array([2.0, 3.0]) * np.array([st[0], 1 - st[1]]))
    np.testing.assert_allclose(usd, [gltf[0], 1 - gltf[1]], atol=1e-6)
    mesh_st = UsdGeom.PrimvarsAPI(prim).GetPrimvar("st")
    assert mesh_st.GetInterpolation() == UsdGeom.Tokens.vertex
    np.testing.assert_allclose(np.array(mesh_st.Get()), np.asarray(UsdGeom.Mesh(prim).GetPointsAttr().Get())[:, :2] / 2)

    # The second material covers the last triangle, through a GeomSubset; its base map is the same file.
    (subset,) = UsdShade.MaterialBindingAPI(prim).GetMaterialBindSubsets()
    assert list(subset.GetIndicesAttr().Get()) == [3]
    red_base, _ = wired(UsdShade.MaterialBindingAPI(subset.GetPrim()).ComputeBoundMaterial()[0].ComputeSurfaceSource()[0],
                        "diffuseColor")
    assert red_base.GetInput("file").Get().resolvedPath == base.GetInput("file").Get().resolvedPath
    assert tuple(red_base.GetInput("scale").Get())[:3] == pytest.approx((1, 0, 0))
    # Both objects' maps are one set of files (content-hash names): seven images in all.
    assert len(list((tmp_path / "scene" / "textures").glob("*.png"))) == len(maps)

    # The folder is relocatable: moved, the stage still finds every map.
    shutil.move(tmp_path / "scene", tmp_path / "moved")
    moved = Usd.Stage.Open(str(tmp_path / "moved" / "000000.usda"))
    texture, _ = wired(surface_of(moved.GetPrimAtPath(prim.GetPath())), "diffuseColor")
    assert texture.GetInput("file").Get().resolvedPath.startswith(str(tmp_path / "moved" / "textures"))
    np.testing.assert_array_equal(decoded(texture), maps["texture"])


def test_glass_blend_and_opaque_opacity(tmp_path, monkeypatch):
    cutout = image(11, alpha=True)
    materials = (
        AssetMaterial(alpha=0.9, alpha_mode="BLEND", transmission=1.0, ior=1.45),  # clear glass
        AssetMaterial(texture=cutout, alpha=0.8, alpha_mode="BLEND", transmission=0.5),  # the base map's alpha
        AssetMaterial(texture=cutout, transmission=0.25),  # OPAQUE: alpha ignored, transmission kept
        AssetMaterial(alpha=0.7, alpha_mode="MASK", alpha_cutoff=0.3, transmission=0.7),  # cut-outs stay cut-outs
    )
    stage, spec = cards_stage(tmp_path, monkeypatch, two_quads(materials, [0, 1, 2, 3]))
    prim = stage.GetPrimAtPath(f"/World/object_{spec.objects[0].instance_id}")
    binding = UsdShade.MaterialBindingAPI(prim)
    bound = [binding.ComputeBoundMaterial()[0]] + [
        UsdShade.MaterialBindingAPI(s.GetPrim()).ComputeBoundMaterial()[0] for s in binding.GetMaterialBindSubsets()]
    assert [list(s.GetIndicesAttr().Get()) for s in binding.GetMaterialBindSubsets()] == [[1], [2], [3]]
    glass, blend, opaque, mask = (m.ComputeSurfaceSource()[0] for m in bound)
    assert glass.GetInput("opacity").Get() == pytest.approx(0.0) and glass.GetInput("ior").Get() == pytest.approx(1.45)
    assert not glass.GetInput("opacityThreshold")  # partial coverage, not a cut-out
    assert {k: bound[0].GetPrim().GetCustomDataByKey(f"sceneforge:{k}") for k in ("transmission", "ior", "alpha", "alpha_mode")} == {
        "transmission": 1.0, "ior": pytest.approx(1.45), "alpha": pytest.approx(0.9), "alpha_mode": "BLEND"}
    texture, output = wired(blend, "opacity")
    assert output == "a" and wired(blend, "diffuseColor")[0].GetPath() == texture.GetPath()
    assert texel_value(texture, "a", cutout[1, 2]) == pytest.approx(cutout[1, 2, 3] / 255 * 0.8 * 0.5)
    assert opaque.GetInput("opacity").Get() == pytest.approx(0.75) and not opaque.GetInput("opacity").HasConnectedSource()
    assert mask.GetInput("opacity").Get() == pytest.approx(0.7) and mask.GetInput("opacityThreshold").Get() == pytest.approx(0.3)
    assert bound[3].GetPrim().GetCustomDataByKey("sceneforge:transmission") == pytest.approx(0.7)


SHAPES = """\
seed: 2
count: 1
render: {resolution: [32, 24], samples: 1}
camera: {fov_deg: 50, look_at: [0, 0, 0], distance: 1}
placement: {area: [0.8, 0.8], min_gap: 0.01}
objects:
  - {category: ball, asset: {primitive: sphere, radius: 0.06}}
  - {category: box, asset: {primitive: box, extents: [0.1, 0.08, 0.06]}}
  - {category: can, asset: {primitive: cylinder, radius: 0.04, height: 0.1}}
background: {hdri: sky.hdr, rotation_deg: 30, strength: 1.7}
"""


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A sphere, a box and a cylinder under an HDRI turned 30 degrees, written as a stage with its files."""
    folder = tmp_path_factory.mktemp("shapes")
    shutil.copy(ROOT / "examples" / "assets" / "hdri" / "studio_small_03_256.hdr", folder / "sky.hdr")
    spec = sample(load_recipe(write_recipe(folder, SHAPES)), 0)
    (folder / "scene").mkdir()
    (folder / "scene" / "000000.usda").write_text(scene_usda(spec, 0.0, folder / "scene"))
    return folder, spec


def corner_normals_of(stage: Usd.Stage, spec: SceneSpec, category: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points, faces (F, 3), normal per face corner (F, 3, 3)) of an object's mesh, in its own frame."""
    (obj,) = [o for o in spec.objects if o.category == category]
    mesh = UsdGeom.Mesh(stage.GetPrimAtPath(f"/World/object_{obj.instance_id}"))
    assert mesh.GetSubdivisionSchemeAttr().Get() == UsdGeom.Tokens.none
    normals = UsdGeom.PrimvarsAPI(mesh).GetPrimvar("normals")
    assert normals.GetInterpolation() == UsdGeom.Tokens.faceVarying
    faces = np.array(mesh.GetFaceVertexIndicesAttr().Get()).reshape(-1, 3)
    flat = np.array(normals.ComputeFlattened(), dtype=np.float64)
    assert flat.shape == (faces.size, 3)
    return np.array(mesh.GetPointsAttr().Get(), dtype=np.float64), faces, flat.reshape(-1, 3, 3)


def test_normals_are_smooth_and_split_at_sharp_edges(shapes):
    folder, spec = shapes
    stage = Usd.Stage.Open(str(folder / "scene" / "000000.usda"))
    # Sphere: the radial direction at each vertex (a faceted sphere would be off by ~0.03 to 0.06).
    points, faces, normals = corner_normals_of(stage, spec, "ball")
    radial = (points - [0, 0, 0.06]) / 0.06
    error = np.linalg.norm(normals - radial[faces], axis=2)
    assert error.max() < 3e-3 and error.mean() < 1e-3  # the icosphere's uneven fans, ~0.15 degrees at worst
    # Box: every corner takes its own face's normal (all edges meet at 90 degrees).
    points, faces, normals = corner_normals_of(stage, spec, "box")
    corners = points[faces]
    face_normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    np.testing.assert_allclose(normals, np.repeat((face_normal / np.linalg.norm(face_normal, axis=1, keepdims=True))[:, None], 3, 1),
                               atol=1e-6)
    # Cylinder: flat caps, smooth sides (the side faces are 7.5 degrees apart, the caps 90).
    points, faces, normals = corner_normals_of(stage, spec, "can")
    corner_points = points[faces]
    cap = np.abs(np.cross(corner_points[:, 1] - corner_points[:, 0], corner_points[:, 2] - corner_points[:, 0])[:, 2]) > 1e-9
    np.testing.assert_allclose(np.abs(normals[cap][..., 2]), 1.0, atol=1e-6)
    side = corner_points[~cap]
    np.testing.assert_allclose(normals[~cap], np.concatenate([side[..., :2] / 0.04, np.zeros(side.shape[:2] + (1,))], axis=2),
                               atol=1e-5)


def test_hdri_is_a_dome_light_beside_the_stage(shapes):
    folder, spec = shapes
    stage = Usd.Stage.Open(str(folder / "scene" / "000000.usda"))
    dome = UsdLux.DomeLight(stage.GetPrimAtPath("/World/background"))
    file = dome.GetTextureFileAttr().Get()
    assert file.path.startswith("./textures/") and file.resolvedPath.startswith(str(folder / "scene" / "textures"))
    assert open(file.resolvedPath, "rb").read() == (folder / "sky.hdr").read_bytes()
    assert dome.GetTextureFormatAttr().Get() == UsdLux.Tokens.latlong
    assert dome.GetIntensityAttr().Get() == pytest.approx(1.7)
    world_from_dome = np.array(dome.ComputeLocalToWorldTransform(Usd.TimeCode.Default())).T[:3, :3]
    turn = math.radians(30)
    for u, v in [(0.5, 0.5), (0.25, 0.5), (0.1, 0.2), (0.8, 0.9), (0.6, 0.05)]:
        # OpenEXR's latlong (UsdLux's convention): u = 0 is longitude +pi, v = 0 latitude +pi/2 on +Y;
        # longitude 0 is +Z and +pi/2 is +X.
        longitude, latitude = math.pi * (1 - 2 * u), math.pi * (0.5 - v)
        local = [math.cos(latitude) * math.sin(longitude), math.sin(latitude), math.cos(latitude) * math.cos(longitude)]
        x, y, z = np.array([[math.cos(turn), math.sin(turn), 0], [-math.sin(turn), math.cos(turn), 0], [0, 0, 1]]) @ (
            world_from_dome @ local)  # the world direction, turned back by the HDRI's rotation
        # Blender's equirectangular lookup (the renderer's world): u = 0.5 - atan2(y, x) / 2 pi, v from the top.
        assert ((0.5 - math.atan2(y, x) / (2 * math.pi)) % 1, 0.5 - math.asin(z) / math.pi) == pytest.approx((u, v), abs=1e-9)


BLENDER_WORLD = """\
import json, sys
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.context.scene.world = bpy.data.worlds.new("world")
bpy.ops.wm.usd_import(filepath=sys.argv[1])
nodes = bpy.context.scene.world.node_tree.nodes
(mapping,) = [n for n in nodes if n.type == "MAPPING"]
(environment,) = [n for n in nodes if n.type == "TEX_ENVIRONMENT"]
(background,) = [n for n in nodes if n.type == "BACKGROUND"]
ball = bpy.data.objects[sys.argv[2]].data
print("RESULT" + json.dumps({"rotation": list(mapping.inputs["Rotation"].default_value),
                             "image": bpy.path.abspath(environment.image.filepath),
                             "strength": background.inputs["Strength"].default_value,
                             "normals": [list(c.vector) for c in ball.corner_normals],
                             "corners": [ball.vertices[loop.vertex_index].co[:] for loop in ball.loops]}))
"""


def test_blender_imports_the_hdri_turn_and_the_smooth_normals(shapes):
    folder, spec = shapes
    (ball,) = [o for o in spec.objects if o.category == "ball"]
    done = subprocess.run([sys.executable, "-c", BLENDER_WORLD, str(folder / "scene" / "000000.usda"), f"object_{ball.instance_id}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    imported = json.loads(line.removeprefix("RESULT"))
    # The renderer turns the HDRI with a Mapping node of rotation (0, 0, -rotation_deg).
    assert imported["rotation"] == pytest.approx([0.0, 0.0, -math.radians(30)], abs=1e-5)
    assert imported["strength"] == pytest.approx(1.7)
    assert open(imported["image"], "rb").read() == (folder / "sky.hdr").read_bytes()
    radial = (np.array(imported["corners"]) - [0, 0, 0.06]) / 0.06
    assert np.linalg.norm(np.array(imported["normals"]) - radial, axis=1).max() < 3e-3


def test_vertex_colours_are_the_base_colour(tmp_path, monkeypatch):
    model = two_quads((AssetMaterial(base_color=(1.0, 1.0, 1.0)),), [0, 0, 0, 0])
    colors = np.random.default_rng(3).integers(0, 256, (6, 4), dtype=np.uint8)
    stage, spec = cards_stage(tmp_path, monkeypatch, dataclasses.replace(model, colors=colors))
    prim = stage.GetPrimAtPath(f"/World/object_{spec.objects[0].instance_id}")
    reader, output = wired(surface_of(prim), "diffuseColor")
    assert reader.GetIdAttr().Get() == "UsdPrimvarReader_float3" and reader.GetInput("varname").Get() == "displayColor"
    display = UsdGeom.PrimvarsAPI(prim).GetPrimvar("displayColor")
    assert display.GetInterpolation() == UsdGeom.Tokens.vertex
    srgb = colors[:, :3] / 255  # USD colours are linear: the sRGB curve undone
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    np.testing.assert_allclose(np.array(display.Get()), linear, atol=1e-6)


def test_a_texture_set_with_a_roughness_scale_and_a_hue_shift(tmp_path):
    """The scene's material changes reach the stage as the renderer applies them: a texture set's
    maps replace the box's, the roughness is scaled, and the colour map is the set's turned by the
    hue shift (checked pixel by pixel with colorsys on the linear values)."""
    import colorsys

    shutil.copytree(ROOT / "examples" / "assets" / "textures" / "sets" / "Bricks102", tmp_path / "bricks")
    recipe = load_recipe(write_recipe(tmp_path, "count: 1\nrender: {resolution: [32, 24], samples: 1}\nobjects:\n"
                                      "  - {category: box, asset: {primitive: box},\n"
                                      "     material: {texture_folder: bricks, roughness_scale: 0.5, hue_shift_deg: 120}}\n"))
    spec = sample(recipe, 0)
    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "frame.usda").write_text(scene_usda(spec, 0.0, tmp_path / "scenes"))
    stage = Usd.Stage.Open(str(tmp_path / "scenes" / "frame.usda"))
    surface = surface_of(stage.GetPrimAtPath(f"/World/object_{spec.objects[0].instance_id}"))
    colour, _ = wired(surface, "diffuseColor")
    source = rgba(str(tmp_path / "bricks" / "Bricks102_256_Color.jpg"))
    written = decoded(colour)
    assert written.shape == source.shape
    for y, x in ((3, 5), (100, 40), (120, 250)):
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in source[y, x, :3] / 255]
        h, s, v = colorsys.rgb_to_hsv(*linear)
        turned = colorsys.hsv_to_rgb((h + 1 / 3) % 1, s, v)
        expected = [255 * (12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055) for c in turned]
        assert np.abs(written[y, x, :3] - np.asarray(expected)).max() <= 1, (y, x)
    roughness, output = wired(surface, "roughness")
    assert output == "g" and tuple(roughness.GetInput("scale").Get())[1] == pytest.approx(0.5)
    normal, _ = wired(surface, "normal")  # the set's normal map replaced the primitive's (none)
    np.testing.assert_array_equal(decoded(normal)[..., :3], rgba(str(tmp_path / "bricks" / "Bricks102_256_NormalGL.jpg"))[..., :3])


def test_the_scenes_glass_and_opacity_changes_reach_the_stage(tmp_path):
    """A recipe's transmission and IOR make the box clear glass in the stage (opacity 0, the IOR,
    the exact values in customData); an opacity image becomes a MASK material's opacity map."""
    Image.fromarray(np.tile(np.array([[0], [255]], dtype=np.uint8), (4, 8))).save(tmp_path / "holes.png")
    recipe = load_recipe(write_recipe(tmp_path, "count: 1\nrender: {resolution: [32, 24], samples: 1}\nobjects:\n"
                                      "  - {category: glass, asset: {primitive: sphere}, material: {transmission: 1, ior: 1.45}}\n"
                                      "  - {category: card, asset: {primitive: box}, material: {opacity_texture: holes.png}}\n"))
    spec = sample(recipe, 0)
    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "frame.usda").write_text(scene_usda(spec, 0.0, tmp_path / "scenes"))
    stage = Usd.Stage.Open(str(tmp_path / "scenes" / "frame.usda"))
    glass, card = (surface_of(stage.GetPrimAtPath(f"/World/object_{o.instance_id}")) for o in spec.objects)
    assert glass.GetInput("opacity").Get() == pytest.approx(0.0) and glass.GetInput("ior").Get() == pytest.approx(1.45)
    material = stage.GetPrimAtPath(glass.GetPath().GetParentPath())
    assert material.IsA(UsdShade.Material) and material.GetCustomDataByKey("sceneforge:transmission") == pytest.approx(1.0)
    opacity, output = wired(card, "opacity")
    assert output == "r" and card.GetInput("opacityThreshold").Get() == pytest.approx(0.5)
    np.testing.assert_array_equal(decoded(opacity)[..., 0], np.asarray(Image.open(tmp_path / "holes.png")))


def test_stage_text_of_each_frame_is_its_whole_stage_exported(tmp_path, monkeypatch):
    """``scene_usda`` makes a scene's text once and splices in each frame's cameras: each frame's
    text must still be the export of its whole stage (here a stereo rig's views, two camera poses
    per scene, two scenes, with and without a folder)."""
    recipe = load_recipe(ROOT / "examples" / "stereo_bin_picking.yaml",
                         {"count": 4, "camera.frames_per_scene": 2, "render.resolution": [64, 48]})
    specs = [sample(recipe, index, name or None) for index in range(recipe.count) for name in recipe.camera_names]
    scene_part, made = usd_scene._scene_part, []
    monkeypatch.setattr(usd_scene, "_scene_part", lambda *args: made.append(args) or scene_part(*args))
    for folder in (tmp_path, None):
        texts = [scene_usda(spec, 0.5, folder) for spec in specs]
        for spec, text in zip(specs, texts):
            stage = scene_part(spec, folder)
            usd_scene._add_cameras(stage, spec, 0.5)
            assert text == stage.GetRootLayer().ExportToString(), (spec.index, spec.camera.name, folder)
        assert len(set(texts)) == len(texts)  # every view's own cameras, every scene's own objects
    assert len(made) == 2 * 2  # once per scene and folder: the other views reuse its text
