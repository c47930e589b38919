"""PBR maps: read from glTF (core and KHR extensions), UsdPreviewSurface and texture sets, checked
against the files' own contents, and rendered, each map showing the effect its physics predicts."""

from __future__ import annotations

import base64
import io
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from sceneforge.floor.errors import UserError
from sceneforge.pipeline import render_dataset
from sceneforge.render.blender_scene import blender_uv_mapping
from sceneforge.scenes.assets import (
    AssetError,
    TextureTransform,
    asset_model,
    file_asset,
    hue_shifted,
    texture_files,
    texture_maps,
    with_texture,
)
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample

from .helpers import ROOT, write_recipe

SETS = ROOT / "examples" / "assets" / "textures" / "sets"


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def slab_gltf(path: Path, material: dict, images: list[np.ndarray], size: float = 0.12, extensions=(),
              depth: float = 0.01) -> Path:
    """A glTF file of a square slab (top face up, +Y in glTF, bottom face ``depth`` below) with UVs
    (u along +X, v along -Z in glTF), one material, and ``images`` as PNG data URIs (texture i =
    image i)."""
    h = size / 2
    top = [(-h, depth, h), (h, depth, h), (h, depth, -h), (-h, depth, -h)]
    bottom = [(x, 0.0, z) for x, _, z in top]
    positions = np.array(top + bottom, dtype=np.float32)
    uv = np.array([(0, 1), (1, 1), (1, 0), (0, 0)] * 2, dtype=np.float32)
    indices = np.array([0, 1, 2, 0, 2, 3, 4, 6, 5, 4, 7, 6], dtype=np.uint16)
    blob = positions.tobytes() + uv.tobytes() + indices.tobytes()
    document = {
        "asset": {"version": "2.0"},
        "extensionsUsed": list(extensions),
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "TEXCOORD_0": 1}, "indices": 2, "material": 0}]}],
        "buffers": [{"byteLength": len(blob), "uri": data_uri(blob, "application/octet-stream")}],
        "bufferViews": [
            {"buffer": 0, "byteOffset": 0, "byteLength": positions.nbytes},
            {"buffer": 0, "byteOffset": positions.nbytes, "byteLength": uv.nbytes},
            {"buffer": 0, "byteOffset": positions.nbytes + uv.nbytes, "byteLength": indices.nbytes},
        ],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": 8, "type": "VEC3",
             "min": positions.min(axis=0).tolist(), "max": positions.max(axis=0).tolist()},
            {"bufferView": 1, "componentType": 5126, "count": 8, "type": "VEC2"},
            {"bufferView": 2, "componentType": 5123, "count": len(indices), "type": "SCALAR"},
        ],
        "materials": [material],
        "images": [{"uri": data_uri(png(image), "image/png")} for image in images],
        "textures": [{"source": i} for i in range(len(images))],
    }
    path.write_text(json.dumps(document))
    return path


def flat(rgba: tuple[int, int, int, int], size: int = 8) -> np.ndarray:
    return np.tile(np.array(rgba, dtype=np.uint8), (size, size, 1))


