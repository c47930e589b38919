"""The Ray executor on a local Ray instance: the same store, the same labels, the same resume."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray

import sceneforge.pipeline
from sceneforge.floor.errors import UserError
from sceneforge.executors import ExecutorOptions
from sceneforge.labelling import LabelAndStore
from sceneforge.pipeline import render_dataset
from sceneforge.render import server
from sceneforge.render.messages import FrameDone
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


class _FinishWaitingForTheNextRender:
    """Finishes frame 0 only once frame 1 has rendered (or a minute has passed: no overlap)."""

    def __init__(self) -> None:
        self.first_rendered, self.second_rendered = threading.Event(), threading.Event()
        self.overlapped: bool | None = None

    def prepare(self) -> None:
        pass

    def __call__(self, spec, passes, render_seconds):
        if spec.index == 0:
            self.overlapped = self.second_rendered.wait(timeout=60)
        return spec.index


class _InstantRenderer:
    device = "GPU"  # leaves the finishing thread at the test's priority

    def __init__(self, folder: Path, finish: _FinishWaitingForTheNextRender) -> None:
        self.folder, self.finish = folder, finish

    def render_to_file(self, spec):
        exr = self.folder / f"{spec.index}.exr"
        exr.touch()
        (self.finish.first_rendered if spec.index == 0 else self.finish.second_rendered).set()
        return exr, 0.5


def test_an_actor_renders_its_next_frame_while_it_finishes_the_last_one(tmp_path, monkeypatch):
    """The actor's two calls (a threaded actor): frame 1 renders while frame 0 is being finished."""
    monkeypatch.setattr(server, "decode", lambda spec, exr: None)
    finish = _FinishWaitingForTheNextRender()
    frames = server.OverlappedFrames(_InstantRenderer(tmp_path, finish), finish)
    answers: dict[int, object] = {}
    first = threading.Thread(target=lambda: answers.setdefault(0, frames(SimpleNamespace(index=0))))
    first.start()
    assert finish.first_rendered.wait(timeout=60)
    answers[1] = frames(SimpleNamespace(index=1))  # renders now, while frame 0 is being finished
    first.join()
    frames.close()
    assert finish.overlapped is True
    assert answers == {0: FrameDone(0, 0, 0.5), 1: FrameDone(1, 1, 0.5)}
    assert list(tmp_path.iterdir()) == []  # each rendered file was removed once finished


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


class _LabelAndStoreReportingNiceness(LabelAndStore):
    """The real finishing step, whose records also give the niceness of the process that rendered them."""

    def __call__(self, spec, passes, render_seconds):
        return {**super().__call__(spec, passes, render_seconds), "nice": os.getpriority(os.PRIO_PROCESS, os.getpid())}


@pytest.fixture
def no_ray(monkeypatch):
    """No Ray running, and RAY_ADDRESS naming a cluster that is not there."""
    ray.shutdown()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    yield
    ray.shutdown()


def test_without_an_address_the_executor_starts_a_private_ray_whose_actors_render_like_local_workers(
        no_ray, tiny_store, tmp_path, monkeypatch):
    """Its own Ray, not RAY_ADDRESS's; actors at normal priority (Ray's default is nice 15) with
    Blender's console in the store's logs, and the Ray shut down at the end."""
    monkeypatch.setattr(sceneforge.pipeline, "LabelAndStore", _LabelAndStoreReportingNiceness)
    recipe = Recipe.model_validate(tiny_store.meta["recipe"]).model_copy(update={"count": 2})
    report = render_dataset(recipe, tmp_path / "out", executor="ray", options=ExecutorOptions(device="cpu", threads=1))
    assert [(r["index"], r["nice"]) for r in report.store.records()] == [(0, os.nice(0)), (1, os.nice(0))]
    log = (report.store.root / "logs" / "render-actor-0.log").read_text()
    assert log.count("Saved: ") == 2  # Blender's line for each EXR it wrote
    assert not ray.is_initialized()
