"""CUT and FastCUT (Park et al. 2020, "Contrastive Learning for Unpaired Image-to-Image
Translation"): one generator, one discriminator, and a patchwise contrastive loss (PatchNCE,
refine/patchnce.py) that keeps each output patch closer to the input patch at the same place than
to the input's other patches.

The generator is CycleGAN's ResNet generator (``model.Generator``); PatchNCE embeds with its
encoder (the first half of it). CUT adds the same loss between a real photo and the generator's
output for it (identity NCE); FastCUT drops that and weights the NCE loss 10. The discriminator is the PatchGAN with LSGAN.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from .device import autocast
from .model import Discriminator, Generator, RefinerConfig
from .patchnce import encode, patch_nce, projection_heads
from .train import TrainOptions, _lsgan


class CutModels(nn.Module):
    """CUT's networks: the refining generator ``to_real``, its projection ``heads`` and the
    discriminator ``judge_real``. Only ``to_real`` is needed to apply a checkpoint."""

    def __init__(self, config: RefinerConfig) -> None:
        super().__init__()
        if config.gbuffer or config.residual:
            raise ValueError("CUT uses CycleGAN's generator: RGB in, image out (RefinerConfig.reference())")
        self.config = config
        self.to_real = Generator(config, gbuffer=False)
        self.heads = projection_heads(config)
        self.judge_real = Discriminator(config)

    def encode(self, rgb: Tensor) -> list[Tensor]:
        """The NCE layers' features of ``rgb`` (N x 3 x H x W in [-1, 1]) through the generator's encoder."""
        return encode(self.to_real, rgb)

    def patch_nce(self, source: Tensor, output: Tensor, rng: np.random.Generator) -> Tensor:
        """PatchNCE between ``source`` images and the generator's ``output`` for them (refine/patchnce.py)."""
        return patch_nce(self.to_real, self.heads, source, output, rng)


def train_step(models: CutModels, options: TrainOptions, x: Tensor, a: Tensor, y: Tensor, pools: dict,
               rng: np.random.Generator, optimise_g: torch.optim.Optimizer, optimise_d: torch.optim.Optimizer,
               device: torch.device, extra_g: dict[str, tuple[float, Callable[[], Tensor]]] | None = None) -> dict[str, Tensor]:
    """One CUT update (``train.train_step``'s signature; no image pool, no G-buffer): the
    discriminator on photos against fresh fakes (LSGAN), then the generator and the heads on
    LSGAN + ``options.nce_weight`` x PatchNCE (with identity NCE on the photos when
    ``options.nce_identity``: the mean of both). ``extra_g``: more weighted generator terms."""
    generator, judge = models.to_real, models.judge_real
    amp = options.mixed_precision
    with autocast(device, amp):
        both = generator(torch.cat([x, y]) if options.nce_identity else x)
    fake = both[:x.shape[0]]

    judge.requires_grad_(True)
    with autocast(device, amp):
        loss_d = 0.5 * (_lsgan(judge(y), 1) + _lsgan(judge(fake.detach()), 0))
    optimise_d.zero_grad(set_to_none=True)
    loss_d.backward()
    optimise_d.step()

    judge.requires_grad_(False)
    with autocast(device, amp):
        adversarial = _lsgan(judge(fake), 1)
        nce = models.patch_nce(x, fake, rng)
        losses = {"adversarial": adversarial, "nce": nce}
        if options.nce_identity:
            losses["nce_identity"] = models.patch_nce(y, both[x.shape[0]:], rng)
            nce = 0.5 * (nce + losses["nce_identity"])
        loss_g = adversarial + options.nce_weight * nce
        for name, (weight, term) in (extra_g or {}).items():
            losses[name] = term()
            loss_g = loss_g + weight * losses[name]
    optimise_g.zero_grad(set_to_none=True)
    loss_g.backward()
    optimise_g.step()
    judge.requires_grad_(True)
    return {**{k: v.detach() for k, v in losses.items()}, "discriminators": loss_d.detach()}
