"""Where the refiner runs, and the numeric settings that go with it."""

from __future__ import annotations

import contextlib
import logging

import torch

from sceneforge.floor.devices import Device, parse_device
from sceneforge.floor.errors import UserError

log = logging.getLogger("sceneforge")


def pick_device(choice: str | Device) -> torch.device:
    """The torch device of ``cpu``, ``gpu``, ``gpu:N`` or ``auto`` (see ``sceneforge.floor.devices``).

    ``gpu`` without a CUDA GPU is a UserError; ``auto`` then means the CPU, with a notice.
    """
    device = parse_device(choice) if isinstance(choice, str) else choice
    if device.kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if device.kind == "gpu":
            raise UserError(f"--device {device}: no CUDA GPU found; use --device cpu or auto")
        log.warning("no CUDA GPU found: the refiner runs on the CPU (fp32)")
        return torch.device("cpu")
    index = device.index or 0
    if index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: {torch.cuda.device_count()} CUDA GPU(s) here; GPU numbers start at 0")
    torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return torch.device("cuda", index)


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on a GPU (no loss scaling needed); a no-op on the CPU, which stays fp32."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
