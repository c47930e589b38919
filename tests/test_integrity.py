"""Integrity: bad inputs and faults, as a careless or hostile user would make them.

Every case of the corpus runs the CLI's entry point and checks the exit code (2), the located
message (FILE:LINE:COL: field, the asset file and entry, or the option), that no traceback is
printed, and that the finished store it points at is unchanged, file by file.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from unittest import mock

import pytest

from sceneforge.cli import main
from sceneforge.executors import ExecutorOptions
from sceneforge.labels.store import DatasetStore
from sceneforge.labels.verify import verify_store
from sceneforge.pipeline import render_dataset
from sceneforge.scenes.recipe import load_recipe

from .helpers import write_recipe

STORE_RECIPE = """\
seed: 3
count: 2
render: {resolution: [32, 24], samples: 1}
camera: {fov_deg: 50, distance: 0.8, elevation_deg: 50}
objects:
  - category: box
    asset: {primitive: box, extents: [0.12, 0.1, 0.1]}
lights:
  - {type: sun, energy: 3}
"""
OBJ_TRIANGLE = "v 0 0 0\nv 0.1 0 0\nv 0 0.1 0\nf 1 2 3\n"


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds almost nothing (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def gltf_with_image(uri: str) -> str:
    """A one-triangle glTF whose base colour texture is the image at ``uri``."""
    return json.dumps({
        "asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "material": 0}]}],
        "materials": [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}],
        "textures": [{"source": 0}], "images": [{"uri": uri}],
        "buffers": [{"byteLength": 36, "uri": "data:application/octet-stream;base64,"
                     "AAAAAAAAAAAAAAAAzczMPQAAAAAAAAAAAAAAAM3MzD0AAAAA"}],
        "bufferViews": [{"buffer": 0, "byteLength": 36}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3",
                       "min": [0, 0, 0], "max": [0.1, 0.1, 0]}],
    })


def asset_recipe(path: str) -> str:
    return f"assets:\n  - {{category: thing, path: '{path}'}}\nobjects:\n  - {{category: thing, asset: {{library: thing}}}}\n"


def texture_recipe(folder: str) -> str:
    return f"objects:\n  - category: box\n    asset: {{primitive: box}}\n    material: {{texture_folder: {folder}}}\n"


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def assert_run_refused(capsys, store: DatasetStore, recipe: Path, expected: str) -> None:
    """``run RECIPE -o STORE`` exits 2 with ``RECIPE`` then ``expected`` (a regex), no traceback,
    and leaves the finished store exactly as it was."""
    before = files_of(store.root)
    code, err = cli(capsys, "run", recipe, "-o", store.root)
    assert code == 2, err[:2000]
    assert re.search(re.escape(str(recipe)) + expected, err), err[:2000]
    assert "Traceback" not in err and files_of(store.root) == before


def cli(capsys, *args) -> tuple[int, str]:
    """Run the ``sceneforge`` entry point in this process; returns its exit code and stderr."""
    capsys.readouterr()
    with mock.patch.object(sys, "argv", ["sceneforge", *map(str, args)]):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> DatasetStore:
    folder = tmp_path_factory.mktemp("integrity")
    return render_dataset(load_recipe(write_recipe(folder, STORE_RECIPE)), folder / "out").store


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    """Damaged and hostile asset, texture and image files, beside the recipes that name them."""
    folder = tmp_path_factory.mktemp("bad")
    (folder / "bomb").mkdir()
    (folder / "bomb" / "bomb.png").write_bytes(png_header(50_000, 50_000))
    (folder / "empty_folder").mkdir()
    (folder / "huge.png").write_bytes(png_header(50_000, 50_000))
    (folder / "missing_texture.gltf").write_text(gltf_with_image("textures/gone.png"))
    (folder / "huge_texture.gltf").write_text(gltf_with_image("huge.png"))
    (folder / "bomb_embedded.gltf").write_text(gltf_with_image(
        "data:image/png;base64," + base64.b64encode(png_header(40_000, 40_000)).decode()))
    (folder / "far.obj").write_text("v 0 0 0\nv 1e308 0 0\nv 0 1e308 0\nf 1 2 3\n")
    (folder / "truncated.obj").write_text(OBJ_TRIANGLE + "v 0.1 0.1 0\nf 2 4\n")
    (folder / "out_of_range.obj").write_text(OBJ_TRIANGLE + "f 1 2 9\n")
    (folder / "words.obj").write_text(OBJ_TRIANGLE + "f one two three\n")
    (folder / "nan.obj").write_text("v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n")
    (folder / "not_a.glb").write_bytes(b"GLTF nonsense")
    (folder / "garbage.stl").write_bytes(os.urandom(300))
    (folder / "notes.txt").write_text("not an asset")
    with open(folder / "oversize.obj", "wb") as huge:
        huge.truncate((256 << 20) + 1)  # sparse: no disk space used
    (folder / "loop").mkdir()
    (folder / "loop" / "self").symlink_to(".")
    (folder / "loop" / "a.obj").symlink_to("a.obj")
    (folder / "sky.hdr").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 100000 +X 200000\n")
    (folder / "headless.hdr").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n")
    (folder / "fake.png").write_text("this is not a PNG")
    return folder


NAN_CASES = [  # every kind of number a recipe holds: constants, distribution parameters, weights, vectors, colours
    "seed: .nan\n",
    "count: .inf\n",
    "camera: {distance: .nan}\n",
    "camera: {distance: -.inf}\n",
    "camera: {fov_deg: .NaN}\n",
    "camera: {clip_end: .inf}\n",
    "camera: {distance: {uniform: [1, .inf]}}\n",
    "camera: {roll_deg: {normal: [.nan, 1]}}\n",
    "camera: {roll_deg: {normal: [0, .inf]}}\n",
    "camera: {roll_deg: {normal: [0, 1], clip: [-.inf, 1]}}\n",
    "camera: {azimuth_deg: {choice: [0, .nan]}}\n",
    "camera: {azimuth_deg: {choice: [0, 90], weights: [.nan, 1]}}\n",
    "camera: {target_jitter: [0, .nan, 0]}\n",
    "camera: {target_jitter: {uniform_box: {low: [0, 0, 0], high: [1, .inf, 1]}}}\n",
    "camera: {look_at: {on_sphere: {radius: .nan}}}\n",
    "lights:\n  - {type: sun, energy: .nan}\n",
    "lights:\n  - {type: point, energy: 1, color: [1, .nan, 1]}\n",
    "objects:\n  - {category: a, asset: {primitive: sphere, radius: .nan}}\n",
    "objects:\n  - category: a\n    asset: {primitive: box}\n    material: {color: {hsv: [.nan, 1, 1]}}\n",
    "placement: {min_gap: .inf}\n",
]


@pytest.mark.parametrize("text", NAN_CASES)
def test_every_non_finite_number_is_refused_at_its_position(capsys, tmp_path, store, text):
    token = re.search(r"-?\.(nan|NaN|inf)", text)
    line = text[:token.start()].count("\n") + 1
    column = token.start() - (text.rfind("\n", 0, token.start()) + 1) + 1
    assert_run_refused(capsys, store, write_recipe(tmp_path, text), f":{line}:{column}: " + r"-?(nan|inf) is not a finite number")


@pytest.mark.parametrize("value", ["count=.nan", "camera.distance=.inf", "camera.target_jitter=[0, -.inf, 0]",
                                   "camera.distance={uniform: [1, .nan]}"])
def test_non_finite_numbers_in_set_are_refused_naming_the_option(capsys, tmp_path, store, value):
    path = write_recipe(tmp_path, STORE_RECIPE)
    code, err = cli(capsys, "run", path, "-o", store.root, "--set", value)
    assert code == 2 and f"--set {value.split('=')[0]}: " in err and "not finite" in err, err


RANGE_CASES = [  # (recipe, expected after FILE:LINE:COL:)
    ("objects:\n  - {category: a, asset: {primitive: sphere, radius: 0}}\n",
     r"objects\[0\]\.asset\.radius: must be > 0, this value can be 0 \.\. 0"),
    ("objects:\n  - {category: a, asset: {primitive: sphere, radius: -0.1}}\n", r"objects\[0\]\.asset\.radius: must be > 0"),
    ("objects:\n  - {category: a, asset: {primitive: sphere, radius: {uniform: [-0.1, 0.2]}}}\n",
     r"objects\[0\]\.asset\.radius: must be > 0, this value can be -0\.1 \.\. 0\.2"),
    ("objects:\n  - {category: a, asset: {primitive: sphere, radius: {normal: [0.1, 0.01]}}}\n",
     r"objects\[0\]\.asset\.radius: must be > 0, this value can be -inf \.\. inf \(clip the normal\)"),
    ("objects:\n  - {category: a, asset: {primitive: box, extents: [0.1, 0, 0.1]}}\n", r"objects\[0\]\.asset\.extents\[1\]: must be > 0"),
    ("objects:\n  - {category: a, asset: {primitive: torus, minor_radius: {choice: [0.01, 0]}}}\n",
     r"objects\[0\]\.asset\.minor_radius: must be > 0"),
    ("objects:\n  - {category: a, asset: {primitive: cylinder, height: -1}}\n", r"objects\[0\]\.asset\.height: must be > 0"),
    ("objects:\n  - {category: a, asset: {primitive: capsule, radius: {loguniform: [0, 1]}}}\n",
     r"objects\[0\]\.asset\.radius\.loguniform: needs 0 < lo <= hi"),
    ("objects:\n  - {category: a, count: -1, asset: {primitive: box}}\n", r"objects\[0\]\.count: counts must be >= 0"),
    ("objects:\n  - {category: a, count: {randint: [-1, 3]}, asset: {primitive: box}}\n", r"objects\[0\]\.count: counts must be >= 0"),
    ("objects:\n  - {category: a, count: {choice: [1, 2], weights: [-1, 2]}, asset: {primitive: box}}\n",
     r"objects\[0\]\.count\.choice: weights must be >= 0 with a positive sum"),
    ("objects:\n  - {category: a, count: {choice: [1, 2], weights: [0, 0]}, asset: {primitive: box}}\n",
     r"objects\[0\]\.count\.choice: weights must be >= 0 with a positive sum"),
    ("objects:\n  - {category: a, count: {choice: []}, asset: {primitive: box}}\n", r"objects\[0\]\.count\.choice: needs at least one option"),
    ("objects:\n  - {category: a, asset: {primitive: box}, material: {roughness: 1.5}}\n",
     r"objects\[0\]\.material\.roughness: must lie in \[0, 1\]"),
    ("objects:\n  - {category: a, asset: {primitive: box}, material: {metallic: {uniform: [-0.1, 0.5]}}}\n",
     r"objects\[0\]\.material\.metallic: must lie in \[0, 1\]"),
    ("objects:\n  - {category: a, asset: {primitive: box}, material: {color: [1.5, 0, 0]}}\n",
     r"objects\[0\]\.material\.color\[0\]: must lie in \[0, 1\]"),
    ("objects:\n  - {category: a, asset: {primitive: box}, material: {color: {hsv: [0.5, 2, 1]}}}\n",
     r"objects\[0\]\.material\.color\.hsv\[1\]: must lie in \[0, 1\]"),
    ("camera: {distance: 0}\n", r"camera\.distance: must be > 0"),
    ("camera: {distance: {uniform: [0, 1]}}\n", r"camera\.distance: must be > 0, this value can be 0 \.\. 1"),
    ("camera: {look_at: all_objects, fit_margin: 0}\n", r"camera\.fit_margin: must be > 0"),
    ("camera: {elevation_deg: 100}\n", r"camera\.elevation_deg: must lie in \[-90, 90\]"),
    ("camera: {clip_start: 5, clip_end: 1}\n", r"camera: clip_start \(5\) must be smaller than clip_end \(1\)"),
    ("camera: {clip_start: 1, clip_end: 1}\n", r"camera: clip_start \(1\) must be smaller than clip_end \(1\)"),
    ("camera: {clip_start: 0}\n", r"camera\.clip_start: .*greater than 0"),
    ("camera: {fov_deg: 180}\n", r"camera\.fov_deg: .*less than 180"),
    ("camera: {azimuth_deg: {uniform: [360, 0]}}\n", r"camera\.azimuth_deg\.uniform: needs lo <= hi"),
    ("lights:\n  - {type: sun, energy: -1}\n", r"lights\[0\]\.energy: must lie in \[0, inf\]"),
    ("lights:\n  - {type: point, energy: 1, distance: 0}\n", r"lights\[0\]\.distance: must be > 0"),
    ("lights:\n  - {type: point, energy: 1, elevation_deg: -95}\n", r"lights\[0\]\.elevation_deg: must lie in \[-90, 90\]"),
    ("lights:\n  - {type: area, energy: 1, size: 0}\n", r"lights\[0\]\.size: .*greater than 0"),
    ("render: {resolution: [0, 24]}\n", r"render\.resolution\[0\]: .*greater than or equal to 1"),
    ("render: {samples: 0}\n", r"render\.samples: .*greater than or equal to 1"),
    ("refine: {checkpoint: run, device: cuda}\n", r"refine\.device: expected cpu, gpu .*got 'cuda' \(a CUDA GPU is 'gpu'\)"),
]


@pytest.mark.parametrize(("text", "expected"), RANGE_CASES)
def test_values_out_of_range_are_refused_when_the_recipe_loads(capsys, tmp_path, store, text, expected):
    assert_run_refused(capsys, store, write_recipe(tmp_path, text), r":\d+:\d+: " + expected)


LIMIT_CASES = [  # (recipe text, expected message after the recipe's path)
    ("objects:\n  - {category: a, count: 100000, asset: {primitive: box}}\n",
     r":2:26: objects\[0\]\.count: the object groups can draw up to 100000 objects in a scene, more than the 32767"),
    ("objects:\n" + "  - {category: a, count: {randint: [0, 20000]}, asset: {primitive: box}}\n" * 2,
     r":\d+:\d+: objects\[\d\]\.count: the object groups can draw up to 40000 objects"),
    ("seed: " + "[" * 20_000 + "]" * 20_000 + "\n", r": the recipe is nested too deeply \(more than 32 levels\)"),
    ("seed: " + "[" * 40 + "]" * 40 + "\n", r":1:\d+: nested more than 32 levels deep"),
    ("seed: 1\n" + "#" * (300 << 10) + "\n", r": recipe is larger than 262144 bytes"),
    ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                                                     for p, c in zip("abcdef", "bcdefg")),
     r": more than 100000 values \(an alias bomb\?\)"),
    ("seed: !!python/object/apply:os.system ['true']\n", r":1:7: YAML tags such as '.*' are not allowed"),
    ("seed: 1\nseed: 2\n", r":2:1: YAML error: .*duplicate"),
    ("", r":1:1: the recipe is empty"),
    ("- 1\n- 2\n", r":1:1: the recipe must be a mapping of fields"),
    ("seed: [1\n", r":2:1: YAML error: "),
]


@pytest.mark.parametrize(("text", "expected"), LIMIT_CASES)
def test_limits_are_checked_before_the_work(capsys, tmp_path, store, text, expected):
    assert_run_refused(capsys, store, write_recipe(tmp_path, text), expected)


def test_thousands_of_errors_print_the_first_50_naming_the_missing_field(capsys, tmp_path):
    path = write_recipe(tmp_path, "objects:\n" + "".join(f"  - category: c{i}\n" for i in range(2000)))
    code, err = cli(capsys, "validate", path)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 51, lines[-3:]
    assert re.search(r":2:5: objects\[0\]\.asset: required field is missing", lines[0]), lines[0]
    assert lines[-1] == "... and 1950 more problem(s)"


ASSET = r"assets\[0\]\.path: .*"  # the recipe field naming the asset, then the asset file
ASSET_CASES = [  # (recipe text, expected message after the recipe position)
    (asset_recipe("missing_texture.gltf"), ASSET + r"missing_texture\.gltf: images\[0\] \(textures/gone\.png\): its file .*gone\.png is missing"),
    (asset_recipe("huge_texture.gltf"), ASSET + r"huge_texture\.gltf: images\[0\] \(huge\.png\): declares more pixels than the limit"),
    (asset_recipe("bomb_embedded.gltf"), ASSET + r"bomb_embedded\.gltf: images\[0\] \(data:image/png.*\): declares more pixels"),
    (asset_recipe("far.obj"), ASSET + r"far\.obj: a vertex lies 1e\+308 m from the asset's origin"),
    (asset_recipe("truncated.obj"), ASSET + r"truncated\.obj: line 6: a face needs 3 or more corners, this one has 2"),
    (asset_recipe("out_of_range.obj"), ASSET + r"out_of_range\.obj: line 5: a face names vertex \[1, 2, 9\], but only 3"),
    (asset_recipe("words.obj"), ASSET + r"words\.obj: line 5: a face corner is not a vertex number"),
    (asset_recipe("nan.obj"), ASSET + r"nan\.obj: it has non-finite vertex positions"),
    (asset_recipe("not_a.glb"), ASSET + r"not_a\.glb: not a binary glTF file"),
    (asset_recipe("garbage.stl"), ASSET + r"garbage\.stl: "),
    (asset_recipe("notes.txt"), ASSET + r"notes\.txt: unknown asset format"),
    (asset_recipe("oversize.obj"), ASSET + r"oversize\.obj: 268435457 bytes is more than the 268435456 byte limit"),
    (asset_recipe("gone.obj"), ASSET + r"gone\.obj: no such file"),
    (asset_recipe("loop/**/*.obj"), ASSET + r"loop/\*\*/\*\.obj: matches no asset files"),
    (asset_recipe("empty_folder"), ASSET + r"empty_folder: matches no asset files"),
    (texture_recipe("bomb"), r"objects\[0\]\.material\.texture_folder: cannot read .*bomb\.png: declares more pixels than the limit"),
    (texture_recipe("no_such_folder"), r"objects\[0\]\.material\.texture_folder: .*no_such_folder: no such folder"),
    ("background: {hdri: sky.hdr}\n", r"background\.hdri: .*sky\.hdr: declares 200000x100000 pixels; the limit is"),
    ("background: {hdri: headless.hdr}\n", r"background\.hdri: .*headless\.hdr: not a readable Radiance HDR image"),
    ("background: {image: huge.png}\n", r"background\.image: .*huge\.png: declares more pixels than the limit"),
    ("background: {image: fake.png}\n", r"background\.image: .*fake\.png: not a readable image"),
]


@pytest.mark.parametrize(("text", "expected"), ASSET_CASES)
def test_bad_assets_and_images_are_refused_naming_the_file(capsys, bad_files, tmp_path, text, expected):
    """Library files are parsed when a scene draws them: validate (which draws scene 0) and run
    refuse the file at its recipe line, and run writes no frame."""
    path = bad_files / "recipe.yaml"
    path.write_text(text)
    for args in (("validate", path), ("run", path, "-o", tmp_path / "out")):
        code, err = cli(capsys, *args)
        assert code == 2, err[:2000]
        assert re.search(re.escape(str(path)) + r":\d+:\d+: " + expected, err), err[:2000]
        assert "Traceback" not in err
    assert not (tmp_path / "out" / "frames.jsonl").exists() or not DatasetStore(tmp_path / "out").records()


def test_bad_options_are_refused_naming_the_option(capsys, tmp_path, store):
    before = files_of(store.root)
    recipe = write_recipe(tmp_path, STORE_RECIPE)
    cases = [
        (("run", recipe, "-o", store.root, "--device", "cuda"), r"--device: expected cpu, gpu .*\(a CUDA GPU is 'gpu'\)"),
        (("run", recipe, "-o", store.root, "--device", "gpu:x"), r"--device: expected cpu, gpu"),
        (("run", recipe, "-o", store.root, "--set", "nonsense"), r"--set: expected FIELD\.PATH=VALUE"),
        (("run", recipe, "-o", store.root, "--set", "camera.nope=1"), r"command line: camera\.nope: unknown key 'nope'"),
        (("run", recipe, "-o", store.root, "--resolution", "10"), r"expected WxH"),
        (("run", recipe, "-o", store.root, "-j", "0"), r"-j"),
        (("preview", store.root, "-o", tmp_path / "p.png", "--frames", "0,99"), r"--frames: .* has no finished frame 99"),
        (("preview", store.root, "-o", tmp_path / "p.png", "--frames", "x"), r"expected comma-separated frame indices"),
        (("export", store.root, "-o", tmp_path / "e", "-f", "pascal"), r"unknown export format 'pascal'"),
        (("export", store.root, "-o", tmp_path / "e", "--split", "train=2"), r"--split: fractions must be > 0 and sum to 1"),
        (("verify", tmp_path / "nothing"), r"not a SceneForge dataset \(no dataset\.json\)"),
        (("refine", "apply", "--checkpoint", tmp_path / "none", "--store", store.root), r"no refiner checkpoint there"),
    ]
    for args, expected in cases:
        code, err = cli(capsys, *args)
        assert code == 2 and re.search(expected, err) and "Traceback" not in err, (args, err)
    assert files_of(store.root) == before


def copy_of(store: DatasetStore, folder: Path) -> DatasetStore:
    shutil.copytree(store.root, folder)
    return DatasetStore(folder)


def test_exports_refuse_a_store_with_missing_or_damaged_files(capsys, tmp_path, store):
    copy = copy_of(store, tmp_path / "copy")
    (copy.root / "rgb" / "000001.png").unlink()
    code, err = cli(capsys, "export", copy.root, "-o", tmp_path / "coco")
    assert code == 2 and "frame 1: rgb/000001.png is missing (1 damaged frame(s))" in err, err
    lines = (copy.root / "frames.jsonl").read_text().splitlines()
    (copy.root / "frames.jsonl").write_text(lines[0] + "\n{not json\n" + lines[1] + "\n")
    code, err = cli(capsys, "export", copy.root, "-o", tmp_path / "coco")
    assert code == 2 and re.search(r"frames\.jsonl:2: corrupt frame record", err), err
    assert not (tmp_path / "coco").exists()


def test_verify_finds_and_repairs_damage_and_the_next_run_renders_it_again(capsys, tmp_path, store):
    copy = copy_of(store, tmp_path / "copy")
    assert verify_store(copy).problems == 0
    png = copy.root / "rgb" / "000000.png"
    data = bytearray(png.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes: only the checksum sees it
    png.write_bytes(bytes(data))
    (copy.root / "depth" / "000007.exr").write_bytes(b"orphan")
    (copy.root / "depth" / ".000001.exr.99.tmp").write_bytes(b"")
    with open(copy.root / "frames.jsonl", "a") as records:
        records.write((copy.root / "frames.jsonl").read_text().splitlines()[1] + "\n")  # frame 1 twice
    code, out = cli(capsys, "verify", copy.root)
    assert code == 1
    report = verify_store(copy)
    assert report.damaged == ["frame 0: rgb/000000.png is damaged (its CRC-32 differs from the record's)"]
    assert report.duplicates == [1] and report.orphans == ["depth/000007.exr"]  # frame 0's files: damaged, not orphans
    assert report.temporary == ["depth/.000001.exr.99.tmp"] and report.intact == 1
    code, _ = cli(capsys, "verify", copy.root, "--repair")
    assert code == 0 and verify_store(DatasetStore(copy.root)).problems == 0
    assert [r["index"] for r in DatasetStore(copy.root).records()] == [1]
    recipe = write_recipe(tmp_path, STORE_RECIPE)
    code, err = cli(capsys, "render", recipe, "-o", copy.root, "--device", "cpu")
    assert code == 0 and "Rendered 1 frame(s), 1 already done" in err, err
    assert verify_store(DatasetStore(copy.root)).problems == 0
    assert png.read_bytes() == (store.root / "rgb" / "000000.png").read_bytes()  # the same frame again


def test_a_deleted_or_truncated_file_is_rendered_again_on_rerun(tmp_path, store):
    copy = copy_of(store, tmp_path / "copy")
    (copy.root / "rgb" / "000001.png").unlink()
    depth = copy.root / "depth" / "000000.exr"
    depth.write_bytes(depth.read_bytes()[:-10])
    recipe = write_recipe(tmp_path, STORE_RECIPE)
    args = [sys.executable, "-m", "sceneforge", "run", str(recipe), "-o", str(copy.root), "--device", "cpu"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Rendered 2 frame(s), 0 already done" in result.stderr and "will be rendered again" in result.stderr
    for name in ("rgb/000001.png", "depth/000000.exr"):
        assert (copy.root / name).read_bytes() == (store.root / name).read_bytes()
    assert len(DatasetStore(copy.root).records()) == 2 and (copy.root / "coco" / "annotations.json").is_file()


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    slow = STORE_RECIPE.replace("count: 2", "count: 200").replace("[32, 24], samples: 1", "[96, 72], samples: 32")
    recipe = write_recipe(tmp_path, slow)
    out = tmp_path / "out"
    base = [sys.executable, "-m", "sceneforge", "render", str(recipe), "-o", str(out), "--device", "cpu", "--threads", "1"]
    first = subprocess.Popen([*base, "--verbose"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stderr:
            if re.search(r"frame \d+ done", line):
                break
        for command in ([*base], [sys.executable, "-m", "sceneforge", "verify", str(out), "--repair"]):
            second = subprocess.run(command, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stderr
            assert re.search(rf"another SceneForge process is writing here \(pid {first.pid} on [^,]+, "
                             r"'.*sceneforge.* render .*', since \d{4}-\d\d-\d\dT", second.stderr), second.stderr
    finally:
        first.kill()
        first.wait()
    records = [json.loads(line)["index"] for line in (out / "frames.jsonl").read_text().splitlines()]
    assert len(records) == len(set(records))  # nobody wrote a frame twice
    rerun = subprocess.run([*base, "-n", "2"], capture_output=True, text=True, timeout=300)  # the dead holder's lock is gone
    assert rerun.returncode == 0, rerun.stderr


def test_records_are_strict_json(tmp_path, store):
    copy = copy_of(store, tmp_path / "copy")
    record = copy.records()[0]
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        copy.append_record({**record, "objects": [{"visibility": float("nan")}]})
    assert (copy.root / "frames.jsonl").read_text() == (store.root / "frames.jsonl").read_text()


def test_workers_are_capped_by_the_frames_to_render(tmp_path):
    events = []
    recipe = load_recipe(write_recipe(tmp_path, STORE_RECIPE))
    render_dataset(recipe, tmp_path / "out", options=ExecutorOptions(device="cpu", workers=50, threads=1),
                   on_event=lambda kind, message: events.append((kind, message)))
    assert ("notice", "--workers 50: starting 2, the most that the frames to render allow") in events
    assert len([m for kind, m in events if kind == "worker" and ": starting (pid" in m]) == 2


def test_an_internal_error_shows_its_traceback_and_asks_for_a_report(capsys, tmp_path):
    recipe = write_recipe(tmp_path, STORE_RECIPE)
    with mock.patch("sceneforge.scenes.recipe.load_recipe", side_effect=RuntimeError("a bug")):
        code, err = cli(capsys, "validate", recipe)
    assert code == 1 and "Traceback" in err and "RuntimeError: a bug" in err
    assert "internal error: this is a bug in SceneForge, not in your input; please report it" in err


def test_the_usd_stages_textures_are_neither_orphans_nor_left_half_written(tmp_path):
    """A textured scene's USD maps live in scenes/textures/, shared by content: verify knows them,
    and a map left half-written by a crash is removed by verify --repair and by the next run."""
    textures = tmp_path / "textures"
    textures.mkdir()
    shutil.copy(Path(__file__).parents[1] / "examples" / "assets" / "textures" / "objects" / "coffee.jpg", textures)
    recipe = write_recipe(tmp_path, STORE_RECIPE.replace("extents: [0.12, 0.1, 0.1]}",
                                                         "extents: [0.12, 0.1, 0.1]}\n    material: {texture_folder: textures}"))
    store = render_dataset(load_recipe(recipe), tmp_path / "out", usd=True).store
    maps = sorted((store.root / "scenes" / "textures").glob("*.png"))
    assert len(maps) == 1 and verify_store(store).problems == 0
    partial = store.root / "scenes" / "textures" / f".{maps[0].name}.99.tmp"
    partial.write_bytes(b"half")
    report = verify_store(store)
    assert report.temporary == [partial.relative_to(store.root).as_posix()] and not report.orphans
    verify_store(store, repair=True)
    assert not partial.exists() and maps[0].exists()
    partial.write_bytes(b"half")
    render_dataset(load_recipe(recipe), store.root, usd=True)
    assert not partial.exists() and verify_store(DatasetStore(store.root)).problems == 0
