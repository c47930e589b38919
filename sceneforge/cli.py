"""The ``sceneforge`` command line."""

from __future__ import annotations

import logging
import signal
import sys
import traceback
import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler

from sceneforge import __version__
from sceneforge.cli_base import SceneForgeCommand, SceneForgeGroup
from sceneforge.cli_progress import render_progress
from sceneforge.cli_refine import refine_app, refine_frames
from sceneforge.floor.devices import DEVICE_HELP
from sceneforge.floor.errors import RenderFailure, StorageError, UserError

if TYPE_CHECKING:  # annotations only: starting the CLI imports neither
    from sceneforge.pipeline import RenderReport
    from sceneforge.scenes.recipe import Recipe

app = typer.Typer(
    help="SceneForge: YAML scene recipes in, labeled synthetic image datasets out.\n\n"
    "Typical use: sceneforge run examples/tabletop.yaml -o out/tabletop",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command and subcommand
    cls=SceneForgeGroup,
)
app.add_typer(refine_app, name="refine")
stderr = Console(stderr=True, soft_wrap=True)  # never hard-wrap FILE:LINE:COL messages

RecipeArg = Annotated[Path, typer.Argument(metavar="RECIPE", help="Recipe YAML file (see docs/recipes.md).", show_default=False)]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", metavar="OUT", help="Dataset folder to create or resume.", show_default=False)]
CountOpt = Annotated[Optional[int], typer.Option("--count", "-n", metavar="N", help="Number of frames (overrides the recipe).", min=1)]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", metavar="SEED", help="Recipe seed (overrides the recipe).", min=0)]
ResolutionOpt = Annotated[Optional[str], typer.Option("--resolution", metavar="WxH", help="Image size WxH, e.g. 640x480 (overrides the recipe).")]
SamplesOpt = Annotated[Optional[int], typer.Option("--samples", metavar="N", help="Cycles samples per pixel (overrides the recipe).", min=1)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]


DeviceOpt = Annotated[str, typer.Option("--device", metavar="DEVICE", help=DEVICE_HELP + ".")]
WorkersOpt = Annotated[int, typer.Option("--workers", "-j", metavar="N", min=1, help="CPU render workers (GPUs: --workers-per-gpu).")]
PerGpuOpt = Annotated[int, typer.Option("--workers-per-gpu", metavar="N", min=1, help="Render workers sharing each GPU.")]
ThreadsOpt = Annotated[int, typer.Option("--threads", metavar="N", min=0, help="CPU threads per worker, 0 = all cores.")]
RetriesOpt = Annotated[int, typer.Option("--retries", metavar="N", min=0, help="Renders of a failing frame after the first.")]
RecycleOpt = Annotated[int, typer.Option("--max-scenes-per-worker", metavar="N", min=0, help="Restart a worker after N frames (0 = never).")]
MemoryOpt = Annotated[float, typer.Option("--max-worker-memory", metavar="MB", min=0, help="Restart a worker above this resident memory (0 = no ceiling).")]
ExecutorOpt = Annotated[str, typer.Option("--executor", metavar="NAME", help="local (worker processes here) or ray (a Ray cluster).")]
AddressOpt = Annotated[Optional[str], typer.Option("--address", metavar="ADDR", help="Ray cluster address (default: start a local Ray).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Print every worker event.")]
UsdOpt = Annotated[bool, typer.Option("--usd/--no-usd", help="Also write each frame's scene as a USD stage, OUT/scenes/NNNNNN.usda.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", metavar="FIELD.PATH=VALUE", help="Override any recipe field, e.g. --set camera.distance='{uniform: [1, 2]}' (repeatable; VALUE is YAML).")]


def _overrides(count: int | None, seed: int | None, resolution: str | None, samples: int | None,
               assignments: list[str] | None) -> dict:
    """--set assignments, then the dedicated options (which win)."""
    from sceneforge.api import engine_overrides
    from sceneforge.scenes.recipe import parse_assignment

    overrides: dict = dict(parse_assignment(text) for text in assignments or [])
    return {**overrides, **engine_overrides(count, seed, resolution, samples)}


