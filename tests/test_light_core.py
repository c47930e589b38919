"""The light core: torch and kornia are the optional ``refine`` extra, and the commands that read or
check import only what they use (benchmarks/startup.py measures the start-up times themselves)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from .helpers import TINY_RECIPE, write_recipe

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("bpy", "torch", "kornia", "pxr")
INSTALL_HINT = "pip install 'sceneforge[refine]'"

# Put first on PYTHONPATH, this sitecustomize runs in the CLI process and in every process it
# starts (render workers included): it makes the packages named in SF_HIDE unimportable, as on a
# machine without them, and writes the names of the loaded modules to SF_MODULES at exit.
_SITECUSTOMIZE = textwrap.dedent("""\
    import atexit, json, os, sys

    _HIDDEN = {name for name in os.environ.get("SF_HIDE", "").split(",") if name}

    class _Hide:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in _HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _Hide())

    if os.environ.get("SF_MODULES") and os.getpid() == int(os.environ["SF_MAIN_PID"] or os.getpid()):
        def _write_modules():
            with open(os.environ["SF_MODULES"], "w") as file:
                json.dump(sorted(sys.modules), file)

        atexit.register(_write_modules)
""")


def _cli(tmp_path: Path, *args: str, hide: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``sceneforge ARGS`` in a fresh interpreter with the packages in ``hide`` missing;
    returns the result and the modules the CLI process had loaded when it exited."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    modules = tmp_path / "modules.json"
    modules.unlink(missing_ok=True)
    env = {**os.environ, "SF_HIDE": ",".join(hide), "SF_MODULES": str(modules), "SF_MAIN_PID": "",
           "PYTHONPATH": os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # The wrapper records its own pid, so that render workers (started from it) do not overwrite the list.
    code = "import os, runpy, sys; os.environ['SF_MAIN_PID'] = str(os.getpid()); sys.argv[0] = 'sceneforge'; " \
           "runpy.run_module('sceneforge', run_name='__main__')"
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                            env=env, timeout=600)
    loaded = set(json.loads(modules.read_text())) if modules.exists() else set()
    return result, loaded


def _roots(modules: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


def test_core_dependencies_leave_torch_kornia_and_safetensors_to_the_refine_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = lambda requirements: {r.split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
                                  for r in requirements}
    core = names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert not core & {"torch", "kornia", "safetensors"}
    assert {"torch", "kornia", "safetensors"} <= names(extras["refine"])
    assert "torch==2.13.0" in extras["refine"]  # pinned exactly: a range pulls GBs of CUDA wheels
    assert "sceneforge[refine]" in extras["test"]  # the README's test command installs everything


@pytest.mark.parametrize("command", ["validate", "stats", "stats --plots", "export coco", "export yolo", "export webdataset", "preview"])
def test_reading_commands_import_no_blender_torch_or_usd(command, tiny_store, tmp_path):
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    store = tiny_store.root
    args = {
        "validate": ["validate", recipe],
        "stats": ["stats", store],
        "stats --plots": ["stats", store, "--plots", tmp_path / "plots"],
        "export coco": ["export", store, "--format", "coco", "-o", tmp_path / "coco"],
        "export yolo": ["export", store, "--format", "yolo", "-o", tmp_path / "yolo"],
        "export webdataset": ["export", store, "--format", "webdataset", "-o", tmp_path / "wds"],
        "preview": ["preview", store, "-o", tmp_path / "sheet.png"],
    }[command]
    result, loaded = _cli(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert "sceneforge.cli" in loaded  # the module list was written by the CLI process
    assert _roots(loaded) & set(HEAVY) == set()
    if command != "validate":  # validate samples a scene (meshes, collisions); reading a store needs none
        assert _roots(loaded) & {"trimesh", "fcl", "scipy", "pybullet"} == set()
    if command == "stats":  # tables only: plots are asked for
        assert "matplotlib" not in _roots(loaded) and not (store / "stats").exists()
    if command == "stats --plots":  # the plots are drawn on Figure objects: no pyplot and its backends
        assert "matplotlib.figure" in loaded and "matplotlib.pyplot" not in loaded


def test_bop_export_imports_trimesh_only_when_used(tiny_store, tmp_path):
    result, loaded = _cli(tmp_path, "export", tiny_store.root, "--format", "bop", "-o", tmp_path / "bop")
    assert result.returncode == 0, result.stderr
    assert "trimesh" in loaded and _roots(loaded) & set(HEAVY) == set()


def test_refine_without_torch_says_how_to_install_it(tiny_store, tmp_path):
    (tmp_path / "real").mkdir()
    for args in (["refine", "train", "--store", tiny_store.root, "--real", tmp_path / "real", "-o", tmp_path / "run"],
                 ["refine", "apply", "--checkpoint", tmp_path / "run", "--store", tiny_store.root],
                 ["refine", "eval", "--store", tiny_store.root, "--real", tmp_path / "real"]):
        result, loaded = _cli(tmp_path, *args, hide=("torch",))
        assert result.returncode == 2, (args, result.stderr)
        assert INSTALL_HINT in result.stderr and "Traceback" not in result.stderr
        assert "torch" not in loaded


def test_recipe_with_refine_without_torch_fails_before_rendering(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"stand-in: never read")
    recipe = write_recipe(tmp_path, TINY_RECIPE + "refine: {checkpoint: model.safetensors}\n")
    result, _ = _cli(tmp_path, "run", recipe, "-o", tmp_path / "out", "-n", "1", hide=("torch", "kornia"))
    assert result.returncode == 2, result.stderr
    assert INSTALL_HINT in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "frames.jsonl").exists()  # nothing rendered that could not be refined


def test_dataset_module_without_torch_says_how_to_install_it(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    env = {**os.environ, "SF_HIDE": "torch", "SF_MODULES": "",
           "PYTHONPATH": os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", "import sceneforge.labels.torch"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert "ImportError" in result.stderr and INSTALL_HINT in result.stderr


def test_default_recipe_validates_and_runs_without_torch(tmp_path):
    """The README's first command on a machine where `pip install -e .` installed no torch."""
    recipe = ROOT / "examples" / "tabletop.yaml"
    result, loaded = _cli(tmp_path, "validate", recipe, hide=("torch", "kornia"))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "tabletop"
    result, loaded = _cli(tmp_path, "run", recipe, "-o", out, "-n", "1", "--resolution", "32x24", "--samples", "1",
                          "-q", hide=("torch", "kornia"))
    assert result.returncode == 0, result.stderr
    assert len((out / "frames.jsonl").read_text().splitlines()) == 1
    coco = json.loads((out / "coco" / "annotations.json").read_text())
    assert len(coco["images"]) == 1 and coco["annotations"]
    assert _roots(loaded) & {"torch", "kornia", "bpy"} == set()
    # Again on the finished store: nothing to sample, render or label, so no mesh library either.
    result, loaded = _cli(tmp_path, "run", recipe, "-o", out, "-n", "1", "--resolution", "32x24", "--samples", "1",
                          "-q", hide=("torch", "kornia"))
    assert result.returncode == 0, result.stderr
    assert _roots(loaded) & {"torch", "kornia", "bpy", "pxr", "trimesh", "fcl", "scipy"} == set()


def test_primitive_recipes_sample_validate_and_run_without_trimesh_scipy_or_networkx(tmp_path):
    """Primitives are built in numpy and cast rays through Embree directly: with trimesh, scipy and
    networkx missing in the CLI process and in its render worker, a recipe of primitives still
    validates, samples and renders (a worker that needed them would fail its frame, exit 1)."""
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    mesh_libraries = ("trimesh", "scipy", "networkx")
    for args in (["validate", recipe], ["sample", recipe, "-n", "2"],
                 ["run", recipe, "-o", tmp_path / "out", "-n", "1", "--resolution", "32x24", "--samples", "1", "-q"]):
        result, loaded = _cli(tmp_path, *args, hide=mesh_libraries)
        assert result.returncode == 0, (args, result.stderr)
        assert "sceneforge.cli" in loaded and "fcl" in loaded  # it placed objects, by mesh collision
        assert _roots(loaded) & set(mesh_libraries) == set()
    assert len((tmp_path / "out" / "frames.jsonl").read_text().splitlines()) == 1
