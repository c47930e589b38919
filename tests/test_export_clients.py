"""Exports every client reads unedited: object filters on every exporter, COCO extras under
non-reserved names and in ``attributes``, the standard COCO tree, ``dataset.yaml``, WebDataset
members that webdataset's default decoder reads losslessly."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset
from pycocotools.coco import COCO
from ruamel.yaml import YAML

from sceneforge.floor.errors import UserError
from sceneforge.labels.export import ObjectFilter, export, parse_categories
from sceneforge.labels.store import DatasetStore
from sceneforge.pipeline import render_dataset
from sceneforge.scenes.recipe import load_recipe

from .helpers import TINY_RECIPE, run_cli, write_recipe

# Fields of FiftyOne's Detection (fiftyone.core.labels: _HasID, _HasInstance, Detection) that an
# extra COCO field must not reuse: FiftyOne's COCO importer merges `attributes` into the
# annotation and passes every extra field to Detection(**fields).
FIFTYONE_RESERVED = {"id", "_id", "tags", "label", "bounding_box", "mask", "mask_path", "confidence", "index",
                     "instance", "instance_id", "attributes", "_cls"}
COCO_FIELDS = {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd", "keypoints", "num_keypoints"}
KINS_FIELDS = {"a_segm", "a_bbox", "a_area"}


@pytest.fixture(scope="module")
def near_store(tmp_path_factory: pytest.TempPathFactory) -> DatasetStore:
    """TINY_RECIPE seen from 0.5 m: objects cut by the border, partly hidden, small and one out of view."""
    folder = tmp_path_factory.mktemp("near")
    recipe = TINY_RECIPE.replace("distance: {uniform: [0.9, 1.2]}", "distance: 0.5")
    store = render_dataset(load_recipe(write_recipe(folder, recipe)), folder / "out").store
    objects = [o for r in store.records() for o in r["objects"]]
    # The filters below must each keep some objects and drop others.
    assert any(o["truncation"] > 0.1 for o in objects) and any(o["truncation"] <= 0.1 for o in objects)
    assert any(o["visibility"] is not None and o["visibility"] < 0.9 for o in objects)
    assert any(o["visible_pixels"] == 0 for o in objects)
    return store


class AsSequence(DatasetStore):
    """The store's frames read as one sequence, for the MOT exporter."""

    def records(self, repair: bool = False) -> list[dict]:
        return [{**r, "sequence": {"scene_index": 0, "frame": i, "fps": 10.0}}
                for i, r in enumerate(super().records(repair))]


FILTERS = {
    "min_visible_pixels": (ObjectFilter(min_visible_pixels=300), lambda o: o["visible_pixels"] >= 300),
    "min_visibility": (ObjectFilter(min_visibility=0.9), lambda o: o["visibility"] is not None and o["visibility"] >= 0.9),
    "max_truncation": (ObjectFilter(max_truncation=0.1), lambda o: o["truncation"] <= 0.1),
    "categories": (ObjectFilter(categories=frozenset({"ball", "ring"})), lambda o: o["category"] in ("ball", "ring")),
}


@pytest.mark.parametrize("name", FILTERS)
def test_every_exporter_keeps_the_same_objects(near_store, tmp_path, name):
    rule, keeps = FILTERS[name]
    records = near_store.records()
    kept = {(r["index"], o["instance_id"]) for r in records for o in r["objects"] if keeps(o)}
    visible = {(r["index"], o["instance_id"]) for r in records for o in r["objects"] if o["visible_pixels"]}
    assert 0 < len(kept & visible) < len(visible), "the filter keeps some visible objects and drops others"

    coco = export(near_store, "coco", tmp_path / "coco", objects=rule, masks="rle")
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(coco / "annotations.json"))
    annotations = truth.loadAnns(truth.getAnnIds())
    assert {(a["image_id"], a["sceneforge"]["instance_id"]) for a in annotations} == kept & visible
    instances = {r["index"]: near_store.read_instance(r) for r in records}
    for annotation in annotations:  # a kept object's mask is its whole visible mask
        expected = instances[annotation["image_id"]] == annotation["sceneforge"]["instance_id"]
        assert np.array_equal(truth.annToMask(annotation).astype(bool), expected)

    for task in ("detect", "segment"):
        yolo = export(near_store, "yolo", tmp_path / f"yolo_{task}", task=task, objects=rule)
        for record in records:
            rows = (yolo / "labels" / "train" / f"{record['index']:06d}.txt").read_text().splitlines()
            expected = [o for o in record["objects"] if (record["index"], o["instance_id"]) in kept & visible]
            assert [int(row.split()[0]) for row in rows] == [o["category_id"] - 1 for o in expected]
            if task == "detect":
                width, height = record["camera"]["width"], record["camera"]["height"]
                for row, obj in zip(rows, expected):
                    x, y, w, h = obj["bbox_xywh"]
                    cx, cy, bw, bh = map(float, row.split()[1:])
                    assert (cx * width - bw * width / 2, cy * height - bh * height / 2) == pytest.approx((x, y), abs=1e-3)

    shards = export(near_store, "webdataset", tmp_path / "wds", objects=rule)
    samples = list(webdataset.WebDataset([str(s) for s in sorted(shards.glob("*.tar"))], shardshuffle=False).decode())
    assert len(samples) == len(records)
    for sample in samples:
        index = int(sample["__key__"])
        assert {(index, o["instance_id"]) for o in sample["json"]["objects"]} == {k for k in kept if k[0] == index}
        assert np.array_equal(sample["instance.npy"], instances[index])  # the label maps stay as rendered

    mot = export(AsSequence(near_store.root), "mot", tmp_path / "mot", objects=rule)
    lines = (mot / "sequence-000000" / "gt" / "gt.txt").read_text().splitlines()
    frame_of = {i: r["index"] for i, r in enumerate(records)}
    assert {(frame_of[int(line.split(",")[0]) - 1], int(line.split(",")[1])) for line in lines} == kept & visible


