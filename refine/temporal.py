"""Temporal consistency of refined sequences, measured and trained with the renderer's exact flow.

A sequence store holds, per frame, ``flow_forward`` (where the surface point seen at each pixel
centre is in the next frame, pixels) and ``flow_valid`` (bit 1: that point is in front of the
next camera, inside its image and not hidden there; docs/formats.md). Warping frame t + 1 back
to frame t samples it at ``pixel + flow`` (bilinear); on valid pixels the warped image shows the
same surface points as frame t. What legitimately changes there between the renders (shading of
a turning object, speculars, render noise) changes in the renders too, so the refiner is judged
and trained on what it *adds*: the change of (refined - render) along the flow.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sceneforge.floor.errors import UserError
from sceneforge.floor.frame import FORWARD_VALID
from sceneforge.labels.store import DatasetStore, view_name
from sceneforge.labels.torch import image_tensor

from .data import SyntheticFrames

FLOW_CACHE_FRAMES = 4096


def consecutive_pairs(records: list[dict]) -> list[tuple[int, int]]:
    """Positions ``(i, j)`` in ``records`` where record j is the frame after record i in the same
    sequence and view, and record i has forward flow."""
    position = {(r["sequence"]["scene_index"], view_name(r), r["sequence"]["frame"]): k
                for k, r in enumerate(records) if "sequence" in r}
    pairs = []
    for (scene, view, frame), k in sorted(position.items(), key=lambda item: item[1]):
        following = position.get((scene, view, frame + 1))
        if following is not None and {"flow_forward", "flow_valid"} <= set(records[k]["files"]):
            pairs.append((k, following))
    return pairs


def warp_back(later: Tensor, flow: Tensor) -> Tensor:
    """Frame t + 1 images (N x C x H x W) sampled at ``pixel + flow`` of frame t (flow N x 2 x H x W,
    pixels, dx then dy; pixel centres at integer coordinates): bilinear, zero outside."""
    n, _, height, width = later.shape
    ys, xs = torch.meshgrid(torch.arange(height, device=flow.device, dtype=flow.dtype),
                            torch.arange(width, device=flow.device, dtype=flow.dtype), indexing="ij")
    grid = torch.stack([(xs + flow[:, 0]) * (2 / (width - 1)) - 1, (ys + flow[:, 1]) * (2 / (height - 1)) - 1], dim=-1)
    return F.grid_sample(later, grid.to(later.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


def flow_mask(flow: Tensor, valid: Tensor) -> Tensor:
    """N x 1 x H x W float: 1 where the flow is valid and lands inside the image (all four
    bilinear neighbours inside), so a crop's flow leaving the crop counts as invalid."""
    height, width = flow.shape[2:]
    ys, xs = torch.meshgrid(torch.arange(height, device=flow.device, dtype=flow.dtype),
                            torch.arange(width, device=flow.device, dtype=flow.dtype), indexing="ij")
    x, y = xs + flow[:, 0], ys + flow[:, 1]
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    return (inside & (valid > 0)).unsqueeze(1).to(flow.dtype)


def masked_warp_difference(now: Tensor, later: Tensor, flow: Tensor, mask: Tensor) -> Tensor:
    """Mean absolute difference between ``later`` warped back and ``now`` (N x C x H x W) over the
    pixels of ``mask`` (N x 1 x H x W) and the channels; 0 without valid pixels."""
    difference = (warp_back(later, flow) - now).abs() * mask
    return difference.sum() / (mask.sum() * now.shape[1]).clamp(min=1)


def warping_error(store: DatasetStore, records: list[dict], refined: list[np.ndarray]) -> dict | None:
    """Temporal consistency of refined frames, in 8-bit levels over the valid pixels of every
    consecutive pair among ``records``: ``render`` and ``refined``, the mean absolute difference
    between frame t and frame t + 1 warped back, and ``added``, that of (refined - render), which
    is 0 when refinement adds no flicker. None when no pair has flow."""
    pairs = consecutive_pairs(records)
    if not pairs:
        return None
    sums, pixels = {"render": 0.0, "refined": 0.0, "added": 0.0}, 0.0
    for i, j in pairs:
        images = image_tensor(np.stack([store.read_rgb(records[i]), refined[i], store.read_rgb(records[j]), refined[j]]),
                              (0.0, 255.0))
        flow = torch.from_numpy(store.read_flow(records[i], "flow_forward")).permute(2, 0, 1)[None]
        mask = flow_mask(flow, torch.from_numpy(store.read_flow_valid(records[i]) & FORWARD_VALID)[None])
        count = float(mask.sum())
        (raw_now, refined_now), (raw_later, refined_later) = images[:2], images[2:]
        compared = {"render": (raw_now, raw_later), "refined": (refined_now, refined_later),
                    "added": (refined_now - raw_now, refined_later - raw_later)}
        for name, (now, later) in compared.items():
            sums[name] += count * float(masked_warp_difference(now[None], later[None], flow, mask))
        pixels += count
    return {"pairs": len(pairs), "valid_pixels": int(pixels), **{k: v / max(pixels, 1) for k, v in sums.items()}}


class SequencePairs:
    """Consecutive frames of a store's sequences for the temporal loss, with their forward flow
    (decoded once, kept while they fit)."""

    def __init__(self, synthetic: SyntheticFrames) -> None:
        self.synthetic = synthetic
        self.pairs = consecutive_pairs(synthetic.records)
        if not self.pairs:
            raise UserError(f"--temporal-weight: {synthetic.store.root} has no sequence frames with forward flow "
                            "(render a recipe with 'sequence' and flow on)")
        self.flow = lru_cache(maxsize=FLOW_CACHE_FRAMES)(self._decode_flow)

    def _decode_flow(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        record, store = self.synthetic.records[position], self.synthetic.store
        return store.read_flow(record, "flow_forward"), store.read_flow_valid(record) & FORWARD_VALID


def pair_batches(pairs: SequencePairs, *, size: int, batch: int, seed: int,
                 first_step: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per step from ``first_step`` on: (RGB 2N x S x S x 3 uint8: N frames t then their N frames
    t + 1, G-buffers 2N x S x S x 6 float32, forward flow of frames t N x S x S x 2, its validity
    N x S x S uint8); both frames of a pair are cropped at the same place, drawn from (seed, step)."""
    step = first_step
    while True:
        rng = np.random.default_rng([seed, step, 4])
        rgbs, auxes, flows, valids = [[], []], [[], []], [], []
        for choice in rng.integers(len(pairs.pairs), size=batch):
            now, later = pairs.pairs[int(choice)]
            rgb, _ = pairs.synthetic.frame(now)
            y, x = int(rng.integers(rgb.shape[0] - size + 1)), int(rng.integers(rgb.shape[1] - size + 1))
            for k, position in enumerate((now, later)):
                rgb, aux = pairs.synthetic.frame(position)
                rgbs[k].append(rgb[y:y + size, x:x + size])
                auxes[k].append(aux[y:y + size, x:x + size])
            flow, valid = pairs.flow(now)
            flows.append(flow[y:y + size, x:x + size])
            valids.append(valid[y:y + size, x:x + size])
        yield (np.stack(rgbs[0] + rgbs[1]), np.stack(auxes[0] + auxes[1]).astype(np.float32),
               np.stack(flows), np.stack(valids))
        step += 1