def halves(left: tuple, right: tuple, size: int = 8) -> np.ndarray:
    """An image whose left half (small u) is ``left`` and right half ``right``."""
    image = flat(left, size)
    image[:, size // 2:] = right
    return image


def tilted_normal(degrees: float) -> np.ndarray:
    """A tangent-space normal map tilted towards +U (the tangent) by ``degrees``."""
    t = math.radians(degrees)
    return flat((round(127.5 + 127.5 * math.sin(t)), 128, round(127.5 + 127.5 * math.cos(t)), 255))


# ---- reading -------------------------------------------------------------------------------------

def test_gltf_core_maps_and_extensions_are_read_as_the_file_says(tmp_path):
    base, packed, normal, occlusion, emissive = (
        halves((200, 10, 10, 255), (10, 200, 10, 100)), flat((0, 90, 200, 255)), tilted_normal(30),
        flat((180, 0, 0, 255)), flat((255, 255, 255, 255)))
    transform = {"offset": [0.25, -0.5], "rotation": 0.3, "scale": [2.0, 3.0]}
    material = {
        "name": "everything",
        "pbrMetallicRoughness": {
            "baseColorFactor": [0.5, 0.25, 1.0, 0.4], "baseColorTexture": {
                "index": 0, "extensions": {"KHR_texture_transform": transform}},
            "metallicFactor": 0.7, "roughnessFactor": 0.6, "metallicRoughnessTexture": {"index": 1},
        },
        "normalTexture": {"index": 2, "scale": 0.8},
        "occlusionTexture": {"index": 3, "texCoord": 1},  # a second UV set, which the mesh lacks: dropped
        "emissiveTexture": {"index": 4}, "emissiveFactor": [0.2, 0.4, 0.6],
        "alphaMode": "MASK", "alphaCutoff": 0.3,
        "extensions": {
            "KHR_materials_emissive_strength": {"emissiveStrength": 5.0},
            "KHR_materials_transmission": {"transmissionFactor": 0.9},
            "KHR_materials_volume": {"thicknessFactor": 0.1},
            "KHR_materials_ior": {"ior": 1.33},
            "KHR_materials_clearcoat": {"clearcoatFactor": 0.75, "clearcoatRoughnessFactor": 0.2},
            "KHR_materials_sheen": {"sheenColorFactor": [0.9, 0.1, 0.3], "sheenRoughnessFactor": 0.45},
        },
    }
    path = slab_gltf(tmp_path / "slab.gltf", material, [base, packed, normal, occlusion, emissive],
                     extensions=material["extensions"].keys() | {"KHR_texture_transform"})
    (got,) = asset_model(file_asset(path)).materials
    assert np.array_equal(got.texture, base)  # RGBA as stored, alpha included
    assert np.array_equal(got.metallic_roughness_texture, packed)
    assert np.array_equal(got.normal_texture, normal)
    assert np.array_equal(got.emissive_texture, emissive)
    assert got.occlusion_texture is None
    assert got.base_color == pytest.approx((0.5, 0.25, 1.0), abs=1 / 255)
    assert (got.alpha, got.alpha_mode, got.alpha_cutoff) == (pytest.approx(0.4), "MASK", pytest.approx(0.3))
    assert (got.roughness, got.metallic, got.normal_scale) == pytest.approx((0.6, 0.7, 0.8))
    assert got.emissive == pytest.approx((0.2, 0.4, 0.6)) and got.emissive_strength == 5.0
    assert (got.transmission, got.ior) == pytest.approx((0.9, 1.33))
    assert (got.clearcoat, got.clearcoat_roughness) == pytest.approx((0.75, 0.2))
    assert got.sheen_color == pytest.approx((0.9, 0.1, 0.3)) and got.sheen_roughness == pytest.approx(0.45)
    assert got.uv_transform == TextureTransform((0.25, -0.5), 0.3, (2.0, 3.0))


def test_volume_and_the_extensions_own_maps_are_read_and_cached(tmp_path, monkeypatch):
    """KHR_materials_volume's factors and the transmission, clearcoat and sheen maps, as the file
    says (each map RGBA as stored); every one survives the mesh cache."""
    from sceneforge.scenes import assets
    maps = [flat((10 * k, 20 * k, 30 * k, 255 - 40 * k)) for k in range(1, 6)]
    material = {
        "name": "glass",
        "extensions": {
            "KHR_materials_transmission": {"transmissionFactor": 0.8, "transmissionTexture": {"index": 0}},
            "KHR_materials_volume": {"thicknessFactor": 0.075, "attenuationDistance": 0.3,
                                     "attenuationColor": [0.9, 0.5, 0.2]},
            "KHR_materials_clearcoat": {"clearcoatFactor": 1, "clearcoatTexture": {"index": 1},
                                        "clearcoatRoughnessTexture": {"index": 2}},
            "KHR_materials_sheen": {"sheenColorFactor": [1, 1, 1], "sheenColorTexture": {"index": 3},
                                    "sheenRoughnessFactor": 1, "sheenRoughnessTexture": {"index": 4, "texCoord": 1}},
        },
    }
    path = slab_gltf(tmp_path / "glass.gltf", material, maps, extensions=material["extensions"].keys())
    ref = file_asset(path)
    (got,) = asset_model(ref).materials
    assert (got.thickness, got.attenuation_distance) == pytest.approx((0.075, 0.3))
    assert got.attenuation_color == pytest.approx((0.9, 0.5, 0.2))
    for name, image in zip(("transmission_texture", "clearcoat_texture", "clearcoat_roughness_texture",
                            "sheen_color_texture"), maps):
        assert np.array_equal(getattr(got, name), image), name
    assert got.sheen_roughness_texture is None  # on a second UV set, which the mesh lacks: dropped
    # A material without the extension has no medium; a bad distance names the material.
    (plain,) = asset_model(file_asset(slab_gltf(tmp_path / "plain.gltf", {"name": "m"}, []))).materials
    assert (plain.thickness, plain.attenuation_distance, plain.attenuation_color) == (0.0, math.inf, (1.0, 1.0, 1.0))
    material["extensions"]["KHR_materials_volume"]["attenuationDistance"] = 0
    with pytest.raises(AssetError, match=r"bad.gltf: materials\[0\] \(glass\): .*attenuationDistance 0 is not positive"):
        file_asset(slab_gltf(tmp_path / "bad.gltf", material, maps, extensions=material["extensions"].keys()))
    monkeypatch.setenv("SCENEFORGE_CACHE", str(tmp_path / "cache"))
    assets._store_model("volume", asset_model(ref))
    (back,) = assets._cached_model("volume").materials
    assert (back.thickness, back.attenuation_distance, back.attenuation_color) == (
        got.thickness, got.attenuation_distance, got.attenuation_color)
    assert np.array_equal(back.sheen_color_texture, got.sheen_color_texture)


def test_a_required_geometry_extension_is_refused_naming_it(tmp_path):
    path = slab_gltf(tmp_path / "slab.gltf", {"name": "m"}, [])
    document = json.loads(path.read_text())
    document["extensionsRequired"] = ["KHR_materials_iridescence", "KHR_mesh_quantization"]
    path.write_text(json.dumps(document))
    with pytest.raises(AssetError, match=r"slab.gltf.*requires the glTF extension\(s\) KHR_mesh_quantization;"):
        file_asset(path)


def test_a_grey_normal_map_is_refused_naming_the_material(tmp_path):
    path = slab_gltf(tmp_path / "slab.gltf", {"normalTexture": {"index": 0}}, [np.full((4, 4), 128, np.uint8)])
    with pytest.raises(AssetError, match=r"slab.gltf: normal_texture: a normal map needs 3 channels"):
        file_asset(path)


def test_gltf_texture_transform_becomes_the_blender_mapping_of_the_same_uvs():
    # KHR_texture_transform (glTF UVs, v down): uv' = T R S uv with R = [[c, s], [-s, c]].
    transform = TextureTransform((0.3, -0.2), 0.7, (2.0, 0.5))
    (ox, oy), r, (sx, sy) = transform.offset, transform.rotation, transform.scale
    gltf = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]]) @ np.array(
        [[math.cos(r), math.sin(r), 0], [-math.sin(r), math.cos(r), 0], [0, 0, 1]]) @ np.diag([sx, sy, 1])
    (lx, ly), angle, (bx, by) = blender_uv_mapping(transform)
    # Blender's Mapping node (POINT): location + Rz(angle) (scale * uv), on v-up UVs.
    blender = np.array([[1, 0, lx], [0, 1, ly], [0, 0, 1]]) @ np.array(
        [[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]]) @ np.diag([bx, by, 1])
    for u, v in np.random.default_rng(0).uniform(-2, 2, (20, 2)):
        gu, gv, _ = gltf @ [u, 1 - v, 1]  # the same surface point in glTF's UVs
        assert blender @ [u, v, 1] == pytest.approx([gu, 1 - gv, 1])


