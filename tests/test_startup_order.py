"""Start-up order: a run starts its render worker before it samples scene 0 (the two overlap),
and a run whose sampling fails meanwhile stops that worker and leaves no process behind; the
command starts worker-0 even before it loads the recipe, and stops it when the recipe is wrong."""

from __future__ import annotations

import json
import multiprocessing
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sceneforge.pipeline
import sceneforge.scenes.recipe
from sceneforge.cli import app
from sceneforge.executors import ExecutorOptions
from sceneforge.floor.errors import UserError
from sceneforge.pipeline import render_dataset
from sceneforge.scenes.recipe import load_recipe

from .helpers import TINY_RECIPE, run_cli, write_recipe


def test_the_worker_starts_before_scene_0_is_sampled_and_a_sampling_failure_stops_it(tmp_path, monkeypatch):
    recipe = load_recipe(write_recipe(tmp_path, TINY_RECIPE))
    workers_when_sampled: list[list[str]] = []

    def failing_sample_views(recipe, index):
        workers_when_sampled.append([p.name for p in multiprocessing.active_children()])
        raise UserError("recipe.yaml:5:1: placement: the objects do not fit")

    monkeypatch.setattr(sceneforge.pipeline, "sample_views", failing_sample_views)
    with pytest.raises(UserError, match="do not fit"):
        render_dataset(recipe, tmp_path / "out", options=ExecutorOptions(device="cpu", threads=1))
    assert workers_when_sampled == [["sceneforge-worker-0"]]
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("sceneforge-")]
    log = [json.loads(line) for line in (tmp_path / "out" / "logs" / "run.jsonl").read_text().splitlines()]
    assert [e["message"].split(" (")[0] for e in log if e["event"] == "worker"] == ["worker-0: starting"]


def _run(recipe, out, extra=()):
    return CliRunner().invoke(app, ["run", str(recipe), "-o", str(out), "-n", "1", "--resolution", "32x24",
                                    "--samples", "1", "--device", "cpu", "--threads", "1", "-q", *extra])


def _workers() -> list[tuple[str, int]]:
    return [(p.name, p.pid) for p in multiprocessing.active_children() if p.name.startswith("sceneforge-")]


@pytest.fixture
def temporary_folder(tmp_path, monkeypatch):
    """This process's temporary folder, where the early worker's own folder is made, for the test alone."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def workers_when_loaded(monkeypatch) -> list[list[tuple[str, int]]]:
    """The render workers alive each time the CLI loads a recipe."""
    seen: list[list[tuple[str, int]]] = []
    load_recipe = sceneforge.scenes.recipe.load_recipe

    def loading(*args, **kwargs):
        seen.append(_workers())
        return load_recipe(*args, **kwargs)

    monkeypatch.setattr(sceneforge.scenes.recipe, "load_recipe", loading)
    return seen


def test_run_starts_worker_0_before_it_loads_the_recipe_and_renders_with_that_worker(tmp_path, temporary_folder,
                                                                                    workers_when_loaded):
    recipe, out = write_recipe(tmp_path, TINY_RECIPE), tmp_path / "out"
    result = _run(recipe, out)
    assert result.exit_code == 0, result.output
    [[(name, pid)]] = workers_when_loaded
    log = [json.loads(line) for line in (out / "logs" / "run.jsonl").read_text().splitlines()]
    assert name == "sceneforge-worker-0"
    assert [e["message"] for e in log if e["event"] == "worker" and "starting" in e["message"]] == \
        [f"worker-0: starting (pid {pid})"]
    assert [e["index"] for e in log if e["event"] == "frame"] == [0]
    assert _workers() == [] and list(temporary_folder.iterdir()) == []  # its folder (Blender's session's) is gone
    # A run with nothing left to render stops the worker it started: none is left behind.
    again = _run(recipe, out)
    assert again.exit_code == 0, again.output
    assert len(workers_when_loaded) == 2 and len(workers_when_loaded[1]) == 1
    assert _workers() == [] and list(temporary_folder.iterdir()) == []


def test_a_recipe_error_stops_the_early_worker_and_exits_2_with_its_location(tmp_path, temporary_folder,
                                                                             workers_when_loaded):
    recipe = write_recipe(tmp_path, TINY_RECIPE.replace("samples: 2", "samples: many"))
    result = CliRunner().invoke(app, ["run", str(recipe), "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert isinstance(result.exception, UserError) and re.search(r"recipe\.yaml:3:\d+: .*samples", str(result.exception))
    assert [[name for name, _ in workers] for workers in workers_when_loaded] == [["sceneforge-worker-0"]]
    assert _workers() == [] and list(temporary_folder.iterdir()) == []
    assert not (tmp_path / "out").exists()
    # As a command: exit code 2, the located message, no traceback.
    command = run_cli("run", recipe, "-o", tmp_path / "out", "--device", "cpu")
    assert command.returncode == 2 and re.search(r"recipe\.yaml:3:\d+: .*samples", command.stderr)
    assert "Traceback" not in command.stderr


def test_a_worker_spawned_by_the_sceneforge_command_does_not_import_the_cli_again():
    """multiprocessing's spawn runs the parent's main script again in each worker, as ``__mp_main__``:
    for the ``sceneforge`` command that script must not pull in the CLI (typer, rich, pydantic)."""
    script = Path(sys.executable).parent / "sceneforge"
    rerun = f"import runpy, sys; runpy.run_path({str(script)!r}, run_name='__mp_main__'); print(sorted(sys.modules))"
    modules = subprocess.run([sys.executable, "-c", rerun], capture_output=True, text=True, check=True).stdout
    assert "sceneforge.cli" not in modules and "typer" not in modules
    assert "'sceneforge.__main__'" in modules  # the script did run, and imported the entry point
