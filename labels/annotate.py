"""Per-object labels computed from a rendered instance map and the scene that produced it."""

from __future__ import annotations

import numpy as np

from sceneforge.scenes.spec import SceneSpec


def semantic_map(spec: SceneSpec, instance: np.ndarray) -> np.ndarray:
    """uint16 category ids: each instance pixel mapped to its object's category (0 stays 0)."""
    lookup = np.zeros(max((o.instance_id for o in spec.objects), default=0) + 1, dtype=np.uint16)
    for obj in spec.objects:
        lookup[obj.instance_id] = obj.category_id
    return lookup[instance]


def object_records(spec: SceneSpec, instance: np.ndarray) -> list[dict]:
    """One record per object: identity, pose, visible pixel count and tight box of the visible mask.

    ``bbox_xywh`` is ``[x_min, y_min, width, height]`` in whole pixels (COCO's convention: pixel
    ``x`` covers ``[x, x + 1)``), or ``None`` when no pixel of the object is visible.
    """
    size = max((o.instance_id for o in spec.objects), default=0) + 1
    ys, xs = np.nonzero(instance)
    ids = instance[ys, xs].astype(np.intp)
    keep = ids < size  # ids the spec does not know are ignored rather than crashing the writer
    ys, xs, ids = ys[keep], xs[keep], ids[keep]
    counts = np.bincount(ids, minlength=size)
    lo_x, lo_y = np.full(size, instance.shape[1]), np.full(size, instance.shape[0])
    hi_x, hi_y = np.full(size, -1), np.full(size, -1)
    np.minimum.at(lo_x, ids, xs)
    np.minimum.at(lo_y, ids, ys)
    np.maximum.at(hi_x, ids, xs)
    np.maximum.at(hi_y, ids, ys)
    records = []
    for obj in spec.objects:
        i = obj.instance_id
        visible = int(counts[i])
        bbox = None if visible == 0 else [int(lo_x[i]), int(lo_y[i]), int(hi_x[i] - lo_x[i] + 1), int(hi_y[i] - lo_y[i] + 1)]
        records.append({
            "instance_id": i,
            "category_id": obj.category_id,
            "category": obj.category,
            "asset": obj.asset.hash,
            "world_from_object": obj.world_from_object,
            "bbox_xywh": bbox,
            "visible_pixels": visible,
        })
    return records
