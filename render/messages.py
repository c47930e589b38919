"""What a render worker tells its executor, one dataclass per message (local pipes and Ray alike)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Ready:
    """The worker's Blender session is up."""

    pid: int
    device: str  # what renders: "CPU" or "<backend> <GPU name>"
    gpus: list[str]  # names of every GPU Cycles found


@dataclass(frozen=True)
class StartFailed:
    """The worker cannot render as asked (a GPU that is not there); it leaves after this message."""

    error: str  # what was asked and what Cycles found


@dataclass(frozen=True)
class FrameDone:
    """A frame is rendered and finished; ``result`` is what the finishing step returned."""

    index: int
    result: Any
    render_seconds: float


@dataclass(frozen=True)
class FrameFailed:
    """A frame could not be rendered or finished. ``storage`` marks a failure to write the store,
    which stops the run instead of being retried."""

    index: int
    error: str  # the traceback's last line (a storage failure: its message alone)
    traceback: str
    storage: bool = False


@dataclass(frozen=True)
class Recycling:
    """The worker leaves after its last message, to be replaced."""

    reason: str


WorkerMessage = Ready | StartFailed | FrameDone | FrameFailed | Recycling
