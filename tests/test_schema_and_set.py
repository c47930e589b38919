"""The recipe JSON Schema (for editors) and --set overrides on every command."""

from __future__ import annotations

import json

import jsonschema
import pytest
from ruamel.yaml import YAML

from sceneforge.floor.errors import UserError
from sceneforge.scenes.recipe import load_recipe, parse_assignment, recipe_json_schema

from .helpers import ROOT, TINY_RECIPE, run_cli, write_recipe


def validator() -> jsonschema.Draft202012Validator:
    schema = recipe_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_examples_and_the_test_recipe_satisfy_the_schema(tmp_path):
    for path in [*ROOT.glob("examples/*.yaml"), write_recipe(tmp_path, TINY_RECIPE)]:
        assert not list(validator().iter_errors(YAML(typ="safe").load(path.read_text()))), path


@pytest.mark.parametrize("text", [
    "render: {sampels: 4}",                                   # misspelt key
    "count: many",                                            # wrong type
    "camera: {distance: {gauss: [1, 2]}}",                    # not a distribution
    "objects: [{category: a, asset: {primitive: teapot}}]",   # unknown primitive
    "objects: [{category: a, count: 1.5, asset: {primitive: box}}]",  # counts are integers
])
def test_the_schema_flags_what_the_loader_refuses(tmp_path, text):
    assert list(validator().iter_errors(YAML(typ="safe").load(text)))
    with pytest.raises(UserError):
        load_recipe(write_recipe(tmp_path, text + "\n"))


def test_the_committed_schema_is_current():
    result = run_cli("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout) == recipe_json_schema()
    assert (ROOT / "docs" / "recipe.schema.json").read_text() == result.stdout, "run: sceneforge schema -o docs/recipe.schema.json"


def test_set_overrides_nested_fields_list_items_and_distributions(tmp_path):
    path = write_recipe(tmp_path, TINY_RECIPE)
    overrides = dict(parse_assignment(t) for t in ["render.samples=1", "objects.1.count=5",
                                                     "camera.distance={uniform: [2, 3]}", "ground=null"])
    recipe = load_recipe(path, overrides)
    assert recipe.render.samples == 1 and recipe.objects[1].count == 5 and recipe.ground is None
    assert recipe.camera.distance.uniform == (2.0, 3.0)
    assert recipe.objects[0].count.randint == (1, 2)  # untouched


@pytest.mark.parametrize(("assignment", "message"), [
    ("render.samples", "expected FIELD.PATH=VALUE"),
    ("render..samples=3", "expected FIELD.PATH=VALUE"),
    ("render.samples=[1, 2", "the value is not valid YAML"),
    ("seed=!!python/object/apply:os.system [true]", "the value is not valid YAML"),
])
def test_bad_assignments(assignment, message):
    with pytest.raises(UserError, match=message):
        parse_assignment(assignment)


@pytest.mark.parametrize(("assignment", "message"), [
    ("render.sampels=3", "command line: render.sampels: unknown key 'sampels', did you mean 'samples'?"),
    ("objects.0.count=-3", "command line: objects[0].count: "),
    ("objects.9.count=1", "--set objects.9.count: 'objects' has no item 9 (it has 3)"),
    ("seed.x=1", "--set seed.x: 'seed' is a value"),
])
def test_set_errors_name_the_command_line(tmp_path, assignment, message):
    path = write_recipe(tmp_path, TINY_RECIPE)
    with pytest.raises(UserError) as info:
        load_recipe(path, dict([parse_assignment(assignment)]))
    assert message in str(info.value)


def test_set_works_on_validate_and_render(tmp_path):
    path = write_recipe(tmp_path, TINY_RECIPE)
    ok = run_cli("validate", path, "--set", "render.resolution=[32, 24]", "--set", "count=2")
    assert ok.returncode == 0 and "OK: 2 frame(s) at 32x24" in ok.stdout
    bad = run_cli("render", path, "-o", tmp_path / "out", "--set", "camera.fov_deg=200")
    assert bad.returncode == 2 and "command line: camera.fov_deg:" in bad.stderr and not (tmp_path / "out").exists()