def test_filters_combine(near_store, tmp_path):
    rule = ObjectFilter(min_visible_pixels=200, min_visibility=0.9, max_truncation=0.1, categories=frozenset({"box"}))
    expected = {(r["index"], o["instance_id"]) for r in near_store.records() for o in r["objects"]
                if o["visible_pixels"] >= 200 and (o["visibility"] or 0) >= 0.9 and o["truncation"] <= 0.1
                and o["category"] == "box"}
    document = json.loads((export(near_store, "coco", tmp_path / "coco", objects=rule) / "annotations.json").read_text())
    assert {(a["image_id"], a["sceneforge"]["instance_id"]) for a in document["annotations"]} == expected
    assert [a["id"] for a in document["annotations"]] == list(range(1, len(expected) + 1))


def test_cli_filters_and_their_mistakes(near_store, tmp_path):
    ok = run_cli("export", near_store.root, "-o", tmp_path / "yolo", "--format", "yolo", "--categories", "ring,ball",
                 "--min-visible-pixels", "250")
    assert ok.returncode == 0, ok.stderr
    rows = [line for f in (tmp_path / "yolo" / "labels" / "train").iterdir() for line in f.read_text().splitlines()]
    assert len(rows) == sum(o["category"] in ("ring", "ball") and o["visible_pixels"] >= 250
                            for r in near_store.records() for o in r["objects"])
    unknown = run_cli("export", near_store.root, "-o", tmp_path / "coco", "--categories", "ball,cube")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "--categories: 'cube' is not a category" in unknown.stderr and "box, ball, ring" in unknown.stderr
    assert not (tmp_path / "coco").exists()
    for option, value in (("--min-visibility", "1.5"), ("--max-truncation", "-0.1"), ("--min-visible-pixels", "-1")):
        refused = run_cli("export", near_store.root, "-o", tmp_path / "coco", option, value)
        assert refused.returncode == 2 and option in refused.stderr, (option, refused.stderr)


@pytest.mark.parametrize("rule, message", [
    (ObjectFilter(min_visibility=1.5), "--min-visibility: expected a fraction in"),
    (ObjectFilter(max_truncation=-0.1), "--max-truncation: expected a fraction in"),
    (ObjectFilter(min_visible_pixels=-1), "--min-visible-pixels: expected a pixel count"),
    (ObjectFilter(categories=frozenset({"cube"})), "its categories: box, ball, ring"),
])
def test_bad_filters_are_refused_before_writing(near_store, tmp_path, rule, message):
    with pytest.raises(UserError, match=message):
        export(near_store, "webdataset", tmp_path / "wds", objects=rule)
    assert not (tmp_path / "wds").exists()


@pytest.mark.parametrize("text", ["", " , "])
def test_empty_category_list(text):
    with pytest.raises(UserError, match="--categories: expected NAME,NAME"):
        parse_categories(text)


