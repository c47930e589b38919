"""The layout's promises: bpy only inside render workers, torch only inside refine/."""

from __future__ import annotations

import re
import subprocess
import sys

from .helpers import ROOT, TINY_RECIPE, write_recipe

STAGES_AND_CONDUCTOR = ("sceneforge", "scenes", "render", "refine", "labels")


def imports_of(module: str) -> list[str]:
    return [
        str(path.relative_to(ROOT))
        for folder in STAGES_AND_CONDUCTOR
        for path in (ROOT / folder).rglob("*.py")
        if re.search(rf"^\s*(import|from)\s+{module}\b", path.read_text(), re.MULTILINE)
    ]


def test_only_render_imports_bpy():
    assert all(path.startswith("render/") for path in imports_of("bpy"))
    assert all(path.startswith("render/") for path in imports_of("mathutils"))


def test_only_refine_and_the_optional_dataset_import_torch():
    for path in imports_of("torch") + imports_of("kornia"):
        assert path.startswith("refine/") or path == "labels/torch.py", path


def test_scenes_imports_no_other_stage():
    assert not [p for p in (ROOT / "scenes").rglob("*.py") if re.search(r"sceneforge\.(render|refine|labels)", p.read_text())]


def test_conductor_process_imports_neither_bpy_nor_torch(tmp_path):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    out = tmp_path / "out"
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sceneforge.labels.export import export\n"
        "from sceneforge.pipeline import render_dataset\n"
        "from sceneforge.scenes.recipe import load_recipe\n"
        f"report = render_dataset(load_recipe({str(recipe)!r}, {{'count': 1}}), Path({str(out)!r}))\n"
        f"for fmt in ('coco', 'yolo', 'webdataset'): export(report.store, fmt, Path({str(tmp_path)!r}) / fmt)\n"
        "assert 'bpy' not in sys.modules, 'the conductor imported bpy'\n"
        "assert 'torch' not in sys.modules, 'the conductor imported torch'\n"
        "print('frames', len(report.store.records()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "frames 1"
