"""Exports read back by the real clients: pycocotools/COCOeval, Ultralytics' label checker and
rasteriser, webdataset."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import webdataset
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from ruamel.yaml import YAML

from sceneforge.floor.errors import UserError
from sceneforge.labels.export import export, parse_splits, split_of
from sceneforge.labels.polygons import mask_polygons
from sceneforge.labels.store import DatasetStore

from .helpers import ultralytics_check


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def visible_objects(store):
    for record in store.records():
        instance = store.read_instance(record)
        for obj in record["objects"]:
            if obj["visible_pixels"]:
                yield record, obj, instance == obj["instance_id"]


def test_cocoeval_of_the_ground_truth_is_perfect(tiny_store, tmp_path):
    dest = export(tiny_store, "coco", tmp_path / "coco")
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(dest / "annotations.json"))
        detections = truth.loadRes([{**a, "score": 1.0} for a in truth.loadAnns(truth.getAnnIds())])
        for kind in ("segm", "bbox"):
            evaluation = COCOeval(truth, detections, kind)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            assert evaluation.stats[0] == pytest.approx(1.0), kind  # AP@[.5:.95]
    annotation = truth.loadAnns(truth.getAnnIds())[0]
    assert {"visibility", "truncation", "depth_range", "instance_id"} <= set(annotation["sceneforge"])
    assert {"visibility", "truncation", "depth_min", "depth_max", "sceneforge_instance_id"} <= set(annotation["attributes"])


def test_coco_rle_masks_decode_to_the_masks(tiny_store, tmp_path):
    dest = export(tiny_store, "coco", tmp_path / "coco", masks="rle")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(dest / "annotations.json"))
    by_key = {(a["image_id"], a["sceneforge"]["instance_id"]): a for a in coco.loadAnns(coco.getAnnIds())}
    checked = 0
    for record, obj, mask in visible_objects(tiny_store):
        annotation = by_key[(record["index"], obj["instance_id"])]
        assert set(annotation["segmentation"]) == {"size", "counts"}
        assert np.array_equal(coco.annToMask(annotation).astype(bool), mask)
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("seed", range(4))
def test_edge_polygons_are_exact_under_pycocotools(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        height, width = (int(v) for v in rng.integers(4, 40, 2))
        if rng.random() < 0.5:
            mask = rng.random((height, width)) < rng.uniform(0.2, 0.8)  # salt and pepper: the worst case
        else:
            mask = cv2.GaussianBlur(rng.random((height, width)).astype(np.float32), (0, 0), 1.5) > 0.5
        if not mask.any():
            continue
        if rng.random() < 0.5:  # an object in a larger frame, off its corner (or at its border)
            frame = np.zeros((height + int(rng.integers(0, 30)), width + int(rng.integers(0, 30))), bool)
            top, left = int(rng.integers(0, frame.shape[0] - height + 1)), int(rng.integers(0, frame.shape[1] - width + 1))
            frame[top:top + height, left:left + width] = mask
            mask, (height, width) = frame, frame.shape
        outlines = mask_polygons(mask, "edges")
        rle = mask_utils.merge(mask_utils.frPyObjects([p.ravel().tolist() for p in outlines], height, width))
        assert np.array_equal(mask_utils.decode(rle).astype(bool), mask)


def assert_ultralytics_reads_every_label(checked: dict[str, dict], store) -> None:
    """Ultralytics found each image's label file, none corrupt, no warning, one row per visible object."""
    visible = {Path(r["files"]["rgb"]).stem: sum(o["visible_pixels"] > 0 for o in r["objects"]) for r in store.records()}
    assert {Path(image).stem for image in checked} == set(visible)
    for image, result in checked.items():
        assert (result["nm"], result["nf"], result["nc"], result["msg"]) == (0, 1, 0, ""), image
        assert result["label"] == str(Path(image.replace("images/", "labels/", 1)).with_suffix(".txt"))
        assert len(result["labels"]) == visible[Path(image).stem] and result["ne"] == (not result["labels"])


