"""SceneForge against the plain-bpy floor, pipeline overhead, and the cost of the label passes.

    python benchmarks/render_overhead.py [--frames 48] [--resolution 320x240] [--samples 16]
                                         [--repetitions 2] [--floor-only] [--baseline TREE]

Part 0 times whole commands side by side: ``sceneforge run`` (CPU worker, all label passes, USD,
COCO) against ``benchmarks/floor.py`` (the same frames in one plain bpy session, one multilayer EXR
per frame and nothing else), for K scenes x 1 frame and 1 scene x K frames, alternating A-B-B-A
so that drift on a noisy machine cancels, and prints the median wall times, CPU times (of the
command and its worker processes) and their ratios.
Part 1 runs the real pipeline (`render_dataset`: sampling, warm CPU worker, labels, store writes)
on the default recipe, for two workloads: many scenes x 1 frame, and one scene x many frames
(`camera.frames_per_scene`), and compares wall time with the sum of Blender's own render times.
Part 2 renders the same scenes in one Blender session with all label passes and with RGB only,
alternating A-B-B-A so that drift on a noisy machine cancels, and compares render times.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sceneforge.executors import ExecutorOptions
from sceneforge.pipeline import render_dataset
from sceneforge.render.blender_scene import Renderer
from sceneforge.render.server import console_silenced
from sceneforge.scenes.recipe import Recipe, load_recipe
from sceneforge.scenes.sampling import sample

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "examples" / "tabletop.yaml"
FLOOR = Path(__file__).resolve().parent / "floor.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--resolution", default="320x240")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--repetitions", type=int, default=2, help="A-B-B-A pairs per workload in part 0")
    parser.add_argument("--floor-only", action="store_true", help="part 0 alone")
    parser.add_argument("--baseline", type=Path, help="part 0 also runs SceneForge from this source tree "
                        "(PYTHONPATH), interleaved with the others: before against after")
    args = parser.parse_args()
    width, height = (int(v) for v in args.resolution.lower().split("x"))
    _against_floor(args.recipe, args.frames, args.resolution, args.samples, args.repetitions, args.baseline)
    if args.floor_only:
        return
    recipe = load_recipe(args.recipe, {"count": args.frames, "render.resolution": [width, height],
                                       "render.samples": args.samples})
    print(f"recipe {args.recipe.name}: {args.frames} frames at {width}x{height}, {args.samples} samples, CPU")

    workloads = {
        f"{args.frames} scenes x 1 frame": recipe,
        f"1 scene x {args.frames} frames": recipe.model_copy(
            update={"camera": recipe.camera.model_copy(update={"frames_per_scene": args.frames})}),
    }
    for name, workload in workloads.items():
        started, ready = time.perf_counter(), []

        def on_event(kind: str, message: str) -> None:
            if kind == "worker" and "ready" in message:
                ready.append(time.perf_counter())

        with tempfile.TemporaryDirectory() as tmp:
            report = render_dataset(workload, Path(tmp) / "out", options=ExecutorOptions(device="cpu"), on_event=on_event)
        start_up = ready[0] - started
        steady = (report.wall_seconds - start_up - report.render_seconds) / report.rendered
        print(f"\n[pipeline, {name}] sampling + warm worker + labels + store writes")
        print(f"  wall time             {report.wall_seconds:8.2f} s")
        print(f"  Blender render time   {report.render_seconds:8.2f} s  (sum over frames)")
        print(f"  pipeline overhead     {100 * report.overhead:8.2f} %  (goal <= 5 %), of which:")
        print(f"    worker start-up     {start_up:8.2f} s  (once per run: Python, bpy, factory settings)")
        print(f"    per frame           {1000 * steady:8.1f} ms  ({100 * steady * report.rendered / report.render_seconds:.2f} % of render time)")
        print(f"  throughput            {report.rendered / report.wall_seconds:8.3f} images/s")

    with console_silenced():
        with_labels, rgb_only = _render_both_ways(recipe, args.frames)
    ratio = sum(with_labels) / sum(rgb_only)
    per_frame = statistics.median(a / b for a, b in zip(with_labels, rgb_only))
    print("\n[label passes] the same scenes in one Blender session, alternating A-B-B-A")
    print(f"  render time, all label passes  {sum(with_labels):8.2f} s")
    print(f"  render time, RGB only          {sum(rgb_only):8.2f} s")
    print(f"  label passes cost              {100 * (ratio - 1):+8.2f} %  "
          f"(median per frame {100 * (per_frame - 1):+.2f} %; goal <= +5 %)")


def _against_floor(recipe: Path, frames: int, resolution: str, samples: int, repetitions: int,
                   baseline: Path | None = None) -> None:
    """Print whole-command wall and CPU times of ``sceneforge run`` and the floor, and their ratios
    (with ``baseline``, also of ``sceneforge run`` from that source tree)."""
    common = ["--count", str(frames), "--resolution", resolution, "--samples", str(samples)]
    workloads = {f"{frames} scenes x 1 frame": 1, f"1 scene x {frames} frames": frames}
    tools = ["floor", *(["baseline"] if baseline else []), "sceneforge"]
    print(f"[SceneForge vs the plain-bpy floor] {recipe.name}: {frames} frames at {resolution}, {samples} samples, "
          f"CPU; medians of {2 * repetitions} whole commands each, interleaved A-B-B-A")
    print("CPU: user + system seconds of the whole command with its worker processes (far less sensitive "
          "than wall time to other load on the machine)")
    if baseline:
        print(f"baseline: SceneForge from {baseline}")
    columns = [f"{tool} {kind}" for tool in tools for kind in ("wall (s)", "CPU (s)")]
    ratios = [f"{tool} / floor CPU" for tool in tools[1:]]
    print(f"| workload | {' | '.join(columns)} | SceneForge / floor wall | {' | '.join(ratios)} | load average |")
    print("|---" * (len(columns) + len(ratios) + 3) + "|")
    for name, per_scene in workloads.items():
        def command(tool: str, out: Path) -> list[str]:
            if tool == "floor":
                return [sys.executable, str(FLOOR), str(recipe), str(out), *common, "--frames-per-scene", str(per_scene)]
            return [sys.executable, "-m", "sceneforge", "run", str(recipe), "-o", str(out), *common,
                    "--device", "cpu", "--quiet", "--set", f"camera.frames_per_scene={per_scene}"]

        environments = {"baseline": {**os.environ, "PYTHONPATH": str(baseline)}} if baseline else {}
        times: dict[str, list[float]] = {tool: [] for tool in tools}
        cpu: dict[str, list[float]] = {tool: [] for tool in tools}
        for repetition in range(repetitions):
            order = tools + tools[::-1] if repetition % 2 == 0 else tools[::-1] + tools
            for tool in order:
                with tempfile.TemporaryDirectory() as tmp:
                    before, started = _children_cpu(), time.perf_counter()
                    subprocess.run(command(tool, Path(tmp) / "out"), check=True, stdout=subprocess.DEVNULL,
                                   env=environments.get(tool))
                    times[tool].append(time.perf_counter() - started)
                    cpu[tool].append(_children_cpu() - before)
        wall = {tool: statistics.median(times[tool]) for tool in tools}
        used = {tool: statistics.median(cpu[tool]) for tool in tools}
        cells = [f"{value[tool]:.2f}" for tool in tools for value in (wall, used)]
        shares = [f"{used[tool] / used['floor']:.2f}x" for tool in tools[1:]]
        print(f"| {name} | {' | '.join(cells)} | {wall['sceneforge'] / wall['floor']:.2f}x | {' | '.join(shares)} | "
              f"{os.getloadavg()[0]:.1f} |")


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children and theirs (the render workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _render_both_ways(recipe: Recipe, frames: int) -> tuple[list[float], list[float]]:
    """Blender render seconds per frame, with all label passes and with RGB only."""
    renderer = Renderer()
    try:
        specs = [sample(recipe, i) for i in range(frames)]
        renderer.render(specs[0])  # warm-up, not counted
        with_labels, rgb_only = [], []
        for i, spec in enumerate(specs):
            for label_passes in (True, False) if i % 2 == 0 else (False, True):
                _, seconds = renderer.render(spec, label_passes=label_passes)
                (with_labels if label_passes else rgb_only).append(seconds)
    finally:
        renderer.close()
    return with_labels, rgb_only


if __name__ == "__main__":
    main()
