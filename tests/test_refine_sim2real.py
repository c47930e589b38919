"""A sim-to-real fixture with a known answer: the "real" domain is other renders of the same
recipe seen through a known sensor (gamma, warm white balance, vignetting, blur, noise). A short
CPU training must move the renders toward that domain and keep their labels valid."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sceneforge.labels.store import DatasetStore
from sceneforge.pipeline import render_dataset
from sceneforge.refine.apply import Refiner, _decode, refined_images
from sceneforge.refine.model import RefinerConfig
from sceneforge.refine.train import TrainOptions, train
from sceneforge.refine.metrics import label_validity, sliced_wasserstein
from sceneforge.scenes.recipe import load_recipe

from .helpers import TINY_RECIPE, run_cli, write_recipe
from .test_refine_metrics import inception_file

FIXTURE = {"count": 16, "render.resolution": [64, 64]}  # TINY_RECIPE at 64 px: enough for 4 SWD levels


def sensor(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The 'real' camera: gamma 0.8, warm white balance, vignetting, a slight blur and noise."""
    image = rgb.astype(np.float32) / 255
    h, w = image.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    radius = np.hypot((yy - h / 2) / h, (xx - w / 2) / w)
    image = image ** 0.8 * np.array([1.15, 0.95, 0.7]) * (1 - 0.6 * radius**2)[..., None]
    image = cv2.GaussianBlur(image, (3, 3), 0.7) + rng.normal(0, 0.02, image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def sim2real(tmp_path_factory) -> tuple[DatasetStore, Path, Path]:
    """(synthetic store, folder of 'real' photos, trained refiner run)."""
    folder = tmp_path_factory.mktemp("sim2real")
    recipe = write_recipe(folder, TINY_RECIPE)
    synthetic = render_dataset(load_recipe(recipe, FIXTURE), folder / "synthetic").store
    other = render_dataset(load_recipe(recipe, {**FIXTURE, "seed": 99}), folder / "other").store
    photos = folder / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for record in other.records():
        cv2.imwrite(str(photos / f"{record['index']}.png"), sensor(other.read_rgb(record), rng)[..., ::-1])
    options = TrainOptions(steps=60, size=48, batch=4, checkpoint_every=60,
                           config=RefinerConfig(channels=16, blocks=3, disc_channels=16))
    train(synthetic.root, photos, folder / "run", options, "cpu")
    return synthetic, photos, folder / "run"


def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


def test_refiner_moves_renders_toward_the_real_sensor_and_keeps_labels(sim2real):
    store, photos, run = sim2real
    records = store.records()
    renders = [store.read_rgb(r) for r in records]
    refined = refined_images(store, records, run, "cpu")
    real = [cv2.imread(str(p))[..., ::-1] for p in sorted(photos.iterdir())]
    before = statistics.fmean(sliced_wasserstein(_tensor(renders), _tensor(real)))
    after = statistics.fmean(sliced_wasserstein(_tensor(refined), _tensor(real)))
    assert after < 0.85 * before, (before, after)
    # the sensor's white balance is learnt: mean colours move toward the photos'
    mean = {name: np.mean(images, axis=(0, 1, 2)) for name, images in (("render", renders), ("refined", refined), ("real", real))}
    assert np.abs(mean["refined"] - mean["real"]).sum() < 0.5 * np.abs(mean["render"] - mean["real"]).sum(), mean
    instances = torch.from_numpy(np.stack([store.read_instance(r).astype(np.int64) for r in records]))
    validity = label_validity(_tensor(renders), _tensor(refined), instances)
    assert validity["edge_agreement_ratio"] >= 0.9, validity
    assert validity["structure_ssim"] >= 0.85, validity


def test_tiled_inference_matches_the_whole_image(sim2real):
    store, _, run = sim2real
    rgb, aux = _decode(store, store.records()[:2])
    rgb = np.stack([cv2.resize(image, (192, 160), interpolation=cv2.INTER_LINEAR) for image in rgb])
    aux = np.stack([cv2.resize(a, (192, 160), interpolation=cv2.INTER_NEAREST) for a in aux])
    whole = Refiner(run, device="cpu", tile=512)(rgb, aux).astype(int)
    tiled = Refiner(run, device="cpu", tile=96, overlap=32)(rgb, aux).astype(int)
    assert np.abs(whole - rgb.astype(int)).mean() > 5  # the refiner does change the images
    difference = np.abs(whole - tiled)
    assert difference.mean() < 0.25 and difference.max() <= 6, (difference.mean(), difference.max())


def test_eval_reports_realism_and_label_validity(sim2real, tmp_path):
    store, photos, run = sim2real
    report_path = tmp_path / "report.json"
    weights = inception_file(tmp_path / "inception.safetensors")
    result = run_cli("refine", "eval", "--store", store.root, "--real", photos, "--checkpoint", run, "-n", "8",
                     "--device", "cpu", "--inception-weights", weights, "-o", report_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["frames"] == 8 and report["photos"] == 16
    assert len(report["swd_render"]) == len(report["swd_refined"]) == 4
    assert report["swd_mean"]["refined"] < report["swd_mean"]["render"]
    assert 0 <= report["two_sample_accuracy"]["refined"] <= 1
    assert report["label_validity"]["edge_agreement_ratio"] >= 0.9
    assert set(report["fid_kid"]["refined"]) == {"fid", "kid"}
    assert "label_validity: edge_agreement_raw" in result.stdout
    missing = run_cli("refine", "eval", "--store", store.root, "--real", photos)  # nothing refined, no checkpoint
    assert missing.returncode == 2 and "refine apply" in missing.stderr