def test_yolo_segment_polygons_rasterised_by_ultralytics_overlap_the_masks(tiny_store, tmp_path):
    dest = export(tiny_store, "yolo", tmp_path / "yolo", task="segment", splits={"train": 0.5, "val": 0.5})
    data = YAML(typ="safe").load((dest / "data.yaml").read_text())
    assert data["names"] == {0: "box", 1: "ball", 2: "ring"}
    assert data["train"] == "images/train" and data["val"] == "images/val" and "path" not in data
    checked = ultralytics_check(dest, "segment", tmp_path)
    assert_ultralytics_reads_every_label(checked, tiny_store)
    by_stem = {Path(image).stem: result for image, result in checked.items()}
    compared = 0
    for record, obj, mask in visible_objects(tiny_store):
        result = by_stem[f"{record['index']:06d}"]
        position = [o["instance_id"] for o in record["objects"] if o["visible_pixels"]].index(obj["instance_id"])
        assert result["labels"][position][0] == obj["category_id"] - 1
        drawn = np.array(result["masks"][position], bool)  # Ultralytics' polygon2mask of the polygon it read
        if mask.sum() >= 64:
            assert iou(drawn, mask) >= 0.95
            compared += 1
    assert compared >= 3


def test_yolo_segment_keeps_objects_one_pixel_wide(tiny_store, tmp_path):
    """An object seen as one pixel or a one-pixel-wide line has an outline of one or two points;
    Ultralytics reads a row of fewer than three points as a box row (and the image as corrupt), so
    the outline is padded to three points, which its rasteriser draws as exactly those pixels."""
    record = next(r for r in tiny_store.records() if sum(o["visible_pixels"] > 0 for o in r["objects"]) >= 3)
    ids = [o["instance_id"] for o in record["objects"] if o["visible_pixels"]]
    instance = tiny_store.read_instance(record)
    instance[np.isin(instance, ids[1:3])] = 0  # two objects become slivers in the background
    assert not instance[1, 1] and not instance[1:7, -2].any()
    instance[1, 1] = ids[1]  # one pixel
    instance[1:7, -2] = ids[2]  # a vertical line one pixel wide

    class Slivers(DatasetStore):
        def read_instance(self, other: dict) -> np.ndarray:
            return instance if other["index"] == record["index"] else super().read_instance(other)

    dest = export(Slivers(tiny_store.root), "yolo", tmp_path / "yolo", task="segment")
    result = ultralytics_check(dest, "segment", tmp_path)[f"images/train/{record['index']:06d}.png"]
    assert (result["nf"], result["nc"], result["msg"]) == (1, 0, "")
    assert len(result["masks"]) == len(ids)
    for position in (1, 2):
        assert np.array_equal(np.array(result["masks"][position], bool), instance == ids[position]), position


def test_yolo_detect_boxes_are_the_mask_boxes(tiny_store, tmp_path):
    dest = export(tiny_store, "yolo", tmp_path / "yolo")
    checked = ultralytics_check(dest, "detect", tmp_path)
    assert_ultralytics_reads_every_label(checked, tiny_store)
    for record in tiny_store.records():
        rows = checked[f"images/train/{record['index']:06d}.png"]["labels"]  # as Ultralytics read them
        visible = [o for o in record["objects"] if o["visible_pixels"]]
        for (cls, cx, cy, w, h), obj in zip(rows, visible):
            x, y, bw, bh = obj["bbox_xywh"]
            assert cls == obj["category_id"] - 1
            width, height = record["camera"]["width"], record["camera"]["height"]
            assert (cx * width, cy * height, w * width, h * height) == pytest.approx((x + bw / 2, y + bh / 2, bw, bh), abs=1e-4)


