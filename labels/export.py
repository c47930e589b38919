"""Export a dataset store: shared rules (splits, destination handling) for every format.

The destination is built in a hidden folder beside it and moved into place at the end, so it is
either complete or untouched. Splits are a pure function of (recipe seed, frame index): a
frame's split never changes when a dataset is extended or exported again.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sceneforge.floor.errors import UserError

from . import coco, mot, shards, yolo
from .store import DatasetStore, accepted_frames, one_writer


def _bop(*args: object, **options: object) -> None:
    """``labels.bop.write``, imported when used: it loads meshes and ray-casts (trimesh, Embree),
    which reading a store and the other formats never need."""
    from . import bop

    bop.write(*args, **options)


WRITERS = {"coco": coco.write, "yolo": yolo.write, "webdataset": shards.write, "mot": mot.write, "bop": _bop}
RgbSource = Literal["original", "refined", "clean"]


def parse_splits(text: str) -> dict[str, float]:
    """``"train=0.8,val=0.2"`` -> ``{"train": 0.8, "val": 0.2}``; fractions must sum to 1."""
    splits: dict[str, float] = {}
    for part in text.split(","):
        match = re.fullmatch(r"\s*([A-Za-z0-9_-]+)\s*=\s*([0-9.]+)\s*", part)
        if not match or match[1] in splits:
            raise UserError(f"--split: expected NAME=FRACTION,... such as train=0.8,val=0.2, got {text!r}")
        splits[match[1]] = float(match[2])
    if abs(sum(splits.values()) - 1.0) > 1e-6 or any(f <= 0 for f in splits.values()):
        raise UserError(f"--split: fractions must be > 0 and sum to 1, got {text!r}")
    return splits


def split_of(seed: int, index: int, splits: dict[str, float], unit: str = "") -> str:
    """The split of frame ``index`` (with ``unit="sequence"``: of sequence ``index``, all its
    frames together): a hash of (seed, index) placed on the cumulative fractions."""
    digest = hashlib.blake2b(f"{seed}/{unit}{index}".encode(), digest_size=8, person=b"sf-split").digest()
    point, edge = int.from_bytes(digest, "little") / 2**64, 0.0
    for name, fraction in splits.items():
        edge += fraction
        if point < edge:
            return name
    return name


@dataclass(frozen=True)
class ObjectFilter:
    """Which objects an export keeps (``None``: no bound). Every writer gets records whose
    ``objects`` hold only the kept ones, so a dropped object is in no annotation, row or record;
    the label maps (``instance/``, ``semantic/``) stay as rendered."""

    min_visible_pixels: int | None = None
    min_visibility: float | None = None
    max_truncation: float | None = None
    categories: frozenset[str] | None = None

    def check(self, store: DatasetStore) -> None:
        """Refuse bounds out of range and category names the store does not have."""
        if self.min_visible_pixels is not None and self.min_visible_pixels < 0:
            raise UserError(f"--min-visible-pixels: expected a pixel count >= 0, got {self.min_visible_pixels}")
        for option, value in (("--min-visibility", self.min_visibility), ("--max-truncation", self.max_truncation)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise UserError(f"{option}: expected a fraction in [0, 1], got {value}")
        names = [c["name"] for c in store.meta["categories"]]
        unknown = sorted(set(self.categories or ()) - set(names))
        if unknown:
            raise UserError(f"--categories: {', '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} not a "
                            f"category of {store.root}; its categories: {', '.join(names)}")

    def keeps(self, obj: dict) -> bool:
        """Whether the object passes every bound (an object outside the image has visibility null)."""
        return ((self.min_visible_pixels is None or obj["visible_pixels"] >= self.min_visible_pixels)
                and (self.min_visibility is None or (obj["visibility"] or 0.0) >= self.min_visibility)
                and (self.max_truncation is None or obj["truncation"] <= self.max_truncation)
                and (self.categories is None or obj["category"] in self.categories))

    def apply(self, records: list[dict]) -> list[dict]:
        """The records with only the kept objects (the records themselves when nothing is bounded)."""
        if self == ObjectFilter():
            return records
        return [{**record, "objects": [o for o in record["objects"] if self.keeps(o)]} for record in records]


def parse_categories(text: str) -> frozenset[str]:
    """``"box,ball"`` -> ``{"box", "ball"}``."""
    names = frozenset(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise UserError(f"--categories: expected NAME,NAME,... such as box,ball, got {text!r}")
    return names


def export(
    store: DatasetStore,
    fmt: str,
    dest: Path,
    *,
    overwrite: bool = False,
    partial: bool = False,
    rgb: RgbSource = "original",
    splits: dict[str, float] | None = None,
    objects: ObjectFilter = ObjectFilter(),
    include_rejected: bool = False,
    **options: object,
) -> Path:
    """Export ``store`` as ``fmt`` into ``dest``. Without ``splits`` every frame goes to one set;
    ``objects`` chooses the objects every format keeps; with ``rgb="refined"``, frames whose
    refinement was rejected are left out unless ``include_rejected`` (``accepted_frames``).

    ``options`` are the format's own: ``masks`` and ``layout`` (coco), ``task`` (yolo),
    ``shard_bytes`` (webdataset); mot and bop have none.
    """
    if fmt not in WRITERS:
        raise UserError(f"unknown export format {fmt!r}; expected one of: {', '.join(WRITERS)}")
    objects.check(store)
    with one_writer(dest):
        return _export(store, fmt, Path(dest), overwrite, partial, rgb, splits, objects, include_rejected, options)


def _export(store: DatasetStore, fmt: str, dest: Path, overwrite: bool, partial: bool, rgb: RgbSource,
            splits: dict[str, float] | None, objects: ObjectFilter, include_rejected: bool, options: dict) -> Path:
    records = store.records()
    if not records:
        raise UserError(f"{store.root}: the store has no finished frames to export")
    requested = store.meta.get("counts", {}).get("requested", len(records))
    if len(records) < requested and not partial:
        raise UserError(
            f"{store.root}: only {len(records)} of {requested} frames are finished; rerun the render "
            "command to complete it, or pass --partial to export what is there"
        )
    rgb_pass = {"original": "rgb", "refined": "rgb_refined", "clean": "rgb_clean"}[rgb]
    missing = [r["index"] for r in records if rgb_pass not in r["files"]]
    if missing:
        how = ("run 'sceneforge refine apply' first" if rgb == "refined"
               else "it was rendered without camera.sensor, so its rgb is the clean image")
        raise UserError(f"{store.root}: frame {missing[0]} has no {rgb_pass}; {how}")
    damaged = [(r["index"], problem) for r in records if (problem := store.frame_problem(r, checksums=False))]
    if damaged:
        index, problem = damaged[0]
        raise UserError(f"{store.root}: frame {index}: {problem} ({len(damaged)} damaged frame(s)); rerun the render "
                        "command to render them again, or 'sceneforge verify --repair' to drop them")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not overwrite:
        raise UserError(f"{dest}: exists and is not empty; pass --overwrite to replace it")
    records = objects.apply(accepted_frames(records, rgb, include_rejected))
    if not records:
        raise UserError(f"{store.root}: every refined frame was rejected by the refiner's acceptance check "
                        "('refine_rejected' in frames.jsonl); pass --include-rejected to export them anyway")
    groups: dict[str | None, list[dict]] = {None: records}
    if splits:
        seed = store.meta.get("recipe", {}).get("seed", 0)
        groups = {name: [] for name in splits}
        for record in records:
            if "sequence" in record:  # a sequence's frames stay together
                groups[split_of(seed, record["sequence"]["scene_index"], splits, "sequence")].append(record)
            else:
                groups[split_of(seed, record["index"], splits)].append(record)
    staging = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        WRITERS[fmt](store, groups, staging, rgb_pass, **options)
        _replace_dir(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _replace_dir(staging: Path, dest: Path) -> None:
    if dest.exists():
        old = dest.with_name(f".{dest.name}.{os.getpid()}.old")
        os.replace(dest, old)
        os.replace(staging, dest)
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        os.replace(staging, dest)
