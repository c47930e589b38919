"""What a surface lets through: an asset material's alpha and transmission with a spec's changes.

One definition shared by the renderer (which wires it and decides what the "behind" pass leaves
out) and anyone else reading a scene's materials (docs/formats.md, "Glass and cut-outs").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .assets import AssetMaterial
from .spec import MaterialSpec


@dataclass(frozen=True)
class SeeThrough:
    """The transparency of one drawn material (the asset's values, replaced by the spec's)."""

    alpha: float
    alpha_mode: Literal["OPAQUE", "MASK", "BLEND"]
    alpha_cutoff: float
    transmission: float
    ior: float

    @property
    def hides_behind(self) -> bool:
        """False for glass (transmission > 0) and blended (partly transparent) surfaces: the
        optional behind pass looks through them. MASK surfaces are opaque where they are drawn."""
        return self.transmission == 0 and self.alpha_mode != "BLEND"


def see_through(own: AssetMaterial, override: MaterialSpec) -> SeeThrough:
    """``own``'s transparency with ``override``'s changes (None keeps the asset's value)."""

    def pick(name: str):
        value = getattr(override, name)
        return getattr(own, name) if value is None else value

    return SeeThrough(*(pick(name) for name in ("alpha", "alpha_mode", "alpha_cutoff", "transmission", "ior")))
