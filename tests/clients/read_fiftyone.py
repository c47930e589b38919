"""FiftyOne's own importers, without MongoDB (run by tests/clients/isolated.py).

``read_fiftyone.py coco IMAGES ANNOTATIONS OUT``: COCODetectionDatasetImporter;
``read_fiftyone.py yolo DATASET OUT``: YOLOv5DatasetImporter through DATASET/dataset.yaml, split train.
Writes to OUT one entry per image: its path, size and every Detection's fields (to_dict)."""

import json
import sys

import fiftyone.core.odm.database as database
import fiftyone.utils.coco as fouc
import fiftyone.utils.yolo as fouy

kind, *paths, out = sys.argv[1:]
if kind == "coco":
    images, annotations = paths
    importer = fouc.COCODetectionDatasetImporter(data_path=images, labels_path=annotations, label_types="detections")
else:
    importer = fouy.YOLOv5DatasetImporter(dataset_dir=paths[0], split="train")
read = []
with importer:
    for image, metadata, detections in importer:
        read.append({"image": image, "size": None if metadata is None else [metadata.width, metadata.height],
                     "detections": [d.to_dict() for d in detections.detections]})
if database._client is not None:
    sys.exit("FiftyOne connected to a database")
with open(out, "w") as f:
    json.dump(read, f, default=str)
