"""SceneForge: YAML scene recipes in, labeled synthetic image datasets out.

This package is the conductor (CLI, pipeline, executors); the stages live in
``sceneforge.scenes``, ``sceneforge.render``, ``sceneforge.refine`` and ``sceneforge.labels``.
"""

from importlib.metadata import version

__version__ = version("sceneforge")
