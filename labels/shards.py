"""WebDataset export: tar shards of bounded size, one sample per frame (all views of a rig's frame in it).

Each sample holds the colour images as stored PNGs (``KEY.rgb.png``, and ``KEY.albedo.png``,
``KEY.rgb_clean.png`` when rendered) and every other pass as a NumPy ``.npy`` member of the
store's dtype: ``KEY.depth.npy``, ``KEY.distance.npy``, ``KEY.normals.npy``, ``KEY.instance.npy``,
``KEY.semantic.npy`` (and ``KEY.flow_forward.npy``, ``KEY.flow_backward.npy``,
``KEY.flow_valid.npy`` for sequences, ``KEY.disparity.npy`` in stereo pairs,
``KEY.depth_sensor.npy`` with a depth sensor, ``KEY.depth_behind.npy`` and
``KEY.instance_behind.npy`` with ``render.behind``), plus ``KEY.json``, the frame record. webdataset's
default decoder reads ``.npy`` exactly (uint16 ids above 255, float32 depth with its ``inf``),
where its image decoders turn 16-bit PNGs into 8 bit and it has none for EXR. A sequence's frames
are keyed ``SEQUENCE_FRAME`` (both six digits); their records carry ``sequence``. ``dataset.json`` beside the
shards carries the categories. A rig's frame is one sample whose members carry the camera's name
after the key (``KEY.left.rgb.png``, ``KEY.left.json``, ``KEY.right.rgb.png``, ...), so a
frame's views always travel together. Shards are plain tar files written with the standard library:
the ``webdataset`` package reads them, but importing its writer would import torch.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np

from sceneforge.floor.files import atomic_write
from sceneforge.floor.frame import STORED_PASSES

from .store import DatasetStore, frame_name, frames_of, view_name

_TAR_OVERHEAD = 1024  # a member's header and padding, at most


def write(store: DatasetStore, groups: dict[str | None, list[dict]], dest: Path, rgb_pass: str,
          shard_bytes: int = 1 << 30) -> None:
    """Write ``shard-000000.tar``, ... per split; a shard passes ``shard_bytes`` only to hold one sample."""
    for split, records in groups.items():
        folder = dest / split if split else dest
        folder.mkdir(parents=True, exist_ok=True)
        shard, size, count = None, 0, 0
        try:
            for views in frames_of(records):
                members = [member for record in views for member in _sample(store, record, rgb_pass)]
                sample_bytes = sum(len(data) + _TAR_OVERHEAD for _, data in members)
                if shard is None or (size and size + sample_bytes > shard_bytes):
                    if shard is not None:
                        shard.close()
                    shard = tarfile.open(folder / f"shard-{count:06d}.tar", "w")
                    size, count = 0, count + 1
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    shard.addfile(info, io.BytesIO(data))
                size += sample_bytes
        finally:
            if shard is not None:
                shard.close()
    text = json.dumps(store.meta, indent=2, allow_nan=False)
    atomic_write(dest / "dataset.json", lambda tmp: tmp.write_text(text))


def _sample(store: DatasetStore, record: dict, rgb_pass: str) -> list[tuple[str, bytes]]:
    sequence = record.get("sequence")
    # A sequence's frame: SEQUENCE_FRAME, so that its frames sort together and in time order.
    key = frame_name(record["index"]) if sequence is None else f"{sequence['scene_index']:06d}_{sequence['frame']:06d}"
    if view_name(record):
        key = f"{key}.{view_name(record)}"
    public = {k: v for k, v in record.items() if k != "files"}
    members = [(f"{key}.rgb.png", store.path(record, rgb_pass).read_bytes())]
    for name in record["files"]:
        if name in ("scene", "usd", "rgb", "rgb_refined"):  # training samples, not scene descriptions
            continue
        if STORED_PASSES[name].channels == "RGB":
            members.append((f"{key}.{name}.png", store.path(record, name).read_bytes()))
        else:
            members.append((f"{key}.{name}.npy", _npy(store.read_pass(record, name))))
    members.append((f"{key}.json", json.dumps(public, allow_nan=False).encode()))
    return members


def _npy(array: np.ndarray) -> bytes:
    """The array as a ``.npy`` file (no pickles), which webdataset's default decoder loads exactly."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
