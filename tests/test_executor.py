"""The local executor: several warm workers give the same pixels as one."""

from __future__ import annotations

import numpy as np

from sceneforge.executors import LocalExecutor
from sceneforge.scenes.recipe import Recipe
from sceneforge.scenes.sampling import sample


def test_two_workers_render_every_spec_once_with_identical_labels(tiny_store, tmp_path):
    recipe = Recipe.model_validate(tiny_store.meta["recipe"])
    records = {r["index"]: r for r in tiny_store.records()}
    with LocalExecutor(tmp_path / "logs", workers=2, threads=1) as executor:
        frames = list(executor.render(sample(recipe, i) for i in records))
    assert sorted(frame.spec.index for frame in frames) == sorted(records)
    assert len(list((tmp_path / "logs").glob("render-worker-*.log"))) == 2
    for frame in frames:
        record = records[frame.spec.index]
        assert np.array_equal(frame.passes.instance, tiny_store.read_instance(record))
        assert np.array_equal(frame.passes.depth, tiny_store.read_depth(record))
