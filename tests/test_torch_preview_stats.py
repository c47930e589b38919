"""The PyTorch Dataset with a multi-worker DataLoader, the contact sheet and the stats report."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sceneforge.floor.errors import UserError
from sceneforge.labels.export import export
from sceneforge.labels.preview import contact_sheet, instance_colour
from sceneforge.labels.stats import dataset_stats, write_plots
from sceneforge.labels.store import DatasetStore
from sceneforge.labels.torch import SceneForgeDataset, collate

from .helpers import run_cli


def test_dataset_samples_match_the_store(tiny_store):
    data = SceneForgeDataset(tiny_store.root, passes=("depth", "normals", "instance", "semantic"))
    records = tiny_store.records()
    assert len(data) == len(records)
    for sample, record in zip(data, records):
        height, width = record["camera"]["height"], record["camera"]["width"]
        assert sample["image"].shape == (3, height, width) and sample["image"].dtype == torch.float32
        assert 0.0 <= sample["image"].min() and sample["image"].max() <= 1.0
        assert sample["depth"].shape == (1, height, width) and sample["normals"].shape == (3, height, width)
        instance = tiny_store.read_instance(record)
        assert torch.equal(sample["instance"], torch.from_numpy(instance.astype(np.int64)))
        visible = [o for o in record["objects"] if o["visible_pixels"]]
        target = sample["target"]
        assert target["labels"].tolist() == [o["category_id"] for o in visible]
        for box, mask, obj in zip(target["boxes"], target["masks"], visible):
            x, y, w, h = obj["bbox_xywh"]
            assert box.tolist() == [x, y, x + w, y + h]
            assert torch.equal(mask.bool(), torch.from_numpy(instance == obj["instance_id"]))


def test_dataloader_with_workers_and_collate(tiny_store):
    data = SceneForgeDataset(tiny_store.root, passes=("depth",))
    loader = DataLoader(data, batch_size=2, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert [b["image"].shape[0] for b in batches] == [2, 1]
    assert batches[0]["depth"].shape == (2, 1, 72, 96)
    assert sorted(i for b in batches for i in b["index"].tolist()) == [r["index"] for r in tiny_store.records()]
    assert all(isinstance(b["target"], list) and "boxes" in b["target"][0] for b in batches)


def test_dataset_rejects_passes_the_store_lacks(tiny_store):
    with pytest.raises(UserError, match="no pass 'albedo' here"):
        SceneForgeDataset(tiny_store.root, passes=("albedo",))


def test_contact_sheet_shows_every_frame_and_marks_objects(tiny_store):
    sheet = contact_sheet(tiny_store)
    records = tiny_store.records()
    scale = -(-256 // 96)
    assert sheet.shape == (len(records) * 72 * scale, 4 * 96 * scale, 3)
    first = records[0]
    obj = next(o for o in first["objects"] if o["visible_pixels"])
    x, y, _, _ = (v * scale for v in obj["bbox_xywh"])
    instances_tile = sheet[: 72 * scale, 3 * 96 * scale:]
    assert tuple(instances_tile[y + 4, x]) == instance_colour(obj["instance_id"])  # the box's left edge
    assert contact_sheet(tiny_store, indices=[records[-1]["index"]]).shape[0] == 72 * scale


def test_stats_count_objects_and_write_plots(tiny_store, tmp_path):
    numbers = dataset_stats(tiny_store)
    records = tiny_store.records()
    assert numbers["frames"] == len(records)
    assert sum(c["objects"] for c in numbers["categories"]) == sum(len(r["objects"]) for r in records)
    visible = sum(o["visible_pixels"] > 0 for r in records for o in r["objects"])
    assert sum(c["visible"] for c in numbers["categories"]) == visible
    assert sum(numbers["visibility_histogram"]["counts"]) == visible
    assert sum(numbers["objects_per_image"].values()) == len(records)
    paths = write_plots(numbers, tmp_path / "plots")
    assert [p.name for p in paths] == ["class_balance.png", "objects_per_image.png", "box_size.png", "visibility.png",
                                       "truncation.png", "depth.png", "clipped.png"]
    assert sum(numbers["truncation_histogram"]["counts"]) == visible
    boxes = [np.sqrt(o["bbox_xywh"][2] * o["bbox_xywh"][3]) for r in records for o in r["objects"] if o["visible_pixels"]]
    edges = numbers["box_size_histogram"]["edges"]
    assert numbers["box_size_histogram"]["counts"] == [sum(a <= b < z for b in boxes) for a, z in zip(edges[:-1], edges[1:])]
    assert sum(numbers["clipped_histogram"]["counts"]) == len(records)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_preview_and_stats_commands(tiny_store, tmp_path):
    sheet = tmp_path / "sheet.png"
    result = run_cli("preview", tiny_store.root, "-o", sheet, "--frames", "0")
    assert result.returncode == 0, result.stderr and sheet.is_file()
    result = run_cli("stats", tiny_store.root, "--plots", tmp_path / "plots")
    assert result.returncode == 0, result.stderr
    assert "ball" in result.stdout and (tmp_path / "plots" / "depth.png").is_file()
    bad = run_cli("preview", tiny_store.root, "-o", sheet, "--frames", "zero")
    assert bad.returncode == 2 and "comma-separated frame indices" in bad.stderr


@pytest.fixture
def refined_store(tiny_store, tmp_path):
    """A copy of the tiny store with a stand-in refined RGB (colours inverted) for every frame."""
    root = tmp_path / "refined"
    shutil.copytree(tiny_store.root, root)
    (root / "rgb_refined").mkdir()
    lines = []
    for record in tiny_store.records():
        name = f"rgb_refined/{record['index']:06d}.png"
        cv2.imwrite(str(root / name), 255 - cv2.imread(str(tiny_store.path(record, "rgb"))))
        lines.append(json.dumps({**record, "files": {**record["files"], "rgb_refined": name}}))
    (root / "frames.jsonl").write_text("\n".join(lines) + "\n")
    return DatasetStore(root)


def test_contact_sheet_adds_the_refined_column(refined_store):
    scale = -(-256 // 96)
    sheet = contact_sheet(refined_store, max_frames=1)
    assert sheet.shape == (72 * scale, 5 * 96 * scale, 3)
    record = refined_store.records()[0]
    refined_tile = sheet[:, 4 * 96 * scale:]
    expected = cv2.resize(255 - refined_store.read_rgb(record), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(refined_tile[20:], expected[20:])  # below the caption


def test_export_of_the_refined_rgb(refined_store, tmp_path):
    dest = export(refined_store, "coco", tmp_path / "coco", rgb="refined")
    for record in refined_store.records():
        exported = cv2.imread(str(dest / "images" / f"{record['index']:06d}.png"))[..., ::-1]
        assert np.array_equal(exported, refined_store.read_rgb(record, "rgb_refined"))
    data = SceneForgeDataset(refined_store, rgb="refined")
    assert torch.equal(data[0]["image"], torch.from_numpy(refined_store.read_rgb(refined_store.records()[0], "rgb_refined").transpose(2, 0, 1).copy()).float() / 255)
