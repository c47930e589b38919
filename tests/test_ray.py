"""The Ray executor on a local Ray instance: the same store, the same labels, the same resume."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import ray

from sceneforge.floor.errors import UserError
from sceneforge.executors import ExecutorOptions
from sceneforge.pipeline import render_dataset
from sceneforge.scenes.recipe import Recipe


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_executor_renders_a_valid_store_identical_to_the_local_one(local_ray, tiny_store, tmp_path):
    recipe = Recipe.model_validate(tiny_store.meta["recipe"]).model_copy(update={"count": 2})
    report = render_dataset(recipe, tmp_path / "out", executor="ray", options=ExecutorOptions(device="cpu", workers=2, threads=1))
    assert not report.failures and report.rendered == 2
    records, reference = report.store.records(), tiny_store.records()[:2]
    assert [r["index"] for r in records] == [0, 1]
    for mine, theirs in zip(records, reference):
        assert mine["objects"] == theirs["objects"]
        for name in ("instance", "semantic", "depth"):
            assert report.store.path(mine, name).read_bytes() == tiny_store.path(theirs, name).read_bytes()
    # Resume works the same way: a larger count renders only the new frame.
    again = render_dataset(recipe.model_copy(update={"count": 3}), tmp_path / "out", executor="ray",
                           options=ExecutorOptions(device="cpu", threads=1))
    assert (again.already_done, again.rendered) == (2, 1)
    assert [r["index"] for r in again.store.records()] == [0, 1, 2]


def test_ray_without_gpus_refuses_device_gpu(local_ray, tiny_store, tmp_path):
    recipe = Recipe.model_validate(tiny_store.meta["recipe"]).model_copy(update={"count": 1})
    with pytest.raises(UserError, match="the Ray cluster has no GPU"):
        render_dataset(recipe, tmp_path / "out", executor="ray", options=ExecutorOptions(device="gpu"))


@pytest.fixture
def ray_with_a_gpu_cycles_cannot_use():
    """A local Ray that claims a GPU on this GPU-less machine (the last test here: it replaces local_ray)."""
    ray.shutdown()
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_ray_gpu_actor_without_a_gpu_refuses_instead_of_rendering_on_the_cpu(ray_with_a_gpu_cycles_cannot_use, tiny_store,
                                                                              tmp_path):
    recipe = Recipe.model_validate(tiny_store.meta["recipe"]).model_copy(update={"count": 1})
    with pytest.raises(UserError, match=r"--device gpu: actor-0: asked for GPU 0, but Cycles finds no GPU here"):
        render_dataset(recipe, tmp_path / "out", executor="ray", options=ExecutorOptions(device="gpu"))


@pytest.fixture
def ray_with_its_own_tmpdir(monkeypatch):
    """A local Ray whose workers make their temporary folders in a folder of this test (a short path:
    Ray's sockets live there too, and a socket's path has at most 107 bytes)."""
    ray.shutdown()
    scratch = Path(tempfile.mkdtemp(prefix="sf-"))
    monkeypatch.setenv("TMPDIR", str(scratch))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield scratch
    ray.shutdown()
    shutil.rmtree(scratch, ignore_errors=True)


def test_ray_actors_leave_no_blender_folder_behind(ray_with_its_own_tmpdir, tiny_store, tmp_path):
    recipe = Recipe.model_validate(tiny_store.meta["recipe"]).model_copy(update={"count": 2})
    report = render_dataset(recipe, tmp_path / "out", executor="ray", options=ExecutorOptions(device="cpu", workers=2, threads=1))
    assert report.rendered == 2
    assert [p.name for p in ray_with_its_own_tmpdir.iterdir() if p.name.startswith("blender_")] == []
