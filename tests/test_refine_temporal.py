"""Temporal consistency of refined sequences: the warping error of ``refine eval`` and the
temporal loss of ``refine train --temporal-weight``, checked against warps computed here with
OpenCV from the store's flow (docs/formats.md: ``flow_forward`` + pixel centre = where the point
is in the next frame; ``flow_valid`` bit 1)."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from sceneforge.floor.errors import UserError
from sceneforge.labels.store import DatasetStore
from sceneforge.pipeline import render_dataset
from sceneforge.refine import evaluate
from sceneforge.refine.apply import REFINED
from sceneforge.refine.data import SIGNED, SyntheticFrames
from sceneforge.refine.model import Generator
from sceneforge.refine.temporal import SequencePairs, consecutive_pairs, flow_mask, pair_batches, warp_back, warping_error
from sceneforge.refine.train import TrainOptions, temporal_loss, train
from sceneforge.labels.torch import image_tensor
from sceneforge.scenes.recipe import load_recipe

from .helpers import write_recipe
from .test_refine import TINY

SEQUENCE = """\
seed: 3
count: 6
render: {resolution: [64, 64], samples: 2}
sequence: {frames: 3, fps: 10, point_tracks: 0}
camera:
  fov_deg: 50
  look_at: [0, 0, 0.05]
  distance: 1.0
  elevation_deg: 40
  trajectory: {type: orbit, degrees_per_second: 40}
placement: {area: [0.4, 0.4], min_gap: 0.01}
objects:
  - category: box
    asset: {primitive: box, extents: [0.15, 0.12, 0.1]}
    material: {color: [0.8, 0.2, 0.1]}
    motion: {velocity: [0.3, 0, 0], angular_velocity_deg: [0, 0, 60]}
  - category: ball
    asset: {primitive: sphere, radius: 0.07}
    material: {color: [0.1, 0.3, 0.9]}
lights:
  - {type: sun, energy: 3, elevation_deg: 60, azimuth_deg: 30}
