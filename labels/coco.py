"""COCO instances export: one folder per split (``annotations.json`` and ``images/``), or with
``layout="standard"`` the tree datumaro detects, ``annotations/instances_SPLIT.json`` and
``images/SPLIT/``.

Non-crowd objects (``iscrowd: 0``) get polygons by default (``masks="polygon"``): outlines along
pixel edges, holes bridged in, which pycocotools rasterises back to exactly the same pixels.
That is the encoding both Detectron2 (default ``INPUT.MASK_FORMAT: polygon``) and MMDetection
(either ``poly2mask`` setting) read for non-crowd objects. ``masks="rle"`` writes pycocotools'
compressed RLE instead (Detectron2 then needs ``INPUT.MASK_FORMAT: bitmask``).

Each view is one image: a rig's views are ``NNNNNN_CAMERA.png`` with image id
``index * cameras + camera position`` (``DatasetStore.image_id``) and ``frame`` and ``camera``
fields; a single camera's image id is the frame index.

SceneForge's own per-object values sit in each annotation twice, never under names that readers
reserve (FiftyOne's labels have ``id`` and ``instance_id`` of their own): a ``sceneforge`` dict
(the record's ``instance_id``, ``visible_pixels``, ``visibility``, ``truncation``,
``depth_range``) and flat scalars in ``attributes``, where CVAT and datumaro read extras
(FiftyOne merges ``attributes`` into each label).

Each annotation also carries the object's amodal mask (its whole silhouette, hidden parts
included) in the extra fields of KINS' 2020 annotations: ``a_segm`` (in the same encoding as
``segmentation``), ``a_bbox`` and ``a_area``.
Keypoints (categories that have them): ``keypoints`` ``[x1, y1, v1, ...]`` and ``num_keypoints``
(those with v > 0), categories with ``keypoints`` (names) and ``skeleton`` (1-based index pairs).
COCO's keypoints are pixel indices, ``[0, W - 1]`` with a pixel's centre at its integer (readers
such as Detectron2 add 0.5 to put them in the boxes' frame, where pixel ``x`` covers
``[x, x + 1)``), which is SceneForge's own convention: x = u, y = v, unshifted. A keypoint with
v = 0 is written 0, 0, 0, as COCO writes unlabeled keypoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

from sceneforge.floor.errors import UserError
from sceneforge.floor.files import atomic_write, link_or_copy

from .polygons import mask_polygons
from .rle import decode_mask, encode_masks, rle_area, rle_bbox
from .store import DatasetStore, view_name

MaskEncoding = Literal["rle", "polygon"]
Layout = Literal["sceneforge", "standard"]


def write(store: DatasetStore, groups: dict[str | None, list[dict]], dest: Path, rgb_pass: str,
          masks: MaskEncoding = "polygon", layout: Layout = "sceneforge") -> None:
    """Write every split: ``dest/SPLIT/annotations.json`` and ``dest/SPLIT/images/`` (``dest``
    itself without splits), or with ``layout="standard"`` ``dest/annotations/instances_SPLIT.json``
    and ``dest/images/SPLIT/`` (SPLIT ``train`` without splits)."""
    if masks not in ("rle", "polygon"):
        raise UserError(f"--coco-masks: expected rle or polygon, got {masks!r}")
    if layout not in ("sceneforge", "standard"):
        raise UserError(f"--layout: expected sceneforge or standard, got {layout!r}")
    for split, records in groups.items():
        if layout == "standard":
            name = split or "train"
            images, document = dest / "images" / name, dest / "annotations" / f"instances_{name}.json"
        else:
            folder = dest / split if split else dest
            images, document = folder / "images", folder / "annotations.json"
        images.mkdir(parents=True)
        document.parent.mkdir(exist_ok=True)
        _write_split(store, records, images, document, rgb_pass, masks)


def _write_split(store: DatasetStore, records: list[dict], image_folder: Path, document_path: Path, rgb_pass: str,
                 masks: MaskEncoding) -> None:
    images, annotations = [], []
    for record in records:
        name = Path(record["files"][rgb_pass]).name
        link_or_copy(store.path(record, rgb_pass), image_folder / name)
        height, width = record["camera"]["height"], record["camera"]["width"]
        image_id, camera = store.image_id(record), view_name(record)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height,
                       **({"frame": record["index"], "camera": camera} if camera else {})})
        visible = [obj for obj in record["objects"] if obj["visible_pixels"] > 0]
        if not visible:
            continue
        instance = store.read_instance(record)
        for obj, rle in zip(visible, encode_masks(np.stack([instance == o["instance_id"] for o in visible]))):
            amodal = obj.get("amodal_mask")  # stores written before amodal masks have none
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": obj["category_id"],
                "segmentation": rle if masks == "rle" else _polygons(instance == obj["instance_id"]),
                "area": float(rle_area(rle)),
                "bbox": [float(v) for v in obj["bbox_xywh"]],
                "iscrowd": 0,
                **_extras(obj),
                **({} if amodal is None else {
                    "a_segm": amodal if masks == "rle" else _polygons(decode_mask(amodal)),
                    "a_bbox": rle_bbox(amodal),
                    "a_area": float(rle_area(amodal)),
                }),
                **(_keypoints(obj["keypoints"]) if obj.get("keypoints") else {}),
            })
    document = {
        "info": {"description": "SceneForge synthetic dataset", "recipe_hash": store.meta["recipe_hash"]},
        "images": images,
        "annotations": annotations,
        "categories": [_category(c) for c in store.meta["categories"]],
    }
    text = json.dumps(document, allow_nan=False)
    atomic_write(document_path, lambda tmp: tmp.write_text(text))


def _extras(obj: dict) -> dict:
    """SceneForge's values of a visible object: the ``sceneforge`` dict and flat ``attributes``."""
    near, far = obj["depth_range"]
    return {
        "sceneforge": {key: obj[key] for key in
                       ("instance_id", "visible_pixels", "visibility", "truncation", "depth_range")},
        "attributes": {"sceneforge_instance_id": obj["instance_id"], "visible_pixels": obj["visible_pixels"],
                       "visibility": obj["visibility"], "truncation": obj["truncation"],
                       "depth_min": near, "depth_max": far},
    }


def _polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons of a mask, along its pixel edges (pycocotools fills them back exactly)."""
    return [np.round(p.ravel(), 2).tolist() for p in mask_polygons(mask, "edges")]


def _category(category: dict) -> dict:
    """A COCO category; with keypoints, their names and the skeleton's 1-based index pairs."""
    coco = {"id": category["id"], "name": category["name"], "supercategory": "object"}
    if category.get("keypoints"):
        coco["keypoints"] = category["keypoints"]
        coco["skeleton"] = [[a + 1, b + 1] for a, b in category["skeleton"]]
    return coco


def _keypoints(keypoints: list[list[float]]) -> dict:
    """COCO's flat ``keypoints`` (pixel indices, 0, 0, 0 where v = 0) and ``num_keypoints``."""
    flat = []
    for u, v, flag in keypoints:
        flat += [round(u, 3), round(v, 3), flag] if flag else [0, 0, 0]
    return {"keypoints": flat, "num_keypoints": sum(1 for *_, flag in keypoints if flag)}
