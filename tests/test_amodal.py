"""Amodal masks against analytic geometry: spheres behind a box, their whole silhouettes computed
here from each sphere's centre and radius through K; and the masks in every place a user meets
them (record, COCO, PyTorch Dataset, contact sheet, WebDataset).

The camera stands at (0, -2, 0.3) looking along +Y; a box's front face at y = -0.1 hides part of a
large sphere behind it and all of a small one.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tarfile

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from sceneforge.labels.export import export
from sceneforge.labels.preview import MIN_TILE_WIDTH, contact_sheet, instance_colour
from sceneforge.labels.rle import decode_mask
from sceneforge.labels.store import DatasetStore
from sceneforge.labels.torch import SceneForgeDataset
from sceneforge.pipeline import render_specs
from sceneforge.scenes.recipe import RenderSettings
from sceneforge.scenes.sampling import look_at
from sceneforge.scenes.spec import AssetRef, CameraSpec, LightSpec, MaterialSpec, ObjectSpec, RenderSpec, SceneSpec

W, H = 64, 48
F = (W / 2) / math.tan(math.radians(15))
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1]])
WORLD_FROM_CAMERA = look_at(np.array([0.0, -2.0, 0.3]), np.array([0.0, 0.0, 0.3]))
CAMERA_FROM_WORLD = np.linalg.inv(WORLD_FROM_CAMERA)
GREY = MaterialSpec(base_color=(0.6, 0.6, 0.6), roughness=0.5, metallic=0.0)
BOX, PARTLY, HIDDEN, CUT = 1, 2, 3, 4
# Sphere centres and radii (world, metres) by instance id.
SPHERES = {
    PARTLY: ((0.15, 0.6, 0.3), 0.2),  # its projection straddles the box's right edge
    HIDDEN: ((-0.04, 0.3, 0.3), 0.06),  # its projection lies inside the box's
}
# Frame 1: a sphere whose projected centre lies on the left image border (half of it outside).
CUT_SPHERE = ((-(K[0, 2] + 0.5) * 2.0 / F, 0.0, 0.3), 0.1)


def _object(instance_id: int, category_id: int, category: str, asset: AssetRef, centre, half_height: float) -> ObjectSpec:
    pose = np.eye(4)
    pose[:3, 3] = np.asarray(centre) - [0, 0, half_height]  # primitives stand on their origin
    return ObjectSpec(instance_id=instance_id, category_id=category_id, category=category, asset=asset,
                      world_from_object=tuple(map(tuple, pose)), material=GREY)


def ball(instance_id: int, centre, radius: float) -> ObjectSpec:
    return _object(instance_id, 2, "ball", AssetRef.primitive_asset("sphere", {"radius": radius}), centre, radius)


def scene(index: int, objects: list[ObjectSpec]) -> SceneSpec:
    camera = CameraSpec(K=tuple(map(tuple, K)), world_from_camera=tuple(map(tuple, WORLD_FROM_CAMERA)),
                        width=W, height=H, clip_start=0.01, clip_end=100.0)
    sun = LightSpec(type="sun", energy=3.0, color=(1, 1, 1), world_from_light=tuple(map(tuple, np.diag([1.0, -1, -1, 1]))),
                    size=0.5)
    settings = RenderSettings(samples=2).model_dump(exclude={"resolution"})
    return SceneSpec(index=index, scene_index=index, seed=index, camera=camera, objects=objects, lights=[sun],
                     ground=None, background_color=(0.1, 0.1, 0.1), background_strength=1.0,
                     render=RenderSpec(**settings, noise_seed=index))


SCENES = [
    scene(0, [_object(BOX, 1, "box", AssetRef.primitive_asset("box", {"extents": (0.2,) * 3}), (0.0, 0.0, 0.3), 0.1),
              *(ball(i, centre, radius) for i, (centre, radius) in SPHERES.items())]),
    scene(1, [ball(CUT, *CUT_SPHERE)]),
]


@pytest.fixture(scope="module")
def spheres(tmp_path_factory):
    store = DatasetStore.open_for_writing(
        tmp_path_factory.mktemp("amodal") / "out", recipe={}, recipe_hash="amodal",
        categories=["box", "ball"], resolution=(W, H), requested=len(SCENES),
    )
    render_specs(store, SCENES)
    return store, {r["index"]: r for r in store.records()}


def analytic_disc(centre_world, radius: float) -> np.ndarray:
    """H x W bool: the pixels whose centre ray meets the sphere (its projected ellipse), computed
    from the centre and radius through K alone."""
    c = CAMERA_FROM_WORLD[:3, :3] @ np.asarray(centre_world) + CAMERA_FROM_WORLD[:3, 3]
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    d = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T
    dc, dd = d @ c, np.einsum("hwi,hwi->hw", d, d)
    return (dc**2 - dd * (c @ c - radius**2) >= 0) & (dc > 0)


def boundary_band(mask: np.ndarray) -> np.ndarray:
    """The pixels on either side of the mask's edge (8-neighbourhood)."""
    kernel = np.ones((3, 3), np.uint8)
    m = mask.astype(np.uint8)
    return (cv2.dilate(m, kernel) != cv2.erode(m, kernel))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def objects_of(record: dict) -> dict[int, dict]:
    return {o["instance_id"]: o for o in record["objects"]}


