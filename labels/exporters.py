"""Exporters: read a dataset store, write the formats training code reads.

COCO: instance masks are RLE (pycocotools, ``iscrowd: 0``), which pycocotools, Detectron2 and
MMDetection decode for non-crowd objects; images are hard-linked (or copied) into ``images/``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from sceneforge.errors import UserError

from .store import DatasetStore, atomic_write

FORMATS = ("coco",)


def export(store: DatasetStore, fmt: str, dest: Path, overwrite: bool = False) -> Path:
    """Export ``store`` as ``fmt`` into ``dest``; the folder appears complete or not at all."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    records = store.records()
    if not records:
        raise UserError(f"{store.root}: the store has no finished frames to export")
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not overwrite:
        raise UserError(f"{dest}: exists and is not empty; pass --overwrite to replace it")
    staging = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _write_coco(store, records, staging)
        _replace_dir(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _write_coco(store: DatasetStore, records: list[dict], dest: Path) -> None:
    (dest / "images").mkdir()
    images, annotations = [], []
    for record in records:
        name = Path(record["files"]["rgb"]).name
        _link_or_copy(store.path(record, "rgb"), dest / "images" / name)
        images.append({"id": record["index"], "file_name": name,
                       "width": record["camera"]["width"], "height": record["camera"]["height"]})
        visible = [obj for obj in record["objects"] if obj["visible_pixels"] > 0]
        if not visible:
            continue
        instance = store.read_instance(record)
        masks = np.asfortranarray(np.stack([instance == obj["instance_id"] for obj in visible], axis=-1).astype(np.uint8))
        for obj, rle in zip(visible, mask_utils.encode(masks)):
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": record["index"],
                "category_id": obj["category_id"],
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in obj["bbox_xywh"]],
                "iscrowd": 0,
                "instance_id": obj["instance_id"],
                "visible_pixels": obj["visible_pixels"],
            })
    coco = {
        "info": {"description": "SceneForge synthetic dataset", "recipe_hash": store.meta["recipe_hash"]},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c["id"], "name": c["name"], "supercategory": "object"} for c in store.meta["categories"]],
    }
    text = json.dumps(coco)
    atomic_write(dest / "annotations.json", lambda tmp: tmp.write_text(text))


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _replace_dir(staging: Path, dest: Path) -> None:
    if dest.exists():
        old = dest.with_name(f".{dest.name}.{os.getpid()}.old")
        os.replace(dest, old)
        os.replace(staging, dest)
        shutil.rmtree(old)
    else:
        os.replace(staging, dest)
