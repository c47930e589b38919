"""Closed-loop acceptance: does a refined frame still fit the renderer's labels?

The renderer knows every object's exact mask, so each refined frame can be asked whether the
refiner broke it (docs/refiner.md, "Acceptance"): edges still at the instance boundaries, the
luminance structure kept, and per object its colour and its extent unchanged beyond what the
frame-wide colour change explains. A frame under a threshold is marked rejected in its record and
exports of the refined images skip it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import cv2
import numpy as np
import torch

from sceneforge.floor.errors import UserError
from sceneforge.labels.torch import image_tensor

from .metrics import edge_agreement, structure_ssim

MIN_OBJECT_PIXELS = 24  # smaller objects' mean colour and extent are too noisy to judge
MIN_OBJECT_CONTRAST = 24.0  # 8-bit levels between an object and its surroundings in the render, to judge its extent
SIZE_WINDOW = 4  # px around the mask where the object's extent is measured


@dataclass(frozen=True)
class Acceptance:
    """Thresholds on a refined frame's scores (``frame_scores``); the defaults and the measured
    distributions behind them are in docs/refiner.md."""

    min_edge_agreement: float = 0.6
    min_structure_ssim: float = 0.6
    max_colour_drift: float = 60.0
    max_size_drift: float = 0.2

    def reasons(self, scores: dict[str, float]) -> list[str]:
        """Why a frame with these scores is rejected (empty: accepted)."""
        checks = (("edge_agreement", self.min_edge_agreement, True), ("structure_ssim", self.min_structure_ssim, True),
                  ("colour_drift", self.max_colour_drift, False), ("size_drift", self.max_size_drift, False))
        found = []
        for name, bound, is_minimum in checks:
            value = scores[name]
            if (value < bound) if is_minimum else (value > bound):
                found.append(f"{name} {value:.3g} {'<' if is_minimum else '>'} {bound:g}")
        return found

    def check(self) -> None:
        """Refuse thresholds out of range (``UserError`` naming the option)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value) or value < 0:
                raise UserError(f"--{f.name.replace('_', '-')}: expected a number >= 0, got {value}")


def frame_scores(raw: np.ndarray, refined: np.ndarray, instance: np.ndarray) -> dict[str, float]:
    """Label-validity scores of one refined frame (H x W x 3 uint8 each) against its render and
    its exact instance map (H x W ids, 0 background):

    - ``edge_agreement``: ``edge_agreement`` of the refined image / of the render at the instance
      boundaries (1.0 when the render has no boundary edge to keep);
    - ``structure_ssim``: ``structure_ssim`` of render and refined image;
    - ``colour_drift``: over the objects, the largest distance (8-bit levels) between an object's
      mean refined colour and what the colour change of the rest of the frame predicts for it
      (``_colour_drift``: white balance, contrast and vignetting are free, repainting one object is not);
    - ``size_drift``: over the objects, the largest drop of IoU with the exact mask of the
      object's extent found by colour within ``SIZE_WINDOW`` px of the mask, from the render to
      the refined image (an object grown, shrunk, moved or erased).
    """
    rgb = image_tensor(np.stack([raw, refined]))
    ids = torch.from_numpy(instance.astype(np.int64))[None]
    scores = {"edge_agreement": 1.0, "structure_ssim": structure_ssim(rgb[:1], rgb[1:]), "colour_drift": 0.0, "size_drift": 0.0}
    if len(np.unique(instance)) > 1:
        before = edge_agreement(rgb[:1], ids)
        if before > 0:
            scores["edge_agreement"] = edge_agreement(rgb[1:], ids) / before
    a, b = raw.astype(np.float64), refined.astype(np.float64)
    for object_id in np.unique(instance[instance > 0]):
        mask = instance == object_id
        if mask.sum() < MIN_OBJECT_PIXELS:
            continue
        scores["colour_drift"] = max(scores["colour_drift"], _colour_drift(a, b, mask))
        extent = _extent_drift(a, b, mask)
        if extent is not None:
            scores["size_drift"] = max(scores["size_drift"], extent)
    return scores


def _colour_drift(raw: np.ndarray, refined: np.ndarray, mask: np.ndarray) -> float:
    """Distance (8-bit levels) between the object's mean refined colour and what the frame's colour
    change predicts for it. Per channel, in the log domain (where a gain is an offset and a gamma
    a slope), a line from the render's values to the refined ones is fitted on every pixel outside
    the object (so that the object cannot explain itself; a weak pull of the slope toward 1 keeps
    a scene of few colours from extrapolating wildly), then shifted by what the ring around the
    object shows (vignetting, a brightness slope). White balance, gamma, exposure and vignetting
    are free; the object cannot take on a colour its surroundings' change does not explain."""
    m = mask.astype(np.uint8)
    near = cv2.dilate(m, np.ones((3, 3), np.uint8)) > 0
    ring = (cv2.dilate(m, np.ones((2 * SIZE_WINDOW + 1,) * 2, np.uint8)) > 0) & ~near
    log_raw, log_refined = np.log1p(raw), np.log1p(refined)
    predicted = np.empty(3)
    for c in range(3):
        v, target = log_raw[..., c][~near], log_refined[..., c][~near]
        pull = np.sqrt(0.01 * len(v))
        basis = np.concatenate([np.stack([np.ones_like(v), v], axis=1), [[0.0, pull]]])
        offset, slope = np.linalg.lstsq(basis, np.append(target, pull), rcond=None)[0]
        if ring.any():
            offset += (log_refined[..., c][ring] - slope * log_raw[..., c][ring] - offset).mean()
        predicted[c] = np.expm1(offset + slope * log_raw[..., c][mask]).mean()
    return float(np.linalg.norm(refined[mask].mean(0) - predicted))


def _extent_drift(raw: np.ndarray, refined: np.ndarray, mask: np.ndarray) -> float | None:
    """How much worse the refined image's object fits its exact mask than the render's did: near
    the mask, the pixels closer to the object's colour than to its surroundings' (both images
    smoothed, so sensor noise does not count) form the object's extent; the result is the drop of
    its IoU with the mask, 0 if none. None where the render's object does not stand out."""
    kernel = np.ones((3, 3), np.uint8)
    m = mask.astype(np.uint8)
    window = cv2.dilate(m, np.ones((2 * SIZE_WINDOW + 1,) * 2, np.uint8)) > 0
    ring = window & ~(cv2.dilate(m, kernel) > 0)
    core = cv2.erode(m, kernel) > 0
    if not ring.any():
        return None
    core = core if core.any() else mask
    fits = []
    for image in (raw, refined):
        image = cv2.GaussianBlur(image, (0, 0), 1.0)
        inside, outside = image[core].mean(0), image[ring].mean(0)
        if not fits and np.linalg.norm(inside - outside) < MIN_OBJECT_CONTRAST:
            return None
        pixels = image[window]
        found = np.linalg.norm(pixels - inside, axis=1) < np.linalg.norm(pixels - outside, axis=1)
        truth = mask[window]
        fits.append((found & truth).sum() / (found | truth).sum())
    return float(max(0.0, fits[0] - fits[1]))
