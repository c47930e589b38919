"""``sceneforge refine``: train a refiner, apply it to a store, measure it, preview it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from sceneforge.cli_base import SceneForgeCommand, SceneForgeGroup
from sceneforge.cli_progress import READING, REFINING, REFINING_NOW, TRAINING, render_progress
from sceneforge.floor.devices import DEVICE_HELP
from sceneforge.floor.errors import UserError
from sceneforge.refine.extra import require_refine_extra  # imports neither torch nor kornia

refine_app = typer.Typer(
    help="Train a sim-to-real refiner on a store and a folder of real photos, apply it, measure it (docs/refiner.md).",
    no_args_is_help=True,
    rich_markup_mode=None,
    cls=SceneForgeGroup,
)
stderr = Console(stderr=True, soft_wrap=True)

StoreOpt = Annotated[Path, typer.Option("--store", metavar="OUT", help="Dataset folder written by 'sceneforge render' or 'run'.", show_default=False)]
RealOpt = Annotated[Path, typer.Option("--real", metavar="DIR", help="Folder of real photos (any size; searched recursively).", show_default=False)]
CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", metavar="RUN_OR_FILE", help="A training-run folder or a checkpoint file.", show_default=False)]
DeviceOpt = Annotated[str, typer.Option("--device", metavar="DEVICE", help=DEVICE_HELP + ".")]
BatchOpt = Annotated[int, typer.Option("--batch", metavar="B", min=1, max=4096, help="Images per batch.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]


@refine_app.command(cls=SceneForgeCommand)
def train(
    store: StoreOpt,
    real: RealOpt,
    output: Annotated[Path, typer.Option("--output", "-o", metavar="RUN", help="Training-run folder (resumed when it holds a checkpoint).", show_default=False)],
    steps: Annotated[int, typer.Option("--steps", metavar="N", min=1, help="Train until this step.")] = 10_000,
    size: Annotated[int, typer.Option("--size", metavar="PX", min=32, help="Square crop side (a multiple of 4).")] = 256,
    batch: BatchOpt = 1,
    device: DeviceOpt = "auto",
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", metavar="N", min=1, help="Save a checkpoint every N steps.")] = 500,
    architecture: Annotated[str, typer.Option("--architecture", metavar="NAME", help="sceneforge (label-preserving), or a published baseline: cyclegan, cut or fastcut.")] = "sceneforge",
    width: Annotated[int, typer.Option("--width", metavar="C", min=4, max=512, help="Generator channels (CycleGAN: 64).")] = 64,
    blocks: Annotated[int, typer.Option("--blocks", metavar="N", min=1, max=32, help="Generator residual blocks (CycleGAN: 9).")] = 9,
    seed: Annotated[int, typer.Option("--seed", metavar="SEED", min=0, help="Seed of the initial weights and of every crop.")] = 0,
    temporal_weight: Annotated[float, typer.Option("--temporal-weight", metavar="W", min=0.0, help="Sequence stores: weight of the temporal loss along the renderer's flow (0: off).")] = 0.0,
    nce_weight: Annotated[Optional[float], typer.Option("--nce-weight", metavar="W", min=0.0, help="Weight of PatchNCE, the render as the anchor (default: the architecture's; sceneforge: 0, off; cut: 1; fastcut: 10).", show_default=False)] = None,
    nce_boundary_share: Annotated[float, typer.Option("--nce-boundary-share", metavar="S", min=0.0, max=1.0, help="sceneforge with --nce-weight: share of PatchNCE's patches drawn near instance boundaries (0: uniform, as CUT).")] = 0.0,
    quiet: QuietOpt = False,
) -> None:
    """Train (or resume) a refiner; a killed run resumes from its last checkpoint."""
    require_refine_extra()
    from sceneforge.refine.checkpoint import FILE_NAME
    from sceneforge.refine.train import TrainOptions
    from sceneforge.refine.train import train as train_refiner

    options = TrainOptions.preset(architecture, channels=width, blocks=blocks, steps=steps, size=size, batch=batch,
                                  checkpoint_every=checkpoint_every, seed=seed, temporal_weight=temporal_weight,
                                  nce_boundary_share=nce_boundary_share,
                                  **({} if nce_weight is None else {"nce_weight": nce_weight}))
    with render_progress(stderr, quiet, TRAINING) as progress:
        result = train_refiner(store, real, output, options, device, on_step=lambda _: progress.step(),
                               on_start=progress.begin)
    typer.echo(f"Checkpoint: {(output / FILE_NAME).resolve()} (step {result.last_step}, "
               f"{result.steps_per_second:.2f} steps/s on {result.device})")


@refine_app.command(cls=SceneForgeCommand)
def apply(
    checkpoint: CheckpointOpt,
    store: StoreOpt,
    batch: BatchOpt = 8,
    device: DeviceOpt = "auto",
    tile: Annotated[int, typer.Option("--tile", metavar="PX", min=64, help="Largest tile side; larger images are tiled with overlap.")] = 512,
    min_edge_agreement: Annotated[float, typer.Option("--min-edge-agreement", metavar="RATIO", min=0.0, help="Reject a frame whose edge agreement at the instance boundaries, refined / render, is lower.")] = 0.6,
    min_structure_ssim: Annotated[float, typer.Option("--min-structure-ssim", metavar="SSIM", min=0.0, max=1.0, help="Reject a frame whose structure SSIM against the render is lower.")] = 0.6,
    max_colour_drift: Annotated[float, typer.Option("--max-colour-drift", metavar="LEVELS", min=0.0, help="Reject a frame where an object's colour strays further (8-bit levels) from the frame's colour change.")] = 60.0,
    max_size_drift: Annotated[float, typer.Option("--max-size-drift", metavar="IOU", min=0.0, max=1.0, help="Reject a frame where an object's extent loses more IoU with its exact mask.")] = 0.2,
    quiet: QuietOpt = False,
) -> None:
    """Refine every frame of a store into rgb_refined/, score each against its labels (rejecting
    those under the thresholds; docs/refiner.md, Acceptance) and record the checkpoint in dataset.json."""
    from sceneforge.labels.store import DatasetStore

    loaded = DatasetStore(store)
    thresholds = {"min_edge_agreement": min_edge_agreement, "min_structure_ssim": min_structure_ssim,
                  "max_colour_drift": max_colour_drift, "max_size_drift": max_size_drift}
    count = refine_frames(loaded, checkpoint, batch=batch, device=device, tile=tile, quiet=quiet, thresholds=thresholds)
    rejected = sum(1 for r in loaded.records() if r.get("refine_rejected"))
    typer.echo(f"Refined {count} frame(s): {(store / 'rgb_refined').resolve()}; {rejected} rejected by the acceptance check")


def refine_frames(store, checkpoint: Path, *, batch: int, device: str, tile: int = 512, quiet: bool = False,
                  thresholds: dict | None = None) -> int:
    """Refine a store with the progress display of ``run`` and ``render`` (plain lines where standard
    error is not a terminal); also used by ``sceneforge run`` for a recipe's ``refine``.
    ``thresholds``: keyword arguments of ``Acceptance`` (its defaults when None)."""
    require_refine_extra()
    from sceneforge.refine.acceptance import Acceptance
    from sceneforge.refine.apply import Refiner, refine_store

    refiner = Refiner(checkpoint, device=device, batch=batch, tile=tile)
    with render_progress(stderr, quiet, REFINING) as progress:
        return refine_store(store, refiner, on_frame=progress.step, on_start=progress.begin,
                            acceptance=Acceptance(**(thresholds or {})))


@refine_app.command(cls=SceneForgeCommand)
def preview(
    store: StoreOpt,
    output: Annotated[Path, typer.Option("--output", "-o", metavar="SHEET.png", help="Sheet to write.", show_default=False)],
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", metavar="RUN_OR_FILE", help="Refine on the fly instead of reading rgb_refined/.")] = None,
    count: Annotated[int, typer.Option("--count", "-n", metavar="N", min=1, max=64, help="Frames to show.")] = 6,
    device: DeviceOpt = "auto",
) -> None:
    """Write a before/after sheet: render and refined image, both with the instance outlines drawn."""
    require_refine_extra()
    import cv2

    from sceneforge.floor.files import atomic_write
    from sceneforge.labels.preview import before_after_sheet
    from sceneforge.labels.store import DatasetStore
    from sceneforge.refine.apply import refined_images

    loaded = DatasetStore(store)
    records = loaded.records()[:count]
    if not records:
        raise UserError(f"{store}: the store has no finished frames")
    sheet = before_after_sheet(loaded, records, refined_images(loaded, records, checkpoint, device))
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    atomic_write(output, lambda tmp: tmp.write_bytes(png.tobytes()))
    typer.echo(f"Preview: {output.resolve()}")


@refine_app.command("eval")
def evaluate(
    store: StoreOpt,
    real: RealOpt,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", metavar="RUN_OR_FILE", help="Refine on the fly instead of reading rgb_refined/.")] = None,
    count: Annotated[int, typer.Option("--count", "-n", metavar="N", min=2, help="Frames to measure (the first N).")] = 200,
    inception_weights: Annotated[Optional[Path], typer.Option("--inception-weights", metavar="FILE", help="Also report FID/KID with these weights (never downloaded; see docs/refiner.md).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="REPORT.json", help="Also write the figures as JSON.")] = None,
    device: DeviceOpt = "auto",
    seed: Annotated[int, typer.Option("--seed", metavar="SEED", min=0, help="Seed of the metrics' random projections, crops and classifier.")] = 0,
    quiet: QuietOpt = False,
) -> None:
    """Measure the refiner without downloaded weights: realism (SWD, two-sample classifier) and label validity."""
    require_refine_extra()
    from sceneforge.floor.files import atomic_write
    from sceneforge.labels.store import DatasetStore
    from sceneforge.refine.evaluate import evaluate_store

    with render_progress(stderr, quiet, READING if checkpoint is None else REFINING_NOW) as progress:
        report = evaluate_store(DatasetStore(store), real, checkpoint=checkpoint, count=count,
                                inception_weights=inception_weights, device=device, seed=seed,
                                on_start=progress.begin, on_frame=progress.step,
                                on_stage=None if quiet else lambda name: progress.note(f"Measuring: {name}"))
    stdout = Console(soft_wrap=True)
    for section, values in report.items():
        if isinstance(values, dict):
            stdout.print(f"{section}: " + "  ".join(f"{k} {_fmt(v)}" for k, v in values.items()))
        else:
            stdout.print(f"{section}: {_fmt(values)}")
    if output is not None:
        text = json.dumps(report, indent=2)
        atomic_write(output, lambda tmp: tmp.write_text(text))


def _fmt(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@refine_app.command(cls=SceneForgeCommand)
def probe(
    store: StoreOpt,
    real_labeled: Annotated[Path, typer.Option("--real-labeled", metavar="DIR_OR_STORE", help="Labelled real images: a SceneForge store, a COCO .json with masks, or a folder with annotations.json and images/.", show_default=False)],
    refined: Annotated[bool, typer.Option("--refined", help="Also train on the store's refined frames (rgb_refined).")] = False,
    seeds: Annotated[int, typer.Option("--seeds", metavar="N", min=1, max=100, help="Trainings per image set (seeds 0..N-1).")] = 3,
    steps: Annotated[int, typer.Option("--steps", metavar="N", min=1, help="Training steps of batch 8 per training.")] = 300,
    size: Annotated[int, typer.Option("--size", metavar="PX", min=8, max=1024, help="Images are scaled to this square side (centre square of the shorter side).")] = 64,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="PROBE.json", help="Also write the figures as JSON.")] = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Task probe: train a small segmenter on raw (and refined) renders and on half the real set, score it on the other half."""
    require_refine_extra()
    from sceneforge.floor.files import atomic_write
    from sceneforge.labels.store import DatasetStore
    from sceneforge.refine.probe import probe_table, run_probe

    def note(name: str, seed: int) -> None:
        if not quiet:
            stderr.print(f"probe: training on {name}, seed {seed}")

    report = run_probe(DatasetStore(store), real_labeled, refined=refined, seeds=seeds, steps=steps, size=size,
                       device=device, on_run=note)
    typer.echo(probe_table(report))
    if output is not None:
        text = json.dumps(report, indent=2)
        atomic_write(output, lambda tmp: tmp.write_text(text))

