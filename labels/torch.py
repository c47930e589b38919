"""PyTorch access to a dataset store. This module imports torch: import it only where torch is wanted.

    from torch.utils.data import DataLoader
    from sceneforge.labels.torch import SceneForgeDataset, collate

    data = SceneForgeDataset("out/tabletop", passes=("depth", "normals"))
    loader = DataLoader(data, batch_size=8, num_workers=4, collate_fn=collate)

A sample is a dict: ``image`` (3 x H x W float in [0, 1]), ``index``, ``target`` (detection
targets of the visible objects: ``boxes`` N x 4 float xyxy in pixels, ``labels`` category ids,
``masks`` N x H x W uint8, ``amodal_masks`` N x H x W uint8 (each object's whole silhouette,
hidden parts included), ``instance_ids``, ``visibility``, ``keypoints`` N x K x 3 float: x, y in
the boxes' frame (a pixel centre u is at u + 0.5) and COCO's visibility 0/1/2, K the most
keypoints of any category, the rest zero) and one tensor per requested pass:
``depth``, ``distance`` (1 x H x W metres, inf = no hit), ``normals`` (3 x H x W), ``instance``,
``semantic`` (H x W int64), ``albedo`` and ``rgb_clean`` (3 x H x W), ``depth_sensor`` (1 x H x W
metres, 0 = hole), with ``render.behind`` ``depth_behind`` (1 x H x W metres) and ``instance_behind``
(H x W int64: what glass and blended bodies hide), and in sequences ``flow_forward``,
``flow_backward`` (2 x H x W pixels) and ``flow_valid`` (H x W uint8 bits), in stereo views
``disparity`` (1 x H x W pixels). Frames of a sequence
also carry ``sequence`` (scene index, frame); ``point_tracks(scene_index)`` gives a sequence's
point tracks. No torchvision is needed.

A rig's store holds one record per view. By default each view is a sample of its own (with
``camera``, its name); ``cameras=("left", "right")`` makes one sample per frame instead, holding
those views' samples by name (frames missing one of them are left out):

    pairs = SceneForgeDataset("out/stereo", passes=("depth", "disparity"), cameras=("left", "right"))
    sample = pairs[0]   # {"index": 0, "views": {"left": {...}, "right": {...}}}
    left = sample["views"]["left"]["image"]

``collate`` batches such samples view by view (``batch["views"]["left"]["image"]`` is N x 3 x H x W).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

try:
    import torch
    from torch.utils.data import Dataset
except ImportError as exc:  # torch is the optional refine extra, not part of the core install
    raise ImportError(f"sceneforge.labels.torch needs PyTorch, which is not installed ({exc}); "
                      "install it with: pip install 'sceneforge[refine]'") from exc

from sceneforge.floor.errors import UserError

from .rle import decode_mask
from .store import DatasetStore, accepted_frames, frames_of, view_name

DENSE_PASSES = ("depth", "distance", "normals", "instance", "semantic", "albedo", "flow_forward", "flow_backward",
                "flow_valid", "disparity", "rgb_clean", "depth_sensor", "depth_behind", "instance_behind")


class SceneForgeDataset(Dataset):
    """The finished views of a store, in index order (or with ``cameras``, its frames with those
    views together); picklable for ``DataLoader(num_workers>0)``. With ``rgb="refined"``, views
    whose refinement was rejected (``refine_rejected``) are left out unless ``include_rejected``."""

    def __init__(
        self,
        store: str | Path | DatasetStore,
        passes: Sequence[str] = (),
        transforms: Callable[[dict], dict] | None = None,
        rgb: str = "original",
        cameras: Sequence[str] | None = None,
        include_rejected: bool = False,
    ) -> None:
        self.store = store if isinstance(store, DatasetStore) else DatasetStore(store)
        unknown = [p for p in passes if p not in DENSE_PASSES or p not in self.store.meta["passes"]]
        if unknown:
            raise UserError(f"{self.store.root}: no pass {unknown[0]!r} here; available: "
                            f"{', '.join(p for p in self.store.meta['passes'] if p in DENSE_PASSES)}")
        self.passes = tuple(passes)
        self.transforms = transforms
        # "clean": the image without the sensor model, in stores rendered with one
        self.rgb_pass = {"original": "rgb", "refined": "rgb_refined", "clean": "rgb_clean"}[rgb]
        # with the refined images, not the views the refiner's acceptance check rejected (unless asked)
        self.records = accepted_frames(self.store.records(), rgb, include_rejected)
        self.keypoint_slots = max((len(c.get("keypoints", ())) for c in self.store.meta["categories"]), default=0)
        self.cameras = None if cameras is None else tuple(cameras)
        self.frames: list[dict[str, dict]] = []  # with cameras: each frame's records by camera name
        if self.cameras is not None:
            if unknown := [c for c in self.cameras if c not in self.store.cameras]:
                raise UserError(f"{self.store.root}: no camera {unknown[0]!r} here; its cameras: "
                                f"{', '.join(repr(c) for c in self.store.cameras)}")
            for views in frames_of(self.records):
                by_name = {view_name(r): r for r in views}
                if all(c in by_name for c in self.cameras):
                    self.frames.append({c: by_name[c] for c in self.cameras})

    def __len__(self) -> int:
        return len(self.records) if self.cameras is None else len(self.frames)

    def __getitem__(self, item: int) -> dict:
        if self.cameras is None:
            sample = self._view(self.records[item])
            return self.transforms(sample) if self.transforms else sample
        views = self.frames[item]
        sample = {"index": views[self.cameras[0]]["index"], "views": {c: self._view(r) for c, r in views.items()}}
        return self.transforms(sample) if self.transforms else sample

    def _view(self, record: dict) -> dict:
        """One view's sample: image, targets and the requested passes."""
        store = self.store
        instance = store.read_instance(record)
        visible = [o for o in record["objects"] if o["visible_pixels"] > 0]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (o["bbox_xywh"] for o in visible)]
        sample = {
            "index": record["index"],
            "image": image_tensor(store.read_rgb(record, self.rgb_pass)),
            "target": {
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([o["category_id"] for o in visible], dtype=torch.int64),
                "masks": _masks([instance == o["instance_id"] for o in visible], instance.shape),
                "instance_ids": torch.tensor([o["instance_id"] for o in visible], dtype=torch.int64),
                "visibility": torch.tensor([o["visibility"] or 0.0 for o in visible], dtype=torch.float32),
                "keypoints": self._keypoints(visible),
            },
        }
        if all("amodal_mask" in o for o in record["objects"]):  # stores written before amodal masks have none
            sample["target"]["amodal_masks"] = _masks([decode_mask(o["amodal_mask"]) for o in visible], instance.shape)
        readers = {
            "depth": lambda: torch.from_numpy(store.read_depth(record)).unsqueeze(0),
            "distance": lambda: torch.from_numpy(store.read_distance(record)).unsqueeze(0),
            "normals": lambda: image_tensor(store.read_normals(record)),
            "instance": lambda: torch.from_numpy(instance.astype(np.int64)),
            "semantic": lambda: torch.from_numpy(store.read_semantic(record).astype(np.int64)),
            "albedo": lambda: image_tensor(store.read_rgb(record, "albedo")),
            "flow_forward": lambda: image_tensor(store.read_flow(record, "flow_forward")),
            "flow_backward": lambda: image_tensor(store.read_flow(record, "flow_backward")),
            "flow_valid": lambda: torch.from_numpy(store.read_flow_valid(record)),
            "rgb_clean": lambda: image_tensor(store.read_rgb(record, "rgb_clean")),
            "depth_sensor": lambda: torch.from_numpy(store.read_depth_sensor(record)).unsqueeze(0),
            "disparity": lambda: torch.from_numpy(store.read_disparity(record)).unsqueeze(0),
            "depth_behind": lambda: torch.from_numpy(store.read_pass(record, "depth_behind")).unsqueeze(0),
            "instance_behind": lambda: torch.from_numpy(store.read_pass(record, "instance_behind").astype(np.int64)),
        }
        for name in self.passes:
            sample[name] = readers[name]()
        if "sequence" in record:
            sample["sequence"] = torch.tensor([record["sequence"]["scene_index"], record["sequence"]["frame"]])
        if view_name(record):
            sample["camera"] = view_name(record)
        return sample

    def _keypoints(self, visible: list[dict]) -> torch.Tensor:
        """N x K x 3 (x, y, visibility) of the objects, x and y moved into the boxes' frame."""
        keypoints = torch.zeros((len(visible), self.keypoint_slots, 3), dtype=torch.float32)
        for i, obj in enumerate(visible):
            for k, (u, v, flag) in enumerate(obj.get("keypoints", [])):
                keypoints[i, k] = torch.tensor([u + 0.5, v + 0.5, flag] if flag else [0.0, 0.0, 0.0])
        return keypoints

    def point_tracks(self, scene_index: int, camera: str = "") -> dict[str, torch.Tensor]:
        """The point tracks of sequence ``scene_index`` as ``camera`` sees them ("" for a single
        camera; docs/formats.md): ``query_points`` N x 3 (frame, y, x), ``tracks`` N x T x 2 (x, y
        pixels), ``occluded`` N x T bool, ``instance_id`` N."""
        for record in self.store.sequence_records():
            if record["scene_index"] == scene_index and record.get("camera", "") == camera:
                return {name: torch.from_numpy(array) for name, array in self.store.read_tracks(record).items()}
        raise UserError(f"{self.store.root}: no point tracks of sequence {scene_index}")


