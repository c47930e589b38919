"""Shared fixtures: a tiny recipe and one small rendered store reused by the label tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from sceneforge.labels.store import DatasetStore
from sceneforge.pipeline import render_dataset
from sceneforge.scenes.recipe import load_recipe

from .helpers import TINY_RECIPE, write_recipe


@pytest.fixture(scope="session", autouse=True)
def mesh_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The converted-mesh cache of every test (and the workers they start): a fresh folder, never
    the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("cache")
    os.environ["SCENEFORGE_CACHE"] = str(folder)
    return folder


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    return write_recipe(tmp_path, TINY_RECIPE)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory):
    """A store rendered once for the whole session from TINY_RECIPE."""
    folder = tmp_path_factory.mktemp("tiny")
    recipe = load_recipe(write_recipe(folder, TINY_RECIPE))
    return render_dataset(recipe, folder / "out").store


@pytest.fixture
def store(tiny_store, tmp_path) -> DatasetStore:
    """A private copy of the session's tiny store (for tests that write into it, e.g. refining)."""
    return DatasetStore(shutil.copytree(tiny_store.root, tmp_path / "store"))


@pytest.fixture
def photos(tmp_path) -> Path:
    """Three 'real' photos of different sizes, all larger than the tiny renders."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(120, 160), (300, 200), (90, 90)]):
        cv2.imwrite(str(folder / f"p{i}.jpg"), (rng.random((h, w, 3)) * 255).astype(np.uint8))
    return folder
