"""Recipe loading: valid recipes load; every user mistake names FILE:LINE:COL and the field."""

from __future__ import annotations

import re

import pytest

from sceneforge.floor.errors import UserError
from sceneforge.scenes.recipe import Recipe, load_recipe

from .helpers import ROOT, TINY_RECIPE, run_cli, write_recipe


def error_of(tmp_path, text: str, overrides=None) -> str:
    path = write_recipe(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_recipe(path, overrides)
    return str(info.value)


def test_default_example_loads():
    recipe = load_recipe(ROOT / "examples" / "tabletop.yaml")
    assert recipe.categories == ["box", "ball", "can", "cone", "ring", "pill"]
    assert recipe.render.resolution == (320, 240)


def test_unknown_key_names_position_and_suggests(tmp_path):
    message = error_of(tmp_path, "count: 2\nrender:\n  resolution: [64, 48]\n  sampels: 4\n")
    assert message == f"{tmp_path}/recipe.yaml:4:3: render.sampels: unknown key 'sampels', did you mean 'samples'?"


def test_wrong_type_points_at_the_value(tmp_path):
    message = error_of(tmp_path, "count: many\n")
    assert message.startswith(f"{tmp_path}/recipe.yaml:1:8: count: ")
    assert "integer" in message and "'many'" in message


def test_nested_list_field_path(tmp_path):
    text = TINY_RECIPE.replace("asset: {primitive: sphere, radius: 0.06}", "asset: {primitive: sphere, radius: {uniform: [0.2, 0.1]}}")
    message = error_of(tmp_path, text)
    assert re.match(rf"{tmp_path}/recipe.yaml:13:\d+: objects\[1\]\.asset\.radius\.uniform: needs lo <= hi$", message), message


def test_not_a_distribution(tmp_path):
    message = error_of(tmp_path, "camera:\n  distance: {gauss: [1, 2]}\n")
    assert message.startswith(f"{tmp_path}/recipe.yaml:2:13: camera.distance: expected a number or a distribution")


def test_unknown_primitive(tmp_path):
    message = error_of(tmp_path, "objects:\n  - category: a\n    asset: {primitive: teapot}\n")
    assert message == (
        f"{tmp_path}/recipe.yaml:3:12: objects[0].asset: unknown primitive 'teapot'; "
        "expected one of: 'box', 'sphere', 'cylinder', 'cone', 'capsule', 'torus'"
    )


def test_fov_and_intrinsics_exclude_each_other(tmp_path):
    message = error_of(tmp_path, "camera:\n  fov_deg: 40\n  intrinsics: {fx: 100, fy: 100, cx: 50, cy: 40}\n")
    assert message == f"{tmp_path}/recipe.yaml:2:3: camera: give fov_deg or intrinsics, not both"
    message = error_of(tmp_path, "camera:\n  intrinsics: {fx: -1, fy: 100, cx: 50, cy: 40}\n")
    assert message.startswith(f"{tmp_path}/recipe.yaml:2:20: camera.intrinsics.fx: ")


def test_all_errors_are_reported(tmp_path):
    message = error_of(tmp_path, "count: -1\nseed: x\n")
    assert len(message.splitlines()) == 2
    assert ":1:8: count:" in message and ":2:7: seed:" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("count: [1, 2\nseed: 3\n", r":2:\d+: YAML error"),
        ("count: 1\ncount: 2\n", r":2:1: YAML error: found duplicate key"),
        ("count: !!python/object/apply:os.system ['true']\n", r":1:8: YAML tags such as 'tag:yaml.org,2002:python/object/apply:os.system' are not allowed"),
        ("", r":1:1: the recipe is empty"),
        ("- 1\n- 2\n", r":1:1: the recipe must be a mapping"),
    ],
)
def test_unsafe_or_broken_yaml(tmp_path, text, expected):
    assert re.search(expected, error_of(tmp_path, text))


def test_alias_bomb_is_bounded(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    assert "more than 100000 values" in error_of(tmp_path, "\n".join(lines) + "\n")


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_overrides_replace_fields_and_report_as_command_line(tmp_path):
    path = write_recipe(tmp_path, TINY_RECIPE)
    recipe = load_recipe(path, {"count": 5, "render.resolution": [32, 32], "render.samples": 1})
    assert (recipe.count, recipe.render.resolution, recipe.render.samples) == (5, (32, 32), 1)
    with pytest.raises(UserError, match=r"^command line: render\.samples: "):
        load_recipe(path, {"render.samples": 0})


def test_content_hash_ignores_count_only():
    base = Recipe()
    assert base.content_hash() == base.model_copy(update={"count": 99}).content_hash()
    assert base.content_hash() != base.model_copy(update={"seed": 1}).content_hash()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["validate", "missing.yaml"], "missing.yaml: recipe file not found"),
        (["validate", "bad.yaml"], "bad.yaml:1:1: colour: unknown key 'colour'"),
        (["render", "bad.yaml", "-o", "out"], "bad.yaml:1:1: colour: unknown key 'colour'"),
        (["run", "good.yaml", "-o", "out", "--resolution", "64by48"], "expected WxH"),
    ],
)
def test_cli_user_errors_exit_2_without_traceback(tmp_path, args, expected):
    write_recipe(tmp_path, "colour: red\n", "bad.yaml")
    write_recipe(tmp_path, TINY_RECIPE, "good.yaml")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # nothing is rendered or created for a bad invocation


def test_cli_validate_ok(tmp_path):
    result = run_cli("validate", write_recipe(tmp_path, TINY_RECIPE))
    assert result.returncode == 0, result.stderr
    assert "OK: 3 frame(s) at 96x72" in result.stdout and "box, ball, ring" in result.stdout
