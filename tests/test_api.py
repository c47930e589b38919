"""The Python API (sceneforge.api, docs/python.md): recipes from YAML, dicts and typed objects,
overrides, sampling, rendering into a store, iterating its frames, exporting, notebook images;
and the recipe key ``place_on`` (``on`` deprecated)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from ruamel.yaml import YAML

import sceneforge
from sceneforge import api
from sceneforge.floor.errors import UserError
from sceneforge.labels.preview import MIN_TILE_WIDTH
from sceneforge.scenes.recipe import ObjectGroup, Recipe, RecipeDeprecationWarning, load_recipe, parse_assignment
from sceneforge.scenes.spec import SceneSpec

from .helpers import ROOT, TINY_RECIPE, run_cli, write_recipe

API_RECIPE = """\
seed: 3
count: 2
render: {resolution: [32, 24], samples: 1}
camera: {fov_deg: 50, look_at: [0, 0, 0.05], distance: 0.8, elevation_deg: 50, azimuth_deg: {uniform: [0, 360]}}
placement: {area: [0.3, 0.3]}
objects:
  - category: box
    count: 2
    asset: {primitive: box, extents: [0.1, 0.1, 0.1]}
  - category: ball
    count: 1
    place_on: ground
    asset: {primitive: sphere, radius: 0.05}