def _first_worker(executor: str, device: str, threads: int) -> AbstractContextManager[None]:
    """With the local executor, worker-0 starts now, its start-up beside the conductor's (``first_worker``)."""
    from sceneforge.first_worker import first_worker

    return first_worker(device, threads) if executor == "local" else nullcontext()


def _progress_callbacks(quiet: bool, verbose: bool):
    """The progress display and the render callbacks that drive it."""
    progress = render_progress(stderr, quiet)

    def on_event(kind: str, message: str) -> None:
        if kind == "worker":
            name, _, state = message.partition(": ")
            progress.workers[name] = state
        elif kind == "retry":
            progress.retries += 1
        elif kind == "failed":
            progress.failures += 1
        if not quiet and (verbose or kind in ("notice", "restart", "retry", "failed")):
            progress.note(f"{kind}: {message}")

    return progress, dict(on_start=progress.begin, on_frame=lambda _: progress.step(), on_event=on_event)


def _summary(report: RenderReport, recipe: Recipe, output: Path, quiet: bool, exports: Sequence[Path] = ()) -> None:
    """What the run did, the exports it wrote with their counts, and where its log is; then the
    clipped-pixel warning, and the failed views as a RenderFailure."""
    views = "frame(s)" if recipe.camera_names == [""] else "view(s)"  # a rig renders a view per camera
    if not quiet:
        stderr.print(
            f"Rendered {report.rendered} {views}, {report.already_done} already done, in "
            f"{report.wall_seconds:.1f} s; Blender render time {report.render_seconds:.1f} s",
            markup=False, highlight=False,
        )
        for line in _export_lines(exports):
            stderr.print(line, markup=False, highlight=False)
        stderr.print(f"Log: {output / 'logs' / 'run.jsonl'}", markup=False, highlight=False)
    _warn_clipped(report.store.records(), CLIPPED_THRESHOLD)
    if report.failures:
        failed = ", ".join(f"{f.spec.index}{' ' + f.spec.camera.name if f.spec.camera.name else ''}"
                           for f in report.failures[:10])
        raise RenderFailure(f"{len(report.failures)} {views} failed ({failed}); errors in "
                            f"{output / 'failed.jsonl'}; rerun the same command to retry them")


def _export_lines(exports: Sequence[Path]) -> list[str]:
    """A line per COCO file written under each export folder: its path, images and annotations."""
    import json

    lines = []
    for folder in exports:
        for path in sorted(folder.rglob("*.json")):
            data = json.loads(path.read_text())
            if isinstance(data, dict) and {"images", "annotations"} <= data.keys():
                lines.append(f"Exported COCO: {path} ({len(data['images'])} images, "
                             f"{len(data['annotations'])} annotations)")
    return lines


@app.command(cls=SceneForgeCommand)
def run(recipe: RecipeArg, output: OutputOpt, count: CountOpt = None, seed: SeedOpt = None,
        resolution: ResolutionOpt = None, samples: SamplesOpt = None, device: DeviceOpt = "auto",
        workers: WorkersOpt = 1, workers_per_gpu: PerGpuOpt = 1, threads: ThreadsOpt = 0, retries: RetriesOpt = 2,
        max_scenes_per_worker: RecycleOpt = 1000, max_worker_memory: MemoryOpt = 0.0,
        executor: ExecutorOpt = "local", address: AddressOpt = None, set_: SetOpt = None,
        usd: UsdOpt = True, quiet: QuietOpt = False, verbose: VerboseOpt = False) -> None:
    """Sample, render, refine (when the recipe names a refiner) and export: the whole job.
    Writes the store into OUT (with USD scenes) and COCO into OUT/coco.

    Rerunning the same command on the same OUT renders only the missing frames.
    """
    with _first_worker(executor, device, threads):
        from sceneforge.api import run as run_recipe
        from sceneforge.scenes.recipe import load_recipe

        loaded = load_recipe(recipe, _overrides(count, seed, resolution, samples, set_))
        progress, callbacks = _progress_callbacks(quiet, verbose)
        result = run_recipe(
            loaded, output, usd=usd, during_render=progress, device=device, workers=workers,
            workers_per_gpu=workers_per_gpu, threads=threads, retries=retries, executor=executor, address=address, max_scenes_per_worker=max_scenes_per_worker,
            max_worker_memory_mb=max_worker_memory, **callbacks,
            refiner=lambda store, checkpoint, batch, dev, thresholds: refine_frames(store, checkpoint, batch=batch, device=dev,
                                                                                quiet=quiet, thresholds=thresholds),
        )
    _summary(result.report, loaded, output, quiet, result.exports)
    typer.echo(f"Dataset: {output.resolve()}")


