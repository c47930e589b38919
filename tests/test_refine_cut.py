"""CUT/FastCUT (``--architecture cut``): its networks' sizes, the PatchNCE loss against a hand
computation, that PatchNCE can be optimised, and that its checkpoints resume and apply like the others."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sceneforge.floor.errors import UserError
from sceneforge.refine import checkpoint
from sceneforge.refine.apply import Refiner
from sceneforge.refine.cut import CutModels
from sceneforge.refine.model import RefinerConfig
from sceneforge.refine.patchnce import PATCHES, TEMPERATURE, nce_loss
from sceneforge.refine.train import TrainOptions, train

from .helpers import run_cli

TINY_CUT = RefinerConfig(channels=4, blocks=1, disc_channels=4, norm="instance", gbuffer=False, residual=False)


def test_cut_has_one_generator_one_discriminator_and_five_projection_heads():
    models = CutModels(RefinerConfig.reference())
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(models.to_real) == 11_378_179  # CycleGAN's ResNet-9 generator
    # PatchGAN C64-C128-C256-C512-1 with 4 x 4 kernels and biases, instance norm without weights
    assert count(models.judge_real) == sum(i * o * 16 + o for i, o in [(3, 64), (64, 128), (128, 256), (256, 512), (512, 1)])
    # one MLP (C -> 256 -> 256) per layer: RGB, both downsamplings, residual blocks 1 and 5
    assert count(models.heads) == sum(c * 256 + 256 + 256 * 256 + 256 for c in (3, 128, 256, 256, 256))
    assert count(models) == 14_703_300  # about half of CycleGAN's two generators and two discriminators
    features = CutModels(TINY_CUT).encode(torch.zeros(2, 3, 32, 40))
    assert [tuple(f.shape[1:]) for f in features] == [(3, 32, 40), (8, 16, 20), (16, 8, 10), (16, 8, 10)]  # one block: 1 = 5


def test_patch_nce_is_the_cross_entropy_of_the_positive_against_the_other_patches():
    # Orthogonal patches, each query along its key: positive similarity 0.1, negatives 0.
    keys = torch.eye(6)[None, :5]
    expected = -math.log(math.exp(0.1 / TEMPERATURE) / (math.exp(0.1 / TEMPERATURE) + 4))
    assert nce_loss(0.1 * keys, keys).item() == pytest.approx(expected, rel=1e-5)
    # Random unit vectors: against a direct per-patch computation.
    generator = torch.Generator().manual_seed(0)
    q, k = (F.normalize(torch.randn(2, 7, 16, generator=generator), dim=-1) for _ in range(2))
    total = 0.0
    for n in range(2):
        for i in range(7):
            similarities = [float(q[n, i] @ k[n, j]) / TEMPERATURE for j in range(7)]
            total += -similarities[i] + math.log(sum(math.exp(s) for s in similarities))
    assert nce_loss(q, k).item() == pytest.approx(total / 14, rel=1e-5)


def test_a_few_steps_lower_patch_nce_on_a_fixed_batch():
    torch.manual_seed(0)
    models = CutModels(RefinerConfig(channels=8, blocks=2, disc_channels=8, norm="instance", gbuffer=False, residual=False))
    x = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 40, 40) * 2 - 1, 5, 1, 2)
    optimiser = torch.optim.Adam([*models.to_real.parameters(), *models.heads.parameters()], 1e-3)

    def loss() -> torch.Tensor:
        return models.patch_nce(x, models.to_real(x), np.random.default_rng(1))  # the same patches every time

    first = loss().item()
    assert first == pytest.approx(math.log(PATCHES), rel=0.3)  # an untrained head tells patches apart poorly
    for _ in range(10):
        optimiser.zero_grad()
        loss().backward()
        optimiser.step()
    assert loss().item() < 0.7 * first


def test_cut_resumes_exactly_applies_and_refuses_another_objective(store, photos, tmp_path):
    options = TrainOptions.preset("cut", channels=4, blocks=1, disc_channels=4, steps=4, size=32, batch=2, checkpoint_every=2)
    assert (options.objective, options.nce_identity, options.config) == ("cut", True, TINY_CUT)
    train(store.root, photos, tmp_path / "whole", options, "cpu")
    train(store.root, photos, tmp_path / "split", TrainOptions(**{**options.__dict__, "steps": 2}), "cpu")
    train(store.root, photos, tmp_path / "split", options, "cpu")
    whole, split = checkpoint.load(tmp_path / "whole"), checkpoint.load(tmp_path / "split")
    assert split["step"] == 4 and split["options"]["objective"] == "cut"
    for network in ("to_real", "heads", "judge_real"):
        for name, value in whole[network].items():
            assert torch.equal(value, split[network][name]), (network, name)
    assert not any(key.startswith("to_synthetic") for key in whole)
    rgb = np.stack([store.read_rgb(r) for r in store.records()[:2]])
    refined = Refiner(tmp_path / "whole", device="cpu")(rgb)
    assert refined.shape == rgb.shape and np.abs(refined.astype(int) - rgb).mean() > 1  # not the identity
    cyclegan = TrainOptions.preset("cyclegan", channels=4, blocks=1, disc_channels=4, steps=6, size=32)
    with pytest.raises(UserError, match=r"\(cut\), not .*\(cycle\)"):
        train(store.root, photos, tmp_path / "whole", cyclegan, "cpu")


def test_fastcut_trains_from_the_command_line(store, photos, tmp_path):
    run = tmp_path / "fast"
    result = run_cli("refine", "train", "--store", store.root, "--real", photos, "-o", run, "--steps", "2", "--size", "32",
                     "--width", "4", "--blocks", "1", "--architecture", "fastcut", "--device", "cpu", "-q")
    assert result.returncode == 0, result.stderr
    saved = checkpoint.load(run)
    assert saved["options"]["nce_weight"] == 10.0 and saved["options"]["nce_identity"] is False
    with pytest.raises(UserError, match="expected sceneforge, cyclegan, cut or fastcut, got 'unit'"):
        TrainOptions.preset("unit")