def test_webdataset_shards_iterate_and_stay_bounded(tiny_store, tmp_path):
    dest = export(tiny_store, "webdataset", tmp_path / "wds", shard_bytes=20_000)
    shards = sorted(dest.glob("shard-*.tar"))
    assert len(shards) >= 2, "a 20 kB bound splits three frames over several shards"
    sample_bytes: dict[str, int] = {}  # the members of each sample, as written
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                sample_bytes[member.name.split(".")[0]] = sample_bytes.get(member.name.split(".")[0], 0) + member.size
    assert all(s.stat().st_size <= 20_000 + max(sample_bytes.values()) + 10_240 for s in shards)
    samples = list(webdataset.WebDataset([str(s) for s in shards], shardshuffle=False))
    records = {f"{r['index']:06d}": r for r in tiny_store.records()}
    assert sorted(s["__key__"] for s in samples) == sorted(sample_bytes) == sorted(records)
    for sample in samples:
        record = records[sample["__key__"]]
        assert {"rgb.png", "depth.npy", "distance.npy", "normals.npy", "instance.npy", "semantic.npy", "json"} <= set(sample)
        rgb = cv2.imdecode(np.frombuffer(sample["rgb.png"], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        assert np.array_equal(rgb, tiny_store.read_rgb(record))
        instance = np.load(io.BytesIO(sample["instance.npy"]), allow_pickle=False)
        assert np.array_equal(instance, tiny_store.read_instance(record)) and instance.dtype == np.uint16
        assert json.loads(sample["json"])["objects"] == record["objects"]
    assert json.loads((dest / "dataset.json").read_text())["categories"] == tiny_store.meta["categories"]


def test_splits_are_deterministic_disjoint_and_proportional(tiny_store, tmp_path):
    splits = parse_splits("train=0.8, val=0.2")
    assert splits == {"train": 0.8, "val": 0.2}
    assignment = [split_of(7, i, splits) for i in range(20_000)]
    assert assignment == [split_of(7, i, splits) for i in range(20_000)]
    assert assignment.count("train") / len(assignment) == pytest.approx(0.8, abs=0.01)
    assert assignment != [split_of(8, i, splits) for i in range(20_000)]
    dest = export(tiny_store, "coco", tmp_path / "coco", splits={"a": 0.5, "b": 0.5})
    ids = [img["id"] for s in ("a", "b") for img in json.loads((dest / s / "annotations.json").read_text())["images"]]
    assert sorted(ids) == [r["index"] for r in tiny_store.records()]


@pytest.mark.parametrize("text", ["train=0.8", "train=0.5,train=0.5", "train:0.8,val:0.2", "a=1.2,b=-0.2"])
def test_bad_split_text(text):
    with pytest.raises(UserError, match="--split"):
        parse_splits(text)


def test_refined_rgb_must_exist(tiny_store, tmp_path):
    with pytest.raises(UserError, match="no rgb_refined; run 'sceneforge refine apply' first"):
        export(tiny_store, "coco", tmp_path / "coco", rgb="refined")


def test_incomplete_store_needs_partial(tiny_store, tmp_path):
    incomplete = DatasetStore(tiny_store.root)
    incomplete.meta["counts"] = {"requested": 10, "finished": 3}
    with pytest.raises(UserError, match="only 3 of 10 frames are finished"):
        export(incomplete, "yolo", tmp_path / "yolo")
    assert (export(incomplete, "yolo", tmp_path / "yolo", partial=True) / "data.yaml").is_file()
    assert not (tmp_path / "coco").exists()


def test_export_ignores_a_truncated_last_record_with_a_warning(tiny_store, tmp_path, caplog):
    copy = tmp_path / "store"
    shutil.copytree(tiny_store.root, copy)
    with open(copy / "frames.jsonl", "a") as frames:
        frames.write('{"index": 99, "files": {"rg')
    dest = export(DatasetStore(copy), "coco", tmp_path / "coco")
    assert "truncated last record" in caplog.text
    images = json.loads((dest / "annotations.json").read_text())["images"]
    assert sorted(i["id"] for i in images) == [r["index"] for r in tiny_store.records()]
