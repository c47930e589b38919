"""Resident memory of a real job's processes over many mixed scenes: does a worker grow?

    python benchmarks/memory_soak.py [--frames 2000] [--workers 1] [--recipe benchmarks/memory_soak.yaml]

Runs ``sceneforge run`` (local executor, CPU, worker recycling off, so that one worker process
lives through the whole job) on a recipe whose every scene loads other asset files, textures,
HDRIs and backdrops (``memory_soak.yaml``, 48x32, 1 sample), and samples the resident memory
(VmRSS, Linux ``/proc``) of the conductor and of each worker every ``--interval`` seconds, with
the frames each worker has finished (from the run log). Prints each process's RSS after the
warm-up, at checkpoints and at the end, and its growth per 1000 of its frames after the warm-up
(a least-squares line through its samples, so that one sample's noise does not decide it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = ROOT / "benchmarks" / "memory_soak.yaml"
STARTING = re.compile(r"^(worker-\d+): starting \(pid (\d+)\)")
FRAME_DONE = re.compile(r"^(worker-\d+): frame \d+ done")


@dataclass
class Process:
    """One sampled process: its (frames it has finished, RSS in MB) over time."""

    name: str
    pid: int
    frames: int = 0
    samples: list[tuple[int, float]] = field(default_factory=list)


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MB, None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class RunLog:
    """Follows OUT/logs/run.jsonl as the run writes it: worker pids and frames per worker."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.workers, self.frames, self.ended = path, 0, {}, 0, False

    def read(self, processes: dict[str, Process]) -> None:
        """Adds new workers to ``processes`` and counts their finished frames."""
        if not self.path.exists():
            return
        with self.path.open() as log:
            log.seek(self.offset)
            while (line := log.readline()).endswith("\n"):
                self.offset = log.tell()
                event = json.loads(line)
                message = event.get("message", "")
                if event["event"] == "worker" and (started := STARTING.match(message)):
                    name, pid = started.group(1), int(started.group(2))
                    key = f"{name} (pid {pid})"  # a restarted worker is another process
                    processes[key] = Process(key, pid)
                    self.workers[name] = key
                elif event["event"] == "worker" and (done := FRAME_DONE.match(message)):
                    processes[self.workers[done.group(1)]].frames += 1
                elif event["event"] == "frame":
                    self.frames += 1
                elif event["event"] == "end":
                    self.ended = True


def growth_per_1000(samples: list[tuple[int, float]], warm_up: int) -> float:
    """MB per 1000 frames: the slope of a least-squares line through the samples after warm-up."""
    points = np.array([s for s in samples if s[0] >= warm_up], dtype=float)
    if len(points) < 2 or np.ptp(points[:, 0]) == 0:
        return float("nan")
    return float(np.polyfit(points[:, 0], points[:, 1], 1)[0] * 1000)


def at_frames(samples: list[tuple[int, float]], frames: int) -> float | None:
    """RSS at the first sample with at least ``frames`` frames done."""
    return next((mb for done, mb in samples if done >= frames), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--warm-up", type=int, default=100, help="frames per worker before growth is measured")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between RSS samples")
    parser.add_argument("--output", type=Path, help="dataset folder (default: a temporary one, removed)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sceneforge-soak-") as scratch:
        out = args.output or Path(scratch) / "out"
        command = [sys.executable, "-m", "sceneforge", "run", str(args.recipe), "-o", str(out),
                   "-n", str(args.frames), "--device", "cpu", "--workers", str(args.workers),
                   "--max-scenes-per-worker", "0", "-q"]
        load_before, start = os.getloadavg(), time.perf_counter()
        job = subprocess.Popen(command, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
        conductor = Process("conductor", job.pid)
        processes: dict[str, Process] = {}
        log = RunLog(out / "logs" / "run.jsonl")
        shown, exporting = 0, 0.0  # the conductor's peak after the last frame (the export)
        try:
            while job.poll() is None:
                log.read(processes)
                conductor.frames = log.frames
                if log.ended:
                    exporting = max(exporting, rss_mb(conductor.pid) or 0.0)
                for process in ([] if log.ended else [conductor]) + list(processes.values()):
                    if (mb := rss_mb(process.pid)) is not None:
                        process.samples.append((process.frames, mb))
                if log.frames >= shown + 100:  # a line now and then: a long soak shows how it goes
                    shown = log.frames // 100 * 100
                    rows = ", ".join(f"{p.name} {p.samples[-1][1]:.0f}" for p in [conductor, *processes.values()]
                                     if p.samples)
                    print(f"{time.perf_counter() - start:6.0f} s  {log.frames:5d} frames  RSS (MB): {rows}", flush=True)
                time.sleep(args.interval)
        except KeyboardInterrupt:  # stopped early: the figures so far
            job.send_signal(signal.SIGINT)
            job.wait()
        log.read(processes)
        seconds, load_after = time.perf_counter() - start, os.getloadavg()
    if job.returncode and log.frames < args.frames:
        print(f"sceneforge run stopped with exit code {job.returncode} after {log.frames} frames")

    print(f"sceneforge run: {log.frames} frames of {args.recipe.name}, {args.workers} worker(s), CPU, "
          f"recycling off, {seconds:.0f} s ({log.frames / seconds:.2f} frames/s); "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print("resident memory (MB) after each process's own frames (the conductor: frames of the job)")
    for process in [conductor, *processes.values()]:
        if not process.samples:
            continue
        warm_up = args.warm_up * (args.workers if process is conductor else 1)
        last = process.samples[-1][0]
        marks = sorted({warm_up, *range(500, last, 500), last})
        row = "  ".join(f"{frames}: {mb:.0f}" for frames in marks if (mb := at_frames(process.samples, frames)))
        peak = max(mb for _, mb in process.samples)
        print(f"  {process.name:22s} {row}  (peak {peak:.0f}"
              + (f"; {exporting:.0f} exporting)" if process is conductor and exporting else ")"))
        growth = growth_per_1000(process.samples, warm_up)
        base = at_frames(process.samples, warm_up) or process.samples[0][1]
        print(f"  {'':22s} growth after {warm_up} frames: {growth:+.1f} MB per 1000 frames "
              f"({100 * growth / base:+.1f} %)")


if __name__ == "__main__":
    main()