def test_amodal_masks_are_the_analytic_silhouettes(spheres):
    _, records = spheres
    for index, expected in ((0, SPHERES), (1, {CUT: CUT_SPHERE})):
        objects = objects_of(records[index])
        for instance_id, (centre, radius) in expected.items():
            amodal, truth = decode_mask(objects[instance_id]["amodal_mask"]), analytic_disc(centre, radius)
            assert iou(amodal, truth) >= 0.97, instance_id
            # Where they differ, it is on the analytic edge (the mesh is an icosphere).
            assert not (amodal ^ truth)[~boundary_band(truth)].any(), instance_id


def test_a_partly_hidden_sphere_shows_less_than_its_amodal_mask(spheres):
    store, records = spheres
    instance = store.read_instance(records[0])
    obj = objects_of(records[0])[PARTLY]
    amodal, visible = decode_mask(obj["amodal_mask"]), instance == PARTLY
    assert not (visible & ~amodal).any()
    assert 0.2 * amodal.sum() < visible.sum() < 0.8 * amodal.sum()
    # The hidden part is what the box covers.
    assert np.all(instance[amodal & ~visible] == BOX)


def test_a_fully_hidden_sphere_has_an_empty_visible_mask_and_a_full_amodal_one(spheres):
    store, records = spheres
    obj = objects_of(records[0])[HIDDEN]
    assert obj["visible_pixels"] == 0 and not (store.read_instance(records[0]) == HIDDEN).any()
    amodal = decode_mask(obj["amodal_mask"])
    assert amodal.sum() == obj["unoccluded_pixels"] >= 30
    assert obj["visibility"] == 0.0


def test_truncated_amodal_mask_keeps_the_in_image_part(spheres):
    _, records = spheres
    obj = objects_of(records[1])[CUT]
    assert obj["truncation"] == pytest.approx(0.5, abs=0.05)
    assert decode_mask(obj["amodal_mask"]).shape == (H, W)


def test_visible_is_within_amodal_and_unoccluded_is_its_area(spheres, tiny_store):
    occluded = 0
    for store in (spheres[0], tiny_store):
        for record in store.records():
            instance = store.read_instance(record)
            for obj in record["objects"]:
                amodal = decode_mask(obj["amodal_mask"])
                visible = instance == obj["instance_id"]
                assert amodal.shape == instance.shape
                assert not (visible & ~amodal).any(), (record["index"], obj["instance_id"])
                assert obj["unoccluded_pixels"] == amodal.sum()
                occluded += obj["visible_pixels"] < obj["unoccluded_pixels"]
    assert occluded >= 2, "the scenes must have occlusion to test"


