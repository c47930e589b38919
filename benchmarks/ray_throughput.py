"""The Ray executor against the local one on this machine: the same render job with each, run
alternately (local, Ray, Ray, local, ...) so that drift cancels, printing per command the whole
command's wall time, images per second per core over the whole command, and images per second
per core from the first finished frame to the last (``logs/run.jsonl``), which leaves out the
start-up (Ray's own start and its actors').

    python benchmarks/ray_throughput.py [--frames 200] [--resolution 64x48] [--samples 2]
                                        [--workers 2] [--repetitions 1] [--baseline TREE]

Each command: ``sceneforge render examples/tabletop.yaml -n FRAMES --device cpu --workers W
--threads 1 --executor local|ray`` (Ray: a private local Ray started by the command). With
``--baseline TREE`` each round also runs both executors from that source tree (``PYTHONPATH``):
before against after. docs/performance.md quotes runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

RECIPE = Path(__file__).resolve().parent.parent / "examples" / "tabletop.yaml"


def run_once(executor: str, out: Path, args: argparse.Namespace, code: Path | None = None) -> tuple[float, float]:
    """Wall seconds of one ``render`` command (from the source tree ``code``, default this one) and
    seconds from its first finished frame to its last."""
    command = [sys.executable, "-m", "sceneforge", "render", str(RECIPE), "-o", str(out), "-n", str(args.frames),
               "--resolution", args.resolution, "--samples", str(args.samples), "--device", "cpu",
               "--workers", str(args.workers), "--threads", "1", "--executor", executor, "-q"]
    started = time.perf_counter()
    environment = None if code is None else {**os.environ, "PYTHONPATH": str(code)}
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=environment)
    wall = time.perf_counter() - started
    events = [json.loads(line) for line in (out / "logs" / "run.jsonl").read_text().splitlines()]
    times = [datetime.fromisoformat(e["time"]).timestamp() for e in events if e["event"] == "frame"]
    return wall, max(times) - min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--resolution", default="64x48")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=1, help="rounds of every kind there and back (local, Ray, Ray, local)")
    parser.add_argument("--baseline", type=Path, help="also run both executors from this source tree, interleaved")
    args = parser.parse_args()
    trees: dict[str, Path | None] = {"": None, **({" (baseline)": args.baseline} if args.baseline else {})}
    kinds = [(executor + label, executor, code) for label, code in trees.items() for executor in ("local", "ray")]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        for n, (name, executor, code) in enumerate((kinds + kinds[::-1]) * args.repetitions):
            results[name].append(run_once(executor, Path(tmp) / f"{executor}{n}", args, code))
    cores = args.workers  # one thread per worker
    print(f"{args.frames} frames at {args.resolution}, {args.samples} samples, {args.workers} workers of one thread, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| executor | whole command (s) | images/s per core, whole command | images/s per core, first to last frame |")
    print("|---|---|---|---|")
    for executor, runs in results.items():
        walls = ", ".join(f"{w:.2f}" for w, _ in runs)
        whole = ", ".join(f"{args.frames / w / cores:.2f}" for w, _ in runs)
        steady = ", ".join(f"{(args.frames - 1) / s / cores:.2f}" for _, s in runs)
        print(f"| {executor} | {walls} | {whole} | {steady} |")
    steady_median = {name: statistics.median((args.frames - 1) / s / cores for _, s in runs) for name, runs in results.items()}
    for name, value in steady_median.items():
        print(f"median {name}: {value:.2f} images/s per core, first to last frame")
    for label in trees:
        print(f"Ray / local{label}: {steady_median['ray' + label] / steady_median['local' + label]:.2f}")


if __name__ == "__main__":
    main()
