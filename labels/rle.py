"""Binary masks as COCO's compressed RLE in JSON form: ``{"size": [h, w], "counts": "..."}``.

The one conversion between pixel masks and the RLE that frame records (``amodal_mask``) and the
COCO export keep; pycocotools reads it (``pycocotools.mask.decode``).
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode_masks(masks: np.ndarray) -> list[dict]:
    """One RLE per mask of an N x H x W stack (any dtype; non-zero = in the mask)."""
    masks = np.asarray(masks)
    if len(masks) == 0:
        return []
    stacked = np.asfortranarray(np.moveaxis(masks != 0, 0, -1).astype(np.uint8))
    return [{"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
            for rle in mask_utils.encode(stacked)]


def decode_mask(rle: dict) -> np.ndarray:
    """The H x W bool mask of one RLE."""
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def rle_area(rle: dict) -> int:
    """The mask's pixel count."""
    return int(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))


def rle_bbox(rle: dict) -> list[float]:
    """Tight box ``[x_min, y_min, width, height]`` of the mask in whole pixels (zeros when empty)."""
    return [float(v) for v in mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode("ascii")})]
