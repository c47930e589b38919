"""Asset files: every format loads into metres, +Z up, standing on z = 0 and centred on the Z axis,
with sizes matching what the file itself says; materials render; bad assets name file and line."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from sceneforge.floor.errors import UserError
from sceneforge.pipeline import render_dataset
from sceneforge.scenes.assets import AssetError, asset_model, file_asset
from sceneforge.scenes.mesh import Mesh
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample

from .helpers import ROOT, posed_trimesh, run_cli, write_recipe

ASSETS = ROOT / "examples" / "assets"
CAR_KIT = ASSETS / "usd" / "USD_Mini_Car_Kit" / "assets" / "vehicles" / "vehicleVariants.usda"


def y_up_to_z_up(extent: np.ndarray) -> np.ndarray:
    """Sizes along x, y, z of a +Y-up box once +Z is up."""
    return np.array([extent[0], extent[2], extent[1]])


def assert_normalised(mesh: Mesh, expected_size) -> None:
    low, high = mesh.bounds
    assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
    assert np.allclose(high - low, expected_size, rtol=1e-5, atol=1e-9)
    assert low[2] == pytest.approx(0.0, abs=1e-12)
    assert np.allclose((low[:2] + high[:2]) / 2, 0.0, atol=1e-9)


def obj_vertices(path) -> np.ndarray:
    """The 'v' lines of an OBJ file, read without any mesh library."""
    return np.array([line.split()[1:4] for line in path.read_text().splitlines() if line.startswith("v ")], dtype=float)


def usd_extent(path, variants=None) -> tuple[np.ndarray, float, str]:
    """Size of the box around every mesh point of a composed stage in its own units (the files'
    authored extents can be stale), its metersPerUnit and upAxis."""
    from pxr import Usd, UsdGeom

    stage = Usd.Stage.Open(str(path))
    stage.SetEditTarget(stage.GetSessionLayer())
    for name, value in (variants or {}).items():
        stage.GetDefaultPrim().GetVariantSets().GetVariantSet(name).SetVariantSelection(value)
    xforms, points = UsdGeom.XformCache(), []
    for prim in stage.Traverse():
        if prim.IsA(UsdGeom.Mesh):
            world = np.asarray(xforms.GetLocalToWorldTransform(prim))
            points.append(np.asarray(UsdGeom.Mesh(prim).GetPointsAttr().Get()) @ world[:3, :3] + world[3, :3])
    return np.ptp(np.concatenate(points), axis=0), UsdGeom.GetStageMetersPerUnit(stage), UsdGeom.GetStageUpAxis(stage)


def test_obj_with_mtl_texture_and_uvs():
    model = asset_model(file_asset(ASSETS / "spot" / "spot.obj"))
    vertices = obj_vertices(ASSETS / "spot" / "spot.obj")
    assert_normalised(model.mesh, y_up_to_z_up(np.ptp(vertices, axis=0)))
    assert model.uv is not None and model.uv.shape == (len(model.mesh.vertices), 2)
    (material,) = model.materials
    assert material.texture is not None and material.texture.shape == (1024, 1024, 4)  # spot_texture.png via the MTL


@pytest.mark.parametrize("name", ["spot_vertexcolor.ply", "spot_triangulated.stl"])
def test_ply_and_stl_match_the_obj(name):
    """Both were made from the OBJ: the same size, and the STL's unshared corners are welded."""
    model = asset_model(file_asset(ASSETS / "spot" / name))
    raw = trimesh.load(ASSETS / "spot" / name, process=False)
    assert_normalised(model.mesh, y_up_to_z_up(np.ptp(obj_vertices(ASSETS / "spot" / "spot.obj"), axis=0)))
    assert len(model.mesh.faces) == len(raw.faces) == 5856
    assert len(model.mesh.vertices) < len(raw.faces) * 3
    if name.endswith(".ply"):
        assert model.colors is not None and len(np.unique(model.colors, axis=0)) > 10  # colours by height


