"""Closed-loop acceptance: refined frames that break their labels are scored, rejected in their
records, skipped by exports; frames of a sound refiner pass. The broken cases are built from
analytic shapes, and the expected scores computed here from the geometry."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from sceneforge.labels.report import report_html
from sceneforge.labels.store import DatasetStore, accepted_frames, rejection_summary
from sceneforge.labels.torch import SceneForgeDataset
from sceneforge.refine.acceptance import Acceptance, frame_scores
from sceneforge.refine.apply import Refiner, refine_store
from sceneforge.refine.metrics import boundary_structure, contrast_structure_map, lowpass_luminance
from sceneforge.refine.model import RefinerConfig
from sceneforge.refine import checkpoint
from sceneforge.refine.train import ImagePool, TrainOptions, structure_loss, training_setup, training_state

from .helpers import run_cli

DISCS = [((20, 24), 9, (230, 90, 90), 1), ((44, 40), 11, (90, 200, 240), 2)]  # centre (x, y), radius, colour, id
BACKGROUND = (60, 70, 50)


def _background() -> np.ndarray:
    """A shaded ground: BACKGROUND scaled from 0.5 to 2 across the image (light falling off)."""
    shade = np.linspace(0.5, 2.0, 64)[None, :, None]
    return np.clip(np.broadcast_to(np.multiply(BACKGROUND, shade), (64, 64, 3)), 0, 255).astype(np.uint8)


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """A 64 x 64 'render' of two flat discs on a shaded background and its exact instance map."""
    image = _background().copy()
    instance = np.zeros((64, 64), np.int32)
    for centre, radius, colour, object_id in DISCS:
        cv2.circle(image, centre, radius, colour, -1)
        cv2.circle(instance, centre, radius, object_id, -1)
    return image, instance


def _sensor(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """A sound refinement: gamma, warm white balance, vignetting, blur, noise; nothing moves."""
    x = image.astype(np.float64) / 255
    yy, xx = np.mgrid[:64, :64]
    vignette = 1 - 0.5 * (((yy - 32) / 64) ** 2 + ((xx - 32) / 64) ** 2)
    x = x ** 0.8 * np.array([1.1, 0.97, 0.8]) * vignette[..., None]
    x = cv2.GaussianBlur(x, (3, 3), 0.7) + np.random.default_rng(seed).normal(0, 0.015, x.shape)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def _disc_iou(radius: float, offset: float) -> float:
    """IoU of two discs of one radius whose centres are ``offset`` apart (the lens formula)."""
    lens = 2 * radius**2 * math.acos(offset / (2 * radius)) - offset / 2 * math.sqrt(4 * radius**2 - offset**2)
    return lens / (2 * math.pi * radius**2 - lens)


def test_a_sound_refinement_is_accepted_and_a_broken_one_is_not():
    render, instance = _scene()
    same = frame_scores(render, render, instance)
    assert same == {"edge_agreement": 1.0, "structure_ssim": pytest.approx(1.0, abs=1e-3), "colour_drift": pytest.approx(0, abs=1e-6),
                    "size_drift": 0.0}
    sensor = frame_scores(render, _sensor(render), instance)
    assert Acceptance().reasons(sensor) == [], sensor

    shifted = frame_scores(render, np.roll(render, 3, axis=1), instance)  # the whole image, 3 px right
    # the smaller disc's extent found in the refined image is the disc moved by 3 px: its IoU with
    # the exact mask drops from 1 to the lens formula's (less the pixel grid's rounding)
    expected = 1 - _disc_iou(9, 3)
    assert shifted["size_drift"] == pytest.approx(expected, abs=0.08), (shifted, expected)
    assert "size_drift" in " ".join(Acceptance().reasons(shifted))

    erased = render.copy()
    erased[instance == 2] = _background()[instance == 2]  # the refiner painted the large disc over
    scores = frame_scores(render, erased, instance)
    assert any(r.startswith(("colour_drift", "size_drift")) for r in Acceptance().reasons(scores)), scores
    # the erased disc's colour now is the ground's: its drift is a large part of that distance
    distance = np.linalg.norm(np.subtract(DISCS[1][2], _background()[instance == 2].mean(0)))
    assert scores["colour_drift"] > 0.3 * distance, (scores, distance)


def test_the_boundary_measures_tell_moved_outlines_from_sensor_noise():
    render, instance = _scene()
    raw = torch.from_numpy(render).permute(2, 0, 1)[None].float() / 255
    ids = torch.from_numpy(instance.astype(np.int64))[None]
    noisy = torch.from_numpy(_sensor(render)).permute(2, 0, 1)[None].float() / 255
    moved = torch.roll(raw, 3, dims=3)
    kept, broken = boundary_structure(raw, noisy, ids), boundary_structure(raw, moved, ids)
    assert kept["boundary_edge_recall"] > 0.9 and kept["boundary_edge_precision"] > 0.9 and kept["boundary_cs"] > 0.9, kept
    assert broken["boundary_edge_recall"] < 0.7 and broken["boundary_cs"] < 0.8, broken
    # the training loss (images in [-1, 1]) sees the same: near zero for the sensor, large for the shift
    boundary = torch.from_numpy((cv2.Laplacian(instance.astype(np.float32), cv2.CV_32F) != 0).astype(np.float32))[None, None]
    sensor_loss = structure_loss(noisy * 2 - 1, raw * 2 - 1, boundary, 1.5, 2).item()
    shift_loss = structure_loss(moved * 2 - 1, raw * 2 - 1, boundary, 1.5, 2).item()
    assert sensor_loss < 0.1 < shift_loss, (sensor_loss, shift_loss)
    # contrast_structure_map is SSIM without the luminance term: 1 for a brightness offset, < 1 for flattening
    low = lowpass_luminance(raw)
    assert contrast_structure_map(low, low + 0.1).min() > 0.999
    assert contrast_structure_map(low, low * 0.2).mean() < contrast_structure_map(low, low * 0.9).mean()


class ShiftingRefiner(Refiner):
    """A broken refiner: the checkpoint's output moved 3 px to the right."""

    def __call__(self, rgb: np.ndarray, aux: np.ndarray | None = None) -> np.ndarray:
        return np.roll(super().__call__(rgb, aux), 3, axis=2)


