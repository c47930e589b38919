"""The render engine: warm workers that survive crashes, recycle, retry, stop cleanly and resume."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from sceneforge.executors import ExecutorOptions, LocalExecutor
from sceneforge.floor.errors import StorageError, UserError
from sceneforge.labelling import LabelAndStore
from sceneforge.labels.store import DatasetStore
from sceneforge.pipeline import render_dataset, render_specs
from sceneforge.scenes.recipe import Recipe, load_recipe
from sceneforge.scenes.sampling import sample
from sceneforge.scenes.spec import AssetRef

from .helpers import TINY_RECIPE, write_recipe

CPU = ExecutorOptions(device="cpu", threads=1)


def fresh_store(tiny_store, root, count=3) -> DatasetStore:
    return DatasetStore.open_for_writing(
        root, recipe=tiny_store.meta["recipe"], recipe_hash=tiny_store.meta["recipe_hash"],
        categories=[c["name"] for c in tiny_store.meta["categories"]], resolution=(96, 72), requested=count,
    )


def events(store: DatasetStore, kind: str) -> list[dict]:
    lines = (store.root / "logs" / "run.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def test_two_workers_give_byte_identical_label_files(tiny_store, tmp_path):
    recipe = Recipe.model_validate(tiny_store.meta["recipe"])
    store = fresh_store(tiny_store, tmp_path / "out")
    _, failures = render_specs(store, (sample(recipe, i) for i in range(3)),
                               options=ExecutorOptions(device="cpu", workers=2, threads=1))
    assert not failures
    assert len({e["message"].split(":")[0] for e in events(store, "worker") if "ready" in e["message"]}) == 2
    for mine, theirs in zip(store.records(), tiny_store.records()):
        for name in ("instance", "semantic", "depth", "distance", "rgb"):
            assert store.path(mine, name).read_bytes() == tiny_store.path(theirs, name).read_bytes(), name


def test_a_killed_worker_is_replaced_and_every_frame_completes(tiny_store, tmp_path):
    recipe = Recipe.model_validate(tiny_store.meta["recipe"])
    store = fresh_store(tiny_store, tmp_path / "out", count=5)
    with LocalExecutor(store, LabelAndStore(str(store.root)), CPU) as executor:
        indices = []
        for outcome in executor.run(sample(recipe, i) for i in range(5)):
            indices.append(outcome["index"])
            if len(indices) == 1:
                os.kill(executor.worker_pids[0], signal.SIGKILL)
    assert sorted(indices) == [0, 1, 2, 3, 4]
    assert [r["index"] for r in store.records()] == [0, 1, 2, 3, 4]


def test_a_frame_that_keeps_failing_is_recorded_and_the_batch_goes_on(tiny_store, tmp_path):
    recipe = Recipe.model_validate(tiny_store.meta["recipe"])
    good = [sample(recipe, i) for i in range(2)]
    broken = sample(recipe, 2)
    bad_asset = AssetRef(primitive="dodecahedron", params={}, hash="0")
    broken = broken.model_copy(update={"objects": [broken.objects[0].model_copy(update={"asset": bad_asset})]})
    store = fresh_store(tiny_store, tmp_path / "out")
    seen = []
    _, failures = render_specs(store, [good[0], broken, good[1]], options=ExecutorOptions(device="cpu", threads=1, retries=1),
                               on_event=lambda kind, message: seen.append((kind, message)))
    assert [f.spec.index for f in failures] == [2] and failures[0].attempts == 2
    assert "unknown primitive 'dodecahedron'" in failures[0].error
    assert [r["index"] for r in store.records()] == [0, 1]
    (line,) = (store.root / "failed.jsonl").read_text().splitlines()
    assert json.loads(line) == {"index": 2, "error": failures[0].error, "attempts": 2}
    assert len(events(store, "retry")) == 2
    assert [m for kind, m in seen if kind == "failed"] == ["2 after 2 attempt(s): " + failures[0].error.strip().splitlines()[-1]]


@pytest.mark.parametrize(("limit", "reason"), [({"max_scenes_per_worker": 1}, "rendered 1 frames"),
                                               ({"max_worker_memory_mb": 1.0}, "resident memory")])
def test_workers_recycle_without_losing_any_frame(tiny_store, tmp_path, limit, reason):
    recipe = Recipe.model_validate(tiny_store.meta["recipe"])
    store = fresh_store(tiny_store, tmp_path / "out")
    _, failures = render_specs(store, (sample(recipe, i) for i in range(3)),
                               options=ExecutorOptions(device="cpu", threads=1, **limit))
    assert not failures and [r["index"] for r in store.records()] == [0, 1, 2]
    assert len([e for e in events(store, "restart") if reason in e["message"]]) >= 2


def test_no_gpu_is_an_error_for_gpu_and_a_notice_for_auto(tiny_store, tmp_path):
    recipe = Recipe.model_validate(tiny_store.meta["recipe"])
    with pytest.raises(UserError, match="--device gpu: asked for GPU 0, but Cycles finds no GPU here"):
        render_specs(fresh_store(tiny_store, tmp_path / "gpu"), [sample(recipe, 0)], options=ExecutorOptions(device="gpu"))
    with pytest.raises(UserError, match="--device gpu:1: asked for GPU 1, but Cycles finds no GPU here"):
        render_specs(fresh_store(tiny_store, tmp_path / "gpu1"), [sample(recipe, 0)], options=ExecutorOptions(device="gpu:1"))
    notices = []
    render_specs(fresh_store(tiny_store, tmp_path / "auto"), [sample(recipe, 0)],
                 options=ExecutorOptions(device="auto", threads=1), on_event=lambda kind, msg: notices.append((kind, msg)))
    assert ("notice", "no GPU found: rendering on the CPU") in notices


@pytest.mark.parametrize(("device", "per_gpu", "expected"), [
    ("gpu", 1, [1]),  # after worker-0 on GPU 0: one worker per GPU
    ("gpu", 3, [1, 0, 1, 0, 1]),  # round robin, so that every GPU is busy before any gets a second worker
    ("gpu:1", 1, []),
    ("gpu:1", 3, [1, 1]),
])
def test_workers_per_gpu_fan_out_over_the_gpus_the_first_worker_found(tiny_store, tmp_path, monkeypatch, device,
                                                                      per_gpu, expected):
    """No GPU here: the first worker's report of two GPUs is handed to the executor as it would arrive."""
    from sceneforge.render.messages import Ready

    started = []
    monkeypatch.setattr(LocalExecutor, "_start", lambda self, name, options: started.append((name, options)))
    store = fresh_store(tiny_store, tmp_path / "out")
    executor = LocalExecutor(store, LabelAndStore(str(store.root)), ExecutorOptions(device=device, workers_per_gpu=per_gpu))
    first = type("FirstWorker", (), {"name": "worker-0", "ready": False})()
    executor._on_ready(first, Ready(pid=1, device="OPTIX GPU A", gpus=["GPU A", "GPU B"]))
    assert [name for name, _ in started] == [f"worker-{n}" for n in range(1, len(expected) + 1)]
    assert [(options.device, options.gpu_index) for _, options in started] == [("gpu", i) for i in expected]


