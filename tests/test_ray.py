"""The Ray executor on a local Ray instance: the same store, the same labels, the same resume."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest
import ray

import sceneforge.pipeline
from sceneforge.floor.errors import UserError
from sceneforge.executors import ExecutorOptions
from sceneforge.labelling import LabelAndStore
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


class _LabelAndStoreReportingBlas(LabelAndStore):
    """The real finishing step, whose records also say how many OpenBLAS threads the actor was given."""

    def __call__(self, spec, passes, render_seconds):
        return {**super().__call__(spec, passes, render_seconds), "blas": os.environ.get("OPENBLAS_NUM_THREADS")}


def test_ray_actors_get_one_blas_thread_like_local_workers(local_ray, tiny_store, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setattr(sceneforge.pipeline, "LabelAndStore", _LabelAndStoreReportingBlas)
    recipe = Recipe.model_validate(tiny_store.meta["recipe"]).model_copy(update={"count": 3})
    report = render_dataset(recipe, tmp_path / "out", executor="ray", options=ExecutorOptions(device="cpu", threads=1))
    assert [(r["index"], r["blas"]) for r in report.store.records()] == [(0, "1"), (1, "1"), (2, "1")]
    assert "OPENBLAS_NUM_THREADS" not in os.environ  # the conductor's own environment is left alone


class _LabelAndStoreReportingItsProcess(LabelAndStore):
    """The real finishing step, whose records also say which process finished them: its pid, its
    niceness, whether it is a Ray worker and which main script it ran."""

    def __call__(self, spec, passes, render_seconds):
        main_script = getattr(sys.modules["__main__"], "__file__", None)
        return {**super().__call__(spec, passes, render_seconds), "pid": os.getpid(),
                "nice": os.getpriority(os.PRIO_PROCESS, os.getpid()), "ray_worker": ray.is_initialized(),
                "main_script": main_script and Path(main_script).name}


def test_an_actor_replaces_a_worker_that_recycles_itself_and_loses_no_frame(local_ray, tiny_store, tmp_path, monkeypatch):
    monkeypatch.setattr(sceneforge.pipeline, "LabelAndStore", _LabelAndStoreReportingItsProcess)
    recipe = Recipe.model_validate(tiny_store.meta["recipe"]).model_copy(update={"count": 3})
    report = render_dataset(recipe, tmp_path / "out", executor="ray",
                            options=ExecutorOptions(device="cpu", threads=1, max_scenes_per_worker=1))
    records = report.store.records()
    assert not report.failures and [r["index"] for r in records] == [0, 1, 2]
    assert len({r["pid"] for r in records}) == 3  # a fresh worker for every frame
    log = (report.store.root / "logs" / "render-actor-0.log").read_text()
    assert log.count("the render worker recycled: rendered 1 frames") == 3
    assert log.count("Saved: ") == 3


class _LabelAndStoreDyingOnce(LabelAndStore):
    """The real finishing step, whose process is killed the first time it finishes frame 1."""

    def __call__(self, spec, passes, render_seconds):
        if spec.index == 1:
            with contextlib.suppress(FileExistsError):
                (Path(self.store_root) / "died-once").touch(exist_ok=False)
                os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(spec, passes, render_seconds)


def test_a_frame_whose_worker_dies_fails_once_and_is_rendered_again(local_ray, tiny_store, tmp_path, monkeypatch):
    monkeypatch.setattr(sceneforge.pipeline, "LabelAndStore", _LabelAndStoreDyingOnce)
    recipe = Recipe.model_validate(tiny_store.meta["recipe"]).model_copy(update={"count": 3})
    report = render_dataset(recipe, tmp_path / "out", executor="ray", options=ExecutorOptions(device="cpu", threads=1))
    assert not report.failures and [r["index"] for r in report.store.records()] == [0, 1, 2]
    events = [json.loads(line) for line in (report.store.root / "logs" / "run.jsonl").read_text().splitlines()]
    retries = [e["message"] for e in events if e["event"] == "retry"]
    assert retries == ["frame 1 failed on actor-0: render worker died (exit code -9)"]
    log = (report.store.root / "logs" / "render-actor-0.log").read_text()
    assert "the render worker died (exit code -9); starting another" in log


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


@pytest.fixture
def no_ray(monkeypatch):
    """No Ray running, and RAY_ADDRESS naming a cluster that is not there."""
    ray.shutdown()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    yield
    ray.shutdown()


def test_without_an_address_the_executor_starts_a_private_ray_whose_actors_render_like_local_workers(
        no_ray, tiny_store, tmp_path, monkeypatch):
    """Its own Ray, not RAY_ADDRESS's; actors at normal priority (Ray's default is nice 15), which
    render in a worker process of their own, without Ray; Blender's console in the store's logs, and
    the Ray shut down at the end."""
    monkeypatch.setattr(sceneforge.pipeline, "LabelAndStore", _LabelAndStoreReportingItsProcess)
    recipe = Recipe.model_validate(tiny_store.meta["recipe"]).model_copy(update={"count": 2})
    report = render_dataset(recipe, tmp_path / "out", executor="ray", options=ExecutorOptions(device="cpu", threads=1))
    records = report.store.records()
    assert [(r["index"], r["nice"], r["ray_worker"], r["main_script"]) for r in records] == [
        (0, os.nice(0), False, None), (1, os.nice(0), False, None)]  # not Ray's worker script (default_worker.py)
    log = (report.store.root / "logs" / "render-actor-0.log").read_text()
    assert log.count("Saved: ") == 2  # Blender's line for each EXR it wrote
    assert not ray.is_initialized()
