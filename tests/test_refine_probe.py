"""The structural sim-to-real fixture and the task probe (``sceneforge refine probe``)."""

from __future__ import annotations

import json
import math
import shutil
import statistics

import numpy as np
import pytest
import torch

from sceneforge.labels.store import DatasetStore
from sceneforge.labels.torch import image_tensor
from sceneforge.refine.apply import refined_images
from sceneforge.refine.data import RealPhotos
from sceneforge.refine.metrics import boundary_structure, sliced_wasserstein
from sceneforge.refine.model import RefinerConfig
from sceneforge.refine.probe import (benchmark_miou, confidence_interval, confusion_matrix, evaluate_probe,
                                     iou_per_class, labeled_set, mean_iou, store_images, train_probe)
from sceneforge.refine.train import TrainOptions, train
from sceneforge.refine_fixture import build_structural_fixture

from .helpers import run_cli

SIZE = 32


@pytest.fixture(scope="module")
def structural(tmp_path_factory):
    """The structural fixture, tiny: 8 sim and 8 real frames of 32 px, 1 sample."""
    return build_structural_fixture(tmp_path_factory.mktemp("structural"), frames=8, size=SIZE, samples=1)


def test_the_structural_fixture_is_another_domain_with_the_same_categories(structural):
    sim, real = structural.sim, structural.real
    assert [c["name"] for c in sim.meta["categories"]] == [c["name"] for c in real.meta["categories"]] == ["box", "ball", "can"]
    sim_records, real_records = sim.records(), real.records()
    assert len(sim_records) == len(real_records) == 8
    assert not {r["seed"] for r in sim_records} & {r["seed"] for r in real_records}  # never the same scenes
    # other camera statistics: the focal length of a 50 and a 62 degree field of view at 32 px
    assert {round(r["camera"]["K"][0][0], 3) for r in sim_records} == {round(16 / math.tan(math.radians(25)), 3)}
    assert {round(r["camera"]["K"][0][0], 3) for r in real_records} == {round(16 / math.tan(math.radians(31)), 3)}
    # a sensor (the clean image kept beside it) and another view transform on the real side only
    assert "rgb_clean" in real.meta["passes"] and "rgb_clean" not in sim.meta["passes"]
    assert {r["view_transform"] for r in real_records} == {"filmic"} and {r["view_transform"] for r in sim_records} == {"standard"}
    # textures: the real ground varies far more between neighbouring pixels than the plain sim ground
    def ground_roughness(store: DatasetStore) -> float:
        values = []
        for record in store.records():
            grey = store.read_rgb(record, "rgb_clean" if "rgb_clean" in record["files"] else "rgb").mean(-1)
            background = store.read_instance(record) == 0
            step = np.abs(np.diff(grey, axis=1))[background[:, 1:] & background[:, :-1]]
            values.append(step.mean())
        return float(np.mean(values))
    assert ground_roughness(real) > 2 * ground_roughness(sim)
    # the photos are the real RGB alone: the same bytes, no labels beside them
    photos = sorted(structural.photos.iterdir())
    assert [p.read_bytes() for p in photos] == [real.path(r, "rgb").read_bytes() for r in real_records]


def test_the_refiner_leaves_the_renders_whatever_its_training_seed(structural, tmp_path):
    """With CycleGAN's identity loss and an unregularised discriminator, a refiner that starts as
    the identity could stay there for one training seed and move for another (docs/refiner.md,
    "Training that starts reliably"): every seed must now move towards the photos."""
    sim = structural.sim
    records = sim.records()
    renders = image_tensor(np.stack([sim.read_rgb(r) for r in records]))
    photos = image_tensor(np.stack(RealPhotos(structural.photos, SIZE).images))
    instances = torch.from_numpy(np.stack([sim.read_instance(r).astype(np.int64) for r in records]))
    raw = statistics.fmean(sliced_wasserstein(renders, photos, levels=3))
    for seed in (0, 1, 2):
        options = TrainOptions(steps=150, size=SIZE, batch=4, checkpoint_every=150, seed=seed,
                               config=RefinerConfig(channels=8, blocks=2, disc_channels=8))
        train(sim.root, structural.photos, tmp_path / f"seed{seed}", options, "cpu")
        refined = image_tensor(np.stack(refined_images(sim, records, tmp_path / f"seed{seed}", "cpu")))
        assert statistics.fmean(sliced_wasserstein(refined, photos, levels=3)) < 0.9 * raw, seed
        # the outlines stay (texture may come: the real grounds have it)
        kept = boundary_structure(renders, refined, instances)
        assert kept["boundary_edge_recall"] >= 0.9 and kept["boundary_edge_precision"] >= 0.9, (seed, kept)


def test_iou_of_a_hand_made_case():
    truth = np.array([[0, 0, 1, 1], [0, 2, 2, 1]])
    predicted = np.array([[0, 1, 1, 1], [2, 2, 0, 1]])
    confusion = confusion_matrix(truth, predicted, 4)
    assert confusion[0].tolist() == [1, 1, 1, 0] and confusion[1].tolist() == [0, 3, 0, 0]
    assert confusion[2].tolist() == [1, 0, 1, 0] and confusion[3].sum() == 0
    iou = iou_per_class(confusion)
    # by hand: class 0 shares 1 of the 4 pixels labelled or predicted 0, class 1 3 of 4, class 2 1 of 3
    assert iou[:3] == pytest.approx([1 / 4, 3 / 4, 1 / 3]) and math.isnan(iou[3])
    assert mean_iou(iou) == pytest.approx((3 / 4 + 1 / 3) / 2)  # background and the absent class left out


def test_confidence_interval_is_students_t():
    mean, half_width = confidence_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half_width == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)  # t(0.975, 2) from a table
    assert math.isnan(confidence_interval([0.5])[1])