USD_MATERIAL = """\
#usda 1.0
(
    defaultPrim = "Card"
    metersPerUnit = 1
    upAxis = "Z"
)

def Xform "Card"
{
    def Mesh "Quad"
    {
        int[] faceVertexCounts = [4]
        int[] faceVertexIndices = [0, 1, 2, 3]
        point3f[] points = [(-0.1, -0.1, 0), (0.1, -0.1, 0), (0.1, 0.1, 0), (-0.1, 0.1, 0)]
        texCoord2f[] primvars:st = [(0, 0), (1, 0), (1, 1), (0, 1)] (interpolation = "vertex")
        rel material:binding = </Card/Look>
    }

    def Material "Look"
    {
        token outputs:surface.connect = </Card/Look/Surface.outputs:surface>

        def Shader "Surface"
        {
            uniform token info:id = "UsdPreviewSurface"
            color3f inputs:diffuseColor.connect = </Card/Look/Color.outputs:rgb>
            float inputs:roughness.connect = </Card/Look/Rough.outputs:g>
            float inputs:metallic = 0.25
            normal3f inputs:normal.connect = </Card/Look/Normal.outputs:rgb>
            color3f inputs:emissiveColor = (0.1, 0.2, 0.3)
            float inputs:opacity.connect = </Card/Look/Color.outputs:a>
            float inputs:opacityThreshold = 0.4
            float inputs:ior = 1.33
            float inputs:clearcoat = 0.5
            token outputs:surface
        }

        def Shader "Reader"
        {
            uniform token info:id = "UsdPrimvarReader_float2"
            string inputs:varname = "st"
            float2 outputs:result
        }

        def Shader "Place"
        {
            uniform token info:id = "UsdTransform2d"
            float2 inputs:in.connect = </Card/Look/Reader.outputs:result>
            float2 inputs:translation = (0.2, 0.1)
            float inputs:rotation = 30
            float2 inputs:scale = (2, 4)
            float2 outputs:result
        }

        def Shader "Color"
        {
            uniform token info:id = "UsdUVTexture"
            asset inputs:file = @color.png@
            float2 inputs:st.connect = </Card/Look/Place.outputs:result>
            float4 inputs:scale = (0.5, 0.5, 0.5, 0.8)
            float3 outputs:rgb
            float outputs:a
        }

        def Shader "Rough"
        {
            uniform token info:id = "UsdUVTexture"
            asset inputs:file = @rough.png@
            float4 inputs:scale = (1, 0.6, 1, 1)
            float outputs:g
        }

        def Shader "Normal"
        {
            uniform token info:id = "UsdUVTexture"
            asset inputs:file = @normal.png@
            float4 inputs:scale = (2, 2, 2, 1)
            float4 inputs:bias = (-1, -1, -1, 0)
            float3 outputs:rgb
        }
    }
}
"""


def test_usd_preview_surface_textures_and_inputs_are_read(tmp_path):
    color, rough, normal = halves((255, 0, 0, 255), (0, 0, 255, 40)), flat((10, 150, 30, 255)), tilted_normal(20)
    for name, image in (("color", color), ("rough", rough), ("normal", normal)):
        (tmp_path / f"{name}.png").write_bytes(png(image))
    (tmp_path / "card.usda").write_text(USD_MATERIAL)
    (got,) = asset_model(file_asset(tmp_path / "card.usda")).materials
    assert np.array_equal(got.texture, color)
    assert got.base_color == pytest.approx((0.5, 0.5, 0.5))
    assert np.array_equal(got.metallic_roughness_texture[..., 1], rough[..., 1])  # the g output, into glTF's G
    assert np.all(got.metallic_roughness_texture[..., 2] == 255)  # constant metallic: a white map times 0.25
    assert (got.roughness, got.metallic) == pytest.approx((0.6, 0.25))
    assert np.array_equal(got.normal_texture, normal)
    assert np.array_equal(got.opacity_texture[..., 0], color[..., 3])  # the a output, into R
    assert (got.alpha, got.alpha_mode, got.alpha_cutoff) == (pytest.approx(0.8), "MASK", pytest.approx(0.4))
    assert got.emissive == pytest.approx((0.1, 0.2, 0.3))
    assert (got.ior, got.clearcoat) == pytest.approx((1.33, 0.5))
    # The UsdTransform2d (v-up st: translation + R(30 deg) (scale * st)) is Blender's mapping as it is.
    (lx, ly), angle, scale = blender_uv_mapping(got.uv_transform)
    assert (lx, ly, angle, *scale) == pytest.approx((0.2, 0.1, math.radians(30), 2, 4))


def test_usd_missing_texture_names_the_material_and_input(tmp_path):
    (tmp_path / "card.usda").write_text(USD_MATERIAL)
    with pytest.raises(AssetError, match=r"card.usda: material /Card/Look diffuseColor: texture color.png not found"):
        file_asset(tmp_path / "card.usda")