def _masks(masks: list[np.ndarray], shape: tuple[int, int]) -> torch.Tensor:
    """N x H x W uint8 of N boolean masks (0 x H x W for none)."""
    return torch.from_numpy(np.stack(masks) if masks else np.zeros((0, *shape), bool)).to(torch.uint8)


def collate(batch: list[dict]) -> dict:
    """Stack images and dense passes into batches; targets and camera names stay lists (one per
    image); a frame's ``views`` are batched view by view."""
    first = batch[0]
    return {
        key: {name: collate([s[key][name] for s in batch]) for name in first[key]} if key == "views"
        else [s[key] for s in batch] if key in ("target", "camera")
        else torch.stack([s[key] for s in batch]) if isinstance(first[key], torch.Tensor)
        else torch.tensor([s[key] for s in batch])
        for key in first
    }


def image_tensor(images: np.ndarray, value_range: tuple[float, float] = (0.0, 1.0),
                 device: torch.device | str = "cpu", channels_last: bool = False) -> torch.Tensor:
    """H x W x C (or N x H x W x C) images -> C x H x W (or N x C x H x W) float32 on ``device``.

    uint8 values 0..255 map linearly onto ``value_range``; float images keep their values. The
    bytes travel to the device as they are and are converted there (a quarter of the traffic for
    uint8). SceneForge's one image-to-tensor conversion: the Dataset, the refiner and its metrics.
    """
    t = torch.from_numpy(np.ascontiguousarray(images)).to(device, non_blocking=True).movedim(-1, -3)
    low, high = value_range
    t = t.float() / (255.0 / (high - low)) + low if images.dtype == np.uint8 else t.float()
    return t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
