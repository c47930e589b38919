"""Refiner quality: the published CycleGAN against SceneForge's label-preserving refiner, trained
side by side on the same data for the same steps.

    python benchmarks/refine_quality.py --store OUT --real DIR [--steps 60] [--size 48] [--batch 4]
                                        [--width 16] [--blocks 3]
    python benchmarks/refine_quality.py --structural DIR ...   # the structural fixture (docs/refiner.md)

For each architecture it prints: SWD to the photos (mean over pyramid levels; lower is closer)
before and after refinement, label validity (edge agreement of refined vs render at instance
boundaries, structure SSIM), and how far tiled inference (tiles a third of the image, overlap 32)
strays from whole-image inference on frames enlarged 3x (mean and largest difference, 8-bit
levels). docs/refiner.md quotes a run on the sim-to-real fixture of tests/test_refine_sim2real.py.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from sceneforge.labels.store import DatasetStore
from sceneforge.labels.torch import image_tensor
from sceneforge.refine.apply import Refiner, _decode, refined_images
from sceneforge.refine.data import RealPhotos
from sceneforge.refine.metrics import label_validity, sliced_wasserstein
from sceneforge.refine.train import TrainOptions, train
from sceneforge.refine_fixture import build_structural_fixture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path)
    parser.add_argument("--real", type=Path)
    parser.add_argument("--structural", type=Path, metavar="DIR",
                        help="render (or resume) the structural fixture into DIR (48 sim, 32 real frames of 64 px) "
                             "and use its sim store and unlabelled real images instead of --store and --real")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=3)
    args = parser.parse_args()
    if args.structural is not None:
        fixture = build_structural_fixture(args.structural, frames=48, real_frames=32, size=64)
        args.store, args.real = fixture.sim.root, fixture.photos
    elif args.store is None or args.real is None:
        parser.error("give --store and --real, or --structural")
    store, records, renders, real, instances = comparison_data(args.store, args.real)
    side = real.shape[-1]
    swd_before = statistics.fmean(sliced_wasserstein(image_batch([r[:side, :side] for r in renders]), real))
    print(f"{len(records)} frames, {len(real)} photos; {args.steps} steps of batch {args.batch} at {args.size} px, "
          f"generator width {args.width}, {args.blocks} blocks, CPU")
    print(f"SWD renders -> photos: {swd_before:.1f}")
    print(f"{'architecture':13} {'SWD refined':>11} {'edge ratio':>10} {'structure SSIM':>14} "
          f"{'tiled mean':>10} {'tiled max':>9} {'train s':>8}")
    enlarged = _decode(store, records[:2])
    with tempfile.TemporaryDirectory() as tmp:
        for architecture in ("cyclegan", "sceneforge"):
            options = TrainOptions.preset(architecture, channels=args.width, blocks=args.blocks, disc_channels=args.width,
                                          steps=args.steps, size=args.size, batch=args.batch, checkpoint_every=args.steps)
            run = Path(tmp) / architecture
            started = time.perf_counter()
            train(store.root, args.real, run, options, "cpu")
            seconds = time.perf_counter() - started
            refined = refined_images(store, records, run, "cpu")
            swd_after = statistics.fmean(sliced_wasserstein(image_batch([r[:side, :side] for r in refined]), real))
            validity = label_validity(image_batch(renders), image_batch(refined), instances)
            mean, largest = _tiling_error(run, *enlarged)
            print(f"{architecture:13} {swd_after:11.1f} {validity['edge_agreement_ratio']:10.3f} "
                  f"{validity['structure_ssim']:14.3f} {mean:10.3f} {largest:9d} {seconds:8.1f}")


def comparison_data(store_path: Path, real: Path) -> tuple[DatasetStore, list[dict], list[np.ndarray], torch.Tensor,
                                                             torch.Tensor]:
    """What the refiner benchmarks compare (also refine_compare.py): a store, its finished records,
    their renders and instance maps, and the photos cropped to the renders' shorter side."""
    store = DatasetStore(store_path)
    records = store.records()
    renders = [store.read_rgb(r) for r in records]
    side = min(renders[0].shape[:2])
    photos = image_batch([p[:side, :side] for p in RealPhotos(real, side).images])
    instances = torch.from_numpy(np.stack([store.read_instance(r).astype(np.int64) for r in records]))
    return store, records, renders, photos, instances


def image_batch(images: list[np.ndarray]) -> torch.Tensor:
    """H x W x 3 uint8 images of one size as an N x 3 x H x W float batch in [0, 1]."""
    return image_tensor(np.stack(images))


def _tiling_error(run: Path, rgb: np.ndarray, aux: np.ndarray) -> tuple[float, int]:
    height, width = rgb.shape[1] * 3, rgb.shape[2] * 3
    rgb = np.stack([cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR) for image in rgb])
    aux = np.stack([cv2.resize(a, (width, height), interpolation=cv2.INTER_NEAREST) for a in aux])
    tile = (max(height, width) // 3 + 3) // 4 * 4 + 64
    whole = Refiner(run, device="cpu", tile=max(height, width) + 4)(rgb, aux).astype(int)
    tiled = Refiner(run, device="cpu", tile=tile, overlap=32)(rgb, aux).astype(int)
    difference = np.abs(whole - tiled)
    return float(difference.mean()), int(difference.max())


if __name__ == "__main__":
    main()
