"""The up axis of mesh assets: which of a file's axes is loaded as +Z, and a warning when an
asset placed upright would lie on its side because that axis looks wrong.

Loading a file "Y up" turns its (x, y, z) into (x, -z, y); "Z up" keeps them. The two choices
therefore swap the loaded asset's y and z sizes. An asset whose longest side lies along the
loaded y, clearly longer than its height (ELONGATED times), would stand on that side with the
other choice: a bottle exported Z up but read as glTF's Y up lies down. Long flat things (a car,
a pen) look the same, so this is a warning, never an error. USD files name their own upAxis, which
is taken as right unless the recipe declares another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .assets import USD_SUFFIXES
from .recipe import Arrange, LibraryAsset, Recipe

ELONGATED = 1.5  # the longest side at least this many times the height: the asset clearly lies


@dataclass(frozen=True)
class AxisNote:
    """How one asset file of ``assets[entry]`` is loaded, and a warning when it would lie down."""

    entry: int
    path: str
    up_axis: str  # "Y" or "Z": the file's axis loaded as +Z
    source: str  # declared (assets[].up_axis), USD upAxis, or the default for other formats
    warning: str | None


def up_axis_notes(recipe: Recipe, drawn: set[str] | None = None) -> list[AxisNote]:
    """One note per asset file of a loaded recipe (variants of a file share it), in library order;
    only the files whose paths are in ``drawn`` when it is given (a library is parsed lazily: the
    files a scene drew are the ones already read)."""
    upright = {group.asset.library for group in recipe.objects if isinstance(group.asset, LibraryAsset)
               and (isinstance(group.arrange, Arrange) or recipe.placement.rotation != "so3")}
    notes: dict[tuple[int, str], AxisNote] = {}
    for i, entry in enumerate(recipe.assets):
        for file in (file for _, files in entry._options for file in files):
            if (i, file.path) in notes or (drawn is not None and file.path not in drawn):
                continue
            ref, model = file.model()
            usd = Path(ref.path).suffix.lower() in USD_SUFFIXES
            source = "declared" if ref.up_axis is not None else "USD upAxis" if usd else "the default, glTF's +Y up"
            x, y, z = (float(e) for e in model.mesh.extents)
            warning = None
            if file.category in upright and (ref.up_axis is not None or not usd) and y >= x and y >= ELONGATED * z:
                other = "Z" if model.up_axis == "Y" else "Y"
                warning = (f"{Path(ref.path).name} loaded {model.up_axis} up ({source}) stands {z:.3g} m tall with its "
                           f"longest side ({y:.3g} m) lying flat; loaded {other} up it would stand upright. If it should "
                           f"stand, set up_axis: {other}")
            notes[(i, file.path)] = AxisNote(i, file.path, model.up_axis, source, warning)
    return list(notes.values())