def test_coco_extras_avoid_reserved_names_and_sit_in_attributes(near_store, tmp_path):
    document = json.loads((export(near_store, "coco", tmp_path / "coco") / "annotations.json").read_text())
    objects = {(r["index"], o["instance_id"]): o for r in near_store.records() for o in r["objects"]}
    assert document["annotations"]
    for annotation in document["annotations"]:
        extras = set(annotation) - COCO_FIELDS - KINS_FIELDS
        assert extras == {"sceneforge", "attributes"}
        # FiftyOne merges `attributes` into the annotation and makes a Detection of every extra field.
        assert not (extras | set(annotation["attributes"])) & FIFTYONE_RESERVED - {"attributes"}
        obj = objects[(annotation["image_id"], annotation["sceneforge"]["instance_id"])]
        assert annotation["sceneforge"] == {k: obj[k] for k in ("instance_id", "visible_pixels", "visibility",
                                                                  "truncation", "depth_range")}
        attributes = annotation["attributes"]
        assert all(isinstance(v, (int, float, str, bool)) for v in attributes.values())  # CVAT and datumaro: scalars
        assert attributes == {"sceneforge_instance_id": obj["instance_id"], "visible_pixels": obj["visible_pixels"],
                              "visibility": obj["visibility"], "truncation": obj["truncation"],
                              "depth_min": obj["depth_range"][0], "depth_max": obj["depth_range"][1]}
        assert annotation["iscrowd"] == 0 and annotation["bbox"] == obj["bbox_xywh"]
        assert annotation["area"] == obj["visible_pixels"] and annotation["a_area"] == obj["unoccluded_pixels"]


def test_coco_standard_layout(tiny_store, tmp_path):
    dest = export(tiny_store, "coco", tmp_path / "flat", layout="standard")
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == sorted(
        ["annotations/instances_train.json", *(f"images/train/{r['index']:06d}.png" for r in tiny_store.records())])
    dest = export(tiny_store, "coco", tmp_path / "split", layout="standard", splits={"train": 0.5, "val": 0.5})
    seen = []
    for split in ("train", "val"):
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(dest / "annotations" / f"instances_{split}.json"))
        for image in coco.loadImgs(coco.getImgIds()):
            assert (dest / "images" / split / image["file_name"]).is_file()
            seen.append(image["id"])
        assert sorted(p.name for p in (dest / "images" / split).iterdir()) == sorted(
            i["file_name"] for i in coco.loadImgs(coco.getImgIds()))
    assert sorted(seen) == [r["index"] for r in tiny_store.records()]
    with pytest.raises(UserError, match="--layout: expected sceneforge or standard"):
        export(tiny_store, "coco", tmp_path / "bad", layout="datumaro")


def test_yolo_writes_dataset_yaml_beside_data_yaml(tiny_store, tmp_path):
    dest = export(tiny_store, "yolo", tmp_path / "yolo", splits={"train": 0.5, "val": 0.5})
    yaml = YAML(typ="safe", pure=True)
    data = yaml.load((dest / "data.yaml").read_text())
    assert yaml.load((dest / "dataset.yaml").read_text()) == data
    assert data["train"] == "images/train" and data["names"] == {0: "box", 1: "ball", 2: "ring"}


class BigIds(DatasetStore):
    """The store with instance ids 300 + id and category ids 1000 + id: values no 8-bit image holds."""

    def read_pass(self, record: dict, name: str) -> np.ndarray:
        array = super().read_pass(record, name)
        shift = {"instance": 300, "semantic": 1000}.get(name)
        return np.where(array > 0, array + shift, 0).astype(np.uint16) if shift else array


def test_webdataset_default_decoder_reads_every_pass_exactly(tiny_store, tmp_path):
    store = BigIds(tiny_store.root)
    dest = export(store, "webdataset", tmp_path / "wds")
    samples = list(webdataset.WebDataset([str(s) for s in sorted(dest.glob("*.tar"))], shardshuffle=False).decode())
    records = {f"{r['index']:06d}": r for r in store.records()}
    assert sorted(s["__key__"] for s in samples) == sorted(records)
    for sample in samples:
        record = records[sample["__key__"]]
        assert set(sample) - {"__key__", "__url__", "__local_path__"} == {
            "rgb.png", "json", "depth.npy", "distance.npy", "normals.npy", "instance.npy", "semantic.npy"}
        instance, semantic = sample["instance.npy"], sample["semantic.npy"]
        assert instance.dtype == semantic.dtype == np.uint16 and instance.max() > 300 and semantic.max() > 1000
        ids, classes = tiny_store.read_instance(record), tiny_store.read_semantic(record)
        assert np.array_equal(instance, np.where(ids > 0, ids + 300, 0))
        assert np.array_equal(semantic, np.where(classes > 0, classes + 1000, 0))
        depth = sample["depth.npy"]
        assert depth.dtype == np.float32 and len(np.unique(depth)) > 256  # metres, not 8-bit levels
        assert np.array_equal(depth, tiny_store.read_depth(record))
        assert np.array_equal(sample["distance.npy"], tiny_store.read_distance(record))
        assert sample["normals.npy"].dtype == np.float32
        assert np.array_equal(sample["normals.npy"], tiny_store.read_normals(record))
        assert sample["rgb.png"] == tiny_store.path(record, "rgb").read_bytes()  # RGB stays the stored PNG
