"""SceneForge: YAML scene recipes in, labeled synthetic image datasets out.

This package is the conductor (CLI, pipeline, executors); the stages live in
``sceneforge.scenes``, ``sceneforge.render``, ``sceneforge.refine`` and ``sceneforge.labels``.
The Python API (docs/python.md) lives in ``sceneforge.api``; its names are also reachable here
(``sceneforge.load_recipe``, ``sceneforge.open_store``, ...) and imported on first use, so that
``import sceneforge`` loads neither the recipe schema nor numpy. All but ``render``: that name is
the render stage's package, so ``sceneforge.api.render`` is spelt in full.
"""

from importlib.metadata import version
from typing import Any

__version__ = version("sceneforge")

_API = frozenset({
    "Frame", "Image", "Recipe", "RunResult", "SceneSpec", "Store", "engine_overrides", "load_recipe", "open_store",
    "override", "recipe_from_dict", "run", "sample", "sample_specs", "sample_views",
})


def __getattr__(name: str) -> Any:
    if name in _API:
        from sceneforge import api

        return getattr(api, name)
    raise AttributeError(f"module 'sceneforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