def test_texture_set_maps_are_packed_and_a_directx_normal_flipped(tmp_path):
    bricks = texture_maps(str(SETS / "Bricks102"))
    roughness = np.asarray(Image.open(SETS / "Bricks102" / "Bricks102_256_Roughness.jpg").convert("L"))
    assert np.array_equal(bricks.metallic_roughness_texture[..., 1], roughness)
    assert np.all(bricks.metallic_roughness_texture[..., 2] == 0)  # no metalness map: a dielectric
    assert bricks.occlusion_texture is not None and bricks.bump_texture is None and bricks.alpha_mode == "OPAQUE"
    metal = texture_maps(str(SETS / "Metal049A"))
    metalness = np.asarray(Image.open(SETS / "Metal049A" / "Metal049A_256_Metalness.jpg").convert("L"))
    assert np.array_equal(metal.metallic_roughness_texture[..., 2], metalness)
    assert metal.bump_texture is not None and metal.bump_distance > 0
    assert (metal.roughness, metal.metallic) == (1.0, 1.0)

    folder = tmp_path / "Fence"
    folder.mkdir()
    normal = tilted_normal(25)
    normal[..., 1] = 60  # DirectX: +G points down the image
    for name, image in (("Color", flat((90, 90, 90, 255))), ("NormalDX", normal), ("Opacity", halves((0,) * 4, (255,) * 4))):
        (folder / f"Fence_{name}.png").write_bytes(png(image))
    (folder / "Fence.mtlx").write_text("<materialx/>")  # files beside the maps are passed over
    fence = texture_maps(str(folder))
    assert np.array_equal(fence.normal_texture[..., 1], np.full((8, 8), 255 - 60))
    assert np.array_equal(fence.opacity_texture, halves((0,) * 4, (255,) * 4))
    assert fence.alpha_mode == "MASK" and fence.metallic_roughness_texture is None
    # Swapped onto an asset: the set's maps replace the asset's, the asset keeps its other factors.
    own = asset_model(file_asset(slab_gltf(tmp_path / "own.gltf", {
        "pbrMetallicRoughness": {"roughnessFactor": 0.3, "metallicFactor": 0.0}, "normalTexture": {"index": 0},
        "extensions": {"KHR_materials_clearcoat": {"clearcoatFactor": 0.6}}}, [tilted_normal(10)]))).materials[0]
    swapped = with_texture(own, fence)
    assert np.array_equal(swapped.normal_texture, fence.normal_texture) and swapped.texture is fence.texture
    assert (swapped.roughness, swapped.clearcoat, swapped.alpha_mode) == (pytest.approx(0.3), 0.6, "MASK")


def test_texture_folder_kinds(tmp_path):
    assert texture_files(SETS) == tuple(str((SETS / name).resolve()) for name in ("Bricks102", "Metal049A"))
    assert texture_files(SETS / "Bricks102") == (str((SETS / "Bricks102").resolve()),)
    images = ROOT / "examples" / "assets" / "textures" / "objects"
    assert all(Path(f).is_file() for f in texture_files(images))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AssetError, match=r"empty: holds no images .* and no texture sets"):
        texture_files(empty)
    library = tmp_path / "library"
    shutil.copytree(SETS / "Bricks102", library / "Bricks102")
    (library / "Unfinished").mkdir()
    with pytest.raises(AssetError, match=r"library: a library of texture sets, but Unfinished/ is not one"):
        texture_files(library)


@pytest.mark.parametrize("files, message", [
    ({"A_Color.png": flat((1, 2, 3, 255)), "A_Roughness.png": flat((9, 9, 9, 255), 4)},
     r"A_Roughness.png: 4x4 pixels, but A_Color.png has 8x8; every map of a set must have the same size"),
    ({"A_Color.png": flat((1, 2, 3, 255)), "A_Metalness.webp": b"RIFF"},
     r"A_Metalness.webp: unknown image format '.webp'"),
    ({"A_Roughness.png": flat((9, 9, 9, 255))}, r"no base colour map \(\*_Color\)"),
    ({"A_Color.png": flat((1, 2, 3, 255)), "A_NormalGL.png": np.full((8, 8), 128, np.uint8)},
     r"A_NormalGL.png: normal map: a normal map needs 3 channels \(RGB\), this image has 1"),
    ({"A_Color.png": flat((1, 2, 3, 255)), "A_Opacity.png": b"not a png"}, r"A_Opacity.png: a texture"),
])
def test_broken_texture_sets_name_the_set_and_map(tmp_path, files, message):
    folder = tmp_path / "set"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else png(content))
    with pytest.raises(AssetError, match=r"texture set .*set: .*" + message if "base colour" not in message
                       else r"texture set .*set: " + message):
        texture_files(folder)


def test_a_broken_set_in_a_recipe_is_a_located_error(tmp_path):
    folder = tmp_path / "sets" / "Tiles"
    folder.mkdir(parents=True)
    (folder / "Tiles_Color.png").write_bytes(png(flat((1, 2, 3, 255))))
    (folder / "Tiles_Roughness.png").write_bytes(png(flat((1, 2, 3, 255), 4)))
    path = write_recipe(tmp_path, """\
        objects:
          - category: box
            asset: {primitive: box}
            material: {texture_folder: sets}
        """)
    with pytest.raises(UserError, match=r"recipe.yaml:4:\d+: objects\[0\]\.material\.texture_folder: .*Tiles_Roughness.png"):
        load_recipe(path)


# ---- randomisation ---------------------------------------------------------------------------------

