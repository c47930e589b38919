"""Libraries and per-scene choice: file/folder/choice sources, HDRI levels, lazily listed asset
libraries (folders, category folders, manifests), the on-disk mesh cache, and their errors."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path
from textwrap import dedent

import cv2
import numpy as np
import OpenEXR
import pytest

from sceneforge.floor.colour import srgb_to_linear
from sceneforge.floor.errors import UserError
from sceneforge.pipeline import render_dataset
from sceneforge.scenes.assets import MESH_CACHE_COUNTS, asset_model, environment_level
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample

from .helpers import ROOT, run_cli, write_recipe

EXAMPLE_HDRIS = ROOT / "examples" / "assets" / "hdri"
NO_OBJECTS = "ground: null\nlights: []\n"


def write_hdr(path: Path, upper, lower: float = 0.0, shape=(64, 128)) -> Path:
    """An equirectangular map: ``upper(polar, azimuth)`` radiance (grey) above the horizon, ``lower`` below."""
    height, width = shape
    polar = ((np.arange(height) + 0.5) / height * math.pi)[:, None]
    azimuth = ((np.arange(width) + 0.5) / width * 2 * math.pi)[None, :]
    radiance = np.where(polar < math.pi / 2, upper(polar, azimuth) + 0 * azimuth, lower)
    assert cv2.imwrite(str(path), np.repeat(radiance[..., None], 3, axis=2).astype(np.float32))
    return path


def test_environment_level_of_analytic_maps(tmp_path):
    # A constant sky has the level of its radiance: irradiance pi L on a surface facing up, over pi.
    constant = write_hdr(tmp_path / "constant.hdr", lambda p, a: np.full_like(p, 2.5), lower=40.0)
    assert environment_level(str(constant)) == pytest.approx(2.5, rel=1e-2)  # RGBE keeps ~1 % per value
    # L = cos(theta): irradiance = integral of cos^2 theta dOmega = 2 pi / 3, so the level is 2/3;
    # a bright ground (lower half) and the azimuth pattern do not change it.
    cosine = write_hdr(tmp_path / "cosine.hdr", lambda p, a: np.cos(p) * (1 + 0.9 * np.cos(a)), lower=100.0)
    assert environment_level(str(cosine)) == pytest.approx(2 / 3, rel=1e-2)
    # OpenEXR keeps float32: a constant sky's level is its value.
    pixels = np.full((32, 64, 3), 0.25, np.float32)
    pixels[16:] = 9.0  # the ground half does not count
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                 {"RGB": pixels}).write(str(tmp_path / "sky.exr"))
    assert environment_level(str(tmp_path / "sky.exr")) == pytest.approx(0.25, rel=1e-6)
    # The shipped maps differ by far more than the level can hide.
    levels = {p.name: environment_level(str(p)) for p in EXAMPLE_HDRIS.glob("*.hdr")}
    assert len(levels) == 3 and max(levels.values()) > 4 * min(levels.values())


def test_hdri_sources_are_drawn_per_scene_by_weight_and_levelled(tmp_path):
    (tmp_path / "skies").mkdir()
    bright = write_hdr(tmp_path / "skies" / "bright.hdr", lambda p, a: np.full_like(p, 8.0))
    dim = write_hdr(tmp_path / "skies" / "dim.hdr", lambda p, a: np.full_like(p, 0.5))
    recipe = load_recipe(write_recipe(tmp_path, NO_OBJECTS + dedent("""\
        background:
          hdri: {choice: [skies/bright.hdr, skies/], weights: [3, 1]}
          hdri_level: 0.25
          strength: 2
          rotation_deg: {uniform: [0, 360]}
        """)))
    drawn = [sample(recipe, i).hdri for i in range(400)]
    counts = Counter(Path(h.path).name for h in drawn)
    # Option 1 (weight 3/4) is bright.hdr; option 2, the folder, is either file: 1/8 each.
    assert counts["bright.hdr"] / 400 == pytest.approx(3 / 4 + 1 / 8, abs=0.05)
    assert counts["dim.hdr"] / 400 == pytest.approx(1 / 8, abs=0.05)
    for hdri in drawn:  # strength = recipe strength x level / measured level
        measured = environment_level(hdri.path)
        assert hdri.strength == pytest.approx(2 * 0.25 / measured)
        assert measured == pytest.approx(8.0 if hdri.path == str(bright) else 0.5, rel=1e-2)
    assert len({round(h.rotation_deg, 6) for h in drawn}) > 390
    assert [sample(recipe, i).hdri for i in range(5)] == drawn[:5]  # the same scene, the same draw
    assert dim.is_file()


def test_levelled_hdris_light_a_grey_card_alike(tmp_path):
    # A grey card facing up under two skies 40x apart in level, both levelled to 0.8: the
    # Lambertian card (albedo 0.5) has the radiance 0.5 x 0.8 under either.
    write_hdr(tmp_path / "even.hdr", lambda p, a: np.full_like(p, 0.5), lower=0.05)
    write_hdr(tmp_path / "bright.hdr", lambda p, a: 20 * (0.3 + np.cos(p)) * (1 + 0.8 * np.cos(a)), lower=5.0)
    recipe = load_recipe(write_recipe(tmp_path, """\
        count: 4
        render: {resolution: [32, 32], samples: 16}
        camera: {fov_deg: 20, look_at: [0, 0, 0.02], distance: 1, elevation_deg: 89, azimuth_deg: 0,
                 exposure: {ev: 0, auto: null}}
        objects:
          - category: card
            asset: {primitive: box, extents: [1, 1, 0.02]}
            material: {color: [0.5, 0.5, 0.5], roughness: 1, specular: 0, metallic: 0}
        placement: {area: [0.001, 0.001], rotation: {yaw_deg: 0}}
        ground: null
        lights: []
        background: {hdri: {choice: [even.hdr, bright.hdr]}, hdri_level: 0.8}
        """))
    skies = [Path(sample(recipe, i).hdri.path).stem for i in range(4)]
    strengths = {Path(sample(recipe, i).hdri.path).stem: sample(recipe, i).hdri.strength for i in range(4)}
    assert set(skies) == {"even", "bright"} and strengths["even"] > 20 * strengths["bright"]
    store = render_dataset(recipe, tmp_path / "out").store
    card = {}
    for record in store.records():
        rgb = store.read_rgb(record).astype(np.float64)
        card.setdefault(skies[record["index"]], []).append(float(srgb_to_linear(rgb / 255).mean()))
    even, bright = np.mean(card["even"]), np.mean(card["bright"])
    assert bright == pytest.approx(even, rel=0.03)
    assert even == pytest.approx(0.5 * 0.8, rel=0.06) and bright == pytest.approx(0.5 * 0.8, rel=0.06)


def test_texture_folder_choice_is_drawn_per_scene(tmp_path):
    for folder, colour in (("red", (0, 0, 255)), ("blue", (255, 0, 0))):
        (tmp_path / folder).mkdir()
        for k in range(3):
            cv2.imwrite(str(tmp_path / folder / f"{k}.png"), np.full((8, 8, 3), colour, np.uint8))
    recipe = load_recipe(write_recipe(tmp_path, NO_OBJECTS + dedent("""\
        objects:
          - category: box
            count: 4
            asset: {primitive: box, extents: [0.05, 0.05, 0.05]}
            material: {texture_folder: {choice: [red, blue/2.png], weights: [1, 1]}}
        placement: {area: [1, 1]}
        """)))
    seen = Counter()
    for i in range(40):
        textures = {o.material.texture for o in sample(recipe, i).objects}
        folders = {Path(t).parent.name for t in textures}
        assert len(folders) == 1  # one option per scene
        seen[folders.pop()] += 1
        assert textures <= {str(tmp_path / "red" / f"{k}.png") for k in range(3)} | {str(tmp_path / "blue" / "2.png")}
    assert seen["red"] > 8 and seen["blue"] > 8


def test_one_option_choices_sample_what_plain_paths_do(tmp_path):
    # The per-scene choice draws only from its own streams (16, ...): the scenes of a recipe do not
    # move when its paths become choices of one option.
    (tmp_path / "assets").symlink_to(ROOT / "examples" / "assets")
    text = (ROOT / "examples" / "tabletop_assets.yaml").read_text()
    plain = load_recipe(write_recipe(tmp_path, text, "plain.yaml"))
    for old, new in (("path: assets/spot/spot.obj", "path: {choice: [assets/spot/spot.obj]}"),
                     ("texture_folder: assets/textures/objects", "texture_folder: {choice: [assets/textures/objects]}")):
        assert old in text
        text = text.replace(old, new)
    chosen = load_recipe(write_recipe(tmp_path, text, "chosen.yaml"))
    for i in range(3):
        assert sample(plain, i).model_dump() == sample(chosen, i).model_dump()


def write_library(root: Path, per_category: int, categories=("mug", "can", "box")) -> list[Path]:
    """Category folders of tiny OBJ and PLY files, each a different tetrahedron."""
    files = []
    for c, category in enumerate(categories):
        folder = root / category / "sub"
        folder.mkdir(parents=True)
        for k in range(per_category):
            h = 0.02 + 1e-5 * k + 0.01 * c  # every file its own bytes, so its own cache entry
            if k % 2:
                text = f"v 0 0 0\nv 0.1 0 0\nv 0 0.1 0\nv 0 0 {h}\nf 1 3 2\nf 1 2 4\nf 2 3 4\nf 1 4 3\n"
                path = folder / f"{k}.obj"
            else:
                text = ("ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
                        "element face 4\nproperty list uchar int vertex_indices\nend_header\n"
                        f"0 0 0\n0.1 0 0\n0 0.1 0\n0 0 {h}\n3 0 2 1\n3 0 1 3\n3 1 2 3\n3 0 3 2\n")
                path = folder / f"{k}.ply"
            path.write_text(text)
            files.append(path)
    return files


LIBRARY_SCENE = """\
import json, sys
from sceneforge.scenes.assets import MESH_CACHE_COUNTS
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample
recipe = load_recipe(sys.argv[1])
listed = dict(MESH_CACHE_COUNTS)
drawn = sorted({o.asset.path for o in sample(recipe, 0).objects})
print(json.dumps({"listed": listed, "after": dict(MESH_CACHE_COUNTS), "drawn": drawn}))
"""


def test_a_large_library_is_listed_without_parsing_and_the_cache_is_shared(tmp_path):
    files = write_library(tmp_path / "library", 700)  # 2100 files
    recipe_path = write_recipe(tmp_path, """\
        assets:
          - {path: library, category_from: folder, size: 0.08}
        objects:
          - {category: mug, count: 2, asset: {library: mug}}
          - {category: can, count: 2, asset: {library: can}}
        placement: {area: [1, 1]}
        """)
    before = dict(MESH_CACHE_COUNTS)
    recipe = load_recipe(recipe_path)
    assert dict(MESH_CACHE_COUNTS) == before  # listed, not parsed
    assert {c: len(f) for c, f in recipe.library.items()} == {"box": 700, "can": 700, "mug": 700}
    assert {Path(f.path) for fs in recipe.library.values() for f in fs} == {p.resolve() for p in files}
    spec = sample(recipe, 0)
    assert {o.category for o in spec.objects} == {"mug", "can"}
    for o in spec.objects:  # each drawn file comes from its category's folder and is normalised
        assert Path(o.asset.path).parent.parent.name == o.category and o.asset.size == 0.08

    env = {"SCENEFORGE_CACHE": str(tmp_path / "cache")}
    runs = []
    for _ in range(2):
        result = run_python(LIBRARY_SCENE, recipe_path, env=env)
        runs.append(result)
    first, second = runs
    assert first["listed"] == {} and second["listed"] == {}
    assert first["drawn"] == second["drawn"] and 1 < len(first["drawn"]) <= 4
    assert first["after"] == {"converted": len(first["drawn"])}  # only the drawn files were parsed
    assert second["after"] == {"reused": len(first["drawn"])}  # the second process converted none
    # A damaged cache is never trusted: every file is converted again, to the same scenes.
    cached = sorted((tmp_path / "cache" / "meshes").glob("*.npz"))
    assert len(cached) == len(first["drawn"])
    cached[0].write_bytes(cached[0].read_bytes()[:100])
    cached[1].write_bytes(b"PK\x03\x04 not a zip at all")
    third = run_python(LIBRARY_SCENE, recipe_path, env=env)
    assert third["after"] == {"converted": 2, "reused": len(first["drawn"]) - 2} and third["drawn"] == first["drawn"]


def run_python(script: str, *args, env: dict[str, str]) -> dict:
    import os
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_cached_meshes_equal_converted_ones(tmp_path, monkeypatch):
    from sceneforge.scenes import assets
    monkeypatch.setenv("SCENEFORGE_CACHE", str(tmp_path / "cache"))
    spot = ROOT / "examples" / "assets" / "spot" / "spot.obj"
    ref = assets.asset_ref(spot, size=0.2)
    fresh = assets._converted(ref)
    assets._store_model(assets._mesh_cache_key(ref), fresh)
    cached = assets._cached_model(assets._mesh_cache_key(ref))
    assert np.array_equal(cached.mesh.vertices, fresh.mesh.vertices) and np.array_equal(cached.mesh.faces, fresh.mesh.faces)
    assert np.array_equal(cached.uv, fresh.uv) and np.array_equal(cached.face_materials, fresh.face_materials)
    (material,) = cached.materials
    assert np.array_equal(material.texture, fresh.materials[0].texture) and material.base_color == fresh.materials[0].base_color
    # Every material field comes back, whatever its type (a map, a factor, a colour, a mode, a transform).
    rng = np.random.default_rng(0)
    changed = {}
    for item in dataclasses.fields(assets.AssetMaterial):
        default = getattr(assets.AssetMaterial(), item.name)
        if default is None:
            changed[item.name] = rng.integers(0, 256, (3, 5, 4), dtype=np.uint8)
        elif isinstance(default, str):
            changed[item.name] = "BLEND"
        elif isinstance(default, float):
            changed[item.name] = default + 0.25
        elif isinstance(default, tuple):
            changed[item.name] = tuple(v + 0.125 for v in default)
        else:
            changed[item.name] = assets.TextureTransform((0.5, 0.25), 0.75, (2.0, 4.0))
    full = dataclasses.replace(fresh, materials=(assets.AssetMaterial(**changed),))
    assets._store_model("all-fields", full)
    (back,) = assets._cached_model("all-fields").materials
    for name, value in changed.items():
        got = getattr(back, name)
        if isinstance(value, np.ndarray):
            assert np.array_equal(got, value), name
        elif isinstance(value, assets.TextureTransform):
            assert (got.offset, got.rotation, got.scale) == (value.offset, value.rotation, value.scale)
        else:
            assert got == value, name
    # The key follows the MTL's texture: a changed map is a different key.
    copy = tmp_path / "spot"
    copy.mkdir()
    for name in ("spot.obj", "spot.mtl", "spot_texture.png"):
        (copy / name).write_bytes((spot.parent / name).read_bytes())
    key = assets._mesh_cache_key(assets.asset_ref(copy / "spot.obj", size=0.2))
    assert key == assets._mesh_cache_key(ref)
    cv2.imwrite(str(copy / "spot_texture.png"), np.zeros((4, 4, 3), np.uint8))
    assert assets._mesh_cache_key(assets.asset_ref(copy / "spot.obj", size=0.2)) != key


def test_manifests_name_files_categories_and_sizes(tmp_path):
    write_library(tmp_path / "files", 2, categories=("a",))
    (tmp_path / "files" / "list.csv").write_text("file,category,size,up_axis\na/sub/0.ply,tall,0.3,Z\n"
                                                 "a/sub/1.obj,short,,\n")
    (tmp_path / "files" / "list.json").write_text(json.dumps([{"file": "a/sub/1.obj", "scale": 2.0}]))
    recipe = load_recipe(write_recipe(tmp_path, """\
        assets:
          - {manifest: files/list.csv, size: 0.05}
          - {manifest: files/list.json, category: doubled}
        objects:
          - {category: tall, asset: {library: tall}}
          - {category: short, asset: {library: short}}
          - {category: doubled, asset: {library: doubled}}
        placement: {area: [1, 1]}
        """))
    extents = {o.category: np.ptp(asset_model(o.asset).mesh.vertices, axis=0) for o in sample(recipe, 0).objects}
    assert max(extents["tall"]) == pytest.approx(0.3)  # the row's size
    assert extents["tall"][2] == pytest.approx(0.3 * 0.02 / 0.1)  # up_axis Z: the file's z (0.02 high) stays up
    assert max(extents["short"]) == pytest.approx(0.05)  # the entry's size
    assert extents["doubled"] == pytest.approx([0.2, 0.02001 * 2, 0.2])  # scale 2, +Y up: file z becomes -y


BAD_LIBRARIES = {
    "empty_folder": ("{path: empty, category_from: folder}", ":2:12: assets[0].path: empty: holds no category folders"),
    "loose_files": ("{path: loose, category_from: folder}", "1 lie directly in it"),
    "missing_row_file": ("{manifest: lists/gone.csv}", "{tmp}/lists/gone.csv:3: cannot read {tmp}/lists/nope.obj: no such file"),
    "bad_size": ("{manifest: lists/size.csv}", "{tmp}/lists/size.csv:2: size: expected a number > 0, got '-1'"),
    "unknown_extension": ("{manifest: lists/ext.json}", "{tmp}/lists/ext.json: [1]: cannot read {tmp}/lists/notes.txt: unknown asset format"),
    "unknown_column": ("{manifest: lists/column.csv}", "{tmp}/lists/column.csv:1: unknown column 'colour'"),
    "no_category": ("{manifest: lists/nocat.csv}", "{tmp}/lists/nocat.csv:2: no category"),
    "no_manifest": ("{manifest: lists/absent.csv}", "{tmp}/lists/absent.csv: no such manifest file"),
    "short_row": ("{manifest: lists/short.csv}", "{tmp}/lists/short.csv:2: 1 values, the header names 2 columns"),
    "empty_choice": ("{category: a, path: {choice: [loose, empty]}}", "assets[0].path: empty: matches no asset files"),
    "bad_weights": ("{category: a, path: {choice: [loose], weights: [1, 2]}}", "1 options but 2 weights"),
}


@pytest.mark.parametrize("case", sorted(BAD_LIBRARIES))
def test_bad_libraries_name_recipe_and_manifest_lines(tmp_path, case):
    entry, expected = BAD_LIBRARIES[case]
    (tmp_path / "empty").mkdir()
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "thing.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "ok.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    (lists / "notes.txt").write_text("hello")
    (lists / "gone.csv").write_text("file,category\nok.obj,a\nnope.obj,a\n")
    (lists / "size.csv").write_text("file,category,size\nok.obj,a,-1\n")
    (lists / "ext.json").write_text(json.dumps([{"file": "ok.obj", "category": "a"}, {"file": "notes.txt", "category": "a"}]))
    (lists / "column.csv").write_text("file,colour\nok.obj,red\n")
    (lists / "nocat.csv").write_text("file\nok.obj\n")
    (lists / "short.csv").write_text("file,category\nok.obj\n")
    recipe = write_recipe(tmp_path, f"assets:\n  - {entry}\nobjects:\n  - {{category: a, asset: {{library: a}}}}\n")
    with pytest.raises(UserError) as info:
        load_recipe(recipe)
    assert str(info.value).startswith(f"{recipe}:2:") and expected.format(tmp=tmp_path) in str(info.value), info.value


@pytest.mark.parametrize(("background", "expected"), [
    ("{hdri: skies}", ":1:20: background.hdri: no such file or folder: {tmp}/skies"),
    ("{hdri: empty}", ":1:20: background.hdri: {tmp}/empty: holds no .hdr or .exr files"),
    ("{hdri: {choice: [a.hdr, empty]}}", ":1:20: background.hdri: file not found: {tmp}/a.hdr"),
    ("{image: empty}", ":1:21: background.image: {tmp}/empty: holds no .png or"),
    ("{color: [1, 1, 1], hdri_level: 1}", ":1:13: background: hdri_level needs an hdri"),
    ("{hdri: {choice: []}}", ":1:29: background.hdri.choice: needs at least one option"),
])
def test_bad_world_sources_are_located(tmp_path, background, expected):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as info:
        load_recipe(write_recipe(tmp_path, f"background: {background}\n"))
    assert expected.format(tmp=tmp_path) in str(info.value)


def test_validate_check_assets_parses_every_listed_file(tmp_path):
    write_library(tmp_path / "library", 2, categories=("a", "b"))
    (tmp_path / "library" / "b" / "9.obj").write_text("v 0 0 0\nf 1 2 3\n")  # a face naming missing vertices
    recipe = write_recipe(tmp_path, "assets:\n  - {path: library, category_from: folder}\n"
                                    "objects:\n  - {category: a, asset: {library: a}}\n")
    plain = run_cli("validate", recipe)  # no scene draws category b: its files are never parsed
    assert plain.returncode == 0, plain.stderr
    checked = run_cli("validate", recipe, "--check-assets")
    assert checked.returncode == 2, checked.stdout
    assert f"{recipe}:2:12: assets[0].path: cannot read {tmp_path}/library/b/9.obj: line 2: a face names" in checked.stderr
