"""Mask outlines as polygons, for formats that store outlines instead of pixel masks.

Coordinates are continuous image coordinates (pixel ``x`` covers ``[x, x + 1)``). Which outline
re-rasterises to the same pixels depends on the reader's fill rule, so there are two:

- ``"edges"`` follows the pixels' outer edges: right for pycocotools (COCO), which fills the
  pixels whose centres lie inside.
- ``"centres"`` passes through the boundary pixels' centres: right for Ultralytics (YOLO), which
  fills with cv2.fillPoly on integer vertices, boundary pixels included.

Holes are kept by joining each hole to its outer outline with a zero-width bridge, which
even-odd and non-zero fill rules both cut out.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

Outline = Literal["edges", "centres"]


def mask_polygons(mask: np.ndarray, outline: Outline) -> list[np.ndarray]:
    """One polygon (N x 2 float) per connected component of ``mask``, its holes bridged in."""
    # Traced within the mask's bounding box (a zero border around it): an object's box is a small
    # part of the frame, and the edge lattice below has four times the box's pixels.
    mask = mask.astype(np.uint8)
    x, y, width, height = cv2.boundingRect(mask)
    if width == 0:
        return []
    mask = cv2.copyMakeBorder(mask[y:y + height, x:x + width], 1, 1, 1, 1, cv2.BORDER_CONSTANT)
    if outline == "edges":
        # A lattice of pixel corners and centres: pixel (x, y) fills cells 2x..2x+2, 2y..2y+2,
        # so the traced boundary runs along pixel edges at half the lattice coordinates.
        lattice = np.zeros((2 * mask.shape[0] + 1, 2 * mask.shape[1] + 1), np.uint8)
        lattice[1::2, 1::2] = mask
        mask, scale, offset = cv2.dilate(lattice, np.ones((3, 3), np.uint8)), 0.5, 0.0
    else:
        scale, offset = 1.0, 0.5
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    links = hierarchy[0]  # [next, previous, first child, parent] per contour
    polygons = []
    for index, contour in enumerate(contours):
        if links[index][3] >= 0:
            continue  # a hole: bridged into its outer outline below
        polygon = contour.reshape(-1, 2)
        child = links[index][2]
        while child >= 0:
            polygon = _bridge(polygon, contours[child].reshape(-1, 2))
            child = links[child][0]
        polygons.append(polygon.astype(np.float64) * scale + offset + (x - 1, y - 1))  # the box's border back out
    return polygons


def joined_polygon(polygons: list[np.ndarray]) -> np.ndarray:
    """All polygons as one, joined by zero-width bridges (for formats with one outline per object)."""
    joined = polygons[0]
    for polygon in polygons[1:]:
        joined = _bridge(joined, polygon)
    return joined


def _bridge(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer`` walked to its point nearest ``inner``, around ``inner``, and back."""
    distances = np.linalg.norm(outer[:, None, :].astype(float) - inner[None, :, :], axis=-1)
    i, j = np.unravel_index(np.argmin(distances), distances.shape)
    return np.concatenate([outer[: i + 1], inner[j:], inner[: j + 1], outer[i:]])