@pytest.mark.parametrize("masks", ["rle", "polygon"])
def test_coco_amodal_fields_decode_to_the_amodal_masks(spheres, tmp_path, masks):
    store, records = spheres
    dest = export(store, "coco", tmp_path / "coco", masks=masks)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(dest / "annotations.json"))
    annotations = coco.loadAnns(coco.getAnnIds())
    assert {(a["image_id"], a["sceneforge"]["instance_id"]) for a in annotations} == {(0, BOX), (0, PARTLY), (1, CUT)}
    for annotation in annotations:
        obj = objects_of(records[annotation["image_id"]])[annotation["sceneforge"]["instance_id"]]
        # pycocotools' own reader, with the amodal fields in COCO's places.
        mask = coco.annToMask({**annotation, "segmentation": annotation["a_segm"]}).astype(bool)
        assert np.array_equal(mask, decode_mask(obj["amodal_mask"]))
        ys, xs = np.nonzero(mask)
        assert annotation["a_bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert annotation["a_area"] == obj["unoccluded_pixels"] == mask.sum()
    partly = next(a for a in annotations if a["sceneforge"]["instance_id"] == PARTLY)
    assert partly["area"] < partly["a_area"]
    centre, radius = SPHERES[PARTLY]
    assert iou(coco.annToMask({**partly, "segmentation": partly["a_segm"]}).astype(bool), analytic_disc(centre, radius)) >= 0.97


def test_dataset_returns_amodal_masks_beside_the_visible_ones(spheres):
    store, records = spheres
    sample = SceneForgeDataset(store.root)[0]
    target = sample["target"]
    assert target["amodal_masks"].shape == target["masks"].shape == (2, H, W)
    assert target["instance_ids"].tolist() == [BOX, PARTLY]
    amodal = target["amodal_masks"].numpy().astype(bool)
    assert np.all(amodal >= target["masks"].numpy().astype(bool))
    centre, radius = SPHERES[PARTLY]
    assert iou(amodal[1], analytic_disc(centre, radius)) >= 0.97


def test_stores_without_amodal_masks_still_export_and_load(spheres, tmp_path):
    store, _ = spheres
    old = DatasetStore.open_for_writing(tmp_path / "old", recipe={}, recipe_hash="amodal", categories=["box", "ball"],
                                        resolution=(W, H), requested=len(SCENES))
    records = store.records()
    for record in records:
        for name, relative in record["files"].items():
            (old.root / relative).parent.mkdir(exist_ok=True)
            (old.root / relative).write_bytes(store.path(record, name).read_bytes())
        record["objects"] = [{k: v for k, v in o.items() if k != "amodal_mask"} for o in record["objects"]]
    old.rewrite_records(records)
    assert "amodal_masks" not in SceneForgeDataset(old.root)[0]["target"]
    document = json.loads((export(old, "coco", tmp_path / "coco") / "annotations.json").read_text())
    assert not {"a_segm", "a_bbox", "a_area"} & {k for a in document["annotations"] for k in a}


def test_contact_sheet_dashes_the_hidden_outline(spheres):
    store, records = spheres
    sheet = contact_sheet(store, [0])
    scale = -(-MIN_TILE_WIDTH // W)
    tile = sheet[:H * scale, 3 * W * scale:4 * W * scale]  # rgb, depth, normals, instances

    def big(mask: np.ndarray) -> np.ndarray:
        return np.kron(mask, np.ones((scale, scale), bool))

    box = big(store.read_instance(records[0]) == BOX)
    for instance_id in (PARTLY, HIDDEN):
        # The sphere's colour appears over the box only through its dashed amodal outline.
        outline = box & np.all(tile == instance_colour(instance_id), axis=-1)
        assert outline.sum() >= 4 * scale, instance_id
        assert np.all(big(decode_mask(objects_of(records[0])[instance_id]["amodal_mask"]))[outline])


def test_webdataset_records_carry_the_amodal_masks(spheres, tmp_path):
    store, records = spheres
    dest = export(store, "webdataset", tmp_path / "wds")
    with tarfile.open(dest / "shard-000000.tar") as shard:
        sample = json.loads(shard.extractfile("000000.json").read())
    for obj in sample["objects"]:
        expected = objects_of(records[0])[obj["instance_id"]]["amodal_mask"]
        assert obj["amodal_mask"] == expected
        assert mask_utils.area({"size": expected["size"], "counts": expected["counts"].encode()}) == obj["unoccluded_pixels"]
