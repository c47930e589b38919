"""The device vocabulary shared by render and refine: ``cpu``, ``gpu``, ``gpu:N`` or ``auto``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .errors import UserError

DEVICE_HELP = "cpu, gpu (every GPU, fail without one), gpu:N (GPU number N) or auto (the GPUs if any, else the CPU)"


@dataclass(frozen=True)
class Device:
    """Where to compute. ``index`` picks one GPU (0-based, in the order the backend lists them)."""

    kind: Literal["cpu", "gpu", "auto"] = "auto"
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device(text: str, option: str = "--device") -> Device:
    """A Device from ``cpu``, ``gpu``, ``gpu:N`` or ``auto``; anything else is a UserError naming ``option``."""
    match = re.fullmatch(r"(cpu|gpu|auto)(?::(\d+))?", text.strip().lower())
    if not match or (match[2] is not None and match[1] != "gpu"):
        hint = " (a CUDA GPU is 'gpu')" if text.strip().lower().startswith("cuda") else ""
        raise UserError(f"{option}: expected {DEVICE_HELP}; got {text!r}{hint}")
    return Device(match[1], None if match[2] is None else int(match[2]))  # type: ignore[arg-type]