@app.command(cls=SceneForgeCommand)
def render(recipe: RecipeArg, output: OutputOpt, count: CountOpt = None, seed: SeedOpt = None,
           resolution: ResolutionOpt = None, samples: SamplesOpt = None, device: DeviceOpt = "auto",
           workers: WorkersOpt = 1, workers_per_gpu: PerGpuOpt = 1, threads: ThreadsOpt = 0,
           retries: RetriesOpt = 2, max_scenes_per_worker: RecycleOpt = 1000, max_worker_memory: MemoryOpt = 0.0,
           executor: ExecutorOpt = "local", address: AddressOpt = None, set_: SetOpt = None,
           usd: UsdOpt = False, quiet: QuietOpt = False, verbose: VerboseOpt = False) -> None:
    """Render a recipe into the dataset store only (no refiner, no export). Resumes an interrupted run."""
    with _first_worker(executor, device, threads):
        from sceneforge.api import render as render_recipe
        from sceneforge.scenes.recipe import load_recipe

        loaded = load_recipe(recipe, _overrides(count, seed, resolution, samples, set_))
        progress, callbacks = _progress_callbacks(quiet, verbose)
        with progress:
            report = render_recipe(
                loaded, output, usd=usd, device=device, workers=workers, workers_per_gpu=workers_per_gpu,
                threads=threads, retries=retries,
                executor=executor, address=address, max_scenes_per_worker=max_scenes_per_worker,
                max_worker_memory_mb=max_worker_memory, **callbacks)
    _summary(report, loaded, output, quiet)
    typer.echo(f"Dataset: {output.resolve()}")


@app.command(cls=SceneForgeCommand)
def sample(
    recipe: RecipeArg,
    count: Annotated[int, typer.Option("--count", "-n", metavar="N", min=1, help="Frames to sample.")] = 1,
    start: Annotated[int, typer.Option("--start", metavar="I", min=0, help="First frame index.")] = 0,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="DIR", help="Write DIR/NNNNNN.json (NNNNNN_CAMERA.json for a rig's views) instead of JSON lines to standard output.")] = None,
    set_: SetOpt = None,
) -> None:
    """Print the SceneSpecs of frames I .. I+N-1 as JSON lines (one per view) without rendering."""
    from sceneforge.api import sample_specs
    from sceneforge.floor.files import atomic_write
    from sceneforge.labels.store import view_stem
    from sceneforge.scenes.recipe import load_recipe

    loaded = load_recipe(recipe, _overrides(None, None, None, None, set_))
    if output is not None and output.exists() and not output.is_dir():
        raise UserError(f"{output}: exists and is not a folder")
    for spec in sample_specs(loaded, count, start):
        text = spec.to_json()
        if output is None:
            typer.echo(text)
        else:
            output.mkdir(parents=True, exist_ok=True)
            atomic_write(output / f"{view_stem(spec.index, spec.camera.name)}.json", lambda tmp: tmp.write_text(text + "\n"))
    if output is not None:
        typer.echo(f"SceneSpecs: {output.resolve()}", err=True)


