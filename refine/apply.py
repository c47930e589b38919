"""Refining rendered frames: batched, streamed from the store, tiled for any image size."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sceneforge.floor.errors import UserError
from sceneforge.labels.store import DatasetStore, one_writer, pass_file, view_name
from sceneforge.labels.torch import image_tensor

from .acceptance import Acceptance, frame_scores
from .checkpoint import checkpoint_file, load_generator
from .data import SIGNED, frame_inputs, to_uint8
from .device import autocast, pick_device

REFINED = "rgb_refined"


class Refiner:
    """A trained generator ready to refine images: fp32 on the CPU, bf16 autocast on a GPU.

    Images larger than ``tile`` are cut into tiles that overlap by ``overlap`` pixels and blended
    with linear ramps; the per-pixel norm makes each tile compute what the whole image would, so
    there are no seams (an instance-norm model would shift each tile's colours).
    """

    def __init__(self, checkpoint: Path, device: str = "auto", batch: int = 8, tile: int = 512, overlap: int = 64,
                 mixed_precision: bool = True) -> None:
        if tile % 4 or tile <= 2 * overlap:
            raise UserError(f"--tile {tile}: must be a multiple of 4 and larger than twice the overlap ({overlap})")
        self.device = pick_device(device)
        self.checkpoint = checkpoint_file(checkpoint)
        self.generator, self.sha256 = load_generator(self.checkpoint, str(self.device))
        self.channels_last = self.generator.config.channels_last
        if self.channels_last:
            self.generator.to(memory_format=torch.channels_last)
        self.batch, self.tile, self.overlap, self.mixed_precision = batch, tile, overlap, mixed_precision

    def identity(self) -> dict:
        """What dataset.json records about the refiner."""
        return {"checkpoint": str(self.checkpoint.resolve()), "sha256": self.sha256}

    def __call__(self, rgb: np.ndarray, aux: np.ndarray | None = None) -> np.ndarray:
        """N x H x W x 3 uint8 renders (and their N x H x W x 6 G-buffers) -> refined, same shape."""
        x = image_tensor(rgb, SIGNED, self.device, self.channels_last)
        if aux is not None and self.generator.gbuffer:
            x = torch.cat([x, image_tensor(aux, SIGNED, self.device, self.channels_last)], dim=1)
        return to_uint8(self._tiled(x))

    @torch.inference_mode()
    def _tiled(self, x: Tensor) -> Tensor:
        n, _, height, width = x.shape
        ys, xs = _tile_starts(height, self.tile, self.overlap), _tile_starts(width, self.tile, self.overlap)
        th, tw = min(self.tile, height), min(self.tile, width)
        weight = (_ramp(ys, th, height, self.overlap)[:, None, :, None]
                  * _ramp(xs, tw, width, self.overlap)[None, :, None, :]).to(x.device)
        out = x.new_zeros(n, 3, height, width)
        tiles = [(i, j, y0, x0) for i, y0 in enumerate(ys) for j, x0 in enumerate(xs)]
        per_batch = max(1, self.batch // n)
        for start in range(0, len(tiles), per_batch):
            chunk = tiles[start:start + per_batch]
            crops = torch.cat([x[:, :, y0:y0 + th, x0:x0 + tw] for _, _, y0, x0 in chunk])
            refined = self._forward(crops).view(len(chunk), n, 3, th, tw)
            for (i, j, y0, x0), result in zip(chunk, refined):
                out[:, :, y0:y0 + th, x0:x0 + tw] += result * weight[i, j]
        return out

    def _forward(self, x: Tensor) -> Tensor:
        """The generator on a batch (padded to a multiple of 4), in fp32 on the device."""
        height, width = x.shape[2:]
        pad_h, pad_w = -height % 4, -width % 4
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        rgb, aux = x[:, :3], (x[:, 3:] if x.shape[1] > 3 else None)
        with autocast(self.device, self.mixed_precision):
            y = self.generator(rgb, aux)
        return y[:, :, :height, :width].float()


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins covering ``length``: stride ``tile - overlap``, the last tile flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def _ramp(starts: list[int], size: int, length: int, overlap: int) -> Tensor:
    """Blend weights per tile along one axis (tiles x size): each pixel's weights sum to 1,
    ramping linearly across every overlap and flat at the image borders."""
    coverage = torch.zeros(length)
    ramps = []
    for start in starts:
        position = torch.arange(size, dtype=torch.float32) + 0.5
        ramp = torch.ones(size)
        if start > 0:
            ramp = torch.minimum(ramp, position / overlap)
        if start + size < length:
            ramp = torch.minimum(ramp, (size - position) / overlap)
        ramps.append(ramp)
        coverage[start:start + size] += ramp
    return torch.stack([ramp / coverage[start:start + size] for start, ramp in zip(starts, ramps)])


def refine_store(store: DatasetStore, refiner: Refiner, on_frame: Callable[[], None] | None = None,
                 on_start: Callable[[int, int], None] | None = None, acceptance: Acceptance = Acceptance()) -> int:
    """Write ``rgb_refined/`` for every finished view of ``store`` (each rig camera's image on its
    own) and record it; returns how many views were refined now. Each refined view is scored
    against its render and exact masks (``acceptance.frame_scores``): its record gets
    ``refine_scores``, and ``refine_rejected`` (the reasons) when a score misses ``acceptance``.
    Frames refined and scored earlier with the same checkpoint are kept (and judged again by
    ``acceptance``), so an interrupted call resumes; another checkpoint redoes them all. It is the
    store's one writer meanwhile. ``on_start(views, already_refined)`` is called before the first
    view, ``on_frame()`` after each."""
    acceptance.check()
    with one_writer(store.root):
        return _refine_store(store, refiner, on_frame, on_start, acceptance)


def _refine_store(store: DatasetStore, refiner: Refiner, on_frame: Callable[[], None] | None,
                  on_start: Callable[[int, int], None] | None, acceptance: Acceptance) -> int:
    records = store.records()
    folder = store.root / REFINED
    folder.mkdir(exist_ok=True)
    marker = folder / ".checkpoint"
    done = marker.exists() and marker.read_text().strip() == refiner.sha256
    marker.write_text(refiner.sha256 + "\n")
    todo = [r for r in records if not (done and "refine_scores" in r
                                       and (store.root / pass_file(REFINED, r["index"], view_name(r))).exists())]
    if on_start:
        on_start(len(records), len(records) - len(todo))
    def finish(writes: list[Future]) -> None:
        for write in writes:
            write.result()
            if on_frame:
                on_frame()

    scores: dict[tuple[int, str], dict] = {}
    with ThreadPoolExecutor(2) as writers:
        pending: list[Future] = []
        for batch, (rgb, aux) in _read_batches(store, todo, refiner.batch):
            refined = refiner(rgb, aux)
            finish(pending)  # the previous batch's PNGs, encoded while this batch was refined
            pending = [writers.submit(store.write_colour, REFINED, r["index"], image, view_name(r)) for r, image in zip(batch, refined)]
            for record, raw, image in zip(batch, rgb, refined):
                scores[record["index"], view_name(record)] = frame_scores(raw, image, store.read_instance(record))
        finish(pending)
    store.record_pass(REFINED, {"refiner": {**refiner.identity(), "acceptance": asdict(acceptance)}})
    judged = store.records()
    for record in judged:
        record["refine_scores"] = scores.get((record["index"], view_name(record)), record.get("refine_scores"))
        reasons = acceptance.reasons(record["refine_scores"])
        if reasons:
            record["refine_rejected"] = reasons
        else:
            record.pop("refine_rejected", None)
    store.rewrite_records(judged)
    return len(todo)


def _read_batches(store: DatasetStore, records: list[dict], batch: int) -> Iterator[tuple[list[dict], tuple[np.ndarray, np.ndarray]]]:
    """Batches of same-sized frames, the next one decoded in a thread while the current one refines."""
    by_size: dict[tuple[int, int], list[dict]] = {}
    for record in records:
        by_size.setdefault((record["camera"]["height"], record["camera"]["width"]), []).append(record)
    chunks = [group[i:i + batch] for group in by_size.values() for i in range(0, len(group), batch)]
    with ThreadPoolExecutor(1) as reader:
        future = reader.submit(_decode, store, chunks[0]) if chunks else None
        for k, chunk in enumerate(chunks):
            decoded = future.result()
            if k + 1 < len(chunks):
                future = reader.submit(_decode, store, chunks[k + 1])
            yield chunk, decoded


def _decode(store: DatasetStore, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    rgb, aux = zip(*(frame_inputs(store, r) for r in records))
    return np.stack(rgb), np.stack(aux)


def refined_images(store: DatasetStore, records: list[dict], checkpoint: Path | None = None,
                   device: str = "auto", on_frame: Callable[[], None] | None = None,
                   on_start: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """The refined RGB of some frames: computed now with ``checkpoint`` (and not written), or
    else read from ``rgb_refined/`` (for previews and evaluation). ``on_start(frames, 0)`` once
    the inputs are checked, ``on_frame()`` after each frame."""
    step, start = on_frame or (lambda: None), on_start or (lambda total, done: None)
    if checkpoint is None:
        if not all(REFINED in r["files"] for r in records):
            raise UserError(f"{store.root}: no refined frames yet; run 'sceneforge refine apply' first or pass --checkpoint")
        start(len(records), 0)
        refined = []
        for record in records:
            refined.append(store.read_rgb(record, REFINED))
            step()
        return refined
    refiner = Refiner(checkpoint, device=device)
    start(len(records), 0)
    refined = []
    for _, (rgb, aux) in _read_batches(store, records, refiner.batch):
        for image in refiner(rgb, aux):
            refined.append(image)
            step()
    return refined
