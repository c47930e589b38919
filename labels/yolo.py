"""YOLO export in the Ultralytics layout: ``images/SPLIT/``, ``labels/SPLIT/`` and ``data.yaml``
(also written as ``dataset.yaml``, the name FiftyOne's YOLOv5 importer looks for).

``task="detect"`` writes ``class cx cy w h``; ``task="segment"`` writes ``class x1 y1 x2 y2 ...``
(one outline per object through boundary pixel centres, parts and holes joined by zero-width
bridges, at least 3 points: a one-pixel-wide outline repeats its last point); ``task="pose"``
writes ``class cx cy w h px1 py1 v1 ...``, the box and the keypoints.
Coordinates are normalised by the image size, in the boxes' frame where pixel ``x`` covers
``[x, x + 1)``: a keypoint at pixel centre ``u`` is at ``(u + 0.5) / W``. Class = category id - 1.
Without splits, every frame goes to ``train`` and ``data.yaml`` uses it for ``val`` too.

Ultralytics has one ``kpt_shape`` per dataset: K is the largest keypoint count of any category,
and a category with fewer keypoints fills the rest with ``0 0 0`` (not labeled, as is any
keypoint with visibility 0). ``flip_idx`` is the identity: SceneForge's keypoints have no
left/right pairs that a mirrored image would swap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from ruamel.yaml import YAML

from sceneforge.floor.errors import UserError
from sceneforge.floor.files import atomic_write, link_or_copy

from .polygons import joined_polygon, mask_polygons
from .store import DatasetStore

Task = Literal["detect", "segment", "pose"]


def write(store: DatasetStore, groups: dict[str | None, list[dict]], dest: Path, rgb_pass: str,
          task: Task = "detect") -> None:
    """Write images, label files and data.yaml for every split."""
    if task not in ("detect", "segment", "pose"):
        raise UserError(f"--yolo-task: expected detect, segment or pose, got {task!r}")
    slots = max((len(c.get("keypoints", ())) for c in store.meta["categories"]), default=0)
    if task == "pose" and slots == 0:
        raise UserError(f"--yolo-task pose: {store.root} has no keypoints (no category declares any)")
    named = {split or "train": records for split, records in groups.items()}
    for split, records in named.items():
        (dest / "images" / split).mkdir(parents=True)
        (dest / "labels" / split).mkdir(parents=True)
        for record in records:
            source = store.path(record, rgb_pass)
            link_or_copy(source, dest / "images" / split / source.name)
            lines = _label_lines(store, record, task, slots)
            atomic_write(dest / "labels" / split / f"{source.stem}.txt", lambda tmp: tmp.write_text("".join(lines)))
    data = {
        "train": "images/train" if "train" in named else f"images/{next(iter(named))}",
        "val": f"images/{'val' if 'val' in named else next(iter(named))}",
        **({"test": "images/test"} if "test" in named else {}),
        "names": {c["id"] - 1: c["name"] for c in store.meta["categories"]},
        **({"kpt_shape": [slots, 3], "flip_idx": list(range(slots))} if task == "pose" else {}),
    }
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    for name in ("data.yaml", "dataset.yaml"):  # Ultralytics reads data.yaml, FiftyOne's YOLOv5 importer dataset.yaml
        atomic_write(dest / name, lambda tmp: yaml.dump(data, tmp))


def _label_lines(store: DatasetStore, record: dict, task: Task, slots: int) -> list[str]:
    """One line per visible object; ``slots``: the keypoints of a pose line."""
    width, height = record["camera"]["width"], record["camera"]["height"]
    visible = [obj for obj in record["objects"] if obj["visible_pixels"] > 0]
    instance = store.read_instance(record) if task == "segment" and visible else None
    lines = []
    for obj in visible:
        if task in ("detect", "pose"):
            x, y, w, h = obj["bbox_xywh"]
            values = [(x + w / 2) / width, (y + h / 2) / height, w / width, h / height]
            if task == "pose":
                keypoints = obj.get("keypoints", [])
                for u, v, flag in keypoints:
                    values += [(u + 0.5) / width, (v + 0.5) / height, flag] if flag else [0, 0, 0]
                values += [0, 0, 0] * (slots - len(keypoints))
        else:
            polygon = joined_polygon(mask_polygons(instance == obj["instance_id"], "centres"))
            # Ultralytics reads a row of fewer than 3 points as a box row (and a mix as a corrupt file):
            # repeating the last point keeps a one-pixel-wide outline, which it still draws as its pixels.
            polygon = np.concatenate([polygon, polygon[-1:].repeat(max(0, 3 - len(polygon)), axis=0)])
            values = np.clip(polygon / [width, height], 0.0, 1.0).ravel().tolist()
        # Coordinates with 6 decimals; the pose visibility flags (and "0 0 0" of unlabeled keypoints) as integers.
        lines.append(f"{obj['category_id'] - 1} " + " ".join(f"{v:.6f}" if isinstance(v, float) else str(v) for v in values) + "\n")
    return lines
