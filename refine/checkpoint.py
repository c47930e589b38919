"""Refiner checkpoints: safetensors files, so loading one never runs code (no pickle at all).

A checkpoint holds the architecture (``RefinerConfig``), the training options it was made with,
the step, and the state of every network, optimiser and image pool. Tensors are stored under
their path in the state (``to_real/body.1.weight``, ``optimise_g/state/3/exp_avg``); everything
else goes, as JSON, into the file's metadata with ``format`` and ``version``. Files are written
atomically and checked on loading against the architecture they claim.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from sceneforge.floor.errors import UserError
from sceneforge.floor.files import atomic_write

from .model import CycleModels, Generator, RefinerConfig

FORMAT = "sceneforge.refiner"
VERSION = 1
FILE_NAME = "checkpoint.safetensors"
MAX_CHECKPOINT_BYTES = 4 << 30
MAX_METADATA_BYTES = 16 << 20


def checkpoint_file(path: Path) -> Path:
    """A checkpoint file, or the latest one of a training run folder."""
    file = path / FILE_NAME if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{path}: no refiner checkpoint there (expected a file or a run folder with {FILE_NAME})")
    return file


def save(path: Path, state: dict) -> None:
    """Write ``state`` (see ``train.training_state``) atomically: a kill leaves the previous checkpoint."""
    tensors: dict[str, torch.Tensor] = {}
    plain = _split(state, "", tensors)
    metadata = {"format": FORMAT, "version": str(VERSION), "state": json.dumps(plain)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load(path: Path, device: str = "cpu") -> dict:
    """A checkpoint's contents, validated; a corrupt file or one of another format is a UserError."""
    file = checkpoint_file(path)
    if file.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise UserError(f"{file}: larger than {MAX_CHECKPOINT_BYTES >> 30} GiB, not a refiner checkpoint")
    try:
        with safe_open(str(file), framework="pt", device=device) as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise UserError(f"{file}: not a SceneForge refiner checkpoint")
            if metadata.get("version") != str(VERSION):
                raise UserError(f"{file}: refiner checkpoint version {metadata.get('version')}, "
                                f"this SceneForge reads version {VERSION}")
            if len(metadata.get("state", "")) > MAX_METADATA_BYTES:
                raise UserError(f"{file}: metadata larger than {MAX_METADATA_BYTES >> 20} MB")
            tensors = {key: f.get_tensor(key) for key in f.keys()}
        state = _join(json.loads(metadata["state"]), tensors)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{file}: not a readable refiner checkpoint ({_first_line(exc)})") from None
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


def _split(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON, each tensor replaced by ``{"tensor": path}`` and put in ``tensors``."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value
        return {"tensor": path}
    if isinstance(value, dict):
        return {"dict": [[key, _split(item, f"{path}/{key}" if path else str(key), tensors)] for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"list": [_split(item, f"{path}/{i}", tensors) for i, item in enumerate(value)]}
    return {"value": value}


def _join(plain: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of ``_split`` (dict keys keep their JSON type: optimiser states use int keys)."""
    (kind, content), = plain.items()
    if kind == "tensor":
        return tensors[content]
    if kind == "dict":
        return {key: _join(item, tensors) for key, item in content}
    if kind == "list":
        return [_join(item, tensors) for item in content]
    if kind == "value":
        return content
    raise ValueError(f"unknown entry {kind!r}")


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
