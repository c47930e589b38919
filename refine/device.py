"""Where the refiner runs, and the numeric settings that go with it."""

from __future__ import annotations

import contextlib
import logging

import torch

from sceneforge.errors import UserError

log = logging.getLogger("sceneforge")


def pick_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``auto``; a missing GPU means the CPU, with a notice."""
    if name not in ("cpu", "cuda", "auto"):
        raise UserError(f"--device: expected cpu, cuda or auto, got {name!r}")
    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda")
    log.warning("no CUDA GPU found: the refiner runs on the CPU (fp32)")
    return torch.device("cpu")


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on a GPU (no loss scaling needed); a no-op on the CPU, which stays fp32."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