"""


@pytest.fixture(scope="module")
def sequences(tmp_path_factory) -> DatasetStore:
    """Two 3-frame sequences of a turning camera and a moving, spinning box, with flow."""
    folder = tmp_path_factory.mktemp("sequences")
    return render_dataset(load_recipe(write_recipe(folder, SEQUENCE)), folder / "out").store


def _opencv_warping_error(store: DatasetStore, images: list[np.ndarray]) -> float:
    """Mean |frame t+1 warped back with cv2.remap - frame t| over valid flow landing inside the
    image, over all consecutive pairs (float images, any values)."""
    records = store.records()
    total, count = 0.0, 0
    for record, following in zip(records, records[1:]):
        if following["sequence"]["scene_index"] != record["sequence"]["scene_index"]:
            continue
        flow = store.read_flow(record, "flow_forward")
        height, width = flow.shape[:2]
        us, vs = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        map_x, map_y = us + flow[..., 0], vs + flow[..., 1]
        valid = ((store.read_flow_valid(record) & 1) > 0) & (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
        warped = cv2.remap(images[following["index"]].astype(np.float32), map_x, map_y, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT)
        total += float(np.abs(warped - images[record["index"]].astype(np.float32))[valid].sum())
        count += int(valid.sum()) * 3
    return total / count


def test_warping_error_is_zero_for_a_consistent_refinement_and_rises_with_flicker(sequences):
    records = sequences.records()
    assert consecutive_pairs(records) == [(0, 1), (1, 2), (3, 4), (4, 5)]
    raw = [sequences.read_rgb(r) for r in records]
    identity = warping_error(sequences, records, raw)
    assert identity["pairs"] == 4 and identity["added"] == 0 and identity["refined"] == identity["render"]
    assert identity["render"] == pytest.approx(_opencv_warping_error(sequences, raw), abs=0.05)
    assert identity["render"] < 4  # exact flow: the warped next render shows the same surface points

    colour = [np.clip(r * [0.9, 0.8, 1.1] + [10, 5, -8], 0, 255).round().astype(np.uint8) for r in raw]
    rng = np.random.default_rng(0)
    flicker = [np.clip(r.astype(int) + int(rng.integers(-25, 26)), 0, 255).astype(np.uint8) for r in raw]
    consistent, flickering = warping_error(sequences, records, colour), warping_error(sequences, records, flicker)
    for refined, measured in ((colour, consistent), (flicker, flickering)):
        assert measured["refined"] == pytest.approx(_opencv_warping_error(sequences, refined), abs=0.05)
        added = [r.astype(np.float32) - s for r, s in zip(refined, raw)]
        assert measured["added"] == pytest.approx(_opencv_warping_error(sequences, added), abs=0.05)
    assert consistent["added"] < 0.5  # rounding to 8 bits and the colour map of the renders' own changes
    assert flickering["added"] > 5 and flickering["refined"] > flickering["render"] + 4


class _Flicker(nn.Module):
    """A 'refiner' that brightens frames t by 0.1 and darkens frames t + 1 by 0.1 (signed units)."""

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        half = rgb.shape[0] // 2
        return rgb + torch.tensor([0.1] * half + [-0.1] * half)[:, None, None, None]


def test_temporal_loss_on_aligned_crops_of_consecutive_frames(sequences):
    rgb, aux, flow, valid = next(pair_batches(SequencePairs(SyntheticFrames(sequences)), size=40, batch=3, seed=0, first_step=5))
    assert rgb.shape == (6, 40, 40, 3) and flow.shape == (3, 40, 40, 2) and valid.shape == (3, 40, 40)
    x, a = image_tensor(rgb, SIGNED), image_tensor(aux, SIGNED)
    f, v = torch.from_numpy(flow).permute(0, 3, 1, 2), torch.from_numpy(valid)
    mask = flow_mask(f, v)
    assert 0.3 < mask.mean() < 1
    # Each crop pair is cut at one place of two consecutive frames: warping the crop of t + 1
    # back gives what OpenCV's warp of the whole frame t + 1 gives there.
    records = sequences.records()
    frames = [sequences.read_rgb(r) for r in records]
    warped = warp_back(image_tensor(rgb[3:], (0.0, 255.0)), f).permute(0, 2, 3, 1).numpy()
    for k in range(3):
        (i, top, left), = [(i, y, x) for i, j in consecutive_pairs(records) for y in range(25) for x in range(25)
                           if np.array_equal(frames[i][y:y + 40, x:x + 40], rgb[k])
                           and np.array_equal(frames[j][y:y + 40, x:x + 40], rgb[3 + k])]
        flow_full = sequences.read_flow(records[i], "flow_forward")
        us, vs = np.meshgrid(np.arange(64, dtype=np.float32), np.arange(64, dtype=np.float32))
        expected = cv2.remap(frames[i + 1].astype(np.float32), us + flow_full[..., 0], vs + flow_full[..., 1],
                             cv2.INTER_LINEAR)[top:top + 40, left:left + 40]
        inside = mask[k, 0].numpy() > 0
        assert np.array_equal(flow[k], flow_full[top:top + 40, left:left + 40])
        assert np.abs(warped[k] - expected)[inside].mean() < 0.1
    assert temporal_loss(_Flicker(), x, a, f, v).item() == pytest.approx(0.2, abs=1e-5)
    fresh = Generator(TINY, gbuffer=True)  # a fresh residual refiner is the identity: it adds nothing
    assert temporal_loss(fresh, x, a, f, v).item() < 1e-3


def test_training_with_the_temporal_loss_and_eval_on_a_sequence_store(sequences, store, photos, tmp_path, monkeypatch):
    options = TrainOptions(steps=2, size=32, batch=2, config=TINY, temporal_weight=1.0)
    train(sequences.root, photos, tmp_path / "run", options, "cpu")
    logged = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert logged["temporal"] >= 0
    with pytest.raises(UserError, match="--temporal-weight: .* has no sequence frames with forward flow"):
        train(store.root, photos, tmp_path / "other", options, "cpu")
    # eval reports the warping error of rgb_refined/: here a flickering "refinement"
    sequences = DatasetStore(shutil.copytree(sequences.root, tmp_path / "copy"))
    records = sequences.records()
    flicker = [np.clip(sequences.read_rgb(r).astype(int) + 20 * (r["index"] % 2), 0, 255).astype(np.uint8) for r in records]
    (sequences.root / REFINED).mkdir()
    for record, image in zip(records, flicker):
        sequences.write_colour(REFINED, record["index"], image)
    sequences.record_pass(REFINED, {})
    for k in range(2):  # two more photos: eval needs four
        cv2.imwrite(str(photos / f"extra{k}.png"), np.full((64, 64, 3), 90 + 40 * k, np.uint8))
    monkeypatch.setattr(evaluate, "two_sample_accuracy", lambda *args, **kwargs: 0.5)  # slow, and not what is tested here
    measured = evaluate.evaluate_store(sequences, photos, device="cpu")["warping_error"]
    added = [f.astype(np.float32) - sequences.read_rgb(r) for f, r in zip(flicker, records)]
    assert measured["pairs"] == 4
    assert measured["added"] == pytest.approx(_opencv_warping_error(sequences, added), abs=0.05) and measured["added"] > 10