def test_glb_vertex_colours_and_scale():
    model = asset_model(file_asset(ASSETS / "gltf" / "BoxVertexColors.glb"))
    assert_normalised(model.mesh, [1.0, 1.0, 1.0])
    assert model.colors is not None and model.materials[0].base_color == (1.0, 1.0, 1.0)
    scaled = asset_model(file_asset(ASSETS / "gltf" / "BoxVertexColors.glb", scale=0.25))
    assert_normalised(scaled.mesh, [0.25, 0.25, 0.25])


@pytest.mark.parametrize("vehicle", ["sedan", "tractor"])
def test_usd_variants_references_and_textures(vehicle):
    size, meters_per_unit, up = usd_extent(CAR_KIT, {"wheels": vehicle})
    assert up == "Y"
    ref = file_asset(CAR_KIT, variants={"wheels": vehicle})
    model = asset_model(ref)
    assert_normalised(model.mesh, y_up_to_z_up(size) * meters_per_unit)
    assert any(m.texture is not None for m in model.materials)  # UsdUVTexture colours of the kit
    assert model.uv is not None
    normalised = asset_model(file_asset(CAR_KIT, variants={"wheels": vehicle}, size=0.3))
    assert max(np.ptp(normalised.mesh.vertices, axis=0)) == pytest.approx(0.3)


def test_usdz_is_z_up_and_reads_packaged_textures():
    path = ASSETS / "usd" / "RoughnessTest.usdz"
    size, meters_per_unit, up = usd_extent(path)
    assert up == "Z"
    model = asset_model(file_asset(path))
    assert_normalised(model.mesh, size * meters_per_unit)
    assert len(model.materials) == 6 and model.materials[0].texture is not None


@pytest.mark.parametrize("suffix", [".usdc", ".usda"])
def test_usd_units_axis_payload_variant_and_preview_surface(tmp_path, suffix):
    """A stage written here in centimetres, +Y up: a 10 x 20 x 30 cm box in a payload, a variant
    doubling it, and a UsdPreviewSurface colour."""
    from pxr import Gf, Sdf, Usd, UsdGeom, UsdShade

    geometry = Usd.Stage.CreateNew(str(tmp_path / f"box{suffix}"))
    top = UsdGeom.Xform.Define(geometry, "/Geo").GetPrim()
    box = UsdGeom.Mesh.Define(geometry, "/Geo/Box")
    corners = [(x, y, z) for x in (0, 10) for y in (0, 20) for z in (0, 30)]
    box.CreatePointsAttr(corners)
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    box.CreateFaceVertexCountsAttr([4] * 6)
    box.CreateFaceVertexIndicesAttr([i for quad in quads for i in quad])
    material = UsdShade.Material.Define(geometry, "/Geo/Red")
    shader = UsdShade.Shader.Define(geometry, "/Geo/Red/Surface")
    shader.CreateIdAttr("UsdPreviewSurface")
    shader.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).Set(Gf.Vec3f(0.7, 0.1, 0.05))
    shader.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(0.25)
    material.CreateSurfaceOutput().ConnectToSource(shader.ConnectableAPI(), "surface")
    UsdShade.MaterialBindingAPI.Apply(box.GetPrim()).Bind(material)
    geometry.SetDefaultPrim(top)
    geometry.Save()

    stage = Usd.Stage.CreateNew(str(tmp_path / f"asset{suffix}"))
    UsdGeom.SetStageMetersPerUnit(stage, 0.01)
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
    root = UsdGeom.Xform.Define(stage, "/Asset").GetPrim()
    stage.SetDefaultPrim(root)
    root.GetPayloads().AddPayload(f"./box{suffix}")
    sizes = root.GetVariantSets().AddVariantSet("size")
    for name, factor in (("small", 1.0), ("large", 2.0)):
        sizes.AddVariant(name)
        sizes.SetVariantSelection(name)
        with sizes.GetVariantEditContext():
            UsdGeom.Xformable(root).AddScaleOp().Set(Gf.Vec3f(factor))
    sizes.SetVariantSelection("small")
    stage.Save()

    small = asset_model(file_asset(tmp_path / f"asset{suffix}"))
    assert_normalised(small.mesh, [0.1, 0.3, 0.2])  # x stays, file z becomes -y, file y becomes z
    assert len(small.mesh.faces) == 12 and small.mesh.is_watertight and posed_trimesh(small.mesh).volume > 0  # outward winding
    (red,) = small.materials
    assert red.base_color == pytest.approx((0.7, 0.1, 0.05)) and red.roughness == 0.25
    large_ref = file_asset(tmp_path / f"asset{suffix}", variants={"size": "large"})
    assert_normalised(asset_model(large_ref).mesh, [0.2, 0.6, 0.4])
    assert large_ref.hash != file_asset(tmp_path / f"asset{suffix}").hash
    with pytest.raises(AssetError, match="variant set 'size' has no variant 'huge'; it has: large, small"):
        file_asset(tmp_path / f"asset{suffix}", variants={"size": "huge"})


