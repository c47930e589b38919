"""The Ray executor against the local one on this machine: the same render job with each, run
alternately (local, Ray, Ray, local, ...) so that drift cancels, printing per command the whole
command's wall time, images per second per core over the whole command, and images per second
per core from the first finished frame to the last (``logs/run.jsonl``), which leaves out the
start-up (Ray's own start and its actors'), and where the CPU goes between the 20th finished frame
and the tenth before the last: per frame in the render workers (the processes with Blender
loaded) and in the conductor (the Ray driver), and the cores Ray's own processes use (actors,
raylet, GCS, monitors), from ``/proc/PID/stat`` of every process of the command.

    python benchmarks/ray_throughput.py [--frames 200] [--resolution 64x48] [--samples 2]
                                        [--workers 2] [--repetitions 1] [--baseline TREE]

Each command: ``sceneforge render examples/tabletop.yaml -n FRAMES --device cpu --workers W
--threads 1 --executor local|ray`` (Ray: a private local Ray started by the command). With
``--baseline TREE`` each round also runs both executors from that source tree (``PYTHONPATH``):
before against after. docs/performance.md quotes runs.
"""

from __future__ import annotations

import argparse
import contextlib
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


WINDOW_START = 20  # finished frames before the CPU window opens (start-up over)


def process_cpu(root: int) -> dict[int, tuple[str, float]]:
    """(command line, CPU seconds) of process ``root`` and every process below it; a process's
    figure counts its threads that have ended too, which a sum over its live threads would not."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    stats[int(entry)] = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(stats[int(entry)][1]), []).append(int(entry))
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        if pid in stats:
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline") as cmdline:
                seconds = (int(stats[pid][11]) + int(stats[pid][12])) / os.sysconf("SC_CLK_TCK")
                found[pid] = (cmdline.read().replace("\0", " "), seconds)
    return found


def run_once(executor: str, out: Path, args: argparse.Namespace, code: Path | None = None) -> dict[str, float]:
    """One ``render`` command (from the source tree ``code``, default this one): its wall seconds,
    seconds from its first finished frame to its last, and over the CPU window its render workers'
    and conductor's CPU seconds a frame and the cores Ray's processes used."""
    command = [sys.executable, "-m", "sceneforge", "render", str(RECIPE), "-o", str(out), "-n", str(args.frames),
               "--resolution", args.resolution, "--samples", str(args.samples), "--device", "cpu",
               "--workers", str(args.workers), "--threads", "1", "--executor", executor, "-q"]
    started = time.perf_counter()
    environment = None if code is None else {**os.environ, "PYTHONPATH": str(code)}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=environment)
    window_end, reads = args.frames - 10, []
    while process.poll() is None and len(reads) < 2:
        finished = _finished_frames(out)
        if finished >= (WINDOW_START if not reads else window_end):
            cpu = process_cpu(process.pid)
            reads.append((finished, time.perf_counter(), cpu, {pid for pid in cpu if _has_blender(pid)}))
        time.sleep(0.05)
    if process.wait() != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    wall = time.perf_counter() - started
    events = [json.loads(line) for line in (out / "logs" / "run.jsonl").read_text().splitlines()]
    times = [datetime.fromisoformat(e["time"]).timestamp() for e in events if e["event"] == "frame"]
    (first, opened, before, _), (last, closed, after, blender) = reads
    spent = {"workers": 0.0, "conductor": 0.0, "ray": 0.0}
    for pid, (cmdline, seconds) in after.items():
        kind = ("conductor" if pid == process.pid or "multiprocessing.resource_tracker" in cmdline
                else "workers" if pid in blender else "ray")
        spent[kind] += seconds - before.get(pid, (cmdline, 0.0))[1]
    frames = last - first
    return {"wall": wall, "steady": max(times) - min(times), "workers_ms": spent["workers"] / frames * 1000,
            "conductor_ms": spent["conductor"] / frames * 1000, "ray_cores": spent["ray"] / (closed - opened)}


def _has_blender(pid: int) -> bool:
    """Whether process ``pid`` has Blender (bpy) loaded: a render worker, or an actor that renders itself."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as maps:
        return any("/bpy/" in line for line in maps)
    return False


def _finished_frames(out: Path) -> int:
    try:
        return (out / "frames.jsonl").read_bytes().count(b"\n")
    except OSError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--resolution", default="64x48")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=1, help="rounds of every kind there and back (local, Ray, Ray, local)")
    parser.add_argument("--baseline", type=Path, help="also run both executors from this source tree, interleaved")
    args = parser.parse_args()
    if args.frames < WINDOW_START + 20:
        parser.error(f"--frames: at least {WINDOW_START + 20}, for a CPU window after the start-up")
    trees: dict[str, Path | None] = {"": None, **({" (baseline)": args.baseline} if args.baseline else {})}
    kinds = [(executor + label, executor, code) for label, code in trees.items() for executor in ("local", "ray")]
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        for n, (name, executor, code) in enumerate((kinds + kinds[::-1]) * args.repetitions):
            results[name].append(run_once(executor, Path(tmp) / f"{executor}{n}", args, code))
    cores = args.workers  # one thread per worker
    print(f"{args.frames} frames at {args.resolution}, {args.samples} samples, {args.workers} workers of one thread, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| executor | whole command (s) | images/s per core, whole command | images/s per core, first to last frame "
          "| render workers, CPU ms a frame | conductor, CPU ms a frame | Ray's processes (cores) |")
    print("|---|---|---|---|---|---|---|")
    for executor, runs in results.items():
        columns = [[f"{r['wall']:.2f}" for r in runs], [f"{args.frames / r['wall'] / cores:.2f}" for r in runs],
                   [f"{(args.frames - 1) / r['steady'] / cores:.2f}" for r in runs],
                   [f"{r['workers_ms']:.0f}" for r in runs], [f"{r['conductor_ms']:.1f}" for r in runs],
                   [f"{r['ray_cores']:.3f}" for r in runs]]
        print(f"| {executor} | " + " | ".join(", ".join(column) for column in columns) + " |")
    steady_median = {name: statistics.median((args.frames - 1) / r["steady"] / cores for r in runs)
                     for name, runs in results.items()}
    for name, value in steady_median.items():
        print(f"median {name}: {value:.2f} images/s per core, first to last frame")
    for label in trees:
        print(f"Ray / local{label}: {steady_median['ray' + label] / steady_median['local' + label]:.2f}")


if __name__ == "__main__":
    main()
