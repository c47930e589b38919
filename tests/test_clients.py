"""The exports read by the real clients, each installed from the package index into its own folder
by tests/clients/install.sh (they need numpy >= 2, the project's bpy numpy < 2) and run in an
interpreter that sees only that folder: FiftyOne's COCO and YOLOv5 importers (no MongoDB) and
datumaro's COCO importer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from sceneforge.labels.export import export

from .helpers import ROOT

CLIENTS = ROOT / "tests" / "clients"


def client_folder(name: str, root: Path = ROOT) -> Path:
    """The folder tests/clients/install.sh installed ``name`` into, at the version pinned in
    tests/clients/pins.txt; fails the test (not a skip: the check would silently vanish) otherwise."""
    pin = next(p for p in (CLIENTS / "pins.txt").read_text().split() if p.split("==")[0] == name)
    folder = root / ".clients" / name
    marker = folder / ".pin"
    if not marker.is_file() or marker.read_text().strip() != pin:
        pytest.fail(f"{folder} does not hold {pin}: run tests/clients/install.sh first (.ci/run does)", pytrace=False)
    return folder


def run_client(name: str, script: str, *args: object, tmp_path: Path) -> object:
    """Run tests/clients/SCRIPT with ARGS in the client's own interpreter and return the JSON it
    wrote to its last argument."""
    out = tmp_path / f"{name}.json"
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "FIFTYONE_DO_NOT_TRACK": "true"}
    run = subprocess.run([sys.executable, "-I", "-S", str(CLIENTS / "isolated.py"), str(client_folder(name)),
                          str(CLIENTS / script), *map(str, args), str(out)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(out.read_text())


def test_a_missing_client_folder_fails_and_says_to_run_install_sh(tmp_path):
    with pytest.raises(pytest.fail.Exception, match=r"run tests/clients/install.sh first"):
        client_folder("fiftyone", root=tmp_path)
    (tmp_path / ".clients" / "datumaro").mkdir(parents=True)
    (tmp_path / ".clients" / "datumaro" / ".pin").write_text("datumaro==0.1\n")  # an older install
    with pytest.raises(pytest.fail.Exception, match=r"does not hold datumaro==.*run tests/clients/install.sh"):
        client_folder("datumaro", root=tmp_path)


def test_the_client_interpreter_sees_only_its_folder(tmp_path):
    folder = client_folder("datumaro")
    probe = tmp_path / "probe.py"
    probe.write_text("import json, sys, numpy\n"
                     "json.dump({'numpy': numpy.__version__, 'path': sys.path}, open(sys.argv[1], 'w'))\n")
    seen = run_client("datumaro", str(probe), tmp_path=tmp_path)
    assert int(seen["numpy"].split(".")[0]) >= 2
    site_packages = [p for p in seen["path"] if "site-packages" in p or "dist-packages" in p]
    assert site_packages == [], site_packages  # the venv's (numpy < 2) is not on the path
    assert str(folder) in seen["path"] and str(ROOT) not in seen["path"]


def coco_truth(document: dict) -> tuple[dict, dict, dict]:
    """Images by id, annotations by (image id, SceneForge instance id), category names by id."""
    images = {i["id"]: i for i in document["images"]}
    annotations = {(a["image_id"], a["sceneforge"]["instance_id"]): a for a in document["annotations"]}
    names = {c["id"]: c["name"] for c in document["categories"]}
    return images, annotations, names


@pytest.mark.parametrize("layout", ["sceneforge", "standard"])
def test_fiftyone_coco_importer_reads_every_image_and_annotation_with_the_extras(tiny_store, tmp_path, layout):
    dest = export(tiny_store, "coco", tmp_path / "coco", layout=layout)
    if layout == "standard":
        images_dir, labels = dest / "images" / "train", dest / "annotations" / "instances_train.json"
    else:
        images_dir, labels = dest / "images", dest / "annotations.json"
    document = json.loads(labels.read_text())
    images, annotations, names = coco_truth(document)
    assert annotations and len(annotations) == len(document["annotations"])
    read = run_client("fiftyone", "read_fiftyone.py", "coco", images_dir, labels, tmp_path=tmp_path)

    by_file = {i["file_name"]: i for i in images.values()}
    assert sorted(Path(r["image"]).relative_to(images_dir).as_posix() for r in read) == sorted(by_file)
    assert sum(len(r["detections"]) for r in read) == len(document["annotations"])
    for entry in read:
        image = by_file[Path(entry["image"]).relative_to(images_dir).as_posix()]
        assert entry["size"] == [image["width"], image["height"]]
        for detection in entry["detections"]:
            annotation = annotations.pop((image["id"], detection["sceneforge"]["instance_id"]))
            assert detection["label"] == names[annotation["category_id"]]
            x, y, w, h = annotation["bbox"]
            expected = [x / image["width"], y / image["height"], w / image["width"], h / image["height"]]
            assert detection["bounding_box"] == pytest.approx(expected, abs=1e-6)
            assert detection["sceneforge"] == annotation["sceneforge"]
            # FiftyOne merges `attributes` into the Detection's own fields.
            assert {k: detection[k] for k in annotation["attributes"]} == annotation["attributes"]
    assert not annotations  # every annotation read exactly once


def test_fiftyone_yolov5_importer_reads_the_yolo_export_through_dataset_yaml(tiny_store, tmp_path):
    dest = export(tiny_store, "yolo", tmp_path / "yolo")
    (dest / "data.yaml").unlink()  # FiftyOne must find its own dataset.yaml
    read = run_client("fiftyone", "read_fiftyone.py", "yolo", dest, tmp_path=tmp_path)
    names = ["box", "ball", "ring"]  # TINY_RECIPE's categories, class = category id - 1
    records = {f"{r['index']:06d}": r for r in tiny_store.records()}
    assert sorted(Path(r["image"]).stem for r in read) == sorted(records)
    for entry in read:
        record = records[Path(entry["image"]).stem]
        rows = [[float(v) for v in line.split()] for line in
                (dest / "labels" / "train" / f"{Path(entry['image']).stem}.txt").read_text().splitlines()]
        visible = [o for o in record["objects"] if o["visible_pixels"] > 0]
        assert len(entry["detections"]) == len(rows) == len(visible) > 0
        width, height = Image.open(entry["image"]).size
        for detection, (cls, cx, cy, w, h) in zip(entry["detections"], rows):
            assert detection["label"] == names[int(cls)]
            assert detection["bounding_box"] == pytest.approx([cx - w / 2, cy - h / 2, w, h], abs=1e-6)
        # and what FiftyOne read is the store's boxes (6 decimals written: within 1e-6)
        truth = sorted((o["category"], [o["bbox_xywh"][0] / width, o["bbox_xywh"][1] / height,
                                        o["bbox_xywh"][2] / width, o["bbox_xywh"][3] / height]) for o in visible)
        for (label, box), (want_label, want_box) in zip(
                sorted((d["label"], d["bounding_box"]) for d in entry["detections"]), truth):
            assert label == want_label and box == pytest.approx(want_box, abs=1e-6)


def test_datumaro_detects_the_standard_layout_and_keeps_the_attributes(tiny_store, tmp_path):
    dest = export(tiny_store, "coco", tmp_path / "coco", layout="standard", splits={"train": 0.5, "val": 0.5})
    read = run_client("datumaro", "read_datumaro.py", dest, tmp_path=tmp_path)
    assert read["detected"] == ["coco_instances"]
    documents = {s: json.loads((dest / "annotations" / f"instances_{s}.json").read_text()) for s in ("train", "val")}
    names = {c["id"]: c["name"] for c in documents["train"]["categories"]}
    assert read["labels"] == [names[i] for i in sorted(names)]
    assert sorted((i["subset"], Path(i["image"]).name) for i in read["items"]) == sorted(
        (s, i["file_name"]) for s, d in documents.items() for i in d["images"])
    annotations = {(s, a["id"]): a for s, d in documents.items() for a in d["annotations"]}
    boxes = [(i["subset"], a) for i in read["items"] for a in i["annotations"] if a["type"] == "bbox"]
    assert len(boxes) == len(annotations) > 0
    for subset, box in boxes:
        annotation = annotations.pop((subset, box["id"]))
        assert read["labels"][box["label"]] == names[annotation["category_id"]]
        assert box["bbox"] == pytest.approx(annotation["bbox"], abs=1e-6)
        assert {k: box["attributes"][k] for k in annotation["attributes"]} == annotation["attributes"]
    assert not annotations