def test_hash_is_content_not_path(tmp_path):
    copy = tmp_path / "copy.glb"
    copy.write_bytes((ASSETS / "gltf" / "BoxVertexColors.glb").read_bytes())
    original = file_asset(ASSETS / "gltf" / "BoxVertexColors.glb")
    assert file_asset(copy).hash == original.hash
    assert file_asset(copy, size=0.1).hash != original.hash


MATERIALS_RECIPE = """\
seed: 3
count: 1
render: {resolution: [96, 96], samples: 1, albedo: true}
camera: {fov_deg: 40, distance: 1.6, elevation_deg: 90}
placement: {area: [0.3, 0.3], min_gap: 0.02}
assets:
  - {category: cube, path: cube.glb, size: 0.2}
objects:
  - category: cube
    asset: {library: cube}
  - category: crate
    asset: {primitive: box, extents: [0.15, 0.15, 0.1]}
    material: {texture_folder: checker, texture_size: 0.05, color: [1, 0, 0]}
ground:
  size: 3
  material: {color: [0.5, 0.5, 0.5]}
"""


def test_vertex_colours_and_texture_folders_render_into_the_albedo(tmp_path):
    import cv2

    (tmp_path / "cube.glb").write_bytes((ASSETS / "gltf" / "BoxVertexColors.glb").read_bytes())
    (tmp_path / "checker").mkdir()
    checker = np.kron((np.indices((4, 4)).sum(axis=0) % 2) * 255, np.ones((16, 16))).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "checker" / "black_white.png"), checker)
    recipe = load_recipe(write_recipe(tmp_path, MATERIALS_RECIPE))
    store = render_dataset(recipe, tmp_path / "out").store
    (record,) = store.records()
    albedo, instance = store.read_rgb(record, "albedo").astype(int), store.read_instance(record)
    spec = sample(recipe, 0)
    cube, crate = spec.objects
    # Each corner of the cube's top face, seen from straight above, shows (nearly) its own colour.
    model = asset_model(cube.asset)
    top = np.flatnonzero(np.isclose(model.mesh.vertices[:, 2], model.mesh.vertices[:, 2].max()))
    centre = model.mesh.vertices[top].mean(axis=0)
    world_from_camera = np.asarray(spec.camera.world_from_camera)
    camera_from_object = np.linalg.inv(world_from_camera) @ np.asarray(cube.world_from_object)
    colours = model.colors[top, :3].astype(int)
    assert len(np.unique(colours, axis=0)) == 4
    for vertex, colour in zip(top, colours):
        point = camera_from_object[:3, :3] @ (0.8 * model.mesh.vertices[vertex] + 0.2 * centre) + camera_from_object[:3, 3]
        u, v, w = np.asarray(spec.camera.K) @ point
        pixel = albedo[int(round(v / w)), int(round(u / w))]
        assert instance[int(round(v / w)), int(round(u / w))] == cube.instance_id
        assert np.argmin(np.abs(colours - pixel).sum(axis=1)) == list(top).index(vertex), (pixel, colours)
    # The checker texture, box-projected onto the crate's top and tinted red: black and red squares.
    crate_albedo = albedo[instance == crate.instance_id]
    assert crate_albedo[:, 0].min() < 40 and crate_albedo[:, 0].max() > 200
    assert crate_albedo[:, 1:].max() < 40
    # The ground's colour override is uniform.
    assert np.ptp(albedo[instance == 0], axis=0).max() <= 2


