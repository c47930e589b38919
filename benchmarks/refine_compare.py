"""Refiners side by side: the published baselines CycleGAN, CUT and FastCUT, and SceneForge's
label-preserving refiner, trained on the same data for the same steps, in one table.

    python benchmarks/refine_compare.py --store OUT --real DIR [--real-labeled LABELED] [--steps 150]
                                        [--size 48] [--batch 4] [--width 16] [--blocks 3]
                                        [--architectures cyclegan,cut,fastcut,sceneforge] [--runs DIR]
                                        [--temporal-weight W] [--probe-seeds N]
                                        [--nce-weight W] [--nce-boundary-share S]

Columns: SWD to the photos (mean over the pyramid levels; lower is closer), two-sample accuracy
(a small CNN telling refined from photos; 0.5 = indistinguishable), edge agreement of refined vs
render at instance boundaries and structure SSIM (label validity: 1 = kept), trained parameters,
seconds per training step (CPU; of the steps this call trained, — for a finished run resumed from
``--runs``), on a sequence store the flicker the refiner adds
(``warping_error``'s ``added``, 8-bit levels, refine/temporal.py; train with ``--temporal-weight``
to compare), and with ``--real-labeled`` the task probe's mean IoU on the labeled real set's
evaluation half (refine/probe.py): one probe seed, or with ``--probe-seeds N`` the mean and 95 %
interval over N seeds, followed by the paired per-seed differences of each refiner to the renders
and of the SceneForge refiner to each baseline. The first row is the renders themselves.
``sceneforge+nce`` in ``--architectures`` is the refiner with PatchNCE of weight ``--nce-weight``
added (uniform patches), ``sceneforge+nce-boundary`` the same with ``--nce-boundary-share`` of the
patches near instance boundaries.
docs/refiner.md quotes runs on the structural fixture (sceneforge/refine_fixture.py) and on the
sensor-only fixture of tests/test_refine_sim2real.py.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from sceneforge.labels.store import DatasetStore
from sceneforge.refine.apply import refined_images
from sceneforge.refine.metrics import label_validity, sliced_wasserstein, two_sample_accuracy
from sceneforge.refine.temporal import warping_error
from sceneforge.refine.probe import benchmark_miou, confidence_interval
from sceneforge.refine.train import TrainOptions, train, training_setup

from refine_quality import comparison_data, image_batch  # a sibling script: this folder is on the path


def probe_miou(store: DatasetStore, refined: list[np.ndarray], real_labeled: Path | None,
               seeds: range) -> list[float] | None:
    """Mean IoU on ``real_labeled`` of the task probe trained on ``refined`` (the store's renders
    when ``refined`` is the raw RGB), one per probe seed; None without a labeled real set."""
    return None if real_labeled is None else [benchmark_miou(store, refined, real_labeled, seed=s) for s in seeds]


def _interval(values: list[float], sign: str = "") -> str:
    mean, half_width = confidence_interval(values)
    return f"{mean:{sign}.3f}" if len(values) < 2 else f"{mean:{sign}.3f} ± {half_width:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--real", type=Path, required=True)
    parser.add_argument("--real-labeled", type=Path, help="labeled real set for the task probe (refine/probe.py)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--architectures", default="cyclegan,cut,fastcut,sceneforge")
    parser.add_argument("--temporal-weight", type=float, default=0.0, help="train with the temporal loss (sequence stores)")
    parser.add_argument("--probe-seeds", type=int, default=1, help="train the task probe with N seeds (from --seed) per row")
    parser.add_argument("--nce-weight", type=float, default=1.0, help="PatchNCE weight of the sceneforge+nce rows")
    parser.add_argument("--nce-boundary-share", type=float, default=0.75, help="boundary share of the sceneforge+nce-boundary row")
    parser.add_argument("--runs", type=Path, help="keep the training runs in DIR/ARCHITECTURE (for 'refine preview'; a run already there is resumed, not retrained)")
    args = parser.parse_args()
    store, records, renders, real, instances = comparison_data(args.store, args.real)
    print(f"{len(records)} frames, {len(real)} photos; {args.steps} steps of batch {args.batch} at {args.size} px, "
          f"generator width {args.width}, {args.blocks} blocks, CPU ({torch.get_num_threads()} threads)")
    print(f"| {'refiner':10} | {'SWD':>6} | {'two-sample acc.':>15} | {'edge agreement':>14} | {'structure SSIM':>14} "
          f"| {'parameters':>10} | {'s / step':>8} | {'flicker':>7} | {'probe mIoU':>10} |")
    print("|" + "|".join("-" * (w + 2) for w in (10, 6, 15, 14, 14, 10, 8, 7, 10)) + "|")
    probes = {"renders": _row("renders", renders, renders, real, instances, store, args, None, None)}
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs or Path(tmp)
        for architecture in args.architectures.split(","):
            base, _, nce = architecture.partition("+")
            if nce not in ("", "nce", "nce-boundary"):
                parser.error(f"--architectures: unknown variant {architecture!r} (sceneforge+nce or sceneforge+nce-boundary)")
            extra = {"nce_weight": args.nce_weight, "nce_boundary_share": args.nce_boundary_share if nce == "nce-boundary" else 0.0} if nce else {}
            options = TrainOptions.preset(base, **extra, channels=args.width, blocks=args.blocks, disc_channels=args.width,
                                          steps=args.steps, size=args.size, batch=args.batch, checkpoint_every=args.steps,
                                          seed=args.seed, temporal_weight=args.temporal_weight)
            run = runs / architecture
            result = train(store.root, args.real, run, options, "cpu")
            parameters = sum(p.numel() for p in training_setup(options, torch.device("cpu"))[0].parameters())
            trained = result.last_step - result.first_step  # a run resumed from --runs trains only what is left
            probes[architecture] = _row(architecture, renders, refined_images(store, records, run, "cpu"), real, instances,
                                        store, args, parameters, result.seconds / trained if trained else None)
    if args.probe_seeds > 1 and args.real_labeled:
        print(f"probe mIoU, paired differences over seeds {args.seed}-{args.seed + args.probe_seeds - 1} "
              "(mean ± 95 % interval):")
        pairs = [(name, "renders") for name in probes if name != "renders"]
        pairs += [("sceneforge", name) for name in probes if "sceneforge" in probes and name not in ("renders", "sceneforge")]
        for a, b in pairs:
            print(f"  {a} - {b}: {_interval([x - y for x, y in zip(probes[a], probes[b])], '+')}")


def _row(name: str, renders: list[np.ndarray], refined: list[np.ndarray], real: torch.Tensor, instances: torch.Tensor,
         store: DatasetStore, args: argparse.Namespace, parameters: int | None, seconds: float | None) -> list[float] | None:
    side = real.shape[-1]
    square = image_batch([r[:side, :side] for r in refined])
    swd = statistics.fmean(sliced_wasserstein(square, real, seed=args.seed))
    accuracy = two_sample_accuracy(square, real, seed=args.seed)
    validity = label_validity(image_batch(renders), image_batch(refined), instances)
    miou = probe_miou(store, refined, args.real_labeled, range(args.seed, args.seed + args.probe_seeds))
    temporal = warping_error(store, store.records(), refined)
    cells = [f"{swd:6.1f}", f"{accuracy:15.2f}", f"{validity['edge_agreement_ratio']:14.3f}",
             f"{validity['structure_ssim']:14.3f}", f"{parameters / 1e6:9.3f}M" if parameters else f"{'—':>10}",
             f"{seconds:8.3f}" if seconds else f"{'—':>8}", f"{temporal['added']:7.2f}" if temporal else f"{'—':>7}",
             f"{_interval(miou):>10}" if miou is not None else f"{'—':>10}"]
    print(f"| {name:10} | " + " | ".join(cells) + " |", flush=True)
    return miou


if __name__ == "__main__":
    main()
