"""``sceneforge refine eval``: realism and label validity of a store's refined frames."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sceneforge.floor.errors import UserError
from sceneforge.labels.store import DatasetStore, rejection_summary
from sceneforge.labels.torch import image_tensor

from .apply import refined_images
from .data import RealPhotos
from .device import pick_device
from .metrics import frechet_and_kernel_distance, label_validity, sliced_wasserstein, two_sample_accuracy
from .temporal import consecutive_pairs, warping_error


def evaluate_store(store: DatasetStore, real_dir: Path, *, checkpoint: Path | None = None, count: int = 200,
                   inception_weights: Path | None = None, device: str = "auto", seed: int = 0,
                   on_start: Callable[[int, int], None] | None = None, on_frame: Callable[[], None] | None = None,
                   on_stage: Callable[[str], None] | None = None) -> dict:
    """Compare the first ``count`` renders and their refined versions with the photos in
    ``real_dir``: SWD (per pyramid level and mean; lower is closer), two-sample classifier accuracy
    (0.5 = indistinguishable), label validity of refined vs render, the warping error of
    consecutive frames of sequences (refine/temporal.py), FID/KID with user weights, and (for
    ``rgb_refined/``) the share of frames the acceptance check of ``refine apply`` rejected.
    The refined frames are ``rgb_refined/`` or, with ``checkpoint``, computed now.
    Progress: ``on_start(frames, 0)``, ``on_frame()`` after each refined frame is read or computed,
    then ``on_stage(name)`` before each measurement."""
    records = store.records()[:count]
    if len(records) < 4:
        raise UserError(f"{store.root}: {len(records)} finished frame(s); evaluation needs at least 4")
    stage = on_stage or (lambda name: None)
    refined = refined_images(store, records, checkpoint, device, on_frame, on_start)
    on = pick_device(device)
    raw = [store.read_rgb(r) for r in records]
    side = min(raw[0].shape[:2])
    photos = RealPhotos(real_dir, side).images
    if len(photos) < 4:
        raise UserError(f"{real_dir}: {len(photos)} readable photo(s); evaluation needs at least 4")
    real = _images([_centre_square(p, side) for p in photos], on)
    # renders and photos compare as centre squares of one size; labels on the whole frames
    square = tuple(_images([_centre_square(i, side) for i in images], on) for images in (raw, refined))
    half = len(photos) // 2
    stage("sliced Wasserstein distance")
    swd = {name: sliced_wasserstein(images, real, seed=seed) for name, images in zip(("render", "refined"), square)}
    swd_photos = sliced_wasserstein(real[:half], real[half:], seed=seed)
    stage("two-sample classifier")
    accuracy = {name: two_sample_accuracy(images, real, seed=seed) for name, images in zip(("render", "refined"), square)}
    stage("label validity")
    report: dict = {
        "frames": len(records),
        "photos": len(photos),
        "swd_render": swd["render"],
        "swd_refined": swd["refined"],
        "swd_mean": {"render": statistics.fmean(swd["render"]), "refined": statistics.fmean(swd["refined"]),
                     "photos_half_vs_half": statistics.fmean(swd_photos)},
        "two_sample_accuracy": accuracy,
        "label_validity": label_validity(_images(raw, on), _images(refined, on), torch.from_numpy(
            np.stack([store.read_instance(r).astype(np.int64) for r in records])).to(on)),
    }
    if consecutive_pairs(records):  # a sequence store
        stage("warping error")
        report["warping_error"] = warping_error(store, records, refined)
    if checkpoint is None and (rejection := rejection_summary(records)):  # 'refine apply''s acceptance check
        report["acceptance"] = rejection
    if inception_weights is not None:
        stage("FID/KID")
        report["fid_kid"] = {name: frechet_and_kernel_distance(images, real, inception_weights, seed=seed)
                             for name, images in zip(("render", "refined"), square)}
    return report


def _images(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """H x W x 3 uint8 images (one size) -> N x 3 x H x W float in [0, 1] on ``device``."""
    return image_tensor(np.stack(images), device=device)


def _centre_square(image: np.ndarray, side: int) -> np.ndarray:
    """The centre ``side`` x ``side`` square of an H x W x 3 image."""
    y, x = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    return image[y:y + side, x:x + side]
