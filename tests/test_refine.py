"""The refiner's model, checkpoints, resumable training, tiled inference, store writes and CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sceneforge.floor.errors import UserError
from sceneforge.labels.store import DatasetStore
from sceneforge.refine import checkpoint
from sceneforge.refine.apply import Refiner, _ramp, _tile_starts, refine_store
from sceneforge.refine.data import RealPhotos, gbuffer
from sceneforge.refine.device import pick_device
from sceneforge.refine.model import Generator, RefinerConfig
from sceneforge.refine.train import TrainOptions, train

from .helpers import TINY_RECIPE, run_cli, write_recipe

TINY = RefinerConfig(channels=4, blocks=1, disc_channels=4)




def test_the_reference_generator_is_cyclegans():
    generator = Generator(RefinerConfig.reference(), gbuffer=False)
    # the published ResNet-9 generator (ngf 64): 11.378 M parameters
    assert sum(p.numel() for p in generator.parameters()) == 11_378_179


def test_a_fresh_residual_generator_is_the_identity():
    generator = Generator(TINY, gbuffer=True).eval()
    rgb = torch.rand(2, 3, 32, 40) * 1.8 - 0.9
    with torch.no_grad():
        assert torch.allclose(generator(rgb, torch.rand(2, 6, 32, 40)), rgb, atol=1e-5)
        assert torch.allclose(generator(rgb), rgb, atol=1e-5)  # a real photo: no G-buffer


def test_gbuffer_channels_are_computed_from_the_passes():
    depth = np.full((4, 5), np.inf, np.float32)
    depth[1:3, 1:4] = [[2, 4, 2], [2, 2, 2]]
    normals = np.zeros((4, 5, 3), np.float32)
    normals[..., 2] = -1
    instance = np.zeros((4, 5), np.uint16)
    instance[1:3, 1:3] = 1
    g = gbuffer(depth, normals, instance)
    assert g.shape == (4, 5, 6)
    assert g[1, 1, 0] == 1.0 and g[1, 2, 0] == 0.5 and g[0, 0, 0] == 0  # nearest = 1, no hit = 0
    assert g[0, 0, 3] == 0 and g[1, 1, 3] == -1  # normals only where something was hit
    assert g[1, 1, 4] == 1 and g[1, 3, 4] == 1 and g[3, 4, 4] == 0  # boundary on both sides of the outline
    assert (g[..., 5] == 1).all()


def test_tiles_cover_the_image_and_the_blend_weights_sum_to_one():
    for length, tile, overlap in [(100, 100, 16), (230, 64, 24), (513, 128, 32)]:
        starts = _tile_starts(length, tile, overlap)
        size = min(tile, length)
        assert starts[0] == 0 and starts[-1] + size == length
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
        ramps = _ramp(starts, size, length, overlap)
        total = torch.zeros(length)
        for start, ramp in zip(starts, ramps):
            total[start:start + size] += ramp
        assert torch.allclose(total, torch.ones(length))


def test_device_choice_uses_the_render_vocabulary(caplog):
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert pick_device("auto").type == "cpu"
        assert "no CUDA GPU" in caplog.text
        with pytest.raises(UserError, match="--device gpu:1: no CUDA GPU found"):
            pick_device("gpu:1")
    else:
        assert pick_device("gpu:0") == torch.device("cuda", 0)
    with pytest.raises(UserError, match=r"expected cpu, gpu .*got 'cuda' \(a CUDA GPU is 'gpu'\)"):
        pick_device("cuda")
    with pytest.raises(UserError, match="expected cpu, gpu"):
        pick_device("tpu")


def test_real_photos_are_scaled_to_the_renders_and_bad_files_skipped(photos, caplog):
    (photos / "broken.png").write_bytes(b"\x89PNG not really")
    (photos / "notes.txt").write_text("ignored")
    real = RealPhotos(photos, 72)
    assert len(real.images) == 3
    assert sorted(min(image.shape[:2]) for image in real.images) == [72, 72, 72]
    assert "broken.png: skipped" in caplog.text


def test_no_usable_photos_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        RealPhotos(tmp_path / "missing", 64)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no readable photos"):
        RealPhotos(tmp_path / "empty", 64)
    (tmp_path / "empty" / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(UserError, match="no readable photos"):
        RealPhotos(tmp_path / "empty", 64)


def _weights(run: Path) -> dict:
    return checkpoint.load(run)


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(store, photos, tmp_path):
    options = TrainOptions(steps=4, size=32, batch=2, checkpoint_every=2, config=TINY)
    train(store.root, photos, tmp_path / "whole", options, "cpu")
    first = train(store.root, photos, tmp_path / "split", TrainOptions(**{**options.__dict__, "steps": 2}), "cpu")
    second = train(store.root, photos, tmp_path / "split", options, "cpu")
    assert (first.first_step, first.last_step, second.first_step, second.last_step) == (0, 2, 2, 4)
    finished = train(store.root, photos, tmp_path / "split", options, "cpu")  # nothing left: the benchmarks time no step
    assert (finished.first_step, finished.last_step, finished.steps_per_second) == (4, 4, 0.0)
    whole, split = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    assert whole["step"] == split["step"] == 4
    for network in ("to_real", "to_synthetic", "judge_real", "judge_synthetic"):
        for name, value in whole[network].items():
            assert torch.equal(value, split[network][name]), (network, name)
    lines = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 4 and {"cycle", "identity", "structure", "adversarial"} <= set(lines[-1])


def test_training_refuses_another_architecture_in_the_same_run(store, photos, tmp_path):
    train(store.root, photos, tmp_path / "run", TrainOptions(steps=1, size=32, config=TINY), "cpu")
    wider = RefinerConfig(channels=8, blocks=1, disc_channels=4)
    with pytest.raises(UserError, match="trained with architecture"):
        train(store.root, photos, tmp_path / "run", TrainOptions(steps=2, size=32, config=wider), "cpu")


def test_training_rejects_crops_larger_than_the_renders(store, photos, tmp_path):
    with pytest.raises(UserError, match="larger than the renders"):
        train(store.root, photos, tmp_path / "run", TrainOptions(steps=1, size=96, config=TINY), "cpu")
    with pytest.raises(UserError, match="multiple of 4"):
        train(store.root, photos, tmp_path / "run", TrainOptions(steps=1, size=50, config=TINY), "cpu")


@pytest.fixture
def tiny_checkpoint(store, photos, tmp_path) -> Path:
    train(store.root, photos, tmp_path / "run", TrainOptions(steps=2, size=32, config=TINY), "cpu")
    return tmp_path / "run"


def test_bad_checkpoints_are_clear_errors(tiny_checkpoint, tmp_path):
    good = tiny_checkpoint / checkpoint.FILE_NAME
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match="not a readable refiner checkpoint"):
        checkpoint.load(corrupt)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(1)}, str(foreign), metadata={"format": "something else"})
    with pytest.raises(UserError, match="not a SceneForge refiner checkpoint"):
        checkpoint.load(foreign)
    state = checkpoint.load(good)
    state["config"] = state["config"].to_dict()
    for change, message in [({"config": {"channels": 4}}, "unknown refiner architecture"),
                            ({"config": {**state["config"], "channels": 8}}, "do not fit the architecture")]:
        path = tmp_path / "changed.safetensors"
        checkpoint.save(path, {**state, **change})
        with pytest.raises(UserError, match=message):
            checkpoint.load_generator(path)
    with safe_open(str(good), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    save_file(tensors, str(tmp_path / "v99.safetensors"), metadata={**metadata, "version": "99"})
    with pytest.raises(UserError, match="version 99"):
        checkpoint.load(tmp_path / "v99.safetensors")
    with pytest.raises(UserError, match="no refiner checkpoint there"):
        checkpoint.load(tmp_path / "nowhere")


def test_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "sceneforge.refiner", "version": 1, "payload": RefinerConfig()}, path)  # would unpickle code
    with pytest.raises(UserError, match="not a readable refiner checkpoint"):
        checkpoint.load(path)


def test_apply_writes_refined_frames_records_them_and_resumes(store, tiny_checkpoint):
    refiner = Refiner(tiny_checkpoint, device="cpu", batch=2)
    assert refine_store(store, refiner) == len(store.records())
    reopened = DatasetStore(store.root)
    assert reopened.meta["refiner"]["sha256"] == checkpoint.file_sha256(tiny_checkpoint / checkpoint.FILE_NAME)
    assert "rgb_refined" in reopened.meta["passes"]
    for record in reopened.records():
        refined = reopened.read_rgb(record, "rgb_refined")
        assert refined.shape == reopened.read_rgb(record).shape
    assert refine_store(reopened, refiner) == 0  # same checkpoint: nothing left to do
    (store.root / "rgb_refined" / "000001.png").unlink()  # as if killed before this frame
    assert refine_store(reopened, refiner) == 1


def test_refiner_cli_round_trip_and_refined_export(store, photos, tmp_path):
    run = tmp_path / "cli-run"
    trained = run_cli("refine", "train", "--store", store.root, "--real", photos, "-o", run, "--steps", "2",
                      "--size", "32", "--width", "4", "--blocks", "1", "--device", "cpu", "-q")
    assert trained.returncode == 0, trained.stderr
    assert "step 2" in trained.stdout
    applied = run_cli("refine", "apply", "--checkpoint", run, "--store", store.root, "--device", "cpu", "-q")
    assert applied.returncode == 0, applied.stderr
    sheet = tmp_path / "sheet.png"
    shown = run_cli("refine", "preview", "--store", store.root, "-o", sheet, "-n", "2")
    assert shown.returncode == 0, shown.stderr
    image = cv2.imread(str(sheet))
    assert image.shape[0] >= 2 * 72 and image.shape[1] >= 4 * 96
    exported = run_cli("export", store.root, "-o", tmp_path / "coco", "--rgb", "refined")
    assert exported.returncode == 0, exported.stderr
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    first = coco["images"][0]["file_name"]
    assert (tmp_path / "coco" / "images" / first).read_bytes() == (store.root / "rgb_refined" / first).read_bytes()


def test_refiner_cli_user_errors_exit_2(store, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = run_cli("refine", "apply", "--checkpoint", bad, "--store", store.root)
    assert result.returncode == 2 and "bad.pt: not a readable refiner checkpoint" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("refine", "train", "--store", store.root, "--real", empty, "-o", tmp_path / "r", "--size", "32")
    assert result.returncode == 2 and "no readable photos" in result.stderr
    result = run_cli("refine", "preview", "--store", store.root, "-o", tmp_path / "s.png")
    assert result.returncode == 2 and "refine apply" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_killed_training_run_resumes_from_its_last_checkpoint(store, photos, tmp_path):
    run = tmp_path / "killed"
    args = [sys.executable, "-m", "sceneforge", "refine", "train", "--store", str(store.root), "--real", str(photos),
            "-o", str(run), "--size", "32", "--width", "4", "--blocks", "1", "--device", "cpu", "-q",
            "--checkpoint-every", "1"]
    process = subprocess.Popen([*args, "--steps", "100000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (run / checkpoint.FILE_NAME).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, process.stderr.read().decode()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    saved = checkpoint.load(run)["step"]
    assert saved >= 1
    resumed = subprocess.run([*args, "--steps", str(saved + 2)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"step {saved + 2}" in resumed.stdout
    assert checkpoint.load(run)["step"] == saved + 2


def test_run_refines_before_export_when_the_recipe_names_a_checkpoint(tiny_checkpoint, tmp_path):
    shutil.copytree(tiny_checkpoint, tmp_path / "recipes" / "refiner")
    recipe = write_recipe(tmp_path / "recipes", TINY_RECIPE + "refine: {checkpoint: refiner, device: cpu}\n")
    out = tmp_path / "out"
    result = run_cli("run", recipe, "-o", out, "-n", "1", "-q")
    assert result.returncode == 0, result.stderr
    store = DatasetStore(out)
    assert store.meta["refiner"]["sha256"] == checkpoint.file_sha256(tiny_checkpoint / checkpoint.FILE_NAME)
    coco = json.loads((out / "coco" / "annotations.json").read_text())
    first = coco["images"][0]["file_name"]
    assert (out / "coco" / "images" / first).read_bytes() == (out / "rgb_refined" / first).read_bytes()
    missing = write_recipe(tmp_path, TINY_RECIPE + "refine: {checkpoint: nowhere}\n", name="missing.yaml")
    result = run_cli("run", missing, "-o", tmp_path / "out2", "-n", "1", "-q")
    assert result.returncode == 2 and "missing.yaml:" in result.stderr and ": refine.checkpoint: no refiner checkpoint" in result.stderr
