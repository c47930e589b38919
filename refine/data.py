"""Training and inference inputs: rendered frames with their G-buffer, and a folder of real photos.

Every random choice of a training step (which frames, which photos, where to crop) comes from a
generator seeded by (seed, step), so a resumed run draws exactly what the killed one would have.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch

from sceneforge.floor.errors import UserError
from sceneforge.floor.frame import instance_boundaries
from sceneforge.floor.images import checked_image_size
from sceneforge.labels.store import DatasetStore

from .model import GBUFFER_CHANNELS

log = logging.getLogger("sceneforge")

PHOTO_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
MAX_PHOTOS = 20_000
FRAME_CACHE_BYTES = 2 << 30
SIGNED = (-1.0, 1.0)  # the networks see 8-bit images mapped onto [-1, 1] (image_tensor's value_range)


def gbuffer(depth: np.ndarray, normals: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """H x W x 6 float32: inverse depth scaled to the nearest hit (1 = nearest, 0 = no hit),
    camera-frame normals, instance boundaries (1 on both sides of an id change), and a flag of ones."""
    hit = np.isfinite(depth) & (depth > 0)
    inverse = np.zeros(depth.shape, np.float32)
    if hit.any():
        inverse[hit] = depth[hit].min() / depth[hit]
    return np.dstack([inverse, np.where(hit[..., None], normals, 0), instance_boundaries(instance),
                      np.ones(depth.shape, np.float32)]).astype(np.float32)


def frame_inputs(store: DatasetStore, record: dict) -> tuple[np.ndarray, np.ndarray]:
    """A frame's RGB (H x W x 3 uint8) and G-buffer (H x W x 6 float32), read from the store."""
    return store.read_rgb(record), gbuffer(store.read_depth(record), store.read_normals(record), store.read_instance(record))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """N x 3 x H x W in [-1, 1] (any device) -> N x H x W x 3 uint8 on the host, converted first."""
    scaled = ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).cpu().numpy()


class SyntheticFrames:
    """The frames of a store as (RGB uint8, G-buffer float16), decoded once and kept while they fit."""

    def __init__(self, store: DatasetStore) -> None:
        self.store = store
        self.records = store.records()
        if not self.records:
            raise UserError(f"{store.root}: the store has no finished frames to train on")
        largest = max(r["camera"]["width"] * r["camera"]["height"] for r in self.records)  # a rig's views may differ
        frame_bytes = largest * (3 + 2 * GBUFFER_CHANNELS)
        self.frame = lru_cache(maxsize=max(1, FRAME_CACHE_BYTES // frame_bytes))(self._decode)

    def __len__(self) -> int:
        return len(self.records)

    def _decode(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        rgb, aux = frame_inputs(self.store, self.records[position])
        return rgb, aux.astype(np.float16)

    @property
    def shortest_side(self) -> int:
        """The smallest image dimension of the frames (every view of a rig; photos are scaled to match it)."""
        return min(min(r["camera"]["width"], r["camera"]["height"]) for r in self.records)


class RealPhotos:
    """A folder of photos of any size, scaled so their shorter side matches the renders', kept in memory."""

    def __init__(self, folder: Path, shorter_side: int) -> None:
        if not folder.is_dir():
            raise UserError(f"{folder}: real-photo folder not found")
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
        if len(paths) > MAX_PHOTOS:
            log.warning("%s: %d photos, using the first %d", folder, len(paths), MAX_PHOTOS)
            paths = paths[:MAX_PHOTOS]
        self.images: list[np.ndarray] = []
        for path in paths:
            image = _read_photo(path)
            if image is None:
                continue
            scale = shorter_side / min(image.shape[:2])
            size = (max(shorter_side, round(image.shape[1] * scale)), max(shorter_side, round(image.shape[0] * scale)))
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            self.images.append(cv2.resize(image, size, interpolation=interpolation))
        if not self.images:
            raise UserError(f"{folder}: no readable photos ({', '.join(sorted(PHOTO_SUFFIXES))})")
        log.info("%s: %d photos", folder, len(self.images))


def _read_photo(path: Path) -> np.ndarray | None:
    """An RGB uint8 photo, or None with a warning when it is too large or unreadable."""
    try:
        checked_image_size(path)
    except (OSError, ValueError) as exc:
        log.warning("%s: skipped: %s", path, exc)
        return None
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        log.warning("%s: skipped, not a readable image", path)
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def training_batches(synthetic: SyntheticFrames, real: RealPhotos, *, size: int, batch: int, seed: int,
                     first_step: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(synthetic RGB N x S x S x 3 uint8, G-buffer N x S x S x 6 float32, real RGB N x S x S x 3)
    for steps ``first_step``, ``first_step + 1``, ... The crops of a synthetic frame cut the RGB and
    its G-buffer at the same place; nothing is flipped, warped or resized after loading."""
    step = first_step
    while True:
        rng = np.random.default_rng([seed, step])
        rgbs, auxes, reals = [], [], []
        for position in rng.integers(len(synthetic), size=batch):
            rgb, aux = synthetic.frame(int(position))
            y, x = _crop_origin(rgb.shape, size, rng)
            rgbs.append(rgb[y:y + size, x:x + size])
            auxes.append(aux[y:y + size, x:x + size])
        for position in rng.integers(len(real.images), size=batch):
            photo = real.images[int(position)]
            y, x = _crop_origin(photo.shape, size, rng)
            reals.append(photo[y:y + size, x:x + size])
        yield np.stack(rgbs), np.stack(auxes).astype(np.float32), np.stack(reals)
        step += 1


def _crop_origin(shape: tuple[int, ...], size: int, rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(shape[0] - size + 1)), int(rng.integers(shape[1] - size + 1))