def _independent_mean_iou(predicted: np.ndarray, truth: np.ndarray, classes: int) -> float:
    ious = []
    for k in range(1, classes):
        union = np.logical_or(predicted == k, truth == k).sum()
        if union:
            ious.append(np.logical_and(predicted == k, truth == k).sum() / union)
    return float(np.mean(ious))


def test_probe_command_on_the_tiny_fixture(structural, tmp_path):
    store = DatasetStore(shutil.copytree(structural.sim.root, tmp_path / "sim"))
    (store.root / "rgb_refined").mkdir()
    for record in store.records():  # an identity "refiner": refined frames equal to the renders
        store.write_colour("rgb_refined", record["index"], store.read_rgb(record))
    store.record_pass("rgb_refined", {})
    out = tmp_path / "probe.json"
    result = run_cli("refine", "probe", "--store", store.root, "--real-labeled", structural.real.root, "--refined",
                     "--seeds", "2", "--steps", "12", "--size", str(SIZE), "--device", "cpu", "-o", out)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["raw"]["frames"] == report["refined"]["frames"] == 8
    assert report["oracle"]["frames"] == report["evaluation_frames"] == 4
    assert set(report["raw"]["iou"]) == {"background", "box", "ball", "can"}
    # same images and seeds: the same numbers, so the difference is exactly 0
    assert report["refined"]["mean_iou_per_seed"] == report["raw"]["mean_iou_per_seed"]
    assert report["refined_minus_raw"]["mean"] == 0
    for side in ("raw", "oracle"):
        assert all(0 <= v <= 1 for v in report[side]["mean_iou_per_seed"])
        assert report[side]["mean_iou"] == pytest.approx(np.mean(report[side]["mean_iou_per_seed"]))
    assert "oracle" in result.stdout and "refined - raw: +0.000" in result.stdout
    # the same seed in this process gives the number the command printed, scored here independently
    # on the evaluation half (the real frames at odd positions)
    raw = store_images(store, SIZE)
    real = labeled_set(structural.real.root, SIZE)
    model = train_probe(raw, 4, steps=12, seed=1, device=torch.device("cpu"))
    held_out = real.images[1::2]
    with torch.inference_mode():
        logits = model(torch.from_numpy(held_out).permute(0, 3, 1, 2).float() / 127.5 - 1)
    assert _independent_mean_iou(logits.argmax(1).numpy(), real.classes[1::2], 4) == pytest.approx(
        report["raw"]["mean_iou_per_seed"][1], abs=1e-12)
    confusion = evaluate_probe(model, type(real)(held_out, real.classes[1::2], real.categories, "held out"), 4,
                               torch.device("cpu"))
    assert confusion.sum() == 4 * SIZE * SIZE
    # the comparison benchmark's column: one probe on given images (here the renders) scores as the command's raw run
    images = [store.read_rgb(record) for record in store.records()]
    assert benchmark_miou(store, images, structural.real.root, seed=1, steps=12, size=SIZE) == pytest.approx(
        report["raw"]["mean_iou_per_seed"][1], abs=1e-12)


def _coco(structural, tmp_path):
    dest = tmp_path / "coco"
    result = run_cli("export", structural.real.root, "-o", dest)
    assert result.returncode == 0, result.stderr
    return dest, json.loads((dest / "annotations.json").read_text())


def test_coco_with_masks_reads_as_the_store_and_reordered_categories_are_mapped(structural, tmp_path):
    from sceneforge.refine.probe import category_mapping

    dest, coco = _coco(structural, tmp_path)
    from_store = labeled_set(structural.real.root, SIZE)
    from_coco = labeled_set(dest, SIZE)
    assert from_coco.categories == from_store.categories
    assert np.array_equal(from_coco.images, from_store.images)
    assert np.array_equal(from_coco.classes, from_store.classes) and from_store.classes.max() > 0
    # the same names under other ids and in another order: mapped back by name
    new_id = {1: 30, 2: 20, 3: 10}
    coco["categories"] = [{**c, "id": new_id[c["id"]]} for c in coco["categories"]]
    for annotation in coco["annotations"]:
        annotation["category_id"] = new_id[annotation["category_id"]]
    (dest / "annotations.json").write_text(json.dumps(coco))
    reordered = labeled_set(dest, SIZE)
    assert reordered.categories == ["can", "ball", "box"]
    assert np.array_equal(category_mapping(from_store.categories, reordered)[reordered.classes], from_store.classes)


def test_probe_bad_input_is_a_located_error(structural, tmp_path):
    dest, coco = _coco(structural, tmp_path)
    sim = structural.sim.root

    def probe(store, real, *extra):
        result = run_cli("refine", "probe", "--store", store, "--real-labeled", real, "--device", "cpu", *extra)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        return result.stderr

    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps({**coco, "categories": [{**c, "name": c["name"].replace("can", "bottle")} for c in coco["categories"]]}))
    shutil.copytree(dest / "images", tmp_path / "images")
    message = probe(sim, renamed)
    assert "['box', 'ball', 'bottle']" in message and "['box', 'ball', 'can']" in message and str(renamed) in message
    boxes_only = tmp_path / "boxes.json"
    annotations = [{k: v for k, v in a.items() if k != "segmentation"} for a in coco["annotations"]]
    boxes_only.write_text(json.dumps({**coco, "annotations": annotations}))
    message = probe(sim, boxes_only)
    assert f"annotation {annotations[0]['id']} (image {annotations[0]['image_id']})" in message and "no segmentation" in message
    empty = shutil.copytree(sim, tmp_path / "empty")
    (empty / "frames.jsonl").write_text("")
    assert "no finished frames" in probe(empty, structural.real.root)
    assert "rgb_refined" in probe(sim, structural.real.root, "--refined")
