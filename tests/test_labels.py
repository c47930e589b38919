"""Labels of a rendered store agree with each other, with frames.jsonl and with pycocotools."""

from __future__ import annotations

import json

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from sceneforge.labels.export import export
from sceneforge.scenes.sampling import sample
from sceneforge.scenes.recipe import Recipe
from sceneforge.scenes.spec import SceneSpec


def test_store_metadata(tiny_store):
    meta = tiny_store.meta
    assert meta["format"] == "sceneforge.store/1"
    assert [(c["id"], c["name"]) for c in meta["categories"]] == [(1, "box"), (2, "ball"), (3, "ring")]
    assert [len(c["keypoints"]) for c in meta["categories"]] == [8, 2, 4]  # the primitives' canonical ones
    assert meta["counts"] == {"requested": 3, "finished": 3}
    assert meta["resolution"] == [96, 72]
    assert {"rgb", "depth", "normals", "instance", "semantic"} <= set(meta["passes"])
    assert "bpy" in meta["software"]


def test_scene_files_regenerate_from_recipe_and_index(tiny_store):
    recipe = Recipe.model_validate(tiny_store.meta["recipe"])
    for record in tiny_store.records():
        stored = SceneSpec.from_json(tiny_store.path(record, "scene").read_text())
        assert stored == sample(recipe, record["index"])
        assert record["seed"] == stored.seed


def test_instance_and_semantic_maps_agree_with_records(tiny_store):
    for record in tiny_store.records():
        instance, semantic = tiny_store.read_instance(record), tiny_store.read_semantic(record)
        assert instance.dtype == semantic.dtype == np.uint16
        objects = {o["instance_id"]: o for o in record["objects"]}
        assert set(np.unique(instance)) - {0} <= set(objects)
        assert np.all((semantic == 0) == (instance == 0))
        for instance_id, obj in objects.items():
            mask = instance == instance_id
            assert np.all(semantic[mask] == obj["category_id"])
            assert obj["visible_pixels"] == int(mask.sum())
        assert sum(o["visible_pixels"] > 0 for o in objects.values()) >= 2, "the camera sees the objects"


def test_every_bbox_equals_its_mask_bounds(tiny_store):
    for record in tiny_store.records():
        instance = tiny_store.read_instance(record)
        for obj in record["objects"]:
            ys, xs = np.nonzero(instance == obj["instance_id"])
            if len(xs) == 0:
                assert obj["bbox_xywh"] is None
                continue
            assert obj["bbox_xywh"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_depth_and_normals_are_consistent_with_instances(tiny_store):
    for record in tiny_store.records():
        depth, normals, instance = tiny_store.read_depth(record), tiny_store.read_normals(record), tiny_store.read_instance(record)
        on_objects = instance > 0
        assert np.all(np.isfinite(depth[on_objects])) and np.all(depth[on_objects] > 0.3)
        lengths = np.linalg.norm(normals[on_objects], axis=-1)
        assert np.allclose(lengths, 1.0, atol=1e-4)
        # Surfaces the camera sees face it: normal . viewing ray < 0 (allowing blended edge pixels).
        K_inv = np.linalg.inv(np.asarray(record["camera"]["K"]))
        ys, xs = np.nonzero(on_objects)
        rays = np.stack([xs, ys, np.ones_like(xs)], axis=-1) @ K_inv.T
        facing = np.einsum("ij,ij->i", rays, normals[ys, xs]) < 0
        assert facing.mean() > 0.95


def test_coco_masks_decode_to_instance_maps(tiny_store, tmp_path):
    dest = export(tiny_store, "coco", tmp_path / "coco")
    coco = COCO(str(dest / "annotations.json"))
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"box", "ball", "ring"}
    records = {r["index"]: r for r in tiny_store.records()}
    assert sorted(coco.getImgIds()) == sorted(records)
    checked = 0
    for ann in coco.loadAnns(coco.getAnnIds()):
        record = records[ann["image_id"]]
        expected = tiny_store.read_instance(record) == ann["sceneforge"]["instance_id"]
        decoded = coco.annToMask(ann).astype(bool)
        assert np.array_equal(decoded, expected)  # the default polygons are exact, pixel for pixel
        assert isinstance(ann["segmentation"], list)
        assert ann["area"] == expected.sum() and ann["iscrowd"] == 0
        assert ann["bbox"] == mask_utils.toBbox(coco.annToRLE(ann)).tolist()
        checked += 1
    assert checked == sum(o["visible_pixels"] > 0 for r in records.values() for o in r["objects"])
    image = coco.loadImgs([0])[0]
    assert (dest / "images" / image["file_name"]).is_file()
    assert json.loads((dest / "annotations.json").read_text())["info"]["recipe_hash"] == tiny_store.meta["recipe_hash"]