BAD_ASSET_CASES = {
    "missing": ("path: nope.glb", "assets[0].path: cannot read {tmp}/nope.glb: no such file"),
    "truncated": ("path: truncated.glb", "assets[0].path: cannot read {tmp}/truncated.glb: "),
    "broken_usd": ("path: broken.usda", "assets[0].path: cannot read {tmp}/broken.usda: "),
    "empty_glob": ("path: 'empty/*.usdz'", "assets[0].path: empty/*.usdz: matches no asset files"),
    "oversize": ("path: huge.stl", "assets[0].path: cannot read {tmp}/huge.stl: 268435457 bytes is more than the 268435456 byte limit"),
    "missing_reference": ("path: refers.usda", "assets[0].path: cannot read {tmp}/refers.usda: Could not open asset @{tmp}/gone.usda@"),
    "bad_variant": ("path: '{car}', variants: {{wheels: boat}}", "assets[0].path: cannot read {car}: variant set 'wheels' has no variant 'boat'"),
}


@pytest.mark.parametrize("case", sorted(BAD_ASSET_CASES))
def test_bad_assets_exit_2_naming_file_line_and_field(tmp_path, case):
    entry, expected = BAD_ASSET_CASES[case]
    (tmp_path / "truncated.glb").write_bytes((ASSETS / "gltf" / "BoxVertexColors.glb").read_bytes()[:700])
    (tmp_path / "broken.usda").write_text('#usda 1.0\ndef Mesh "box" {\n    point3f[] points = [(0, 0\n')
    (tmp_path / "refers.usda").write_text('#usda 1.0\n(defaultPrim = "A")\ndef Xform "A" (prepend references = @./gone.usda@) {}\n')
    (tmp_path / "empty").mkdir()
    with open(tmp_path / "huge.stl", "wb") as huge:
        huge.truncate((256 << 20) + 1)  # sparse: no disk space used
    entry = entry.format(car=CAR_KIT)
    recipe = write_recipe(tmp_path, f"assets:\n  - {{category: a, {entry}}}\nobjects:\n  - {{category: a, asset: {{library: a}}}}\n")
    result = run_cli("validate", recipe)
    assert result.returncode == 2, result.stderr
    assert f"{recipe}:2:" in result.stderr and expected.format(tmp=tmp_path, car=CAR_KIT) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("text", "expected"), [
    ("objects:\n  - {category: a, asset: {library: cars}}\n",
     ":2:36: objects[0].asset.library: no asset category 'cars'; the assets section has: none (add an assets section)"),
    ("objects:\n  - category: a\n    asset: {primitive: box}\n    material: {texture_folder: nowhere}\n",
     ":4:32: objects[0].material.texture_folder: {tmp}/nowhere: no such folder"),
    ("assets:\n  - {category: a, path: x.glb, scale: 2, size: 1}\n", ":2:5: assets[0]: give scale or size, not both"),
])
def test_bad_references_name_line_and_field(tmp_path, text, expected):
    with pytest.raises(UserError) as info:
        load_recipe(write_recipe(tmp_path, text))
    assert str(info.value) == f"{tmp_path}/recipe.yaml" + expected.format(tmp=tmp_path)


def test_recipe_hash_follows_the_asset_files_bytes(tmp_path):
    asset = tmp_path / "thing.glb"
    asset.write_bytes((ASSETS / "gltf" / "BoxVertexColors.glb").read_bytes())
    path = write_recipe(tmp_path, "assets:\n  - {category: a, path: thing.glb}\nobjects:\n  - {category: a, asset: {library: a}}\n")
    before = load_recipe(path)
    assert load_recipe(path).content_hash() == before.content_hash()
    asset.write_bytes(trimesh.creation.box(extents=(0.1, 0.2, 0.3)).export(file_type="glb"))
    after = load_recipe(path)
    assert after.content_hash() != before.content_hash()
    (listed,) = after.library["a"]
    assert_normalised(asset_model(listed.ref()).mesh, [0.1, 0.3, 0.2])  # glTF is +Y up