@pytest.fixture
def identity_run(tmp_path):
    """A checkpoint of step 0: the residual generator is the identity, a sound refiner."""
    options = TrainOptions(steps=0, config=RefinerConfig(channels=4, blocks=1, disc_channels=4))
    models, optimise_g, optimise_d, _ = training_setup(options, torch.device("cpu"))
    pools = {"real": ImagePool(1), "synthetic": ImagePool(1)}
    (tmp_path / "run").mkdir()
    checkpoint.save(tmp_path / "run" / checkpoint.FILE_NAME, training_state(models, options, 0, optimise_g, optimise_d, pools))
    return tmp_path / "run"


def test_rejected_frames_are_marked_and_exports_skip_them(store, identity_run, tmp_path):
    refine_store(store, Refiner(identity_run, device="cpu"))
    records = store.records()
    assert all("refine_scores" in r and "refine_rejected" not in r for r in records)
    assert "refined views rejected</th><td>0 of 3" in report_html(store, frames=1)

    refine_store(store, ShiftingRefiner(identity_run, device="cpu"))  # same checkpoint: scored frames kept
    assert all("refine_rejected" not in r for r in store.records())
    (store.root / "rgb_refined" / ".checkpoint").unlink()  # as if another checkpoint: all redone
    refine_store(store, ShiftingRefiner(identity_run, device="cpu"))
    records = store.records()
    for record in records:
        render, refined = store.read_rgb(record), store.read_rgb(record, "rgb_refined")
        assert np.array_equal(refined, np.roll(render, 3, axis=1)) or np.abs(refined.astype(int) - np.roll(render, 3, axis=1)).max() <= 1
        assert record["refine_rejected"], record["refine_scores"]
    assert DatasetStore(store.root).meta["refiner"]["acceptance"] == {"min_edge_agreement": 0.6, "min_structure_ssim": 0.6,
                                                                    "max_colour_drift": 60.0, "max_size_drift": 0.2}
    assert accepted_frames(records, "original") == records and accepted_frames(records, "refined") == []
    assert accepted_frames(records, "refined", include_rejected=True) == records
    assert len(SceneForgeDataset(store, rgb="refined")) == 0 and len(SceneForgeDataset(store, rgb="original")) == 3
    assert len(SceneForgeDataset(store, rgb="refined", include_rejected=True)) == 3

    skipped = run_cli("export", store.root, "-o", tmp_path / "coco", "--rgb", "refined")
    assert skipped.returncode == 2 and "--include-rejected" in skipped.stderr
    kept = run_cli("export", store.root, "-o", tmp_path / "yolo", "-f", "yolo", "--rgb", "refined", "--include-rejected")
    assert kept.returncode == 0, kept.stderr
    assert len(list((tmp_path / "yolo").rglob("*.png"))) == len(records)
    original = run_cli("export", store.root, "-o", tmp_path / "orig", "--rgb", "original")
    assert original.returncode == 0 and len(json.loads((tmp_path / "orig" / "annotations.json").read_text())["images"]) == 3

    # one frame rejected: exports of the refined images leave out exactly that one
    for record in records:
        if record["index"] != records[0]["index"]:
            record.pop("refine_rejected")
    store.rewrite_records(records)
    partial = run_cli("export", store.root, "-o", tmp_path / "coco2", "--rgb", "refined")
    assert partial.returncode == 0, partial.stderr
    exported = {image["id"] for image in json.loads((tmp_path / "coco2" / "annotations.json").read_text())["images"]}
    assert len(exported) == 2
    assert "refined views rejected</th><td>1 of 3 (33.3 %)" in report_html(store, frames=1)
    assert rejection_summary(records) == {"scored": 3, "rejected": 1, "rejection_rate": pytest.approx(1 / 3)}


def test_apply_thresholds_come_from_the_command_line(store, identity_run):
    strict = run_cli("refine", "apply", "--checkpoint", identity_run, "--store", store.root, "--device", "cpu", "-q",
                     "--min-structure-ssim", "1.0", "--max-colour-drift", "0")
    assert strict.returncode == 0, strict.stderr
    assert "rejected by the acceptance check" in strict.stdout
    assert DatasetStore(store.root).meta["refiner"]["acceptance"]["max_colour_drift"] == 0.0
    bad = run_cli("refine", "apply", "--checkpoint", identity_run, "--store", store.root, "--max-colour-drift", "-1")
    assert bad.returncode == 2
