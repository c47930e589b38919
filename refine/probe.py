"""The task probe: does training on refined renders give a better model of the real images?

One small, fixed semantic-segmentation network (a two-level U-Net) is trained from scratch on
(a) the raw renders of a store, (b) its refined renders (``rgb_refined``) and (c) half of a
labelled real set (the "oracle"), once per seed, and each is scored on the other half of the
real set: per-class IoU and mean IoU, with 95 % confidence intervals over the seeds, and the
share of the raw-to-oracle gap that refining closes, ``(b - a) / (c - a)``. docs/refiner.md.

Every random choice (initial weights, batches, flips) comes from (seed, step); on the CPU the
same inputs and seed give the same numbers.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from scipy import stats
from torch import nn
from torch.nn import functional as F

from sceneforge.floor.errors import UserError
from sceneforge.floor.images import checked_image_size
from sceneforge.labels.store import DatasetStore

from .data import MAX_PHOTOS
from .device import pick_device

log = logging.getLogger("sceneforge")

MAX_COCO_JSON_BYTES = 512 << 20
PROBE_WIDTH = 8  # channels of the U-Net's first level (about 30 k parameters in all)
LEARNING_RATE = 2e-3


@dataclass
class LabeledImages:
    """Images (N x S x S x 3 uint8) and their class maps (N x S x S int64: 0 background, k the
    k-th of ``categories``), all scaled to one square side; ``source`` names where they came from."""

    images: np.ndarray
    classes: np.ndarray
    categories: list[str]
    source: str


class ProbeNet(nn.Module):
    """A two-level U-Net: 3 x 3 convolutions and ReLUs, max-pooling down, bilinear upsampling and
    skip connections up, a 1 x 1 convolution to ``classes`` logits."""

    def __init__(self, classes: int, width: int = PROBE_WIDTH) -> None:
        super().__init__()

        def block(inputs: int, outputs: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(outputs, outputs, 3, padding=1), nn.ReLU(inplace=True))

        self.down1, self.down2 = block(3, width), block(width, 2 * width)
        self.bottom = block(2 * width, 4 * width)
        self.up2, self.up1 = block(6 * width, 2 * width), block(3 * width, width)
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        one = self.down1(x)
        two = self.down2(F.max_pool2d(one, 2))
        bottom = self.bottom(F.max_pool2d(two, 2))
        two = self.up2(torch.cat([F.interpolate(bottom, size=two.shape[-2:], mode="bilinear"), two], 1))
        one = self.up1(torch.cat([F.interpolate(two, size=one.shape[-2:], mode="bilinear"), one], 1))
        return self.head(one)


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """classes x classes counts: row = true class, column = predicted class."""
    pairs = truth.astype(np.int64).ravel() * classes + predicted.astype(np.int64).ravel()
    return np.bincount(pairs, minlength=classes * classes).reshape(classes, classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of each class, ``TP / (TP + FP + FN)``; NaN for a class neither present nor predicted."""
    true_positive = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def mean_iou(iou: np.ndarray) -> float:
    """Mean IoU over the object classes (index 1 on; background left out), NaN classes skipped."""
    objects = iou[1:]
    objects = objects[~np.isnan(objects)]
    return float(objects.mean()) if len(objects) else math.nan


def confidence_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % Student-t confidence interval (NaN for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)))


def store_images(store: DatasetStore, size: int, *, pass_name: str = "rgb") -> LabeledImages:
    """A store's frames (``pass_name``: ``rgb`` or ``rgb_refined``) and semantic maps at ``size``."""
    records = store.records()
    if not records:
        raise UserError(f"{store.root}: the store has no finished frames to train or evaluate the probe on")
    categories = [c["name"] for c in store.meta.get("categories", [])]
    class_of = {c["id"]: k + 1 for k, c in enumerate(store.meta.get("categories", []))}
    lookup = np.zeros(max(class_of, default=0) + 1, np.int64)
    for category_id, k in class_of.items():
        lookup[category_id] = k
    images, classes = [], []
    for record in records:
        if pass_name not in record["files"]:
            hint = "; run 'sceneforge refine apply' first" if pass_name == "rgb_refined" else ""
            raise UserError(f"{store.root}: frame {record['index']} has no {pass_name}{hint}")
        semantic = store.read_semantic(record)
        if semantic.max(initial=0) >= len(lookup):
            raise UserError(f"{store.path(record, 'semantic')}: category id {semantic.max()} is not in dataset.json")
        images.append(_square(store.read_rgb(record, pass_name), size, cv2.INTER_AREA))
        classes.append(_square(lookup[semantic].astype(np.uint8), size, cv2.INTER_NEAREST))
    return LabeledImages(np.stack(images), np.stack(classes).astype(np.int64), categories, f"{store.root} ({pass_name})")


