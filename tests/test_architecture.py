"""The layout's rules (docs/architecture.md), checked on the parsed imports of every module.

Imports are read with ``ast`` (module-level and lazy ones alike), relative imports resolved, and
every ``sceneforge`` import followed to a file by its path, as a plain static resolver does. Each
rule is also broken on purpose below, to show that the check catches it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .helpers import ROOT, TINY_RECIPE, write_recipe

STAGES = ("scenes", "render", "refine", "labels")
# Which stages each stage may import (every stage may import the floor). labels holds the store,
# which refine reads and writes: refine may use the store's API and its tensor conversion only.
ALLOWED_STAGES = {"scenes": set(), "render": {"scenes"}, "refine": {"labels"}, "labels": {"scenes"}}
REFINE_MAY_USE = {"sceneforge.labels.store", "sceneforge.labels.torch"}
FLOOR_THIRD_PARTY = {"numpy", "PIL", "OpenEXR"}  # image headers: floor/images.py
# Third-party packages and the only places that may import them.
CONFINED = {
    "bpy": ("render/",), "mathutils": ("render/",),
    "torch": ("refine/", "labels/torch.py"), "kornia": ("refine/", "labels/torch.py"),
    "pxr": ("scenes/assets.py", "labels/usd_scene.py"),
    "PyOpenColorIO": ("render/develop.py",),
}
STORE_MUST_NOT_PULL_IN = {"bpy", "mathutils", "torch", "kornia", "pxr", "trimesh", "embreex", "fcl", "pybullet"}
# Sampling draws every random choice from generators seeded by the scene seed.
NONDETERMINISTIC_MODULES = {"random", "time", "datetime", "uuid", "secrets"}
GLOBAL_NUMPY_RANDOM_ALLOWED = {"Generator", "PCG64", "SeedSequence"}


@dataclass
class Module:
    name: str  # dotted, e.g. sceneforge.labels.store
    path: str  # relative to the repository root, e.g. labels/store.py
    group: str  # floor, conductor or a stage
    imports: list[tuple[str, int, bool]] = field(default_factory=list)  # (dotted name, line, at module level)
    tree: ast.Module | None = None


def module_name(path: Path) -> str:
    parts = list(path.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts if parts[0] == "sceneforge" else ["sceneforge", *parts])


def group_of(path: str) -> str:
    top = path.split("/")[0]
    if top in STAGES:
        return top
    return "floor" if path.startswith("sceneforge/floor/") else "conductor"


def parse_module(path: str, source: str) -> Module:
    """A module's parsed imports, relative ones resolved to absolute names."""
    name = module_name(Path(path))
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    module = Module(name, path, group_of(path), tree=ast.parse(source, path))
    top_level = {id(node) for node in module.tree.body}
    for node in ast.walk(module.tree):
        at_top = id(node) in top_level
        if isinstance(node, ast.Import):
            module.imports += [(alias.name, node.lineno, at_top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            module.imports.append((base, node.lineno, at_top))
            module.imports += [(f"{base}.{alias.name}", node.lineno, at_top) for alias in node.names
                               if resolve(f"{base}.{alias.name}") is not None]
    return module


def resolve(name: str) -> Path | None:
    """The file a ``sceneforge`` module name is at, found by its path alone (None: no such module)."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def project_modules() -> dict[str, Module]:
    files = [p for folder in STAGES for p in (ROOT / folder).rglob("*.py")]
    files += [p for p in (ROOT / "sceneforge").rglob("*.py") if not any(part in STAGES for part in p.parts)]
    modules = [parse_module(str(p.relative_to(ROOT)), p.read_text()) for p in files]
    return {m.name: m for m in modules}


def violations(modules: dict[str, Module]) -> list[str]:
    """Every import that breaks a rule, as ``path:line: what``."""
    found = []
    for m in modules.values():
        for name, line, _ in m.imports:
            where = f"{m.path}:{line}: {name}"
            root = name.split(".")[0]
            if root == "sceneforge":
                target = group_of_name(name)
                if resolve(name) is None and target != "package":
                    found.append(f"{where}: does not resolve to a file by its path")
                if m.group == "floor" and target not in ("floor", "package"):
                    found.append(f"{where}: the floor imports nothing above it")
                if m.group != "conductor" and target == "conductor":
                    found.append(f"{where}: a stage imports the conductor")
                if m.group in STAGES and target in STAGES and target != m.group:
                    if target not in ALLOWED_STAGES[m.group]:
                        found.append(f"{where}: {m.group} may not import {target}")
                    elif m.group == "refine" and not any(name.startswith(allowed) for allowed in REFINE_MAY_USE):
                        found.append(f"{where}: refine uses labels' store and tensor conversion only")
                if m.group == "labels" and name.startswith("sceneforge.labels.torch") and m.path != "labels/torch.py":
                    found.append(f"{where}: the PyTorch Dataset is imported lazily, by its users only")
            elif m.group == "floor" and root not in FLOOR_THIRD_PARTY and root not in sys.stdlib_module_names:
                found.append(f"{where}: the floor needs the standard library, numpy, Pillow and OpenEXR only")
            if root in CONFINED and not m.path.startswith(CONFINED[root]):
                found.append(f"{where}: {root} only in {', '.join(CONFINED[root])}")
    return found


def group_of_name(name: str) -> str:
    parts = name.split(".")
    if len(parts) == 1:
        return "package"  # ``sceneforge`` itself: its version only
    if parts[1] in STAGES:
        return parts[1]
    return "floor" if parts[1] == "floor" else "conductor"


def module_level_closure(modules: dict[str, Module], start: str) -> set[str]:
    """Every name imported at module level by ``start`` and, transitively, by the project modules it imports."""
    seen, todo, names = set(), [start], set()
    while todo:
        current = modules.get(todo.pop())
        if current is None or current.name in seen:
            continue
        seen.add(current.name)
        for name, _, at_top in current.imports:
            if at_top:
                names.add(name)
                todo += [name, name.rpartition(".")[0]]
    return names


def determinism_violations(m: Module) -> list[str]:
    """Uses of global or wall-clock randomness in a sampling module."""
    found = [f"{m.path}:{line}: imports {name}" for name, line, _ in m.imports
             if name.split(".")[0] in NONDETERMINISTIC_MODULES]
    for node in ast.walk(m.tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "random" \
                and isinstance(node.value.value, ast.Name) and node.value.value.id in ("np", "numpy") \
                and node.attr not in GLOBAL_NUMPY_RANDOM_ALLOWED:
            found.append(f"{m.path}:{node.lineno}: np.random.{node.attr} (global or unseeded numpy randomness)")
        if isinstance(node, ast.Attribute) and node.attr == "urandom":
            found.append(f"{m.path}:{node.lineno}: os.urandom")
    return found


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return project_modules()


def test_every_import_follows_the_rules(modules):
    assert len(modules) > 40, "the checker sees the project"
    assert violations(modules) == []


def test_every_project_import_resolves_by_path(modules):
    imported = {name for m in modules.values() for name, _, _ in m.imports if name.startswith("sceneforge.")}
    assert {"sceneforge.scenes.spec", "sceneforge.floor.frame", "sceneforge.labels.store"} <= imported
    assert [name for name in imported if resolve(name) is None and name not in modules] == []


def test_reading_a_store_pulls_in_no_renderer_network_usd_or_ray_caster(modules):
    roots = {name.split(".")[0] for name in module_level_closure(modules, "sceneforge.labels.store")}
    assert "OpenEXR" in roots, "the closure follows the store's imports"
    assert roots & STORE_MUST_NOT_PULL_IN == set()


def test_sampling_code_uses_only_seeded_randomness(modules):
    scenes = [m for m in modules.values() if m.group == "scenes"]
    assert len(scenes) >= 6
    assert [v for m in scenes for v in determinism_violations(m)] == []


@pytest.mark.parametrize(("path", "source", "expected"), [
    ("labels/coco.py", "import bpy\n", "bpy only in render/"),
    ("labels/stats.py", "def f():\n    import torch\n", "torch only in refine/"),
    ("render/decode.py", "import pxr\n", "pxr only in"),
    ("sceneforge/floor/colour.py", "from sceneforge.scenes import spec\n", "the floor imports nothing above it"),
    ("sceneforge/floor/files.py", "import cv2\n", "the floor needs the standard library"),
    ("scenes/sampling.py", "from sceneforge.render import decode\n", "scenes may not import render"),
    ("render/server.py", "from sceneforge.labels.store import DatasetStore\n", "render may not import labels"),
    ("labels/annotate.py", "from ..render.decode import decode\n", "labels may not import render"),
    ("labels/export.py", "from sceneforge.refine import apply\n", "labels may not import refine"),
    ("refine/data.py", "from sceneforge.labels.coco import write_coco\n", "store and tensor conversion only"),
    ("labels/store.py", "from sceneforge.pipeline import render_dataset\n", "a stage imports the conductor"),
    ("labels/export.py", "from .torch import SceneForgeDataset\n", "imported lazily"),
    ("scenes/spec.py", "from sceneforge.scenes.no_such_module import x\n", "does not resolve"),
])
def test_breaking_a_rule_is_caught(modules, path, source, expected):
    broken = dict(modules)
    mutant = parse_module(path, source)
    broken[mutant.name] = mutant
    assert any(expected in v for v in violations(broken)), violations(broken)


@pytest.mark.parametrize("source", ["import random\n", "import time\n", "from datetime import datetime\n",
                                    "import numpy as np\nx = np.random.rand(3)\n",
                                    "import numpy as np\nrng = np.random.default_rng()\n", "import uuid\n"])
def test_breaking_determinism_is_caught(source):
    assert determinism_violations(parse_module("scenes/sampling.py", source))


def test_a_store_that_imports_usd_is_caught(modules):
    broken = dict(modules)
    store = modules["sceneforge.labels.store"]
    broken[store.name] = parse_module(store.path, (ROOT / store.path).read_text() + "\nfrom .usd_scene import scene_usda\n")
    roots = {name.split(".")[0] for name in module_level_closure(broken, store.name)}
    assert "pxr" in roots


def test_scene_spec_names_no_renderer():
    from pydantic import BaseModel

    from sceneforge.scenes.spec import SceneSpec

    def field_names(model: type[BaseModel]) -> set[str]:
        names = set(model.model_fields)
        for info in model.model_fields.values():
            for kind in (info.annotation, *getattr(info.annotation, "__args__", ())):
                for inner in (kind, *getattr(kind, "__args__", ())):
                    if isinstance(inner, type) and issubclass(inner, BaseModel):
                        names |= field_names(inner)
        return names

    names = field_names(SceneSpec)
    assert {"noise_seed", "world_from_light", "samples"} <= names
    assert [n for n in names if any(word in n for word in ("cycles", "blender", "eevee", "bpy"))] == []


def test_reading_and_exporting_a_store_imports_no_renderer_torch_usd_or_ray_caster(tiny_store, tmp_path):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sceneforge.labels.export import export\n"
        "from sceneforge.labels.preview import contact_sheet\n"
        "from sceneforge.labels.store import DatasetStore\n"
        f"store = DatasetStore({str(tiny_store.root)!r})\n"
        "for record in store.records():\n"
        "    store.read_rgb(record), store.read_depth(record), store.read_normals(record), store.read_instance(record)\n"
        "contact_sheet(store)\n"
        f"for fmt in ('coco', 'yolo', 'webdataset'): export(store, fmt, Path({str(tmp_path)!r}) / fmt)\n"
        f"print(sorted(m for m in {sorted(STORE_MUST_NOT_PULL_IN)!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_conductor_process_imports_neither_bpy_nor_torch(tmp_path):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    out = tmp_path / "out"
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sceneforge.labels.export import export\n"
        "from sceneforge.pipeline import render_dataset\n"
        "from sceneforge.scenes.recipe import load_recipe\n"
        f"report = render_dataset(load_recipe({str(recipe)!r}, {{'count': 1}}), Path({str(out)!r}), usd=True)\n"
        f"for fmt in ('coco', 'yolo', 'webdataset'): export(report.store, fmt, Path({str(tmp_path)!r}) / fmt)\n"
        "assert 'bpy' not in sys.modules, 'the conductor imported bpy'\n"
        "assert 'torch' not in sys.modules, 'the conductor imported torch'\n"
        "assert 'pxr' not in sys.modules, 'the conductor imported pxr: USD is written in the render workers'\n"
        "print('frames', len(report.store.records()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "frames 1"
