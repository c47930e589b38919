"""COCO instances export (one folder per split: ``annotations.json`` and ``images/``).

Non-crowd objects (``iscrowd: 0``) get polygons by default (``masks="polygon"``): outlines along
pixel edges, holes bridged in, which pycocotools rasterises back to exactly the same pixels.
That is the encoding both Detectron2 (default ``INPUT.MASK_FORMAT: polygon``) and MMDetection
(either ``poly2mask`` setting) read for non-crowd objects. ``masks="rle"`` writes pycocotools'
compressed RLE instead (Detectron2 then needs ``INPUT.MASK_FORMAT: bitmask``).

Each view is one image: a rig's views are ``NNNNNN_CAMERA.png`` with image id
``index * cameras + camera position`` (``DatasetStore.image_id``) and ``frame`` and ``camera``
fields; a single camera's image id is the frame index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pycocotools import mask as mask_utils

from sceneforge.floor.errors import UserError
from sceneforge.floor.files import atomic_write, link_or_copy

from .polygons import mask_polygons
from .store import DatasetStore, view_name

MaskEncoding = Literal["rle", "polygon"]


def write(store: DatasetStore, groups: dict[str | None, list[dict]], dest: Path, rgb_pass: str,
          masks: MaskEncoding = "polygon") -> None:
    """Write one COCO folder per split (``dest`` itself when there are no splits)."""
    if masks not in ("rle", "polygon"):
        raise UserError(f"--coco-masks: expected rle or polygon, got {masks!r}")
    for split, records in groups.items():
        folder = dest / split if split else dest
        (folder / "images").mkdir(parents=True)
        _write_split(store, records, folder, rgb_pass, masks)


def _write_split(store: DatasetStore, records: list[dict], folder: Path, rgb_pass: str, masks: MaskEncoding) -> None:
    images, annotations = [], []
    for record in records:
        name = Path(record["files"][rgb_pass]).name
        link_or_copy(store.path(record, rgb_pass), folder / "images" / name)
        height, width = record["camera"]["height"], record["camera"]["width"]
        image_id, camera = store.image_id(record), view_name(record)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height,
                       **({"frame": record["index"], "camera": camera} if camera else {})})
        visible = [obj for obj in record["objects"] if obj["visible_pixels"] > 0]
        if not visible:
            continue
        instance = store.read_instance(record)
        stacked = np.asfortranarray(np.stack([instance == o["instance_id"] for o in visible], axis=-1).astype(np.uint8))
        for obj, rle in zip(visible, mask_utils.encode(stacked)):
            if masks == "rle":
                segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            else:
                outlines = mask_polygons(instance == obj["instance_id"], "edges")
                segmentation = [[round(float(v), 2) for v in p.ravel()] for p in outlines]
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": obj["category_id"],
                "segmentation": segmentation,
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in obj["bbox_xywh"]],
                "iscrowd": 0,
                "instance_id": obj["instance_id"],
                "visible_pixels": obj["visible_pixels"],
                "visibility": obj["visibility"],
                "truncation": obj["truncation"],
                "depth_range": obj["depth_range"],
            })
    document = {
        "info": {"description": "SceneForge synthetic dataset", "recipe_hash": store.meta["recipe_hash"]},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c["id"], "name": c["name"], "supercategory": "object"} for c in store.meta["categories"]],
    }
    text = json.dumps(document, allow_nan=False)
    atomic_write(folder / "annotations.json", lambda tmp: tmp.write_text(text))