def coco_images(document: Path, images_folder: Path, size: int) -> LabeledImages:
    """A COCO instances file whose annotations carry masks (polygons or RLE), its images under
    ``images_folder``, as class maps (later annotations drawn over earlier ones)."""
    if document.stat().st_size > MAX_COCO_JSON_BYTES:
        raise UserError(f"{document}: larger than {MAX_COCO_JSON_BYTES >> 20} MB")
    try:
        coco = json.loads(document.read_text())
        categories = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
        images = {int(i["id"]): i for i in coco["images"]}
        annotations = coco.get("annotations", [])
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{document}: not a COCO instances file ({exc.__class__.__name__}: {exc})") from None
    if not images:
        raise UserError(f"{document}: no images")
    if len(images) > MAX_PHOTOS:
        raise UserError(f"{document}: {len(images)} images, more than the {MAX_PHOTOS} the probe reads")
    names = [categories[cid] for cid in sorted(categories)]
    class_of = {cid: k + 1 for k, cid in enumerate(sorted(categories))}
    by_image: dict[int, list[dict]] = {}
    for position, annotation in enumerate(annotations):
        where = f"{document}: annotation {annotation.get('id', f'#{position}')} (image {annotation.get('image_id')})"
        if not annotation.get("segmentation"):
            raise UserError(f"{where}: no segmentation mask; the probe needs masks, not only boxes")
        if annotation.get("image_id") not in images or annotation.get("category_id") not in class_of:
            raise UserError(f"{where}: its image_id or category_id is not in the file")
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    pictures, classes = [], []
    for image_id, entry in sorted(images.items()):
        path = images_folder / str(entry.get("file_name", ""))
        try:
            width, height = checked_image_size(path)
        except (OSError, ValueError) as exc:
            raise UserError(f"{document}: image {image_id}: {path}: {exc}") from None
        picture = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if picture is None:
            raise UserError(f"{document}: image {image_id}: {path}: not a readable image")
        label = np.zeros((height, width), np.uint8)
        for annotation in by_image.get(image_id, []):
            label[_coco_mask(annotation["segmentation"], height, width, document, annotation)] = class_of[annotation["category_id"]]
        pictures.append(_square(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB), size, cv2.INTER_AREA))
        classes.append(_square(label, size, cv2.INTER_NEAREST))
    return LabeledImages(np.stack(pictures), np.stack(classes).astype(np.int64), names, str(document))


