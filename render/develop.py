"""Develop a linear render into the 8-bit image: exposure (fixed or automatic), then a view transform.

Three steps, each one call, so that a sensor model can go between exposure and the view
transform: ``view_transform(sensor(expose(linear, ev)), name)``.

- ``expose``: linear values times ``2 ** ev``.
- ``view_transform``: "standard" is the sRGB curve with values above 1 clipped (Blender's Standard
  view, ``floor.colour.linear_to_srgb8``); "filmic" and "agx" are Blender's own Filmic and AgX
  views, applied with OpenColorIO from the OCIO config that ships inside bpy, so they equal what
  Blender writes for the same linear values (tests/test_exposure.py).
- ``choose_ev``: the auto-exposure, from the linear image alone (no randomness): bisection on EV
  of the developed image's clipped-pixel fraction or mean luminance, both growing with EV.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from sceneforge.floor.colour import linear_to_srgb8, mean_luminance
from sceneforge.scenes.spec import ExposureSpec

# Blender's names of the views in its OCIO config (display "sRGB").
_OCIO_VIEWS = {"filmic": "Filmic", "agx": "AgX"}
# Auto-exposure stops refining the EV below this step (stops): far below one 8-bit level's worth.
_EV_PRECISION = 1 / 256
# The mean-luminance target meters a regular subset of this many pixels of a larger image (its
# mean differs from the whole image's by far less than the 8-bit rounding of a smooth image).
_METERED_PIXELS = 1 << 16


def develop(linear_rgb: np.ndarray, exposure: ExposureSpec) -> tuple[np.ndarray, float]:
    """The 8-bit image (H x W x 3 uint8) of a linear render (H x W x 3), and the EV it used."""
    ev = choose_ev(linear_rgb, exposure)
    return view_transform(expose(linear_rgb, ev), exposure.view_transform), ev


def expose(linear_rgb: np.ndarray, ev: float) -> np.ndarray:
    """Linear values scaled by ``2 ** ev`` (float32)."""
    return np.asarray(linear_rgb, dtype=np.float32) * np.float32(2.0 ** ev)


def view_transform(linear_rgb: np.ndarray, name: str) -> np.ndarray:
    """8-bit display values (sRGB display) of exposed linear Rec. 709 values through Blender's view ``name``."""
    if name == "standard":
        return linear_to_srgb8(linear_rgb)
    pixels = np.ascontiguousarray(linear_rgb, dtype=np.float32).copy()
    _ocio_processor(name).applyRGB(pixels)
    return np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)


def choose_ev(linear_rgb: np.ndarray, exposure: ExposureSpec) -> float:
    """The EV to develop ``linear_rgb`` with: ``exposure.ev``, or the auto-exposure's choice.

    ``auto="clipped"``: the largest EV in [min_ev, max_ev] (to 1/256 stop) whose image has a
    clipped fraction <= target (min_ev when none has). ``auto="mean"``: the EV (to 1/256 stop)
    whose image's mean luminance is closest to target (min_ev or max_ev when out of their reach).
    """
    if exposure.auto is None:
        return exposure.ev
    if exposure.auto == "clipped":
        return _clipped_ev(np.asarray(linear_rgb, dtype=np.float32).reshape(-1, 3), exposure)
    return _mean_ev(linear_rgb, exposure)


def _clips(pixels: np.ndarray, ev: float, view: str) -> np.ndarray:
    """Which of ``pixels`` (N x 3 linear) have a channel at 255 once developed at ``ev``."""
    return np.any(view_transform(expose(pixels[None], ev), view)[0] == 255, axis=-1)


def _clipped_ev(pixels: np.ndarray, exposure: ExposureSpec) -> float:
    """Bisection on EV of the clipped-pixel count. A pixel that clips at some EV clips at every
    larger one, so each step develops only the pixels still undecided (clipping at the upper end
    of the bracket but not at its lower end)."""
    allowed = int(np.floor(exposure.target * len(pixels)))  # clipped pixels the target allows
    low, high, view = exposure.min_ev, exposure.max_ev, exposure.view_transform
    at_high = _clips(pixels, high, view)
    if at_high.sum() <= allowed:  # the common case: no darkening needed
        return high
    at_low = _clips(pixels, low, view)
    if at_low.sum() > allowed:
        return low
    clipped_below = int(at_low.sum())  # pixels clipping at low clip at every EV in the bracket
    undecided = pixels[at_high & ~at_low]
    while high - low > _EV_PRECISION:  # invariant: low meets the target, high does not
        middle = (low + high) / 2
        at_middle = _clips(undecided, middle, view)
        if clipped_below + int(at_middle.sum()) > allowed:
            high, undecided = middle, undecided[at_middle]
        else:
            low, undecided, clipped_below = middle, undecided[~at_middle], clipped_below + int(at_middle.sum())
    return low


def _mean_ev(linear_rgb: np.ndarray, exposure: ExposureSpec) -> float:
    """Bisection on EV of the mean luminance (which grows with EV), metered on every ``stride``-th
    pixel of every ``stride``-th row of a large image (at most about _METERED_PIXELS pixels)."""
    stride = max(1, int(np.ceil(np.sqrt(linear_rgb.shape[0] * linear_rgb.shape[1] / _METERED_PIXELS))))
    metered = linear_rgb[::stride, ::stride]

    def mean_at(ev: float) -> float:
        return mean_luminance(view_transform(expose(metered, ev), exposure.view_transform))

    low, high, target = exposure.min_ev, exposure.max_ev, exposure.target
    if mean_at(low) >= target:
        return low
    if mean_at(high) <= target:
        return high
    while high - low > _EV_PRECISION:  # invariant: mean_at(low) < target < mean_at(high)
        middle = (low + high) / 2
        low, high = (low, middle) if mean_at(middle) >= target else (middle, high)
    return low if target - mean_at(low) <= mean_at(high) - target else high


def ocio_config_path() -> Path:
    """The OpenColorIO config that ships inside bpy (found without importing bpy)."""
    found = importlib.util.find_spec("bpy")
    locations = [] if found is None or found.submodule_search_locations is None else found.submodule_search_locations
    for location in locations:
        for config in sorted(Path(location).glob("*/datafiles/colormanagement/config.ocio")):
            return config
    raise RuntimeError("bpy's OpenColorIO config (bpy/*/datafiles/colormanagement/config.ocio) was not found")


@lru_cache(maxsize=None)
def _ocio_processor(name: str):
    """The CPU processor of Blender's view ``name`` from scene-linear to the sRGB display."""
    import PyOpenColorIO as ocio  # only the Filmic and AgX views need it

    config = ocio.Config.CreateFromFile(str(ocio_config_path()))
    processor = config.getProcessor(ocio.ROLE_SCENE_LINEAR, "sRGB", _OCIO_VIEWS[name], ocio.TRANSFORM_DIR_FORWARD)
    return processor.getDefaultCPUProcessor()
