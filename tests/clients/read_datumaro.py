"""datumaro's own COCO importer (run by tests/clients/isolated.py).

``read_datumaro.py DATASET OUT``: the formats datumaro detects at DATASET, then
``Dataset.import_from(DATASET, "coco")``. Writes to OUT the detected formats, the label names and,
per item, its subset, image path and every annotation's type, label, box, attributes and id."""

import json
import sys

from datumaro.components.annotation import AnnotationType
from datumaro.components.dataset import Dataset
from datumaro.components.environment import Environment

root, out = sys.argv[1:]
detected = Environment().detect_dataset(root)
dataset = Dataset.import_from(root, "coco")
read = {
    "detected": detected,
    "labels": [c.name for c in dataset.categories()[AnnotationType.label]],
    "items": [{"id": item.id, "subset": item.subset, "image": item.media.path,
               "annotations": [{"type": a.type.name, "label": a.label, "bbox": a.get_bbox(), "id": a.id,
                                "attributes": a.attributes} for a in item.annotations]} for item in dataset],
}
with open(out, "w") as f:
    json.dump(read, f)