def _coco_mask(segmentation, height: int, width: int, document: Path, annotation: dict) -> np.ndarray:
    try:
        if isinstance(segmentation, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = {"size": segmentation["size"], "counts": str(segmentation["counts"]).encode("ascii")}
        mask = mask_utils.decode(rle).astype(bool)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise UserError(f"{document}: annotation {annotation.get('id')}: unreadable segmentation ({exc})") from None
    if mask.shape != (height, width):
        raise UserError(f"{document}: annotation {annotation.get('id')}: mask of {mask.shape[1]}x{mask.shape[0]} "
                        f"on an image of {width}x{height}")
    return mask


def labeled_set(source: Path, size: int) -> LabeledImages:
    """The labelled real set at ``source``: a SceneForge store (its ``rgb``), a COCO instances
    file, or a folder holding ``annotations.json`` and ``images/`` (SceneForge's COCO export)."""
    if (source / "dataset.json").is_file():
        return store_images(DatasetStore(source), size)
    document = source / "annotations.json" if source.is_dir() else source
    if not document.is_file() or document.suffix != ".json":
        raise UserError(f"{source}: not a SceneForge store, a COCO .json file or a folder with annotations.json")
    images = document.parent / "images"
    if document.parent.name == "annotations" and document.stem.startswith("instances_"):  # the standard COCO tree
        images = document.parent.parent / "images" / document.stem.removeprefix("instances_")
    return coco_images(document, images if images.is_dir() else document.parent, size)


def category_mapping(train: list[str], real: LabeledImages) -> np.ndarray:
    """Per real class index, the training class index of the same name (0 -> 0). Names in
    another order are mapped (and logged); different names are refused, both lists named."""
    if sorted(train) != sorted(real.categories) or len(set(train)) != len(train):
        raise UserError(f"{real.source}: its categories {real.categories} are not the training store's {train}; "
                        "the probe needs the same category names on both sides")
    if train != real.categories:
        log.info("%s: categories matched by name: %s", real.source,
                 ", ".join(f"{name} -> {train.index(name) + 1}" for name in real.categories))
    return np.array([0] + [train.index(name) + 1 for name in real.categories], np.int64)


def train_probe(data: LabeledImages, classes: int, *, steps: int, seed: int, device: torch.device,
                batch: int = 8) -> ProbeNet:
    """The probe trained from scratch for ``steps`` steps of ``batch`` images (random
    horizontal flips), initial weights from ``seed``, batch ``step`` from (seed, step)."""
    if len(data.images) == 0:
        raise UserError(f"{data.source}: zero frames to train the probe on")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # without touching the caller's RNG
        model = ProbeNet(classes).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    images = torch.from_numpy(data.images).to(device).permute(0, 3, 1, 2)
    targets = torch.from_numpy(data.classes).to(device)
    # Objects cover a few per cent of the pixels: weigh each class by its inverse frequency (a class
    # absent from the training images gets weight 0) so that the probe does not settle on background.
    counts = np.bincount(data.classes.ravel(), minlength=classes).astype(np.float64)
    weights = np.divide(counts.sum() / classes, counts, out=np.zeros(classes), where=counts > 0)
    weights = torch.from_numpy(weights / weights[counts > 0].mean()).float().to(device)
    model.train()
    for step in range(steps):
        rng = np.random.default_rng([seed, step])
        chosen = torch.from_numpy(rng.integers(len(images), size=batch)).to(device)
        flip = torch.from_numpy(rng.random(batch) < 0.5).to(device)
        x = _normalised(images[chosen])
        y = targets[chosen]
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = torch.where(flip[:, None, None], y.flip(-1), y)
        loss = F.cross_entropy(model(x), y, weight=weights)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return model.eval()


@torch.inference_mode()
def evaluate_probe(model: ProbeNet, data: LabeledImages, classes: int, device: torch.device) -> np.ndarray:
    """The confusion matrix of the model's per-pixel predictions on ``data``."""
    confusion = np.zeros((classes, classes), np.int64)
    for start in range(0, len(data.images), 64):
        x = _normalised(torch.from_numpy(data.images[start:start + 64]).to(device).permute(0, 3, 1, 2))
        predicted = model(x).argmax(1).cpu().numpy()
        confusion += confusion_matrix(data.classes[start:start + 64], predicted, classes)
    return confusion


def real_halves(real_source: Path, categories: list[str], size: int) -> tuple[LabeledImages, LabeledImages]:
    """The labelled real set in the store's class order, split at fixed positions into the
    oracle's training half (even) and the evaluation half (odd) every probe is scored on."""
    real = labeled_set(real_source, size)
    real.classes = category_mapping(categories, real)[real.classes]
    if len(real.images) < 2:
        raise UserError(f"{real.source}: {len(real.images)} labelled image(s); the probe needs at least 2 "
                        "(half trains the oracle, half evaluates)")
    oracle_part = np.arange(len(real.images)) % 2 == 0
    return (LabeledImages(real.images[oracle_part], real.classes[oracle_part], categories, real.source + " (oracle half)"),
            LabeledImages(real.images[~oracle_part], real.classes[~oracle_part], categories, real.source + " (evaluation half)"))


def benchmark_miou(store: DatasetStore, images: list[np.ndarray], real_source: Path, *, seed: int, steps: int = 300,
                   size: int = 48, device: str = "cpu") -> float:
    """Mean IoU on the evaluation half of ``real_source`` of one probe trained from scratch on
    ``images`` (one per finished frame of ``store``, in record order: raw, or some refiner's
    output) with the store's semantic maps; benchmarks/refine_compare.py's probe column."""
    labels = store_images(store, size)
    data = LabeledImages(np.stack([_square(image, size, cv2.INTER_AREA) for image in images]), labels.classes,
                         labels.categories, "images")
    _, held_out = real_halves(real_source, labels.categories, size)
    torch_device = pick_device(device)
    classes = len(labels.categories) + 1
    model = train_probe(data, classes, steps=steps, seed=seed, device=torch_device)
    return mean_iou(iou_per_class(evaluate_probe(model, held_out, classes, torch_device)))


def run_probe(store: DatasetStore, real_source: Path, *, refined: bool = False, seeds: int = 3, steps: int = 300,
              size: int = 64, device: str = "auto", on_run: Callable[[str, int], None] | None = None) -> dict:
    """Train and score the probe on raw renders, refined renders (with ``refined``) and the
    oracle half of the real set, ``seeds`` times each; the figures as a JSON-ready dict."""
    torch_device = pick_device(device)
    sides = {"raw": store_images(store, size)}
    if refined:
        sides["refined"] = store_images(store, size, pass_name="rgb_refined")
    categories = sides["raw"].categories
    sides["oracle"], held_out = real_halves(real_source, categories, size)
    classes = len(categories) + 1
    results: dict = {}
    for name, data in sides.items():
        runs = []
        for seed in range(seeds):
            if on_run:
                on_run(name, seed)
            model = train_probe(data, classes, steps=steps, seed=seed, device=torch_device)
            runs.append(iou_per_class(evaluate_probe(model, held_out, classes, torch_device)))
        per_seed = [mean_iou(iou) for iou in runs]
        mean, half_width = confidence_interval(per_seed)
        results[name] = {
            "frames": len(data.images), "mean_iou": mean, "ci95": _finite(half_width), "mean_iou_per_seed": per_seed,
            "iou": {label: _nan_mean([iou[k] for iou in runs])
                    for k, label in enumerate(["background", *categories])},
        }
    report = {"categories": categories, "seeds": seeds, "steps": steps, "size": size, "device": str(torch_device),
              "evaluation_frames": len(held_out.images), **results}
    if refined:
        difference = [b - a for a, b in zip(results["raw"]["mean_iou_per_seed"], results["refined"]["mean_iou_per_seed"])]
        mean, half_width = confidence_interval(difference)
        gap = results["oracle"]["mean_iou"] - results["raw"]["mean_iou"]
        report["refined_minus_raw"] = {"mean": mean, "ci95": _finite(half_width)}
        report["gap_closed"] = mean / gap if gap > 0 else None
    return report


def probe_table(report: dict) -> str:
    """The probe's figures as a plain-text table."""
    names = ["background", *report["categories"]]
    lines = [f"probe: {report['seeds']} seed(s) x {report['steps']} steps at {report['size']} px on {report['device']}; "
             f"scored on {report['evaluation_frames']} real frames (the other half trains the oracle)",
             f"{'trained on':11} {'frames':>6} {'mean IoU (95% CI)':>19}  " + "  ".join(f"{n:>10}" for n in names)]
    for side in ("raw", "refined", "oracle"):
        if side in report:
            row = report[side]
            ious = "  ".join(f"{'-' if row['iou'][n] is None else format(row['iou'][n], '.3f'):>10}" for n in names)
            lines.append(f"{side:11} {row['frames']:6d} {row['mean_iou']:8.3f} ± {_interval(row['ci95'])}  {ious}")
    if "refined_minus_raw" in report:
        difference, gap = report["refined_minus_raw"], report["gap_closed"]
        lines.append(f"refined - raw: {difference['mean']:+.3f} ± {_interval(difference['ci95']).strip()} (95% CI over paired seeds); "
                     f"gap to the oracle closed: {'n/a (the oracle is not better than raw)' if gap is None else f'{gap:.0%}'}")
    lines.append("mean IoU over the object categories (background left out)")
    return "\n".join(lines)


def _interval(half_width: float | None) -> str:
    return f"{'n/a':8}" if half_width is None else f"{half_width:<8.3f}"


def _finite(value: float) -> float | None:
    """None for NaN (one seed has no interval), so that the JSON report stays valid JSON."""
    return None if math.isnan(value) else value


def _nan_mean(values: list[float]) -> float | None:
    kept = [v for v in values if not math.isnan(v)]
    return statistics.fmean(kept) if kept else None


def _normalised(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1


def _square(image: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    """The centre square of the shorter side, scaled to ``size`` x ``size``."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return cv2.resize(image[top:top + side, left:left + side], (size, size), interpolation=interpolation)