"""


def test_import_sceneforge_loads_no_heavy_module():
    code = ("import sys, sceneforge; sceneforge.__version__; "
            "print(sorted(m for m in ('bpy', 'torch', 'pxr', 'trimesh', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    assert sceneforge.load_recipe is api.load_recipe and sceneforge.open_store is api.open_store
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        sceneforge.nonsense  # noqa: B018


def same(a: Recipe, b: Recipe) -> bool:
    """Equal fields (``==`` also compares where each recipe was read from)."""
    return a.model_dump() == b.model_dump()


def test_a_recipe_from_a_dict_is_the_recipe_from_its_yaml(tmp_path):
    path = write_recipe(tmp_path, TINY_RECIPE)
    from_file = sceneforge.load_recipe(path)
    from_dict = sceneforge.recipe_from_dict(yaml.safe_load(TINY_RECIPE), base_dir=tmp_path)
    assert same(from_dict, from_file) and from_dict.content_hash() == from_file.content_hash()
    overrides = {"count": 5, "camera.fov_deg": 40}
    assert same(sceneforge.recipe_from_dict(yaml.safe_load(TINY_RECIPE), overrides), sceneforge.load_recipe(path, overrides))


@pytest.mark.parametrize(("change", "expected"), [
    ({"count": 0}, r"^dict: count: expected greater than or equal to 1, got 0$"),
    ({"objects": [{"category": "box", "asset": {"primitive": "cube"}}]},
     r"^dict: objects\[0\]\.asset: unknown primitive 'cube'"),
    ({"objects": [{"category": "box", "asset": {"primitive": "box"}, "place_on": "shelf"}]},
     r"^dict: objects\[0\]\.place_on: 'shelf' is not ground, a support or an earlier group's category"),
    ({"render": {"resolution": [32, 24], "samly": 3}}, r"^dict: render\.samly: unknown key 'samly'"),
])
def test_a_dict_recipe_error_names_the_field(change, expected):
    with pytest.raises(UserError, match=expected):
        sceneforge.recipe_from_dict({**yaml.safe_load(API_RECIPE), **change})


def test_a_dict_recipe_must_be_a_mapping():
    with pytest.raises(UserError, match=r"^dict: the recipe must be a mapping"):
        sceneforge.recipe_from_dict([1, 2])  # type: ignore[arg-type]


def test_override_returns_a_new_checked_recipe_as_the_cli_set_does(tmp_path):
    path = write_recipe(tmp_path, API_RECIPE)
    recipe = sceneforge.load_recipe(path)
    changed = sceneforge.override(recipe, {"camera.fov_deg": 60, "objects.0.count": 3, "render.resolution": (64, 48)})
    assert recipe.camera.fov_deg == 50 and recipe.objects[0].count == 2  # the original is untouched
    assert same(changed, load_recipe(path, dict(map(parse_assignment, ["camera.fov_deg=60", "objects.0.count=3",
                                                                    "render.resolution=[64, 48]"]))))
    fx = changed.intrinsic_matrix()[0][0]
    assert math.isclose(fx, 32 / math.tan(math.radians(30)))  # (W / 2) / tan(fov / 2)
    assert sceneforge.override(changed, {"seed": 9}).camera.fov_deg == 60  # overrides accumulate
    with pytest.raises(UserError, match=r"command line: objects\[1\]\.count: counts must be >= 0"):
        sceneforge.override(recipe, {"objects.1.count": -1})
    with pytest.raises(UserError, match=r"command line: objects\[0\]\.place_on: 'bin' is not ground"):
        sceneforge.override(recipe, {"objects.0.place_on": "bin", "objects.1.place_on": "bin"})


def test_a_recipe_built_from_typed_objects_can_be_overridden():
    recipe = Recipe(count=2, objects=[ObjectGroup(category="box", asset={"primitive": "box"})])
    assert same(Recipe.model_validate(recipe.model_dump(mode="json")), recipe)
    changed = sceneforge.override(recipe, {"render.samples": 3})
    assert (changed.render.samples, changed.count, changed.objects[0].category) == (3, 2, "box")
    with pytest.raises(UserError, match=r"command line: render\.samples"):
        sceneforge.override(recipe, {"render.samples": 0})


def test_sample_is_the_cli_sample(tmp_path):
    path = write_recipe(tmp_path, API_RECIPE)
    recipe = sceneforge.load_recipe(path)
    specs = [sceneforge.sample(recipe, i) for i in (2, 3)]
    result = run_cli("sample", path, "-n", "2", "--start", "2")
    assert result.returncode == 0, result.stderr
    assert [SceneSpec.from_json(line) for line in result.stdout.splitlines()] == specs
    assert [s.index for s in specs] == [2, 3] and specs[0] != specs[1]
    assert list(sceneforge.sample_specs(path, 2, start=2)) == specs
    result = run_cli("sample", path, "-n", "2", "--start", "2", "-o", tmp_path / "specs")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "specs").iterdir()) == ["000002.json", "000003.json"]
    assert SceneSpec.from_json((tmp_path / "specs" / "000003.json").read_text()) == specs[1]


def test_sample_writes_every_view_of_a_rig(tmp_path):
    recipe = ROOT / "examples" / "stereo_bin_picking.yaml"
    result = run_cli("sample", recipe, "-o", tmp_path / "specs")
    assert result.returncode == 0, result.stderr
    views = sceneforge.sample_views(sceneforge.load_recipe(recipe), 0)
    for view in views:
        assert SceneSpec.from_json((tmp_path / "specs" / f"000000_{view.camera.name}.json").read_text()) == view
    assert len(list((tmp_path / "specs").iterdir())) == len(views) == 2


def test_sample_refuses_an_output_that_is_a_file(tmp_path):
    path = write_recipe(tmp_path, API_RECIPE)
    (tmp_path / "taken").write_text("x")
    result = run_cli("sample", path, "-o", tmp_path / "taken")
    assert result.returncode == 2 and "taken: exists and is not a folder" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """API_RECIPE rendered through the API (2 frames, 32 x 24, 1 sample)."""
    folder = tmp_path_factory.mktemp("api")
    path = write_recipe(folder, API_RECIPE)
    started = []
    report = api.render(path, folder / "out", device="cpu", workers=1, on_start=lambda *a: started.append(a))
    return path, report, started


def test_render_fills_a_store_whose_frames_carry_their_labels(rendered):
    path, report, started = rendered
    assert (report.rendered, report.failures, started) == (2, [], [(2, 0)])
    store = sceneforge.open_store(report.store.root)
    assert len(store) == 2 and store.categories == ["box", "ball"]
    frames = list(store)
    assert [f.index for f in frames] == [0, 1] and store.frame(1).record == frames[1].record
    for frame in frames:
        assert frame.rgb.shape == (24, 32, 3) and frame.rgb.dtype == np.uint8
        assert frame.depth.shape == (24, 32) and frame.instance.shape == (24, 32)
        assert len(frame.objects) == 3
        for obj in frame.objects:  # each object's label agrees with the instance pass it was read with
            mask = frame.instance == obj["instance_id"]
            assert obj["visible_pixels"] == mask.sum()
            if mask.any():
                ys, xs = np.nonzero(mask)
                assert obj["bbox_xywh"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert np.array_equal(frame.read("semantic"), frame.semantic)
    with pytest.raises(UserError, match="has no 'flow_forward' pass"):
        frames[0].read("flow_forward")
    with pytest.raises(UserError, match="no finished frame 7"):
        store.frame(7)


def test_render_options_override_the_recipe(rendered, tmp_path):
    path, _, _ = rendered
    report = api.render(path, tmp_path / "small", count=1, resolution="16x12", samples=1, device="cpu")
    assert report.rendered == 1 and api.open_store(tmp_path / "small")[0].rgb.shape == (12, 16, 3)
    with pytest.raises(UserError, match="--executor: expected local or ray"):
        api.render(path, tmp_path / "none", executor="slurm")
    with pytest.raises(UserError, match="expected WxH"):
        api.render(path, tmp_path / "none", resolution="16by12")
    assert not (tmp_path / "none").exists()


def test_run_on_a_finished_store_exports_coco(rendered):
    path, report, _ = rendered
    out = report.store.root
    result = sceneforge.run(path, out, device="cpu", usd=False)
    assert (result.report.rendered, result.report.already_done, result.exports) == (0, 2, [out / "coco"])
    coco = json.loads((out / "coco" / "annotations.json").read_text())
    visible = sum(1 for f in result.store for o in f.objects if o["visible_pixels"] > 0)
    assert len(coco["images"]) == 2 and len(coco["annotations"]) == visible


def test_the_store_exports(rendered, tmp_path):
    store = sceneforge.open_store(rendered[1].store.root)
    dest = store.export("yolo", tmp_path / "yolo", task="detect")
    labels = sorted((dest / "labels").rglob("*.txt"))
    assert len(labels) == 2
    rows = sum(len(p.read_text().splitlines()) for p in labels)
    assert rows == sum(1 for f in store for o in f.objects if o["visible_pixels"] > 0)
    with pytest.raises(UserError, match="unknown export format 'pascal'"):
        store.export("pascal", tmp_path / "pascal")


def decode_png(data: bytes) -> np.ndarray:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def test_frames_and_contact_sheets_show_in_jupyter(rendered, tmp_path):
    store = sceneforge.open_store(rendered[1].store.root)
    scale = -(-MIN_TILE_WIDTH // 32)  # small renders are enlarged to at least MIN_TILE_WIDTH
    frame_image = decode_png(store[0]._repr_png_())
    assert frame_image.shape == (24 * scale, 32 * scale, 3)
    sheet = store.contact_sheet(count=2)
    image = decode_png(sheet._repr_png_())
    assert image.shape[0] == 2 * 24 * scale and image.shape[1] % (32 * scale) == 0
    assert np.array_equal(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), sheet.pixels)
    assert decode_png(sheet.save(tmp_path / "sheet.png").read_bytes()).shape == image.shape
    assert decode_png(store.contact_sheet([1])._repr_png_()).shape[0] == 24 * scale


ON_RECIPE = """\
count: 1
objects:
  - category: box
    asset: {primitive: box}
    on: ground
  - category: ball
    asset: {primitive: sphere}
    on: box