LOOK_RECIPE = """\
seed: 11
count: 4
render: {resolution: [32, 32], samples: 1}
placement: {area: [0.6, 0.6]}
objects:
  - category: box
    count: 3
    asset: {primitive: box, extents: [0.1, 0.1, 0.1]}
    material: {texture_folder: %s%s}
lights: [{type: sun, energy: 3}]
"""


def test_randomisation_draws_per_object_from_its_own_stream(tmp_path):
    plain = load_recipe(write_recipe(tmp_path, LOOK_RECIPE % (SETS, ""), "plain.yaml"))
    looks = load_recipe(write_recipe(tmp_path, LOOK_RECIPE % (
        SETS, ", roughness_scale: {uniform: [0.5, 1.5]}, hue_shift_deg: {uniform: [-40, 40]}"), "looks.yaml"))
    drawn = []
    for index in range(4):
        a, b = sample(plain, index), sample(looks, index)
        # The same scenes (poses, chosen sets): the new draws come from stream (15, ...) only.
        assert [o.world_from_object for o in a.objects] == [o.world_from_object for o in b.objects]
        assert [o.material.texture for o in a.objects] == [o.material.texture for o in b.objects]
        assert all(o.material.roughness_scale is None and o.material.hue_shift_deg is None for o in a.objects)
        drawn += [(o.material.roughness_scale, o.material.hue_shift_deg) for o in b.objects]
    scales, hues = np.array(drawn).T
    assert scales.min() >= 0.5 and scales.max() <= 1.5 and hues.min() >= -40 and hues.max() <= 40
    assert len(set(scales)) == len(scales)  # per object, not per group
    chosen = {Path(o.material.texture).name for index in range(4) for o in sample(plain, index).objects}
    assert chosen == {"Bricks102", "Metal049A"}  # a folder of sets: one set drawn per object


def test_bad_randomisation_field_is_located(tmp_path):
    path = write_recipe(tmp_path, LOOK_RECIPE % (SETS, ", roughness_scale: -2"))
    with pytest.raises(UserError, match=r"recipe.yaml:9:\d+: objects\[0\]\.material\.roughness_scale"):
        load_recipe(path)


def test_hue_shift_turns_the_colour_wheel():
    assert hue_shifted((0.8, 0.0, 0.0), 120) == pytest.approx((0.0, 0.8, 0.0))
    assert hue_shifted((0.0, 0.0, 0.6), -240) == pytest.approx((0.6, 0.0, 0.0))


# ---- rendered ----------------------------------------------------------------------------------------

