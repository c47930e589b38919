"""The step that turns a rendered frame into stored files: it derives the labels, exports the
scene as USD when asked, and writes everything into the store. It runs in the render worker
process (local and Ray alike), beside Blender, while the next frame renders; the conductor only
appends the record it returns."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sceneforge.floor.frame import Passes
from sceneforge.labels.annotate import frame_record, stored_passes
from sceneforge.labels.store import DOCUMENTS, DatasetStore
from sceneforge.scenes.spec import SceneSpec


@dataclass(frozen=True)
class LabelAndStore:
    """Label one rendered frame and write its files into the store at ``store_root`` (picklable).

    With ``usd``, the frame's scene is also written as a USD stage (``scenes/NNNNNN.usda``; a rig
    camera's view: ``scenes/NNNNNN_NAME.usda``), its images in ``scenes/textures``.
    """

    store_root: str
    usd: bool = False

    def prepare(self) -> None:
        """Import the USD library (pxr) when stages are written."""
        if self.usd:
            import sceneforge.labels.usd_scene  # noqa: F401 - pxr: only where USD is written

    def __call__(self, spec: SceneSpec, passes: Passes, render_seconds: float) -> dict:
        """Write the frame's files; returns its record, to be appended by the store's one writer."""
        documents = {"scene": spec.to_json()}
        if self.usd:
            from sceneforge.labels.usd_scene import scene_usda  # pxr: only where USD is written

            documents["usd"] = scene_usda(spec, passes.exposure_ev, (Path(self.store_root) / DOCUMENTS["usd"]).parent)
        files, checks = _store(self.store_root).write_frame_files(spec.index, stored_passes(spec, passes), documents,
                                                                    spec.camera.name)
        return frame_record(spec, passes, files, checks, render_seconds)


@lru_cache(maxsize=4)
def _store(root: str) -> DatasetStore:
    return DatasetStore(root)