"""


def test_the_deprecated_on_key_still_works_and_warns_once_naming_where(tmp_path):
    path = write_recipe(tmp_path, ON_RECIPE)
    with pytest.warns(RecipeDeprecationWarning) as caught:
        recipe = sceneforge.load_recipe(path)
    assert [g.place_on for g in recipe.objects] == ["ground", "box"]
    assert len(caught) == 1
    assert re.match(rf"{re.escape(str(path))}:5:5: objects\[0\]\.on \(and 1 more\): the key `on:` is deprecated.*"
                    r"rename it to `place_on:`", str(caught[0].message))
    data = yaml.safe_load(ON_RECIPE)  # PyYAML reads `on` as True: taken as the deprecated key
    assert data["objects"][1] == {"category": "ball", "asset": {"primitive": "sphere"}, True: "box"}
    with pytest.warns(RecipeDeprecationWarning, match=r"^dict: objects\[0\]\.on \(and 1 more\): the key `on:` is"):
        assert [g.place_on for g in sceneforge.recipe_from_dict(data).objects] == ["ground", "box"]
    data = YAML(typ="safe").load(ON_RECIPE.replace("    on: box\n", ""))  # YAML 1.2: the string "on"
    with pytest.warns(RecipeDeprecationWarning, match=r"^dict: objects\[0\]\.on: the key `on:` is deprecated"):
        assert sceneforge.recipe_from_dict(data).objects[0].place_on == "ground"
    result = run_cli("validate", path)
    assert result.returncode == 0 and f"warning: {path}:5:5: objects[0].on (and 1 more)" in result.stderr


def test_on_and_place_on_together_is_an_error(tmp_path):
    path = write_recipe(tmp_path, ON_RECIPE.replace("    on: box\n", "    on: box\n    place_on: box\n"))
    result = run_cli("validate", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{path}:8:5: objects[1].on: give place_on or the deprecated on, not both" in result.stderr


def test_an_error_in_a_renamed_on_is_reported_at_its_line(tmp_path):
    path = write_recipe(tmp_path, ON_RECIPE.replace("on: box", "on: shelf"))
    with pytest.warns(RecipeDeprecationWarning), pytest.raises(UserError, match=rf"{re.escape(str(path))}:8:9: objects\[1\]\.place_on: 'shelf'"):
        sceneforge.load_recipe(path)


def _keys(node) -> list:
    if isinstance(node, dict):
        return [*node, *(k for v in node.values() for k in _keys(v))]
    if isinstance(node, list):
        return [k for v in node for k in _keys(v)]
    return []


def test_yaml_1_1_loaders_read_no_boolean_keys_in_the_examples_and_docs():
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "recipes.md").read_text(), re.S)
    assert len(examples) >= 10 and len(blocks) >= 10
    for text in [p.read_text() for p in examples] + blocks:
        keys = _keys(yaml.safe_load(text))
        assert not any(isinstance(k, bool) for k in keys), text[:200]
    assert "on" in _keys(YAML(typ="safe").load(ON_RECIPE)) and True in _keys(yaml.safe_load(ON_RECIPE))
    assert "place_on" in _keys(yaml.safe_load((ROOT / "examples" / "bin_picking.yaml").read_text()))


def test_the_recipe_and_sampling_examples_of_docs_python_md_run(monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "python.md").read_text(), re.S)
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    for block in blocks[:3]:  # recipes, typed objects, sampling (the later ones render)
        exec(compile(block, "docs/python.md", "exec"), namespace)
    assert namespace["spec"].index == 7 and len(namespace["specs"]) == 10
    assert namespace["recipe"].render.resolution == (64, 48)


def test_every_api_name_but_render_is_reachable_from_the_package():
    """``sceneforge`` spells its lazily imported names out (to import nothing): they must stay the API's."""
    import sceneforge
    from sceneforge import api

    assert sceneforge._API == set(api.__all__) - {"render"}
    assert all(getattr(sceneforge, name) is getattr(api, name) for name in sceneforge._API)