def test_run_on_a_missing_gpu_exits_2_naming_it_and_auto_renders_on_the_cpu(tiny_recipe, tmp_path):
    """This machine has no GPU: a worker asked for one must not fall back to the CPU silently."""
    missing = subprocess.run([sys.executable, "-m", "sceneforge", "run", str(tiny_recipe), "-o", str(tmp_path / "gpu3"),
                              "-n", "1", "--device", "gpu:3"], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2, missing.stderr
    assert "error: --device gpu:3: asked for GPU 3, but Cycles finds no GPU here (tried OPTIX, CUDA" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert not (tmp_path / "gpu3" / "frames.jsonl").exists() or not (tmp_path / "gpu3" / "frames.jsonl").read_text()
    auto = subprocess.run([sys.executable, "-m", "sceneforge", "run", str(tiny_recipe), "-o", str(tmp_path / "auto"),
                           "-n", "1", "--device", "auto", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert auto.returncode == 0, auto.stderr
    assert len((tmp_path / "auto" / "frames.jsonl").read_text().splitlines()) == 1
    assert len(list((tmp_path / "auto" / "rgb").iterdir())) == 1


def test_an_unwritable_store_mid_run_is_a_clear_error_and_finished_frames_stay_valid(tiny_recipe, tmp_path):
    out = tmp_path / "out"

    def break_the_disk_once(record):  # the next frame may have been written meanwhile (a worker holds two)
        if (out / "depth").is_dir():
            shutil.rmtree(out / "depth")
            (out / "depth").write_text("not a folder any more")

    with pytest.raises(StorageError,
                       match=r"^\S+/out: cannot write frame \d+ .*; the \d frame\(s\) already finished are intact") as error:
        render_dataset(load_recipe(tiny_recipe), out, options=CPU, on_frame=break_the_disk_once)
    finished = DatasetStore(out).records()
    assert f"the {len(finished)} frame(s) already finished are intact" in str(error.value)
    assert 1 <= len(finished) <= 2  # the third frame is sent only after the disk broke
    assert all(DatasetStore(out).path(record, name).is_file()
               for record in finished for name in ("rgb", "instance", "semantic"))


def test_multi_frame_scenes_share_objects_and_move_the_camera(tmp_path):
    text = TINY_RECIPE.replace("count: 3", "count: 4").replace("azimuth_deg: {uniform: [0, 360]}}",
                                                               "azimuth_deg: {uniform: [0, 360]}, frames_per_scene: 2}")
    recipe = load_recipe(write_recipe(tmp_path, text))
    specs = [sample(recipe, i) for i in range(4)]
    assert [s.scene_index for s in specs] == [0, 0, 1, 1]
    assert specs[0].content_key() == specs[1].content_key() != specs[2].content_key()
    assert specs[0].camera != specs[1].camera and specs[0].render.noise_seed != specs[1].render.noise_seed
    store = render_dataset(recipe, tmp_path / "out", options=CPU).store
    first, second = store.records()[:2]
    assert first["objects"][0]["world_from_object"] == second["objects"][0]["world_from_object"]
    assert first["camera"]["world_from_camera"] != second["camera"]["world_from_camera"]
    assert store.read_instance(first).any() and store.read_instance(second).any()


def cli(*args, **popen):
    return subprocess.Popen([sys.executable, "-m", "sceneforge", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def wait_for_frames(count, process):
    """Read the --verbose event lines until ``count`` frames are surely in frames.jsonl: a frame is
    written before the next "done" event is handled, so that takes ``count + 1`` of them."""
    done = 0
    for line in process.stderr:
        done += bool(re.search(r"frame \d+ done", line))
        if done > count:
            return
    raise AssertionError(f"the run ended after {done} frames: {process.wait()}")


def test_kill_9_of_the_whole_run_then_rerun_completes_exactly_the_missing_frames(tiny_recipe, tmp_path):
    out = tmp_path / "out"
    args = ("render", tiny_recipe, "-o", out, "-n", "8", "--device", "cpu", "--threads", "1")
    process = cli(*args, "--verbose", start_new_session=True)
    wait_for_frames(2, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished_before = len((out / "frames.jsonl").read_text().splitlines())
    assert finished_before < 8
    rerun = subprocess.run([sys.executable, "-m", "sceneforge", *map(str, args)], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"Rendered {8 - finished_before} frame(s), {finished_before} already done" in rerun.stderr
    indices = [json.loads(line)["index"] for line in (out / "frames.jsonl").read_text().splitlines()]
    assert sorted(indices) == list(range(8))  # every frame exactly once
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    for folder in ("rgb", "depth", "distance", "normals", "instance", "semantic", "scenes"):
        assert len(list((out / folder).iterdir())) == 8


def test_sigterm_stops_cleanly_and_leaves_no_worker_behind(tiny_recipe, tmp_path):
    out = tmp_path / "out"
    process = cli("render", tiny_recipe, "-o", out, "-n", "30", "--device", "cpu", "--threads", "1", "-j", "2", "--verbose")
    wait_for_frames(1, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143 and "terminated; rerun the same command to resume" in stderr, stderr
    assert "Traceback" not in stderr
    log = (out / "logs" / "run.jsonl").read_text()
    pids = {int(p) for p in re.findall(r"\(pid (\d+)\)", log)}
    assert len(pids) == 2
    for pid in pids:  # the conductor joins its workers before it exits
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert json.loads((out / "dataset.json").read_text())["counts"]["finished"] == len((out / "frames.jsonl").read_text().splitlines())
