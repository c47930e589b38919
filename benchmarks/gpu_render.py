"""GPU rendering: images per second and GPU utilisation of whole runs, by workers per GPU.

    python benchmarks/gpu_render.py [--frames 32] [--resolution 640x480] [--samples 64]
                                    [--per-gpu 1 2 3] [--device gpu]

For the 8-primitive scene (``examples/tabletop.yaml``) and ``examples/tabletop_assets.yaml``,
runs ``sceneforge run`` (all label passes, USD, COCO) once per ``--workers-per-gpu`` value and
prints its wall time, images per second, the mean and median GPU utilisation that
``nvidia-smi`` sampled every 200 ms while it ran, and the summed Blender render time per image.
Utilisation well below 100 % with one worker means scene building and labels leave the GPU
idle; a second worker per GPU can render meanwhile. ``--device cpu`` checks the script on a
machine without a GPU (no utilisation then).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RECIPES = (EXAMPLES / "tabletop.yaml", EXAMPLES / "tabletop_assets.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--resolution", default="640x480")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--per-gpu", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--device", default="gpu")
    args = parser.parse_args()
    print(f"{args.frames} frames at {args.resolution}, {args.samples} samples, --device {args.device}")
    print(f"{'recipe':22} {'per GPU':>7} {'wall s':>7} {'img/s':>6} {'GPU % mean':>10} {'median':>6} {'render s/img':>12}")
    for recipe in RECIPES:
        for per_gpu in args.per_gpu:
            wall, utilisation, render_s = _run(recipe, per_gpu, args)
            mean = f"{statistics.mean(utilisation):.0f}" if utilisation else "-"
            median = f"{statistics.median(utilisation):.0f}" if utilisation else "-"
            print(f"{recipe.name:22} {per_gpu:7d} {wall:7.1f} {args.frames / wall:6.2f} {mean:>10} {median:>6} "
                  f"{render_s:12.3f}", flush=True)


def _run(recipe: Path, per_gpu: int, args: argparse.Namespace) -> tuple[float, list[float], float]:
    """One whole ``sceneforge run``: wall seconds, GPU utilisation samples (%), mean render seconds per image."""
    out = Path(tempfile.mkdtemp(prefix="sf-gpu-"))
    smi = None
    if shutil.which("nvidia-smi") and args.device != "cpu":
        smi = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                "-lms", "200"], stdout=subprocess.PIPE, text=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sceneforge", "run", str(recipe), "-o", str(out / "store"),
                    "-n", str(args.frames), "--resolution", args.resolution, "--samples", str(args.samples),
                    "--device", args.device, "--workers-per-gpu", str(per_gpu), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    utilisation = []
    if smi is not None:
        smi.terminate()
        output, _ = smi.communicate()
        utilisation = [float(line.split(",")[0]) for line in output.split() if line.strip()]
    records = [json.loads(line) for line in (out / "store" / "frames.jsonl").read_text().splitlines()]
    render_s = statistics.mean(r["render_seconds"] for r in records)
    shutil.rmtree(out)
    return wall, utilisation, render_s


if __name__ == "__main__":
    main()
