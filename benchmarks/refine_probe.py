"""Does refining help a model on the "real" images? The task probe on the structural fixture.

    python benchmarks/refine_probe.py --out DIR [--frames 48] [--real-frames 32] [--resolution 64]
                                      [--steps 150] [--probe-steps 500] [--probe-size 48] [--seeds 3]

Renders (or resumes) the structural sim-to-real fixture into DIR (sceneforge/refine_fixture.py),
trains the SceneForge refiner on the sim store and the fixture's unlabelled real RGB (the default
losses; a small generator, width 16 and 3 blocks, batch 4 at 48 px, as benchmarks/refine_quality.py),
refines the sim store, then runs the probe (``sceneforge refine probe --refined``) against the
real store's labels and prints its table. docs/refiner.md quotes a run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sceneforge.refine.apply import Refiner, refine_store
from sceneforge.refine.probe import probe_table, run_probe
from sceneforge.refine.train import TrainOptions, train
from sceneforge.refine_fixture import build_structural_fixture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--real-frames", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=150, help="refiner training steps")
    parser.add_argument("--probe-steps", type=int, default=500)
    parser.add_argument("--probe-size", type=int, default=48)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    fixture = build_structural_fixture(args.out, frames=args.frames, real_frames=args.real_frames,
                                       size=args.resolution, samples=args.samples)
    print(f"fixture: {len(fixture.sim.records())} sim, {len(fixture.real.records())} real frames of "
          f"{args.resolution} px ({time.perf_counter() - started:.0f} s)", flush=True)
    run = args.out / "refiner"
    options = TrainOptions.preset("sceneforge", channels=16, blocks=3, disc_channels=16, steps=args.steps, size=48,
                                  batch=4, checkpoint_every=args.steps)
    started = time.perf_counter()
    train(fixture.sim.root, fixture.photos, run, options, "cpu")
    refine_store(fixture.sim, Refiner(run, device="cpu"))
    print(f"refiner: {args.steps} steps, applied ({time.perf_counter() - started:.0f} s)", flush=True)
    started = time.perf_counter()
    report = run_probe(fixture.sim, fixture.real.root, refined=True, seeds=args.seeds, steps=args.probe_steps,
                       size=args.probe_size, device="cpu")
    print(probe_table(report))
    print(f"probe: {time.perf_counter() - started:.0f} s")
    (args.out / "probe.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
