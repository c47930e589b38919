"""Refiner checkpoints: one torch file of tensors and plain values, never unpickled code.

A checkpoint holds ``format``, ``version``, the architecture (``RefinerConfig``), the training
options it was made with, the step, and the state of every network and optimiser; it is loaded
with ``weights_only=True``, checked against the architecture it claims, and written atomically.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path

import torch

from sceneforge.errors import UserError

from .model import CycleModels, Generator, RefinerConfig

FORMAT = "sceneforge.refiner"
VERSION = 1
FILE_NAME = "checkpoint.pt"
MAX_CHECKPOINT_BYTES = 4 << 30


def checkpoint_file(path: Path) -> Path:
    """A checkpoint file, or the latest one of a training run folder."""
    file = path / FILE_NAME if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{path}: no refiner checkpoint there (expected a file or a run folder with {FILE_NAME})")
    return file


def save(path: Path, state: dict) -> None:
    """Write ``state`` (see ``training_state``) atomically: a kill leaves the previous checkpoint."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load(path: Path, device: str = "cpu") -> dict:
    """A checkpoint's contents, validated; a corrupt file or one of another format is a UserError."""
    file = checkpoint_file(path)
    if file.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise UserError(f"{file}: larger than {MAX_CHECKPOINT_BYTES >> 30} GiB, not a refiner checkpoint")
    try:
        state = torch.load(file, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise UserError(f"{file}: not a readable refiner checkpoint ({_first_line(exc)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{file}: not a SceneForge refiner checkpoint")
    if state.get("version") != VERSION:
        raise UserError(f"{file}: refiner checkpoint version {state.get('version')}, this SceneForge reads version {VERSION}")
    try:
        state["config"] = RefinerConfig.from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{file}: unknown refiner architecture ({exc})") from None
    return state


def load_generator(path: Path, device: str = "cpu") -> tuple[Generator, str]:
    """The refining generator of a checkpoint (eval mode) and the checkpoint file's SHA-256."""
    file = checkpoint_file(path)
    state = load(file, device)
    generator = Generator(state["config"], gbuffer=state["config"].gbuffer)
    _load_weights(generator, state.get("to_real"), file)
    return generator.to(device).eval(), file_sha256(file)


def load_models(models: CycleModels, state: dict, file: Path) -> None:
    """Restore all four networks of a training run, refusing weights of another architecture."""
    for name, module in models.named_children():
        _load_weights(module, state.get(name), file)


def _load_weights(module: torch.nn.Module, weights: dict | None, file: Path) -> None:
    try:
        module.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise UserError(f"{file}: weights do not fit the architecture it names ({_first_line(exc)})") from None


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
