"""Refiner throughput: inference images/s at 256² and 512², training steps/s.

    python benchmarks/refine_throughput.py [--device auto] [--images 8] [--steps 3] [--batch 16]

Side by side in one run (this machine is noisy: compare the ratios), on the CPU and, when one is
present, on a CUDA GPU:

- reference: CycleGAN as published (instance norm, RGB in), batch 1, fp32, NCHW;
- optimised: SceneForge's refiner (per-pixel norm, G-buffer inputs, residual output) through the
  real inference and training code: batched, channels_last (fast with the per-pixel norm, slow
  with instance norm), inference mode, and on a GPU bf16 autocast and fused Adam.

Inference times the generator through ``Refiner`` (host uint8 in, host uint8 out, tiles of 512)
after warm-up; training times ``train._step`` (both generators and both discriminators, at the
given crop size) on random tensors, so disk reading is not part of either figure.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sceneforge.labels.torch import image_tensor
from sceneforge.refine import checkpoint
from sceneforge.refine.apply import Refiner
from sceneforge.refine.data import SIGNED
from sceneforge.refine.device import pick_device
from sceneforge.refine.model import CycleModels, RefinerConfig
from sceneforge.refine.train import ImagePool, TrainOptions, train_step, training_setup, training_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cpu, gpu, gpu:N or auto (default): the CPU is always measured too")
    parser.add_argument("--images", type=int, default=8, help="images per inference measurement on the CPU (x64 on a GPU)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per measurement on the CPU (x20 on a GPU)")
    parser.add_argument("--batch", type=int, default=0, help="optimised inference batch (default 4 on the CPU, 64 on a GPU)")
    parser.add_argument("--train-batch", type=int, default=1, help="optimised training batch (default 1: steps/s compare like for like)")
    parser.add_argument("--train-size", type=int, default=256)
    args = parser.parse_args()
    gpu = args.device if args.device.startswith("gpu") else "gpu"
    devices = ["cpu"] + ([gpu] if args.device != "cpu" and pick_device(args.device).type == "cuda" else [])
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", GPU {torch.cuda.get_device_name()}" if len(devices) > 1 else ", no GPU"))
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            scale = 1 if device == "cpu" else 64
            batch = args.batch or (4 if device == "cpu" else 64)
            rows = []
            for name, config, run_batch, amp in (("reference", RefinerConfig.reference(), 1, False),
                                                  ("optimised", RefinerConfig(), batch, True)):
                ckpt = Path(tmp) / f"{name}.pt"
                _save_random(config, ckpt)
                speeds = [_inference(ckpt, device, side, run_batch, amp, args.images * scale) for side in (256, 512)]
                steps = _training(config, device, args.train_batch if name == "optimised" else 1, args.train_size,
                                  amp, args.steps * (1 if device == "cpu" else 20))
                rows.append((name, run_batch, *speeds, steps))
            print(f"\n{device}: inference batch, images/s at 256² and 512², training steps/s at {args.train_size}² "
                  f"(training batch {args.train_batch} optimised, 1 reference)")
            print(f"{'':10} {'batch':>5} {'256² img/s':>11} {'512² img/s':>11} {'train steps/s':>14}")
            for name, run_batch, s256, s512, steps in rows:
                print(f"{name:10} {run_batch:5d} {s256:11.2f} {s512:11.2f} {steps:14.3f}")
            ref, opt = rows
            print(f"{'ratio':10} {'':5} {opt[2] / ref[2]:10.2f}x {opt[3] / ref[3]:10.2f}x {opt[4] / ref[4]:13.2f}x")


def _save_random(config: RefinerConfig, path: Path) -> None:
    models = CycleModels(config)
    torch.nn.init.normal_(models.to_real.output_layer.weight, std=0.02)  # not the identity start: real work for timing
    optimiser = torch.optim.Adam(models.parameters())
    pools = {"real": ImagePool(1), "synthetic": ImagePool(1)}
    checkpoint.save(path, training_state(models, TrainOptions(config=config), 0, optimiser, optimiser, pools))


def _inference(ckpt: Path, device: str, side: int, batch: int, amp: bool, images: int) -> float:
    refiner = Refiner(ckpt, device=device, batch=batch, mixed_precision=amp)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
    aux = rng.random((batch, side, side, 6), dtype=np.float32)
    refiner(rgb, aux)  # warm-up: cuDNN autotuning, allocator
    _sync(device)
    started, done = time.perf_counter(), 0
    while done < images:
        refiner(rgb, aux)
        done += batch
    _sync(device)
    return done / (time.perf_counter() - started)


def _training(config: RefinerConfig, device_name: str, batch: int, size: int, amp: bool, steps: int) -> float:
    device = pick_device(device_name)
    options = TrainOptions(batch=batch, size=size, mixed_precision=amp, config=config)
    models, optimise_g, optimise_d, channels_last = training_setup(options, device)
    pools = {"real": ImagePool(options.pool_size), "synthetic": ImagePool(options.pool_size)}
    rng = np.random.default_rng(0)
    x, y = (image_tensor(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8), SIGNED, device, channels_last)
            for _ in range(2))
    a = image_tensor(rng.random((batch, size, size, 6), dtype=np.float32), SIGNED, device, channels_last)
    for step in range(steps + 1):
        if step == 1:  # the first step warms up
            _sync(device_name)
            started = time.perf_counter()
        train_step(models, options, x, a, y, pools, rng, optimise_g, optimise_d, device)
    _sync(device_name)
    return steps / (time.perf_counter() - started)


def _sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
