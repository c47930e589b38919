"""Start-up order: a run starts its render worker before it samples scene 0 (the two overlap),
and a run whose sampling fails meanwhile stops that worker and leaves no process behind."""

from __future__ import annotations

import json
import multiprocessing

import pytest

import sceneforge.pipeline
from sceneforge.executors import ExecutorOptions
from sceneforge.floor.errors import UserError
from sceneforge.pipeline import render_dataset
from sceneforge.scenes.recipe import load_recipe

from .helpers import TINY_RECIPE, write_recipe


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
