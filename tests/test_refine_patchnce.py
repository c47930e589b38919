"""The SceneForge refiner's optional PatchNCE term (refine/patchnce.py, ``--nce-weight``): the
render is the anchor, so the identity scores lower than a refinement that moves the outlines;
boundary sampling puts the patches where the labels live; the option trains, is saved in the
checkpoint, a run resumes exactly and is not resumed with it switched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sceneforge.floor.errors import UserError
from sceneforge.refine import checkpoint
from sceneforge.refine.model import Generator, RefinerConfig
from sceneforge.refine.patchnce import PATCHES, _boundary_locations, patch_nce, projection_heads
from sceneforge.refine.train import TrainOptions, boundary_band, train

from .helpers import run_cli

TINY = RefinerConfig(channels=8, blocks=2, disc_channels=8)


def _shapes(shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 64 x 64 images of flat-coloured squares on a flat ground ([-1, 1]), the squares moved
    right by ``shift`` px, and the instance boundaries of the unshifted image (1 on both sides)."""
    images, instance = torch.full((2, 3, 64, 64), -0.6), torch.zeros(2, 64, 64, dtype=torch.long)
    colours = torch.tensor([[0.8, -0.2, -0.5], [-0.4, 0.6, 0.9], [0.9, 0.9, -0.8]])
    for n in range(2):
        for k, (top, left) in enumerate([(6, 8), (30, 36), (44, 10)][n:] + [(10, 40)][:n]):
            images[n, :, top:top + 14, left + shift:left + shift + 14] = colours[k % 3, :, None, None]
            instance[n, top:top + 14, left:left + 14] = k + 1
    padded = torch.nn.functional.pad(instance, (1, 1, 1, 1), mode="replicate")
    changed = torch.zeros_like(instance, dtype=torch.bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        changed |= padded[:, dy:dy + 64, dx:dx + 64] != instance
    return images, changed[:, None].float()


def test_identity_scores_lower_than_moved_outlines_and_boundary_patches_see_it_best():
    torch.manual_seed(0)
    generator, heads = Generator(TINY, gbuffer=True), projection_heads(TINY)
    render, boundary = _shapes(0)
    moved, _ = _shapes(3)
    near = boundary_band(boundary, 2)

    def loss(output: torch.Tensor, share: float) -> float:
        with torch.no_grad():  # the same patches for every output: the same rng seed
            return patch_nce(generator, heads, render, output, np.random.default_rng(0), near, share).item()

    for share in (0.0, 1.0):
        assert loss(render, share) < loss(moved, share) - 0.1, share
    # Uniform patches fall mostly on flat ground and interiors, where a shift changes nothing;
    # boundary patches fall where it does.
    assert loss(moved, 1.0) - loss(render, 1.0) > 1.3 * (loss(moved, 0.0) - loss(render, 0.0))  # 1.37 against 0.85


def test_boundary_locations_take_their_share_near_the_boundary_and_never_repeat():
    near = np.zeros((2, 40 * 40), dtype=bool)
    near[0, 100:400] = True  # 300 boundary locations: enough for the share
    near[1, :50] = True  # 50: fewer than the share, all taken
    chosen = _boundary_locations(near, 0.75, np.random.default_rng(3))
    assert chosen.shape == (2, PATCHES)
    assert all(len(set(row)) == PATCHES for row in chosen)
    assert near[0, chosen[0]].sum() == round(0.75 * PATCHES)
    assert near[1, chosen[1]].sum() == 50
    small = _boundary_locations(np.ones((1, 36), dtype=bool), 0.5, np.random.default_rng(0))  # fewer locations than PATCHES
    assert sorted(small[0]) == list(range(36))


def test_refiner_trains_with_patchnce_saves_the_option_resumes_exactly_and_not_without_it(store, photos, tmp_path):
    run = tmp_path / "nce"
    result = run_cli("refine", "train", "--store", store.root, "--real", photos, "-o", run, "--steps", "2", "--size", "32",
                     "--width", "4", "--blocks", "1", "--nce-weight", "0.5", "--nce-boundary-share", "0.6",
                     "--device", "cpu", "-q")
    assert result.returncode == 0, result.stderr
    saved = checkpoint.load(run)
    assert saved["options"]["nce_weight"] == 0.5 and saved["options"]["nce_boundary_share"] == 0.6
    assert set(saved["heads"]) and saved["config"].gbuffer  # the refiner's generator, with its heads
    logged = (run / "log.jsonl").read_text()
    assert '"nce": ' in logged
    without = TrainOptions.preset("sceneforge", channels=4, blocks=1, steps=4, size=32)  # the CLI's widths
    assert without.nce_weight == 0.0
    with pytest.raises(UserError, match="with PatchNCE"):
        train(store.root, photos, run, without, "cpu")
    # resumed from the command line's checkpoint, the run ends exactly where an uninterrupted one does
    options = TrainOptions(**{**without.__dict__, "nce_weight": 0.5, "nce_boundary_share": 0.6})
    train(store.root, photos, run, options, "cpu")
    train(store.root, photos, tmp_path / "whole", options, "cpu")
    resumed, whole = checkpoint.load(run), checkpoint.load(tmp_path / "whole")
    for network in ("to_real", "heads", "judge_real"):
        for name, value in whole[network].items():
            assert torch.equal(value, resumed[network][name]), (network, name)
    train(store.root, photos, tmp_path / "plain", TrainOptions(**{**without.__dict__, "steps": 1}), "cpu")
    assert "heads" not in checkpoint.load(tmp_path / "plain")
