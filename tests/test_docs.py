"""The README's two commands are the ones CI and users actually run; the recipe reference's
and the camera page's examples are recipes that work."""

from __future__ import annotations

import re

import pytest

from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample_views

from .helpers import ROOT, write_recipe


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [line for line in text.splitlines() if line.startswith("python3.11 -m venv .venv && ")]


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    main_job, tests = readme_commands()
    assert "sceneforge run examples/tabletop.yaml" in main_job
    assert tests.endswith("-m pytest")
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()
    assert (ROOT / "examples" / "tabletop.yaml").is_file()


@pytest.mark.parametrize("page, least", [("recipes.md", 6), ("cameras.md", 5)])
def test_every_yaml_example_in_the_docs_loads_and_samples(tmp_path, page, least):
    text = (ROOT / "docs" / page).read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S)
              if any(line.strip() and not line.lstrip().startswith("#") for line in b.splitlines())]
    assert len(blocks) >= least
    (tmp_path / "assets").symlink_to(ROOT / "examples" / "assets")  # the examples' paths are relative to examples/
    for i, block in enumerate(blocks):
        recipe = load_recipe(write_recipe(tmp_path, block, f"example{i}.yaml"))
        assert all(view.index == 0 for view in sample_views(recipe, 0))  # a rig: one spec per camera
