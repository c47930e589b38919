"""sRGB encoding (IEC 61966-2-1), the one transfer curve SceneForge uses everywhere, and the
measures of an 8-bit image's exposure."""

from __future__ import annotations

import numpy as np


def srgb_to_linear(srgb: np.ndarray | float) -> np.ndarray:
    """Linear values of sRGB-encoded values in [0, 1] (float64, same shape)."""
    x = np.asarray(srgb, dtype=np.float64)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb8(linear: np.ndarray) -> np.ndarray:
    """8-bit sRGB of linear values, clipped to [0, 1] (Blender's "Standard" view transform)."""
    x = np.clip(linear, 0.0, 1.0)
    srgb = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.rint(srgb * 255.0).astype(np.uint8)


# Rec. 709 luma weights.
_LUMA = np.array([0.2126, 0.7152, 0.0722])


def clipped_fraction(rgb8: np.ndarray) -> float:
    """Share of pixels with at least one channel at 255 in an 8-bit image (H x W x 3)."""
    return float(np.any(np.asarray(rgb8) == 255, axis=-1).mean())


def mean_luminance(rgb8: np.ndarray) -> float:
    """Mean Rec. 709 luminance of an 8-bit image's display values, in [0, 1]."""
    return float((np.asarray(rgb8, dtype=np.float64) @ _LUMA).mean() / 255.0)
