"""sRGB encoding (IEC 61966-2-1), the one transfer curve SceneForge uses everywhere."""

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
