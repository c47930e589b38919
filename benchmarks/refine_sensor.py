"""Does the refiner learn a whole sensor (colour, tone, vignetting, blur, noise) while keeping the
object outlines? Trains the SceneForge refiner with its structure loss and without it (the
ablation) on the same data for the same steps, and measures both; with ``--nce-weight W`` also with
PatchNCE added (uniform patches, and ``--nce-boundary-share S`` of them near instance boundaries).

    python benchmarks/refine_sensor.py --store OUT --real DIR [--reference DIR] [--steps 400]
                                       [--size 64] [--batch 1] [--width 16] [--blocks 3]
                                       [--seeds N] [--nce-weight W] [--nce-boundary-share S] [--no-ablation]

``--reference``: the store's renders passed through the true sensor, as PNGs named by frame index
(what a perfect refiner would output). Prints per row: mean SWD to the photos (lower is closer),
the share of the render-to-reference SWD gap closed, edge agreement ratio and structure SSIM
(``label_validity``), and the boundary measures on the low-passed luminance
(``boundary_structure``: edge recall and precision in the boundary band, contrast-structure in
the band and elsewhere). With ``--seeds N`` every training runs with seeds 0 to N-1, one line
per seed, then the mean over the seeds. docs/refiner.md quotes runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from sceneforge.labels.store import DatasetStore
from sceneforge.refine.apply import refined_images
from sceneforge.refine.metrics import boundary_structure, label_validity, sliced_wasserstein
from sceneforge.refine.train import TrainOptions, train

from refine_quality import image_batch  # a sibling script: this folder is on the path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--real", type=Path, required=True)
    parser.add_argument("--reference", type=Path)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=1, help="train every row with seeds 0 to N-1")
    parser.add_argument("--nce-weight", type=float, default=0.0, help="also train with PatchNCE of this weight")
    parser.add_argument("--nce-boundary-share", type=float, default=0.75, help="share of the boundary-sampled PatchNCE row's patches near boundaries")
    parser.add_argument("--no-ablation", action="store_true", help="leave out the row without structure loss")
    args = parser.parse_args()
    store = DatasetStore(args.store)
    records = store.records()
    renders = [store.read_rgb(r) for r in records]
    instances = torch.from_numpy(np.stack([store.read_instance(r).astype(np.int64) for r in records]))
    photos = image_batch([cv2.imread(str(p))[..., ::-1] for p in sorted(args.real.iterdir()) if p.suffix == ".png"])
    rows = {"render": renders}
    if args.reference:
        rows["true sensor"] = [cv2.imread(str(args.reference / f"{r['index']}.png"))[..., ::-1] for r in records]
    base = TrainOptions.preset("sceneforge", channels=args.width, blocks=args.blocks, disc_channels=args.width,
                               steps=args.steps, size=args.size, batch=args.batch, checkpoint_every=args.steps)
    variants = {} if args.no_ablation else {"no structure loss": replace(base, structure_weight=0.0)}
    variants["boundary structure loss"] = base
    if args.nce_weight > 0:
        variants["+ PatchNCE"] = replace(base, nce_weight=args.nce_weight)
        variants["+ PatchNCE, boundary"] = replace(base, nce_weight=args.nce_weight, nce_boundary_share=args.nce_boundary_share)
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant, options in variants.items():
            for seed in range(args.seeds):
                name = variant if args.seeds == 1 else f"{variant}, seed {seed}"
                started = time.perf_counter()
                train(store.root, args.real, Path(tmp) / name, replace(options, seed=seed), "cpu")
                seconds[name] = time.perf_counter() - started
                rows[name] = refined_images(store, records, Path(tmp) / name, "cpu")
    print(f"{len(records)} frames, {len(photos)} photos; {args.steps} steps of batch {args.batch} at {args.size} px, "
          f"generator width {args.width}, {args.blocks} blocks, CPU")
    swd = {name: statistics.fmean(sliced_wasserstein(image_batch(images), photos)) for name, images in rows.items()}
    print(f"{'':34} {'SWD':>6} {'gap closed':>10} {'edge ratio':>10} {'SSIM':>6} {'bnd recall':>10} "
          f"{'bnd precision':>13} {'bnd CS':>6} {'inner CS':>8} {'train s':>7}")
    figures = {}
    for name, images in rows.items():
        validity = label_validity(image_batch(renders), image_batch(images), instances)
        boundary = boundary_structure(image_batch(renders), image_batch(images), instances)
        closed = ((swd["render"] - swd[name]) / (swd["render"] - swd["true sensor"])) if "true sensor" in swd else float("nan")
        figures[name] = [swd[name], closed, validity["edge_agreement_ratio"], validity["structure_ssim"],
                         boundary["boundary_edge_recall"], boundary["boundary_edge_precision"], boundary["boundary_cs"],
                         boundary["interior_cs"], seconds.get(name, 0.0)]
        _print_row(name, figures[name])
    if args.seeds > 1:
        for variant in variants:
            _print_row(f"{variant}, mean", [statistics.fmean(column) for column in
                                            zip(*(figures[f"{variant}, seed {seed}"] for seed in range(args.seeds)))])


def _print_row(name: str, values: list[float]) -> None:
    swd, closed, ratio, ssim, recall, precision, boundary_cs, interior_cs, seconds = values
    print(f"{name:34} {swd:6.1f} {closed:10.2f} {ratio:10.3f} {ssim:6.3f} {recall:10.3f} {precision:13.3f} "
          f"{boundary_cs:6.3f} {interior_cs:8.3f} {seconds:7.0f}", flush=True)


if __name__ == "__main__":
    main()
