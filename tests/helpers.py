"""Test helpers: tiny recipes, writing them, running the CLI as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TINY_RECIPE = """\
seed: 7
count: 3
render: {resolution: [96, 72], samples: 2}
camera: {fov_deg: 55, look_at: [0, 0, 0.05], distance: {uniform: [0.9, 1.2]}, elevation_deg: {uniform: [35, 60]}, azimuth_deg: {uniform: [0, 360]}}
placement: {area: [0.5, 0.5], min_gap: 0.01}
objects:
  - category: box
    count: {randint: [1, 2]}
    asset: {primitive: box, extents: [0.12, {uniform: [0.08, 0.14]}, 0.1]}
    material: {color: {hsv: [{uniform: [0, 1]}, 0.7, 0.8]}}
  - category: ball
    count: 2
    asset: {primitive: sphere, radius: 0.06}
  - category: ring
    asset: {primitive: torus, major_radius: 0.07, minor_radius: 0.02}
lights:
  - {type: sun, energy: 3, elevation_deg: 60, azimuth_deg: 30}
"""


def write_recipe(folder: Path, text: str, name: str = "recipe.yaml") -> Path:
    """Write a recipe file (dedented) and return its path."""
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed CLI exactly as a user would, capturing its output (so not in a terminal);
    ``env`` adds environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "sceneforge", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=600, env=None if env is None else {**os.environ, **env},
    )


# Run inside a subprocess by ultralytics_check: Ultralytics' own label checker on every image of
# every split, and its own rasteriser on every segment polygon it read.
_ULTRALYTICS_CHECK = """\
import json, sys
from pathlib import Path
import numpy as np
from ultralytics.data.utils import IMG_FORMATS, img2label_paths, polygon2mask, verify_image_label

root, task, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
data = json.loads(sys.argv[4])
nkpt, ndim = data.get("kpt_shape", (0, 0))
results = {}
for folder in sorted({data[s] for s in ("train", "val", "test") if s in data}):
    images = sorted(str(p) for p in (root / folder).iterdir() if p.suffix[1:].lower() in IMG_FORMATS)
    for image, label in zip(images, img2label_paths(images)):
        _, lb, shape, segments, keypoints, nm, nf, ne, nc, msg = verify_image_label(
            (image, label, "", task == "pose", len(data["names"]), nkpt, ndim, False))
        results[str(Path(image).relative_to(root))] = {
            "label": str(Path(label).relative_to(root)), "nm": nm, "nf": nf, "ne": ne, "nc": nc, "msg": msg,
            "labels": None if lb is None else lb.tolist(),
            "keypoints": None if keypoints is None else keypoints.tolist(),
            "masks": [polygon2mask(shape, [s * shape[::-1]]).tolist() for s in segments or []],
        }
out.write_text(json.dumps(results))
"""


def ultralytics_check(dataset: Path, task: str, tmp_path: Path) -> dict[str, dict]:
    """Check a YOLO export with Ultralytics' own ``verify_image_label`` (8.4.190: args ``(im_file,
    lb_file, prefix, keypoint, num_cls, nkpt, ndim, single_cls)``) on every image of every split,
    its label file found by Ultralytics' ``img2label_paths``, as ``YOLODataset`` calls it for
    ``task`` (``kpt_shape`` from data.yaml for pose).

    Returns, per image path relative to ``dataset``: ``label`` (the label file it looked for),
    ``nm, nf, ne, nc`` (missing, found, empty, corrupt), ``msg`` (its warning or error), and what it
    read: ``labels`` (N x [cls, x, y, w, h]), ``keypoints`` (N x K x ndim or None) and ``masks``
    (one H x W 0/1 mask per segment, drawn by Ultralytics' ``polygon2mask`` from the polygon
    scaled to pixels). Ultralytics reads torchvision's version at import but this checker never
    imports torchvision (whose only wheels here break the CPU torch), so a stand-in distribution
    record is put on the path; its settings go to ``tmp_path``, and it makes no network check.
    """
    from ruamel.yaml import YAML

    data = YAML(typ="safe", pure=True).load((dataset / "data.yaml").read_text())
    stand_in = tmp_path / "ultralytics_site" / "torchvision-0.0.0.dist-info"
    stand_in.mkdir(parents=True, exist_ok=True)
    (stand_in / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\nVersion: 0.0.0\n")
    out = tmp_path / f"ultralytics_{task}.json"
    path = os.pathsep.join(filter(None, [str(stand_in.parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "YOLO_CONFIG_DIR": str(tmp_path / "ultralytics_config"),
           "YOLO_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", _ULTRALYTICS_CHECK, str(dataset), task, str(out), json.dumps(data)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(out.read_text())


def posed_trimesh(mesh, pose=None):
    """A SceneForge mesh as a trimesh (for checks by trimesh's own algorithms), moved by a 4x4 pose."""
    import numpy as np
    import trimesh

    posed = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    return posed if pose is None else posed.apply_transform(np.asarray(pose, dtype=float))
