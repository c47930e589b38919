"""Shared fixtures: a tiny recipe and one small rendered store reused by the label tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from sceneforge.pipeline import render_dataset
from sceneforge.scenes.recipe import load_recipe

from .helpers import TINY_RECIPE, write_recipe


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    return write_recipe(tmp_path, TINY_RECIPE)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory):
    """A store rendered once for the whole session from TINY_RECIPE."""
    folder = tmp_path_factory.mktemp("tiny")
    recipe = load_recipe(write_recipe(folder, TINY_RECIPE))
    return render_dataset(recipe, folder / "out").store