@app.command(cls=SceneForgeCommand)
def export(
    store: Annotated[Path, typer.Argument(metavar="OUT", help="Dataset folder written by 'sceneforge render' or 'run'.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="DEST", help="Folder to write the export into.", show_default=False)],
    format: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT", help="coco, yolo, webdataset, mot (sequences) or bop (6D poses).")] = "coco",
    rgb: Annotated[str, typer.Option("--rgb", metavar="SOURCE", help="original, refined (after 'sceneforge refine apply') or clean (without the sensor model).")] = "original",
    split: Annotated[Optional[str], typer.Option("--split", metavar="SPLITS", help="e.g. train=0.8,val=0.2; deterministic per frame.")] = None,
    coco_masks: Annotated[str, typer.Option("--coco-masks", metavar="ENCODING", help="coco: polygon (read by Detectron2 and MMDetection by default) or rle.")] = "polygon",
    yolo_task: Annotated[str, typer.Option("--yolo-task", metavar="TASK", help="yolo: detect (boxes), segment (polygons) or pose (boxes and keypoints).")] = "detect",
    coco_layout: Annotated[str, typer.Option("--layout", metavar="LAYOUT", help="coco: sceneforge (SPLIT/annotations.json, SPLIT/images/) or standard (annotations/instances_SPLIT.json, images/SPLIT/).")] = "sceneforge",
    shard_size: Annotated[int, typer.Option("--shard-size", metavar="MB", min=1, help="webdataset: largest shard in MB.")] = 1024,
    min_visible_pixels: Annotated[Optional[int], typer.Option("--min-visible-pixels", metavar="N", min=0, help="Keep only objects with at least N visible pixels.")] = None,
    min_visibility: Annotated[Optional[float], typer.Option("--min-visibility", metavar="FRACTION", min=0.0, max=1.0, help="Keep only objects at least this visible (visible / unoccluded pixels).")] = None,
    max_truncation: Annotated[Optional[float], typer.Option("--max-truncation", metavar="FRACTION", min=0.0, max=1.0, help="Keep only objects with at most this share of their silhouette outside the image.")] = None,
    categories: Annotated[Optional[str], typer.Option("--categories", metavar="NAMES", help="Keep only objects of these categories, e.g. box,ball.")] = None,
    include_rejected: Annotated[bool, typer.Option("--include-rejected", help="With --rgb refined: also export the frames whose refinement the acceptance check rejected.")] = False,
    partial: Annotated[bool, typer.Option("--partial", help="Export a store whose render has not finished.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output folder.")] = False,
) -> None:
    """Export a dataset store for training code: COCO, YOLO (Ultralytics), WebDataset shards, MOTChallenge or BOP."""
    from sceneforge.api import open_store
    from sceneforge.labels.export import ObjectFilter, parse_categories, parse_splits

    if rgb not in ("original", "refined", "clean"):
        raise typer.BadParameter(f"expected original, refined or clean, got {rgb!r}", param_hint="--rgb")
    options = {"coco": {"masks": coco_masks, "layout": coco_layout}, "yolo": {"task": yolo_task},
               "webdataset": {"shard_bytes": shard_size << 20}}.get(format, {})
    dest = open_store(store).export(format, output, overwrite=overwrite, partial=partial, rgb=rgb,
                                    splits=parse_splits(split) if split else None, **options, include_rejected=include_rejected,
                                    objects=ObjectFilter(min_visible_pixels, min_visibility, max_truncation,
                                                         parse_categories(categories) if categories is not None else None))
    typer.echo(f"Exported {format}: {dest.resolve()}")


@app.command(cls=SceneForgeCommand)
def verify(
    store: Annotated[Path, typer.Argument(metavar="OUT", help="Dataset folder.", show_default=False)],
    repair: Annotated[bool, typer.Option("--repair", help="Drop damaged and duplicate records, remove orphaned and temporary files, fix the counts.")] = False,
) -> None:
    """Check a store: every record's files (size, CRC-32), duplicates, orphans, temporary files, counts.

    Exits 0 when the store is sound (or was repaired), 1 when problems were found and not repaired.
    After --repair, rerun the render command to render the dropped frames again.
    """
    from sceneforge.labels.store import DatasetStore
    from sceneforge.labels.verify import verify_store

    report = verify_store(DatasetStore(store), repair=repair)
    for line in report.lines():
        typer.echo(line)
    if report.problems and not report.repaired:
        typer.echo(f"{report.problems} problem(s) found; 'sceneforge verify {store} --repair' fixes them", err=True)
        raise typer.Exit(1)
    typer.echo(f"repaired {report.problems} problem(s); rerun the render command to render what is missing"
               if report.repaired else "the store is sound")


# labels.stats.CLIPPED_WARNING, spelled here so that starting the CLI imports no numpy (a test checks they agree).
CLIPPED_THRESHOLD = 0.02
ClippedOpt = Annotated[float, typer.Option(
    "--clipped-threshold", metavar="FRACTION", min=0.0, max=1.0,
    help="Warn about frames with more than this share of pixels clipped (a channel at 255).")]


def _warn_clipped(records: list[dict], threshold: float) -> None:
    """Print a warning to stderr when frames clip more than ``threshold`` of their pixels."""
    from sceneforge.labels.stats import clipped_warning

    if (line := clipped_warning(records, threshold)) is not None:
        stderr.print(f"warning: {line}", markup=False, highlight=False)


@app.command(cls=SceneForgeCommand)
def preview(
    store: Annotated[Path, typer.Argument(metavar="OUT", help="Dataset folder.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="SHEET.png", help="Contact sheet to write.", show_default=False)],
    frames: Annotated[Optional[str], typer.Option("--frames", metavar="I,J,...", help="Frame indices to show.")] = None,
    count: Annotated[int, typer.Option("--count", "-n", metavar="N", min=1, help="Frames to show when --frames is not given.")] = 6,
    sequence: Annotated[Optional[int], typer.Option("--sequence", metavar="S", min=0,
                                                    help="Write sequence S as an animation (OUTPUT.gif) instead.")] = None,
    clipped_threshold: ClippedOpt = CLIPPED_THRESHOLD,
) -> None:
    """Write a contact sheet: RGB, depth, normals, instances with boxes and class names, flow, refined RGB.

    Frames with more than --clipped-threshold of their pixels clipped are framed in red and listed.
    """
    from sceneforge.api import open_store
    from sceneforge.floor.files import atomic_write
    from sceneforge.labels.preview import sequence_frames
    from sceneforge.labels.store import DatasetStore

    if sequence is not None:
        import imageio.v3 as iio
        import numpy as np

        loaded = DatasetStore(store)
        frames = sequence_frames(loaded, sequence)
        fps = loaded.meta["recipe"]["sequence"]["fps"]
        data = iio.imwrite("<bytes>", np.stack(frames), extension=".gif", duration=1000 / fps, loop=0)
        atomic_write(output, lambda tmp: tmp.write_bytes(data))
        typer.echo(f"Preview: {output.resolve()}")
        return

    indices = None
    if frames is not None:
        try:
            indices = [int(part) for part in frames.split(",")]
        except ValueError:
            raise typer.BadParameter(f"expected comma-separated frame indices, got {frames!r}", param_hint="--frames") from None
    opened = open_store(store)
    if not len(opened):
        raise UserError(f"{store}: the store has no finished frames")
    sheet = opened.contact_sheet(indices, count, clipped_threshold)
    records = opened.dataset.records()
    shown = set(indices) if indices is not None else {r["index"] for r in records[:count]}
    _warn_clipped([r for r in records if r["index"] in shown], clipped_threshold)
    sheet.save(output)
    typer.echo(f"Preview: {output.resolve()}")


@app.command(cls=SceneForgeCommand)
def stats(
    store: Annotated[Path, typer.Argument(metavar="OUT", help="Dataset folder.", show_default=False)],
    plots: Annotated[Optional[Path], typer.Option("--plots", metavar="DIR", help="Also draw the histograms as PNG plots into this folder.")] = None,
    clipped_threshold: ClippedOpt = CLIPPED_THRESHOLD,
) -> None:
    """Print class balance, objects per image, visibility, depth and clipped-pixel distributions
    (with --plots, also as PNG plots). Lists the frames with more than --clipped-threshold of their
    pixels clipped."""
    from rich.table import Table

    from sceneforge.labels.stats import dataset_stats, write_plots
    from sceneforge.labels.store import DatasetStore

    loaded = DatasetStore(store)
    numbers = dataset_stats(loaded, clipped_threshold)
    stdout = Console(soft_wrap=True)
    views = "".join(f", {n} {name} views" for name, n in numbers.get("views", {}).items())
    table = Table(title=f"{store}: {numbers['frames']} frames{views}")
    for column in ("class", "objects", "visible", "mean visibility"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for c in numbers["categories"]:
        visibility = "-" if c["mean_visibility"] is None else f"{c['mean_visibility']:.2f}"
        table.add_row(c["name"], str(c["objects"]), str(c["visible"]), visibility)
    stdout.print(table)
    histograms = {
        "visible objects per image": {str(k): v for k, v in numbers["objects_per_image"].items()},
        "box size (px)": dict(zip((f"{e:g}" for e in numbers["box_size_histogram"]["edges"]), numbers["box_size_histogram"]["counts"])),
        "visibility": dict(zip((f"{e:.1f}" for e in numbers["visibility_histogram"]["edges"]), numbers["visibility_histogram"]["counts"])),
        "truncation": dict(zip((f"{e:.1f}" for e in numbers["truncation_histogram"]["edges"]), numbers["truncation_histogram"]["counts"])),
        "depth (m)": dict(zip((f"{e:.2f}" for e in numbers["depth_histogram"]["edges"]), numbers["depth_histogram"]["counts"])),
        "clipped pixels": dict(zip((f"{e:.1%}" for e in numbers["clipped_histogram"]["edges"]), numbers["clipped_histogram"]["counts"])),
    }
    for title, counts in histograms.items():
        stdout.print(f"{title}: " + "  ".join(f"{k}:{v}" for k, v in counts.items()))
    if numbers["clipped_max"] is not None:
        stdout.print(f"clipped pixels per frame: mean {numbers['clipped_mean']:.2%}, max {numbers['clipped_max']:.2%}; "
                     f"{len(numbers['overexposed'])} frame(s) above {clipped_threshold:.1%}: "
                     + (" ".join(f"{f['index']}:{f['clipped_fraction']:.1%}" for f in numbers["overexposed"]) or "none"))
    _warn_clipped(loaded.records(), clipped_threshold)
    if plots is not None:  # drawing them (matplotlib) costs more than the rest of the command
        paths = write_plots(numbers, plots)
        stdout.print(f"Plots: {', '.join(str(p) for p in paths)}")


@app.command(cls=SceneForgeCommand)
def report(
    store: Annotated[Path, typer.Argument(metavar="OUT", help="Dataset folder.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="REPORT.html", help="HTML page to write.", show_default=False)],
    count: Annotated[int, typer.Option("--count", "-n", metavar="N", min=1, help="Sample frames to show, spread over the store.")] = 6,
    clipped_threshold: ClippedOpt = CLIPPED_THRESHOLD,
) -> None:
    """Write a self-contained HTML report: sample frames with their labels, class balance, objects per
    image, box-size, visibility, truncation and depth histograms, clipped pixels, failed frames, the recipe."""
    from sceneforge.labels.report import write_report
    from sceneforge.labels.store import DatasetStore

    if output.is_dir():
        raise typer.BadParameter(f"{output} is a folder; name the HTML file to write, e.g. {output / 'report.html'}",
                                 param_hint="--output")
    written = write_report(DatasetStore(store), output, count, clipped_threshold)
    typer.echo(f"Report: {written.resolve()}")


MAX_AXES_LISTED = 10  # asset files whose up axis `validate` names, per library entry


@app.command(cls=SceneForgeCommand)
def validate(
    recipe: RecipeArg, set_: SetOpt = None,
    check_assets: Annotated[bool, typer.Option("--check-assets", help="Parse every file of the asset library "
                                               "(by default only those the first scene draws).")] = False,
) -> None:
    """Check a recipe and report every problem as FILE:LINE:COL: field.path: message; name the up axis
    each asset file is loaded with, and warn about assets that would lie on their side."""
    from sceneforge.scenes.recipe import load_recipe
    from sceneforge.scenes.sampling import sample_views

    from sceneforge.scenes.upright import up_axis_notes

    loaded = load_recipe(recipe, _overrides(None, None, None, None, set_))
    if check_assets and (problems := loaded.asset_problems()):
        raise UserError.listing([(loaded.source(*loc), message) for loc, message in problems])
    views = sample_views(loaded, 0)
    notes = up_axis_notes(loaded, None if check_assets else {b.asset.path for b in [*views[0].objects, *views[0].props] if b.asset.path})
    for entry in dict.fromkeys(note.entry for note in notes):
        mine = [note for note in notes if note.entry == entry]
        where = loaded.where("assets", entry, "path")
        axes = "; ".join(f"{Path(note.path).name}: {note.up_axis} up ({note.source})" for note in mine[:MAX_AXES_LISTED])
        more = f"; and {len(mine) - MAX_AXES_LISTED} more" if len(mine) > MAX_AXES_LISTED else ""
        typer.echo(f"{where}: up axis: {axes}{more}")
        for note in mine:
            if note.warning is not None:
                stderr.print(f"warning: {where}: {note.warning}", markup=False, highlight=False)
    width, height = loaded.render.resolution
    typer.echo(
        f"{recipe}: OK: {loaded.count} frame(s) at {width}x{height}, {loaded.render.samples} samples; "
        f"categories: {', '.join(loaded.categories) or '(none)'}"
    )


@app.command(cls=SceneForgeCommand)
def schema(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="Write to FILE instead of standard output.")] = None,
) -> None:
    """Print the recipe JSON Schema, for editor completion and checks (yaml-language-server)."""
    import json

    from sceneforge.floor.files import atomic_write
    from sceneforge.scenes.recipe import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        atomic_write(output, lambda tmp: tmp.write_text(text))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sceneforge {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=stderr, show_time=False, show_path=False)])
    warnings.showwarning = _show_warning


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Deprecation notices about the user's input (FutureWarning: a recipe's ``on:``) as one
    ``warning: FILE:LINE:COL: ...`` line; other warnings as Python shows them."""
    if issubclass(category, FutureWarning):
        stderr.print(f"warning: {message}", markup=False, highlight=False)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


class _Terminated(Exception):
    """SIGTERM, turned into an exception so that workers and the store are closed cleanly."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated


def main() -> None:
    """Console-script entry point: user mistakes exit 2 with a message, never a traceback."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app()
    except UserError as exc:
        stderr.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(2)
    except RenderFailure as exc:
        stderr.print(f"render failed: {exc}", markup=False, highlight=False)
        sys.exit(1)
    except StorageError as exc:
        stderr.print(f"storage error: {exc}", markup=False, highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        stderr.print("interrupted; rerun the same command to resume", markup=False)
        sys.exit(130)
    except _Terminated:
        stderr.print("terminated; rerun the same command to resume", markup=False)
        sys.exit(143)
    except Exception:  # a bug in SceneForge, not a mistake of the user's: show where
        traceback.print_exc()
        stderr.print("internal error: this is a bug in SceneForge, not in your input; please report it with "
                     "the command and the traceback above", markup=False, highlight=False)
        sys.exit(1)
