"""MOTChallenge export of sequences: one folder per sequence with ``seqinfo.ini``,
``gt/gt.txt`` and the frames as ``img1/NNNNNN.png`` (linked, not copied).

``gt.txt`` has one line per visible object per frame, the MOT16/17 ground-truth columns:
``frame, id, bb_left, bb_top, bb_width, bb_height, consider, class, visibility`` with frames
numbered from 1, 1-based pixel coordinates of the visible box, ``consider`` = 1, class = the
category id and visibility = visible / unoccluded pixels. Each camera of a rig is a sequence of
its own: ``sequence-NNNNNN_CAMERA/``.
"""

from __future__ import annotations

from pathlib import Path

from sceneforge.floor.errors import UserError
from sceneforge.floor.files import atomic_write, link_or_copy

from .store import DatasetStore, view_name, view_stem


def write(store: DatasetStore, groups: dict[str | None, list[dict]], dest: Path, rgb_pass: str) -> None:
    """Write every sequence of every split (``dest/SPLIT/SEQUENCE/``, or ``dest/SEQUENCE/``)."""
    for split, records in groups.items():
        sequences: dict[tuple[int, str], list[dict]] = {}  # by (scene index, camera name)
        for record in records:
            if "sequence" not in record:
                raise UserError(f"{store.root}: frame {record['index']} is not part of a sequence; the mot format "
                                "exports sequences (a recipe with `sequence:`)")
            sequences.setdefault((record["sequence"]["scene_index"], view_name(record)), []).append(record)
        for (scene_index, camera), frames in sorted(sequences.items()):
            folder = (dest / split if split else dest) / f"sequence-{view_stem(scene_index, camera)}"
            _write_sequence(store, sorted(frames, key=lambda r: r["sequence"]["frame"]), folder, rgb_pass)


def _write_sequence(store: DatasetStore, frames: list[dict], folder: Path, rgb_pass: str) -> None:
    (folder / "img1").mkdir(parents=True)
    (folder / "gt").mkdir()
    lines = []
    for record in frames:
        number = record["sequence"]["frame"] + 1
        link_or_copy(store.path(record, rgb_pass), folder / "img1" / f"{number:06d}.png")
        for obj in record["objects"]:
            if obj["bbox_xywh"] is None:
                continue
            x, y, w, h = obj["bbox_xywh"]
            lines.append(f"{number},{obj['instance_id']},{x + 1},{y + 1},{w},{h},1,{obj['category_id']},"
                         f"{obj['visibility']:.6f}\n")
    first = frames[0]
    info = (f"[Sequence]\nname={folder.name}\nimDir=img1\nframeRate={first['sequence']['fps']:g}\n"
            f"seqLength={len(frames)}\nimWidth={first['camera']['width']}\nimHeight={first['camera']['height']}\n"
            "imExt=.png\n")
    atomic_write(folder / "gt" / "gt.txt", lambda tmp: tmp.write_text("".join(lines)))
    atomic_write(folder / "seqinfo.ini", lambda tmp: tmp.write_text(info))
