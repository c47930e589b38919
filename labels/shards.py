"""WebDataset export: tar shards of bounded size, one sample per frame.

Each sample holds the store's files as they are (``KEY.rgb.png``, ``KEY.depth.exr``,
``KEY.distance.exr``, ``KEY.normals.exr``, ``KEY.instance.png``, ``KEY.semantic.png``, and
``KEY.albedo.png`` when rendered) plus ``KEY.json``, the frame record. ``dataset.json`` beside the
shards carries the categories.
"""

from __future__ import annotations

import json
from pathlib import Path

import webdataset

from .store import DatasetStore, atomic_write

MAX_SAMPLES_PER_SHARD = 100_000


def write(store: DatasetStore, groups: dict[str | None, list[dict]], dest: Path, rgb_pass: str,
          shard_bytes: int = 1 << 30) -> None:
    """Write ``shard-000000.tar``, ... per split, each at most ``shard_bytes`` (one sample may exceed it)."""
    for split, records in groups.items():
        folder = dest / split if split else dest
        folder.mkdir(parents=True, exist_ok=True)
        with webdataset.ShardWriter(str(folder / "shard-%06d.tar"), maxsize=shard_bytes,
                                    maxcount=MAX_SAMPLES_PER_SHARD, verbose=0) as sink:
            for record in records:
                sample = {"__key__": Path(record["files"]["rgb"]).stem, "json": json.dumps(_public(record)).encode()}
                for name, relative in record["files"].items():
                    if name in ("scene", "rgb", "rgb_refined"):
                        continue
                    sample[f"{name}{Path(relative).suffix}"] = store.path(record, name).read_bytes()
                sample["rgb.png"] = store.path(record, rgb_pass).read_bytes()
                sink.write(sample)
    text = json.dumps(store.meta, indent=2)
    atomic_write(dest / "dataset.json", lambda tmp: tmp.write_text(text))


def _public(record: dict) -> dict:
    return {key: value for key, value in record.items() if key != "files"}