def srgb_to_linear(pixels: np.ndarray) -> np.ndarray:
    c = pixels.astype(np.float64) / 255
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def test_each_map_has_its_rendered_effect(tmp_path):
    """Eleven slabs seen from straight above under a sun 30 degrees above the +X horizon, no sky:
    plain; normal map tilted 40 degrees towards +X (the sun) and away; roughness map smooth (-X
    half) and rough (+X half) on metal, and the same with roughness_scale 0.02; emissive map on the
    +X half; a red texture turned by 120 degrees of hue; a black | white texture moved half a copy
    along u by KHR_texture_transform; black slabs with a clearcoat, a sheen, and neither."""
    white = flat((255, 255, 255, 255))
    slabs = {
        "plain": ({"pbrMetallicRoughness": {"baseColorFactor": [0.8, 0.8, 0.8, 1], "metallicFactor": 0}}, []),
        "toward": ({"pbrMetallicRoughness": {"baseColorFactor": [0.8, 0.8, 0.8, 1], "metallicFactor": 0},
                    "normalTexture": {"index": 0}}, [tilted_normal(40)]),
        "away": ({"pbrMetallicRoughness": {"baseColorFactor": [0.8, 0.8, 0.8, 1], "metallicFactor": 0},
                  "normalTexture": {"index": 0}}, [tilted_normal(-40)]),
        "rough": ({"pbrMetallicRoughness": {"baseColorFactor": [0.9, 0.9, 0.9, 1], "metallicFactor": 1,
                                            "metallicRoughnessTexture": {"index": 0}}},
                  [halves((0, 5, 255, 255), (0, 255, 255, 255))]),
        "glow": ({"pbrMetallicRoughness": {"baseColorFactor": [0.8, 0.8, 0.8, 1], "metallicFactor": 0},
                  "emissiveTexture": {"index": 0}, "emissiveFactor": [0.25, 0.25, 0.25]},
                 [halves((0, 0, 0, 255), (255, 255, 255, 255))]),
        "hue": ({"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}, "metallicFactor": 0}},
                [flat((255, 0, 0, 255))]),
    }
    slabs["scaled"] = slabs["rough"]  # the same, its roughness scaled by 0.02 in the recipe
    slabs["shifted"] = ({"pbrMetallicRoughness": {"metallicFactor": 0, "baseColorTexture": {
        "index": 0, "extensions": {"KHR_texture_transform": {"offset": [0.5, 0]}}}}},
        [halves((0, 0, 0, 255), (255, 255, 255, 255))])  # black | white, moved half a copy along u
    black = {"baseColorFactor": [0, 0, 0, 1], "metallicFactor": 0, "roughnessFactor": 1}
    slabs["coat"] = ({"pbrMetallicRoughness": black, "extensions": {
        "KHR_materials_clearcoat": {"clearcoatFactor": 1, "clearcoatRoughnessFactor": 0.6}}}, [])
    slabs["sheen"] = ({"pbrMetallicRoughness": black, "extensions": {
        "KHR_materials_sheen": {"sheenColorFactor": [1, 1, 1], "sheenRoughnessFactor": 0.5}}}, [])
    slabs["black"] = ({"pbrMetallicRoughness": black}, [])
    assets, groups = [], []
    for name, (material, images) in slabs.items():
        slab_gltf(tmp_path / f"{name}.gltf", material, images or [white])
        assets.append(f"  - {{category: {name}, path: {name}.gltf}}")
        # No specular layer on the Lambert slabs: their radiance is albedo E cos / pi exactly.
        look = {"hue": ", material: {hue_shift_deg: 120}", "plain": ", material: {specular: 0}",
                "toward": ", material: {specular: 0}", "away": ", material: {specular: 0}",
                "scaled": ", material: {roughness_scale: 0.02}", **dict.fromkeys(
                    ("coat", "sheen", "black"), ", material: {specular: 0}")}.get(name, "")
        groups.append(f"  - {{category: {name}, asset: {{library: {name}}}{look}}}")
    text = "\n".join([
        "seed: 2", "count: 1",
        "render: {resolution: [112, 112], samples: 16, albedo: true}",
        "camera: {fov_deg: 70, look_at: [0, 0, 0], distance: 0.75, elevation_deg: 90, azimuth_deg: 0,"
        " exposure: {ev: 0}}",
        "placement: {area: [0.62, 0.62], min_gap: 0.02, rotation: {yaw_deg: 0}}",
        "background: {color: [0, 0, 0], strength: 0}",
        "lights: [{type: sun, energy: 3, elevation_deg: 30, azimuth_deg: 0}]",
        "assets:", *assets, "objects:", *groups, ""])
    recipe = load_recipe(write_recipe(tmp_path, text))
    store = render_dataset(recipe, tmp_path / "out").store
    (record,) = store.records()
    linear = srgb_to_linear(store.read_rgb(record)).mean(axis=-1)
    albedo = srgb_to_linear(store.read_rgb(record, "albedo"))
    instance = store.read_instance(record)
    # World X of every pixel's ray where it meets the slabs' top (z = 0.01; the camera looks down).
    K, pose = np.asarray(record["camera"]["K"]), np.asarray(record["camera"]["world_from_camera"])
    u, v = np.meshgrid(np.arange(112), np.arange(112))
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T @ pose[:3, :3].T
    x = pose[0, 3] + rays[..., 0] * (0.01 - pose[2, 3]) / rays[..., 2]
    regions = {}
    for obj in record["objects"]:
        # The slab's top, its edge pixels (mixed with the black ground below) eroded away.
        inside = cv2.erode((instance == obj["instance_id"]).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        centre = np.asarray(obj["world_from_object"])[0, 3]
        regions[obj["category"]] = inside, inside & (x < centre - 0.01), inside & (x > centre + 0.01)
    for name, (inside, low, high) in regions.items():
        assert inside.sum() > 60 and low.sum() > 20 and high.sum() > 20, name

    def mean(name: str, part: int = 0) -> float:
        return float(linear[regions[name][part]].mean())

    # Lambert: radiance = albedo E cos / pi, the sun 30 deg up: cos 60 deg = 0.5 flat, cos 20 deg
    # = 0.94 tilted towards it, 0 (cos 100 deg < 0) tilted away. (Cycles softens light on a shading
    # normal tilted off the geometric one a little, its terminator fix: 6 % here.)
    sun = 0.8 * 3 / math.pi
    assert mean("plain") == pytest.approx(sun * 0.5, rel=0.03)
    assert mean("toward") == pytest.approx(sun * math.cos(math.radians(20)), rel=0.1)
    assert mean("toward") > 1.6 * mean("plain") and mean("away") < 0.02 * mean("plain")
    # Smooth metal mirrors the black sky (the sun's reflection leaves upwards, away from the camera);
    # rough metal spreads the sun's light into the camera.
    assert mean("rough", 2) > 0.1 and mean("rough", 1) < 0.2 * mean("rough", 2)
    assert mean("scaled", 2) < 0.2 * mean("rough", 2)  # roughness_scale 0.02 makes the rough half a mirror
    # The emissive half adds its 0.25 of radiance to the same sunlit colour.
    assert mean("glow", 2) - mean("glow", 1) == pytest.approx(0.25, abs=0.04)
    # Red turned by 120 degrees of hue is green, in the albedo pass (the base colour).
    red, green, blue = (float(albedo[regions["hue"][0]][:, c].mean()) for c in range(3))
    assert green > 0.8 and red < 0.05 and blue < 0.05
    # A black slab without a specular layer is black; a clearcoat, or a sheen, reflects some sun.
    assert mean("black") < 1e-3 and mean("coat") > 0.005 and mean("sheen") > 0.005
    # KHR_texture_transform's offset of half a copy swaps the texture's halves on the slab.
    grey = albedo.mean(axis=-1)
    assert grey[regions["shifted"][1]].mean() > 0.9 and grey[regions["shifted"][2]].mean() < 0.02


def test_a_texture_set_on_a_box_without_uvs_shades_by_its_normal_and_bump_maps(tmp_path):
    """Four boxes seen from straight above, their top face box-projected (u along -Y there, as
    Cycles maps it): a set whose normal map tilts 40 degrees towards +u, lit by a sun 30 degrees
    above the -Y horizon, shines at Lambert's cos 20 degrees, one tilted towards -u stays dark; its
    colour map (dark to light along u) brightens towards -Y in the albedo pass, where the normal
    map's tangent points; a displacement ramp along u darkens its face as the slope it makes."""
    ramp = np.zeros((8, 8, 4), np.uint8)
    ramp[..., :3] = np.linspace(40, 220, 8).astype(np.uint8)[None, :, None]  # u (columns) dark to light
    ramp[..., 3] = 255
    height = np.zeros((64, 64, 4), np.uint8)
    height[..., :3] = np.linspace(0, 255, 64).round().astype(np.uint8)[None, :, None]  # rising along u
    height[..., 3] = 255
    for name in ("toward", "away", "plain", "bumpy"):
        folder = tmp_path / "sets" / name
        folder.mkdir(parents=True)
        grey = flat((204, 204, 204, 255), 64 if name == "bumpy" else 8)  # a set's maps share one size
        (folder / f"{name}_Color.png").write_bytes(png(ramp if name == "toward" else grey))
        if name in ("toward", "away"):
            (folder / f"{name}_NormalGL.png").write_bytes(png(tilted_normal(40 if name == "toward" else -40)))
        elif name == "bumpy":
            (folder / f"{name}_Displacement.png").write_bytes(png(height))
    text = "\n".join([
        "seed: 4", "count: 1",
        "render: {resolution: [80, 80], samples: 8, albedo: true}",
        "camera: {fov_deg: 60, look_at: [0, 0, 0], distance: 0.8, elevation_deg: 90, azimuth_deg: 0, exposure: {ev: 0}}",
        "placement: {area: [0.5, 0.5], min_gap: 0.04, rotation: {yaw_deg: 0}}",
        "background: {color: [0, 0, 0], strength: 0}",
        "lights: [{type: sun, energy: 3, elevation_deg: 30, azimuth_deg: 270}]",
        "objects:", *(f"  - {{category: {name}, asset: {{primitive: box, extents: [0.12, 0.12, 0.04]}},"
                      f" material: {{texture_folder: sets/{name}, texture_size: 0.12, specular: 0}}}}"
                      for name in ("toward", "away", "plain", "bumpy")), ""])
    store = render_dataset(load_recipe(write_recipe(tmp_path, text)), tmp_path / "out").store
    (record,) = store.records()
    linear = srgb_to_linear(store.read_rgb(record)).mean(axis=-1)
    albedo = srgb_to_linear(store.read_rgb(record, "albedo")).mean(axis=-1)
    instance = store.read_instance(record)
    K, pose = np.asarray(record["camera"]["K"]), np.asarray(record["camera"]["world_from_camera"])
    u, v = np.meshgrid(np.arange(80), np.arange(80))
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T @ pose[:3, :3].T
    top = pose[:3, 3] + rays * ((0.04 - pose[2, 3]) / rays[..., 2])[..., None]
    found = {}
    for obj in record["objects"]:
        centre = np.asarray(obj["world_from_object"])[:3, 3]
        face = (instance == obj["instance_id"]) & np.all(np.abs(top[..., :2] - centre[:2]) < 0.045, axis=-1)
        found[obj["category"]] = face, top[..., 1] - centre[1]
    # Lambert's shading (radiance over albedo) is E cos / pi.
    toward, away = ((linear / np.maximum(albedo, 1e-3))[found[name][0]].mean() for name in ("toward", "away"))
    assert found["toward"][0].sum() > 40 and found["away"][0].sum() > 40
    assert toward == pytest.approx(3 / math.pi * math.cos(math.radians(20)), rel=0.1) and away < 0.02 * toward
    # One texture copy spans the face, the copies meeting on its centre line (object y = 0): on
    # its -Y half u = -y / 0.12 grows towards -Y, so the far part is the lighter.
    face, dy = found["toward"]
    far, near = albedo[face & (dy > -0.05) & (dy < -0.03)].mean(), albedo[face & (dy > -0.025) & (dy < -0.008)].mean()
    assert far > 1.5 * near  # the colour's u runs towards -Y, as the normal map's tangent
    # The displacement rises 5 mm (SET_BUMP_DISTANCE) over the 0.12 m copy towards -Y, the sun's
    # side: the bumped face tilts atan(0.005 / 0.12) away from it (away from the copies' seam).
    shading = linear / np.maximum(albedo, 1e-3)
    (bumpy, dy), (plain, _) = found["bumpy"], found["plain"]
    bumped = shading[bumpy & (np.abs(dy) > 0.008)].mean() / shading[plain].mean()
    tilt = math.atan(0.005 / 0.12)
    assert bumped == pytest.approx(math.cos(math.radians(60) + tilt) / math.cos(math.radians(60)), abs=0.02)


def test_a_tinted_glass_slab_absorbs_by_beer_lambert_and_a_transmission_map_cuts_opaque_parts(tmp_path):
    """Three scenes, seen from straight above, no sky: a 5 cm glass slab (KHR_materials_volume,
    attenuation colour A) 2 cm above a large emitter, with attenuation distances 5 and 20 cm; and a
    thin white slab whose transmission map is 0 on its -X half and 1 on its +X half. Through the
    thick slab the emitter is dimmed by Fresnel x A^(t / D): the ratio of the two renders is
    A^(t / D1 - t / D2), Fresnel cancelling. The transmission map's opaque half sees only the
    black sky; its clear half shows the emitter. Then two black slabs without a specular layer
    under a sun 30 degrees above +X: a clearcoat whose map is 0 | 1, and a sheen whose colour map
    is black | white (roughness maps in G and A): each reflects the sun on its +X half only."""
    from sceneforge.labels.store import DatasetStore
    from sceneforge.pipeline import render_specs
    from sceneforge.scenes.recipe import RenderSettings
    from sceneforge.scenes.sampling import look_at
    from sceneforge.scenes.spec import CameraSpec, LightSpec, MaterialSpec, ObjectSpec, RenderSpec, SceneSpec

    size, thickness, tint, distances, glow = 64, 0.05, (0.5, 0.7, 0.9), (0.05, 0.2), 0.25
    emitter = file_asset(slab_gltf(tmp_path / "emitter.gltf", {"pbrMetallicRoughness": {
        "baseColorFactor": [0, 0, 0, 1], "metallicFactor": 0, "roughnessFactor": 1}, "emissiveFactor": [glow] * 3},
        [], size=0.5))

    def glass(name: str, extensions: dict, images=(), depth: float = thickness):
        material = {"pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1], "metallicFactor": 0, "roughnessFactor": 0},
                    "extensions": {"KHR_materials_transmission": {"transmissionFactor": 1}, **extensions}}
        return file_asset(slab_gltf(tmp_path / f"{name}.gltf", material, list(images), depth=depth,
                                    extensions=material["extensions"].keys()))

    slabs = [glass(f"tinted{k}", {"KHR_materials_volume": {"thicknessFactor": thickness, "attenuationDistance": d,
                                                           "attenuationColor": list(tint)}})
             for k, d in enumerate(distances)]
    slabs.append(glass("cut", {"KHR_materials_transmission": {"transmissionFactor": 1, "transmissionTexture": {"index": 0}}},
                       [halves((0, 0, 0, 255), (255, 255, 255, 255))], depth=0.005))
    black = {"baseColorFactor": [0, 0, 0, 1], "metallicFactor": 0, "roughnessFactor": 1}
    for name, extension in (("coat", {"KHR_materials_clearcoat": {
            "clearcoatFactor": 1, "clearcoatTexture": {"index": 0},
            "clearcoatRoughnessFactor": 1, "clearcoatRoughnessTexture": {"index": 1}}}),
            ("sheen", {"KHR_materials_sheen": {
                "sheenColorFactor": [1, 1, 1], "sheenColorTexture": {"index": 0},
                "sheenRoughnessFactor": 1, "sheenRoughnessTexture": {"index": 1}}})):
        slabs.append(file_asset(slab_gltf(tmp_path / f"{name}.gltf", {"pbrMetallicRoughness": black, "extensions": extension},
                                          [halves((0, 0, 0, 255), (255, 255, 255, 255)), flat((0, 150, 0, 128))],
                                          extensions=extension.keys())))
    focal = size / 2 / 0.2  # 40 cm of the 50 cm emitter across the image at 1 m: it fills the image
    K = ((focal, 0, (size - 1) / 2), (0, focal, (size - 1) / 2), (0, 0, 1))
    eye = np.array([0.0, 0.0, 1.0])
    camera = CameraSpec(K=K, world_from_camera=tuple(map(tuple, look_at(eye, np.zeros(3)))), width=size, height=size,
                        clip_start=0.01, clip_end=10.0)
    settings = RenderSettings(samples=4, adaptive_threshold=0).model_dump(exclude={"resolution"})

    def placed(instance_id: int, asset, z: float, material: MaterialSpec = MaterialSpec()) -> ObjectSpec:
        pose = np.eye(4)
        pose[2, 3] = z
        return ObjectSpec(instance_id=instance_id, category_id=instance_id, category=f"c{instance_id}", asset=asset,
                          world_from_object=tuple(map(tuple, pose)), material=material)

    sun = LightSpec(type="sun", energy=3.0, color=(1, 1, 1), size=0.5, world_from_light=tuple(map(tuple, look_at(
        np.array([math.cos(math.radians(30)), 0.0, math.sin(math.radians(30))]), np.zeros(3)))))
    specs = [SceneSpec(index=i, scene_index=i, seed=i, camera=camera,
                       objects=[placed(1, slab, 0.03, MaterialSpec(specular=0.0) if i > 2 else MaterialSpec()),
                                placed(2, emitter, 0.0)],
                       lights=[sun] if i > 2 else [], ground=None, background_color=(0.0, 0.0, 0.0), background_strength=0.0,
                       render=RenderSpec(**settings, noise_seed=i)) for i, slab in enumerate(slabs)]
    store = DatasetStore.open_for_writing(tmp_path / "out", recipe={}, recipe_hash="volume", categories=["c1", "c2"],
                                          resolution=(size, size), requested=len(specs))
    render_specs(store, specs)
    records = {r["index"]: r for r in store.records()}
    linear = {i: srgb_to_linear(store.read_rgb(records[i])) for i in records}
    # The slab covers |x|, |y| < 6 cm, i.e. 10.4 px around the centre at 0.92 m: its inner 7 px
    # (refraction shifts the view by under a pixel), and the emitter alone beyond 16 px.
    u, v = np.meshgrid(np.arange(size) - (size - 1) / 2, np.arange(size) - (size - 1) / 2)
    inside, outside = (np.abs(u) < 7) & (np.abs(v) < 7), np.maximum(np.abs(u), np.abs(v)) > 16
    emitted = linear[0][outside].mean(axis=0)
    assert emitted == pytest.approx([glow] * 3, rel=0.03)
    through = [linear[i][inside].mean(axis=0) / linear[i][outside].mean(axis=0) for i in (0, 1)]
    expected = np.asarray(tint) ** (thickness / distances[0] - thickness / distances[1])
    assert through[0] / through[1] == pytest.approx(expected, rel=0.04)
    # The less absorbing slab passes A^(t / D2) after two Fresnel losses of ~4 % each.
    assert through[1] == pytest.approx(np.asarray(tint) ** (thickness / distances[1]) * 0.92, rel=0.05)
    grey = linear[2].mean(axis=-1)
    clear, opaque = grey[inside & (u > 2)].mean(), grey[inside & (u < -2)].mean()
    assert clear == pytest.approx(0.92 * glow, rel=0.06) and opaque < 0.05 * clear
    for i, name in ((3, "clearcoat"), (4, "sheen")):
        grey = linear[i].mean(axis=-1)
        assert grey[inside & (u < -2)].mean() < 1e-3 and grey[inside & (u > 2)].mean() > 0.005, name
